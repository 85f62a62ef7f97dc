//! Wire types of OpenAI's completion APIs as far as the fake worker needs them: reading a
//! request (what to generate, how many prompt tokens it has) and the shapes of answers and
//! stream chunks. Field names and order follow OpenAI exactly so its SDKs parse them; the one
//! addition is `sent_at_us` on streamed chunks, which the SDKs ignore.

use serde::Serialize;
use serde_json::Value;

/// Which endpoint a request came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Api {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions` (legacy text completions).
    Text,
}

impl Api {
    /// `object` of a whole answer.
    pub(crate) fn object(self) -> &'static str {
        match self {
            Api::Chat => "chat.completion",
            Api::Text => "text_completion",
        }
    }

    /// `object` of a stream chunk.
    pub(crate) fn chunk_object(self) -> &'static str {
        match self {
            Api::Chat => "chat.completion.chunk",
            Api::Text => "text_completion",
        }
    }

    /// Prefix of generated ids.
    pub(crate) fn id_prefix(self) -> &'static str {
        match self {
            Api::Chat => "chatcmpl-",
            Api::Text => "cmpl-",
        }
    }
}

/// What a completion request asks for.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct CompletionRequest {
    /// `model`, when given as a non-empty string.
    pub(crate) model: Option<String>,
    /// `stream`.
    pub(crate) stream: bool,
    /// `stream_options.include_usage`.
    pub(crate) include_usage: bool,
    /// `max_completion_tokens`, else `max_tokens`.
    pub(crate) max_tokens: Option<u64>,
    /// Whitespace-separated words in the messages or prompt.
    pub(crate) prompt_tokens: u64,
}

impl CompletionRequest {
    /// Parses a request body; `Err` carries the message of a 400.
    pub(crate) fn parse(body: &[u8], api: Api) -> Result<CompletionRequest, String> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| format!("We could not parse the JSON body of your request. ({e})"))?;
        let Value::Object(fields) = value else {
            return Err("The request body must be a JSON object.".to_owned());
        };
        let prompt_tokens = match api {
            Api::Chat => match fields.get("messages") {
                Some(Value::Array(messages)) => messages.iter().map(message_tokens).sum(),
                Some(_) => return Err("Invalid type for 'messages': expected an array.".into()),
                None => return Err("Missing required parameter: 'messages'.".into()),
            },
            Api::Text => match fields.get("prompt") {
                Some(prompt) if !prompt.is_null() => prompt_tokens(prompt),
                _ => return Err("Missing required parameter: 'prompt'.".into()),
            },
        };
        let max_tokens = match limit(&fields, "max_completion_tokens")? {
            Some(n) => Some(n),
            None => limit(&fields, "max_tokens")?,
        };
        let include_usage = fields
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(CompletionRequest {
            model: fields
                .get("model")
                .and_then(Value::as_str)
                .filter(|m| !m.is_empty())
                .map(str::to_owned),
            stream: fields
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            include_usage,
            max_tokens,
            prompt_tokens,
        })
    }
}

fn limit(fields: &serde_json::Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("Invalid value for '{name}': expected a non-negative integer.")),
    }
}

/// Words in a text: the fake worker's notion of a token.
pub(crate) fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Tokens of one chat message: its `content` as a string, or the `text` of its parts.
fn message_tokens(message: &Value) -> u64 {
    match message.get("content") {
        Some(Value::String(s)) => count_words(s),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter_map(|part| part.get("text").and_then(Value::as_str))
            .map(count_words)
            .sum(),
        _ => 0,
    }
}

/// Tokens of a legacy `prompt`: a string, a list of strings, a list of token ids, or a list
/// of lists of token ids.
fn prompt_tokens(prompt: &Value) -> u64 {
    match prompt {
        Value::String(s) => count_words(s),
        Value::Array(items) => items
            .iter()
            .map(|item| match item {
                Value::Number(_) => 1,
                Value::Array(ids) => ids.len() as u64,
                other => prompt_tokens(other),
            })
            .sum(),
        _ => 0,
    }
}

/// The words the fake model says, in order, each with its trailing space.
const WORDS: [&str; 16] = [
    "The ",
    "quick ",
    "brown ",
    "fox ",
    "jumps ",
    "over ",
    "the ",
    "lazy ",
    "dog ",
    "while ",
    "a ",
    "fake ",
    "model ",
    "streams ",
    "tokens ",
    "steadily ",
];

/// The text of token `i` (0-based): deterministic, one word and a space.
pub(crate) fn token(i: usize) -> &'static str {
    WORDS[i % WORDS.len()]
}

/// The whole text of `n` tokens.
pub(crate) fn text_of(n: usize) -> String {
    (0..n).map(token).collect()
}

/// `usage` of an answer.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) prompt_tokens: u64,
    pub(crate) completion_tokens: u64,
    pub(crate) total_tokens: u64,
}

impl Usage {
    pub(crate) fn new(prompt_tokens: u64, completion_tokens: u64) -> Usage {
        Usage {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// The fields every answer and chunk share, around its `choices`.
#[derive(Serialize)]
pub(crate) struct Envelope<'a, C> {
    pub(crate) id: &'a str,
    pub(crate) object: &'static str,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
    pub(crate) choices: &'a [C],
    /// Absent (`None`), `null` (`Some(None)`, on chunks when usage was asked for) or set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) usage: Option<Option<Usage>>,
    /// Unix microseconds when a chunk was handed to the connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) sent_at_us: Option<u64>,
}

/// A choice of a whole chat answer.
#[derive(Serialize)]
pub(crate) struct ChatChoice<'a> {
    pub(crate) index: u32,
    pub(crate) message: AssistantMessage<'a>,
    pub(crate) logprobs: Option<()>,
    pub(crate) finish_reason: &'static str,
}

/// The assistant's message in a whole chat answer.
#[derive(Serialize)]
pub(crate) struct AssistantMessage<'a> {
    pub(crate) role: &'static str,
    pub(crate) content: &'a str,
    pub(crate) refusal: Option<()>,
}

/// A choice of a chat stream chunk.
#[derive(Serialize)]
pub(crate) struct ChatChunkChoice<'a> {
    pub(crate) index: u32,
    pub(crate) delta: Delta<'a>,
    pub(crate) logprobs: Option<()>,
    pub(crate) finish_reason: Option<&'static str>,
}

/// The `delta` of a chat stream chunk; empty (`{}`) on the finishing chunk.
#[derive(Serialize, Default)]
pub(crate) struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) content: Option<&'a str>,
}

/// A choice of a text completion, whole or streamed.
#[derive(Serialize)]
pub(crate) struct TextChoice<'a> {
    pub(crate) text: &'a str,
    pub(crate) index: u32,
    pub(crate) logprobs: Option<()>,
    pub(crate) finish_reason: Option<&'static str>,
}

#[cfg(test)]
mod tests;

//! `POST /v1/chat/completions` and `POST /v1/completions`: whole answers and SSE streams.
//!
//! Order of checks, each with a reason: the body is parsed first (a malformed request is the
//! client's fault whatever the worker's state), then `error_rate` (an injected 500 costs no
//! slot, like a worker failing fast), then admission (`max_running`), then
//! `hang_after_headers` (a hung request holds its slot, as a stuck model would).
//!
//! Timing: the response headers go out as soon as the request is admitted; the first chunk
//! (the role chunk for chat, else the first token) waits `ttft`; token `k` is due at
//! `start + ttft + k / tokens_per_second`, scheduled from the start so delays do not drift.
//! The stream is generated inside the body as hyper polls it, so nothing is buffered ahead
//! of the connection and `sent_at_us` is the moment each chunk was handed over.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream;
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use rand::distr::{Alphanumeric, SampleString};
use tokio::time::{Duration, Instant, sleep_until};

use super::http::{
    Body, Reject, json, openai_error, read_body, sse, sse_event, unix_micros, unix_secs,
};
use super::openai::{
    Api, AssistantMessage, ChatChoice, ChatChunkChoice, CompletionRequest, Delta, Envelope,
    TextChoice, Usage, text_of, token,
};
use super::state::{Running, State};

/// Answers a completion request on `api`.
pub(crate) async fn completion(
    state: &Arc<State>,
    req: Request<Incoming>,
    api: Api,
) -> Response<Body> {
    let body = match read_body(req.into_body()).await {
        Ok(body) => body,
        Err(reject) => return reject.into_response(),
    };
    let request = match CompletionRequest::parse(&body, api) {
        Ok(request) => request,
        Err(message) => return Reject::bad_request(message).into_response(),
    };
    if state.inject_error() {
        return openai_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "fakeworker: injected failure (error_rate)",
            "server_error",
        );
    }
    let running = state.admit().await;
    if state.opts.hang_after_headers {
        return hang(running);
    }
    let generation = Generation::new(state, api, request, running);
    if generation.stream {
        sse(generation.into_body())
    } else {
        generation.whole().await
    }
}

/// 200 with streaming headers and a body that never sends a byte; the request stays
/// counted as running until the client gives up.
fn hang(running: Running) -> Response<Body> {
    let never = stream::once(async move {
        let _running = running;
        std::future::pending::<Result<Frame<Bytes>, Infallible>>().await
    });
    sse(StreamBody::new(never).boxed_unsync())
}

/// One answer being generated.
struct Generation {
    api: Api,
    stream: bool,
    id: String,
    model: String,
    created: u64,
    /// Tokens to produce.
    tokens: usize,
    finish_reason: &'static str,
    include_usage: bool,
    usage: Usage,
    start: Instant,
    ttft: Duration,
    interval: Duration,
    /// Next step of the stream.
    step: Step,
    /// Holds the running slot until the answer is finished or abandoned.
    _running: Running,
}

/// Where a stream is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// The chat role chunk (`delta: {role: "assistant", content: ""}`).
    Role,
    /// Token `k`.
    Token(usize),
    /// The chunk with `finish_reason`.
    Finish,
    /// The usage-only chunk (`choices: []`), when `stream_options.include_usage`.
    Usage,
    /// `data: [DONE]`.
    Done,
    /// Nothing more.
    End,
}

impl Generation {
    fn new(state: &State, api: Api, request: CompletionRequest, running: Running) -> Generation {
        // A request's own limit wins in both directions (like vLLM with `ignore_eos`), and a
        // stop because of it is reported as "length".
        let (tokens, finish_reason) = match request.max_tokens {
            Some(n) => (usize::try_from(n).unwrap_or(usize::MAX), "length"),
            None => (state.opts.output_tokens, "stop"),
        };
        let id = format!(
            "{}{}",
            api.id_prefix(),
            Alphanumeric.sample_string(&mut rand::rng(), 24)
        );
        Generation {
            api,
            stream: request.stream,
            id,
            model: request.model.unwrap_or_else(|| state.opts.model.clone()),
            created: unix_secs(),
            tokens,
            finish_reason,
            include_usage: request.include_usage,
            usage: Usage::new(request.prompt_tokens, tokens as u64),
            start: Instant::now(),
            ttft: state.opts.ttft,
            interval: state.token_interval,
            step: match api {
                Api::Chat => Step::Role,
                Api::Text => Step::Token(0),
            },
            _running: running,
        }
    }

    /// When token `k` (0-based) is due.
    fn due(&self, k: usize) -> Instant {
        let k = u32::try_from(k).unwrap_or(u32::MAX);
        let offset = self.ttft.saturating_add(self.interval.saturating_mul(k));
        self.start
            .checked_add(offset)
            .unwrap_or_else(|| self.start + Duration::from_secs(86_400 * 365))
    }

    /// Waits until token `k` is due, skipping the timer when it already is.
    async fn wait_for_token(&self, k: usize) {
        if self.ttft.is_zero() && self.interval.is_zero() {
            return;
        }
        let due = self.due(k);
        if due > Instant::now() {
            sleep_until(due).await;
        }
    }

    /// The whole (non-streamed) answer, after the time all its tokens would take.
    async fn whole(self) -> Response<Body> {
        self.wait_for_token(self.tokens.saturating_sub(1)).await;
        let text = text_of(self.tokens);
        match self.api {
            Api::Chat => json(
                StatusCode::OK,
                &self.whole_envelope(&[ChatChoice {
                    index: 0,
                    message: AssistantMessage {
                        role: "assistant",
                        content: &text,
                        refusal: None,
                    },
                    logprobs: None,
                    finish_reason: self.finish_reason,
                }]),
            ),
            Api::Text => json(
                StatusCode::OK,
                &self.whole_envelope(&[TextChoice {
                    text: &text,
                    index: 0,
                    logprobs: None,
                    finish_reason: Some(self.finish_reason),
                }]),
            ),
        }
    }

    fn whole_envelope<'a, C>(&'a self, choices: &'a [C]) -> Envelope<'a, C> {
        Envelope {
            id: &self.id,
            object: self.api.object(),
            created: self.created,
            model: &self.model,
            choices,
            usage: Some(Some(self.usage)),
            sent_at_us: None,
        }
    }

    /// The SSE body: one frame per event, produced when hyper asks for it.
    fn into_body(self) -> Body {
        let events = stream::unfold(self, |mut generation| async move {
            let event = generation.next_event().await?;
            Some((Ok(Frame::data(event)), generation))
        });
        StreamBody::new(events).boxed_unsync()
    }

    /// The next SSE event, or `None` when the stream is over.
    async fn next_event(&mut self) -> Option<Bytes> {
        let step = self.step;
        self.step = self.after(step);
        match step {
            Step::Role => {
                self.wait_for_token(0).await;
                Some(self.chat_chunk(
                    Delta {
                        role: Some("assistant"),
                        content: Some(""),
                    },
                    None,
                ))
            }
            Step::Token(k) => {
                self.wait_for_token(k).await;
                let text = token(k);
                Some(match self.api {
                    Api::Chat => self.chat_chunk(
                        Delta {
                            role: None,
                            content: Some(text),
                        },
                        None,
                    ),
                    Api::Text => self.text_chunk(text, None),
                })
            }
            Step::Finish => {
                if self.tokens == 0 {
                    // No token to wait for, but the first chunk still costs ttft.
                    self.wait_for_token(0).await;
                }
                let finish = Some(self.finish_reason);
                Some(match self.api {
                    Api::Chat => self.chat_chunk(Delta::default(), finish),
                    Api::Text => self.text_chunk("", finish),
                })
            }
            Step::Usage => Some(self.usage_chunk()),
            Step::Done => Some(Bytes::from_static(b"data: [DONE]\n\n")),
            Step::End => None,
        }
    }

    /// The step after `step`.
    fn after(&self, step: Step) -> Step {
        let first_token = |k: usize| {
            if k < self.tokens {
                Step::Token(k)
            } else {
                Step::Finish
            }
        };
        match step {
            Step::Role => first_token(0),
            Step::Token(k) => first_token(k + 1),
            Step::Finish if self.include_usage => Step::Usage,
            Step::Finish | Step::Usage => Step::Done,
            Step::Done | Step::End => Step::End,
        }
    }

    fn chunk_envelope<'a, C>(&'a self, choices: &'a [C]) -> Envelope<'a, C> {
        Envelope {
            id: &self.id,
            object: self.api.chunk_object(),
            created: self.created,
            model: &self.model,
            choices,
            // OpenAI sends `"usage": null` on every chunk once usage was asked for.
            usage: self.include_usage.then_some(None),
            sent_at_us: Some(unix_micros()),
        }
    }

    fn chat_chunk(&self, delta: Delta<'_>, finish_reason: Option<&'static str>) -> Bytes {
        sse_event(&self.chunk_envelope(&[ChatChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason,
        }]))
    }

    fn text_chunk(&self, text: &str, finish_reason: Option<&'static str>) -> Bytes {
        sse_event(&self.chunk_envelope(&[TextChoice {
            text,
            index: 0,
            logprobs: None,
            finish_reason,
        }]))
    }

    fn usage_chunk(&self) -> Bytes {
        let mut envelope = self.chunk_envelope::<ChatChunkChoice<'_>>(&[]);
        envelope.usage = Some(Some(self.usage));
        sse_event(&envelope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;
    use serde_json::Value;

    async fn events(api: Api, body: &str, opts: Options) -> Vec<String> {
        let state = Arc::new(State::new(opts));
        let request = CompletionRequest::parse(body.as_bytes(), api).expect("valid request");
        let running = state.admit().await;
        let mut generation = Generation::new(&state, api, request, running);
        let mut out = Vec::new();
        while let Some(event) = generation.next_event().await {
            out.push(String::from_utf8(event.to_vec()).expect("utf-8 event"));
        }
        out
    }

    fn data(event: &str) -> Value {
        let json = event
            .strip_prefix("data: ")
            .and_then(|e| e.strip_suffix("\n\n"))
            .expect("one data line");
        serde_json::from_str(json).expect("JSON event")
    }

    /// A chat stream is role chunk, one chunk per token, finish chunk, usage chunk, [DONE].
    #[tokio::test]
    async fn chat_stream_sequence() {
        let body = r#"{"messages":[{"role":"user","content":"a b c"}],"stream":true,
                       "stream_options":{"include_usage":true},"max_tokens":2}"#;
        let events = events(Api::Chat, body, Options::default()).await;
        assert_eq!(events.len(), 6);
        let role = data(&events[0]);
        assert_eq!(role["object"], "chat.completion.chunk");
        assert_eq!(
            role["choices"][0]["delta"],
            serde_json::json!({"role": "assistant", "content": ""})
        );
        assert_eq!(data(&events[1])["choices"][0]["delta"]["content"], "The ");
        assert_eq!(data(&events[2])["choices"][0]["delta"]["content"], "quick ");
        let finish = data(&events[3]);
        assert_eq!(finish["choices"][0]["finish_reason"], "length");
        assert_eq!(finish["choices"][0]["delta"], serde_json::json!({}));
        assert_eq!(finish["usage"], Value::Null);
        let usage = data(&events[4]);
        assert_eq!(usage["choices"], serde_json::json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 3);
        assert_eq!(usage["usage"]["completion_tokens"], 2);
        assert_eq!(usage["usage"]["total_tokens"], 5);
        assert!(usage["sent_at_us"].as_u64().is_some_and(|t| t > 0));
        assert_eq!(events[5], "data: [DONE]\n\n");
    }

    /// A text stream has no role chunk and no usage unless asked; it stops with "stop".
    #[tokio::test]
    async fn text_stream_sequence() {
        let body = r#"{"prompt":"x","stream":true,"model":"mine"}"#;
        let events = events(Api::Text, body, Options::default().output_tokens(1)).await;
        assert_eq!(events.len(), 3);
        let token = data(&events[0]);
        assert_eq!(token["object"], "text_completion");
        assert_eq!(token["model"], "mine");
        assert_eq!(token["choices"][0]["text"], "The ");
        assert!(token.get("usage").is_none());
        assert_eq!(data(&events[1])["choices"][0]["finish_reason"], "stop");
        assert_eq!(events[2], "data: [DONE]\n\n");
    }

    /// Token deadlines are scheduled from the start: ttft, then one interval per token.
    #[tokio::test]
    async fn token_deadlines() {
        let state = Arc::new(State::new(
            Options::default()
                .ttft(Duration::from_millis(100))
                .tokens_per_second(10.0),
        ));
        let request = CompletionRequest::parse(br#"{"prompt":"x"}"#, Api::Text).expect("valid");
        let running = state.admit().await;
        let generation = Generation::new(&state, Api::Text, request, running);
        assert_eq!(
            generation.due(0) - generation.start,
            Duration::from_millis(100)
        );
        assert_eq!(
            generation.due(3) - generation.start,
            Duration::from_millis(400)
        );
    }
}

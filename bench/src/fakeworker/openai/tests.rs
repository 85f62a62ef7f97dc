//! Unit tests of request parsing, token counting and envelope shapes.

use super::*;

fn parse(body: &str, api: Api) -> Result<CompletionRequest, String> {
    CompletionRequest::parse(body.as_bytes(), api)
}

/// Prompt tokens are the whitespace-separated words of every message, string or parts.
#[test]
fn chat_request() {
    let request = parse(
        r#"{"model":"m","stream":true,"stream_options":{"include_usage":true},
            "max_tokens":4,"messages":[
            {"role":"system","content":"be  brief\n please"},
            {"role":"user","content":[{"type":"text","text":"hi there"},{"type":"image_url"}]},
            {"role":"assistant","content":null}]}"#,
        Api::Chat,
    )
    .expect("valid request");
    assert_eq!(
        request,
        CompletionRequest {
            model: Some("m".into()),
            stream: true,
            include_usage: true,
            max_tokens: Some(4),
            prompt_tokens: 5,
        }
    );
}

/// `max_completion_tokens` wins over `max_tokens`; neither means no limit.
#[test]
fn token_limits() {
    let both = r#"{"messages":[],"max_tokens":4,"max_completion_tokens":9}"#;
    assert_eq!(parse(both, Api::Chat).map(|r| r.max_tokens), Ok(Some(9)));
    let none = r#"{"messages":[],"max_tokens":null}"#;
    assert_eq!(parse(none, Api::Chat).map(|r| r.max_tokens), Ok(None));
    let bad = r#"{"messages":[],"max_tokens":-1}"#;
    assert!(parse(bad, Api::Chat).is_err());
}

/// Legacy prompts count words of strings and one token per id.
#[test]
fn text_prompts() {
    let tokens = |body: &str| parse(body, Api::Text).map(|r| r.prompt_tokens);
    assert_eq!(tokens(r#"{"prompt":"one two three"}"#), Ok(3));
    assert_eq!(tokens(r#"{"prompt":["one two","three"]}"#), Ok(3));
    assert_eq!(tokens(r#"{"prompt":[1,2,3,4]}"#), Ok(4));
    assert_eq!(tokens(r#"{"prompt":[[1,2],[3]]}"#), Ok(3));
}

/// Bad JSON, non-objects and missing inputs are rejected with a message.
#[test]
fn invalid_requests() {
    assert!(parse("{", Api::Chat).is_err());
    assert!(parse("[]", Api::Chat).is_err());
    assert!(parse(r#"{"prompt":"x"}"#, Api::Chat).is_err());
    assert!(parse(r#"{"messages":"x"}"#, Api::Chat).is_err());
    assert!(parse(r#"{"messages":[]}"#, Api::Text).is_err());
    assert!(parse(r#"{"prompt":null}"#, Api::Text).is_err());
}

/// Tokens are deterministic words, each followed by a space.
#[test]
fn tokens() {
    assert_eq!(text_of(3), "The quick brown ");
    assert_eq!(token(16), token(0));
    assert_eq!(count_words(&text_of(40)), 40);
}

/// A chunk envelope carries `usage` only when asked, as `null` or a value.
#[test]
fn envelope_usage_field() {
    let envelope = |usage| Envelope::<TextChoice<'_>> {
        id: "cmpl-1",
        object: "text_completion",
        created: 7,
        model: "m",
        choices: &[],
        usage,
        sent_at_us: Some(9),
    };
    let encode = |e: &Envelope<'_, TextChoice<'_>>| serde_json::to_string(e).expect("encodes");
    assert_eq!(
        encode(&envelope(None)),
        r#"{"id":"cmpl-1","object":"text_completion","created":7,"model":"m","choices":[],"sent_at_us":9}"#
    );
    assert!(encode(&envelope(Some(None))).contains(r#""usage":null"#));
    assert!(
        encode(&envelope(Some(Some(Usage::new(2, 3)))))
            .contains(r#""usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}"#)
    );
}

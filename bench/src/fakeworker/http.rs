//! Response helpers shared by the handlers: the body type, JSON and OpenAI-shaped error
//! responses, SSE framing, request-body reading and query parsing.

use std::convert::Infallible;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderValue, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;

/// Every response body: a whole buffer or a stream of frames, boxed.
pub(crate) type Body = UnsyncBoxBody<Bytes, Infallible>;

/// Largest request body read into memory (completion prompts, `/echo`).
const MAX_BODY_BYTES: usize = 64 << 20;

/// A whole-buffer body.
pub(crate) fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

/// An empty body.
pub(crate) fn empty() -> Body {
    full(Bytes::new())
}

/// A response with `status` and a JSON body.
pub(crate) fn json(status: StatusCode, value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => json_bytes(status, bytes),
        Err(e) => {
            tracing::error!("could not encode a response body: {e}");
            json_bytes(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":{"message":"fakeworker could not encode its answer","type":"server_error","param":null,"code":null}}"#.to_vec(),
            )
        }
    }
}

fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// An error in OpenAI's shape:
/// `{"error":{"message":..,"type":..,"param":null,"code":null}}`.
pub(crate) fn openai_error(status: StatusCode, message: &str, kind: &str) -> Response<Body> {
    json(status, &error_body(message, kind))
}

/// The JSON of an OpenAI-shaped error.
fn error_body<'a>(message: &'a str, kind: &'a str) -> impl Serialize + 'a {
    #[derive(Serialize)]
    struct Error<'a> {
        message: &'a str,
        #[serde(rename = "type")]
        kind: &'a str,
        param: Option<()>,
        code: Option<()>,
    }
    #[derive(Serialize)]
    struct Wrapper<'a> {
        error: Error<'a>,
    }
    Wrapper {
        error: Error {
            message,
            kind,
            param: None,
            code: None,
        },
    }
}

/// A 200 `text/event-stream` response around `body`.
pub(crate) fn sse(body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// One SSE event, `data: {json}\n\n`.
pub(crate) fn sse_event(value: &impl Serialize) -> Bytes {
    let mut buf = Vec::with_capacity(256);
    buf.extend_from_slice(b"data: ");
    match serde_json::to_writer(&mut buf, value) {
        Ok(()) => {
            buf.extend_from_slice(b"\n\n");
            Bytes::from(buf)
        }
        Err(e) => {
            tracing::error!("could not encode an SSE event: {e}");
            // A comment line: clients skip it, and the stream stays well-formed.
            Bytes::from_static(b": fakeworker could not encode this event\n\n")
        }
    }
}

/// A request the worker refuses before handling it; [`Reject::into_response`] is the one
/// place that turns it into an OpenAI-shaped error response.
#[derive(Debug)]
pub(crate) struct Reject {
    status: StatusCode,
    message: String,
}

impl Reject {
    /// A 400 `invalid_request_error`.
    pub(crate) fn bad_request(message: impl Into<String>) -> Reject {
        Reject {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// The error response.
    pub(crate) fn into_response(self) -> Response<Body> {
        openai_error(self.status, &self.message, "invalid_request_error")
    }
}

/// Reads a request body up to [`MAX_BODY_BYTES`].
pub(crate) async fn read_body(body: Incoming) -> Result<Bytes, Reject> {
    match Limited::new(body, MAX_BODY_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(Reject {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            message: format!("request body larger than {MAX_BODY_BYTES} bytes"),
        }),
        Err(e) => Err(Reject::bad_request(format!(
            "could not read the request body: {e}"
        ))),
    }
}

/// The raw value of `name` in a query string (no percent-decoding: the parameters this
/// worker reads are numbers and plain words).
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find_map(|(key, value)| (key == name).then_some(value))
}

/// Parses query parameter `name` as a number: `Ok(None)` when absent.
pub(crate) fn query_number<T: std::str::FromStr>(
    query: Option<&str>,
    name: &str,
) -> Result<Option<T>, Reject> {
    match query_param(query, name) {
        None => Ok(None),
        Some(raw) => raw.parse().map(Some).map_err(|_| {
            Reject::bad_request(format!(
                "query parameter '{name}' must be a number, got {raw:?}"
            ))
        }),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Microseconds since the Unix epoch (`sent_at_us` in streamed events).
pub(crate) fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query parameters are found by exact name, with or without a value.
    #[test]
    fn query_params() {
        let q = Some("events=3&interval_ms=10&flag&x=");
        assert_eq!(query_param(q, "events"), Some("3"));
        assert_eq!(query_param(q, "interval_ms"), Some("10"));
        assert_eq!(query_param(q, "flag"), Some(""));
        assert_eq!(query_param(q, "x"), Some(""));
        assert_eq!(query_param(q, "interval"), None);
        assert_eq!(query_param(None, "events"), None);
        assert_eq!(query_number::<u64>(q, "events").ok(), Some(Some(3)));
        assert!(query_number::<u64>(q, "flag").is_err());
    }

    /// Errors have OpenAI's shape and field order.
    #[test]
    fn error_shape() {
        let body = serde_json::to_string(&error_body("nope", "invalid_request_error"))
            .expect("error body encodes");
        assert_eq!(
            body,
            r#"{"error":{"message":"nope","type":"invalid_request_error","param":null,"code":null}}"#
        );
    }

    /// An SSE event is one `data:` line with compact JSON, closed by a blank line.
    #[test]
    fn sse_event_frame() {
        let frame = sse_event(&serde_json::json!({"seq": 1}));
        assert_eq!(&frame[..], b"data: {\"seq\":1}\n\n");
    }
}

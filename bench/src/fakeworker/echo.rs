//! `/echo` and `/_fake/requests`: what reached the worker, for tests of what a gateway
//! forwards (headers added or stripped, paths rewritten, bodies passed through).

use std::sync::Arc;

use http::{HeaderMap, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Serialize;

use super::http::{Body, json, read_body};
use super::state::{RecordedRequest, State};

/// The answer of `/echo`.
#[derive(Serialize)]
struct Echo<'a> {
    method: &'a str,
    path: &'a str,
    /// The raw query string, `""` when there is none.
    query: &'a str,
    headers: Vec<(String, String)>,
    /// The body as lossy UTF-8.
    body: String,
    body_bytes: usize,
}

/// `ANY /echo[/...]`: 200 with the request as JSON.
pub(crate) async fn echo(req: Request<Incoming>) -> Response<Body> {
    let (parts, body) = req.into_parts();
    let body = match read_body(body).await {
        Ok(body) => body,
        Err(reject) => return reject.into_response(),
    };
    json(
        StatusCode::OK,
        &Echo {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers: header_pairs(&parts.headers),
            body: String::from_utf8_lossy(&body).into_owned(),
            body_bytes: body.len(),
        },
    )
}

/// `GET /_fake/requests`: the recorded requests as a JSON array, oldest first.
pub(crate) fn recorded(state: &Arc<State>) -> Response<Body> {
    json(StatusCode::OK, &state.recorded())
}

/// What [`State::record`] keeps of a request.
pub(crate) fn record_of(req: &Request<Incoming>) -> RecordedRequest {
    RecordedRequest {
        method: req.method().as_str().to_owned(),
        path: req
            .uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned()),
        version: format!("{:?}", req.version()),
        headers: header_pairs(req.headers()),
    }
}

/// Headers as `(name, value)` pairs, values decoded as lossy UTF-8.
pub(crate) fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// Repeated headers all appear, and non-UTF-8 values survive as lossy text.
    #[test]
    fn header_pairs_keep_everything() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.append(
            "x-b",
            HeaderValue::from_bytes(b"caf\xe9").expect("opaque header value"),
        );
        assert_eq!(
            header_pairs(&headers),
            [
                ("x-a".to_owned(), "1".to_owned()),
                ("x-a".to_owned(), "2".to_owned()),
                ("x-b".to_owned(), "caf\u{fffd}".to_owned()),
            ]
        );
    }
}

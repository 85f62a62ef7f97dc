//! `GET /ws`: an RFC 6455 WebSocket endpoint.
//!
//! - Default mode echoes every text and binary message back unchanged (tungstenite
//!   reassembles fragments, answers pings, and on a close replies with the same code and
//!   reason).
//! - `?mode=stream&partials=N` (N defaults to 3) answers every message with N
//!   `{"type":"partial","index":i,"text":..}` messages, each a longer prefix of the final
//!   text, then `{"type":"final","text":..}`: the received text, or `"<k bytes>"` for binary.
//! - `?reject=CODE` answers CODE without upgrading; a GET that is not an upgrade gets 426.
//! - If the client offers subprotocols, the first one is selected.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::http::{Body, Reject, empty, openai_error, query_number, query_param};
use super::state::State;

/// What the server does with each received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Echo,
    Stream { partials: usize },
}

/// Handles `GET /ws`: rejects, or answers 101 and runs the session on its own task.
pub(crate) fn upgrade(state: &Arc<State>, mut req: Request<Incoming>) -> Response<Body> {
    let query = req.uri().query();
    match query_number::<u16>(query, "reject") {
        Ok(None) => {}
        Ok(Some(code)) => return rejected(code),
        Err(reject) => return reject.into_response(),
    }
    let mode = match parse_mode(query) {
        Ok(mode) => mode,
        Err(reject) => return reject.into_response(),
    };
    let headers = req.headers();
    if !is_websocket_upgrade(headers) {
        let mut response = openai_error(
            StatusCode::UPGRADE_REQUIRED,
            "/ws needs a WebSocket upgrade (Connection: Upgrade, Upgrade: websocket)",
            "invalid_request_error",
        );
        response
            .headers_mut()
            .insert(UPGRADE, HeaderValue::from_static("websocket"));
        return response;
    }
    let version_ok = headers
        .get(SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = headers.get(SEC_WEBSOCKET_KEY).filter(|_| version_ok) else {
        let mut response = openai_error(
            StatusCode::UPGRADE_REQUIRED,
            "/ws needs Sec-WebSocket-Key and Sec-WebSocket-Version: 13",
            "invalid_request_error",
        );
        response
            .headers_mut()
            .insert(SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        return response;
    };
    let accept = derive_accept_key(key.as_bytes());
    let protocol = first_protocol(headers);

    let on_upgrade = hyper::upgrade::on(&mut req);
    let session_state = Arc::clone(state);
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(e) => {
                tracing::debug!("websocket upgrade failed: {e}");
                return;
            }
        };
        let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        tokio::select! {
            () = session_state.killed() => {}
            result = session(ws, mode) => {
                if let Err(e) = result {
                    tracing::debug!("websocket session ended: {e}");
                }
            }
        }
    });

    let mut response = Response::new(empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let out = response.headers_mut();
    out.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    out.insert(UPGRADE, HeaderValue::from_static("websocket"));
    // The accept key is base64, always a valid header value; fall back to nothing rather
    // than panic if that ever changed.
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        out.insert(SEC_WEBSOCKET_ACCEPT, accept);
    }
    if let Some(protocol) = protocol {
        out.insert(SEC_WEBSOCKET_PROTOCOL, protocol);
    }
    response
}

/// `?reject=CODE`: CODE with a JSON error, no upgrade.
fn rejected(code: u16) -> Response<Body> {
    match StatusCode::from_u16(code) {
        Ok(status) if status.as_u16() >= 200 => openai_error(
            status,
            "fakeworker rejected this WebSocket upgrade as asked (reject=)",
            "invalid_request_error",
        ),
        _ => Reject::bad_request(format!(
            "reject= needs a status code in 200..=999, got {code}"
        ))
        .into_response(),
    }
}

fn parse_mode(query: Option<&str>) -> Result<Mode, Reject> {
    match query_param(query, "mode") {
        None | Some("echo") => Ok(Mode::Echo),
        Some("stream") => {
            let partials = query_number::<usize>(query, "partials")?.unwrap_or(3);
            Ok(Mode::Stream { partials })
        }
        Some(other) => Err(Reject::bad_request(format!(
            "mode must be echo or stream, got {other:?}"
        ))),
    }
}

/// `Connection` has the `upgrade` token and `Upgrade` names `websocket`.
fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has_token = |name, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    has_token(CONNECTION, "upgrade") && has_token(UPGRADE, "websocket")
}

/// The first subprotocol the client offers, if any.
fn first_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find(|p| !p.is_empty())
        .and_then(|p| HeaderValue::from_str(p).ok())
}

/// Runs one WebSocket session until the client closes it or the connection fails.
async fn session<S>(
    mut ws: WebSocketStream<S>,
    mode: Mode,
) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // After a close, tungstenite queues the reply; the next `next()` flushes it and ends the
    // stream, so the loop simply keeps reading.
    while let Some(message) = ws.next().await {
        let final_text = match message? {
            Message::Text(text) if mode == Mode::Echo => {
                ws.send(Message::Text(text)).await?;
                continue;
            }
            Message::Binary(bytes) if mode == Mode::Echo => {
                ws.send(Message::Binary(bytes)).await?;
                continue;
            }
            Message::Text(text) => text.as_str().to_owned(),
            Message::Binary(bytes) => format!("<{} bytes>", bytes.len()),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) | Message::Frame(_) => {
                continue;
            }
        };
        let Mode::Stream { partials } = mode else {
            continue;
        };
        for text in stream_replies(&final_text, partials) {
            ws.feed(Message::text(text)).await?;
        }
        ws.flush().await?;
    }
    Ok(())
}

/// The replies of stream mode to a message whose final text is `text`: `partials`
/// partial messages with growing prefixes, then the final one.
fn stream_replies(text: &str, partials: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut replies: Vec<String> = (0..partials)
        .map(|i| {
            let end = chars.len() * (i + 1) / (partials + 1);
            let prefix: String = chars[..end].iter().collect();
            encode(&Reply {
                kind: "partial",
                index: Some(i),
                text: &prefix,
            })
        })
        .collect();
    replies.push(encode(&Reply {
        kind: "final",
        index: None,
        text,
    }));
    replies
}

/// One stream-mode reply.
#[derive(Serialize)]
struct Reply<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
    text: &'a str,
}

fn encode(reply: &Reply<'_>) -> String {
    // A struct of strings and integers always serializes.
    serde_json::to_string(reply).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stream mode sends N growing partials and a final with the whole text.
    #[test]
    fn stream_replies_shape() {
        let replies = stream_replies("abcdefgh", 3);
        assert_eq!(
            replies,
            [
                r#"{"type":"partial","index":0,"text":"ab"}"#,
                r#"{"type":"partial","index":1,"text":"abcd"}"#,
                r#"{"type":"partial","index":2,"text":"abcdef"}"#,
                r#"{"type":"final","text":"abcdefgh"}"#,
            ]
        );
        assert_eq!(stream_replies("x", 0), [r#"{"type":"final","text":"x"}"#]);
    }

    /// Upgrade detection accepts token lists in any case; the first subprotocol is chosen.
    #[test]
    fn handshake_headers() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        headers.insert(UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(is_websocket_upgrade(&headers));
        headers.insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(" chat.v2 , chat.v1"),
        );
        assert_eq!(
            first_protocol(&headers),
            Some(HeaderValue::from_static("chat.v2"))
        );
        headers.remove(UPGRADE);
        assert!(!is_websocket_upgrade(&headers));
    }
}

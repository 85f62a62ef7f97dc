//! Small endpoints for probes, benchmarks and failure tests: `/health`, `/sse`, `/slow`,
//! `/status/{code}`, `/v1/models`, and the 404 for everything unknown.

use std::sync::Arc;

use futures_util::stream;
use http::{Method, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde::Serialize;
use serde_json::json;
use tokio::time::{Duration, Instant, sleep, sleep_until};

use super::http::{
    Body, Reject, empty, json, openai_error, query_number, sse, sse_event, unix_micros, unix_secs,
};
use super::state::State;

/// `GET /health`: 503 `booting` until `boot_delay` has passed since start, then 200 `ok`.
pub(crate) fn health(state: &State) -> Response<Body> {
    if state.started.elapsed() < state.opts.boot_delay {
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "status": "booting" }),
        )
    } else {
        json(StatusCode::OK, &json!({ "status": "ok" }))
    }
}

/// `GET /sse?events=N&interval_ms=M`: N events (default 10), the first at once and then one
/// every M ms (default 100), each `data: {"seq":i,"sent_at_us":..}`.
pub(crate) fn events(query: Option<&str>) -> Response<Body> {
    let count = match query_number::<u64>(query, "events") {
        Ok(n) => n.unwrap_or(10),
        Err(reject) => return reject.into_response(),
    };
    let interval = match query_number::<u64>(query, "interval_ms") {
        Ok(ms) => Duration::from_millis(ms.unwrap_or(100)),
        Err(reject) => return reject.into_response(),
    };
    let start = Instant::now();
    let events = stream::unfold(0u64, move |seq| async move {
        if seq >= count {
            return None;
        }
        if !interval.is_zero() {
            // Scheduled from the start, so a slow reader does not stretch the interval.
            let due = u32::try_from(seq)
                .ok()
                .and_then(|k| start.checked_add(interval.checked_mul(k)?));
            match due {
                Some(due) => sleep_until(due).await,
                None => std::future::pending::<()>().await,
            }
        }
        let event = sse_event(&Event {
            seq,
            sent_at_us: unix_micros(),
        });
        Some((
            Ok::<_, std::convert::Infallible>(Frame::data(event)),
            seq + 1,
        ))
    });
    sse(StreamBody::new(events).boxed_unsync())
}

/// One `/sse` event.
#[derive(Serialize)]
struct Event {
    seq: u64,
    sent_at_us: u64,
}

/// `GET /slow?ms=N`: waits N ms (default 0), then 200 `{"slept_ms": N}`. Goes through
/// admission, so it shows in the load gauges like a completion would.
pub(crate) async fn slow(state: &Arc<State>, query: Option<&str>) -> Response<Body> {
    let ms = match query_number::<u64>(query, "ms") {
        Ok(ms) => ms.unwrap_or(0),
        Err(reject) => return reject.into_response(),
    };
    let _running = state.admit().await;
    sleep(Duration::from_millis(ms)).await;
    json(StatusCode::OK, &json!({ "slept_ms": ms }))
}

/// `ANY /status/{code}`: answers `code` (200..=599) with a small JSON body (none for codes
/// that must not have one, or for `HEAD`).
pub(crate) fn status(method: &Method, code: &str) -> Response<Body> {
    let status = match code
        .parse::<u16>()
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
    {
        Some(status) if (200..=599).contains(&status.as_u16()) => status,
        _ => {
            return Reject::bad_request(format!(
                "/status/{{code}} needs a status code in 200..=599, got {code:?}"
            ))
            .into_response();
        }
    };
    if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        let mut response = Response::new(empty());
        *response.status_mut() = status;
        return response;
    }
    json(status, &json!({ "status": status.as_u16() }))
}

/// `GET /v1/models`: the configured model, as OpenAI lists models.
pub(crate) fn models(state: &State) -> Response<Body> {
    json(
        StatusCode::OK,
        &json!({
            "object": "list",
            "data": [{
                "id": state.opts.model,
                "object": "model",
                "created": unix_secs(),
                "owned_by": "fakeworker",
            }],
        }),
    )
}

/// 404 in OpenAI's shape, naming the method and path.
pub(crate) fn not_found(method: &Method, path: &str) -> Response<Body> {
    openai_error(
        StatusCode::NOT_FOUND,
        &format!("Invalid URL ({method} {path})"),
        "invalid_request_error",
    )
}

//! Admit (the activator): a request to an endpoint with no ready worker wakes the scaler at
//! once and is held — bounded by `scaling.max_pending` (→ 429) and
//! `scaling.cold_start_timeout_seconds` (→ 503) — until a worker passes its readiness check.
//! Held requests are released in arrival order; a client that leaves is dropped from the
//! queue with its future. A stopped endpoint refuses every request with 503.
//!
//! A held streaming chat request (`"stream": true`) that is still waiting after
//! `scaling.waking_keepalive_seconds` is answered `200 text/event-stream` at once and sent
//! `: waking` comments while the endpoint wakes, so clients and intermediaries with idle
//! timeouts do not give up on a long model load; the worker's events follow when it is
//! ready, and a failure arrives as an OpenAI-shaped `data: {"error": …}` event.
//!
//! Only endpoints whose workers Portico starts hold requests; fixed (static) workers that
//! are all down answer 503 at once, since waiting would not start one.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::BodyExt as _;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::body::{BodyError, ProxyBody, RequestBody};
use crate::endpoint::Endpoint;
use crate::error::{ProxyError, error_answer};
use crate::headers::Added;
use crate::stage::balance;
use crate::stage::forward::{self, Failure};
use crate::stage::telemetry::Record;

/// What admit decided.
#[derive(Debug)]
pub enum Admitted {
    /// A worker is ready: on to balance.
    Now(Request<RequestBody>),
    /// A held streaming request, answered already: keep-alives now, the worker's events
    /// later (written by a task on this thread).
    Waking(Response<ProxyBody>),
}

/// Lets the request on to balance once the endpoint has a ready worker.
pub async fn admit(
    endpoint: &Arc<Endpoint>,
    request: Request<RequestBody>,
    added: Option<&Added>,
    record: &Record,
) -> Result<Admitted, ProxyError> {
    let control = &endpoint.control;
    control.arrived();
    if control.stopped() {
        return Err(stopped(endpoint));
    }
    if !control.holds() || endpoint.has_available_worker() {
        return Ok(Admitted::Now(request));
    }
    // Boxed: holding is the rare path, and its state should not grow every request's
    // future.
    Box::pin(admit_held(endpoint, request, added, record)).await
}

/// [`admit`] for an endpoint that has no ready worker now.
async fn admit_held(
    endpoint: &Arc<Endpoint>,
    request: Request<RequestBody>,
    added: Option<&Added>,
    record: &Record,
) -> Result<Admitted, ProxyError> {
    let control = &endpoint.control;
    let (timeout, keepalive) = {
        let settings = control.settings();
        (settings.cold_start_timeout, settings.waking_keepalive)
    };
    let deadline = Instant::now() + timeout;
    if keepalive.is_zero() || keepalive >= timeout || !may_stream(&request) {
        hold(endpoint, deadline).await?;
        return Ok(Admitted::Now(request));
    }

    // A JSON POST: read it to learn whether the client expects a stream.
    let (head, body) = request.into_parts();
    let (whole, body) = body.buffer().await.map_err(|err| match err {
        BodyError::TooLarge => ProxyError::BodyTooLarge {
            limit: endpoint.config.max_body_bytes,
        },
        _ => ProxyError::BadRequest {
            reason: "the request body could not be read",
        },
    })?;
    let request = Request::from_parts(head, body);
    if !wants_stream(&whole) {
        hold(endpoint, deadline).await?;
        return Ok(Admitted::Now(request));
    }
    match hold(endpoint, Instant::now() + keepalive).await {
        Ok(()) => return Ok(Admitted::Now(request)),
        Err(ProxyError::NoWorkerReady { .. }) => {}
        Err(other) => return Err(other),
    }
    // Still waking after one keep-alive interval: answer now, and keep the line warm.
    let (sender, receiver) = mpsc::channel(16);
    tokio::task::spawn_local(wake_then_forward(
        Arc::clone(endpoint),
        request,
        added.cloned(),
        record.detached(),
        sender,
        deadline,
        keepalive,
    ));
    let mut response = Response::new(ProxyBody::channel(receiver));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(Admitted::Waking(response))
}

/// Holds the request until a worker is ready, the endpoint stops, or `deadline`.
pub async fn hold(endpoint: &Endpoint, deadline: Instant) -> Result<(), ProxyError> {
    let control = &endpoint.control;
    let max_pending = control.settings().max_pending;
    let Some(_held) = control.admission.enter(max_pending) else {
        return Err(ProxyError::TooManyPending {
            endpoint: endpoint.id().to_string(),
        });
    };
    wait_ready(endpoint, deadline).await
}

async fn wait_ready(endpoint: &Endpoint, deadline: Instant) -> Result<(), ProxyError> {
    let control = &endpoint.control;
    loop {
        // Registered before the check: a release in between is not lost.
        let released = control.admission.waiter();
        if control.stopped() {
            return Err(stopped(endpoint));
        }
        if endpoint.has_available_worker() {
            return Ok(());
        }
        // Every round, in case the replica that was ready went away again.
        control.wake();
        if tokio::time::timeout_at(deadline, released).await.is_err() {
            return Err(ProxyError::NoWorkerReady {
                endpoint: endpoint.id().to_string(),
            });
        }
    }
}

/// The held streaming request's task: keep-alives until a worker is ready, then the
/// worker's answer, all into the response already sent.
async fn wake_then_forward(
    endpoint: Arc<Endpoint>,
    request: Request<RequestBody>,
    added: Option<Added>,
    mut record: Record,
    sender: mpsc::Sender<Bytes>,
    deadline: Instant,
    keepalive: Duration,
) {
    const WAKING: &[u8] = b": waking\n\n";
    let held = endpoint.control.admission.enter(u32::MAX);
    let mut ticks = tokio::time::interval(keepalive);
    loop {
        tokio::select! {
            ready = wait_ready(&endpoint, deadline) => match ready {
                Ok(()) => break,
                Err(err) => {
                    let _ = sender.send(error_event(&err)).await;
                    return;
                }
            },
            _ = ticks.tick() => {
                if sender.send(Bytes::from_static(WAKING)).await.is_err() {
                    // The client left.
                    return;
                }
            }
        }
    }
    drop(held);
    let response = match send(&endpoint, request, added.as_ref(), &mut record).await {
        Ok(response) => response,
        Err(err) => {
            let _ = sender.send(error_event(&err)).await;
            return;
        }
    };
    let status = response.status();
    let mut body = response.into_body();
    if !status.is_success() {
        // The client was promised a stream: the worker's error becomes its last event.
        let text = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let event = match serde_json::from_slice::<serde_json::Value>(&text) {
            Ok(json) if json.get("error").is_some() => json,
            _ => serde_json::json!({"error": {
                "message": format!("the worker answered {status}"),
                "type": "server_error",
                "code": "worker_error",
            }}),
        };
        let _ = sender.send(Bytes::from(format!("data: {event}\n\n"))).await;
        return;
    }
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { return };
        if let Ok(data) = frame.into_data()
            && sender.send(data).await.is_err()
        {
            return;
        }
    }
}

/// Balance and forward with one retry on another worker when nothing was sent.
async fn send(
    endpoint: &Arc<Endpoint>,
    mut request: Request<RequestBody>,
    added: Option<&Added>,
    record: &mut Record,
) -> Result<Response<ProxyBody>, ProxyError> {
    let mut exclude = None;
    loop {
        let worker = balance::pick(endpoint, exclude)?;
        match forward::send(endpoint, &worker, request, added, record).await {
            Ok(response) => return Ok(response),
            Err(Failure::NotSent { request: again, .. }) if exclude.is_none() => {
                exclude = Some(worker.id());
                request = *again;
            }
            Err(Failure::NotSent { error, .. } | Failure::Failed(error)) => return Err(error),
        }
    }
}

/// `data: {"error": …}` with the error's JSON body, as OpenAI streams report errors.
fn error_event(err: &ProxyError) -> Bytes {
    let body = error_answer(err).into_body();
    let mut event = Vec::with_capacity(body.len() + 8);
    event.extend_from_slice(b"data: ");
    event.extend_from_slice(&body);
    event.extend_from_slice(b"\n\n");
    Bytes::from(event)
}

/// A POST with a JSON body could ask for a stream.
fn may_stream(request: &Request<RequestBody>) -> bool {
    request.method() == Method::POST
        && request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().contains("json"))
}

/// `"stream": true` at the top of a JSON body.
fn wants_stream(body: &[u8]) -> bool {
    #[derive(Deserialize)]
    struct Flag {
        #[serde(default)]
        stream: serde_json::Value,
    }
    serde_json::from_slice::<Flag>(body).is_ok_and(|f| f.stream == serde_json::Value::Bool(true))
}

fn stopped(endpoint: &Endpoint) -> ProxyError {
    ProxyError::EndpointStopped {
        endpoint: endpoint.id().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only a top-level `"stream": true` asks for a stream.
    #[test]
    fn stream_flag() {
        assert!(wants_stream(
            br#"{"model":"m","stream":true,"messages":[]}"#
        ));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
        assert!(!wants_stream(br#"{"stream":"true"}"#));
        assert!(!wants_stream(br#"{"nested":{"stream":true}}"#));
        assert!(!wants_stream(b"not json"));
        assert!(!wants_stream(b"[1,2]"));
    }

    /// Errors become one SSE data event with the OpenAI error object.
    #[test]
    fn error_events() {
        let event = error_event(&ProxyError::NoWorkerReady {
            endpoint: "e".into(),
        });
        let text = std::str::from_utf8(&event).unwrap();
        let json: serde_json::Value =
            serde_json::from_str(text.strip_prefix("data: ").unwrap().trim_end()).unwrap();
        assert_eq!(json["error"]["code"], "no_worker_ready");
        assert!(text.ends_with("\n\n"));
    }
}

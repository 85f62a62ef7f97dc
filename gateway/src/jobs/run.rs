//! One async job, from claim to result: send it to a worker through the `balance` and
//! `forward` stages (so in-flight counting, health and timeouts apply as for synchronous
//! traffic), retry worker failures with back-off up to `max_attempts`, write the result
//! document, record the final state, call the webhook.

use std::net::{IpAddr, Ipv4Addr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Uri, header};
use http_body_util::BodyExt as _;

use super::Jobs;
use super::dispatcher::Slot;
use super::document::{self, Outcome};
use crate::body::{RequestBody, RequestStats};
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::headers::X_REQUEST_ID;
use crate::queue::{Claimed, JobState, JobStatus, now_ms};
use crate::stage::balance;
use crate::stage::forward::{self, Failure};
use crate::stage::telemetry::Record;

/// First wait before a retry; doubled per attempt.
const RETRY_BASE: Duration = Duration::from_millis(500);
/// Longest wait between retries, and between result-write attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often a job waiting for a worker looks again.
const WORKER_POLL: Duration = Duration::from_millis(100);

/// What one attempt got.
enum Attempt {
    /// The worker answered (any status).
    Answered {
        status: u16,
        headers: Vec<(String, String)>,
        body: Bytes,
    },
    /// The worker failed before a whole answer (connect, reset, timeout, body error).
    Failed(String),
    /// No worker became ready before the job's TTL ran out.
    NoWorker,
}

/// Runs a claimed job to its end; `slot` is given back once no worker is needed any more.
pub(super) async fn job(endpoint: &Arc<Endpoint>, jobs: &Jobs, claimed: Claimed, slot: Slot) {
    let Claimed { mut state, body } = claimed;
    // A job delivered again (a retry or a dead dispatcher's job) may have its result
    // written already: it is only finished, so that one request id has one result.
    if state.attempts > 1
        && let Ok(Some(written)) = jobs.results.get(&state.endpoint, &state.id).await
        && let Some(status) = document::stored_status(&written)
    {
        finish(jobs, &mut state, status).await;
        return;
    }
    let outcome = if state.submitted_at_ms + state.ttl_ms <= now_ms() {
        expired(&state)
    } else {
        attempts(endpoint, jobs, &mut state, &body).await
    };
    drop(slot);
    let completed_at = now_ms();
    let result = document::result(&state, &outcome, state.attempts, completed_at);
    write(jobs, &state, result).await;
    finish(jobs, &mut state, outcome.status).await;
    let seconds = completed_at.saturating_sub(state.submitted_at_ms) as f64 / 1000.0;
    jobs.metrics.duration.record(seconds);
    match outcome.status {
        JobStatus::Completed => jobs.metrics.completed.increment(1),
        JobStatus::Failed => jobs.metrics.failed.increment(1),
        _ => jobs.metrics.expired.increment(1),
    }
    tracing::debug!(
        endpoint = %state.endpoint,
        request_id = %state.id,
        status = outcome.status.as_str(),
        attempts = state.attempts,
        "async job done"
    );
    if let Some(url) = state.webhook.clone() {
        let location = jobs.results.location(&state.endpoint, &state.id);
        let status = document::status(&state, &location);
        tokio::task::spawn_local(super::webhook::call(url, status));
    }
}

/// Sends the job until the worker answers below 500 or attempts run out.
async fn attempts(
    endpoint: &Arc<Endpoint>,
    jobs: &Jobs,
    state: &mut JobState,
    body: &Bytes,
) -> Outcome {
    let max = jobs.settings.max_attempts;
    if state.attempts > max {
        // Claimed again after crashes more often than it may be tried.
        return failed(format!("gave up after {max} attempts"));
    }
    loop {
        let reason = match send(endpoint, state, body).await {
            Attempt::Answered {
                status,
                headers,
                body,
            } if status < 500 => {
                // 4xx is the worker's answer, not a failure to retry.
                return Outcome {
                    status: JobStatus::Completed,
                    status_code: Some(status),
                    headers,
                    body: Some(body),
                    error: None,
                };
            }
            Attempt::Answered {
                status,
                headers,
                body,
            } => {
                let reason = format!("the worker answered {status}");
                if state.attempts >= max {
                    return Outcome {
                        status: JobStatus::Failed,
                        status_code: Some(status),
                        headers,
                        body: Some(body),
                        error: Some(format!("{reason} on each of {max} attempts")),
                    };
                }
                reason
            }
            Attempt::Failed(reason) => {
                if state.attempts >= max {
                    return failed(format!("{reason} (attempt {max} of {max})"));
                }
                reason
            }
            Attempt::NoWorker => return expired(state),
        };
        tracing::debug!(request_id = %state.id, attempt = state.attempts, %reason, "async job retried");
        tokio::time::sleep(backoff(RETRY_BASE, state.attempts)).await;
        state.attempts = match jobs.queue.retry(&state.id).await {
            Ok(attempts) => attempts,
            Err(err) => {
                tracing::warn!(request_id = %state.id, error = %err, "could not count a retry");
                state.attempts + 1
            }
        };
    }
}

/// One attempt: a worker (waiting for one while the endpoint wakes), the request, the
/// whole response.
async fn send(endpoint: &Arc<Endpoint>, state: &JobState, body: &Bytes) -> Attempt {
    let mut request = match request(state, body) {
        Ok(request) => request,
        Err(reason) => return Attempt::Failed(reason),
    };
    let mut record = record(endpoint, state);
    let mut exclude = None;
    let response = loop {
        let Some(worker) = ready_worker(endpoint, state, exclude).await else {
            return Attempt::NoWorker;
        };
        // The stored request carries its own id; async jobs add no forwarding headers.
        match forward::send(endpoint, &worker, request, None, &mut record).await {
            Ok(response) => break response,
            Err(Failure::NotSent { request: again, .. }) if exclude.is_none() => {
                exclude = Some(worker.id());
                request = *again;
            }
            Err(Failure::NotSent { error, .. } | Failure::Failed(error)) => {
                return Attempt::Failed(error.to_string());
            }
        }
    };
    let (parts, body) = response.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(err) => return Attempt::Failed(format!("the worker's body failed: {err}")),
    };
    let headers = parts
        .headers
        .iter()
        .filter_map(|(name, value)| Some((name.to_string(), value.to_str().ok()?.to_string())))
        .collect();
    Attempt::Answered {
        status: parts.status.as_u16(),
        headers,
        body,
    }
}

/// A ready worker, waiting (and waking the endpoint) while none is, until the job's TTL.
async fn ready_worker(
    endpoint: &Arc<Endpoint>,
    state: &JobState,
    exclude: Option<crate::worker::WorkerId>,
) -> Option<Arc<crate::worker::Worker>> {
    loop {
        match balance::pick(endpoint, exclude) {
            Ok(worker) => return Some(worker),
            Err(ProxyError::NoHealthyWorker { .. }) => {
                if state.submitted_at_ms + state.ttl_ms <= now_ms() {
                    return None;
                }
                endpoint.control.wake();
                tokio::time::sleep(WORKER_POLL).await;
            }
            Err(_) => return None,
        }
    }
}

/// The worker's request: the route, the headers intake kept, the body.
fn request(state: &JobState, body: &Bytes) -> Result<Request<RequestBody>, String> {
    let mut builder = Request::builder().method(Method::POST).uri(&state.route);
    for (name, value) in &state.headers {
        builder = builder.header(name, value);
    }
    let id = HeaderValue::from_str(&state.id).map_err(|err| err.to_string())?;
    builder
        .header(X_REQUEST_ID, id)
        .header(header::CONTENT_LENGTH, body.len())
        .body(RequestBody::full(body.clone(), Rc::default()))
        .map_err(|err| format!("the stored request is not valid HTTP: {err}"))
}

/// What `forward` records about the attempt; async jobs have no client connection.
fn record(endpoint: &Arc<Endpoint>, state: &JobState) -> Record {
    Record {
        start: Instant::now(),
        time: SystemTime::now(),
        request_id: HeaderValue::from_str(&state.id).unwrap_or(HeaderValue::from_static("invalid")),
        client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        listener: Rc::from("async"),
        method: Method::POST,
        uri: state.route.parse().unwrap_or(Uri::from_static("/")),
        version: http::Version::HTTP_11,
        endpoint: Some(Arc::clone(endpoint)),
        worker: None,
        status: 0,
        stats: Rc::new(RequestStats::default()),
        first_byte: None,
        caller: None,
        error: None,
        ws: None,
        busy: None,
    }
}

fn expired(state: &JobState) -> Outcome {
    Outcome {
        status: JobStatus::Expired,
        status_code: None,
        headers: Vec::new(),
        body: None,
        error: Some(format!(
            "no worker took the request within ttl_seconds ({} s)",
            state.ttl_ms / 1000
        )),
    }
}

fn failed(error: String) -> Outcome {
    Outcome {
        status: JobStatus::Failed,
        status_code: None,
        headers: Vec::new(),
        body: None,
        error: Some(error),
    }
}

/// Writes the result, retrying until the store takes it: a result is never dropped.
async fn write(jobs: &Jobs, state: &JobState, result: Bytes) {
    let mut tries = 0;
    loop {
        match jobs
            .results
            .put(&state.endpoint, &state.id, result.clone())
            .await
        {
            Ok(()) => return,
            Err(err) => {
                jobs.metrics.write_errors.increment(1);
                tries += 1;
                let wait = backoff(RETRY_BASE, tries);
                tracing::warn!(
                    request_id = %state.id,
                    error = %err,
                    retry_in_ms = wait.as_millis() as u64,
                    "could not write an async result"
                );
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Records the final state; retried, since the result is already written (a job left
/// claimed is finished from its stored result when delivered again).
async fn finish(jobs: &Jobs, state: &mut JobState, status: JobStatus) {
    state.status = status;
    state.updated_at_ms = now_ms();
    for tries in 1..=5 {
        match jobs.queue.finish(&state.id, status).await {
            Ok(()) => return,
            Err(err) => {
                tracing::warn!(request_id = %state.id, error = %err, "could not finish an async job");
                tokio::time::sleep(backoff(RETRY_BASE, tries)).await;
            }
        }
    }
}

/// `base` × 2^(n-1), at most [`BACKOFF_MAX`].
fn backoff(base: Duration, n: u32) -> Duration {
    base.saturating_mul(1 << n.saturating_sub(1).min(16))
        .min(BACKOFF_MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Back-off doubles from the base and stops at the cap.
    #[test]
    fn backoff_doubles_to_the_cap() {
        assert_eq!(backoff(RETRY_BASE, 1), Duration::from_millis(500));
        assert_eq!(backoff(RETRY_BASE, 2), Duration::from_secs(1));
        assert_eq!(backoff(RETRY_BASE, 3), Duration::from_secs(2));
        assert_eq!(backoff(RETRY_BASE, 40), BACKOFF_MAX);
    }
}

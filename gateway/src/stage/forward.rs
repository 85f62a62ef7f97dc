//! Forward: the exchange with one worker. The request is streamed to the worker over a
//! pooled HTTP/1.1 connection (Portico's own client, `upstream::h1`) or the thread's h2c
//! connection (hyper's), and the response streamed back; timeouts, passive health and
//! connection reuse are decided here.

use std::sync::Arc;
use std::time::Instant;

use http::header;
use http::uri::{PathAndQuery, Scheme, Uri};
use http::{Request, Response, Version};

use crate::body::{ProxyBody, RequestBody, UpstreamBody, WorkerBody};
use crate::config::WorkerProtocol;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::headers::{self, Added};
use crate::metrics::UpstreamErrorKind;
use crate::stage::telemetry::Record;
use crate::upstream::h1::{self, SendError};
use crate::upstream::pool;
use crate::worker::Worker;

/// Why a forward attempt failed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing reached the worker (connect failed): the request may go to another worker.
    NotSent {
        /// The untouched request.
        request: Box<Request<RequestBody>>,
        /// The error, if no retry is possible.
        error: ProxyError,
    },
    /// The worker may have seen the request; it must not be sent again.
    Failed(ProxyError),
}

/// Makes the request worker-shaped once, before any attempt: origin-form URI `/{rest}?q`
/// (the tail of the client's path from `rest_start`), HTTP/1.1, hop-by-hop headers removed.
/// What Portico adds (forwarding headers, request id: [`Added`]) is applied separately.
pub fn prepare(mut request: Request<RequestBody>, rest_start: usize) -> Request<RequestBody> {
    let full = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    // `rest_start` is a char boundary of the path, which begins the path-and-query.
    let tail = full.get(rest_start..).unwrap_or("");
    let path_and_query = if tail.starts_with('/') {
        PathAndQuery::try_from(tail)
    } else {
        // The endpoint's root, possibly with a query: `/` then the query.
        PathAndQuery::try_from(format!("/{tail}"))
    };
    let mut parts = http::uri::Parts::default();
    // A tail of an already valid URI is valid.
    parts.path_and_query = path_and_query.ok();
    *request.uri_mut() = Uri::from_parts(parts).unwrap_or_default();
    *request.version_mut() = Version::HTTP_11;
    // `Upgrade` goes too: a WebSocket upgrade restores what it needs (stage::ws).
    headers::remove_hop_by_hop(request.headers_mut(), false);
    request
}

/// Sends `request` to `worker` and returns its response with a streaming body. `added` is
/// what Portico adds to the request, written after the client's headers by the HTTP/1.1
/// encoder; `None` when the request carries it already (the pipeline applies it to the map
/// for h2c workers, whose client is hyper's; async jobs carry their own id).
pub async fn send(
    endpoint: &Arc<Endpoint>,
    worker: &Arc<Worker>,
    mut request: Request<RequestBody>,
    added: Option<&Added>,
    record: &mut Record,
) -> Result<Response<ProxyBody>, Failure> {
    let guard = worker.guard();
    let timeouts = &endpoint.config.timeouts;
    let sent_at = Instant::now();
    let response = match endpoint.config.workers.protocol {
        WorkerProtocol::Http1 => {
            let conn = match pool::checkout_http1(worker, timeouts.connect).await {
                Ok(conn) => conn,
                Err(kind) => return Err(not_sent(endpoint, worker, request, kind)),
            };
            // Boxed: the exchange holds the request head and the upload state until the
            // answer's head arrives, which would grow every connection's request future.
            let exchange = Box::pin(h1::send(conn, request, worker.host_header(), added));
            match tokio::time::timeout(timeouts.first_byte, exchange).await {
                Ok(Ok(response)) => response.map(WorkerBody::Http1),
                Ok(Err(SendError {
                    unsent: Some(request),
                    ..
                })) => {
                    return Err(not_sent(
                        endpoint,
                        worker,
                        request,
                        UpstreamErrorKind::Reset,
                    ));
                }
                Ok(Err(err)) => {
                    tracing::debug!(worker = worker.label(), error = %err.error, "exchange failed");
                    return Err(Failure::Failed(failed(endpoint, worker, record)));
                }
                Err(_) => return Err(Failure::Failed(timed_out(endpoint))),
            }
        }
        WorkerProtocol::H2c => {
            let mut sender = match pool::checkout_http2(worker, timeouts.connect).await {
                Ok(sender) => sender,
                Err(kind) => return Err(not_sent(endpoint, worker, request, kind)),
            };
            debug_assert!(added.is_none(), "h2c requests carry what Portico adds");
            *request.uri_mut() = absolute(request.uri(), worker);
            *request.version_mut() = Version::HTTP_2;
            // The authority is in the URI.
            request.headers_mut().remove(header::HOST);
            let exchange = sender.try_send_request(request);
            match tokio::time::timeout(timeouts.first_byte, exchange).await {
                Ok(Ok(response)) => response.map(WorkerBody::Hyper),
                Ok(Err(mut err)) => {
                    return Err(match err.take_message() {
                        // The connection closed before the request was written.
                        Some(request) => {
                            not_sent(endpoint, worker, request, UpstreamErrorKind::Reset)
                        }
                        None => Failure::Failed(failed(endpoint, worker, record)),
                    });
                }
                Err(_) => return Err(Failure::Failed(timed_out(endpoint))),
            }
        }
    };
    let first_byte = sent_at.elapsed();
    record.first_byte = Some(first_byte);
    endpoint.metrics.first_byte(first_byte.as_secs_f64());
    if response.status().is_server_error() {
        passive_failure(endpoint, worker);
    } else {
        worker.record_success();
    }
    Ok(relay(response, endpoint, guard))
}

/// The worker's response, with connection-specific headers removed and its body wrapped.
pub fn relay(
    response: Response<WorkerBody>,
    endpoint: &Arc<Endpoint>,
    guard: crate::worker::InflightGuard,
) -> Response<ProxyBody> {
    let (mut parts, body) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, false);
    let body = UpstreamBody::new(body, Arc::clone(endpoint), guard);
    Response::from_parts(parts, ProxyBody::upstream(body))
}

fn not_sent(
    endpoint: &Endpoint,
    worker: &Worker,
    request: Request<RequestBody>,
    kind: UpstreamErrorKind,
) -> Failure {
    endpoint.metrics.upstream_error(kind);
    if kind != UpstreamErrorKind::Reset {
        passive_failure(endpoint, worker);
    }
    Failure::NotSent {
        request: Box::new(request),
        error: ProxyError::WorkerUnavailable { kind },
    }
}

/// The exchange failed after the request may have reached the worker.
fn failed(endpoint: &Endpoint, worker: &Worker, record: &Record) -> ProxyError {
    if record.stats.too_large.get() {
        return ProxyError::BodyTooLarge {
            limit: endpoint.config.max_body_bytes,
        };
    }
    endpoint.metrics.upstream_error(UpstreamErrorKind::Reset);
    passive_failure(endpoint, worker);
    ProxyError::WorkerUnavailable {
        kind: UpstreamErrorKind::Reset,
    }
}

fn timed_out(endpoint: &Endpoint) -> ProxyError {
    endpoint
        .metrics
        .upstream_error(UpstreamErrorKind::FirstByteTimeout);
    ProxyError::WorkerTimeout
}

fn passive_failure(endpoint: &Endpoint, worker: &Worker) {
    let others = endpoint
        .workers()
        .iter()
        .any(|w| w.id() != worker.id() && w.available());
    if worker.record_failure(&endpoint.config.health, others) {
        tracing::warn!(
            endpoint = endpoint.id(),
            worker = worker.label(),
            "worker ejected after consecutive failures"
        );
    }
}

/// `http://worker/path?query`: HTTP/2 requests carry scheme and authority.
fn absolute(uri: &Uri, worker: &Worker) -> Uri {
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(Scheme::HTTP);
    parts.authority = Some(worker.authority().clone());
    parts.path_and_query = uri.path_and_query().cloned();
    Uri::from_parts(parts).unwrap_or_default()
}

//! Per-thread connection pools, one per worker. Each data-plane thread owns its pools and
//! runs their connection tasks itself, so a request never takes a lock or wakes another
//! thread to reach a worker (PERFORMANCE.md).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::client::conn::{http1, http2};
use hyper_util::rt::TokioIo;

use crate::body::RequestBody;
use crate::metrics::UpstreamErrorKind;
use crate::runtime::LocalExec;
use crate::upstream::connect;
use crate::worker::{Worker, WorkerId};

/// Idle connections kept per worker and thread.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused: common model servers
/// (uvicorn, Node) close idle keep-alive connections after 5 s, and reusing one that the
/// worker is closing fails the request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

struct Idle {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

thread_local! {
    static HTTP1: RefCell<HashMap<WorkerId, Vec<Idle>>> = RefCell::new(HashMap::new());
    static HTTP2: RefCell<HashMap<WorkerId, http2::SendRequest<RequestBody>>> =
        RefCell::new(HashMap::new());
}

/// An HTTP/1.1 connection checked out of the pool for one request.
#[derive(Debug)]
pub struct Pooled {
    worker: WorkerId,
    sender: http1::SendRequest<RequestBody>,
    /// Whether it served a request before (a failure on it may be a stale connection).
    pub reused: bool,
}

impl Pooled {
    /// The request sender.
    pub fn sender(&mut self) -> &mut http1::SendRequest<RequestBody> {
        &mut self.sender
    }

    /// Returns the connection to its pool after a response was read to the end.
    pub fn release(self) {
        if self.sender.is_closed() {
            return;
        }
        HTTP1.with(|pools| {
            let mut pools = pools.borrow_mut();
            if !pools.contains_key(&self.worker) {
                // A worker new to this thread: a good moment to forget workers that went
                // away (scaled down, crashed), whose connections are closed or stale.
                pools.retain(|_, idle| {
                    idle.retain(|c| !c.sender.is_closed() && c.since.elapsed() <= IDLE_TIMEOUT);
                    !idle.is_empty()
                });
            }
            let idle = pools.entry(self.worker).or_default();
            if idle.len() < MAX_IDLE {
                idle.push(Idle {
                    sender: self.sender,
                    since: Instant::now(),
                });
            }
        });
    }
}

/// An idle HTTP/1.1 connection to `worker`, or a new one.
pub async fn checkout_http1(
    worker: &Worker,
    connect_timeout: Duration,
) -> Result<Pooled, UpstreamErrorKind> {
    while let Some(mut idle) = pop_idle(worker.id()) {
        if idle.since.elapsed() > IDLE_TIMEOUT || idle.sender.is_closed() {
            continue;
        }
        // Released at the end of a body, the connection is ready once its task has seen
        // that end; this resolves at once or within the same turn of the event loop.
        if idle.sender.ready().await.is_ok() {
            return Ok(Pooled {
                worker: worker.id(),
                sender: idle.sender,
                reused: true,
            });
        }
    }
    // Boxed: connecting is the rare path, and its state should not grow every request's
    // future.
    Box::pin(connect_http1(worker, connect_timeout)).await
}

/// A new HTTP/1.1 connection to `worker`, its connection task spawned on this thread.
async fn connect_http1(
    worker: &Worker,
    connect_timeout: Duration,
) -> Result<Pooled, UpstreamErrorKind> {
    let stream = connect(worker, connect_timeout).await?;
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| UpstreamErrorKind::Connect)?;
    tokio::task::spawn_local(async move {
        if let Err(err) = connection.with_upgrades().await {
            tracing::debug!(error = %err, "worker connection ended with an error");
        }
    });
    Ok(Pooled {
        worker: worker.id(),
        sender,
        reused: false,
    })
}

fn pop_idle(worker: WorkerId) -> Option<Idle> {
    // Most recently used first: the connection least likely to have been closed.
    HTTP1.with(|pools| pools.borrow_mut().get_mut(&worker)?.pop())
}

/// The thread's shared HTTP/2 (h2c) connection to `worker`, opened when missing or closed.
pub async fn checkout_http2(
    worker: &Worker,
    connect_timeout: Duration,
) -> Result<http2::SendRequest<RequestBody>, UpstreamErrorKind> {
    let existing = HTTP2.with(|pools| {
        pools
            .borrow()
            .get(&worker.id())
            .filter(|sender| !sender.is_closed())
            .cloned()
    });
    if let Some(sender) = existing {
        return Ok(sender);
    }
    // Boxed, like `connect_http1`.
    Box::pin(connect_http2(worker, connect_timeout)).await
}

/// A new h2c connection to `worker`, kept as the thread's connection to it.
async fn connect_http2(
    worker: &Worker,
    connect_timeout: Duration,
) -> Result<http2::SendRequest<RequestBody>, UpstreamErrorKind> {
    let stream = connect(worker, connect_timeout).await?;
    let (sender, connection) = http2::Builder::new(LocalExec)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|_| UpstreamErrorKind::Connect)?;
    tokio::task::spawn_local(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "worker h2 connection ended with an error");
        }
    });
    HTTP2.with(|pools| {
        let mut pools = pools.borrow_mut();
        // Connections to workers that went away are closed: forget them.
        pools.retain(|_, sender| !sender.is_closed());
        pools.insert(worker.id(), sender.clone());
    });
    Ok(sender)
}

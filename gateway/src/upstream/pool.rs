//! Per-thread connection pools, one per worker. Each data-plane thread owns its pools, so a
//! request never takes a lock or wakes another thread to reach a worker (PERFORMANCE.md).
//! HTTP/1.1 connections are plain values ([`Conn`], Portico's own client in `h1`) taken out
//! for one exchange and put back by the response body's end; the h2c connection of each
//! worker is shared by the thread's requests, its task run on the same thread.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use hyper::client::conn::http2;
use hyper_util::rt::TokioIo;

use crate::body::RequestBody;
use crate::metrics::UpstreamErrorKind;
use crate::runtime::LocalExec;
use crate::upstream::connect;
use crate::upstream::h1::Conn;
use crate::worker::{Worker, WorkerId};

/// Idle connections kept per worker and thread.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than reused: common model servers
/// (uvicorn, Node) close idle keep-alive connections after 5 s, and reusing one that the
/// worker is closing fails the request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

struct Idle {
    conn: Conn,
    since: Instant,
}

thread_local! {
    static HTTP1: RefCell<HashMap<WorkerId, Vec<Idle>>> = RefCell::new(HashMap::new());
    static HTTP2: RefCell<HashMap<WorkerId, http2::SendRequest<RequestBody>>> =
        RefCell::new(HashMap::new());
}

/// Returns a connection to its pool after an exchange that ended cleanly.
pub fn release_http1(conn: Conn) {
    HTTP1.with(|pools| {
        let mut pools = pools.borrow_mut();
        let idle = pools.entry(conn.worker()).or_default();
        if idle.len() < MAX_IDLE {
            idle.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    });
}

/// Closes the idle connections past [`IDLE_TIMEOUT`] or closed by their worker, and
/// forgets workers left with none (scaled down, crashed); run once a second by the
/// data-plane thread's sweep (`idle.rs`), so that idle sockets do not outlive their use.
pub fn sweep_http1() {
    HTTP1.with(|pools| {
        pools.borrow_mut().retain(|_, idle| {
            idle.retain(Idle::usable);
            !idle.is_empty()
        });
    });
}

impl Idle {
    /// Young enough to reuse, and not closed by the worker.
    fn usable(&self) -> bool {
        self.since.elapsed() <= IDLE_TIMEOUT && !self.conn.is_closed()
    }
}

/// An idle HTTP/1.1 connection to `worker`, or a new one.
pub async fn checkout_http1(
    worker: &Worker,
    connect_timeout: Duration,
) -> Result<Conn, UpstreamErrorKind> {
    while let Some(idle) = pop_idle(worker.id()) {
        if idle.usable() {
            return Ok(idle.conn);
        }
    }
    // Boxed: connecting is the rare path, and its state should not grow every request's
    // future.
    Box::pin(connect(worker, connect_timeout))
        .await
        .map(|stream| Conn::new(stream, worker.id()))
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
    // Boxed, like the connect of `checkout_http1`: the rare path.
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

//! Bodies on both sides of the proxy, streamed frame by frame and never buffered whole.
//!
//! - [`RequestBody`]: the client's body on its way to a worker, counted and held to the
//!   endpoint's `max_body_bytes`.
//! - [`ProxyBody`]: what the client receives: Portico's own small answers, or a worker's
//!   body with its idle timeout, in-flight guard and pooled connection, finishing the
//!   request's telemetry when it ends or is dropped.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::endpoint::Endpoint;
use crate::metrics::UpstreamErrorKind;
use crate::stage::telemetry::Record;
use crate::upstream::pool::Pooled;
use crate::worker::InflightGuard;

/// Why a body stream failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client sent more than `max_body_bytes`.
    #[error("request body over the limit")]
    TooLarge,
    /// Reading the client's body failed.
    #[error("client body: {0}")]
    Client(#[source] hyper::Error),
    /// The worker's body failed (reset, closed early, malformed).
    #[error("worker body: {0}")]
    Worker(#[source] hyper::Error),
    /// The worker's body stalled longer than `timeouts.idle_seconds`.
    #[error("worker body idle for {0:?}")]
    Idle(Duration),
}

/// What a request's body did, shared between the body (polled by the upstream connection)
/// and the request's telemetry. Single-threaded: it lives on one data-plane thread.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// Body bytes received from the client.
    pub bytes_in: Cell<u64>,
    /// Whether the body went over `max_body_bytes`.
    pub too_large: Cell<bool>,
}

/// The client's request body, streamed to a worker.
#[derive(Debug)]
pub struct RequestBody {
    inner: Source,
    stats: Rc<RequestStats>,
    limit: u64,
}

#[derive(Debug)]
enum Source {
    /// Streamed from the client.
    Client(Incoming),
    /// Read whole already (a held streaming request, checked for `"stream": true`).
    Buffered(Option<Bytes>),
}

impl RequestBody {
    /// Wraps `inner`, failing once more than `limit` bytes arrived.
    pub fn new(inner: Incoming, stats: Rc<RequestStats>, limit: u64) -> RequestBody {
        RequestBody {
            inner: Source::Client(inner),
            stats,
            limit,
        }
    }

    /// A body that is `bytes` whole (an async job's stored request).
    pub fn full(bytes: Bytes, stats: Rc<RequestStats>) -> RequestBody {
        RequestBody {
            inner: Source::Buffered(Some(bytes).filter(|b| !b.is_empty())),
            stats,
            limit: u64::MAX,
        }
    }

    /// Reads the whole body (at most `limit` bytes) and returns it with a body that
    /// replays it.
    pub async fn buffer(mut self) -> Result<(Bytes, RequestBody), BodyError> {
        use http_body_util::BodyExt as _;
        let mut whole = bytes::BytesMut::new();
        while let Some(frame) = self.frame().await {
            if let Ok(data) = frame?.into_data() {
                whole.extend_from_slice(&data);
            }
        }
        let whole = whole.freeze();
        let replay = RequestBody {
            inner: Source::Buffered(Some(whole.clone()).filter(|b| !b.is_empty())),
            stats: self.stats,
            limit: self.limit,
        };
        Ok((whole, replay))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let inner = match &mut this.inner {
            Source::Client(inner) => inner,
            // Counted when it was read from the client.
            Source::Buffered(bytes) => {
                return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))));
            }
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let total = this.stats.bytes_in.get() + data.len() as u64;
                    this.stats.bytes_in.set(total);
                    if total > this.limit {
                        this.stats.too_large.set(true);
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(BodyError::Client(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Source::Client(inner) => inner.is_end_stream(),
            Source::Buffered(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Source::Client(inner) => inner.size_hint(),
            Source::Buffered(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
        }
    }
}

/// A worker's response body on its way to the client.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    endpoint: Arc<Endpoint>,
    idle_timeout: Duration,
    /// Armed the first time the worker makes the client wait: a body that arrives whole
    /// with its headers never needs a timer.
    idle: Option<Pin<Box<Sleep>>>,
    /// The HTTP/1.1 connection, returned to the pool when the body ends cleanly.
    conn: Option<Pooled>,
    guard: Option<InflightGuard>,
}

impl UpstreamBody {
    /// Wraps a worker's body.
    pub fn new(
        inner: Incoming,
        endpoint: Arc<Endpoint>,
        conn: Option<Pooled>,
        guard: InflightGuard,
    ) -> UpstreamBody {
        let idle_timeout = endpoint.config.timeouts.idle;
        UpstreamBody {
            inner,
            endpoint,
            idle_timeout,
            idle: None,
            conn,
            guard: Some(guard),
        }
    }

    /// The clean end: the connection goes back to the pool and the guard is released.
    fn finish(&mut self) {
        if let Some(conn) = self.conn.take() {
            conn.release();
        }
        self.guard = None;
    }

    fn fail(&mut self, kind: UpstreamErrorKind) {
        self.endpoint.metrics.upstream_error(kind);
        // A connection whose body failed is not reused.
        self.conn = None;
        self.guard = None;
    }

    fn poll_frame_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.guard.is_none() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if self.inner.is_end_stream() {
                    self.finish();
                } else if let Some(idle) = &mut self.idle {
                    idle.as_mut().reset(Instant::now() + self.idle_timeout);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.fail(UpstreamErrorKind::Reset);
                Poll::Ready(Some(Err(BodyError::Worker(err))))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match self
                .idle
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(self.idle_timeout)))
                .as_mut()
                .poll(cx)
            {
                Poll::Ready(()) => {
                    self.fail(UpstreamErrorKind::IdleTimeout);
                    Poll::Ready(Some(Err(BodyError::Idle(self.idle_timeout))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Dropped at its end without a final poll (e.g. an empty body): still reusable.
        if self.guard.is_some() && self.inner.is_end_stream() {
            self.finish();
        }
    }
}

use std::future::Future as _;

enum Kind {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// Written by a task: a held streaming request's keep-alives, then the worker's body.
    Channel(tokio::sync::mpsc::Receiver<Bytes>),
}

/// The body of every response Portico sends.
pub struct ProxyBody {
    kind: Kind,
    bytes_out: u64,
    record: Option<Box<Record>>,
}

impl std::fmt::Debug for ProxyBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyBody")
            .field("bytes_out", &self.bytes_out)
            .finish_non_exhaustive()
    }
}

impl ProxyBody {
    /// A body of Portico's own (health answers, errors).
    pub fn full(bytes: Bytes) -> ProxyBody {
        ProxyBody {
            kind: Kind::Full(Some(bytes).filter(|b| !b.is_empty())),
            bytes_out: 0,
            record: None,
        }
    }

    /// A worker's body.
    pub fn upstream(body: UpstreamBody) -> ProxyBody {
        ProxyBody {
            kind: Kind::Upstream(body),
            bytes_out: 0,
            record: None,
        }
    }

    /// A body written by another task on this thread; it ends when the sender is dropped.
    pub fn channel(receiver: tokio::sync::mpsc::Receiver<Bytes>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Channel(receiver),
            bytes_out: 0,
            record: None,
        }
    }

    /// Attaches the request's telemetry, finished when the body ends or is dropped.
    pub fn with_record(mut self, record: Record) -> ProxyBody {
        self.record = Some(Box::new(record));
        self
    }

    fn end(&mut self, completed: bool) {
        if let Some(record) = self.record.take() {
            record.finish(self.bytes_out, completed);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => body.poll_frame_inner(cx),
            Kind::Channel(receiver) => receiver
                .poll_recv(cx)
                .map(|b| b.map(|b| Ok(Frame::data(b)))),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes_out += data.len() as u64;
                }
                if this.is_end_stream() {
                    this.end(true);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(false),
            Poll::Ready(None) => this.end(true),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.guard.is_none() || body.inner.is_end_stream(),
            Kind::Channel(receiver) => receiver.is_closed() && receiver.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            Kind::Full(None) => SizeHint::with_exact(0),
            Kind::Upstream(body) => body.inner.size_hint(),
            Kind::Channel(_) => SizeHint::default(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        let completed = self.is_end_stream();
        self.end(completed);
    }
}

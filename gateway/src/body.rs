//! Bodies on both sides of the proxy, streamed frame by frame and never buffered whole.
//!
//! - [`RequestBody`]: the client's body on its way to a worker, counted and held to the
//!   endpoint's `max_body_bytes`.
//! - [`ProxyBody`]: what the client receives: Portico's own small answers, or a worker's
//!   body with its idle timeout, in-flight guard and pooled connection, finishing the
//!   request's telemetry when it ends or is dropped. For a successful JSON or SSE answer
//!   it keeps the last few KiB (references to the chunks, not copies) and reads the token
//!   usage there when the body ends ([`with_record`]).

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Response, header};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::endpoint::Endpoint;
use crate::metrics::UpstreamErrorKind;
use crate::stage::telemetry::Record;
use crate::traffic::usage::Tail;
use crate::upstream::h1;
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
    /// The worker's body failed on a pooled HTTP/1.1 connection.
    #[error("worker body: {0}")]
    WorkerHttp1(#[source] Box<h1::Error>),
    /// A body sent more or fewer bytes than its length said.
    #[error("body length differs from its Content-Length")]
    Length,
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

/// A worker's body: from a pooled HTTP/1.1 connection (Portico's own client), or from
/// hyper (h2c connections, and the answer to a refused WebSocket upgrade).
#[derive(Debug)]
pub enum WorkerBody {
    /// Read by `upstream::h1`; the connection returns to its pool at the end.
    Http1(h1::Body),
    /// Read by hyper.
    Hyper(Incoming),
}

impl WorkerBody {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self {
            WorkerBody::Http1(body) => body
                .poll_frame(cx)
                .map_err(|err| BodyError::WorkerHttp1(Box::new(err))),
            WorkerBody::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(BodyError::Worker),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            WorkerBody::Http1(body) => body.is_end_stream(),
            WorkerBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            WorkerBody::Http1(body) => body.size_hint(),
            WorkerBody::Hyper(body) => body.size_hint(),
        }
    }
}

/// A worker's response body on its way to the client.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: WorkerBody,
    endpoint: Arc<Endpoint>,
    idle_timeout: Duration,
    /// Armed the first time the worker makes the client wait: a body that arrives whole
    /// with its headers never needs a timer. Not moved on every chunk (a timer reset per
    /// SSE event cost more than relaying it): a chunk notes its time in `last_chunk`, and a
    /// timer that fires for a body that moved since is pushed back then.
    idle: Option<Pin<Box<Sleep>>>,
    /// When the last chunk arrived, once the timer is armed.
    last_chunk: Instant,
    guard: Option<InflightGuard>,
}

impl UpstreamBody {
    /// Wraps a worker's body.
    pub fn new(inner: WorkerBody, endpoint: Arc<Endpoint>, guard: InflightGuard) -> UpstreamBody {
        let idle_timeout = endpoint.config.timeouts.idle;
        UpstreamBody {
            inner,
            endpoint,
            idle_timeout,
            idle: None,
            last_chunk: Instant::now(),
            guard: Some(guard),
        }
    }

    /// The clean end: the guard is released (an HTTP/1.1 body has returned its connection
    /// to the pool already).
    fn finish(&mut self) {
        self.guard = None;
    }

    fn fail(&mut self, kind: UpstreamErrorKind) {
        self.endpoint.metrics.upstream_error(kind);
        self.guard = None;
    }

    fn poll_frame_inner(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if self.guard.is_none() {
            return Poll::Ready(None);
        }
        match self.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if self.inner.is_end_stream() {
                    self.finish();
                } else if self.idle.is_some() {
                    self.last_chunk = Instant::now();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) => {
                self.fail(UpstreamErrorKind::Reset);
                Poll::Ready(Some(Err(err)))
            }
            Poll::Ready(None) => {
                self.finish();
                Poll::Ready(None)
            }
            Poll::Pending => {
                let idle = match &mut self.idle {
                    Some(idle) => idle,
                    None => {
                        self.last_chunk = Instant::now();
                        self.idle.insert(Box::pin(tokio::time::sleep_until(
                            self.last_chunk + self.idle_timeout,
                        )))
                    }
                };
                loop {
                    if idle.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    // The timer ran out: a silence that long, unless a chunk came since it
                    // was set.
                    let deadline = self.last_chunk + self.idle_timeout;
                    if deadline <= Instant::now() {
                        break;
                    }
                    idle.as_mut().reset(deadline);
                }
                self.fail(UpstreamErrorKind::IdleTimeout);
                Poll::Ready(Some(Err(BodyError::Idle(self.idle_timeout))))
            }
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
    /// The end of a body that may report token usage.
    tail: Option<Tail>,
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
            tail: None,
        }
    }

    /// A worker's body.
    pub fn upstream(body: UpstreamBody) -> ProxyBody {
        ProxyBody {
            kind: Kind::Upstream(body),
            bytes_out: 0,
            record: None,
            tail: None,
        }
    }

    /// A body written by another task on this thread; it ends when the sender is dropped.
    pub fn channel(receiver: tokio::sync::mpsc::Receiver<Bytes>) -> ProxyBody {
        ProxyBody {
            kind: Kind::Channel(receiver),
            bytes_out: 0,
            record: None,
            tail: None,
        }
    }

    /// Attaches the request's telemetry, finished when the body ends or is dropped.
    pub fn with_record(mut self, record: Record) -> ProxyBody {
        self.record = Some(Box::new(record));
        self
    }

    fn end(&mut self, completed: bool) {
        if let Some(record) = self.record.take() {
            // Bounded work: at most the last 64 KiB, in one pass.
            let usage = self.tail.take().and_then(|tail| tail.scan());
            record.finish_with_usage(self.bytes_out, completed, usage);
        }
    }
}

/// Attaches the request's telemetry to `response`'s body; when the body is a worker's
/// successful JSON or SSE answer, its end is kept too, for the token usage in it.
pub fn with_record(response: Response<ProxyBody>, record: Record) -> Response<ProxyBody> {
    let usage = may_report_usage(&response);
    response.map(|body| {
        let mut body = body.with_record(record);
        if usage && !matches!(body.kind, Kind::Full(_)) {
            body.tail = Some(Tail::default());
        }
        body
    })
}

/// A 2xx answer whose content type is JSON (`application/json`, `…+json`) or
/// `text/event-stream`.
fn may_report_usage<B>(response: &Response<B>) -> bool {
    if !response.status().is_success() {
        return false;
    }
    let Some(kind) = response.headers().get(header::CONTENT_TYPE) else {
        return false;
    };
    let kind = kind.as_bytes();
    let essence = kind
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    essence.eq_ignore_ascii_case(b"text/event-stream")
        || essence.eq_ignore_ascii_case(b"application/json")
        || (essence.len() > 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json"))
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
                    if let Some(tail) = &mut this.tail {
                        tail.push(data);
                    }
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

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;
    use std::time::{Instant, SystemTime};

    use http::{HeaderValue, StatusCode};
    use http_body_util::BodyExt as _;

    use super::*;
    use crate::config::Config;

    fn answer(status: u16, content_type: Option<&'static str>) -> Response<()> {
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        if let Some(kind) = content_type {
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
        }
        response
    }

    /// Only successful JSON and SSE answers are scanned for usage.
    #[test]
    fn which_answers_may_report_usage() {
        for kind in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "text/event-stream",
            "text/event-stream;charset=utf-8",
            "application/vnd.api+json",
        ] {
            assert!(may_report_usage(&answer(200, Some(kind))), "{kind}");
        }
        for kind in ["text/plain", "application/jsonl", "text/html", "json", ""] {
            assert!(!may_report_usage(&answer(200, Some(kind))), "{kind}");
        }
        assert!(!may_report_usage(&answer(200, None)));
        assert!(!may_report_usage(&answer(500, Some("application/json"))));
    }

    fn record(endpoint: &Arc<Endpoint>, caller: &str) -> Record {
        Record {
            start: Instant::now(),
            time: SystemTime::now(),
            request_id: HeaderValue::from_static("r"),
            client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            listener: Rc::from("public"),
            method: http::Method::POST,
            uri: http::Uri::from_static("/v1/chat/completions"),
            version: http::Version::HTTP_11,
            endpoint: Some(Arc::clone(endpoint)),
            worker: None,
            status: 200,
            stats: Rc::default(),
            first_byte: None,
            caller: Some(Arc::from(caller)),
            error: None,
            ws: None,
            busy: None,
        }
    }

    /// A streamed SSE answer's usage, in its final chunk, reaches the endpoint's traffic
    /// with the caller and the bytes sent; a plain-text answer's usage-like text does not.
    #[tokio::test]
    async fn streamed_usage_reaches_traffic() {
        let text = "[server]\n[[listener]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\n\
                    [[project]]\nid = \"p\"\n[[endpoint]]\nid = \"e\"\nproject = \"p\"\n\
                    [endpoint.workers]\nkind = \"static\"\nurls = [\"http://127.0.0.1:9\"]\n";
        let config = Config::from_toml_str(text, Path::new(".")).unwrap();
        let endpoint = Arc::new(Endpoint::new(
            &config,
            config.endpoints[0].clone(),
            &["public".to_string()],
        ));
        let events: [&[u8]; 4] = [
            b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":",
            b"11,\"completion_tokens\":22,\"total_tokens\":33}}\n\n",
            b"data: [DONE]\n\n",
        ];
        let sent: usize = events.iter().map(|e| e.len()).sum();
        for (kind, caller) in [("text/event-stream", "ci"), ("text/plain", "web")] {
            let (sender, receiver) = tokio::sync::mpsc::channel(8);
            let mut response = Response::new(ProxyBody::channel(receiver));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
            let response = with_record(response, record(&endpoint, caller));
            for event in events {
                sender.send(Bytes::from_static(event)).await.unwrap();
            }
            drop(sender);
            let body = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(body.len(), sent);
        }
        let hour = crate::traffic::current_hour(SystemTime::now());
        let hours = endpoint.traffic.hours(hour - 1..=hour);
        let totals = hours.iter().fold((0, 0, 0, 0), |acc, (_, h)| {
            (
                acc.0 + h.requests,
                acc.1 + h.prompt_tokens,
                acc.2 + h.completion_tokens,
                acc.3 + h.bytes_out,
            )
        });
        assert_eq!(totals, (2, 11, 22, 2 * sent as u64));
        let ci = hours
            .iter()
            .flat_map(|(_, h)| h.callers.iter())
            .find(|(c, _)| c.as_str() == "ci")
            .unwrap()
            .1;
        assert_eq!((ci.prompt_tokens, ci.completion_tokens), (11, 22));
    }
}

//! WebSocket relay: an RFC 6455 upgrade is forwarded to the worker as is; only once the
//! worker answered `101 Switching Protocols` is the tunnel opened, and then messages are
//! relayed both ways by tokio-tungstenite on each side, under the endpoint's size and idle
//! limits. Any other worker answer goes back as a normal response, and the client's
//! connection stays plain HTTP.
//!
//! Pings are forwarded and answered per hop: Portico's WebSocket on each side answers the
//! pings it receives, so pongs are not relayed. Extension offers (`permessage-deflate`) are
//! removed, because messages are relayed re-framed and a compressed session cannot be.

use std::cell::{Cell, RefCell};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use hyper::client::conn::http1;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use crate::body::{ProxyBody, RequestBody, WorkerBody};
use crate::config;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::headers;
use crate::metrics::UpstreamErrorKind;
use crate::stage::forward::{self, Failure};
use crate::stage::telemetry::{Record, WsSummary};
use crate::upstream::connect;
use crate::worker::{InflightGuard, Worker};

/// `Sec-WebSocket-Extensions`.
const SEC_WEBSOCKET_EXTENSIONS: HeaderName = HeaderName::from_static("sec-websocket-extensions");
/// How long a closing side may take to answer the close frame.
const CLOSE_DRAIN: Duration = Duration::from_secs(1);

/// Size of the read buffer the sessions of a thread share (see [`LeanIo`]).
const SCRATCH_BYTES: usize = 16 * 1024;

thread_local! {
    static OPEN: Cell<usize> = const { Cell::new(0) };
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_BYTES].into_boxed_slice());
}

/// Sessions open on this data-plane thread, so shutdown can wait for their close frames.
pub fn open_sessions() -> usize {
    OPEN.with(Cell::get)
}

/// Whether the request asks for a WebSocket: HTTP/1.1, `Connection: upgrade` and
/// `Upgrade: websocket`.
pub fn is_upgrade<B>(request: &Request<B>) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    request.version() == http::Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// Restores the upgrade headers `forward::prepare` removed as hop-by-hop, and drops
/// extension offers Portico cannot relay.
pub fn prepare(request: &mut Request<RequestBody>) {
    let headers = request.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.remove(SEC_WEBSOCKET_EXTENSIONS);
}

/// A session whose worker accepted the upgrade, to be relayed once the client's 101 is sent.
pub struct Session {
    client: OnUpgrade,
    worker: OnUpgrade,
    endpoint: Arc<Endpoint>,
    guard: InflightGuard,
    stop: watch::Receiver<bool>,
    grace: Duration,
}

/// Sends the upgrade request to `worker` over a connection of its own. On 101 the client
/// gets the worker's 101 and a [`Session`] to run; on any other answer, that answer.
pub async fn open(
    endpoint: &Arc<Endpoint>,
    worker: &Arc<Worker>,
    mut request: Request<RequestBody>,
    stop: &watch::Receiver<bool>,
    grace: Duration,
) -> Result<(Response<ProxyBody>, Option<Session>), Failure> {
    let timeouts = &endpoint.config.timeouts;
    request
        .headers_mut()
        .insert(header::HOST, worker.host_header().clone());
    let stream = match connect(worker, timeouts.connect).await {
        Ok(stream) => stream,
        Err(kind) => {
            endpoint.metrics.upstream_error(kind);
            return Err(Failure::NotSent {
                request: Box::new(request),
                error: ProxyError::WorkerUnavailable { kind },
            });
        }
    };
    let guard = worker.guard();
    let client = hyper::upgrade::on(&mut request);
    let handshake = async {
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::task::spawn_local(connection.with_upgrades());
        sender.send_request(request).await
    };
    let mut response = match tokio::time::timeout(timeouts.first_byte, handshake).await {
        Ok(Ok(response)) => response,
        Ok(Err(_)) => {
            endpoint.metrics.upstream_error(UpstreamErrorKind::Reset);
            return Err(Failure::Failed(ProxyError::WorkerUnavailable {
                kind: UpstreamErrorKind::Reset,
            }));
        }
        Err(_) => {
            endpoint
                .metrics
                .upstream_error(UpstreamErrorKind::FirstByteTimeout);
            return Err(Failure::Failed(ProxyError::WorkerTimeout));
        }
    };
    if response.status() != StatusCode::SWITCHING_PROTOCOLS {
        // Refused: an ordinary answer, and no tunnel.
        return Ok((
            forward::relay(response.map(WorkerBody::Hyper), endpoint, guard),
            None,
        ));
    }
    let worker_upgrade = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, true);
    parts
        .headers
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    parts.headers.remove(SEC_WEBSOCKET_EXTENSIONS);
    let session = Session {
        client,
        worker: worker_upgrade,
        endpoint: Arc::clone(endpoint),
        guard,
        stop: stop.clone(),
        grace,
    };
    Ok((
        Response::from_parts(parts, ProxyBody::full(bytes::Bytes::new())),
        Some(session),
    ))
}

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Worker,
}

impl Session {
    /// Relays messages until either side closes, a limit is hit, or shutdown; then writes
    /// the session's access-log line.
    pub async fn run(self, mut record: Record) {
        // hyper parses the URI and header values as slices of the client connection's read
        // buffer: kept for the whole session, the record's copies would pin that buffer
        // (16 KiB) for as long as the WebSocket stays open.
        if let Ok(uri) = record.uri.to_string().parse::<Uri>() {
            record.uri = uri;
        }
        if let Ok(id) = HeaderValue::from_bytes(record.request_id.as_bytes()) {
            record.request_id = id;
        }
        OPEN.with(|open| open.set(open.get() + 1));
        let endpoint = Arc::clone(&self.endpoint);
        endpoint.metrics.ws_opened();
        let mut summary = WsSummary::default();
        if let Err(err) = self.relay(&mut summary).await {
            tracing::debug!(error = %err, "WebSocket upgrade did not complete");
        }
        endpoint.metrics.ws_closed();
        OPEN.with(|open| open.set(open.get().saturating_sub(1)));
        record.ws = Some(summary);
        record.finish(0, true);
    }

    async fn relay(self, summary: &mut WsSummary) -> Result<(), hyper::Error> {
        let settings = &self.endpoint.config.websocket;
        let client_io = self.client.await?;
        let worker_io = self.worker.await?;
        let config = ws_config(settings);
        // One task drives both streams, so they are not split (which would put each behind
        // a lock of its own).
        let mut client = WebSocketStream::from_raw_socket(
            LeanIo::new(TokioIo::new(client_io)),
            Role::Server,
            Some(config),
        )
        .await;
        let mut worker = WebSocketStream::from_raw_socket(
            LeanIo::new(TokioIo::new(worker_io)),
            Role::Client,
            Some(config),
        )
        .await;
        let metrics = &self.endpoint.metrics;
        let _guard = self.guard;

        let idle = tokio::time::sleep(settings.idle_timeout);
        tokio::pin!(idle);
        let mut stop = self.stop;
        let grace = self.grace;
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        };
        tokio::pin!(shutdown);

        // What each side is told when the session ends, unless it closed it itself.
        let mut client_broke_protocol = false;
        let (to_client, to_worker): (Option<CloseFrame>, Option<CloseFrame>) = loop {
            let (side, next) = tokio::select! {
                next = client.next() => (Side::Client, next),
                next = worker.next() => (Side::Worker, next),
                () = &mut idle => break (
                    Some(close(CloseCode::Away, "idle timeout")),
                    Some(close(CloseCode::Away, "idle timeout")),
                ),
                () = &mut shutdown => break (
                    Some(close(CloseCode::Away, "server shutting down")),
                    Some(close(CloseCode::Away, "server shutting down")),
                ),
            };
            let message = match next {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    client_broke_protocol = side == Side::Client
                        && matches!(
                            err,
                            WsError::Protocol(_) | WsError::Utf8(_) | WsError::Capacity(_)
                        );
                    break failure(side, &err);
                }
                None => break failure(side, &WsError::ConnectionClosed),
            };
            idle.as_mut()
                .reset(tokio::time::Instant::now() + settings.idle_timeout);
            let (sink, direction) = match side {
                Side::Client => (&mut worker, 0),
                Side::Worker => (&mut client, 1),
            };
            match message {
                Message::Text(_) | Message::Binary(_) => {
                    let len = message.len() as u64;
                    metrics.ws_message(direction, len);
                    summary.count(side == Side::Client, len);
                    if sink.send(message).await.is_err() {
                        // The receiving side is gone.
                        break failure(
                            if side == Side::Client {
                                Side::Worker
                            } else {
                                Side::Client
                            },
                            &WsError::ConnectionClosed,
                        );
                    }
                }
                Message::Ping(payload) => {
                    let _ = sink.send(Message::Ping(payload)).await;
                }
                Message::Pong(_) | Message::Frame(_) => {}
                Message::Close(frame) => {
                    // The closing side got its echo from tungstenite; pass the close on.
                    summary.close_code = Some(frame.as_ref().map_or(1005, |f| u16::from(f.code)));
                    match side {
                        Side::Client => {
                            break (
                                None,
                                Some(frame.unwrap_or_else(|| close(CloseCode::Normal, ""))),
                            );
                        }
                        Side::Worker => {
                            break (
                                Some(frame.unwrap_or_else(|| close(CloseCode::Normal, ""))),
                                None,
                            );
                        }
                    }
                }
            }
        };

        if client_broke_protocol {
            // The client's valid messages before the bad frame are already with the worker;
            // its answers to them are owed to the client before the client is closed, as a
            // direct connection would have delivered them.
            if let Some(frame) = to_worker.clone() {
                let _ = worker.send(Message::Close(Some(frame))).await;
            }
            let _ = tokio::time::timeout(CLOSE_DRAIN, async {
                while let Some(Ok(message)) = worker.next().await {
                    if let Message::Text(_) | Message::Binary(_) = message {
                        let len = message.len() as u64;
                        metrics.ws_message(1, len);
                        summary.count(false, len);
                        if client.send(message).await.is_err() {
                            break;
                        }
                    }
                }
            })
            .await;
        } else if let Some(frame) = to_worker.clone() {
            let _ = worker.send(Message::Close(Some(frame))).await;
        }
        if let Some(frame) = to_client {
            summary.close_code.get_or_insert(u16::from(frame.code));
            let _ = client.send(Message::Close(Some(frame))).await;
        }
        // Let both sides finish the closing handshake, briefly.
        let _ = tokio::time::timeout(CLOSE_DRAIN, async {
            tokio::join!(
                async { while let Some(Ok(_)) = client.next().await {} },
                async { while let Some(Ok(_)) = worker.next().await {} },
            )
        })
        .await;
        Ok(())
    }
}

/// The close frames sent when `side` failed with `err`: (to client, to worker).
fn failure(side: Side, err: &WsError) -> (Option<CloseFrame>, Option<CloseFrame>) {
    let (code, reason) = match err {
        WsError::Capacity(_) => (CloseCode::Size, "message too big"),
        WsError::Protocol(_) => (CloseCode::Protocol, "protocol error"),
        WsError::Utf8(_) => (CloseCode::Invalid, "invalid UTF-8"),
        _ => (CloseCode::Error, "peer went away"),
    };
    match side {
        // The client misbehaved or left: it is told why (if it still listens), the worker
        // that its client is gone.
        Side::Client => (
            Some(close(code, reason)),
            Some(close(CloseCode::Away, "client went away")),
        ),
        // The worker failed: the client gets 1011 (or 1009 for an oversized message); the
        // worker, if it still listens, the reason.
        Side::Worker => {
            let to_client = if code == CloseCode::Size {
                close(CloseCode::Size, reason)
            } else {
                close(CloseCode::Error, "worker failed")
            };
            (Some(to_client), Some(close(code, reason)))
        }
    }
}

fn close(code: CloseCode, reason: &'static str) -> CloseFrame {
    CloseFrame {
        code,
        reason: reason.into(),
    }
}

fn ws_config(settings: &config::WebSocket) -> WebSocketConfig {
    // Reads go through the thread's buffer (see `LeanIo`), so tungstenite's own is small:
    // its size is also the most tungstenite takes per read call, and at less than about a
    // kibibyte a message costs many calls. No write buffering: messages are written as
    // soon as they are relayed.
    WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(settings.max_message_bytes))
        .max_frame_size(Some(settings.max_frame_bytes))
}

/// The socket under one side's WebSocket. With a small read buffer, tungstenite asks for a
/// frame header's few bytes, then the payload, up to its buffer's size at a time; each of
/// those reads would be a system call.
/// Instead, reads go through a buffer shared by all sessions of the thread, and what the
/// WebSocket did not take yet is kept here, in an allocation that lives only until it is
/// taken (usually the rest of the frame, on the next read). An idle session holds only
/// tungstenite's small buffers.
struct LeanIo<T> {
    inner: T,
    /// Read from the socket, not yet taken: `pending[taken..]`.
    pending: Vec<u8>,
    taken: usize,
}

impl<T> LeanIo<T> {
    fn new(inner: T) -> Self {
        LeanIo {
            inner,
            pending: Vec::new(),
            taken: 0,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for LeanIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.taken < this.pending.len() {
            let n = (this.pending.len() - this.taken).min(buf.remaining());
            buf.put_slice(&this.pending[this.taken..this.taken + n]);
            this.taken += n;
            if this.taken == this.pending.len() {
                this.pending = Vec::new();
                this.taken = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= SCRATCH_BYTES {
            // A large payload: straight into the WebSocket's buffer.
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH.with_borrow_mut(|scratch| {
            let mut read = ReadBuf::new(scratch);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let filled = read.filled();
            let n = filled.len().min(buf.remaining());
            buf.put_slice(&filled[..n]);
            if n < filled.len() {
                this.pending = filled[n..].to_vec();
            }
            Poll::Ready(Ok(()))
        })
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for LeanIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

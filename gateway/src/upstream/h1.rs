//! Portico's HTTP/1.1 client for pooled worker connections.
//!
//! hyper's client runs every connection as a task of its own, fed requests through a
//! channel: each request costs a channel hop, a wake-up of that task, and a oneshot back.
//! Here the request's own task writes the head, streams the body and reads the answer: a
//! connection is a plain value that moves from the pool to the exchange, into the response
//! body, and back to the pool when the body ends (pingora does the same). Heads are parsed
//! with `httparse`, header values are slices of one buffer, and body chunks are handed on
//! without copying.
//!
//! What the exchange guarantees:
//! - the request head goes out with the first body chunk (one write for a small request);
//! - an answer that comes before the request body is sent is returned at once, and the
//!   rest of the request body keeps flowing while the response body is read;
//! - `1xx` interim answers are skipped; a `101` is refused (upgrades use `stage::ws`);
//! - response framing per RFC 9112 §6.3: no body for `HEAD`, `204` and `304`; chunked when
//!   `Transfer-Encoding` ends in `chunked` (trailers passed on); `Content-Length`; otherwise
//!   until the worker closes. Conflicting lengths are an error;
//! - a connection is reused only after a complete exchange with keep-alive semantics and
//!   nothing left over; a body that fails or is dropped early closes it.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, Frame, SizeHint};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

use crate::body::{BodyError, RequestBody};
use crate::headers::{self, Added};
use crate::upstream::pool;
use crate::worker::WorkerId;

/// Headers accepted in a response head (hyper's client default).
const MAX_HEADERS: usize = 100;
/// The longest response head accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The longest chunk-size line (with extensions) accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// The most trailer bytes accepted.
const MAX_TRAILER_BYTES: usize = 16 * 1024;
/// Read buffer growth: room for a typical answer in one read.
const READ_CHUNK: usize = 16 * 1024;
/// Request body chunks up to this size are copied behind the head (one write); larger ones
/// are written from their own buffer.
const COPY_LIMIT: usize = 8 * 1024;
/// Request bytes queued before the body is no longer read ahead of the socket.
const QUEUE_LIMIT: usize = 64 * 1024;

/// Why an exchange with a worker failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed (reset, broken pipe).
    #[error("worker connection: {0}")]
    Io(#[from] io::Error),
    /// The worker closed the connection before the answer was complete.
    #[error("the worker closed the connection early")]
    Closed,
    /// The worker's answer is not valid HTTP/1.1.
    #[error("invalid answer from the worker: {0}")]
    Malformed(&'static str),
    /// The client's request body failed (over the limit, or the client went away).
    #[error("request body: {0}")]
    Body(#[source] Box<BodyError>),
}

/// A failed exchange; `unsent` gives the request back when none of it left Portico.
#[derive(Debug)]
pub struct SendError {
    /// What went wrong.
    pub error: Error,
    /// The untouched request, when nothing was written and no body chunk consumed.
    pub unsent: Option<Request<RequestBody>>,
}

/// An open HTTP/1.1 connection to a worker, idle between exchanges.
#[derive(Debug)]
pub struct Conn {
    io: TcpStream,
    /// Bytes read from the worker and not yet consumed.
    buf: BytesMut,
    worker: WorkerId,
}

impl Conn {
    /// A connection to `worker` over `io`.
    pub fn new(io: TcpStream, worker: WorkerId) -> Conn {
        Conn {
            io,
            buf: BytesMut::new(),
            worker,
        }
    }

    /// The worker this connection reaches.
    pub fn worker(&self) -> WorkerId {
        self.worker
    }

    /// Whether the worker closed (or wrote to) this idle connection. It costs a system call
    /// only when the event loop has seen the socket become readable.
    pub fn is_closed(&self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match self.io.poll_read_ready(&mut cx) {
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            // Readable while idle: end of stream, an error, or bytes nobody asked for.
            Poll::Ready(Ok(())) => match self.io.try_read(&mut [0u8; 1]) {
                Err(err) => err.kind() != io::ErrorKind::WouldBlock,
                Ok(_) => true,
            },
        }
    }

    /// Reads more of the worker's bytes into the buffer; `Ok(0)` at end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
    }

    /// Reads until a final (non-1xx) response head is complete.
    fn poll_head(&mut self, cx: &mut Context<'_>, method: &Method) -> Poll<Result<Head, Error>> {
        loop {
            if !self.buf.is_empty() {
                match parse_head(&mut self.buf, method)? {
                    Some(head) if head.status == StatusCode::SWITCHING_PROTOCOLS => {
                        return Poll::Ready(Err(Error::Malformed("unexpected 101")));
                    }
                    // An interim answer (100 Continue, 103 Early Hints): the final one follows.
                    Some(head) if head.status.is_informational() => continue,
                    Some(head) => return Poll::Ready(Ok(head)),
                    None if self.buf.len() > MAX_HEAD_BYTES => {
                        return Poll::Ready(Err(Error::Malformed("head too large")));
                    }
                    None => {}
                }
            }
            if ready!(self.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(Error::Closed));
            }
        }
    }
}

/// Sends `request` over `conn` with `host` as its `Host` and `added` written after the
/// client's headers, and returns the worker's answer once its head has arrived; the body
/// streams from the connection, which goes back to its pool when the body ends.
pub async fn send(
    mut conn: Conn,
    request: Request<RequestBody>,
    host: &HeaderValue,
    added: Option<&Added>,
) -> Result<Response<Body>, SendError> {
    let (parts, body) = request.into_parts();
    let mut upload = Upload::new(body, &parts, host, added);
    let mut uploading = true;
    let head = poll_fn(|cx| {
        if uploading {
            match upload.poll(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => uploading = false,
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {}
            }
        }
        // Also while the body is on its way: a worker may answer early.
        conn.poll_head(cx, &parts.method)
    })
    .await;
    let head = match head {
        Ok(head) => head,
        Err(error) => {
            let unsent = upload
                .untouched()
                .then(|| Request::from_parts(parts, upload.body));
            return Err(SendError { error, unsent });
        }
    };
    let mut response = Response::new(());
    *response.status_mut() = head.status;
    *response.headers_mut() = head.headers;
    let body = Body {
        conn: Some(conn),
        state: head.framing,
        keep_alive: head.keep_alive,
        upload: uploading.then(|| Box::new(upload)),
    };
    Ok(response.map(|()| body.released_if_done()))
}

/// A parsed response head.
struct Head {
    status: StatusCode,
    headers: HeaderMap,
    framing: State,
    /// The connection may carry another exchange after this one.
    keep_alive: bool,
}

/// Parses a response head from the front of `buf`, consuming it; `None` while incomplete.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, Error> {
    // Byte ranges of names and values, so the head can be frozen after parsing.
    let mut ranges = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, minor, count) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut slots,
        );
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => {
                return Err(Error::Malformed("too many headers"));
            }
            Err(_) => return Err(Error::Malformed("bad response head")),
        };
        let base = buf.as_ptr() as usize;
        for (range, header) in ranges.iter_mut().zip(response.headers.iter()) {
            let name = header.name.as_ptr() as usize - base;
            let value = header.value.as_ptr() as usize - base;
            // Offsets within a head of at most MAX_HEAD_BYTES plus one read.
            *range = (
                name as u32,
                (name + header.name.len()) as u32,
                value as u32,
                (value + header.value.len()) as u32,
            );
        }
        let code = response.code.unwrap_or(0);
        (
            len,
            code,
            response.version.unwrap_or(1),
            response.headers.len(),
        )
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| Error::Malformed("bad status"))?;
    if status.is_informational() {
        return Ok(Some(Head {
            status,
            headers: HeaderMap::new(),
            framing: State::Done,
            keep_alive: false,
        }));
    }
    // Room for what Portico adds to the answer (`x-request-id`, CORS marks) without growing.
    let mut headers = HeaderMap::with_capacity(count + 3);
    let mut length: Option<u64> = None;
    let mut chunked = false;
    let mut encoded = false;
    let mut close = minor == 0;
    for &(n0, n1, v0, v1) in &ranges[..count] {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
            .map_err(|_| Error::Malformed("bad header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| Error::Malformed("bad header value"))?;
        if name == header::CONTENT_LENGTH {
            let n = parse_length(value.as_bytes())?;
            if length.is_some_and(|l| l != n) {
                return Err(Error::Malformed("conflicting content-length"));
            }
            length = Some(n);
        } else if name == header::TRANSFER_ENCODING {
            encoded = true;
            // Only the last coding says whether the body is chunked.
            chunked = value
                .as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == header::CONNECTION {
            for token in value.as_bytes().split(|&b| b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    close = true;
                } else if minor == 0 && token.eq_ignore_ascii_case(b"keep-alive") {
                    close = false;
                }
            }
        }
        headers.append(name, value);
    }
    let (framing, delimited) = if *method == Method::HEAD
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        (State::Done, true)
    } else if encoded {
        // With a length too, the message is suspect: answer it, then close (RFC 9112 §6.3).
        if chunked {
            (State::Chunked(Chunk::Size), length.is_none())
        } else {
            (State::Close, false)
        }
    } else {
        match length {
            Some(0) => (State::Done, true),
            Some(n) => (State::Length(n), true),
            None => (State::Close, false),
        }
    };
    Ok(Some(Head {
        status,
        headers,
        framing,
        keep_alive: delimited && !close,
    }))
}

fn parse_length(value: &[u8]) -> Result<u64, Error> {
    let bad = Error::Malformed("bad content-length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(bad);
    }
    Ok(value
        .iter()
        .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Where the response body stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// `Content-Length`: bytes still to come.
    Length(u64),
    Chunked(Chunk),
    /// Until the worker closes.
    Close,
    Done,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    /// The CRLF after a chunk's data.
    DataEnd,
    Trailers,
}

/// A worker's response body, read from its connection.
#[derive(Debug)]
pub struct Body {
    /// `None` once the body ended (the connection back in its pool) or failed.
    conn: Option<Conn>,
    state: State,
    keep_alive: bool,
    /// The rest of the request body, when the worker answered before it was all sent
    /// (boxed: rare, and large).
    upload: Option<Box<Upload>>,
}

impl Body {
    /// At the end of the body: the connection goes back to its pool if it can carry
    /// another exchange.
    fn released_if_done(mut self) -> Body {
        if self.state == State::Done {
            self.release();
        }
        self
    }

    fn release(&mut self) {
        let Some(conn) = self.conn.take() else { return };
        // Bytes after the end of the answer: the worker is out of step; do not reuse.
        if self.keep_alive && self.upload.is_none() && conn.buf.is_empty() {
            pool::release_http1(conn);
        }
    }

    /// Polls the next frame of the body.
    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(upload) = &mut self.upload {
            match upload.poll(cx, &mut conn.io) {
                Poll::Ready(Ok(())) => self.upload = None,
                // The worker answered already; it no longer wants the rest.
                Poll::Ready(Err(_)) => {
                    self.keep_alive = false;
                    self.upload = None;
                }
                Poll::Pending => {}
            }
        }
        loop {
            match decode(&mut self.state, &mut conn.buf) {
                Ok(Some(frame)) => {
                    if self.state == State::Done {
                        self.release();
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                Ok(None) if self.state == State::Done => {
                    self.release();
                    return Poll::Ready(None);
                }
                Ok(None) => {}
                Err(err) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(err)));
                }
            }
            match ready!(conn.poll_fill(cx)) {
                Ok(0) if self.state == State::Close => self.state = State::Done,
                Ok(0) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::Closed)));
                }
                Ok(_) => {}
                Err(err) => {
                    self.conn = None;
                    return Poll::Ready(Some(Err(Error::Io(err))));
                }
            }
        }
    }

    /// Whether the body has ended.
    pub fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    /// The bytes still to come, when known.
    pub fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(rest) => SizeHint::with_exact(rest),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The next frame of a body in `state` from the bytes already read in `buf`; `None` when
/// more must be read (or the body is done).
fn decode(state: &mut State, buf: &mut BytesMut) -> Result<Option<Frame<Bytes>>, Error> {
    loop {
        match *state {
            State::Done => return Ok(None),
            State::Length(rest) => {
                let Some((data, rest)) = take(buf, rest) else {
                    return Ok(None);
                };
                *state = if rest == 0 {
                    State::Done
                } else {
                    State::Length(rest)
                };
                return Ok(Some(Frame::data(data)));
            }
            State::Close => {
                if buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Frame::data(buf.split().freeze())));
            }
            State::Chunked(Chunk::Data(rest)) => {
                let Some((data, rest)) = take(buf, rest) else {
                    return Ok(None);
                };
                *state = State::Chunked(if rest == 0 {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(rest)
                });
                return Ok(Some(Frame::data(data)));
            }
            State::Chunked(Chunk::DataEnd) => {
                if buf.len() < 2 {
                    return Ok(None);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(Error::Malformed("chunk not followed by CRLF"));
                }
                buf.advance(2);
                *state = State::Chunked(Chunk::Size);
            }
            State::Chunked(Chunk::Size) => {
                let Some(end) = memchr::memchr(b'\n', buf) else {
                    if buf.len() > MAX_CHUNK_LINE {
                        return Err(Error::Malformed("chunk size line too long"));
                    }
                    return Ok(None);
                };
                let size = parse_chunk_size(&buf[..end])?;
                buf.advance(end + 1);
                *state = State::Chunked(if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                });
            }
            State::Chunked(Chunk::Trailers) => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    *state = State::Done;
                    return Ok(None);
                }
                let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
                    if buf.len() > MAX_TRAILER_BYTES || (buf.starts_with(b"\r") && buf.len() > 1) {
                        return Err(Error::Malformed("bad trailers"));
                    }
                    return Ok(None);
                };
                let trailers = parse_trailers(&buf[..end + 4])?;
                buf.advance(end + 4);
                *state = State::Done;
                return Ok(Some(Frame::trailers(trailers)));
            }
        }
    }
}

/// Up to `limit` bytes from the front of `buf`, without copying, and how many of `limit`
/// are left; `None` when `buf` is empty.
fn take(buf: &mut BytesMut, limit: u64) -> Option<(Bytes, u64)> {
    if buf.is_empty() {
        return None;
    }
    let n = usize::try_from(limit).map_or(buf.len(), |limit| limit.min(buf.len()));
    Some((buf.split_to(n).freeze(), limit - n as u64))
}

/// `1a;ext=1\r` → 26.
fn parse_chunk_size(line: &[u8]) -> Result<u64, Error> {
    let bad = Error::Malformed("bad chunk size");
    let line = line
        .strip_suffix(b"\r")
        .ok_or(Error::Malformed("bad chunk size"))?;
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii_end();
    if digits.is_empty() || digits.len() > 15 {
        return Err(bad);
    }
    let mut size = 0u64;
    for &d in digits {
        let v = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            b'A'..=b'F' => d - b'A' + 10,
            _ => return Err(bad),
        };
        size = size * 16 + u64::from(v);
    }
    Ok(size)
}

fn parse_trailers(block: &[u8]) -> Result<HeaderMap, Error> {
    let bad = Error::Malformed("bad trailers");
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let Ok(httparse::Status::Complete((_, parsed))) = httparse::parse_headers(block, &mut slots)
    else {
        return Err(bad);
    };
    let mut trailers = HeaderMap::with_capacity(parsed.len());
    for header in parsed {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| Error::Malformed("bad trailers"))?;
        let value =
            HeaderValue::from_bytes(header.value).map_err(|_| Error::Malformed("bad trailers"))?;
        trailers.append(name, value);
    }
    Ok(trailers)
}

/// How the request body is framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body, and no header saying so (`GET`, `HEAD`, …).
    None,
    Length(u64),
    Chunked,
}

/// The request on its way out: the head, then the body, chunk by chunk.
#[derive(Debug)]
struct Upload {
    body: RequestBody,
    framing: Framing,
    /// Bytes to write, from `written`.
    out: Vec<u8>,
    written: usize,
    /// A large body chunk, written after `out`.
    big: Option<Bytes>,
    /// A chunk's closing CRLF, written before what follows it.
    crlf_owed: bool,
    /// Body bytes sent or queued, checked against `Content-Length`.
    sent: u64,
    /// The body ended and its end is queued.
    ended: bool,
    /// Some body chunk was taken from the client's body.
    consumed: bool,
    /// Some byte was written to the worker.
    wrote: bool,
}

impl Upload {
    fn new(
        body: RequestBody,
        parts: &http::request::Parts,
        host: &HeaderValue,
        added: Option<&Added>,
    ) -> Upload {
        let ended = body.is_end_stream();
        let framing = match body.size_hint().exact() {
            // A body-less request says nothing, unless its method carries one.
            Some(0) if ended && !expects_body(&parts.method) => Framing::None,
            Some(n) => Framing::Length(n),
            None => Framing::Chunked,
        };
        let mut upload = Upload {
            body,
            framing,
            out: Vec::with_capacity(512),
            written: 0,
            big: None,
            crlf_owed: false,
            sent: 0,
            ended,
            consumed: false,
            wrote: false,
        };
        upload.encode_head(parts, host, added);
        upload
    }

    fn encode_head(
        &mut self,
        parts: &http::request::Parts,
        host: &HeaderValue,
        added: Option<&Added>,
    ) {
        let out = &mut self.out;
        out.extend_from_slice(parts.method.as_str().as_bytes());
        out.push(b' ');
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        out.extend_from_slice(target.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        headers::write_line(out, "host", host.as_bytes());
        for (name, value) in &parts.headers {
            // Host is the worker's; framing is Portico's to say, from the body it sends.
            if name == header::HOST
                || name == header::CONTENT_LENGTH
                || name == header::TRANSFER_ENCODING
                || added.is_some_and(|added| added.replaces(name))
            {
                continue;
            }
            headers::write_line(out, name.as_str(), value.as_bytes());
        }
        if let Some(added) = added {
            added.write(&parts.headers, out);
        }
        match self.framing {
            Framing::None => {}
            Framing::Length(n) => {
                headers::write_line(
                    out,
                    "content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
            }
            Framing::Chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Nothing left Portico and the client's body is as it was.
    fn untouched(&self) -> bool {
        !self.wrote && !self.consumed
    }

    fn queued(&self) -> usize {
        self.out.len() - self.written + self.big.as_ref().map_or(0, Bytes::len)
    }

    /// Sends what it can; ready once the whole request is written.
    fn poll(&mut self, cx: &mut Context<'_>, io: &mut TcpStream) -> Poll<Result<(), Error>> {
        loop {
            if !self.ended && self.big.is_none() && self.queued() < QUEUE_LIMIT {
                match Pin::new(&mut self.body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        self.consumed = true;
                        match frame.into_data() {
                            Ok(data) => self.push(data)?,
                            // Trailers travel only in a chunked body.
                            Err(frame) => {
                                if let (Ok(trailers), Framing::Chunked) =
                                    (frame.into_trailers(), self.framing)
                                {
                                    self.finish(Some(&trailers))?;
                                }
                            }
                        }
                        // Not while a large chunk waits in `big`: a chunked body's end
                        // must follow it (the next poll of the body ends it then).
                        if !self.ended && self.big.is_none() && self.body.is_end_stream() {
                            self.finish(None)?;
                        }
                        continue;
                    }
                    Poll::Ready(Some(Err(err))) => {
                        return Poll::Ready(Err(Error::Body(Box::new(err))));
                    }
                    Poll::Ready(None) => {
                        self.finish(None)?;
                        continue;
                    }
                    Poll::Pending => {}
                }
            }
            if self.queued() == 0 {
                return if self.ended {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            }
            // The head waits for the first body chunk, so that both leave in one write.
            if !self.ended && !self.consumed {
                return Poll::Pending;
            }
            ready!(self.poll_write(cx, io))?;
        }
    }

    fn push(&mut self, data: Bytes) -> Result<(), Error> {
        if data.is_empty() {
            return Ok(());
        }
        self.sent += data.len() as u64;
        match self.framing {
            Framing::Length(n) if self.sent > n => {
                return Err(Error::Body(Box::new(BodyError::Length)));
            }
            Framing::None => return Err(Error::Body(Box::new(BodyError::Length))),
            Framing::Chunked => {
                if std::mem::take(&mut self.crlf_owed) {
                    self.out.extend_from_slice(b"\r\n");
                }
                let mut hex = [0u8; 16];
                self.out.extend_from_slice(hex_len(data.len(), &mut hex));
                self.out.extend_from_slice(b"\r\n");
                self.crlf_owed = true;
            }
            Framing::Length(_) => {}
        }
        if data.len() <= COPY_LIMIT {
            self.out.extend_from_slice(&data);
        } else {
            self.big = Some(data);
        }
        Ok(())
    }

    fn finish(&mut self, trailers: Option<&HeaderMap>) -> Result<(), Error> {
        self.ended = true;
        match self.framing {
            Framing::Length(n) if self.sent != n => Err(Error::Body(Box::new(BodyError::Length))),
            Framing::Chunked => {
                if std::mem::take(&mut self.crlf_owed) {
                    self.out.extend_from_slice(b"\r\n");
                }
                self.out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers.into_iter().flatten() {
                    headers::write_line(&mut self.out, name.as_str(), value.as_bytes());
                }
                self.out.extend_from_slice(b"\r\n");
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// Writes the queue until it is empty or the socket is full.
    fn poll_write(&mut self, cx: &mut Context<'_>, io: &mut TcpStream) -> Poll<Result<(), Error>> {
        while self.queued() > 0 {
            let pending = &self.out[self.written..];
            let n = match &self.big {
                Some(big) if !pending.is_empty() => {
                    let slices = [io::IoSlice::new(pending), io::IoSlice::new(big)];
                    ready!(Pin::new(&mut *io).poll_write_vectored(cx, &slices))?
                }
                Some(big) => ready!(Pin::new(&mut *io).poll_write(cx, big))?,
                None => ready!(Pin::new(&mut *io).poll_write(cx, pending))?,
            };
            if n == 0 {
                return Poll::Ready(Err(Error::Io(io::ErrorKind::WriteZero.into())));
            }
            self.wrote = true;
            let from_out = n.min(pending.len());
            self.written += from_out;
            if let Some(big) = &mut self.big {
                big.advance(n - from_out);
                if big.is_empty() {
                    self.big = None;
                }
            }
            if self.written == self.out.len() {
                self.out.clear();
                self.written = 0;
            }
        }
        Poll::Ready(Ok(()))
    }
}

/// Methods whose empty body is still announced (`Content-Length: 0`), as clients do: all
/// but those that define no body.
fn expects_body(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET
            | Method::HEAD
            | Method::DELETE
            | Method::OPTIONS
            | Method::CONNECT
            | Method::TRACE
    )
}

/// `len` in lower-case hex, in `buf`.
fn hex_len(mut len: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[len & 0xf];
        len >>= 4;
        if len == 0 {
            return &buf[at..];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str, method: &Method) -> Result<Option<Head>, Error> {
        parse_head(&mut BytesMut::from(text), method)
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let get = Method::GET;
        let h = head("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", &get)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, State::Length(5));
        assert!(h.keep_alive);
        let h = head(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\n\r\n",
            &get,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, State::Chunked(Chunk::Size));
        assert!(h.keep_alive);
        // Chunked with a length: read as chunked, then the connection is closed.
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 3\r\ntransfer-encoding: chunked\r\n\r\n",
            &get,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, State::Chunked(Chunk::Size));
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 200 OK\r\n\r\n", &get).unwrap().unwrap();
        assert_eq!(h.framing, State::Close);
        assert!(!h.keep_alive);
        let h = head("HTTP/1.1 204 No Content\r\ncontent-length: 9\r\n\r\n", &get)
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, State::Done);
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\n",
            &Method::HEAD,
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.framing, State::Done);
        let h = head(
            "HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 1\r\n\r\n",
            &get,
        )
        .unwrap()
        .unwrap();
        assert!(!h.keep_alive);
        let h = head("HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\n", &get)
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        let h = head(
            "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 1\r\n\r\n",
            &get,
        )
        .unwrap()
        .unwrap();
        assert!(h.keep_alive);
        assert!(
            head("HTTP/1.1 200 OK\r\ncontent-len", &get)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn bad_heads_are_errors() {
        let get = Method::GET;
        for text in [
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 2000 OK\r\n\r\n",
            "NOT HTTP\r\n\r\n",
        ] {
            assert!(head(text, &get).is_err(), "{text:?}");
        }
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: 1\r\n")).collect();
        assert!(head(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), &get).is_err());
        // The same value twice is one length.
        let h = head(
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 2\r\n\r\n",
            &get,
        );
        assert_eq!(h.unwrap().unwrap().framing, State::Length(2));
    }

    fn body(state: State) -> Body {
        Body {
            conn: None,
            state,
            keep_alive: true,
            upload: None,
        }
    }

    fn frames(state: State, wire: &[u8]) -> Result<(Vec<Bytes>, Option<HeaderMap>, State), Error> {
        let mut body = body(state);
        let mut buf = BytesMut::from(wire);
        let mut data = Vec::new();
        let mut trailers = None;
        while let Some(frame) = decode(&mut body.state, &mut buf)? {
            match frame.into_data() {
                Ok(bytes) => data.push(bytes),
                Err(frame) => trailers = frame.into_trailers().ok(),
            }
        }
        Ok((data, trailers, body.state))
    }

    #[test]
    fn chunked_bodies_decode_with_extensions_and_trailers() {
        let (data, trailers, state) = frames(
            State::Chunked(Chunk::Size),
            b"5;ext=1\r\nhello\r\nA\r\n, world!!!\r\n0\r\nx-usage: 3\r\n\r\n",
        )
        .unwrap();
        assert_eq!(data, [Bytes::from("hello"), Bytes::from(", world!!!")]);
        assert_eq!(trailers.unwrap()["x-usage"], "3");
        assert_eq!(state, State::Done);
        let (data, trailers, state) =
            frames(State::Chunked(Chunk::Size), b"3\r\nabc\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, [Bytes::from("abc")]);
        assert!(trailers.is_none());
        assert_eq!(state, State::Done);
        // Part of a chunk: handed on as it arrives, the rest awaited.
        let (data, _, state) = frames(State::Chunked(Chunk::Size), b"a\r\nabc").unwrap();
        assert_eq!(data, [Bytes::from("abc")]);
        assert_eq!(state, State::Chunked(Chunk::Data(7)));
        for wire in [
            &b"zz\r\n"[..],
            b"3\r\nabcXY",
            b"3\n",
            b"12345678901234567\r\n",
        ] {
            assert!(
                frames(State::Chunked(Chunk::Size), wire).is_err(),
                "{wire:?}"
            );
        }
    }

    #[test]
    fn length_bodies_stop_at_their_length() {
        let (data, _, state) = frames(State::Length(4), b"abc").unwrap();
        assert_eq!(data, [Bytes::from("abc")]);
        assert_eq!(state, State::Length(1));
        let mut body = body(State::Length(2));
        let mut buf = BytesMut::from(&b"abHTTP"[..]);
        let frame = decode(&mut body.state, &mut buf).unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "ab");
        assert_eq!(body.state, State::Done);
        assert_eq!(&buf[..], b"HTTP");
    }

    /// Feeds `wire` to the body decoder in the pieces that `cuts` make, as reads would
    /// deliver it, and returns the data, the trailers and the final state.
    fn fed_in_pieces(
        state: State,
        wire: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, Option<HeaderMap>, State), Error> {
        let mut state = state;
        let mut buf = BytesMut::new();
        let mut data = Vec::new();
        let mut trailers = None;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.push(wire.len());
        cuts.sort_unstable();
        let mut from = 0;
        for to in cuts {
            buf.extend_from_slice(&wire[from..to]);
            from = to;
            while let Some(frame) = decode(&mut state, &mut buf)? {
                match frame.into_data() {
                    Ok(bytes) => data.extend_from_slice(&bytes),
                    Err(frame) => trailers = frame.into_trailers().ok(),
                }
            }
        }
        Ok((data, trailers, state))
    }

    proptest::proptest! {
        /// However the worker's bytes are split into reads, a chunked body decodes to
        /// the same data and trailers, and ends exactly at its last byte.
        #[test]
        fn chunked_decoding_does_not_depend_on_read_boundaries(
            chunks in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 1..300), 0..6),
            extension in proptest::bool::ANY,
            upper in proptest::bool::ANY,
            trailer in proptest::option::of("[a-z]{1,8}"),
            cuts in proptest::collection::vec(0usize..4096, 0..12),
            after in proptest::collection::vec(proptest::num::u8::ANY, 0..8),
        ) {
            let mut wire = Vec::new();
            for chunk in &chunks {
                let size = if upper {
                    format!("{:X}", chunk.len())
                } else {
                    format!("{:x}", chunk.len())
                };
                wire.extend_from_slice(size.as_bytes());
                if extension {
                    wire.extend_from_slice(b";name=\"v\"");
                }
                wire.extend_from_slice(b"\r\n");
                wire.extend_from_slice(chunk);
                wire.extend_from_slice(b"\r\n");
            }
            wire.extend_from_slice(b"0\r\n");
            if let Some(value) = &trailer {
                wire.extend_from_slice(format!("x-usage: {value}\r\n").as_bytes());
            }
            wire.extend_from_slice(b"\r\n");
            let body_end = wire.len();
            // Bytes of the next answer on the same connection must be left alone.
            wire.extend_from_slice(&after);
            let cuts: Vec<usize> = cuts.into_iter().map(|c| c % (body_end + 1)).collect();
            let (data, trailers, state) =
                fed_in_pieces(State::Chunked(Chunk::Size), &wire[..body_end], &cuts).unwrap();
            proptest::prop_assert_eq!(data, chunks.concat());
            proptest::prop_assert_eq!(state, State::Done);
            proptest::prop_assert_eq!(
                trailers.map(|t| t["x-usage"].to_str().unwrap().to_owned()),
                trailer
            );
            // All in one read, with the next answer behind it: the body stops at its end.
            let mut state = State::Chunked(Chunk::Size);
            let mut buf = BytesMut::from(&wire[..]);
            while decode(&mut state, &mut buf).unwrap().is_some() {}
            proptest::prop_assert_eq!(state, State::Done);
            proptest::prop_assert_eq!(&buf[..], &after[..]);
        }

        /// A length-delimited body takes exactly its length, however it is split.
        #[test]
        fn length_decoding_does_not_depend_on_read_boundaries(
            body in proptest::collection::vec(proptest::num::u8::ANY, 1..2000),
            cuts in proptest::collection::vec(0usize..4096, 0..12),
        ) {
            let (data, _, state) =
                fed_in_pieces(State::Length(body.len() as u64), &body, &cuts).unwrap();
            proptest::prop_assert_eq!(data, body);
            proptest::prop_assert_eq!(state, State::Done);
        }

        /// Every proper prefix of a response head is incomplete, never an error, and the
        /// whole head parses to the same answer as when it arrives in one read.
        #[test]
        fn a_head_is_incomplete_until_its_last_byte(
            status in 200u16..600,
            names in proptest::collection::vec("[a-z][a-z0-9-]{0,12}", 0..8),
            length in 0u64..100_000,
        ) {
            let mut text = format!("HTTP/1.1 {status} Reason\r\n");
            for (i, name) in names.iter().enumerate() {
                text.push_str(&format!("x-{name}: value {i}\r\n"));
            }
            text.push_str(&format!("content-length: {length}\r\n\r\n"));
            for end in 0..text.len() {
                let mut buf = BytesMut::from(&text.as_bytes()[..end]);
                proptest::prop_assert!(parse_head(&mut buf, &Method::GET).unwrap().is_none());
                proptest::prop_assert_eq!(buf.len(), end);
            }
            let whole = head(&text, &Method::GET).unwrap().unwrap();
            proptest::prop_assert_eq!(whole.status.as_u16(), status);
            proptest::prop_assert_eq!(whole.headers.len(), names.len() + 1);
            let expected = match (status, length) {
                (204 | 304, _) | (_, 0) => State::Done,
                _ => State::Length(length),
            };
            proptest::prop_assert_eq!(whole.framing, expected);
        }
    }

    #[test]
    fn hex_lengths() {
        let mut buf = [0u8; 16];
        assert_eq!(hex_len(0, &mut buf), b"0");
        assert_eq!(hex_len(255, &mut buf), b"ff");
        assert_eq!(hex_len(4096, &mut buf), b"1000");
    }
}

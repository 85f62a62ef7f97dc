//! The framing guard: spots request heads that carry both `Content-Length` and
//! `Transfer-Encoding`, the ambiguity request smuggling lives on.
//!
//! hyper resolves such a head safely on its own (it frames by `Transfer-Encoding` and closes
//! the connection afterwards) but hides the conflict from the service, which must answer
//! 400 and forward nothing. This wrapper watches the bytes a client connection reads: it
//! tracks header names at the start of each line within a block of lines (a blank line ends
//! a block) and raises a flag the pipeline checks on requests that have
//! `Transfer-Encoding`. HTTP/2 connections (which have no such framing) are not scanned.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::idle::Watch;

const CONTENT_LENGTH: &[u8] = b"content-length:";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding:";
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

/// Line scanner state.
#[derive(Debug, Default)]
struct Scanner {
    /// Lowercased first bytes of the current line.
    prefix: [u8; 18],
    /// Bytes of the current line seen so far (excluding `\r\n`).
    line_len: usize,
    saw_content_length: bool,
    saw_transfer_encoding: bool,
    /// Bytes seen since the connection opened, up to the length of the HTTP/2 preface.
    seen: usize,
    /// HTTP/2: nothing to scan.
    off: bool,
}

impl Scanner {
    /// Scans `bytes`; returns true when one block held both headers. Work is per line, not
    /// per byte: only a line's first bytes are looked at, and `memchr` finds its end, so a
    /// request body costs next to nothing.
    fn scan(&mut self, mut bytes: &[u8]) -> bool {
        if self.off {
            return false;
        }
        if self.seen < H2_PREFACE.len() {
            let n = (H2_PREFACE.len() - self.seen).min(bytes.len());
            if bytes[..n] == H2_PREFACE[self.seen..self.seen + n] {
                self.seen += n;
                if self.seen == H2_PREFACE.len() {
                    self.off = true;
                    return false;
                }
            } else {
                self.seen = usize::MAX;
            }
        }
        let mut conflict = false;
        while !bytes.is_empty() {
            let (line, newline) = match memchr::memchr(b'\n', bytes) {
                Some(end) => (&bytes[..end], true),
                None => (bytes, false),
            };
            conflict |= self.line(line);
            bytes = &bytes[line.len() + usize::from(newline)..];
            if newline {
                if self.line_len == 0 {
                    // A blank line: the block (a request head) ends.
                    self.saw_content_length = false;
                    self.saw_transfer_encoding = false;
                }
                self.line_len = 0;
            }
        }
        conflict
    }

    /// Takes in a piece of the current line (no `\n`): its first bytes decide.
    fn line(&mut self, piece: &[u8]) -> bool {
        // The common case: a line's start, whole and without `\r`, in one piece.
        let decisive = TRANSFER_ENCODING.len() + 1;
        if self.line_len == 0 && piece.len() >= decisive && !piece[..decisive].contains(&b'\r') {
            self.line_len = decisive;
            if piece[..CONTENT_LENGTH.len()].eq_ignore_ascii_case(CONTENT_LENGTH) {
                self.saw_content_length = true;
            } else if piece[..TRANSFER_ENCODING.len()].eq_ignore_ascii_case(TRANSFER_ENCODING) {
                self.saw_transfer_encoding = true;
            }
            return self.saw_content_length && self.saw_transfer_encoding;
        }
        let mut conflict = false;
        for &byte in piece {
            if self.line_len > self.prefix.len() {
                // Past the longest name: the rest of the line cannot matter.
                break;
            }
            if byte == b'\r' {
                continue;
            }
            if self.line_len < self.prefix.len() {
                self.prefix[self.line_len] = byte.to_ascii_lowercase();
            }
            self.line_len += 1;
            if self.line_len == CONTENT_LENGTH.len()
                && self.prefix[..self.line_len] == *CONTENT_LENGTH
            {
                self.saw_content_length = true;
            } else if self.line_len == TRANSFER_ENCODING.len()
                && self.prefix[..self.line_len] == *TRANSFER_ENCODING
            {
                self.saw_transfer_encoding = true;
            }
            conflict |= self.saw_content_length && self.saw_transfer_encoding;
        }
        conflict
    }
}

/// A client stream whose reads are scanned; the flag is shared with the pipeline. (An
/// atomic only because hyper requires upgradable streams to be `Send`; it never leaves the
/// connection's thread.)
///
/// The guard also tells the connection's [`Watch`] when bytes arrive and fails reads once
/// the watch expired (a slow head or an idle keep-alive connection).
#[derive(Debug)]
pub struct FramingGuard<S> {
    inner: S,
    scanner: Scanner,
    conflict: Arc<AtomicBool>,
    watch: Arc<Watch>,
}

impl<S> FramingGuard<S> {
    /// Wraps `inner`; `conflict` is raised when a head carries both length headers.
    pub fn new(inner: S, conflict: Arc<AtomicBool>, watch: Arc<Watch>) -> FramingGuard<S> {
        FramingGuard {
            inner,
            scanner: Scanner::default(),
            conflict,
            watch,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.watch.expired() {
            return Poll::Ready(Err(io::ErrorKind::TimedOut.into()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match polled {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                this.watch.bytes_arrived();
                let http2 = this.scanner.off;
                if this.scanner.scan(&buf.filled()[before..]) {
                    this.conflict.store(true, Ordering::Relaxed);
                }
                if this.scanner.off && !http2 {
                    this.watch.set_http2();
                }
            }
            Poll::Pending => this.watch.register(cx.waker()),
            _ => {}
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
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

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_in_pieces(text: &[u8], piece: usize) -> bool {
        let mut scanner = Scanner::default();
        text.chunks(piece)
            .fold(false, |seen, chunk| scanner.scan(chunk) | seen)
    }

    /// Both headers in one head are caught, whatever the case or how reads split them.
    #[test]
    fn catches_both_headers_in_one_head() {
        let head = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTRANSFER-encoding: chunked\r\n\r\n";
        for piece in [1, 2, 7, head.len()] {
            assert!(scan_in_pieces(head, piece), "piece {piece}");
        }
    }

    /// One header per head, in consecutive requests, is no conflict.
    #[test]
    fn separate_heads_are_fine() {
        let text = b"POST /a HTTP/1.1\r\nContent-Length: 2\r\n\r\nhiPOST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(!scan_in_pieces(text, 5));
        assert!(!scan_in_pieces(
            b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            3
        ));
    }

    /// The byte-at-a-time definition the scanner must agree with.
    fn reference(text: &[u8]) -> bool {
        if text.starts_with(H2_PREFACE) {
            return false;
        }
        let (mut cl, mut te, mut conflict) = (false, false, false);
        for line in text.split(|&b| b == b'\n') {
            let line: Vec<u8> = line
                .iter()
                .filter(|&&b| b != b'\r')
                .map(u8::to_ascii_lowercase)
                .collect();
            if line.is_empty() {
                (cl, te) = (false, false);
            }
            cl |= line.starts_with(CONTENT_LENGTH);
            te |= line.starts_with(TRANSFER_ENCODING);
            conflict |= cl && te;
        }
        conflict
    }

    /// Random heads and bodies, split at random points, agree with the reference.
    #[test]
    fn agrees_with_the_reference_definition() {
        let pieces: [&[u8]; 12] = [
            b"\r\n",
            b"\n",
            b"\r",
            b"Content-Length: 5",
            b"content-length:",
            b"Transfer-Encoding: chunked",
            b"TRANSFER-ENCODING:",
            b"X-Content-Length: 1",
            b"POST / HTTP/1.1",
            b"abc",
            b"PRI * HTTP/2.0",
            b"content-lengt",
        ];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |bound: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % bound as u64) as usize
        };
        for _ in 0..5_000 {
            let text: Vec<u8> = (0..next(12))
                .flat_map(|_| pieces[next(pieces.len())].iter().copied())
                .collect();
            let piece = 1 + next(text.len().max(1));
            assert_eq!(
                scan_in_pieces(&text, piece),
                reference(&text),
                "{:?} in pieces of {piece}",
                String::from_utf8_lossy(&text)
            );
        }
    }

    /// HTTP/2 connections are not scanned.
    #[test]
    fn http2_is_not_scanned() {
        let text = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\ncontent-length:\ntransfer-encoding:\n";
        assert!(!scan_in_pieces(text, 4));
    }
}

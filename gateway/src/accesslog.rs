//! The JSON access log: one line per request, to stdout or `server.access_log`.
//!
//! Lines are formatted on the data-plane thread into a thread-local buffer and handed in
//! batches (every 100 ms, or at 64 KiB) to one writer thread, so a request costs no syscall
//! and wakes no other thread. The JSON is written by hand (`Line::write_json`): the field set
//! is fixed, and a generic serializer cost a tenth of the proxy's CPU per request.

use std::cell::{Cell, RefCell};
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::OnceLock;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::jsonline as json;

/// How often data-plane threads hand their buffered lines over.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
/// A buffer this large is handed over at once.
const FLUSH_BYTES: usize = 64 * 1024;

static WRITER: OnceLock<Sender<Vec<u8>>> = OnceLock::new();

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The second a line was last stamped with, and its `YYYY-MM-DDTHH:MM:SS` text.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// One access-log line. Never holds a token: the caller is named by its token's name.
#[derive(Debug)]
pub struct Line<'a> {
    /// RFC 3339 UTC time the request arrived.
    pub time: Rfc3339,
    /// The request id (also in `x-request-id`).
    pub request_id: &'a str,
    /// The client address as Portico determined it.
    pub client_ip: IpAddr,
    /// The listener that accepted the connection.
    pub listener: &'a str,
    /// HTTP method.
    pub method: &'a str,
    /// Request path (without the query string, which may carry secrets).
    pub path: &'a str,
    /// HTTP version of the client connection.
    pub protocol: &'static str,
    /// Project id, when routed.
    pub project: Option<&'a str>,
    /// Endpoint id, when routed.
    pub endpoint: Option<&'a str>,
    /// Worker `host:port`, when one was picked.
    pub worker: Option<&'a str>,
    /// The name of the token that authenticated the request (never the token itself).
    pub caller: Option<&'a str>,
    /// Status sent to the client.
    pub status: u16,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// From request to the end of the response (written in milliseconds).
    pub duration: Duration,
    /// From forwarding to the worker's response headers (written in milliseconds).
    pub first_byte: Option<Duration>,
    /// Whether the response body was sent whole (false: client left or worker failed).
    pub completed: bool,
    /// The error code when Portico answered instead of a worker.
    pub error: Option<&'a str>,
    /// WebSocket sessions: messages from the client.
    pub ws_messages_in: Option<u64>,
    /// WebSocket sessions: messages to the client.
    pub ws_messages_out: Option<u64>,
    /// WebSocket sessions: payload bytes from the client.
    pub ws_bytes_in: Option<u64>,
    /// WebSocket sessions: payload bytes to the client.
    pub ws_bytes_out: Option<u64>,
    /// WebSocket sessions: the close code that ended it.
    pub ws_close_code: Option<u16>,
}

impl Line<'_> {
    /// Appends the line as one JSON object and a newline.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        // The fixed text between values is written as whole literals: one copy per field
        // instead of separator, quotes and name one by one.
        out.reserve(512);
        out.extend_from_slice(b"{\"time\":\"");
        self.time.write(out);
        out.extend_from_slice(b"\",\"request_id\":");
        json::string(out, self.request_id);
        out.extend_from_slice(b",\"client_ip\":");
        json::ip(out, self.client_ip);
        out.extend_from_slice(b",\"listener\":");
        json::string(out, self.listener);
        out.extend_from_slice(b",\"method\":");
        json::string(out, self.method);
        out.extend_from_slice(b",\"path\":");
        json::string(out, self.path);
        out.extend_from_slice(b",\"protocol\":");
        json::string(out, self.protocol);
        out.extend_from_slice(b",\"project\":");
        json::opt_string(out, self.project);
        out.extend_from_slice(b",\"endpoint\":");
        json::opt_string(out, self.endpoint);
        out.extend_from_slice(b",\"worker\":");
        json::opt_string(out, self.worker);
        out.extend_from_slice(b",\"caller\":");
        json::opt_string(out, self.caller);
        out.extend_from_slice(b",\"status\":");
        json::u64(out, u64::from(self.status));
        out.extend_from_slice(b",\"bytes_in\":");
        json::u64(out, self.bytes_in);
        out.extend_from_slice(b",\"bytes_out\":");
        json::u64(out, self.bytes_out);
        out.extend_from_slice(b",\"duration_ms\":");
        json::millis(out, self.duration);
        out.extend_from_slice(b",\"first_byte_ms\":");
        json::opt_millis(out, self.first_byte);
        out.extend_from_slice(if self.completed {
            b",\"completed\":true,\"error\":"
        } else {
            b",\"completed\":false,\"error\":"
        });
        json::opt_string(out, self.error);
        let ws = [
            (&b",\"ws_messages_in\":"[..], self.ws_messages_in),
            (b",\"ws_messages_out\":", self.ws_messages_out),
            (b",\"ws_bytes_in\":", self.ws_bytes_in),
            (b",\"ws_bytes_out\":", self.ws_bytes_out),
            (b",\"ws_close_code\":", self.ws_close_code.map(u64::from)),
        ];
        for (key, value) in ws {
            if let Some(value) = value {
                out.extend_from_slice(key);
                json::u64(out, value);
            }
        }
        out.extend_from_slice(b"}\n");
    }
}

/// Starts the writer thread, writing to `path` (appending) or stdout. Idempotent: later
/// calls keep the first writer.
pub fn start(path: Option<&Path>) -> io::Result<()> {
    if WRITER.get().is_some() {
        return Ok(());
    }
    let out: Box<dyn Write + Send> = match path {
        Some(path) => Box::new(OpenOptions::new().create(true).append(true).open(path)?),
        None => Box::new(io::stdout()),
    };
    let (tx, rx) = channel();
    if WRITER.set(tx).is_ok() {
        std::thread::Builder::new()
            .name("portico-accesslog".into())
            .spawn(move || write_loop(rx, out))?;
    }
    Ok(())
}

fn write_loop(rx: Receiver<Vec<u8>>, mut out: Box<dyn Write + Send>) {
    for batch in rx {
        if let Err(err) = out.write_all(&batch).and_then(|()| out.flush()) {
            tracing::warn!(error = %err, "access log write failed");
        }
    }
}

/// Appends one line to this thread's buffer.
pub fn log(line: &Line<'_>) {
    if WRITER.get().is_none() {
        return;
    }
    let full = BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        if buffer.capacity() == 0 {
            buffer.reserve(FLUSH_BYTES + 1024);
        }
        line.write_json(&mut buffer);
        buffer.len() >= FLUSH_BYTES
    });
    if full {
        flush();
    }
}

/// Hands this thread's buffered lines to the writer.
pub fn flush() {
    let Some(writer) = WRITER.get() else { return };
    let batch = BUFFER.with(|buffer| {
        let mut buffer = buffer.borrow_mut();
        // The next batch starts at full size: no regrowth on the request path.
        let fresh = if buffer.is_empty() {
            Vec::new()
        } else {
            Vec::with_capacity(FLUSH_BYTES + 1024)
        };
        std::mem::replace(&mut *buffer, fresh)
    });
    if !batch.is_empty() {
        let _ = writer.send(batch);
    }
}

/// A time written as RFC 3339 UTC with milliseconds, e.g. `2026-11-23T08:27:16.123Z`,
/// straight into the log line (no intermediate string).
#[derive(Debug, Clone, Copy)]
pub struct Rfc3339(pub SystemTime);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (days, rem) = (secs / 86_400, secs % 86_400);
        let (year, month, day) = civil_from_days(days as i64);
        write!(
            f,
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60,
            since.subsec_millis()
        )
    }
}

impl serde::Serialize for Rfc3339 {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl Rfc3339 {
    /// Appends the time, reusing the thread's text of the current second.
    fn write(&self, out: &mut Vec<u8>) {
        let since = self.0.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = since.as_secs();
        let (cached, mut text) = SECOND.get();
        if cached != secs {
            let (days, rem) = (secs / 86_400, secs % 86_400);
            let (year, month, day) = civil_from_days(days as i64);
            let mut cursor = io::Cursor::new(&mut text[..]);
            // 19 bytes exactly for years 0000..=9999.
            let _ = write!(
                cursor,
                "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}",
                rem / 3600,
                (rem % 3600) / 60,
                rem % 60
            );
            SECOND.set((secs, text));
        }
        out.extend_from_slice(&text);
        let millis = since.subsec_millis();
        out.extend_from_slice(&[
            b'.',
            b'0' + (millis / 100) as u8,
            b'0' + (millis / 10 % 10) as u8,
            b'0' + (millis % 10) as u8,
            b'Z',
        ]);
    }
}

/// Days since 1970-01-01 to (year, month, day), Howard Hinnant's algorithm.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(ws: Option<u64>) -> Line<'static> {
        Line {
            time: Rfc3339(UNIX_EPOCH + Duration::from_millis(1_795_422_436_123)),
            request_id: "id-1",
            client_ip: "::ffff:10.0.0.1".parse().unwrap(),
            listener: "public",
            method: "POST",
            path: "/project/p/endpoint/e/v1/\"x\"",
            protocol: "HTTP/1.1",
            project: Some("p"),
            endpoint: Some("e"),
            worker: None,
            caller: Some("ci"),
            status: 200,
            bytes_in: 7,
            bytes_out: 9,
            duration: Duration::from_micros(1_500),
            first_byte: None,
            completed: false,
            error: Some("worker_timeout"),
            ws_messages_in: ws,
            ws_messages_out: ws,
            ws_bytes_in: ws,
            ws_bytes_out: ws,
            ws_close_code: ws.map(|_| 1000),
        }
    }

    /// A line is one JSON object with every field typed, ending in a newline; WebSocket
    /// fields appear only for sessions.
    #[test]
    fn lines_are_json_objects() {
        let mut out = Vec::new();
        line(None).write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(value["time"], "2026-11-23T08:27:16.123Z");
        assert_eq!(value["request_id"], "id-1");
        assert_eq!(value["client_ip"], "::ffff:10.0.0.1");
        assert_eq!(value["path"], "/project/p/endpoint/e/v1/\"x\"");
        assert_eq!(value["project"], "p");
        assert!(value["worker"].is_null());
        assert_eq!(value["caller"], "ci");
        assert_eq!(value["status"], 200);
        assert_eq!(value["bytes_in"], 7);
        assert_eq!(value["bytes_out"], 9);
        assert_eq!(value["duration_ms"].as_f64(), Some(1.5));
        assert!(value["first_byte_ms"].is_null());
        assert_eq!(value["completed"], false);
        assert_eq!(value["error"], "worker_timeout");
        assert!(value.get("ws_messages_in").is_none());
        assert_eq!(value.as_object().unwrap().len(), 18);

        let mut out = Vec::new();
        line(Some(3)).write_json(&mut out);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap();
        for key in [
            "ws_messages_in",
            "ws_messages_out",
            "ws_bytes_in",
            "ws_bytes_out",
        ] {
            assert_eq!(value[key], 3, "{key}");
        }
        assert_eq!(value["ws_close_code"], 1000);
    }

    /// Times format as RFC 3339 UTC with milliseconds, across leap years.
    #[test]
    fn formats_rfc3339() {
        let rfc3339 = |t| Rfc3339(t).to_string();
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_795_422_436_123);
        assert_eq!(rfc3339(t), "2026-11-23T08:27:16.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }
}

//! Reading a worker's stdout and stderr, line by line, into its log ring.

use std::io;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Child;
use tokio::task::JoinHandle;

use super::Shared;
use crate::logs::{LogLine, LogStream};

/// Longest line kept; the rest of a longer line is dropped (a worker dumping a tensor or a
/// base64 blob on one line must not fill the ring).
const MAX_LINE_BYTES: usize = 4096;

/// Starts one reader task per piped stream of `child`. Each ends at end of file, that is
/// when every process of the group holding the pipe has exited.
pub(super) fn capture(
    child: &mut Child,
    replica: u32,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    let mut readers = Vec::with_capacity(2);
    if let Some(stdout) = child.stdout.take() {
        readers.push(tokio::spawn(read_into(
            stdout,
            LogStream::Stdout,
            replica,
            Arc::clone(shared),
        )));
    }
    if let Some(stderr) = child.stderr.take() {
        readers.push(tokio::spawn(read_into(
            stderr,
            LogStream::Stderr,
            replica,
            Arc::clone(shared),
        )));
    }
    readers
}

async fn read_into(
    pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    replica: u32,
    shared: Arc<Shared>,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        match read_line(&mut reader, &mut buf, MAX_LINE_BYTES).await {
            Ok(Some(truncated)) => {
                let text = to_text(&buf, truncated);
                tracing::debug!(
                    target: "portico::worker",
                    endpoint = %shared.spec.endpoint,
                    replica,
                    stream = stream.as_str(),
                    "{text}"
                );
                shared.logs.push(LogLine {
                    replica,
                    time: SystemTime::now(),
                    stream,
                    text,
                });
            }
            Ok(None) => return,
            Err(err) => {
                tracing::debug!(endpoint = %shared.spec.endpoint, replica, stream = stream.as_str(), error = %err, "worker output unreadable");
                return;
            }
        }
    }
}

/// Reads one line into `line` (cleared first, line ending not included), keeping at most
/// `max` bytes of it. `Some(truncated)` for a line, `None` at end of input. The last line
/// counts even without a final newline.
async fn read_line(
    reader: &mut (impl AsyncBufRead + Unpin),
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<bool>> {
    line.clear();
    let mut truncated = false;
    let mut read_any = false;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(read_any.then_some(truncated));
        }
        read_any = true;
        let newline = available.iter().position(|&b| b == b'\n');
        let chunk = &available[..newline.unwrap_or(available.len())];
        let room = max.saturating_sub(line.len());
        if chunk.len() > room {
            truncated = true;
        }
        line.extend_from_slice(&chunk[..chunk.len().min(room)]);
        let used = newline.map_or(available.len(), |at| at + 1);
        reader.consume(used);
        if newline.is_some() {
            return Ok(Some(truncated));
        }
    }
}

/// The line as text: invalid UTF-8 replaced, a CR before the LF dropped, `…` marking a cut.
fn to_text(bytes: &[u8], truncated: bool) -> String {
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    let mut text = String::from_utf8_lossy(bytes).into_owned();
    if truncated {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn lines(input: &[u8], max: usize) -> Vec<String> {
        // A tiny buffer, so lines span several reads.
        let mut reader = BufReader::with_capacity(3, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(truncated) = read_line(&mut reader, &mut buf, max).await.expect("read") {
            out.push(to_text(&buf, truncated));
        }
        out
    }

    /// Lines split on LF, CRLF trimmed, a last line without newline kept, empty lines kept.
    #[tokio::test]
    async fn splits_lines() {
        assert_eq!(
            lines(b"one\r\ntwo\n\nthree", 100).await,
            ["one", "two", "", "three"]
        );
        assert!(lines(b"", 100).await.is_empty());
    }

    /// Long lines are cut at the limit and marked; the next line is intact.
    #[tokio::test]
    async fn truncates_long_lines() {
        let input = [vec![b'x'; 50], b"\nnext\n".to_vec()].concat();
        let out = lines(&input, 10).await;
        assert_eq!(out, [format!("{}…", "x".repeat(10)), "next".to_string()]);
    }

    /// Invalid UTF-8 is replaced, not an error.
    #[tokio::test]
    async fn lossy_utf8() {
        assert_eq!(lines(b"caf\xc3\xa9 \xff!\n", 100).await, ["café \u{fffd}!"]);
    }
}

//! The readiness probe: a bare HTTP/1.1 GET of the health path, looking only at the status
//! line, so a worker is counted ready the moment it first answers 200.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Wait after the first failed probe; a worker usually needs seconds to boot, but a
/// fake or cached one may be up in milliseconds.
const FIRST_INTERVAL: Duration = Duration::from_millis(50);
/// Longest wait between probes.
const MAX_INTERVAL: Duration = Duration::from_secs(1);
/// How long one probe may take: a worker that accepts but does not answer is not ready.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Enough for any status line.
const HEAD_BYTES: usize = 256;

/// Probes `path` on `addr` until it answers 200, waiting 50 ms after the first failure
/// and ×1.5 more after each one, up to 1 s. Never gives up: the caller bounds it.
pub(super) async fn until_ready(addr: SocketAddr, path: &str) {
    let mut interval = FIRST_INTERVAL;
    loop {
        if let Ok(Ok(true)) = tokio::time::timeout(ATTEMPT_TIMEOUT, check(addr, path)).await {
            return;
        }
        tokio::time::sleep(interval).await;
        interval = interval.mul_f64(1.5).min(MAX_INTERVAL);
    }
}

/// One probe: whether `GET path` on `addr` answers with status 200.
pub(super) async fn check(addr: SocketAddr, path: &str) -> io::Result<bool> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let slash = if path.starts_with('/') { "" } else { "/" };
    let request = format!(
        "GET {slash}{path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: portico-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut head = [0u8; HEAD_BYTES];
    let mut len = 0;
    // Read only up to the end of the status line; the body does not matter.
    while len < head.len() && !head[..len].contains(&b'\n') {
        let n = stream.read(&mut head[len..]).await?;
        if n == 0 {
            break;
        }
        len += n;
    }
    Ok(is_200(&head[..len]))
}

/// Whether a response starts with an HTTP/1.x status line with code 200.
fn is_200(head: &[u8]) -> bool {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut parts = line.split(|&b| b == b' ').filter(|part| !part.is_empty());
    parts
        .next()
        .is_some_and(|version| version.starts_with(b"HTTP/1."))
        && parts.next() == Some(b"200".as_slice())
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    /// Only an HTTP/1.x 200 status line counts.
    #[test]
    fn status_lines() {
        assert!(is_200(b"HTTP/1.1 200 OK\r\n"));
        assert!(is_200(b"HTTP/1.0 200 OK\r\nServer: x\r\n"));
        assert!(is_200(b"HTTP/1.1 200\r\n"));
        assert!(!is_200(b"HTTP/1.1 503 Service Unavailable\r\n"));
        assert!(!is_200(b"HTTP/1.1 2000 OK\r\n"));
        assert!(!is_200(b"HTTP/2 200\r\n"));
        assert!(!is_200(b"SSH-2.0-OpenSSH\r\n"));
        assert!(!is_200(b""));
    }

    /// The probe sends a well-formed GET with Host and Connection: close, and reads the
    /// answer's status.
    #[tokio::test]
    async fn probe_sends_get_and_reads_status() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let mut requests = Vec::new();
            for status in ["503 Service Unavailable", "200 OK"] {
                let (mut socket, _) = listener.accept().await.expect("accept");
                let mut buf = vec![0u8; 1024];
                let mut len = 0;
                while !buf[..len].ends_with(b"\r\n\r\n") {
                    len += socket.read(&mut buf[len..]).await.expect("read");
                }
                requests.push(String::from_utf8_lossy(&buf[..len]).into_owned());
                let response = format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
                socket.write_all(response.as_bytes()).await.expect("write");
            }
            requests
        });
        assert!(!check(addr, "/health").await.expect("probe"));
        assert!(check(addr, "health").await.expect("probe"));
        let requests = server.await.expect("server");
        for request in requests {
            assert!(request.starts_with("GET /health HTTP/1.1\r\n"), "{request}");
            assert!(
                request.contains(&format!("\r\nHost: {addr}\r\n")),
                "{request}"
            );
            assert!(request.contains("\r\nConnection: close\r\n"), "{request}");
        }
    }

    /// Nothing listening is an error, not a hang.
    #[tokio::test]
    async fn probe_refused() {
        let addr = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr")
        };
        assert!(check(addr, "/").await.is_err());
    }
}

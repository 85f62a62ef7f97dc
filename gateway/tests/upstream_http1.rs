//! Portico's own HTTP/1.1 client (`upstream::h1`) against a worker that answers from a
//! script, byte for byte: the framings a worker may choose (chunked with extensions and
//! trailers, until close, interim `1xx` heads, `HEAD`), answers that are not HTTP, an answer
//! that comes before the request body, chunked request bodies, connection reuse, and a
//! pooled connection the worker closed while it was idle.

mod support;

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::{E1, Http1, ProxyConfig, assert_json_error, eventually, get};

/// A worker whose answers are written by hand per path. Every request (head and body as
/// received) is kept with the number of the connection it came on.
struct ScriptedWorker {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<(usize, String)>>>,
    /// Connections the worker closed on its own after answering (`/idle-close`).
    closed: Arc<AtomicUsize>,
    /// Connections that carried a request other than a health probe and that Portico
    /// closed (end of stream while the worker waited for the next request).
    dropped: Arc<AtomicUsize>,
}

impl ScriptedWorker {
    fn start() -> ScriptedWorker {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding");
        let worker = ScriptedWorker {
            addr: listener.local_addr().expect("address"),
            requests: Arc::default(),
            closed: Arc::default(),
            dropped: Arc::default(),
        };
        let (requests, closed, dropped) = (
            Arc::clone(&worker.requests),
            Arc::clone(&worker.closed),
            Arc::clone(&worker.dropped),
        );
        std::thread::spawn(move || {
            for (number, stream) in listener.incoming().enumerate() {
                let Ok(stream) = stream else { return };
                let (requests, closed, dropped) = (
                    Arc::clone(&requests),
                    Arc::clone(&closed),
                    Arc::clone(&dropped),
                );
                std::thread::spawn(move || serve(stream, number, &requests, &closed, &dropped));
            }
        });
        worker
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests for `path`, as received, with the numbers of their connections.
    fn received(&self, path: &str) -> Vec<(usize, String)> {
        let prefix = format!(" {path} HTTP/1.1");
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, r)| r.lines().next().is_some_and(|l| l.contains(&prefix)))
            .cloned()
            .collect()
    }

    /// Requests for `path`, as received.
    fn requests_for(&self, path: &str) -> Vec<String> {
        self.received(path).into_iter().map(|(_, r)| r).collect()
    }

    /// The connections requests for `path` came on, in order.
    fn connections_for(&self, path: &str) -> Vec<usize> {
        self.received(path).into_iter().map(|(c, _)| c).collect()
    }
}

/// Serves one connection until either side closes it.
fn serve(
    mut stream: TcpStream,
    number: usize,
    requests: &Mutex<Vec<(usize, String)>>,
    closed: &AtomicUsize,
    dropped: &AtomicUsize,
) {
    let mut buf = Vec::new();
    let mut proxied = false;
    loop {
        let Some(head_end) = read_until(&mut stream, &mut buf, b"\r\n\r\n") else {
            if proxied && buf.is_empty() {
                dropped.fetch_add(1, Ordering::SeqCst);
            }
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end + 4);
        let mut line = head.lines().next().unwrap_or("").split(' ');
        let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or(""));
        proxied |= path != "/health";
        let lower = head.to_ascii_lowercase();
        let answer: &[u8] = match path {
            // Answered before the body is read; the body is then read and dropped.
            "/early" => {
                let _ = stream.write_all(
                    b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\ntoo much",
                );
                requests.lock().unwrap().push((number, head));
                let _ = std::io::copy(&mut stream, &mut std::io::sink());
                return;
            }
            _ => b"",
        };
        debug_assert!(answer.is_empty());
        let body = if lower.contains("transfer-encoding: chunked") {
            let Some(end) = read_until(&mut stream, &mut buf, b"0\r\n\r\n") else {
                return;
            };
            buf.drain(..end + 5).collect::<Vec<u8>>()
        } else if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            while buf.len() < len {
                if !fill(&mut stream, &mut buf) {
                    return;
                }
            }
            buf.drain(..len).collect()
        } else {
            Vec::new()
        };
        let text = format!("{head}\r\n\r\n{}", String::from_utf8_lossy(&body));
        requests.lock().unwrap().push((number, text));
        let answer: &[u8] = match (method, path) {
            ("HEAD", "/head") => b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
            (_, "/chunked") => {
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                  5;note=x\r\nhello\r\nB\r\n, chunked!!\r\n0\r\nx-tail: 1\r\n\r\n"
            }
            (_, "/until-close") => b"HTTP/1.1 200 OK\r\n\r\nuntil the worker closes",
            (_, "/interim") => {
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n\
                  HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal"
            }
            (_, "/not-http") => b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            (_, "/two-lengths") => {
                b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\ncontent-length: 4\r\n\r\nabcd"
            }
            (_, "/short") => b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly this",
            (_, "/bad-chunk") => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
            _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        };
        if stream.write_all(answer).is_err() {
            return;
        }
        if matches!(
            path,
            "/until-close" | "/not-http" | "/two-lengths" | "/short" | "/bad-chunk"
        ) {
            return;
        }
        if path == "/idle-close" {
            // A keep-alive timeout shorter than Portico's: the idle connection is closed.
            let _ = stream.shutdown(std::net::Shutdown::Both);
            closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// Reads until `needle` is in `buf`; its offset, or `None` when the connection ends.
fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, needle: &[u8]) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(needle.len()).position(|w| w == needle) {
            return Some(at);
        }
        if !fill(stream, buf) {
            return None;
        }
    }
}

fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

fn gateway(worker: &ScriptedWorker) -> support::TestGateway {
    // Probes far apart, so that requests meet the worker as scripted; a large body limit
    // for the upload test.
    ProxyConfig::new(&[worker.url()])
        .health("interval_ms", 60_000)
        .health("unhealthy_threshold", 10)
        .max_body_bytes(1 << 20)
        .start()
}

/// Every framing a worker may choose reaches the client whole, and a connection whose
/// answer was delimited is used again.
#[test]
fn worker_framings_reach_the_client_whole() {
    let worker = ScriptedWorker::start();
    let gw = gateway(&worker);
    let mut client = Http1::connect(gw.addr("public"));

    let (status, body) = client.get(&format!("{E1}/chunked"));
    assert_eq!((status, body.as_str()), (200, "hello, chunked!!"));
    let (status, body) = client.get(&format!("{E1}/interim"));
    assert_eq!((status, body.as_str()), (200, "final"));
    client.send(format!("HEAD {E1}/head HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    assert_eq!(client.status, 200);
    assert_eq!(client.header("content-length"), Some("10"));
    let (status, body) = client.get(&format!("{E1}/plain"));
    assert_eq!((status, body.as_str()), (200, "ok"));
    // Until close: whole, and that connection is not reused.
    let (status, body) = client.get(&format!("{E1}/until-close"));
    assert_eq!((status, body.as_str()), (200, "until the worker closes"));
    let (status, _) = client.get(&format!("{E1}/plain"));
    assert_eq!(status, 200);

    // The four delimited answers and the until-close one came over one connection (health
    // probes open their own); the request after it, over a new one.
    let first = worker.connections_for("/chunked");
    assert_eq!(first.len(), 1);
    for path in ["/interim", "/head", "/until-close"] {
        assert_eq!(worker.connections_for(path), first, "{path}");
    }
    let plain = worker.connections_for("/plain");
    assert_eq!(plain.len(), 2);
    assert_eq!(plain[0], first[0]);
    assert_ne!(
        plain[1], first[0],
        "reused after an answer delimited by its close"
    );

    // Forwarded as Portico frames it: no hop-by-hop headers, its own Content-Length.
    let request = &worker.requests_for("/plain")[0];
    assert!(request.contains("x-forwarded-for: 127.0.0.1"), "{request}");
    assert!(
        !request.to_ascii_lowercase().contains("connection:"),
        "{request}"
    );
}

/// Answers that are not valid HTTP/1.1 become a 502 in JSON, and a body cut short ends the
/// client's stream without a clean end.
#[test]
fn invalid_worker_answers_are_502() {
    let worker = ScriptedWorker::start();
    let gw = gateway(&worker);
    for path in ["/not-http", "/two-lengths"] {
        let (status, headers, body) = get(gw.addr("public"), &format!("{E1}{path}"));
        assert_eq!(status, 502, "{path}: {body}");
        assert_json_error(status, &headers, &body);
    }
    // The worker's head may or may not have reached the client before the body failed
    // (hyper drops what it had not written yet); either way the client sees the connection
    // close, never the end of a complete answer.
    for path in ["/short", "/bad-chunk"] {
        let mut stream = TcpStream::connect(gw.addr("public")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let request = format!("GET {E1}{path} HTTP/1.1\r\nHost: test\r\n\r\n");
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = Vec::new();
        if let Err(err) = stream.read_to_end(&mut answer) {
            // A reset is a close too; a timeout is not.
            assert!(
                !matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
                "{path}: the connection stayed open"
            );
        }
        let answer = String::from_utf8_lossy(&answer);
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let clean = match path {
            "/short" => body.len() >= 100,
            _ => body.contains("0\r\n\r\n"),
        };
        assert!(!clean, "{path} ended cleanly: {answer:?}");
    }
    let metrics = gw.metrics();
    assert!(
        metrics.contains("portico_upstream_errors_total"),
        "{metrics}"
    );
}

/// Request bodies reach the worker whole, as Portico frames them: a 100 KB body with its
/// length (written from its own buffer, not copied behind the head), and a chunked body,
/// chunked, with a chunk larger than the copy limit between two small ones.
#[test]
fn request_bodies_are_forwarded_whole() {
    let worker = ScriptedWorker::start();
    let gw = gateway(&worker);
    let mut client = Http1::connect(gw.addr("public"));
    let big = "x".repeat(100_000);
    client.send(
        format!(
            "POST {E1}/sized HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n{big}",
            big.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.status, 200);
    let _ = client.body();
    let request = eventually("the sized upload", Duration::from_secs(5), || {
        worker.requests_for("/sized").pop()
    });
    assert!(
        request.contains("content-length: 100000\r\n"),
        "{}",
        &request[..400]
    );
    assert_eq!(request.split_once("\r\n\r\n").unwrap().1, big);

    let middle = "y".repeat(20_000);
    client.send(
        format!(
            "POST {E1}/upload HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n\
             4\r\nabcd\r\n{:x}\r\n{middle}\r\n6\r\nefghij\r\n0\r\n\r\n",
            middle.len()
        )
        .as_bytes(),
    );
    assert_eq!(client.status, 200);
    let _ = client.body();
    let request = eventually("the chunked upload", Duration::from_secs(5), || {
        worker.requests_for("/upload").pop()
    });
    assert!(
        request.contains("transfer-encoding: chunked"),
        "{}",
        &request[..400]
    );
    // Size lines and data alternate; hyper may have split the large chunk further.
    let body = request.split_once("\r\n\r\n").unwrap().1;
    let decoded: String = body
        .split("\r\n")
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, piece)| piece)
        .collect();
    assert_eq!(decoded, format!("abcd{middle}efghij"));
}

/// Portico closes a worker connection that stayed idle in its pool past 4 s (model servers
/// close theirs at 5 s), instead of keeping the socket until a request needs it.
#[test]
fn idle_worker_connections_are_closed() {
    let worker = ScriptedWorker::start();
    let gw = gateway(&worker);
    let mut client = Http1::connect(gw.addr("public"));
    let (status, _) = client.get(&format!("{E1}/plain"));
    assert_eq!(status, 200);
    assert_eq!(worker.dropped.load(Ordering::SeqCst), 0);
    eventually(
        "Portico to close the idle connection",
        Duration::from_secs(10),
        || (worker.dropped.load(Ordering::SeqCst) == 1).then_some(()),
    );
    // The next request opens a new connection and is answered.
    let (status, body) = client.get(&format!("{E1}/plain"));
    assert_eq!((status, body.as_str()), (200, "ok"));
}

/// A worker that answers before the request body is all there: the client gets that answer
/// while its upload is still under way.
#[test]
fn an_early_answer_reaches_the_client_during_the_upload() {
    let worker = ScriptedWorker::start();
    let gw = gateway(&worker);
    let mut client = Http1::connect(gw.addr("public"));
    let head = format!("POST {E1}/early HTTP/1.1\r\nHost: test\r\nContent-Length: 100000\r\n\r\n");
    client.write(head.as_bytes()).unwrap();
    client.write(&[b'x'; 10_000]).unwrap();
    client.read_head();
    assert_eq!(client.status, 413);
    assert_eq!(client.body(), "too much");
}

/// A pooled connection that the worker closed while idle is not used: the next request
/// goes over a new one and succeeds.
#[test]
fn a_connection_closed_while_idle_is_not_reused() {
    let worker = ScriptedWorker::start();
    let gw = gateway(&worker);
    let mut client = Http1::connect(gw.addr("public"));
    for round in 1..=3 {
        let (status, body) = client.get(&format!("{E1}/idle-close"));
        assert_eq!((status, body.as_str()), (200, "ok"), "round {round}");
        eventually("the worker to close", Duration::from_secs(5), || {
            (worker.closed.load(Ordering::SeqCst) >= round).then_some(())
        });
    }
    let (status, body) = client.get(&format!("{E1}/plain"));
    assert_eq!((status, body.as_str()), (200, "ok"));
}

//! The WebSocket relay through the real `portico` binary, with a tokio-tungstenite client, to
//! fakeworker's `/ws` (and, for what fakeworker cannot show, a small WebSocket worker inside
//! the test): echo of every size, fragments, pings, close codes both ways, worker and client
//! loss, size and idle limits, subprotocol and extension negotiation, rejected upgrades,
//! in-flight accounting, metrics, the access log, 200 concurrent sessions and shutdown.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use support::{
    E1, Http1, ProxyConfig, TestGateway, TestWorker, eventually, metric, upgrade_request,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::handshake::client::Response;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A client WebSocket over a plain TCP connection.
type Ws = WebSocketStream<TcpStream>;

/// The longest any single read, handshake or close may take before the test fails.
const READ: Duration = Duration::from_secs(5);

// ------------------------------------------------------------------------------------------
// Gateway, client and metric helpers.
// ------------------------------------------------------------------------------------------

/// The suite's base config for endpoint e1 on `urls`: `timeouts.idle_seconds = 30`, so only
/// the `[endpoint.websocket]` limits can end a session within a test.
fn config<S: AsRef<str>>(urls: &[S]) -> ProxyConfig {
    ProxyConfig::new(urls).timeouts(500, 2, 30)
}

/// A gateway for `worker` with `[endpoint.websocket]` `keys` (none: the defaults).
fn gateway(worker: &TestWorker, keys: &[(&str, u64)]) -> TestGateway {
    config(&[worker.url()]).start_with_websocket(keys)
}

/// Opens a WebSocket to `path` on the gateway at `addr` with extra request `headers`;
/// returns it with the handshake's `101` response.
async fn connect_with(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> (Ws, Response) {
    let mut request = format!("ws://{addr}{path}")
        .into_client_request()
        .expect("a WebSocket request");
    for (name, value) in headers {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).expect("header name"),
            HeaderValue::from_str(value).expect("header value"),
        );
    }
    let handshake = async {
        let tcp = TcpStream::connect(addr).await.expect("connecting");
        tcp.set_nodelay(true).expect("nodelay");
        tokio_tungstenite::client_async(request, tcp).await
    };
    match tokio::time::timeout(READ, handshake).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(e)) => panic!("WebSocket handshake for {path} failed: {e}"),
        Err(_) => panic!("WebSocket handshake for {path} took over {READ:?}"),
    }
}

/// Opens a WebSocket to `path` on the gateway at `addr`.
async fn connect(addr: SocketAddr, path: &str) -> Ws {
    connect_with(addr, path, &[]).await.0
}

/// Sends `message`, failing the test if that takes over [`READ`].
async fn send(ws: &mut Ws, message: Message) {
    match tokio::time::timeout(READ, ws.send(message)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("sending failed: {e}"),
        Err(_) => panic!("sending took over {READ:?}"),
    }
}

/// The next frame-level message as the client sees it, pings and pongs included.
async fn next_any(ws: &mut Ws) -> Message {
    match tokio::time::timeout(READ, ws.next()).await {
        Ok(Some(Ok(message))) => message,
        Ok(Some(Err(e))) => panic!("the connection failed instead of a message: {e}"),
        Ok(None) => panic!("the connection ended instead of a message"),
        Err(_) => panic!("no message within {READ:?}"),
    }
}

/// The next message other than a ping (Portico may keep a session alive with its own).
async fn next_not_ping(ws: &mut Ws) -> Message {
    loop {
        match next_any(ws).await {
            Message::Ping(_) => {}
            message => return message,
        }
    }
}

/// The next text, binary or close message; pings and pongs (Portico may keep a session alive
/// with its own pings) are skipped.
async fn next_data(ws: &mut Ws) -> Message {
    loop {
        match next_any(ws).await {
            Message::Ping(_) | Message::Pong(_) => {}
            message => return message,
        }
    }
}

/// The next message, which must be text; returns it.
async fn next_text(ws: &mut Ws) -> String {
    match next_data(ws).await {
        Message::Text(text) => text.as_str().to_owned(),
        other => panic!("expected a text message, got {}", describe(&other)),
    }
}

/// A message for failure output, without megabytes of payload.
fn describe(message: &Message) -> String {
    match message {
        Message::Text(t) if t.len() <= 200 => format!("Text({:?})", t.as_str()),
        Message::Binary(b) if b.len() <= 200 => format!("Binary({b:?})"),
        Message::Text(t) => format!("Text of {} bytes", t.len()),
        Message::Binary(b) => format!("Binary of {} bytes", b.len()),
        other => format!("{other:?}"),
    }
}

/// Waits up to `within` for the close frame the client is sent (data messages before it are
/// a failure; pings and pongs are skipped) and returns its code and reason. A connection
/// that ends without a close frame, or a close frame without a code, fails the test.
async fn expect_close(ws: &mut Ws, within: Duration) -> (u16, String) {
    let wait = async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.as_str().to_owned());
                }
                Some(Ok(Message::Close(None))) => panic!("a close frame without a code"),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                Some(Ok(other)) => panic!("expected a close frame, got {}", describe(&other)),
                Some(Err(e)) => panic!("the connection ended without a close frame: {e}"),
                None => panic!("the connection ended without a close frame"),
            }
        }
    };
    tokio::time::timeout(within, wait)
        .await
        .unwrap_or_else(|_| panic!("no close frame within {within:?}"))
}

/// Closes from the client with `code` and `reason` and returns the close frame that comes
/// back (code and reason).
async fn close_with(ws: &mut Ws, code: u16, reason: &str) -> (u16, String) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    send(ws, Message::Close(Some(frame))).await;
    expect_close(ws, READ).await
}

/// Sends one data frame: `opcode` (`Text`, `Binary` or `Continue`), final or not.
async fn send_frame(ws: &mut Ws, opcode: Data, payload: &[u8], fin: bool) {
    let frame = Frame::message(Bytes::copy_from_slice(payload), OpCode::Data(opcode), fin);
    send(ws, Message::Frame(frame)).await;
}

/// Sends `payload` as one binary message split into frames of `chunk` bytes.
async fn send_binary_fragmented(ws: &mut Ws, payload: &[u8], chunk: usize) {
    let pieces: Vec<&[u8]> = payload.chunks(chunk).collect();
    for (i, piece) in pieces.iter().enumerate() {
        let opcode = if i == 0 { Data::Binary } else { Data::Continue };
        send_frame(ws, opcode, piece, i + 1 == pieces.len()).await;
    }
}

/// `n` bytes of printable ASCII, not one repeated byte (so a shifted or truncated relay
/// shows).
fn text_of(n: usize) -> String {
    (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect()
}

/// `n` bytes covering every byte value.
fn bytes_of(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// `portico_inflight_requests` of `worker` (its `host:port`) on endpoint e1.
fn inflight(text: &str, worker: SocketAddr) -> Option<f64> {
    metric(
        text,
        "portico_inflight_requests",
        &[("endpoint", "e1"), ("worker", &worker.to_string())],
    )
}

/// `portico_ws_connections{endpoint="e1"}`.
fn ws_connections(text: &str) -> Option<f64> {
    metric(text, "portico_ws_connections", &[("endpoint", "e1")])
}

/// The counter `name{endpoint="e1",direction}`, 0 when absent.
fn ws_counter(text: &str, name: &str, direction: &str) -> f64 {
    metric(text, name, &[("endpoint", "e1"), ("direction", direction)]).unwrap_or(0.0)
}

/// Waits until e1 has `n` open WebSockets, each holding one in-flight request on `worker`.
fn assert_open(gateway: &TestGateway, worker: SocketAddr, n: f64) {
    let mut last = String::new();
    eventually(
        &format!("{n} open WebSocket(s) and in-flight requests"),
        Duration::from_secs(5),
        || {
            last = gateway.metrics();
            (inflight(&last, worker) == Some(n) && ws_connections(&last) == Some(n)).then_some(())
        },
    );
}

/// Waits until the WebSocket gauge of e1 and the in-flight count of `worker` are back to 0.
fn assert_released(gateway: &TestGateway, worker: SocketAddr) {
    eventually(
        "portico_inflight_requests and portico_ws_connections back to 0",
        Duration::from_secs(5),
        || {
            let text = gateway.metrics();
            (inflight(&text, worker) == Some(0.0) && ws_connections(&text).unwrap_or(0.0) == 0.0)
                .then_some(())
        },
    );
}

/// The first value of header `name` in a handshake response.
fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("an ASCII header value"))
}

/// The request headers fakeworker recorded for its first request whose path starts with
/// `prefix`, as (lower-case name, value) pairs.
fn recorded_headers(worker: &TestWorker, prefix: &str) -> Vec<(String, String)> {
    let requests = worker.requests();
    let request = requests
        .iter()
        .find(|r| r["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .unwrap_or_else(|| panic!("the worker recorded no request for {prefix}: {requests:?}"));
    request["headers"]
        .as_array()
        .expect("recorded headers")
        .iter()
        .map(|pair| {
            (
                pair[0].as_str().unwrap_or_default().to_ascii_lowercase(),
                pair[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

// ------------------------------------------------------------------------------------------
// A WebSocket worker inside the test, to see what reaches a worker.
// ------------------------------------------------------------------------------------------

/// What the [`RecordingWorker`] saw.
#[derive(Debug, Default)]
struct Seen {
    /// Request targets (path and query) of the upgrades it accepted.
    paths: Vec<String>,
    /// Every close frame it received: `None` for one without a code.
    closes: Vec<Option<(u16, String)>>,
    /// Sessions whose connection has ended on the worker's side.
    ended: usize,
}

/// A minimal WebSocket worker on a free loopback port: it accepts an upgrade on any path,
/// echoes text and binary messages, closes with code N and reason R when sent the text
/// `close N R`, records what it saw, and answers every other request (health probes) with
/// `200 ok`. It runs on the test's runtime and stops with it.
struct RecordingWorker {
    addr: SocketAddr,
    seen: Arc<Mutex<Seen>>,
}

impl RecordingWorker {
    async fn start() -> RecordingWorker {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding a worker port");
        let addr = listener.local_addr().expect("worker address");
        let seen = Arc::new(Mutex::new(Seen::default()));
        let shared = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        RecordingWorker { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A snapshot of what it saw, via `read`.
    fn seen<T>(&self, read: impl FnOnce(&Seen) -> T) -> T {
        read(&self.seen.lock().unwrap())
    }
}

/// One connection of the [`RecordingWorker`].
async fn serve(mut stream: TcpStream, seen: Arc<Mutex<Seen>>) {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let leftover = buf[head_end + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let target = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let upgrade = get("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = get("sec-websocket-key").filter(|_| upgrade) else {
        let _ = stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            .await;
        return;
    };
    let accept = derive_accept_key(key.as_bytes());
    let answer = format!(
        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if stream.write_all(answer.as_bytes()).await.is_err() {
        return;
    }
    seen.lock().unwrap().paths.push(target);
    let mut ws = WebSocketStream::from_partially_read(stream, leftover, Role::Server, None).await;
    while let Some(Ok(message)) = ws.next().await {
        match message {
            Message::Text(text) if text.as_str().starts_with("close ") => {
                let mut words = text.as_str().splitn(3, ' ').skip(1);
                let code: u16 = words.next().and_then(|c| c.parse().ok()).unwrap_or(1000);
                let reason = words.next().unwrap_or("").to_owned();
                let frame = CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                };
                if ws.close(Some(frame)).await.is_err() {
                    break;
                }
            }
            Message::Text(_) | Message::Binary(_) => {
                if ws.send(message).await.is_err() {
                    break;
                }
            }
            Message::Close(frame) => {
                let frame = frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned()));
                seen.lock().unwrap().closes.push(frame);
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
    seen.lock().unwrap().ended += 1;
}

// ------------------------------------------------------------------------------------------
// Relaying messages.
// ------------------------------------------------------------------------------------------

/// Text and binary messages of 1 B, 64 KiB and 8 MiB come back from the worker's echo
/// identical, and the worker was asked for `/ws` with the query kept (the endpoint prefix
/// stripped as for HTTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_of_text_and_binary_of_every_size() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let mut ws = connect(gateway.addr("public"), &format!("{E1}/ws?mode=echo")).await;
    for size in [1, 64 * 1024, 8 * 1024 * 1024] {
        let text = text_of(size);
        send(&mut ws, Message::text(text.clone())).await;
        match next_data(&mut ws).await {
            Message::Text(echo) => assert!(
                echo.as_str() == text,
                "the {size}-byte text came back as {} different bytes",
                echo.len()
            ),
            other => panic!("{size}-byte text: got {}", describe(&other)),
        }
        let binary = bytes_of(size);
        send(&mut ws, Message::binary(binary.clone())).await;
        match next_data(&mut ws).await {
            Message::Binary(echo) => assert!(
                echo[..] == binary[..],
                "the {size}-byte binary came back as {} different bytes",
                echo.len()
            ),
            other => panic!("{size}-byte binary: got {}", describe(&other)),
        }
    }
    assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
    assert_eq!(worker.paths(), ["/ws?mode=echo"]);
}

/// A message sent as several frames (with a ping between them, as RFC 6455 allows) arrives
/// whole at the worker: its echo is the complete message, text and binary alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_message_arrives_whole() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let mut ws = connect(gateway.addr("public"), &format!("{E1}/ws")).await;

    send_frame(&mut ws, Data::Text, b"frag", false).await;
    send(&mut ws, Message::Ping(Bytes::from_static(b"mid"))).await;
    send_frame(&mut ws, Data::Continue, b"men", false).await;
    send_frame(&mut ws, Data::Continue, b"ted", true).await;
    let mut pongs = 0;
    let echo = loop {
        match next_any(&mut ws).await {
            Message::Pong(payload) => {
                assert_eq!(&payload[..], b"mid");
                pongs += 1;
            }
            Message::Ping(_) => {}
            other => break other,
        }
    };
    assert_eq!(echo, Message::text("fragmented"));
    assert_eq!(pongs, 1, "the ping between fragments got {pongs} pongs");

    let binary = bytes_of(300 * 1024);
    send_binary_fragmented(&mut ws, &binary, 100 * 1024).await;
    match next_data(&mut ws).await {
        Message::Binary(echo) => assert!(
            echo[..] == binary[..],
            "3 binary fragments of 100 KiB came back as {} different bytes",
            echo.len()
        ),
        other => panic!("expected the binary echo, got {}", describe(&other)),
    }
    assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
}

/// A client ping gets exactly one pong with its payload (Portico answers per hop; the
/// worker's own pong is not relayed), and an unsolicited pong from the client goes nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_gets_one_pong() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let mut ws = connect(gateway.addr("public"), &format!("{E1}/ws")).await;
    send(&mut ws, Message::Ping(Bytes::from_static(b"are you there"))).await;
    assert_eq!(
        next_not_ping(&mut ws).await,
        Message::Pong(Bytes::from_static(b"are you there"))
    );
    send(&mut ws, Message::Pong(Bytes::from_static(b"unsolicited"))).await;
    send(&mut ws, Message::text("after")).await;
    // Nothing but the echo may come next: no second pong, no echo of the client's pong.
    assert_eq!(next_not_ping(&mut ws).await, Message::text("after"));
    assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
}

/// Streaming-transcription style: each chunk sent to `/ws?mode=stream&partials=3` gets
/// three growing partial results and then the final one, in order, chunk after chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_partials_then_final_per_chunk() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let mut ws = connect(
        gateway.addr("public"),
        &format!("{E1}/ws?mode=stream&partials=3"),
    )
    .await;
    for chunk in [
        "the quick brown fox",
        "jumps over",
        "the lazy dog",
        "and runs away",
    ] {
        send(&mut ws, Message::text(chunk)).await;
        let mut previous = 0;
        for index in 0..3 {
            let reply: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
            assert_eq!(reply["type"], "partial", "{reply}");
            assert_eq!(reply["index"], index, "{reply}");
            let text = reply["text"].as_str().expect("partial text");
            assert!(
                chunk.starts_with(text) && text.len() >= previous && text.len() < chunk.len(),
                "partial {index} of {chunk:?} is {text:?}"
            );
            previous = text.len();
        }
        let fin: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
        assert_eq!(fin, serde_json::json!({"type": "final", "text": chunk}));
    }
    // Binary audio chunks are answered the same way, by their size.
    send(&mut ws, Message::binary(bytes_of(3200))).await;
    for _ in 0..3 {
        let reply: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
        assert_eq!(reply["type"], "partial", "{reply}");
    }
    let fin: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
    assert_eq!(fin["text"], "<3200 bytes>");
    assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
    assert_eq!(worker.paths(), ["/ws?mode=stream&partials=3"]);
}

// ------------------------------------------------------------------------------------------
// Closing, from either side and by failure.
// ------------------------------------------------------------------------------------------

/// The client closing with 4000 "bye": fakeworker closes back with what it received, so the
/// client's answer carries 4000 "bye"; the session's gauges go back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_code_comes_back_from_the_worker() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let mut ws = connect(gateway.addr("public"), &format!("{E1}/ws")).await;
    send(&mut ws, Message::text("hello")).await;
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    assert_open(&gateway, worker.addr(), 1.0);
    assert_eq!(close_with(&mut ws, 4000, "bye").await, (4000, "bye".into()));
    assert_released(&gateway, worker.addr());
}

/// Close codes cross Portico both ways, on any path: the worker receives exactly the
/// client's 4000 "bye", and the client receives exactly the worker's 4001 "worker done";
/// the worker was asked for the path below the endpoint prefix, query kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_codes_propagate_both_ways() {
    let worker = RecordingWorker::start().await;
    let gateway = config(&[worker.url()]).start_with_websocket(&[]);
    let public = gateway.addr("public");

    let mut ws = connect(public, &format!("{E1}/v1/realtime?model=m1")).await;
    send(&mut ws, Message::text("hello")).await;
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    assert_eq!(close_with(&mut ws, 4000, "bye").await, (4000, "bye".into()));
    eventually(
        "the worker to receive the client's close frame",
        Duration::from_secs(5),
        || worker.seen(|s| (!s.closes.is_empty()).then(|| s.closes.clone())),
    );
    assert_eq!(
        worker.seen(|s| s.closes.clone()),
        [Some((4000, "bye".to_owned()))]
    );
    assert_eq!(worker.seen(|s| s.paths.clone()), ["/v1/realtime?model=m1"]);

    let mut ws = connect(public, &format!("{E1}/ws")).await;
    send(&mut ws, Message::text("close 4001 worker done")).await;
    assert_eq!(
        expect_close(&mut ws, READ).await,
        (4001, "worker done".into())
    );
    // tungstenite answered the worker's close; the connection then ends.
    let end = tokio::time::timeout(READ, ws.next()).await;
    assert!(
        matches!(end, Ok(None | Some(Err(_)))),
        "the session went on after the close: {end:?}"
    );
    assert_released(&gateway, worker.addr);
}

/// The worker process killed mid-session: the client gets close 1011 promptly, and the
/// worker's in-flight count and the WebSocket gauge go back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_session_is_1011() {
    let mut worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let mut ws = connect(gateway.addr("public"), &format!("{E1}/ws")).await;
    send(&mut ws, Message::text("before")).await;
    assert_eq!(next_data(&mut ws).await, Message::text("before"));
    assert_open(&gateway, worker.addr(), 1.0);

    let killed = Instant::now();
    worker.kill();
    let (code, _) = expect_close(&mut ws, Duration::from_secs(3)).await;
    assert_eq!(code, 1011, "close code after the worker died");
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "the close took {:?}",
        killed.elapsed()
    );
    assert_released(&gateway, worker.addr());
}

/// A client that drops its TCP connection without a close frame: the worker's side of the
/// session is closed promptly, and the in-flight count and WebSocket gauge go back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_gone_without_close_releases_everything() {
    let worker = RecordingWorker::start().await;
    let gateway = config(&[worker.url()]).start_with_websocket(&[]);
    let mut ws = connect(gateway.addr("public"), &format!("{E1}/ws")).await;
    send(&mut ws, Message::text("hello")).await;
    assert_eq!(next_data(&mut ws).await, Message::text("hello"));
    assert_open(&gateway, worker.addr, 1.0);
    assert_eq!(worker.seen(|s| s.ended), 0);

    drop(ws);
    eventually(
        "the worker's side of the session to end",
        Duration::from_secs(3),
        || (worker.seen(|s| s.ended) == 1).then_some(()),
    );
    assert_released(&gateway, worker.addr);
}

// ------------------------------------------------------------------------------------------
// Limits.
// ------------------------------------------------------------------------------------------

/// With `max_message_bytes = 1024`, a 1024-byte message is relayed, but a 2 KiB one gets the
/// client close 1009 (sent as one frame or as fragments of 512 bytes), and the session is
/// released.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_1009() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(
        &worker,
        &[("max_message_bytes", 1024), ("max_frame_bytes", 1024)],
    );
    let public = gateway.addr("public");

    let mut ws = connect(public, &format!("{E1}/ws")).await;
    let fits = text_of(1024);
    send(&mut ws, Message::text(fits.clone())).await;
    assert_eq!(next_text(&mut ws).await, fits);
    send(&mut ws, Message::binary(bytes_of(2048))).await;
    let (code, _) = expect_close(&mut ws, READ).await;
    assert_eq!(
        code, 1009,
        "close code for a 2 KiB message over a 1 KiB limit"
    );
    assert_released(&gateway, worker.addr());

    let mut ws = connect(public, &format!("{E1}/ws")).await;
    send_binary_fragmented(&mut ws, &bytes_of(2048), 512).await;
    let (code, _) = expect_close(&mut ws, READ).await;
    assert_eq!(code, 1009, "close code for 2 KiB in 512-byte fragments");
    assert_released(&gateway, worker.addr());
}

/// With `max_frame_bytes = 1024` (messages up to the 16 MiB default), 2 KiB in frames of 512
/// bytes is relayed, but a single 2 KiB frame gets the client close 1009.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_is_1009() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[("max_frame_bytes", 1024)]);
    // Stream mode answers a binary message with its size in a short text, so no reply frame
    // comes near the limit.
    let mut ws = connect(
        gateway.addr("public"),
        &format!("{E1}/ws?mode=stream&partials=0"),
    )
    .await;
    send_binary_fragmented(&mut ws, &bytes_of(2048), 512).await;
    let fin: Value = serde_json::from_str(&next_text(&mut ws).await).expect("JSON");
    assert_eq!(
        fin,
        serde_json::json!({"type": "final", "text": "<2048 bytes>"})
    );
    send(&mut ws, Message::binary(bytes_of(2048))).await;
    let (code, _) = expect_close(&mut ws, READ).await;
    assert_eq!(
        code, 1009,
        "close code for a 2 KiB frame over a 1 KiB limit"
    );
    assert_released(&gateway, worker.addr());
}

/// With `idle_timeout_seconds = 1` a session that carries a message every 400 ms for 2 s
/// stays open, and one with no traffic is closed with 1001 on both sides after about 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_session_is_closed_with_1001() {
    let worker = RecordingWorker::start().await;
    let gateway = config(&[worker.url()]).start_with_websocket(&[("idle_timeout_seconds", 1)]);
    let public = gateway.addr("public");

    let mut busy = connect(public, &format!("{E1}/ws")).await;
    for i in 0..5 {
        // The pace of the traffic under test, not a wait for something to happen.
        tokio::time::sleep(Duration::from_millis(400)).await;
        send(&mut busy, Message::text(format!("tick {i}"))).await;
        assert_eq!(
            next_data(&mut busy).await,
            Message::text(format!("tick {i}"))
        );
    }
    assert_eq!(close_with(&mut busy, 1000, "").await.0, 1000);
    let first = eventually(
        "the worker to receive the busy session's close",
        Duration::from_secs(3),
        || worker.seen(|s| s.closes.first().cloned()),
    );
    assert_eq!(first, Some((1000, String::new())));

    let mut idle = connect(public, &format!("{E1}/ws")).await;
    let opened = Instant::now();
    let (code, _) = expect_close(&mut idle, Duration::from_secs(4)).await;
    let after = opened.elapsed();
    assert_eq!(code, 1001, "close code of an idle session");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "an idle session was closed after {after:?}, expected about 1 s"
    );
    let to_worker = eventually(
        "the worker's side of the idle session to be closed",
        Duration::from_secs(3),
        || worker.seen(|s| s.closes.get(1).cloned()),
    );
    assert_eq!(
        to_worker.map(|(code, _)| code),
        Some(1001),
        "the worker's close code"
    );
    assert_released(&gateway, worker.addr);
}

// ------------------------------------------------------------------------------------------
// Handshake.
// ------------------------------------------------------------------------------------------

/// The subprotocol in the 101 is the worker's choice among the client's offer (fakeworker
/// picks the first offered), and the worker saw the whole offer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subprotocol_is_the_workers_choice() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let public = gateway.addr("public");
    for (path, offer, chosen) in [
        ("/ws?offer=1", "chat, superchat", "chat"),
        ("/ws?offer=2", "superchat, chat", "superchat"),
    ] {
        let (mut ws, response) = connect_with(
            public,
            &format!("{E1}{path}"),
            &[("sec-websocket-protocol", offer)],
        )
        .await;
        assert_eq!(response.status(), 101);
        assert_eq!(
            header(&response, "sec-websocket-protocol"),
            Some(chosen),
            "offer {offer:?}"
        );
        let seen = recorded_headers(&worker, path);
        let offered: Vec<&str> = seen
            .iter()
            .filter(|(k, _)| k == "sec-websocket-protocol")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(offered, [offer], "the worker's view of the offer");
        send(&mut ws, Message::text("hi")).await;
        assert_eq!(next_data(&mut ws).await, Message::text("hi"));
        assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
    }
}

/// A `permessage-deflate` offer is not passed to the worker and the 101 carries no
/// `Sec-WebSocket-Extensions`; messages then flow uncompressed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extension_offer_is_stripped() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let (mut ws, response) = connect_with(
        gateway.addr("public"),
        &format!("{E1}/ws"),
        &[(
            "sec-websocket-extensions",
            "permessage-deflate; client_max_window_bits",
        )],
    )
    .await;
    assert_eq!(response.status(), 101);
    assert_eq!(header(&response, "sec-websocket-extensions"), None);
    let seen = recorded_headers(&worker, "/ws");
    assert!(
        !seen.iter().any(|(k, _)| k == "sec-websocket-extensions"),
        "the worker was offered an extension: {seen:?}"
    );
    let text = text_of(4096);
    send(&mut ws, Message::text(text.clone())).await;
    assert_eq!(next_text(&mut ws).await, text);
    assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
}

/// A worker that refuses the upgrade (426, or a plain 200): the client gets that answer as a
/// normal HTTP response (no 101 before it), no session is counted, and the same connection
/// goes on as HTTP/1.1: a following GET is routed and rewritten like any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_upgrade_is_a_plain_answer_and_the_connection_stays_http() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    for code in [426, 200] {
        conn.write(upgrade_request(&format!("{E1}/ws?reject={code}")).as_bytes())
            .expect("writing the upgrade request");
        assert_eq!(conn.read_any_head(), code, "headers {:?}", conn.headers);
        let body = conn.body();
        assert!(
            body.contains("rejected this WebSocket upgrade"),
            "not the worker's answer: {body}"
        );
        let (status, body) = conn.get(&format!("{E1}/echo/after-{code}"));
        assert_eq!(status, 200, "{body}");
        let echo: Value = serde_json::from_str(&body).expect("echo JSON");
        // Rewritten: the request went through Portico's routing, not down a raw tunnel.
        assert_eq!(echo["path"], format!("/echo/after-{code}"));
    }
    assert_eq!(
        worker.paths(),
        [
            "/ws?reject=426",
            "/echo/after-426",
            "/ws?reject=200",
            "/echo/after-200"
        ]
    );
    let text = gateway.metrics();
    assert_eq!(ws_connections(&text).unwrap_or(0.0), 0.0, "{text}");
    assert_eq!(
        ws_counter(&text, "portico_ws_messages_total", "client_to_worker"),
        0.0
    );
    assert_released(&gateway, worker.addr());
}

// ------------------------------------------------------------------------------------------
// Accounting: metrics and the access log.
// ------------------------------------------------------------------------------------------

/// After 3 text messages of 6 bytes, each answered with 2 messages, and a close: the
/// message and byte counters have each direction's data messages and payload bytes, and the
/// session's one access-log line has status 101, the same counts each way, the close code
/// and a duration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_access_log_count_messages_and_bytes() {
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let (mut ws, _) = connect_with(
        gateway.addr("public"),
        &format!("{E1}/ws?mode=stream&partials=1"),
        &[("x-request-id", "ws-log-1")],
    )
    .await;
    let mut bytes_out = 0;
    for chunk in ["abcdef", "ghijkl", "mnopqr"] {
        send(&mut ws, Message::text(chunk)).await;
        for _ in 0..2 {
            bytes_out += next_text(&mut ws).await.len();
        }
    }
    assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
    let bytes_out = bytes_out as f64;

    eventually(
        "the message and byte counters of the session",
        Duration::from_secs(5),
        || {
            let text = gateway.metrics();
            let counts = [
                ws_counter(&text, "portico_ws_messages_total", "client_to_worker"),
                ws_counter(&text, "portico_ws_messages_total", "worker_to_client"),
                ws_counter(&text, "portico_ws_bytes_total", "client_to_worker"),
                ws_counter(&text, "portico_ws_bytes_total", "worker_to_client"),
            ];
            (counts == [3.0, 6.0, 18.0, bytes_out]).then_some(())
        },
    );

    let entry = gateway.access_entry("ws-log-1");
    assert_eq!(entry["status"], 101, "{entry}");
    assert_eq!(entry["method"], "GET", "{entry}");
    assert_eq!(entry["path"], format!("{E1}/ws"), "{entry}");
    assert_eq!(entry["endpoint"], "e1", "{entry}");
    assert_eq!(entry["worker"], worker.addr().to_string(), "{entry}");
    assert_eq!(entry["ws_messages_in"], 3, "{entry}");
    assert_eq!(entry["ws_messages_out"], 6, "{entry}");
    assert_eq!(entry["ws_bytes_in"], 18, "{entry}");
    assert_eq!(entry["ws_bytes_out"].as_f64(), Some(bytes_out), "{entry}");
    assert_eq!(entry["ws_close_code"], 1000, "{entry}");
    let duration = entry["duration_ms"].as_f64().expect("duration_ms");
    assert!(duration > 0.0, "{entry}");
    let lines = gateway
        .access_log()
        .into_iter()
        .filter(|e| e["request_id"] == "ws-log-1")
        .count();
    assert_eq!(lines, 1, "{lines} access log lines for one WebSocket");
    assert_released(&gateway, worker.addr());
}

// ------------------------------------------------------------------------------------------
// Load and shutdown.
// ------------------------------------------------------------------------------------------

/// 200 sessions open at once through one Portico: each is one in-flight request on the
/// worker while open (gauges at 200), each exchanges 3 messages and closes cleanly, and
/// everything is back to 0 after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_sessions() {
    const SESSIONS: usize = 200;
    let worker = TestWorker::start(&[]);
    let gateway = gateway(&worker, &[]);
    let public = gateway.addr("public");
    let opened = Arc::new(tokio::sync::Barrier::new(SESSIONS + 1));
    let release = Arc::new(tokio::sync::Barrier::new(SESSIONS + 1));
    let sessions: Vec<_> = (0..SESSIONS)
        .map(|i| {
            let (opened, release) = (Arc::clone(&opened), Arc::clone(&release));
            tokio::spawn(async move {
                let mut ws = connect(public, &format!("{E1}/ws?session={i}")).await;
                let first = format!("session {i} message 0");
                send(&mut ws, Message::text(first.clone())).await;
                assert_eq!(next_text(&mut ws).await, first);
                opened.wait().await;
                release.wait().await;
                for m in 1..3 {
                    let text = format!("session {i} message {m}");
                    send(&mut ws, Message::text(text.clone())).await;
                    assert_eq!(next_text(&mut ws).await, text);
                }
                assert_eq!(close_with(&mut ws, 1000, "").await.0, 1000);
            })
        })
        .collect();
    tokio::time::timeout(Duration::from_secs(10), opened.wait())
        .await
        .expect("all 200 sessions open within 10 s (see the failed sessions above)");
    assert_open(&gateway, worker.addr(), SESSIONS as f64);
    release.wait().await;
    let finished = tokio::time::timeout(
        Duration::from_secs(10),
        futures_util::future::join_all(sessions),
    )
    .await
    .expect("all 200 sessions finished within 10 s");
    for (i, session) in finished.into_iter().enumerate() {
        session.unwrap_or_else(|e| panic!("session {i} failed: {e}"));
    }
    assert_released(&gateway, worker.addr());
    let text = gateway.metrics();
    assert_eq!(
        ws_counter(&text, "portico_ws_messages_total", "client_to_worker"),
        (SESSIONS * 3) as f64
    );
}

/// SIGTERM with a session open and `grace_period_seconds = 1`: the session still works
/// during the grace period, then the client and the worker both get close 1001, and portico
/// exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_sessions_with_1001_after_the_grace_period() {
    let worker = RecordingWorker::start().await;
    let mut gateway = config(&[worker.url()])
        .grace_period_seconds(1)
        .start_with_websocket(&[]);
    let mut ws = connect(gateway.addr("public"), &format!("{E1}/ws")).await;
    send(&mut ws, Message::text("before")).await;
    assert_eq!(next_data(&mut ws).await, Message::text("before"));

    let signalled = Instant::now();
    gateway.signal("TERM");
    send(&mut ws, Message::text("during the grace period")).await;
    assert_eq!(
        next_data(&mut ws).await,
        Message::text("during the grace period")
    );
    let (code, _) = expect_close(&mut ws, Duration::from_secs(3)).await;
    let after = signalled.elapsed();
    assert_eq!(code, 1001, "close code at shutdown");
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_secs(3),
        "close 1001 came {after:?} after SIGTERM, expected after the 1 s grace period"
    );
    let to_worker = eventually(
        "the worker's side to be closed",
        Duration::from_secs(3),
        || worker.seen(|s| s.closes.first().cloned()),
    );
    assert_eq!(
        to_worker.map(|(code, _)| code),
        Some(1001),
        "the worker's close code"
    );
    assert_eq!(gateway.wait_exit(Duration::from_secs(3)), Some(0));
}

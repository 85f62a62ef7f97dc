//! End-to-end tests of the fake worker: the library on the test's runtime, spoken to with a
//! plain hyper client and a tungstenite client, plus the `fakeworker` binary itself.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use bench::{FakeWorker, Options};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

const DEADLINE: Duration = Duration::from_secs(10);

/// Sends one request on a fresh HTTP/1.1 connection.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> hyper::Result<Response<Incoming>> {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("request");
    sender.send_request(request).await
}

/// Sends a request and reads the whole body.
async fn call(addr: SocketAddr, method: Method, path: &str, body: &str) -> (StatusCode, Bytes) {
    let response = send(addr, method, path, &[], body).await.expect("response");
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, body)
}

/// Sends a request and parses the body as JSON.
async fn call_json(
    addr: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, Value) {
    let (status, body) = call(addr, method, path, body).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {}", String::from_utf8_lossy(&body)));
    (status, value)
}

async fn chat(addr: SocketAddr, body: Value) -> (StatusCode, Value) {
    call_json(
        addr,
        Method::POST,
        "/v1/chat/completions",
        &body.to_string(),
    )
    .await
}

/// Splits an SSE body into its `data:` payloads, checking every event is well-formed.
fn sse_data(body: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(body).expect("utf-8 stream");
    assert!(text.ends_with("\n\n"), "stream ends mid-event: {text:?}");
    text.split_terminator("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("not a data event: {event:?}"))
                .to_owned()
        })
        .collect()
}

/// Reads a metric's value from `/metrics`, ignoring labels.
async fn metric(addr: SocketAddr, name: &str) -> f64 {
    let (status, body) = call(addr, Method::GET, "/metrics", "").await;
    assert_eq!(status, StatusCode::OK);
    let text = String::from_utf8(body.to_vec()).expect("utf-8 metrics");
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let metric_name = series.split('{').next()?;
            (metric_name == name).then(|| value.parse().expect("numeric sample"))
        })
        .unwrap_or_else(|| panic!("{name} missing from:\n{text}"))
}

/// Polls `check` until it holds, failing after [`DEADLINE`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + DEADLINE;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        sleep(Duration::from_millis(10)).await;
    }
}

async fn spawn(opts: Options) -> FakeWorker {
    FakeWorker::spawn(opts).await.expect("spawn fake worker")
}

/// A non-streamed chat completion has OpenAI's shape, the request's model and usage.
#[tokio::test]
async fn chat_completion_shape() {
    let worker = spawn(Options::default().output_tokens(4)).await;
    let (status, body) = chat(
        worker.addr(),
        json!({"model": "llama", "messages": [{"role": "user", "content": "hello there world"}]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("chatcmpl-"))
    );
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().is_some());
    assert_eq!(body["model"], "llama");
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["content"], "The quick brown fox ");
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})
    );

    let (_, unnamed) = chat(worker.addr(), json!({"messages": []})).await;
    assert_eq!(unnamed["model"], "fake-model");
}

/// A legacy text completion has the `text_completion` shape.
#[tokio::test]
async fn text_completion_shape() {
    let worker = spawn(Options::default().model("tiny")).await;
    let (status, body) = call_json(
        worker.addr(),
        Method::POST,
        "/v1/completions",
        r#"{"prompt":"one two","max_tokens":2}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["id"]
            .as_str()
            .is_some_and(|id| id.starts_with("cmpl-"))
    );
    assert_eq!(body["object"], "text_completion");
    assert_eq!(body["model"], "tiny");
    assert_eq!(body["choices"][0]["text"], "The quick ");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    assert_eq!(body["usage"]["total_tokens"], 4);
}

/// A stream is SSE with one event per chunk, ends with [DONE], and has usage when asked.
#[tokio::test]
async fn streaming_frames() {
    let worker = spawn(Options::default().output_tokens(3)).await;
    let body = json!({"messages": [{"role": "user", "content": "a b"}], "stream": true,
                      "stream_options": {"include_usage": true}});
    let response = send(
        worker.addr(),
        Method::POST,
        "/v1/chat/completions",
        &[],
        &body.to_string(),
    )
    .await
    .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    assert_eq!(response.headers()["cache-control"], "no-cache");
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let events = sse_data(&bytes);
    assert_eq!(events.len(), 1 + 3 + 1 + 1 + 1, "{events:#?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).expect("JSON chunk"))
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let text: String = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().expect("token"))
        .collect();
    assert_eq!(text, "The quick brown ");
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "stop");
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
    assert!(chunks.iter().all(|c| c["sent_at_us"].as_u64().is_some()));
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );

    // Without include_usage there is no usage chunk and no usage field.
    let body = json!({"messages": [], "stream": true});
    let (_, bytes) = call(
        worker.addr(),
        Method::POST,
        "/v1/chat/completions",
        &body.to_string(),
    )
    .await;
    let events = sse_data(&bytes);
    assert_eq!(events.len(), 1 + 3 + 1 + 1);
    assert!(!events.iter().any(|e| e.contains("usage")));
}

/// Chunks are produced on the token schedule, not buffered: `sent_at_us` steps at least one
/// token interval apart, and the first chunk arrives before the stream is complete.
#[tokio::test]
async fn streaming_is_paced() {
    let worker = spawn(Options::default().output_tokens(3).tokens_per_second(50.0)).await;
    let body = json!({"messages": [], "stream": true}).to_string();
    let response = send(
        worker.addr(),
        Method::POST,
        "/v1/chat/completions",
        &[],
        &body,
    )
    .await
    .expect("response");
    let mut body = response.into_body();
    let first = body
        .frame()
        .await
        .expect("a first frame")
        .expect("frame")
        .into_data()
        .expect("data frame");
    assert!(first.starts_with(b"data: "));
    assert!(!http_body::Body::is_end_stream(&body));
    let rest = body.collect().await.expect("rest").to_bytes();
    let all = [first, rest].concat();
    let stamps: Vec<u64> = sse_data(&all)
        .iter()
        .filter(|e| *e != "[DONE]")
        .map(|e| {
            serde_json::from_str::<Value>(e).expect("chunk")["sent_at_us"]
                .as_u64()
                .expect("stamp")
        })
        .collect();
    // Tokens 0, 1, 2 are due 0, 20, 40 ms after the start.
    assert!(stamps[3] - stamps[1] >= 39_000, "{stamps:?}");
}

/// `max_tokens` / `max_completion_tokens` set the output length both ways, finishing "length".
#[tokio::test]
async fn max_tokens_sets_length() {
    let worker = spawn(Options::default()).await;
    let (_, capped) = chat(worker.addr(), json!({"messages": [], "max_tokens": 3})).await;
    assert_eq!(capped["usage"]["completion_tokens"], 3);
    assert_eq!(capped["choices"][0]["finish_reason"], "length");
    let (_, longer) = chat(
        worker.addr(),
        json!({"messages": [], "max_completion_tokens": 20}),
    )
    .await;
    assert_eq!(longer["usage"]["completion_tokens"], 20);
    let (_, default) = chat(worker.addr(), json!({"messages": []})).await;
    assert_eq!(default["usage"]["completion_tokens"], 16);
    assert_eq!(default["choices"][0]["finish_reason"], "stop");

    let body = json!({"messages": [], "stream": true, "max_tokens": 2}).to_string();
    let (_, bytes) = call(worker.addr(), Method::POST, "/v1/chat/completions", &body).await;
    assert_eq!(sse_data(&bytes).len(), 1 + 2 + 1 + 1);
}

/// Malformed requests get a 400 and unknown routes a 404, both in OpenAI's error shape.
#[tokio::test]
async fn client_errors() {
    let worker = spawn(Options::default()).await;
    for (path, body) in [
        ("/v1/chat/completions", "{not json"),
        ("/v1/chat/completions", r#"{"model":"m"}"#),
        ("/v1/completions", r#"{"messages":[]}"#),
    ] {
        let (status, error) = call_json(worker.addr(), Method::POST, path, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {body}");
        assert_eq!(error["error"]["type"], "invalid_request_error");
        assert!(error["error"]["message"].is_string());
        assert_eq!(error["error"]["code"], Value::Null);
    }
    let (status, error) = call_json(worker.addr(), Method::GET, "/nowhere", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error["error"]["message"], "Invalid URL (GET /nowhere)");
}

/// `/health` answers 503 while booting and 200 once `boot_delay` has passed.
#[tokio::test]
async fn health_boots() {
    let worker = spawn(Options::default().boot_delay(Duration::from_millis(1500))).await;
    let (status, body) = call_json(worker.addr(), Method::GET, "/health", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, json!({"status": "booting"}));
    eventually("health to turn 200", || async {
        call(worker.addr(), Method::GET, "/health", "").await.0 == StatusCode::OK
    })
    .await;
    let (_, body) = call_json(worker.addr(), Method::GET, "/health", "").await;
    assert_eq!(body, json!({"status": "ok"}));
}

/// The load gauges follow real requests: one running, one waiting behind `max_running`,
/// then the waiter runs when the first goes away.
#[tokio::test]
async fn metrics_follow_load() {
    let worker = spawn(
        Options::default()
            .max_running(1)
            .ttft(Duration::from_secs(60)),
    )
    .await;
    let addr = worker.addr();
    assert_eq!(metric(addr, "vllm:num_requests_running").await, 0.0);
    let stream = json!({"messages": [], "stream": true}).to_string();
    // Streaming headers come back once admitted, so the first request is running now.
    let first = send(addr, Method::POST, "/v1/chat/completions", &[], &stream)
        .await
        .expect("first admitted");
    assert_eq!(metric(addr, "vllm:num_requests_running").await, 1.0);
    assert_eq!(metric(addr, "vllm:gpu_cache_usage_perc").await, 1.0);
    let second = tokio::spawn(async move {
        send(addr, Method::POST, "/v1/chat/completions", &[], &stream).await
    });
    eventually("the second request to wait", || async {
        metric(addr, "vllm:num_requests_waiting").await == 1.0
    })
    .await;
    assert_eq!(metric(addr, "vllm:num_requests_running").await, 1.0);
    drop(first);
    eventually("the second request to run", || async {
        metric(addr, "vllm:num_requests_waiting").await == 0.0
            && metric(addr, "vllm:num_requests_running").await == 1.0
    })
    .await;
    assert!(metric(addr, "fakeworker_requests_total").await >= 2.0);
    second.abort();
}

/// `/echo` reflects method, path, query, headers and body; the record and
/// `/_fake/requests` list what arrived.
#[tokio::test]
async fn echo_and_record() {
    let worker = spawn(Options::default()).await;
    let response = send(
        worker.addr(),
        Method::PUT,
        "/echo/deep/path?a=1&b=two",
        &[("x-portico-test", "yes"), ("content-type", "text/plain")],
        "héllo",
    )
    .await
    .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    let echo: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(echo["method"], "PUT");
    assert_eq!(echo["path"], "/echo/deep/path");
    assert_eq!(echo["query"], "a=1&b=two");
    assert_eq!(echo["body"], "héllo");
    assert_eq!(echo["body_bytes"], 6);
    let headers = echo["headers"].as_array().expect("header list");
    assert!(
        headers.contains(&json!(["x-portico-test", "yes"])),
        "{headers:?}"
    );

    let recorded = worker.requests();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].method, "PUT");
    assert_eq!(recorded[0].path, "/echo/deep/path?a=1&b=two");
    assert!(
        recorded[0]
            .headers
            .contains(&("x-portico-test".into(), "yes".into()))
    );
    assert_eq!(worker.request_count(), 1);

    let (status, listed) = call_json(worker.addr(), Method::GET, "/_fake/requests", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed[0]["path"], "/echo/deep/path?a=1&b=two");
    assert_eq!(
        worker.request_count(),
        1,
        "/_fake/ requests are not recorded"
    );
}

/// The small utility routes: `/sse`, `/slow`, `/status/{code}`, `/v1/models`.
#[tokio::test]
async fn utility_routes() {
    let worker = spawn(Options::default().model("m1")).await;
    let addr = worker.addr();
    let (status, bytes) = call(addr, Method::GET, "/sse?events=3&interval_ms=5", "").await;
    assert_eq!(status, StatusCode::OK);
    let seqs: Vec<u64> = sse_data(&bytes)
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).expect("event")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2]);
    let (status, body) = call_json(addr, Method::GET, "/slow?ms=20", "").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({"slept_ms": 20}));
    let (status, _) = call(addr, Method::GET, "/status/418", "").await;
    assert_eq!(status, StatusCode::IM_A_TEAPOT);
    let (status, _) = call(addr, Method::POST, "/status/503", "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, _) = call(addr, Method::GET, "/status/abc", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (_, models) = call_json(addr, Method::GET, "/v1/models", "").await;
    assert_eq!(models["data"][0]["id"], "m1");
}

/// The same port speaks h2c with prior knowledge.
#[tokio::test]
async fn h2c_prior_knowledge() {
    let worker = spawn(Options::default()).await;
    let stream = TcpStream::connect(worker.addr()).await.expect("connect");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(conn);
    let request = Request::post(format!("{}/v1/chat/completions", worker.url()))
        .body(Full::new(Bytes::from(r#"{"messages":[],"stream":true}"#)))
        .expect("request");
    let response = sender.send_request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(sse_data(&bytes).last().map(String::as_str), Some("[DONE]"));
    assert_eq!(worker.requests()[0].version, "HTTP/2.0");
}

/// `error_rate(1.0)` turns every completion into an OpenAI-shaped 500.
#[tokio::test]
async fn error_rate_gives_500() {
    let worker = spawn(Options::default().error_rate(1.0)).await;
    let (status, body) = chat(worker.addr(), json!({"messages": []})).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body["error"]["type"], "server_error");
    // Other routes are unaffected.
    let (status, _) = call(worker.addr(), Method::GET, "/health", "").await;
    assert_eq!(status, StatusCode::OK);
}

/// `hang_after_headers` sends 200 and streaming headers, then no body.
#[tokio::test]
async fn hang_after_headers() {
    let worker = spawn(Options::default().hang_after_headers(true)).await;
    let response = send(
        worker.addr(),
        Method::POST,
        "/v1/chat/completions",
        &[],
        r#"{"messages":[]}"#,
    )
    .await
    .expect("headers arrive");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    assert!(
        timeout(Duration::from_millis(200), body.frame())
            .await
            .is_err(),
        "a body frame arrived"
    );
}

/// `crash_after(n)` answers n counted requests, then dies on the next: that request fails
/// and new connections are refused.
#[tokio::test]
async fn crash_after_stops_server() {
    let worker = spawn(Options::default().crash_after(2)).await;
    let addr = worker.addr();
    assert_eq!(call(addr, Method::GET, "/echo", "").await.0, StatusCode::OK);
    // Probes do not count.
    assert_eq!(
        call(addr, Method::GET, "/health", "").await.0,
        StatusCode::OK
    );
    let (status, _) = chat(addr, json!({"messages": []})).await;
    assert_eq!(status, StatusCode::OK);
    let fatal = send(addr, Method::GET, "/echo", &[], "").await;
    assert!(fatal.is_err(), "the crashing request got an answer");
    eventually("the listener to close", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}

/// WebSocket echo: text and binary come back unchanged, the first subprotocol is selected,
/// and a close is answered with the same code and reason.
#[tokio::test]
async fn ws_echo() {
    let worker = spawn(Options::default()).await;
    let stream = TcpStream::connect(worker.addr()).await.expect("connect");
    let mut request = format!("ws://{}/ws", worker.addr())
        .into_client_request()
        .expect("ws request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "chat.v2, chat.v1".parse().expect("header"),
    );
    let (mut ws, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .expect("upgrade");
    assert_eq!(response.headers()["sec-websocket-protocol"], "chat.v2");

    ws.send(Message::text("hello")).await.expect("send text");
    assert_eq!(
        ws.next().await.expect("reply").expect("ok"),
        Message::text("hello")
    );
    let binary = Message::binary(vec![0u8, 1, 2, 255]);
    ws.send(binary.clone()).await.expect("send binary");
    assert_eq!(ws.next().await.expect("reply").expect("ok"), binary);

    ws.close(Some(CloseFrame {
        code: CloseCode::Away,
        reason: "bye".into(),
    }))
    .await
    .expect("close");
    let reply = ws.next().await.expect("close reply").expect("ok");
    assert_eq!(
        reply,
        Message::Close(Some(CloseFrame {
            code: CloseCode::Away,
            reason: "bye".into(),
        }))
    );
}

/// WebSocket stream mode answers each message with N partials and a final.
#[tokio::test]
async fn ws_stream_mode() {
    let worker = spawn(Options::default()).await;
    let stream = TcpStream::connect(worker.addr()).await.expect("connect");
    let url = format!("ws://{}/ws?mode=stream&partials=2", worker.addr());
    let (mut ws, _) = tokio_tungstenite::client_async(url, stream)
        .await
        .expect("upgrade");
    ws.send(Message::text("abcdef")).await.expect("send");
    let mut replies = Vec::new();
    for _ in 0..3 {
        let message = ws.next().await.expect("reply").expect("ok");
        let text = message.into_text().expect("text reply");
        replies.push(serde_json::from_str::<Value>(text.as_str()).expect("JSON reply"));
    }
    assert_eq!(
        replies[0],
        json!({"type": "partial", "index": 0, "text": "ab"})
    );
    assert_eq!(
        replies[1],
        json!({"type": "partial", "index": 1, "text": "abcd"})
    );
    assert_eq!(replies[2], json!({"type": "final", "text": "abcdef"}));

    ws.send(Message::binary(vec![7u8; 5])).await.expect("send");
    let last = loop {
        let message = ws.next().await.expect("reply").expect("ok");
        let value: Value = serde_json::from_str(message.to_text().expect("text")).expect("JSON");
        if value["type"] == "final" {
            break value;
        }
    };
    assert_eq!(last["text"], "<5 bytes>");
}

/// `/ws?reject=CODE` refuses the upgrade with CODE; a plain GET gets 426.
#[tokio::test]
async fn ws_rejected_upgrade() {
    let worker = spawn(Options::default()).await;
    let stream = TcpStream::connect(worker.addr()).await.expect("connect");
    let url = format!("ws://{}/ws?reject=403", worker.addr());
    match tokio_tungstenite::client_async(url, stream).await {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::FORBIDDEN),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }
    let (status, body) = call_json(worker.addr(), Method::GET, "/ws", "").await;
    assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
    assert_eq!(body["error"]["type"], "invalid_request_error");
}

/// Dropping the worker closes its listener.
#[tokio::test]
async fn drop_stops_server() {
    let worker = spawn(Options::default()).await;
    let addr = worker.addr();
    assert_eq!(
        call(addr, Method::GET, "/health", "").await.0,
        StatusCode::OK
    );
    worker.shutdown();
    eventually("the listener to close", || async {
        TcpStream::connect(addr).await.is_err()
    })
    .await;
}

/// Starts the binary with `args` and reads its `listening on ADDR` line.
async fn start_binary(args: &[&str]) -> (tokio::process::Child, SocketAddr) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_fakeworker"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start fakeworker");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = timeout(DEADLINE, lines.next_line())
        .await
        .expect("listening line in time")
        .expect("read stdout")
        .expect("a line");
    let addr = line
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .expect("address");
    // Keep draining stdout (the access log) so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, addr)
}

/// The binary prints `listening on ADDR`, serves, and exits 0 on SIGTERM.
#[tokio::test]
async fn binary_serves_and_stops_on_sigterm() {
    let (mut child, addr) =
        start_binary(&["--port", "0", "--output-tokens", "2", "--model", "bin"]).await;
    let (status, body) = chat(addr, json!({"messages": []})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["model"], "bin");
    assert_eq!(body["usage"]["completion_tokens"], 2);
    let (_, listed) = call_json(addr, Method::GET, "/_fake/requests", "").await;
    assert_eq!(listed[0]["path"], "/v1/chat/completions");

    let pid = child.id().expect("pid").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("run kill");
    assert!(killed.success());
    let exit = timeout(DEADLINE, child.wait())
        .await
        .expect("exit in time")
        .expect("wait");
    assert!(exit.success(), "{exit:?}");
}

/// The binary's `--crash-after` exits the process with status 1.
#[tokio::test]
async fn binary_crash_exits() {
    let (mut child, addr) = start_binary(&["--crash-after", "0"]).await;
    assert!(send(addr, Method::GET, "/echo", &[], "").await.is_err());
    let exit = timeout(DEADLINE, child.wait())
        .await
        .expect("exit in time")
        .expect("wait");
    assert_eq!(exit.code(), Some(1));
}

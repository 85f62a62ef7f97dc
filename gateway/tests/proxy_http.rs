//! The data plane over HTTP/1.1, through the real `portico` and `fakeworker` binaries:
//! routing, forwarded and hop-by-hop headers, request ids, streaming both ways, size limits,
//! request smuggling, balancing, the access log and `/metrics`.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{
    E1, End, Http1, ProxyConfig, TestGateway, TestWorker, assert_arrived_spread_out,
    assert_json_error, assert_uuid_v7, chat_body, echo_header, eventually, get, is_done, metric,
    metric_sum, post_json, promtool_check_metrics, sse_json,
};

/// A gateway in front of one fresh fakeworker, with the default test config.
fn one_worker(args: &[&str]) -> (TestWorker, TestGateway) {
    let worker = TestWorker::start(args);
    let gateway = ProxyConfig::new(&[worker.url()]).start();
    (worker, gateway)
}

/// After a request that must not reach the worker: sends a harmless `GET /echo/sentinel`
/// through the gateway and asserts that the worker saw `before`, then the sentinel, and no
/// other `/echo` request.
fn assert_only_sentinel_reached_after(gateway: &TestGateway, worker: &TestWorker, before: &[&str]) {
    let (status, _, body) = get(gateway.addr("public"), &format!("{E1}/echo/sentinel"));
    assert_eq!(status, 200, "{body}");
    let echoes: Vec<String> = worker
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("/echo"))
        .collect();
    let mut expected: Vec<&str> = before.to_vec();
    expected.push("/echo/sentinel");
    assert_eq!(
        echoes, expected,
        "the worker saw a request it should not have"
    );
}

/// Method, path below the endpoint, query string and body reach the worker unchanged, on a
/// keep-alive connection, and the worker's answer comes back.
#[test]
fn forwards_method_path_query_and_body() {
    let (_worker, gateway) = one_worker(&[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    for method in ["POST", "PUT", "PATCH", "DELETE"] {
        let body = format!("hello from {method}");
        conn.send(
            format!(
                "{method} {E1}/echo/a/b?x=1&y=two HTTP/1.1\r\nHost: test\r\n\
                 Content-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        );
        assert_eq!(conn.status, 200, "{method}");
        let echo: Value = serde_json::from_str(&conn.body()).expect("echo JSON");
        assert_eq!(echo["method"], method);
        assert_eq!(echo["path"], "/echo/a/b");
        assert_eq!(echo["query"], "x=1&y=two");
        assert_eq!(echo["body"], body.as_str());
        assert_eq!(echo["body_bytes"], body.len());
        assert_eq!(conn.end, Some(End::Clean));
    }
}

/// `/project/p1/endpoint/e1` alone (with or without a slash or query) is the worker's `/`,
/// and the worker's own answer (here its 404) is passed through, not replaced.
#[test]
fn endpoint_root_is_the_worker_root() {
    let (worker, gateway) = one_worker(&[]);
    for path in [E1.to_string(), format!("{E1}?q=1"), format!("{E1}/")] {
        let (status, headers, body) = get(gateway.addr("public"), &path);
        assert_eq!(status, 404, "{path}: {body}");
        // fakeworker's 404, not the gateway's `endpoint_not_found`.
        let json = assert_worker_error(&headers, &body);
        assert_eq!(
            json["error"]["type"], "invalid_request_error",
            "{path}: {body}"
        );
    }
    assert_eq!(worker.paths(), ["/", "/?q=1", "/"]);
}

/// A fakeworker error (OpenAI's shape, `code: null`) served as JSON; returns it parsed.
fn assert_worker_error(headers: &[(String, String)], body: &str) -> Value {
    assert!(
        headers.contains(&("content-type".into(), "application/json".into())),
        "{headers:?}"
    );
    let json: Value = serde_json::from_str(body).expect("JSON error body");
    assert!(json["error"]["message"].is_string(), "{body}");
    json
}

/// Unknown projects and endpoints, an endpoint asked for under the wrong project and
/// near-miss paths are 404 `endpoint_not_found` in JSON, with a request id, and reach no
/// worker.
#[test]
fn unknown_project_or_endpoint_is_404_json() {
    let worker = TestWorker::start(&[]);
    let other = TestWorker::start(&[]);
    let config = format!(
        "{}\n[[project]]\nid = \"p2\"\n\n[[endpoint]]\nid = \"e2\"\nproject = \"p2\"\n\
         public = true\n[endpoint.workers]\nkind = \"static\"\nurls = [\"{}\"]\n",
        ProxyConfig::new(&[worker.url()]).toml(),
        other.url()
    );
    let gateway = TestGateway::start(&config);
    let public = gateway.addr("public");
    for path in [
        "/project/nope/endpoint/e1/echo",
        "/project/p1/endpoint/nope/echo",
        "/project/p1/endpoint/e2/echo",
        "/project/p2/endpoint/e1/echo",
        "/project/p1/endpoint/e1x/echo",
        "/project/p1x/endpoint/e1/echo",
        "/project/p1/endpoint/",
        "/project/p1/echo",
        "/project/p1",
        "/echo",
    ] {
        let (status, headers, body) = get(public, path);
        assert_eq!(status, 404, "{path}: {body}");
        let json = assert_json_error(status, &headers, &body);
        assert_eq!(json["error"]["type"], "not_found_error", "{path}");
        assert_eq!(json["error"]["code"], "endpoint_not_found", "{path}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "x-request-id" && !v.is_empty()),
            "{path}: no x-request-id in {headers:?}"
        );
    }
    assert!(worker.paths().is_empty(), "{:?}", worker.paths());
    assert!(other.paths().is_empty(), "{:?}", other.paths());
    // e2 exists: under its own project it works.
    let (status, _, body) = get(public, "/project/p2/endpoint/e2/echo");
    assert_eq!(status, 200, "{body}");
    assert_eq!(other.paths(), ["/echo"]);
}

/// The worker sees `Host` = its own authority, `X-Forwarded-For/-Proto/-Host` and
/// `Forwarded` appended to what the client sent, the client's `x-request-id`, end-to-end
/// headers, and none of the hop-by-hop headers (nor those the client's `Connection` names).
#[test]
fn forwarding_headers_are_rewritten_and_hop_by_hop_removed() {
    let (worker, gateway) = one_worker(&[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(
        format!(
            "GET {E1}/echo HTTP/1.1\r\n\
             Host: client.example:8080\r\n\
             X-Forwarded-For: 203.0.113.7\r\n\
             Forwarded: for=203.0.113.7\r\n\
             Connection: keep-alive, X-Hop-Custom\r\n\
             X-Hop-Custom: must-not-pass\r\n\
             Keep-Alive: timeout=5\r\n\
             TE: trailers\r\n\
             Trailer: X-Checksum\r\n\
             Upgrade: websocket\r\n\
             Proxy-Authorization: Basic dXNlcjpwYXNz\r\n\
             Proxy-Connection: keep-alive\r\n\
             X-Request-Id: client-chosen-id-42\r\n\
             X-End-To-End: kept\r\n\
             \r\n"
        )
        .as_bytes(),
    );
    assert_eq!(conn.status, 200);
    assert_eq!(conn.header("x-request-id"), Some("client-chosen-id-42"));
    let echo: Value = serde_json::from_str(&conn.body()).expect("echo JSON");

    let worker_authority = worker.addr().to_string();
    assert_eq!(echo_header(&echo, "host"), [worker_authority.as_str()]);
    assert_eq!(
        echo_header(&echo, "x-forwarded-for").join(", "),
        "203.0.113.7, 127.0.0.1"
    );
    assert_eq!(echo_header(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(
        echo_header(&echo, "x-forwarded-host"),
        ["client.example:8080"]
    );
    assert_eq!(
        echo_header(&echo, "forwarded").join(", "),
        r#"for=203.0.113.7, for=127.0.0.1;proto=http;host="client.example:8080""#
    );
    assert_eq!(echo_header(&echo, "x-request-id"), ["client-chosen-id-42"]);
    assert_eq!(echo_header(&echo, "x-end-to-end"), ["kept"]);
    for hop in [
        "x-hop-custom",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(
            echo_header(&echo, hop).is_empty(),
            "hop-by-hop `{hop}` reached the worker: {}",
            echo["headers"]
        );
    }
    // The gateway may manage its own upstream connection, but the client's Connection
    // header (naming X-Hop-Custom) must not pass.
    for value in echo_header(&echo, "connection") {
        assert!(
            ["keep-alive", "close"].contains(&value.to_ascii_lowercase().as_str()),
            "the client's Connection header reached the worker: {value}"
        );
    }

    // Without forwarding headers or a request id of its own, the client gets fresh ones.
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(format!("GET {E1}/echo HTTP/1.1\r\nHost: client.example:8080\r\n\r\n").as_bytes());
    assert_eq!(conn.status, 200);
    let returned = conn
        .header("x-request-id")
        .expect("x-request-id")
        .to_owned();
    assert_uuid_v7(&returned);
    let echo: Value = serde_json::from_str(&conn.body()).expect("echo JSON");
    assert_eq!(echo_header(&echo, "x-request-id"), [returned.as_str()]);
    assert_eq!(echo_header(&echo, "x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(
        echo_header(&echo, "forwarded"),
        [r#"for=127.0.0.1;proto=http;host="client.example:8080""#]
    );

    // Two requests never share a generated id.
    let (_, headers, _) = get(gateway.addr("public"), &format!("{E1}/echo"));
    let other = headers
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v.clone())
        .expect("x-request-id");
    assert_uuid_v7(&other);
    assert_ne!(other, returned);
}

/// The request body is streamed: the worker sees the request while the client is still
/// sending the body, and gets all of it in the end.
#[test]
fn request_body_is_streamed_to_the_worker() {
    let (worker, gateway) = one_worker(&[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.write(
        format!(
            "POST {E1}/echo/upload HTTP/1.1\r\nHost: test\r\n\
             Transfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n"
        )
        .as_bytes(),
    )
    .expect("writing the head and first chunk");
    eventually(
        "the worker to see the request before its body is complete",
        Duration::from_secs(5),
        || (worker.count("/echo/upload") == 1).then_some(()),
    );
    conn.write(b"7\r\n-second\r\n0\r\n\r\n")
        .expect("writing the rest");
    conn.read_head();
    assert_eq!(conn.status, 200);
    let echo: Value = serde_json::from_str(&conn.body()).expect("echo JSON");
    assert_eq!(echo["body"], "first-second");
    assert_eq!(echo["body_bytes"], 12);
}

/// Plain SSE events reach the client one by one as the worker sends them (200 ms apart),
/// not in a lump at the end, and the stream ends cleanly.
#[test]
fn sse_events_arrive_as_the_worker_sends_them() {
    let (_worker, gateway) = one_worker(&[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(
        format!("GET {E1}/sse?events=5&interval_ms=200 HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    );
    assert_eq!(conn.status, 200);
    assert!(
        conn.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/event-stream")),
        "{:?}",
        conn.headers
    );
    let events = conn.events();
    assert_eq!(conn.end, Some(End::Clean));
    assert_eq!(events.len(), 5, "{events:?}");
    let mut sent = Vec::new();
    for (i, (event, _)) in events.iter().enumerate() {
        let json = sse_json(event).expect("data event");
        assert_eq!(json["seq"], i);
        sent.push(json["sent_at_us"].as_u64().expect("sent_at_us"));
    }
    let arrivals: Vec<_> = events.iter().map(|(_, at)| *at).collect();
    assert_arrived_spread_out(&arrivals, &sent);
}

/// A streamed chat completion (20 tokens/s) arrives chunk by chunk, every token, then
/// `data: [DONE]` and the terminating chunk.
#[test]
fn chat_stream_arrives_token_by_token() {
    let (_worker, gateway) = one_worker(&["--tokens-per-second", "20"]);
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(post_json(&format!("{E1}/v1/chat/completions"), &chat_body(10, true)).as_bytes());
    assert_eq!(conn.status, 200);
    let events = conn.events();
    assert_eq!(conn.end, Some(End::Clean));
    // Role chunk, 10 tokens, finish chunk, [DONE].
    assert_eq!(events.len(), 13, "{events:?}");
    assert!(is_done(&events[12].0), "{:?}", events[12]);
    let mut text = String::new();
    let mut sent = Vec::new();
    let mut arrivals = Vec::new();
    for (event, at) in &events[..12] {
        let json = sse_json(event).expect("chunk JSON");
        text.push_str(
            json["choices"][0]["delta"]["content"]
                .as_str()
                .unwrap_or(""),
        );
        sent.push(json["sent_at_us"].as_u64().expect("sent_at_us"));
        arrivals.push(*at);
    }
    assert_eq!(text.split_whitespace().count(), 10, "{text}");
    assert_arrived_spread_out(&arrivals, &sent);
}

/// `GET /healthz` and `GET /readyz` on a data listener answer 200 JSON, with a request id
/// like every answer.
#[test]
fn healthz_and_readyz_on_the_data_listener() {
    let (_worker, gateway) = one_worker(&[]);
    for path in ["/healthz", "/readyz"] {
        let (status, headers, body) = get(gateway.addr("public"), path);
        assert_eq!(status, 200, "{path}");
        assert!(
            headers.contains(&("content-type".into(), "application/json".into())),
            "{path}: {headers:?}"
        );
        let id = headers
            .iter()
            .find(|(name, _)| name == "x-request-id")
            .map(|(_, value)| value.as_str());
        assert!(id.is_some_and(|id| id.len() == 36), "{path}: {headers:?}");
        let _: Value = serde_json::from_str(&body).expect("JSON body");
    }
}

/// A body of exactly `max_body_bytes` passes; a `Content-Length` beyond it is refused with
/// 413 `body_too_large` at once (before any body byte is sent), and nothing reaches the
/// worker.
#[test]
fn content_length_over_the_limit_is_413() {
    let (worker, gateway) = one_worker(&[]);
    let at_limit = "x".repeat(1024);
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(post_json(&format!("{E1}/echo/at-limit"), &at_limit).as_bytes());
    assert_eq!(conn.status, 200);
    let echo: Value = serde_json::from_str(&conn.body()).expect("echo JSON");
    assert_eq!(echo["body_bytes"], 1024);

    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(
        format!(
            "POST {E1}/echo/too-big HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\n\
             Content-Length: 1025\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(conn.status, 413);
    let headers = conn.headers.clone();
    let json = assert_json_error(413, &headers, &conn.body());
    assert_eq!(json["error"]["code"], "body_too_large");
    assert_only_sentinel_reached_after(&gateway, &worker, &["/echo/at-limit"]);
}

/// A chunked body that grows past `max_body_bytes` is refused with 413 `body_too_large` as
/// soon as the limit is crossed (the client has not even finished sending).
#[test]
fn chunked_body_over_the_limit_is_413() {
    let (_worker, gateway) = one_worker(&[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    let mut request = format!(
        "POST {E1}/echo/chunked-too-big HTTP/1.1\r\nHost: test\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for size in [1000usize, 100] {
        request.extend_from_slice(format!("{size:x}\r\n").as_bytes());
        request.extend(std::iter::repeat_n(b'y', size));
        request.extend_from_slice(b"\r\n");
    }
    // No terminating chunk: the answer must come without waiting for the end.
    conn.send(&request);
    assert_eq!(conn.status, 413);
    let headers = conn.headers.clone();
    let json = assert_json_error(413, &headers, &conn.body());
    assert_eq!(json["error"]["code"], "body_too_large");
}

/// A request head over 64 KiB (server.max_header_bytes) is refused with 431 and reaches no
/// worker; a 60 KiB head passes.
#[test]
fn oversized_request_head_is_431() {
    let (worker, gateway) = one_worker(&[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    let big = "b".repeat(60 * 1024);
    conn.send(
        format!("GET {E1}/echo/big-ok HTTP/1.1\r\nHost: test\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    );
    assert_eq!(conn.status, 200, "a 60 KiB head must pass");
    let _ = conn.body();

    let mut conn = Http1::connect(gateway.addr("public"));
    let huge = "h".repeat(70 * 1024);
    conn.send(
        format!("GET {E1}/echo/too-big HTTP/1.1\r\nHost: test\r\nX-Huge: {huge}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(conn.status, 431);
    assert_only_sentinel_reached_after(&gateway, &worker, &["/echo/big-ok"]);
}

/// More than 100 request headers (server.max_headers) are refused with 431 and reach no
/// worker; 90 pass.
#[test]
fn too_many_request_headers_is_431() {
    let (worker, gateway) = one_worker(&[]);
    let request = |path: &str, extra: usize| {
        let mut raw = format!("GET {E1}{path} HTTP/1.1\r\nHost: test\r\n");
        for i in 0..extra {
            raw.push_str(&format!("X-Header-{i}: {i}\r\n"));
        }
        raw.push_str("\r\n");
        raw
    };
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(request("/echo/ninety", 89).as_bytes());
    assert_eq!(conn.status, 200, "90 headers must pass");
    let _ = conn.body();

    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(request("/echo/too-many", 101).as_bytes());
    assert_eq!(conn.status, 431);
    assert_only_sentinel_reached_after(&gateway, &worker, &["/echo/ninety"]);
}

/// A request with both `Content-Length` and `Transfer-Encoding: chunked` (in either order)
/// is refused with 400, the connection is closed after the answer, and neither it nor the
/// request smuggled in its body reaches the worker.
#[test]
fn content_length_with_transfer_encoding_is_400_and_closes() {
    let (worker, gateway) = one_worker(&[]);
    // Read as chunked, the body is empty and a second request follows; read by length, the
    // second request is body. Either way a proxy and a worker could disagree.
    let smuggled = format!("GET {E1}/echo/smuggled HTTP/1.1\r\nHost: test\r\n\r\n");
    let body = format!("0\r\n\r\n{smuggled}");
    let length = format!("Content-Length: {}\r\n", body.len());
    let chunked = "Transfer-Encoding: chunked\r\n";
    for (first, second) in [(length.as_str(), chunked), (chunked, length.as_str())] {
        let mut conn = Http1::connect(gateway.addr("public"));
        conn.set_timeout(Duration::from_secs(3));
        conn.send(
            format!("POST {E1}/echo/cl-te HTTP/1.1\r\nHost: test\r\n{first}{second}\r\n{body}")
                .as_bytes(),
        );
        assert_eq!(conn.status, 400, "{first}{second}");
        let headers = conn.headers.clone();
        assert_json_error(400, &headers, &conn.body());
        let (rest, end) = conn.rest();
        assert!(
            rest.is_empty(),
            "a second answer came: {:?}",
            String::from_utf8_lossy(&rest)
        );
        assert!(
            matches!(end, End::Eof | End::Reset(_)),
            "the connection stayed open after the 400: {end:?}"
        );
    }
    assert_only_sentinel_reached_after(&gateway, &worker, &[]);
}

/// `round_robin` over two workers alternates: 20 requests on one connection are 10 each.
#[test]
fn round_robin_alternates_between_workers() {
    let a = TestWorker::start(&[]);
    let b = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[a.url(), b.url()])
        .strategy("round_robin")
        .start();
    let mut conn = Http1::connect(gateway.addr("public"));
    for _ in 0..20 {
        let (status, body) = conn.get(&format!("{E1}/echo/rr"));
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!((a.count("/echo/rr"), b.count("/echo/rr")), (10, 10));
}

/// `least_inflight` spreads concurrent slow requests over both workers instead of piling
/// them on one.
#[test]
fn least_inflight_spreads_concurrent_requests() {
    let a = TestWorker::start(&[]);
    let b = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[a.url(), b.url()])
        .strategy("least_inflight")
        .start();
    let public = gateway.addr("public");
    std::thread::scope(|scope| {
        let requests: Vec<_> = (0..10)
            .map(|_| scope.spawn(move || get(public, &format!("{E1}/slow?ms=800"))))
            .collect();
        for request in requests {
            let (status, _, body) = request.join().expect("request thread");
            assert_eq!(status, 200, "{body}");
        }
    });
    let (on_a, on_b) = (a.count("/slow"), b.count("/slow"));
    assert_eq!(on_a + on_b, 10);
    assert!(on_a >= 3 && on_b >= 3, "unbalanced: {on_a} and {on_b}");
}

/// Every request gets one JSON access-log line on stdout with the documented keys, whose
/// `request_id` is the response's `x-request-id`; the Authorization header never appears.
#[test]
fn access_log_has_one_json_line_per_request() {
    let (worker, gateway) = one_worker(&[]);
    let secret = "sekrit-token-123";
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(
        format!(
            "POST {E1}/echo/logged?x=1 HTTP/1.1\r\nHost: test\r\n\
             Authorization: Bearer {secret}\r\nX-Request-Id: log-test-1\r\n\
             Content-Length: 5\r\n\r\n12345"
        )
        .as_bytes(),
    );
    assert_eq!(conn.status, 200);
    let response_body = conn.body();
    let (status, headers, _) = get(gateway.addr("public"), "/project/p1/endpoint/nope/x");
    assert_eq!(status, 404);
    let missing_id = headers
        .iter()
        .find(|(k, _)| k == "x-request-id")
        .map(|(_, v)| v.clone())
        .expect("x-request-id on a 404");

    let entry = gateway.access_entry("log-test-1");
    for key in [
        "time",
        "request_id",
        "client_ip",
        "method",
        "path",
        "project",
        "endpoint",
        "worker",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_ms",
        "first_byte_ms",
    ] {
        assert!(entry.get(key).is_some(), "no `{key}` in {entry}");
    }
    assert!(
        entry["time"].as_str().is_some_and(|t| !t.is_empty()),
        "{entry}"
    );
    assert_eq!(entry["client_ip"], "127.0.0.1");
    assert_eq!(entry["method"], "POST");
    assert!(
        entry["path"]
            .as_str()
            .is_some_and(|p| p.contains("/echo/logged")),
        "{entry}"
    );
    assert_eq!(entry["project"], "p1");
    assert_eq!(entry["endpoint"], "e1");
    assert!(
        entry["worker"]
            .as_str()
            .is_some_and(|w| w.contains(&worker.addr().to_string())),
        "{entry}"
    );
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["bytes_in"], 5);
    assert_eq!(entry["bytes_out"], response_body.len());
    let duration = entry["duration_ms"]
        .as_f64()
        .expect("duration_ms is a number");
    let first_byte = entry["first_byte_ms"]
        .as_f64()
        .expect("first_byte_ms is a number");
    assert!(
        (0.0..=duration).contains(&first_byte),
        "first byte {first_byte} ms after a {duration} ms request"
    );

    let missing = gateway.access_entry(&missing_id);
    assert_eq!(missing["status"], 404);

    let log = gateway.access_log();
    for id in ["log-test-1", missing_id.as_str()] {
        let lines = log.iter().filter(|e| e["request_id"] == id).count();
        assert_eq!(lines, 1, "{lines} access log lines for {id}");
    }
    let all = gateway.stdout().join("\n") + &gateway.stderr().join("\n");
    assert!(!all.contains(secret), "the token leaked into the logs");
}

/// `/metrics` on the admin listener counts requests by code, has the duration and
/// first-byte histograms and the in-flight and worker gauges, declares their types, and
/// passes `promtool check metrics`.
#[test]
fn metrics_cover_requests_and_pass_promtool() {
    let (worker, gateway) = one_worker(&[]);
    let public = gateway.addr("public");
    for path in ["/echo", "/echo", "/echo", "/status/503", "/status/404"] {
        let _ = get(public, &format!("{E1}{path}"));
    }
    let counted = |text: &str, code: &str| {
        metric(
            text,
            "portico_requests_total",
            &[("project", "p1"), ("endpoint", "e1"), ("code", code)],
        )
    };
    let authority = worker.addr().to_string();
    let inflight = |text: &str| {
        metric(
            text,
            "portico_inflight_requests",
            &[("endpoint", "e1"), ("worker", &authority)],
        )
    };
    let healthy = |text: &str| {
        metric(
            text,
            "portico_workers",
            &[("endpoint", "e1"), ("state", "healthy")],
        )
    };
    let text = eventually(
        "requests_total 3×200, 1×503, 1×404; inflight 0; 1 healthy worker",
        Duration::from_secs(5),
        || {
            let text = gateway.metrics();
            (counted(&text, "200") == Some(3.0)
                && counted(&text, "503") == Some(1.0)
                && counted(&text, "404") == Some(1.0)
                && inflight(&text) == Some(0.0)
                && healthy(&text) == Some(1.0))
            .then_some(text)
        },
    );

    for (name, kind) in [
        ("portico_requests_total", "counter"),
        ("portico_request_duration_seconds", "histogram"),
        ("portico_upstream_first_byte_seconds", "histogram"),
        ("portico_inflight_requests", "gauge"),
        ("portico_workers", "gauge"),
    ] {
        assert!(
            text.lines().any(|l| l == format!("# TYPE {name} {kind}")),
            "no `# TYPE {name} {kind}` in\n{text}"
        );
    }
    for histogram in [
        "portico_request_duration_seconds",
        "portico_upstream_first_byte_seconds",
    ] {
        let count = metric_sum(&text, &format!("{histogram}_count"), &[]);
        assert!(count >= 5.0, "{histogram}_count = {count}\n{text}");
        let inf = metric_sum(&text, &format!("{histogram}_bucket"), &[("le", "+Inf")]);
        assert_eq!(inf, count, "{histogram}: +Inf bucket differs from _count");
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("{histogram}_sum"))),
            "no {histogram}_sum"
        );
    }
    promtool_check_metrics(&text);
}

/// A whole (not streamed) chat completion comes back as the worker answered it.
#[test]
fn chat_completion_whole_answer_passes_through() {
    let (worker, gateway) = one_worker(&[]);
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(post_json(&format!("{E1}/v1/chat/completions"), &chat_body(5, false)).as_bytes());
    assert_eq!(conn.status, 200);
    assert_eq!(conn.header("content-type"), Some("application/json"));
    let reply: Value = serde_json::from_str(&conn.body()).expect("completion JSON");
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["usage"]["completion_tokens"], 5);
    assert_eq!(
        reply["choices"][0]["message"]["content"]
            .as_str()
            .map(|t| t.split_whitespace().count()),
        Some(5)
    );
    assert_eq!(worker.count("/v1/chat/completions"), 1);
}

/// Reads from `stream` until the gateway closes it; returns how long that took and what
/// arrived before.
fn wait_for_close(stream: &mut std::net::TcpStream, within: Duration) -> (Duration, Vec<u8>) {
    use std::io::Read as _;
    stream.set_read_timeout(Some(within)).expect("read timeout");
    let started = std::time::Instant::now();
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => return (started.elapsed(), received),
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                panic!("still open after {within:?}; received {received:?}")
            }
            // A reset is a close too.
            Err(_) => return (started.elapsed(), received),
        }
    }
}

/// `server.header_read_timeout_seconds` cuts off a client that is slow to send its head;
/// `server.keepalive_timeout_seconds` closes a keep-alive connection left idle, and not
/// sooner; neither cuts a response that takes longer than both.
#[test]
fn slow_heads_and_idle_keepalive_connections_are_closed() {
    use std::io::Write as _;
    let worker = TestWorker::start(&[]);
    let toml = ProxyConfig::new(&[worker.url()])
        .timeouts(500, 10, 10)
        .toml()
        .replacen(
            "[server]\n",
            "[server]\nheader_read_timeout_seconds = 1\nkeepalive_timeout_seconds = 3\n",
            1,
        );
    let gateway = TestGateway::start(&toml);
    let addr = gateway.addr("public");

    // Half a head, then silence: closed after about one second, unanswered.
    let mut slow = std::net::TcpStream::connect(addr).unwrap();
    slow.write_all(format!("GET {E1}/echo HTTP/1.1\r\nHo").as_bytes())
        .unwrap();
    let (took, received) = wait_for_close(&mut slow, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(2500),
        "a slow head was closed after {took:?}"
    );
    assert!(
        received.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&received)
    );
    assert_eq!(worker.count("/echo"), 0);

    // One request answered, then idle: kept past the head timeout, closed at the
    // keep-alive timeout.
    let mut idle = Http1::connect(addr);
    assert_eq!(idle.get(&format!("{E1}/echo/first")).0, 200);
    let mut stream = idle.stream.try_clone().unwrap();
    let (took, _) = wait_for_close(&mut stream, Duration::from_secs(10));
    assert!(
        took >= Duration::from_millis(2900) && took < Duration::from_millis(4500),
        "an idle keep-alive connection was closed after {took:?}"
    );

    // An answer slower than both timeouts arrives whole on a connection that then stays
    // usable.
    let mut patient = Http1::connect(addr);
    patient.set_timeout(Duration::from_secs(10));
    let (status, _) = patient.get(&format!("{E1}/slow?ms=4000"));
    assert_eq!(status, 200);
    assert_eq!(patient.get(&format!("{E1}/echo/after")).0, 200);
}

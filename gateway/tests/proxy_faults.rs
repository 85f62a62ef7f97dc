//! Worker faults through the real `portico` and `fakeworker` binaries: refused connections,
//! failing health checks, 5xx bursts, timeouts, hangs, crashes mid-stream and clients that
//! go away. Each one ends in a documented answer or an honestly broken stream, never a
//! fake clean end.

mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    E1, End, Http1, ProxyConfig, TestWorker, assert_json_error, chat_body, closed_port_url,
    eventually, get, is_done, metric, metric_sum, post_json, sse_json,
};

/// `portico_workers{endpoint="e1",state="healthy"}`, 0 when absent.
fn healthy_workers(text: &str) -> f64 {
    metric(
        text,
        "portico_workers",
        &[("endpoint", "e1"), ("state", "healthy")],
    )
    .unwrap_or(0.0)
}

/// A worker that refuses connections gets the client a 502 in JSON (after the one retry,
/// with no other worker to retry on), counted as an upstream error and as a 502.
#[test]
fn refused_worker_is_502_json() {
    // Probes far apart, so only the request itself meets the dead worker.
    let gateway = ProxyConfig::new(&[closed_port_url()])
        .health("interval_ms", 60_000)
        .health("unhealthy_threshold", 10)
        .start();
    let started = Instant::now();
    let (status, headers, body) = get(gateway.addr("public"), &format!("{E1}/echo"));
    assert_eq!(status, 502, "{body}");
    assert_json_error(status, &headers, &body);
    assert!(
        headers.iter().any(|(k, _)| k == "x-request-id"),
        "{headers:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "a refused connection took {:?} to report",
        started.elapsed()
    );
    eventually(
        "the refusal counted in portico_upstream_errors_total and as a 502",
        Duration::from_secs(5),
        || {
            let text = gateway.metrics();
            let errors = metric_sum(
                &text,
                "portico_upstream_errors_total",
                &[("endpoint", "e1")],
            );
            let code = metric(
                &text,
                "portico_requests_total",
                &[("project", "p1"), ("endpoint", "e1"), ("code", "502")],
            );
            (errors >= 1.0 && code == Some(1.0)).then_some(())
        },
    );
}

/// With one of two workers refusing connections, every request still succeeds: a request
/// that could not reach a worker is retried once on the other.
#[test]
fn refused_worker_is_retried_on_the_other() {
    let live = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[closed_port_url(), live.url()])
        .strategy("round_robin")
        .start();
    let public = gateway.addr("public");
    for i in 0..10 {
        let (status, _, body) = get(public, &format!("{E1}/echo/retry-{i}"));
        assert_eq!(status, 200, "request {i}: {body}");
        let echo: Value = serde_json::from_str(&body).expect("echo JSON");
        assert_eq!(echo["path"], format!("/echo/retry-{i}"));
    }
    assert_eq!(live.count("/echo/retry-"), 10);
    // Round robin sent some of those to the dead worker first.
    let text = gateway.metrics();
    let errors = metric_sum(
        &text,
        "portico_upstream_errors_total",
        &[("endpoint", "e1")],
    );
    assert!(errors >= 1.0, "no upstream error counted:\n{text}");
}

/// A worker whose health check fails is taken out after `unhealthy_threshold` probes and
/// gets no traffic, even though it would answer; once its checks pass
/// `healthy_threshold` times it is back in rotation.
#[test]
fn worker_failing_health_checks_gets_no_traffic_until_it_recovers() {
    let good = TestWorker::start(&[]);
    // `/health` is 503 for its first 4 s; everything else works all along.
    let booting = TestWorker::start(&["--boot-delay-ms", "4000"]);
    let gateway = ProxyConfig::new(&[good.url(), booting.url()])
        .strategy("round_robin")
        .health("interval_ms", 100)
        .health("timeout_ms", 100)
        .health("unhealthy_threshold", 2)
        .health("healthy_threshold", 2)
        .health("eject_after_failures", 100)
        .start();
    eventually(
        "the booting worker to be marked down",
        Duration::from_secs(3),
        || (healthy_workers(&gateway.metrics()) == 1.0).then_some(()),
    );
    let mut conn = Http1::connect(gateway.addr("public"));
    for _ in 0..10 {
        let (status, body) = conn.get(&format!("{E1}/echo/while-down"));
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(booting.count("/echo/while-down"), 0);
    assert_eq!(good.count("/echo/while-down"), 10);

    eventually(
        "the recovered worker to be marked up",
        Duration::from_secs(10),
        || (healthy_workers(&gateway.metrics()) == 2.0).then_some(()),
    );
    let mut conn = Http1::connect(gateway.addr("public"));
    for _ in 0..10 {
        let (status, body) = conn.get(&format!("{E1}/echo/after"));
        assert_eq!(status, 200, "{body}");
    }
    assert!(
        booting.count("/echo/after") >= 4,
        "the recovered worker got {} of 10",
        booting.count("/echo/after")
    );
}

/// A worker's 5xx answers are passed to the client as they are (status and body) and not
/// retried on another worker.
#[test]
fn worker_5xx_is_passed_through_not_retried() {
    let a = TestWorker::start(&[]);
    let b = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[a.url(), b.url()])
        .strategy("round_robin")
        .start();
    let mut conn = Http1::connect(gateway.addr("public"));
    let (status, body) = conn.get(&format!("{E1}/status/503"));
    assert_eq!(status, 503);
    assert_eq!(body, r#"{"status":503}"#);
    assert!(conn.header("x-request-id").is_some());
    conn.send(post_json(&format!("{E1}/status/500"), r#"{"any":"thing"}"#).as_bytes());
    assert_eq!(conn.status, 500);
    assert_eq!(conn.body(), r#"{"status":500}"#);
    assert_eq!(
        a.count("/status/") + b.count("/status/"),
        2,
        "a 5xx was retried"
    );
}

/// After `eject_after_failures` consecutive 5xx a worker is ejected: the burst of 500s the
/// client saw (passed through, not 502s) stops and the healthy worker serves everything.
#[test]
fn error_burst_ejects_the_failing_worker() {
    let bad = TestWorker::start(&["--error-rate", "1.0"]);
    let good = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[bad.url(), good.url()])
        .strategy("round_robin")
        .health("eject_after_failures", 3)
        .health("eject_seconds", 60)
        .start();
    let mut conn = Http1::connect(gateway.addr("public"));
    let request = post_json(&format!("{E1}/v1/chat/completions"), &chat_body(2, false));
    let mut failures = 0;
    let mut streak = 0;
    eventually(
        "10 successes in a row once the failing worker is ejected",
        Duration::from_secs(10),
        || {
            conn.send(request.as_bytes());
            let body = conn.body();
            if conn.status == 200 {
                streak += 1;
            } else {
                assert_eq!(conn.status, 500, "{body}");
                let json: Value = serde_json::from_str(&body).expect("JSON error");
                // The worker's own error, not one made up by the gateway.
                assert_eq!(json["error"]["type"], "server_error", "{body}");
                failures += 1;
                streak = 0;
            }
            (streak >= 10).then_some(())
        },
    );
    let bad_seen = bad.count("/v1/chat/completions");
    assert!(
        (3..=4).contains(&bad_seen),
        "the failing worker got {bad_seen} requests; ejection after 3 expected"
    );
    assert_eq!(failures, bad_seen);
    eventually(
        "the ejected worker not counted healthy",
        Duration::from_secs(5),
        || (healthy_workers(&gateway.metrics()) == 1.0).then_some(()),
    );
}

/// The last available worker is never ejected: with one always-failing worker the client
/// keeps getting its 500s, not a 503 for want of a worker.
#[test]
fn last_worker_is_never_ejected() {
    let bad = TestWorker::start(&["--error-rate", "1.0"]);
    let gateway = ProxyConfig::new(&[bad.url()])
        .health("eject_after_failures", 2)
        .health("eject_seconds", 60)
        .start();
    let mut conn = Http1::connect(gateway.addr("public"));
    let request = post_json(&format!("{E1}/v1/chat/completions"), &chat_body(2, false));
    for i in 0..8 {
        conn.send(request.as_bytes());
        let body = conn.body();
        assert_eq!(conn.status, 500, "request {i}: {body}");
    }
    assert_eq!(bad.count("/v1/chat/completions"), 8);
}

/// A worker that sends no response head within `first_byte_seconds` gets the client a 504
/// in JSON, about that much later.
#[test]
fn first_byte_timeout_is_504() {
    let worker = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[worker.url()])
        .timeouts(500, 1, 2)
        .start();
    let started = Instant::now();
    let (status, headers, body) = get(gateway.addr("public"), &format!("{E1}/slow?ms=5000"));
    let took = started.elapsed();
    assert_eq!(status, 504, "{body}");
    assert_json_error(status, &headers, &body);
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "504 after {took:?}, expected about 1 s"
    );
    eventually(
        "the timeout counted as an upstream error",
        Duration::from_secs(5),
        || {
            let text = gateway.metrics();
            (metric_sum(
                &text,
                "portico_upstream_errors_total",
                &[("endpoint", "e1")],
            ) >= 1.0)
                .then_some(())
        },
    );
}

/// A worker that sends 200 headers and then nothing: the client gets the headers, and after
/// `idle_seconds` the connection closes without the terminating chunk (no fake clean end).
#[test]
fn worker_hanging_after_headers_breaks_the_stream() {
    let worker = TestWorker::start(&["--hang-after-headers"]);
    let gateway = ProxyConfig::new(&[worker.url()])
        .timeouts(500, 2, 1)
        .start();
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.set_timeout(Duration::from_secs(5));
    let started = Instant::now();
    conn.send(post_json(&format!("{E1}/v1/chat/completions"), &chat_body(5, true)).as_bytes());
    assert_eq!(conn.status, 200);
    let events = conn.events();
    assert!(events.is_empty(), "{events:?}");
    let end = conn.end.clone().expect("the body ended");
    assert!(
        matches!(end, End::Eof | End::Reset(_)),
        "expected the connection to close without a terminating chunk, got {end:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}, before the 1 s idle timeout",
        started.elapsed()
    );
}

/// A stream whose chunks come more often than `idle_seconds` is never cut, however long it
/// lasts in all: the idle timer measures the silence since the last chunk.
#[test]
fn steady_stream_longer_than_the_idle_timeout_arrives_whole() {
    let worker = TestWorker::start(&[]);
    let gateway = ProxyConfig::new(&[worker.url()])
        .timeouts(500, 2, 1)
        .start();
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.set_timeout(Duration::from_secs(10));
    let started = Instant::now();
    conn.send(
        format!("GET {E1}/sse?events=8&interval_ms=400 HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    );
    assert_eq!(conn.status, 200);
    let events = conn.events();
    assert_eq!(events.len(), 8, "{events:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(2800),
        "8 events 400 ms apart took {:?}",
        started.elapsed()
    );
    assert_eq!(
        conn.end,
        Some(End::Clean),
        "the stream ended with {:?}",
        conn.end
    );
}

/// A worker killed in the middle of an SSE stream: the client's stream breaks off without
/// `data: [DONE]` and without a terminating chunk, promptly (well before the idle timeout).
#[test]
fn worker_killed_mid_stream_breaks_the_client_stream() {
    let mut worker = TestWorker::start(&["--tokens-per-second", "20"]);
    let gateway = ProxyConfig::new(&[worker.url()])
        .timeouts(500, 2, 10)
        .start();
    let mut conn = Http1::connect(gateway.addr("public"));
    conn.set_timeout(Duration::from_secs(5));
    conn.send(post_json(&format!("{E1}/v1/chat/completions"), &chat_body(100, true)).as_bytes());
    assert_eq!(conn.status, 200);
    for _ in 0..3 {
        let (event, _) = conn.event().expect("an event before the kill");
        assert!(sse_json(&event).is_some(), "{event}");
    }
    let killed = Instant::now();
    worker.kill();
    let rest = conn.events();
    assert!(
        !rest.iter().any(|(event, _)| is_done(event)),
        "a fake [DONE] after the worker died"
    );
    assert!(
        rest.len() < 97,
        "the stream went on: {} more events",
        rest.len()
    );
    let end = conn.end.clone().expect("the body ended");
    assert!(
        matches!(end, End::Eof | End::Reset(_)),
        "expected a broken stream, got {end:?}"
    );
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "the break took {:?} to reach the client",
        killed.elapsed()
    );
}

/// A client that goes away in the middle of a streamed completion releases the worker's
/// in-flight count (back to 0) and the worker's request (its running gauge drops too).
#[test]
fn client_disconnect_mid_stream_releases_inflight() {
    let worker = TestWorker::start(&["--tokens-per-second", "20"]);
    let gateway = ProxyConfig::new(&[worker.url()]).start();
    let authority = worker.addr().to_string();
    let inflight = |text: &str| {
        metric(
            text,
            "portico_inflight_requests",
            &[("endpoint", "e1"), ("worker", &authority)],
        )
    };
    let worker_running = || {
        let (_, _, text) = get(worker.addr(), "/metrics");
        metric(&text, "vllm:num_requests_running", &[]).unwrap_or(-1.0)
    };

    let mut conn = Http1::connect(gateway.addr("public"));
    conn.send(post_json(&format!("{E1}/v1/chat/completions"), &chat_body(200, true)).as_bytes());
    assert_eq!(conn.status, 200);
    let (event, _) = conn.event().expect("a first event");
    assert!(sse_json(&event).is_some(), "{event}");
    assert_eq!(inflight(&gateway.metrics()), Some(1.0));
    assert_eq!(worker_running(), 1.0);

    drop(conn);
    eventually(
        "portico_inflight_requests back to 0",
        Duration::from_secs(5),
        || (inflight(&gateway.metrics()) == Some(0.0)).then_some(()),
    );
    eventually(
        "the worker's request cancelled",
        Duration::from_secs(5),
        || (worker_running() == 0.0).then_some(()),
    );
}

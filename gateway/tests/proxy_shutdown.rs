//! Graceful shutdown through the real `portico` and `fakeworker` binaries: SIGTERM stops
//! accepting and lets open streams finish within `grace_period_seconds`, cuts what is left
//! after it, and a second signal exits at once.

mod support;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use support::{
    E1, End, Http1, ProxyConfig, TestWorker, chat_body, eventually, is_done, post_json, sse_json,
};

/// Opens a streamed chat completion of `tokens` tokens through the gateway at `addr` and
/// reads its first event.
fn open_stream(addr: SocketAddr, tokens: u32) -> Http1 {
    let mut conn = Http1::connect(addr);
    conn.send(
        post_json(
            &format!("{E1}/v1/chat/completions"),
            &chat_body(tokens, true),
        )
        .as_bytes(),
    );
    assert_eq!(conn.status, 200);
    let (event, _) = conn.event().expect("a first event");
    assert!(sse_json(&event).is_some(), "{event}");
    conn
}

/// Waits until the gateway at `addr` refuses new connections. A connection that still gets
/// in meanwhile must get a prompt answer or a prompt close, never a hang.
fn assert_stops_accepting(addr: SocketAddr) {
    eventually(
        "the listener to refuse new connections",
        Duration::from_secs(3),
        || match Http1::try_connect(addr) {
            Err(_) => Some(()),
            Ok(mut conn) => {
                conn.set_timeout(Duration::from_secs(2));
                let _ = conn.write(b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n");
                let (_, end) = conn.rest();
                assert_ne!(end, End::Timeout, "a connection after SIGTERM hung");
                None
            }
        },
    );
}

/// SIGTERM with 20 streams open: the gateway stops accepting, all 20 finish with
/// `data: [DONE]` and a clean end, and it exits 0 within the grace period.
#[test]
fn sigterm_lets_open_streams_finish() {
    let worker = TestWorker::start(&["--tokens-per-second", "20"]);
    let mut gateway = ProxyConfig::new(&[worker.url()])
        .grace_period_seconds(5)
        .start();
    let addr = gateway.addr("public");
    let (opened_tx, opened_rx) = mpsc::channel();
    let streams: Vec<_> = (0..20)
        .map(|_| {
            let opened = opened_tx.clone();
            std::thread::spawn(move || {
                let mut conn = open_stream(addr, 30);
                opened.send(()).expect("reporting the first event");
                let rest = conn.events();
                (rest, conn.end.clone())
            })
        })
        .collect();
    // Only the stream threads hold senders now: if they all die, `recv` says so at once.
    drop(opened_tx);
    let deadline = Instant::now() + Duration::from_secs(10);
    for _ in 0..20 {
        let left = deadline.saturating_duration_since(Instant::now());
        opened_rx
            .recv_timeout(left)
            .expect("all 20 streams open within 10 s");
    }

    let signalled = Instant::now();
    gateway.signal("TERM");
    assert_stops_accepting(addr);
    for (i, stream) in streams.into_iter().enumerate() {
        let (events, end) = stream.join().expect("stream thread");
        assert_eq!(end, Some(End::Clean), "stream {i}");
        // After the role chunk: 30 tokens, the finish chunk, [DONE].
        assert_eq!(events.len(), 32, "stream {i}: {events:?}");
        assert!(is_done(&events[31].0), "stream {i} did not end with [DONE]");
    }
    assert_eq!(gateway.wait_exit(Duration::from_secs(7)), Some(0));
    assert!(
        signalled.elapsed() < Duration::from_secs(7),
        "exit took {:?}",
        signalled.elapsed()
    );
}

/// A stream still running when the grace period ends is cut (no `[DONE]`, no clean end) and
/// the gateway exits 0 soon after the grace period.
#[test]
fn sigterm_cuts_streams_after_the_grace_period() {
    let worker = TestWorker::start(&["--tokens-per-second", "20"]);
    let mut gateway = ProxyConfig::new(&[worker.url()])
        .grace_period_seconds(1)
        .timeouts(500, 2, 10)
        .start();
    // 200 tokens at 20/s: 10 s, far beyond the grace period.
    let mut conn = open_stream(gateway.addr("public"), 200);
    let signalled = Instant::now();
    gateway.signal("TERM");
    assert_eq!(gateway.wait_exit(Duration::from_secs(3)), Some(0));
    assert!(
        signalled.elapsed() >= Duration::from_millis(900),
        "exited after {:?}, before the 1 s grace period",
        signalled.elapsed()
    );
    let rest = conn.events();
    assert!(!rest.iter().any(|(e, _)| is_done(e)), "a fake [DONE]");
    let end = conn.end.clone().expect("the body ended");
    assert!(
        matches!(end, End::Eof | End::Reset(_)),
        "expected a cut stream, got {end:?}"
    );
}

/// A second signal during the drain exits at once (status 130), not after the grace period.
#[test]
fn second_signal_exits_at_once() {
    let worker = TestWorker::start(&["--tokens-per-second", "20"]);
    let mut gateway = ProxyConfig::new(&[worker.url()])
        .grace_period_seconds(5)
        .timeouts(500, 2, 10)
        .start();
    let addr = gateway.addr("public");
    let _conn = open_stream(addr, 200);
    gateway.signal("INT");
    // Draining has begun once the listener is closed; only then is a second signal a
    // second one (two signals sent back to back may merge into one).
    assert_stops_accepting(addr);
    let second = Instant::now();
    gateway.signal("INT");
    assert_eq!(gateway.wait_exit(Duration::from_secs(2)), Some(130));
    assert!(second.elapsed() < Duration::from_secs(2));
}

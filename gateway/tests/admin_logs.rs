//! `GET /admin/endpoints/{id}/logs` through the real binary: a process worker (a shell that
//! prints known lines, then runs `fakeworker`, whose access log names each request) and its
//! output by count, age, replica, filter, and followed live as server-sent events.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{TestGateway, eventually, fakeworker_bin, get, process_config};

fn config() -> String {
    let script = format!(
        "echo 'boot line alpha'; echo 'boot line beta' >&2; exec {} --port {{port}}",
        fakeworker_bin().display()
    );
    process_config(
        &["sh", "-c", &script],
        "grace_period_seconds = 2",
        "",
        "[endpoint.scaling]\nmin_workers = 1\nmax_workers = 1",
    )
}

/// `(status, body as JSON)` of an admin GET.
fn admin(gw: &TestGateway, path: &str) -> (u16, Value) {
    let (status, _, body) = get(gw.addr("admin"), path);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn texts(answer: &Value) -> Vec<String> {
    answer["lines"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|l| l["line"].as_str().unwrap_or("").to_string())
        .collect()
}

fn started(gw: &TestGateway) {
    eventually("a ready worker", Duration::from_secs(30), || {
        let (_, state) = admin(gw, "/admin/endpoints/e1");
        (state["workers"]["ready"].as_u64() == Some(1)).then_some(())
    });
}

/// Count, stream, replica and filter select exactly the lines the worker printed.
#[test]
fn lines_by_count_replica_and_filter() {
    let gw = TestGateway::start(&config());
    started(&gw);
    let (status, all) = admin(&gw, "/admin/endpoints/e1/logs?lines=1000");
    assert_eq!(status, 200, "{all}");
    let lines = texts(&all);
    assert!(lines.contains(&"boot line alpha".to_string()), "{lines:?}");
    assert!(lines.contains(&"boot line beta".to_string()), "{lines:?}");

    let (_, beta) = admin(&gw, "/admin/endpoints/e1/logs?filter=beta");
    assert_eq!(texts(&beta), ["boot line beta"]);
    assert_eq!(beta["lines"][0]["stream"], "stderr");
    assert_eq!(beta["lines"][0]["replica"], 0);

    // The filter narrows before the count: the newest one boot line.
    let (_, one) = admin(
        &gw,
        "/admin/endpoints/e1/logs?filter=%5Eboot%20line&lines=1",
    );
    assert_eq!(texts(&one).len(), 1, "{one}");

    let (_, other) = admin(&gw, "/admin/endpoints/e1/logs?replica=7");
    assert_eq!(texts(&other), Vec::<String>::new());
}

/// `since_seconds` keeps only lines read within that many seconds: the boot lines leave a
/// one-second window (they would stay forever if the age were ignored), not an hour's.
#[test]
fn lines_by_age() {
    let gw = TestGateway::start(&config());
    started(&gw);
    let (_, fresh) = admin(
        &gw,
        "/admin/endpoints/e1/logs?since_seconds=3600&filter=boot",
    );
    assert_eq!(texts(&fresh).len(), 2, "{fresh}");
    eventually("the boot lines to age out", Duration::from_secs(10), || {
        let (_, recent) = admin(&gw, "/admin/endpoints/e1/logs?since_seconds=1&filter=boot");
        texts(&recent).is_empty().then_some(())
    });
    let (_, wide) = admin(
        &gw,
        "/admin/endpoints/e1/logs?since_seconds=3600&filter=boot",
    );
    assert_eq!(texts(&wide).len(), 2);
}

/// `follow=true` streams the backlog, then each new matching line, as server-sent events.
#[test]
fn follow_streams_new_lines() {
    let gw = TestGateway::start(&config());
    started(&gw);
    let mut stream = TcpStream::connect(gw.addr("admin")).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    stream
        .write_all(
            b"GET /admin/endpoints/e1/logs?follow=true&filter=marker-41%7Calpha HTTP/1.1\r\n\
              Host: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
    let mut seen = String::new();
    let read_until = |stream: &mut TcpStream, seen: &mut String, needle: &str| {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 4096];
        while !seen.contains(needle) {
            assert!(Instant::now() < deadline, "no {needle:?} in {seen}");
            if let Ok(n) = stream.read(&mut buf) {
                seen.push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        }
    };
    read_until(&mut stream, &mut seen, "boot line alpha");
    assert!(seen.contains("text/event-stream"), "{seen}");
    let (status, _, _) = get(
        gw.addr("public"),
        "/project/p1/endpoint/e1/status/204?m=marker-41",
    );
    assert_eq!(status, 204);
    read_until(&mut stream, &mut seen, "marker-41");
    let events: Vec<&str> = seen.lines().filter(|l| l.starts_with("data: ")).collect();
    assert_eq!(events.len(), 2, "{seen}");
    let live: Value = serde_json::from_str(&events[1]["data: ".len()..]).unwrap();
    assert_eq!(live["stream"], "stdout");
    assert!(live["line"].as_str().unwrap().contains("marker-41"));
    assert!(
        !seen.contains("/health"),
        "the filter lets only matching lines through"
    );
}

/// Bad queries are 400 `invalid_query`; an unknown endpoint is 404.
#[test]
fn refusals() {
    let gw = TestGateway::start(&config());
    for query in [
        "lines=0",
        "lines=x",
        "filter=(",
        "follow=maybe",
        "color=red",
    ] {
        let (status, body) = admin(&gw, &format!("/admin/endpoints/e1/logs?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{query}");
    }
    let (status, body) = admin(&gw, "/admin/endpoints/nope/logs");
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "endpoint_not_found");
}

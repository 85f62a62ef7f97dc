//! `GET /admin/endpoints/{id}/access/hourly` through the real binary: a known sequence of
//! calls by two project tokens and anonymous clients (chat answers whole and streamed, 4xx
//! and 5xx) shows up exactly in the hourly breakdown (counts, bytes, callers, token usage),
//! in `portico_tokens_total`, and again after portico restarts on the same state directory.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use support::{Http1, TestGateway, TestWorker, get, samples, sse_json};

fn config(worker: &TestWorker, state_dir: &std::path::Path, ci: &str, web: &str) -> String {
    let token = |name: &str, token: &str| {
        format!(
            "{{ name = \"{name}\", sha256 = \"{}\" }}",
            gateway::token::sha256_hex(token)
        )
    };
    format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 2
state_dir = {state_dir:?}

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"
tokens = [{ci}, {web}]

[[endpoint]]
id = "e1"
project = "p1"

[endpoint.workers]
kind = "static"
urls = ["{url}"]
"#,
        state_dir = state_dir.display().to_string(),
        ci = token("ci", ci),
        web = token("web", web),
        url = worker.url(),
    )
}

/// What the test sent and saw, to compare with the breakdown.
#[derive(Default, Debug, Clone, Copy, PartialEq)]
struct Seen {
    requests: u64,
    errors: u64,
    bytes_in: u64,
    bytes_out: u64,
    prompt_tokens: u64,
    completion_tokens: u64,
}

/// Sends one request through the gateway; returns status and body as received (chunked
/// framing removed).
fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let content = if body.is_empty() {
        String::new()
    } else {
        format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        )
    };
    let raw = format!(
        "{method} /project/p1/endpoint/e1{path} HTTP/1.1\r\nHost: test\r\n{auth}{content}\
         Connection: close\r\n\r\n{body}"
    );
    let mut conn = Http1::connect(addr);
    conn.set_timeout(Duration::from_secs(10));
    conn.send(raw.as_bytes());
    let answer = conn.body();
    (conn.status, answer)
}

/// The usage an answer reported: a JSON body's, or the last SSE event's that has one.
fn usage_of(body: &str) -> (u64, u64) {
    let usage = match serde_json::from_str::<Value>(body) {
        Ok(json) => json["usage"].clone(),
        Err(_) => body
            .split("\n\n")
            .filter_map(sse_json)
            .filter(|event| event["usage"].is_object())
            .last()
            .map(|event| event["usage"].clone())
            .unwrap_or(Value::Null),
    };
    (
        usage["prompt_tokens"].as_u64().expect("prompt_tokens"),
        usage["completion_tokens"]
            .as_u64()
            .expect("completion_tokens"),
    )
}

fn chat(content: &str, max_tokens: u32, stream: bool) -> String {
    let mut body = json!({
        "model": "fake-model",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string()
}

/// Runs the known sequence; returns what each caller saw.
fn traffic(addr: SocketAddr, ci: &str, web: &str) -> [(&'static str, Seen); 3] {
    let mut seen = [
        ("ci", Seen::default()),
        ("web", Seen::default()),
        ("anonymous", Seen::default()),
    ];
    let mut send = |who: usize, method: &str, path: &str, token: Option<&str>, body: &str| {
        let (status, answer) = call(addr, method, path, token, body);
        let s = &mut seen[who].1;
        s.requests += 1;
        s.errors += u64::from(status >= 400);
        s.bytes_in += body.len() as u64;
        s.bytes_out += answer.len() as u64;
        if status == 200 && path.starts_with("/v1/") {
            let (prompt, completion) = usage_of(&answer);
            s.prompt_tokens += prompt;
            s.completion_tokens += completion;
        }
        status
    };
    let words = ["one", "one two", "one two three four five"];
    for (i, content) in words.iter().enumerate() {
        let body = chat(content, 3 + i as u32, false);
        assert_eq!(
            send(0, "POST", "/v1/chat/completions", Some(ci), &body),
            200
        );
    }
    let streamed = chat("a streamed question of seven words", 6, true);
    assert_eq!(
        send(0, "POST", "/v1/chat/completions", Some(ci), &streamed),
        200
    );
    let body = chat("web asks", 2, false);
    assert_eq!(
        send(1, "POST", "/v1/chat/completions", Some(web), &body),
        200
    );
    let streamed = chat("web streams too", 4, true);
    assert_eq!(
        send(1, "POST", "/v1/chat/completions", Some(web), &streamed),
        200
    );
    assert_eq!(send(1, "GET", "/status/500", Some(web), ""), 500);
    assert_eq!(send(1, "GET", "/status/404", Some(web), ""), 404);
    assert_eq!(send(2, "GET", "/v1/models", None, ""), 401);
    assert_eq!(send(2, "GET", "/v1/models", Some("not-a-token"), ""), 401);
    seen
}

fn admin(gw: &TestGateway, path: &str) -> (u16, Value) {
    let (status, _, body) = get(gw.addr("admin"), path);
    let json = serde_json::from_str(&body).unwrap_or_else(|_| panic!("not JSON: {body}"));
    (status, json)
}

/// Asserts the breakdown's total and callers are exactly what the test saw, and that the
/// hours add up to the total.
fn assert_breakdown(answer: &Value, seen: &[(&str, Seen)]) {
    assert_eq!(answer["endpoint"], "e1");
    let hours = answer["hours"].as_array().expect("hours");
    assert_eq!(hours.len(), 3, "{answer}");
    let total = &answer["total"];
    let sum = |key: &str| seen.iter().map(|(_, s)| field(s, key)).sum::<u64>();
    assert_eq!(total["requests"], sum("requests"), "{total}");
    assert_eq!(total["errors"], json!({"4xx": 3, "5xx": 1}), "{total}");
    assert_eq!(total["bytes_in"], sum("bytes_in"), "{total}");
    assert_eq!(total["bytes_out"], sum("bytes_out"), "{total}");
    assert_eq!(
        total["usage"],
        json!({
            "prompt_tokens": sum("prompt_tokens"),
            "completion_tokens": sum("completion_tokens"),
        })
    );
    assert!(total["p50_ms"].as_f64().is_some_and(|p| p > 0.0), "{total}");
    assert!(
        total["p95_ms"].as_f64() >= total["p50_ms"].as_f64(),
        "{total}"
    );
    let mut expected: Vec<Value> = seen
        .iter()
        .map(|(name, s)| {
            json!({
                "caller": name,
                "requests": s.requests,
                "errors": s.errors,
                "prompt_tokens": s.prompt_tokens,
                "completion_tokens": s.completion_tokens,
            })
        })
        .collect();
    // Most requests first, then by name.
    expected.sort_by(|a, b| {
        b["requests"]
            .as_u64()
            .cmp(&a["requests"].as_u64())
            .then_with(|| a["caller"].as_str().cmp(&b["caller"].as_str()))
    });
    assert_eq!(total["callers"], json!(expected), "{total}");
    for key in ["requests", "bytes_in", "bytes_out"] {
        let over_hours: u64 = hours.iter().map(|h| h[key].as_u64().unwrap()).sum();
        assert_eq!(json!(over_hours), total[key], "{key}");
    }
    let stamps: Vec<&str> = hours.iter().map(|h| h["hour"].as_str().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{stamps:?}");
    assert!(stamps.iter().all(|s| s.ends_with(":00:00Z")), "{stamps:?}");
}

fn field(seen: &Seen, key: &str) -> u64 {
    match key {
        "requests" => seen.requests,
        "errors" => seen.errors,
        "bytes_in" => seen.bytes_in,
        "bytes_out" => seen.bytes_out,
        "prompt_tokens" => seen.prompt_tokens,
        "completion_tokens" => seen.completion_tokens,
        _ => unreachable!("{key}"),
    }
}

/// The hourly breakdown matches the calls exactly, `portico_tokens_total` counts the same
/// usage, and everything is still there after a restart on the same state directory.
#[test]
fn hourly_breakdown_matches_calls_and_survives_a_restart() {
    let worker = TestWorker::start(&[]);
    let state = tempfile::tempdir().unwrap();
    let (ci, web) = (gateway::token::generate(), gateway::token::generate());
    let text = config(&worker, state.path(), &ci, &web);
    let mut gw = TestGateway::start(&text);
    let seen = traffic(gw.addr("public"), &ci, &web);
    assert!(seen[0].1.prompt_tokens > 0 && seen[0].1.completion_tokens > 0);

    // The last request's telemetry finishes as its body ends: poll until all are counted.
    let total_requests: u64 = seen.iter().map(|(_, s)| s.requests).sum();
    let answer = support::eventually("every request counted", Duration::from_secs(10), || {
        let (status, answer) = admin(&gw, "/admin/endpoints/e1/access/hourly?hours=3");
        assert_eq!(status, 200, "{answer}");
        (answer["total"]["requests"] == total_requests).then_some(answer)
    });
    assert_breakdown(&answer, &seen);

    let metrics = samples(&gw.metrics());
    let tokens = |caller: &str, kind: &str| {
        metrics
            .iter()
            .filter(|s| s.name == "portico_tokens_total")
            .filter(|s| s.labels.contains(&("caller".into(), caller.into())))
            .filter(|s| s.labels.contains(&("kind".into(), kind.into())))
            .map(|s| s.value as u64)
            .sum::<u64>()
    };
    assert_eq!(tokens("ci", "prompt"), seen[0].1.prompt_tokens);
    assert_eq!(tokens("ci", "completion"), seen[0].1.completion_tokens);
    assert_eq!(tokens("web", "completion"), seen[1].1.completion_tokens);

    // Graceful stop, then the same state directory.
    assert_eq!(gw.signal_and_wait("TERM", Duration::from_secs(20)), Some(0));
    drop(gw);
    let gw = TestGateway::start(&text);
    let (status, again) = admin(&gw, "/admin/endpoints/e1/access/hourly?hours=3");
    assert_eq!(status, 200, "{again}");
    assert_breakdown(&again, &seen);
    // The default range is 24 hours.
    let (_, default) = admin(&gw, "/admin/endpoints/e1/access/hourly");
    assert_eq!(default["hours"].as_array().map(Vec::len), Some(24));
    assert_eq!(default["total"]["requests"], total_requests);
}

/// Hours outside 1..=720 or not a number, and unknown query keys, are a 400
/// `invalid_query`; an unknown endpoint is a 404; an endpoint without traffic answers
/// zero-filled hours.
#[test]
fn bad_queries_and_unknown_endpoints() {
    let worker = TestWorker::start(&[]);
    let state = tempfile::tempdir().unwrap();
    let gw = TestGateway::start(&config(&worker, state.path(), "a", "b"));
    for query in [
        "hours=0",
        "hours=721",
        "hours=abc",
        "hours=-1",
        "hours=",
        "days=2",
    ] {
        let (status, answer) = admin(&gw, &format!("/admin/endpoints/e1/access/hourly?{query}"));
        assert_eq!(status, 400, "{query}: {answer}");
        assert_eq!(answer["error"]["code"], "invalid_query", "{query}");
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{query}");
        assert!(answer["error"]["message"].is_string(), "{query}");
    }
    let (status, answer) = admin(&gw, "/admin/endpoints/nope/access/hourly");
    assert_eq!(status, 404, "{answer}");
    assert_eq!(answer["error"]["code"], "endpoint_not_found");
    let (status, answer) = admin(&gw, "/admin/endpoints/e1/access/hourly?hours=720");
    assert_eq!(status, 200);
    let hours = answer["hours"].as_array().unwrap();
    assert_eq!(hours.len(), 720);
    assert!(
        hours
            .iter()
            .all(|h| h["requests"] == 0 && h["p50_ms"].is_null())
    );
    assert_eq!(answer["total"]["callers"], json!([]));
}

//! Serverless endpoints through the real binary: process workers (real `fakeworker`
//! processes) started on demand, requests held while they boot, scaling on concurrency,
//! rps and a scraped worker metric, scale to zero, crashes, operator orders, and no
//! orphaned processes — even when Portico itself is killed.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Http1, TestGateway, eventually, fakeworker_bin, get, http, metric, process_config};

const CHAT: &str = "/project/p1/endpoint/e1/v1/chat/completions";

/// A config with one process endpoint `e1`; `workers` and `scaling` are TOML lines added to
/// `[endpoint.workers]` and `[endpoint.scaling]`.
fn config(worker_args: &[&str], scaling: &str) -> String {
    let mut command = vec![
        fakeworker_bin().display().to_string(),
        "--port".into(),
        "{port}".into(),
    ];
    command.extend(worker_args.iter().map(|a| a.to_string()));
    process_config(
        &command,
        "grace_period_seconds = 5",
        "",
        &format!(
            "[endpoint.health]\ninterval_ms = 500\ntimeout_ms = 500\n\n[endpoint.scaling]\n{scaling}"
        ),
    )
}

fn admin_get(gw: &TestGateway, path: &str) -> Value {
    let (status, _, body) = get(gw.addr("admin"), path);
    assert_eq!(status, 200, "{path}: {body}");
    serde_json::from_str(&body).unwrap()
}

fn admin_post(gw: &TestGateway, path: &str, body: &str) -> (u16, Value) {
    let raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(gw.addr("admin"), &raw);
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn endpoint(gw: &TestGateway) -> Value {
    admin_get(gw, "/admin/endpoints/e1")
}

fn ready(gw: &TestGateway) -> u64 {
    endpoint(gw)["workers"]["ready"].as_u64().unwrap()
}

fn pids(state: &Value) -> Vec<u32> {
    state["workers"]["replicas"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["pid"].as_u64().map(|p| p as u32))
        .collect()
}

fn events(gw: &TestGateway) -> Vec<Value> {
    admin_get(gw, "/admin/endpoints/e1/events?limit=1000")["events"]
        .as_array()
        .unwrap()
        .clone()
}

fn count_events(gw: &TestGateway, kind: &str) -> usize {
    events(gw).iter().filter(|e| e["type"] == kind).count()
}

fn alive(pid: u32) -> bool {
    // A zombie has exited; only its parent's wait is missing.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|s| !s.trim_start().starts_with('Z'))
    })
}

fn chat(max_tokens: u32, stream: bool) -> String {
    support::post_json(CHAT, &support::chat_body(max_tokens, stream))
        .replace("Host: test\r\n", "Host: test\r\nConnection: close\r\n")
}

/// Sends `n` chat requests at once, each on its own connection; returns their statuses.
fn concurrent(
    addr: SocketAddr,
    n: usize,
    max_tokens: u32,
) -> Vec<thread::JoinHandle<(u16, String)>> {
    (0..n)
        .map(|_| {
            thread::spawn(move || {
                let (status, _, body) = http(addr, &chat(max_tokens, false));
                (status, body)
            })
        })
        .collect()
}

/// Twenty requests arrive at an endpoint at zero with a 2 s boot: all are held and then
/// served, only the workers the load needs start, and the cold start is measured.
#[test]
fn cold_start_holds_requests_until_ready() {
    let gw = TestGateway::start(&config(
        &["--boot-delay-ms", "2000"],
        "min_workers = 0\nmax_workers = 4\ntarget = 10",
    ));
    assert_eq!(ready(&gw), 0);
    let started = Instant::now();
    let answers: Vec<_> = concurrent(gw.addr("public"), 20, 4)
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for (status, body) in &answers {
        assert_eq!(*status, 200, "{body}");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "held through the boot"
    );
    let state = endpoint(&gw);
    // 20 in flight at target 10: two workers, not one per request.
    assert_eq!(state["workers"]["desired"], 2, "{state}");
    let starts = count_events(&gw, "replica_starting");
    assert_eq!(starts, 2, "{:#?}", events(&gw));
    assert!(count_events(&gw, "woke") >= 1);
    let metrics = gw.metrics();
    let cold = metric(
        &metrics,
        "portico_cold_start_seconds_count",
        &[("endpoint", "e1")],
    );
    assert_eq!(cold, Some(1.0), "one cold start recorded");
    let sum = metric(
        &metrics,
        "portico_cold_start_seconds_sum",
        &[("endpoint", "e1")],
    )
    .unwrap();
    assert!((2.0..20.0).contains(&sum), "cold start {sum} s");
    assert!(
        metric(
            &metrics,
            "portico_scale_events_total",
            &[("endpoint", "e1"), ("direction", "up")]
        )
        .unwrap()
            >= 1.0
    );
}

/// Over `max_pending` → 429 at once; a boot longer than `cold_start_timeout_seconds` → 503
/// with Retry-After; a client that leaves while held is dropped from the queue.
#[test]
fn hold_limits() {
    let gw = TestGateway::start(&config(
        &["--boot-delay-ms", "60000"],
        "min_workers = 0\nmax_workers = 1\nmax_pending = 3\ncold_start_timeout_seconds = 2",
    ));
    let addr = gw.addr("public");

    // A client that gives up: held, then gone.
    let mut leaver = Http1::connect(addr);
    leaver.write(chat(4, false).as_bytes()).unwrap();
    eventually("one held request", Duration::from_secs(5), || {
        (endpoint(&gw)["pending"] == 1).then_some(())
    });
    drop(leaver);
    eventually(
        "the departed client dropped",
        Duration::from_secs(5),
        || (endpoint(&gw)["pending"] == 0).then_some(()),
    );

    let held: Vec<_> = (0..3)
        .map(|_| thread::spawn(move || http(addr, &chat(4, false))))
        .collect();
    eventually("three held requests", Duration::from_secs(5), || {
        (endpoint(&gw)["pending"] == 3).then_some(())
    });
    // While held: one worker wanted, starting, not ready; the gauges say so.
    let metrics = gw.metrics();
    let gauge = |name, labels: &[(&str, &str)]| metric(&metrics, name, labels);
    assert_eq!(
        gauge("portico_pending_requests", &[("endpoint", "e1")]),
        Some(3.0)
    );
    assert_eq!(
        gauge("portico_desired_workers", &[("endpoint", "e1")]),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            "portico_workers",
            &[("endpoint", "e1"), ("state", "starting")]
        ),
        Some(1.0)
    );
    assert_eq!(
        gauge(
            "portico_workers",
            &[("endpoint", "e1"), ("state", "healthy")]
        ),
        Some(0.0)
    );
    let (status, headers, body) = http(addr, &chat(4, false));
    let json = support::assert_json_error(status, &headers, &body);
    assert_eq!(status, 429);
    assert_eq!(json["error"]["code"], "too_many_pending");
    assert!(headers.iter().any(|(k, _)| k == "retry-after"));

    for handle in held {
        let (status, headers, body) = handle.join().unwrap();
        let json = support::assert_json_error(status, &headers, &body);
        assert_eq!(status, 503);
        assert_eq!(json["error"]["code"], "no_worker_ready");
        assert!(headers.iter().any(|(k, v)| k == "retry-after" && v == "10"));
    }
    assert_eq!(endpoint(&gw)["pending"], 0);
    let metrics = gw.metrics();
    assert_eq!(
        metric(&metrics, "portico_pending_requests", &[("endpoint", "e1")]),
        Some(0.0)
    );
}

/// Eight slow streams at target 2 per worker ask for four workers; ten are still bounded
/// by `max_workers = 4`.
#[test]
fn scales_up_on_concurrency() {
    let gw = TestGateway::start(&config(
        &["--tokens-per-second", "20"],
        "min_workers = 0\nmax_workers = 4\ntarget = 2\nidle_timeout_seconds = 60",
    ));
    let streams = concurrent(gw.addr("public"), 10, 100);
    eventually("four ready workers", Duration::from_secs(20), || {
        (ready(&gw) == 4).then_some(())
    });
    let state = endpoint(&gw);
    assert_eq!(state["workers"]["desired"], 4, "{state}");
    assert_eq!(count_events(&gw, "replica_starting"), 4);
    for handle in streams {
        assert_eq!(handle.join().unwrap().0, 200);
    }
}

/// Steady request rate above the per-worker target scales up on `metric = "rps"`.
#[test]
fn scales_up_on_rps() {
    let gw = TestGateway::start(&config(
        &[],
        "min_workers = 1\nmax_workers = 3\nmetric = \"rps\"\ntarget = 5\nidle_timeout_seconds = 60",
    ));
    eventually("the minimum worker", Duration::from_secs(20), || {
        (ready(&gw) == 1).then_some(())
    });
    let addr = gw.addr("public");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut conn = Http1::connect(addr);
    while Instant::now() < deadline && ready(&gw) < 2 {
        // About 40 requests a second: 8× the target of one worker.
        for _ in 0..10 {
            let (status, _) = conn.get("/project/p1/endpoint/e1/v1/models");
            assert_eq!(status, 200);
            thread::sleep(Duration::from_millis(25));
        }
    }
    let state = endpoint(&gw);
    assert!(state["workers"]["ready"].as_u64().unwrap() >= 2, "{state}");
    assert!(
        events(&gw).iter().any(|e| e["type"] == "scaled_up"),
        "{:#?}",
        events(&gw)
    );
}

/// `metric = "custom"` on the vLLM gauge `vllm:num_requests_waiting`, scraped from the
/// workers: one worker running one request at a time with five waiting asks for more.
#[test]
fn scales_up_on_a_scraped_worker_metric() {
    let gw = TestGateway::start(&config(
        &["--max-running", "1", "--tokens-per-second", "10"],
        "min_workers = 1\nmax_workers = 3\nmetric = \"custom\"\n\
         custom_metric = \"vllm:num_requests_waiting\"\ntarget = 1\nidle_timeout_seconds = 60",
    ));
    eventually("the minimum worker", Duration::from_secs(20), || {
        (ready(&gw) == 1).then_some(())
    });
    let requests = concurrent(gw.addr("public"), 6, 10);
    eventually("three ready workers", Duration::from_secs(20), || {
        (ready(&gw) == 3).then_some(())
    });
    let scaled = events(&gw);
    let up = scaled.iter().find(|e| e["type"] == "scaled_up").unwrap();
    // Decided on the scraped gauge: the waiting requests, not the six in flight.
    let message = up["message"].as_str().unwrap();
    assert!(
        message.contains("(stable ") && !message.contains("stable 6.00"),
        "{up}"
    );
    for handle in requests {
        assert_eq!(handle.join().unwrap().0, 200);
    }
}

/// After the idle timeout (and not before the initial cooldown) the endpoint goes back to
/// zero, and its worker processes are gone.
#[test]
fn scales_to_zero_after_idle() {
    let gw = TestGateway::start(&config(
        &[],
        "min_workers = 0\nmax_workers = 2\nidle_timeout_seconds = 1\ninitial_cooldown_seconds = 4",
    ));
    let woke = Instant::now();
    let (status, _, body) = http(gw.addr("public"), &chat(4, false));
    assert_eq!(status, 200, "{body}");
    let state = endpoint(&gw);
    let workers = pids(&state);
    assert_eq!(workers.len(), 1, "{state}");
    assert!(workers.iter().all(|p| alive(*p)));
    eventually("scaled to zero", Duration::from_secs(20), || {
        (endpoint(&gw)["workers"]["desired"] == 0).then_some(())
    });
    assert!(
        woke.elapsed() >= Duration::from_secs(4),
        "the initial cooldown held the worker"
    );
    eventually("worker processes gone", Duration::from_secs(15), || {
        workers.iter().all(|p| !alive(*p)).then_some(())
    });
    let state = endpoint(&gw);
    assert_eq!(
        state["workers"]["replicas"].as_array().unwrap().len(),
        0,
        "{state}"
    );
    assert!(count_events(&gw, "scaled_down") >= 1);
    assert!(count_events(&gw, "replica_draining") >= 1);
    assert!(count_events(&gw, "replica_stopped") >= 1);
    let metrics = gw.metrics();
    assert_eq!(
        metric(&metrics, "portico_desired_workers", &[("endpoint", "e1")]),
        Some(0.0)
    );
    assert!(
        metric(
            &metrics,
            "portico_scale_events_total",
            &[("endpoint", "e1"), ("direction", "down")]
        )
        .unwrap()
            >= 1.0
    );
}

/// A worker killed under load is replaced; its in-flight requests fail with 502 and new ones
/// succeed; the crash is an event.
#[test]
fn crashed_worker_is_replaced() {
    let gw = TestGateway::start(&config(
        &["--tokens-per-second", "20"],
        "min_workers = 1\nmax_workers = 1",
    ));
    eventually("one ready worker", Duration::from_secs(20), || {
        (ready(&gw) == 1).then_some(())
    });
    let victim = pids(&endpoint(&gw))[0];
    let slow = concurrent(gw.addr("public"), 3, 400);
    eventually(
        "requests in flight on the worker",
        Duration::from_secs(5),
        || (endpoint(&gw)["inflight"].as_u64().unwrap() == 3).then_some(()),
    );
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &victim.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    for handle in slow {
        let (status, body) = handle.join().unwrap();
        // Headers were sent before the crash: the body is cut, or the answer is a 502.
        assert!(status == 502 || status == 200, "{status}: {body}");
    }
    eventually("a replacement worker", Duration::from_secs(20), || {
        let state = endpoint(&gw);
        let now = pids(&state);
        (state["workers"]["ready"] == 1 && !now.is_empty() && !now.contains(&victim)).then_some(())
    });
    let (status, _, body) = http(gw.addr("public"), &chat(4, false));
    assert_eq!(status, 200, "{body}");
    assert!(count_events(&gw, "replica_crashed") >= 1);
    let restarts = endpoint(&gw)["workers"]["replicas"][0]["restarts"]
        .as_u64()
        .unwrap();
    assert!(restarts >= 1);
}

/// A worker crash before any response byte gives the client a JSON 502.
#[test]
fn request_on_a_crashing_worker_gets_502() {
    let gw = TestGateway::start(&config(
        &["--crash-after", "0"],
        "min_workers = 1\nmax_workers = 1",
    ));
    eventually("one ready worker", Duration::from_secs(20), || {
        (ready(&gw) == 1).then_some(())
    });
    let (status, headers, body) = http(gw.addr("public"), &chat(4, false));
    let json = support::assert_json_error(status, &headers, &body);
    assert_eq!(status, 502);
    assert_eq!(json["error"]["code"], "worker_unavailable");
}

/// Scale pins the count under zero load, autoscale releases it, stop refuses traffic with
/// 503 and stops the workers, start serves again. Bad orders get JSON errors.
#[test]
fn operator_orders() {
    let gw = TestGateway::start(&config(
        &[],
        "min_workers = 0\nmax_workers = 3\nidle_timeout_seconds = 1\ninitial_cooldown_seconds = 1",
    ));
    let (status, state) = admin_post(&gw, "/admin/endpoints/e1/scale", r#"{"workers":3}"#);
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["mode"], "manual");
    eventually("three pinned workers", Duration::from_secs(20), || {
        (ready(&gw) == 3).then_some(())
    });
    // Idle for longer than the idle timeout and the cooldown together: still pinned.
    eventually("replicas up for 3 s", Duration::from_secs(20), || {
        let state = endpoint(&gw);
        let replicas = state["workers"]["replicas"].as_array().unwrap().clone();
        replicas
            .iter()
            .all(|r| r["uptime_seconds"].as_f64().unwrap() >= 3.0)
            .then_some(())
    });
    let state = endpoint(&gw);
    assert_eq!(state["workers"]["ready"], 3, "{state}");
    assert_eq!(state["reason"], "pinned by hand", "{state}");
    assert_eq!(count_events(&gw, "scaled_down"), 0);

    let (status, state) = admin_post(&gw, "/admin/endpoints/e1/autoscale", "");
    assert_eq!(status, 200);
    assert_eq!(state["mode"], "auto");
    eventually("autoscaled back to zero", Duration::from_secs(20), || {
        (endpoint(&gw)["workers"]["replicas"]
            .as_array()
            .unwrap()
            .is_empty())
        .then_some(())
    });

    let (status, state) = admin_post(&gw, "/admin/endpoints/e1/stop", "");
    assert_eq!(status, 200);
    assert_eq!(state["mode"], "stopped");
    let (status, headers, body) = http(gw.addr("public"), &chat(4, false));
    let json = support::assert_json_error(status, &headers, &body);
    assert_eq!(status, 503);
    assert_eq!(json["error"]["code"], "endpoint_stopped");
    let (status, json) = admin_post(&gw, "/admin/endpoints/e1/scale", r#"{"workers":1}"#);
    assert_eq!(
        status, 409,
        "a stopped endpoint is started, not scaled: {json}"
    );
    assert_eq!(json["error"]["code"], "endpoint_stopped");

    let (status, _) = admin_post(&gw, "/admin/endpoints/e1/start", "");
    assert_eq!(status, 200);
    let (status, _, body) = http(gw.addr("public"), &chat(4, false));
    assert_eq!(status, 200, "{body}");

    for (path, body, want, code) in [
        (
            "/admin/endpoints/e1/scale",
            r#"{"workers":9}"#,
            400,
            "workers_out_of_range",
        ),
        (
            "/admin/endpoints/e1/scale",
            r#"{"workers":-1}"#,
            400,
            "invalid_body",
        ),
        ("/admin/endpoints/e1/scale", "not json", 400, "invalid_body"),
        (
            "/admin/endpoints/nope/scale",
            r#"{"workers":1}"#,
            404,
            "endpoint_not_found",
        ),
        ("/admin/endpoints/nope/stop", "", 404, "endpoint_not_found"),
    ] {
        let (status, json) = admin_post(&gw, path, body);
        assert_eq!(status, want, "{path} {body}: {json}");
        assert_eq!(json["error"]["code"], code, "{json}");
    }
    let (status, headers, body) = get(gw.addr("admin"), "/admin/endpoints/e1/events?limit=many");
    let json = support::assert_json_error(status, &headers, &body);
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
    let newest = admin_get(&gw, "/admin/endpoints/e1/events?limit=1")["events"].clone();
    assert_eq!(newest.as_array().unwrap().len(), 1);
    let seq = newest[0]["seq"].as_u64().unwrap();
    let after = admin_get(&gw, &format!("/admin/endpoints/e1/events?since={seq}"));
    assert!(
        after["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["seq"].as_u64().unwrap() > seq)
    );
    let list = admin_get(&gw, "/admin/endpoints");
    assert_eq!(list["endpoints"][0]["id"], "e1");
    assert_eq!(list["endpoints"][0]["kind"], "process");

    let kinds: Vec<String> = events(&gw)
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    for kind in [
        "created",
        "pinned",
        "autoscaled",
        "stopped",
        "started",
        "woke",
        "replica_ready",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "no {kind} event in {kinds:?}"
        );
    }
}

/// A streaming request held through a long boot is answered at once and kept warm with
/// `: waking` comments, then gets the worker's events.
#[test]
fn held_stream_gets_waking_keepalives() {
    let gw = TestGateway::start(&config(
        &["--boot-delay-ms", "3500"],
        "min_workers = 0\nmax_workers = 1\nwaking_keepalive_seconds = 1",
    ));
    let mut client = Http1::connect(gw.addr("public"));
    client.set_timeout(Duration::from_secs(20));
    let asked = Instant::now();
    client.send(chat(5, true).as_bytes());
    assert_eq!(client.status, 200);
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "answered before the worker was ready"
    );
    let events = client.events();
    let waking = events
        .iter()
        .filter(|(e, _)| e.trim() == ": waking")
        .count();
    assert!(waking >= 2, "{events:?}");
    let chunks: Vec<_> = events
        .iter()
        .filter_map(|(e, _)| support::sse_json(e))
        .collect();
    assert!(chunks.len() >= 5, "{events:?}");
    assert!(support::is_done(&events.last().unwrap().0));
}

/// A held stream whose endpoint never wakes in time ends with an OpenAI-shaped error event.
#[test]
fn held_stream_times_out_with_an_error_event() {
    let gw = TestGateway::start(&config(
        &["--boot-delay-ms", "60000"],
        "min_workers = 0\nmax_workers = 1\nwaking_keepalive_seconds = 1\ncold_start_timeout_seconds = 3",
    ));
    let mut client = Http1::connect(gw.addr("public"));
    client.set_timeout(Duration::from_secs(20));
    client.send(chat(5, true).as_bytes());
    assert_eq!(client.status, 200);
    let events = client.events();
    let last = support::sse_json(&events.last().unwrap().0).unwrap();
    assert_eq!(last["error"]["code"], "no_worker_ready", "{events:?}");
}

/// SIGKILL of Portico leaves no worker process behind.
#[test]
fn no_orphans_after_portico_is_killed() {
    if !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("skipped: util-linux setpriv is not installed");
        return;
    }
    let mut gw = TestGateway::start(&config(&[], "min_workers = 2\nmax_workers = 2"));
    eventually("two ready workers", Duration::from_secs(20), || {
        (ready(&gw) == 2).then_some(())
    });
    let workers = pids(&endpoint(&gw));
    assert_eq!(workers.len(), 2);
    gw.signal_and_wait("KILL", Duration::from_secs(5));
    eventually(
        "workers gone with their parent",
        Duration::from_secs(10),
        || workers.iter().all(|p| !alive(*p)).then_some(()),
    );
}

/// SIGTERM stops the workers before Portico exits.
#[test]
fn no_orphans_after_shutdown() {
    let mut gw = TestGateway::start(&config(&[], "min_workers = 2\nmax_workers = 2"));
    eventually("two ready workers", Duration::from_secs(20), || {
        (ready(&gw) == 2).then_some(())
    });
    let workers = pids(&endpoint(&gw));
    assert_eq!(gw.signal_and_wait("TERM", Duration::from_secs(20)), Some(0));
    assert!(
        workers.iter().all(|p| !alive(*p)),
        "workers outlived portico"
    );
}

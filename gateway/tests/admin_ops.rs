//! Operating a running Portico through the admin API, with the real binary and real
//! workers: hot reload under load (tokens, security groups, scaling, endpoints added,
//! replaced and removed; a broken file changes nothing), rolling restarts under load, and
//! scaling settings changed while running.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{TestGateway, TestWorker, eventually, fakeworker_bin, http};

const ADMIN_TOKEN: &str = "admin-secret-for-tests";
const TOKEN_A: &str = "token-a-for-tests";
const TOKEN_B: &str = "token-b-for-tests";
const E1: &str = "/project/p/endpoint/e1";

/// An admin request with the admin token; `(status, JSON body)`.
fn admin(gw: &TestGateway, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    admin_as(gw, method, path, body, Some(ADMIN_TOKEN))
}

fn admin_as(
    gw: &TestGateway,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\n{auth}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, text) = http(gw.addr("admin"), &request);
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A streamed chat completion through the public listener: `Ok` when it ends with
/// `[DONE]` after a 200, else what went wrong.
fn stream_chat(gw_addr: std::net::SocketAddr, path: &str, token: &str) -> Result<(), String> {
    let body =
        r#"{"model":"m","stream":true,"max_tokens":4,"messages":[{"role":"user","content":"hi"}]}"#;
    let request = format!(
        "POST {path}/v1/chat/completions HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, _, text) = http(gw_addr, &request);
    if status == 200 && text.contains("data: [DONE]") {
        Ok(())
    } else {
        Err(format!(
            "{status}: {}",
            text.chars().take(300).collect::<String>()
        ))
    }
}

/// Sends `rate` streamed requests per second for `duration` from 16 threads, each on a
/// schedule (open loop), and returns the failures.
fn load(
    addr: std::net::SocketAddr,
    path: &'static str,
    rate: u32,
    duration: Duration,
) -> std::thread::JoinHandle<(usize, Vec<String>)> {
    std::thread::spawn(move || {
        let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
        let next = Arc::new(AtomicUsize::new(0));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let start = Instant::now();
        let threads: Vec<_> = (0..16)
            .map(|_| {
                let (next, failures) = (Arc::clone(&next), Arc::clone(&failures));
                std::thread::spawn(move || {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= total {
                            return;
                        }
                        let due = start + Duration::from_secs_f64(i as f64 / f64::from(rate));
                        // Pacing of the open-loop schedule, not a wait for a condition.
                        std::thread::sleep(due.saturating_duration_since(Instant::now()));
                        if let Err(err) = stream_chat(addr, path, TOKEN_A) {
                            failures.lock().unwrap().push(format!("request {i}: {err}"));
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("load thread");
        }
        let failures = std::mem::take(&mut *failures.lock().unwrap());
        (total, failures)
    })
}

/// The config of the reload test in one of its variants: token B, the security group's
/// sources and the scaling settings change with `variant`.
fn reload_config(variant: usize) -> String {
    let tokens = if variant.is_multiple_of(2) {
        format!(
            "{{ name = \"a\", sha256 = \"{}\" }}, {{ name = \"b\", sha256 = \"{}\" }}",
            gateway::token::sha256_hex(TOKEN_A),
            gateway::token::sha256_hex(TOKEN_B)
        )
    } else {
        format!(
            "{{ name = \"a\", sha256 = \"{}\" }}",
            gateway::token::sha256_hex(TOKEN_A)
        )
    };
    let sources = match variant % 3 {
        0 => r#"{ source = "127.0.0.0/8" }"#,
        1 => r#"{ source = "127.0.0.1/32" }, { source = "10.0.0.0/8" }"#,
        _ => r#"{ protocol = "tcp", port_range = [1, 65535], source = "127.0.0.1" }"#,
    };
    let worker = serde_json::to_string(&[
        fakeworker_bin().display().to_string(),
        "--port".into(),
        "{port}".into(),
        "--tokens-per-second".into(),
        "200".into(),
    ])
    .unwrap();
    format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
config_watch_seconds = 0  # only the API and SIGHUP reload here
admin_token_sha256 = "{admin}"
grace_period_seconds = 5

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p"
tokens = [{tokens}]

[[security_group]]
id = "local"
inbound = [{sources}]

[[endpoint]]
id = "e1"
project = "p"
security_groups = ["local"]

[endpoint.workers]
kind = "process"
command = {worker}
startup_timeout_seconds = 30

[endpoint.scaling]
min_workers = 1
max_workers = {max}
target = {target}
"#,
        admin = gateway::token::sha256_hex(ADMIN_TOKEN),
        max = 1 + variant % 3,
        target = 5 + variant % 4,
    )
}

fn ready_workers(gw: &TestGateway, id: &str) -> u64 {
    let (_, state) = admin(gw, "GET", &format!("/admin/endpoints/{id}"), None);
    state["workers"]["ready"].as_u64().unwrap_or(0)
}

fn event_types(gw: &TestGateway, id: &str) -> Vec<(String, String)> {
    let (_, events) = admin(
        gw,
        "GET",
        &format!("/admin/endpoints/{id}/events?limit=1000"),
        None,
    );
    events["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// 200 streamed requests a second for 15 s while the config is reloaded 20 times (through
/// the admin API and SIGHUP), changing tokens, security groups and scaling: not one request
/// fails. A broken file in between is refused with every problem and changes nothing.
#[test]
fn reload_under_load_drops_nothing() {
    let gw = TestGateway::start(&reload_config(0));
    let path = gw.dir().join("config.toml");
    eventually("a ready worker", Duration::from_secs(30), || {
        (ready_workers(&gw, "e1") >= 1).then_some(())
    });
    let public = gw.addr("public");
    let traffic = load(public, E1, 200, Duration::from_secs(15));

    let started = Instant::now();
    for variant in 1..=20 {
        std::fs::write(&path, reload_config(variant)).unwrap();
        if variant % 5 == 0 {
            gw.signal("HUP");
            eventually("the SIGHUP reload", Duration::from_secs(10), || {
                let (_, config) = admin(&gw, "GET", "/admin/config", None);
                let max = &config["config"]["endpoint"][0]["scaling"]["max_workers"];
                (max.as_u64() == Some(1 + variant as u64 % 3)
                    && config["config"]["project"][0]["tokens"]
                        .as_array()
                        .map(Vec::len)
                        == Some(if variant.is_multiple_of(2) { 2 } else { 1 }))
                .then_some(())
            });
        } else {
            let (status, report) = admin(&gw, "POST", "/admin/reload", None);
            assert_eq!(status, 200, "{report}");
            assert_eq!(report["endpoints"]["kept"], serde_json::json!(["e1"]));
            assert_eq!(report["needs_restart"], serde_json::json!([]), "{report}");
        }
        if variant == 10 {
            // A broken file: refused whole, every problem named, the running one kept.
            let broken =
                reload_config(variant).replace("min_workers = 1", "min_workers = 9\nbogus_key = 1");
            std::fs::write(&path, broken).unwrap();
            let (status, refused) = admin(&gw, "POST", "/admin/reload", None);
            assert_eq!(status, 400, "{refused}");
            assert_eq!(refused["error"]["code"], "invalid_config");
            let problems = refused["error"]["problems"].to_string();
            assert!(problems.contains("bogus_key"), "{problems}");
            assert_eq!(stream_chat(public, E1, TOKEN_A), Ok(()));
        }
        // Spread the reloads over the load.
        let due = started + Duration::from_millis(600) * variant as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
    }
    // The last variant (20) has token B and max_workers 3.
    assert_eq!(stream_chat(public, E1, TOKEN_B), Ok(()));
    let (_, state) = admin(&gw, "GET", "/admin/endpoints/e1", None);
    assert_eq!(state["scaling"]["max_workers"], 3, "{state}");
    assert_eq!(state["scaling"]["target"], 5.0, "{state}");

    let (sent, failures) = traffic.join().expect("load");
    assert_eq!(sent, 3000);
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    // One more: token B is refused once the file drops it.
    std::fs::write(&path, reload_config(21)).unwrap();
    assert_eq!(admin(&gw, "POST", "/admin/reload", None).0, 200);
    let refused = stream_chat(public, E1, TOKEN_B).expect_err("token B is gone");
    assert!(refused.starts_with("401"), "{refused}");

    let events = event_types(&gw, "e1");
    let reloads = events
        .iter()
        .filter(|(t, _)| t == "config_reloaded")
        .count();
    assert_eq!(reloads, 21, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "updated" && m.contains("max_workers")),
        "{events:#?}"
    );
}

/// A static-worker config with endpoints `ids`; `timeout` changes e1's first-byte timeout.
fn static_config(worker: &TestWorker, ids: &[&str], timeout: u64) -> String {
    let mut text = format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
admin_token_sha256 = "{admin}"
grace_period_seconds = 2

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p"
tokens = [{{ name = "a", sha256 = "{a}" }}]
"#,
        admin = gateway::token::sha256_hex(ADMIN_TOKEN),
        a = gateway::token::sha256_hex(TOKEN_A),
    );
    for id in ids {
        let timeouts = if *id == "e1" {
            format!("\n[endpoint.timeouts]\nfirst_byte_seconds = {timeout}\n")
        } else {
            String::new()
        };
        text.push_str(&format!(
            "\n[[endpoint]]\nid = \"{id}\"\nproject = \"p\"\n\n[endpoint.workers]\n\
             kind = \"static\"\nurls = [\"{}\"]\n{timeouts}",
            worker.url()
        ));
    }
    text
}

/// With `config_watch_seconds`, a change to the file is reloaded without a signal: an added
/// endpoint serves, a comment changes nothing, a broken file is refused once and the
/// running config keeps serving, a removed endpoint is gone, and a file put back right after
/// an explicit reload is reloaded. Each applied change is one `config_reloaded` event, an
/// explicit reload included (the watcher does not repeat it).
#[test]
fn a_changed_config_file_is_reloaded_without_a_signal() {
    let worker = TestWorker::start(&[]);
    let watched = |ids: &[&str]| {
        static_config(&worker, ids, 300).replace(
            "grace_period_seconds = 2",
            "grace_period_seconds = 2\nconfig_watch_seconds = 1",
        )
    };
    let gw = TestGateway::start(&watched(&["e1"]));
    let path = gw.dir().join("config.toml");
    let public = gw.addr("public");
    let e2 = "/project/p/endpoint/e2";
    let logged = |gw: &TestGateway, what: &str| {
        gw.stderr()
            .iter()
            .filter(|line| line.contains(what))
            .count()
    };
    let reloads = |gw: &TestGateway| {
        event_types(gw, "e1")
            .iter()
            .filter(|(t, _)| t == "config_reloaded")
            .count()
    };

    std::fs::write(&path, watched(&["e1", "e2"])).unwrap();
    eventually("e2, added to the file", Duration::from_secs(15), || {
        stream_chat(public, e2, TOKEN_A).ok()
    });
    assert_eq!(reloads(&gw), 1);

    std::fs::write(&path, watched(&["e1", "e2"]) + "\n# only a comment\n").unwrap();
    eventually("the comment seen", Duration::from_secs(15), || {
        (logged(&gw, "nothing to reload") >= 1).then_some(())
    });
    assert_eq!(reloads(&gw), 1, "a comment reloaded the config");

    std::fs::write(&path, watched(&["e1"]) + "bogus_key = 1\n").unwrap();
    eventually("the broken file refused", Duration::from_secs(15), || {
        (logged(&gw, "reload failed") == 1).then_some(())
    });
    assert_eq!(stream_chat(public, e2, TOKEN_A), Ok(()));
    let refused = ["trigger=\"file_changed\"", "outcome=\"refused\""];
    assert_eq!(
        metric(&gw, "portico_config_reloads_total", &refused),
        Some(1.0)
    );
    assert_eq!(
        metric(&gw, "portico_config_last_reload_successful", &[]),
        Some(0.0)
    );

    std::fs::write(&path, watched(&["e1"])).unwrap();
    eventually("e2, removed from the file", Duration::from_secs(15), || {
        stream_chat(public, e2, TOKEN_A)
            .is_err_and(|err| err.starts_with("404"))
            .then_some(())
    });
    assert_eq!(
        logged(&gw, "reload failed"),
        1,
        "the broken file was tried again"
    );

    // An explicit reload of a change, then the file put back at once: the watcher judges
    // the file against what the reload applied, so it reloads the text it had seen before.
    let e3 = "/project/p/endpoint/e3";
    std::fs::write(&path, watched(&["e1", "e3"])).unwrap();
    let (status, report) = admin(&gw, "POST", "/admin/reload", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(stream_chat(public, e3, TOKEN_A), Ok(()));
    std::fs::write(&path, watched(&["e1"])).unwrap();
    eventually(
        "e3, gone with the file put back",
        Duration::from_secs(15),
        || {
            stream_chat(public, e3, TOKEN_A)
                .is_err_and(|err| err.starts_with("404"))
                .then_some(())
        },
    );
    // Then a comment: each change was applied once.
    std::fs::write(&path, watched(&["e1"]) + "\n# another comment\n").unwrap();
    eventually("the second comment seen", Duration::from_secs(15), || {
        (logged(&gw, "nothing to reload") >= 2).then_some(())
    });
    assert_eq!(reloads(&gw), 4, "{:#?}", event_types(&gw, "e1"));
    let applied = |trigger: &str| {
        let trigger = format!("trigger=\"{trigger}\"");
        metric(
            &gw,
            "portico_config_reloads_total",
            &[&trigger, "outcome=\"applied\""],
        )
    };
    assert_eq!(applied("file_changed"), Some(3.0));
    assert_eq!(applied("admin_api"), Some(1.0));
    assert_eq!(
        metric(&gw, "portico_config_last_reload_successful", &[]),
        Some(1.0)
    );
}

/// The value of `name` in the admin listener's `/metrics` on the line carrying every one of
/// `labels` (`key="value"`); `None` when there is none.
fn metric(gw: &TestGateway, name: &str, labels: &[&str]) -> Option<f64> {
    let request = format!(
        "GET /metrics HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    let (status, _, text) = http(gw.addr("admin"), &request);
    assert_eq!(status, 200, "{text}");
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

/// Endpoints added by a reload serve at once, changed ones are replaced and keep serving,
/// removed ones are gone (404); the config in force is shown with secrets redacted.
#[test]
fn reload_adds_replaces_and_removes_endpoints() {
    let worker = TestWorker::start(&[]);
    let gw = TestGateway::start(&static_config(&worker, &["e1"], 300));
    let path = gw.dir().join("config.toml");
    let public = gw.addr("public");
    let e2 = "/project/p/endpoint/e2";
    assert_eq!(stream_chat(public, E1, TOKEN_A), Ok(()));
    assert!(
        stream_chat(public, e2, TOKEN_A)
            .unwrap_err()
            .starts_with("404")
    );

    // With e2 comes an alert rule watching it.
    let rule = "\n[[alert]]\nname = \"e2-down\"\nendpoint = \"e2\"\nmetric = \"ready_workers\"\n\
                operator = \"<\"\nthreshold = 1\n";
    let with_e2 = static_config(&worker, &["e1", "e2"], 300) + rule;
    std::fs::write(&path, with_e2).unwrap();
    let (status, report) = admin(&gw, "POST", "/admin/reload", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["endpoints"]["added"], serde_json::json!(["e2"]));
    assert_eq!(report["endpoints"]["kept"], serde_json::json!(["e1"]));
    assert_eq!(stream_chat(public, e2, TOKEN_A), Ok(()));
    let (_, list) = admin(&gw, "GET", "/admin/endpoints", None);
    let ids: Vec<&str> = list["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["id"].as_str())
        .collect();
    assert_eq!(ids, ["e1", "e2"]);
    let alerts = |gw: &TestGateway| {
        let (_, answer) = admin(gw, "GET", "/admin/alerts", None);
        answer["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|a| {
                format!(
                    "{}@{}",
                    a["name"].as_str().unwrap_or(""),
                    a["endpoint"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
    };
    // Rule × endpoint pairs appear at the next evaluation (every 5 s by default).
    eventually("the reloaded alert rule", Duration::from_secs(15), || {
        (alerts(&gw) == ["e2-down@e2"]).then_some(())
    });

    std::fs::write(&path, static_config(&worker, &["e1"], 120)).unwrap();
    let (status, report) = admin(&gw, "POST", "/admin/reload", None);
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["endpoints"]["replaced"], serde_json::json!(["e1"]));
    assert_eq!(report["endpoints"]["removed"], serde_json::json!(["e2"]));
    assert_eq!(stream_chat(public, E1, TOKEN_A), Ok(()));
    assert!(
        stream_chat(public, e2, TOKEN_A)
            .unwrap_err()
            .starts_with("404")
    );
    assert_eq!(admin(&gw, "GET", "/admin/endpoints/e2", None).0, 404);
    // A removed rule's pairs leave at the next evaluation.
    eventually(
        "the alert rule to leave with the file",
        Duration::from_secs(15),
        || alerts(&gw).is_empty().then_some(()),
    );
    // The replacement continues the history of the endpoint it replaced.
    let events = eventually(
        "the replacement's created event",
        Duration::from_secs(10),
        || {
            let events = event_types(&gw, "e1");
            let created = events.iter().filter(|(t, _)| t == "created").count();
            (created == 2).then_some(events)
        },
    );
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "config_reloaded" && m.contains("replaced e1")),
        "{events:#?}"
    );

    let (status, shown) = admin(&gw, "GET", "/admin/config", None);
    assert_eq!(status, 200);
    let config = &shown["config"];
    assert_eq!(config["server"]["admin_token_sha256"], "<redacted>");
    assert_eq!(config["project"][0]["tokens"][0]["sha256"], "<redacted>");
    assert_eq!(config["project"][0]["tokens"][0]["name"], "a");
    assert_eq!(config["endpoint"][0]["timeouts"]["first_byte_seconds"], 120);
    assert!(
        !shown
            .to_string()
            .contains(&gateway::token::sha256_hex(TOKEN_A))
    );

    // Without the admin token: 401, for reload and config alike.
    for (method, path) in [("POST", "/admin/reload"), ("GET", "/admin/config")] {
        let (status, body) = admin_as(&gw, method, path, None, None);
        assert_eq!(status, 401, "{method} {path}: {body}");
    }
    // A file that cannot be read: 400, nothing changes.
    std::fs::remove_file(&path).unwrap();
    let (status, refused) = admin(&gw, "POST", "/admin/reload", None);
    assert_eq!(status, 400, "{refused}");
    assert_eq!(stream_chat(public, E1, TOKEN_A), Ok(()));
}

/// A process endpoint pinned to `workers`.
fn pinned_config(workers: u32) -> String {
    reload_config(0).replace(
        "min_workers = 1\nmax_workers = 1",
        &format!("min_workers = {workers}\nmax_workers = {workers}"),
    )
}

fn replica_pids(gw: &TestGateway) -> Vec<u64> {
    let (_, state) = admin(gw, "GET", "/admin/endpoints/e1", None);
    state["workers"]["replicas"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|r| r["state"] == "ready")
        .filter_map(|r| r["pid"].as_u64())
        .collect()
}

/// A rolling restart under 100 streamed requests a second: each replica is replaced by a
/// fresh one that is ready before the old one drains, and not one request fails.
#[test]
fn rolling_restart_under_load_drops_nothing() {
    let gw = TestGateway::start(&pinned_config(2));
    eventually("two ready workers", Duration::from_secs(30), || {
        (ready_workers(&gw, "e1") == 2).then_some(())
    });
    let old = replica_pids(&gw);
    assert_eq!(old.len(), 2);
    let traffic = load(gw.addr("public"), E1, 100, Duration::from_secs(8));
    std::thread::sleep(Duration::from_secs(1));

    let (status, state) = admin(&gw, "POST", "/admin/endpoints/e1/restart", None);
    assert_eq!(status, 202, "{state}");
    assert_eq!(state["restarting"], true);
    let (status, busy) = admin(&gw, "POST", "/admin/endpoints/e1/restart", None);
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "restart_in_progress");
    eventually("the restart to finish", Duration::from_secs(60), || {
        event_types(&gw, "e1")
            .iter()
            .any(|(t, _)| t == "restarted")
            .then_some(())
    });
    let (sent, failures) = traffic.join().expect("load");
    assert!(
        failures.is_empty(),
        "{} of {sent} failed: {:#?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    let events = event_types(&gw, "e1");
    let replaced = events
        .iter()
        .filter(|(t, _)| t == "replica_restarted")
        .count();
    assert_eq!(replaced, 2, "{events:#?}");
    assert!(
        events
            .iter()
            .any(|(t, m)| t == "restarted" && m.contains("2 replicas replaced")),
        "{events:#?}"
    );
    let new = eventually("two fresh workers", Duration::from_secs(30), || {
        let pids = replica_pids(&gw);
        (pids.len() == 2).then_some(pids)
    });
    assert!(
        new.iter().all(|pid| !old.contains(pid)),
        "{old:?} → {new:?}"
    );
    let (_, state) = admin(&gw, "GET", "/admin/endpoints/e1", None);
    assert_eq!(state["restarting"], false);
}

/// The restart order's failure paths: unknown endpoint, static workers, stopped, no token.
#[test]
fn restart_and_scaling_orders_refused() {
    let worker = TestWorker::start(&[]);
    let gw = TestGateway::start(&static_config(&worker, &["e1"], 300));
    for (method, path, body) in [
        ("POST", "/admin/endpoints/e1/restart", None),
        (
            "PATCH",
            "/admin/endpoints/e1/scaling",
            Some(r#"{"max_workers":2}"#),
        ),
    ] {
        let (status, answer) = admin(&gw, method, path, body);
        assert_eq!(status, 409, "{answer}");
        assert_eq!(answer["error"]["code"], "fixed_workers");
        let unknown = path.replace("/e1/", "/nope/");
        let (status, answer) = admin(&gw, method, &unknown, body);
        assert_eq!(status, 404, "{answer}");
        assert_eq!(answer["error"]["code"], "endpoint_not_found");
        let (status, _) = admin_as(&gw, method, path, body, Some("wrong"));
        assert_eq!(status, 401);
    }
}

/// `PATCH …/scaling` applies valid settings at once and records what changed; invalid
/// ones are refused with every problem and change nothing.
#[test]
fn scaling_changes_while_running() {
    let gw = TestGateway::start(&pinned_config(1));
    let path = "/admin/endpoints/e1/scaling";
    let (status, state) = admin(
        &gw,
        "PATCH",
        path,
        Some(r#"{"max_workers": 3, "target": 2.5, "idle_timeout_seconds": 30}"#),
    );
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["scaling"]["max_workers"], 3);
    assert_eq!(state["scaling"]["target"], 2.5);
    assert_eq!(state["scaling"]["idle_timeout_seconds"], 30);
    let events = event_types(&gw, "e1");
    assert!(
        events.iter().any(|(t, m)| t == "updated"
            && m.contains("max_workers 1→3")
            && m.contains("target 5→2.5")),
        "{events:#?}"
    );
    // The scale order now accepts up to the new maximum.
    let (status, state) = admin(
        &gw,
        "POST",
        "/admin/endpoints/e1/scale",
        Some(r#"{"workers":3}"#),
    );
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["workers"]["desired"], 3);

    for (body, code, named) in [
        (
            r#"{"min_workers": 5, "max_workers": 2}"#,
            "invalid_scaling",
            "scaling.max_workers",
        ),
        (r#"{"cooldown": 5}"#, "invalid_scaling", "scaling.cooldown"),
        (r#"{"target": "high"}"#, "invalid_scaling", "scaling.target"),
        (
            r#"{"metric": "custom"}"#,
            "invalid_scaling",
            "scaling.custom_metric",
        ),
        (r#"[1]"#, "invalid_body", ""),
        (r#"{}"#, "invalid_body", ""),
        (r#"not json"#, "invalid_body", ""),
    ] {
        let (status, answer) = admin(&gw, "PATCH", path, Some(body));
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}: {answer}");
        assert!(answer.to_string().contains(named), "{body}: {answer}");
    }
    let (_, state) = admin(&gw, "GET", "/admin/endpoints/e1", None);
    assert_eq!(
        state["scaling"]["max_workers"], 3,
        "unchanged by the refusals"
    );
    assert_eq!(state["scaling"]["min_workers"], 1);
}

//! The operator commands (`portico endpoint …`, `reload`, `config`) through the real binary:
//! a daemon with an admin token and a process endpoint running `fakeworker`, and the CLI run
//! as a subprocess against its admin URL — output, JSON, exit codes and the failure paths.

mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use support::{
    TestGateway, closed_port_url, eventually, fakeworker_bin, get, portico_bin, process_config,
};

/// How long workers may take to start or stop.
const SETTLE: Duration = Duration::from_secs(30);

/// A daemon with an admin token and endpoint `e1`: process workers (a shell that prints two
/// boot lines, then runs fakeworker), 1 to 3 of them. `extra` is appended to `[[project]]`.
fn config(token: &str, extra: &str) -> String {
    let script = format!(
        "echo 'boot line alpha'; echo 'boot line beta' >&2; exec {} --port {{port}}",
        fakeworker_bin().display()
    );
    process_config(
        &["sh", "-c", &script],
        &format!(
            "admin_token_sha256 = \"{}\"\ngrace_period_seconds = 2",
            gateway::token::sha256_hex(token)
        ),
        extra,
        "[endpoint.scaling]\nmin_workers = 1\nmax_workers = 3",
    )
}

/// A running daemon and the admin token that opens its API.
struct Daemon {
    gw: TestGateway,
    token: String,
}

impl Daemon {
    fn start() -> Daemon {
        let token = gateway::token::generate();
        let gw = TestGateway::start(&config(&token, ""));
        Daemon { gw, token }
    }

    /// Runs `portico ARGS` with the admin URL and token in the environment.
    fn cli(&self, args: &[&str]) -> Output {
        command(args)
            .env("PORTICO_ADMIN_URL", self.gw.url("admin"))
            .env("PORTICO_ADMIN_TOKEN", &self.token)
            .output()
            .expect("running portico")
    }

    /// `portico ARGS`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "portico {args:?} failed ({:?}): {}{}",
            out.status.code(),
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// `portico ARGS --json`, parsed.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }

    /// Waits until `e1` has `ready` ready workers (and as many desired).
    fn wait_ready(&self, ready: u64) -> Value {
        eventually(&format!("{ready} ready workers"), SETTLE, || {
            let state = self.json(&["endpoint", "get", "e1"]);
            let workers = &state["workers"];
            (workers["ready"] == ready && workers["desired"] == ready).then_some(state)
        })
    }
}

/// `portico ARGS` with no admin settings inherited from the environment.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(portico_bin());
    command
        .args(args)
        .env_remove("PORTICO_ADMIN_URL")
        .env_remove("PORTICO_ADMIN_TOKEN")
        .stdin(Stdio::null());
    command
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts `out` failed with `code` and one stderr line starting `portico: ` that contains
/// `needle`; returns stderr.
fn assert_failed(out: &Output, code: i32, needle: &str) -> String {
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "stderr: {stderr}");
    assert!(stderr.contains(needle), "{needle:?} not in {stderr:?}");
    stderr
}

/// `endpoint list` is a table with the documented columns and a row per endpoint; `--json`
/// is the API's answer; `get` shows the summary, the replica and the scaling settings.
#[test]
fn list_and_get() {
    let daemon = Daemon::start();
    daemon.wait_ready(1);

    let table = daemon.ok(&["endpoint", "list"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "ID",
            "PROJECT",
            "KIND",
            "MODE",
            "READY/DESIRED",
            "INFLIGHT",
            "PENDING",
            "RPS",
            "ERR%",
            "P95"
        ]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(&row[..5], ["e1", "p1", "process", "auto", "1/1"], "{table}");

    let listed = daemon.json(&["endpoint", "list"]);
    assert_eq!(listed["endpoints"][0]["id"], "e1", "{listed}");
    assert_eq!(listed["endpoints"].as_array().unwrap().len(), 1);

    let detail = daemon.ok(&["endpoint", "get", "e1"]);
    assert!(detail.starts_with("endpoint "), "{detail}");
    assert!(detail.contains("1 ready / 1 desired"), "{detail}");
    assert!(detail.contains("REPLICA"), "{detail}");
    let replica_row = detail
        .lines()
        .find(|l| l.trim_start().starts_with("0 "))
        .unwrap_or_else(|| panic!("no replica 0 row: {detail}"));
    assert!(replica_row.contains("127.0.0.1:"), "{detail}");
    assert!(detail.contains("\nscaling\n"), "{detail}");
    assert!(detail.contains("max_workers"), "{detail}");

    let state = daemon.json(&["endpoint", "get", "e1"]);
    assert_eq!(state["id"], "e1");
    assert_eq!(state["scaling"]["max_workers"], 3);
}

/// With traffic, the list's RPS, ERR% and P95 columns and get's "last minute" line show the
/// endpoint's last minute: one answer in four a 5xx is 25.0%.
#[test]
fn last_minute_traffic() {
    let daemon = Daemon::start();
    daemon.wait_ready(1);
    for status in [200, 200, 200, 503] {
        let path = format!("/project/p1/endpoint/e1/status/{status}");
        assert_eq!(get(daemon.gw.addr("public"), &path).0, status);
    }
    eventually("the requests in the last minute", SETTLE, || {
        let state = daemon.json(&["endpoint", "get", "e1"]);
        (state["last_minute"]["requests"] == 4).then_some(())
    });
    let table = daemon.ok(&["endpoint", "list"]);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    let rps: f64 = row[7].parse().unwrap_or_else(|_| panic!("RPS: {table}"));
    assert!(rps > 0.0, "{table}");
    assert_eq!(row[8], "25.0%", "{table}");
    assert_eq!(row[10], "ms", "P95 in milliseconds: {table}");
    let detail = daemon.ok(&["endpoint", "get", "e1"]);
    assert!(detail.contains("last minute  4 requests, "), "{detail}");
    assert!(detail.contains(", 25.0% errors, p50 "), "{detail}");
}

/// Scale pins two workers, autoscale hands back control, stop empties the endpoint and start
/// brings it back; each order prints the state after it, and the events record them.
#[test]
fn scale_autoscale_stop_start_and_events() {
    let daemon = Daemon::start();
    daemon.wait_ready(1);

    let scaled = daemon.ok(&["endpoint", "scale", "e1", "--workers", "2"]);
    assert!(scaled.starts_with("e1: manual, "), "{scaled}");
    daemon.wait_ready(2);

    let auto = daemon.ok(&["endpoint", "autoscale", "e1"]);
    assert!(auto.starts_with("e1: auto, "), "{auto}");
    assert_eq!(daemon.json(&["endpoint", "get", "e1"])["mode"], "auto");

    let stopped = daemon.ok(&["endpoint", "stop", "e1"]);
    assert!(stopped.starts_with("e1: stopped, "), "{stopped}");
    eventually("no workers", SETTLE, || {
        let state = daemon.json(&["endpoint", "get", "e1"]);
        (state["workers"]["replicas"]
            .as_array()
            .is_some_and(Vec::is_empty))
        .then_some(())
    });

    let started = daemon.ok(&["endpoint", "start", "e1"]);
    assert!(started.starts_with("e1: auto, "), "{started}");
    daemon.wait_ready(1);

    let events = daemon.ok(&["endpoint", "events", "e1"]);
    let lines: Vec<&str> = events.lines().collect();
    assert!(lines[0].starts_with("SEQ"), "{events}");
    assert!(lines.len() > 4, "{events}");
    assert!(events.contains("stopped"), "{events}");

    let listed = daemon.json(&["endpoint", "events", "e1"]);
    let all = listed["events"].as_array().unwrap();
    let last = all.last().unwrap()["seq"].as_u64().unwrap();
    let one = daemon.ok(&["endpoint", "events", "e1", "--limit", "1"]);
    assert_eq!(one.lines().count(), 2, "{one}");
    assert!(
        one.lines()
            .nth(1)
            .unwrap()
            .trim_start()
            .starts_with(&format!("{last} ")),
        "{one}"
    );
    let none = daemon.ok(&["endpoint", "events", "e1", "--since", &last.to_string()]);
    assert_eq!(none.trim(), "no events");
}

/// update-scaling sends only the given settings (the rest stay), reports the API's problems
/// one per line with exit 1, and without any setting is a usage error.
#[test]
fn update_scaling() {
    let daemon = Daemon::start();
    let before = daemon.json(&["endpoint", "get", "e1"])["scaling"].clone();

    let updated = daemon.ok(&[
        "endpoint",
        "update-scaling",
        "e1",
        "--max",
        "4",
        "--idle-timeout",
        "120",
        "--cooldown",
        "7",
        "--target",
        "2.5",
    ]);
    assert!(
        updated.starts_with("e1: scaling settings updated"),
        "{updated}"
    );
    let after = daemon.json(&["endpoint", "get", "e1"])["scaling"].clone();
    assert_eq!(after["max_workers"], 4);
    assert_eq!(after["idle_timeout_seconds"], 120);
    assert_eq!(after["initial_cooldown_seconds"], 7);
    assert_eq!(after["target"], 2.5);
    assert_eq!(after["min_workers"], before["min_workers"]);
    assert_eq!(after["metric"], before["metric"]);

    let out = daemon.cli(&[
        "endpoint",
        "update-scaling",
        "e1",
        "--min",
        "5",
        "--max",
        "2",
    ]);
    let stderr = assert_failed(&out, 1, "portico: ");
    let problem = stderr
        .lines()
        .find(|l| l.starts_with("  "))
        .unwrap_or_else(|| panic!("no problem line in {stderr}"));
    assert!(problem.contains("max_workers"), "{stderr}");
    let unchanged = daemon.json(&["endpoint", "get", "e1"])["scaling"].clone();
    assert_eq!(unchanged["max_workers"], 4);

    let out = daemon.cli(&["endpoint", "update-scaling", "e1"]);
    assert_failed(&out, 2, "--min");
}

/// logs prints `time replica text` lines selected by count, age and filter; `--follow`
/// prints the backlog, then new lines as the worker writes them, until the daemon stops.
#[test]
fn logs_plain_and_followed() {
    let daemon = Daemon::start();
    daemon.wait_ready(1);

    let all = daemon.ok(&["endpoint", "logs", "e1", "--lines", "1000"]);
    assert!(all.contains(" 0 boot line alpha\n"), "{all}");
    assert!(all.contains(" 0 boot line beta\n"), "{all}");

    let beta = daemon.ok(&[
        "endpoint", "logs", "e1", "--filter", "beta", "--since", "1h",
    ]);
    let lines: Vec<&str> = beta.lines().collect();
    assert_eq!(lines.len(), 1, "{beta}");
    let words: Vec<&str> = lines[0].splitn(3, ' ').collect();
    assert!(words[0].ends_with('Z'), "a UTC time first: {beta}");
    assert_eq!(words[1..], ["0", "boot line beta"]);

    let one = daemon.ok(&[
        "endpoint", "logs", "e1", "--filter", "^boot", "--lines", "1",
    ]);
    assert_eq!(one.lines().count(), 1, "{one}");
    let other = daemon.ok(&["endpoint", "logs", "e1", "--replica", "7"]);
    assert_eq!(other, "");
    let json = daemon.json(&["endpoint", "logs", "e1", "--filter", "alpha"]);
    assert_eq!(json["lines"][0]["line"], "boot line alpha");

    let out = daemon.cli(&["endpoint", "logs", "e1", "--since", "5 weeks"]);
    assert_failed(&out, 2, "--since");

    // Followed: the backlog line, then a line the worker writes for a request made now.
    let mut follow = command(&[
        "endpoint",
        "logs",
        "e1",
        "--follow",
        "--filter",
        "alpha|marker-93",
    ])
    .env("PORTICO_ADMIN_URL", daemon.gw.url("admin"))
    .env("PORTICO_ADMIN_TOKEN", &daemon.token)
    .stdout(Stdio::piped())
    .spawn()
    .expect("spawning portico");
    let (tx, rx) = mpsc::channel();
    let stdout = follow.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = rx.recv_timeout(SETTLE).expect("the backlog line");
    assert!(first.ends_with(" 0 boot line alpha"), "{first}");
    let (status, _, _) = get(
        daemon.gw.addr("public"),
        "/project/p1/endpoint/e1/status/204?m=marker-93",
    );
    assert_eq!(status, 204);
    let live = rx.recv_timeout(SETTLE).expect("the live line");
    assert!(live.contains("marker-93"), "{live}");
    assert!(follow.try_wait().unwrap().is_none(), "follow keeps running");

    // The daemon stopping ends the stream, and the command with it, successfully.
    daemon.gw.signal("TERM");
    let status = eventually("follow to end with the daemon", SETTLE, || {
        follow.try_wait().unwrap()
    });
    assert!(status.success(), "{status:?}");
}

/// usage shows a row per hour and per-caller totals from the hourly access analytics.
#[test]
fn usage_per_hour_and_caller() {
    let daemon = Daemon::start();
    daemon.wait_ready(1);
    for _ in 0..3 {
        let (status, _, _) = get(
            daemon.gw.addr("public"),
            "/project/p1/endpoint/e1/status/200",
        );
        assert_eq!(status, 200);
    }
    let (status, _, _) = get(
        daemon.gw.addr("public"),
        "/project/p1/endpoint/e1/status/503",
    );
    assert_eq!(status, 503);
    let hourly = eventually("the requests counted", SETTLE, || {
        let answer = daemon.json(&["endpoint", "usage", "e1", "--hours", "2"]);
        (answer["total"]["requests"] == 4).then_some(answer)
    });
    assert_eq!(hourly["total"]["errors"]["5xx"], 1, "{hourly}");

    let table = daemon.ok(&["endpoint", "usage", "e1", "--hours", "2"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("HOUR"), "{table}");
    let total: Vec<&str> = lines
        .iter()
        .find(|l| l.starts_with("total"))
        .unwrap_or_else(|| panic!("no total row: {table}"))
        .split_whitespace()
        .collect();
    assert_eq!(total[1..4], ["4", "0", "1"], "{table}");
    // Every hour of the span has a row; together they hold the requests (two hours when
    // the test runs across the turn of an hour).
    let hours: Vec<Vec<&str>> = lines
        .iter()
        .filter(|l| l.starts_with("20") && l.contains(":00:00Z"))
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(!hours.is_empty() && hours.len() <= 3, "{table}");
    let counted: u64 = hours.iter().map(|row| row[1].parse::<u64>().unwrap()).sum();
    assert_eq!(counted, 4, "{table}");
    let caller = lines
        .iter()
        .skip_while(|l| !l.starts_with("CALLER"))
        .nth(1)
        .unwrap_or_else(|| panic!("no caller row: {table}"));
    let caller: Vec<&str> = caller.split_whitespace().collect();
    assert_eq!(caller[1..3], ["4", "1"], "{table}");
}

/// restart begins a rolling restart (202): the CLI says so, and the replica is replaced.
#[test]
fn restart_replaces_the_worker() {
    let daemon = Daemon::start();
    let before = daemon.wait_ready(1)["workers"]["replicas"][0]["pid"].clone();
    let out = daemon.ok(&["endpoint", "restart", "e1"]);
    assert!(out.starts_with("rolling restart of e1 started\n"), "{out}");
    eventually("a new worker process", SETTLE, || {
        let state = daemon.json(&["endpoint", "get", "e1"]);
        let replicas = state["workers"]["replicas"].as_array()?.clone();
        let fresh = replicas.len() == 1
            && replicas[0]["pid"] != before
            && state["workers"]["ready"] == 1
            && state["restarting"] != true;
        fresh.then_some(())
    });
}

/// reload applies a changed file and says so; an invalid file is refused with each problem;
/// config prints the config in force as TOML (or the API's JSON) with secrets redacted.
#[test]
fn reload_and_config() {
    let daemon = Daemon::start();
    let shown = daemon.ok(&["config"]);
    assert!(shown.starts_with("# in force, from "), "{shown}");
    assert!(shown.contains("[[endpoint]]"), "{shown}");
    assert!(shown.contains("id = \"e1\""), "{shown}");
    assert!(
        !shown.contains(&gateway::token::sha256_hex(&daemon.token)),
        "{shown}"
    );
    let json = daemon.json(&["config"]);
    assert!(
        json["path"].as_str().unwrap().ends_with("config.toml"),
        "{json}"
    );
    let tokens = &json["config"]["project"][0]["tokens"];
    assert!(tokens.as_array().is_none_or(Vec::is_empty), "{json}");

    let path = daemon.gw.dir().join("config.toml");
    let hash = gateway::token::sha256_hex("a new project token");
    let token = format!("tokens = [{{ name = \"ci\", sha256 = \"{hash}\" }}]");
    std::fs::write(&path, config(&daemon.token, &token)).unwrap();
    let reloaded = daemon.ok(&["reload"]);
    assert!(
        reloaded.starts_with("configuration reloaded\n"),
        "{reloaded}"
    );
    let json = daemon.json(&["config"]);
    assert_eq!(
        json["config"]["project"][0]["tokens"][0]["name"], "ci",
        "{json}"
    );

    let broken = config(&daemon.token, "").replace("max_workers = 3", "max_workers = 0");
    std::fs::write(&path, broken).unwrap();
    let out = daemon.cli(&["reload"]);
    let stderr = assert_failed(&out, 1, "portico: the configuration was not reloaded");
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("  ") && l.contains("max_workers")),
        "{stderr}"
    );
    let json = daemon.json(&["config"]);
    assert_eq!(json["config"]["project"][0]["tokens"][0]["name"], "ci");
}

/// An admin URL nobody listens on, a missing or wrong token, an unknown endpoint and a
/// refused order are one-line errors with exit 1; bad command lines exit 2.
#[test]
fn failures() {
    let daemon = Daemon::start();
    let closed = closed_port_url();
    let out = command(&["endpoint", "list", "--admin", &closed])
        .output()
        .unwrap();
    let stderr = assert_failed(
        &out,
        1,
        &format!("portico: cannot reach the admin API at {closed}: "),
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");

    let admin = daemon.gw.url("admin");
    let unauthorized = "portico: admin token missing or rejected; pass --token or set \
                        PORTICO_ADMIN_TOKEN\n";
    let out = command(&["endpoint", "list", "--admin", &admin])
        .output()
        .unwrap();
    assert_eq!(assert_failed(&out, 1, "token"), unauthorized);
    let out = command(&["reload", "--admin", &admin, "--token", "wrong"])
        .output()
        .unwrap();
    assert_eq!(assert_failed(&out, 1, "token"), unauthorized);
    // The flag works as well as the environment.
    let out = command(&[
        "endpoint",
        "get",
        "e1",
        "--admin",
        &admin,
        "--token",
        &daemon.token,
    ])
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = daemon.cli(&["endpoint", "get", "nope"]);
    assert_eq!(
        assert_failed(&out, 1, "no endpoint nope"),
        "portico: no endpoint nope\n"
    );
    let out = daemon.cli(&["endpoint", "scale", "e1", "--workers", "9"]);
    assert_failed(&out, 1, "max_workers");
    assert_eq!(text(&out.stdout), "");

    for args in [
        &["endpoint", "scale", "e1"][..],
        &["endpoint", "scale", "e1", "--workers", "many"],
        &["endpoint", "frobnicate"],
        &["endpoint", "get"],
        &["endpoint", "list", "--admin", "not a url"],
        &["endpoint", "usage", "e1", "--hours", "-1"],
    ] {
        let out = daemon.cli(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}

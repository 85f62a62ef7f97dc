//! Helpers for the process actuator tests: a recording [`Hooks`], polling with deadlines,
//! Python workers, and process liveness checks.

#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use scaler::{Hooks, ProcessActuator, ProcessSpec, ReplicaEvent};

/// How long any wait in these tests may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Records every event; `inflight` answers what the test set, and counts the questions.
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<ReplicaEvent>>,
    inflight: Mutex<HashMap<u32, u64>>,
    asked: Mutex<HashMap<u32, usize>>,
}

impl Hooks for Recorder {
    fn on_event(&self, event: ReplicaEvent) {
        self.events.lock().unwrap().push(event);
    }

    fn inflight(&self, replica: u32) -> u64 {
        *self.asked.lock().unwrap().entry(replica).or_default() += 1;
        self.inflight
            .lock()
            .unwrap()
            .get(&replica)
            .copied()
            .unwrap_or(0)
    }
}

impl Recorder {
    /// Every event so far.
    pub fn events(&self) -> Vec<ReplicaEvent> {
        self.events.lock().unwrap().clone()
    }

    /// Events about `replica`.
    pub fn of(&self, replica: u32) -> Vec<ReplicaEvent> {
        self.events()
            .into_iter()
            .filter(|e| e.replica() == replica)
            .collect()
    }

    /// Sets what `inflight(replica)` answers.
    pub fn set_inflight(&self, replica: u32, n: u64) {
        self.inflight.lock().unwrap().insert(replica, n);
    }

    /// How many times `inflight(replica)` was asked.
    pub fn asked(&self, replica: u32) -> usize {
        self.asked
            .lock()
            .unwrap()
            .get(&replica)
            .copied()
            .unwrap_or(0)
    }

    /// Polls until `done(events)` holds; fails the test with the events after [`DEADLINE`].
    pub async fn wait(&self, what: &str, done: impl Fn(&[ReplicaEvent]) -> bool) {
        let start = Instant::now();
        loop {
            let events = self.events();
            if done(&events) {
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; events: {events:#?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until `count` events match `matches`.
    pub async fn wait_count(
        &self,
        what: &str,
        count: usize,
        matches: impl Fn(&ReplicaEvent) -> bool,
    ) {
        self.wait(what, |events| {
            events.iter().filter(|e| matches(e)).count() >= count
        })
        .await;
    }
}

/// Polls `check` every 10 ms until it is true; fails the test after [`DEADLINE`].
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `future` with the [`DEADLINE`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Checks each replica's events follow its life: `Starting → Ready → Draining → Stopped`
/// or `Starting → Crashed → Starting …`, `Stopped` last (a stopped number may be reused).
pub fn assert_ordered(events: &[ReplicaEvent]) {
    let mut last: HashMap<u32, &'static str> = HashMap::new();
    for event in events {
        let now = match event {
            ReplicaEvent::Starting { .. } => "starting",
            ReplicaEvent::Ready { .. } => "ready",
            ReplicaEvent::Draining { .. } => "draining",
            ReplicaEvent::Stopped { .. } => "stopped",
            ReplicaEvent::Crashed { .. } => "crashed",
            ReplicaEvent::Replaced { .. } => {
                // Said of a ready replica, just before it drains.
                let before = last.get(&event.replica()).copied();
                assert_eq!(
                    before,
                    Some("ready"),
                    "replaced when not ready: {events:#?}"
                );
                continue;
            }
        };
        let before = last.get(&event.replica()).copied().unwrap_or("stopped");
        let allowed = matches!(
            (before, now),
            ("stopped", "starting")
                | ("starting", "ready" | "crashed" | "stopped")
                | ("ready", "draining" | "crashed" | "stopped")
                | ("draining", "stopped")
                | ("crashed", "starting" | "stopped")
        );
        assert!(
            allowed,
            "replica {}: {before} then {now}; events: {events:#?}",
            event.replica()
        );
        last.insert(event.replica(), now);
    }
}

/// The pid reported by the latest `Starting` of `replica`.
pub fn pid_of(events: &[ReplicaEvent], replica: u32) -> u32 {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            ReplicaEvent::Starting {
                replica: r,
                pid: Some(pid),
                ..
            } if *r == replica => Some(*pid),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no pid for replica {replica}: {events:#?}"))
}

/// The address of the latest `Ready` of `replica`.
pub fn address_of(events: &[ReplicaEvent], replica: u32) -> String {
    events
        .iter()
        .rev()
        .find_map(|e| match e {
            ReplicaEvent::Ready {
                replica: r,
                address,
                ..
            } if *r == replica => Some(address.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("replica {replica} never ready: {events:#?}"))
}

/// Whether `pid` is a process that has not exited (a zombie counts as exited: whoever
/// reaps orphans here may be slow or absent in a container).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the command name, which is in parentheses and may hold any
        // character: look after the last ')'.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Waits until `pid` has exited.
pub async fn gone(pid: u32) {
    eventually(&format!("pid {pid} to exit"), || !alive(pid)).await;
}

/// The real Python 3 interpreter (not a version-manager shim, which would add its own
/// start-up time to every worker).
pub fn python() -> String {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let out = std::process::Command::new("python3")
                .args(["-c", "import sys; print(sys.executable)"])
                .output()
                .expect("python3 is needed for these tests");
            String::from_utf8(out.stdout).unwrap().trim().to_string()
        })
        .clone()
}

/// A worker: prints a line to stdout and one to stderr, sleeps `argv[3]` seconds, then
/// serves `GET /health` with 200 (everything else 404) on 127.0.0.1:`argv[1]`.
/// `argv[2]` is the replica number, echoed with `$WORKER_GREETING`.
pub const WORKER: &str = r#"
import http.server, os, sys, time
port, replica, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
print(f"worker replica={replica} port={port} greeting={os.environ.get('WORKER_GREETING')}", flush=True)
print(f"stderr of replica={replica}", file=sys.stderr, flush=True)
time.sleep(delay)
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        status = 200 if self.path == "/health" else 404
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"#;

/// The command of a [`WORKER`] that boots in `delay` seconds.
pub fn worker(delay: f64) -> Vec<String> {
    vec![
        python(),
        "-c".into(),
        WORKER.into(),
        "{port}".into(),
        "{replica}".into(),
        delay.to_string(),
    ]
}

/// A shell command: `sh -c script`.
pub fn sh(script: &str) -> Vec<String> {
    vec!["sh".into(), "-c".into(), script.into()]
}

/// A spec for tests: short timeouts and backoffs.
pub fn spec(command: Vec<String>) -> ProcessSpec {
    let mut spec = ProcessSpec::new(
        "test".into(),
        command,
        Vec::new(),
        "/health".into(),
        Duration::from_secs(15),
        Duration::from_secs(15),
    );
    spec.stop_timeout = Duration::from_secs(5);
    spec.restart_backoff = Duration::from_millis(100);
    spec.restart_backoff_max = Duration::from_secs(1);
    spec
}

/// Starts an actuator recording into a fresh [`Recorder`].
pub fn start(spec: ProcessSpec) -> (Arc<ProcessActuator>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let actuator = ProcessActuator::start(spec, Arc::clone(&recorder) as Arc<dyn Hooks>);
    (actuator, recorder)
}

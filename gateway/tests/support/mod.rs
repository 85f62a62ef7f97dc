//! Shared harness for tests that run the real `portico` and `fakeworker` binaries.
//!
//! - [`TestGateway`] writes a config into a temp dir, spawns `portico run`, reads its
//!   `listening on <name> <addr>` lines and kills it on drop.
//! - [`TestWorker`] does the same for the `fakeworker` binary.
//! - [`eventually`] polls a condition with a deadline instead of sleeping.

#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a spawned process may take to print its listening lines.
const STARTUP: Duration = Duration::from_secs(20);

/// The `portico` binary under test.
pub fn portico_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_portico"))
}

/// The `fakeworker` binary, built next to `portico` (`scripts/test.sh` builds all binaries
/// before the tests; `cargo build -p bench` does it by hand).
pub fn fakeworker_bin() -> PathBuf {
    let path = portico_bin().with_file_name("fakeworker");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p bench` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// Runs `portico` with `args` to completion and returns its output.
pub fn portico(args: &[&str]) -> Output {
    Command::new(portico_bin())
        .args(args)
        .output()
        .expect("running portico")
}

/// A running process whose stdout lines are collected in the background.
struct Spawned {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    listening: HashMap<String, SocketAddr>,
}

impl Spawned {
    /// Spawns `command` and waits until a stdout line satisfies `done` (given every
    /// `listening on` pair so far).
    fn start(
        mut command: Command,
        done: impl Fn(&HashMap<String, SocketAddr>) -> bool,
        unnamed: &str,
    ) -> Spawned {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawning process");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        collect(
            child.stdout.take().expect("piped stdout"),
            Arc::clone(&lines),
            Some(tx),
        );
        collect(
            child.stderr.take().expect("piped stderr"),
            Arc::clone(&stderr),
            None,
        );

        let mut listening = HashMap::new();
        let deadline = Instant::now() + STARTUP;
        while !done(&listening) {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "process did not start in {STARTUP:?}; stdout: {:?}; stderr: {:?}",
                        lines.lock().unwrap(),
                        stderr.lock().unwrap()
                    );
                }
            };
            if let Some((name, addr)) = parse_listening(&line, unnamed) {
                listening.insert(name, addr);
            }
        }
        Spawned {
            child,
            lines,
            stderr,
            listening,
        }
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
    notify: Option<mpsc::Sender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            // Stored before notifying, so a caller woken by a line also sees it stored.
            into.lock().unwrap().push(line.clone());
            if let Some(tx) = &notify {
                let _ = tx.send(line);
            }
        }
    });
}

/// `listening on <name> <addr>` (portico) or `listening on <addr>` (fakeworker).
fn parse_listening(line: &str, unnamed: &str) -> Option<(String, SocketAddr)> {
    let rest = line.strip_prefix("listening on ")?;
    let mut words = rest.split_whitespace();
    let first = words.next()?;
    match words.next() {
        Some(addr) => Some((first.to_string(), addr.parse().ok()?)),
        None => Some((unnamed.to_string(), first.parse().ok()?)),
    }
}

/// A `portico run` process on a config written to a temp dir.
pub struct TestGateway {
    process: Spawned,
    dir: tempfile::TempDir,
}

impl TestGateway {
    /// Starts portico on `config` (TOML; use `127.0.0.1:0` addresses). Waits for the admin
    /// listener line, which portico prints last.
    pub fn start(config: &str) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("writing config");
        let mut command = Command::new(portico_bin());
        command.arg("run").arg("--config").arg(&path);
        let process = Spawned::start(command, |seen| seen.contains_key("admin"), "admin");
        TestGateway { process, dir }
    }

    /// The address of the listener called `name` (`admin` for the admin listener).
    pub fn addr(&self, name: &str) -> SocketAddr {
        *self
            .process
            .listening
            .get(name)
            .unwrap_or_else(|| panic!("no listener {name}: {:?}", self.process.listening))
    }

    /// `http://ADDR` of the listener called `name`.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}", self.addr(name))
    }

    /// The directory holding the config (and relative state paths).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Process id, to send signals.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Everything written to stdout so far.
    pub fn stdout(&self) -> Vec<String> {
        self.process.lines.lock().unwrap().clone()
    }

    /// Everything written to stderr so far.
    pub fn stderr(&self) -> Vec<String> {
        self.process.stderr.lock().unwrap().clone()
    }

    /// Sends `signal` (e.g. "TERM") and waits up to `within` for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str, within: Duration) -> Option<i32> {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.process.child.try_wait().expect("waiting") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "portico did not exit within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A `fakeworker` process.
pub struct TestWorker {
    process: Spawned,
}

impl TestWorker {
    /// Starts fakeworker on a free loopback port with extra `args`.
    pub fn start(args: &[&str]) -> TestWorker {
        let mut command = Command::new(fakeworker_bin());
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args);
        let process = Spawned::start(command, |seen| seen.contains_key("worker"), "worker");
        TestWorker { process }
    }

    /// The worker's address.
    pub fn addr(&self) -> SocketAddr {
        self.process.listening["worker"]
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }
}

/// Polls `check` every 20 ms until it returns `Some` or `within` passes (then panics with
/// `what`).
pub fn eventually<T>(what: &str, within: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A blocking HTTP/1.1 request over a fresh connection; returns status, headers and body.
/// Enough for tests of the gateway's own answers without pulling a client library in.
pub fn http(addr: SocketAddr, raw_request: &str) -> (u16, Vec<(String, String)>, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    stream.write_all(raw_request.as_bytes()).expect("writing");
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// `GET path` with `Connection: close`.
pub fn get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    http(
        addr,
        &format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"),
    )
}

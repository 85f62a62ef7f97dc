//! Shared harness for tests that run the real `portico` and `fakeworker` binaries.
//!
//! - [`TestGateway`] writes a config into a temp dir, spawns `portico run`, reads its
//!   `listening on <name> <addr>` lines and kills it on drop.
//! - [`TestWorker`] does the same for the `fakeworker` binary.
//! - [`RedisServer`] runs a `redis-server` of the test's own.
//! - [`eventually`] polls a condition with a deadline instead of sleeping.

#![allow(dead_code, missing_docs)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
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

    /// Starts fakeworker on `host:port` (an address the test chose).
    pub fn start_at(host: &str, port: &str) -> TestWorker {
        let mut command = Command::new(fakeworker_bin());
        command.args(["--host", host, "--port", port]);
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

// ------------------------------------------------------------------------------------------
// Data-plane helpers: proxy configs, worker records, raw HTTP/1.1 framing, metrics.
// ------------------------------------------------------------------------------------------

/// The path prefix of the one endpoint every [`ProxyConfig`] defines.
pub const E1: &str = "/project/p1/endpoint/e1";

impl TestGateway {
    /// Like [`TestGateway::start`], but first writes `files` (name, contents) into the config's
    /// directory, so relative paths in the config (TLS certificate and key) find them.
    pub fn start_with_files(config: &str, files: &[(&str, &[u8])]) -> TestGateway {
        let dir = tempfile::tempdir().expect("temp dir");
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("writing a file");
        }
        let path = dir.path().join("config.toml");
        std::fs::write(&path, config).expect("writing config");
        let mut command = Command::new(portico_bin());
        command.arg("run").arg("--config").arg(&path);
        let process = Spawned::start(command, |seen| seen.contains_key("admin"), "admin");
        TestGateway { process, dir }
    }

    /// Sends `signal` (e.g. "TERM") without waiting for anything.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits up to `within` for the process to exit and returns its exit code (`None` when a
    /// signal ended it). Panics when it is still running then.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.process.child.try_wait().expect("waiting") {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "portico did not exit within {within:?}; stderr: {:?}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `GET /metrics` on the admin listener: the Prometheus text (asserts a 200).
    pub fn metrics(&self) -> String {
        let (status, _, body) = get(self.addr("admin"), "/metrics");
        assert_eq!(status, 200, "GET /metrics: {body}");
        body
    }

    /// The access log: every stdout line that starts with `{`, parsed (each must be JSON).
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .iter()
            .filter(|line| line.starts_with('{'))
            .map(|line| {
                serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {line}"))
            })
            .collect()
    }

    /// The access log entry whose `request_id` is `id`, waiting for it up to 5 s.
    pub fn access_entry(&self, id: &str) -> serde_json::Value {
        eventually(
            &format!("an access log line for request {id}"),
            Duration::from_secs(5),
            || {
                self.access_log()
                    .into_iter()
                    .find(|entry| entry["request_id"] == id)
            },
        )
    }
}

impl TestWorker {
    /// The requests the worker recorded (`GET /_fake/requests`), oldest first.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        let (status, _, body) = get(self.addr(), "/_fake/requests");
        assert_eq!(status, 200, "GET /_fake/requests: {body}");
        serde_json::from_str(&body).expect("/_fake/requests is a JSON array")
    }

    /// Paths (with query) of the recorded requests, leaving out the gateway's health probes
    /// (`/health`) and metrics scrapes (`/metrics`).
    pub fn paths(&self) -> Vec<String> {
        self.requests()
            .iter()
            .filter_map(|r| r["path"].as_str())
            .filter(|p| !is_probe_or_scrape(p))
            .map(str::to_owned)
            .collect()
    }

    /// How many recorded requests have a path starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.paths()
            .iter()
            .filter(|p| p.starts_with(prefix))
            .count()
    }

    /// Kills the worker with SIGKILL at once (no goodbye on its connections) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.process.child.kill();
        let _ = self.process.child.wait();
    }
}

/// Whether a recorded worker path is a health probe or a metrics scrape, not traffic.
pub fn is_probe_or_scrape(path: &str) -> bool {
    let bare = path.split('?').next().unwrap_or(path);
    bare == "/health" || bare == "/metrics"
}

/// The TOML config of a gateway with one public listener, the admin listener, project `p1`
/// and one public endpoint `e1` whose workers are processes running `command` (with the
/// process actuator's `{port}` placeholder). `server` and `project` are TOML lines added to
/// `[server]` and to the project; `tables` follow `[endpoint.workers]` (`[endpoint.health]`,
/// `[endpoint.scaling]`, …).
pub fn process_config<S: AsRef<str>>(
    command: &[S],
    server: &str,
    project: &str,
    tables: &str,
) -> String {
    let command: Vec<&str> = command.iter().map(AsRef::as_ref).collect();
    let command = serde_json::to_string(&command).expect("a command");
    format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
{server}

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"
{project}

[[endpoint]]
id = "e1"
project = "p1"
public = true

[endpoint.workers]
kind = "process"
command = {command}
startup_timeout_seconds = 30

{tables}
"#
    )
}

/// A config with the admin listener and a `public` listener on port 0 (`server` keys added
/// to `[server]`), project `p1`, and one public endpoint `id` with extra endpoint `keys`,
/// the `workers` lines of its `[endpoint.workers]`, and `tables` after it.
pub fn endpoint_config(id: &str, server: &str, keys: &str, workers: &str, tables: &str) -> String {
    format!(
        r#"
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = 1
{server}

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "{id}"
project = "p1"
public = true
{keys}

[endpoint.workers]
{workers}

{tables}
"#
    )
}

/// `(status, body as JSON)` of an admin request without a token (`Null` when not JSON).
pub fn admin(gw: &TestGateway, method: &str, path: &str, body: &str) -> (u16, serde_json::Value) {
    let raw = format!(
        "{method} {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let (status, _, body) = http(gw.addr("admin"), &raw);
    (status, serde_json::from_str(&body).unwrap_or_default())
}

/// The `Host` fakeworker's `/echo` saw for `GET path` through `client`: the worker that
/// served it (Portico sets `Host` to the worker's address).
pub fn served_by(client: &mut Http1, path: &str) -> String {
    let (status, body) = client.get(path);
    assert_eq!(status, 200, "{path}: {body}");
    let echo: serde_json::Value = serde_json::from_str(&body).expect("echo JSON");
    echo_header(&echo, "host").join(",")
}

/// The TOML config of a gateway with one public listener, the admin listener (with
/// `/metrics` open), project `p1` and one public endpoint `e1` on static `urls`.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    urls: Vec<String>,
    protocol: String,
    strategy: String,
    timeouts: (u64, u64, u64),
    max_body_bytes: u64,
    grace_period_seconds: u64,
    health: Vec<(String, u64)>,
    tls: bool,
}

impl ProxyConfig {
    /// Endpoint `e1` on `urls`: HTTP/1.1 workers, `least_inflight`, `timeouts = { connect_ms
    /// = 500, first_byte_seconds = 2, idle_seconds = 2 }`, `max_body_bytes = 1024`, grace
    /// period 5 s, default health settings, no TLS.
    pub fn new<S: AsRef<str>>(urls: &[S]) -> ProxyConfig {
        ProxyConfig {
            urls: urls.iter().map(|u| u.as_ref().to_owned()).collect(),
            protocol: "http1".into(),
            strategy: "least_inflight".into(),
            timeouts: (500, 2, 2),
            max_body_bytes: 1024,
            grace_period_seconds: 5,
            health: Vec::new(),
            tls: false,
        }
    }

    /// `workers.protocol`: `"http1"` or `"h2c"`.
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.protocol = protocol.into();
        self
    }

    /// `balance.strategy`: `"least_inflight"` or `"round_robin"`.
    pub fn strategy(mut self, strategy: &str) -> Self {
        self.strategy = strategy.into();
        self
    }

    /// `timeouts = { connect_ms, first_byte_seconds, idle_seconds }`.
    pub fn timeouts(mut self, connect_ms: u64, first_byte_seconds: u64, idle_seconds: u64) -> Self {
        self.timeouts = (connect_ms, first_byte_seconds, idle_seconds);
        self
    }

    /// `max_body_bytes`.
    pub fn max_body_bytes(mut self, bytes: u64) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// `server.grace_period_seconds`.
    pub fn grace_period_seconds(mut self, seconds: u64) -> Self {
        self.grace_period_seconds = seconds;
        self
    }

    /// One key of `[endpoint.health]` (`interval_ms`, `unhealthy_threshold`, …).
    pub fn health(mut self, key: &str, value: u64) -> Self {
        self.health.push((key.into(), value));
        self
    }

    /// TLS on the listener, from `cert.pem` and `key.pem` beside the config (see
    /// [`TestGateway::start_with_files`]).
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// The config file's text.
    pub fn toml(&self) -> String {
        let urls: Vec<String> = self.urls.iter().map(|u| format!("{u:?}")).collect();
        let (connect_ms, first_byte, idle) = self.timeouts;
        let tls = if self.tls {
            "tls = { cert = \"cert.pem\", key = \"key.pem\" }\n"
        } else {
            ""
        };
        let mut toml = format!(
            r#"
[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = {grace}
metrics_public = true

[[listener]]
name = "public"
address = "127.0.0.1:0"
{tls}
[[project]]
id = "p1"

[[endpoint]]
id = "e1"
project = "p1"
public = true
timeouts = {{ connect_ms = {connect_ms}, first_byte_seconds = {first_byte}, idle_seconds = {idle} }}
max_body_bytes = {max_body}

[endpoint.workers]
kind = "static"
urls = [{urls}]
protocol = "{protocol}"

[endpoint.balance]
strategy = "{strategy}"
"#,
            grace = self.grace_period_seconds,
            max_body = self.max_body_bytes,
            urls = urls.join(", "),
            protocol = self.protocol,
            strategy = self.strategy,
        );
        if !self.health.is_empty() {
            toml.push_str("\n[endpoint.health]\n");
            for (key, value) in &self.health {
                toml.push_str(&format!("{key} = {value}\n"));
            }
        }
        toml
    }

    /// Starts a gateway on this config.
    pub fn start(&self) -> TestGateway {
        TestGateway::start(&self.toml())
    }
}

/// `http://127.0.0.1:PORT` of a port that was free a moment ago and has no listener now:
/// connections to it are refused.
pub fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    let port = listener.local_addr().expect("local addr").port();
    drop(listener);
    format!("http://127.0.0.1:{port}")
}

/// The JSON body of a chat completion request for `max_tokens` tokens.
pub fn chat_body(max_tokens: u32, stream: bool) -> String {
    serde_json::json!({
        "model": "fake-model",
        "messages": [{"role": "user", "content": "tell me a story"}],
        "max_tokens": max_tokens,
        "stream": stream,
    })
    .to_string()
}

/// A raw HTTP/1.1 `POST path` with a JSON `body` and `Content-Length`, on a keep-alive
/// connection.
pub fn post_json(path: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Asserts `body` is an error in the data plane's shape, `{"error":{"message","type","code"}}`
/// with string values, served as `application/json`; returns the parsed body.
pub fn assert_json_error(
    status: u16,
    headers: &[(String, String)],
    body: &str,
) -> serde_json::Value {
    let content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.as_str());
    assert_eq!(
        content_type,
        Some("application/json"),
        "status {status}: headers {headers:?}"
    );
    let json: serde_json::Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("status {status}: body is not JSON ({e}): {body:?}"));
    for key in ["message", "type", "code"] {
        assert!(
            json["error"][key].is_string(),
            "status {status}: error.{key} is not a string in {body}"
        );
    }
    json
}

/// How an HTTP/1.1 response body ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum End {
    /// The body was complete: the terminating `0\r\n\r\n` chunk, or all `Content-Length`
    /// bytes.
    Clean,
    /// The peer closed the connection before the body was complete (for a response framed
    /// by closing the connection, that is its normal end).
    Eof,
    /// The connection was reset.
    Reset(String),
    /// No byte came for the read timeout.
    Timeout,
}

/// How the current response body is framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Framing {
    Chunked,
    Length(usize),
    Close,
}

/// An HTTP/1.1 client connection spoken byte by byte, so framing (chunks, terminating chunk,
/// connection close) and arrival times can be checked. Reads time out after 5 s unless
/// [`Http1::set_timeout`] says otherwise.
pub struct Http1 {
    /// The connection (for tests that read or wait on it directly).
    pub stream: std::net::TcpStream,
    buf: Vec<u8>,
    /// Status of the last response head read.
    pub status: u16,
    /// Headers of the last response head, names lower-cased.
    pub headers: Vec<(String, String)>,
    framing: Framing,
    /// How the last body ended, once it has.
    pub end: Option<End>,
    /// Body bytes read but not yet returned as SSE events.
    pending: Vec<u8>,
}

impl Http1 {
    /// Connects to `addr` (panics when it cannot).
    pub fn connect(addr: SocketAddr) -> Http1 {
        Http1::try_connect(addr).expect("connecting")
    }

    /// Connects to `addr`, or says why not (a refused connection is an answer too).
    pub fn try_connect(addr: SocketAddr) -> std::io::Result<Http1> {
        let stream = std::net::TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Http1 {
            stream,
            buf: Vec::new(),
            status: 0,
            headers: Vec::new(),
            framing: Framing::Close,
            end: None,
            pending: Vec::new(),
        })
    }

    /// Sets the timeout of each read.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("read timeout");
    }

    /// Writes raw bytes; errors (the peer closed early) are returned, not raised.
    pub fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use std::io::Write as _;
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// Writes `raw` and reads the response head (panics when none comes).
    pub fn send(&mut self, raw: &[u8]) -> &mut Http1 {
        if let Err(e) = self.write(raw) {
            // The server may answer and close before reading everything; the head may
            // still be there to read.
            eprintln!("write failed ({e}); reading the answer anyway");
        }
        self.read_head();
        self
    }

    /// `GET path` on this connection; returns status and whole body.
    pub fn get(&mut self, path: &str) -> (u16, String) {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        let body = self.body();
        (self.status, body)
    }

    /// Reads more bytes into the buffer; `Err` says how the connection ended.
    fn fill(&mut self) -> Result<(), End> {
        use std::io::Read as _;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(End::Eof),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(End::Timeout)
            }
            Err(e) => Err(End::Reset(e.to_string())),
        }
    }

    /// Takes the first line (without CRLF) from the buffer, reading as needed.
    fn line(&mut self) -> Result<String, End> {
        loop {
            if let Some(at) = find(&self.buf, b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            self.fill()?;
        }
    }

    /// Reads a response head (skipping `1xx` heads) and works out the body framing.
    pub fn read_head(&mut self) {
        while (100..200).contains(&self.read_any_head()) {}
    }

    /// The first value of header `name` (lower case) in the last head.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The next piece of body; `None` once the body is over (see [`Http1::end`]).
    pub fn chunk(&mut self) -> Option<Vec<u8>> {
        if self.end.is_some() {
            return None;
        }
        match self.next_piece() {
            Ok(Some(piece)) => Some(piece),
            Ok(None) => {
                self.end = Some(End::Clean);
                None
            }
            Err(end) => {
                self.end = Some(end);
                None
            }
        }
    }

    fn next_piece(&mut self) -> Result<Option<Vec<u8>>, End> {
        match self.framing {
            Framing::Length(0) => Ok(None),
            Framing::Length(left) => {
                if self.buf.is_empty() {
                    self.fill()?;
                }
                let n = left.min(self.buf.len());
                let piece: Vec<u8> = self.buf.drain(..n).collect();
                self.framing = Framing::Length(left - n);
                Ok(Some(piece))
            }
            Framing::Close => {
                if self.buf.is_empty() {
                    self.fill()?;
                }
                Ok(Some(std::mem::take(&mut self.buf)))
            }
            Framing::Chunked => {
                let size_line = self.line()?;
                let hex = size_line.split(';').next().unwrap_or("").trim();
                let size = usize::from_str_radix(hex, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    // Trailers, then the empty line that ends the message.
                    while !self.line()?.is_empty() {}
                    return Ok(None);
                }
                while self.buf.len() < size + 2 {
                    self.fill()?;
                }
                let piece: Vec<u8> = self.buf.drain(..size).collect();
                assert_eq!(&self.buf[..2], b"\r\n", "chunk not followed by CRLF");
                self.buf.drain(..2);
                Ok(Some(piece))
            }
        }
    }

    /// The rest of the body as (lossy) text.
    pub fn body(&mut self) -> String {
        let mut body = std::mem::take(&mut self.pending);
        while let Some(piece) = self.chunk() {
            body.extend_from_slice(&piece);
        }
        String::from_utf8_lossy(&body).into_owned()
    }

    /// The next SSE event (its text up to the blank line) and when its last byte arrived;
    /// `None` once the body is over.
    pub fn event(&mut self) -> Option<(String, Instant)> {
        loop {
            if let Some(at) = find(&self.pending, b"\n\n") {
                let event = String::from_utf8_lossy(&self.pending[..at]).into_owned();
                self.pending.drain(..at + 2);
                return Some((event, Instant::now()));
            }
            let piece = self.chunk()?;
            self.pending.extend_from_slice(&piece);
        }
    }

    /// Every remaining SSE event, with arrival times.
    pub fn events(&mut self) -> Vec<(String, Instant)> {
        std::iter::from_fn(|| self.event()).collect()
    }

    /// Reads whatever else the server sends until the connection closes or a read times out;
    /// returns those bytes and how it ended.
    pub fn rest(&mut self) -> (Vec<u8>, End) {
        let mut rest = std::mem::take(&mut self.buf);
        loop {
            match self.fill() {
                Ok(()) => rest.append(&mut self.buf),
                Err(end) => return (rest, end),
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The JSON of an SSE event's `data:` line (`None` for `[DONE]` and non-data events).
pub fn sse_json(event: &str) -> Option<serde_json::Value> {
    let data = event.lines().find_map(|l| l.strip_prefix("data: "))?;
    serde_json::from_str(data).ok()
}

/// Whether an SSE event is OpenAI's `data: [DONE]`.
pub fn is_done(event: &str) -> bool {
    event.trim() == "data: [DONE]"
}

/// One sample of Prometheus text: name, labels, value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

/// Parses the samples of Prometheus text exposition (comments skipped).
pub fn samples(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("bad sample line {line:?}")))
        .collect()
}

fn parse_sample(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = line[..name_end].to_owned();
    let mut labels = Vec::new();
    let mut rest = &line[name_end..];
    if let Some(inner) = rest.strip_prefix('{') {
        let mut chars = inner.char_indices();
        let mut key = String::new();
        let close;
        loop {
            let (i, c) = chars.next()?;
            match c {
                '}' => {
                    close = i;
                    break;
                }
                ',' | ' ' => {}
                '=' => {
                    let (_, quote) = chars.next()?;
                    if quote != '"' {
                        return None;
                    }
                    let mut value = String::new();
                    loop {
                        let (_, c) = chars.next()?;
                        match c {
                            '\\' => match chars.next()?.1 {
                                'n' => value.push('\n'),
                                other => value.push(other),
                            },
                            '"' => break,
                            other => value.push(other),
                        }
                    }
                    labels.push((std::mem::take(&mut key), value));
                }
                other => key.push(other),
            }
        }
        rest = &inner[close + 1..];
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Samples named `name` that carry every label in `labels` (other labels may be present).
pub fn matching<'a>(
    samples: &'a [Sample],
    name: &'a str,
    labels: &'a [(&'a str, &'a str)],
) -> impl Iterator<Item = &'a Sample> + 'a {
    samples.iter().filter(move |s| {
        s.name == name
            && labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(sk, sv)| sk == k && sv == v))
    })
}

/// The value of the one sample named `name` with `labels`; `None` when there is none
/// (panics when several match).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let all = samples(text);
    let found: Vec<&Sample> = matching(&all, name, labels).collect();
    assert!(
        found.len() <= 1,
        "several samples of {name} match {labels:?}: {found:?}"
    );
    found.first().map(|s| s.value)
}

/// The sum of every sample named `name` with `labels` (0 when none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let all = samples(text);
    matching(&all, name, labels).map(|s| s.value).sum()
}

/// Runs `promtool check metrics` on `text`; panics with its output when it finds problems,
/// and with a clear message when `promtool` is not installed (the test needs it: Debian's
/// `prometheus` package, which scripts/test.sh installs).
pub fn promtool_check_metrics(text: &str) {
    use std::io::Write as _;
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool is needed to check /metrics but could not be run ({e}): install the \
             Debian package `prometheus` (scripts/test.sh does)"
        ),
    };
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("running promtool");
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\n--- metrics ---\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Every value of header `name` (lower case) in a fakeworker `/echo` answer, in order.
pub fn echo_header(echo: &serde_json::Value, name: &str) -> Vec<String> {
    echo["headers"]
        .as_array()
        .expect("echo has a headers array")
        .iter()
        .filter(|pair| pair[0] == name)
        .map(|pair| pair[1].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Asserts `id` is a UUID v7 in its 36-character text form.
pub fn assert_uuid_v7(id: &str) {
    let bytes = id.as_bytes();
    assert_eq!(id.len(), 36, "not a UUID: {id:?}");
    for (i, b) in bytes.iter().enumerate() {
        if [8, 13, 18, 23].contains(&i) {
            assert_eq!(*b, b'-', "not a UUID: {id:?}");
        } else {
            assert!(b.is_ascii_hexdigit(), "not a UUID: {id:?}");
        }
    }
    assert_eq!(bytes[14], b'7', "not a version 7 UUID: {id:?}");
    assert!(
        b"89abAB".contains(&bytes[19]),
        "not an RFC 9562 variant UUID: {id:?}"
    );
}

/// Asserts events arrived spread out as the worker sent them, not in one lump: the time
/// between the first and last arrival is at least 60% of the time between the first and
/// last `sent_at_us` stamps the worker put in them (which must span at least 200 ms for the
/// check to mean anything).
pub fn assert_arrived_spread_out(arrivals: &[Instant], sent_at_us: &[u64]) {
    assert!(arrivals.len() >= 3, "too few events: {}", arrivals.len());
    assert_eq!(arrivals.len(), sent_at_us.len());
    let sent = Duration::from_micros(sent_at_us[sent_at_us.len() - 1] - sent_at_us[0]);
    assert!(
        sent >= Duration::from_millis(200),
        "the worker sent everything within {sent:?}: the test needs a slower stream"
    );
    let arrived = arrivals[arrivals.len() - 1] - arrivals[0];
    assert!(
        arrived.as_secs_f64() >= 0.6 * sent.as_secs_f64(),
        "events sent over {sent:?} arrived within {arrived:?}: buffered, not streamed"
    );
}

// ------------------------------------------------------------------------------------------
// WebSocket helpers: `[endpoint.websocket]` settings and raw upgrade heads.
// ------------------------------------------------------------------------------------------

impl ProxyConfig {
    /// The config text with an `[endpoint.websocket]` table holding `keys`
    /// (`max_message_bytes`, `max_frame_bytes`, `idle_timeout_seconds`); none leaves the
    /// table out.
    pub fn toml_with_websocket(&self, keys: &[(&str, u64)]) -> String {
        let mut toml = self.toml();
        if !keys.is_empty() {
            // The config ends inside `[[endpoint]]` e1, so this table belongs to it.
            toml.push_str("\n[endpoint.websocket]\n");
            for (key, value) in keys {
                toml.push_str(&format!("{key} = {value}\n"));
            }
        }
        toml
    }

    /// Starts a gateway on this config plus `[endpoint.websocket]` `keys`.
    pub fn start_with_websocket(&self, keys: &[(&str, u64)]) -> TestGateway {
        TestGateway::start(&self.toml_with_websocket(keys))
    }
}

/// A raw HTTP/1.1 WebSocket upgrade request for `path` (RFC 6455 §1.3's sample key), on a
/// keep-alive connection.
pub fn upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
}

impl Http1 {
    /// Reads the next response head whatever its status, `1xx` included (so a `101` is seen
    /// rather than skipped as [`Http1::read_head`] does), and works out the body framing the
    /// same way; returns the status.
    pub fn read_any_head(&mut self) -> u16 {
        let status_line = self
            .line()
            .unwrap_or_else(|end| panic!("no response head: {end:?}"));
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self
                .line()
                .unwrap_or_else(|end| panic!("response head cut short: {end:?}"));
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        self.status = status;
        self.headers = headers;
        let chunked = self
            .header("transfer-encoding")
            .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"));
        let length = self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok());
        self.framing = if chunked {
            Framing::Chunked
        } else if let Some(n) = length {
            Framing::Length(n)
        } else if status == 204 || status == 304 || (100..200).contains(&status) {
            Framing::Length(0)
        } else {
            Framing::Close
        };
        self.end = None;
        self.pending.clear();
        status
    }
}

// ------------------------------------------------------------------------------------------
// Redis
// ------------------------------------------------------------------------------------------

/// A `redis-server` of this test's own, killed on drop.
pub struct RedisServer {
    child: Child,
    /// `redis://127.0.0.1:<port>`.
    pub url: String,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` (or `$REDIS_SERVER`) on a free loopback port, no persistence.
    pub fn start() -> RedisServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        RedisServer::start_on(port)
    }

    /// Kills the server (as a crash would), for tests of Redis going away.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a fresh server on the port of this one (after [`RedisServer::kill`]): empty.
    pub fn restart(&mut self) {
        let port: u16 = self.url.rsplit(':').next().unwrap().parse().unwrap();
        *self = RedisServer::start_on(port);
    }

    /// Starts `redis-server` on `port`.
    fn start_on(port: u16) -> RedisServer {
        let dir = tempfile::tempdir().unwrap();
        let binary = std::env::var("REDIS_SERVER").unwrap_or_else(|_| "redis-server".into());
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| {
                panic!(
                    "these tests need `{binary}` (apt-get install redis-server, or set \
                     REDIS_SERVER to its path): {err}"
                )
            });
        let mut server = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            _dir: dir,
        };
        server.wait_ready(port);
        server
    }

    /// Polls with PING until the server answers.
    fn wait_ready(&mut self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("redis-server exited at start ({status}); port {port} taken?");
            }
            if ping(port) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "redis-server not answering on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ping(port: u16) -> bool {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut reply = [0; 7];
    conn.write_all(b"PING\r\n").is_ok()
        && conn.read_exact(&mut reply).is_ok()
        && &reply == b"+PONG\r\n"
}

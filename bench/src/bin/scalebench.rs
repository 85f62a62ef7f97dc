//! `scalebench`: how fast Portico's autoscaler starts process workers, hands them the
//! requests it held, reacts to a burst and scales back down.
//!
//! It runs `portico run` twice on loopback, each time with one endpoint whose process worker
//! is `fakeworker` (`/health` answers 503 for `--boot-delay-ms`, then 200), and writes a
//! Markdown report and an SVG plot.
//!
//! 1. **Cold starts** (`--rounds`; `min_workers = 0`, idle timeout and cooldown 1 s). Each
//!    round waits until the endpoint is at zero workers with no process left, then sends one
//!    streaming chat request, which Portico holds while it starts a worker.
//!    - *Hand-off*: from the worker's first `GET /health` answered 200 to the held request
//!      reaching the worker. Both instants come from fakeworker's access log, stamped (µs) on
//!      the worker's clock when each handler returns; Portico captures worker output and logs
//!      it (`PORTICO_LOG=…,portico::worker=debug`), so the lines are read from Portico's log,
//!      but their stamps are the worker's own. Cross-check on Portico's side: its
//!      `replica_ready` event (admin API, ms) to the `sent_at_us` of the worker's first chunk.
//!    - *Wake to first byte*: client side, from just before connecting to Portico to the
//!      response head, and to the first `data:` event; with a breakdown (request → `woke`
//!      event → worker process up → first 200, whose excess over the boot delay is the
//!      readiness probe's back-off).
//! 2. **Bursts** (`--bursts`; `min_workers = 1`, `max_workers = 8`, target 4 in flight per
//!    worker; workers run 4 streams at once, more queue). With one worker ready and idle,
//!    `--burst-clients` clients each send streaming requests back to back (20 tokens at 10
//!    tokens/s, so 2 s each when running) for `--burst-seconds`, then stop. From the
//!    endpoint's events (wall clock on both sides): burst start → first `scaled_up`, →
//!    the order for the peak count, → first new worker ready, → all of them ready; burst end
//!    → back at one worker. The first burst is polled every 100 ms
//!    (`GET /admin/endpoints/e1`) from a few idle seconds before it until the endpoint is
//!    back at one worker, and plotted; later, shorter bursts only add reaction-time samples.
//!
//! Every process is stopped: SIGTERM to Portico (which stops its workers), SIGKILL after
//! the grace period, then every worker pid Portico logged is checked to be gone (and killed
//! if not, which the report flags). A SIGTERM or Ctrl-C stops the run the same way.
//!
//! ```sh
//! scalebench --portico target/release/portico --fakeworker target/release/fakeworker \
//!   --out docs/benchmarks-scaling.md --svg docs/img/scaling-burst.svg
//! ```
//!
//! A JSON summary goes to stdout, progress to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use bench::harness::{
    self, Program, RunDir, Stopped, connect, days_from_civil, percentile, portico_command,
    utc_minute,
};
use bytes::{Bytes, BytesMut};
use clap::Parser;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior, sleep, timeout};

/// Measures Portico's autoscaler with fakeworker process workers; writes a Markdown report
/// and an SVG plot.
#[derive(Parser, Debug)]
#[command(name = "scalebench", version)]
struct Args {
    /// The `portico` binary.
    #[arg(long)]
    portico: PathBuf,
    /// The `fakeworker` binary (made absolute for the worker command).
    #[arg(long)]
    fakeworker: PathBuf,
    /// Cold starts to measure (each from zero workers).
    #[arg(long, default_value_t = 12)]
    rounds: usize,
    /// fakeworker's `--boot-delay-ms`: how long /health answers 503 after the worker starts.
    #[arg(long, default_value_t = 2000)]
    boot_delay_ms: u64,
    /// Bursts; the first is plotted, the others only add reaction-time samples.
    #[arg(long, default_value_t = 3)]
    bursts: usize,
    /// Concurrent clients during a burst, each sending streams back to back.
    #[arg(long, default_value_t = 40)]
    burst_clients: usize,
    /// Length of the first (plotted) burst, in seconds.
    #[arg(long, default_value_t = 20)]
    burst_seconds: u64,
    /// Length of the later bursts, in seconds.
    #[arg(long, default_value_t = 6)]
    extra_burst_seconds: u64,
    /// The Markdown report to write.
    #[arg(long, default_value = "docs/benchmarks-scaling.md")]
    out: PathBuf,
    /// The SVG plot to write (linked from the report by its path relative to the report).
    #[arg(long, default_value = "docs/img/scaling-burst.svg")]
    svg: PathBuf,
    /// Directory for configs and logs; a new one under the temporary directory, removed at
    /// the end, when not given.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Keep the run directory made when `--run-dir` is not given.
    #[arg(long)]
    keep: bool,
    /// Source revision the binaries were built from, for the report.
    #[arg(long, default_value = "unknown")]
    source: String,
    /// Toolchain the binaries were built with, for the report.
    #[arg(long, default_value = "unknown")]
    toolchain: String,
}

// The endpoint every set-up defines, and where to reach it.
const CHAT_PATH: &str = "/project/p1/endpoint/e1/v1/chat/completions";
const STATUS_PATH: &str = "/admin/endpoints/e1";
const EVENTS_PATH: &str = "/admin/endpoints/e1/events?limit=1000";
/// In-flight requests per worker the scaler aims at (`scaling.target`).
const TARGET: u32 = 4;
/// `scaling.max_workers`.
const MAX_WORKERS: u32 = 8;
/// `server.grace_period_seconds`: how long Portico may take to stop after SIGTERM.
const GRACE_SECONDS: u64 = 5;
/// Admin polling period for the plot.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Idle time at one worker before the plotted burst, and after the endpoint is back.
const PLOT_MARGIN: Duration = Duration::from_secs(3);
/// Tokens per burst stream, at [`BURST_TOKENS_PER_SECOND`].
const BURST_TOKENS: u32 = 20;
const BURST_TOKENS_PER_SECOND: u32 = 10;

const PROGRAM: Program = Program::new("scalebench");

fn log(message: impl std::fmt::Display) {
    PROGRAM.log(message);
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // On a signal, dropping `run` stops the Portico it was using (see `Portico`'s `Drop`).
    harness::until_signal(run(&args)).await
}

async fn run(args: &Args) -> anyhow::Result<()> {
    if args.rounds == 0 || args.bursts == 0 || args.burst_clients == 0 {
        bail!("--rounds, --bursts and --burst-clients must be at least 1");
    }
    let fakeworker = std::fs::canonicalize(&args.fakeworker)
        .with_context(|| format!("finding {}", args.fakeworker.display()))?;
    // Portico runs in the run directory (its config's relative paths resolve there anyway).
    let portico = std::fs::canonicalize(&args.portico)
        .with_context(|| format!("finding {}", args.portico.display()))?;
    let run_dir = RunDir::new(&PROGRAM, args.run_dir.clone(), args.keep)?;
    log(format!("run directory: {}", run_dir.path().display()));
    let started = SystemTime::now();
    let cpu_before = CpuTimes::read();

    let cold = cold_starts(args, &portico, &fakeworker, run_dir.path()).await?;
    let bursts = bursts(args, &portico, &fakeworker, run_dir.path()).await?;

    let cpu = CpuTimes::read()
        .zip(cpu_before)
        .map(|(after, before)| after.since(&before));
    let report = Report {
        args,
        fakeworker: &fakeworker,
        started,
        elapsed: started.elapsed().unwrap_or_default(),
        cpu,
        cold: &cold,
        bursts: &bursts,
    };
    for path in [&args.out, &args.svg] {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let plotted = &bursts.bursts[0];
    std::fs::write(
        &args.svg,
        svg_plot(&bursts.polls, plotted, args.burst_clients),
    )
    .with_context(|| format!("writing {}", args.svg.display()))?;
    std::fs::write(&args.out, report.markdown())
        .with_context(|| format!("writing {}", args.out.display()))?;
    log(format!(
        "wrote {} and {}",
        args.out.display(),
        args.svg.display()
    ));
    println!("{}", report.summary());
    Ok(())
}

// ------------------------------------------------------------------------------ portico

/// One Portico set-up: its config and how it logs.
struct Setup {
    /// File names in the run directory (`NAME.toml`, `NAME.log`).
    name: &'static str,
    /// The config file.
    config: String,
    /// `PORTICO_LOG`.
    log_filter: &'static str,
}

impl Setup {
    /// A config with one public process endpoint `p1/e1` running `fakeworker --port {port}
    /// WORKER_ARGS`, and `scaling` as its `[endpoint.scaling]` table.
    fn new(
        name: &'static str,
        fakeworker: &Path,
        worker_args: &[String],
        scaling: &[(&str, String)],
        log_filter: &'static str,
    ) -> Setup {
        let mut command = vec![
            fakeworker.display().to_string(),
            "--port".to_owned(),
            "{port}".to_owned(),
        ];
        command.extend(worker_args.iter().cloned());
        // JSON strings are TOML basic strings (serde_json writes only escapes TOML knows).
        let command = command
            .iter()
            .map(|arg| json!(arg).to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut config = format!(
            r#"[server]
admin_listen = "127.0.0.1:0"
grace_period_seconds = {GRACE_SECONDS}
access_log = "{name}-access.log"
state_dir = "{name}-state"

[[listener]]
name = "public"
address = "127.0.0.1:0"

[[project]]
id = "p1"

[[endpoint]]
id = "e1"
project = "p1"
public = true

[endpoint.workers]
kind = "process"
command = [{command}]
startup_timeout_seconds = 60
# The access log lines the hand-off is measured from (whatever RUST_LOG says outside).
env = {{ RUST_LOG = "info" }}

[endpoint.scaling]
"#
        );
        for (key, value) in scaling {
            let _ = writeln!(config, "{key} = {value}");
        }
        Setup {
            name,
            config,
            log_filter,
        }
    }
}

/// A running `portico run`. Dropping it without [`Portico::stop`] stops it the same way,
/// blocking, so that an error or a signal leaves no process behind.
struct Portico {
    child: Child,
    pid: u32,
    public: SocketAddr,
    admin: SocketAddr,
    /// Its stderr: JSON log lines, worker output included.
    log: PathBuf,
    stopped: bool,
}

impl Portico {
    async fn start(bin: &Path, dir: &Path, setup: &Setup) -> anyhow::Result<Portico> {
        let config = dir.join(format!("{}.toml", setup.name));
        std::fs::write(&config, &setup.config)
            .with_context(|| format!("writing {}", config.display()))?;
        let log = dir.join(format!("{}.log", setup.name));
        let stderr =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut child = portico_command(bin, &config, setup.log_filter, dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            // Its own process group: a Ctrl-C at the terminal reaches this program, which
            // stops Portico with one SIGTERM, rather than both at once.
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("portico exited at once")?;
        let stdout = child
            .stdout
            .take()
            .context("portico's stdout is not piped")?;
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        // From here on, `Drop` stops it whatever happens.
        let mut portico = Portico {
            child,
            pid,
            public: unbound,
            admin: unbound,
            log,
            stopped: false,
        };
        let mut lines = BufReader::new(stdout).lines();
        let (mut public, mut admin) = (None, None);
        let read = timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await? {
                let Some((name, addr)) = line
                    .strip_prefix("listening on ")
                    .and_then(|rest| rest.split_once(' '))
                else {
                    continue;
                };
                let addr: SocketAddr = addr
                    .trim()
                    .parse()
                    .with_context(|| format!("bad address in {line:?}"))?;
                match name {
                    "public" => public = Some(addr),
                    "admin" => {
                        admin = Some(addr);
                        break;
                    }
                    _ => {}
                }
            }
            anyhow::Ok(())
        })
        .await;
        match read {
            Ok(result) => result?,
            Err(_) => bail!("portico printed no `listening on admin` line within 20 s"),
        }
        let (Some(public), Some(admin)) = (public, admin) else {
            bail!(
                "portico exited before listening (see {})",
                portico.log.display()
            );
        };
        (portico.public, portico.admin) = (public, admin);
        // Nothing more is expected on stdout (the access log goes to a file); keep draining it
        // so a stray line can never block Portico on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(portico)
    }

    /// The endpoint's status from the admin API.
    async fn status(&self) -> anyhow::Result<Status> {
        get_json(self.admin, STATUS_PATH).await
    }

    /// The endpoint's events from the admin API, oldest first.
    async fn events(&self) -> anyhow::Result<Vec<Event>> {
        Ok(get_json::<Events>(self.admin, EVENTS_PATH).await?.events)
    }

    /// Polls the status until `done` holds, for at most `limit`.
    async fn wait_for(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&Status) -> bool,
    ) -> anyhow::Result<Status> {
        let deadline = Instant::now() + limit;
        loop {
            let last = self.status().await;
            if let Ok(status) = &last
                && done(status)
            {
                return Ok(status.clone());
            }
            if Instant::now() >= deadline {
                bail!("waited {limit:?} for {what}; last status: {last:?}");
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, a wait of up to the grace period and 10 s more, SIGKILL if it is still
    /// there; then no worker it started may remain.
    async fn stop(mut self) -> anyhow::Result<Stopped> {
        self.stopped = true;
        let exit = if self.child.try_wait()?.is_some() {
            "had exited already".to_owned()
        } else {
            PROGRAM.signal(self.pid, "TERM");
            match timeout(Duration::from_secs(GRACE_SECONDS + 10), self.child.wait()).await {
                Ok(status) => format!("exited after SIGTERM ({})", status?),
                Err(_) => {
                    self.child.kill().await?;
                    "did not exit within the grace period: SIGKILL".to_owned()
                }
            }
        };
        Ok(Stopped::new(exit, PROGRAM.reap_workers(&self.log)))
    }
}

impl Drop for Portico {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let limit = Duration::from_secs(GRACE_SECONDS + 5);
        PROGRAM.stop_blocking("portico", &mut self.child, self.pid, limit);
        let survivors = PROGRAM.reap_workers(&self.log).survivors;
        if !survivors.is_empty() {
            log(format!("killed surviving workers: {survivors:?}"));
        }
    }
}

// ------------------------------------------------------------------------------ admin API

/// `GET /admin/endpoints/e1`, the parts read here.
#[derive(Debug, Clone, Deserialize)]
struct Status {
    #[serde(default)]
    inflight: u64,
    #[serde(default)]
    pending: u64,
    workers: Workers,
}

/// `workers` of [`Status`].
#[derive(Debug, Clone, Deserialize)]
struct Workers {
    desired: u32,
    ready: u32,
    starting: u32,
    draining: u32,
    #[serde(default)]
    replicas: Vec<Value>,
}

impl Status {
    /// Exactly `n` workers wanted and ready, none starting or draining.
    fn settled_at(&self, n: u32) -> bool {
        let w = &self.workers;
        w.desired == n
            && w.ready == n
            && w.starting == 0
            && w.draining == 0
            && w.replicas.len() == n as usize
    }
}

/// `GET /admin/endpoints/e1/events`.
#[derive(Debug, Deserialize)]
struct Events {
    events: Vec<Event>,
}

/// One lifecycle event.
#[derive(Debug, Clone, Deserialize)]
struct Event {
    seq: u64,
    /// RFC 3339, milliseconds.
    time: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    workers: Option<u32>,
}

impl Event {
    /// The event's time in µs since the epoch.
    fn at_us(&self) -> Option<i64> {
        rfc3339_us(&self.time)
    }
}

// ------------------------------------------------------------------------------ HTTP client

/// `GET path` on `addr`, expecting 200 and JSON; gives up after 5 s.
async fn get_json<T: DeserializeOwned>(addr: SocketAddr, path: &str) -> anyhow::Result<T> {
    let fetch = async {
        let mut sender = connect(addr).await?;
        let request = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if status != StatusCode::OK {
            bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        serde_json::from_slice(&body).with_context(|| format!("GET {path}: not the JSON expected"))
    };
    timeout(Duration::from_secs(5), fetch)
        .await
        .map_err(|_| anyhow!("GET {path}: no answer within 5 s"))?
}

/// What the client saw of one streamed chat completion.
#[derive(Debug, Default, Clone)]
struct Streamed {
    /// From just before connecting to the response head.
    head: Duration,
    /// To the first `data:` event.
    first_data: Option<Duration>,
    /// `sent_at_us` of the first event: when the worker handed it over, on its clock.
    first_sent_at_us: Option<i64>,
    /// A comment line (`: waking`) came before the first event.
    waking_comment: bool,
}

/// Sends one streaming chat completion through Portico and reads it to the end.
async fn stream_chat(
    addr: SocketAddr,
    max_tokens: u32,
    limit: Duration,
) -> anyhow::Result<Streamed> {
    let start = Instant::now();
    let exchange = async {
        let mut sender = connect(addr).await?;
        let body = json!({
            "model": "fake-model",
            "messages": [{"role": "user", "content": "How fast does Portico wake up?"}],
            "stream": true,
            "max_tokens": max_tokens,
        });
        let request = Request::post(CHAT_PATH)
            .header(header::HOST, addr.to_string())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "text/event-stream")
            .body(Full::new(Bytes::from(body.to_string())))?;
        let response = sender.send_request(request).await?;
        let mut out = Streamed {
            head: start.elapsed(),
            ..Streamed::default()
        };
        let status = response.status();
        if status != StatusCode::OK {
            let body = response.into_body().collect().await?.to_bytes();
            bail!(
                "status {}: {}",
                status.as_u16(),
                String::from_utf8_lossy(&body)
            );
        }
        let mut body = response.into_body();
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let at = start.elapsed();
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(newline) = buf.iter().position(|&b| b == b'\n') {
                let line = buf.split_to(newline + 1);
                let line = line.trim_ascii();
                if line.starts_with(b":") {
                    out.waking_comment |= out.first_data.is_none();
                    continue;
                }
                let Some(payload) = line.strip_prefix(b"data:") else {
                    continue;
                };
                let payload = payload.trim_ascii();
                if payload == b"[DONE]" {
                    continue;
                }
                let event: Value = serde_json::from_slice(payload)
                    .with_context(|| format!("bad event {:?}", String::from_utf8_lossy(payload)))?;
                if let Some(error) = event.get("error") {
                    bail!("error event: {error}");
                }
                if out.first_data.is_none() {
                    out.first_data = Some(at);
                    out.first_sent_at_us = event.get("sent_at_us").and_then(Value::as_i64);
                }
            }
        }
        Ok(out)
    };
    timeout(limit, exchange)
        .await
        .map_err(|_| anyhow!("no complete answer within {limit:?}"))?
}

// ------------------------------------------------------------------------------ worker output

/// One line a worker printed, as Portico logged it.
#[derive(Debug, Clone, PartialEq)]
struct WorkerLine {
    /// When Portico read it, µs since the epoch.
    read_us: i64,
    /// The worker's own timestamp at the start of the line, µs since the epoch.
    stamp_us: Option<i64>,
    /// The rest of the line, e.g. `INFO GET /health 200`.
    text: String,
}

/// The worker lines of Portico's JSON log from byte `from` on.
fn worker_lines(log: &Path, from: u64) -> Vec<WorkerLine> {
    let bytes = std::fs::read(log).unwrap_or_default();
    let start = usize::try_from(from).unwrap_or(usize::MAX).min(bytes.len());
    bytes[start..]
        .split(|&b| b == b'\n')
        .filter_map(|line| serde_json::from_slice::<Value>(line).ok())
        .filter(|v| v.get("target").and_then(Value::as_str) == Some("portico::worker"))
        .filter_map(|v| {
            let read_us = rfc3339_us(v.get("timestamp")?.as_str()?)?;
            Some(parse_worker_line(read_us, v.get("message")?.as_str()?))
        })
        .collect()
}

/// Splits fakeworker's `2026-11-23T16:12:36.548432Z  INFO GET /health 200` into its stamp
/// and the rest; a line without a stamp (`listening on …`) is kept whole.
fn parse_worker_line(read_us: i64, message: &str) -> WorkerLine {
    let message = message.trim();
    if let Some((first, rest)) = message.split_once(char::is_whitespace)
        && let Some(stamp) = rfc3339_us(first)
    {
        return WorkerLine {
            read_us,
            stamp_us: Some(stamp),
            text: rest.trim().to_owned(),
        };
    }
    WorkerLine {
        read_us,
        stamp_us: None,
        text: message.to_owned(),
    }
}

/// What one cold start's worker output shows.
#[derive(Debug, Default, Clone, PartialEq)]
struct WorkerTimes {
    /// When Portico read the worker's `listening on` line (the worker starts its boot-delay
    /// clock right after printing it).
    up_us: Option<i64>,
    /// The worker's stamp of its first `GET /health` answered 200.
    first_200_us: Option<i64>,
    /// Health probes answered up to and including that one.
    probes: usize,
    /// The worker's stamp of the first chat request after it.
    first_request_us: Option<i64>,
}

fn worker_times(lines: &[WorkerLine]) -> WorkerTimes {
    let up_us = lines
        .iter()
        .find(|l| l.text.starts_with("listening on"))
        .map(|l| l.read_us);
    let Some(ready) = lines
        .iter()
        .position(|l| l.text.ends_with("GET /health 200"))
    else {
        return WorkerTimes {
            up_us,
            ..WorkerTimes::default()
        };
    };
    WorkerTimes {
        up_us,
        first_200_us: lines[ready].stamp_us,
        probes: lines[..=ready]
            .iter()
            .filter(|l| l.text.contains("GET /health "))
            .count(),
        first_request_us: lines[ready + 1..]
            .iter()
            .find(|l| l.text.contains("POST /v1/chat/completions"))
            .and_then(|l| l.stamp_us),
    }
}

// ------------------------------------------------------------------------------ cold starts

/// One cold start.
#[derive(Debug, Default, Clone)]
struct ColdRound {
    /// Why the round has no figures, if it failed.
    error: Option<String>,
    client: Streamed,
    worker: WorkerTimes,
    /// Client clock (wall) just before connecting.
    sent_us: i64,
    woke_us: Option<i64>,
    ready_event_us: Option<i64>,
}

impl ColdRound {
    /// First 200 → held request at the worker, worker clock.
    fn handoff_ms(&self) -> Option<f64> {
        diff_ms(self.worker.first_200_us, self.worker.first_request_us)
    }
    /// `replica_ready` event → first chunk sent by the worker.
    fn handoff_event_ms(&self) -> Option<f64> {
        diff_ms(self.ready_event_us, self.client.first_sent_at_us)
    }
    fn head_ms(&self) -> Option<f64> {
        self.error.is_none().then(|| ms(self.client.head))
    }
    fn first_data_ms(&self) -> Option<f64> {
        self.client.first_data.map(ms)
    }
    fn to_woke_ms(&self) -> Option<f64> {
        diff_ms(Some(self.sent_us), self.woke_us)
    }
    fn woke_to_up_ms(&self) -> Option<f64> {
        diff_ms(self.woke_us, self.worker.up_us)
    }
    fn up_to_200_ms(&self) -> Option<f64> {
        diff_ms(self.worker.up_us, self.worker.first_200_us)
    }
}

/// The cold-start part of the run.
struct ColdPhase {
    setup: Setup,
    rounds: Vec<ColdRound>,
    stopped: Stopped,
}

async fn cold_starts(
    args: &Args,
    portico: &Path,
    fakeworker: &Path,
    dir: &Path,
) -> anyhow::Result<ColdPhase> {
    let setup = Setup::new(
        "cold",
        fakeworker,
        &["--boot-delay-ms".to_owned(), args.boot_delay_ms.to_string()],
        &[
            ("min_workers", "0".into()),
            ("max_workers", MAX_WORKERS.to_string()),
            ("target", TARGET.to_string()),
            ("idle_timeout_seconds", "1".into()),
            ("initial_cooldown_seconds", "1".into()),
        ],
        "info,portico::worker=debug",
    );
    let portico = Portico::start(portico, dir, &setup).await?;
    log(format!(
        "cold starts: portico pid {} on {} (admin {}), {} rounds, boot delay {} ms",
        portico.pid, portico.public, portico.admin, args.rounds, args.boot_delay_ms
    ));
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut seen_seq = 0;
    for round in 1..=args.rounds {
        portico
            .wait_for("zero workers", Duration::from_secs(60), |s| s.settled_at(0))
            .await?;
        let offset = std::fs::metadata(&portico.log).map_or(0, |m| m.len());
        let sent_us = now_us();
        let answer = stream_chat(portico.public, 4, Duration::from_secs(120)).await;
        let mut result = ColdRound {
            sent_us,
            ..ColdRound::default()
        };
        match answer {
            Ok(client) => result.client = client,
            Err(e) => result.error = Some(format!("{e:#}")),
        }
        // The worker's line for the request may reach Portico's log a moment later.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            result.worker = worker_times(&worker_lines(&portico.log, offset));
            if result.worker.first_request_us.is_some() || Instant::now() >= deadline {
                break;
            }
            sleep(Duration::from_millis(20)).await;
        }
        let events = portico.events().await?;
        let new: Vec<&Event> = events.iter().filter(|e| e.seq > seen_seq).collect();
        seen_seq = events.last().map_or(seen_seq, |e| e.seq);
        let first = |kind: &str| new.iter().find(|e| e.kind == kind).and_then(|e| e.at_us());
        result.woke_us = first("woke");
        result.ready_event_us = first("replica_ready");
        log(format!(
            "cold start {round}/{}: first byte {} ms, hand-off {} ms (Portico side {} ms), {} probes{}",
            args.rounds,
            fmt(result.head_ms(), 0),
            fmt(result.handoff_ms(), 2),
            fmt(result.handoff_event_ms(), 1),
            result.worker.probes,
            result
                .error
                .as_deref()
                .map_or(String::new(), |e| format!(", FAILED: {e}")),
        ));
        rounds.push(result);
    }
    let stopped = portico.stop().await?;
    log(format!(
        "cold starts: portico {}; {} workers started, {} survived",
        stopped.exit,
        stopped.workers_started,
        stopped.survivors.len()
    ));
    Ok(ColdPhase {
        setup,
        rounds,
        stopped,
    })
}

// ------------------------------------------------------------------------------ bursts

/// One admin poll.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Poll {
    /// Seconds since the poller started.
    t: f64,
    desired: u32,
    ready: u32,
    inflight: u64,
    pending: u64,
}

/// What the burst clients saw.
#[derive(Debug, Default, Clone)]
struct Load {
    ok: usize,
    failed: usize,
    errors: BTreeMap<String, usize>,
    /// Time to first event of every completed stream, ms.
    first_event_ms: Vec<f64>,
}

/// One burst and the endpoint's reaction.
#[derive(Debug, Default, Clone)]
struct Burst {
    seconds: u64,
    load: Load,
    /// Seconds since the poller started (first burst only).
    plot_start: f64,
    plot_end: f64,
    /// Scale-up orders while the clients were sending: ms from burst start, workers.
    orders: Vec<(f64, u32)>,
    /// Highest count ordered during the burst, and when it was first ordered (ms).
    peak: u32,
    peak_order_ms: Option<f64>,
    /// From burst start: first new worker ready; the last of `peak - 1` new ones ready.
    first_ready_ms: Option<f64>,
    all_ready_ms: Option<f64>,
    /// From the end of the burst (its last stream done) to the order back to one worker.
    back_to_one_ms: Option<f64>,
}

/// The burst part of the run.
struct BurstPhase {
    setup: Setup,
    bursts: Vec<Burst>,
    /// Admin polls around the first burst.
    polls: Vec<Poll>,
    stopped: Stopped,
}

async fn bursts(
    args: &Args,
    portico: &Path,
    fakeworker: &Path,
    dir: &Path,
) -> anyhow::Result<BurstPhase> {
    let setup = Setup::new(
        "burst",
        fakeworker,
        &[
            "--boot-delay-ms".to_owned(),
            args.boot_delay_ms.to_string(),
            "--tokens-per-second".to_owned(),
            BURST_TOKENS_PER_SECOND.to_string(),
            "--max-running".to_owned(),
            TARGET.to_string(),
        ],
        &[
            ("min_workers", "1".into()),
            ("max_workers", MAX_WORKERS.to_string()),
            ("target", TARGET.to_string()),
            ("idle_timeout_seconds", "5".into()),
            ("initial_cooldown_seconds", "5".into()),
            ("stable_window_seconds", "10".into()),
            ("panic_window_seconds", "6".into()),
        ],
        "info",
    );
    let portico = Portico::start(portico, dir, &setup).await?;
    log(format!(
        "bursts: portico pid {} on {} (admin {}); waiting for the first worker",
        portico.pid, portico.public, portico.admin
    ));
    portico
        .wait_for("one ready worker", Duration::from_secs(60), |s| {
            s.settled_at(1)
        })
        .await?;

    let origin = Instant::now();
    let (stop_polls, stop_rx) = watch::channel(false);
    let mut poller = Some(tokio::spawn(poll(portico.admin, origin, stop_rx)));
    sleep(PLOT_MARGIN).await;

    let mut bursts = Vec::with_capacity(args.bursts);
    let mut polls = Vec::new();
    for index in 0..args.bursts {
        let seconds = if index == 0 {
            args.burst_seconds
        } else {
            args.extra_burst_seconds
        };
        log(format!(
            "burst {}/{}: {} clients for {seconds} s",
            index + 1,
            args.bursts,
            args.burst_clients
        ));
        let start_us = now_us();
        let start = Instant::now();
        let load = burst_load(
            portico.public,
            args.burst_clients,
            start + Duration::from_secs(seconds),
        )
        .await;
        let end_us = now_us();
        let end = Instant::now();
        portico
            .wait_for(
                "the endpoint back at one worker",
                Duration::from_secs(120),
                |s| s.settled_at(1),
            )
            .await?;
        let mut burst = Burst {
            seconds,
            load,
            ..Burst::default()
        };
        if index == 0 {
            burst.plot_start = start.duration_since(origin).as_secs_f64();
            burst.plot_end = end.duration_since(origin).as_secs_f64();
            sleep(PLOT_MARGIN).await;
            let _ = stop_polls.send(true);
            if let Some(poller) = poller.take() {
                polls = poller.await.unwrap_or_default();
            }
        } else {
            sleep(PLOT_MARGIN).await;
        }
        reaction(&mut burst, &portico.events().await?, start_us, end_us);
        log(format!(
            "burst {}: {} streams ok, {} failed; first order +{} ms, peak {} at +{} ms, all ready +{} ms, back to 1 worker {} ms after the end",
            index + 1,
            burst.load.ok,
            burst.load.failed,
            fmt(burst.orders.first().map(|o| o.0), 0),
            burst.peak,
            fmt(burst.peak_order_ms, 0),
            fmt(burst.all_ready_ms, 0),
            fmt(burst.back_to_one_ms, 0),
        ));
        bursts.push(burst);
    }
    let stopped = portico.stop().await?;
    log(format!(
        "bursts: portico {}; {} workers started, {} survived",
        stopped.exit,
        stopped.workers_started,
        stopped.survivors.len()
    ));
    Ok(BurstPhase {
        setup,
        bursts,
        polls,
        stopped,
    })
}

/// Polls the endpoint's status every [`POLL_EVERY`] until told to stop.
async fn poll(admin: SocketAddr, origin: Instant, mut stop: watch::Receiver<bool>) -> Vec<Poll> {
    let mut polls = Vec::new();
    let mut ticks = tokio::time::interval(POLL_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.changed() => return polls,
            _ = ticks.tick() => {
                let t = origin.elapsed().as_secs_f64();
                if let Ok(s) = get_json::<Status>(admin, STATUS_PATH).await {
                    polls.push(Poll {
                        t,
                        desired: s.workers.desired,
                        ready: s.workers.ready,
                        inflight: s.inflight,
                        pending: s.pending,
                    });
                }
            }
        }
    }
}

/// `clients` tasks, each sending streams back to back until `until`, then finishing its
/// last one.
async fn burst_load(addr: SocketAddr, clients: usize, until: Instant) -> Load {
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            tokio::spawn(async move {
                let mut load = Load::default();
                while Instant::now() < until {
                    match stream_chat(addr, BURST_TOKENS, Duration::from_secs(120)).await {
                        Ok(streamed) => {
                            load.ok += 1;
                            load.first_event_ms.extend(streamed.first_data.map(ms));
                        }
                        Err(e) => {
                            load.failed += 1;
                            *load.errors.entry(format!("{e:#}")).or_default() += 1;
                            // Do not spin on an error that repeats at once.
                            sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
                load
            })
        })
        .collect();
    let mut total = Load::default();
    for task in tasks {
        let load = task.await.unwrap_or_else(|e| Load {
            failed: 1,
            errors: BTreeMap::from([(format!("client task failed: {e}"), 1)]),
            ..Load::default()
        });
        total.ok += load.ok;
        total.failed += load.failed;
        for (error, n) in load.errors {
            *total.errors.entry(error).or_default() += n;
        }
        total.first_event_ms.extend(load.first_event_ms);
    }
    total
}

/// Fills the reaction times of `burst` from the endpoint's events.
fn reaction(burst: &mut Burst, events: &[Event], start_us: i64, end_us: i64) {
    let after: Vec<(i64, &Event)> = events
        .iter()
        .filter_map(|e| Some((e.at_us()?, e)))
        .filter(|(at, _)| *at >= start_us)
        .collect();
    let since_start = |at: i64| (at - start_us) as f64 / 1000.0;
    let ups: Vec<(i64, u32)> = after
        .iter()
        .filter(|(at, e)| e.kind == "scaled_up" && *at <= end_us)
        .filter_map(|(at, e)| Some((*at, e.workers?)))
        .collect();
    burst.orders = ups.iter().map(|&(at, n)| (since_start(at), n)).collect();
    burst.peak = ups.iter().map(|&(_, n)| n).max().unwrap_or(1);
    burst.peak_order_ms = ups
        .iter()
        .find(|&&(_, n)| n == burst.peak)
        .map(|&(at, _)| since_start(at));
    let readies: Vec<i64> = after
        .iter()
        .filter(|(_, e)| e.kind == "replica_ready")
        .map(|(at, _)| *at)
        .collect();
    burst.first_ready_ms = readies.first().map(|&at| since_start(at));
    let new_workers = burst.peak.saturating_sub(1) as usize;
    burst.all_ready_ms = (new_workers > 0)
        .then(|| readies.get(new_workers - 1))
        .flatten()
        .map(|&at| since_start(at));
    burst.back_to_one_ms = after
        .iter()
        .find(|(at, e)| *at >= end_us && e.kind == "scaled_down" && e.workers == Some(1))
        .map(|(at, _)| (at - end_us) as f64 / 1000.0);
}

// ------------------------------------------------------------------------------ time and stats

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn diff_ms(from_us: Option<i64>, to_us: Option<i64>) -> Option<f64> {
    Some((to_us? - from_us?) as f64 / 1000.0)
}

/// µs since the epoch of a UTC RFC 3339 time, `2026-11-23T08:27:16.123Z` (any number of
/// fraction digits, `Z` or `+00:00`); `None` for anything else.
fn rfc3339_us(text: &str) -> Option<i64> {
    let text = text
        .strip_suffix('Z')
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = text.split_once('T')?;
    let mut date = date.splitn(3, '-').map(str::parse::<i64>);
    let (year, month, day) = (date.next()?.ok()?, date.next()?.ok()?, date.next()?.ok()?);
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut hms = hms.splitn(3, ':').map(str::parse::<i64>);
    let (h, m, s) = (hms.next()?.ok()?, hms.next()?.ok()?, hms.next()?.ok()?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    if !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let micros = format!("{fraction:0<6}")[..6].parse::<i64>().ok()?;
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s;
    Some(secs * 1_000_000 + micros)
}

/// p50, p99, max and count of some measure.
#[derive(Debug, Clone, Copy, Default)]
struct Summary {
    n: usize,
    p50: Option<f64>,
    p99: Option<f64>,
    max: Option<f64>,
}

fn summarize(values: impl IntoIterator<Item = Option<f64>>) -> Summary {
    let mut values: Vec<f64> = values.into_iter().flatten().collect();
    values.sort_by(f64::total_cmp);
    Summary {
        n: values.len(),
        p50: percentile(&values, 50.0),
        p99: percentile(&values, 99.0),
        max: values.last().copied(),
    }
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

/// The machine's CPU time from `/proc/stat`, all CPUs, in clock ticks.
#[derive(Debug, Clone, Copy)]
struct CpuTimes {
    busy: u64,
    steal: u64,
    total: u64,
}

impl CpuTimes {
    fn read() -> Option<CpuTimes> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        // user nice system idle iowait irq softirq steal
        let get = |i: usize| v.get(i).copied().unwrap_or(0);
        let busy = get(0) + get(1) + get(2) + get(5) + get(6) + get(7);
        Some(CpuTimes {
            busy,
            steal: get(7),
            total: busy + get(3) + get(4),
        })
    }

    fn since(&self, before: &CpuTimes) -> CpuTimes {
        CpuTimes {
            busy: self.busy.saturating_sub(before.busy),
            steal: self.steal.saturating_sub(before.steal),
            total: self.total.saturating_sub(before.total),
        }
    }
}

// ------------------------------------------------------------------------------ plot

/// The first burst as an SVG line chart: desired and ready workers, in-flight requests ÷
/// target (and held requests when there were any), over seconds.
fn svg_plot(polls: &[Poll], burst: &Burst, clients: usize) -> String {
    let (width, height) = (960.0, 460.0);
    let (left, right, top, bottom) = (64.0, 190.0, 48.0, 56.0);
    let (pw, ph) = (width - left - right, height - top - bottom);
    let t_end = polls.last().map_or(1.0, |p| p.t).max(1.0);
    let t_max = (t_end / 5.0).ceil() * 5.0;
    let load_max = polls
        .iter()
        .map(|p| p.inflight as f64 / f64::from(TARGET))
        .chain(polls.iter().map(|p| p.pending as f64))
        .fold(0.0, f64::max);
    let y_max = (load_max.max(f64::from(MAX_WORKERS)) + 1.0).ceil();
    let x = |t: f64| left + t / t_max * pw;
    let y = |v: f64| top + ph - v / y_max * ph;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="13">
<rect width="100%" height="100%" fill="#ffffff"/>
<text x="{left}" y="26" font-size="16" font-weight="bold" fill="#222">Portico autoscaling: {clients} concurrent streams for {} s, target {TARGET} in flight per worker, 1–{MAX_WORKERS} workers</text>"##,
        burst.seconds
    );
    // The burst, shaded: clients sending, then their last streams finishing.
    let (bx0, bx1, bx2) = (
        x(burst.plot_start),
        x(burst.plot_start + burst.seconds as f64),
        x(burst.plot_end.max(burst.plot_start + burst.seconds as f64)),
    );
    let _ = writeln!(
        svg,
        r##"<rect x="{bx0:.1}" y="{top}" width="{:.1}" height="{ph}" fill="#e4e4e4"/>
<rect x="{bx1:.1}" y="{top}" width="{:.1}" height="{ph}" fill="#f4f4f4"/>
<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#666">clients sending</text>
<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="#888">last streams</text>"##,
        bx1 - bx0,
        bx2 - bx1,
        (bx0 + bx1) / 2.0,
        top + 16.0,
        (bx1 + bx2) / 2.0,
        top + 16.0,
    );
    // Grid and axes.
    let y_step = if y_max > 12.0 { 2.0 } else { 1.0 };
    let mut v = 0.0;
    while v <= y_max {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#dddddd"/>
<text x="{2:.1}" y="{3:.1}" text-anchor="end" fill="#444">{v}</text>"##,
            y(v),
            left + pw,
            left - 8.0,
            y(v) + 4.0
        );
        v += y_step;
    }
    let mut t = 0.0;
    while t <= t_max {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{top}" x2="{0:.1}" y2="{1:.1}" stroke="#eeeeee"/>
<text x="{0:.1}" y="{2:.1}" text-anchor="middle" fill="#444">{t}</text>"##,
            x(t),
            top + ph,
            top + ph + 18.0
        );
        t += 5.0;
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="#333"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{0:.1}" stroke="#333"/>
<text x="{2:.1}" y="{3:.1}" text-anchor="middle" fill="#222">time (s), admin API polled every {4} ms</text>
<text transform="translate(18 {5:.1}) rotate(-90)" text-anchor="middle" fill="#222">workers · requests in flight ÷ {TARGET}</text>"##,
        top + ph,
        left + pw,
        left + pw / 2.0,
        height - 14.0,
        POLL_EVERY.as_millis(),
        top + ph / 2.0,
    );

    // Series: (label, colour, width, dash, opacity, step, value).
    type Value = fn(&Poll) -> f64;
    let mut series: Vec<(&str, &str, f64, &str, f64, bool, Value)> = vec![
        ("desired workers", "#1f77b4", 5.0, "", 0.45, true, |p| {
            f64::from(p.desired)
        }),
        ("ready workers", "#2ca02c", 2.0, "", 1.0, true, |p| {
            f64::from(p.ready)
        }),
        ("in flight ÷ 4", "#ff7f0e", 1.6, "6 3", 1.0, false, |p| {
            p.inflight as f64 / f64::from(TARGET)
        }),
    ];
    if polls.iter().any(|p| p.pending > 0) {
        series.push(("held (pending)", "#d62728", 1.6, "2 3", 1.0, false, |p| {
            p.pending as f64
        }));
    }
    for &(_, colour, stroke, dash, opacity, step, value) in &series {
        let mut points = String::new();
        let mut previous: Option<f64> = None;
        for p in polls {
            let v = value(p);
            if let (true, Some(pv)) = (step, previous) {
                let _ = write!(points, "{:.1},{:.1} ", x(p.t), y(pv));
            }
            let _ = write!(points, "{:.1},{:.1} ", x(p.t), y(v));
            previous = Some(v);
        }
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="{stroke}" stroke-opacity="{opacity}" stroke-dasharray="{dash}" stroke-linejoin="round"/>"##,
            points.trim_end()
        );
    }
    // Legend, right of the plot.
    let lx = left + pw + 20.0;
    for (i, &(label, colour, stroke, dash, opacity, _, _)) in series.iter().enumerate() {
        let ly = top + 12.0 + 24.0 * i as f64;
        let _ = writeln!(
            svg,
            r##"<line x1="{lx:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="{stroke}" stroke-opacity="{opacity}" stroke-dasharray="{dash}"/>
<text x="{:.1}" y="{:.1}" fill="#222">{label}</text>"##,
            lx + 28.0,
            lx + 36.0,
            ly + 4.0
        );
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

// ------------------------------------------------------------------------------ report

struct Report<'a> {
    args: &'a Args,
    fakeworker: &'a Path,
    started: SystemTime,
    elapsed: Duration,
    cpu: Option<CpuTimes>,
    cold: &'a ColdPhase,
    bursts: &'a BurstPhase,
}

impl Report<'_> {
    fn handoff(&self) -> Summary {
        summarize(self.cold.rounds.iter().map(ColdRound::handoff_ms))
    }

    fn first_byte(&self) -> Summary {
        summarize(self.cold.rounds.iter().map(ColdRound::head_ms))
    }

    /// One JSON line for the caller's log.
    fn summary(&self) -> String {
        let s = |x: Summary| json!({"n": x.n, "p50": x.p50, "p99": x.p99, "max": x.max});
        let rounds = &self.cold.rounds;
        json!({
            "handoff_ms": s(self.handoff()),
            "handoff_ready_event_ms": s(summarize(rounds.iter().map(ColdRound::handoff_event_ms))),
            "wake_to_first_byte_ms": s(self.first_byte()),
            "cold_failures": rounds.iter().filter(|r| r.error.is_some()).count(),
            "bursts": self.bursts.bursts.iter().map(|b| json!({
                "seconds": b.seconds,
                "streams_ok": b.load.ok,
                "streams_failed": b.load.failed,
                "first_order_ms": b.orders.first().map(|o| o.0),
                "orders": b.orders.iter().map(|&(at, n)| json!([at, n])).collect::<Vec<_>>(),
                "peak": b.peak,
                "peak_order_ms": b.peak_order_ms,
                "first_ready_ms": b.first_ready_ms,
                "all_ready_ms": b.all_ready_ms,
                "back_to_one_ms": b.back_to_one_ms,
            })).collect::<Vec<_>>(),
            "survivors": self.cold.stopped.survivors.len() + self.bursts.stopped.survivors.len(),
        })
        .to_string()
    }

    /// `path` as written in the report: relative to the working directory when inside it.
    fn shown(&self, path: &Path) -> String {
        let cwd = std::env::current_dir().unwrap_or_default();
        path.strip_prefix(&cwd)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    /// A config as shown: the fakeworker path relative to the working directory.
    fn shown_config(&self, setup: &Setup) -> String {
        let absolute = self.fakeworker.display().to_string();
        setup
            .config
            .replace(&absolute, &self.shown(self.fakeworker))
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = write!(
            md,
            "# Benchmarks: autoscaling\n\n\
             How quickly Portico starts process workers for an endpoint at zero, hands them the \
             requests it held, reacts to a burst and scales back down. `scripts/bench.sh scale` \
             writes this file and [the plot]({svg}) (through `scalebench`, \
             bench/src/bin/scalebench.rs, whose header explains every measure); nothing below \
             is edited by hand.\n\n",
            svg = self.svg_link(),
        );
        self.setup_section(&mut md);
        self.cold_section(&mut md);
        self.burst_section(&mut md);
        self.limits_section(&mut md);
        self.configs_section(&mut md);
        md
    }

    fn svg_link(&self) -> String {
        let dir = self.args.out.parent().unwrap_or(Path::new(""));
        self.args
            .svg
            .strip_prefix(dir)
            .unwrap_or(&self.args.svg)
            .display()
            .to_string()
    }

    fn setup_section(&self, md: &mut String) {
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")?
                    .split_once(':')
                    .map(|x| x.1.trim())
            })
            .unwrap_or("unknown CPU");
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let os = std::fs::read_to_string("/etc/os-release")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .unwrap_or_else(|| "unknown OS".to_owned());
        let load = self.cpu.map_or_else(
            || "not available".to_owned(),
            |c| {
                let pct = |x: u64| 100.0 * x as f64 / c.total.max(1) as f64;
                format!(
                    "{:.0}% of all CPUs busy (this benchmark included), {:.1}% stolen by the host",
                    pct(c.busy),
                    pct(c.steal)
                )
            },
        );
        let a = self.args;
        let _ = write!(
            md,
            "## Setup of the last run\n\n\
             - Machine: {cpus} CPUs (`nproc`), {model}, Linux {kernel}, {os}; a shared virtual \
             machine. During the run: {load}.\n\
             - Generated {date} in {secs:.0} s; Portico at `{source}` ({toolchain}, release \
             profile).\n\
             - Everything on 127.0.0.1, nothing pinned: Portico, its workers and the client \
             share the CPUs.\n\
             - Command: `scripts/bench.sh scale` (builds the release binaries unless \
             `BENCH_NO_BUILD=1`; `BENCH_SCALE_ROUNDS`, `BENCH_SCALE_BURSTS`), which runs\n  \
             `scalebench --portico {portico} --fakeworker {fakeworker} --rounds {rounds} \
             --boot-delay-ms {boot} --bursts {bursts} --burst-clients {clients} \
             --burst-seconds {bsecs} --extra-burst-seconds {esecs} --out {out} --svg {svg}`.\n\
             - Portico runs as `PORTICO_LOG=<filter> portico run --config <set-up>.toml \
             --log-format json` (configs at the end); SIGTERM stops it.\n\n",
            date = utc_minute(self.started),
            secs = self.elapsed.as_secs_f64(),
            source = a.source,
            toolchain = a.toolchain,
            kernel = kernel.trim(),
            portico = self.shown(&a.portico),
            fakeworker = self.shown(self.fakeworker),
            rounds = a.rounds,
            boot = a.boot_delay_ms,
            bursts = a.bursts,
            clients = a.burst_clients,
            bsecs = a.burst_seconds,
            esecs = a.extra_burst_seconds,
            out = self.shown(&a.out),
            svg = self.shown(&a.svg),
        );
    }

    fn cold_section(&self, md: &mut String) {
        let a = self.args;
        let rounds = &self.cold.rounds;
        let failed = rounds.iter().filter(|r| r.error.is_some()).count();
        let waking = rounds.iter().filter(|r| r.client.waking_comment).count();
        let boot = a.boot_delay_ms as f64;
        let row = |md: &mut String, what: &str, s: Summary, digits: usize, goal: &str| {
            let _ = writeln!(
                md,
                "| {what} | {} | {} | {} | {} | {goal} |",
                fmt(s.p50, digits),
                fmt(s.p99, digits),
                fmt(s.max, digits),
                s.n
            );
        };
        let _ = write!(
            md,
            "## Cold starts: hand-off and wake to first byte\n\n\
             {n} cold starts of one endpoint (set-up `cold`: `min_workers = 0`, idle timeout and \
             cooldown 1 s, fakeworker with `--boot-delay-ms {boot_ms}`). Each round waits until \
             the endpoint is at zero workers with no worker process left, then sends one \
             streaming chat request (`\"stream\": true`, 4 tokens); Portico holds it, starts a \
             worker, probes its `/health` and releases the request when the probe first gets \
             a 200. Milliseconds; p99 is nearest-rank, so with {n} rounds it is the largest \
             value, not a tail estimate.\n\n\
             | measure | p50 | p99 | max | rounds | goal |\n|---|---|---|---|---|---|\n",
            n = rounds.len(),
            boot_ms = a.boot_delay_ms,
        );
        row(
            md,
            "**hand-off**: worker's first `GET /health` → 200 to the held request reaching the worker (worker clock)",
            self.handoff(),
            2,
            "≤ 20 ms p99",
        );
        row(
            md,
            "Portico's side: its `replica_ready` event (ms) to the worker sending the first chunk",
            summarize(rounds.iter().map(ColdRound::handoff_event_ms)),
            1,
            "",
        );
        row(
            md,
            "**wake to first byte**: request sent at zero workers to the response head (client)",
            self.first_byte(),
            0,
            "",
        );
        row(
            md,
            "wake to first token: to the first `data:` event (client)",
            summarize(rounds.iter().map(ColdRound::first_data_ms)),
            0,
            "",
        );
        row(
            md,
            "of which: request sent to Portico's `woke` event",
            summarize(rounds.iter().map(ColdRound::to_woke_ms)),
            1,
            "",
        );
        row(
            md,
            "of which: `woke` to the worker process up (its `listening on` line read by Portico)",
            summarize(rounds.iter().map(ColdRound::woke_to_up_ms)),
            1,
            "",
        );
        row(
            md,
            &format!("of which: worker up to its first 200 (boot delay {boot:.0} ms + probe lag)"),
            summarize(rounds.iter().map(ColdRound::up_to_200_ms)),
            0,
            "",
        );
        row(
            md,
            "probe lag: that minus the boot delay",
            summarize(rounds.iter().map(|r| r.up_to_200_ms().map(|v| v - boot))),
            0,
            "",
        );
        let probes = summarize(rounds.iter().map(|r| Some(r.worker.probes as f64)));
        let lag = summarize(rounds.iter().map(|r| r.up_to_200_ms().map(|v| v - boot)));
        if let (Some(first_byte), Some(lag)) = (self.first_byte().p50, lag.p50) {
            let _ = write!(
                md,
                "\nOf the median wake to first byte ({first_byte:.0} ms), {boot:.0} ms is the \
                 worker's boot delay and about {lag:.0} ms the probe lag; the remaining \
                 {:.0} ms or so is Portico's wake, the process start, the hand-off and the \
                 answer's way back.\n",
                first_byte - boot - lag
            );
        }
        let _ = write!(
            md,
            "\nHealth probes per cold start (503s and the first 200): median {}, max {}. \
             Failed rounds: **{failed}** of {}.{}\n\n",
            fmt(probes.p50, 0),
            fmt(probes.max, 0),
            rounds.len(),
            if waking > 0 {
                format!(
                    " In {waking} rounds Portico had already sent the response head and a \
                     `: waking` comment before the worker was ready (`waking_keepalive_seconds`); \
                     their first byte is that head."
                )
            } else {
                String::new()
            }
        );
        let _ = write!(
            md,
            "How each figure is taken:\n\n\
             - **Hand-off.** fakeworker writes one access-log line per request, stamped (µs, \
             wall clock) when its handler returns: for `/health` the moment the 200 is made, \
             for the chat request once its body is read and the stream set up. Portico pipes \
             worker output into its own log at `portico::worker=debug`; the benchmark reads \
             the worker's stamps from there (the pipe's delay does not touch them). The figure \
             is the first `POST /v1/chat/completions` stamp minus the first `GET /health 200` \
             stamp of the round's worker: the probe's answer travelling back, Portico marking \
             the worker ready, releasing the held request, connecting and forwarding it.\n\
             - **Portico's side.** `replica_ready` event time (admin API, milliseconds, \
             truncated) to the `sent_at_us` of the worker's first chunk (its clock, same \
             machine). The event is recorded after the probe's 200 arrived, so this leaves \
             out the probe answer's trip and reads up to 1 ms high from the truncation; it \
             does not depend on worker output being logged.\n\
             - **Wake to first byte / first token.** Client clock, from just before the TCP \
             connect to Portico to the parsed response head / the first `data:` event. With a \
             {boot:.0} ms boot it is the boot delay plus the probe lag plus the rest.\n\
             - **Breakdown.** `woke` is the admin event (ms); \"worker up\" is when Portico read \
             the worker's `listening on` line, printed just before fakeworker starts its boot \
             clock, so \"up to first 200\" minus the boot delay is how late the readiness probe \
             came: it retries 50 ms after a failure, then ×1.5 each time, up to 1 s apart. \
             Event times are truncated to the millisecond, so \"sent → woke\" can come out a \
             fraction of a millisecond below zero.\n\n"
        );
        let _ = write!(
            md,
            "<details><summary>Every round</summary>\n\n\
             | round | hand-off ms | Portico side ms | first byte ms | first token ms | sent → woke ms | woke → up ms | up → 200 ms | probes | error |\n\
             |---|---|---|---|---|---|---|---|---|---|\n"
        );
        for (i, r) in rounds.iter().enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                i + 1,
                fmt(r.handoff_ms(), 3),
                fmt(r.handoff_event_ms(), 1),
                fmt(r.head_ms(), 1),
                fmt(r.first_data_ms(), 1),
                fmt(r.to_woke_ms(), 1),
                fmt(r.woke_to_up_ms(), 1),
                fmt(r.up_to_200_ms(), 1),
                r.worker.probes,
                r.error.as_deref().unwrap_or("").replace('|', "/"),
            );
        }
        let _ = write!(md, "\n</details>\n\n");
    }

    fn burst_section(&self, md: &mut String) {
        let a = self.args;
        let phase = self.bursts;
        let _ = write!(
            md,
            "## Bursts: reaction and scale-down\n\n\
             Set-up `burst`: `min_workers = 1`, `max_workers = {MAX_WORKERS}`, `target = {TARGET}` \
             (in-flight requests per worker), idle timeout 5 s, stable window 10 s, panic window \
             6 s; fakeworker with `--boot-delay-ms {boot} --tokens-per-second \
             {BURST_TOKENS_PER_SECOND} --max-running {TARGET}` (each worker streams {TARGET} \
             answers at once, more wait in its queue). With one worker ready and idle, \
             {clients} clients each send streaming requests of {BURST_TOKENS} tokens (2 s when \
             running) back to back for the burst's length, then finish their last one. Times \
             from the endpoint's events (admin API, ms) against the client's wall clock at the \
             burst's start; \"back to 1\" runs from the end of the burst's last stream. Burst \
             1 is plotted below; bursts after it start {margin} s after the endpoint is back \
             at one worker. The controller decides once a second (and at once on a wake); \
             \"orders\" lists every scale-up while the clients were sending, as seconds since \
             the burst's start → workers.\n\n\
             | burst | length s | streams ok / failed | first event p50 / p99 ms | first scale-up order | orders | peak ordered | first new worker ready | all new workers ready | back to 1 worker |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
            boot = a.boot_delay_ms,
            clients = a.burst_clients,
            margin = PLOT_MARGIN.as_secs(),
        );
        let secs =
            |v: Option<f64>| v.map_or_else(|| "—".to_owned(), |v| format!("+{:.2} s", v / 1000.0));
        for (i, b) in phase.bursts.iter().enumerate() {
            let first_event = summarize(b.load.first_event_ms.iter().map(|&v| Some(v)));
            let _ = writeln!(
                md,
                "| {} | {} | {} / {} | {} / {} | {} | {} | {} ({} workers) | {} | {} | {} |",
                i + 1,
                b.seconds,
                b.load.ok,
                b.load.failed,
                fmt(first_event.p50, 0),
                fmt(first_event.p99, 0),
                secs(b.orders.first().map(|o| o.0)),
                b.orders
                    .iter()
                    .map(|(at, n)| format!("{:.1} → {n}", at / 1000.0))
                    .collect::<Vec<_>>()
                    .join(", "),
                secs(b.peak_order_ms),
                b.peak,
                secs(b.first_ready_ms),
                secs(b.all_ready_ms),
                secs(b.back_to_one_ms),
            );
        }
        let errors: BTreeMap<&str, usize> = phase
            .bursts
            .iter()
            .flat_map(|b| b.load.errors.iter())
            .fold(BTreeMap::new(), |mut all, (e, n)| {
                *all.entry(e.as_str()).or_default() += n;
                all
            });
        if !errors.is_empty() {
            let _ = writeln!(
                md,
                "\nStream failures: {}.",
                errors
                    .iter()
                    .map(|(e, n)| format!("{n} × {e}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        let _ = write!(
            md,
            "\n![Workers desired and ready, and requests in flight divided by the target, \
             during burst 1]({})\n\n\
             Burst 1 polled every {} ms ({} polls) through `GET /admin/endpoints/e1`: \
             `workers.desired`, `workers.ready`, and `inflight` ÷ {TARGET} (the worker count \
             the load asks for). Dark band: the clients sending; light band: their last \
             streams finishing. A stream forwarded to the first worker before the new ones \
             were ready waits in that worker's queue (it runs {TARGET} at once) until its turn: \
             Portico does not move a request once forwarded, which is what the long tail of \
             in-flight requests and the first-event p99 above show.\n\n",
            self.svg_link(),
            POLL_EVERY.as_millis(),
            phase.polls.len(),
        );
    }

    fn limits_section(&self, md: &mut String) {
        let cold = &self.cold.stopped;
        let burst = &self.bursts.stopped;
        let handoff = self.handoff();
        let _ = write!(
            md,
            "## Clean-up and limits\n\n\
             - Stopping: the `cold` Portico {}, the `burst` Portico {}; they had started {} \
             and {} worker processes; worker processes left running afterwards: **{}** (each \
             pid Portico logged is checked in `/proc`, and killed if still a fakeworker).\n\
             - Hand-off samples: {} of {} rounds (a round has none when the worker's access \
             lines are missing from Portico's log).\n\
             - What is not measured: the hand-off of a worker that boots while requests keep \
             arriving (each round holds one request); the time from a real model server's \
             readiness to its first 200, which depends on the probe interval shown above; \
             anything beyond one machine's loopback. Figures are single runs on a shared \
             machine: compare them with the goal, not to a tenth of a millisecond.\n\n",
            cold.exit,
            burst.exit,
            cold.workers_started,
            burst.workers_started,
            cold.survivors.len() + burst.survivors.len(),
            handoff.n,
            self.cold.rounds.len(),
        );
    }

    fn configs_section(&self, md: &mut String) {
        let _ = write!(
            md,
            "## Configs\n\n\
             The fakeworker path is shown relative to the repository; the files hold it \
             absolute.\n\n\
             `cold` (`PORTICO_LOG={}`):\n\n```toml\n{}```\n\n\
             `burst` (`PORTICO_LOG={}`):\n\n```toml\n{}```\n",
            self.cold.setup.log_filter,
            self.shown_config(&self.cold.setup),
            self.bursts.setup.log_filter,
            self.shown_config(&self.bursts.setup),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 3339 times of Portico's events and fakeworker's log parse to µs since the epoch.
    #[test]
    fn parses_rfc3339() {
        assert_eq!(rfc3339_us("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(rfc3339_us("1970-01-02T00:00:01.5Z"), Some(86_401_500_000));
        assert_eq!(
            rfc3339_us("2026-11-23T16:12:36.548432Z"),
            Some(1_795_450_356_548_432)
        );
        assert_eq!(
            rfc3339_us("2026-11-23T16:12:36.548Z"),
            Some(1_795_450_356_548_000)
        );
        assert_eq!(rfc3339_us("2026-11-23 16:12:36Z"), None);
        assert_eq!(rfc3339_us("2026-11-23T16:12:36.5x8Z"), None);
        assert_eq!(rfc3339_us("INFO"), None);
    }

    /// The worker times of a cold start come from the first 200 and the request after it.
    #[test]
    fn reads_worker_times() {
        let lines = [
            (10, "listening on 127.0.0.1:4000"),
            (20, "1970-01-01T00:00:00.000050Z  INFO GET /health 503"),
            (30, "1970-01-01T00:00:00.000100Z  INFO GET /health 200"),
            (
                40,
                "1970-01-01T00:00:00.000900Z  INFO POST /v1/chat/completions 200",
            ),
        ]
        .map(|(read, text)| parse_worker_line(read, text));
        let times = worker_times(&lines);
        assert_eq!(times.up_us, Some(10));
        assert_eq!(times.first_200_us, Some(100));
        assert_eq!(times.first_request_us, Some(900));
        assert_eq!(times.probes, 2);
        assert_eq!(worker_times(&lines[..2]).first_200_us, None);
    }

    /// Nearest-rank percentiles: p99 of a few samples is the largest.
    #[test]
    fn percentiles() {
        let s = summarize([3.0, 1.0, 2.0, 10.0].map(Some).into_iter().chain([None]));
        assert_eq!(
            (s.n, s.p50, s.p99, s.max),
            (4, Some(2.0), Some(10.0), Some(10.0))
        );
        assert_eq!(summarize([None]).p50, None);
    }

    /// The plot is one SVG document with a polyline per series and the legend.
    #[test]
    fn plot_is_svg() {
        let polls: Vec<Poll> = (0..50)
            .map(|i| Poll {
                t: f64::from(i) * 0.1,
                desired: 1 + i / 10,
                ready: 1 + i / 12,
                inflight: u64::from(i),
                pending: 0,
            })
            .collect();
        let burst = Burst {
            seconds: 2,
            plot_start: 1.0,
            plot_end: 3.0,
            ..Burst::default()
        };
        let svg = svg_plot(&polls, &burst, 40);
        assert!(svg.starts_with("<svg ") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("ready workers") && !svg.contains("held (pending)"));
    }
}

//! `asyncbench`: how fast Portico accepts async jobs durably, how fast it works them off,
//! and what a job costs end to end compared with calling the worker directly.
//!
//! Every run starts its own `portico run` (one public endpoint `bench/chat` whose
//! `/v1/chat/completions` is an async route, results to a `file://` directory) and, for the
//! Redis rows, its own `redis-server`, all on 127.0.0.1, and stops them at its end.
//!
//! 1. **Intake alone** (`--clients` keep-alive connections, each POSTing a small chat body
//!    back to back for `--warmup-seconds` + `--seconds`; only answers completed in the last
//!    `--seconds` count). Nobody consumes: the endpoint's only worker is a process worker
//!    (`fakeworker --boot-delay-ms 86400000`, `min_workers = max_workers = 1`) whose
//!    `/health` answers 503 for a day, so it never becomes ready and the dispatcher, which
//!    claims at most `concurrency_per_worker` × ready workers, claims nothing. What is
//!    measured is the intake path alone: parse, persist (durably), answer 202. That no job
//!    was dispatched is checked (no result file may appear).
//! 2. **Intake paced**: the same, but the clients together send `--paced-rate` requests per
//!    second on a fixed schedule, and a request sent late because its client still waited
//!    for the previous answer counts from when it was due (no coordinated omission). A
//!    back-to-back loop measures capacity; its latency at saturation is clients ÷ rate
//!    whatever the server does, so the latency goal is read from this run.
//! 3. **Intake while draining**: the back-to-back load with a static `fakeworker` as the
//!    worker, so the dispatcher claims, forwards, writes results and finishes jobs at the
//!    same time. Completion rate = result files whose modification time falls in the
//!    measured window, per second (read after the run, so counting costs nothing during
//!    it); then the run watches `--drain-seconds` more, for the dispatcher's pace alone.
//! 4. **End to end** (`--e2e-jobs` sequential jobs, one at a time, each after a direct
//!    call): a direct `POST /v1/chat/completions` to the fakeworker (keep-alive), then the
//!    same body through Portico's async route: time to the 202, to the result file existing
//!    (polled every 250 µs), and to the status API saying `completed` (polled every 250 µs
//!    once the file exists). Overhead = async − direct, for the p50 and the p99.
//!
//! Backends: the embedded queue (redb, fsync'd group commit), Redis with `appendonly yes`
//! and `appendfsync always` (each write fsync'd before Redis answers: the same guarantee),
//! and Redis with `appendfsync everysec` (up to a second of acknowledged jobs can be lost
//! in a power cut: a weaker guarantee, shown for comparison). Intake alone and paced also
//! run with `--extra-threads` data-plane threads on the embedded queue. `--phases` picks
//! the measurements (all by default).
//!
//! Noise: before each run the benchmark waits (up to `--quiet-wait-seconds`) for the
//! machine to be quiet; during the run it reads `/proc/stat` and the CPU time of every
//! thread of the processes it started; what the machine's CPUs did beyond those is "other
//! load". A run with other load above `--noise-pct` of a core is repeated (at most
//! `--max-retries` times) and the last try is kept, flagged. Every run is repeated
//! `--reps` times, the backends in a rotating order; the report gives the median and the
//! range over the repetitions. An fsync probe (4 KiB write + `fdatasync`, in the run
//! directory) before each repetition shows what the disk gave at the time.
//!
//! ```sh
//! asyncbench --portico target/release/portico --fakeworker target/release/fakeworker \
//!   --out docs/benchmarks-async.md
//! ```
//!
//! A JSON summary goes to stdout, progress to stderr.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use bench::harness::{
    self, Program, RunDir, Sender, Stopped, connect, percentile, portico_command, utc_minute,
};
use bytes::Bytes;
use clap::Parser;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{Instant, sleep, sleep_until, timeout};

/// Measures Portico's async intake, dispatch and end-to-end overhead; writes a Markdown
/// report.
#[derive(Parser, Debug)]
#[command(name = "asyncbench", version)]
struct Args {
    /// The `portico` binary.
    #[arg(long)]
    portico: PathBuf,
    /// The `fakeworker` binary.
    #[arg(long)]
    fakeworker: PathBuf,
    /// The `redis-server` binary; the Redis rows are left out when it cannot be run.
    #[arg(long, default_value = "redis-server")]
    redis_server: String,
    /// Leave out the Redis rows.
    #[arg(long)]
    no_redis: bool,
    /// The measurements to run (a report from fewer shows the others as not measured).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "alone,paced,draining,e2e"
    )]
    phases: Vec<Phase>,
    /// Concurrent keep-alive client connections during intake.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Measured length of an intake run, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Load before the measured window (connections, caches, the queue file's first pages).
    #[arg(long, default_value_t = 1)]
    warmup_seconds: u64,
    /// Repetitions of every run.
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// Sequential jobs per end-to-end run.
    #[arg(long, default_value_t = 200)]
    e2e_jobs: usize,
    /// Portico's `server.worker_threads` (data-plane threads).
    #[arg(long, default_value_t = 1)]
    threads: u64,
    /// Also run intake alone on the embedded queue with this many data-plane threads
    /// (0: not).
    #[arg(long, default_value_t = 2)]
    extra_threads: u64,
    /// `[endpoint.async] concurrency_per_worker` while draining.
    #[arg(long, default_value_t = 8)]
    concurrency_per_worker: u32,
    /// How long a draining run keeps watching results come in after its load stopped.
    #[arg(long, default_value_t = 10)]
    drain_seconds: u64,
    /// Offered rate of the paced intake run (202/s asked for, spread over the clients).
    #[arg(long, default_value_t = 5000.0)]
    paced_rate: f64,
    /// Other load (percent of one core) above which a run is repeated.
    #[arg(long, default_value_t = 15.0)]
    noise_pct: f64,
    /// Repeats of a noisy or failed run before its last try is kept.
    #[arg(long, default_value_t = 1)]
    max_retries: usize,
    /// Longest wait for a quiet machine before each run.
    #[arg(long, default_value_t = 10)]
    quiet_wait_seconds: u64,
    /// The Markdown report to write.
    #[arg(long, default_value = "docs/benchmarks-async.md")]
    out: PathBuf,
    /// Directory for configs, queues, results and logs; a new one under the temporary
    /// directory, removed at the end, when not given.
    #[arg(long)]
    run_dir: Option<PathBuf>,
    /// Keep the run directory made when `--run-dir` is not given, and every run's queue
    /// and results.
    #[arg(long)]
    keep: bool,
    /// Source revision the binaries were built from, for the report.
    #[arg(long, default_value = "unknown")]
    source: String,
    /// Toolchain the binaries were built with, for the report.
    #[arg(long, default_value = "unknown")]
    toolchain: String,
}

/// Where the benchmark endpoint takes jobs, and the status API below it.
const INTAKE_PATH: &str = "/project/bench/endpoint/chat/v1/chat/completions";
const STATUS_PREFIX: &str = "/project/bench/endpoint/chat/v1/async/status/";
/// The worker's own path, for direct calls.
const WORKER_PATH: &str = "/v1/chat/completions";
/// Where results of the endpoint `chat` land below the object store's directory.
const RESULTS_SUBDIR: &str = "api/chat/request";
/// A small non-streaming chat request (16 tokens back).
const CHAT_BODY: &str = r#"{"model":"fake-model","messages":[{"role":"user","content":"Summarize the benchmark in one line."}],"max_tokens":16}"#;
/// A worker boot delay no run outlives: its `/health` answers 503 all along.
const NEVER_READY_MS: u64 = 86_400_000;
/// `server.grace_period_seconds` of every Portico.
const GRACE_SECONDS: u64 = 2;
/// How often the end-to-end run looks for the result file and the status.
const RESULT_POLL: Duration = Duration::from_micros(250);
/// Longest an end-to-end job may take.
const E2E_LIMIT: Duration = Duration::from_secs(10);
/// Clock ticks per second of `/proc/stat` (`USER_HZ`, 100 on every Linux architecture
/// Portico targets).
const USER_HZ: u64 = 100;
/// A dispatcher thread busier than this (% of a core) while it dispatches nothing is
/// walking its queue to count it (what the embedded queue did before it kept a count).
const DEPTH_WALK_PCT: f64 = 15.0;
/// Intake at least this fast (202/s, embedded queue) meets the goal of issue 7 …
const GOAL_RATE: f64 = 5000.0;
/// … with a p99 intake latency of at most this (ms).
const GOAL_P99_MS: f64 = 10.0;

const PROGRAM: Program = Program::new("asyncbench");

fn log(message: impl std::fmt::Display) {
    PROGRAM.log(message);
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // On a signal, dropping `run` stops every process it started (see `Proc`'s `Drop`).
    harness::until_signal(run(&args)).await
}

async fn run(args: &Args) -> anyhow::Result<()> {
    if args.clients == 0 || args.seconds == 0 || args.reps == 0 || args.e2e_jobs == 0 {
        bail!("--clients, --seconds, --reps and --e2e-jobs must be at least 1");
    }
    if !(args.paced_rate.is_finite() && args.paced_rate > 0.0) {
        bail!("--paced-rate must be a positive number");
    }
    let run_dir = RunDir::new(&PROGRAM, args.run_dir.clone(), args.keep)?;
    let bench = Bench {
        args,
        portico: std::fs::canonicalize(&args.portico)
            .with_context(|| format!("finding {}", args.portico.display()))?,
        fakeworker: std::fs::canonicalize(&args.fakeworker)
            .with_context(|| format!("finding {}", args.fakeworker.display()))?,
        redis: if args.no_redis {
            None
        } else {
            redis_version(&args.redis_server)
        },
        dir: std::fs::canonicalize(run_dir.path())?,
    };
    log(format!("run directory: {}", bench.dir.display()));
    if bench.redis.is_none() && !args.no_redis {
        log(format!(
            "{} cannot be run: the Redis rows are left out",
            args.redis_server
        ));
    }
    let started = SystemTime::now();
    let ticks_before = MachineTicks::read();
    let loadavg_before = loadavg();
    let mut tries = Vec::new();
    let mut fsync = Vec::new();
    for rep in 0..args.reps {
        let probe = fsync_probe(&bench.dir)?;
        log(format!(
            "repetition {}/{}: fdatasync of one appended block p50 {:.2} ms, p99 {:.2} ms; \
             of 16 scattered blocks p50 {:.2} ms, p99 {:.2} ms",
            rep + 1,
            args.reps,
            probe.append.p50_ms,
            probe.append.p99_ms,
            probe.scattered.p50_ms,
            probe.scattered.p99_ms,
        ));
        fsync.push(probe);
        for phase in [Phase::Alone, Phase::Paced, Phase::Draining, Phase::EndToEnd] {
            if !args.phases.contains(&phase) {
                continue;
            }
            let variants = match phase {
                Phase::Alone | Phase::Paced => bench.intake_variants(),
                Phase::Draining | Phase::EndToEnd => bench.backend_variants(),
            };
            for variant in rotate(variants, rep) {
                tries.extend(bench.measure(phase, variant, rep).await);
            }
        }
    }
    let report = Report {
        bench: &bench,
        machine: Machine::describe(&bench.dir),
        started,
        elapsed: started.elapsed().unwrap_or_default(),
        busy: MachineTicks::read()
            .zip(ticks_before)
            .map(|(after, before)| after.since(&before)),
        loadavg: (loadavg_before, loadavg()),
        fsync,
        tries,
    };
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, report.markdown())
        .with_context(|| format!("writing {}", args.out.display()))?;
    log(format!("wrote {}", args.out.display()));
    println!("{}", report.summary());
    Ok(())
}

/// `list` rotated left by `by`: each repetition starts with another variant, so that no
/// variant always runs first (on a cold cache) or last (after the others filled the disk).
fn rotate<T: Clone>(list: Vec<T>, by: usize) -> Vec<T> {
    let mut list = list;
    if !list.is_empty() {
        let by = by % list.len();
        list.rotate_left(by);
    }
    list
}

// ------------------------------------------------------------------------------ variants

/// Where the jobs are queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Backend {
    /// redb in `state_dir`, fsync'd group commit.
    Embedded,
    /// Redis Streams, `appendfsync always`: acknowledged after the fsync.
    RedisAlways,
    /// Redis Streams, `appendfsync everysec`: acknowledged before the fsync.
    RedisEverysec,
}

impl Backend {
    fn label(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded (redb, fsync per group commit)",
            Backend::RedisAlways => "Redis, `appendfsync always` (fsync per write)",
            Backend::RedisEverysec => "Redis, `appendfsync everysec` (not durable: ≤ 1 s lost)",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::RedisAlways => "redis-always",
            Backend::RedisEverysec => "redis-everysec",
        }
    }

    /// Redis's `appendfsync` setting, `None` for the embedded queue.
    fn appendfsync(self) -> Option<&'static str> {
        match self {
            Backend::Embedded => None,
            Backend::RedisAlways => Some("always"),
            Backend::RedisEverysec => Some("everysec"),
        }
    }
}

/// One row of a table: a backend and Portico's data-plane thread count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Variant {
    backend: Backend,
    threads: u64,
}

impl Variant {
    fn slug(self) -> String {
        format!("{}-t{}", self.backend.slug(), self.threads)
    }
}

/// The measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Phase {
    /// Intake with nothing consuming, clients as fast as answers come.
    Alone,
    /// Intake with nothing consuming, at a fixed offered rate.
    Paced,
    /// Intake while a worker consumes.
    Draining,
    /// Sequential jobs against direct calls.
    #[value(name = "e2e")]
    EndToEnd,
}

impl Phase {
    fn slug(self) -> &'static str {
        match self {
            Phase::Alone => "alone",
            Phase::Paced => "paced",
            Phase::Draining => "draining",
            Phase::EndToEnd => "e2e",
        }
    }
}

// ------------------------------------------------------------------------------ the bench

/// What every run needs.
struct Bench<'a> {
    args: &'a Args,
    portico: PathBuf,
    fakeworker: PathBuf,
    /// `redis-server --version`, when it can be run.
    redis: Option<String>,
    dir: PathBuf,
}

/// One try of one run, kept or not.
#[derive(Debug)]
struct Try {
    phase: Phase,
    variant: Variant,
    rep: usize,
    attempt: usize,
    /// Counted in the tables (the last try of a run is kept even when noisy).
    kept: bool,
    noisy: bool,
    loadavg: String,
    cpu: Option<CpuUse>,
    outcome: Result<Outcome, String>,
}

/// What a run measured.
#[derive(Debug)]
enum Outcome {
    Intake(IntakeFigures),
    Draining(IntakeFigures, DrainFigures),
    EndToEnd(E2eFigures),
}

impl<'a> Bench<'a> {
    fn backends(&self) -> Vec<Backend> {
        let mut backends = vec![Backend::Embedded];
        if self.redis.is_some() {
            backends.extend([Backend::RedisAlways, Backend::RedisEverysec]);
        }
        backends
    }

    fn backend_variants(&self) -> Vec<Variant> {
        self.backends()
            .into_iter()
            .map(|backend| Variant {
                backend,
                threads: self.args.threads,
            })
            .collect()
    }

    fn intake_variants(&self) -> Vec<Variant> {
        let mut variants = self.backend_variants();
        let extra = self.args.extra_threads;
        if extra > 0 && extra != self.args.threads {
            variants.insert(
                1,
                Variant {
                    backend: Backend::Embedded,
                    threads: extra,
                },
            );
        }
        variants
    }

    /// Runs `phase` for `variant`, repeating a noisy or failed try; returns every try.
    async fn measure(&self, phase: Phase, variant: Variant, rep: usize) -> Vec<Try> {
        let mut tries = Vec::new();
        for attempt in 0..=self.args.max_retries {
            wait_for_quiet(
                self.args.noise_pct,
                Duration::from_secs(self.args.quiet_wait_seconds),
            )
            .await;
            let dir = self.dir.join(format!(
                "{}-{}-r{}-a{}",
                phase.slug(),
                variant.slug(),
                rep + 1,
                attempt + 1
            ));
            let before = loadavg();
            let measured = self.run_once(phase, variant, &dir).await;
            let (outcome, cpu) = match measured {
                Ok((outcome, cpu)) => (Ok(outcome), cpu),
                Err(err) => (Err(format!("{err:#}")), None),
            };
            let noisy = cpu
                .as_ref()
                .is_some_and(|c| c.other_pct() > self.args.noise_pct);
            let last = attempt == self.args.max_retries;
            let kept = last || (outcome.is_ok() && !noisy);
            log(format!(
                "{} {} rep {} try {}: {}{}",
                phase.slug(),
                variant.slug(),
                rep + 1,
                attempt + 1,
                match &outcome {
                    Ok(outcome) => outcome.brief(),
                    Err(err) => format!("FAILED: {err}"),
                },
                cpu.as_ref().map_or(String::new(), |c| format!(
                    "; other load {:.0}% of a core{}",
                    c.other_pct(),
                    if noisy { " (noisy)" } else { "" }
                )),
            ));
            if !self.args.keep {
                // The queue files of a run are large; its logs stay. Result files stay until
                // the end: deleting tens of thousands of files makes ext4 slow to allocate
                // inodes for a while after (it skips recently freed ones), which would slow
                // the next run's result writes.
                for sub in ["state", "redis"] {
                    let _ = std::fs::remove_dir_all(dir.join(sub));
                }
            }
            tries.push(Try {
                phase,
                variant,
                rep,
                attempt,
                kept,
                noisy,
                loadavg: format!("{before} → {}", loadavg()),
                cpu,
                outcome,
            });
            if kept {
                break;
            }
        }
        tries
    }

    async fn run_once(
        &self,
        phase: Phase,
        variant: Variant,
        dir: &Path,
    ) -> anyhow::Result<(Outcome, Option<CpuUse>)> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        // Declared first so that they are dropped last, after the Portico that uses them.
        let redis = match variant.backend.appendfsync() {
            Some(fsync) => Some(Redis::start(&self.args.redis_server, dir, fsync).await?),
            None => None,
        };
        let worker = match phase {
            Phase::Alone | Phase::Paced => None,
            Phase::Draining | Phase::EndToEnd => {
                Some(Fakeworker::start(&self.fakeworker, dir).await?)
            }
        };
        let setup = Setup {
            dir: dir.to_path_buf(),
            threads: variant.threads,
            workers: match &worker {
                None => Workers::NeverReady(self.fakeworker.clone()),
                Some(w) => Workers::Static(w.addr),
            },
            queue: redis
                .as_ref()
                .map_or_else(|| "embedded".to_owned(), |r| format!("redis://{}", r.addr)),
            concurrency_per_worker: self.args.concurrency_per_worker,
        };
        let portico = Portico::start(&self.portico, &setup).await?;
        let first = portico.wait_accepting(Duration::from_secs(30)).await?;
        let pids = Pids {
            portico: portico.proc.pid,
            redis: redis.as_ref().map(|r| r.proc.pid),
            worker: worker.as_ref().map(|w| w.proc.pid),
        };
        let measured = match phase {
            Phase::Alone => self.intake_alone(&portico, &setup, pids, None).await,
            Phase::Paced => {
                let pace = Some(self.args.paced_rate);
                self.intake_alone(&portico, &setup, pids, pace).await
            }
            Phase::Draining => self.intake_draining(&portico, &setup, pids).await,
            Phase::EndToEnd => match &worker {
                Some(worker) => {
                    self.end_to_end(&portico, &setup, pids, worker, &first)
                        .await
                }
                None => Err(anyhow!("no worker to call directly")),
            },
        };
        let stopped = portico.stop().await;
        if !stopped.survivors.is_empty() {
            log(format!(
                "worker processes left by portico, killed: {:?}",
                stopped.survivors
            ));
        }
        if let Some(worker) = worker {
            worker.proc.stop().await;
        }
        if let Some(redis) = redis {
            redis.proc.stop().await;
        }
        measured
    }

    async fn intake_alone(
        &self,
        portico: &Portico,
        setup: &Setup,
        pids: Pids,
        pace: Option<f64>,
    ) -> anyhow::Result<(Outcome, Option<CpuUse>)> {
        let load = self.load(portico.public, pids, pace).await;
        let figures = IntakeFigures::from(&load);
        // Nothing may have been dispatched, or this was not intake alone.
        let results = result_files(&setup.results_dir());
        if !results.is_empty() {
            bail!(
                "{} jobs were dispatched although no worker was ready",
                results.len()
            );
        }
        Ok((Outcome::Intake(figures), load.cpu))
    }

    async fn intake_draining(
        &self,
        portico: &Portico,
        setup: &Setup,
        pids: Pids,
    ) -> anyhow::Result<(Outcome, Option<CpuUse>)> {
        let load = self.load(portico.public, pids, None).await;
        let figures = IntakeFigures::from(&load);
        // The readiness probe's job and every 202 of the load.
        let expected = figures.accepted_total + 1;
        let drain = wait_for_results(
            &setup.results_dir(),
            expected,
            Duration::from_secs(self.args.drain_seconds),
        )
        .await;
        let watched = Duration::from_secs(self.args.drain_seconds);
        let drained = DrainFigures::from(&drain, expected, &load, watched);
        Ok((Outcome::Draining(figures, drained), load.cpu))
    }

    /// The intake load: clients until the end of the window (as fast as answers come, or
    /// `pace` requests per second in all), CPU read at the window's two ends.
    async fn load(&self, addr: SocketAddr, pids: Pids, pace: Option<f64>) -> Load {
        let body = Bytes::from_static(CHAT_BODY.as_bytes());
        let start = Instant::now();
        let warm = start + Duration::from_secs(self.args.warmup_seconds);
        let end = warm + Duration::from_secs(self.args.seconds);
        let clients = self.args.clients;
        let tasks: Vec<_> = (0..clients)
            .map(|index| {
                let pace = pace.map(|rate| Pace::of(rate, clients, index));
                tokio::spawn(client(addr, body.clone(), start, end, pace))
            })
            .collect();
        sleep_until(warm).await;
        let cpu_warm = Snapshot::take(pids);
        let wall_warm = SystemTime::now();
        sleep_until(end).await;
        let cpu_end = Snapshot::take(pids);
        let wall_end = SystemTime::now();
        let mut runs = Vec::with_capacity(tasks.len());
        for client in tasks {
            runs.push(client.await.unwrap_or_else(|e| ClientRun {
                errors: BTreeMap::from([(format!("client task failed: {e}"), 1)]),
                ..ClientRun::default()
            }));
        }
        Load {
            runs,
            offered: pace,
            warm_us: micros(warm - start),
            end_us: micros(end - start),
            wall_warm,
            wall_end,
            cpu: cpu_end.zip(cpu_warm).map(|(end, warm)| end.since(&warm)),
        }
    }

    async fn end_to_end(
        &self,
        portico: &Portico,
        setup: &Setup,
        pids: Pids,
        worker: &Fakeworker,
        first: &str,
    ) -> anyhow::Result<(Outcome, Option<CpuUse>)> {
        let results = setup.results_dir();
        // The readiness probe's job first, so that the first measured job finds an idle
        // dispatcher like the others.
        wait_for_file(&results.join(format!("{first}.json")), E2E_LIMIT).await?;
        let mut direct = connect(worker.addr).await?;
        let mut through = connect(portico.public).await?;
        let body = Bytes::from_static(CHAT_BODY.as_bytes());
        let mut figures = E2eFigures::default();
        let before = Snapshot::take(pids);
        for _ in 0..self.args.e2e_jobs {
            match direct_call(&mut direct, worker.addr, &body).await {
                Ok(ms) => figures.direct_ms.push(ms),
                Err(err) => {
                    figures.count_failure(&err);
                    // The connection may be the broken part: a new one for the next job.
                    direct = connect(worker.addr).await?;
                }
            }
            match async_job(&mut through, portico.public, &body, &results).await {
                Ok(job) => {
                    figures.intake_ms.push(job.intake_ms);
                    figures.file_ms.push(job.file_ms);
                    figures.completed_ms.push(job.completed_ms);
                }
                Err(err) => {
                    figures.count_failure(&err);
                    // The connection may be the broken part: a new one for the next job.
                    through = connect(portico.public).await?;
                }
            }
        }
        let cpu = Snapshot::take(pids)
            .zip(before)
            .map(|(after, before)| after.since(&before));
        Ok((Outcome::EndToEnd(figures), cpu))
    }
}

/// The processes whose CPU time a run counts as its own.
#[derive(Debug, Clone, Copy)]
struct Pids {
    portico: u32,
    redis: Option<u32>,
    worker: Option<u32>,
}

// ------------------------------------------------------------------------------ processes

/// A child process, stopped (SIGTERM, then SIGKILL) when dropped without [`Proc::stop`].
struct Proc {
    name: &'static str,
    child: Child,
    pid: u32,
    stopped: bool,
}

impl Proc {
    /// Starts `command` with stdout to `out` and stderr to `err`, in a process group of its
    /// own, so that a Ctrl-C at the terminal reaches only this program, which then stops
    /// its children itself.
    fn spawn(
        name: &'static str,
        command: &mut Command,
        out: &Path,
        err: &Path,
    ) -> anyhow::Result<Proc> {
        let stdout =
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
        let stderr =
            std::fs::File::create(err).with_context(|| format!("creating {}", err.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Proc {
            name,
            child,
            pid,
            stopped: false,
        })
    }

    /// The lines of `file` starting with `prefix`, once `count` of them are written.
    async fn wait_lines(
        &mut self,
        file: &Path,
        prefix: &str,
        count: usize,
        limit: Duration,
    ) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + limit;
        loop {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let lines: Vec<String> = text
                .lines()
                .filter_map(|l| l.strip_prefix(prefix))
                .map(str::to_owned)
                .collect();
            if lines.len() >= count {
                return Ok(lines);
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("{} exited ({status}) before printing {prefix:?}", self.name);
            }
            if Instant::now() >= deadline {
                bail!("{} printed no {prefix:?} line within {limit:?}", self.name);
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, up to the grace period and 5 s more, then SIGKILL; returns how it ended.
    async fn stop(mut self) -> String {
        self.stopped = true;
        if let Ok(Some(status)) = self.child.try_wait() {
            return format!("had exited ({status})");
        }
        PROGRAM.signal(self.pid, "TERM");
        match timeout(Duration::from_secs(GRACE_SECONDS + 5), self.child.wait()).await {
            Ok(Ok(status)) => format!("exited after SIGTERM ({status})"),
            _ => {
                let _ = self.child.kill().await;
                "SIGKILL after the grace period".to_owned()
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        let limit = Duration::from_secs(GRACE_SECONDS + 3);
        PROGRAM.stop_blocking(self.name, &mut self.child, self.pid, limit);
    }
}

/// A port nobody listens on now. redis-server cannot be asked for port 0 and tell which
/// port it got, so a free one is picked here; another program taking it in between makes
/// Redis fail to start, which the run reports.
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// `redis-server --version`, or `None` when it cannot be run.
fn redis_version(bin: &str) -> Option<String> {
    let out = std::process::Command::new(bin)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// A `redis-server` of one run: AOF on, RDB snapshots off, its files in `<run>/redis`.
struct Redis {
    proc: Proc,
    addr: SocketAddr,
}

impl Redis {
    async fn start(bin: &str, dir: &Path, appendfsync: &str) -> anyhow::Result<Redis> {
        let data = dir.join("redis");
        std::fs::create_dir_all(&data)?;
        let port = free_port()?;
        let mut command = Command::new(bin);
        command.args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            appendfsync,
            "--daemonize",
            "no",
        ]);
        command.arg("--dir").arg(&data);
        let mut proc = Proc::spawn(
            "redis-server",
            &mut command,
            &dir.join("redis.out"),
            &dir.join("redis.err"),
        )?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis_answers(addr).await {
            if let Some(status) = proc.child.try_wait()? {
                bail!(
                    "redis-server exited ({status}); see {}",
                    dir.join("redis.out").display()
                );
            }
            if Instant::now() >= deadline {
                bail!("redis-server on {addr} did not answer PING within 10 s");
            }
            sleep(Duration::from_millis(20)).await;
        }
        Ok(Redis { proc, addr })
    }
}

/// Whether Redis on `addr` answers `PING`.
async fn redis_answers(addr: SocketAddr) -> bool {
    let ping = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(b"PING\r\n").await?;
        let mut answer = [0u8; 7];
        tcp.read_exact(&mut answer).await?;
        std::io::Result::Ok(&answer == b"+PONG\r\n")
    };
    matches!(timeout(Duration::from_secs(1), ping).await, Ok(Ok(true)))
}

/// The run's worker: `fakeworker --port 0`, request recording and access log off.
struct Fakeworker {
    proc: Proc,
    addr: SocketAddr,
}

impl Fakeworker {
    async fn start(bin: &Path, dir: &Path) -> anyhow::Result<Fakeworker> {
        let out = dir.join("fakeworker.out");
        let mut command = Command::new(bin);
        command
            .args(["--port", "0", "--record-limit", "0"])
            .env("RUST_LOG", "warn");
        let mut proc = Proc::spawn(
            "fakeworker",
            &mut command,
            &out,
            &dir.join("fakeworker.err"),
        )?;
        let lines = proc
            .wait_lines(&out, "listening on ", 1, Duration::from_secs(10))
            .await?;
        let addr = lines[0]
            .trim()
            .parse()
            .with_context(|| format!("bad fakeworker address {:?}", lines[0]))?;
        Ok(Fakeworker { proc, addr })
    }
}

/// How the endpoint gets its worker.
#[derive(Debug, Clone)]
enum Workers {
    /// A process worker (this fakeworker) whose health check never passes.
    NeverReady(PathBuf),
    /// A static worker at this address.
    Static(SocketAddr),
}

/// One Portico config.
#[derive(Debug, Clone)]
struct Setup {
    dir: PathBuf,
    threads: u64,
    workers: Workers,
    /// `embedded` or a `redis://` URL.
    queue: String,
    concurrency_per_worker: u32,
}

impl Setup {
    fn results_dir(&self) -> PathBuf {
        self.dir.join("results").join(RESULTS_SUBDIR)
    }

    fn config(&self) -> String {
        let dir = self.dir.display();
        let workers = match &self.workers {
            Workers::NeverReady(fakeworker) => format!(
                "kind = \"process\"\n\
                 command = [{}, \"--port\", \"{{port}}\", \"--boot-delay-ms\", \"{NEVER_READY_MS}\"]\n\
                 startup_timeout_seconds = 86400\n\
                 env = {{ RUST_LOG = \"warn\" }}\n\n\
                 # One worker, pinned: it never becomes ready, so the dispatcher never claims.\n\
                 [endpoint.scaling]\n\
                 min_workers = 1\n\
                 max_workers = 1",
                json!(fakeworker.display().to_string())
            ),
            Workers::Static(addr) => {
                format!("kind = \"static\"\nurls = [\"http://{addr}\"]")
            }
        };
        format!(
            r#"[server]
admin_listen = "127.0.0.1:0"
state_dir = "{dir}/state"
access_log = "{dir}/access.log"
worker_threads = {threads}
grace_period_seconds = {GRACE_SECONDS}

[[listener]]
name = "public"
address = "127.0.0.1:0"

[object_store]
url = "file://{dir}/results"

[[project]]
id = "bench"

[[endpoint]]
id = "chat"
project = "bench"
public = true

[endpoint.workers]
{workers}

[endpoint.async]
routes = ["/v1/chat/completions"]
concurrency_per_worker = {concurrency}
queue = "{queue}"
"#,
            threads = self.threads,
            concurrency = self.concurrency_per_worker,
            queue = self.queue,
        )
    }
}

/// A running `portico run`.
struct Portico {
    proc: Proc,
    public: SocketAddr,
    /// Its stderr: JSON log lines.
    log: PathBuf,
}

impl Portico {
    async fn start(bin: &Path, setup: &Setup) -> anyhow::Result<Portico> {
        let config = setup.dir.join("portico.toml");
        std::fs::write(&config, setup.config())
            .with_context(|| format!("writing {}", config.display()))?;
        let out = setup.dir.join("portico.out");
        let log = setup.dir.join("portico.log");
        let mut command = portico_command(bin, &config, "info", &setup.dir);
        let mut proc = Proc::spawn("portico", &mut command, &out, &log)?;
        // The admin line comes last.
        let lines = proc
            .wait_lines(&out, "listening on ", 2, Duration::from_secs(20))
            .await
            .with_context(|| format!("see {}", log.display()))?;
        let public = lines
            .iter()
            .find_map(|l| l.strip_prefix("public "))
            .context("no `listening on public` line")?;
        let public = public
            .trim()
            .parse()
            .with_context(|| format!("bad address {public:?}"))?;
        Ok(Portico { proc, public, log })
    }

    /// Posts one job until Portico answers 202 (its queue is attached a moment after the
    /// `listening on` lines); returns the job's id.
    async fn wait_accepting(&self, limit: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + limit;
        let body = Bytes::from_static(CHAT_BODY.as_bytes());
        loop {
            let last = async {
                let mut sender = connect(self.public).await?;
                let (status, answer) =
                    exchange(&mut sender, post(self.public, INTAKE_PATH, &body)?).await?;
                if status != StatusCode::ACCEPTED {
                    bail!("HTTP {status}: {}", snippet(&answer));
                }
                request_id(&answer)
            }
            .await;
            match last {
                Ok(id) => return Ok(id),
                Err(err) if Instant::now() >= deadline => {
                    bail!(
                        "portico did not accept a job within {limit:?}: {err:#} (see {})",
                        self.log.display()
                    )
                }
                Err(_) => sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Stops it; then no worker it started may remain.
    async fn stop(self) -> Stopped {
        let log = self.log.clone();
        let exit = self.proc.stop().await;
        Stopped::new(exit, PROGRAM.reap_workers(&log))
    }
}

// ------------------------------------------------------------------------------ HTTP client

fn post(addr: SocketAddr, path: &str, body: &Bytes) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::post(path)
        .header(header::HOST, addr.to_string())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))?)
}

fn get(addr: SocketAddr, path: &str) -> anyhow::Result<Request<Full<Bytes>>> {
    Ok(Request::get(path)
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?)
}

/// Sends `request` on the connection and reads the whole answer.
async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(StatusCode, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The `request_id` of a 202's JSON.
fn request_id(answer: &[u8]) -> anyhow::Result<String> {
    let value: Value = serde_json::from_slice(answer).context("the 202 is not JSON")?;
    value
        .get("request_id")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .with_context(|| format!("no request_id in {}", snippet(answer)))
}

/// The start of a body, for error messages.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(120) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

// ------------------------------------------------------------------------------ intake load

/// One answered request.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When the answer was read, µs since the load started.
    done_us: u64,
    /// From just before sending to the whole answer read.
    latency_us: u64,
    /// 202.
    accepted: bool,
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientRun {
    samples: Vec<Sample>,
    /// Every non-202 answer and failed exchange, by kind, in the whole run.
    errors: BTreeMap<String, u64>,
}

/// One paced client's schedule: a request every `period`, the first at `offset` (clients
/// spread evenly over one period, so that the server sees a steady rate, not bursts).
#[derive(Debug, Clone, Copy)]
struct Pace {
    period: Duration,
    offset: Duration,
}

impl Pace {
    /// Client `index` of `clients` sharing `rate` requests per second.
    fn of(rate: f64, clients: usize, index: usize) -> Pace {
        let period = Duration::from_secs_f64(clients as f64 / rate);
        Pace {
            period,
            offset: period.mul_f64(index as f64 / clients as f64),
        }
    }
}

/// Waits for the next request's turn and returns the instant its latency counts from.
/// A client that is late because its previous answer came late counts from when the request
/// was due (otherwise a slow server would hide its own queueing: coordinated omission); one
/// that waited for its turn counts from when it woke (the timer's own lateness is not the
/// server's).
async fn next_turn(pace: Option<Pace>, due: &mut Instant) -> Instant {
    let Some(pace) = pace else {
        return Instant::now();
    };
    let this = *due;
    *due += pace.period;
    if Instant::now() < this {
        sleep_until(this).await;
        Instant::now()
    } else {
        this
    }
}

/// POSTs `body` on one keep-alive connection until `end`, back to back or paced
/// (reconnecting after a failure).
async fn client(
    addr: SocketAddr,
    body: Bytes,
    start: Instant,
    end: Instant,
    pace: Option<Pace>,
) -> ClientRun {
    let mut run = ClientRun::default();
    let mut connection: Option<Sender> = None;
    let mut due = start + pace.map_or(Duration::ZERO, |p| p.offset);
    while Instant::now() < end && due < end {
        let sender = match connection.as_mut() {
            Some(sender) => sender,
            None => match connect(addr).await {
                Ok(sender) => connection.insert(sender),
                Err(err) => {
                    *run.errors.entry(format!("{err:#}")).or_default() += 1;
                    // Do not spin on a refused connection.
                    sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let request = match post(addr, INTAKE_PATH, &body) {
            Ok(request) => request,
            Err(err) => {
                *run.errors.entry(format!("{err:#}")).or_default() += 1;
                break;
            }
        };
        let sent = next_turn(pace, &mut due).await;
        match exchange(sender, request).await {
            Ok((status, answer)) => {
                let done = Instant::now();
                let accepted = status == StatusCode::ACCEPTED;
                if !accepted {
                    let kind = format!("HTTP {}: {}", status.as_u16(), snippet(&answer));
                    *run.errors.entry(kind).or_default() += 1;
                }
                run.samples.push(Sample {
                    done_us: micros(done - start),
                    latency_us: micros(done - sent),
                    accepted,
                });
            }
            Err(err) => {
                *run.errors.entry(format!("{err:#}")).or_default() += 1;
                connection = None;
                sleep(Duration::from_millis(50)).await;
            }
        }
    }
    run
}

/// A whole intake load.
#[derive(Debug)]
struct Load {
    runs: Vec<ClientRun>,
    /// The paced rate asked for, if paced.
    offered: Option<f64>,
    /// The measured window, µs since the load started.
    warm_us: u64,
    end_us: u64,
    /// The same two instants on the wall clock (result files' times are compared to them).
    wall_warm: SystemTime,
    wall_end: SystemTime,
    cpu: Option<CpuUse>,
}

impl Load {
    fn window_seconds(&self) -> f64 {
        (self.end_us - self.warm_us) as f64 / 1e6
    }

    fn samples(&self) -> impl Iterator<Item = &Sample> {
        self.runs.iter().flat_map(|r| r.samples.iter())
    }
}

/// Intake figures of one run.
#[derive(Debug, Clone, Default)]
struct IntakeFigures {
    /// The paced rate asked for, if paced.
    offered: Option<f64>,
    /// 202s completed in the window, per second.
    rate: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    max_ms: Option<f64>,
    /// 202s per whole second of the window, in order (a falling rate shows a growing
    /// queue slowing intake down).
    per_second: Vec<u64>,
    /// The slowest 202 of each whole second of the window, ms (one stall or many?).
    per_second_max_ms: Vec<f64>,
    /// Every 202 of the run, warm-up included.
    accepted_total: u64,
    /// Every non-202 and failed exchange of the run, warm-up included, by kind.
    errors: BTreeMap<String, u64>,
    /// Portico's CPU time per 202 in the window, µs.
    cpu_us_per_job: Option<f64>,
}

impl IntakeFigures {
    fn from(load: &Load) -> IntakeFigures {
        let in_window = |s: &&Sample| s.done_us >= load.warm_us && s.done_us < load.end_us;
        let mut latencies: Vec<f64> = load
            .samples()
            .filter(in_window)
            .filter(|s| s.accepted)
            .map(|s| s.latency_us as f64 / 1000.0)
            .collect();
        latencies.sort_by(f64::total_cmp);
        let seconds = (load.end_us - load.warm_us).div_ceil(1_000_000) as usize;
        let mut per_second = vec![0u64; seconds];
        let mut per_second_max_ms = vec![0f64; seconds];
        for s in load.samples().filter(in_window).filter(|s| s.accepted) {
            let slot = ((s.done_us - load.warm_us) / 1_000_000) as usize;
            if let (Some(count), Some(max)) =
                (per_second.get_mut(slot), per_second_max_ms.get_mut(slot))
            {
                *count += 1;
                *max = max.max(s.latency_us as f64 / 1000.0);
            }
        }
        let mut errors = BTreeMap::new();
        for run in &load.runs {
            for (kind, n) in &run.errors {
                *errors.entry(kind.clone()).or_default() += n;
            }
        }
        let accepted = latencies.len() as f64;
        IntakeFigures {
            offered: load.offered,
            rate: accepted / load.window_seconds(),
            p50_ms: percentile(&latencies, 50.0),
            p99_ms: percentile(&latencies, 99.0),
            max_ms: latencies.last().copied(),
            per_second,
            per_second_max_ms,
            accepted_total: load.samples().filter(|s| s.accepted).count() as u64,
            errors,
            cpu_us_per_job: load
                .cpu
                .as_ref()
                .filter(|_| accepted > 0.0)
                .map(|c| c.portico_ns as f64 / 1000.0 / accepted),
        }
    }

    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

// ------------------------------------------------------------------------------ draining

/// The result files of a directory: name and modification time.
fn result_files(dir: &Path) -> Vec<SystemTime> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        // The store writes a temporary file and renames it: only `.json` names are results.
        .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
        .filter_map(|e| e.metadata().ok()?.modified().ok())
        .collect()
}

/// The count of `.json` files in `dir`, cheaper than [`result_files`].
fn count_results(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".json"))
            .count() as u64
    })
}

/// What the run saw of the results after its load.
#[derive(Debug)]
struct Drain {
    times: Vec<SystemTime>,
    /// Whether all expected results arrived within the limit.
    complete: bool,
}

/// Waits until `expected` results exist in `dir` or `limit` passed; their times.
async fn wait_for_results(dir: &Path, expected: u64, limit: Duration) -> Drain {
    let deadline = Instant::now() + limit;
    let complete = loop {
        if count_results(dir) >= expected {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        sleep(Duration::from_millis(250)).await;
    };
    Drain {
        times: result_files(dir),
        complete,
    }
}

/// Completion figures of one draining run.
#[derive(Debug, Clone, Default)]
struct DrainFigures {
    /// Results written in the measured window (intake running), per second.
    completion_rate: f64,
    /// Jobs accepted but without a result when the load stopped.
    backlog: u64,
    /// Results per second after the load stopped (the dispatcher alone), until the last
    /// result or the end of the watch.
    after_rate: Option<f64>,
    /// Results found at the end of the watch, and jobs accepted.
    results: u64,
    expected: u64,
    /// From the end of the load to the last result, s, when every result arrived.
    drained_after_s: Option<f64>,
}

impl DrainFigures {
    fn from(drain: &Drain, expected: u64, load: &Load, watched: Duration) -> DrainFigures {
        let count = |from: SystemTime, to: Option<SystemTime>| {
            drain
                .times
                .iter()
                .filter(|&&t| t >= from && to.is_none_or(|to| t < to))
                .count() as u64
        };
        let before_end = count(UNIX_EPOCH, Some(load.wall_end));
        let after = count(load.wall_end, None);
        let last = drain.times.iter().max().copied();
        let drained_after_s = last
            .filter(|_| drain.complete)
            .and_then(|last| last.duration_since(load.wall_end).ok())
            .map(|d| d.as_secs_f64());
        // Until the last result when all came, else over the whole watch.
        let after_seconds = drained_after_s.unwrap_or(watched.as_secs_f64());
        DrainFigures {
            completion_rate: count(load.wall_warm, Some(load.wall_end)) as f64
                / load.window_seconds(),
            backlog: expected.saturating_sub(before_end),
            after_rate: (after > 0 && after_seconds > 0.0).then(|| after as f64 / after_seconds),
            results: drain.times.len() as u64,
            expected,
            drained_after_s,
        }
    }
}

// ------------------------------------------------------------------------------ end to end

/// One async job's times, ms from just before its POST.
#[derive(Debug, Clone, Copy)]
struct JobTimes {
    intake_ms: f64,
    file_ms: f64,
    completed_ms: f64,
}

/// A direct call to the worker: ms to the whole answer.
async fn direct_call(sender: &mut Sender, addr: SocketAddr, body: &Bytes) -> anyhow::Result<f64> {
    let start = Instant::now();
    let (status, answer) = exchange(sender, post(addr, WORKER_PATH, body)?).await?;
    let ms = millis(start.elapsed());
    if status != StatusCode::OK {
        bail!("direct call: HTTP {status}: {}", snippet(&answer));
    }
    Ok(ms)
}

/// One async job, from its POST to the status API saying `completed`.
async fn async_job(
    sender: &mut Sender,
    addr: SocketAddr,
    body: &Bytes,
    results: &Path,
) -> anyhow::Result<JobTimes> {
    let start = Instant::now();
    let (status, answer) = exchange(sender, post(addr, INTAKE_PATH, body)?).await?;
    let intake_ms = millis(start.elapsed());
    if status != StatusCode::ACCEPTED {
        bail!("intake: HTTP {status}: {}", snippet(&answer));
    }
    let id = request_id(&answer)?;
    let file = results.join(format!("{id}.json"));
    wait_for_file(&file, E2E_LIMIT.saturating_sub(start.elapsed())).await?;
    let file_ms = millis(start.elapsed());
    let status_path = format!("{STATUS_PREFIX}{id}");
    loop {
        let (code, answer) = exchange(sender, get(addr, &status_path)?).await?;
        let state: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
        match state.get("status").and_then(Value::as_str) {
            Some("completed") if code == StatusCode::OK => break,
            Some("queued" | "in_progress") => {}
            _ => bail!("status: HTTP {code}: {}", snippet(&answer)),
        }
        if start.elapsed() >= E2E_LIMIT {
            bail!("not completed within {E2E_LIMIT:?}");
        }
        pause(RESULT_POLL).await;
    }
    let completed_ms = millis(start.elapsed());
    let document: Value = serde_json::from_slice(&std::fs::read(&file)?)?;
    if document.get("status_code").and_then(Value::as_u64) != Some(200) {
        bail!(
            "the result is not the worker's 200: {}",
            snippet(document.to_string().as_bytes())
        );
    }
    Ok(JobTimes {
        intake_ms,
        file_ms,
        completed_ms,
    })
}

/// Waits until `file` exists, looking every [`RESULT_POLL`].
async fn wait_for_file(file: &Path, limit: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    while !file.exists() {
        if Instant::now() >= deadline {
            bail!("no result {} within {limit:?}", file.display());
        }
        pause(RESULT_POLL).await;
    }
    Ok(())
}

/// Sleeps for `d` with the thread timer: tokio's timer rounds up to whole milliseconds,
/// too coarse for a poll whose period should be small against what it measures.
async fn pause(d: Duration) {
    let _ = tokio::task::spawn_blocking(move || std::thread::sleep(d)).await;
}

/// End-to-end figures of one run.
#[derive(Debug, Clone, Default)]
struct E2eFigures {
    direct_ms: Vec<f64>,
    intake_ms: Vec<f64>,
    file_ms: Vec<f64>,
    completed_ms: Vec<f64>,
    failures: BTreeMap<String, u64>,
}

impl E2eFigures {
    fn count_failure(&mut self, err: &anyhow::Error) {
        *self.failures.entry(format!("{err:#}")).or_default() += 1;
    }

    /// p`p` of `values`.
    fn pct(values: &[f64], p: f64) -> Option<f64> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        percentile(&sorted, p)
    }

    fn overhead(&self, to: &[f64], p: f64) -> Option<f64> {
        Some(Self::pct(to, p)? - Self::pct(&self.direct_ms, p)?)
    }
}

impl Outcome {
    /// One line for the progress log.
    fn brief(&self) -> String {
        let intake = |f: &IntakeFigures| {
            format!(
                "{}{:.0} 202/s, p50 {} ms, p99 {} ms, {} errors",
                f.offered
                    .map_or(String::new(), |r| format!("paced at {r:.0}/s: ")),
                f.rate,
                fmt(f.p50_ms, 2),
                fmt(f.p99_ms, 2),
                f.error_count()
            )
        };
        match self {
            Outcome::Intake(f) => intake(f),
            Outcome::Draining(f, d) => format!(
                "{}; {:.0} results/s meanwhile, backlog {} at the end, then {} results/s; {} of {} results{}",
                intake(f),
                d.completion_rate,
                d.backlog,
                fmt(d.after_rate, 0),
                d.results,
                d.expected,
                d.drained_after_s
                    .map_or(String::new(), |s| format!(" (all {s:.1} s after the load)")),
            ),
            Outcome::EndToEnd(e) => format!(
                "direct p50 {} ms; to result p50 {} ms, p99 {} ms; to completed p50 {} ms; {} failures",
                fmt(E2eFigures::pct(&e.direct_ms, 50.0), 2),
                fmt(E2eFigures::pct(&e.file_ms, 50.0), 2),
                fmt(E2eFigures::pct(&e.file_ms, 99.0), 2),
                fmt(E2eFigures::pct(&e.completed_ms, 50.0), 2),
                e.failures.values().sum::<u64>()
            ),
        }
    }
}

// ------------------------------------------------------------------------------ machine

/// The `cpu` line of `/proc/stat`, in ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct MachineTicks {
    /// Everything but idle and iowait, steal included.
    busy: u64,
    steal: u64,
    total: u64,
}

impl MachineTicks {
    fn read() -> Option<MachineTicks> {
        parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    fn since(&self, before: &MachineTicks) -> MachineTicks {
        MachineTicks {
            busy: self.busy.saturating_sub(before.busy),
            steal: self.steal.saturating_sub(before.steal),
            total: self.total.saturating_sub(before.total),
        }
    }

    fn busy_pct(&self) -> f64 {
        100.0 * self.busy as f64 / self.total.max(1) as f64
    }

    fn steal_pct(&self) -> f64 {
        100.0 * self.steal as f64 / self.total.max(1) as f64
    }
}

fn parse_proc_stat(text: &str) -> Option<MachineTicks> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|n| n.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let field = |i: usize| v.get(i).copied().unwrap_or(0);
    let total: u64 = (0..8).map(field).sum();
    Some(MachineTicks {
        busy: total - field(3) - field(4),
        steal: field(7),
        total,
    })
}

/// `/proc/loadavg`'s first three fields.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|t| t.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

/// Waits until the machine's CPUs were less than `pct` % of one core busy over half a
/// second, for at most `limit`.
async fn wait_for_quiet(pct: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let before = MachineTicks::read();
        sleep(Duration::from_millis(500)).await;
        let busy = MachineTicks::read()
            .zip(before)
            .map(|(after, before)| after.since(&before))
            .map_or(0.0, |t| {
                (t.busy * 1_000_000_000 / USER_HZ) as f64 / 0.5e9 * 100.0
            });
        if busy < pct || Instant::now() >= deadline {
            return;
        }
    }
}

/// CPU time (ns) of every thread of a process, by thread name with digits dropped
/// (`portico-data-0` and `portico-data-1` add up as `portico-data-`).
fn threads_cpu(pid: u32) -> BTreeMap<String, u64> {
    let mut by_name = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return by_name;
    };
    for task in tasks.filter_map(Result::ok) {
        let path = task.path();
        let ns = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        let name: String = std::fs::read_to_string(path.join("comm"))
            .unwrap_or_default()
            .trim()
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        *by_name.entry(name).or_default() += ns;
    }
    by_name
}

/// CPU time (ns) of the journal threads of every file system (`jbd2/<device>`).
fn journal_cpu() -> u64 {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return 0;
    };
    procs
        .filter_map(Result::ok)
        .filter(|p| {
            p.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter(|p| {
            std::fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.starts_with("jbd2/"))
        })
        .filter_map(|p| {
            let stat = std::fs::read_to_string(p.path().join("schedstat")).ok()?;
            stat.split_whitespace().next()?.parse::<u64>().ok()
        })
        .sum()
}

/// CPU counters at one instant.
#[derive(Debug, Clone)]
struct Snapshot {
    at: std::time::Instant,
    machine: MachineTicks,
    portico: BTreeMap<String, u64>,
    redis: u64,
    worker: u64,
    client: u64,
    journal: u64,
}

impl Snapshot {
    fn take(pids: Pids) -> Option<Snapshot> {
        let total = |pid: Option<u32>| pid.map_or(0, |pid| threads_cpu(pid).values().sum());
        Some(Snapshot {
            at: std::time::Instant::now(),
            machine: MachineTicks::read()?,
            portico: threads_cpu(pids.portico),
            redis: total(pids.redis),
            worker: total(pids.worker),
            client: total(Some(std::process::id())),
            journal: journal_cpu(),
        })
    }

    fn since(&self, before: &Snapshot) -> CpuUse {
        let by_thread: BTreeMap<String, u64> = self
            .portico
            .iter()
            .map(|(name, &ns)| {
                let was = before.portico.get(name).copied().unwrap_or(0);
                (name.clone(), ns.saturating_sub(was))
            })
            .collect();
        CpuUse {
            wall_ns: u64::try_from(self.at.duration_since(before.at).as_nanos()).unwrap_or(0),
            machine: self.machine.since(&before.machine),
            portico_ns: by_thread.values().sum(),
            portico_threads: by_thread,
            redis_ns: self.redis.saturating_sub(before.redis),
            worker_ns: self.worker.saturating_sub(before.worker),
            client_ns: self.client.saturating_sub(before.client),
            journal_ns: self.journal.saturating_sub(before.journal),
        }
    }
}

/// CPU used during a measured window.
#[derive(Debug, Clone, Default)]
struct CpuUse {
    wall_ns: u64,
    machine: MachineTicks,
    portico_ns: u64,
    /// Portico's CPU by thread name (digits dropped).
    portico_threads: BTreeMap<String, u64>,
    redis_ns: u64,
    worker_ns: u64,
    client_ns: u64,
    /// The file systems' journal threads (`jbd2/…`): they do the work of every fsync, the
    /// run's included.
    journal_ns: u64,
}

impl CpuUse {
    /// Percent of one core.
    fn pct(&self, ns: u64) -> f64 {
        100.0 * ns as f64 / self.wall_ns.max(1) as f64
    }

    /// What the machine's CPUs did besides this run's processes, % of one core (steal
    /// included: the host took it from this machine).
    fn other_pct(&self) -> f64 {
        let busy_ns = self.machine.busy * (1_000_000_000 / USER_HZ);
        let ours = self.portico_ns + self.redis_ns + self.worker_ns + self.client_ns;
        // The journal threads work mostly for this run's fsyncs during it; counting them as
        // other load would flag every fsync-heavy run as noisy.
        let ours = ours + self.journal_ns;
        self.pct(busy_ns.saturating_sub(ours))
    }

    fn steal_pct(&self) -> f64 {
        self.pct(self.machine.steal * (1_000_000_000 / USER_HZ))
    }
}

/// What `fdatasync` cost on the run directory's disk, before a repetition.
#[derive(Debug, Clone, Copy)]
struct FsyncProbe {
    /// One 4 KiB block appended, then `fdatasync`: the cheapest durable write.
    append: Quantiles,
    /// 16 blocks written at scattered offsets of a 16 MiB file, then `fdatasync`: about
    /// what one redb commit writes (B-tree pages of four tables and the header).
    scattered: Quantiles,
}

/// p50 and p99 of a probe, ms.
#[derive(Debug, Clone, Copy)]
struct Quantiles {
    p50_ms: f64,
    p99_ms: f64,
}

impl Quantiles {
    fn of(mut times: Vec<f64>) -> Quantiles {
        times.sort_by(f64::total_cmp);
        Quantiles {
            p50_ms: percentile(&times, 50.0).unwrap_or(0.0),
            p99_ms: percentile(&times, 99.0).unwrap_or(0.0),
        }
    }
}

fn fsync_probe(dir: &Path) -> anyhow::Result<FsyncProbe> {
    use std::os::unix::fs::FileExt as _;
    const BLOCK: u64 = 4096;
    const FILE_BLOCKS: u64 = 4096;
    let path = dir.join("fsync-probe");
    let block = [7u8; BLOCK as usize];
    let mut file = std::fs::File::create(&path)?;
    let mut append = Vec::with_capacity(100);
    for _ in 0..100 {
        let start = std::time::Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        append.push(millis(start.elapsed()));
    }
    // A file already at its size, so that the scattered writes do not change its length.
    file.set_len(BLOCK * FILE_BLOCKS)?;
    file.sync_all()?;
    let mut scattered = Vec::with_capacity(100);
    let mut next = 12_345u64;
    for _ in 0..100 {
        let start = std::time::Instant::now();
        for _ in 0..16 {
            // A small LCG: offsets spread over the file, the same on every run.
            next = next.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            file.write_all_at(&block, (next >> 33) % FILE_BLOCKS * BLOCK)?;
        }
        file.sync_data()?;
        scattered.push(millis(start.elapsed()));
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(FsyncProbe {
        append: Quantiles::of(append),
        scattered: Quantiles::of(scattered),
    })
}

/// The machine, for the report.
#[derive(Debug, Default)]
struct Machine {
    cpus: usize,
    model: String,
    kernel: String,
    os: String,
    /// The run directory's file system: type, device, mount point.
    filesystem: String,
}

impl Machine {
    fn describe(run_dir: &Path) -> Machine {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown CPU".to_owned(), |(_, m)| m.trim().to_owned());
        let os = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map_or("unknown OS".to_owned(), |v| v.trim_matches('"').to_owned());
        Machine {
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            model,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os,
            filesystem: filesystem_of(run_dir, &read("/proc/self/mounts")),
        }
    }
}

/// `ext4 (/dev/vda on /)`: the mount holding `path`, from `/proc/self/mounts`.
fn filesystem_of(path: &Path, mounts: &str) -> String {
    mounts
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (device, point, kind) = (*f.first()?, *f.get(1)?, *f.get(2)?);
            path.starts_with(point)
                .then_some((point.len(), device, point, kind))
        })
        .max_by_key(|m| m.0)
        .map_or("unknown".to_owned(), |(_, device, point, kind)| {
            format!("{kind} ({device} on {point})")
        })
}

// ------------------------------------------------------------------------------ stats

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median, min and max of per-repetition values.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = Option<f64>>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().flatten().collect();
        v.sort_by(f64::total_cmp);
        Some(Spread {
            median: percentile(&v, 50.0)?,
            min: *v.first()?,
            max: *v.last()?,
        })
    }
}

/// `median (min–max)`, or `—`.
fn spread(s: Option<Spread>, digits: usize) -> String {
    match s {
        Some(s) if s.min == s.max => format!("{:.digits$}", s.median),
        Some(s) => format!(
            "{:.digits$} ({:.digits$}–{:.digits$})",
            s.median, s.min, s.max
        ),
        None => "—".to_owned(),
    }
}

fn fmt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

// ------------------------------------------------------------------------------ report

/// Issue 7's goal, as measured.
struct Goal {
    /// 202/s with clients back to back.
    capacity: Option<Spread>,
    /// p99 in that run, ms.
    saturated_p99: Option<Spread>,
    /// 202/s achieved when paced at the goal's rate.
    paced_rate: Option<Spread>,
    /// p99 in that run, ms.
    paced_p99: Option<Spread>,
    /// Non-202 answers and failed exchanges in both.
    errors: u64,
    met: bool,
}

/// Everything the report is made of.
struct Report<'a> {
    bench: &'a Bench<'a>,
    machine: Machine,
    started: SystemTime,
    elapsed: Duration,
    busy: Option<MachineTicks>,
    loadavg: (String, String),
    fsync: Vec<FsyncProbe>,
    tries: Vec<Try>,
}

impl Report<'_> {
    /// The kept, successful tries of `phase` for `variant`.
    fn kept(&self, phase: Phase, variant: Variant) -> impl Iterator<Item = &Try> {
        self.tries
            .iter()
            .filter(move |t| t.kept && t.phase == phase && t.variant == variant)
    }

    fn intake(&self, phase: Phase, variant: Variant) -> Vec<&IntakeFigures> {
        self.kept(phase, variant)
            .filter_map(|t| match &t.outcome {
                Ok(Outcome::Intake(f) | Outcome::Draining(f, _)) => Some(f),
                _ => None,
            })
            .collect()
    }

    fn drains(&self, variant: Variant) -> Vec<&DrainFigures> {
        self.kept(Phase::Draining, variant)
            .filter_map(|t| match &t.outcome {
                Ok(Outcome::Draining(_, d)) => Some(d),
                _ => None,
            })
            .collect()
    }

    fn e2e(&self, variant: Variant) -> Vec<&E2eFigures> {
        self.kept(Phase::EndToEnd, variant)
            .filter_map(|t| match &t.outcome {
                Ok(Outcome::EndToEnd(e)) => Some(e),
                _ => None,
            })
            .collect()
    }

    fn cpus(&self, phase: Phase, variant: Variant) -> Vec<&CpuUse> {
        self.kept(phase, variant)
            .filter_map(|t| t.cpu.as_ref())
            .collect()
    }

    fn main_embedded(&self) -> Variant {
        Variant {
            backend: Backend::Embedded,
            threads: self.bench.args.threads,
        }
    }

    /// Issue 7's goal on the embedded queue: capacity from the back-to-back run, latency
    /// from the run paced at the goal's rate (at saturation, a closed loop's latency is
    /// just clients ÷ rate, whatever the server).
    fn goal(&self) -> Goal {
        let alone = self.intake(Phase::Alone, self.main_embedded());
        let paced = self.intake(Phase::Paced, self.main_embedded());
        let capacity = Spread::of(alone.iter().map(|f| Some(f.rate)));
        let paced_rate = Spread::of(paced.iter().map(|f| Some(f.rate)));
        let paced_p99 = Spread::of(paced.iter().map(|f| f.p99_ms));
        let errors = alone.iter().chain(&paced).map(|f| f.error_count()).sum();
        let offered = self.bench.args.paced_rate;
        let met = capacity.is_some_and(|r| r.median >= GOAL_RATE)
            && offered >= GOAL_RATE
            && paced_rate.is_some_and(|r| r.median >= 0.98 * offered)
            && paced_p99.is_some_and(|p| p.median <= GOAL_P99_MS)
            && errors == 0;
        Goal {
            capacity,
            saturated_p99: Spread::of(alone.iter().map(|f| f.p99_ms)),
            paced_rate,
            paced_p99,
            errors,
            met,
        }
    }

    fn summary(&self) -> Value {
        let goal = self.goal();
        let rows = |phase: Phase| -> Vec<Value> {
            self.bench
                .intake_variants()
                .into_iter()
                .map(|v| {
                    let runs = self.intake(phase, v);
                    json!({
                        "backend": v.backend.slug(),
                        "threads": v.threads,
                        "rate": Spread::of(runs.iter().map(|f| Some(f.rate))).map(|s| s.median),
                        "p99_ms": Spread::of(runs.iter().map(|f| f.p99_ms)).map(|s| s.median),
                        "errors": runs.iter().map(|f| f.error_count()).sum::<u64>(),
                    })
                })
                .collect()
        };
        json!({
            "goal_met": goal.met,
            "embedded_capacity": goal.capacity.map(|s| s.median),
            "embedded_paced_p99_ms": goal.paced_p99.map(|s| s.median),
            "intake_alone": rows(Phase::Alone),
            "intake_paced": rows(Phase::Paced),
            "failed_tries": self.tries.iter().filter(|t| t.outcome.is_err()).count(),
        })
    }

    fn markdown(&self) -> String {
        let mut md = String::new();
        self.intro(&mut md);
        self.setup_section(&mut md);
        self.alone_section(&mut md);
        self.paced_section(&mut md);
        self.draining_section(&mut md);
        self.e2e_section(&mut md);
        self.limits_section(&mut md);
        self.method_section(&mut md);
        self.tries_section(&mut md);
        self.config_section(&mut md);
        md
    }

    fn intro(&self, md: &mut String) {
        let goal = self.goal();
        let _ = write!(
            md,
            "# Benchmarks: async intake and dispatch\n\n\
             How many async jobs Portico accepts durably per second and how quickly it answers \
             the `202`, how fast it works them off meanwhile, and what a job costs end to end \
             against calling the worker directly (issue 7). `scripts/bench.sh async` writes \
             this file (through `asyncbench`, bench/src/bin/asyncbench.rs, whose header \
             explains every measure); nothing below is edited by hand.\n\n\
             **Goal (issue 7): ≥ {GOAL_RATE:.0} jobs/s accepted durably, p99 intake latency \
             ≤ {GOAL_P99_MS:.0} ms, embedded queue, this machine: {}.** Capacity ({} clients \
             back to back): {} 202/s, with p99 {} ms at that saturation. Paced at {:.0}/s \
             offered: {} 202/s achieved, p99 **{} ms**. Errors: {}. Medians of {} \
             repetitions, range in brackets; {} data-plane thread(s).\n\n",
            if goal.met { "met" } else { "not met" },
            self.bench.args.clients,
            spread(goal.capacity, 0),
            spread(goal.saturated_p99, 1),
            self.bench.args.paced_rate,
            spread(goal.paced_rate, 0),
            spread(goal.paced_p99, 2),
            goal.errors,
            self.bench.args.reps,
            self.bench.args.threads,
        );
    }

    fn setup_section(&self, md: &mut String) {
        let a = self.bench.args;
        let m = &self.machine;
        let busy = self.busy.map_or_else(
            || "unknown".to_owned(),
            |b| {
                format!(
                    "{:.0}% of all CPUs busy (this benchmark included), {:.1}% stolen by the host",
                    b.busy_pct(),
                    b.steal_pct()
                )
            },
        );
        let probe = |f: fn(&FsyncProbe) -> f64| {
            spread(Spread::of(self.fsync.iter().map(|p| Some(f(p)))), 2)
        };
        let _ = write!(
            md,
            "## Setup of the last run\n\n\
             - Machine: {} CPUs (`nproc`), {}, Linux {}, {}; a shared virtual machine. During \
             the run: {busy}; load average {} before, {} after.\n\
             - Disk: the run directory (queue file, Redis AOF, results) is on {}. `fdatasync` \
             probes before each repetition, 100 times each: one 4 KiB block appended, p50 {} \
             ms, p99 {} ms; 16 blocks at scattered offsets of a 16 MiB file (about what one \
             redb commit writes), p50 {} ms, p99 {} ms.\n\
             - Generated {} in {:.0} s; Portico at `{}` ({}, release profile); {}.\n\
             - Portico: `server.worker_threads = {}` (data-plane threads; the control runtime, \
             the queue's writer thread and the async dispatcher thread come on top), access log \
             to a file, `PORTICO_LOG=info`.\n\
             - Everything on 127.0.0.1, nothing pinned: Portico, Redis, the worker and the \
             clients share the {} CPUs.\n\
             - Load: {} keep-alive HTTP/1.1 connections (hyper client, one current-thread \
             runtime), each POSTing `{}` ({} bytes) back to back; {} s warm-up, then {} s \
             measured; every run {} times, the backends in a rotating order.\n\
             - Command: `scripts/bench.sh async`, which runs `asyncbench --portico \
             target/release/portico --fakeworker target/release/fakeworker --clients {} \
             --seconds {} --warmup-seconds {} --reps {} --e2e-jobs {} --threads {} \
             --extra-threads {} --paced-rate {} --drain-seconds {} --out \
             docs/benchmarks-async.md`.\n\n",
            m.cpus,
            m.model,
            m.kernel,
            m.os,
            self.loadavg.0,
            self.loadavg.1,
            m.filesystem,
            probe(|p| p.append.p50_ms),
            probe(|p| p.append.p99_ms),
            probe(|p| p.scattered.p50_ms),
            probe(|p| p.scattered.p99_ms),
            utc_minute(self.started),
            self.elapsed.as_secs_f64(),
            a.source,
            a.toolchain,
            self.bench
                .redis
                .as_deref()
                .unwrap_or("Redis not available: its rows are left out"),
            a.threads,
            m.cpus,
            a.clients,
            CHAT_BODY,
            CHAT_BODY.len(),
            a.warmup_seconds,
            a.seconds,
            a.reps,
            a.clients,
            a.seconds,
            a.warmup_seconds,
            a.reps,
            a.e2e_jobs,
            a.threads,
            a.extra_threads,
            a.paced_rate,
            a.drain_seconds,
        );
    }

    fn intake_row(&self, md: &mut String, phase: Phase, v: Variant, extra: &str) {
        let runs = self.intake(phase, v);
        let cpus = self.cpus(phase, v);
        let errors: u64 = runs.iter().map(|f| f.error_count()).sum();
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {}{extra} |",
            v.backend.label(),
            v.threads,
            spread(Spread::of(runs.iter().map(|f| Some(f.rate))), 0),
            spread(Spread::of(runs.iter().map(|f| f.p50_ms)), 2),
            spread(Spread::of(runs.iter().map(|f| f.p99_ms)), 2),
            spread(Spread::of(runs.iter().map(|f| f.max_ms)), 1),
            if errors == 0 {
                "0".to_owned()
            } else {
                format!("**{errors}**")
            },
            spread(Spread::of(runs.iter().map(|f| f.cpu_us_per_job)), 0),
            spread(Spread::of(cpus.iter().map(|c| Some(c.pct(c.redis_ns)))), 0),
            spread(Spread::of(cpus.iter().map(|c| Some(c.other_pct()))), 0),
        );
    }

    fn alone_section(&self, md: &mut String) {
        let a = self.bench.args;
        let _ = write!(
            md,
            "## 1. Intake alone\n\n\
             {} clients POST back to back; nobody consumes (the endpoint's only worker never \
             passes its health check, so the dispatcher claims nothing: checked, no result was \
             written). 202/s counts answers completed in the {} s window; latency is from just \
             before sending to the whole 202 read, over those answers. Errors: every non-202 \
             answer and failed exchange of the run, warm-up included. CPU per job is Portico's \
             (all threads) over the window divided by the 202s; Redis and other load in % of \
             one core.\n\n\
             | queue | data-plane threads | 202/s | p50 ms | p99 ms | max ms | errors | Portico CPU µs/job | Redis CPU % | other load % |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
            a.clients, a.seconds
        );
        for v in self.bench.intake_variants() {
            self.intake_row(md, Phase::Alone, v, "");
        }
        self.errors_list(md, Phase::Alone);
        self.threads_table(md, Phase::Alone);
        self.trend(md);
    }

    fn paced_section(&self, md: &mut String) {
        let a = self.bench.args;
        let _ = write!(
            md,
            "## 2. Intake paced at {rate:.0}/s\n\n\
             The same set-up (nobody consumes), but the {clients} clients together send \
             {rate:.0} requests per second, each on its own schedule (one request every \
             {period:.1} ms, the clients spread over that period): the latency a steady \
             {rate:.0} jobs/s gets, which a back-to-back loop cannot show (at saturation its \
             latency is clients ÷ rate, whatever the server does). A request whose turn came \
             while its client still waited for the previous answer counts from its turn, not \
             from when it could be sent, so a stall shows in full (no coordinated omission). \
             202/s is what was achieved.\n\n\
             | queue | data-plane threads | 202/s | p50 ms | p99 ms | max ms | errors | Portico CPU µs/job | Redis CPU % | other load % |\n\
             |---|---|---|---|---|---|---|---|---|---|\n",
            rate = a.paced_rate,
            clients = a.clients,
            period = a.clients as f64 / a.paced_rate * 1000.0,
        );
        for v in self.bench.intake_variants() {
            self.intake_row(md, Phase::Paced, v, "");
        }
        self.errors_list(md, Phase::Paced);
        self.threads_table(md, Phase::Paced);
        let runs = self.intake(Phase::Paced, self.main_embedded());
        if !runs.is_empty() {
            let _ = write!(
                md,
                "\nThe slowest 202 in each second of the window (ms), embedded queue, {} \
                 data-plane thread(s), each repetition: {}.\n",
                self.bench.args.threads,
                runs.iter()
                    .map(|f| {
                        let maxes: Vec<String> = f
                            .per_second_max_ms
                            .iter()
                            .map(|m| format!("{m:.1}"))
                            .collect();
                        format!("[{}]", maxes.join(", "))
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            );
        }
        md.push('\n');
    }

    /// Where Portico's CPU went, by thread, in the median-rate run of each variant.
    fn threads_table(&self, md: &mut String, phase: Phase) {
        let variants: Vec<Variant> = match phase {
            Phase::Alone | Phase::Paced => self.bench.intake_variants(),
            Phase::Draining | Phase::EndToEnd => self.bench.backend_variants(),
        };
        let mut names = std::collections::BTreeSet::new();
        let mut rows = Vec::new();
        for v in variants {
            let mut cpus = self.cpus(phase, v);
            cpus.sort_by(|a, b| a.pct(a.portico_ns).total_cmp(&b.pct(b.portico_ns)));
            if let Some(c) = cpus.get(cpus.len() / 2) {
                names.extend(
                    c.portico_threads
                        .iter()
                        .filter(|(_, ns)| c.pct(**ns) >= 0.5)
                        .map(|(n, _)| n.clone()),
                );
                rows.push((v, (*c).clone()));
            }
        }
        if rows.is_empty() {
            return;
        }
        let _ = write!(
            md,
            "\nPortico's CPU by thread during the window (% of one core; the median run by \
             Portico CPU; digits dropped from thread names, so `portico-data-` is all \
             data-plane threads together; `portico` is the control runtime, which also runs \
             the Redis client's connection; `tokio-rt-worker` are tokio's blocking threads, \
             where the result files are written):\n\n| queue | threads | total |"
        );
        for name in &names {
            let _ = write!(md, " `{name}` |");
        }
        let _ = write!(md, "\n|---|---|---|");
        for _ in &names {
            md.push_str("---|");
        }
        md.push('\n');
        for (v, c) in rows {
            let _ = write!(
                md,
                "| {} | {} | {:.0} |",
                v.backend.slug(),
                v.threads,
                c.pct(c.portico_ns)
            );
            for name in &names {
                let ns = c.portico_threads.get(name).copied().unwrap_or(0);
                let _ = write!(md, " {:.0} |", c.pct(ns));
            }
            md.push('\n');
        }
    }

    /// Intake per second over the window, for the embedded queue: does a growing queue
    /// slow it down?
    fn trend(&self, md: &mut String) {
        let runs = self.intake(Phase::Alone, self.main_embedded());
        if runs.is_empty() {
            return;
        }
        let _ = write!(
            md,
            "\n202s per second of the window, embedded queue ({} data-plane thread(s)), each \
             repetition (the queue grows by every job: a falling rate would show intake \
             slowing as the queue gets longer): {}.\n\n",
            self.bench.args.threads,
            runs.iter()
                .map(|f| f
                    .per_second
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(", "))
                .map(|s| format!("[{s}]"))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    fn errors_list(&self, md: &mut String, phase: Phase) {
        let mut all: BTreeMap<(String, String), u64> = BTreeMap::new();
        for t in self.tries.iter().filter(|t| t.kept && t.phase == phase) {
            let errors = match &t.outcome {
                Ok(Outcome::Intake(f) | Outcome::Draining(f, _)) => &f.errors,
                Ok(Outcome::EndToEnd(e)) => &e.failures,
                Err(_) => continue,
            };
            for (kind, n) in errors {
                *all.entry((t.variant.slug(), kind.clone())).or_default() += n;
            }
        }
        if all.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "\n**Errors** (all kept repetitions): {}.",
            all.iter()
                .map(|((v, kind), n)| format!("{v}: {n} × {}", kind.replace('|', "/")))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    fn draining_section(&self, md: &mut String) {
        let a = self.bench.args;
        let _ = write!(
            md,
            "## 3. Intake while draining\n\n\
             The back-to-back load of section 1, while the dispatcher sends every job to a \
             static fakeworker (`concurrency_per_worker = {}`: at most {} jobs at the worker at \
             once; it answers a direct call in about 0.1–0.2 ms, section 4), writes its result \
             file and finishes it. \"Results/s meanwhile\": result files whose modification \
             time falls in the window, per second. \"Backlog\": jobs accepted without a result \
             when the load stopped. The run then watches for {} s more: \"results/s after\" \
             is the dispatcher's pace with no intake beside it (up to the last result if all \
             arrived), and the last column counts results at the end of the watch against \
             jobs accepted.\n\n\
             | queue | data-plane threads | 202/s | p50 ms | p99 ms | max ms | errors | Portico CPU µs/job | Redis CPU % | other load % | results/s meanwhile | backlog at the end | results/s after | results / accepted |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
            a.concurrency_per_worker, a.concurrency_per_worker, a.drain_seconds
        );
        for v in self.bench.backend_variants() {
            let d = self.drains(v);
            let extra = format!(
                " | {} | {} | {} | {}",
                spread(Spread::of(d.iter().map(|d| Some(d.completion_rate))), 0),
                spread(Spread::of(d.iter().map(|d| Some(d.backlog as f64))), 0),
                spread(Spread::of(d.iter().map(|d| d.after_rate)), 0),
                d.iter()
                    .map(|d| format!("{} / {}", d.results, d.expected))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            self.intake_row(md, Phase::Draining, v, &extra);
        }
        self.errors_list(md, Phase::Draining);
        self.threads_table(md, Phase::Draining);
        md.push('\n');
    }

    /// The kept run of `phase` for `variant` with the median Portico CPU.
    fn median_cpu(&self, phase: Phase, variant: Variant) -> Option<CpuUse> {
        let mut cpus = self.cpus(phase, variant);
        cpus.sort_by(|a, b| a.pct(a.portico_ns).total_cmp(&b.pct(b.portico_ns)));
        cpus.get(cpus.len() / 2).map(|c| (*c).clone())
    }

    fn limits_section(&self, md: &mut String) {
        let main = self.main_embedded();
        let _ = write!(md, "## What limits it\n\n");
        self.capacity_limits(md, main);
        self.latency_limits(md, main);
        self.draining_limits(md, main);
        self.e2e_limits(md, main);
        md.push('\n');
    }

    /// Portico's CPU share of `thread` (digits dropped) in `c`, % of a core.
    fn thread_pct(c: &CpuUse, thread: &str) -> f64 {
        c.pct(c.portico_threads.get(thread).copied().unwrap_or(0))
    }

    /// The median over repetitions of `f` of the kept runs of `phase`, `backend`.
    fn median_of(
        &self,
        phase: Phase,
        backend: Backend,
        f: fn(&IntakeFigures) -> Option<f64>,
    ) -> Option<f64> {
        let variant = Variant {
            backend,
            threads: self.bench.args.threads,
        };
        Spread::of(self.intake(phase, variant).into_iter().map(f)).map(|s| s.median)
    }

    fn capacity_limits(&self, md: &mut String, main: Variant) {
        let Some(c) = self.median_cpu(Phase::Alone, main) else {
            return;
        };
        let busy = c.pct(c.machine.busy * (1_000_000_000 / USER_HZ));
        let capacity = (self.machine.cpus * 100) as f64;
        let _ = writeln!(
            md,
            "- **Capacity (embedded, back to back, {} data-plane thread(s), median run).** \
             The machine's {} CPUs were {busy:.0}% busy of {capacity:.0}%: Portico {:.0}% \
             (data plane {:.0}%, queue writer {:.0}%, async dispatcher {:.0}%, control \
             runtime {:.0}%, access log {:.0}%), the clients {:.0}%, the journal threads \
             {:.0}%, everything else {:.0}%. {}",
            main.threads,
            self.machine.cpus,
            c.pct(c.portico_ns),
            Self::thread_pct(&c, "portico-data-"),
            Self::thread_pct(&c, "portico-queue"),
            Self::thread_pct(&c, "portico-async"),
            Self::thread_pct(&c, "portico"),
            Self::thread_pct(&c, "portico-accessl"),
            c.pct(c.client_ns),
            c.pct(c.journal_ns),
            c.other_pct(),
            if busy >= 0.85 * capacity {
                "Capacity is CPU-bound: the writer commits whatever waits in one fsync'd \
                 transaction, so more load makes bigger commits rather than more fsyncs, and \
                 what runs out is CPU."
            } else {
                "The CPUs were not saturated: the limit is the commit cycle. Each client waits \
                 for the commit in progress and then for the one holding its job (each an \
                 `fdatasync` of about a millisecond, probes above), so 202/s ≈ clients ÷ a \
                 few commit cycles; more clients would make bigger commits and more 202/s."
            }
        );
        let dispatcher = Self::thread_pct(&c, "portico-async");
        if dispatcher < DEPTH_WALK_PCT {
            return;
        }
        let redis = self
            .median_cpu(
                Phase::Alone,
                Variant {
                    backend: Backend::RedisAlways,
                    threads: main.threads,
                },
            )
            .map(|r| Self::thread_pct(&r, "portico-async"));
        let _ = writeln!(
            md,
            "- **The async dispatcher used {dispatcher:.0}% of a core while it dispatched \
             nothing** (no worker was ready). Every arrival wakes it (`Jobs::arrived`), and \
             every wake reads the endpoint's queue depth, which the embedded queue computes by \
             walking every waiting job in redb's `ready` table: the cost of a wake grows with \
             the queue, and at intake speed the queue grows by thousands a second. {}On a \
             {}-CPU machine that share is taken from the data plane, the writer and the \
             clients.",
            redis.map_or(String::new(), |r| format!(
                "With Redis, where depth is one command, the same thread used {r:.0}%. "
            )),
            self.machine.cpus,
        );
    }

    fn latency_limits(&self, md: &mut String, main: Variant) {
        let p50 = self.median_of(Phase::Paced, Backend::Embedded, |f| f.p50_ms);
        let p99 = self.median_of(Phase::Paced, Backend::Embedded, |f| f.p99_ms);
        let (Some(p50), Some(p99)) = (p50, p99) else {
            return;
        };
        let probe = |f: fn(&FsyncProbe) -> f64| {
            Spread::of(self.fsync.iter().map(|p| Some(f(p)))).map(|s| s.median)
        };
        let dispatcher = self
            .median_cpu(Phase::Paced, main)
            .map(|c| Self::thread_pct(&c, "portico-async"));
        let extra = Variant {
            backend: Backend::Embedded,
            threads: self.bench.args.extra_threads,
        };
        let extra_p99 = Spread::of(self.intake(Phase::Paced, extra).iter().map(|f| f.p99_ms));
        let redis = |backend| self.median_of(Phase::Paced, backend, |f| f.p99_ms);
        let _ = writeln!(
            md,
            "- **Latency at {:.0}/s (paced, embedded): p50 {p50:.2} ms, p99 {p99:.2} ms.** A \
             job's 202 waits for the commit in progress, then for its own: a commit is redb's \
             page writes and one `fdatasync` of them (the scattered-write probe: p50 {} ms, \
             p99 {} ms; a single appended block: {} ms) plus the writer's CPU time, so about \
             two commits make the p50. The p99 adds moments when the writer or the data plane \
             waited for a CPU{} and disk stalls (the slowest 202 per second above). {}{}{}",
            self.bench.args.paced_rate,
            fmt(probe(|p| p.scattered.p50_ms), 2),
            fmt(probe(|p| p.scattered.p99_ms), 2),
            fmt(probe(|p| p.append.p50_ms), 2),
            dispatcher
                .filter(|&d| d >= DEPTH_WALK_PCT)
                .map_or(String::new(), |d| format!(
                    " (the dispatcher's depth walk used {d:.0}% of a core in these runs too)"
                )),
            self.stalls(main),
            match (redis(Backend::RedisEverysec), redis(Backend::RedisAlways)) {
                (Some(everysec), Some(always)) => format!(
                    "Redis with `appendfsync everysec` (nothing fsync'd on the way) had p99 \
                     {everysec:.2} ms, with `always` {always:.2} ms (its log is one file \
                     appended to, the cheap kind of fsync). "
                ),
                _ => String::new(),
            },
            match extra_p99 {
                Some(p) if extra.threads > 0 && extra.threads != main.threads => format!(
                    "With {} data-plane threads the p99 was {:.2} ms: the data-plane thread \
                     count is not what limits it.",
                    extra.threads, p.median
                ),
                _ => String::new(),
            },
        );
    }

    /// How single slow seconds shaped the paced p99 of `variant`: a second whose slowest
    /// 202 took over five times the runs' typical slowest is a stall.
    fn stalls(&self, variant: Variant) -> String {
        let runs = self.intake(Phase::Paced, variant);
        let mut maxes: Vec<f64> = runs
            .iter()
            .flat_map(|f| f.per_second_max_ms.iter().copied())
            .collect();
        maxes.sort_by(f64::total_cmp);
        let Some(typical) = percentile(&maxes, 50.0) else {
            return String::new();
        };
        let stalled: Vec<f64> = runs
            .iter()
            .filter_map(|f| {
                let worst = f.per_second_max_ms.iter().copied().fold(0.0, f64::max);
                (worst > 5.0 * typical).then_some(worst)
            })
            .collect();
        let calm = maxes
            .iter()
            .copied()
            .filter(|&m| m <= 5.0 * typical)
            .fold(0.0, f64::max);
        if stalled.is_empty() {
            return format!("No stall: the slowest 202 of any second was {calm:.1} ms. ");
        }
        format!(
            "In {} of {} runs a stall ({} ms at worst) set the p99: at {:.0} requests a \
             second, one stall of that length holds back more than 1% of a {} s window. \
             Outside the stalls the slowest 202 of any second was {calm:.1} ms. ",
            stalled.len(),
            runs.len(),
            stalled
                .iter()
                .map(|m| format!("{m:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            self.bench.args.paced_rate,
            self.bench.args.seconds,
        )
    }

    fn draining_limits(&self, md: &mut String, main: Variant) {
        let intake = Spread::of(
            self.intake(Phase::Draining, main)
                .iter()
                .map(|f| Some(f.rate)),
        );
        let drains = self.drains(main);
        let meanwhile = Spread::of(drains.iter().map(|d| Some(d.completion_rate)));
        let (Some(intake), Some(meanwhile)) = (intake, meanwhile) else {
            return;
        };
        let after = Spread::of(drains.iter().map(|d| d.after_rate));
        let redis = |backend| {
            let v = Variant {
                backend,
                threads: main.threads,
            };
            let d = self.drains(v);
            (
                Spread::of(d.iter().map(|d| Some(d.completion_rate))),
                Spread::of(d.iter().map(|d| d.after_rate)),
            )
        };
        let walk = self
            .median_cpu(Phase::Alone, main)
            .is_some_and(|c| Self::thread_pct(&c, "portico-async") >= DEPTH_WALK_PCT);
        let slots = self.bench.args.concurrency_per_worker;
        let _ = writeln!(
            md,
            "- **Draining.** With intake at {:.0}/s the embedded queue's dispatcher wrote \
             {:.0} results/s, so the queue grew by about {:.0} jobs a second; once intake \
             stopped it wrote {} results/s. Neither the worker (it answers in about 0.15 ms) \
             nor its {slots} slots are the limit: a job holds a slot only while the worker has \
             it. What bounds draining is the durable work per job after that: the claim's and \
             the finish's fsync'd commits (grouped by the queue's writer with intake's) and \
             the result file's own fsync with its directory, with at most 256 jobs per \
             endpoint in that phase{}. {}",
            intake.median,
            meanwhile.median,
            (intake.median - meanwhile.median).max(0.0),
            spread(after, 0),
            if walk {
                " after reading the depth by walking the whole queue (above)"
            } else {
                ""
            },
            match (redis(Backend::RedisAlways), redis(Backend::RedisEverysec)) {
                ((Some(a), a_after), (Some(e), e_after)) => format!(
                    "With Redis, whose depth is one command, the dispatcher wrote {:.0} \
                     results/s during intake and {} after with `appendfsync always`, {:.0} and \
                     {} with `everysec`: claiming and finishing there take several round trips \
                     each, and under `always` every write among them waits for Redis's fsync.",
                    a.median,
                    spread(a_after, 0),
                    e.median,
                    spread(e_after, 0),
                ),
                _ => String::new(),
            },
        );
    }

    fn e2e_limits(&self, md: &mut String, main: Variant) {
        let e2e = self.e2e(main);
        let p50 = |f: &dyn Fn(&E2eFigures) -> &Vec<f64>| {
            Spread::of(e2e.iter().map(|e| E2eFigures::pct(f(e), 50.0))).map(|s| s.median)
        };
        if let (Some(direct), Some(intake), Some(file), Some(done)) = (
            p50(&|e| &e.direct_ms),
            p50(&|e| &e.intake_ms),
            p50(&|e| &e.file_ms),
            p50(&|e| &e.completed_ms),
        ) {
            let _ = writeln!(
                md,
                "- **End to end (embedded, medians).** Direct call {direct:.2} ms; through the \
                 queue the result exists after {file:.2} ms and the status says `completed` \
                 after {done:.2} ms. Of that: {intake:.2} ms to the 202 (HTTP, parse, one \
                 fsync'd commit holding the job); {:.2} ms from the 202 to the result file (the \
                 dispatcher's wake and depth read, the claim's fsync'd commit, the forward to \
                 the worker and its answer, the result file written); {:.2} ms from the file to \
                 `completed` (the finish's fsync'd commit, and the status poll). Three \
                 fsync'd commits per job (intake, claim, finish), each costing about the \
                 scattered-write probe, make up most of the overhead.",
                file - intake,
                done - file,
            );
        }
    }

    fn e2e_section(&self, md: &mut String) {
        let a = self.bench.args;
        let _ = write!(
            md,
            "## 4. End to end, one job at a time\n\n\
             {} sequential jobs per repetition, each right after a direct call with the same \
             body (keep-alive connections both). Times in ms from just before the POST: \
             direct = to the worker's whole answer; 202 = Portico's intake answer; result = \
             the result file exists (polled every {} µs); completed = the status API says \
             `completed` (polled every {} µs once the file exists). Overhead = async − \
             direct at the same percentile. Median over repetitions (range).\n\n\
             | queue | direct p50 | direct p99 | 202 p50 | result p50 | result p99 | completed p50 | completed p99 | **overhead p50** (result) | **overhead p99** (result) | overhead p50 (completed) | failures |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|\n",
            a.e2e_jobs,
            RESULT_POLL.as_micros(),
            RESULT_POLL.as_micros(),
        );
        for v in self.bench.backend_variants() {
            let runs = self.e2e(v);
            let s = |f: &dyn Fn(&E2eFigures) -> Option<f64>, digits| {
                spread(Spread::of(runs.iter().map(|e| f(e))), digits)
            };
            let failures: u64 = runs.iter().flat_map(|e| e.failures.values()).sum();
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | **{}** | **{}** | {} | {} |",
                v.backend.label(),
                s(&|e| E2eFigures::pct(&e.direct_ms, 50.0), 2),
                s(&|e| E2eFigures::pct(&e.direct_ms, 99.0), 2),
                s(&|e| E2eFigures::pct(&e.intake_ms, 50.0), 2),
                s(&|e| E2eFigures::pct(&e.file_ms, 50.0), 2),
                s(&|e| E2eFigures::pct(&e.file_ms, 99.0), 2),
                s(&|e| E2eFigures::pct(&e.completed_ms, 50.0), 2),
                s(&|e| E2eFigures::pct(&e.completed_ms, 99.0), 2),
                s(&|e| e.overhead(&e.file_ms, 50.0), 2),
                s(&|e| e.overhead(&e.file_ms, 99.0), 2),
                s(&|e| e.overhead(&e.completed_ms, 50.0), 2),
                if failures == 0 {
                    "0".to_owned()
                } else {
                    format!("**{failures}**")
                },
            );
        }
        self.errors_list(md, Phase::EndToEnd);
        md.push('\n');
    }

    fn method_section(&self, md: &mut String) {
        let a = self.bench.args;
        let _ = write!(
            md,
            "## Method and noise\n\n\
             - **Nobody consumes during intake alone.** The endpoint's worker is a process \
             worker, `fakeworker --boot-delay-ms {NEVER_READY_MS}` with `min_workers = \
             max_workers = 1`: Portico starts it, its `/health` answers 503 all along, so no \
             worker is ever ready and the dispatcher's room (`concurrency_per_worker` × ready \
             workers) stays 0. The dispatcher still runs its loop (it reads the queue depth and \
             wakes the endpoint), as it would at zero workers in production. A run that \
             finds any result file fails. The paced run uses the same set-up.\n\
             - **Durability is what the backend promises.** Embedded: the 202 leaves after the \
             redb commit holding the job is fsync'd (`Durability::Immediate`; one writer \
             thread commits whatever waits together). Redis `appendfsync always`: Redis \
             fsyncs its AOF before answering the `EXEC` (it batches the writes of one event \
             loop pass into one fsync). Redis `appendfsync everysec`: Redis answers before \
             the fsync; a power cut loses up to a second of accepted jobs, so that row does \
             not meet issue 7's \"fsync'd or equivalent\" and is shown only to price the fsync.\n\
             - **Closed loop and paced.** Back to back, {} clients each wait for their answer \
             before sending again, so rate ≈ clients ÷ mean latency: that run gives capacity, \
             and its latency is the clients' own queue. The paced run gives the latency of a \
             steady rate below capacity.\n\
             - **Result times.** Completion rates use result files' modification times, which \
             the kernel stamps with its coarse clock (a few ms): fine for rates over seconds. \
             Result files are deleted only when the whole benchmark ends: removing tens of \
             thousands of files makes ext4 slow to allocate inodes for minutes after (it \
             skips recently freed ones), which slowed the next run's result writes when runs \
             cleaned up after themselves.\n\
             - **Noise.** This is a shared 2-CPU virtual machine; other sessions build and test \
             on it. Before each run the benchmark waits up to {} s for the machine to be \
             quiet; during the window it reads `/proc/stat` and the CPU time of every thread \
             of Portico, Redis, the worker and itself, and of the file systems' journal \
             threads (`jbd2`, which do the work of the run's fsyncs); the rest of the busy time \
             (steal and the kernel's other threads included) is \"other load\". A run with other load above {:.0}% of a core, or one \
             that failed, is repeated up to {} time(s); the last try is kept, flagged. Disk \
             contention from other work (a build writing) does not show as CPU but slows \
             fsync: the `fdatasync` probes above and the raw table show it. Figures moved by the \
             range in brackets between repetitions; compare them with the goal, not to a tenth. \
             Runs on Redis with `appendfsync always` show more other load than the rest even \
             on a quiet machine: the kernel's I/O work for Redis's thousands of fsyncs a second \
             (interrupts, kworker threads) belongs to no process, so those tries are flagged \
             (and repeated) for load that is their own.\n\
             - **What is not measured:** S3 result stores (a `file://` directory here), \
             webhooks, several Portico replicas sharing Redis, TLS, bodies larger than a small \
             chat request.\n\n",
            a.clients, a.quiet_wait_seconds, a.noise_pct, a.max_retries,
        );
    }

    fn tries_section(&self, md: &mut String) {
        let _ = write!(
            md,
            "<details><summary>Every try</summary>\n\n\
             | phase | queue | threads | rep | try | kept | result | Portico CPU % | Redis CPU % | worker CPU % | client CPU % | journal (jbd2) CPU % | other load % | steal % | load average |\n\
             |---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
        );
        for t in &self.tries {
            let c = t.cpu.clone().unwrap_or_default();
            let pct = |ns: u64| {
                t.cpu
                    .as_ref()
                    .map_or_else(|| "—".to_owned(), |_| format!("{:.0}", c.pct(ns)))
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.phase.slug(),
                t.variant.backend.slug(),
                t.variant.threads,
                t.rep + 1,
                t.attempt + 1,
                match (t.kept, t.noisy) {
                    (true, true) => "kept, noisy",
                    (true, false) => "kept",
                    (false, true) => "noisy: repeated",
                    (false, false) => "failed: repeated",
                },
                match &t.outcome {
                    Ok(o) => o.brief(),
                    Err(e) => format!("FAILED: {e}"),
                }
                .replace('|', "/"),
                pct(c.portico_ns),
                pct(c.redis_ns),
                pct(c.worker_ns),
                pct(c.client_ns),
                pct(c.journal_ns),
                t.cpu
                    .as_ref()
                    .map_or_else(|| "—".to_owned(), |c| format!("{:.0}", c.other_pct())),
                t.cpu
                    .as_ref()
                    .map_or_else(|| "—".to_owned(), |c| format!("{:.1}", c.steal_pct())),
                t.loadavg,
            );
        }
        let _ = write!(
            md,
            "\n`fdatasync` probes per repetition (p50 / p99 ms, one appended block; 16 \
             scattered blocks): {}.\n\n</details>\n\n",
            self.fsync
                .iter()
                .map(|f| format!(
                    "{:.2} / {:.2}; {:.2} / {:.2}",
                    f.append.p50_ms, f.append.p99_ms, f.scattered.p50_ms, f.scattered.p99_ms
                ))
                .collect::<Vec<_>>()
                .join("; ")
        );
    }

    fn config_section(&self, md: &mut String) {
        let repo_dir = "<run>";
        let shown = |setup: &Setup| {
            setup
                .config()
                .replace(&setup.dir.display().to_string(), repo_dir)
                .replace(
                    &self.bench.fakeworker.display().to_string(),
                    "target/release/fakeworker",
                )
        };
        let dir = PathBuf::from(repo_dir);
        let alone = Setup {
            dir: dir.clone(),
            threads: self.bench.args.threads,
            workers: Workers::NeverReady(self.bench.fakeworker.clone()),
            queue: "embedded".to_owned(),
            concurrency_per_worker: self.bench.args.concurrency_per_worker,
        };
        let draining = Setup {
            workers: Workers::Static(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..alone.clone()
        };
        let _ = write!(
            md,
            "## Configs\n\n\
             Intake alone (embedded queue; Redis runs set `queue = \"redis://127.0.0.1:<port>\"`, \
             and start `redis-server --port <port> --bind 127.0.0.1 --save \"\" --appendonly yes \
             --appendfsync always|everysec --dir <run>/redis`):\n\n```toml\n{}```\n\n\
             Draining and end to end (the worker: `RUST_LOG=warn fakeworker --port 0 \
             --record-limit 0`):\n\n```toml\n{}```\n",
            shown(&alone).replace("127.0.0.1:0\"]", "127.0.0.1:<fakeworker port>\"]"),
            shown(&draining).replace("127.0.0.1:0\"]", "127.0.0.1:<fakeworker port>\"]"),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The spread of per-repetition values: median, min and max of those there are.
    #[test]
    fn spreads() {
        let s = Spread::of([Some(3.0), None, Some(1.0), Some(2.0)]);
        assert_eq!(
            s,
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0
            })
        );
        assert_eq!(spread(s, 1), "2.0 (1.0–3.0)");
        assert_eq!(spread(Spread::of([Some(4.0)]), 0), "4");
        assert_eq!(spread(None, 0), "—");
    }

    /// `/proc/stat`'s `cpu` line: busy is everything but idle and iowait.
    #[test]
    fn reads_proc_stat() {
        let text = "cpu  100 5 50 1000 20 3 2 7 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        let t = parse_proc_stat(text).expect("a cpu line");
        assert_eq!(
            t,
            MachineTicks {
                busy: 167,
                steal: 7,
                total: 1187
            }
        );
        assert_eq!(parse_proc_stat("intr 1 2"), None);
    }

    /// The mount holding a path is the longest mount point above it.
    #[test]
    fn finds_the_filesystem() {
        let mounts = "/dev/vda / ext4 rw 0 0\ntmpfs /tmp tmpfs rw 0 0\n";
        assert_eq!(
            filesystem_of(Path::new("/tmp/x"), mounts),
            "tmpfs (tmpfs on /tmp)"
        );
        assert_eq!(
            filesystem_of(Path::new("/work/x"), mounts),
            "ext4 (/dev/vda on /)"
        );
    }

    /// Intake figures count only 202s completed inside the window, and every error.
    #[test]
    fn intake_figures_use_the_window() {
        let sample = |done_s: f64, latency_ms: u64, accepted| Sample {
            done_us: (done_s * 1e6) as u64,
            latency_us: latency_ms * 1000,
            accepted,
        };
        let load = Load {
            offered: None,
            runs: vec![ClientRun {
                samples: vec![
                    sample(0.5, 9, true),
                    sample(1.2, 1, true),
                    sample(1.5, 2, false),
                    sample(2.5, 3, true),
                    sample(3.5, 4, true),
                ],
                errors: BTreeMap::from([("HTTP 503: busy".to_owned(), 1)]),
            }],
            warm_us: 1_000_000,
            end_us: 3_000_000,
            wall_warm: UNIX_EPOCH,
            wall_end: UNIX_EPOCH,
            cpu: None,
        };
        let f = IntakeFigures::from(&load);
        assert_eq!(f.rate, 1.0);
        assert_eq!((f.p50_ms, f.max_ms), (Some(1.0), Some(3.0)));
        assert_eq!(f.per_second, vec![1, 1]);
        assert_eq!((f.accepted_total, f.error_count()), (4, 1));
    }

    /// The intake-alone config pins one never-ready process worker; the draining one
    /// points at the static worker; both name the queue.
    #[test]
    fn configs() {
        let setup = Setup {
            dir: PathBuf::from("/run"),
            threads: 1,
            workers: Workers::NeverReady(PathBuf::from("/bin/fakeworker")),
            queue: "redis://127.0.0.1:7000".to_owned(),
            concurrency_per_worker: 8,
        };
        let alone = setup.config();
        assert!(alone.contains("\"--boot-delay-ms\", \"86400000\""));
        assert!(alone.contains("min_workers = 1\nmax_workers = 1"));
        assert!(alone.contains("queue = \"redis://127.0.0.1:7000\""));
        assert!(alone.contains("url = \"file:///run/results\""));
        let draining = Setup {
            workers: Workers::Static(SocketAddr::from(([127, 0, 0, 1], 4000))),
            ..setup
        }
        .config();
        assert!(draining.contains("kind = \"static\"\nurls = [\"http://127.0.0.1:4000\"]"));
        assert!(!draining.contains("[endpoint.scaling]"));
    }

    /// Paced clients share the rate and spread their first requests over one period.
    #[test]
    fn paces() {
        let first = Pace::of(5000.0, 64, 0);
        let last = Pace::of(5000.0, 64, 63);
        assert_eq!(first.period, Duration::from_micros(12_800));
        assert_eq!(first.offset, Duration::ZERO);
        assert_eq!(last.offset, Duration::from_micros(12_600));
    }

    /// Every repetition starts with another variant.
    #[test]
    fn rotates() {
        assert_eq!(rotate(vec![1, 2, 3], 1), vec![2, 3, 1]);
        assert_eq!(rotate(vec![1, 2, 3], 4), vec![2, 3, 1]);
        assert_eq!(rotate(Vec::<u8>::new(), 2), Vec::<u8>::new());
    }
}

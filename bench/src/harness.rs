//! What the benchmark programs that run Portico (`scalebench`, `asyncbench`) share: their
//! progress log, the run directory, stopping on SIGTERM or Ctrl-C, starting and stopping
//! processes, cleaning up the workers Portico leaves behind, an HTTP/1.1 client connection,
//! and the percentile and date helpers of their reports.
//!
//! Each program names itself once with a [`Program`], which prefixes its log lines and names
//! its run directory.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

// ------------------------------------------------------------------------------ program

/// The benchmark program using the harness, by its name (`scalebench`): its log lines read
/// `[scalebench] …` and its run directory is `portico-scalebench.…`.
#[derive(Debug, Clone, Copy)]
pub struct Program {
    name: &'static str,
}

impl Program {
    /// The program called `name`.
    pub const fn new(name: &'static str) -> Program {
        Program { name }
    }

    /// Writes one progress line to stderr, `[NAME] message`.
    pub fn log(&self, message: impl Display) {
        eprintln!("[{}] {message}", self.name);
    }

    /// Sends `SIG<signal>` to `pid` with kill(1) (no `unsafe`, no extra crate); logs a
    /// failure.
    pub fn signal(&self, pid: u32, signal: &str) {
        let sent = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .stderr(Stdio::null())
            .status();
        if !sent.is_ok_and(|s| s.success()) {
            self.log(format!("kill -{signal} {pid} failed"));
        }
    }

    /// Stops `child` (process `pid`, called `what` in the log) without an async runtime, for
    /// `Drop`: when it is still running, SIGTERM, a wait of up to `limit`, then SIGKILL.
    pub fn stop_blocking(&self, what: &str, child: &mut Child, pid: u32, limit: Duration) {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        self.log(format!("stopping {what} (pid {pid})"));
        self.signal(pid, "TERM");
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.start_kill();
    }

    /// The worker pids Portico logged (`pid` fields of its JSON log at `log`); each one that
    /// is still a fakeworker process is killed.
    pub fn reap_workers(&self, log: &Path) -> Reaped {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let pids: BTreeSet<u32> = text
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter_map(|v| v.get("pid")?.as_u64())
            .filter_map(|pid| u32::try_from(pid).ok())
            .collect();
        let mut survivors = Vec::new();
        for &pid in &pids {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains("fakeworker") {
                self.signal(pid, "KILL");
                survivors.push(pid);
            }
        }
        Reaped {
            started: pids.len(),
            survivors,
        }
    }
}

// ------------------------------------------------------------------------------ run dir

/// Where a run's configs and logs go; removed on drop when the program made it (unless
/// told to keep it).
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    remove: bool,
}

impl RunDir {
    /// `given` (created if missing, never removed), or else a new
    /// `portico-NAME.PID.NANOS` under the temporary directory, removed on drop unless
    /// `keep`.
    pub fn new(program: &Program, given: Option<PathBuf>, keep: bool) -> anyhow::Result<RunDir> {
        let (path, remove) = match given {
            Some(path) => (path, false),
            None => {
                let stamp = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let name = format!("portico-{}.{}.{stamp}", program.name, std::process::id());
                (std::env::temp_dir().join(name), !keep)
            }
        };
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(RunDir { path, remove })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if self.remove {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

// ------------------------------------------------------------------------------ signals

/// Resolves with the name of the first SIGTERM or SIGINT.
pub async fn shutdown_signal() -> std::io::Result<&'static str> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}

/// Runs `run` to its end, unless a SIGTERM or SIGINT comes first: then `run` is dropped
/// (whatever it started stops in its `Drop`) and the error says that nothing was written.
pub async fn until_signal<T>(run: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::select! {
        done = run => done,
        signal = shutdown_signal() => {
            bail!("{}: stopped before the end; nothing written", signal?)
        }
    }
}

// ------------------------------------------------------------------------------ portico

/// `BIN run --config CONFIG --log-format json`, with `PORTICO_LOG=log_filter`, in `dir`;
/// where its output goes is up to the caller.
pub fn portico_command(bin: &Path, config: &Path, log_filter: &str, dir: &Path) -> Command {
    let mut command = Command::new(bin);
    command
        .arg("run")
        .arg("--config")
        .arg(config)
        .args(["--log-format", "json"])
        .env("PORTICO_LOG", log_filter)
        .current_dir(dir);
    command
}

/// The worker processes a Portico started, as [`Program::reap_workers`] found them.
#[derive(Debug, Default, Clone)]
pub struct Reaped {
    /// Worker processes Portico started, by the pids it logged.
    pub started: usize,
    /// Worker pids still running after Portico exited (killed then), lowest first.
    pub survivors: Vec<u32>,
}

/// How a Portico ended.
#[derive(Debug, Default, Clone)]
pub struct Stopped {
    /// Its exit status, or how it had to be killed.
    pub exit: String,
    /// Worker pids still running after Portico exited (killed then).
    pub survivors: Vec<u32>,
    /// Worker processes Portico started, by the pids it logged.
    pub workers_started: usize,
}

impl Stopped {
    /// How it ended (`exit`), and what became of its workers.
    pub fn new(exit: String, workers: Reaped) -> Stopped {
        Stopped {
            exit,
            survivors: workers.survivors,
            workers_started: workers.started,
        }
    }
}

// ------------------------------------------------------------------------------ HTTP client

/// The sending half of a client connection.
pub type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// A keep-alive HTTP/1.1 connection (Nagle off, like Portico's own).
pub async fn connect(addr: SocketAddr) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    tcp.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

// ------------------------------------------------------------------------------ stats and dates

/// Nearest-rank percentile `p` (0–100) of sorted values; `None` when there are none.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01 (inverse of
/// [`days_from_civil`]).
pub fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `time` to the minute, `2026-11-23 08:27 UTC`.
pub fn utc_minute(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0));
    let (y, mo, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{mo:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentiles: p99 of a few samples is the largest; none of nothing.
    #[test]
    fn percentiles() {
        let sorted = [1.0, 2.0, 3.0, 10.0];
        assert_eq!(percentile(&sorted, 50.0), Some(2.0));
        assert_eq!(percentile(&sorted, 99.0), Some(10.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    /// Day counts and dates convert both ways, leap days and days before 1970 included.
    #[test]
    fn civil_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
    }

    /// Report dates are UTC to the minute.
    #[test]
    fn formats_utc_minutes() {
        let time = UNIX_EPOCH + Duration::from_secs(1_795_450_356);
        assert_eq!(utc_minute(time), "2026-11-23 16:12 UTC");
        assert_eq!(utc_minute(UNIX_EPOCH), "1970-01-01 00:00 UTC");
    }

    /// A run directory the program made is gone after the drop; a given one stays.
    #[test]
    fn run_dirs() {
        let program = Program::new("harness-test");
        let made = RunDir::new(&program, None, false).expect("a temporary directory");
        let path = made.path().to_owned();
        assert!(path.is_dir());
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        assert!(name.is_some_and(|n| n.starts_with("portico-harness-test.")));
        drop(made);
        assert!(!path.exists());

        let given =
            std::env::temp_dir().join(format!("portico-harness-given.{}", std::process::id()));
        drop(RunDir::new(&program, Some(given.clone()), false).expect("the given directory"));
        assert!(given.is_dir());
        std::fs::remove_dir_all(&given).expect("removing the given directory");
    }
}

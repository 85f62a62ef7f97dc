//! `connbench`: the memory a proxy spends per open client connection.
//!
//! 1. Raises this process's own open-file limit (`RLIMIT_NOFILE`) to its hard limit.
//! 2. Warm-up: `--concurrency` connections each do one exchange and close, so the proxy's
//!    upstream pool, buffers and caches exist before the first reading. `http`: `GET URL`,
//!    answer read to its end; `ws`: the upgrade to a `ws://` URL and one text message echoed.
//! 3. After `--settle-ms`, reads the resident set (`VmRSS` in `/proc/<pid>/status`) summed
//!    over every `--pid` (a proxy with worker processes gives them all): `rss_before`.
//! 4. Opens `--connections` connections, at most `--concurrency` of them connecting at a
//!    time. Each does the warm-up's exchange, then stays open and idle (keep-alive, or an open
//!    WebSocket session whose pings are answered). Every `--step` connections, and at the
//!    end, it waits `--settle-ms` and samples the RSS again.
//!
//! The result is one JSON line on stdout:
//! `{"mode","connections","rss_before_kib","rss_after_kib","kib_per_connection",
//!   "samples":[[open_connections, rss_kib],...],"failed","closed_early","failure_reasons"}`
//! where `samples` starts with `[0, rss_before]`, `kib_per_connection` is
//! `(rss_after - rss_before) / open connections`, `failed` counts connections that could not
//! be opened (connect, handshake, a non-2xx answer or refused upgrade, no echo, the timeout)
//! and `closed_early` those the other side closed before the end. Then every connection is
//! closed; the exit code is 0 unless more than 1% of the connections failed (2), or the
//! set-up failed (1: limits, warm-up, an unreadable pid).
//!
//! ```sh
//! connbench --mode http --url http://127.0.0.1:8080/health --connections 10000 --pid "$PROXY"
//! connbench --mode ws --url ws://127.0.0.1:8080/ws --connections 2000 --pid "$PROXY"
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt as _, StreamExt as _, stream};
use http::{Request, Uri, header};
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// Memory per open client connection of a proxy; prints one JSON line.
#[derive(Parser, Debug)]
#[command(name = "connbench", version)]
struct Args {
    /// What each connection is.
    #[arg(long, value_enum)]
    mode: Mode,
    /// `http://HOST:PORT/path` (mode http) or `ws://HOST:PORT/path` (mode ws).
    #[arg(long)]
    url: Uri,
    /// Connections to open and hold.
    #[arg(long)]
    connections: usize,
    /// Process whose resident memory is measured; repeat for several (summed).
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Sample the RSS after every this many connections.
    #[arg(long, default_value_t = 1000)]
    step: usize,
    /// Wait this long before each RSS reading.
    #[arg(long, default_value_t = 500)]
    settle_ms: u64,
    /// A connection not open (exchange done) this long after it started fails.
    #[arg(long, default_value_t = 10)]
    timeout_seconds: u64,
}

/// The kind of connection.
#[derive(ValueEnum, Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// An HTTP/1.1 keep-alive connection after one `GET`.
    Http,
    /// A WebSocket session after one echoed text message.
    Ws,
}

/// Where and what to connect.
struct Target {
    mode: Mode,
    url: Uri,
    host: String,
    port: u16,
}

impl Target {
    fn new(mode: Mode, url: Uri) -> anyhow::Result<Target> {
        let scheme = match mode {
            Mode::Http => "http",
            Mode::Ws => "ws",
        };
        if url.scheme_str() != Some(scheme) {
            bail!("--mode {scheme} needs a {scheme}:// URL, got {url}");
        }
        let authority = url.authority().context("--url has no host")?;
        // `[::1]` in a URL is `::1` to connect to.
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(80);
        Ok(Target {
            mode,
            url,
            host,
            port,
        })
    }

    async fn tcp(&self) -> anyhow::Result<TcpStream> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .with_context(|| format!("connecting to {}:{}", self.host, self.port))?;
        tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
        Ok(tcp)
    }

    /// A keep-alive connection that has done one `GET` (answer read to its end).
    async fn open_http(&self) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
        let tcp = self.tcp().await?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .context("HTTP/1.1 handshake")?;
        tokio::spawn(connection);
        let authority = self.url.authority().map_or("", |a| a.as_str());
        let request = Request::get(self.url.path_and_query().map_or("/", |pq| pq.as_str()))
            .header(header::HOST, authority)
            .body(Empty::new())
            .context("building the request")?;
        let response = sender.send_request(request).await.context("request")?;
        let status = response.status();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            frame.context("reading the body")?;
        }
        if !status.is_success() {
            bail!("status {}", status.as_u16());
        }
        Ok(sender)
    }

    /// A WebSocket session that has echoed one text message.
    async fn open_ws(&self) -> anyhow::Result<WebSocketStream<TcpStream>> {
        let tcp = self.tcp().await?;
        let (mut session, _) = tokio_tungstenite::client_async(self.url.to_string(), tcp)
            .await
            .context("WebSocket handshake")?;
        session
            .send(Message::text("connbench"))
            .await
            .context("sending")?;
        loop {
            match session.next().await {
                Some(Ok(Message::Text(text))) if text.as_str() == "connbench" => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => bail!("unexpected message: {other:?}"),
                Some(Err(e)) => return Err(e).context("reading the echo"),
                None => bail!("session closed before the echo"),
            }
        }
        Ok(session)
    }

    /// Opens one connection and keeps it open.
    async fn hold(&self) -> anyhow::Result<Held> {
        match self.mode {
            Mode::Http => Ok(Held::Http(self.open_http().await?)),
            Mode::Ws => {
                let mut session = self.open_ws().await?;
                // Reading answers the proxy's pings and ends the task on a close.
                Ok(Held::Ws(tokio::spawn(async move {
                    while let Some(Ok(_)) = session.next().await {}
                })))
            }
        }
    }

    /// One exchange on a connection that is then closed.
    async fn warm(&self) -> anyhow::Result<()> {
        match self.mode {
            Mode::Http => drop(self.open_http().await?),
            Mode::Ws => {
                let mut session = self.open_ws().await?;
                let _ = session.close(None).await;
            }
        }
        Ok(())
    }
}

/// An open connection, kept alive until dropped.
enum Held {
    /// Its driver task runs until this sender is dropped.
    Http(SendRequest<Empty<Bytes>>),
    /// The task owning the session, reading until the end.
    Ws(JoinHandle<()>),
}

impl Held {
    fn is_closed(&self) -> bool {
        match self {
            Held::Http(sender) => sender.is_closed(),
            Held::Ws(task) => task.is_finished(),
        }
    }
}

/// Sets the soft open-file limit to the hard one; returns the soft limit (`None`: unlimited).
fn raise_nofile_limit() -> anyhow::Result<Option<u64>> {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        )
        .context("raising RLIMIT_NOFILE to its hard limit")?;
    }
    Ok(getrlimit(Resource::Nofile).current)
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let mut words = line["VmRSS:".len()..].split_whitespace();
    let kib = words.next()?.parse().ok()?;
    (words.next() == Some("kB")).then_some(kib)
}

/// `Max open files` (soft) from the text of `/proc/<pid>/limits`; `None` if unlimited or
/// absent.
fn parse_max_open_files(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The resident set of all `pids` together, in KiB.
fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let path = format!("/proc/{pid}/status");
        let status =
            std::fs::read_to_string(&path).with_context(|| format!("reading {path} (--pid)"))?;
        total += parse_vm_rss(&status).with_context(|| format!("no VmRSS in {path}"))?;
    }
    Ok(total)
}

/// KiB per connection with two decimals; `None` without connections.
fn per_connection(before: u64, after: u64, open: usize) -> Option<f64> {
    (open > 0).then(|| ((after as f64 - before as f64) / open as f64 * 100.0).round() / 100.0)
}

/// The printed result (field order kept as declared).
#[derive(Serialize)]
struct Report {
    mode: Mode,
    connections: usize,
    rss_before_kib: u64,
    rss_after_kib: u64,
    kib_per_connection: Option<f64>,
    samples: Vec<(usize, u64)>,
    failed: usize,
    closed_early: usize,
    failure_reasons: BTreeMap<String, usize>,
}

async fn run(args: Args) -> anyhow::Result<Report> {
    if args.concurrency == 0 || args.step == 0 {
        bail!("--concurrency and --step must be at least 1");
    }
    let target = Target::new(args.mode, args.url.clone())?;
    let limit = raise_nofile_limit()?;
    let needed = args.connections as u64 + 64;
    if let Some(limit) = limit
        && limit < needed
    {
        bail!(
            "{} connections need about {needed} open files, the hard limit is {limit}: \
             raise it (`ulimit -Hn`, `LimitNOFILE=`) and retry",
            args.connections
        );
    }
    for pid in &args.pids {
        let proxy_limit = std::fs::read_to_string(format!("/proc/{pid}/limits"))
            .ok()
            .and_then(|text| parse_max_open_files(&text));
        if let Some(proxy_limit) = proxy_limit
            && proxy_limit < needed
        {
            eprintln!(
                "connbench: warning: process {pid} may open at most {proxy_limit} files, \
                 fewer than {needed}"
            );
        }
    }
    let settle = Duration::from_millis(args.settle_ms);
    let timeout = Duration::from_secs(args.timeout_seconds);

    let warm_ups: Vec<anyhow::Result<()>> = stream::iter(0..args.concurrency)
        .map(|_| within(timeout, target.warm()))
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    for outcome in warm_ups {
        outcome.with_context(|| format!("warm-up against {}", args.url))?;
    }
    tokio::time::sleep(settle).await;
    let rss_before = rss_kib(&args.pids)?;

    let mut held = Vec::with_capacity(args.connections);
    let mut samples = vec![(0, rss_before)];
    let mut failed = 0;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    let mut started = 0;
    while started < args.connections {
        let batch = args.step.min(args.connections - started);
        started += batch;
        let outcomes: Vec<anyhow::Result<Held>> = stream::iter(0..batch)
            .map(|_| within(timeout, target.hold()))
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        for outcome in outcomes {
            match outcome {
                Ok(connection) => held.push(connection),
                Err(e) => {
                    failed += 1;
                    *reasons.entry(format!("{e:#}")).or_default() += 1;
                }
            }
        }
        tokio::time::sleep(settle).await;
        samples.push((held.len(), rss_kib(&args.pids)?));
    }
    let rss_after = samples.last().map_or(rss_before, |&(_, rss)| rss);
    let closed = held.iter().filter(|c| c.is_closed()).count();
    for connection in held.drain(..) {
        if let Held::Ws(task) = &connection {
            task.abort();
        }
    }
    Ok(Report {
        mode: args.mode,
        connections: args.connections,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        kib_per_connection: per_connection(
            rss_before,
            rss_after,
            samples.last().map_or(0, |s| s.0),
        ),
        samples,
        failed,
        closed_early: closed,
        failure_reasons: reasons,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let report = match run(Args::parse()).await {
        Ok(report) => report,
        Err(e) => {
            // One line with the causes, without a backtrace: this is a setup problem.
            eprintln!("connbench: {e:#}");
            std::process::exit(1);
        }
    };
    println!("{}", serde_json::to_string(&report)?);
    // More than 1% failed.
    if report.failed * 100 > report.connections {
        std::process::exit(2);
    }
    Ok(())
}

/// `work`, or an error once `timeout` has passed.
async fn within<T>(
    timeout: Duration,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `VmRSS` is read in KiB from a real-looking status file, and missing or odd lines give
    /// nothing.
    #[test]
    fn vm_rss_parses() {
        let status = "Name:\tportico\nVmPeak:\t  999 kB\nVmRSS:\t   12345 kB\nThreads:\t2\n";
        assert_eq!(parse_vm_rss(status), Some(12345));
        assert_eq!(parse_vm_rss("Name:\tx\n"), None);
        assert_eq!(parse_vm_rss("VmRSS:\t12 MB\n"), None);
    }

    /// The soft open-file limit is read from `/proc/<pid>/limits`.
    #[test]
    fn max_open_files_parses() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\n\
                      Max open files            1024                 524288               files\n";
        assert_eq!(parse_max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_max_open_files(unlimited), None);
    }

    /// Growth is shared by the open connections, with two decimals.
    #[test]
    fn per_connection_divides_growth() {
        assert_eq!(per_connection(1000, 4000, 1000), Some(3.0));
        assert_eq!(per_connection(1000, 1001, 3), Some(0.33));
        assert_eq!(per_connection(1000, 900, 100), Some(-1.0));
        assert_eq!(per_connection(1000, 1000, 0), None);
    }

    /// A URL whose scheme does not match the mode is refused.
    #[test]
    fn target_checks_the_scheme() {
        assert!(Target::new(Mode::Ws, "http://127.0.0.1:1/ws".parse().unwrap()).is_err());
        let t = Target::new(Mode::Http, "http://[::1]:8080/health".parse().unwrap()).unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8080));
    }
}

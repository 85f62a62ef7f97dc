//! `latbench`: open-loop HTTP/1.1 load at a fixed rate, with latency measured from each
//! request's scheduled send time (wrk2-style coordinated-omission correction).
//!
//! Request `i` (counting from 0 over the whole run) is due at `start + i / rate` and goes to
//! keep-alive connection `i % connections`, so the connections share the rate evenly. A
//! connection sends its requests one after the other (HTTP/1.1, no pipelining); when an
//! answer comes late, the requests due meanwhile wait for it and their wait counts in their
//! latency, as it would for clients arriving at that rate.
//!
//! Tokio's timer ticks every millisecond, so a request may leave up to ~1 ms after it was
//! due. That lateness is the generator's, not the server's, so it is kept out of the figures:
//! each connection replays its queue on the exact schedule. With `service` the measured time
//! from sending a request to the last byte of its answer (plus any reconnect before it),
//! `virtual_start = max(due, previous virtual_end)`, `virtual_end = virtual_start + service`
//! and `latency = virtual_end - due`. A stall of the server still delays, and counts for,
//! every request queued behind it.
//!
//! Requests due in the first `--warmup-seconds` are sent but not counted; requests are due
//! for `--seconds` more. The result is one JSON line on stdout:
//! `{"url","rate_target","rate_achieved","requests","errors","non_2xx","p50_us","p90_us",
//!   "p99_us","p999_us","max_us","percentiles":[[50.0,us],...,[100.0,us]],"service_p50_us",
//!   "service_p99_us","error_reasons"}` (`service_*`: send to last byte, without queueing).
//! `requests` counts answered requests (any status; their latencies are all recorded),
//! `errors` the failed ones (connect, protocol, `--timeout-seconds`), which are not part of
//! the latencies. `rate_achieved` is `requests` over the measured time: from the end of the
//! warm-up to the later of the schedule's end and the last counted answer. Percentiles are
//! nearest-rank over every latency (exact, no histogram), in microseconds with one decimal.
//! A setup failure (the URL, the first connections) exits 1 with a message on stderr.
//!
//! ```sh
//! latbench --url http://127.0.0.1:8000/health --rate 2000 --seconds 10
//! latbench --url http://127.0.0.1:8000/echo --rate 5000 --seconds 10 --connections 32 \
//!   --method POST --body '{"a":1}' --header 'content-type: application/json'
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Open-loop HTTP/1.1 load at a fixed rate; prints latency percentiles as one JSON line.
#[derive(Parser, Debug)]
#[command(name = "latbench", version)]
struct Args {
    /// Target, `http://HOST:PORT/path?query`.
    #[arg(long)]
    url: Uri,
    /// Requests per second, all connections together.
    #[arg(long)]
    rate: f64,
    /// Measured seconds (after the warm-up).
    #[arg(long)]
    seconds: f64,
    /// Keep-alive connections sharing the rate.
    #[arg(long, default_value_t = 1)]
    connections: usize,
    /// Seconds of load before the measurement, not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup_seconds: f64,
    /// Request method.
    #[arg(long, default_value = "GET")]
    method: Method,
    /// Request body (sent with a `content-length`).
    #[arg(long)]
    body: Option<String>,
    /// Extra request header, `name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
    /// A request without a complete answer this long after it was sent fails and its
    /// connection is replaced.
    #[arg(long, default_value_t = 10.0)]
    timeout_seconds: f64,
}

/// What every request carries; built once.
struct Template {
    method: Method,
    path: String,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Bytes,
}

impl Template {
    fn request(&self) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path.as_str());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        builder
            .body(Full::new(self.body.clone()))
            .context("building the request")
    }
}

/// Parses `name: value`.
fn parse_header(text: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let (name, value) = text
        .split_once(':')
        .with_context(|| format!("--header {text:?}: expected `name: value`"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes())
        .with_context(|| format!("--header {text:?}: bad name"))?;
    let value = HeaderValue::from_str(value.trim())
        .with_context(|| format!("--header {text:?}: bad value"))?;
    Ok((name, value))
}

/// Where to connect: `host`, `port` (`[::1]` in a URL is `::1` to connect to).
fn target(url: &Uri) -> anyhow::Result<(String, u16)> {
    if url.scheme_str() != Some("http") {
        bail!("--url must be an http:// URL, got {url}");
    }
    let authority = url.authority().context("--url has no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    Ok((host.to_owned(), authority.port_u16().unwrap_or(80)))
}

type Sender = SendRequest<Full<Bytes>>;

/// One keep-alive connection, Nagle off; its driver runs as its own task.
async fn connect(host: &str, port: u16) -> anyhow::Result<Sender> {
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {host}:{port}"))?;
    tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP/1.1 handshake")?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads its whole answer; returns the status.
async fn exchange(sender: &mut Sender, template: &Template) -> anyhow::Result<u16> {
    sender.ready().await.context("connection closed")?;
    let response = sender
        .send_request(template.request()?)
        .await
        .context("sending the request")?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        frame.context("reading the body")?;
    }
    Ok(status)
}

/// The fixed schedule of one connection: its `k`-th request is request
/// `k * connections + index` of the run.
#[derive(Clone, Copy)]
struct Schedule {
    start: Instant,
    /// Requests per second, all connections together.
    rate: f64,
    connections: usize,
    index: usize,
    /// Requests due before this are warm-up.
    measure_from: Instant,
    /// No request is due at or after this.
    end: Instant,
}

impl Schedule {
    /// When the connection's `k`-th request is due; `None` once past the end.
    fn due(&self, k: usize) -> Option<Instant> {
        let i = k.checked_mul(self.connections)?.checked_add(self.index)?;
        // From the start rather than by adding intervals, so rounding does not accumulate.
        let offset = Duration::from_nanos((i as f64 * 1e9 / self.rate).round() as u64);
        let due = self.start.checked_add(offset)?;
        (due < self.end).then_some(due)
    }
}

/// What one connection measured.
#[derive(Default)]
struct ConnectionResult {
    /// Latencies of counted answered requests, in nanoseconds.
    latencies_ns: Vec<u64>,
    /// Their service times (send to last byte, no queueing), in nanoseconds.
    service_ns: Vec<u64>,
    non_2xx: usize,
    errors: BTreeMap<String, usize>,
    /// When the last counted request finished.
    last_done: Option<Instant>,
}

async fn run_connection(
    mut sender: Option<Sender>,
    schedule: Schedule,
    target: (String, u16),
    template: std::rc::Rc<Template>,
    timeout: Duration,
) -> ConnectionResult {
    let mut result = ConnectionResult::default();
    // End of the previous request on the exact schedule (see the module doc).
    let mut virtual_end = schedule.start;
    let mut k = 0;
    while let Some(due) = schedule.due(k) {
        k += 1;
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let sent = Instant::now();
        let outcome = tokio::time::timeout(timeout, async {
            let mut live = match sender.take() {
                Some(s) if !s.is_closed() => s,
                _ => connect(&target.0, target.1).await?,
            };
            let status = exchange(&mut live, &template).await?;
            sender = Some(live);
            anyhow::Ok(status)
        })
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("timed out")));
        let done = Instant::now();
        let virtual_start = due.max(virtual_end);
        virtual_end = virtual_start + (done - sent);
        if due < schedule.measure_from {
            continue;
        }
        result.last_done = Some(done);
        match outcome {
            Ok(status) => {
                if !(200..300).contains(&status) {
                    result.non_2xx += 1;
                }
                let nanos = |d: Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
                result.latencies_ns.push(nanos(virtual_end - due));
                result.service_ns.push(nanos(done - sent));
            }
            Err(e) => *result.errors.entry(format!("{e:#}")).or_default() += 1,
        }
    }
    result
}

/// Nearest-rank percentile `p` (0–100) of sorted values: the smallest value with at least
/// `p`% of the values at or below it; `None` when there are none.
fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    // The tolerance keeps float noise (99.9% of 1000 = 999.0000000000001) from moving a
    // rank up by one.
    let rank = ((p / 100.0) * sorted.len() as f64 - 1e-9).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Nanoseconds to microseconds with one decimal.
fn micros(ns: u64) -> f64 {
    (ns as f64 / 100.0).round() / 10.0
}

/// The percentiles listed in `percentiles`.
const LISTED: [f64; 7] = [50.0, 75.0, 90.0, 99.0, 99.9, 99.99, 100.0];

/// The printed result (field order kept as declared).
#[derive(Serialize)]
struct Report {
    url: String,
    rate_target: f64,
    rate_achieved: f64,
    requests: usize,
    errors: usize,
    non_2xx: usize,
    p50_us: Option<f64>,
    p90_us: Option<f64>,
    p99_us: Option<f64>,
    p999_us: Option<f64>,
    max_us: Option<f64>,
    percentiles: Vec<(f64, Option<f64>)>,
    /// Send to last byte without the wait behind earlier requests: the server's answer time
    /// alone (the gap to `p50_us`/`p99_us` is queueing).
    service_p50_us: Option<f64>,
    service_p99_us: Option<f64>,
    /// Failure messages and how many requests had each.
    error_reasons: BTreeMap<String, usize>,
}

fn report(url: &Uri, rate: f64, measured: Duration, results: Vec<ConnectionResult>) -> Report {
    let mut latencies = Vec::new();
    let mut service = Vec::new();
    let (mut non_2xx, mut errors) = (0, 0);
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for result in results {
        latencies.extend_from_slice(&result.latencies_ns);
        service.extend_from_slice(&result.service_ns);
        non_2xx += result.non_2xx;
        for (reason, n) in result.errors {
            errors += n;
            *reasons.entry(reason).or_default() += n;
        }
    }
    latencies.sort_unstable();
    service.sort_unstable();
    let at = |p: f64| percentile(&latencies, p).map(micros);
    let rate_achieved = latencies.len() as f64 / measured.as_secs_f64().max(1e-9);
    Report {
        url: url.to_string(),
        rate_target: rate,
        rate_achieved: (rate_achieved * 10.0).round() / 10.0,
        requests: latencies.len(),
        errors,
        non_2xx,
        p50_us: at(50.0),
        p90_us: at(90.0),
        p99_us: at(99.0),
        p999_us: at(99.9),
        max_us: at(100.0),
        percentiles: LISTED.iter().map(|&p| (p, at(p))).collect(),
        service_p50_us: percentile(&service, 50.0).map(micros),
        service_p99_us: percentile(&service, 99.0).map(micros),
        error_reasons: reasons,
    }
}

async fn run(args: Args) -> anyhow::Result<Report> {
    if !(args.rate.is_finite() && args.rate > 0.0) {
        bail!("--rate must be a positive number of requests per second");
    }
    if !(args.seconds.is_finite() && args.seconds > 0.0) {
        bail!("--seconds must be positive");
    }
    if !(args.warmup_seconds.is_finite() && args.warmup_seconds >= 0.0) {
        bail!("--warmup-seconds must be zero or more");
    }
    if args.connections == 0 {
        bail!("--connections must be at least 1");
    }
    let target = target(&args.url)?;
    let authority = args.url.authority().context("--url has no host")?;
    let mut headers = vec![(
        header::HOST,
        HeaderValue::from_str(authority.as_str()).context("the URL's host")?,
    )];
    for text in &args.headers {
        let (name, value) = parse_header(text)?;
        headers.retain(|(n, _)| *n != name);
        headers.push((name, value));
    }
    let template = std::rc::Rc::new(Template {
        method: args.method.clone(),
        path: args
            .url
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        headers,
        body: Bytes::from(args.body.clone().unwrap_or_default()),
    });
    let timeout = Duration::try_from_secs_f64(args.timeout_seconds)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--timeout-seconds must be a positive number")?;

    // Every connection is open before the clock starts; failing here is a setup error.
    let mut senders = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let sender = connect(&target.0, target.1)
            .await
            .with_context(|| format!("cannot open connection {} of {}", i + 1, args.connections))?;
        senders.push(sender);
    }

    let start = Instant::now() + Duration::from_millis(10);
    let measure_from = start + Duration::from_secs_f64(args.warmup_seconds);
    let end = measure_from + Duration::from_secs_f64(args.seconds);
    let local = tokio::task::LocalSet::new();
    let tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(index, sender)| {
            let schedule = Schedule {
                start,
                rate: args.rate,
                connections: args.connections,
                index,
                measure_from,
                end,
            };
            local.spawn_local(run_connection(
                Some(sender),
                schedule,
                target.clone(),
                template.clone(),
                timeout,
            ))
        })
        .collect();
    let results = local
        .run_until(async {
            let mut results = Vec::with_capacity(tasks.len());
            for task in tasks {
                results.push(task.await.context("connection task")?);
            }
            anyhow::Ok(results)
        })
        .await?;
    let last_done = results.iter().filter_map(|r| r.last_done).max();
    let measured = last_done.map_or(end, |last| last.max(end)) - measure_from;
    Ok(report(&args.url, args.rate, measured, results))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let report = match run(Args::parse()).await {
        Ok(report) => report,
        Err(e) => {
            // One line with the causes, without a backtrace: this is a setup problem.
            eprintln!("latbench: {e:#}");
            std::process::exit(1);
        }
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Nearest-rank percentiles are exact values of the sample, with no float off-by-one.
    #[test]
    fn percentiles_are_nearest_rank() {
        let sorted: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&sorted, 50.0), Some(500));
        assert_eq!(percentile(&sorted, 99.0), Some(990));
        assert_eq!(percentile(&sorted, 99.9), Some(999));
        assert_eq!(percentile(&sorted, 99.99), Some(1000));
        assert_eq!(percentile(&sorted, 100.0), Some(1000));
        assert_eq!(percentile(&sorted, 0.0), Some(1));
        assert_eq!(percentile(&[7], 50.0), Some(7));
        assert_eq!(percentile(&[], 50.0), None);
    }

    /// Connections take every `connections`-th slot of one fixed-rate schedule, which ends
    /// at `end`.
    #[test]
    fn schedule_spreads_the_rate_over_connections() {
        let start = Instant::now();
        let schedule = |index| Schedule {
            start,
            rate: 1000.0,
            connections: 3,
            index,
            measure_from: start,
            end: start + Duration::from_millis(10),
        };
        let dues = |index| {
            let s: Schedule = schedule(index);
            (0..)
                .map_while(|k| s.due(k))
                .map(|d| (d - start).as_millis())
                .collect::<Vec<_>>()
        };
        assert_eq!(dues(0), [0, 3, 6, 9]);
        assert_eq!(dues(1), [1, 4, 7]);
        assert_eq!(dues(2), [2, 5, 8]);
    }

    /// Microseconds keep one decimal.
    #[test]
    fn micros_round_to_a_tenth() {
        assert_eq!(micros(12_345), 12.3);
        assert_eq!(micros(12_351), 12.4);
        assert_eq!(micros(0), 0.0);
    }

    /// Headers parse as `name: value` and refuse anything else.
    #[test]
    fn headers_parse() {
        let (name, value) = parse_header("Content-Type:  application/json ").unwrap();
        assert_eq!(name, header::CONTENT_TYPE);
        assert_eq!(value, "application/json");
        assert!(parse_header("no colon").is_err());
    }

    /// The rate counts answered requests over the measured time; errors stay out of the
    /// latencies.
    #[test]
    fn report_sums_connections() {
        let a = ConnectionResult {
            latencies_ns: vec![1_000, 3_000],
            non_2xx: 1,
            ..Default::default()
        };
        let mut b = ConnectionResult {
            latencies_ns: vec![2_000],
            ..Default::default()
        };
        b.errors.insert("timed out".into(), 2);
        let url: Uri = "http://127.0.0.1:1/x".parse().unwrap();
        let r = report(&url, 10.0, Duration::from_millis(300), vec![a, b]);
        assert_eq!((r.requests, r.errors, r.non_2xx), (3, 2, 1));
        assert_eq!(r.rate_achieved, 10.0);
        assert_eq!(r.p50_us, Some(2.0));
        assert_eq!(r.max_us, Some(3.0));
        assert_eq!(r.percentiles.len(), 7);
    }
}

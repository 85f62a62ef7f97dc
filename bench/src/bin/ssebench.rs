//! `ssebench`: opens many concurrent SSE streams and measures how late each event arrives.
//!
//! Every stream is its own HTTP/1.1 connection (`hyper::client::conn::http1`) sending
//! `GET URL`. Each `data: {...}` line whose JSON carries `sent_at_us` (fakeworker's `/sse`
//! events and streamed completion chunks do) gives one delay sample,
//! `received_at_us - sent_at_us`, both read from the wall clock of this machine
//! (`SystemTime`, as fakeworker does), so origin and client must run on the same host. The
//! receive time is taken once per body frame, before parsing. Time to first event runs from
//! just before the TCP connect to the first event with a timestamp.
//!
//! The result is one JSON object on stdout:
//! `{"url", "streams", "events", "streams_ok", "streams_failed", "errors",
//!   "delay_us": {"p50","p90","p99","max"}, "first_event_ms": {"p50","p99"}}`.
//! Percentiles are nearest-rank over all events of all streams (failed ones included: their
//! events were real), `null` when there was no event. A stream fails on a connect or
//! protocol error, a status other than 200, the timeout, or (with `--events`) a different
//! number of timestamped events. The exit code is 0 when every stream succeeded and 2
//! otherwise; the JSON is printed either way.
//!
//! ```sh
//! ssebench --url 'http://127.0.0.1:8000/sse?events=50&interval_ms=20' --streams 100 --events 50
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::BytesMut;
use clap::Parser;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Opens N concurrent SSE streams and reports per-event delays (`now - sent_at_us`) as JSON.
#[derive(Parser, Debug)]
#[command(name = "ssebench", version)]
struct Args {
    /// Stream URL, `http://IP:PORT/path?query` (e.g. fakeworker's
    /// `/sse?events=50&interval_ms=20`).
    #[arg(long)]
    url: Uri,
    /// Concurrent streams, one connection each.
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Expected timestamped events per stream; a stream with another count fails (a sanity
    /// check, not a limit: the stream is read to its end either way).
    #[arg(long)]
    events: Option<usize>,
    /// Spread the stream starts evenly over this many milliseconds (0: all at once), so
    /// events of different streams do not all fall due at the same instant.
    #[arg(long, default_value_t = 0)]
    ramp_ms: u64,
    /// Give up on streams not finished this long after the start.
    #[arg(long, default_value_t = 60)]
    timeout_seconds: u64,
}

/// What one stream measured.
#[derive(Default)]
struct StreamResult {
    /// Delay of each timestamped event, in microseconds (0 if the clock went backwards).
    delays_us: Vec<u64>,
    /// From connect to the first timestamped event.
    first_event: Option<Duration>,
}

/// The part of an event's JSON this tool reads.
#[derive(Deserialize)]
struct Timestamped {
    sent_at_us: Option<u64>,
}

fn unix_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// Reads one stream to its end, recording into `out` as events arrive (so a stream that
/// fails later still keeps what it measured).
async fn run_stream(url: &Uri, out: &mut StreamResult) -> anyhow::Result<()> {
    let authority = url.authority().context("the URL has no host:port")?;
    let port = authority.port_u16().unwrap_or(80);
    let started = Instant::now();
    // `[::1]` in a URL is `::1` to connect to.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let tcp = TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    tcp.set_nodelay(true).context("setting TCP_NODELAY")?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .context("HTTP/1.1 handshake")?;
    let driver = tokio::spawn(connection);
    let path = url.path_and_query().map_or("/", |pq| pq.as_str());
    let request = Request::get(path)
        .header(header::HOST, authority.as_str())
        .header(header::ACCEPT, "text/event-stream")
        .body(Empty::<bytes::Bytes>::new())
        .context("building the request")?;
    let response = sender
        .send_request(request)
        .await
        .context("sending the request")?;
    if response.status() != StatusCode::OK {
        bail!("status {}", response.status().as_u16());
    }
    let mut body = response.into_body();
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.context("reading the body")?;
        let now_us = unix_micros();
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        buf.extend_from_slice(&data);
        while let Some(newline) = buf.iter().position(|&b| b == b'\n') {
            let line = buf.split_to(newline + 1);
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(payload) = line.strip_prefix(b"data:") else {
                continue; // blank separators, comments, other fields
            };
            let Ok(event) = serde_json::from_slice::<Timestamped>(payload.trim_ascii()) else {
                continue; // `[DONE]` and other non-JSON payloads
            };
            if let Some(sent_at_us) = event.sent_at_us {
                out.delays_us.push(now_us.saturating_sub(sent_at_us));
                out.first_event.get_or_insert_with(|| started.elapsed());
            }
        }
    }
    driver.abort();
    Ok(())
}

/// Nearest-rank percentile of a sorted slice: the smallest sample with at least `p`% of the
/// samples at or below it; `None` for no samples.
fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len().max(1)) - 1).copied()
}

/// The printed result (field order kept as declared).
#[derive(Serialize)]
struct Report {
    url: String,
    streams: usize,
    /// Timestamped events received, all streams together.
    events: usize,
    streams_ok: usize,
    streams_failed: usize,
    /// Failure reasons and how many streams had each.
    errors: BTreeMap<String, usize>,
    delay_us: Percentiles<u64>,
    first_event_ms: Percentiles<f64>,
}

/// Percentiles of one measure; `null` when there were no samples.
#[derive(Serialize)]
struct Percentiles<T> {
    p50: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    p90: Option<T>,
    p99: Option<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<T>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.url.scheme_str() != Some("http") {
        bail!("--url must be an http:// URL, got {}", args.url);
    }
    if args.url.authority().is_none() {
        bail!("--url needs a host, got {}", args.url);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_seconds);
    let ramp = Duration::from_millis(args.ramp_ms);
    let streams = u32::try_from(args.streams.max(1)).context("--streams is too large")?;
    let mut tasks = Vec::with_capacity(args.streams);
    for i in 0..args.streams {
        let url = args.url.clone();
        let expected = args.events;
        // `i < streams`, so this is at most `ramp`.
        let start_at = Instant::now() + ramp * u32::try_from(i).unwrap_or(0) / streams;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(start_at).await;
            let mut result = StreamResult::default();
            let outcome =
                match tokio::time::timeout_at(deadline, run_stream(&url, &mut result)).await {
                    Ok(Ok(())) => match expected {
                        Some(n) if result.delays_us.len() != n => Err(format!(
                            "expected {n} timestamped events, got {}",
                            result.delays_us.len()
                        )),
                        _ => Ok(()),
                    },
                    Ok(Err(e)) => Err(format!("{e:#}")),
                    Err(_) => Err("timed out".to_owned()),
                };
            (result, outcome)
        }));
    }

    let mut delays = Vec::new();
    let mut first_events = Vec::new();
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for task in tasks {
        let (result, outcome) = match task.await {
            Ok(done) => done,
            Err(e) => (StreamResult::default(), Err(format!("task failed: {e}"))),
        };
        delays.extend_from_slice(&result.delays_us);
        first_events.extend(result.first_event);
        match outcome {
            Ok(()) => ok += 1,
            Err(e) => {
                failed += 1;
                *errors.entry(e).or_default() += 1;
            }
        }
    }
    delays.sort_unstable();
    first_events.sort_unstable();
    // Milliseconds with microsecond precision.
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let report = Report {
        url: args.url.to_string(),
        streams: args.streams,
        events: delays.len(),
        streams_ok: ok,
        streams_failed: failed,
        errors,
        delay_us: Percentiles {
            p50: percentile(&delays, 50.0),
            p90: percentile(&delays, 90.0),
            p99: percentile(&delays, 99.0),
            max: delays.last().copied(),
        },
        first_event_ms: Percentiles {
            p50: percentile(&first_events, 50.0).map(ms),
            p90: None,
            p99: percentile(&first_events, 99.0).map(ms),
            max: None,
        },
    };
    println!("{}", serde_json::to_string(&report)?);
    if failed > 0 {
        std::process::exit(2);
    }
    Ok(())
}

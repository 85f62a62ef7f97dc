//! `wsbench`: WebSocket load for benchmarks.
//!
//! - `wsbench echo --url ws://IP:PORT/path --connections N --seconds S --size BYTES
//!   [--warmup-seconds W]`: each connection sends a binary message and waits for its echo,
//!   again and again, for S seconds (after a W s warm-up, 1 by default); prints `{"connections","size","seconds","messages",
//!   "messages_per_s","rtt_us":{"p50","p99"}}`, where a message is one echoed round trip.
//! - `wsbench idle --url … --connections N`: opens N sessions, prints `open N` once all are
//!   open, holds them until standard input closes, then closes them. A benchmark script
//!   reads the proxy's memory before and after to get the cost of an idle session.
//!
//! Plain `ws://` only; the TCP connection is made here and the handshake done by
//! tokio-tungstenite, with Nagle off.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt as _, StreamExt as _};
use http::Uri;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

/// WebSocket load for benchmarks.
#[derive(Parser, Debug)]
#[command(name = "wsbench", version)]
struct Args {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Round trips of binary messages: messages per second and round-trip time.
    Echo {
        /// `ws://IP:PORT/path`.
        #[arg(long)]
        url: Uri,
        /// Concurrent sessions.
        #[arg(long, default_value_t = 1)]
        connections: usize,
        /// Measured seconds (after the warm-up).
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        /// Unmeasured seconds of echoes first (0: a benchmark script warms up on its own).
        #[arg(long, default_value_t = 1)]
        warmup_seconds: u64,
        /// Message size in bytes.
        #[arg(long, default_value_t = 1024)]
        size: usize,
    },
    /// Open sessions and hold them until standard input closes.
    Idle {
        /// `ws://IP:PORT/path`.
        #[arg(long)]
        url: Uri,
        /// Sessions to open.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
    },
}

type Session = WebSocketStream<TcpStream>;

async fn open(url: &Uri) -> anyhow::Result<Session> {
    if url.scheme_str() != Some("ws") {
        bail!("only ws:// URLs are supported: {url}");
    }
    let authority = url.authority().context("URL without host")?.as_str();
    let stream = TcpStream::connect(authority)
        .await
        .with_context(|| format!("connecting to {authority}"))?;
    stream.set_nodelay(true)?;
    let (session, _) = tokio_tungstenite::client_async(url.to_string(), stream)
        .await
        .context("WebSocket handshake")?;
    Ok(session)
}

/// Round trips on one session until `until`; returns the round-trip times counted after
/// `measure_from`.
async fn echo_loop(
    mut session: Session,
    size: usize,
    measure_from: Instant,
    until: Instant,
) -> anyhow::Result<Vec<u32>> {
    let payload = bytes::Bytes::from(vec![0x5a; size]);
    let mut rtts = Vec::new();
    while Instant::now() < until {
        let sent = Instant::now();
        session.send(Message::Binary(payload.clone())).await?;
        loop {
            match session.next().await {
                Some(Ok(Message::Binary(echo))) if echo.len() == size => break,
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => bail!("unexpected message: {other:?}"),
                Some(Err(err)) => return Err(err.into()),
                None => bail!("session closed"),
            }
        }
        if sent >= measure_from {
            rtts.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
        }
    }
    let _ = session.close(None).await;
    Ok(rtts)
}

fn percentile(sorted: &[u32], p: f64) -> Option<u32> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

async fn echo(
    url: Uri,
    connections: usize,
    seconds: u64,
    warmup_seconds: u64,
    size: usize,
) -> anyhow::Result<()> {
    let mut sessions = Vec::with_capacity(connections);
    for _ in 0..connections {
        sessions.push(open(&url).await?);
    }
    let measure_from = Instant::now() + Duration::from_secs(warmup_seconds);
    let until = measure_from + Duration::from_secs(seconds);
    let tasks: Vec<_> = sessions
        .into_iter()
        .map(|session| tokio::spawn(echo_loop(session, size, measure_from, until)))
        .collect();
    let mut rtts = Vec::new();
    for task in tasks {
        rtts.extend(task.await??);
    }
    rtts.sort_unstable();
    let result = serde_json::json!({
        "connections": connections,
        "size": size,
        "seconds": seconds,
        "messages": rtts.len(),
        "messages_per_s": rtts.len() as f64 / seconds as f64,
        "rtt_us": { "p50": percentile(&rtts, 50.0), "p99": percentile(&rtts, 99.0) },
    });
    println!("{result}");
    Ok(())
}

async fn idle(url: Uri, connections: usize) -> anyhow::Result<()> {
    let mut sessions = Vec::with_capacity(connections);
    for i in 0..connections {
        sessions.push(
            open(&url)
                .await
                .with_context(|| format!("session {i} of {connections}"))?,
        );
    }
    println!("open {connections}");
    // Hold until whoever started us closes our standard input.
    let mut sink = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while stdin.read(&mut sink).await? > 0 {}
    for mut session in sessions {
        let _ = session.close(None).await;
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    match Args::parse().mode {
        Mode::Echo {
            url,
            connections,
            seconds,
            warmup_seconds,
            size,
        } => echo(url, connections, seconds, warmup_seconds, size).await,
        Mode::Idle { url, connections } => idle(url, connections).await,
    }
}

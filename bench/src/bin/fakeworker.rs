//! `fakeworker`: runs the fake OpenAI-compatible worker from the command line.
//!
//! Parses the flags into [`bench::Options`], sends logs to stderr (and the one-line-per-request
//! access log to stdout, where a log collector picks it up), binds, prints
//! `listening on ADDR` to stdout and serves until SIGTERM or SIGINT (exit 0) or a
//! `--crash-after` crash (exit 1).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::TcpListener;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::prelude::*;

/// An OpenAI-compatible fake model server for tests, benchmarks and the demo.
#[derive(Parser, Debug)]
#[command(name = "fakeworker", version)]
struct Args {
    /// Host or IP address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on; 0 picks a free one (see the `listening on` line).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Time to first token, in milliseconds [default: 0].
    #[arg(long)]
    ttft_ms: Option<u64>,
    /// Decode speed after the first token; 0 is as fast as possible [default: 0].
    #[arg(long, value_parser = non_negative)]
    tokens_per_second: Option<f64>,
    /// Tokens per answer when the request sets no max_tokens [default: 16].
    #[arg(long)]
    output_tokens: Option<usize>,
    /// /health answers 503 for this long after start, in milliseconds [default: 0].
    #[arg(long)]
    boot_delay_ms: Option<u64>,
    /// Completion requests running at once, more wait; 0 is unlimited [default: 0].
    #[arg(long)]
    max_running: Option<usize>,
    /// Probability in [0, 1] of a 500 on a completion request [default: 0].
    #[arg(long, value_parser = probability)]
    error_rate: Option<f64>,
    /// Exit with status 1 on the first counted request (completions, /echo, /slow) after
    /// this many.
    #[arg(long)]
    crash_after: Option<u64>,
    /// Completion requests get 200 headers, then the body never comes.
    #[arg(long)]
    hang_after_headers: bool,
    /// Model name reported when a request names none [default: fake-model].
    #[arg(long)]
    model: Option<String>,
    /// Most recent requests kept for /_fake/requests [default: 100000].
    #[arg(long)]
    record_limit: Option<usize>,
}

impl Args {
    fn options(&self, bind: SocketAddr) -> bench::Options {
        let mut opts = bench::Options::default()
            .bind(bind)
            .hang_after_headers(self.hang_after_headers)
            .crash_exits_process(true);
        if let Some(ms) = self.ttft_ms {
            opts = opts.ttft(Duration::from_millis(ms));
        }
        if let Some(tps) = self.tokens_per_second {
            opts = opts.tokens_per_second(tps);
        }
        if let Some(n) = self.output_tokens {
            opts = opts.output_tokens(n);
        }
        if let Some(ms) = self.boot_delay_ms {
            opts = opts.boot_delay(Duration::from_millis(ms));
        }
        if let Some(n) = self.max_running {
            opts = opts.max_running(n);
        }
        if let Some(rate) = self.error_rate {
            opts = opts.error_rate(rate);
        }
        if let Some(n) = self.crash_after {
            opts = opts.crash_after(n);
        }
        if let Some(model) = &self.model {
            opts = opts.model(model);
        }
        if let Some(n) = self.record_limit {
            opts = opts.record_limit(n);
        }
        opts
    }
}

fn non_negative(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(format!("expected a number ≥ 0, got {raw:?}")),
    }
}

fn probability(raw: &str) -> Result<f64, String> {
    match raw.parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("expected a number in [0, 1], got {raw:?}")),
    }
}

/// Access log lines to stdout, everything else to stderr; `RUST_LOG` filters both
/// (default `info`; `RUST_LOG=info,fakeworker::access=off` silences the access log).
fn init_tracing() {
    let is_access = |meta: &tracing::Metadata<'_>| meta.target() == bench::ACCESS_LOG_TARGET;
    let access = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_ansi(std::io::stdout().is_terminal())
        .with_target(false)
        .with_filter(filter_fn(is_access));
    let other = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter_fn(move |meta| !is_access(meta)));
    tracing_subscriber::registry()
        .with(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with(access)
        .with(other)
        .init();
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing();
    let Some(bind) = tokio::net::lookup_host((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("resolving --host {}", args.host))?
        .next()
    else {
        bail!("--host {} resolves to no address", args.host);
    };
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("binding {bind}"))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {addr}")?;
        stdout.flush()?;
    }
    tokio::select! {
        served = bench::serve(args.options(addr), listener) => served.context("serving")?,
        signal = shutdown_signal() => {
            let signal = signal.context("waiting for a shutdown signal")?;
            tracing::info!("{signal}: exiting");
        }
    }
    Ok(())
}

/// Resolves with the name of the first SIGTERM or SIGINT.
async fn shutdown_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        tokio::select! {
            _ = term.recv() => Ok("SIGTERM"),
            _ = int.recv() => Ok("SIGINT"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

//! [`Options`]: how a fake worker behaves — timing, load limit, injected failures.
//!
//! Every field is public so a test can set it directly; the builder methods exist so the
//! common case reads as one expression:
//! `Options::default().ttft(Duration::from_millis(50)).output_tokens(8)`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

/// Behaviour of one fake worker.
#[derive(Clone, Debug)]
pub struct Options {
    /// Time to first token: how long a completion waits before its first token (and, when
    /// streaming, before its first chunk; the response headers go out at once).
    pub ttft: Duration,
    /// Decode speed after the first token. `0` (or anything not a positive number) means as
    /// fast as possible: no delay between tokens.
    pub tokens_per_second: f64,
    /// Tokens a completion produces when the request gives no `max_tokens` /
    /// `max_completion_tokens`. A request that gives one gets exactly that many tokens
    /// (fewer or more than this), finished with `"length"`.
    pub output_tokens: usize,
    /// `/health` answers 503 until this much time has passed since the worker started.
    pub boot_delay: Duration,
    /// Completion (and `/slow`) requests allowed to run at once; more wait, counted in
    /// `vllm:num_requests_waiting`. `0` means unlimited.
    pub max_running: usize,
    /// Probability in `[0, 1]` that a completion request gets a 500 instead of an answer.
    pub error_rate: f64,
    /// Crash after this many counted requests (completions, `/echo`, `/slow`): those are
    /// answered, and the next counted request kills the server instead of being answered.
    /// `None` never crashes.
    pub crash_after: Option<u64>,
    /// What a crash does: `true` exits the process with status 1 at once (the binary);
    /// `false` stops accepting and drops every open connection, leaving the process alive
    /// (the library, so a test can watch a worker die).
    pub crash_exits_process: bool,
    /// Completion requests get 200 and streaming headers, then the body never comes.
    pub hang_after_headers: bool,
    /// Model name reported when a request names none.
    pub model: String,
    /// Address [`crate::FakeWorker::spawn`] binds (the binary binds its own).
    pub bind: SocketAddr,
    /// How many of the most recent requests are kept for [`crate::FakeWorker::requests`] and
    /// `/_fake/requests`; older ones are forgotten so a long benchmark cannot grow memory
    /// without bound.
    pub record_limit: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            ttft: Duration::ZERO,
            tokens_per_second: 0.0,
            output_tokens: 16,
            boot_delay: Duration::ZERO,
            max_running: 0,
            error_rate: 0.0,
            crash_after: None,
            crash_exits_process: false,
            hang_after_headers: false,
            model: "fake-model".to_owned(),
            bind: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            record_limit: 100_000,
        }
    }
}

impl Options {
    /// Sets [`Options::ttft`].
    pub fn ttft(mut self, d: Duration) -> Self {
        self.ttft = d;
        self
    }

    /// Sets [`Options::tokens_per_second`].
    pub fn tokens_per_second(mut self, tps: f64) -> Self {
        self.tokens_per_second = tps;
        self
    }

    /// Sets [`Options::output_tokens`].
    pub fn output_tokens(mut self, n: usize) -> Self {
        self.output_tokens = n;
        self
    }

    /// Sets [`Options::boot_delay`].
    pub fn boot_delay(mut self, d: Duration) -> Self {
        self.boot_delay = d;
        self
    }

    /// Sets [`Options::max_running`].
    pub fn max_running(mut self, n: usize) -> Self {
        self.max_running = n;
        self
    }

    /// Sets [`Options::error_rate`].
    pub fn error_rate(mut self, f: f64) -> Self {
        self.error_rate = f;
        self
    }

    /// Sets [`Options::crash_after`] to `Some(n)`.
    pub fn crash_after(mut self, n: u64) -> Self {
        self.crash_after = Some(n);
        self
    }

    /// Sets [`Options::crash_exits_process`].
    pub fn crash_exits_process(mut self, yes: bool) -> Self {
        self.crash_exits_process = yes;
        self
    }

    /// Sets [`Options::hang_after_headers`].
    pub fn hang_after_headers(mut self, yes: bool) -> Self {
        self.hang_after_headers = yes;
        self
    }

    /// Sets [`Options::model`].
    pub fn model(mut self, name: &str) -> Self {
        self.model = name.to_owned();
        self
    }

    /// Sets [`Options::bind`].
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Sets [`Options::record_limit`].
    pub fn record_limit(mut self, n: usize) -> Self {
        self.record_limit = n;
        self
    }

    /// The pause between two tokens; zero when [`Options::tokens_per_second`] is not a
    /// positive number. Capped at a day so absurd rates cannot overflow a deadline.
    pub(crate) fn token_interval(&self) -> Duration {
        const DAY: Duration = Duration::from_secs(86_400);
        if self.tokens_per_second > 0.0 {
            Duration::try_from_secs_f64(1.0 / self.tokens_per_second)
                .unwrap_or(DAY)
                .min(DAY)
        } else {
            Duration::ZERO
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builder methods set the fields they name and leave the rest at their defaults.
    #[test]
    fn builder_sets_fields() {
        let o = Options::default()
            .ttft(Duration::from_millis(5))
            .tokens_per_second(10.0)
            .output_tokens(3)
            .max_running(2)
            .crash_after(7)
            .model("m");
        assert_eq!(o.ttft, Duration::from_millis(5));
        assert_eq!(o.output_tokens, 3);
        assert_eq!(o.max_running, 2);
        assert_eq!(o.crash_after, Some(7));
        assert_eq!(o.model, "m");
        assert!(!o.hang_after_headers);
        assert_eq!(o.bind.port(), 0);
    }

    /// The token interval is 1/tps, zero for "as fast as possible", and never overflows.
    #[test]
    fn token_interval() {
        let o = Options::default();
        assert_eq!(o.token_interval(), Duration::ZERO);
        assert_eq!(
            o.clone().tokens_per_second(4.0).token_interval(),
            Duration::from_millis(250)
        );
        assert_eq!(
            o.clone().tokens_per_second(-1.0).token_interval(),
            Duration::ZERO
        );
        assert_eq!(
            o.clone().tokens_per_second(f64::NAN).token_interval(),
            Duration::ZERO
        );
        assert_eq!(
            o.tokens_per_second(1e-300).token_interval(),
            Duration::from_secs(86_400)
        );
    }
}

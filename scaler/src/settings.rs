//! An endpoint's scaling settings (DESIGN.md §3 `[endpoint.scaling]`, semantics in §4).

use std::fmt;
use std::time::Duration;

/// What the autoscaler measures per worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Metric {
    /// Requests in flight (including open WebSockets).
    Concurrency,
    /// Requests arriving per second.
    Rps,
    /// A gauge scraped from each worker's metrics endpoint, summed over the endpoint.
    Custom(String),
}

impl Metric {
    /// The config spelling: `concurrency`, `rps` or `custom`.
    pub fn kind(&self) -> &'static str {
        match self {
            Metric::Concurrency => "concurrency",
            Metric::Rps => "rps",
            Metric::Custom(_) => "custom",
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Custom(name) => write!(f, "custom({name})"),
            other => f.write_str(other.kind()),
        }
    }
}

/// One endpoint's scaling settings, as in force.
#[derive(Debug, Clone, PartialEq)]
pub struct ScalingSettings {
    /// Workers kept running even when idle ("active workers").
    pub min_workers: u32,
    /// Most workers ever run.
    pub max_workers: u32,
    /// What is measured.
    pub metric: Metric,
    /// Desired value of the metric per worker.
    pub target: f64,
    /// How long an endpoint must be idle before it scales to zero.
    pub idle_timeout: Duration,
    /// After a wake, no scale to zero before this has passed.
    pub initial_cooldown: Duration,
    /// Window the metric is averaged over.
    pub stable_window: Duration,
    /// Short window that reacts to bursts.
    pub panic_window: Duration,
    /// Panic when the panic-window demand reaches this multiple of the ready workers.
    pub panic_threshold: f64,
    /// Requests held while no worker is ready.
    pub max_pending: u32,
    /// How long a held request waits for a worker.
    pub cold_start_timeout: Duration,
    /// While a streaming request is held, an SSE comment (`: waking`) is sent this often so
    /// clients and intermediaries do not time out; zero turns it off.
    pub waking_keepalive: Duration,
}

impl Default for ScalingSettings {
    fn default() -> ScalingSettings {
        ScalingSettings {
            min_workers: 0,
            max_workers: 4,
            metric: Metric::Concurrency,
            target: 10.0,
            idle_timeout: Duration::from_secs(60),
            initial_cooldown: Duration::from_secs(300),
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_pending: 1000,
            cold_start_timeout: Duration::from_secs(600),
            waking_keepalive: Duration::from_secs(5),
        }
    }
}

/// A setting that is out of range, named by its config key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The key under `[endpoint.scaling]`, e.g. `max_workers`.
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

impl ScalingSettings {
    /// Whether the autoscaler decides the worker count (`min_workers == max_workers` disables it).
    pub fn autoscaling_enabled(&self) -> bool {
        self.min_workers != self.max_workers
    }

    /// Every setting that is out of range; empty when the settings are usable.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut bad = |key, message: String| out.push(Problem { key, message });
        if self.max_workers == 0 {
            bad("max_workers", "must be >= 1".into());
        }
        if self.max_workers < self.min_workers {
            bad(
                "max_workers",
                format!("must be >= min_workers ({})", self.min_workers),
            );
        }
        if !(self.target.is_finite() && self.target > 0.0) {
            bad("target", "must be a number > 0".into());
        }
        if let Metric::Custom(name) = &self.metric
            && !is_metric_name(name)
        {
            bad(
                "custom_metric",
                format!("`{name}` is not a Prometheus metric name"),
            );
        }
        if self.stable_window.is_zero() {
            bad("stable_window_seconds", "must be >= 1".into());
        }
        if self.panic_window.is_zero() {
            bad("panic_window_seconds", "must be >= 1".into());
        }
        if self.panic_window > self.stable_window {
            bad(
                "panic_window_seconds",
                "must be <= stable_window_seconds".into(),
            );
        }
        if !(self.panic_threshold.is_finite() && self.panic_threshold >= 1.0) {
            bad("panic_threshold", "must be a number >= 1.0".into());
        }
        if self.cold_start_timeout.is_zero() {
            bad("cold_start_timeout_seconds", "must be >= 1".into());
        }
        out
    }
}

/// Prometheus metric names: `[a-zA-Z_:][a-zA-Z0-9_:]*`.
fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented defaults are valid and autoscale.
    #[test]
    fn defaults_are_valid() {
        let settings = ScalingSettings::default();
        assert!(settings.problems().is_empty());
        assert!(settings.autoscaling_enabled());
    }

    /// Each out-of-range setting is reported under its own key, all in one pass.
    #[test]
    fn reports_every_problem() {
        let settings = ScalingSettings {
            min_workers: 3,
            max_workers: 2,
            metric: Metric::Custom("9bad name".into()),
            target: 0.0,
            panic_window: Duration::from_secs(120),
            panic_threshold: 0.5,
            ..ScalingSettings::default()
        };
        let keys: Vec<_> = settings.problems().iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "max_workers",
                "target",
                "custom_metric",
                "panic_window_seconds",
                "panic_threshold"
            ]
        );
    }

    /// Names used by vLLM, SGLang and Triton are accepted as custom metrics.
    #[test]
    fn accepts_real_metric_names() {
        for name in [
            "vllm:num_requests_waiting",
            "sglang:num_queue_reqs",
            "nv_inference_pending_request_count",
        ] {
            assert!(is_metric_name(name), "{name}");
        }
        assert!(!is_metric_name(""));
    }
}

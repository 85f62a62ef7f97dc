//! `GET /metrics`: the load gauges a vLLM worker exports, in Prometheus text format, so the
//! scaler and the balancer can be tested against a fake that reports its real current load.
//!
//! Like vLLM, each `vllm:` series carries a `model_name` label.
//! `vllm:gpu_cache_usage_perc` (a fraction in `[0, 1]`, despite its name) is
//! `running / max_running` when `max_running` is set; when unlimited there is no real
//! capacity, so it is `running / (running + 1)`: 0 when idle, rising towards 1 with load.

use std::fmt::Write as _;

/// A snapshot of the worker's load.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Load {
    pub(crate) running: u64,
    pub(crate) waiting: u64,
    /// [`super::Options::max_running`]; 0 is unlimited.
    pub(crate) max_running: usize,
    pub(crate) requests_total: u64,
}

impl Load {
    /// The fake KV-cache usage, in `[0, 1]` (see the module docs).
    pub(crate) fn cache_usage(&self) -> f64 {
        let running = self.running as f64;
        if self.max_running > 0 {
            (running / self.max_running as f64).min(1.0)
        } else {
            running / (running + 1.0)
        }
    }
}

/// The Prometheus text for `load`.
pub(crate) fn render(load: &Load, model: &str) -> String {
    let label = format!("{{model_name=\"{}\"}}", escape_label(model));
    let mut out = String::with_capacity(1024);
    let mut series =
        |name: &str, kind: &str, help: &str, labels: &str, value: &dyn std::fmt::Display| {
            // Writing to a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}\n"
            );
        };
    series(
        "vllm:num_requests_running",
        "gauge",
        "Number of requests currently running.",
        &label,
        &load.running,
    );
    series(
        "vllm:num_requests_waiting",
        "gauge",
        "Number of requests waiting to be admitted.",
        &label,
        &load.waiting,
    );
    series(
        "vllm:gpu_cache_usage_perc",
        "gauge",
        "Fake KV-cache usage as a fraction in [0, 1].",
        &label,
        &load.cache_usage(),
    );
    series(
        "fakeworker_requests_total",
        "counter",
        "Requests received by the fake worker.",
        "",
        &load.requests_total,
    );
    out
}

/// Escapes a Prometheus label value.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(running: u64, waiting: u64, max_running: usize) -> Load {
        Load {
            running,
            waiting,
            max_running,
            requests_total: 7,
        }
    }

    /// Every series has HELP and TYPE lines and the current values.
    #[test]
    fn prometheus_text() {
        let text = render(&load(2, 3, 4), "m");
        let expected = "\
# HELP vllm:num_requests_running Number of requests currently running.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name=\"m\"} 2
# HELP vllm:num_requests_waiting Number of requests waiting to be admitted.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name=\"m\"} 3
# HELP vllm:gpu_cache_usage_perc Fake KV-cache usage as a fraction in [0, 1].
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5
# HELP fakeworker_requests_total Requests received by the fake worker.
# TYPE fakeworker_requests_total counter
fakeworker_requests_total 7
";
        assert_eq!(text, expected);
    }

    /// Cache usage stays in [0, 1] with and without a running limit.
    #[test]
    fn cache_usage_bounds() {
        assert_eq!(load(0, 0, 0).cache_usage(), 0.0);
        assert_eq!(load(1, 0, 0).cache_usage(), 0.5);
        assert!(load(1_000, 0, 0).cache_usage() < 1.0);
        assert_eq!(load(0, 0, 2).cache_usage(), 0.0);
        assert_eq!(load(2, 5, 2).cache_usage(), 1.0);
    }

    /// Model names cannot break out of the label value.
    #[test]
    fn label_escaping() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}

//! Active health probes: each worker's `health_path` every `health.interval_ms`; a 2xx or
//! 3xx within `timeout_ms` is a success. `unhealthy_threshold` failures in a row take a
//! worker out of balancing, `healthy_threshold` successes bring it back (HAProxy's
//! `fall`/`rise`). Passive ejection lives with the worker counters ([`crate::worker`]).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::config::Health;
use crate::upstream::control_get;
use crate::worker::Worker;

/// Starts the probe loop of one worker of the endpoint configured by `config`; it ends when
/// `stop` turns true or the worker is retired.
pub fn spawn_prober(
    config: &crate::config::Endpoint,
    worker: &Arc<Worker>,
    stop: &watch::Receiver<bool>,
) {
    tokio::spawn(probe_loop(
        Arc::clone(worker),
        config.workers.health_path.clone(),
        config.health.clone(),
        stop.clone(),
    ));
}

async fn probe_loop(
    worker: Arc<Worker>,
    path: String,
    health: Health,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval(health.interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    if worker.replica_id().is_some() {
        // A replica Portico started has just passed its readiness check.
        ticks.reset();
    }
    let (mut successes, mut failures) = (0u32, 0u32);
    loop {
        tokio::select! {
            _ = stop.wait_for(|stopped| *stopped) => return,
            _ = ticks.tick() => {}
        }
        if worker.retired() {
            return;
        }
        if probe(&worker, &path, health.timeout).await {
            successes += 1;
            failures = 0;
            if !worker.probed_up() && successes >= health.healthy_threshold {
                worker.set_probed_up(true);
                tracing::info!(
                    worker = worker.label(),
                    "worker passed its health checks: up"
                );
            }
        } else {
            failures += 1;
            successes = 0;
            if worker.probed_up() && failures >= health.unhealthy_threshold {
                worker.set_probed_up(false);
                tracing::warn!(
                    worker = worker.label(),
                    "worker failed its health checks: down"
                );
            }
        }
    }
}

/// One probe over a fresh connection.
pub async fn probe(worker: &Worker, path: &str, timeout: Duration) -> bool {
    let attempt = async {
        let response = control_get(worker, path, "portico-health", timeout).await?;
        Some(response.status().is_success() || response.status().is_redirection())
    };
    matches!(tokio::time::timeout(timeout, attempt).await, Ok(Some(true)))
}

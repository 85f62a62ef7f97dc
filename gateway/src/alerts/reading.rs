//! What alerts read from an endpoint: one [`Reading`] per endpoint per evaluation, and the
//! value of each [`AlertMetric`] in it.
//!
//! `error_rate` and `p95_latency_ms` cover the endpoint's sliding last minute (its traffic
//! window of 55 to 60 seconds); `pending_requests`, `async_queue_depth` and `ready_workers`
//! are the values now; `worker_restarts` counts replica restarts seen in the last five
//! minutes.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use crate::config::{AlertMetric, AlertRule};
use crate::endpoint::Endpoint;

/// How far back `worker_restarts` counts.
pub const RESTART_WINDOW: Duration = Duration::from_secs(300);

/// One endpoint's metrics at one evaluation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reading {
    /// Requests answered in the last minute.
    pub requests: u64,
    /// Share of them answered 5xx (0..=1).
    pub error_rate: f64,
    /// Their 95th percentile duration, in milliseconds; `None` without requests.
    pub p95_ms: Option<f64>,
    /// Requests held now while no worker is ready.
    pub pending: u64,
    /// Async jobs waiting or running; `None` when the endpoint has no async side.
    pub async_queue: Option<u64>,
    /// Workers that may take a request now.
    pub ready_workers: u64,
    /// Replica restarts in the last [`RESTART_WINDOW`].
    pub restarts: u64,
}

impl Reading {
    /// The value `rule` compares, or `None` when there is nothing to compare: no request
    /// in the window (`p95_latency_ms`), fewer than `min_requests` (`error_rate`), no
    /// async side (`async_queue_depth`).
    pub fn value(&self, rule: &AlertRule) -> Option<f64> {
        match rule.metric {
            AlertMetric::ErrorRate => {
                (self.requests >= rule.min_requests).then_some(self.error_rate)
            }
            AlertMetric::P95LatencyMs => self.p95_ms,
            AlertMetric::PendingRequests => Some(self.pending as f64),
            AlertMetric::AsyncQueueDepth => self.async_queue.map(|n| n as f64),
            AlertMetric::ReadyWorkers => Some(self.ready_workers as f64),
            AlertMetric::WorkerRestarts => Some(self.restarts as f64),
        }
    }
}

/// Reads `endpoint` now; `restarts` is the endpoint's restart history, advanced by this
/// reading.
pub fn read(endpoint: &Endpoint, restarts: &mut RestartWindow, now: Instant) -> Reading {
    let minute = endpoint.traffic.last_minute();
    let replicas: Vec<(u32, u32)> = endpoint
        .control
        .actuator()
        .map(|actuator| {
            actuator
                .replicas()
                .iter()
                .map(|r| (r.id, r.restarts))
                .collect()
        })
        .unwrap_or_default();
    Reading {
        requests: minute.requests,
        error_rate: minute.error_rate,
        p95_ms: minute.p95_ms,
        pending: u64::from(endpoint.control.admission.pending()),
        async_queue: endpoint.jobs().map(|_| endpoint.control.queued()),
        ready_workers: endpoint.workers().iter().filter(|w| w.available()).count() as u64,
        restarts: restarts.observe(now, &replicas),
    }
}

/// Restarts of an endpoint's replicas over the last [`RESTART_WINDOW`], from the restart
/// counters the actuator reports (each replica's count since it was first started).
#[derive(Debug, Default)]
pub struct RestartWindow {
    /// Each replica's count at the previous observation.
    last: HashMap<u32, u32>,
    /// Restarts seen at each observation that saw any, oldest first.
    seen: VecDeque<(Instant, u64)>,
}

impl RestartWindow {
    /// Takes the `(replica id, restarts)` of every replica now and returns the restarts
    /// seen in the last [`RESTART_WINDOW`]. A replica not seen before counts all its
    /// restarts; a count that went down belongs to a new replica that reuses the number.
    pub fn observe(&mut self, now: Instant, replicas: &[(u32, u32)]) -> u64 {
        let mut new = 0u64;
        for &(id, restarts) in replicas {
            let before = self.last.get(&id).copied().unwrap_or(0);
            new += u64::from(if restarts >= before {
                restarts - before
            } else {
                restarts
            });
        }
        self.last = replicas.iter().copied().collect();
        if new > 0 {
            self.seen.push_back((now, new));
        }
        while self
            .seen
            .front()
            .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= RESTART_WINDOW)
        {
            self.seen.pop_front();
        }
        self.seen.iter().map(|(_, n)| n).sum()
    }
}

//! Workers as the data plane and the control loops share them: address, in-flight count,
//! health verdicts. Every field is an atomic, so the request path never takes a lock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http::HeaderValue;
use http::uri::Authority;

use crate::config::Health;

/// A process-unique worker number, the key of per-thread connection pools.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkerId(pub u64);

/// One worker of an endpoint.
#[derive(Debug)]
pub struct Worker {
    id: WorkerId,
    authority: Authority,
    /// `host:port` with the port made explicit, for connecting.
    connect_to: String,
    /// The `Host` header sent to it, built once.
    host_header: HeaderValue,
    label: String,
    /// The actuator's replica number, for workers Portico started.
    replica: Option<u32>,
    inflight: AtomicU64,
    /// Chosen for scale-down: finishing its requests, taking no new ones.
    draining: AtomicBool,
    /// Gone from its endpoint: its health prober stops.
    retired: AtomicBool,
    /// The active prober's verdict; workers start up.
    probed_up: AtomicBool,
    /// Passive: consecutive 5xx answers or connect failures.
    failures: AtomicU32,
    /// Passive: times ejected since the last success, for the growing ejection length.
    ejections: AtomicU32,
    /// Passive: ejected until this many milliseconds after [`Worker::epoch`]; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    epoch: Instant,
}

/// What [`Worker::state`] reports, for metrics and the admin API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Taking requests.
    Healthy,
    /// The active prober marked it down.
    Unhealthy,
    /// Passively ejected after consecutive failures.
    Ejected,
    /// Leaving (scale-down): finishing its requests, taking no new ones.
    Draining,
}

impl WorkerState {
    /// The label used in `portico_workers{state}`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Healthy => "healthy",
            WorkerState::Unhealthy => "unhealthy",
            WorkerState::Ejected => "ejected",
            WorkerState::Draining => "draining",
        }
    }
}

impl Worker {
    /// A worker reachable at `authority` (`host:port`).
    pub fn new(id: WorkerId, authority: Authority) -> Worker {
        Worker::replica(id, authority, None)
    }

    /// A worker that is replica `replica` of its endpoint's actuator.
    pub fn replica(id: WorkerId, authority: Authority, replica: Option<u32>) -> Worker {
        let connect_to = match authority.port_u16() {
            Some(_) => authority.to_string(),
            None => format!("{}:80", authority.host()),
        };
        // An authority is always a valid header value.
        let host_header = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Worker {
            id,
            label: authority.to_string(),
            connect_to,
            host_header,
            authority,
            replica,
            inflight: AtomicU64::new(0),
            draining: AtomicBool::new(false),
            retired: AtomicBool::new(false),
            probed_up: AtomicBool::new(true),
            failures: AtomicU32::new(0),
            ejections: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// The pool key.
    pub fn id(&self) -> WorkerId {
        self.id
    }

    /// `host:port`, sent as `Host` and used to connect.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// The `Host` header value for requests to it.
    pub fn host_header(&self) -> &HeaderValue {
        &self.host_header
    }

    /// Where to connect: `host:port`, port 80 when the URL gave none.
    pub fn connect_to(&self) -> &str {
        &self.connect_to
    }

    /// The worker's name in metrics and logs (`host:port`).
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The actuator's replica number, for workers Portico started.
    pub fn replica_id(&self) -> Option<u32> {
        self.replica
    }

    /// Takes it out of balancing for good: it finishes what it has (scale-down).
    pub fn drain(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Marks it gone from its endpoint (its prober stops).
    pub fn retire(&self) {
        self.draining.store(true, Ordering::Relaxed);
        self.retired.store(true, Ordering::Relaxed);
    }

    /// Whether it was removed from its endpoint.
    pub fn retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// Requests (and WebSockets) in flight on this worker now.
    pub fn inflight(&self) -> u64 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Counts one request in flight until the guard is dropped.
    pub fn guard(self: &Arc<Worker>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        InflightGuard {
            worker: Arc::clone(self),
        }
    }

    /// Health as the balancer sees it now.
    pub fn state(&self) -> WorkerState {
        if self.draining.load(Ordering::Relaxed) {
            WorkerState::Draining
        } else if !self.probed_up.load(Ordering::Relaxed) {
            WorkerState::Unhealthy
        } else if self.ejected_until_ms.load(Ordering::Relaxed) > self.now_ms() {
            WorkerState::Ejected
        } else {
            WorkerState::Healthy
        }
    }

    /// Whether the balancer may pick it.
    pub fn available(&self) -> bool {
        self.state() == WorkerState::Healthy
    }

    /// Records the active prober's verdict.
    pub fn set_probed_up(&self, up: bool) {
        self.probed_up.store(up, Ordering::Relaxed);
    }

    /// Whether the active prober has it up.
    pub fn probed_up(&self) -> bool {
        self.probed_up.load(Ordering::Relaxed)
    }

    /// A worker answer below 500: resets the passive failure count.
    pub fn record_success(&self) {
        // Loads first: on the hot path the counters are almost always already zero, and a
        // plain load keeps the cache line shared between threads.
        if self.failures.load(Ordering::Relaxed) != 0 {
            self.failures.store(0, Ordering::Relaxed);
        }
        if self.ejections.load(Ordering::Relaxed) != 0 {
            self.ejections.store(0, Ordering::Relaxed);
        }
    }

    /// A 5xx answer or connect failure. Ejects the worker after `eject_after_failures` in a
    /// row unless `others_available` is false (the last worker is never ejected). Returns
    /// whether it was ejected now.
    pub fn record_failure(&self, health: &Health, others_available: bool) -> bool {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures < health.eject_after_failures || !others_available {
            return false;
        }
        self.failures.store(0, Ordering::Relaxed);
        let times = self.ejections.fetch_add(1, Ordering::Relaxed).min(10);
        let length = health.eject.saturating_mul(1 << times);
        let until = self.now_ms() + duration_ms(length);
        self.ejected_until_ms.store(until, Ordering::Relaxed);
        true
    }

    fn now_ms(&self) -> u64 {
        duration_ms(self.epoch.elapsed())
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One request in flight on a worker; dropping it (response finished, client gone, error)
/// releases the count. The scaler reads these counts directly.
#[derive(Debug)]
pub struct InflightGuard {
    worker: Arc<Worker>,
}

impl InflightGuard {
    /// The worker it counts on.
    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.worker.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health() -> Health {
        Health {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            eject_after_failures: 3,
            eject: Duration::from_secs(10),
        }
    }

    fn worker() -> Arc<Worker> {
        Arc::new(Worker::new(WorkerId(1), "127.0.0.1:1".parse().unwrap()))
    }

    /// Guards count in-flight requests and release them on drop.
    #[test]
    fn guards_count_inflight() {
        let w = worker();
        let a = w.guard();
        let b = w.guard();
        assert_eq!(w.inflight(), 2);
        drop(a);
        assert_eq!(w.inflight(), 1);
        drop(b);
        assert_eq!(w.inflight(), 0);
    }

    /// Consecutive failures eject, a success in between resets, the last worker stays.
    #[test]
    fn passive_ejection() {
        let w = worker();
        let h = health();
        assert!(!w.record_failure(&h, true));
        assert!(!w.record_failure(&h, true));
        w.record_success();
        assert!(!w.record_failure(&h, true));
        assert!(!w.record_failure(&h, true));
        assert!(w.record_failure(&h, true));
        assert_eq!(w.state(), WorkerState::Ejected);
        assert!(!w.available());

        let last = worker();
        for _ in 0..10 {
            assert!(!last.record_failure(&h, false));
        }
        assert!(last.available());
    }

    /// The prober's verdict takes a worker out and brings it back.
    #[test]
    fn probe_verdict() {
        let w = worker();
        w.set_probed_up(false);
        assert_eq!(w.state(), WorkerState::Unhealthy);
        w.set_probed_up(true);
        assert!(w.available());
    }
}

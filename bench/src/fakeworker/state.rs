//! State shared by every connection of one fake worker: counters and load gauges (atomics,
//! so the request path takes no lock), the admission semaphore, the request record and the
//! kill switch that a crash or [`crate::FakeWorker`]'s `Drop` pulls.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::{Duration, Instant};

use super::options::Options;

/// One request as it reached the worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RecordedRequest {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path including the query string, e.g. `/echo?x=1`.
    pub path: String,
    /// Protocol version as hyper names it: `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Headers in the order hyper keeps them (values decoded as lossy UTF-8).
    pub headers: Vec<(String, String)>,
}

/// What every handler can see.
pub(crate) struct State {
    pub(crate) opts: Options,
    /// When the worker started; `/health` compares against it.
    pub(crate) started: Instant,
    /// Precomputed [`Options::token_interval`].
    pub(crate) token_interval: Duration,
    /// Every request received, recorded or not.
    requests_total: AtomicU64,
    /// Requests that count towards [`Options::crash_after`].
    counted: AtomicU64,
    running: AtomicU64,
    waiting: AtomicU64,
    /// Admission slots; `None` when [`Options::max_running`] is 0 (unlimited).
    slots: Option<Arc<Semaphore>>,
    recorded: Mutex<VecDeque<RecordedRequest>>,
    killed: watch::Sender<bool>,
}

impl State {
    pub(crate) fn new(opts: Options) -> State {
        let slots = (opts.max_running > 0).then(|| Arc::new(Semaphore::new(opts.max_running)));
        State {
            token_interval: opts.token_interval(),
            opts,
            started: Instant::now(),
            requests_total: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            running: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            slots,
            recorded: Mutex::new(VecDeque::new()),
            killed: watch::Sender::new(false),
        }
    }

    /// Counts a request and, unless `record_limit` is 0, keeps what `describe` makes of it
    /// for `/_fake/requests` (built outside the lock, and not at all when not kept).
    pub(crate) fn record(&self, describe: impl FnOnce() -> RecordedRequest) {
        self.requests_total.fetch_add(1, Ordering::Relaxed);
        let limit = self.opts.record_limit;
        if limit == 0 {
            return;
        }
        let request = describe();
        // A panic while holding this lock cannot leave the deque half-updated in a way that
        // matters (push/pop are atomic from our point of view), so poison is ignored.
        let mut recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        if recorded.len() >= limit {
            recorded.pop_front();
        }
        recorded.push_back(request);
    }

    /// A copy of the recorded requests, oldest first.
    pub(crate) fn recorded(&self) -> Vec<RecordedRequest> {
        let recorded = self.recorded.lock().unwrap_or_else(PoisonError::into_inner);
        recorded.iter().cloned().collect()
    }

    /// Requests received so far (all paths but `/_fake/...`).
    pub(crate) fn requests_total(&self) -> u64 {
        self.requests_total.load(Ordering::Relaxed)
    }

    /// Counts a request towards [`Options::crash_after`]; `true` means this one must crash.
    pub(crate) fn count_towards_crash(&self) -> bool {
        let seen = self.counted.fetch_add(1, Ordering::Relaxed);
        self.opts.crash_after.is_some_and(|n| seen >= n)
    }

    /// Rolls the dice for [`Options::error_rate`].
    pub(crate) fn inject_error(&self) -> bool {
        let rate = self.opts.error_rate;
        rate > 0.0 && rand::random::<f64>() < rate
    }

    /// Current `(running, waiting)` completion requests.
    pub(crate) fn load(&self) -> (u64, u64) {
        (
            self.running.load(Ordering::Relaxed),
            self.waiting.load(Ordering::Relaxed),
        )
    }

    /// Waits for a running slot (counted as waiting meanwhile) and returns a guard that
    /// counts the request as running until it is dropped. Dropping the future while it
    /// waits (the client went away) un-counts it.
    pub(crate) async fn admit(self: &Arc<Self>) -> Running {
        let permit = match &self.slots {
            None => None,
            Some(slots) => match Arc::clone(slots).try_acquire_owned() {
                Ok(permit) => Some(permit),
                Err(_) => {
                    let _waiting = Gauge::raise(&self.waiting);
                    // The semaphore lives as long as `self` and is never closed, so
                    // `acquire_owned` cannot fail; if it ever did, running unthrottled is
                    // the harmless fallback for a fake.
                    Arc::clone(slots).acquire_owned().await.ok()
                }
            },
        };
        self.running.fetch_add(1, Ordering::Relaxed);
        Running {
            state: Arc::clone(self),
            _permit: permit,
        }
    }

    /// Pulls the kill switch: the accept loop stops and every connection is dropped.
    pub(crate) fn kill(&self) {
        self.killed.send_replace(true);
    }

    /// Resolves once [`State::kill`] has been called.
    pub(crate) async fn killed(&self) {
        let mut rx = self.killed.subscribe();
        // `wait_for` fails only when the sender is gone, and the sender lives in `self`.
        let _ = rx.wait_for(|killed| *killed).await;
    }
}

/// A request counted in `vllm:num_requests_running`, holding its admission slot.
pub(crate) struct Running {
    state: Arc<State>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.state.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Raises a gauge for as long as it lives.
struct Gauge<'a>(&'a AtomicU64);

impl<'a> Gauge<'a> {
    fn raise(gauge: &'a AtomicU64) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Gauge(gauge)
    }
}

impl Drop for Gauge<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(path: &str) -> RecordedRequest {
        RecordedRequest {
            method: "GET".into(),
            path: path.into(),
            version: "HTTP/1.1".into(),
            headers: vec![],
        }
    }

    /// The record keeps only the most recent `record_limit` requests but counts them all.
    #[test]
    fn record_is_bounded() {
        let state = State::new(Options::default().record_limit(2));
        for p in ["/a", "/b", "/c"] {
            state.record(|| request(p));
        }
        let paths: Vec<_> = state.recorded().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/b", "/c"]);
        assert_eq!(state.requests_total(), 3);
    }

    /// `crash_after(n)` lets n counted requests through and crashes on the next.
    #[test]
    fn crash_after_counts() {
        let state = State::new(Options::default().crash_after(2));
        assert!(!state.count_towards_crash());
        assert!(!state.count_towards_crash());
        assert!(state.count_towards_crash());
        let never = State::new(Options::default());
        assert!((0..100).all(|_| !never.count_towards_crash()));
    }

    /// Admission counts running requests and queues the ones beyond `max_running`.
    #[tokio::test]
    async fn admission_gauges() {
        let state = Arc::new(State::new(Options::default().max_running(1)));
        let first = state.admit().await;
        assert_eq!(state.load(), (1, 0));
        let waiter = tokio::spawn({
            let state = Arc::clone(&state);
            async move { state.admit().await }
        });
        let deadline = Instant::now() + Duration::from_secs(5);
        while state.load() != (1, 1) {
            assert!(Instant::now() < deadline, "second request never waited");
            tokio::task::yield_now().await;
        }
        drop(first);
        let second = waiter.await.expect("admission task");
        assert_eq!(state.load(), (1, 0));
        drop(second);
        assert_eq!(state.load(), (0, 0));
    }
}

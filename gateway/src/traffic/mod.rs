//! Per-endpoint traffic analytics: the last minute (for the admin API and alert rules) and
//! an hourly breakdown kept for 30 days (requests, errors, latency percentiles, bytes,
//! token usage, and the same per caller), persisted in the embedded store.
//!
//! Cost on the data plane: [`Traffic::record`] runs once per finished request. It locks
//! the recording thread's own shard (one uncontended mutex: each data-plane thread maps to
//! its own shard while there are no more threads than cores), updates a five-second slot
//! of the rolling minute and the current hour in place, and returns: no I/O, no other
//! thread woken, and no allocation except the first time a caller is seen in an hour.
//! Readers merge the shards.
//!
//! Persistence: each shard's hour counts are deltas. A background thread drains them
//! every [`FLUSH_INTERVAL`] into the endpoint's in-memory history (what the admin API
//! reads) and adds them to the stored rows ([`archive`]); readers of the history drain
//! first, so they see every finished request. [`Traffic::flush`] (one endpoint) and
//! [`flush_all`] (every attached endpoint) do the same at once, for shutdown; a `Traffic`
//! that is dropped flushes what it still holds.
//!
//! Layout:
//! - `histogram`: fixed log-linear latency histograms (12.5 % precision).
//! - `window`: the rolling minute, twelve slots of five seconds.
//! - `hourly`: one UTC hour, callers bounded to [`hourly::MAX_CALLERS`].
//! - `usage`: token usage read from the end of OpenAI-shaped response bodies.
//! - `archive`: the `traffic_hours` table of the store.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::store::Store;

pub mod archive;
pub mod histogram;
pub mod hourly;
pub mod usage;
pub mod window;

pub use hourly::{Caller, CallerCount, Hour};
pub use usage::Usage;

use window::{MinuteSum, Window};

/// Hours kept, in memory and in the store (30 days).
pub const RETENTION_HOURS: u64 = 720;
/// How often drained hours are written to the store.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(10);
/// Most shards per endpoint (threads beyond share them).
const MAX_SHARDS: usize = 64;
/// At most one persistence warning per endpoint per this many seconds.
const WARN_EVERY_SECONDS: u64 = 60;

/// One finished request, as telemetry hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Sample<'a> {
    /// When the response ended (or was abandoned).
    pub at: SystemTime,
    /// Status sent to the client.
    pub status: u16,
    /// From the request's arrival to the end of its response.
    pub duration: Duration,
    /// Request body bytes received.
    pub bytes_in: u64,
    /// Response body bytes sent.
    pub bytes_out: u64,
    /// The project token's name; `None` is shown as `anonymous`.
    pub caller: Option<&'a Arc<str>>,
    /// Token usage the worker reported, if any was found.
    pub usage: Option<Usage>,
}

/// The last minute of an endpoint (a sliding window of twelve five-second slots, so
/// between 55 and 60 seconds).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Minute {
    /// Requests finished.
    pub requests: u64,
    /// 5xx answers.
    pub errors: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// Requests per second over the window.
    pub rps: f64,
    /// Share of 5xx answers among requests (0 without requests).
    pub error_rate: f64,
    /// Median duration in milliseconds (to 12.5 %), `None` without requests.
    pub p50_ms: Option<f64>,
    /// 95th percentile duration in milliseconds (to 12.5 %), `None` without requests.
    pub p95_ms: Option<f64>,
}

/// Why a flush did not reach the store.
#[derive(Debug, thiserror::Error)]
#[error("traffic of endpoint {endpoint}: {error}")]
pub struct FlushError {
    endpoint: String,
    error: redb::Error,
}

/// One endpoint's traffic analytics.
pub struct Traffic {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Traffic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traffic")
            .field("endpoint", &self.inner.endpoint)
            .finish_non_exhaustive()
    }
}

struct Inner {
    endpoint: String,
    /// One per recording thread (by [`shard_index`]), created on its first request.
    shards: Box<[OnceLock<Box<Mutex<Shard>>>]>,
    history: Mutex<History>,
    store: OnceLock<Arc<Store>>,
    /// Unix seconds of the last persistence warning.
    warned_at: AtomicU64,
}

/// What one thread recorded: its minute, and its hour deltas not drained yet.
#[derive(Default)]
struct Shard {
    window: Window,
    /// The current and the previous hour, at `hour % 2`: `(hour, delta)`.
    hours: [(u64, Hour); 2],
    /// Undrained hours pushed out of `hours` (only when nothing drained for over an hour).
    spill: Vec<(u64, Hour)>,
}

/// The merged hours of an endpoint.
#[derive(Default)]
struct History {
    hours: BTreeMap<u64, Hour>,
    /// Drained deltas not yet in the store.
    unsaved: BTreeMap<u64, Hour>,
}

impl Traffic {
    /// Empty analytics for the endpoint `endpoint` (its id).
    pub fn new(endpoint: &str) -> Traffic {
        Traffic {
            inner: Arc::new(Inner {
                endpoint: endpoint.to_string(),
                shards: (0..shard_count()).map(|_| OnceLock::new()).collect(),
                history: Mutex::default(),
                store: OnceLock::new(),
                warned_at: AtomicU64::new(0),
            }),
        }
    }

    /// Records one finished request. Called by telemetry on the data plane: O(1), no I/O.
    #[inline]
    pub fn record(&self, sample: &Sample<'_>) {
        let shard = self.inner.shards[shard_index() % self.inner.shards.len()]
            .get_or_init(|| Box::new(Mutex::new(Shard::default())));
        lock(shard).record(sample);
    }

    /// The last minute now.
    pub fn last_minute(&self) -> Minute {
        self.last_minute_at(SystemTime::now())
    }

    /// The minute ending at `now`.
    pub fn last_minute_at(&self, now: SystemTime) -> Minute {
        let now_ms = unix_millis(now);
        let mut sum = MinuteSum::default();
        for shard in self.inner.shards.iter().filter_map(OnceLock::get) {
            lock(shard).window.add_to(now_ms, &mut sum);
        }
        let requests = sum.requests;
        Minute {
            requests,
            errors: sum.server_errors,
            client_errors: sum.client_errors,
            rps: requests as f64 / window::covered_seconds(now_ms),
            error_rate: if requests == 0 {
                0.0
            } else {
                sum.server_errors as f64 / requests as f64
            },
            p50_ms: sum.latency.percentile_ms(0.50),
            p95_ms: sum.latency.percentile_ms(0.95),
        }
    }

    /// The hours of `range` (hour numbers: hours since the Unix epoch, UTC) that saw
    /// requests, oldest first, including everything recorded until now.
    pub fn hours(&self, range: RangeInclusive<u64>) -> Vec<(u64, Hour)> {
        self.hours_at(range, SystemTime::now())
    }

    /// [`Traffic::hours`] with the clock given (retention is judged from `now`).
    pub fn hours_at(&self, range: RangeInclusive<u64>, now: SystemTime) -> Vec<(u64, Hour)> {
        if range.start() > range.end() {
            return Vec::new();
        }
        self.inner.drain(now);
        lock(&self.inner.history)
            .hours
            .range(range)
            .map(|(hour, counted)| (*hour, counted.clone()))
            .collect()
    }

    /// Loads the endpoint's stored hours and has them written back every
    /// [`FLUSH_INTERVAL`] from a background thread. Called once per endpoint by
    /// [`Store::attach`]; later calls do nothing. A store that cannot be read is logged,
    /// and the endpoint starts with no history (new hours are still written).
    pub fn attach(&self, store: &Arc<Store>) {
        if self.inner.store.set(Arc::clone(store)).is_err() {
            return;
        }
        // The endpoint this one replaces (a reload) writes what it holds first, so that
        // the history loaded below has it.
        flusher::flush_endpoint(&self.inner.endpoint, store);
        let from = current_hour(SystemTime::now()).saturating_sub(RETENTION_HOURS - 1);
        match archive::load(store, &self.inner.endpoint, from) {
            Ok(loaded) => {
                let mut history = lock(&self.inner.history);
                for (hour, counted) in loaded {
                    history.hours.entry(hour).or_default().merge(&counted);
                }
            }
            Err(err) => tracing::warn!(
                endpoint = %self.inner.endpoint,
                error = %err,
                "traffic: could not load the stored hours"
            ),
        }
        flusher::register(&self.inner);
    }

    /// Writes everything recorded so far to the store now (blocking I/O: call it off the
    /// data plane). Does nothing but drain when the endpoint is not attached.
    pub fn flush(&self) -> Result<(), FlushError> {
        self.inner.flush(SystemTime::now())
    }
}

impl Drop for Traffic {
    /// Writes what is left: at once (shutdown, admin and control threads), or, on a
    /// data-plane thread (the last request of an endpoint replaced by a reload), by the
    /// flusher thread at its next round, so that no request waits for the disk.
    fn drop(&mut self) {
        if self.inner.store.get().is_none() {
            return;
        }
        if on_data_plane() {
            self.inner.drain(SystemTime::now());
            flusher::retire(Arc::clone(&self.inner));
        } else if let Err(err) = self.inner.flush(SystemTime::now()) {
            tracing::warn!(error = %err, "traffic: the final flush failed");
        }
    }
}

/// Whether this thread runs a current-thread runtime (the data plane's kind).
fn on_data_plane() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|handle| handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// Flushes every attached endpoint's traffic now, for shutdown (blocking I/O); failures
/// are logged.
pub fn flush_all() {
    flusher::flush_all();
}

impl Inner {
    /// Moves every shard's hour deltas into the history, and drops hours past retention.
    fn drain(&self, now: SystemTime) {
        let mut drained: Vec<(u64, Hour)> = Vec::new();
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            let mut shard = lock(shard);
            drained.append(&mut shard.spill);
            for (hour, counted) in &mut shard.hours {
                if !counted.is_empty() {
                    drained.push((*hour, counted.take()));
                }
            }
        }
        let cutoff = current_hour(now).saturating_sub(RETENTION_HOURS - 1);
        let mut history = lock(&self.history);
        let keep_unsaved = self.store.get().is_some();
        for (hour, counted) in drained {
            if hour < cutoff {
                continue;
            }
            history.hours.entry(hour).or_default().merge(&counted);
            if keep_unsaved {
                history.unsaved.entry(hour).or_default().merge(&counted);
            }
        }
        history.hours = history.hours.split_off(&cutoff);
    }

    /// Drains, then adds the unsaved deltas to the store.
    fn flush(&self, now: SystemTime) -> Result<(), FlushError> {
        self.drain(now);
        let Some(store) = self.store.get() else {
            return Ok(());
        };
        let unsaved = std::mem::take(&mut lock(&self.history).unsaved);
        let cutoff = current_hour(now).saturating_sub(RETENTION_HOURS - 1);
        if unsaved.is_empty() && !prune_due(now) {
            return Ok(());
        }
        if let Err(error) = archive::save(store, &self.endpoint, &unsaved, cutoff) {
            // Kept for the next attempt.
            let mut history = lock(&self.history);
            for (hour, counted) in unsaved {
                history.unsaved.entry(hour).or_default().merge(&counted);
            }
            return Err(FlushError {
                endpoint: self.endpoint.clone(),
                error,
            });
        }
        Ok(())
    }

    /// Logs `err` unless this endpoint warned less than a minute ago.
    fn warn(&self, err: &FlushError) {
        let now = unix_millis(SystemTime::now()) / 1000;
        let last = self.warned_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_SECONDS
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(error = %err, "traffic: could not write hours to the store (kept for the next attempt)");
        }
    }
}

/// Old rows are deleted by every write; with no traffic, once an hour still.
fn prune_due(now: SystemTime) -> bool {
    unix_millis(now) / 1000 % 3600 < FLUSH_INTERVAL.as_secs()
}

impl Shard {
    #[inline]
    fn record(&mut self, sample: &Sample<'_>) {
        let now_ms = unix_millis(sample.at);
        let micros = u64::try_from(sample.duration.as_micros()).unwrap_or(u64::MAX);
        self.window.record(now_ms, sample.status, micros);
        let hour = hourly::hour_of(now_ms / 1000);
        let (slot_hour, slot) = &mut self.hours[(hour % 2) as usize];
        if *slot_hour != hour {
            if !slot.is_empty() {
                // Nothing drained this slot for over an hour (no reader, no store).
                if self.spill.len() >= RETENTION_HOURS as usize {
                    self.spill.remove(0);
                }
                self.spill.push((*slot_hour, slot.take()));
            }
            slot.reset();
            *slot_hour = hour;
        }
        slot.record(sample, micros);
    }
}

/// The hour number of `now`.
pub fn current_hour(now: SystemTime) -> u64 {
    hourly::hour_of(unix_millis(now) / 1000)
}

fn unix_millis(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Counters stay usable after a panic elsewhere: at worst one sample is half-counted.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shards per endpoint: one per core, so thread-per-core data planes never share one.
fn shard_count() -> usize {
    static COUNT: OnceLock<usize> = OnceLock::new();
    *COUNT.get_or_init(|| {
        std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_SHARDS)
    })
}

/// This thread's shard number, handed out in turn as threads first record.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: usize = NEXT.fetch_add(1, Ordering::Relaxed);
    }
    INDEX.with(|index| *index)
}

/// The background writer: one thread per process, flushing every attached endpoint.
mod flusher {
    use super::*;

    /// Attached endpoints; dropped ones are forgotten at the next round.
    static ATTACHED: Mutex<Vec<Weak<Inner>>> = Mutex::new(Vec::new());
    /// Dropped endpoints whose last hours are still to be written.
    static RETIRED: Mutex<Vec<Arc<Inner>>> = Mutex::new(Vec::new());

    pub(super) fn register(inner: &Arc<Inner>) {
        lock(&ATTACHED).push(Arc::downgrade(inner));
        static STARTED: OnceLock<()> = OnceLock::new();
        STARTED.get_or_init(|| {
            let spawned = std::thread::Builder::new()
                .name("portico-traffic".into())
                .spawn(|| {
                    loop {
                        std::thread::sleep(FLUSH_INTERVAL);
                        flush_all();
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "traffic: no flusher thread; hours are written at shutdown only");
            }
        });
    }

    /// Queues a dropped endpoint's traffic for the next round.
    pub(super) fn retire(inner: Arc<Inner>) {
        lock(&RETIRED).push(inner);
    }

    pub(super) fn flush_all() {
        flush_where(|_| true);
    }

    /// Flushes the live and retired traffic of `endpoint` in `store`.
    pub(super) fn flush_endpoint(endpoint: &str, store: &Arc<Store>) {
        flush_where(|inner| {
            inner.endpoint == endpoint && inner.store.get().is_some_and(|s| Arc::ptr_eq(s, store))
        });
    }

    fn flush_where(wanted: impl Fn(&Inner) -> bool) {
        let live: Vec<Arc<Inner>> = {
            let mut attached = lock(&ATTACHED);
            attached.retain(|weak| weak.strong_count() > 0);
            attached
                .iter()
                .filter_map(Weak::upgrade)
                .filter(|inner| wanted(inner))
                .collect()
        };
        let retired: Vec<Arc<Inner>> = {
            let mut all = lock(&RETIRED);
            let (chosen, others) = all.drain(..).partition(|inner| wanted(inner));
            *all = others;
            chosen
        };
        let now = SystemTime::now();
        for inner in live {
            if let Err(err) = inner.flush(now) {
                inner.warn(&err);
            }
        }
        for inner in retired {
            if let Err(err) = inner.flush(now) {
                inner.warn(&err);
                // Tried again next round.
                retire(inner);
            }
        }
    }
}

#[cfg(test)]
mod tests;

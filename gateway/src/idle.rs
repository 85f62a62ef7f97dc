//! Client connection deadlines that cost no timer per request: a client slow to send its
//! request head (`server.header_read_timeout_seconds`) and a keep-alive connection left
//! idle (`server.keepalive_timeout_seconds`).
//!
//! Every client connection has a [`Watch`], shared by its reads (the framing guard notes
//! when the bytes of a head start to arrive) and its requests (each holds a [`Busy`] until
//! its response ends). One sweep per data-plane thread, four times a second, closes the
//! connections past a deadline: their next read fails, and hyper drops them. A request
//! costs a few counter updates; hyper's own head timer re-armed a timer on every request
//! and woke the connection once more for it.
//!
//! The deadlines only apply between requests: while a request or a WebSocket session is
//! open, the connection's own timeouts (first byte, idle body, WebSocket idle) govern.
//! HTTP/2 connections (recognised by their preface on clear-text listeners) are left to
//! hyper's HTTP/2 keep-alive.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Weak};
use std::task::Waker;
use std::time::Duration;

use futures_util::task::AtomicWaker;

/// How often a thread sweeps its connections: a deadline is met at most this late, never
/// early.
pub const SWEEP_INTERVAL: Duration = Duration::from_millis(250);

thread_local! {
    /// Sweeps since the thread started (the coarse clock deadlines are kept in).
    static NOW: Cell<u32> = const { Cell::new(1) };
    /// The connections of this thread.
    static WATCHED: RefCell<Vec<Weak<Watch>>> = const { RefCell::new(Vec::new()) };
}

fn now() -> u32 {
    NOW.with(Cell::get)
}

/// The state of one client connection's deadlines. Atomics only because hyper wants
/// upgradable streams to be `Send`; a watch never leaves its connection's thread.
#[derive(Debug, Default)]
pub struct Watch {
    /// Requests (and WebSocket sessions) open on the connection.
    in_flight: AtomicU32,
    /// The sweep at which the connection last became idle.
    idle_since: AtomicU32,
    /// The sweep at which the first bytes of the next head arrived; 0 when none has.
    head_since: AtomicU32,
    /// Multiplexed HTTP/2: not swept.
    http2: AtomicBool,
    /// Past a deadline: reads fail from now on.
    expired: AtomicBool,
    /// The connection's reader, woken when it expires.
    reader: AtomicWaker,
}

impl Watch {
    /// A watch for a connection accepted now, swept by this thread.
    pub fn new() -> Arc<Watch> {
        let watch = Arc::new(Watch {
            idle_since: AtomicU32::new(now()),
            ..Watch::default()
        });
        WATCHED.with(|watched| watched.borrow_mut().push(Arc::downgrade(&watch)));
        watch
    }

    /// Notes that bytes arrived: between requests, they start the next head.
    #[inline]
    pub fn bytes_arrived(&self) {
        if self.in_flight.load(Ordering::Relaxed) == 0
            && self.head_since.load(Ordering::Relaxed) == 0
        {
            self.head_since.store(now(), Ordering::Relaxed);
        }
    }

    /// Remembers who to wake when the connection expires (a read is pending).
    #[inline]
    pub fn register(&self, waker: &Waker) {
        self.reader.register(waker);
    }

    /// Whether a deadline passed: the connection is to be closed.
    #[inline]
    pub fn expired(&self) -> bool {
        self.expired.load(Ordering::Relaxed)
    }

    /// The connection speaks HTTP/2: hyper's keep-alive governs it.
    pub fn set_http2(&self) {
        self.http2.store(true, Ordering::Relaxed);
    }

    /// A request arrived: no deadline runs until its response ends.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.head_since.store(0, Ordering::Relaxed);
        Busy(Arc::clone(self))
    }

    /// The deadline this watch is past at sweep `now`, if any.
    fn overdue(&self, now: u32, limits: &Limits) -> bool {
        if self.http2.load(Ordering::Relaxed) || self.in_flight.load(Ordering::Relaxed) > 0 {
            return false;
        }
        match self.head_since.load(Ordering::Relaxed) {
            // Strictly past: the start was noted at a sweep up to one interval before it
            // happened, and a deadline must never come early.
            0 => now.wrapping_sub(self.idle_since.load(Ordering::Relaxed)) > limits.keepalive,
            head => now.wrapping_sub(head) > limits.header,
        }
    }
}

/// A request in flight on a connection; its drop (when the response ended) starts the
/// connection's keep-alive deadline.
#[derive(Debug)]
pub struct Busy(Arc<Watch>);

impl Drop for Busy {
    fn drop(&mut self) {
        let watch = &self.0;
        if watch.in_flight.fetch_sub(1, Ordering::Relaxed) == 1 {
            watch.idle_since.store(now(), Ordering::Relaxed);
        }
    }
}

/// The deadlines in sweeps.
#[derive(Debug, Clone, Copy)]
struct Limits {
    header: u32,
    keepalive: u32,
}

fn sweeps(duration: Duration) -> u32 {
    let interval = SWEEP_INTERVAL.as_millis();
    u32::try_from(duration.as_millis().div_ceil(interval))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Sweeps this thread's connections every [`SWEEP_INTERVAL`], for ever: run it as a task
/// on the data-plane thread. Once a second it also closes the thread's idle worker
/// connections that expired or that their worker closed.
pub async fn sweep(header_read_timeout: Duration, keepalive_timeout: Duration) {
    let limits = Limits {
        header: sweeps(header_read_timeout),
        keepalive: sweeps(keepalive_timeout),
    };
    let mut ticks = tokio::time::interval(SWEEP_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = 0u32;
    loop {
        ticks.tick().await;
        sweep_once(&limits);
        tick = tick.wrapping_add(1);
        if tick.is_multiple_of(4) {
            crate::upstream::pool::sweep_http1();
        }
    }
}

fn sweep_once(limits: &Limits) {
    let now = NOW.with(|now| {
        now.set(now.get().wrapping_add(1).max(1));
        now.get()
    });
    WATCHED.with(|watched| {
        watched.borrow_mut().retain(|watch| {
            let Some(watch) = watch.upgrade() else {
                return false;
            };
            if watch.overdue(now, limits) {
                watch.expired.store(true, Ordering::Relaxed);
                watch.reader.wake();
                return false;
            }
            true
        });
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        header: 4,
        keepalive: 12,
    };

    fn advance(sweeps: u32) {
        for _ in 0..sweeps {
            sweep_once(&LIMITS);
        }
    }

    /// An idle connection expires after the keep-alive time, not before.
    #[test]
    fn idle_connections_expire_after_keepalive() {
        let watch = Watch::new();
        advance(LIMITS.keepalive);
        assert!(!watch.expired());
        advance(1);
        assert!(watch.expired());
    }

    /// A head that started arriving must be complete within the header time.
    #[test]
    fn slow_heads_expire_after_header_time() {
        let watch = Watch::new();
        advance(2);
        watch.bytes_arrived();
        advance(LIMITS.header);
        assert!(!watch.expired());
        advance(1);
        assert!(watch.expired());
    }

    /// No deadline runs while a request is in flight; its end restarts the idle time.
    #[test]
    fn requests_in_flight_hold_deadlines() {
        let watch = Watch::new();
        watch.bytes_arrived();
        let busy = watch.busy();
        // Body bytes of the request in flight start no head.
        watch.bytes_arrived();
        advance(LIMITS.keepalive * 2);
        assert!(!watch.expired());
        drop(busy);
        advance(LIMITS.keepalive);
        assert!(!watch.expired());
        advance(1);
        assert!(watch.expired());
    }

    /// HTTP/2 connections are left to hyper.
    #[test]
    fn http2_connections_are_not_swept() {
        let watch = Watch::new();
        watch.set_http2();
        advance(LIMITS.keepalive * 2);
        assert!(!watch.expired());
    }

    /// Deadlines round up to whole sweeps and are never zero.
    #[test]
    fn deadlines_in_sweeps() {
        assert_eq!(sweeps(Duration::from_secs(10)), 40);
        assert_eq!(sweeps(Duration::from_millis(100)), 1);
        assert_eq!(sweeps(Duration::from_millis(300)), 2);
    }
}

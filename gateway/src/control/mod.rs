//! The control side of each endpoint: the controller loop that feeds the scaler's
//! [`Policy`](scaler::Policy) and drives its [`Actuator`], and the state it shares with the
//! data plane — held requests, wake-ups, mode, events.
//!
//! Layout:
//! - `admission`: the bounded queue of requests held while no worker is ready.
//! - `controller`: one task per endpoint: tick, wake, operator commands → decisions → actuator.
//! - `hooks`: replica events from the actuator → the endpoint's worker set, events, metrics.
//! - `events`: the bounded ring of lifecycle events.
//! - `scrape`: custom metrics from the workers' `metrics_path`.

mod admission;
mod controller;
pub mod events;
mod hooks;
mod scrape;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use scaler::{Actuator, Decision, Mode, Reason, ScalingSettings};
use tokio::sync::{Notify, mpsc, oneshot};

pub use admission::{Admission, PendingGuard};
pub use controller::spawn_all;
pub use events::{Detail, Event, EventKind, Events};

use crate::config;

/// Scaling state of one endpoint, shared by the data plane (admit), the controller and the
/// admin API.
pub struct Control {
    /// Requests held while no worker is ready.
    pub admission: Admission,
    /// Lifecycle events.
    pub events: Events,
    wake: Notify,
    /// Told when a replica becomes ready (the async dispatcher waits on it).
    ready: Notify,
    arrivals: AtomicU64,
    /// Async jobs waiting for a worker (set by the dispatcher).
    waiting: AtomicU64,
    /// Async jobs waiting or running: demand that keeps a worker.
    queued: AtomicU64,
    stopped: AtomicBool,
    /// Portico starts this endpoint's workers, so a request can wait for one.
    managed: bool,
    settings: ArcSwap<ScalingSettings>,
    commands: mpsc::UnboundedSender<Command>,
    inbox: Mutex<Option<mpsc::UnboundedReceiver<Command>>>,
    status: Mutex<Status>,
    actuator: OnceLock<Arc<dyn Actuator>>,
    /// When the endpoint last woke from zero, until its first replica is ready.
    woke_at: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Control")
            .field("pending", &self.admission.pending())
            .field("stopped", &self.stopped())
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// What the controller decided last.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Status {
    /// Who decides the count.
    pub mode: Mode,
    /// Workers wanted.
    pub desired: u32,
    /// Why.
    pub reason: Reason,
    /// Whether the policy is in panic mode.
    pub panicking: bool,
}

/// An operator's order to the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Pin the worker count.
    Scale(u32),
    /// Back to the autoscaler.
    Autoscale,
    /// Zero workers, traffic refused.
    Stop,
    /// Serve again, autoscaled.
    Start,
}

#[derive(Debug)]
struct Command {
    order: Order,
    reply: oneshot::Sender<Status>,
}

/// The controller is not running (the daemon is shutting down).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the endpoint's controller is not running")]
pub struct ControllerGone;

impl Control {
    /// The state of a new endpoint configured by `config`.
    pub fn new(config: &config::Endpoint) -> Control {
        let (commands, inbox) = mpsc::unbounded_channel();
        let settings = config.scaling.clone();
        Control {
            admission: Admission::default(),
            events: Events::new(&config.id),
            wake: Notify::new(),
            ready: Notify::new(),
            arrivals: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            managed: matches!(config.workers.kind, config::WorkerKind::Process { .. }),
            status: Mutex::new(Status {
                mode: Mode::Auto,
                desired: settings.min_workers,
                reason: Reason::MinWorkers,
                panicking: false,
            }),
            settings: ArcSwap::from_pointee(settings),
            commands,
            inbox: Mutex::new(Some(inbox)),
            actuator: OnceLock::new(),
            woke_at: Mutex::new(None),
        }
    }

    /// Counts one request arriving (the `rps` metric's input).
    pub fn arrived(&self) {
        self.arrivals.fetch_add(1, Ordering::Relaxed);
    }

    /// Records the async jobs waiting for a worker and running, which the scaler counts
    /// as demand.
    pub fn set_queued(&self, waiting: u64, running: u64) {
        self.waiting.store(waiting, Ordering::Relaxed);
        self.queued.store(waiting + running, Ordering::Relaxed);
    }

    /// Async jobs waiting for a worker.
    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Relaxed)
    }

    /// Async jobs waiting or running, as last reported by the dispatcher.
    pub fn queued(&self) -> u64 {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether an operator stopped the endpoint.
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::Relaxed)
    }

    /// Whether requests wait for a worker when none is ready (Portico starts the workers).
    pub fn holds(&self) -> bool {
        self.managed
    }

    /// Asks the controller to decide now: a request found no ready worker.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Completes once a replica became ready since the last call (or now).
    pub async fn replica_ready(&self) {
        self.ready.notified().await;
    }

    /// The scaling settings in force.
    pub fn settings(&self) -> arc_swap::Guard<Arc<ScalingSettings>> {
        self.settings.load()
    }

    /// The last decision.
    pub fn status(&self) -> Status {
        *lock(&self.status)
    }

    /// The endpoint's actuator, once its controller runs.
    pub fn actuator(&self) -> Option<&Arc<dyn Actuator>> {
        self.actuator.get()
    }

    /// Sends an operator's order to the controller and returns the decision it led to.
    pub async fn order(&self, order: Order) -> Result<Status, ControllerGone> {
        let (reply, answer) = oneshot::channel();
        self.commands
            .send(Command { order, reply })
            .map_err(|_| ControllerGone)?;
        answer.await.map_err(|_| ControllerGone)
    }

    fn take_arrivals(&self) -> u64 {
        self.arrivals.swap(0, Ordering::Relaxed)
    }

    fn set_stopped(&self, stopped: bool) {
        self.stopped.store(stopped, Ordering::Relaxed);
        if stopped {
            // Held requests learn at once that they will not be served.
            self.admission.release();
        }
    }

    fn set_status(&self, decision: &Decision, mode: Mode) {
        *lock(&self.status) = Status {
            mode,
            desired: decision.desired,
            reason: decision.reason,
            panicking: decision.panicking,
        };
    }

    fn mark_woken(&self) {
        lock(&self.woke_at).get_or_insert_with(Instant::now);
    }

    /// The time since the wake, if this is the first ready replica after one.
    fn woken_for(&self) -> Option<Duration> {
        lock(&self.woke_at).take().map(|at| at.elapsed())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks stays consistent between statements.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

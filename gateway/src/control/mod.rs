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
pub mod journal;
mod scrape;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use scaler::{Actuator, Decision, Mode, Reason, RestartOutcome, ScalingSettings};
use tokio::sync::{Notify, mpsc, oneshot, watch};

pub use admission::{Admission, PendingGuard};
pub use controller::spawn;
pub use events::{Detail, Event, EventKind, Events};

use crate::config;
use crate::endpoint::Endpoint;

/// Scaling state of one endpoint, shared by the data plane (admit), the controller and the
/// admin API.
pub struct Control {
    /// Requests held while no worker is ready.
    pub admission: Admission,
    /// Lifecycle events.
    pub events: Arc<Events>,
    wake: Notify,
    /// Told when a replica becomes ready (the async dispatcher waits on it).
    ready: Notify,
    arrivals: AtomicU64,
    /// Async jobs waiting for a worker (set by the dispatcher).
    waiting: AtomicU64,
    /// Async jobs waiting or running: demand that keeps a worker.
    queued: AtomicU64,
    stopped: AtomicBool,
    /// A rolling restart is under way.
    restarting: AtomicBool,
    /// Removed from the config by a reload: the controller drains and stops the workers.
    retired: watch::Sender<bool>,
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
    /// Take the scaling settings in force (just replaced) into account.
    Reconfigure,
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
        Control::continuing(config, Arc::new(Events::new(&config.id)))
    }

    /// The state of an endpoint that takes over `events` from the one it replaces (a
    /// reload changed its settings), so that one history tells both.
    pub fn continuing(config: &config::Endpoint, events: Arc<Events>) -> Control {
        let (commands, inbox) = mpsc::unbounded_channel();
        let settings = config.scaling.clone();
        Control {
            admission: Admission::default(),
            events,
            wake: Notify::new(),
            ready: Notify::new(),
            arrivals: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            stopped: AtomicBool::new(false),
            restarting: AtomicBool::new(false),
            retired: watch::Sender::new(false),
            managed: matches!(
                config.workers.kind,
                config::WorkerKind::Process { .. }
                    | config::WorkerKind::Command { .. }
                    | config::WorkerKind::Kubernetes(_)
            ),
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

    /// A worker was added from elsewhere (the cluster leader's): held requests and the
    /// async dispatcher look again.
    pub fn worker_added(&self) {
        self.admission.release();
        self.ready.notify_one();
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

    /// Replaces the scaling settings (already checked) and has the controller decide with
    /// them at once; records an `updated` event naming what changed.
    pub async fn update_settings(
        &self,
        settings: ScalingSettings,
        origin: &str,
    ) -> Result<Status, ControllerGone> {
        let before = self.settings.swap(Arc::new(settings.clone()));
        let changes = describe_changes(&before, &settings);
        if !changes.is_empty() {
            self.events.record(
                EventKind::Updated,
                format!("scaling updated by {origin}: {changes}"),
                Detail::default(),
            );
        }
        self.order(Order::Reconfigure).await
    }

    /// Whether a rolling restart is under way.
    pub fn restarting(&self) -> bool {
        self.restarting.load(Ordering::Acquire)
    }

    /// Removes the endpoint from service (a reload dropped it): its controller lets the
    /// requests in flight finish, then stops the workers and ends.
    pub fn retire(&self) {
        self.retired.send_replace(true);
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

/// `min_workers 0→1, target 10→5`: the settings that differ, old and new.
fn describe_changes(before: &ScalingSettings, after: &ScalingSettings) -> String {
    let (b, a) = (
        config::file::FileScaling::from(before),
        config::file::FileScaling::from(after),
    );
    let mut changes = Vec::new();
    macro_rules! compare {
        ($($field:ident),*) => {$(
            if b.$field != a.$field {
                changes.push(format!("{} {}→{}", stringify!($field), b.$field, a.$field));
            }
        )*};
    }
    compare!(
        min_workers,
        max_workers,
        metric,
        target,
        idle_timeout_seconds,
        initial_cooldown_seconds,
        stable_window_seconds,
        panic_window_seconds,
        panic_threshold,
        max_pending,
        cold_start_timeout_seconds,
        waking_keepalive_seconds
    );
    if b.custom_metric != a.custom_metric {
        let show = |name: &Option<String>| name.clone().unwrap_or_else(|| "none".into());
        changes.push(format!(
            "custom_metric {}→{}",
            show(&b.custom_metric),
            show(&a.custom_metric)
        ));
    }
    changes.join(", ")
}

/// Starts a rolling restart of the endpoint's replicas unless one is under way (`false`).
/// It runs in the background; `restarting` and `restarted` events tell its progress.
pub fn restart(endpoint: &Arc<Endpoint>) -> bool {
    let control = &endpoint.control;
    let Some(actuator) = control.actuator().cloned() else {
        return false;
    };
    if control.restarting.swap(true, Ordering::AcqRel) {
        return false;
    }
    let replicas = actuator
        .replicas()
        .iter()
        .filter(|r| r.state != scaler::ReplicaState::Draining)
        .count();
    control.events.record(
        EventKind::Restarting,
        format!("rolling restart of {replicas} replicas begins"),
        Detail::default(),
    );
    let endpoint = Arc::clone(endpoint);
    tokio::spawn(async move {
        let outcome = actuator.restart().await;
        let message = match outcome {
            RestartOutcome::Done { replaced } => {
                format!("rolling restart done: {replaced} replicas replaced")
            }
            RestartOutcome::Interrupted { replaced } => {
                format!("rolling restart interrupted after {replaced} replicas")
            }
            RestartOutcome::Unsupported => "the workers cannot be restarted".to_string(),
        };
        let control = &endpoint.control;
        control
            .events
            .record(EventKind::Restarted, message, Detail::default());
        control.restarting.store(false, Ordering::Release);
    });
    true
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every value behind these locks stays consistent between statements.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

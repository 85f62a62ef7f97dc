//! Endpoints as the data plane serves them: the validated settings, the workers, and the
//! counters the scaler and admin API read.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use arc_swap::{ArcSwap, Guard};

use crate::access::EndpointAccess;
use crate::config::{self, Config};
use crate::control::Control;
use crate::jobs::Jobs;
use crate::metrics::EndpointMetrics;
use crate::traffic::Traffic;
use crate::worker::{Worker, WorkerId};

/// Process-wide worker numbering, so pool keys never collide across endpoints or reloads.
static NEXT_WORKER: AtomicU64 = AtomicU64::new(1);

/// One endpoint at run time.
#[derive(Debug)]
pub struct Endpoint {
    /// The endpoint's validated settings.
    pub config: config::Endpoint,
    /// Indices (in config order) of the listeners serving it.
    listeners: Vec<usize>,
    /// The workers taking (or finishing) requests: fixed for static workers, replaced
    /// whole by the controller as replicas become ready and leave.
    workers: ArcSwap<Vec<Arc<Worker>>>,
    /// Next worker for `round_robin`.
    cursor: AtomicUsize,
    /// Pre-resolved metric handles.
    pub metrics: EndpointMetrics,
    /// Security groups and tokens in force, replaced whole by a reload.
    pub access: ArcSwap<EndpointAccess>,
    /// Scaling state shared with the controller: held requests, wake-ups, mode, events.
    pub control: Control,
    /// The async queue and result store, attached at start when `[endpoint.async]` is set.
    jobs: OnceLock<Arc<Jobs>>,
    /// Traffic analytics: the last minute and the hourly breakdown.
    pub traffic: Traffic,
}

impl Endpoint {
    /// Builds the run-time endpoint of `config`, which belongs to `whole` (its groups and
    /// project); `listener_names` are all configured listeners in order.
    pub fn new(whole: &Config, config: config::Endpoint, listener_names: &[String]) -> Endpoint {
        let control = Control::new(&config);
        Endpoint::with_control(whole, config, listener_names, control)
    }

    /// Like [`Endpoint::new`], for an endpoint replacing `predecessor` (same id, changed
    /// settings): it continues its lifecycle events.
    pub fn succeeding(
        whole: &Config,
        config: config::Endpoint,
        listener_names: &[String],
        predecessor: &Endpoint,
    ) -> Endpoint {
        let control = Control::continuing(&config, Arc::clone(&predecessor.control.events));
        Endpoint::with_control(whole, config, listener_names, control)
    }

    fn with_control(
        whole: &Config,
        config: config::Endpoint,
        listener_names: &[String],
        control: Control,
    ) -> Endpoint {
        let access = ArcSwap::from_pointee(EndpointAccess::build(whole, &config));
        let workers = match &config.workers.kind {
            config::WorkerKind::Static { urls } => urls
                .iter()
                .filter_map(|url| url.authority().cloned())
                .map(|authority| Arc::new(Worker::new(next_worker_id(), authority)))
                .collect(),
            // Another system runs them: each is down until its health probe passes.
            config::WorkerKind::Command {
                discovery: config::Discovery::Urls(urls),
                ..
            } => urls
                .iter()
                .filter_map(|url| url.authority().cloned())
                .map(|authority| {
                    let worker = Worker::new(next_worker_id(), authority);
                    worker.set_probed_up(false);
                    Arc::new(worker)
                })
                .collect(),
            // Process workers are started by the scaler's actuator; DNS ones are found by
            // discovery.
            config::WorkerKind::Process { .. }
            | config::WorkerKind::Kubernetes(_)
            | config::WorkerKind::Command {
                discovery: config::Discovery::Dns { .. },
                ..
            } => Vec::new(),
        };
        let listeners = listener_names
            .iter()
            .enumerate()
            .filter(|(_, name)| config.listeners.contains(name))
            .map(|(i, _)| i)
            .collect();
        let metrics = EndpointMetrics::new(&config.project, &config.id);
        let traffic = Traffic::new(&config.id);
        Endpoint {
            config,
            listeners,
            workers: ArcSwap::from_pointee(workers),
            cursor: AtomicUsize::new(0),
            metrics,
            access,
            control,
            jobs: OnceLock::new(),
            traffic,
        }
    }

    /// The endpoint's async side, once attached.
    pub fn jobs(&self) -> Option<&Arc<Jobs>> {
        self.jobs.get()
    }

    /// Attaches the async side (once; later calls are ignored).
    pub fn attach_jobs(&self, jobs: Arc<Jobs>) {
        let _ = self.jobs.set(jobs);
    }

    /// The endpoint id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The owning project's id.
    pub fn project(&self) -> &str {
        &self.config.project
    }

    /// Whether the listener with this index serves the endpoint.
    pub fn serves(&self, listener: usize) -> bool {
        self.listeners.contains(&listener)
    }

    /// The endpoint's workers now (draining ones included).
    pub fn workers(&self) -> Guard<Arc<Vec<Arc<Worker>>>> {
        self.workers.load()
    }

    /// Whether any worker may take a request now.
    pub fn has_available_worker(&self) -> bool {
        self.workers.load().iter().any(|w| w.available())
    }

    /// Adds a worker (a replica passed its health check).
    pub fn add_worker(&self, worker: Arc<Worker>) {
        self.workers.rcu(|workers| {
            let mut next = Vec::clone(workers);
            next.push(Arc::clone(&worker));
            next
        });
    }

    /// Removes and retires `worker` (a worker this endpoint no longer routes to).
    pub fn remove_worker(&self, worker: &Arc<Worker>) {
        self.workers.rcu(|workers| {
            workers
                .iter()
                .filter(|w| !Arc::ptr_eq(w, worker))
                .cloned()
                .collect::<Vec<_>>()
        });
        worker.retire();
    }

    /// Removes and retires the worker of replica `replica`, if there is one.
    pub fn remove_replica(&self, replica: u32) -> Option<Arc<Worker>> {
        let mut removed = None;
        self.workers.rcu(|workers| {
            let (gone, kept): (Vec<_>, Vec<_>) = workers
                .iter()
                .cloned()
                .partition(|w| w.replica_id() == Some(replica));
            removed = gone.into_iter().next();
            kept
        });
        if let Some(worker) = &removed {
            worker.retire();
        }
        removed
    }

    /// The worker of replica `replica`, if it is serving.
    pub fn replica_worker(&self, replica: u32) -> Option<Arc<Worker>> {
        self.workers
            .load()
            .iter()
            .find(|w| w.replica_id() == Some(replica))
            .cloned()
    }

    /// Requests in flight over all workers: the scaler's concurrency input.
    pub fn inflight(&self) -> u64 {
        self.workers.load().iter().map(|w| w.inflight()).sum()
    }

    /// Advances the round-robin cursor.
    pub(crate) fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

/// A process-unique worker id.
pub fn next_worker_id() -> WorkerId {
    WorkerId(NEXT_WORKER.fetch_add(1, Ordering::Relaxed))
}

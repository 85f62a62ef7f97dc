//! Endpoints as the data plane serves them: the validated settings, the workers, and the
//! counters the scaler and admin API read.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;

use crate::access::EndpointAccess;
use crate::config::{self, Config};
use crate::metrics::EndpointMetrics;
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
    workers: Vec<Arc<Worker>>,
    /// Next worker for `round_robin`.
    cursor: AtomicUsize,
    /// Pre-resolved metric handles.
    pub metrics: EndpointMetrics,
    /// Security groups and tokens in force, replaced whole by a reload.
    pub access: ArcSwap<EndpointAccess>,
}

impl Endpoint {
    /// Builds the run-time endpoint of `config`, which belongs to `whole` (its groups and
    /// project); `listener_names` are all configured listeners in order.
    pub fn new(whole: &Config, config: config::Endpoint, listener_names: &[String]) -> Endpoint {
        let access = ArcSwap::from_pointee(EndpointAccess::build(whole, &config));
        let workers = match &config.workers.kind {
            config::WorkerKind::Static { urls } => urls
                .iter()
                .filter_map(|url| url.authority().cloned())
                .map(|authority| {
                    let id = WorkerId(NEXT_WORKER.fetch_add(1, Ordering::Relaxed));
                    Arc::new(Worker::new(id, authority))
                })
                .collect(),
            // Process workers are started by the scaler's actuator.
            config::WorkerKind::Process { .. } => Vec::new(),
        };
        let listeners = listener_names
            .iter()
            .enumerate()
            .filter(|(_, name)| config.listeners.contains(name))
            .map(|(i, _)| i)
            .collect();
        let metrics = EndpointMetrics::new(&config.project, &config.id);
        Endpoint {
            config,
            listeners,
            workers,
            cursor: AtomicUsize::new(0),
            metrics,
            access,
        }
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

    /// The endpoint's workers.
    pub fn workers(&self) -> &[Arc<Worker>] {
        &self.workers
    }

    /// Requests in flight over all workers: the scaler's concurrency input.
    pub fn inflight(&self) -> u64 {
        self.workers.iter().map(|w| w.inflight()).sum()
    }

    /// Advances the round-robin cursor.
    pub(crate) fn next_cursor(&self) -> usize {
        self.cursor.fetch_add(1, Ordering::Relaxed)
    }
}

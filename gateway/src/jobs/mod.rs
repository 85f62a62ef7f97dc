//! Asynchronous jobs behind the intake stage (DESIGN.md §3 `[endpoint.async]`, §5): the
//! dispatchers that run queued jobs on the endpoints' workers and write their results.
//!
//! Layout:
//! - `results`: the object store where result documents go.
//! - `document`: the status and result JSON documents.
//! - `dispatcher`: one loop per async endpoint: claims jobs as workers have room.
//! - `run`: one job: forward with retries, write the result, finish, call the webhook.
//! - `webhook`: which targets may be called, and the call.
//!
//! Dispatchers share one thread of their own with a current-thread runtime, so that they
//! forward through the same `balance` and `forward` stages (and thread-local connection
//! pools) as the data plane, without taking a data-plane thread's time.

mod dispatcher;
pub mod document;
pub mod results;
mod run;
pub mod webhook;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};
use tokio::sync::{Notify, watch};

use crate::config::{self, Config, QueueBackend};
use crate::queue::{EmbeddedQueue, JobQueue, QueueError, RedisQueue};
use crate::routes::Routes;

pub use results::Results;

/// The async side of one endpoint: its queue, the result store and settings.
#[derive(Debug)]
pub struct Jobs {
    /// Where the endpoint's jobs wait.
    pub queue: Arc<dyn JobQueue>,
    /// Where results are written.
    pub results: Arc<Results>,
    /// `[endpoint.async]`.
    pub settings: config::AsyncSettings,
    /// Metric handles.
    pub metrics: JobMetrics,
    arrived: Notify,
}

impl Jobs {
    /// Tells the dispatcher a job was queued (it would otherwise see it on its next poll).
    pub fn arrived(&self) {
        self.arrived.notify_one();
    }
}

/// Why the async machinery could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The queue could not be opened or reached.
    #[error("async queue {queue}: {error}")]
    Queue {
        /// `embedded` (with its file) or the Redis URL.
        queue: String,
        /// What failed.
        error: QueueError,
    },
    /// The result store could not be set up.
    #[error("{0}")]
    Store(#[from] results::StoreError),
    /// The state directory or the dispatcher thread could not be created.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Opens the queues and the result store, attaches them to every endpoint with
/// `[endpoint.async]`, and starts the dispatchers on their thread. They stop claiming when
/// `stop` turns true and let running jobs finish for up to `grace`; the returned thread
/// ends then. `None` when no endpoint is async.
pub async fn start(
    routes: &Routes,
    config: &Config,
    stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<Option<std::thread::JoinHandle<()>>, StartError> {
    let endpoints: Vec<_> = routes
        .endpoints()
        .iter()
        .filter(|e| e.config.async_.is_some())
        .cloned()
        .collect();
    if endpoints.is_empty() {
        return Ok(None);
    }
    let results = Arc::new(Results::open(&config.object_store)?);
    let mut queues: HashMap<QueueBackend, Arc<dyn JobQueue>> = HashMap::new();
    for endpoint in &endpoints {
        let Some(settings) = &endpoint.config.async_ else {
            continue;
        };
        let queue = match queues.get(&settings.queue) {
            Some(queue) => Arc::clone(queue),
            None => {
                let queue = open_queue(&settings.queue, config, settings.reclaim_after).await?;
                queues.insert(settings.queue.clone(), Arc::clone(&queue));
                queue
            }
        };
        let jobs = Jobs {
            queue,
            results: Arc::clone(&results),
            settings: settings.clone(),
            metrics: JobMetrics::new(endpoint.id()),
            arrived: Notify::new(),
        };
        endpoint.attach_jobs(Arc::new(jobs));
    }
    let queues: Vec<_> = queues.into_values().collect();
    let thread = std::thread::Builder::new()
        .name("portico-async".into())
        .spawn(move || dispatcher::run_all(endpoints, queues, stop, grace))?;
    Ok(Some(thread))
}

async fn open_queue(
    backend: &QueueBackend,
    config: &Config,
    reclaim_after: Duration,
) -> Result<Arc<dyn JobQueue>, StartError> {
    match backend {
        QueueBackend::Embedded => {
            std::fs::create_dir_all(&config.server.state_dir)?;
            let path = config.server.state_dir.join("queue.redb");
            let queue = EmbeddedQueue::open(&path).map_err(|error| StartError::Queue {
                queue: format!("embedded ({})", path.display()),
                error,
            })?;
            Ok(Arc::new(queue))
        }
        QueueBackend::Redis(url) => {
            let queue = RedisQueue::connect(url, reclaim_after)
                .await
                .map_err(|error| StartError::Queue {
                    queue: url.clone(),
                    error,
                })?;
            Ok(Arc::new(queue))
        }
    }
}

/// Metric handles of one endpoint's jobs.
#[derive(Debug)]
pub struct JobMetrics {
    depth: Gauge,
    completed: Counter,
    failed: Counter,
    expired: Counter,
    duration: Histogram,
    write_errors: Counter,
}

impl JobMetrics {
    fn new(endpoint: &str) -> JobMetrics {
        let outcome = |outcome: &'static str| {
            metrics::counter!(
                "portico_async_jobs_total",
                "endpoint" => endpoint.to_string(),
                "outcome" => outcome
            )
        };
        JobMetrics {
            depth: metrics::gauge!("portico_async_queue_depth", "endpoint" => endpoint.to_string()),
            completed: outcome("completed"),
            failed: outcome("failed"),
            expired: outcome("expired"),
            duration: metrics::histogram!(
                "portico_async_job_duration_seconds",
                "endpoint" => endpoint.to_string()
            ),
            write_errors: metrics::counter!(
                "portico_async_result_write_errors_total",
                "endpoint" => endpoint.to_string()
            ),
        }
    }
}

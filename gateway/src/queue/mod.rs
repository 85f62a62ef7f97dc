//! The async job queue (DESIGN.md §3 `[endpoint.async]`, §5): jobs persisted before their
//! `202` is sent, claimed by the endpoint's dispatcher, and their state kept for the status
//! API.
//!
//! Every backend implements [`JobQueue`]; the intake stage, the dispatcher and the status
//! API see only that trait.
//!
//! Layout:
//! - `embedded`: [`EmbeddedQueue`], the default, in a redb file under `server.state_dir`.
//! - `redis`: [`RedisQueue`], Redis Streams shared by several Portico replicas.

mod embedded;
mod redis;

use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedQueue;
pub use redis::RedisQueue;

/// What a queue operation returns: boxed, so that backends fit behind `dyn JobQueue`.
pub type QueueFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueueError>> + Send + 'a>>;

/// A durable job queue with per-job state, shared by intake, dispatcher and status API.
///
/// Delivery is at least once: a job claimed by a dispatcher that dies before `finish` is
/// claimed again (on restart for the embedded queue; after `reclaim_after` by another
/// replica for Redis), with its attempt count kept.
pub trait JobQueue: Send + Sync + std::fmt::Debug {
    /// Persists `job` (durably: acknowledged only once it survives a crash) and returns its
    /// id. With an idempotency key already used on the endpoint by a job still kept, returns
    /// that job's id, `fresh: false`, and stores nothing.
    fn enqueue(&self, job: NewJob) -> QueueFuture<'_, Enqueued>;

    /// Takes up to `max` waiting jobs of `endpoint`, oldest first, marks them
    /// `in_progress` and counts an attempt on each. Also takes back jobs whose claim was
    /// abandoned (a dispatcher died), where the backend can tell.
    fn claim(&self, endpoint: &str, max: usize) -> QueueFuture<'_, Vec<Claimed>>;

    /// Counts another attempt on a claimed job (a retry after a worker failure) and returns
    /// the new count.
    fn retry(&self, id: &str) -> QueueFuture<'_, u32>;

    /// Tells the backend the dispatcher still works on these claimed jobs of `endpoint`,
    /// so that no other replica takes them back. Called every few seconds per running job.
    fn touch(&self, endpoint: &str, ids: &[String]) -> QueueFuture<'_, ()>;

    /// Records a claimed job's final state (its result is written), drops its body, and
    /// keeps the state for the status API until `state.ttl_ms` after now.
    fn finish(&self, id: &str, status: JobStatus) -> QueueFuture<'_, ()>;

    /// The job's state, if it is kept.
    fn state(&self, id: &str) -> QueueFuture<'_, Option<JobState>>;

    /// Jobs of `endpoint` waiting for a dispatcher (not counting claimed ones).
    fn depth(&self, endpoint: &str) -> QueueFuture<'_, u64>;

    /// When the oldest job of `endpoint` still waiting was submitted (ms since the epoch).
    fn oldest_waiting(&self, endpoint: &str) -> QueueFuture<'_, Option<u64>>;

    /// Forgets finished jobs (and their idempotency keys) kept past their TTL; returns how
    /// many went. Backends whose keys expire by themselves return 0.
    fn sweep(&self) -> QueueFuture<'_, u64>;
}

/// What `enqueue` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id: the new job's, or the first job's for a repeated idempotency key.
    pub id: String,
    /// Whether a job was stored (false: an idempotency key matched).
    pub fresh: bool,
}

/// A job as intake accepted it.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    /// The request id (UUID v7), also the result's key.
    pub id: String,
    /// Endpoint id.
    pub endpoint: String,
    /// The worker path the job is sent to (e.g. `/v1/chat/completions`).
    pub route: String,
    /// Request headers forwarded to the worker.
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Bytes,
    /// The client's `Idempotency-Key`.
    pub idempotency_key: Option<String>,
    /// Where to send the status document on completion (already checked against
    /// `webhook_allow`).
    pub webhook: Option<String>,
    /// `ttl_seconds` in ms: how long the job may wait, and how long its state and
    /// idempotency key are kept after it finished.
    pub ttl_ms: u64,
}

/// Where a job is in its life (the status API's `status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobStatus {
    /// Waiting for a dispatcher.
    Queued,
    /// Sent to a worker (or about to be).
    InProgress,
    /// The worker answered; the result is written.
    Completed,
    /// Out of attempts; the result holds the error.
    Failed,
    /// Waited longer than `ttl_seconds`.
    Expired,
}

/// A job's metadata and state, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobState {
    /// Request id.
    pub id: String,
    /// Endpoint id.
    pub endpoint: String,
    /// Worker path.
    pub route: String,
    /// Forwarded request headers.
    pub headers: Vec<(String, String)>,
    /// Webhook target.
    pub webhook: Option<String>,
    /// The client's idempotency key (forgotten with the job).
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// How long the job may wait, and how long it is kept once finished.
    #[serde(default)]
    pub ttl_ms: u64,
    /// State.
    pub status: JobStatus,
    /// Claims so far.
    pub attempts: u32,
    /// Intake time, ms since the epoch.
    pub submitted_at_ms: u64,
    /// Last change, ms since the epoch.
    pub updated_at_ms: u64,
    /// First claim, ms since the epoch.
    #[serde(default)]
    pub started_at_ms: Option<u64>,
}

impl JobState {
    /// The state of a job just accepted.
    pub fn queued(job: &NewJob, now_ms: u64) -> JobState {
        JobState {
            id: job.id.clone(),
            endpoint: job.endpoint.clone(),
            route: job.route.clone(),
            headers: job.headers.clone(),
            webhook: job.webhook.clone(),
            idempotency_key: job.idempotency_key.clone(),
            ttl_ms: job.ttl_ms,
            status: JobStatus::Queued,
            attempts: 0,
            submitted_at_ms: now_ms,
            updated_at_ms: now_ms,
            started_at_ms: None,
        }
    }

    /// Moves the job to `status` now; a move to `in_progress` (a claim or a retry) also
    /// counts an attempt. Every backend changes states through this one rule.
    pub fn advance(&mut self, status: JobStatus) {
        let now = now_ms();
        self.status = status;
        if status == JobStatus::InProgress {
            self.attempts += 1;
            self.started_at_ms.get_or_insert(now);
        }
        self.updated_at_ms = now;
    }

    /// Whether the job is done (its result is written).
    pub fn finished(&self) -> bool {
        matches!(
            self.status,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Expired
        )
    }
}

impl JobStatus {
    /// The status as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::InProgress => "in_progress",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Expired => "expired",
        }
    }
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A job handed to a dispatcher.
#[derive(Debug, Clone, PartialEq)]
pub struct Claimed {
    /// Its state after the claim (`in_progress`, attempts counted).
    pub state: JobState,
    /// The request body.
    pub body: Bytes,
}

/// Why the queue could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The store failed (disk, corruption); nothing of the request was persisted.
    #[error("queue storage: {0}")]
    Storage(String),
    /// No job has this id.
    #[error("no job {0}")]
    UnknownJob(String),
    /// The queue's writer stopped, or its commit failed; nothing was acknowledged.
    #[error("the queue is not accepting work")]
    Closed,
}

#[cfg(test)]
mod tests;

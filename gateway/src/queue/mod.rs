//! The async job queue (DESIGN.md §3 `[endpoint.async]`, §5): jobs persisted before their
//! `202` is sent, claimed by the endpoint's dispatcher, and their state kept for the status
//! API.
//!
//! Layout:
//! - `embedded`: [`EmbeddedQueue`], the default, in a redb file under `server.state_dir`.

mod embedded;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

pub use embedded::EmbeddedQueue;

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
    /// State.
    pub status: JobStatus,
    /// Claims so far.
    pub attempts: u32,
    /// Intake time, ms since the epoch.
    pub submitted_at_ms: u64,
    /// Last change, ms since the epoch.
    pub updated_at_ms: u64,
}

impl JobState {
    fn queued(job: &NewJob, now_ms: u64) -> JobState {
        JobState {
            id: job.id.clone(),
            endpoint: job.endpoint.clone(),
            route: job.route.clone(),
            headers: job.headers.clone(),
            webhook: job.webhook.clone(),
            status: JobStatus::Queued,
            attempts: 0,
            submitted_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }
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

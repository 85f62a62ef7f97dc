//! Actuators: what turns a desired worker count into running replicas, and reports them.
//!
//! The gateway's controller owns one [`Actuator`] per endpoint. It calls
//! [`Actuator::set_desired`] after each policy decision and learns about replicas through
//! [`Hooks::on_event`] (a replica became ready, crashed, is draining…), so held requests
//! are released the moment a replica passes its health check, with no polling.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use crate::logs::LogLine;

/// Where a replica is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReplicaState {
    /// Started (or being restarted), not yet answering its health check.
    Starting,
    /// Passed its health check: takes requests.
    Ready,
    /// Leaving: takes no new requests, finishing the ones in flight, then stopped.
    Draining,
    /// Crashed or failed to start; waiting for its restart backoff.
    Failed,
}

impl ReplicaState {
    /// Every state, in the order metrics list them.
    pub const ALL: [ReplicaState; 4] = [
        ReplicaState::Starting,
        ReplicaState::Ready,
        ReplicaState::Draining,
        ReplicaState::Failed,
    ];

    /// `starting`, `ready`, `draining` or `failed`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplicaState::Starting => "starting",
            ReplicaState::Ready => "ready",
            ReplicaState::Draining => "draining",
            ReplicaState::Failed => "failed",
        }
    }
}

impl fmt::Display for ReplicaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One replica as an actuator reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The replica number: the smallest number not in use when it was first started, kept
    /// across restarts (`{replica}` in a process command).
    pub id: u32,
    /// `host:port` it serves on; `None` before it has one.
    pub address: Option<String>,
    /// Where it is in its life.
    pub state: ReplicaState,
    /// The operating-system process id, for process replicas that are running.
    pub pid: Option<u32>,
    /// When its current run started.
    pub started_at: SystemTime,
    /// When its current run passed its health check.
    pub ready_at: Option<SystemTime>,
    /// How many times it was restarted after a crash or a failed start.
    pub restarts: u32,
}

/// A change in a replica's life, reported through [`Hooks::on_event`] as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum ReplicaEvent {
    /// A run started (first start or restart); not ready yet.
    Starting {
        /// Replica number.
        replica: u32,
        /// Where it will serve.
        address: String,
        /// Process id.
        pid: Option<u32>,
    },
    /// It passed its health check and may take requests.
    Ready {
        /// Replica number.
        replica: u32,
        /// Where it serves.
        address: String,
        /// From the start of this run to the first passing health check.
        startup: Duration,
    },
    /// Chosen for scale-down: it must get no new requests from now on.
    Draining {
        /// Replica number.
        replica: u32,
    },
    /// Stopped on purpose (scale-down, stop, shutdown); it is gone.
    Stopped {
        /// Replica number.
        replica: u32,
    },
    /// A rolling restart replaced it: `by` is ready and takes its place, and it drains
    /// (a `Draining` event follows).
    Replaced {
        /// The replica leaving.
        replica: u32,
        /// The fresh replica that took its place.
        by: u32,
    },
    /// Its run ended without being asked to (exit, signal, failed start, startup
    /// timeout); it restarts after `restart_in`.
    Crashed {
        /// Replica number.
        replica: u32,
        /// What happened, e.g. `exit status 1`, `killed by signal 9`,
        /// `not ready after 600 s`, `spawn failed: No such file or directory`.
        reason: String,
        /// Backoff before the restart.
        restart_in: Duration,
    },
}

impl ReplicaEvent {
    /// The replica the event is about.
    pub fn replica(&self) -> u32 {
        match self {
            ReplicaEvent::Starting { replica, .. }
            | ReplicaEvent::Ready { replica, .. }
            | ReplicaEvent::Draining { replica }
            | ReplicaEvent::Stopped { replica }
            | ReplicaEvent::Replaced { replica, .. }
            | ReplicaEvent::Crashed { replica, .. } => *replica,
        }
    }
}

/// How a rolling restart ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartOutcome {
    /// Every replica that existed when it began was replaced (`replaced` of them; a replica
    /// removed by a scale-down meanwhile is not replaced).
    Done {
        /// Replicas replaced.
        replaced: u32,
    },
    /// The actuator shut down first.
    Interrupted {
        /// Replicas replaced before that.
        replaced: u32,
    },
    /// The actuator cannot restart its workers (they run elsewhere).
    Unsupported,
}

/// What an actuator needs from the gateway.
pub trait Hooks: Send + Sync + 'static {
    /// A replica changed state. Called from the actuator's tasks, in order per replica;
    /// must not block.
    fn on_event(&self, event: ReplicaEvent);

    /// Requests in flight on the replica now (a draining replica is stopped once this is 0
    /// or the grace period has passed).
    fn inflight(&self, replica: u32) -> u64;
}

/// Turns a desired replica count into running replicas.
pub trait Actuator: Send + Sync + 'static {
    /// Asks for `replicas` replicas. Returns at once; replicas start and drain in the
    /// background and report through [`Hooks`].
    fn set_desired(&self, replicas: u32);

    /// Every replica that exists now (draining ones included), by id.
    fn replicas(&self) -> Vec<Replica>;

    /// Whether the actuator changes the count at all (`false` for fixed workers: decisions
    /// are computed and shown but not acted on).
    fn scales(&self) -> bool {
        true
    }

    /// Replaces every replica, one at a time and without losing capacity: starts a fresh
    /// replica, waits until it is ready, then drains an old one ([`ReplicaEvent::Replaced`]),
    /// and so on. Resolves when the last old replica is draining.
    fn restart(&self) -> Pin<Box<dyn Future<Output = RestartOutcome> + Send + '_>> {
        Box::pin(async { RestartOutcome::Unsupported })
    }

    /// Stops every replica (gracefully, then by force) and resolves when all are gone. No
    /// replica starts afterwards.
    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;

    /// The last `lines` output lines of `replica` (every replica, interleaved by time, when
    /// `None`), read at or after `since`, oldest first. Empty for workers Portico does not
    /// start.
    fn logs(&self, replica: Option<u32>, lines: usize, since: Option<SystemTime>) -> Vec<LogLine> {
        let _ = (replica, lines, since);
        Vec::new()
    }

    /// Every output line from now on; `None` for workers Portico does not start.
    fn follow(&self) -> Option<tokio::sync::broadcast::Receiver<LogLine>> {
        None
    }
}

//! Lifecycle events of an endpoint (created, scaled, woke, replica ready, crashed…): kept
//! in a bounded ring in memory and logged as they happen.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Serialize;

use crate::accesslog::Rfc3339;

/// How many events each endpoint keeps.
pub const CAPACITY: usize = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The endpoint was set up (daemon start).
    Created,
    /// Started by an operator after a stop.
    Started,
    /// Stopped by an operator: zero workers, traffic refused.
    Stopped,
    /// Pinned to a worker count by an operator.
    Pinned,
    /// Handed back to the autoscaler.
    Autoscaled,
    /// Scaling settings changed (admin `PATCH …/scaling` or a reload).
    Updated,
    /// A rolling restart began: each replica is replaced by a fresh one.
    Restarting,
    /// A rolling restart finished.
    Restarted,
    /// The configuration file was reloaded.
    ConfigReloaded,
    /// The desired worker count went up.
    ScaledUp,
    /// The desired worker count went down.
    ScaledDown,
    /// A request found no ready worker at zero and woke the endpoint.
    Woke,
    /// A replica process started (or restarted).
    ReplicaStarting,
    /// A replica passed its health check.
    ReplicaReady,
    /// A replica was chosen for scale-down and is finishing its requests.
    ReplicaDraining,
    /// A replica stopped on purpose.
    ReplicaStopped,
    /// A replica exited unexpectedly or failed to start; it is restarted.
    ReplicaCrashed,
    /// A replica was replaced during a rolling restart.
    ReplicaRestarted,
}

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Sequence number within the endpoint, from 1.
    pub seq: u64,
    /// When, RFC 3339 UTC.
    pub time: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// A sentence for people.
    pub message: String,
    /// The replica concerned, for replica events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<u32>,
    /// The rule behind a scaling decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The desired worker count after a scaling decision.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<u32>,
}

/// One endpoint's recent events.
#[derive(Debug)]
pub struct Events {
    endpoint: String,
    ring: Mutex<(u64, VecDeque<Event>)>,
}

impl Events {
    /// An empty ring for `endpoint`.
    pub fn new(endpoint: &str) -> Events {
        Events {
            endpoint: endpoint.to_string(),
            ring: Mutex::new((0, VecDeque::new())),
        }
    }

    /// Records and logs an event.
    pub fn record(&self, kind: EventKind, message: String, detail: Detail) {
        tracing::info!(
            target: "portico::event",
            endpoint = %self.endpoint,
            event = ?kind,
            replica = detail.replica,
            reason = detail.reason.as_deref(),
            "{message}"
        );
        let mut ring = self.lock();
        ring.0 += 1;
        let event = Event {
            seq: ring.0,
            time: Rfc3339(SystemTime::now()).to_string(),
            kind,
            message,
            replica: detail.replica,
            reason: detail.reason,
            workers: detail.workers,
        };
        if ring.1.len() == CAPACITY {
            ring.1.pop_front();
        }
        ring.1.push_back(event);
    }

    /// The most recent `limit` events after sequence number `after`, oldest first.
    pub fn list(&self, after: u64, limit: usize) -> Vec<Event> {
        let ring = self.lock();
        let newer: Vec<&Event> = ring.1.iter().filter(|e| e.seq > after).collect();
        let skip = newer.len().saturating_sub(limit);
        newer.into_iter().skip(skip).cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, VecDeque<Event>)> {
        self.ring
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Optional fields of an event.
#[derive(Debug, Default)]
pub struct Detail {
    /// The replica concerned.
    pub replica: Option<u32>,
    /// The scaling rule.
    pub reason: Option<String>,
    /// The desired worker count.
    pub workers: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring keeps the newest events, numbered, and lists after a sequence number.
    #[test]
    fn bounded_and_ordered() {
        let events = Events::new("e");
        for i in 0..(CAPACITY + 5) {
            events.record(EventKind::ScaledUp, format!("{i}"), Detail::default());
        }
        let all = events.list(0, usize::MAX);
        assert_eq!(all.len(), CAPACITY);
        assert_eq!(all[0].seq, 6);
        assert_eq!(all.last().unwrap().seq, CAPACITY as u64 + 5);
        let tail = events.list(CAPACITY as u64 + 3, 10);
        assert_eq!(tail.len(), 2);
        let last_two = events.list(0, 2);
        assert_eq!(last_two[1].message, format!("{}", CAPACITY + 4));
        let json = serde_json::to_value(&all[0]).unwrap();
        assert_eq!(json["type"], "scaled_up");
        assert!(json.get("replica").is_none());
    }
}

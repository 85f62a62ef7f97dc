//! Lifecycle events of an endpoint (created, scaled, woke, replica ready, crashed…): kept
//! in a bounded ring in memory, logged as they happen and, once the endpoint is attached to
//! the embedded store ([`Events::attach`]), persisted by the store's
//! [`Journal`](super::journal::Journal) so they and their numbering survive a restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::journal::Journal;
use crate::accesslog::Rfc3339;
use crate::store::Store;

/// How many events each endpoint keeps.
pub const CAPACITY: usize = 1000;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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

/// One event (also its stored form).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// In a cluster, the Portico replica that recorded it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_id: Option<String>,
}

/// The newest `limit` of `events` (oldest first) numbered after `after`, oldest first.
pub fn newest_after(events: impl Iterator<Item = Event>, after: u64, limit: usize) -> Vec<Event> {
    let newer: Vec<Event> = events.filter(|e| e.seq > after).collect();
    let skip = newer.len().saturating_sub(limit);
    newer.into_iter().skip(skip).collect()
}

/// Where each recorded event is also sent (the cluster's shared timeline).
pub type Sink = Box<dyn Fn(&Event) + Send + Sync>;

/// One endpoint's recent events.
pub struct Events {
    endpoint: String,
    ring: Mutex<Ring>,
    sink: OnceLock<Sink>,
}

#[derive(Debug, Default)]
struct Ring {
    /// The last sequence number given out.
    last: u64,
    events: VecDeque<Event>,
    /// Where recorded events are persisted, and this ring's claim on the endpoint id.
    journal: Option<(Arc<Journal>, u64)>,
}

impl Ring {
    fn push(&mut self, event: Event) {
        if self.events.len() == CAPACITY {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Events {
    /// An empty ring for `endpoint`, in memory only until [`Events::attach`].
    pub fn new(endpoint: &str) -> Events {
        Events {
            endpoint: endpoint.to_string(),
            ring: Mutex::new(Ring::default()),
            sink: OnceLock::new(),
        }
    }

    /// Loads the endpoint's stored events from `store` into the ring, so numbering continues
    /// after the last stored one, and persists every event recorded from now on. Events
    /// recorded before (none normally) are renumbered after the stored ones and persisted
    /// too. Reading the store blocks briefly (like opening it); when it fails the events
    /// stay in memory only, with a warning. A second attach does nothing.
    pub fn attach(&self, store: &Arc<Store>) {
        if self.lock().journal.is_some() {
            return;
        }
        let journal = Journal::of(store);
        let generation = journal.claim(&self.endpoint);
        // A previous endpoint of this id (removed, then added back by a reload) may still
        // have events on their way: they must be in the table before it is read.
        journal.flush();
        let history = match journal.load(&self.endpoint) {
            Ok(history) => history,
            Err(err) => {
                tracing::warn!(
                    endpoint = %self.endpoint,
                    error = %err,
                    "event journal: could not read stored events; this endpoint's events stay in memory"
                );
                return;
            }
        };
        let mut ring = self.lock();
        let early: Vec<Event> = ring.events.drain(..).collect();
        ring.last = history.last_seq;
        for event in history.events {
            ring.push(event);
        }
        for mut event in early {
            ring.last += 1;
            event.seq = ring.last;
            journal.append(&self.endpoint, generation, &event);
            ring.push(event);
        }
        journal.trim(&self.endpoint);
        ring.journal = Some((journal, generation));
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
        ring.last += 1;
        let event = Event {
            seq: ring.last,
            time: Rfc3339(SystemTime::now()).to_string(),
            kind,
            message,
            replica: detail.replica,
            reason: detail.reason,
            workers: detail.workers,
            replica_id: None,
        };
        if let Some(sink) = self.sink.get() {
            sink(&event);
        }
        // Queued under the ring's lock, so the writer sees events in sequence order.
        if let Some((journal, generation)) = &ring.journal {
            journal.append(&self.endpoint, *generation, &event);
        }
        ring.push(event);
    }

    /// Sends every event recorded from now on to `sink` too (set once; later calls are
    /// ignored).
    pub fn set_sink(&self, sink: Sink) {
        let _ = self.sink.set(sink);
    }

    /// The most recent `limit` events after sequence number `after`, oldest first.
    pub fn list(&self, after: u64, limit: usize) -> Vec<Event> {
        newest_after(self.lock().events.iter().cloned(), after, limit)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
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

//! The supervisor: the one task that owns the set of replicas, starts replica tasks to
//! reach the desired count and picks which replicas leave on scale-down.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{self, JoinError, JoinSet};

use super::Shared;
use super::replica::{self, Stop};
use crate::actuator::{Replica, ReplicaEvent, ReplicaState};

/// What the actuator asks of its supervisor.
pub(super) enum Command {
    /// Reach this many replicas.
    SetDesired(u32),
    /// Stop every replica; answer once all are gone.
    Shutdown(oneshot::Sender<()>),
}

/// One replica as the supervisor sees it.
struct Slot {
    /// Tells the replica's task to stop; only ever raised.
    stop: watch::Sender<Stop>,
    /// Chosen to leave; no longer counted toward the desired count.
    leaving: bool,
}

struct Supervisor {
    shared: Arc<Shared>,
    desired: u32,
    slots: BTreeMap<u32, Slot>,
    tasks: JoinSet<u32>,
    /// Which replica each task runs, for tasks that end by panicking.
    task_replicas: HashMap<task::Id, u32>,
    shutting_down: bool,
    /// Callers of `shutdown` waiting for the last replica to go.
    waiters: Vec<oneshot::Sender<()>>,
}

/// Runs until the actuator is dropped (its inbox closes) and every replica task has ended.
pub(super) async fn run(shared: Arc<Shared>, mut inbox: mpsc::UnboundedReceiver<Command>) {
    let mut supervisor = Supervisor {
        shared,
        desired: 0,
        slots: BTreeMap::new(),
        tasks: JoinSet::new(),
        task_replicas: HashMap::new(),
        shutting_down: false,
        waiters: Vec::new(),
    };
    loop {
        tokio::select! {
            command = inbox.recv() => match command {
                Some(Command::SetDesired(replicas)) => supervisor.set_desired(replicas),
                Some(Command::Shutdown(done)) => supervisor.shutdown(done),
                None => break,
            },
            Some(ended) = supervisor.tasks.join_next_with_id() => supervisor.ended(ended),
        }
    }
    // Dropped: its groups are killed already; reap them before ending.
    supervisor.stop_all(Stop::Abort);
    while let Some(ended) = supervisor.tasks.join_next_with_id().await {
        supervisor.ended(ended);
    }
}

impl Supervisor {
    fn set_desired(&mut self, replicas: u32) {
        if self.shutting_down {
            return;
        }
        self.desired = replicas;
        self.reconcile();
    }

    fn shutdown(&mut self, done: oneshot::Sender<()>) {
        self.shutting_down = true;
        self.desired = 0;
        self.stop_all(Stop::Shutdown);
        self.waiters.push(done);
        self.answer_waiters();
    }

    /// Starts or chooses replicas to leave until the replicas not leaving are `desired`.
    fn reconcile(&mut self) {
        let staying: Vec<u32> = self
            .slots
            .iter()
            .filter(|(_, slot)| !slot.leaving)
            .map(|(id, _)| *id)
            .collect();
        let desired = self.desired as usize;
        if staying.len() < desired {
            for _ in staying.len()..desired {
                self.start();
            }
        } else if staying.len() > desired {
            let leave = staying.len() - desired;
            for id in self.choose_leaving(staying, leave) {
                if let Some(slot) = self.slots.get_mut(&id) {
                    slot.leaving = true;
                    raise(&slot.stop, Stop::Remove);
                }
            }
        }
    }

    /// The `count` replicas of `staying` that leave first: failed ones (nothing to lose),
    /// then starting ones (nothing in flight), then ready ones with the fewest requests in
    /// flight; the highest number first among equals.
    fn choose_leaving(&self, mut staying: Vec<u32>, leave: usize) -> Vec<u32> {
        let states: HashMap<u32, ReplicaState> = self
            .shared
            .table()
            .replicas
            .iter()
            .map(|(id, replica)| (*id, replica.state))
            .collect();
        staying.sort_by_cached_key(|id| {
            let (rank, inflight) = match states.get(id) {
                Some(ReplicaState::Failed) => (0, 0),
                Some(ReplicaState::Starting) | None => (1, 0),
                Some(ReplicaState::Ready) => (2, self.shared.hooks.inflight(*id)),
                Some(ReplicaState::Draining) => (3, 0),
            };
            (rank, inflight, Reverse(*id))
        });
        staying.truncate(leave);
        staying
    }

    /// Starts a replica with the smallest number not in use.
    fn start(&mut self) {
        let Some(id) = (0u32..).find(|id| !self.slots.contains_key(id)) else {
            return;
        };
        self.shared.table().replicas.insert(
            id,
            Replica {
                id,
                address: None,
                state: ReplicaState::Starting,
                pid: None,
                started_at: SystemTime::now(),
                ready_at: None,
                restarts: 0,
            },
        );
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let handle = self
            .tasks
            .spawn(replica::run(Arc::clone(&self.shared), id, stop_rx));
        self.task_replicas.insert(handle.id(), id);
        self.slots.insert(
            id,
            Slot {
                stop,
                leaving: false,
            },
        );
    }

    fn stop_all(&mut self, stop: Stop) {
        for slot in self.slots.values_mut() {
            slot.leaving = true;
            raise(&slot.stop, stop);
        }
    }

    /// A replica task ended: its replica is gone and its number free again.
    fn ended(&mut self, ended: Result<(task::Id, u32), JoinError>) {
        let id = match ended {
            Ok((task, id)) => {
                self.task_replicas.remove(&task);
                id
            }
            Err(err) => {
                let Some(id) = self.task_replicas.remove(&err.id()) else {
                    return;
                };
                tracing::error!(endpoint = %self.shared.spec.endpoint, replica = id, error = %err, "replica task failed");
                // Its task could not say so itself.
                self.shared.forget(id);
                self.shared
                    .hooks
                    .on_event(ReplicaEvent::Stopped { replica: id });
                id
            }
        };
        self.slots.remove(&id);
        if self.shutting_down {
            self.answer_waiters();
        } else {
            // Only a failed task can lower the count here; make it up.
            self.reconcile();
        }
    }

    fn answer_waiters(&mut self) {
        if self.slots.is_empty() {
            for done in self.waiters.drain(..) {
                let _ = done.send(());
            }
        }
    }
}

/// Raises a replica's stop order to `stop` (never lowers it: a shutdown during a drain
/// cuts the drain short, a scale-down during a shutdown changes nothing).
fn raise(sender: &watch::Sender<Stop>, stop: Stop) {
    sender.send_if_modified(|current| {
        if stop > *current {
            *current = stop;
            true
        } else {
            false
        }
    });
}

//! The supervisor: the one task that owns the set of replicas, starts replica tasks to
//! reach the desired count, picks which replicas leave on scale-down, and runs rolling
//! restarts (one surplus replica at a time: start, wait ready, drain an old one).

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::{self, JoinError, JoinSet};

use super::Shared;
use super::replica::{self, Stop};
use crate::actuator::{Replica, ReplicaEvent, ReplicaState, RestartOutcome};

/// How often a rolling restart looks whether its fresh replica is ready.
const ROLLING_POLL: Duration = Duration::from_millis(100);

/// What the actuator asks of its supervisor.
pub(super) enum Command {
    /// Reach this many replicas.
    SetDesired(u32),
    /// Stop every replica; answer once all are gone.
    Shutdown(oneshot::Sender<()>),
    /// Replace every replica, one at a time; answer when the last old one is draining.
    Restart(oneshot::Sender<RestartOutcome>),
}

/// A rolling restart in progress.
struct Rolling {
    /// Replicas still to replace, oldest order first.
    old: VecDeque<u32>,
    /// The fresh replica of the current step: started on top of the desired count, it
    /// takes an old replica's place once ready.
    surge: Option<u32>,
    replaced: u32,
    /// Callers waiting for the end (a second restart order joins the one running).
    waiters: Vec<oneshot::Sender<RestartOutcome>>,
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
    rolling: Option<Rolling>,
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
        rolling: None,
    };
    let mut rolling_poll = tokio::time::interval(ROLLING_POLL);
    loop {
        tokio::select! {
            command = inbox.recv() => match command {
                Some(Command::SetDesired(replicas)) => supervisor.set_desired(replicas),
                Some(Command::Shutdown(done)) => supervisor.shutdown(done),
                Some(Command::Restart(done)) => supervisor.restart(done),
                None => break,
            },
            Some(ended) = supervisor.tasks.join_next_with_id() => supervisor.ended(ended),
            _ = rolling_poll.tick(), if supervisor.rolling.is_some() => supervisor.roll(),
        }
    }
    supervisor.end_rolling();
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

    fn restart(&mut self, done: oneshot::Sender<RestartOutcome>) {
        if self.shutting_down {
            let _ = done.send(RestartOutcome::Interrupted { replaced: 0 });
            return;
        }
        if let Some(rolling) = &mut self.rolling {
            rolling.waiters.push(done);
            return;
        }
        let old = self
            .slots
            .iter()
            .filter(|(_, slot)| !slot.leaving)
            .map(|(id, _)| *id)
            .collect();
        self.rolling = Some(Rolling {
            old,
            surge: None,
            replaced: 0,
            waiters: vec![done],
        });
        self.roll();
    }

    /// One step of the rolling restart: once the fresh replica is ready an old one drains,
    /// and the next fresh replica starts.
    fn roll(&mut self) {
        let Some(mut rolling) = self.rolling.take() else {
            return;
        };
        if let Some(surge) = rolling.surge {
            if !self.slots.contains_key(&surge) {
                // Its task ended (it cannot, short of a shutdown): start another.
                rolling.surge = None;
            } else if self.state(surge) == Some(ReplicaState::Ready) {
                rolling.surge = None;
                self.prune(&mut rolling.old);
                if let Some(old) = rolling.old.pop_front() {
                    if let Some(slot) = self.slots.get_mut(&old) {
                        slot.leaving = true;
                        raise(&slot.stop, Stop::Remove);
                    }
                    rolling.replaced += 1;
                    self.shared.hooks.on_event(ReplicaEvent::Replaced {
                        replica: old,
                        by: surge,
                    });
                }
            }
        }
        if rolling.surge.is_none() {
            self.prune(&mut rolling.old);
            if rolling.old.is_empty() {
                for done in rolling.waiters {
                    let _ = done.send(RestartOutcome::Done {
                        replaced: rolling.replaced,
                    });
                }
                // Counts may be off by the surge replica that was just promoted.
                self.reconcile();
                return;
            }
            rolling.surge = self.start();
        }
        self.rolling = Some(rolling);
    }

    /// Drops from the front of `old` the replicas no longer staying (a scale-down may have
    /// removed some), so that its front is the next to replace.
    fn prune(&self, old: &mut VecDeque<u32>) {
        while let Some(id) = old.front() {
            if self.slots.get(id).is_some_and(|slot| !slot.leaving) {
                return;
            }
            old.pop_front();
        }
    }

    fn state(&self, replica: u32) -> Option<ReplicaState> {
        self.shared
            .table()
            .replicas
            .get(&replica)
            .map(|replica| replica.state)
    }

    /// Ends a rolling restart early (shutdown); its waiters learn how far it got.
    fn end_rolling(&mut self) {
        if let Some(rolling) = self.rolling.take() {
            for done in rolling.waiters {
                let _ = done.send(RestartOutcome::Interrupted {
                    replaced: rolling.replaced,
                });
            }
        }
    }

    fn shutdown(&mut self, done: oneshot::Sender<()>) {
        self.end_rolling();
        self.shutting_down = true;
        self.desired = 0;
        self.stop_all(Stop::Shutdown);
        self.waiters.push(done);
        self.answer_waiters();
    }

    /// Starts or chooses replicas to leave until the replicas not leaving are `desired`.
    fn reconcile(&mut self) {
        // A rolling restart's fresh replica is extra until it takes an old one's place.
        let surge = self.rolling.as_ref().and_then(|rolling| rolling.surge);
        let staying: Vec<u32> = self
            .slots
            .iter()
            .filter(|(id, slot)| !slot.leaving && Some(**id) != surge)
            .map(|(id, _)| *id)
            .collect();
        let desired = self.desired as usize;
        if staying.len() < desired {
            for _ in staying.len()..desired {
                let _ = self.start();
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

    /// Starts a replica with the smallest number not in use, and returns that number.
    fn start(&mut self) -> Option<u32> {
        let id = (0u32..).find(|id| !self.slots.contains_key(id))?;
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
        Some(id)
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

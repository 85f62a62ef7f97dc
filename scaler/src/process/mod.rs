//! The actuator of `kind = "process"`: each replica is a child process on a free loopback
//! port, health-checked, restarted with backoff when it crashes, drained before it stops.
//!
//! Layout:
//! - `supervisor`: the one task that owns the replica set and reconciles it with the
//!   desired count.
//! - `replica`: the task of one replica, from start to stop, restarts included; it alone
//!   reports that replica's events, so they arrive in order.
//! - `spawn`: finding the program and forking it from a dedicated thread (see there why).
//! - `probe`: the HTTP readiness probe.
//! - `output`: worker stdout/stderr into the log rings.
//! - `group`: signals to a worker's process group.
//! - `ports`: free loopback ports.

mod group;
mod output;
mod ports;
mod probe;
mod replica;
mod spawn;
mod supervisor;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, oneshot};

use crate::actuator::{Actuator, Hooks, Replica, RestartOutcome};
use crate::logs::{LogBook, LogLine};
use group::Group;
use supervisor::Command;

/// How replicas of one endpoint are run.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcessSpec {
    /// The endpoint's id, for logs.
    pub endpoint: String,
    /// Program and arguments. In every element `{port}` becomes the replica's port and
    /// `{replica}` its number. A bare program name is looked up on `PATH`, then beside
    /// Portico's own executable.
    pub command: Vec<String>,
    /// Added to Portico's environment (nothing else is set).
    pub env: Vec<(String, String)>,
    /// Probed with `GET` until it answers 200.
    pub health_path: String,
    /// A replica not ready this long after it started is killed and restarted.
    pub startup_timeout: Duration,
    /// The longest a draining replica waits for its requests in flight before SIGTERM.
    pub drain_grace: Duration,
    /// From SIGTERM to SIGKILL.
    pub stop_timeout: Duration,
    /// Wait before the first restart after a crash; it doubles with each crash in a row.
    pub restart_backoff: Duration,
    /// The longest wait before a restart.
    pub restart_backoff_max: Duration,
    /// Output lines kept per replica.
    pub log_lines: usize,
    /// Output bytes kept per replica.
    pub log_bytes: usize,
}

impl ProcessSpec {
    /// A spec with the defaults: 10 s stop timeout, restarts after 0.5 s doubling up to
    /// 30 s, 1000 lines and 1 MiB of output kept per replica.
    pub fn new(
        endpoint: String,
        command: Vec<String>,
        env: Vec<(String, String)>,
        health_path: String,
        startup_timeout: Duration,
        drain_grace: Duration,
    ) -> ProcessSpec {
        ProcessSpec {
            endpoint,
            command,
            env,
            health_path,
            startup_timeout,
            drain_grace,
            stop_timeout: Duration::from_secs(10),
            restart_backoff: Duration::from_millis(500),
            restart_backoff_max: Duration::from_secs(30),
            log_lines: 1000,
            log_bytes: 1 << 20,
        }
    }
}

/// Runs an endpoint's replicas as child processes of Portico.
///
/// Every worker leads its own process group, which is signalled as a whole; where util-linux
/// `setpriv` exists workers also get SIGKILL if Portico dies. Dropping the actuator kills
/// every group at once.
pub struct ProcessActuator {
    shared: Arc<Shared>,
    commands: mpsc::UnboundedSender<Command>,
}

impl ProcessActuator {
    /// Starts the actuator's supervisor on the current tokio runtime (which must have I/O
    /// and time enabled) with no replica; [`Actuator::set_desired`] asks for some.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(spec: ProcessSpec, hooks: Arc<dyn Hooks>) -> Arc<ProcessActuator> {
        let shared = Arc::new(Shared {
            logs: LogBook::new(spec.log_lines, spec.log_bytes),
            spec,
            hooks,
            table: Mutex::new(Table::default()),
        });
        let (commands, inbox) = mpsc::unbounded_channel();
        tokio::spawn(supervisor::run(Arc::clone(&shared), inbox));
        Arc::new(ProcessActuator { shared, commands })
    }

    /// The spec it runs.
    pub fn spec(&self) -> &ProcessSpec {
        &self.shared.spec
    }

    /// The last `lines` output lines of `replica` (of all replicas, merged by time, when
    /// `None`) printed at or after `since`, oldest first. Lines of a replica are kept
    /// across its restarts and after it stopped.
    pub fn logs(
        &self,
        replica: Option<u32>,
        lines: usize,
        since: Option<SystemTime>,
    ) -> Vec<LogLine> {
        self.shared.logs.tail(replica, lines, since)
    }

    /// Every output line of every replica from now on. A receiver more than 1024 lines
    /// behind gets [`broadcast::error::RecvError::Lagged`] and skips ahead.
    pub fn follow(&self) -> broadcast::Receiver<LogLine> {
        self.shared.logs.follow()
    }
}

impl Actuator for ProcessActuator {
    fn logs(&self, replica: Option<u32>, lines: usize, since: Option<SystemTime>) -> Vec<LogLine> {
        ProcessActuator::logs(self, replica, lines, since)
    }

    fn follow(&self) -> Option<broadcast::Receiver<LogLine>> {
        Some(ProcessActuator::follow(self))
    }

    fn set_desired(&self, replicas: u32) {
        // Fails only once the supervisor has ended, when nothing is to start any more.
        let _ = self.commands.send(Command::SetDesired(replicas));
    }

    fn replicas(&self) -> Vec<Replica> {
        self.shared.table().replicas.values().cloned().collect()
    }

    fn restart(&self) -> Pin<Box<dyn Future<Output = RestartOutcome> + Send + '_>> {
        let (done, finished) = oneshot::channel();
        let sent = self.commands.send(Command::Restart(done)).is_ok();
        Box::pin(async move {
            let interrupted = RestartOutcome::Interrupted { replaced: 0 };
            if !sent {
                return interrupted;
            }
            finished.await.unwrap_or(interrupted)
        })
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let (done, finished) = oneshot::channel();
        let sent = self.commands.send(Command::Shutdown(done)).is_ok();
        Box::pin(async move {
            if sent {
                // An error means the supervisor ended, and it ends only once every replica
                // task has.
                let _ = finished.await;
            }
        })
    }
}

impl Drop for ProcessActuator {
    fn drop(&mut self) {
        // Synchronous, so it holds even if the runtime is going away too. The supervisor
        // sees its inbox close and reaps the killed children.
        self.shared.abort();
    }
}

impl fmt::Debug for ProcessActuator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessActuator")
            .field("endpoint", &self.shared.spec.endpoint)
            .field("replicas", &self.shared.table().replicas.len())
            .finish_non_exhaustive()
    }
}

/// What the actuator's tasks share.
pub(crate) struct Shared {
    spec: ProcessSpec,
    hooks: Arc<dyn Hooks>,
    logs: LogBook,
    table: Mutex<Table>,
}

/// Replica snapshots and the process groups alive now.
#[derive(Default)]
struct Table {
    replicas: BTreeMap<u32, Replica>,
    groups: BTreeMap<u32, Group>,
    /// Set once the actuator is dropped: no group may be added afterwards.
    aborted: bool,
}

impl Shared {
    fn table(&self) -> MutexGuard<'_, Table> {
        // Every update is a single insert or field assignment, never left half done, so
        // the table is consistent even after a panic elsewhere.
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Changes the snapshot of `replica`, if it is listed.
    fn update(&self, replica: u32, change: impl FnOnce(&mut Replica)) {
        if let Some(snapshot) = self.table().replicas.get_mut(&replica) {
            change(snapshot);
        }
    }

    /// Records the live group of `replica`; `false` (and nothing recorded) once aborted.
    fn add_group(&self, replica: u32, group: Group) -> bool {
        let mut table = self.table();
        if table.aborted {
            return false;
        }
        table.groups.insert(replica, group);
        true
    }

    fn remove_group(&self, replica: u32) {
        self.table().groups.remove(&replica);
    }

    fn aborted(&self) -> bool {
        self.table().aborted
    }

    /// No group may start from now on; every live one is killed.
    fn abort(&self) {
        let mut table = self.table();
        table.aborted = true;
        for group in table.groups.values() {
            group.kill();
        }
    }

    /// Removes `replica` from the snapshots, killing its group if still recorded (the
    /// replica's task ended without reaping it, e.g. on a panic or runtime shutdown).
    fn forget(&self, replica: u32) {
        let mut table = self.table();
        table.replicas.remove(&replica);
        if let Some(group) = table.groups.remove(&replica) {
            group.kill();
        }
    }
}

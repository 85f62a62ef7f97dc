//! The life of one replica, in one task: start, probe, serve, and on a crash back off and
//! start again, until the supervisor asks it to stop. Being the only one to report this
//! replica's events, the task reports them in order:
//! `Starting → Ready → Draining → Stopped`, or `Starting → Crashed → Starting …`, with
//! `Stopped` as the last event whenever it leaves.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::process::Child;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::group::Group;
use super::spawn::{self, Launch};
use super::{Shared, output, ports, probe};
use crate::actuator::{ReplicaEvent, ReplicaState};

/// A replica ready this long before it crashed restarts after the first backoff again.
const BACKOFF_RESET: Duration = Duration::from_secs(60);
/// How often a draining replica's requests in flight are counted.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// How long the last output of an exited worker may take to reach its log ring (pipes
/// still held by an escaped grandchild never close).
const OUTPUT_GRACE: Duration = Duration::from_millis(200);

/// What the supervisor wants of a replica. Ordered: it is only ever raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Stop {
    /// Keep running.
    Run,
    /// Scale-down: drain if ready, kill if starting, forget if failed.
    Remove,
    /// Shutdown: SIGTERM, then SIGKILL after the stop timeout; no drain wait.
    Shutdown,
    /// The actuator was dropped: SIGKILL now.
    Abort,
}

/// Runs replica `id` until it is stopped; returns `id`.
pub(super) async fn run(shared: Arc<Shared>, id: u32, stop: watch::Receiver<Stop>) -> u32 {
    // However this task ends, cancelled with its runtime included, the replica leaves the
    // table and its group, if still alive, is killed.
    let _leave = Leave {
        shared: Arc::clone(&shared),
        id,
    };
    let mut life = Life {
        shared,
        id,
        stop,
        restarts: 0,
        backoff: Duration::ZERO,
    };
    life.backoff = life.shared.spec.restart_backoff;
    life.live().await;
    life.shared.forget(id);
    life.emit(ReplicaEvent::Stopped { replica: id });
    tracing::info!(endpoint = %life.shared.spec.endpoint, replica = id, "replica stopped");
    id
}

/// Forgets a replica when dropped.
struct Leave {
    shared: Arc<Shared>,
    id: u32,
}

impl Drop for Leave {
    fn drop(&mut self) {
        self.shared.forget(self.id);
    }
}

/// How one run of the process ended.
enum Ended {
    /// Asked to stop, and stopped.
    Stopped,
    /// Ended on its own (or never became ready); restart it.
    Crashed {
        reason: String,
        /// How long it had been ready (zero if it never was).
        ready_for: Duration,
    },
}

/// What woke a replica waiting on its process.
enum Wake {
    Stop(Stop),
    Exited(io::Result<ExitStatus>),
    Ready,
    TimedOut,
}

struct Life {
    shared: Arc<Shared>,
    id: u32,
    stop: watch::Receiver<Stop>,
    restarts: u32,
    /// The wait before the next restart.
    backoff: Duration,
}

/// One running process of the replica.
struct Run {
    child: Child,
    group: Group,
    readers: Vec<JoinHandle<()>>,
}

impl Life {
    async fn live(&mut self) {
        loop {
            let (reason, ready_for) = match self.run_once().await {
                Ended::Stopped => return,
                Ended::Crashed { reason, ready_for } => (reason, ready_for),
            };
            // The actuator was dropped and killed it: not a crash.
            if self.shared.aborted() {
                return;
            }
            if ready_for >= BACKOFF_RESET {
                self.backoff = self.shared.spec.restart_backoff;
            }
            let restart_in = self.backoff;
            self.backoff = (self.backoff * 2).min(self.shared.spec.restart_backoff_max);
            self.shared.update(self.id, |replica| {
                replica.state = ReplicaState::Failed;
                replica.address = None;
                replica.pid = None;
            });
            tracing::warn!(endpoint = %self.shared.spec.endpoint, replica = self.id, reason, restart_in = ?restart_in, "replica crashed");
            self.emit(ReplicaEvent::Crashed {
                replica: self.id,
                reason,
                restart_in,
            });
            tokio::select! {
                () = tokio::time::sleep(restart_in) => {}
                // Failed replicas just go: nothing runs.
                _ = requested(&mut self.stop, Stop::Run) => return,
            }
            self.restarts += 1;
        }
    }

    /// One process, from spawn to exit.
    async fn run_once(&mut self) -> Ended {
        let shared = Arc::clone(&self.shared);
        let spec = &shared.spec;
        let id = self.id;
        let port = match ports::free_port() {
            Ok(port) => port,
            Err(err) => return self.failed_start(None, format!("no free port: {err}")),
        };
        let address = format!("127.0.0.1:{port}");
        let launch = Launch {
            argv: substitute(&spec.command, port, id),
            env: spec.env.clone(),
        };
        let started = Instant::now();
        let started_at = SystemTime::now();
        let restarts = self.restarts;
        self.shared.update(id, |replica| {
            replica.state = ReplicaState::Starting;
            replica.address = Some(address.clone());
            replica.pid = None;
            replica.started_at = started_at;
            replica.ready_at = None;
            replica.restarts = restarts;
        });
        let mut child = match spawn::spawn(launch).await {
            Ok(child) => child,
            Err(err) => return self.failed_start(Some(address), format!("spawn failed: {err}")),
        };
        // `id()` is `Some` until the child has been waited for, which it has not.
        let Some((pid, group)) = child.id().and_then(|pid| Some((pid, Group::led_by(pid)?))) else {
            return self.failed_start(Some(address), "spawn failed: no process id".into());
        };
        if !self.shared.add_group(id, group) {
            // The actuator was dropped while this one was being forked.
            group.kill();
            let _ = child.wait().await;
            return Ended::Stopped;
        }
        let readers = output::capture(&mut child, id, &self.shared);
        let mut run = Run {
            child,
            group,
            readers,
        };
        self.shared.update(id, |replica| replica.pid = Some(pid));
        tracing::info!(endpoint = %spec.endpoint, replica = id, address, pid, "replica starting");
        self.emit(ReplicaEvent::Starting {
            replica: id,
            address: address.clone(),
            pid: Some(pid),
        });

        // Starting: wait for the first 200, an exit, the startup timeout or a stop.
        let probe_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let wake = tokio::select! {
            biased;
            stop = requested(&mut self.stop, Stop::Run) => Wake::Stop(stop),
            status = run.child.wait() => Wake::Exited(status),
            () = probe::until_ready(probe_addr, &spec.health_path) => Wake::Ready,
            () = tokio::time::sleep_until((started + spec.startup_timeout).into()) => Wake::TimedOut,
        };
        match wake {
            Wake::Ready => {}
            Wake::Stop(stop) => {
                // Nothing is in flight on a replica that was never ready.
                self.stop_process(&mut run, stop == Stop::Shutdown).await;
                return Ended::Stopped;
            }
            Wake::Exited(status) => {
                self.reaped(run).await;
                return crashed(describe(status), Duration::ZERO);
            }
            Wake::TimedOut => {
                run.group.kill();
                let _ = run.child.wait().await;
                self.reaped(run).await;
                return crashed(
                    format!("not ready after {} s", seconds(spec.startup_timeout)),
                    Duration::ZERO,
                );
            }
        }

        // Ready.
        let startup = started.elapsed();
        let ready = Instant::now();
        let ready_at = SystemTime::now();
        self.shared.update(id, |replica| {
            replica.state = ReplicaState::Ready;
            replica.ready_at = Some(ready_at);
        });
        tracing::info!(endpoint = %spec.endpoint, replica = id, address, startup = ?startup, "replica ready");
        self.emit(ReplicaEvent::Ready {
            replica: id,
            address,
            startup,
        });
        let wake = tokio::select! {
            biased;
            stop = requested(&mut self.stop, Stop::Run) => Wake::Stop(stop),
            status = run.child.wait() => Wake::Exited(status),
        };
        let stop = match wake {
            Wake::Stop(stop) => stop,
            Wake::Exited(status) => {
                self.reaped(run).await;
                return crashed(describe(status), ready.elapsed());
            }
            // Not produced by this `select!`.
            Wake::Ready | Wake::TimedOut => Stop::Abort,
        };

        // Leaving.
        if stop < Stop::Abort {
            self.shared
                .update(id, |replica| replica.state = ReplicaState::Draining);
            self.emit(ReplicaEvent::Draining { replica: id });
        }
        let stop = if stop == Stop::Remove {
            match self.drain(&mut run).await {
                Some(stop) => stop,
                // It exited while draining: it is gone, as asked.
                None => {
                    self.reaped(run).await;
                    return Ended::Stopped;
                }
            }
        } else {
            stop
        };
        self.stop_process(&mut run, stop < Stop::Abort).await;
        Ended::Stopped
    }

    /// Waits until nothing is in flight on the replica or the drain grace has passed;
    /// returns the stop order then (raised if a shutdown came meanwhile), or `None` if the
    /// process exited meanwhile.
    async fn drain(&mut self, run: &mut Run) -> Option<Stop> {
        let grace_end = Instant::now() + self.shared.spec.drain_grace;
        loop {
            if self.shared.hooks.inflight(self.id) == 0 {
                return Some(Stop::Remove);
            }
            let now = Instant::now();
            if now >= grace_end {
                tracing::info!(endpoint = %self.shared.spec.endpoint, replica = self.id, "drain grace over with requests in flight");
                return Some(Stop::Remove);
            }
            tokio::select! {
                biased;
                stop = requested(&mut self.stop, Stop::Remove) => return Some(stop),
                _ = run.child.wait() => return None,
                () = tokio::time::sleep(DRAIN_POLL.min(grace_end - now)) => {}
            }
        }
    }

    /// Stops the process group: SIGTERM and up to the stop timeout for it to exit (when
    /// `graceful`), then SIGKILL; returns once the worker is reaped.
    async fn stop_process(&mut self, run: &mut Run, graceful: bool) {
        if graceful {
            run.group.terminate();
            tokio::select! {
                biased;
                _ = run.child.wait() => {}
                () = tokio::time::sleep(self.shared.spec.stop_timeout) => {
                    tracing::warn!(endpoint = %self.shared.spec.endpoint, replica = self.id, "worker ignored SIGTERM; killing it");
                }
                // Dropped meanwhile: no more waiting.
                _ = requested(&mut self.stop, Stop::Shutdown) => {}
            }
        }
        run.group.kill();
        let _ = run.child.wait().await;
        self.reap_output(run).await;
        self.shared.remove_group(self.id);
    }

    /// After the worker exited on its own: kills what is left of its group, collects its
    /// last output.
    async fn reaped(&self, mut run: Run) {
        run.group.kill();
        self.reap_output(&mut run).await;
        self.shared.remove_group(self.id);
    }

    /// Gives the output readers a moment to store the last lines.
    async fn reap_output(&self, run: &mut Run) {
        let deadline = tokio::time::Instant::now() + OUTPUT_GRACE;
        for reader in &mut run.readers {
            if tokio::time::timeout_at(deadline, &mut *reader)
                .await
                .is_err()
            {
                reader.abort();
            }
        }
    }

    /// A run that never got a process: reported as `Starting` then `Crashed`, so every
    /// crash follows a start.
    fn failed_start(&self, address: Option<String>, reason: String) -> Ended {
        self.emit(ReplicaEvent::Starting {
            replica: self.id,
            address: address.unwrap_or_default(),
            pid: None,
        });
        crashed(reason, Duration::ZERO)
    }

    fn emit(&self, event: ReplicaEvent) {
        self.shared.hooks.on_event(event);
    }
}

fn crashed(reason: String, ready_for: Duration) -> Ended {
    Ended::Crashed { reason, ready_for }
}

/// Waits until the stop order is above `above`, and returns it. A supervisor gone counts
/// as `Abort`.
async fn requested(stop: &mut watch::Receiver<Stop>, above: Stop) -> Stop {
    match stop.wait_for(|stop| *stop > above).await {
        Ok(stop) => *stop,
        Err(_) => Stop::Abort,
    }
}

/// `command` with `{port}` and `{replica}` replaced in every element.
pub(super) fn substitute(command: &[String], port: u16, replica: u32) -> Vec<String> {
    let (port, replica) = (port.to_string(), replica.to_string());
    command
        .iter()
        .map(|arg| arg.replace("{port}", &port).replace("{replica}", &replica))
        .collect()
}

/// `exit status N` or `killed by signal N`.
fn describe(status: io::Result<ExitStatus>) -> String {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("exit status {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => status.to_string(),
        },
        Err(err) => format!("lost track of the process: {err}"),
    }
}

/// Whole seconds as `600`, others as `0.5`.
fn seconds(duration: Duration) -> String {
    if duration.subsec_nanos() == 0 {
        duration.as_secs().to_string()
    } else {
        format!("{:.1}", duration.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both placeholders, anywhere and repeated, in every element.
    #[test]
    fn substitutes_placeholders() {
        let command = ["w", "--port={port}", "{replica}-{replica}", "plain"].map(String::from);
        assert_eq!(
            substitute(&command, 8123, 2),
            ["w", "--port=8123", "2-2", "plain"]
        );
    }

    /// Exit codes and signals read as the events report them.
    #[test]
    fn describes_exits() {
        assert_eq!(describe(Ok(ExitStatus::from_raw(3 << 8))), "exit status 3");
        assert_eq!(describe(Ok(ExitStatus::from_raw(9))), "killed by signal 9");
        assert_eq!(seconds(Duration::from_secs(600)), "600");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5");
    }
}

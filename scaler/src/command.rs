//! Actuators for workers another system runs (an orchestrator, a cloud API, a script):
//! [`ExternalActuator`] carries each new count out through a function — for
//! `kind = "command"` a command that tells the other system how many to run.
//!
//! Whenever the desired count differs from the last count the command carried out, the
//! command runs with `{endpoint}` and `{replicas}` replaced, one run at a time: a count
//! asked for while a run is under way is carried out after it. A run that fails (non-zero
//! exit, no exit within [`CommandSpec::timeout`], or no program) is logged with its output
//! and tried again after [`RETRY`]. Replicas are not reported: the gateway discovers the
//! workers (URLs or DNS) and counts the ready ones itself. Shutting down leaves the workers
//! as they are: they belong to the other system.

use std::future::Future;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::actuator::{Actuator, Replica};

/// Wait before a failed run is tried again.
pub const RETRY: Duration = Duration::from_secs(5);
/// Most bytes of a failed run's output kept for the log.
const OUTPUT_LOGGED: usize = 2048;

/// What runs the scale command of one endpoint (`kind = "command"`).
#[derive(Debug, Clone)]
pub struct CommandSpec {
    /// The endpoint (`{endpoint}`).
    pub endpoint: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Extra environment variables.
    pub env: Vec<(String, String)>,
    /// The longest one run may take before it is killed and counted as failed.
    pub timeout: Duration,
}

/// Carries out one count in the other system; whether it succeeded.
pub type Apply = Arc<dyn Fn(u32) -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// An actuator for workers another system runs: `apply` carries out each new count, one
/// at a time, retried after [`RETRY`] while it fails.
pub struct ExternalActuator {
    desired: watch::Sender<Option<u32>>,
    /// The count `apply` last carried out.
    applied: watch::Receiver<Option<u32>>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for ExternalActuator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalActuator")
            .field("desired", &*self.desired.borrow())
            .field("applied", &*self.applied.borrow())
            .finish_non_exhaustive()
    }
}

impl ExternalActuator {
    /// Runs `spec`'s command for each new count (see the module's documentation).
    pub fn command(spec: CommandSpec) -> Arc<ExternalActuator> {
        let spec = Arc::new(spec);
        ExternalActuator::start(Arc::new(move |replicas| {
            let spec = Arc::clone(&spec);
            Box::pin(async move { carry_out(&spec, replicas).await })
        }))
    }

    /// Starts the actuator's task on the current runtime. Nothing is applied until the
    /// first [`Actuator::set_desired`].
    pub fn start(apply: Apply) -> Arc<ExternalActuator> {
        let (desired, wanted) = watch::channel(None);
        let (done, applied) = watch::channel(None);
        let task = tokio::spawn(run(apply, wanted, done));
        Arc::new(ExternalActuator {
            desired,
            applied,
            task: Mutex::new(Some(task)),
        })
    }

    /// The count last carried out, if any.
    pub fn applied(&self) -> Option<u32> {
        *self.applied.borrow()
    }
}

impl Actuator for ExternalActuator {
    fn set_desired(&self, replicas: u32) {
        self.desired.send_if_modified(|desired| {
            let changed = *desired != Some(replicas);
            *desired = Some(replicas);
            changed
        });
    }

    fn replicas(&self) -> Vec<Replica> {
        Vec::new()
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        Box::pin(async move {
            if let Some(task) = task {
                task.abort();
                let _ = task.await;
            }
        })
    }
}

async fn run(
    apply: Apply,
    mut wanted: watch::Receiver<Option<u32>>,
    applied: watch::Sender<Option<u32>>,
) {
    loop {
        let target = *wanted.borrow_and_update();
        if let Some(replicas) = target
            && *applied.borrow() != Some(replicas)
        {
            if apply(replicas).await {
                applied.send_replace(Some(replicas));
            } else {
                // A change of mind ends the wait: the new count is tried at once.
                let _ = tokio::time::timeout(RETRY, wanted.changed()).await;
                continue;
            }
        }
        if wanted.changed().await.is_err() {
            return;
        }
    }
}

/// Runs the command once for `replicas`; whether it succeeded.
async fn carry_out(spec: &CommandSpec, replicas: u32) -> bool {
    let args: Vec<String> = spec
        .command
        .iter()
        .map(|arg| {
            arg.replace("{endpoint}", &spec.endpoint)
                .replace("{replicas}", &replicas.to_string())
        })
        .collect();
    let Some((program, rest)) = args.split_first() else {
        return false;
    };
    let mut command = Command::new(program);
    command
        .args(rest)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => {
            tracing::warn!(endpoint = %spec.endpoint, replicas, program, error = %err, "scale command could not start");
            return false;
        }
    };
    match tokio::time::timeout(spec.timeout, child.wait_with_output()).await {
        Ok(Ok(output)) if output.status.success() => {
            tracing::info!(endpoint = %spec.endpoint, replicas, "scale command done");
            true
        }
        Ok(Ok(output)) => {
            let mut text = String::from_utf8_lossy(&output.stderr).into_owned();
            if text.trim().is_empty() {
                text = String::from_utf8_lossy(&output.stdout).into_owned();
            }
            text.truncate(floor_char_boundary(&text, OUTPUT_LOGGED));
            tracing::warn!(
                endpoint = %spec.endpoint,
                replicas,
                status = %output.status,
                output = text.trim(),
                "scale command failed; trying again in {} s",
                RETRY.as_secs()
            );
            false
        }
        Ok(Err(err)) => {
            tracing::warn!(endpoint = %spec.endpoint, replicas, error = %err, "scale command failed");
            false
        }
        Err(_) => {
            tracing::warn!(
                endpoint = %spec.endpoint,
                replicas,
                "scale command did not finish within {} s; killed",
                spec.timeout.as_secs()
            );
            false
        }
    }
}

fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|i| text.is_char_boundary(*i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(dir: &std::path::Path, script: &str) -> CommandSpec {
        let path = dir.join("scale.sh");
        std::fs::write(&path, script).unwrap();
        CommandSpec {
            endpoint: "chat".into(),
            command: vec![
                "sh".into(),
                path.display().to_string(),
                "{endpoint}".into(),
                "{replicas}".into(),
            ],
            env: vec![("LOG".into(), dir.join("log").display().to_string())],
            timeout: Duration::from_secs(10),
        }
    }

    async fn applied(actuator: &ExternalActuator, replicas: u32) {
        let mut applied = actuator.applied.clone();
        tokio::time::timeout(
            Duration::from_secs(10),
            applied.wait_for(|a| *a == Some(replicas)),
        )
        .await
        .expect("carried out in time")
        .expect("the task runs");
    }

    /// Each new count runs the command once with the placeholders replaced; an unchanged
    /// count does not run it again.
    #[tokio::test]
    async fn runs_once_per_new_count() {
        let dir = tempfile::tempdir().unwrap();
        let actuator = ExternalActuator::command(spec(dir.path(), "echo \"$1 $2\" >> \"$LOG\"\n"));
        actuator.set_desired(2);
        applied(&actuator, 2).await;
        actuator.set_desired(2);
        actuator.set_desired(0);
        applied(&actuator, 0).await;
        actuator.shutdown().await;
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert_eq!(log, "chat 2\nchat 0\n");
    }

    /// A failing run is tried again, and a new count asked meanwhile wins.
    #[tokio::test]
    async fn a_failed_run_is_retried_with_the_latest_count() {
        let dir = tempfile::tempdir().unwrap();
        let script = "echo \"$2\" >> \"$LOG\"\n[ \"$2\" = 3 ] || { echo refused >&2; exit 1; }\n";
        let actuator = ExternalActuator::command(spec(dir.path(), script));
        actuator.set_desired(1);
        // The run for 1 fails; 3 is asked before the retry and carried out at once.
        tokio::time::timeout(Duration::from_secs(10), async {
            while !dir.path().join("log").exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        actuator.set_desired(3);
        applied(&actuator, 3).await;
        actuator.shutdown().await;
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(log.starts_with("1\n") && log.ends_with("3\n"), "{log:?}");
    }
}

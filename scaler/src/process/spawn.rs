//! Starting worker processes: finding the program, wrapping it so it dies with Portico, and
//! forking it from one dedicated thread.
//
// Why a thread of its own. A worker must not outlive Portico, even when Portico is killed
// with SIGKILL and has no chance to clean up. Linux offers PR_SET_PDEATHSIG: the child gets
// a signal when its parent dies. Setting it needs code between fork and exec, which in Rust
// means `pre_exec`, which is `unsafe` (forbidden in this workspace). util-linux's
// `setpriv --pdeathsig KILL -- program…` does it for us and then execs the program, so the
// worker keeps setpriv's pid and is still the leader of the process group we made.
//
// But "parent" here is the *thread* that forked, not the process: the signal fires when
// that thread exits. Tokio's worker and blocking-pool threads come and go (an idle blocking
// thread exits after 10 s), and a worker forked from one would be killed when it does. So
// every worker is forked from one std thread that lives as long as the process: it is
// started once, on first use, and its channel's sender sits in a static, so its loop never
// ends. It enters the requesting task's runtime for the spawn, so the child's pipes and
// reaping belong to that runtime.
//
// What remains: setpriv sets the signal only after fork, so a Portico killed in that
// instant leaves the child; the signal reaches the worker, not processes the worker
// started (those die with the group when Portico stops normally).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;

use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use super::group::Group;

/// A program to start and what to give it.
#[derive(Debug, Clone)]
pub(super) struct Launch {
    /// Program and arguments, placeholders already replaced.
    pub(super) argv: Vec<String>,
    /// Added to Portico's own environment.
    pub(super) env: Vec<(String, String)>,
}

/// Why a worker could not be started.
#[derive(Debug, thiserror::Error)]
pub(super) enum SpawnError {
    /// The command has no program.
    #[error("empty command")]
    Empty,
    /// A bare program name found neither on `PATH` nor beside Portico's executable.
    #[error("{program}: not found on PATH or in {beside}")]
    NotOnPath {
        /// The name looked for.
        program: String,
        /// The directory of Portico's executable.
        beside: String,
    },
    /// A program given by path that is not an executable file.
    #[error("{program}: no executable file there")]
    NotExecutable {
        /// The path given.
        program: String,
    },
    /// The operating system refused.
    #[error("{program}: {source}")]
    Os {
        /// The program started.
        program: String,
        /// What the system said.
        source: io::Error,
    },
    /// The spawner thread could not be started, or panicked.
    #[error("{0}")]
    Spawner(&'static str),
}

/// Starts `launch` as the leader of a new process group, stdin closed, stdout and stderr
/// piped, killed if the returned child is dropped (and with the whole process, where
/// `setpriv` is available).
pub(super) async fn spawn(launch: Launch) -> Result<Child, SpawnError> {
    let (reply, answer) = oneshot::channel();
    let request = Request {
        launch,
        runtime: Handle::current(),
        reply,
    };
    spawner()?
        .send(request)
        .map_err(|_| SpawnError::Spawner("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| SpawnError::Spawner("the spawner thread dropped the request"))?
}

/// One request to the spawner thread.
struct Request {
    launch: Launch,
    runtime: Handle,
    reply: oneshot::Sender<Result<Child, SpawnError>>,
}

/// The spawner thread's inbox; `None` if the thread could not be started.
static SPAWNER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();

fn spawner() -> Result<&'static mpsc::Sender<Request>, SpawnError> {
    SPAWNER
        .get_or_init(|| {
            let (inbox, requests) = mpsc::channel();
            match thread::Builder::new()
                .name("portico-spawner".into())
                .spawn(move || serve(requests))
            {
                Ok(_) => Some(inbox),
                Err(err) => {
                    tracing::error!(error = %err, "cannot start the worker spawner thread");
                    None
                }
            }
        })
        .as_ref()
        .ok_or(SpawnError::Spawner(
            "the spawner thread could not be started",
        ))
}

/// The spawner thread's loop. It never returns: the sender lives in a static.
fn serve(requests: mpsc::Receiver<Request>) {
    let setpriv = pdeathsig_wrapper();
    for Request {
        launch,
        runtime,
        reply,
    } in requests
    {
        let _entered = runtime.enter();
        // A panic inside tokio (a runtime without I/O, say) must not end this thread:
        // every later worker would fail to start.
        let result = catch_unwind(AssertUnwindSafe(|| start(&launch, setpriv.as_deref())))
            .unwrap_or(Err(SpawnError::Spawner("spawning panicked")));
        if let Err(Ok(child)) = reply.send(result) {
            // The replica stopped waiting: leave nothing behind.
            if let Some(group) = child.id().and_then(Group::led_by) {
                group.kill();
            }
            drop(child);
        }
    }
}

/// Forks and execs one worker (on the spawner thread, inside the caller's runtime).
fn start(launch: &Launch, setpriv: Option<&Path>) -> Result<Child, SpawnError> {
    let (program, args) = launch.argv.split_first().ok_or(SpawnError::Empty)?;
    let path = locate(program, &launch.env)?;
    let mut command = match setpriv {
        Some(setpriv) => {
            let mut command = Command::new(setpriv);
            command.args(["--pdeathsig", "KILL", "--"]).arg(&path);
            command
        }
        None => Command::new(&path),
    };
    command
        .args(args)
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command.spawn().map_err(|source| SpawnError::Os {
        program: program.clone(),
        source,
    })
}

/// Where `program` is: a path as given, or a bare name looked up on `PATH` (the worker's
/// own if `env` sets one) and then beside Portico's executable, the way git finds its
/// helpers, so a `fakeworker` built next to `portico` needs no `PATH` change.
fn locate(program: &str, env: &[(String, String)]) -> Result<PathBuf, SpawnError> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(SpawnError::NotExecutable {
                program: program.to_string(),
            })
        };
    }
    let path_var = env
        .iter()
        .rev()
        .find(|(key, _)| key == "PATH")
        .map(|(_, value)| OsString::from(value))
        .or_else(|| std::env::var_os("PATH"));
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    resolve(program, path_var.as_deref(), beside.as_deref()).ok_or_else(|| SpawnError::NotOnPath {
        program: program.to_string(),
        beside: beside.map_or_else(
            || "Portico's directory".to_string(),
            |dir| dir.display().to_string(),
        ),
    })
}

/// The first executable `dir/name` over the directories of `path_var`, then `beside`.
fn resolve(name: &str, path_var: Option<&OsStr>, beside: Option<&Path>) -> Option<PathBuf> {
    let on_path = path_var
        .into_iter()
        .flat_map(std::env::split_paths)
        // An empty entry means the current directory, as in a shell.
        .map(|dir| {
            if dir.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                dir
            }
        });
    on_path
        .chain(beside.map(Path::to_path_buf))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// `setpriv`, if it is there and knows `--pdeathsig` (util-linux 2.33 and later); warns
/// once otherwise.
fn pdeathsig_wrapper() -> Option<PathBuf> {
    let found = ["/usr/bin/setpriv", "/bin/setpriv"]
        .into_iter()
        .map(PathBuf::from)
        .find(|path| is_executable(path))
        .or_else(|| resolve("setpriv", std::env::var_os("PATH").as_deref(), None));
    let Some(setpriv) = found else {
        tracing::warn!(
            "setpriv (util-linux) not found: workers are not killed if Portico is killed with SIGKILL"
        );
        return None;
    };
    // An older setpriv would reject the option and every worker would exit at once.
    let knows_pdeathsig = std::process::Command::new(&setpriv)
        .arg("--help")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("--pdeathsig"));
    if knows_pdeathsig {
        Some(setpriv)
    } else {
        tracing::warn!(
            setpriv = %setpriv.display(),
            "setpriv has no --pdeathsig: workers are not killed if Portico is killed with SIGKILL"
        );
        None
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn executable(dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        fs::write(&path, "#!/bin/sh\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// PATH comes first, then the executable's directory; non-executables are skipped.
    #[test]
    fn resolve_prefers_path_then_beside() {
        let root = std::env::temp_dir().join(format!("scaler-resolve-{}", std::process::id()));
        let (a, b, exe) = (root.join("a"), root.join("b"), root.join("exe"));
        for dir in [&a, &b, &exe] {
            fs::create_dir_all(dir).expect("mkdir");
        }
        fs::write(a.join("tool"), "not executable").expect("write");
        let in_b = executable(&b, "tool");
        let beside = executable(&exe, "helper");
        let path_var = std::env::join_paths([&a, &b]).expect("join");

        assert_eq!(resolve("tool", Some(&path_var), Some(&exe)), Some(in_b));
        assert_eq!(resolve("helper", Some(&path_var), Some(&exe)), Some(beside));
        assert_eq!(resolve("helper", Some(&path_var), None), None);
        assert_eq!(resolve("missing", None, Some(&exe)), None);
        let _ = fs::remove_dir_all(&root);
    }

    /// A path is taken as given; a bare name that is nowhere says where it looked.
    #[test]
    fn locate_errors() {
        assert!(matches!(
            locate("/nonexistent/worker", &[]),
            Err(SpawnError::NotExecutable { .. })
        ));
        let err = locate("portico-no-such-program", &[]).expect_err("not found");
        assert!(
            err.to_string()
                .starts_with("portico-no-such-program: not found on PATH or in /"),
            "{err}"
        );
        assert_eq!(
            locate("/bin/sh", &[]).expect("sh"),
            PathBuf::from("/bin/sh")
        );
    }
}

//! The process actuator against real child processes (Python and sh workers).

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use scaler::{Actuator, LogStream, ReplicaEvent, ReplicaState, RestartOutcome};
use support::*;

fn is_ready(e: &ReplicaEvent) -> bool {
    matches!(e, ReplicaEvent::Ready { .. })
}

fn is_stopped(e: &ReplicaEvent) -> bool {
    matches!(e, ReplicaEvent::Stopped { .. })
}

/// A worker gets its port, number and environment, is ready on its first 200, and its
/// stdout and stderr land in its log ring and reach followers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_with_placeholders_env_and_logs() {
    let mut spec = spec(worker(0.0));
    spec.env = vec![("WORKER_GREETING".into(), "hello there".into())];
    let (actuator, hooks) = start(spec);
    let mut follow = actuator.follow();
    actuator.set_desired(1);
    hooks.wait_count("ready", 1, is_ready).await;

    let events = hooks.events();
    let address = address_of(&events, 0);
    let port: u16 = address
        .strip_prefix("127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad address {address}"));
    let replicas = actuator.replicas();
    assert_eq!(replicas.len(), 1);
    let replica = &replicas[0];
    assert_eq!(replica.id, 0);
    assert_eq!(replica.state, ReplicaState::Ready);
    assert_eq!(replica.address.as_deref(), Some(address.as_str()));
    assert_eq!(replica.pid, Some(pid_of(&events, 0)));
    assert!(replica.ready_at.is_some_and(|at| at >= replica.started_at));
    assert_eq!(replica.restarts, 0);

    let greeting = format!("worker replica=0 port={port} greeting=hello there");
    eventually("both lines in the ring", || {
        actuator.logs(Some(0), 10, None).len() >= 2
    })
    .await;
    let lines = actuator.logs(None, 10, None);
    assert!(
        lines
            .iter()
            .any(|l| l.stream == LogStream::Stdout && l.text == greeting && l.replica == 0),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.stream == LogStream::Stderr && l.text == "stderr of replica=0"),
        "{lines:#?}"
    );
    let followed = within("a followed line", follow.recv())
        .await
        .expect("follow");
    assert_eq!(followed.replica, 0);
    let newest = lines.last().expect("a line").time;
    assert!(
        actuator
            .logs(None, 10, Some(newest + Duration::from_secs(1)))
            .is_empty()
    );
    assert!(actuator.logs(Some(1), 10, None).is_empty());

    within("shutdown", actuator.shutdown()).await;
    assert_ordered(&hooks.events());
}

/// A slow worker stays starting until it answers; its startup time counts from spawn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_boot_is_ready_when_it_answers() {
    let (actuator, hooks) = start(spec(worker(0.6)));
    actuator.set_desired(1);
    hooks
        .wait_count("starting", 1, |e| {
            matches!(e, ReplicaEvent::Starting { .. })
        })
        .await;
    hooks.wait_count("ready", 1, is_ready).await;
    let startup = hooks
        .events()
        .iter()
        .find_map(|e| match e {
            ReplicaEvent::Ready { startup, .. } => Some(*startup),
            _ => None,
        })
        .expect("ready");
    assert!(startup >= Duration::from_millis(600), "{startup:?}");
    within("shutdown", actuator.shutdown()).await;
    assert_ordered(&hooks.events());
}

/// A worker that exits is reported crashed with its exit status, restarted with a
/// doubling backoff on a fresh run, its restarts counted and its log ring kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_restarts_with_backoff() {
    let (actuator, hooks) = start(spec(sh("echo boom; exit 3")));
    actuator.set_desired(1);
    hooks
        .wait_count("three crashes", 3, |e| {
            matches!(e, ReplicaEvent::Crashed { .. })
        })
        .await;
    let crashes: Vec<(String, Duration)> = hooks
        .events()
        .into_iter()
        .filter_map(|e| match e {
            ReplicaEvent::Crashed {
                replica: 0,
                reason,
                restart_in,
            } => Some((reason, restart_in)),
            _ => None,
        })
        .collect();
    assert_eq!(
        crashes[0],
        ("exit status 3".to_string(), Duration::from_millis(100))
    );
    assert_eq!(
        crashes[1],
        ("exit status 3".to_string(), Duration::from_millis(200))
    );
    assert_eq!(
        crashes[2],
        ("exit status 3".to_string(), Duration::from_millis(400))
    );
    let starts = hooks
        .of(0)
        .iter()
        .filter(|e| matches!(e, ReplicaEvent::Starting { .. }))
        .count();
    assert!(starts >= 3);
    eventually("restarts counted", || {
        actuator.replicas().first().is_some_and(|r| r.restarts >= 2)
    })
    .await;
    eventually("lines of several runs kept", || {
        actuator
            .logs(Some(0), 100, None)
            .iter()
            .filter(|l| l.text == "boom")
            .count()
            >= 3
    })
    .await;
    within("shutdown", actuator.shutdown()).await;
    assert!(actuator.replicas().is_empty());
    assert_ordered(&hooks.events());
}

/// A program that cannot be started is a crash with backoff, not a panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawn_failure_is_a_crash() {
    let (actuator, hooks) = start(spec(vec!["portico-no-such-worker".into(), "{port}".into()]));
    actuator.set_desired(1);
    hooks
        .wait_count("two crashes", 2, |e| {
            matches!(e, ReplicaEvent::Crashed { .. })
        })
        .await;
    let reason = hooks
        .events()
        .into_iter()
        .find_map(|e| match e {
            ReplicaEvent::Crashed { reason, .. } => Some(reason),
            _ => None,
        })
        .expect("crash");
    assert!(
        reason.starts_with("spawn failed: portico-no-such-worker: not found on PATH"),
        "{reason}"
    );
    within("shutdown", actuator.shutdown()).await;
    assert_ordered(&hooks.events());
}

/// A worker not ready within the startup timeout is killed (its group too) and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_timeout_kills_and_restarts() {
    let mut spec = spec(sh("sleep 600 & echo grandchild=$!; exec sleep 600"));
    spec.startup_timeout = Duration::from_millis(400);
    let (actuator, hooks) = start(spec);
    actuator.set_desired(1);
    hooks
        .wait_count("a crash", 1, |e| matches!(e, ReplicaEvent::Crashed { .. }))
        .await;
    let events = hooks.events();
    let crash = events
        .iter()
        .find(|e| matches!(e, ReplicaEvent::Crashed { .. }))
        .expect("crash");
    assert!(
        matches!(crash, ReplicaEvent::Crashed { reason, .. } if reason == "not ready after 0.4 s"),
        "{crash:?}"
    );
    let first_pid = pid_of(&events, 0);
    let grandchild: u32 = actuator
        .logs(Some(0), 10, None)
        .iter()
        .find_map(|l| l.text.strip_prefix("grandchild=")?.parse().ok())
        .expect("grandchild pid printed");
    gone(first_pid).await;
    gone(grandchild).await;
    hooks
        .wait("a second start", |events| {
            events
                .iter()
                .filter(|e| matches!(e, ReplicaEvent::Starting { .. }))
                .count()
                >= 2
        })
        .await;
    within("shutdown", actuator.shutdown()).await;
    assert_ordered(&hooks.events());
}

/// A worker that ignores SIGTERM is killed with SIGKILL after the stop timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ignored_then_killed() {
    let script = format!("trap '' TERM; exec {} -c \"$0\" \"$1\" 0 0", python());
    let mut spec = spec(vec![
        "sh".into(),
        "-c".into(),
        script,
        WORKER.into(),
        "{port}".into(),
    ]);
    spec.stop_timeout = Duration::from_millis(500);
    let (actuator, hooks) = start(spec);
    actuator.set_desired(1);
    hooks.wait_count("ready", 1, is_ready).await;
    let pid = pid_of(&hooks.events(), 0);

    let asked = Instant::now();
    actuator.set_desired(0);
    hooks.wait_count("stopped", 1, is_stopped).await;
    let took = asked.elapsed();
    assert!(took >= Duration::from_millis(500), "stopped after {took:?}");
    assert!(!alive(pid));
    assert!(actuator.replicas().is_empty());
    assert_ordered(&hooks.events());
    let kinds: Vec<_> = hooks.of(0).iter().map(std::mem::discriminant).collect();
    assert_eq!(kinds.len(), 4, "{:#?}", hooks.events());
}

/// Scale up to 3, down to 1: the ready replicas with the fewest requests in flight leave
/// (the highest number among equals), each draining until nothing is in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_up_then_down_drains_first() {
    let (actuator, hooks) = start(spec(worker(0.0)));
    actuator.set_desired(3);
    hooks.wait_count("three ready", 3, is_ready).await;
    let ids: BTreeSet<u32> = actuator.replicas().iter().map(|r| r.id).collect();
    assert_eq!(ids, BTreeSet::from([0, 1, 2]));
    let ports: BTreeSet<String> = (0..3).map(|id| address_of(&hooks.events(), id)).collect();
    assert_eq!(ports.len(), 3, "each replica on its own port");
    eventually("replica 2 greets", || {
        actuator
            .logs(Some(2), 10, None)
            .iter()
            .any(|l| l.text.starts_with("worker replica=2 port="))
    })
    .await;

    hooks.set_inflight(0, 1);
    hooks.set_inflight(1, 5);
    hooks.set_inflight(2, 5);
    actuator.set_desired(1);
    hooks
        .wait_count("two draining", 2, |e| {
            matches!(e, ReplicaEvent::Draining { .. })
        })
        .await;
    let draining: BTreeSet<u32> = hooks
        .events()
        .iter()
        .filter(|e| matches!(e, ReplicaEvent::Draining { .. }))
        .map(ReplicaEvent::replica)
        .collect();
    assert_eq!(draining, BTreeSet::from([0, 2]));

    // The drain keeps asking and keeps waiting while requests are in flight.
    let (asked_0, asked_2) = (hooks.asked(0), hooks.asked(2));
    eventually("the drain polls on", || {
        hooks.asked(0) >= asked_0 + 3 && hooks.asked(2) >= asked_2 + 3
    })
    .await;
    assert!(!hooks.events().iter().any(is_stopped));
    let states: Vec<(u32, ReplicaState)> = actuator
        .replicas()
        .iter()
        .map(|r| (r.id, r.state))
        .collect();
    assert_eq!(
        states,
        [
            (0, ReplicaState::Draining),
            (1, ReplicaState::Ready),
            (2, ReplicaState::Draining)
        ]
    );
    let pids = [pid_of(&hooks.events(), 0), pid_of(&hooks.events(), 2)];

    hooks.set_inflight(0, 0);
    hooks.set_inflight(2, 0);
    hooks.wait_count("two stopped", 2, is_stopped).await;
    for pid in pids {
        gone(pid).await;
    }
    eventually("one left", || actuator.replicas().len() == 1).await;
    assert_eq!(actuator.replicas()[0].id, 1);

    // The smallest free number is used again.
    actuator.set_desired(2);
    hooks.wait_count("four ready", 4, is_ready).await;
    let ids: BTreeSet<u32> = actuator.replicas().iter().map(|r| r.id).collect();
    assert_eq!(ids, BTreeSet::from([0, 1]));

    within("shutdown", actuator.shutdown()).await;
    assert_ordered(&hooks.events());
}

/// A rolling restart replaces each replica by a fresh one, one at a time: the fresh one is
/// ready before the old one drains, so ready replicas never drop below the count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_restart_replaces_one_at_a_time() {
    let (actuator, hooks) = start(spec(worker(0.2)));
    actuator.set_desired(2);
    hooks.wait_count("two ready", 2, is_ready).await;
    let old_pids = [pid_of(&hooks.events(), 0), pid_of(&hooks.events(), 1)];
    let before = hooks.events().len();

    let outcome = within("restart", actuator.restart()).await;
    assert_eq!(outcome, RestartOutcome::Done { replaced: 2 });
    hooks.wait_count("two stopped", 2, is_stopped).await;
    for pid in old_pids {
        gone(pid).await;
    }
    let events = hooks.events()[before..].to_vec();
    // Each replacement: a fresh replica is ready, then an old one is replaced and drains.
    let mut ready = 0;
    let mut replaced = Vec::new();
    for event in &events {
        match event {
            ReplicaEvent::Ready { .. } => ready += 1,
            ReplicaEvent::Replaced { replica, by } => {
                assert!(
                    ready > replaced.len(),
                    "replaced before its successor was ready: {events:#?}"
                );
                replaced.push((*replica, *by));
            }
            _ => {}
        }
    }
    assert_eq!(replaced.len(), 2, "{events:#?}");
    assert_eq!(
        replaced
            .iter()
            .map(|(old, _)| *old)
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([0, 1])
    );
    eventually("two replicas left", || actuator.replicas().len() == 2).await;
    assert!(
        actuator
            .replicas()
            .iter()
            .all(|r| r.state == ReplicaState::Ready)
    );
    let pids: BTreeSet<u32> = actuator.replicas().iter().filter_map(|r| r.pid).collect();
    assert!(
        pids.iter().all(|pid| !old_pids.contains(pid)),
        "{pids:?} {old_pids:?}"
    );

    // Nothing to replace: done at once.
    actuator.set_desired(0);
    hooks.wait_count("four stopped", 4, is_stopped).await;
    eventually("none left", || actuator.replicas().is_empty()).await;
    assert_eq!(
        within("restart of nothing", actuator.restart()).await,
        RestartOutcome::Done { replaced: 0 }
    );
    within("shutdown", actuator.shutdown()).await;
    assert_ordered(&hooks.events());
}

/// A shutdown during a rolling restart interrupts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_interrupts_a_rolling_restart() {
    let (actuator, hooks) = start(spec(worker(1.0)));
    actuator.set_desired(1);
    hooks.wait_count("ready", 1, is_ready).await;
    // The fresh replica needs a second to get ready; the shutdown comes first.
    let restart = actuator.restart();
    let (outcome, ()) = tokio::join!(restart, async {
        hooks
            .wait_count("the fresh replica starts", 2, |e| {
                matches!(e, ReplicaEvent::Starting { .. })
            })
            .await;
        within("shutdown", actuator.shutdown()).await;
    });
    assert_eq!(outcome, RestartOutcome::Interrupted { replaced: 0 });
    assert!(actuator.replicas().is_empty());
}

/// Raising the count while a replica drains lets the drain finish and starts a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_during_drain_starts_another() {
    let (actuator, hooks) = start(spec(worker(0.0)));
    actuator.set_desired(1);
    hooks.wait_count("ready", 1, is_ready).await;
    hooks.set_inflight(0, 2);
    actuator.set_desired(0);
    hooks
        .wait_count("draining", 1, |e| {
            matches!(e, ReplicaEvent::Draining { .. })
        })
        .await;
    actuator.set_desired(1);
    hooks.wait_count("a second ready", 2, is_ready).await;
    assert_ne!(
        address_of(&hooks.events(), 1),
        address_of(&hooks.events(), 0)
    );
    assert!(!hooks.events().iter().any(is_stopped), "the drain goes on");
    hooks.set_inflight(0, 0);
    hooks.wait_count("stopped", 1, is_stopped).await;
    let replicas = actuator.replicas();
    assert_eq!(replicas.len(), 1);
    assert_eq!(
        (replicas[0].id, replicas[0].state),
        (1, ReplicaState::Ready)
    );
    within("shutdown", actuator.shutdown()).await;
    assert_ordered(&hooks.events());
}

/// The drain grace bounds the wait for requests that never finish.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_grace_bounds_the_drain() {
    let mut spec = spec(worker(0.0));
    spec.drain_grace = Duration::from_millis(300);
    let (actuator, hooks) = start(spec);
    actuator.set_desired(1);
    hooks.wait_count("ready", 1, is_ready).await;
    hooks.set_inflight(0, 1);
    let asked = Instant::now();
    actuator.set_desired(0);
    hooks.wait_count("stopped", 1, is_stopped).await;
    assert!(asked.elapsed() >= Duration::from_millis(300));
    assert_ordered(&hooks.events());
}

/// A starting replica chosen to leave is killed at once, without draining.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_replica_removed_at_once() {
    let (actuator, hooks) = start(spec(worker(600.0)));
    actuator.set_desired(1);
    hooks
        .wait_count("starting", 1, |e| {
            matches!(e, ReplicaEvent::Starting { .. })
        })
        .await;
    let pid = pid_of(&hooks.events(), 0);
    actuator.set_desired(0);
    hooks.wait_count("stopped", 1, is_stopped).await;
    gone(pid).await;
    let events = hooks.events();
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, ReplicaEvent::Draining { .. })),
        "{events:#?}"
    );
    assert_ordered(&events);
}

/// A failed replica (waiting for its restart) chosen to leave is just forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_replica_removed_at_once() {
    let mut spec = spec(sh("exit 1"));
    spec.restart_backoff = Duration::from_secs(600);
    let (actuator, hooks) = start(spec);
    actuator.set_desired(1);
    hooks
        .wait_count("crashed", 1, |e| matches!(e, ReplicaEvent::Crashed { .. }))
        .await;
    eventually("failed", || {
        actuator
            .replicas()
            .first()
            .is_some_and(|r| r.state == ReplicaState::Failed && r.pid.is_none())
    })
    .await;
    actuator.set_desired(0);
    hooks.wait_count("stopped", 1, is_stopped).await;
    assert!(actuator.replicas().is_empty());
    assert_ordered(&hooks.events());
}

/// Shutdown stops every replica and every process in its group, then nothing starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_reaps_everything() {
    let script = format!(
        "sleep 600 & echo grandchild=$!; exec {} -c \"$0\" \"$1\" \"$2\" 0",
        python()
    );
    let (actuator, hooks) = start(spec(vec![
        "sh".into(),
        "-c".into(),
        script,
        WORKER.into(),
        "{port}".into(),
        "{replica}".into(),
    ]));
    actuator.set_desired(2);
    hooks.wait_count("two ready", 2, is_ready).await;
    let events = hooks.events();
    let mut pids = vec![pid_of(&events, 0), pid_of(&events, 1)];
    eventually("grandchildren printed", || {
        actuator
            .logs(None, 100, None)
            .iter()
            .filter(|l| l.text.starts_with("grandchild="))
            .count()
            == 2
    })
    .await;
    pids.extend(
        actuator
            .logs(None, 100, None)
            .iter()
            .filter_map(|l| l.text.strip_prefix("grandchild=")?.parse::<u32>().ok()),
    );
    assert!(pids.iter().all(|&pid| alive(pid)));

    within("shutdown", actuator.shutdown()).await;
    for pid in &pids {
        assert!(!alive(*pid), "pid {pid} survived shutdown");
    }
    assert_eq!(hooks.events().iter().filter(|e| is_stopped(e)).count(), 2);
    assert!(actuator.replicas().is_empty());

    // No replica starts afterwards; a second shutdown resolves at once.
    actuator.set_desired(3);
    within("second shutdown", actuator.shutdown()).await;
    assert!(actuator.replicas().is_empty());
    assert_ordered(&hooks.events());
}

/// Dropping the actuator kills its workers' groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_kills_workers() {
    let (actuator, hooks) = start(spec(worker(0.0)));
    actuator.set_desired(2);
    hooks.wait_count("two ready", 2, is_ready).await;
    let events = hooks.events();
    let pids = [pid_of(&events, 0), pid_of(&events, 1)];
    drop(actuator);
    for pid in pids {
        gone(pid).await;
    }
    hooks.wait_count("stopped", 2, is_stopped).await;
    assert!(
        !hooks
            .events()
            .iter()
            .any(|e| matches!(e, ReplicaEvent::Crashed { .. }))
    );
}

/// When the runtime goes away with the actuator still held (a gateway exiting without
/// shutdown), every process of every worker group is killed.
#[test]
fn runtime_shutdown_kills_worker_groups() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let script = format!(
        "sleep 600 & echo grandchild=$!; exec {} -c \"$0\" \"$1\" 0 0",
        python()
    );
    let (actuator, pids) = runtime.block_on(async {
        let (actuator, hooks) = start(spec(vec![
            "sh".into(),
            "-c".into(),
            script,
            WORKER.into(),
            "{port}".into(),
        ]));
        actuator.set_desired(1);
        hooks.wait_count("ready", 1, is_ready).await;
        let mut pids = vec![pid_of(&hooks.events(), 0)];
        eventually("grandchild printed", || {
            actuator
                .logs(Some(0), 10, None)
                .iter()
                .any(|l| l.text.starts_with("grandchild="))
        })
        .await;
        pids.extend(
            actuator
                .logs(Some(0), 10, None)
                .iter()
                .find_map(|l| l.text.strip_prefix("grandchild=")?.parse::<u32>().ok()),
        );
        (actuator, pids)
    });
    assert!(pids.iter().all(|&pid| alive(pid)));
    drop(runtime);
    let start = Instant::now();
    loop {
        let survivors: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
        if survivors.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "outlived the runtime: {survivors:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(actuator.replicas().is_empty());
}

/// Set by `no_orphan_after_parent_sigkill` for the helper process it starts.
const ORPHAN_PIDFILE: &str = "SCALER_TEST_ORPHAN_PIDFILE";

/// Not a check on its own: in the helper process of `no_orphan_after_parent_sigkill` it
/// runs an actuator whose worker writes its pid to a file, then waits to be killed.
#[test]
fn orphan_helper_process() {
    let Some(pidfile) = std::env::var_os(ORPHAN_PIDFILE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut command = sh("echo $$ > \"$0.tmp\" && mv \"$0.tmp\" \"$0\" && exec sleep 600");
        command.push(pidfile.to_string_lossy().into_owned());
        let (actuator, _hooks) = start(spec(command));
        actuator.set_desired(1);
        // Bounded, in case the test that started us is gone.
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
}

/// A worker dies with Portico even when Portico is killed with SIGKILL and cleans up
/// nothing (needs util-linux `setpriv`).
#[test]
fn no_orphan_after_parent_sigkill() {
    let has_setpriv = ["/usr/bin/setpriv", "/bin/setpriv"]
        .iter()
        .any(|p| Path::new(p).exists());
    if !has_setpriv {
        eprintln!("skipped: no setpriv here, so workers outlive a SIGKILLed Portico");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let pidfile = dir.path().join("worker.pid");
    let mut helper = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "orphan_helper_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_PIDFILE, &pidfile)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("helper");
    let start = Instant::now();
    let pid: u32 = loop {
        if let Some(pid) = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break pid;
        }
        if start.elapsed() > DEADLINE {
            let _ = helper.kill();
            panic!("the helper's worker never wrote its pid");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(alive(pid));
    helper.kill().expect("SIGKILL the helper");
    helper.wait().expect("reap the helper");
    let start = Instant::now();
    while alive(pid) {
        assert!(
            start.elapsed() < DEADLINE,
            "worker {pid} outlived its parent"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

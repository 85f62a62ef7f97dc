//! Three `portico` replicas sharing one `redis-server` (`[cluster]`), all real processes on
//! loopback, with process workers (fakeworker) that only the leader runs: demand spread
//! over the replicas is summed like the same demand through one, an order given to one
//! replica holds on all, a follower's wake reaches the leader, a leader killed with
//! SIGKILL is replaced within two leases, and without Redis each replica decides alone.

mod support;

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    RedisServer, TestGateway, admin, endpoint_config, eventually, fakeworker_bin, get, metric,
};

const CHAT: &str = "/project/p1/endpoint/chat";
/// The lease of these tests: a dead leader is replaced within two of them.
const LEASE_SECONDS: u64 = 2;
/// Long enough for a worker process to start and pass its health check.
const READY: Duration = Duration::from_secs(30);

/// A replica's config: endpoint `chat` on fakeworker processes, `scaling` added to its
/// `[endpoint.scaling]`; in the cluster of `redis` as `replica` when given.
fn config(redis: Option<(&RedisServer, &str)>, scaling: &str) -> String {
    let command = serde_json::to_string(&[
        fakeworker_bin().display().to_string(),
        "--port".into(),
        "{port}".into(),
    ])
    .unwrap();
    let cluster = match redis {
        Some((redis, replica)) => format!(
            "[cluster]\nredis = \"{}\"\nreplica_id = \"{replica}\"\nlease_seconds = {LEASE_SECONDS}\n",
            redis.url
        ),
        None => String::new(),
    };
    endpoint_config(
        "chat",
        "metrics_public = true",
        "",
        &format!("kind = \"process\"\ncommand = {command}\nstartup_timeout_seconds = 30"),
        &format!(
            "[endpoint.health]\ninterval_ms = 500\ntimeout_ms = 500\n\n\
             [endpoint.scaling]\nmax_workers = 4\n{scaling}\n\n{cluster}"
        ),
    )
}

fn start_cluster(redis: &RedisServer, scaling: &str) -> Vec<TestGateway> {
    ["r1", "r2", "r3"]
        .iter()
        .map(|id| TestGateway::start(&config(Some((redis, id)), scaling)))
        .collect()
}

fn admin_get(gw: &TestGateway, path: &str) -> Value {
    let (status, answer) = admin(gw, "GET", path, "");
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

fn admin_post(gw: &TestGateway, path: &str, body: &str) -> Value {
    let (status, answer) = admin(gw, "POST", path, body);
    assert_eq!(status, 200, "{path}: {answer}");
    answer
}

fn chat(gw: &TestGateway) -> Value {
    admin_get(gw, "/admin/endpoints/chat")
}

/// The index of the replica that leads, once exactly one does.
fn leader(replicas: &[&TestGateway]) -> usize {
    eventually("one leader", READY, || {
        let leading: Vec<usize> = replicas
            .iter()
            .enumerate()
            .filter(|(_, gw)| admin_get(gw, "/admin/cluster")["leader"] == true)
            .map(|(i, _)| i)
            .collect();
        (leading.len() == 1).then(|| leading[0])
    })
}

/// Waits until every replica routes to `n` ready workers.
fn wait_ready(replicas: &[&TestGateway], n: u64) {
    for gw in replicas {
        eventually(&format!("{n} ready workers"), READY, || {
            (chat(gw)["workers"]["ready"] == n).then_some(())
        });
    }
}

/// Opens `count` requests through `gw` that each keep a worker busy for `ms`.
fn hold(gw: &TestGateway, count: usize, ms: u64) -> Vec<JoinHandle<u16>> {
    let addr = gw.addr("public");
    (0..count)
        .map(|_| std::thread::spawn(move || get(addr, &format!("{CHAT}/slow?ms={ms}")).0))
        .collect()
}

fn desired(gw: &TestGateway) -> u64 {
    chat(gw)["workers"]["desired"].as_u64().unwrap()
}

/// Six requests in flight through one Portico raise the count to three (target 2); the
/// same six spread two per replica over a cluster do too, although each replica alone sees
/// only two (one worker's worth). Every replica shows one event timeline, whose scale-ups
/// are the leader's. An order given to a follower then holds on every replica, and the
/// leader runs the pinned count, which the followers route to; a scaling change given to a
/// follower is in force on all, and a replica that joins later finds both.
#[test]
fn demand_is_summed_and_orders_hold_on_every_replica() {
    // Short windows: the average reaches the load within the requests' life.
    let scaling =
        "min_workers = 1\ntarget = 2\nstable_window_seconds = 4\npanic_window_seconds = 2";
    let alone = TestGateway::start(&config(None, scaling));
    wait_ready(&[&alone], 1);
    let held = hold(&alone, 6, 10_000);
    eventually("three workers wanted through one replica", READY, || {
        (desired(&alone) == 3).then_some(())
    });
    for request in held {
        assert_eq!(request.join().unwrap(), 200);
    }
    drop(alone);

    let redis = RedisServer::start();
    let replicas = start_cluster(&redis, scaling);
    let all: Vec<&TestGateway> = replicas.iter().collect();
    let lead = leader(&all);
    wait_ready(&all, 1);
    let held: Vec<_> = replicas.iter().flat_map(|gw| hold(gw, 2, 10_000)).collect();
    eventually("three workers wanted by the leader", READY, || {
        (desired(&replicas[lead]) == 3).then_some(())
    });
    let codes: Vec<u16> = held.into_iter().map(|r| r.join().unwrap()).collect();
    if codes.iter().any(|c| *c != 200) {
        for (i, gw) in replicas.iter().enumerate() {
            eprintln!("--- replica {i} (leader {lead})");
            for line in gw.stdout().iter().chain(gw.stderr().iter()) {
                if line.contains("\"status\":502")
                    || line.contains("WARN")
                    || line.contains("cluster")
                {
                    eprintln!("{line}");
                }
            }
        }
    }
    assert!(codes.iter().all(|c| *c == 200), "{codes:?}");
    // One timeline, seen from every replica; the scale-ups in it are the leader's only.
    let timeline = |gw: &TestGateway| {
        admin_get(gw, "/admin/endpoints/chat/events?limit=1000")["events"]
            .as_array()
            .unwrap()
            .clone()
    };
    let leader_id = admin_get(&replicas[lead], "/admin/cluster")["replica_id"].clone();
    let seen = timeline(&replicas[lead]);
    let scaled_up: Vec<&Value> = seen.iter().filter(|e| e["type"] == "scaled_up").collect();
    assert!(
        !scaled_up.is_empty(),
        "the leader records its scale-up: {seen:?}"
    );
    assert!(
        scaled_up.iter().all(|e| e["replica_id"] == leader_id),
        "a follower's decisions are not events: {scaled_up:?}"
    );
    for (i, gw) in replicas.iter().enumerate() {
        if i != lead {
            assert!(
                chat(gw)["workers"]["replicas"]
                    .as_array()
                    .unwrap()
                    .is_empty(),
                "a follower runs no worker process of its own"
            );
            let theirs = timeline(gw);
            assert_eq!(
                theirs.iter().filter(|e| e["type"] == "scaled_up").count(),
                scaled_up.len(),
                "every replica shows the same timeline"
            );
        }
    }

    let follower = (lead + 1) % 3;
    admin_post(
        &replicas[follower],
        "/admin/endpoints/chat/scale",
        r#"{"workers": 2}"#,
    );
    for gw in &replicas {
        eventually("the pin on every replica", READY, || {
            let state = chat(gw);
            (state["mode"] == "manual" && state["workers"]["desired"] == 2).then_some(())
        });
    }
    eventually("two workers on the leader", READY, || {
        let state = chat(&replicas[lead]);
        (state["workers"]["replicas"].as_array().unwrap().len() == 2).then_some(())
    });
    wait_ready(&all, 2);
    let (status, _, _) = get(replicas[follower].addr("public"), &format!("{CHAT}/health"));
    assert_eq!(
        status, 200,
        "a follower serves through the leader's workers"
    );

    admin_post(
        &replicas[(lead + 2) % 3],
        "/admin/endpoints/chat/autoscale",
        "",
    );
    for gw in &replicas {
        eventually("autoscaling again on every replica", READY, || {
            (chat(gw)["mode"] == "auto").then_some(())
        });
    }

    // A scaling change given to one replica is in force on all.
    let (status, answer) = admin(
        &replicas[follower],
        "PATCH",
        "/admin/endpoints/chat/scaling",
        r#"{"max_workers": 3}"#,
    );
    assert_eq!(status, 200, "{answer}");
    for gw in &replicas {
        eventually("the scaling change on every replica", READY, || {
            (chat(gw)["scaling"]["max_workers"] == 3).then_some(())
        });
    }

    // A replica that joins later finds the saved pin and scaling change.
    admin_post(
        &replicas[lead],
        "/admin/endpoints/chat/scale",
        r#"{"workers": 2}"#,
    );
    let late = TestGateway::start(&config(Some((&redis, "r4")), scaling));
    eventually("the saved state on a new replica", READY, || {
        let state = chat(&late);
        (state["mode"] == "manual"
            && state["workers"]["desired"] == 2
            && state["scaling"]["max_workers"] == 3)
            .then_some(())
    });
}

/// At zero workers, a request held by a follower wakes the leader through Redis: the
/// leader counts the wake, starts a worker, and the held request is answered.
#[test]
fn a_wake_on_a_follower_starts_a_worker_on_the_leader() {
    let redis = RedisServer::start();
    let replicas = start_cluster(&redis, "min_workers = 0\nidle_timeout_seconds = 60");
    let all: Vec<&TestGateway> = replicas.iter().collect();
    let lead = leader(&all);
    let follower = (lead + 1) % 3;
    assert_eq!(chat(&replicas[lead])["workers"]["ready"], 0);

    let sent = Instant::now();
    let answered = hold(&replicas[follower], 1, 0);
    let woken = eventually("the leader hears the wake", READY, || {
        let (_, _, text) = get(replicas[lead].addr("admin"), "/metrics");
        metric(
            &text,
            "portico_cluster_wakes_received_total",
            &[("endpoint", "chat")],
        )
        .filter(|n| *n >= 1.0)
    });
    assert!(woken >= 1.0);
    for request in answered {
        assert_eq!(request.join().unwrap(), 200, "the held request is served");
    }
    eprintln!("held request answered after {:?}", sent.elapsed());
    let events = admin_get(&replicas[lead], "/admin/endpoints/chat/events")["events"]
        .as_array()
        .unwrap()
        .clone();
    assert!(
        events.iter().any(|e| e["type"] == "woke"),
        "the leader woke the endpoint: {events:?}"
    );
}

/// A leader killed with SIGKILL (its workers die with it) is replaced within two leases;
/// the new leader starts a worker of its own and the remaining follower routes to it.
#[test]
fn a_killed_leader_is_replaced_within_two_leases() {
    let redis = RedisServer::start();
    let mut replicas = start_cluster(&redis, "min_workers = 1");
    let all: Vec<&TestGateway> = replicas.iter().collect();
    let lead = leader(&all);
    wait_ready(&all, 1);

    replicas[lead].signal("KILL");
    let killed = Instant::now();
    let dead = replicas.remove(lead);
    let survivors: Vec<&TestGateway> = replicas.iter().collect();
    let successor = leader(&survivors);
    let took_over = killed.elapsed();
    eprintln!("a new leader after {took_over:?}");
    assert!(
        took_over <= Duration::from_secs(2 * LEASE_SECONDS),
        "the lease passed on after {took_over:?}"
    );
    drop(dead);

    eventually("a worker of the new leader", READY, || {
        let state = chat(survivors[successor]);
        (state["workers"]["replicas"][0]["state"] == "ready").then_some(())
    });
    wait_ready(&survivors, 1);
    let other = survivors[(successor + 1) % 2];
    let (status, _, _) = get(other.addr("public"), &format!("{CHAT}/health"));
    assert_eq!(
        status, 200,
        "the follower serves through the new leader's worker"
    );
    assert_eq!(
        admin_get(other, "/admin/cluster")["replicas"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "the dead replica is no longer counted"
    );
}

/// Redis goes away: every replica decides and actuates alone and says so (metric, log,
/// `/admin/cluster`), and keeps serving; when Redis is back, one leader again.
#[test]
fn without_redis_each_replica_decides_alone_and_says_so() {
    let mut redis = RedisServer::start();
    let replicas = start_cluster(&redis, "min_workers = 1");
    let all: Vec<&TestGateway> = replicas.iter().collect();
    let _ = leader(&all);
    wait_ready(&all, 1);

    redis.kill();
    for gw in &replicas {
        eventually("alone", READY, || {
            let view = admin_get(gw, "/admin/cluster");
            (view["redis_up"] == false && view["actuating"] == true).then_some(())
        });
        let (_, _, text) = get(gw.addr("admin"), "/metrics");
        assert_eq!(metric(&text, "portico_cluster_redis_up", &[]), Some(0.0));
        assert!(
            gw.stdout()
                .iter()
                .chain(gw.stderr().iter())
                .any(|l| l.contains("Redis does not answer")),
            "the log says so"
        );
    }
    // Each runs a worker of its own and serves through it.
    wait_ready(&all, 1);
    for gw in &replicas {
        let (status, _, _) = get(gw.addr("public"), &format!("{CHAT}/health"));
        assert_eq!(status, 200, "served without Redis");
    }

    redis.restart();
    let lead = leader(&all);
    for (i, gw) in replicas.iter().enumerate() {
        eventually("back in the cluster", READY, || {
            let view = admin_get(gw, "/admin/cluster");
            (view["redis_up"] == true && view["actuating"] == (i == lead)).then_some(())
        });
    }
    // The followers hand their own workers back and route to the leader's.
    for (i, gw) in replicas.iter().enumerate() {
        if i != lead {
            eventually("a follower without workers of its own", READY, || {
                chat(gw)["workers"]["replicas"]
                    .as_array()
                    .unwrap()
                    .is_empty()
                    .then_some(())
            });
        }
    }
    wait_ready(&all, 1);
}

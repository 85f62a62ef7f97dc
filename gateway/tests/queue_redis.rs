//! The Redis Streams queue against a real `redis-server`: each test starts its own on a free
//! loopback port. Two `RedisQueue`s on one server stand for two Portico replicas.

mod support;

use std::collections::HashSet;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway::queue::{Claimed, JobQueue, JobStatus, NewJob, QueueError, RedisQueue};
use support::RedisServer;

/// Long enough that nothing is taken back unless a test means it to be.
const NEVER: Duration = Duration::from_secs(600);

async fn queue(redis: &RedisServer, reclaim_after: Duration) -> RedisQueue {
    RedisQueue::connect(&redis.url, reclaim_after)
        .await
        .unwrap()
}

/// A plain connection, to look at the keys behind the queue.
async fn raw(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn job(id: &str, endpoint: &str, key: Option<&str>) -> NewJob {
    NewJob {
        id: id.into(),
        endpoint: endpoint.into(),
        route: "/v1/chat/completions".into(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from(format!(r#"{{"job":"{id}"}}"#)),
        idempotency_key: key.map(str::to_string),
        webhook: None,
        ttl_ms: 60_000,
    }
}

fn ids(claimed: &[Claimed]) -> Vec<&str> {
    claimed.iter().map(|c| c.state.id.as_str()).collect()
}

/// Jobs come out per endpoint, oldest first, with their bodies, `in_progress` and one
/// attempt counted.
#[tokio::test]
async fn fifo_per_endpoint() {
    let redis = RedisServer::start();
    let q = queue(&redis, NEVER).await;
    for (id, ep) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a")] {
        let enqueued = q.enqueue(job(id, ep, None)).await.unwrap();
        assert_eq!(enqueued.id, id);
        assert!(enqueued.fresh);
    }
    assert_eq!(q.depth("a").await.unwrap(), 3);
    assert_eq!(q.depth("b").await.unwrap(), 1);
    assert_eq!(
        q.state("a1").await.unwrap().unwrap().status,
        JobStatus::Queued
    );

    let first = q.claim("a", 2).await.unwrap();
    assert_eq!(ids(&first), ["a1", "a2"]);
    assert_eq!(first[0].body, Bytes::from_static(br#"{"job":"a1"}"#));
    assert_eq!(first[0].state.attempts, 1);
    assert_eq!(first[0].state.status, JobStatus::InProgress);
    assert!(first[0].state.started_at_ms.is_some());
    assert_eq!(q.state("a2").await.unwrap(), Some(first[1].state.clone()));
    assert_eq!(q.depth("a").await.unwrap(), 1);

    assert_eq!(ids(&q.claim("a", 10).await.unwrap()), ["a3"]);
    assert_eq!(ids(&q.claim("b", 10).await.unwrap()), ["b1"]);
    assert!(q.claim("a", 10).await.unwrap().is_empty());
    assert!(q.claim("a", 0).await.unwrap().is_empty());
    assert!(q.claim("never-used", 10).await.unwrap().is_empty());
}

/// The same idempotency key on the same endpoint returns the first id and stores nothing;
/// on another endpoint it is a new job.
#[tokio::test]
async fn idempotency_keys() {
    let redis = RedisServer::start();
    let q = queue(&redis, NEVER).await;
    let first = q.enqueue(job("j1", "e", Some("k"))).await.unwrap();
    assert_eq!((first.id.as_str(), first.fresh), ("j1", true));
    let again = q.enqueue(job("j2", "e", Some("k"))).await.unwrap();
    assert_eq!((again.id.as_str(), again.fresh), ("j1", false));
    let other = q.enqueue(job("j3", "other", Some("k"))).await.unwrap();
    assert_eq!((other.id.as_str(), other.fresh), ("j3", true));
    assert_eq!(q.depth("e").await.unwrap(), 1);
    assert!(q.state("j2").await.unwrap().is_none());
    assert_eq!(ids(&q.claim("e", 10).await.unwrap()), ["j1"]);
}

/// Two replicas enqueuing the same keys at the same moment store one job per key, and both
/// answer with its id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_race_between_replicas() {
    let redis = RedisServer::start();
    let a = queue(&redis, NEVER).await;
    let b = queue(&redis, NEVER).await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let q = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let key = format!("k{}", i / 2);
                q.enqueue(job(&format!("j{i}"), "e", Some(&key))).await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap().unwrap());
    }
    for pair in answers.chunks(2) {
        assert_eq!(pair[0].id, pair[1].id, "one id per key");
        assert_eq!(pair.iter().filter(|e| e.fresh).count(), 1, "{pair:?}");
    }
    assert_eq!(a.depth("e").await.unwrap(), 20);
}

/// A key left by a replica that died between reserving it and writing its job (it names
/// no job) is taken over once that replica's write would have timed out.
#[tokio::test]
async fn stale_idempotency_key_is_taken_over() {
    let redis = RedisServer::start();
    let q = queue(&redis, NEVER).await;
    redis::cmd("SET")
        .arg("portico:e:idem:k")
        .arg("ghost")
        .arg("PX")
        .arg(60_000)
        .query_async::<()>(&mut raw(&redis).await)
        .await
        .unwrap();
    let enqueued = q.enqueue(job("j1", "e", Some("k"))).await.unwrap();
    assert_eq!((enqueued.id.as_str(), enqueued.fresh), ("j1", true));
    let again = q.enqueue(job("j2", "e", Some("k"))).await.unwrap();
    assert_eq!((again.id.as_str(), again.fresh), ("j1", false));
    assert_eq!(ids(&q.claim("e", 10).await.unwrap()), ["j1"]);
}

/// Finishing keeps the state (for the status API, with an expiry) and drops the body;
/// unknown ids are `UnknownJob`.
#[tokio::test]
async fn finish_keeps_state_and_drops_body() {
    let redis = RedisServer::start();
    let q = queue(&redis, NEVER).await;
    q.enqueue(job("j1", "e", None)).await.unwrap();
    let claimed = q.claim("e", 1).await.unwrap();
    assert_eq!(ids(&claimed), ["j1"]);
    q.finish("j1", JobStatus::Completed).await.unwrap();

    let state = q.state("j1").await.unwrap().unwrap();
    assert_eq!(state.status, JobStatus::Completed);
    assert_eq!(state.attempts, 1);
    let mut raw = raw(&redis).await;
    let has_body: bool = redis::cmd("HEXISTS")
        .arg("portico:job:j1")
        .arg("body")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(!has_body);
    let ttl: i64 = redis::cmd("PTTL")
        .arg("portico:job:j1")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 60_000, "kept for ttl_ms: {ttl}");
    let stream_len: u64 = redis::cmd("XLEN")
        .arg("portico:e:jobs")
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(stream_len, 0, "the finished job's entry is deleted");

    assert!(q.state("nope").await.unwrap().is_none());
    assert!(matches!(
        q.finish("nope", JobStatus::Failed).await,
        Err(QueueError::UnknownJob(id)) if id == "nope"
    ));
    assert!(matches!(
        q.retry("nope").await,
        Err(QueueError::UnknownJob(_))
    ));
}

/// Each retry counts an attempt, persisted.
#[tokio::test]
async fn retry_counts_attempts() {
    let redis = RedisServer::start();
    let q = queue(&redis, NEVER).await;
    q.enqueue(job("j1", "e", None)).await.unwrap();
    assert_eq!(q.claim("e", 1).await.unwrap()[0].state.attempts, 1);
    assert_eq!(q.retry("j1").await.unwrap(), 2);
    assert_eq!(q.retry("j1").await.unwrap(), 3);
    let state = q.state("j1").await.unwrap().unwrap();
    assert_eq!(state.attempts, 3);
    assert_eq!(state.status, JobStatus::InProgress);
}

/// A job replica A claimed and stopped touching is taken back by replica B after
/// `reclaim_after`, with its second attempt counted; a job A keeps touching stays with A,
/// and A's late touch of the job it lost does not take it back from B.
#[tokio::test]
async fn abandoned_claims_move_to_another_replica() {
    let redis = RedisServer::start();
    let reclaim = Duration::from_millis(300);
    let a = queue(&redis, reclaim).await;
    let b = queue(&redis, reclaim).await;
    a.enqueue(job("dead", "e", None)).await.unwrap();
    a.enqueue(job("alive", "e", None)).await.unwrap();
    assert_eq!(ids(&a.claim("e", 10).await.unwrap()), ["dead", "alive"]);
    assert_eq!(a.depth("e").await.unwrap(), 0);

    let started = Instant::now();
    let mut taken: Vec<Claimed> = Vec::new();
    // Past the reclaim of `dead`, keep going a few more `reclaim_after`s to be sure
    // `alive` is never taken.
    while started.elapsed() < reclaim * 5 {
        let b_has: Vec<String> = taken.iter().map(|c| c.state.id.clone()).collect();
        let mut a_touches = vec!["alive".to_string()];
        a_touches.extend(b_has.iter().cloned());
        // B works on what it took back, or it would take it back from itself.
        b.touch("e", &b_has).await.unwrap();
        a.touch("e", &a_touches).await.unwrap();
        taken.extend(b.claim("e", 10).await.unwrap());
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(ids(&taken), ["dead"]);
    assert_eq!(taken[0].state.attempts, 2);
    assert_eq!(taken[0].body, Bytes::from_static(br#"{"job":"dead"}"#));
    assert!(started.elapsed() >= reclaim);

    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg("portico:e:jobs")
        .arg("portico")
        .arg("-")
        .arg("+")
        .arg(10)
        .query_async(&mut raw(&redis).await)
        .await
        .unwrap();
    let deliveries: Vec<u64> = pending.iter().map(|p| p.3).collect();
    assert_eq!(deliveries, [2, 1], "dead then alive: {pending:?}");
    assert_ne!(
        pending[0].1, pending[1].1,
        "each with its replica: {pending:?}"
    );

    // B finishes what it took back; `alive` still finishes on A.
    b.finish("dead", JobStatus::Completed).await.unwrap();
    a.finish("alive", JobStatus::Completed).await.unwrap();
    tokio::time::sleep(reclaim * 2).await;
    assert!(b.claim("e", 10).await.unwrap().is_empty());
    assert!(a.claim("e", 10).await.unwrap().is_empty());
}

/// A finished job is never handed out again: not after its claim went idle, and not when
/// it finished before anyone claimed it.
#[tokio::test]
async fn finished_jobs_are_never_claimed_again() {
    let redis = RedisServer::start();
    let reclaim = Duration::from_millis(100);
    let a = queue(&redis, reclaim).await;
    let b = queue(&redis, reclaim).await;
    a.enqueue(job("claimed", "e", None)).await.unwrap();
    assert_eq!(ids(&a.claim("e", 10).await.unwrap()), ["claimed"]);
    a.finish("claimed", JobStatus::Failed).await.unwrap();

    // Finished while still waiting (e.g. expired): its entry is met by the next claim.
    a.enqueue(job("waiting", "e", None)).await.unwrap();
    b.finish("waiting", JobStatus::Expired).await.unwrap();
    tokio::time::sleep(reclaim * 3).await;
    assert!(b.claim("e", 10).await.unwrap().is_empty());
    assert!(a.claim("e", 10).await.unwrap().is_empty());
    assert_eq!(a.depth("e").await.unwrap(), 0);
    assert_eq!(
        a.state("waiting").await.unwrap().unwrap().status,
        JobStatus::Expired
    );
}

/// `depth` counts jobs not yet claimed, and `oldest_waiting` is the oldest of them.
#[tokio::test]
async fn depth_and_oldest_waiting() {
    let redis = RedisServer::start();
    let q = queue(&redis, NEVER).await;
    assert_eq!(q.depth("e").await.unwrap(), 0);
    assert_eq!(q.oldest_waiting("e").await.unwrap(), None);
    for id in ["j1", "j2", "j3"] {
        q.enqueue(job(id, "e", None)).await.unwrap();
    }
    let submitted = |id: &'static str| {
        let q = q.clone();
        async move { q.state(id).await.unwrap().unwrap().submitted_at_ms }
    };
    assert_eq!(q.depth("e").await.unwrap(), 3);
    assert_eq!(
        q.oldest_waiting("e").await.unwrap(),
        Some(submitted("j1").await)
    );
    q.claim("e", 1).await.unwrap();
    assert_eq!(q.depth("e").await.unwrap(), 2);
    assert_eq!(
        q.oldest_waiting("e").await.unwrap(),
        Some(submitted("j2").await)
    );
    q.finish("j1", JobStatus::Completed).await.unwrap();
    assert_eq!(q.depth("e").await.unwrap(), 2);
    q.claim("e", 5).await.unwrap();
    assert_eq!(q.depth("e").await.unwrap(), 0);
    assert_eq!(q.oldest_waiting("e").await.unwrap(), None);
    q.enqueue(job("j4", "e", None)).await.unwrap();
    assert_eq!(q.depth("e").await.unwrap(), 1);
    assert_eq!(
        q.oldest_waiting("e").await.unwrap(),
        Some(submitted("j4").await)
    );
}

/// 200 jobs enqueued at once through two replicas are all claimed, each exactly once,
/// by the two replicas claiming at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_replicas_claim_each_job_once() {
    let redis = RedisServer::start();
    let a = queue(&redis, NEVER).await;
    let b = queue(&redis, NEVER).await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let q = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { q.enqueue(job(&format!("j{i:03}"), "e", None)).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().unwrap().fresh);
    }
    assert_eq!(a.depth("e").await.unwrap(), 200);

    let drain = |q: RedisQueue| {
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = q.claim("e", 7).await.unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|c| c.state.id));
            }
        })
    };
    let (from_a, from_b) = (drain(a.clone()), drain(b.clone()));
    let (from_a, from_b) = (from_a.await.unwrap(), from_b.await.unwrap());
    let mut all: Vec<_> = from_a.iter().chain(&from_b).cloned().collect();
    let unique: HashSet<_> = all.iter().cloned().collect();
    assert_eq!(unique.len(), all.len(), "a job claimed twice");
    all.sort();
    let expected: Vec<_> = (0..200).map(|i| format!("j{i:03}")).collect();
    assert_eq!(all, expected, "a job lost");
    assert_eq!(a.depth("e").await.unwrap(), 0);
}

/// An unreachable server, over TLS or not, fails to connect with a storage error instead
/// of hanging.
#[tokio::test]
async fn connect_failures_are_storage_errors() {
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for scheme in ["rediss", "redis"] {
        let started = Instant::now();
        let err = RedisQueue::connect(&format!("{scheme}://127.0.0.1:{port}"), NEVER)
            .await
            .unwrap_err();
        assert!(matches!(err, QueueError::Storage(_)), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }
}

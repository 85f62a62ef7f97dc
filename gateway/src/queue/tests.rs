use super::*;

use std::time::Duration;

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

/// Jobs come out per endpoint, oldest first, with their bodies; finishing records the state.
#[tokio::test]
async fn fifo_per_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let q = EmbeddedQueue::open(&dir.path().join("q.redb")).unwrap();
    for (id, ep) in [("a1", "a"), ("b1", "b"), ("a2", "a"), ("a3", "a")] {
        assert_eq!(q.enqueue(job(id, ep, None)).await.unwrap().id, id);
    }
    assert_eq!(q.depth("a").await.unwrap(), 3);
    assert_eq!(q.depth("b").await.unwrap(), 1);
    let first = q.claim("a", 2).await.unwrap();
    let ids: Vec<_> = first.iter().map(|c| c.state.id.as_str()).collect();
    assert_eq!(ids, ["a1", "a2"]);
    assert_eq!(first[0].body, Bytes::from_static(br#"{"job":"a1"}"#));
    assert_eq!(first[0].state.attempts, 1);
    assert_eq!(first[0].state.status, JobStatus::InProgress);
    assert_eq!(q.depth("a").await.unwrap(), 1);

    q.finish("a1", JobStatus::Completed).await.unwrap();
    assert_eq!(
        q.state("a1").await.unwrap().unwrap().status,
        JobStatus::Completed
    );
    q.requeue("a2").await.unwrap();
    let again = q.claim("a", 10).await.unwrap();
    let ids: Vec<_> = again.iter().map(|c| c.state.id.as_str()).collect();
    assert_eq!(ids, ["a3", "a2"], "a retry goes to the back");
    assert_eq!(again[1].state.attempts, 2);
    assert!(q.state("nope").await.unwrap().is_none());
    assert!(matches!(
        q.finish("nope", JobStatus::Failed).await,
        Err(QueueError::UnknownJob(_))
    ));
}

/// The same idempotency key on the same endpoint returns the first id and stores nothing.
#[tokio::test]
async fn idempotency_keys() {
    let dir = tempfile::tempdir().unwrap();
    let q = EmbeddedQueue::open(&dir.path().join("q.redb")).unwrap();
    let first = q.enqueue(job("j1", "e", Some("k"))).await.unwrap();
    assert_eq!((first.id.as_str(), first.fresh), ("j1", true));
    let again = q.enqueue(job("j2", "e", Some("k"))).await.unwrap();
    assert_eq!((again.id.as_str(), again.fresh), ("j1", false));
    let other = q.enqueue(job("j3", "other", Some("k"))).await.unwrap();
    assert_eq!((other.id.as_str(), other.fresh), ("j3", true));
    assert_eq!(q.depth("e").await.unwrap(), 1);
    assert!(q.state("j2").await.unwrap().is_none());
}

/// Many concurrent enqueues (committed in groups) are all on disk when acknowledged, and a
/// job claimed by a run that died is queued again when the file is reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.redb");
    {
        let q = EmbeddedQueue::open(&path).unwrap();
        let tasks: Vec<_> = (0..200)
            .map(|i| {
                let q = q.clone();
                tokio::spawn(async move { q.enqueue(job(&format!("j{i:03}"), "e", None)).await })
            })
            .collect();
        for task in tasks {
            task.await.unwrap().unwrap();
        }
        let claimed = q.claim("e", 5).await.unwrap();
        assert_eq!(claimed.len(), 5);
        q.finish(&claimed[0].state.id, JobStatus::Completed)
            .await
            .unwrap();
    }
    // The writer thread of the first handle still holds the file open in this process:
    // wait for it to let go, as a restarted daemon would find it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let q = loop {
        match EmbeddedQueue::open(&path) {
            Ok(q) => break q,
            Err(err) => {
                assert!(std::time::Instant::now() < deadline, "reopen: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    };
    // 195 never claimed + 4 claimed and unfinished.
    assert_eq!(q.depth("e").await.unwrap(), 199);
    let all = q.claim("e", 500).await.unwrap();
    assert_eq!(all.len(), 199);
    let recovered = all.iter().filter(|c| c.state.attempts == 2).count();
    assert_eq!(recovered, 4);
}

/// A retry counts an attempt; an idempotency key is forgotten with its job once the job
/// finished and its TTL passed, and the sweep removes only such jobs.
#[tokio::test]
async fn retries_ttl_and_sweep() {
    let dir = tempfile::tempdir().unwrap();
    let q = EmbeddedQueue::open(&dir.path().join("q.redb")).unwrap();
    let mut short = job("s1", "e", Some("k"));
    short.ttl_ms = 50;
    q.enqueue(short).await.unwrap();
    q.enqueue(job("long", "e", None)).await.unwrap();
    assert!(q.oldest_waiting("e").await.unwrap().is_some());
    assert_eq!(q.oldest_waiting("none").await.unwrap(), None);
    let claimed = q.claim("e", 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed[0].state.started_at_ms.is_some());
    assert_eq!(q.retry("s1").await.unwrap(), 2);
    q.finish("s1", JobStatus::Completed).await.unwrap();
    q.finish("long", JobStatus::Completed).await.unwrap();
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(q.sweep().await.unwrap(), 1);
    assert!(q.state("s1").await.unwrap().is_none());
    assert!(q.state("long").await.unwrap().is_some());
    // The key is free again.
    let fresh = q.enqueue(job("s2", "e", Some("k"))).await.unwrap();
    assert_eq!((fresh.id.as_str(), fresh.fresh), ("s2", true));
}

//! The Redis Streams queue, shared by several Portico replicas: one stream and consumer
//! group per endpoint, `XAUTOCLAIM` for jobs whose dispatcher died, and the attempt count
//! kept with the job.
//!
//! Every process is one consumer of each endpoint's group, under a name of its own
//! (`portico-<host>-<pid>-<random>`). A claimed job stays in the group's pending list until
//! it finishes; its dispatcher `touch`es it every few seconds, and a job nobody touched for
//! `reclaim_after` is taken back by whichever replica claims next.
//!
//! Keys:
//! - `portico:<endpoint>:jobs`: the endpoint's stream; each entry names a job (field `id`).
//!   Consumer group `portico`.
//! - `portico:job:<id>`: hash of the job's state (`state`, JSON), its body (`body`, dropped
//!   on finish) and, once claimed, its stream entry (`entry`). Kept until `ttl_ms` after
//!   the job finished.
//! - `portico:<endpoint>:idem:<key>`: the id of the job that first used an idempotency
//!   key, for `ttl_ms` after that job's intake.
//!
//! Durability: intake is acknowledged once Redis acknowledged the `MULTI`/`EXEC` that wrote
//! the job and its stream entry, so it is only as durable as Redis is. For fsync'd intake
//! (what the embedded queue gives), run Redis with `appendonly yes` and
//! `appendfsync always`.
//!
//! Updates of one job's state are read-modify-write without a lock: two replicas only
//! update the same job when one lost its claim while still working on it, and then the
//! last write wins (delivery is at least once either way).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{
    StreamAutoClaimReply, StreamId, StreamInfoGroup, StreamInfoGroupsReply, StreamRangeReply,
    StreamReadReply,
};
use redis::{RedisResult, Value};

use super::{
    Claimed, Enqueued, JobQueue, JobState, JobStatus, NewJob, QueueError, QueueFuture, now_ms,
};

/// Every endpoint's consumer group.
const GROUP: &str = "portico";

/// How long one command may take. Generous: an `EXEC` under `appendfsync always` waits for
/// the fsync, and a timed-out intake leaves the client unsure whether its job was stored.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a connection attempt may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(2);

/// Most `XAUTOCLAIM` calls per claim: each scans at most ten times its `COUNT` pending
/// entries, so a long pending list is walked over several claims instead of stalling one.
const RECLAIM_ROUNDS: usize = 4;

/// Most times intake retries reserving an idempotency key that changed under it.
const RESERVE_ROUNDS: usize = 3;

/// Resets the idle time of the given entries, but only of those this consumer still owns:
/// a plain `XCLAIM` would take back a job another replica already reclaimed, and both
/// would run it.
const TOUCH: &str = r"
for i = 3, #ARGV do
  if #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0 then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
  end
end
return 0
";

/// Points an idempotency key at another job, if it still names the one expected.
const TAKE_OVER_KEY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
";

/// Deletes an idempotency key, if it still names the given job.
const RELEASE_KEY: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Jobs in Redis Streams: one stream and consumer group per endpoint; cheap to clone.
#[derive(Clone)]
pub struct RedisQueue {
    conn: ConnectionManager,
    consumer: Arc<str>,
    reclaim_after_ms: u64,
    local: Arc<Mutex<Local>>,
}

/// What this process remembers between calls.
#[derive(Default)]
struct Local {
    /// Endpoints whose consumer group is known to exist.
    groups: HashSet<String>,
    /// Job id → stream entry id, for the jobs this process claimed and has not finished.
    entries: HashMap<String, String>,
    /// Endpoint → where the next `XAUTOCLAIM` continues its walk of the pending list.
    cursors: HashMap<String, String>,
}

impl std::fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueue")
            .field("consumer", &self.consumer)
            .field("reclaim_after_ms", &self.reclaim_after_ms)
            .finish_non_exhaustive()
    }
}

impl RedisQueue {
    /// Connects to the Redis server at `url` (redis:// or rediss://). Jobs another replica
    /// claimed and stopped touching are taken back after `reclaim_after`.
    pub async fn connect(url: &str, reclaim_after: Duration) -> Result<RedisQueue, QueueError> {
        let client = redis::Client::open(url)
            .map_err(|err| QueueError::Storage(format!("invalid Redis URL: {err}")))?;
        // Few, short reconnection retries: a request made while Redis is away fails within
        // about a second instead of piling up, and the dispatcher's next poll tries again.
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECTION_TIMEOUT))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(1));
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(storage)?;
        Ok(RedisQueue {
            conn,
            consumer: consumer_name().into(),
            reclaim_after_ms: u64::try_from(reclaim_after.as_millis()).unwrap_or(u64::MAX),
            local: Arc::default(),
        })
    }

    /// A handle on the shared connection (clones share it).
    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        // The lock is never held across an await or a panic-prone call; a poisoned map is
        // still consistent.
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    async fn enqueue_job(&self, job: NewJob) -> Result<Enqueued, QueueError> {
        let idem = job
            .idempotency_key
            .as_deref()
            .map(|key| idem_key(&job.endpoint, key));
        if let Some(key) = &idem
            && let Some(first) = self.reserve_key(key, &job.id, job.ttl_ms).await?
        {
            return Ok(Enqueued {
                id: first,
                fresh: false,
            });
        }
        let state = JobState::queued(&job, now_ms());
        let raw = encode(&state)?;
        let written: RedisResult<()> = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(job_key(&job.id))
            .arg("state")
            .arg(raw)
            .arg("body")
            .arg(job.body.as_ref())
            .ignore()
            .cmd("XADD")
            .arg(stream_key(&job.endpoint))
            .arg("*")
            .arg("id")
            .arg(&job.id)
            .ignore()
            .query_async(&mut self.conn())
            .await;
        match written {
            Ok(()) => Ok(Enqueued {
                id: job.id,
                fresh: true,
            }),
            Err(err) => {
                // A timeout or a dropped connection leaves the job possibly stored: keep
                // the key, so that the client's retry finds it instead of a duplicate.
                if let Some(key) = &idem
                    && !(err.is_timeout() || err.is_connection_dropped() || err.is_io_error())
                {
                    let _ = self.eval::<i64>(RELEASE_KEY, key, &[&job.id]).await;
                }
                Err(storage(err))
            }
        }
    }

    /// Makes the idempotency key `key` name job `id`, unless it names a job that exists:
    /// then returns that job's id. `SET NX` decides between replicas enqueuing the same key
    /// at once; the loser waits for the winner's job to be written.
    async fn reserve_key(
        &self,
        key: &str,
        id: &str,
        ttl_ms: u64,
    ) -> Result<Option<String>, QueueError> {
        let mut conn = self.conn();
        for _ in 0..RESERVE_ROUNDS {
            let set: Option<String> = redis::cmd("SET")
                .arg(key)
                .arg(id)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async(&mut conn)
                .await
                .map_err(storage)?;
            if set.is_some() {
                return Ok(None);
            }
            let first: Option<String> = redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(storage)?;
            let Some(first) = first else {
                continue;
            };
            match self.await_job(key, &first).await? {
                KeyOwner::Job => return Ok(Some(first)),
                KeyOwner::Changed => continue,
                KeyOwner::Missing => {
                    let ttl = ttl_ms.max(1).to_string();
                    let taken: i64 = self.eval(TAKE_OVER_KEY, key, &[&first, id, &ttl]).await?;
                    if taken == 1 {
                        return Ok(None);
                    }
                }
            }
        }
        Err(QueueError::Storage(format!(
            "idempotency key {key} keeps changing"
        )))
    }

    /// Waits for the job an idempotency key names to be written by the replica that set
    /// the key. Past the response timeout that replica has given up (or died), and the
    /// key is stale.
    async fn await_job(&self, key: &str, first: &str) -> Result<KeyOwner, QueueError> {
        let deadline = Instant::now() + RESPONSE_TIMEOUT + Duration::from_millis(500);
        let mut conn = self.conn();
        loop {
            let (exists, named): (bool, Option<String>) = redis::pipe()
                .cmd("EXISTS")
                .arg(job_key(first))
                .cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(storage)?;
            if exists {
                return Ok(KeyOwner::Job);
            }
            if named.as_deref() != Some(first) {
                return Ok(KeyOwner::Changed);
            }
            if Instant::now() >= deadline {
                return Ok(KeyOwner::Missing);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn claim_jobs(&self, endpoint: &str, max: usize) -> Result<Vec<Claimed>, QueueError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let stream = stream_key(endpoint);
        self.ensure_group(endpoint, &stream).await?;
        let entries = match self.take_entries(endpoint, &stream, max).await {
            Err(err) if err.code() == Some("NOGROUP") => {
                // The stream went away (a flush, a failover to an empty replica): make the
                // group again and read once more.
                self.local().groups.remove(endpoint);
                self.ensure_group(endpoint, &stream).await?;
                self.take_entries(endpoint, &stream, max)
                    .await
                    .map_err(storage)?
            }
            other => other.map_err(storage)?,
        };
        self.start_jobs(&stream, entries).await
    }

    /// Creates the endpoint's group at the stream's start, so that jobs enqueued before it
    /// existed are read too.
    async fn ensure_group(&self, endpoint: &str, stream: &str) -> Result<(), QueueError> {
        if self.local().groups.contains(endpoint) {
            return Ok(());
        }
        let created: RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut self.conn())
            .await;
        match created {
            Ok(()) => {}
            Err(err) if err.code() == Some("BUSYGROUP") => {}
            Err(err) => return Err(storage(err)),
        }
        self.local().groups.insert(endpoint.to_string());
        Ok(())
    }

    /// Up to `max` entries for this consumer: abandoned ones first (they are older), then
    /// never delivered ones.
    async fn take_entries(
        &self,
        endpoint: &str,
        stream: &str,
        max: usize,
    ) -> RedisResult<Vec<StreamId>> {
        let mut taken = self.reclaim(endpoint, stream, max).await?;
        if taken.len() < max {
            let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&*self.consumer)
                .arg("COUNT")
                .arg(max - taken.len())
                .arg("STREAMS")
                .arg(stream)
                .arg(">")
                .query_async(&mut self.conn())
                .await?;
            let fresh = read.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids);
            taken.extend(fresh);
        }
        Ok(taken)
    }

    /// Takes over entries claimed by any consumer and left idle for `reclaim_after`.
    async fn reclaim(
        &self,
        endpoint: &str,
        stream: &str,
        max: usize,
    ) -> RedisResult<Vec<StreamId>> {
        let mut cursor = self
            .local()
            .cursors
            .get(endpoint)
            .cloned()
            .unwrap_or_else(|| "0-0".into());
        let mut taken = Vec::new();
        for _ in 0..RECLAIM_ROUNDS {
            let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
                .arg(stream)
                .arg(GROUP)
                .arg(&*self.consumer)
                .arg(self.reclaim_after_ms)
                .arg(&cursor)
                .arg("COUNT")
                .arg(max - taken.len())
                .query_async(&mut self.conn())
                .await?;
            // Entries deleted since they were delivered come back in `deleted_ids`, and
            // Redis (7+) has already dropped them from the pending list.
            taken.extend(reply.claimed);
            cursor = reply.next_stream_id;
            if cursor == "0-0" || taken.len() >= max {
                break;
            }
        }
        self.local().cursors.insert(endpoint.to_string(), cursor);
        Ok(taken)
    }

    /// Marks the jobs of claimed entries `in_progress` and counts an attempt on each (in
    /// Redis, so that the count survives this process). Entries whose job is gone or
    /// finished are acknowledged and deleted instead: a finished job never runs twice.
    async fn start_jobs(
        &self,
        stream: &str,
        entries: Vec<StreamId>,
    ) -> Result<Vec<Claimed>, QueueError> {
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn();
        let jobs: Vec<(String, Option<String>)> = entries
            .into_iter()
            .map(|entry| {
                let id = entry.get::<String>("id");
                (entry.id, id)
            })
            .collect();
        let mut reads = redis::pipe();
        for (_, id) in &jobs {
            reads
                .cmd("HMGET")
                .arg(job_key(id.as_deref().unwrap_or_default()))
                .arg("state")
                .arg("body");
        }
        let stored: Vec<(Option<String>, Option<Bytes>)> =
            reads.query_async(&mut conn).await.map_err(storage)?;

        let mut writes = redis::pipe();
        writes.atomic();
        let mut claimed = Vec::new();
        let mut started = Vec::new();
        for ((entry, id), (raw, body)) in jobs.into_iter().zip(stored) {
            let state = match (id, raw) {
                (Some(_), Some(raw)) => decode(&raw)
                    // Unreadable, it would fail every claim that meets it: drop the entry.
                    .inspect_err(|err| tracing::warn!(entry, error = %err, "dropping a job whose state is unreadable"))
                    .ok(),
                _ => None,
            };
            let Some(mut state) = state.filter(|s| !s.finished()) else {
                writes.xack(stream, GROUP, &[&entry]).ignore();
                writes.xdel(stream, &[&entry]).ignore();
                continue;
            };
            state.advance(JobStatus::InProgress);
            writes
                .cmd("HSET")
                .arg(job_key(&state.id))
                .arg("state")
                .arg(encode(&state)?)
                .arg("entry")
                .arg(&entry)
                .ignore();
            started.push((state.id.clone(), entry));
            claimed.push(Claimed {
                state,
                body: body.unwrap_or_default(),
            });
        }
        writes.query_async::<()>(&mut conn).await.map_err(storage)?;
        self.local().entries.extend(started);
        Ok(claimed)
    }

    async fn retry_job(&self, id: &str) -> Result<u32, QueueError> {
        let Some(mut state) = self.read_state(id).await? else {
            return Err(QueueError::UnknownJob(id.to_string()));
        };
        state.advance(JobStatus::InProgress);
        redis::cmd("HSET")
            .arg(job_key(id))
            .arg("state")
            .arg(encode(&state)?)
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(storage)?;
        Ok(state.attempts)
    }

    async fn touch_jobs(&self, endpoint: &str, ids: &[String]) -> Result<(), QueueError> {
        let entries: Vec<String> = {
            let local = self.local();
            ids.iter()
                .filter_map(|id| local.entries.get(id).cloned())
                .collect()
        };
        if entries.is_empty() {
            return Ok(());
        }
        let mut args: Vec<&str> = vec![GROUP, &self.consumer];
        args.extend(entries.iter().map(String::as_str));
        self.eval::<i64>(TOUCH, &stream_key(endpoint), &args)
            .await
            .map(drop)
    }

    async fn finish_job(&self, id: &str, status: JobStatus) -> Result<(), QueueError> {
        let key = job_key(id);
        let mut conn = self.conn();
        let (raw, stored_entry): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(&key)
            .arg("state")
            .arg("entry")
            .query_async(&mut conn)
            .await
            .map_err(storage)?;
        let Some(raw) = raw else {
            return Err(QueueError::UnknownJob(id.to_string()));
        };
        let mut state = decode(&raw)?;
        state.advance(status);
        // Another replica may have claimed it last: the hash knows its entry too.
        let entry = self.local().entries.get(id).cloned().or(stored_entry);
        let mut writes = redis::pipe();
        writes
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg("state")
            .arg(encode(&state)?)
            .ignore()
            .cmd("HDEL")
            .arg(&key)
            .arg("body")
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(state.ttl_ms.max(1))
            .ignore();
        // A job finished before any claim keeps its entry; the claim that meets it later
        // deletes it.
        if let Some(entry) = &entry {
            let stream = stream_key(&state.endpoint);
            writes.xack(&stream, GROUP, &[entry]).ignore();
            writes.xdel(&stream, &[entry]).ignore();
        }
        writes.query_async::<()>(&mut conn).await.map_err(storage)?;
        self.local().entries.remove(id);
        Ok(())
    }

    async fn read_state(&self, id: &str) -> Result<Option<JobState>, QueueError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(job_key(id))
            .arg("state")
            .query_async(&mut self.conn())
            .await
            .map_err(storage)?;
        raw.as_deref().map(decode).transpose()
    }

    /// The stream's length and this queue's group, read together; `None` without a stream.
    async fn group_info(
        &self,
        stream: &str,
    ) -> Result<Option<(u64, Option<StreamInfoGroup>)>, QueueError> {
        let mut replies: Vec<RedisResult<Value>> = redis::pipe()
            .atomic()
            .ignore_errors()
            .cmd("XLEN")
            .arg(stream)
            .cmd("XINFO")
            .arg("GROUPS")
            .arg(stream)
            .query_async(&mut self.conn())
            .await
            .map_err(storage)?;
        let (Some(groups), Some(len)) = (replies.pop(), replies.pop()) else {
            return Err(QueueError::Storage("short reply to XLEN, XINFO".into()));
        };
        let len: u64 = redis::from_redis_value(len.map_err(storage)?).map_err(storage)?;
        let groups = match groups {
            Ok(groups) => groups,
            // XINFO fails on a missing stream, which XLEN reports as empty.
            Err(_) if len == 0 => return Ok(None),
            Err(err) => return Err(storage(err)),
        };
        let groups: StreamInfoGroupsReply = redis::from_redis_value(groups).map_err(storage)?;
        let group = groups.groups.into_iter().find(|g| g.name == GROUP);
        Ok(Some((len, group)))
    }

    async fn read_depth(&self, endpoint: &str) -> Result<u64, QueueError> {
        Ok(match self.group_info(&stream_key(endpoint)).await? {
            None => 0,
            Some((len, None)) => len,
            // Without `lag` (Redis before 7, or when Redis cannot tell): finished entries
            // are deleted, so the stream holds exactly the waiting and the claimed ones.
            Some((len, Some(group))) => match group.lag {
                Some(lag) => lag as u64,
                None => len.saturating_sub(group.pending as u64),
            },
        })
    }

    async fn read_oldest(&self, endpoint: &str) -> Result<Option<u64>, QueueError> {
        let stream = stream_key(endpoint);
        let after = match self.group_info(&stream).await? {
            None => return Ok(None),
            Some((_, None)) => "-".to_string(),
            Some((_, Some(group))) => format!("({}", group.last_delivered_id),
        };
        let range: StreamRangeReply = redis::cmd("XRANGE")
            .arg(&stream)
            .arg(after)
            .arg("+")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut self.conn())
            .await
            .map_err(storage)?;
        let Some(first) = range.ids.into_iter().next() else {
            return Ok(None);
        };
        let state = match first.get::<String>("id") {
            Some(id) => self.read_state(&id).await?,
            None => None,
        };
        // The entry id's time is Redis's clock at intake: close enough when the job has
        // just gone.
        Ok(state
            .map(|s| s.submitted_at_ms)
            .or_else(|| entry_ms(&first.id)))
    }

    async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &str,
        key: &str,
        args: &[&str],
    ) -> Result<T, QueueError> {
        redis::cmd("EVAL")
            .arg(script)
            .arg(1)
            .arg(key)
            .arg(args)
            .query_async(&mut self.conn())
            .await
            .map_err(storage)
    }
}

/// What became of the job an idempotency key names, while waiting for it.
enum KeyOwner {
    /// It is stored.
    Job,
    /// The key expired, was released or names another job now.
    Changed,
    /// Still not stored past the deadline: its writer is gone.
    Missing,
}

impl JobQueue for RedisQueue {
    fn enqueue(&self, job: NewJob) -> QueueFuture<'_, Enqueued> {
        Box::pin(self.enqueue_job(job))
    }

    fn claim(&self, endpoint: &str, max: usize) -> QueueFuture<'_, Vec<Claimed>> {
        let endpoint = endpoint.to_string();
        Box::pin(async move { self.claim_jobs(&endpoint, max).await })
    }

    fn retry(&self, id: &str) -> QueueFuture<'_, u32> {
        let id = id.to_string();
        Box::pin(async move { self.retry_job(&id).await })
    }

    fn touch(&self, endpoint: &str, ids: &[String]) -> QueueFuture<'_, ()> {
        let endpoint = endpoint.to_string();
        let ids = ids.to_vec();
        Box::pin(async move { self.touch_jobs(&endpoint, &ids).await })
    }

    fn finish(&self, id: &str, status: JobStatus) -> QueueFuture<'_, ()> {
        let id = id.to_string();
        Box::pin(async move { self.finish_job(&id, status).await })
    }

    fn state(&self, id: &str) -> QueueFuture<'_, Option<JobState>> {
        let id = id.to_string();
        Box::pin(async move { self.read_state(&id).await })
    }

    fn depth(&self, endpoint: &str) -> QueueFuture<'_, u64> {
        let endpoint = endpoint.to_string();
        Box::pin(async move { self.read_depth(&endpoint).await })
    }

    fn oldest_waiting(&self, endpoint: &str) -> QueueFuture<'_, Option<u64>> {
        let endpoint = endpoint.to_string();
        Box::pin(async move { self.read_oldest(&endpoint).await })
    }

    fn sweep(&self) -> QueueFuture<'_, u64> {
        // Finished jobs and idempotency keys carry their own expiry.
        Box::pin(std::future::ready(Ok(0)))
    }
}

fn stream_key(endpoint: &str) -> String {
    format!("portico:{endpoint}:jobs")
}

fn job_key(id: &str) -> String {
    format!("portico:job:{id}")
}

fn idem_key(endpoint: &str, key: &str) -> String {
    format!("portico:{endpoint}:idem:{key}")
}

/// A consumer name no other process uses, readable in `XINFO CONSUMERS`.
fn consumer_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!(
        "portico-{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// The millisecond part of a stream entry id (`<ms>-<seq>`).
fn entry_ms(entry: &str) -> Option<u64> {
    entry.split('-').next()?.parse().ok()
}

fn storage(err: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(err.to_string())
}

fn encode(state: &JobState) -> Result<String, QueueError> {
    serde_json::to_string(state).map_err(storage)
}

fn decode(raw: &str) -> Result<JobState, QueueError> {
    serde_json::from_str(raw).map_err(storage)
}

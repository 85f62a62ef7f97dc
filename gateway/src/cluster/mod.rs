//! Several Portico replicas as one deployment, through Redis (`[cluster]`, DESIGN.md §7):
//! demand is summed over the replicas, one replica — the leader, holding a Redis lease —
//! actuates the scaler's decisions, and operators' orders given to any replica reach all.
//!
//! What lives in Redis (every key starts with `cluster.key_prefix`, `portico` by default):
//!
//! | key | what | written by |
//! |---|---|---|
//! | `{p}:demand:{replica}` | JSON `{endpoint: {inflight, pending, arrivals}}`, TTL 3 ticks | every replica, each tick |
//! | `{p}:replicas` | set of replica ids (dead ones removed by readers) | every replica |
//! | `{p}:leader` | `{replica}:{epoch}`, TTL `lease_seconds` | the leader (`SET NX PX`, renewed each tick) |
//! | `{p}:leader:epoch` | the fencing token, incremented by each new leader | a new leader |
//! | `{p}:workers:{endpoint}` | JSON list of the ready process workers' addresses, TTL 3 ticks | the leader |
//! | `{p}:mode:{endpoint}` | JSON `{"mode": "auto" \| "manual" \| "stopped", "workers"?}` | the replica given the order |
//! | `{p}:scaling:{endpoint}` | JSON: scaling settings changed through the admin API, and the file's they were changed from | the replica given the change |
//! | `{p}:events:{endpoint}` | the shared event timeline: the last 1,000 events as JSON, numbered by `…:seq` | every replica, as it records events |
//!
//! Channels: `{p}:wake` (`<endpoint> <replica>`: a follower holds requests for an endpoint
//! at zero), `{p}:orders` (`<endpoint> <replica>`: its mode or scaling settings changed),
//! `{p}:workers` (an endpoint id whose worker list changed).
//!
//! Failure: when Redis cannot be reached every replica decides and actuates alone, as a
//! single Portico would, logs it once and shows `portico_cluster_redis_up 0`; when Redis is
//! back one leader is elected again and the others hand back their process workers.
//!
//! Layout:
//! - `sync`: the tick: publish this replica's demand, read the others', hold or seek the
//!   lease, publish or adopt process workers.
//! - `listen`: the pub/sub subscriber: wakes, orders, worker changes.
//! - `state`: [`AdminState`](crate::admin_state::AdminState) in Redis: mode, scaling
//!   settings, the shared event timeline.

mod listen;
mod state;
mod sync;

use std::collections::HashMap;
use std::ops::Add;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config;
use crate::endpoint::Endpoint;
use crate::pipeline::Shared;
use crate::worker::Worker;

/// How often demand is published and the lease renewed (at most; a short lease ticks
/// faster: three times per lease).
const TICK: Duration = Duration::from_secs(1);

/// One replica's demand on one endpoint, as the scaler counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Demand {
    /// Requests in flight on the endpoint's workers.
    pub inflight: u64,
    /// Requests held for a worker, and async jobs waiting for one.
    pub pending: u64,
    /// Requests that arrived since the previous tick.
    pub arrivals: u64,
}

impl Add for Demand {
    type Output = Demand;
    fn add(self, other: Demand) -> Demand {
        Demand {
            inflight: self.inflight + other.inflight,
            pending: self.pending + other.pending,
            arrivals: self.arrivals + other.arrivals,
        }
    }
}

/// This replica's view of the deployment.
pub struct Cluster {
    settings: config::Cluster,
    keys: Keys,
    client: redis::Client,
    /// The connection, once made (the sync task makes and remakes it).
    conn: Mutex<Option<ConnectionManager>>,
    leader: AtomicBool,
    /// The fencing token of this replica's lease (0 when it does not lead).
    epoch: AtomicU64,
    redis_up: AtomicBool,
    /// Redis was found unreachable: this replica decides and actuates alone. (Before the
    /// first answer or failure it does neither: it may be joining a deployment that runs.)
    alone: AtomicBool,
    state: Mutex<State>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("replica_id", &self.settings.replica_id)
            .field("leader", &self.leads())
            .finish_non_exhaustive()
    }
}

/// What the sync task learnt and the controllers reported.
#[derive(Default)]
struct State {
    /// This replica's demand per endpoint, from its controllers' last samples.
    local: HashMap<String, Demand>,
    /// The other live replicas' demand per endpoint, summed.
    others: HashMap<String, Demand>,
    /// The live replicas, this one included.
    replicas: Vec<String>,
    /// The replica holding the lease, if any.
    leader_id: Option<String>,
    /// Workers of the leader's process replicas adopted per endpoint (followers only),
    /// with the endpoint they were added to.
    adopted: HashMap<String, (Weak<Endpoint>, Vec<Arc<Worker>>)>,
    /// The warning that Redis does not answer was logged (until it answers again).
    down_said: bool,
    /// What this replica last published per endpoint as the leader.
    published: HashMap<String, Vec<String>>,
}

/// Every Redis key and channel of the deployment.
#[derive(Debug)]
struct Keys {
    prefix: String,
}

impl Keys {
    fn demand(&self, replica: &str) -> String {
        format!("{}:demand:{replica}", self.prefix)
    }
    fn replicas(&self) -> String {
        format!("{}:replicas", self.prefix)
    }
    fn leader(&self) -> String {
        format!("{}:leader", self.prefix)
    }
    fn epoch(&self) -> String {
        format!("{}:leader:epoch", self.prefix)
    }
    fn workers(&self, endpoint: &str) -> String {
        format!("{}:workers:{endpoint}", self.prefix)
    }
    fn mode(&self, endpoint: &str) -> String {
        format!("{}:mode:{endpoint}", self.prefix)
    }
    fn scaling(&self, endpoint: &str) -> String {
        format!("{}:scaling:{endpoint}", self.prefix)
    }
    fn events(&self, endpoint: &str) -> String {
        format!("{}:events:{endpoint}", self.prefix)
    }
    fn events_seq(&self, endpoint: &str) -> String {
        format!("{}:events:{endpoint}:seq", self.prefix)
    }
    fn wake_channel(&self) -> String {
        format!("{}:wake", self.prefix)
    }
    fn orders_channel(&self) -> String {
        format!("{}:orders", self.prefix)
    }
    fn workers_channel(&self) -> String {
        format!("{}:workers", self.prefix)
    }
}

impl Cluster {
    /// This replica in the deployment `settings` describe. Nothing is connected yet:
    /// [`run`] connects, and keeps trying while Redis is away.
    pub fn new(settings: config::Cluster) -> Result<Arc<Cluster>, redis::RedisError> {
        let client = redis::Client::open(settings.redis.as_str())?;
        let keys = Keys {
            prefix: settings.key_prefix.clone(),
        };
        crate::metrics::cluster_redis_up(false);
        crate::metrics::cluster_leader(false);
        Ok(Arc::new(Cluster {
            settings,
            keys,
            client,
            conn: Mutex::new(None),
            leader: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            redis_up: AtomicBool::new(false),
            alone: AtomicBool::new(false),
            state: Mutex::default(),
        }))
    }

    /// This replica's id.
    pub fn replica_id(&self) -> &str {
        &self.settings.replica_id
    }

    /// Whether this replica's controllers actuate: it holds the lease, or Redis cannot be
    /// reached and every replica decides alone.
    pub fn leads(&self) -> bool {
        self.leader.load(Ordering::Relaxed) || self.alone.load(Ordering::Relaxed)
    }

    /// Records this replica's demand on `endpoint` (published at the next tick) and returns
    /// the other replicas' demand as last read.
    pub fn report(&self, endpoint: &str, local: Demand) -> Demand {
        let mut state = self.lock();
        state.local.insert(endpoint.to_string(), local);
        state.others.get(endpoint).copied().unwrap_or_default()
    }

    /// Tells the leader that this replica holds requests for `endpoint`, so that it scales
    /// up at once instead of at its next tick. Does nothing on the leader.
    pub fn wake(self: &Arc<Self>, endpoint: &str) {
        if self.leads() {
            return;
        }
        let cluster = Arc::clone(self);
        let endpoint = endpoint.to_string();
        tokio::spawn(async move {
            let Some(mut conn) = cluster.connection() else {
                return;
            };
            let sent: redis::RedisResult<()> = redis::cmd("PUBLISH")
                .arg(cluster.keys.wake_channel())
                .arg(format!("{endpoint} {}", cluster.replica_id()))
                .query_async(&mut conn)
                .await;
            if let Err(err) = sent {
                tracing::debug!(endpoint, error = %err, "cluster: could not publish a wake");
            }
        });
    }

    /// The deployment as this replica sees it, for `GET /admin/cluster`.
    pub fn describe(&self) -> serde_json::Value {
        let state = self.lock();
        serde_json::json!({
            "replica_id": self.settings.replica_id,
            "leader": self.leader.load(Ordering::Relaxed),
            "actuating": self.leads(),
            "leader_id": state.leader_id,
            "epoch": self.epoch.load(Ordering::Relaxed),
            "redis_up": self.redis_up.load(Ordering::Relaxed),
            "replicas": state.replicas,
            "lease_seconds": self.settings.lease.as_secs(),
        })
    }

    fn connection(&self) -> Option<ConnectionManager> {
        self.conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn tick(&self) -> Duration {
        TICK.min(self.settings.lease / 3)
    }

    /// How long published demand and worker lists live without renewal: three ticks.
    fn ttl(&self) -> Duration {
        self.tick() * 3
    }

    /// The connection, made now if there is none yet (it reconnects by itself after).
    async fn connected_or_connect(&self) -> redis::RedisResult<ConnectionManager> {
        if let Some(conn) = self.connection() {
            return Ok(conn);
        }
        let conn = self.connect().await?;
        let mut slot = self.conn.lock().unwrap_or_else(PoisonError::into_inner);
        // Another task may have connected meanwhile: keep one connection.
        Ok(slot.get_or_insert(conn).clone())
    }

    async fn connect(&self) -> redis::RedisResult<ConnectionManager> {
        let config = ConnectionManagerConfig::new()
            .set_response_timeout(Some(self.tick()))
            .set_connection_timeout(Some(self.tick()))
            .set_number_of_retries(1)
            .set_max_delay(self.tick());
        ConnectionManager::new_with_config(self.client.clone(), config).await
    }
}

/// Runs the replica's side of the cluster until `stop` turns true: the tick and the
/// subscriber.
pub async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>, stop: watch::Receiver<bool>) {
    let listener = tokio::spawn(listen::run(
        Arc::clone(&cluster),
        Arc::clone(&shared),
        stop.clone(),
    ));
    sync::run(Arc::clone(&cluster), shared, stop).await;
    listener.abort();
    sync::resign(&cluster).await;
}

//! The cluster tick: publish this replica's demand and read the others', hold or seek the
//! scaler lease, and — for process workers — publish the leader's ready workers or adopt
//! them on followers.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::uri::Authority;
use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use super::{Cluster, Demand};
use crate::config::WorkerKind;
use crate::endpoint::{Endpoint, next_worker_id};
use crate::pipeline::Shared;
use crate::worker::Worker;

/// Takes the lease when nobody holds it: a new fencing token, then the lease with it.
const ACQUIRE: &str = r"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local epoch = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. epoch, 'PX', ARGV[2])
return epoch";

/// Extends the lease when this replica still holds it.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0";

/// Gives the lease up when this replica holds it.
const RESIGN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0";

/// Ticks until `stop` turns true.
pub async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(cluster.tick());
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        let conn = match cluster.connected_or_connect().await {
            Ok(conn) => conn,
            Err(err) => {
                went_down(&cluster, &shared, &err);
                continue;
            }
        };
        match round(&cluster, &shared, conn).await {
            Ok(()) => came_up(&cluster),
            Err(err) => went_down(&cluster, &shared, &err),
        }
    }
}

/// At shutdown: hands the lease over at once and stops counting this replica's demand.
pub async fn resign(cluster: &Cluster) {
    let Some(mut conn) = cluster.connection() else {
        return;
    };
    let me = cluster.replica_id();
    let mut pipe = redis::pipe();
    pipe.cmd("DEL")
        .arg(cluster.keys.demand(me))
        .ignore()
        .cmd("SREM")
        .arg(cluster.keys.replicas())
        .arg(me)
        .ignore();
    if cluster.leader.load(Ordering::Relaxed) {
        pipe.cmd("EVAL")
            .arg(RESIGN)
            .arg(1)
            .arg(cluster.keys.leader())
            .arg(lease_value(cluster))
            .ignore();
    }
    let done: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
    if let Err(err) = done {
        tracing::warn!(error = %err, "cluster: could not hand the lease over at shutdown");
    }
}

async fn round(
    cluster: &Cluster,
    shared: &Shared,
    mut conn: ConnectionManager,
) -> redis::RedisResult<()> {
    publish_demand(cluster, &mut conn).await?;
    read_demand(cluster, &mut conn).await?;
    hold_lease(cluster, &mut conn).await?;
    share_workers(cluster, shared, &mut conn).await
}

async fn publish_demand(cluster: &Cluster, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    let me = cluster.replica_id();
    let demand = serde_json::to_string(&cluster.lock().local).unwrap_or_else(|_| "{}".into());
    redis::pipe()
        .cmd("SET")
        .arg(cluster.keys.demand(me))
        .arg(demand)
        .arg("PX")
        .arg(millis(cluster.ttl()))
        .ignore()
        .cmd("SADD")
        .arg(cluster.keys.replicas())
        .arg(me)
        .ignore()
        .query_async(conn)
        .await
}

/// Sums the other live replicas' demand per endpoint; a replica whose demand key expired
/// (it died, or lost Redis) is dropped from the set.
async fn read_demand(cluster: &Cluster, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    let mut replicas: Vec<String> = redis::cmd("SMEMBERS")
        .arg(cluster.keys.replicas())
        .query_async(conn)
        .await?;
    replicas.sort();
    let keys: Vec<String> = replicas.iter().map(|r| cluster.keys.demand(r)).collect();
    let published: Vec<Option<String>> = if keys.is_empty() {
        Vec::new()
    } else {
        redis::cmd("MGET").arg(&keys).query_async(conn).await?
    };
    let mut others: HashMap<String, Demand> = HashMap::new();
    let mut live = Vec::with_capacity(replicas.len());
    let mut dead = Vec::new();
    for (replica, text) in replicas.into_iter().zip(published) {
        let Some(text) = text else {
            dead.push(replica);
            continue;
        };
        if replica != cluster.replica_id() {
            let demand: HashMap<String, Demand> = serde_json::from_str(&text).unwrap_or_default();
            for (endpoint, demand) in demand {
                let sum = others.entry(endpoint).or_default();
                *sum = *sum + demand;
            }
        }
        live.push(replica);
    }
    if !dead.is_empty() {
        let _: () = redis::cmd("SREM")
            .arg(cluster.keys.replicas())
            .arg(&dead)
            .query_async(conn)
            .await?;
    }
    crate::metrics::cluster_replicas(live.len());
    let mut state = cluster.lock();
    state.others = others;
    state.replicas = live;
    Ok(())
}

/// Renews the lease this replica holds, or takes it when nobody does.
async fn hold_lease(cluster: &Cluster, conn: &mut ConnectionManager) -> redis::RedisResult<()> {
    let lease = millis(cluster.settings.lease);
    let was_leader = cluster.leader.load(Ordering::Relaxed);
    if was_leader {
        let renewed: i64 = redis::cmd("EVAL")
            .arg(RENEW)
            .arg(1)
            .arg(cluster.keys.leader())
            .arg(lease_value(cluster))
            .arg(lease)
            .query_async(conn)
            .await?;
        if renewed == 0 {
            cluster.leader.store(false, Ordering::Relaxed);
            cluster.epoch.store(0, Ordering::Relaxed);
            crate::metrics::cluster_leader(false);
            tracing::warn!(
                replica = cluster.replica_id(),
                "cluster: lost the scaler lease; another replica actuates now"
            );
        }
    } else {
        let epoch: u64 = redis::cmd("EVAL")
            .arg(ACQUIRE)
            .arg(2)
            .arg(cluster.keys.leader())
            .arg(cluster.keys.epoch())
            .arg(cluster.replica_id())
            .arg(lease)
            .query_async(conn)
            .await?;
        if epoch > 0 {
            cluster.epoch.store(epoch, Ordering::Relaxed);
            cluster.leader.store(true, Ordering::Relaxed);
            crate::metrics::cluster_leader(true);
            tracing::info!(
                replica = cluster.replica_id(),
                epoch,
                "cluster: took the scaler lease; this replica actuates"
            );
        }
    }
    let holder: Option<String> = redis::cmd("GET")
        .arg(cluster.keys.leader())
        .query_async(conn)
        .await?;
    cluster.lock().leader_id = holder
        .as_deref()
        .and_then(|value| value.rsplit_once(':'))
        .map(|(replica, _)| replica.to_string());
    Ok(())
}

/// Process workers run on the leader's host: it publishes their addresses, and the other
/// replicas route to them. (Kubernetes-style workers every replica discovers itself.)
async fn share_workers(
    cluster: &Cluster,
    shared: &Shared,
    conn: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let routes = shared.routes.load();
    let managed: Vec<&Arc<Endpoint>> = routes
        .endpoints()
        .iter()
        .filter(|e| matches!(e.config.workers.kind, WorkerKind::Process { .. }))
        .collect();
    if cluster.leader.load(Ordering::Relaxed) {
        for endpoint in &managed {
            abandon(cluster, endpoint.id());
            let ready: Vec<String> = endpoint
                .workers()
                .iter()
                .filter(|w| w.replica_id().is_some() && w.available())
                .map(|w| w.label().to_string())
                .collect();
            let changed = cluster.lock().published.get(endpoint.id()) != Some(&ready);
            let text = serde_json::to_string(&ready).unwrap_or_else(|_| "[]".into());
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(cluster.keys.workers(endpoint.id()))
                .arg(text)
                .arg("PX")
                .arg(millis(cluster.ttl()))
                .ignore();
            if changed {
                pipe.cmd("PUBLISH")
                    .arg(cluster.keys.workers_channel())
                    .arg(endpoint.id())
                    .ignore();
            }
            let () = pipe.query_async(conn).await?;
            cluster
                .lock()
                .published
                .insert(endpoint.id().to_string(), ready);
        }
        return Ok(());
    }
    cluster.lock().published.clear();
    for endpoint in managed {
        adopt_published(cluster, endpoint, conn).await?;
    }
    Ok(())
}

/// Reads the leader's published workers of `endpoint` and routes to exactly those.
pub(super) async fn adopt_published(
    cluster: &Cluster,
    endpoint: &Arc<Endpoint>,
    conn: &mut ConnectionManager,
) -> redis::RedisResult<()> {
    let text: Option<String> = redis::cmd("GET")
        .arg(cluster.keys.workers(endpoint.id()))
        .query_async(conn)
        .await?;
    let addresses: Vec<String> = text
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    adopt(cluster, endpoint, &addresses);
    Ok(())
}

/// Makes the adopted workers of `endpoint` exactly `addresses`.
fn adopt(cluster: &Cluster, endpoint: &Arc<Endpoint>, addresses: &[String]) {
    let mut state = cluster.lock();
    let adopted = state.adopted_for(endpoint);
    let mut added = false;
    adopted.retain(|worker| {
        let keep = addresses.iter().any(|a| a == worker.label());
        if !keep {
            endpoint.remove_worker(worker);
        }
        keep
    });
    for address in addresses {
        if adopted.iter().any(|w| w.label() == address) {
            continue;
        }
        let Ok(authority) = address.parse::<Authority>() else {
            tracing::warn!(
                endpoint = endpoint.id(),
                address,
                "cluster: the leader published an address that is not host:port"
            );
            continue;
        };
        let worker = Arc::new(Worker::new(next_worker_id(), authority));
        endpoint.add_worker(Arc::clone(&worker));
        adopted.push(worker);
        added = true;
    }
    drop(state);
    if added {
        endpoint.control.worker_added();
    }
}

/// Stops routing to the workers adopted for `endpoint` (this replica leads now and runs
/// its own).
fn abandon(cluster: &Cluster, endpoint: &str) {
    let Some((owner, adopted)) = cluster.lock().adopted.remove(endpoint) else {
        return;
    };
    if let Some(owner) = owner.upgrade() {
        for worker in &adopted {
            owner.remove_worker(worker);
        }
    }
}

impl super::State {
    /// The workers adopted for this very endpoint (a reload's replacement starts afresh).
    fn adopted_for(&mut self, endpoint: &Arc<Endpoint>) -> &mut Vec<Arc<Worker>> {
        let entry = self
            .adopted
            .entry(endpoint.id().to_string())
            .or_insert_with(|| (Arc::downgrade(endpoint), Vec::new()));
        if !std::ptr::eq(entry.0.as_ptr(), Arc::as_ptr(endpoint)) {
            *entry = (Arc::downgrade(endpoint), Vec::new());
        }
        &mut entry.1
    }
}

fn came_up(cluster: &Cluster) {
    cluster.alone.store(false, Ordering::Relaxed);
    if !cluster.redis_up.swap(true, Ordering::Relaxed) {
        cluster.lock().down_said = false;
        crate::metrics::cluster_redis_up(true);
        tracing::info!(
            replica = cluster.replica_id(),
            "cluster: Redis answers; demand is shared and one replica actuates"
        );
    }
}

/// Redis did not answer: every replica decides alone until it does (said once).
fn went_down(cluster: &Cluster, shared: &Shared, err: &redis::RedisError) {
    cluster.redis_up.store(false, Ordering::Relaxed);
    cluster.alone.store(true, Ordering::Relaxed);
    if cluster.leader.swap(false, Ordering::Relaxed) {
        crate::metrics::cluster_leader(false);
    }
    cluster.epoch.store(0, Ordering::Relaxed);
    crate::metrics::cluster_redis_up(false);
    let said = {
        let mut state = cluster.lock();
        state.others.clear();
        state.leader_id = None;
        std::mem::replace(&mut state.down_said, true)
    };
    // Alone, this replica runs its own workers and routes to them only.
    for endpoint in shared.routes.load().endpoints() {
        abandon(cluster, endpoint.id());
    }
    if !said {
        tracing::warn!(
            replica = cluster.replica_id(),
            error = %err,
            "cluster: Redis does not answer; this replica decides and actuates alone"
        );
    }
}

fn lease_value(cluster: &Cluster) -> String {
    format!(
        "{}:{}",
        cluster.replica_id(),
        cluster.epoch.load(Ordering::Relaxed)
    )
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

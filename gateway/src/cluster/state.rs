//! The cluster's [`AdminState`]: each endpoint's mode and changed scaling settings in Redis
//! keys (every change announced on the orders channel, so the other replicas apply it at
//! once), and one event timeline per endpoint that every replica appends to.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::Cluster;
use crate::admin_state::{AdminState, Saved, SavedScaling, SharedMode, StateError};
use crate::control::Event;
use crate::control::events::{CAPACITY, Sink, newest_after};
use crate::endpoint::Endpoint;

/// Appends an event (ARGV[1], JSON) with the endpoint's next sequence number, keeping the
/// newest ARGV[2].
const APPEND: &str = r"
local event = cjson.decode(ARGV[1])
event['seq'] = redis.call('INCR', KEYS[2])
redis.call('RPUSH', KEYS[1], cjson.encode(event))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
return event['seq']";

fn failed(err: redis::RedisError) -> StateError {
    StateError(format!("cluster Redis: {err}"))
}

impl Cluster {
    /// Sends each event of `endpoint` recorded on this replica to the shared timeline.
    pub fn event_sink(self: &Arc<Self>, endpoint: &str) -> Sink {
        let cluster = Arc::downgrade(self);
        let endpoint = endpoint.to_string();
        let runtime = tokio::runtime::Handle::current();
        Box::new(move |event: &Event| {
            let Some(cluster) = cluster.upgrade() else {
                return;
            };
            let mut event = event.clone();
            event.replica_id = Some(cluster.replica_id().to_string());
            let endpoint = endpoint.clone();
            runtime.spawn(async move {
                let Some(mut conn) = cluster.connection() else {
                    return;
                };
                let Ok(text) = serde_json::to_string(&event) else {
                    return;
                };
                let appended: redis::RedisResult<u64> = redis::cmd("EVAL")
                    .arg(APPEND)
                    .arg(2)
                    .arg(cluster.keys.events(&endpoint))
                    .arg(cluster.keys.events_seq(&endpoint))
                    .arg(text)
                    .arg(CAPACITY)
                    .query_async(&mut conn)
                    .await;
                if let Err(err) = appended {
                    tracing::debug!(endpoint, error = %err, "cluster: an event stayed local");
                }
            });
        })
    }

    async fn set_and_announce(
        &self,
        key: String,
        value: String,
        endpoint: &str,
    ) -> Result<(), StateError> {
        let mut conn = self.connected_or_connect().await.map_err(failed)?;
        redis::pipe()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .ignore()
            .cmd("PUBLISH")
            .arg(self.keys.orders_channel())
            .arg(format!("{endpoint} {}", self.replica_id()))
            .ignore()
            .query_async::<()>(&mut conn)
            .await
            .map_err(failed)
    }
}

impl AdminState for Cluster {
    fn load<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Saved, StateError>> {
        Box::pin(async move {
            let mut conn = self.connected_or_connect().await.map_err(failed)?;
            let (mode, scaling): (Option<String>, Option<String>) = redis::pipe()
                .cmd("GET")
                .arg(self.keys.mode(endpoint))
                .cmd("GET")
                .arg(self.keys.scaling(endpoint))
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            Ok(Saved {
                mode: mode.and_then(|text| serde_json::from_str(&text).ok()),
                scaling: scaling.and_then(|text| serde_json::from_str(&text).ok()),
            })
        })
    }

    fn save_mode<'a>(
        &'a self,
        endpoint: &'a str,
        mode: SharedMode,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let text = serde_json::to_string(&mode).map_err(|e| StateError(e.to_string()))?;
            self.set_and_announce(self.keys.mode(endpoint), text, endpoint)
                .await
        })
    }

    fn save_scaling<'a>(
        &'a self,
        endpoint: &'a str,
        scaling: SavedScaling,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(async move {
            let text = serde_json::to_string(&scaling).map_err(|e| StateError(e.to_string()))?;
            self.set_and_announce(self.keys.scaling(endpoint), text, endpoint)
                .await
        })
    }

    fn events<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>, StateError>> {
        Box::pin(async move {
            let mut conn = self.connected_or_connect().await.map_err(failed)?;
            let rows: Vec<String> = redis::cmd("LRANGE")
                .arg(self.keys.events(endpoint.id()))
                .arg(0)
                .arg(-1)
                .query_async(&mut conn)
                .await
                .map_err(failed)?;
            let events = rows.iter().filter_map(|row| serde_json::from_str(row).ok());
            Ok(newest_after(events, since, limit))
        })
    }
}

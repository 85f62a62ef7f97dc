//! The cluster's pub/sub subscriber: a follower's wake reaches the leader at once, an
//! order given to any replica reaches the others, and followers re-read the leader's
//! workers as soon as they change. After each (re)subscription it catches up on the orders
//! it may have missed.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::watch;

use super::{Cluster, sync};
use crate::admin_state;
use crate::endpoint::Endpoint;
use crate::pipeline::Shared;

/// Subscribes, and subscribes again after a lost connection, until `stop` turns true.
pub async fn run(cluster: Arc<Cluster>, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        if let Err(err) = listen(&cluster, &shared).await {
            tracing::debug!(error = %err, "cluster: subscription lost");
        }
        tokio::select! {
            () = tokio::time::sleep(cluster.tick()) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

async fn listen(cluster: &Cluster, shared: &Shared) -> redis::RedisResult<()> {
    let keys = &cluster.keys;
    let (wake, orders, workers) = (
        keys.wake_channel(),
        keys.orders_channel(),
        keys.workers_channel(),
    );
    // Catching up below reads the saved state through the shared connection.
    cluster.connected_or_connect().await?;
    let mut pubsub = cluster.client.get_async_pubsub().await?;
    pubsub
        .subscribe(&[wake.as_str(), orders.as_str(), workers.as_str()])
        .await?;
    for endpoint in shared.routes.load().endpoints() {
        admin_state::apply(cluster, endpoint).await;
    }
    let mut messages = pubsub.on_message();
    while let Some(message) = messages.next().await {
        let channel = message.get_channel_name().to_string();
        let payload: String = message.get_payload()?;
        // `<endpoint>` or `<endpoint> <replica that sent it>`.
        let (id, from) = payload.split_once(' ').unwrap_or((payload.as_str(), ""));
        let Some(endpoint) = find(shared, id) else {
            continue;
        };
        if channel == wake {
            if cluster.leader.load(std::sync::atomic::Ordering::Relaxed) {
                crate::metrics::cluster_wake_received(endpoint.id());
                tracing::debug!(endpoint = id, from, "cluster: woken by another replica");
                endpoint.control.wake();
            }
        } else if channel == orders {
            if from != cluster.replica_id() {
                admin_state::apply(cluster, &endpoint).await;
            }
        } else if channel == workers
            && !cluster.leader.load(std::sync::atomic::Ordering::Relaxed)
            && let Some(mut conn) = cluster.connection()
        {
            sync::adopt_published(cluster, &endpoint, &mut conn).await?;
        }
    }
    Ok(())
}

fn find(shared: &Shared, id: &str) -> Option<Arc<Endpoint>> {
    shared
        .routes
        .load()
        .endpoints()
        .iter()
        .find(|e| e.id() == id)
        .cloned()
}

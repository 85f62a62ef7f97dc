//! Workers that another system runs (`kind = "command"`), found by the gateway: a fixed
//! list of URLs (built with the endpoint; the health probes tell which are up), or the
//! addresses a DNS name lists, followed here. [`reconcile`] also serves the Kubernetes
//! EndpointSlice watch.
//!
//! Layout:
//! - `dns`: the small DNS client (A and AAAA over UDP).

pub mod dns;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};

use http::uri::Authority;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Discovery, WorkerKind};
use crate::endpoint::{Endpoint, next_worker_id};
use crate::health;
use crate::worker::Worker;

/// Follows the DNS name of a `command` endpoint with `dns` discovery until `stop` turns
/// true or the endpoint is gone; `None` for every other endpoint.
pub fn spawn(endpoint: &Arc<Endpoint>, stop: &watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let WorkerKind::Command {
        discovery: Discovery::Dns { .. },
        ..
    } = &endpoint.config.workers.kind
    else {
        return None;
    };
    Some(tokio::spawn(follow(Arc::downgrade(endpoint), stop.clone())))
}

async fn follow(endpoint: Weak<Endpoint>, mut stop: watch::Receiver<bool>) {
    let mut failing = false;
    loop {
        let Some(current) = endpoint.upgrade() else {
            return;
        };
        let WorkerKind::Command {
            discovery:
                Discovery::Dns {
                    name,
                    port,
                    server,
                    refresh,
                },
            ..
        } = &current.config.workers.kind
        else {
            return;
        };
        let refresh = *refresh;
        let server = match server {
            Some(server) => Ok(*server),
            None => dns::system_server(),
        };
        let resolved = match server {
            Ok(server) => dns::resolve(name, server).await,
            Err(err) => Err(err),
        };
        match resolved {
            Ok(addresses) => {
                if failing {
                    tracing::info!(endpoint = current.id(), name, "DNS answers again");
                    failing = false;
                }
                let found: BTreeSet<String> = addresses
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, *port).to_string())
                    .collect();
                reconcile(&current, &found, &stop);
            }
            // The last known workers stay: a DNS hiccup is no reason to refuse traffic.
            Err(err) if !failing => {
                tracing::warn!(endpoint = current.id(), name, error = %err, "DNS discovery failed; keeping the known workers");
                failing = true;
            }
            Err(_) => {}
        }
        drop(current);
        tokio::select! {
            () = tokio::time::sleep(refresh) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
    }
}

/// Makes the endpoint's workers exactly `found` (`ip:port` each): new ones are added (and
/// probed), gone ones removed; requests in flight on them finish.
pub(crate) fn reconcile(
    endpoint: &Endpoint,
    found: &BTreeSet<String>,
    stop: &watch::Receiver<bool>,
) {
    let workers = endpoint.workers();
    let known: BTreeSet<&str> = workers.iter().map(|w| w.label()).collect();
    let gone: Vec<Arc<Worker>> = workers
        .iter()
        .filter(|w| !found.contains(w.label()))
        .cloned()
        .collect();
    let new: Vec<&String> = found
        .iter()
        .filter(|a| !known.contains(a.as_str()))
        .collect();
    drop(workers);
    for worker in &gone {
        tracing::info!(
            endpoint = endpoint.id(),
            worker = worker.label(),
            "worker left DNS"
        );
        endpoint.remove_worker(worker);
    }
    let mut added = false;
    for address in new {
        let Ok(authority) = address.parse::<Authority>() else {
            continue;
        };
        tracing::info!(endpoint = endpoint.id(), worker = %address, "worker found in DNS");
        let worker = Arc::new(Worker::new(next_worker_id(), authority));
        endpoint.add_worker(Arc::clone(&worker));
        health::spawn_prober(&endpoint.config, &worker, stop);
        added = true;
    }
    if added {
        endpoint.control.worker_added();
    }
}

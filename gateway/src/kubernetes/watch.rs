//! The ready pods of a `kubernetes` endpoint: the EndpointSlices of its Service, listed and
//! then watched (each event applied at once), listed again when the watch ends or the API
//! says its version is gone. Every replica of a cluster follows them itself.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{Kube, KubeError};
use crate::config::WorkerKind;
use crate::discovery::reconcile;
use crate::endpoint::Endpoint;

/// Wait before listing again after a failure.
const BACKOFF: Duration = Duration::from_secs(2);
/// How long the API server keeps one watch open (it ends it then; Portico lists again).
const WATCH_SECONDS: u64 = 290;

/// Follows the EndpointSlices of a `kubernetes` endpoint until `stop` turns true or the
/// endpoint is gone; `None` for other endpoints.
pub fn spawn(endpoint: &Arc<Endpoint>, stop: &watch::Receiver<bool>) -> Option<JoinHandle<()>> {
    let WorkerKind::Kubernetes(settings) = &endpoint.config.workers.kind else {
        return None;
    };
    let kube = match Kube::new(settings) {
        Ok(kube) => kube,
        Err(err) => {
            tracing::error!(endpoint = endpoint.id(), error = %err, "kubernetes: cannot follow the workers");
            return None;
        }
    };
    let port = settings.port;
    Some(tokio::spawn(follow(
        Arc::downgrade(endpoint),
        kube,
        port,
        stop.clone(),
    )))
}

/// The ready addresses of each EndpointSlice, by slice name.
type Slices = HashMap<String, Vec<String>>;

async fn follow(endpoint: Weak<Endpoint>, kube: Kube, port: u16, stop: watch::Receiver<bool>) {
    let mut failing = false;
    let mut stopped = stop.clone();
    loop {
        let outcome = tokio::select! {
            outcome = list_and_watch(&endpoint, &kube, port, &stop) => outcome,
            _ = stopped.wait_for(|stopped| *stopped) => return,
        };
        match outcome {
            Ok(Ended::Gone) => return,
            Ok(Ended::Relist) => failing = false,
            Err(err) => {
                if !failing {
                    let id = endpoint
                        .upgrade()
                        .map(|e| e.id().to_string())
                        .unwrap_or_default();
                    tracing::warn!(endpoint = id, error = %err, "kubernetes: cannot follow the EndpointSlices; keeping the known workers");
                }
                failing = true;
                tokio::select! {
                    () = tokio::time::sleep(BACKOFF) => {}
                    _ = stopped.wait_for(|stopped| *stopped) => return,
                }
            }
        }
    }
}

enum Ended {
    /// The watch ended (timeout, or the version is too old): list again.
    Relist,
    /// The endpoint no longer exists.
    Gone,
}

async fn list_and_watch(
    endpoint: &Weak<Endpoint>,
    kube: &Kube,
    port: u16,
    stop: &watch::Receiver<bool>,
) -> Result<Ended, KubeError> {
    let path = kube.slices_path();
    let request = kube
        .request(reqwest::Method::GET, &path)
        .timeout(Duration::from_secs(10));
    let list = kube.json("GET", &path, request).await?;
    let mut version = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut slices: Slices = list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|slice| ready(slice, port))
                .collect()
        })
        .unwrap_or_default();
    if !apply(endpoint, &slices, stop) {
        return Ok(Ended::Gone);
    }

    let watch_path = format!(
        "{path}&watch=1&allowWatchBookmarks=true&timeoutSeconds={WATCH_SECONDS}&resourceVersion={version}"
    );
    let mut response = kube
        .request(reqwest::Method::GET, &watch_path)
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status().as_u16();
        return Err(KubeError::Status {
            method: "GET",
            path: watch_path,
            status,
            message: response.text().await.unwrap_or_default(),
        });
    }
    let mut pending = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(event) = serde_json::from_slice::<Value>(&line) else {
                continue;
            };
            let object = &event["object"];
            if let Some(v) = object["metadata"]["resourceVersion"].as_str() {
                version.clear();
                version.push_str(v);
            }
            let name = object["metadata"]["name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            match event["type"].as_str() {
                Some("ADDED" | "MODIFIED") => {
                    if let Some((name, addresses)) = ready(object, port) {
                        slices.insert(name, addresses);
                    }
                }
                Some("DELETED") => {
                    slices.remove(&name);
                }
                // 410 Gone and other errors: list again from scratch.
                Some("ERROR") => return Ok(Ended::Relist),
                _ => continue,
            }
            if !apply(endpoint, &slices, stop) {
                return Ok(Ended::Gone);
            }
        }
    }
    Ok(Ended::Relist)
}

/// Routes the endpoint to exactly the ready addresses of `slices`; false when the
/// endpoint is gone.
fn apply(endpoint: &Weak<Endpoint>, slices: &Slices, stop: &watch::Receiver<bool>) -> bool {
    let Some(endpoint) = endpoint.upgrade() else {
        return false;
    };
    let found: BTreeSet<String> = slices.values().flatten().cloned().collect();
    reconcile(&endpoint, &found, stop);
    true
}

/// A slice's name and the `ip:port` of its ready endpoints (an endpoint without a `ready`
/// condition counts as ready, as Kubernetes defines it).
fn ready(slice: &Value, port: u16) -> Option<(String, Vec<String>)> {
    let name = slice["metadata"]["name"].as_str()?.to_string();
    let addresses = slice["endpoints"]
        .as_array()
        .map(|endpoints| {
            endpoints
                .iter()
                .filter(|e| e["conditions"]["ready"].as_bool() != Some(false))
                .filter_map(|e| e["addresses"].as_array())
                .flatten()
                .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
                .map(|ip| SocketAddr::new(ip, port).to_string())
                .collect()
        })
        .unwrap_or_default();
    Some((name, addresses))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ready and condition-less endpoints count; not-ready ones and bad addresses do not.
    #[test]
    fn ready_addresses_of_a_slice() {
        let slice = serde_json::json!({
            "metadata": {"name": "vllm-abc"},
            "endpoints": [
                {"addresses": ["10.0.0.7"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.8"], "conditions": {"ready": false}},
                {"addresses": ["fd00::9"]},
                {"addresses": ["not-an-ip"]},
            ],
        });
        let (name, addresses) = ready(&slice, 8000).unwrap();
        assert_eq!(name, "vllm-abc");
        assert_eq!(addresses, ["10.0.0.7:8000", "[fd00::9]:8000"]);
        assert_eq!(
            ready(&serde_json::json!({"metadata": {"name": "x"}}), 1)
                .unwrap()
                .1
                .len(),
            0
        );
    }
}

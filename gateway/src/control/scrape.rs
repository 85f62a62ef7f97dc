//! Custom scaling metrics: each tick, every ready worker's `metrics_path` is fetched and the
//! configured gauge (`vllm:num_requests_waiting`, `sglang:num_queue_reqs`, …) summed.

use std::time::Duration;

use http_body_util::{BodyExt as _, Limited};

use crate::endpoint::Endpoint;
use crate::upstream::control_get;
use crate::worker::Worker;

/// A metrics page larger than this is not read (vLLM's is tens of KiB).
const MAX_PAGE_BYTES: usize = 4 << 20;

/// The gauge `name` summed over the endpoint's ready workers; `None` when no worker could
/// be scraped or none exposes it (the tick then adds nothing to the average).
pub async fn custom_metric(endpoint: &Endpoint, name: &str) -> Option<f64> {
    let workers: Vec<_> = endpoint
        .workers()
        .iter()
        .filter(|w| w.available())
        .cloned()
        .collect();
    let path = &endpoint.config.workers.metrics_path;
    let timeout = endpoint.config.health.timeout;
    let pages =
        futures_util::future::join_all(workers.iter().map(|worker| fetch(worker, path, timeout)))
            .await;
    let values: Vec<f64> = pages
        .iter()
        .flatten()
        .filter_map(|page| scaler::exposition::gauge_sum(page, name))
        .collect();
    if values.is_empty() {
        tracing::debug!(
            endpoint = endpoint.id(),
            metric = name,
            "no worker exposed the metric this tick"
        );
        return None;
    }
    Some(values.iter().sum())
}

/// One worker's metrics page, or `None` on any failure within `timeout`.
async fn fetch(worker: &Worker, path: &str, timeout: Duration) -> Option<String> {
    let attempt = async {
        let response = control_get(worker, path, "portico-scaler", timeout).await?;
        if !response.status().is_success() {
            return None;
        }
        let body = Limited::new(response.into_body(), MAX_PAGE_BYTES)
            .collect()
            .await
            .ok()?
            .to_bytes();
        String::from_utf8(body.to_vec()).ok()
    };
    tokio::time::timeout(timeout, attempt).await.ok().flatten()
}

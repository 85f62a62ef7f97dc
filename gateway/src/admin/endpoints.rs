//! `/admin/endpoints…`: endpoint state (mode, workers, replicas, in-flight, held requests,
//! scaling settings) and the operator's orders — scale (pin), autoscale, stop, start — plus
//! the recent lifecycle events.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;
use crate::admin_state::SharedMode;
use crate::config::WorkerKind;
use crate::control::Order;
use crate::endpoint::Endpoint;

/// The routes under `/admin/endpoints`.
pub fn routes() -> Router<Admin> {
    Router::new()
        .route("/admin/endpoints", get(list))
        .route("/admin/endpoints/{id}", get(detail))
        .route("/admin/endpoints/{id}/scale", post(scale))
        .route("/admin/endpoints/{id}/autoscale", post(autoscale))
        .route("/admin/endpoints/{id}/stop", post(stop))
        .route("/admin/endpoints/{id}/start", post(start))
        .route("/admin/endpoints/{id}/restart", post(restart))
        .route(
            "/admin/endpoints/{id}/scaling",
            patch(super::scaling::update),
        )
        .route("/admin/endpoints/{id}/events", get(events))
        .route("/admin/endpoints/{id}/logs", get(super::logs::logs))
}

async fn list(State(admin): State<Admin>) -> Response {
    let routes = admin.shared.routes.load();
    let endpoints: Vec<Value> = routes
        .endpoints()
        .iter()
        .map(|e| describe(&admin, e))
        .collect();
    axum::Json(json!({ "endpoints": endpoints })).into_response()
}

async fn detail(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match find(&admin, &id) {
        Ok(endpoint) => axum::Json(describe(&admin, &endpoint)).into_response(),
        Err(missing) => missing.into_response(),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    workers: u32,
}

async fn scale(State(admin): State<Admin>, Path(id): Path<String>, body: Bytes) -> Response {
    let endpoint = match find(&admin, &id) {
        Ok(endpoint) => endpoint,
        Err(missing) => return missing.into_response(),
    };
    let workers = match serde_json::from_slice::<ScaleBody>(&body) {
        Ok(body) => body.workers,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                &format!("expected {{\"workers\": N}} with N a whole number ≥ 0: {err}"),
            );
        }
    };
    if matches!(endpoint.config.workers.kind, WorkerKind::Static { .. }) {
        return error(
            StatusCode::CONFLICT,
            "fixed_workers",
            "the endpoint's workers are static URLs: their count is fixed by the config",
        );
    }
    if endpoint.control.stopped() {
        return error(
            StatusCode::CONFLICT,
            "endpoint_stopped",
            "the endpoint is stopped: start it before scaling it",
        );
    }
    let settings = endpoint.control.settings();
    let (min, max) = (settings.min_workers, settings.max_workers);
    drop(settings);
    if workers < min || workers > max {
        return error(
            StatusCode::BAD_REQUEST,
            "workers_out_of_range",
            &format!("workers must be between min_workers ({min}) and max_workers ({max})"),
        );
    }
    order(&admin, &endpoint, Order::Scale(workers)).await
}

async fn autoscale(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match find(&admin, &id) {
        Ok(endpoint) => order(&admin, &endpoint, Order::Autoscale).await,
        Err(missing) => missing.into_response(),
    }
}

async fn stop(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match find(&admin, &id) {
        Ok(endpoint) => order(&admin, &endpoint, Order::Stop).await,
        Err(missing) => missing.into_response(),
    }
}

async fn start(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    match find(&admin, &id) {
        Ok(endpoint) => order(&admin, &endpoint, Order::Start).await,
        Err(missing) => missing.into_response(),
    }
}

/// A rolling restart: 202 while it runs in the background (`restarting` and `restarted`
/// events tell its progress).
async fn restart(State(admin): State<Admin>, Path(id): Path<String>) -> Response {
    let endpoint = match find(&admin, &id) {
        Ok(endpoint) => endpoint,
        Err(missing) => return missing.into_response(),
    };
    if matches!(endpoint.config.workers.kind, WorkerKind::Static { .. }) {
        return error(
            StatusCode::CONFLICT,
            "fixed_workers",
            "the endpoint's workers are static URLs: Portico does not run them",
        );
    }
    if matches!(
        endpoint.config.workers.kind,
        WorkerKind::Command { .. } | WorkerKind::Kubernetes(_)
    ) {
        return error(
            StatusCode::CONFLICT,
            "restart_unsupported",
            "the endpoint's workers are run by another system (a scale_command or Kubernetes): restart them there",
        );
    }
    if endpoint.control.stopped() {
        return error(
            StatusCode::CONFLICT,
            "endpoint_stopped",
            "the endpoint is stopped: there is nothing to restart",
        );
    }
    if !crate::control::restart(&endpoint) {
        return error(
            StatusCode::CONFLICT,
            "restart_in_progress",
            "a rolling restart of this endpoint is under way",
        );
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(describe(&admin, &endpoint)),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct EventsQuery {
    /// Only events with a sequence number above this.
    since: Option<u64>,
    /// At most this many (the newest). Default 100.
    limit: Option<usize>,
}

async fn events(
    State(admin): State<Admin>,
    Path(id): Path<String>,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let endpoint = match find(&admin, &id) {
        Ok(endpoint) => endpoint,
        Err(missing) => return missing.into_response(),
    };
    let Ok(Query(query)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "since and limit must be whole numbers",
        );
    };
    let (since, limit) = (query.since.unwrap_or(0), query.limit.unwrap_or(100));
    // The shared timeline in a cluster; this replica's own when it cannot be read.
    let events = match admin.state.events(&endpoint, since, limit).await {
        Ok(events) => events,
        Err(err) => {
            tracing::debug!(endpoint = endpoint.id(), error = %err, "events: showing this replica's");
            endpoint.control.events.list(since, limit)
        }
    };
    axum::Json(json!({ "endpoint": endpoint.id(), "events": events })).into_response()
}

/// Gives `order` to the endpoint's controller, and in a cluster to every replica's.
async fn order(admin: &Admin, endpoint: &Endpoint, order: Order) -> Response {
    match endpoint.control.order(order).await {
        Ok(_) => {
            if let Some(mode) = SharedMode::after(order)
                && let Err(err) = admin.state.save_mode(endpoint.id(), mode).await
            {
                tracing::warn!(endpoint = endpoint.id(), error = %err, "the order applies here but was not saved");
            }
            axum::Json(describe(admin, endpoint)).into_response()
        }
        Err(gone) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            &gone.to_string(),
        ),
    }
}

pub(super) fn find(admin: &Admin, id: &str) -> Result<Arc<Endpoint>, NoEndpoint> {
    let routes = admin.shared.routes.load();
    routes
        .endpoints()
        .iter()
        .find(|e| e.id() == id)
        .cloned()
        .ok_or_else(|| NoEndpoint(id.to_string()))
}

/// An admin path names an endpoint that does not exist.
pub(super) struct NoEndpoint(String);

impl IntoResponse for NoEndpoint {
    fn into_response(self) -> Response {
        error(
            StatusCode::NOT_FOUND,
            "endpoint_not_found",
            &format!("no endpoint {}", self.0),
        )
    }
}

/// The endpoint's state as the admin API shows it.
pub(super) fn describe(admin: &Admin, endpoint: &Endpoint) -> Value {
    let control = &endpoint.control;
    let status = control.status();
    let settings = control.settings();
    let workers = endpoint.workers();
    let replicas = control.actuator().map(|a| a.replicas()).unwrap_or_default();
    let now = SystemTime::now();
    let listed: Vec<Value> = replicas
        .iter()
        .map(|replica| {
            let worker = workers.iter().find(|w| match w.replica_id() {
                Some(id) => id == replica.id,
                None => replica.address.as_deref() == Some(w.label()),
            });
            json!({
                "id": replica.id,
                "address": replica.address,
                "state": replica.state.as_str(),
                "health": worker.map(|w| w.state().as_str()),
                "pid": replica.pid,
                "inflight": worker.map_or(0, |w| w.inflight()),
                "uptime_seconds": now
                    .duration_since(replica.started_at)
                    .map_or(0.0, |d| (d.as_secs_f64() * 10.0).round() / 10.0),
                "restarts": replica.restarts,
            })
        })
        .collect();
    let count = |state: scaler::ReplicaState| replicas.iter().filter(|r| r.state == state).count();
    let kind = match endpoint.config.workers.kind {
        WorkerKind::Static { .. } => "static",
        WorkerKind::Process { .. } => "process",
        WorkerKind::Command { .. } => "command",
        WorkerKind::Kubernetes(_) => "kubernetes",
    };
    let custom_metric = match &settings.metric {
        scaler::Metric::Custom(name) => Some(name.as_str()),
        _ => None,
    };
    json!({
        "id": endpoint.id(),
        "project": endpoint.project(),
        "kind": kind,
        "urls": urls(admin, endpoint),
        "public": endpoint.config.public,
        // Browser origins Portico answers CORS for (`["*"]`: any).
        "cors_origins": endpoint.config.cors.origins(),
        "mode": match status.mode {
            scaler::Mode::Auto => "auto",
            scaler::Mode::Pinned(_) => "manual",
            scaler::Mode::Stopped => "stopped",
        },
        "reason": status.reason.to_string(),
        "panicking": status.panicking,
        "restarting": control.restarting(),
        "inflight": endpoint.inflight(),
        "pending": control.admission.pending(),
        // Requests, rate, 5xx share and latency over the last 60 s.
        "last_minute": endpoint.traffic.last_minute(),
        // Async jobs waiting or running (null without `[endpoint.async]`).
        "async_jobs": endpoint.jobs().map(|_| control.queued()),
        "workers": {
            "desired": status.desired,
            "ready": workers.iter().filter(|w| w.available()).count(),
            "starting": count(scaler::ReplicaState::Starting),
            "draining": count(scaler::ReplicaState::Draining),
            "failed": count(scaler::ReplicaState::Failed),
            "replicas": listed,
        },
        "scaling": {
            "min_workers": settings.min_workers,
            "max_workers": settings.max_workers,
            "metric": settings.metric.kind(),
            "custom_metric": custom_metric,
            "target": settings.target,
            "idle_timeout_seconds": settings.idle_timeout.as_secs(),
            "initial_cooldown_seconds": settings.initial_cooldown.as_secs(),
            "stable_window_seconds": settings.stable_window.as_secs(),
            "panic_window_seconds": settings.panic_window.as_secs(),
            "panic_threshold": settings.panic_threshold,
            "max_pending": settings.max_pending,
            "cold_start_timeout_seconds": settings.cold_start_timeout.as_secs(),
            "waking_keepalive_seconds": settings.waking_keepalive.as_secs(),
        },
    })
}

/// The endpoint's base URL on each data listener serving it.
fn urls(admin: &Admin, endpoint: &Endpoint) -> Vec<String> {
    let path = format!("/project/{}/endpoint/{}", endpoint.project(), endpoint.id());
    admin
        .data_bases
        .iter()
        .enumerate()
        .filter(|(index, _)| endpoint.serves(*index))
        .map(|(_, base)| format!("{base}{path}"))
        .collect()
}

/// An admin error, in the data plane's JSON shape.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let kind = match status {
        StatusCode::NOT_FOUND => "not_found_error",
        StatusCode::SERVICE_UNAVAILABLE => "server_error",
        _ => "invalid_request_error",
    };
    (
        status,
        axum::Json(json!({ "error": { "message": message, "type": kind, "code": code } })),
    )
        .into_response()
}

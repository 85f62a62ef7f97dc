//! The admin listener: `/healthz` and Prometheus `/metrics` (the admin API grows here).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::metrics::refresh_gauges;
use crate::pipeline::Shared;

#[derive(Clone)]
struct Admin {
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
}

/// Serves the admin API on `listener` until `stop` turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    shared: Arc<Shared>,
    metrics: PrometheusHandle,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(render_metrics))
        .fallback(not_found)
        .with_state(Admin { shared, metrics });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await
}

async fn render_metrics(State(admin): State<Admin>) -> impl IntoResponse {
    refresh_gauges(&admin.shared.routes.load());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        admin.metrics.render(),
    )
}

async fn not_found() -> impl IntoResponse {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({
            "error": {"message": "no such admin route", "type": "not_found_error", "code": "not_found"}
        })),
    )
}

//! `GET /admin/alerts`: every alert rule on every endpoint it watches, with its state
//! (`ok`, `pending`, `firing`), the last value read, since when, and the last notification.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::Admin;

/// The route `/admin/alerts`.
pub fn routes() -> Router<Admin> {
    Router::new().route("/admin/alerts", get(list))
}

async fn list(State(admin): State<Admin>) -> Response {
    axum::Json(json!({ "alerts": admin.alerts.statuses() })).into_response()
}

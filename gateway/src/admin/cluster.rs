//! `GET /admin/cluster`: this replica's view of the deployment (`[cluster]`): its id,
//! whether it holds the scaler lease, the live replicas, whether Redis answers.

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use super::Admin;

/// The route of the cluster view.
pub fn routes() -> Router<Admin> {
    Router::new().route("/admin/cluster", get(describe))
}

async fn describe(State(admin): State<Admin>) -> Response {
    let answer = match &admin.cluster {
        Some(cluster) => {
            let mut view = cluster.describe();
            view["enabled"] = json!(true);
            view
        }
        // Alone, this replica decides and actuates for itself.
        None => json!({"enabled": false, "leader": true, "actuating": true}),
    };
    axum::Json(answer).into_response()
}

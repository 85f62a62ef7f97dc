//! The admin listener: `/healthz`, Prometheus `/metrics`, and the admin API:
//! `/admin/endpoints…` in `endpoints` (worker logs in `logs`), `/admin/reload` and
//! `/admin/config` in `config`; the web console at `/ui/` in `ui`.
//!
//! With `server.admin_token_sha256` set, every route but `/healthz` and the console's
//! files needs `Authorization: Bearer <admin token>` (`/metrics` too, unless
//! `server.metrics_public`); without it the admin API is open, and the daemon warns when it
//! listens beyond loopback.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;

use crate::admin_state::AdminState;
use crate::cluster::Cluster;
use crate::error::{AuthFailure, ProxyError, error_answer};
use crate::metrics::refresh_gauges;
use crate::pipeline::Shared;
use crate::reload::Reloader;
use crate::stage::auth;

mod access;
mod alerts;
mod cluster;
mod config;
mod endpoints;
mod logs;
mod scaling;
mod series;
mod ui;

/// What the admin API serves from.
#[derive(Clone)]
pub struct Admin {
    /// The routing table and access settings in force.
    pub shared: Arc<Shared>,
    /// The Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// Config reloads.
    pub reloader: Arc<Reloader>,
    /// The alert rules' state.
    pub alerts: Arc<crate::alerts::AlertBoard>,
    /// `scheme://address` of each data listener as bound, in config order (endpoint URLs).
    pub data_bases: Arc<[String]>,
    /// The deployment this replica belongs to (`[cluster]`).
    pub cluster: Option<Arc<Cluster>>,
    /// Where operators' settings and the event timeline are kept.
    pub state: Arc<dyn AdminState>,
    series: Arc<series::Series>,
}

impl Admin {
    /// The admin API's state (the series start empty).
    pub fn new(
        shared: Arc<Shared>,
        metrics: PrometheusHandle,
        reloader: Arc<Reloader>,
        alerts: Arc<crate::alerts::AlertBoard>,
        data_bases: Vec<String>,
        cluster: Option<Arc<Cluster>>,
        state: Arc<dyn AdminState>,
    ) -> Admin {
        Admin {
            shared,
            metrics,
            reloader,
            alerts,
            data_bases: data_bases.into(),
            cluster,
            state,
            series: Arc::default(),
        }
    }
}

/// Serves the admin API on `listener` until `stop` turns true.
pub async fn serve(
    listener: std::net::TcpListener,
    admin: Admin,
    mut stop: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let sampler = tokio::spawn(series::run(
        Arc::clone(&admin.series),
        Arc::clone(&admin.shared),
        stop.clone(),
    ));
    let app = Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .route("/metrics", get(render_metrics))
        .merge(endpoints::routes())
        .merge(config::routes())
        .merge(access::routes())
        .merge(alerts::routes())
        .merge(cluster::routes())
        .merge(series::routes())
        .merge(ui::routes())
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(
            Arc::clone(&admin.shared),
            require_admin_token,
        ))
        .layer(middleware::map_response(json_errors))
        .with_state(admin);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        })
        .await;
    sampler.abort();
    served
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

/// The admin token check, in front of every route.
async fn require_admin_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    if cross_site_order(&request) {
        // A page elsewhere may make the operator's browser send a form POST here (no
        // preflight); without an admin token nothing else would stop it.
        return endpoints::error(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "orders from pages on other origins are refused: use the console on this listener, \
             the CLI, or a client that sends no Origin header",
        );
    }
    let access = shared.access.load();
    let path = request.uri().path();
    let open = access.admin_token.is_none()
        || path == "/healthz"
        || ui::is_console(path)
        || (path == "/metrics" && access.metrics_public);
    let presented = auth::bearer(request.headers());
    if open || presented.is_ok_and(|token| access.is_admin(token)) {
        drop(access);
        return next.run(request).await;
    }
    // The same verdicts as a project token: missing, malformed, or not the admin token.
    let failure = presented.err().unwrap_or(AuthFailure::InvalidToken);
    // The data plane's one error mapping: the same JSON and challenge as a project token.
    error_answer(&ProxyError::Unauthorized(failure)).map(axum::body::Body::from)
}

/// Whether a request that may change something (any method but `GET`, `HEAD`,
/// `OPTIONS`) comes from a browser page on another origin: its `Origin` names another
/// host than its `Host`, or `Sec-Fetch-Site` says so. The CLI and scripts send neither.
fn cross_site_order(request: &Request) -> bool {
    use axum::http::Method;
    if matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    ) {
        return false;
    }
    let headers = request.headers();
    let site = headers
        .get("sec-fetch-site")
        .is_some_and(|site| !matches!(site.as_bytes(), b"same-origin" | b"none"));
    let origin = headers.get(header::ORIGIN).is_some_and(|origin| {
        let origin = origin.to_str().ok().and_then(|o| o.split_once("://"));
        let host = match headers.get(header::HOST) {
            Some(host) => host.to_str().ok(),
            None => request.uri().authority().map(|a| a.as_str()),
        };
        match (origin, host) {
            (Some((_, authority)), Some(host)) => !authority.eq_ignore_ascii_case(host),
            _ => true,
        }
    });
    site || origin
}

/// The admin API answers JSON everywhere, also where the router itself refuses a request
/// (a method the route does not have, a path that is not UTF-8, a body over the limit),
/// which would otherwise be plain text or empty. `Allow` is kept.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if json || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 16 * 1024)
        .await
        .unwrap_or_default();
    let allow = parts.headers.get(header::ALLOW).cloned();
    let mut message = String::from_utf8_lossy(&text).trim().to_string();
    if message.is_empty() {
        message = status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_lowercase();
    }
    if let Some(allow) = allow.as_ref().and_then(|a| a.to_str().ok()) {
        message = format!("{message}; this route allows {allow}");
    }
    let code = match status {
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "body_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::NOT_FOUND => "not_found",
        _ if status.is_server_error() => "internal_error",
        _ => "invalid_request",
    };
    let mut answer = endpoints::error(status, code, &message);
    if let Some(allow) = allow {
        answer.headers_mut().insert(header::ALLOW, allow);
    }
    answer
}

async fn not_found() -> Response {
    endpoints::error(StatusCode::NOT_FOUND, "not_found", "no such admin route")
}

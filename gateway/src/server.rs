//! The daemon: serves the bound listeners until shutdown, then drains.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Config;
use crate::error::{ProxyError, error_response};
use crate::listen::Listeners;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A bound socket could not be handed to the runtime.
    #[error("listener {name}: {source}")]
    Listener {
        /// The listener's name.
        name: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Data,
    Admin,
}

/// Serves `listeners` with `config` until `shutdown` completes, then stops accepting and lets
/// open connections finish for up to `server.grace_period_seconds`.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let config = Arc::new(config);
    let graceful = Arc::new(GracefulShutdown::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut sockets = Vec::new();
    for (name, socket) in listeners.data {
        sockets.push((name, Role::Data, socket));
    }
    sockets.push(("admin".to_string(), Role::Admin, listeners.admin));
    let mut accept_loops = tokio::task::JoinSet::new();
    for (name, role, socket) in sockets {
        let socket = TcpListener::from_std(socket).map_err(|source| RunError::Listener {
            name: name.clone(),
            source,
        })?;
        accept_loops.spawn(accept(
            socket,
            role,
            Arc::clone(&config),
            Arc::clone(&graceful),
            stop_rx.clone(),
        ));
    }
    tracing::info!(summary = %config.summary(), "portico started");

    shutdown.await;
    // Stop accepting first, so nothing new arrives while open connections drain.
    let _ = stop_tx.send(true);
    while accept_loops.join_next().await.is_some() {}
    let grace = config.server.grace_period;
    let graceful = Arc::try_unwrap(graceful).unwrap_or_else(|_| GracefulShutdown::new());
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            grace_seconds = grace.as_secs(),
            "grace period over; closing"
        ),
    }
    Ok(())
}

async fn accept(
    socket: TcpListener,
    role: Role,
    config: Arc<Config>,
    graceful: Arc<GracefulShutdown>,
    mut stop: watch::Receiver<bool>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(config.server.header_read_timeout)
        .max_headers(config.server.max_headers)
        .max_buf_size(config.server.max_header_bytes.max(8192));
    loop {
        let (stream, _peer) = tokio::select! {
            _ = stop.changed() => return,
            accepted = socket.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service =
            service_fn(move |request| async move { Ok::<_, Infallible>(respond(role, &request)) });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(error = %err, "connection ended with an error");
            }
        });
    }
}

fn respond(role: Role, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    match (role, request.uri().path()) {
        (_, "/healthz") => json(StatusCode::OK, r#"{"status":"ok"}"#),
        (Role::Data, "/readyz") => json(StatusCode::OK, r#"{"status":"ready"}"#),
        (_, path) => error_response(&ProxyError::NoRoute {
            path: path.to_string(),
        }),
    }
}

fn json(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

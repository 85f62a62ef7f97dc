//! The accept loop, the per-connection task and the routing table.
//!
//! Each connection is served by hyper-util's auto builder, so HTTP/1.1 and h2c (prior
//! knowledge) share the port, with upgrades enabled for `/ws`. Every task watches the kill
//! switch in [`State`], so a crash or a dropped [`super::FakeWorker`] stops accepting and
//! drops every open connection at once.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Duration, sleep};

use super::chat;
use super::echo;
use super::http::Body;
use super::metrics::{self, Load};
use super::openai::Api;
use super::state::State;
use super::utility;
use super::ws;

/// Target of the one-line-per-request access log (the binary sends it to stdout).
pub const ACCESS_LOG_TARGET: &str = "fakeworker::access";

/// Accepts connections until the kill switch is pulled.
pub(crate) async fn run(state: Arc<State>, listener: TcpListener) -> io::Result<()> {
    let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
    loop {
        let accepted = tokio::select! {
            () = state.killed() => return Ok(()),
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(e) => {
                // Out of file descriptors and the like: a benchmark origin should ride it
                // out rather than die, so back off briefly and keep accepting.
                tracing::warn!("accept failed: {e}");
                sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        tokio::spawn(connection(Arc::clone(&state), Arc::clone(&builder), stream));
    }
}

/// Serves one connection until it ends or the worker is killed.
async fn connection(
    state: Arc<State>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!("could not set TCP_NODELAY: {e}");
    }
    let service_state = Arc::clone(&state);
    let service = service_fn(move |req| {
        let state = Arc::clone(&service_state);
        async move { Ok::<_, Infallible>(handle(state, req).await) }
    });
    let served = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::select! {
        () = state.killed() => {}
        result = served => {
            if let Err(e) = result {
                tracing::debug!("connection ended with an error: {e}");
            }
        }
    }
}

/// Records, routes and logs one request.
async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let target = req
        .uri()
        .path_and_query()
        .map_or_else(|| req.uri().path().to_owned(), |pq| pq.as_str().to_owned());
    if !req.uri().path().starts_with("/_fake/") {
        state.record(|| echo::record_of(&req));
    }
    let response = route(&state, req).await;
    tracing::info!(
        target: ACCESS_LOG_TARGET,
        "{method} {target} {}",
        response.status().as_u16()
    );
    response
}

/// The routing table.
async fn route(state: &Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method();
    let path = req.uri().path();
    let query = req.uri().query();
    let counted = matches!(
        (method, path),
        (&Method::POST, "/v1/chat/completions" | "/v1/completions") | (&Method::GET, "/slow")
    ) || is_echo(path);
    if counted && state.count_towards_crash() {
        return crash(state).await;
    }
    match (method, path) {
        (&Method::POST, "/v1/chat/completions") => chat::completion(state, req, Api::Chat).await,
        (&Method::POST, "/v1/completions") => chat::completion(state, req, Api::Text).await,
        (&Method::GET, "/v1/models") => utility::models(state),
        (&Method::GET, "/health") => utility::health(state),
        (&Method::GET, "/metrics") => metrics_response(state),
        (&Method::GET, "/sse") => utility::events(query),
        (&Method::GET, "/slow") => utility::slow(state, query).await,
        (&Method::GET, "/ws") => ws::upgrade(state, req),
        (&Method::GET, "/_fake/requests") => echo::recorded(state),
        (_, p) if is_echo(p) => echo::echo(req).await,
        (_, p) if p.starts_with("/status/") => utility::status(method, &p["/status/".len()..]),
        _ => utility::not_found(method, path),
    }
}

fn is_echo(path: &str) -> bool {
    path == "/echo" || path.starts_with("/echo/")
}

fn metrics_response(state: &State) -> Response<Body> {
    let (running, waiting) = state.load();
    let load = Load {
        running,
        waiting,
        max_running: state.opts.max_running,
        requests_total: state.requests_total(),
    };
    let mut response = Response::new(super::http::full(metrics::render(&load, &state.opts.model)));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `crash_after` was reached: exit the process, or pull the kill switch and never answer
/// (the connection task drops this request along with its connection).
async fn crash(state: &State) -> Response<Body> {
    tracing::error!(
        "crash_after={:?} reached: crashing as asked",
        state.opts.crash_after
    );
    if state.opts.crash_exits_process {
        std::process::exit(1);
    }
    state.kill();
    std::future::pending().await
}

//! Portico: the front door of an inference cluster.
//!
//! One daemon between clients and inference workers: it routes
//! `/project/<p>/endpoint/<id>/…` traffic to workers and adds what a model platform needs
//! there. `main.rs` only parses the command line and calls [`run`] with bound listeners.
//!
//! Layout:
//! - `cli`: the command line (`run`, `validate`, `token new`, and the operator commands
//!   `endpoint …`, `reload`, `config` that talk to the admin API).
//! - `config`: the TOML schema and the validated, typed [`config::Config`].
//! - `listen`: binds the configured sockets.
//! - `server`: [`run`]: starts the data plane and control loops, drains on shutdown.
//! - `dataplane`: thread-per-core runtimes, accept loops, client connections.
//! - `pipeline`: the request path, stage by stage; the stages live in `stage/`.
//! - `framing`: catches `Content-Length` + `Transfer-Encoding` request heads.
//! - `tls`: rustls acceptors for TLS listeners, with replaceable certificates.
//! - `proxyproto`: PROXY protocol v1/v2 headers on listeners that require them.
//! - `access`: security groups and tokens compiled per endpoint; trusted proxies.
//! - `reload`: applies a new config to a running daemon (`SIGHUP`, `POST /admin/reload`).
//! - `lifecycle`: starting endpoints (history, probes, controller) and retiring them.
//! - `store`: the embedded state store (`<state_dir>/state.redb`): events, hourly traffic.
//! - `routes`, `endpoint`, `worker`: the routing table, endpoints, workers and their
//!   in-flight counters.
//! - `upstream`: connections to workers and the per-thread pools.
//! - `body`: streaming request and response bodies.
//! - `headers`: hop-by-hop removal and forwarding headers.
//! - `health`: active health probes.
//! - `control`: per-endpoint controllers (scaler policy → actuator), held requests, events
//!   and their journal.
//! - `cluster`: replicas sharing demand, one actuating leader and orders through Redis.
//! - `discovery`: workers found by URL list or DNS (`kind = "command"`).
//! - `kubernetes`: `kind = "kubernetes"`: the scale subresource, EndpointSlices watched.
//! - `traffic`: per-endpoint last-minute and hourly analytics, token usage.
//! - `alerts`: alert rules, their evaluation, webhook and e-mail notifications.
//! - `queue`, `jobs`: the async job queue and its dispatchers.
//! - `metrics`, `accesslog`: Prometheus metrics and the JSON access log (written by
//!   `jsonline`).
//! - `admin`: the admin listener and API.
//! - `admin_state`: operators' settings and the event timeline, in the embedded store or
//!   Redis ([`admin_state::AdminState`]).
//! - `error`: [`error::ProxyError`] and its one mapping to a JSON response.
//! - `runtime`: executors for the current-thread runtimes.
//! - `signal`, `logging`, `token`: signals, tracing set-up, token hashing.

pub mod access;
pub mod accesslog;
pub mod admin;
pub mod admin_state;
pub mod alerts;
pub mod body;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod dataplane;
pub mod discovery;
pub mod endpoint;
pub mod error;
pub mod framing;
pub mod headers;
pub mod health;
pub mod idle;
pub mod jobs;
pub mod jsonline;
pub mod kubernetes;
pub mod lifecycle;
pub mod listen;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod proxyproto;
pub mod queue;
pub mod reload;
pub mod routes;
pub mod runtime;
pub mod server;
pub mod signal;
pub mod stage;
pub mod store;
pub mod tls;
pub mod token;
pub mod traffic;
pub mod upstream;
pub mod worker;

pub use server::{RunError, run};

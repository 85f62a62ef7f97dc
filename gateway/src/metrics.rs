//! Prometheus metrics: the recorder, the histogram buckets, and per-endpoint handles
//! resolved once so the request path does no label lookups.
//!
//! Gauges that mirror atomics (in-flight per worker, workers per state) are set at scrape
//! time by [`refresh_gauges`] instead of on every request.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};

use metrics::{Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use scaler::{Direction, ReplicaState};

use crate::routes::Routes;
use crate::worker::WorkerState;

/// Latency buckets in seconds: from sub-millisecond proxy answers to minutes-long generations.
const LATENCY_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Installs the global recorder (once per process) and returns the handle that renders it.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS);
            // Only a bucket list that is empty fails, and the list above is a constant.
            let builder = builder.unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            describe();
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "portico_config_reloads_total",
        "Reloads of the config file, or of a listener's certificate files, by trigger and outcome."
    );
    metrics::describe_gauge!(
        "portico_config_last_reload_successful",
        "1 when the last reload applied, 0 when it was refused (the running config is older than the file)."
    );
    metrics::describe_counter!(
        "portico_requests_total",
        "Requests answered, by status code."
    );
    metrics::describe_histogram!(
        "portico_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time from request to the last byte of the response."
    );
    metrics::describe_histogram!(
        "portico_upstream_first_byte_seconds",
        metrics::Unit::Seconds,
        "Time from sending a request to a worker to its response headers."
    );
    metrics::describe_gauge!(
        "portico_inflight_requests",
        "Requests (and WebSockets) in flight, per worker."
    );
    metrics::describe_gauge!("portico_workers", "Workers per health state.");
    metrics::describe_counter!(
        "portico_upstream_errors_total",
        "Failures talking to workers, by kind."
    );
    metrics::describe_counter!(
        "portico_denied_total",
        "Requests refused before reaching a worker: by a security group or for want of a valid token."
    );
    metrics::describe_counter!(
        "portico_caller_requests_total",
        "Requests authenticated with a project token, by the token's name."
    );
    metrics::describe_gauge!("portico_ws_connections", "Open WebSocket sessions.");
    metrics::describe_gauge!(
        "portico_async_queue_depth",
        "Async jobs waiting for a dispatcher."
    );
    metrics::describe_counter!(
        "portico_async_jobs_total",
        "Async jobs finished, by outcome (completed, failed, expired)."
    );
    metrics::describe_histogram!(
        "portico_async_job_duration_seconds",
        metrics::Unit::Seconds,
        "Time from intake to the result of an async job."
    );
    metrics::describe_counter!(
        "portico_async_result_write_errors_total",
        "Failed writes of async results to the object store (each is retried)."
    );
    metrics::describe_gauge!(
        "portico_desired_workers",
        "Workers the autoscaler (or an operator's pin) wants."
    );
    metrics::describe_gauge!(
        "portico_cluster_redis_up",
        "1 while the cluster's Redis answers; 0: this replica decides and actuates alone."
    );
    metrics::describe_gauge!(
        "portico_cluster_leader",
        "1 while this replica holds the scaler lease and actuates."
    );
    metrics::describe_counter!(
        "portico_cluster_wakes_received_total",
        "Wakes the leader received from replicas holding requests for an endpoint at zero."
    );
    metrics::describe_gauge!(
        "portico_cluster_replicas",
        "Live replicas of the deployment seen in Redis, this one included."
    );
    metrics::describe_gauge!(
        "portico_pending_requests",
        "Requests held while the endpoint has no ready worker."
    );
    metrics::describe_histogram!(
        "portico_cold_start_seconds",
        metrics::Unit::Seconds,
        "Time from a wake at zero workers to the first ready worker."
    );
    metrics::describe_counter!(
        "portico_scale_events_total",
        "Changes of the desired worker count, by direction."
    );
    metrics::describe_counter!(
        "portico_ws_messages_total",
        "WebSocket messages relayed, by direction."
    );
    metrics::describe_counter!(
        "portico_tokens_total",
        "Tokens used as workers reported them in OpenAI `usage` objects, by caller and kind (prompt, completion)."
    );
    metrics::describe_counter!(
        "portico_ws_bytes_total",
        metrics::Unit::Bytes,
        "WebSocket payload bytes relayed, by direction."
    );
}

/// WebSocket directions, as labelled.
const WS_DIRECTIONS: [&str; 2] = ["client_to_worker", "worker_to_client"];

/// Why talking to a worker failed, as counted in `portico_upstream_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamErrorKind {
    /// The connection could not be made (refused, unreachable, reset during handshake).
    Connect,
    /// Connecting took longer than `timeouts.connect_ms`.
    ConnectTimeout,
    /// No response headers within `timeouts.first_byte_seconds`.
    FirstByteTimeout,
    /// The response body stalled for `timeouts.idle_seconds`.
    IdleTimeout,
    /// The worker closed or reset the connection mid-exchange.
    Reset,
}

impl UpstreamErrorKind {
    const ALL: [UpstreamErrorKind; 5] = [
        UpstreamErrorKind::Connect,
        UpstreamErrorKind::ConnectTimeout,
        UpstreamErrorKind::FirstByteTimeout,
        UpstreamErrorKind::IdleTimeout,
        UpstreamErrorKind::Reset,
    ];

    /// The `kind` label.
    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamErrorKind::Connect => "connect",
            UpstreamErrorKind::ConnectTimeout => "connect_timeout",
            UpstreamErrorKind::FirstByteTimeout => "first_byte_timeout",
            UpstreamErrorKind::IdleTimeout => "idle_timeout",
            UpstreamErrorKind::Reset => "reset",
        }
    }
}

/// Why a request was refused, as counted in `portico_denied_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DenyReason {
    /// The client's address and listener port match no rule of the endpoint's groups.
    SecurityGroup,
    /// No `Authorization` header, or an empty one.
    MissingToken,
    /// An `Authorization` header that is not one well-formed `Bearer <token>`.
    MalformedAuthorization,
    /// A bearer token that is not one of the project's.
    InvalidToken,
}

impl DenyReason {
    const ALL: [DenyReason; 4] = [
        DenyReason::SecurityGroup,
        DenyReason::MissingToken,
        DenyReason::MalformedAuthorization,
        DenyReason::InvalidToken,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DenyReason::SecurityGroup => "security_group",
            DenyReason::MissingToken => "missing_token",
            DenyReason::MalformedAuthorization => "malformed_authorization",
            DenyReason::InvalidToken => "invalid_token",
        }
    }
}

/// The `portico_caller_requests_total` counter of one token on one endpoint.
pub fn caller_counter(endpoint: &str, caller: &str) -> Counter {
    metrics::counter!(
        "portico_caller_requests_total",
        "endpoint" => endpoint.to_string(),
        "caller" => caller.to_string()
    )
}

/// Metric handles of one endpoint.
pub struct EndpointMetrics {
    project: String,
    endpoint: String,
    /// `portico_requests_total` per status code 100..=599, created on first use.
    requests: Box<[OnceLock<Counter>]>,
    duration: Histogram,
    first_byte: Histogram,
    upstream_errors: [Counter; UpstreamErrorKind::ALL.len()],
    denied: [Counter; DenyReason::ALL.len()],
    ws_connections: Gauge,
    ws_messages: [Counter; 2],
    ws_bytes: [Counter; 2],
    desired_workers: Gauge,
    scale_events: [Counter; 2],
    cold_start: Histogram,
    /// `portico_tokens_total` (prompt, completion) per caller, created on first use.
    tokens: Mutex<HashMap<Box<str>, [Counter; 2]>>,
}

impl std::fmt::Debug for EndpointMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointMetrics")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl EndpointMetrics {
    /// Resolves the handles for `endpoint` of `project`.
    pub fn new(project: &str, endpoint: &str) -> EndpointMetrics {
        let labels = [
            ("project", project.to_string()),
            ("endpoint", endpoint.to_string()),
        ];
        EndpointMetrics {
            project: project.to_string(),
            endpoint: endpoint.to_string(),
            requests: (100..600).map(|_| OnceLock::new()).collect(),
            duration: metrics::histogram!("portico_request_duration_seconds", &labels),
            first_byte: metrics::histogram!(
                "portico_upstream_first_byte_seconds",
                "endpoint" => endpoint.to_string()
            ),
            upstream_errors: UpstreamErrorKind::ALL.map(|kind| {
                metrics::counter!(
                    "portico_upstream_errors_total",
                    "endpoint" => endpoint.to_string(),
                    "kind" => kind.as_str()
                )
            }),
            denied: DenyReason::ALL.map(|reason| {
                metrics::counter!(
                    "portico_denied_total",
                    "endpoint" => endpoint.to_string(),
                    "reason" => reason.as_str()
                )
            }),
            ws_connections: metrics::gauge!(
                "portico_ws_connections",
                "endpoint" => endpoint.to_string()
            ),
            ws_messages: WS_DIRECTIONS.map(|direction| {
                metrics::counter!(
                    "portico_ws_messages_total",
                    "endpoint" => endpoint.to_string(),
                    "direction" => direction
                )
            }),
            ws_bytes: WS_DIRECTIONS.map(|direction| {
                metrics::counter!(
                    "portico_ws_bytes_total",
                    "endpoint" => endpoint.to_string(),
                    "direction" => direction
                )
            }),
            desired_workers: metrics::gauge!(
                "portico_desired_workers",
                "endpoint" => endpoint.to_string()
            ),
            scale_events: [Direction::Up, Direction::Down].map(|direction| {
                metrics::counter!(
                    "portico_scale_events_total",
                    "endpoint" => endpoint.to_string(),
                    "direction" => direction.as_str()
                )
            }),
            cold_start: metrics::histogram!(
                "portico_cold_start_seconds",
                "endpoint" => endpoint.to_string()
            ),
            tokens: Mutex::default(),
        }
    }

    /// Counts one answered request with its status code.
    pub fn request(&self, status: u16, duration_seconds: f64) {
        if let Some(slot) = self.requests.get(usize::from(status).wrapping_sub(100)) {
            slot.get_or_init(|| {
                metrics::counter!(
                    "portico_requests_total",
                    "project" => self.project.clone(),
                    "endpoint" => self.endpoint.clone(),
                    "code" => status.to_string()
                )
            })
            .increment(1);
        }
        self.duration.record(duration_seconds);
    }

    /// Records the time to a worker's response headers.
    pub fn first_byte(&self, seconds: f64) {
        self.first_byte.record(seconds);
    }

    /// Counts one refused request.
    pub fn denied(&self, reason: DenyReason) {
        // `ALL` lists every variant in declaration order.
        self.denied[reason as usize].increment(1);
    }

    /// A WebSocket session opened.
    pub fn ws_opened(&self) {
        self.ws_connections.increment(1.0);
    }

    /// A WebSocket session closed.
    pub fn ws_closed(&self) {
        self.ws_connections.decrement(1.0);
    }

    /// One relayed WebSocket message; `direction` 0 is client to worker, 1 the reverse.
    pub fn ws_message(&self, direction: usize, bytes: u64) {
        self.ws_messages[direction].increment(1);
        self.ws_bytes[direction].increment(bytes);
    }

    /// The desired worker count of the last decision.
    pub fn desired_workers(&self, workers: u32) {
        self.desired_workers.set(f64::from(workers));
    }

    /// Counts one change of the desired worker count.
    pub fn scale_event(&self, direction: Direction) {
        let index = match direction {
            Direction::Up => 0,
            Direction::Down => 1,
        };
        self.scale_events[index].increment(1);
    }

    /// Records a cold start: from the wake to the first ready worker.
    pub fn cold_start(&self, seconds: f64) {
        self.cold_start.record(seconds);
    }

    /// Counts the tokens one response reported, for `caller` (the token's name; `None`
    /// is `anonymous`). Only responses that carried usage get here, so the lock is taken
    /// once per model answer, not per request.
    pub fn tokens(&self, caller: Option<&str>, usage: crate::traffic::Usage) {
        let caller = caller.unwrap_or("anonymous");
        let mut tokens = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        if !tokens.contains_key(caller) {
            let counters = ["prompt", "completion"].map(|kind| {
                metrics::counter!(
                    "portico_tokens_total",
                    "project" => self.project.clone(),
                    "endpoint" => self.endpoint.clone(),
                    "caller" => caller.to_string(),
                    "kind" => kind
                )
            });
            tokens.insert(caller.into(), counters);
        }
        if let Some([prompt, completion]) = tokens.get(caller) {
            prompt.increment(usage.prompt_tokens);
            completion.increment(usage.completion_tokens);
        }
    }

    /// Counts one failure talking to a worker.
    pub fn upstream_error(&self, kind: UpstreamErrorKind) {
        // `ALL` lists every variant in declaration order.
        self.upstream_errors[kind as usize].increment(1);
    }
}

/// Worker states as `portico_workers{state}` labels them: the health of serving workers,
/// and the actuator's replicas that are not serving (starting, or failed and waiting to
/// restart).
const WORKER_STATES: [&str; 6] = [
    "healthy",
    "unhealthy",
    "ejected",
    "draining",
    "starting",
    "failed",
];

/// Whether the cluster's Redis answers (`[cluster]` only).
pub fn cluster_redis_up(up: bool) {
    metrics::gauge!("portico_cluster_redis_up").set(if up { 1.0 } else { 0.0 });
}

/// Whether this replica holds the scaler lease (`[cluster]` only).
pub fn cluster_leader(leader: bool) {
    metrics::gauge!("portico_cluster_leader").set(if leader { 1.0 } else { 0.0 });
}

/// The leader received a wake for `endpoint` from another replica.
pub fn cluster_wake_received(endpoint: &str) {
    metrics::counter!("portico_cluster_wakes_received_total", "endpoint" => endpoint.to_string())
        .increment(1);
}

/// The live replicas seen in Redis (`[cluster]` only).
pub fn cluster_replicas(count: usize) {
    metrics::gauge!("portico_cluster_replicas").set(count as f64);
}

/// Sets the gauges that mirror atomics, just before a scrape.
pub fn refresh_gauges(routes: &Routes) {
    for endpoint in routes.endpoints() {
        let id = endpoint.id().to_string();
        let mut states = [0u32; WORKER_STATES.len()];
        for worker in endpoint.workers().iter() {
            metrics::gauge!(
                "portico_inflight_requests",
                "endpoint" => id.clone(),
                "worker" => worker.label().to_string()
            )
            .set(worker.inflight() as f64);
            let index = match worker.state() {
                WorkerState::Healthy => 0,
                WorkerState::Unhealthy => 1,
                WorkerState::Ejected => 2,
                WorkerState::Draining => 3,
            };
            states[index] += 1;
        }
        if let Some(actuator) = endpoint.control.actuator() {
            for replica in actuator.replicas() {
                match replica.state {
                    ReplicaState::Starting => states[4] += 1,
                    ReplicaState::Failed => states[5] += 1,
                    ReplicaState::Ready | ReplicaState::Draining => {}
                }
            }
        }
        for (state, count) in WORKER_STATES.iter().zip(states) {
            metrics::gauge!(
                "portico_workers",
                "endpoint" => id.clone(),
                "state" => *state
            )
            .set(f64::from(count));
        }
        metrics::gauge!("portico_pending_requests", "endpoint" => id)
            .set(f64::from(endpoint.control.admission.pending()));
    }
}

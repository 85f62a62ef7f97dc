//! The config file as written: serde types that mirror the TOML one to one.
//!
//! Every struct denies unknown keys, and every key that has a default takes it from the
//! struct's `Default` (container-level `#[serde(default)]`), so a missing table and a table
//! with missing keys mean the same thing. Values are kept as written (strings, integers);
//! `validate` turns them into the typed [`Config`](super::Config) and names every problem.
//! Keys without a default (ids, references, `command`/`urls`, an inbound rule's `source`)
//! and `workers.kind` (implied by `command` or `urls` when absent) default to empty here, so
//! that validation, not serde, reports them along with every other problem of the same
//! element.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileConfig {
    /// `[server]`: admin listener, trusted proxies, state directory, limits.
    pub server: FileServer,
    /// `[[listener]]`: data-plane sockets. Absent: one listener `public` on `0.0.0.0:8080`.
    pub listener: Option<Vec<FileListener>>,
    /// `[object_store]`: where async results are written.
    pub object_store: FileObjectStore,
    /// `[[project]]`: projects and their API tokens.
    pub project: Vec<FileProject>,
    /// `[[security_group]]`: inbound rules endpoints may attach.
    pub security_group: Vec<FileSecurityGroup>,
    /// `[[endpoint]]`: the model endpoints.
    pub endpoint: Vec<FileEndpoint>,
    /// `[[alert]]`: alert rules over endpoint metrics.
    pub alert: Vec<FileAlert>,
    /// `[alerts]`: where alerts are sent and how often rules are evaluated.
    pub alerts: FileAlerts,
    /// `[smtp]`: the mail server alert e-mails go through; present = e-mail configured.
    pub smtp: Option<FileSmtp>,
    /// `[cluster]`: several replicas sharing demand, one scaler and admin state in Redis;
    /// absent = this replica alone.
    pub cluster: Option<FileCluster>,
}

/// `[cluster]`: replicas of one Portico deployment sharing state in Redis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileCluster {
    /// `redis://` or `rediss://` URL of the shared Redis. Required.
    pub redis: String,
    /// This replica's name, unique in the deployment. Default: `<host name>-<pid>`.
    pub replica_id: Option<String>,
    /// How long the scaler lease lasts without renewal. Default 5.
    pub lease_seconds: u64,
    /// Prefix of every Redis key, so that deployments can share a Redis. Default `portico`.
    pub key_prefix: String,
}

impl Default for FileCluster {
    fn default() -> FileCluster {
        FileCluster {
            redis: String::new(),
            replica_id: None,
            lease_seconds: 5,
            key_prefix: "portico".to_string(),
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileServer {
    /// Admin API, `/metrics` and dashboard address. Default `127.0.0.1:9090`.
    pub admin_listen: String,
    /// Hex SHA-256 of the admin bearer token. Default: none.
    pub admin_token_sha256: Option<String>,
    /// Peers allowed to set the client address (PROXY header, `X-Forwarded-For`). Default `[]`.
    pub trusted_proxies: Vec<String>,
    /// Embedded state: async queue, events, usage. Default `./data`.
    pub state_dir: PathBuf,
    /// How long in-flight requests may finish after SIGTERM. Default 30.
    pub grace_period_seconds: u64,
    /// Extension: access log file. Default: none (standard output).
    pub access_log: Option<PathBuf>,
    /// Extension: serve `/metrics` without the admin token. Default `false`.
    pub metrics_public: bool,
    /// Extension: data-plane threads; 0 = one per core. Default 0.
    pub worker_threads: u64,
    /// Extension: largest request head (request line and headers) accepted. Default 65536.
    pub max_header_bytes: u64,
    /// Extension: most request headers accepted. Default 100.
    pub max_headers: u64,
    /// Extension: time allowed for a client to send the request head. Default 10.
    pub header_read_timeout_seconds: u64,
    /// Extension: how long an idle client connection is kept open. Default 75.
    pub keepalive_timeout_seconds: u64,
    /// Extension: how often the config file is checked for changes; 0 = never. Default 2.
    pub config_watch_seconds: u64,
}

impl Default for FileServer {
    fn default() -> FileServer {
        FileServer {
            admin_listen: "127.0.0.1:9090".into(),
            admin_token_sha256: None,
            trusted_proxies: Vec::new(),
            state_dir: PathBuf::from("./data"),
            grace_period_seconds: 30,
            access_log: None,
            metrics_public: false,
            worker_threads: 0,
            max_header_bytes: 65536,
            max_headers: 100,
            header_read_timeout_seconds: 10,
            keepalive_timeout_seconds: 75,
            config_watch_seconds: 2,
        }
    }
}

/// One `[[listener]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileListener {
    /// Name endpoints refer to. Required.
    pub name: String,
    /// Socket address. Default `0.0.0.0:8080`.
    pub address: String,
    /// TLS certificate and key. Default: none (plain TCP).
    pub tls: Option<FileTls>,
    /// Expect a PROXY protocol v1/v2 header on every connection. Default `false`.
    pub proxy_protocol: bool,
}

impl Default for FileListener {
    fn default() -> FileListener {
        FileListener {
            name: String::new(),
            address: "0.0.0.0:8080".into(),
            tls: None,
            proxy_protocol: false,
        }
    }
}

/// A listener's `tls = { cert, key }`; both required.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table")]
pub struct FileTls {
    /// PEM certificate chain file.
    pub cert: PathBuf,
    /// PEM private key file.
    pub key: PathBuf,
}

/// `[object_store]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileObjectStore {
    /// `file://PATH` or `s3://BUCKET[/PREFIX]`. Default `file://./data/results`.
    pub url: String,
    /// S3-compatible endpoint URL. Default: none (AWS).
    pub endpoint: Option<String>,
    /// S3 region. Default `us-east-1`.
    pub region: String,
}

impl Default for FileObjectStore {
    fn default() -> FileObjectStore {
        FileObjectStore {
            url: "file://./data/results".into(),
            endpoint: None,
            region: "us-east-1".into(),
        }
    }
}

/// One `[[project]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileProject {
    /// Project id, used in URL paths. Required.
    pub id: String,
    /// API tokens accepted for the project's endpoints. Default `[]`.
    pub tokens: Vec<FileToken>,
}

/// One entry of a project's `tokens`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileToken {
    /// Token name, shown in access logs and metrics. Required.
    pub name: String,
    /// Hex SHA-256 of the token. Required.
    pub sha256: String,
}

/// One `[[security_group]]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileSecurityGroup {
    /// Security group id. Required.
    pub id: String,
    /// Inbound rules; traffic matching none is denied. Default `[]`.
    pub inbound: Vec<FileInboundRule>,
}

/// One inbound rule of a security group.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileInboundRule {
    /// Only `tcp`. Default `tcp`.
    pub protocol: String,
    /// One port. Default: all ports (when `port_range` is absent too).
    pub port: Option<i64>,
    /// Inclusive `[low, high]` ports. Default: all ports (when `port` is absent too).
    pub port_range: Option<[i64; 2]>,
    /// `any`, an address or a CIDR block. Required.
    pub source: String,
}

impl Default for FileInboundRule {
    fn default() -> FileInboundRule {
        FileInboundRule {
            protocol: "tcp".into(),
            port: None,
            port_range: None,
            source: String::new(),
        }
    }
}

/// One `[[endpoint]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileEndpoint {
    /// Endpoint id, used in URL paths. Required.
    pub id: String,
    /// Id of the owning project. Required.
    pub project: String,
    /// Listener names the endpoint is served on. Default: all listeners.
    pub listeners: Option<Vec<String>>,
    /// Security group ids; none attached = open. Default `[]`.
    pub security_groups: Vec<String>,
    /// No token needed (security groups still apply). Default `false`.
    pub public: bool,
    /// Largest request body accepted. Default 10485760 (10 MiB).
    pub max_body_bytes: u64,
    /// Browser origins allowed to call the endpoint (`["*"]`: any); Portico answers their
    /// CORS preflights and marks the answers. Default `[]`: CORS is left to the workers
    /// (extension).
    pub cors_origins: Vec<String>,
    /// Worker timeouts.
    pub timeouts: FileTimeouts,
    /// How workers are found and started. Required (at least `kind`).
    pub workers: Option<FileWorkers>,
    /// Autoscaling.
    pub scaling: FileScaling,
    /// Choice of worker per request.
    pub balance: FileBalance,
    /// Active health probes and passive outlier ejection (extension).
    pub health: FileHealth,
    /// WebSocket relay limits (extension).
    pub websocket: FileWebSocket,
    /// Asynchronous invocation; present = enabled.
    #[serde(rename = "async")]
    pub async_: Option<FileAsync>,
}

impl Default for FileEndpoint {
    fn default() -> FileEndpoint {
        FileEndpoint {
            id: String::new(),
            project: String::new(),
            listeners: None,
            security_groups: Vec::new(),
            public: false,
            max_body_bytes: 10 * 1024 * 1024,
            cors_origins: Vec::new(),
            timeouts: FileTimeouts::default(),
            workers: None,
            scaling: FileScaling::default(),
            balance: FileBalance::default(),
            health: FileHealth::default(),
            websocket: FileWebSocket::default(),
            async_: None,
        }
    }
}

/// An endpoint's `[endpoint.websocket]` (extension): limits of relayed WebSocket sessions.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileWebSocket {
    /// Largest message (after reassembling fragments); larger → close 1009. Default 16 MiB.
    pub max_message_bytes: u64,
    /// Largest single frame; larger → close 1009. Default 16 MiB.
    pub max_frame_bytes: u64,
    /// A session with no message either way for this long is closed (1001). Default 600.
    pub idle_timeout_seconds: u64,
}

impl Default for FileWebSocket {
    fn default() -> FileWebSocket {
        FileWebSocket {
            max_message_bytes: 16 * 1024 * 1024,
            max_frame_bytes: 16 * 1024 * 1024,
            idle_timeout_seconds: 600,
        }
    }
}

/// An endpoint's `[endpoint.health]` (extension): active probes of `workers.health_path` and
/// passive ejection of failing workers. Defaults follow HAProxy's `inter 2s fall 3 rise 2`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileHealth {
    /// Time between probes of one worker. Default 2000.
    pub interval_ms: u64,
    /// A probe slower than this fails. Default 1000.
    pub timeout_ms: u64,
    /// Consecutive successful probes that bring a down worker back. Default 2.
    pub healthy_threshold: u32,
    /// Consecutive failed probes that take a worker down. Default 3.
    pub unhealthy_threshold: u32,
    /// Consecutive 5xx answers or connect failures that eject a worker. Default 5.
    pub eject_after_failures: u32,
    /// First ejection length; doubles on each repeat, up to 10 times. Default 10.
    pub eject_seconds: u64,
}

impl Default for FileHealth {
    fn default() -> FileHealth {
        FileHealth {
            interval_ms: 2000,
            timeout_ms: 1000,
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            eject_after_failures: 5,
            eject_seconds: 10,
        }
    }
}

/// An endpoint's `timeouts`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileTimeouts {
    /// Connecting to a worker. Default 2000.
    pub connect_ms: u64,
    /// From request sent to the first response byte. Default 300.
    pub first_byte_seconds: u64,
    /// Longest silence on an open response or WebSocket. Default 600.
    pub idle_seconds: u64,
}

impl Default for FileTimeouts {
    fn default() -> FileTimeouts {
        FileTimeouts {
            connect_ms: 2000,
            first_byte_seconds: 300,
            idle_seconds: 600,
        }
    }
}

/// `[endpoint.workers]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileWorkers {
    /// `process`, `static`, `command` or `kubernetes`. Default: `process` when the table
    /// sets `command`, `static` when it sets `urls`; required otherwise.
    pub kind: String,
    /// `process`: the command line; `{port}` is replaced by the worker's port. Required there.
    pub command: Option<Vec<String>>,
    /// `process`: extra environment variables. Default: none.
    pub env: Option<BTreeMap<String, String>>,
    /// `static`: worker base URLs. Required there. `command`: the workers, when not `dns`.
    pub urls: Option<Vec<String>>,
    /// `command` (extension): run with `{endpoint}` and `{replicas}` replaced whenever the
    /// desired count changes. Required there.
    pub scale_command: Option<Vec<String>>,
    /// `command`: `name:port` whose A/AAAA records are the workers, re-resolved every
    /// `dns_refresh_seconds`.
    pub dns: Option<String>,
    /// `command` with `dns`: the DNS server to ask (`ip:port`). Default: the first
    /// `nameserver` of `/etc/resolv.conf`.
    pub dns_server: Option<String>,
    /// `command` with `dns`: seconds between two resolutions. Default 5.
    pub dns_refresh_seconds: u64,
    /// `kubernetes` (extension): the workers' namespace. Required there.
    pub namespace: Option<String>,
    /// `kubernetes`: the Deployment scaled (or `statefulset`).
    pub deployment: Option<String>,
    /// `kubernetes`: the StatefulSet scaled (or `deployment`).
    pub statefulset: Option<String>,
    /// `kubernetes`: the Service whose EndpointSlices list the ready workers. Default: the
    /// Deployment's (StatefulSet's) name.
    pub service: Option<String>,
    /// `kubernetes`: the workers' port. Required there.
    pub port: Option<u16>,
    /// `kubernetes`: the API server's URL. Default: in-cluster
    /// (`https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`).
    pub api_server: Option<String>,
    /// `kubernetes`: the bearer token, read at each call. Default: the service account's.
    pub token_file: Option<PathBuf>,
    /// `kubernetes`: the API server's CA. Default: the service account's.
    pub ca_file: Option<PathBuf>,
    /// Health check path. Default `/health`.
    pub health_path: String,
    /// Prometheus metrics path. Default `/metrics`.
    pub metrics_path: String,
    /// How long a starting worker may take to pass its health check. Default 600.
    pub startup_timeout_seconds: u64,
    /// `http1` or `h2c`. Default `http1`.
    pub protocol: String,
}

impl Default for FileWorkers {
    fn default() -> FileWorkers {
        FileWorkers {
            kind: String::new(),
            command: None,
            env: None,
            urls: None,
            scale_command: None,
            dns: None,
            dns_server: None,
            dns_refresh_seconds: 5,
            namespace: None,
            deployment: None,
            statefulset: None,
            service: None,
            port: None,
            api_server: None,
            token_file: None,
            ca_file: None,
            health_path: "/health".into(),
            metrics_path: "/metrics".into(),
            startup_timeout_seconds: 600,
            protocol: "http1".into(),
        }
    }
}

/// `[endpoint.scaling]`; defaults are those of [`scaler::ScalingSettings::default`].
/// Also the saved form of settings changed through the admin API.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileScaling {
    /// Workers kept even when idle. Default 0.
    pub min_workers: u32,
    /// Most workers. Default 4.
    pub max_workers: u32,
    /// `concurrency`, `rps` or `custom`. Default `concurrency`.
    pub metric: String,
    /// Scraped gauge name; with `metric = "custom"` only.
    pub custom_metric: Option<String>,
    /// Desired metric value per worker. Default 10.
    pub target: f64,
    /// Idle time before scaling to zero. Default 60.
    pub idle_timeout_seconds: u64,
    /// After a wake, no scale to zero before this. Default 300.
    pub initial_cooldown_seconds: u64,
    /// Averaging window. Default 60.
    pub stable_window_seconds: u64,
    /// Burst window. Default 6.
    pub panic_window_seconds: u64,
    /// Burst multiple of ready workers that triggers panic mode. Default 2.0.
    pub panic_threshold: f64,
    /// Requests held while no worker is ready. Default 1000.
    pub max_pending: u32,
    /// How long a held request waits. Default 600.
    pub cold_start_timeout_seconds: u64,
    /// SSE `: waking` comments to a held streaming request this often; 0 = off. Default 5.
    pub waking_keepalive_seconds: u64,
}

impl FileScaling {
    /// Every key of `[endpoint.scaling]`, in the order people read them.
    pub const KEYS: [&str; 13] = [
        "min_workers",
        "max_workers",
        "metric",
        "custom_metric",
        "target",
        "idle_timeout_seconds",
        "initial_cooldown_seconds",
        "stable_window_seconds",
        "panic_window_seconds",
        "panic_threshold",
        "max_pending",
        "cold_start_timeout_seconds",
        "waking_keepalive_seconds",
    ];
}

impl Default for FileScaling {
    fn default() -> FileScaling {
        FileScaling::from(&scaler::ScalingSettings::default())
    }
}

impl From<&scaler::ScalingSettings> for FileScaling {
    fn from(s: &scaler::ScalingSettings) -> FileScaling {
        let custom_metric = match &s.metric {
            scaler::Metric::Custom(name) => Some(name.clone()),
            _ => None,
        };
        FileScaling {
            min_workers: s.min_workers,
            max_workers: s.max_workers,
            metric: s.metric.kind().into(),
            custom_metric,
            target: s.target,
            idle_timeout_seconds: s.idle_timeout.as_secs(),
            initial_cooldown_seconds: s.initial_cooldown.as_secs(),
            stable_window_seconds: s.stable_window.as_secs(),
            panic_window_seconds: s.panic_window.as_secs(),
            panic_threshold: s.panic_threshold,
            max_pending: s.max_pending,
            cold_start_timeout_seconds: s.cold_start_timeout.as_secs(),
            waking_keepalive_seconds: s.waking_keepalive.as_secs(),
        }
    }
}

/// `[endpoint.balance]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileBalance {
    /// `least_inflight` or `round_robin`. Default `least_inflight`.
    pub strategy: String,
}

impl Default for FileBalance {
    fn default() -> FileBalance {
        FileBalance {
            strategy: "least_inflight".into(),
        }
    }
}

/// `[endpoint.async]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileAsync {
    /// Paths (below the endpoint) whose POSTs are queued. Default `[]`.
    pub routes: Vec<String>,
    /// Jobs dispatched to one worker at a time. Default 4.
    pub concurrency_per_worker: u32,
    /// Tries per job before it fails. Default 3.
    pub max_attempts: u32,
    /// How long a job and its result are kept. Default 21600.
    pub ttl_seconds: u64,
    /// URL prefixes webhooks may call. Default `[]` (no webhooks).
    pub webhook_allow: Vec<String>,
    /// `embedded` or a `redis://` / `rediss://` URL. Default `embedded`.
    pub queue: String,
    /// A job claimed by a replica that stopped renewing its claim for this long is taken
    /// back by another (Redis queue). Default 30.
    pub reclaim_after_seconds: u64,
}

impl Default for FileAsync {
    fn default() -> FileAsync {
        FileAsync {
            routes: Vec::new(),
            concurrency_per_worker: 4,
            max_attempts: 3,
            ttl_seconds: 21600,
            webhook_allow: Vec::new(),
            queue: "embedded".into(),
            reclaim_after_seconds: 30,
        }
    }
}

/// One `[[alert]]`: a condition on one endpoint metric, held for a while, that notifies.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileAlert {
    /// Alert name, unique; appears in notifications and metric labels. Required.
    pub name: String,
    /// An endpoint id, or `*` for every endpoint (each evaluated on its own). Required.
    pub endpoint: String,
    /// `error_rate`, `p95_latency_ms`, `pending_requests`, `async_queue_depth`,
    /// `ready_workers` or `worker_restarts`. Required.
    pub metric: String,
    /// `>`, `>=`, `<`, `<=` or `==`. Required.
    pub operator: String,
    /// The value the metric is compared with. Required.
    pub threshold: Option<f64>,
    /// How long the condition must hold before the alert fires. Default 0.
    pub for_seconds: u64,
    /// `webhook` and/or `email`. Default: every configured channel.
    pub notify: Option<Vec<String>>,
    /// `error_rate` only: fewer requests than this in the last minute → not evaluated.
    /// Default 10.
    pub min_requests: Option<u64>,
}

/// `[alerts]`: notification channels and the evaluation period.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileAlerts {
    /// http(s) URL that receives a JSON POST per firing and resolved alert. Default: none.
    pub webhook_url: Option<String>,
    /// How long one webhook call may take. Default 10.
    pub webhook_timeout_seconds: u64,
    /// Recipients of alert e-mails (needs `[smtp]`). Default `[]`.
    pub email_to: Vec<String>,
    /// Time between two evaluations of every rule. Default 5.
    pub evaluate_every_seconds: u64,
}

impl Default for FileAlerts {
    fn default() -> FileAlerts {
        FileAlerts {
            webhook_url: None,
            webhook_timeout_seconds: 10,
            email_to: Vec::new(),
            evaluate_every_seconds: 5,
        }
    }
}

/// `[smtp]`: the mail server for alert e-mails.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub struct FileSmtp {
    /// Server host name or address. Required.
    pub host: String,
    /// Server port. Default 587.
    pub port: u64,
    /// Sender mailbox, e.g. `Portico <alerts@example.com>`. Required.
    pub from: String,
    /// Login name; needs `password`. Default: none (no authentication).
    pub username: Option<String>,
    /// Login password; needs `username`. Default: none.
    pub password: Option<String>,
    /// `required`, `opportunistic`, `off` (STARTTLS) or `implicit` (TLS from the first
    /// byte, port 465). Default `required`.
    pub starttls: String,
    /// Connecting and each SMTP exchange. Default 10.
    pub timeout_seconds: u64,
}

impl Default for FileSmtp {
    fn default() -> FileSmtp {
        FileSmtp {
            host: String::new(),
            port: 587,
            from: String::new(),
            username: None,
            password: None,
            starttls: "required".into(),
            timeout_seconds: 10,
        }
    }
}

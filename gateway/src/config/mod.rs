//! Configuration: the TOML file and the validated, typed [`Config`] built from it.
//!
//! Loading is two steps. [`FileConfig`] mirrors the file (serde, unknown keys denied); it is
//! turned into a [`Config`] that holds only valid values (`Duration`, `SocketAddr`,
//! `http::Uri`, [`ipfilter::Cidr`], [`scaler::ScalingSettings`], enums). Both steps collect
//! every problem in one pass, each named by its key path, so `portico validate` lists them
//! all at once. `docs/configuration.md` is the operator's reference for every key.
//!
//! Layout:
//! - `file`: [`FileConfig`] and its sub-tables, with their defaults.
//! - `parse`: TOML text to [`FileConfig`], keeping a key path on every serde error.
//! - `validate`: [`FileConfig`] to [`Config`], every check.

pub mod file;
mod parse;
mod validate;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipfilter::{Cidr, PortRange, Source};
use scaler::ScalingSettings;

pub use file::FileConfig;
pub(crate) use validate::scaling_settings;

/// The whole validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`.
    pub server: Server,
    /// `[[listener]]`, in file order (one `public` listener when the file has none).
    pub listeners: Vec<Listener>,
    /// `[object_store]`.
    pub object_store: ObjectStore,
    /// `[[project]]`, in file order.
    pub projects: Vec<Project>,
    /// `[[security_group]]`, in file order.
    pub security_groups: Vec<SecurityGroup>,
    /// `[[endpoint]]`, in file order.
    pub endpoints: Vec<Endpoint>,
    /// `[[alert]]` rules, `[alerts]` channels and `[smtp]` (no rules when absent).
    pub alerts: Alerts,
    /// `[cluster]`, when replicas share state in Redis.
    pub cluster: Option<Cluster>,
    /// What was accepted but probably not meant (a CIDR block with host bits set), each
    /// named by its key path; `portico validate` and start-up report them.
    pub warnings: Vec<Problem>,
    /// The file as written (empty when the config did not come from TOML text), for
    /// `GET /admin/config`, which shows it with secrets redacted.
    pub source: toml::Table,
}

impl Config {
    /// Reads, parses and validates the file at `path`. Relative paths inside it resolve
    /// against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base_dir = path.parent().unwrap_or(Path::new("."));
        Config::from_toml_str(&text, base_dir)
    }

    /// Parses and validates TOML `text`; relative paths in it resolve against `base_dir`.
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigError> {
        let parsed = parse::parse(text).map_err(|problem| ConfigError::Invalid(vec![problem]))?;
        let mut config =
            validate::validate(&parsed.file, &parsed.origin, base_dir, parsed.problems)
                .map_err(ConfigError::Invalid)?;
        // It parsed as a config, so it parses as a table.
        config.source = text.parse().unwrap_or_default();
        Ok(config)
    }

    /// One line for logs and `portico validate`, e.g.
    /// `2 listeners, 1 project, 1 security group, 3 endpoints`.
    pub fn summary(&self) -> String {
        fn count(n: usize, noun: &str) -> String {
            if n == 1 {
                format!("1 {noun}")
            } else {
                format!("{n} {noun}s")
            }
        }
        [
            count(self.listeners.len(), "listener"),
            count(self.projects.len(), "project"),
            count(self.security_groups.len(), "security group"),
            count(self.endpoints.len(), "endpoint"),
        ]
        .join(", ")
    }

    /// The endpoint with this id.
    pub fn endpoint(&self, id: &str) -> Option<&Endpoint> {
        self.endpoints.iter().find(|e| e.id == id)
    }

    /// The project with this id.
    pub fn project(&self, id: &str) -> Option<&Project> {
        self.projects.iter().find(|p| p.id == id)
    }
}

impl TryFrom<FileConfig> for Config {
    type Error = ConfigError;

    /// Validates an already-parsed file; relative paths resolve against the current directory.
    fn try_from(file: FileConfig) -> Result<Config, ConfigError> {
        validate::validate(&file, &parse::Origin::default(), Path::new("."), Vec::new())
            .map_err(ConfigError::Invalid)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
    /// The file was read but is not valid: every problem found, syntax errors included.
    #[error("{}", invalid_message(.0))]
    Invalid(Vec<Problem>),
}

impl ConfigError {
    /// One human line per problem: `<key path>: <message>`.
    pub fn problems(&self) -> Vec<String> {
        match self {
            ConfigError::Read { source, .. } => vec![format!("cannot read the file: {source}")],
            ConfigError::Invalid(problems) => problems.iter().map(Problem::to_string).collect(),
        }
    }
}

fn invalid_message(problems: &[Problem]) -> String {
    let noun = if problems.len() == 1 {
        "problem"
    } else {
        "problems"
    };
    let mut out = format!("invalid configuration ({} {noun})", problems.len());
    for problem in problems {
        out.push_str("\n  ");
        out.push_str(&problem.to_string());
    }
    out
}

/// One thing wrong with the configuration, named by its key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Key path, e.g. `endpoint[is-8458].scaling.max_workers`; elements are named by id, or
    /// by `#N` (1-based position) when the id is missing or invalid; plain lists by index.
    pub path: String,
    /// What is wrong, e.g. `must be >= min_workers (3)`.
    pub message: String,
}

impl Problem {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Problem {
        Problem {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Admin API, `/metrics` and dashboard.
    pub admin_listen: SocketAddr,
    /// SHA-256 of the admin bearer token; required to use the admin API.
    pub admin_token_sha256: Option<[u8; 32]>,
    /// Peers allowed to set the client address (PROXY header, `X-Forwarded-For`).
    pub trusted_proxies: Vec<Cidr>,
    /// Embedded state (async queue, events, usage), absolute.
    pub state_dir: PathBuf,
    /// How long in-flight requests may finish after SIGTERM.
    pub grace_period: Duration,
    /// Access log file, absolute; `None` = standard output.
    pub access_log: Option<PathBuf>,
    /// Serve `/metrics` without the admin token.
    pub metrics_public: bool,
    /// Data-plane threads; 0 = one per core.
    pub worker_threads: usize,
    /// Largest request head accepted, in bytes.
    pub max_header_bytes: usize,
    /// Most request headers accepted.
    pub max_headers: usize,
    /// Time allowed for a client to send the request head.
    pub header_read_timeout: Duration,
    /// How long an idle client connection is kept open.
    pub keepalive_timeout: Duration,
    /// How often the config file is checked for changes; `None` = never.
    pub config_watch: Option<Duration>,
}

/// One data-plane listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Name endpoints refer to.
    pub name: String,
    /// Address to bind (port 0 = any free port).
    pub address: SocketAddr,
    /// TLS, when configured.
    pub tls: Option<Tls>,
    /// Expect a PROXY protocol v1/v2 header on every connection.
    pub proxy_protocol: bool,
}

/// A listener's certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tls {
    /// PEM certificate chain, absolute path of an existing file.
    pub cert: PathBuf,
    /// PEM private key, absolute path of an existing file.
    pub key: PathBuf,
}

/// Where async results are written.
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectStore {
    /// `file:///absolute/path` (relative paths resolved) or `s3://bucket[/prefix]`.
    pub url: String,
    /// S3-compatible endpoint URL, when not AWS.
    pub endpoint: Option<String>,
    /// S3 region.
    pub region: String,
}

/// A project and its API tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct Project {
    /// Project id, as in `/project/<id>/…`.
    pub id: String,
    /// Tokens accepted for the project's endpoints.
    pub tokens: Vec<Token>,
}

/// One project API token, stored as its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// Token name: the caller identity in access logs and metrics.
    pub name: String,
    /// SHA-256 of the token.
    pub sha256: [u8; 32],
}

/// A named set of inbound rules.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityGroup {
    /// Security group id.
    pub id: String,
    /// Traffic matching any rule is allowed.
    pub inbound: Vec<InboundRule>,
}

/// One inbound rule (TCP only).
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRule {
    /// Listener ports the rule applies to.
    pub ports: PortRange,
    /// Client addresses allowed.
    pub source: Source,
}

/// A model endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    /// Endpoint id, as in `/project/<p>/endpoint/<id>/…`.
    pub id: String,
    /// Owning project's id.
    pub project: String,
    /// Names of the listeners serving it (all listeners when the file leaves it out).
    pub listeners: Vec<String>,
    /// Attached security group ids; none = open.
    pub security_groups: Vec<String>,
    /// No token needed (security groups still apply).
    pub public: bool,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// Browser origins allowed to call the endpoint.
    pub cors: Cors,
    /// Worker timeouts.
    pub timeouts: Timeouts,
    /// How workers are found and started.
    pub workers: Workers,
    /// Autoscaling settings.
    pub scaling: ScalingSettings,
    /// Choice of worker per request.
    pub balance: Balance,
    /// Health probes and outlier ejection.
    pub health: Health,
    /// WebSocket relay limits.
    pub websocket: WebSocket,
    /// Asynchronous invocation, when enabled.
    pub async_: Option<AsyncSettings>,
}

/// `[cluster]`: this replica's place in a deployment sharing state in Redis.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    /// `redis://` or `rediss://` URL.
    pub redis: String,
    /// This replica's unique name.
    pub replica_id: String,
    /// The scaler lease: a leader that does not renew it for this long is replaced.
    pub lease: Duration,
    /// Prefix of every Redis key.
    pub key_prefix: String,
}

/// Which browser origins may call an endpoint (`cors_origins`).
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Cors {
    /// Portico leaves CORS to the workers (no `cors_origins`).
    #[default]
    Off,
    /// Any origin (`["*"]`).
    Any,
    /// These origins, as browsers write them: `scheme://host[:port]`, lower case.
    Origins(Vec<String>),
}

impl Cors {
    /// Whether a request with this `Origin` header value may be answered for CORS.
    pub fn allows(&self, origin: &[u8]) -> bool {
        match self {
            Cors::Off => false,
            Cors::Any => true,
            Cors::Origins(list) => list
                .iter()
                .any(|o| o.as_bytes().eq_ignore_ascii_case(origin)),
        }
    }

    /// The origins as configured (`["*"]` for any), for the admin API.
    pub fn origins(&self) -> Vec<&str> {
        match self {
            Cors::Off => Vec::new(),
            Cors::Any => vec!["*"],
            Cors::Origins(list) => list.iter().map(String::as_str).collect(),
        }
    }
}

/// An endpoint's WebSocket relay limits.
#[derive(Debug, Clone, PartialEq)]
pub struct WebSocket {
    /// Largest message; larger → close 1009.
    pub max_message_bytes: usize,
    /// Largest frame; larger → close 1009.
    pub max_frame_bytes: usize,
    /// No message either way for this long → close 1001.
    pub idle_timeout: Duration,
}

/// An endpoint's health probes and passive outlier ejection.
#[derive(Debug, Clone, PartialEq)]
pub struct Health {
    /// Time between probes of one worker.
    pub interval: Duration,
    /// A probe slower than this fails.
    pub timeout: Duration,
    /// Consecutive successful probes that bring a down worker back.
    pub healthy_threshold: u32,
    /// Consecutive failed probes that take a worker down.
    pub unhealthy_threshold: u32,
    /// Consecutive 5xx answers or connect failures that eject a worker.
    pub eject_after_failures: u32,
    /// First ejection length (doubling on repeats).
    pub eject: Duration,
}

/// An endpoint's worker timeouts.
#[derive(Debug, Clone, PartialEq)]
pub struct Timeouts {
    /// Connecting to a worker.
    pub connect: Duration,
    /// From request sent to the first response byte.
    pub first_byte: Duration,
    /// Longest silence on an open response or WebSocket.
    pub idle: Duration,
}

/// How an endpoint's workers are found, started and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Workers {
    /// Where workers come from.
    pub kind: WorkerKind,
    /// Health check path.
    pub health_path: String,
    /// Prometheus metrics path.
    pub metrics_path: String,
    /// How long a starting worker may take to pass its health check.
    pub startup_timeout: Duration,
    /// Protocol spoken to workers.
    pub protocol: WorkerProtocol,
}

/// Where workers come from.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkerKind {
    /// Local processes started by Portico.
    Process {
        /// Program and arguments; `{port}` is replaced by the worker's port.
        command: Vec<String>,
        /// Extra environment variables, sorted by name.
        env: Vec<(String, String)>,
    },
    /// A fixed list of workers run elsewhere.
    Static {
        /// Base URLs (`http://host:port` or `https://…`, no path).
        urls: Vec<http::Uri>,
    },
    /// A Deployment or StatefulSet on Kubernetes: scaled through its `scale` subresource,
    /// its ready pods found in its Service's EndpointSlices.
    Kubernetes(KubernetesWorkers),
    /// Workers run by another system: a command sets their count, and they are found by
    /// URL list or DNS.
    Command {
        /// Program and arguments; `{endpoint}` and `{replicas}` are replaced.
        scale_command: Vec<String>,
        /// Extra environment variables of the command, sorted by name.
        env: Vec<(String, String)>,
        /// Where the workers are.
        discovery: Discovery,
    },
}

/// Where the scaled workload of a `kubernetes` endpoint is, and how to reach the API.
#[derive(Debug, Clone, PartialEq)]
pub struct KubernetesWorkers {
    /// The workers' namespace.
    pub namespace: String,
    /// `deployments` or `statefulsets`.
    pub resource: &'static str,
    /// The Deployment's or StatefulSet's name.
    pub name: String,
    /// The Service whose EndpointSlices list the ready workers.
    pub service: String,
    /// The workers' port.
    pub port: u16,
    /// The API server; `None`: in-cluster, from the environment.
    pub api_server: Option<http::Uri>,
    /// The bearer token's file (read at each call; absent file: no token).
    pub token_file: PathBuf,
    /// The API server's CA certificate (PEM; absent file: the system roots).
    pub ca_file: PathBuf,
}

/// Where the workers of a `command` endpoint are found.
#[derive(Debug, Clone, PartialEq)]
pub enum Discovery {
    /// Every worker that may run, by base URL; the health probes tell which do.
    Urls(Vec<http::Uri>),
    /// The A/AAAA records of a name (e.g. a headless service), on a port.
    Dns {
        /// The name to resolve.
        name: String,
        /// The workers' port.
        port: u16,
        /// The DNS server; `None`: the first `nameserver` of `/etc/resolv.conf`.
        server: Option<SocketAddr>,
        /// Time between two resolutions.
        refresh: Duration,
    },
}

/// Protocol spoken to workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerProtocol {
    /// HTTP/1.1 (`http1`).
    Http1,
    /// HTTP/2 without TLS, prior knowledge (`h2c`).
    H2c,
}

/// How a worker is picked for each request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalanceStrategy {
    /// Fewest requests in flight (power of two choices).
    LeastInflight,
    /// Each worker in turn.
    RoundRobin,
}

/// `[endpoint.balance]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance {
    /// The strategy.
    pub strategy: BalanceStrategy,
}

/// `[endpoint.async]`: asynchronous invocation.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncSettings {
    /// Paths below the endpoint whose POSTs are queued (answered 202).
    pub routes: Vec<String>,
    /// Jobs dispatched to one worker at a time.
    pub concurrency_per_worker: u32,
    /// Tries per job before it fails.
    pub max_attempts: u32,
    /// How long a job and its result are kept.
    pub ttl: Duration,
    /// URL prefixes webhooks may call.
    pub webhook_allow: Vec<String>,
    /// Where jobs are queued.
    pub queue: QueueBackend,
    /// How long a claim may go unrenewed before another replica takes the job back.
    pub reclaim_after: Duration,
}

/// Where async jobs are queued.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum QueueBackend {
    /// The embedded store under `server.state_dir`.
    Embedded,
    /// Redis Streams at this `redis://` or `rediss://` URL.
    Redis(String),
}

/// Alerting: the `[[alert]]` rules, the `[alerts]` channels and the `[smtp]` server.
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    /// `[[alert]]`, in file order.
    pub rules: Vec<AlertRule>,
    /// `[alerts].webhook_url`: where firing and resolved notifications are POSTed.
    pub webhook_url: Option<http::Uri>,
    /// How long one webhook call may take.
    pub webhook_timeout: Duration,
    /// `[alerts].email_to`: recipients of alert e-mails (non-empty only with `smtp`).
    pub email_to: Vec<lettre::message::Mailbox>,
    /// Time between two evaluations of every rule.
    pub evaluate_every: Duration,
    /// `[smtp]`, when configured.
    pub smtp: Option<Smtp>,
}

impl Default for Alerts {
    fn default() -> Alerts {
        Alerts {
            rules: Vec::new(),
            webhook_url: None,
            webhook_timeout: Duration::from_secs(10),
            email_to: Vec::new(),
            evaluate_every: Duration::from_secs(5),
            smtp: None,
        }
    }
}

/// One `[[alert]]` rule.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertRule {
    /// Unique name, as in notifications and `portico_alert_firing{alert}`.
    pub name: String,
    /// The endpoint watched: one, or each of them separately.
    pub endpoint: AlertScope,
    /// The value compared.
    pub metric: AlertMetric,
    /// How it is compared.
    pub operator: AlertOperator,
    /// What it is compared with.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires (zero: at once).
    pub for_: Duration,
    /// Channels notified when it fires and resolves (none: admin API and metrics only).
    pub notify: Vec<AlertChannel>,
    /// `error_rate`: fewer requests than this in the last minute → not evaluated.
    pub min_requests: u64,
}

/// Which endpoints a rule watches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertScope {
    /// `*`: every endpoint, each with its own state.
    Each,
    /// One endpoint, by id.
    Endpoint(String),
}

impl AlertScope {
    /// Whether the rule watches the endpoint with this id.
    pub fn covers(&self, id: &str) -> bool {
        match self {
            AlertScope::Each => true,
            AlertScope::Endpoint(own) => own == id,
        }
    }
}

/// An endpoint metric an alert can watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMetric {
    /// Share of the last minute's requests answered 5xx (0..=1).
    ErrorRate,
    /// 95th percentile of the last minute's request durations, in milliseconds.
    P95LatencyMs,
    /// Requests held now while no worker is ready.
    PendingRequests,
    /// Async jobs waiting or running now.
    AsyncQueueDepth,
    /// Workers that may take a request now.
    ReadyWorkers,
    /// Replica restarts (after a crash or failed start) in the last five minutes.
    WorkerRestarts,
}

impl AlertMetric {
    /// Every metric, in the order the docs list them.
    pub const ALL: [AlertMetric; 6] = [
        AlertMetric::ErrorRate,
        AlertMetric::P95LatencyMs,
        AlertMetric::PendingRequests,
        AlertMetric::AsyncQueueDepth,
        AlertMetric::ReadyWorkers,
        AlertMetric::WorkerRestarts,
    ];

    /// The name used in the config file and notifications.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertMetric::ErrorRate => "error_rate",
            AlertMetric::P95LatencyMs => "p95_latency_ms",
            AlertMetric::PendingRequests => "pending_requests",
            AlertMetric::AsyncQueueDepth => "async_queue_depth",
            AlertMetric::ReadyWorkers => "ready_workers",
            AlertMetric::WorkerRestarts => "worker_restarts",
        }
    }
}

/// How a metric is compared with a rule's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertOperator {
    /// `>`
    Above,
    /// `>=`
    AtLeast,
    /// `<`
    Below,
    /// `<=`
    AtMost,
    /// `==`
    Equal,
}

impl AlertOperator {
    /// Every operator.
    pub const ALL: [AlertOperator; 5] = [
        AlertOperator::Above,
        AlertOperator::AtLeast,
        AlertOperator::Below,
        AlertOperator::AtMost,
        AlertOperator::Equal,
    ];

    /// The operator as written in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertOperator::Above => ">",
            AlertOperator::AtLeast => ">=",
            AlertOperator::Below => "<",
            AlertOperator::AtMost => "<=",
            AlertOperator::Equal => "==",
        }
    }

    /// Whether `value` breaches `threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            AlertOperator::Above => value > threshold,
            AlertOperator::AtLeast => value >= threshold,
            AlertOperator::Below => value < threshold,
            AlertOperator::AtMost => value <= threshold,
            AlertOperator::Equal => value == threshold,
        }
    }
}

/// Where an alert's notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertChannel {
    /// A JSON POST to `[alerts].webhook_url`.
    Webhook,
    /// An e-mail to `[alerts].email_to` through `[smtp]`.
    Email,
}

impl AlertChannel {
    /// The channel's name in the config file and in metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertChannel::Webhook => "webhook",
            AlertChannel::Email => "email",
        }
    }
}

/// `[smtp]`: the mail server alert e-mails go through.
#[derive(Clone, PartialEq)]
pub struct Smtp {
    /// Server host name or address.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Sender mailbox.
    pub from: lettre::message::Mailbox,
    /// Login name and password, when the server wants them.
    pub credentials: Option<(String, String)>,
    /// How the connection is encrypted.
    pub tls: SmtpTls,
    /// Connecting and each SMTP exchange.
    pub timeout: Duration,
}

impl fmt::Debug for Smtp {
    /// Like a derived `Debug`, with the password left out (configs get logged).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Smtp")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("username", &self.credentials.as_ref().map(|(user, _)| user))
            .field("tls", &self.tls)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `[smtp].starttls`: how the connection to the mail server is encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// STARTTLS, and no mail without it (`required`).
    Required,
    /// STARTTLS when the server offers it, plain text otherwise (`opportunistic`).
    Opportunistic,
    /// Plain text (`off`): only for a relay on a trusted network.
    Off,
    /// TLS from the first byte (`implicit`, usually port 465).
    Implicit,
}

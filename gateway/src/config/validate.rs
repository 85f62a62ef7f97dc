//! [`FileConfig`] to [`Config`]: every check, every problem in one pass.
//!
//! Each check records a [`Problem`] named by its key path and yields `None` for the value it
//! could not build; the typed [`Config`] is assembled only when no problem was found.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use http::Uri;
use ipfilter::{Cidr, PortRange, Source};
use scaler::{Metric, ScalingSettings};

use super::file::{
    FileAlert, FileAlerts, FileAsync, FileCluster, FileConfig, FileEndpoint, FileHealth,
    FileInboundRule, FileListener, FileObjectStore, FileProject, FileScaling, FileSecurityGroup,
    FileServer, FileSmtp, FileTimeouts, FileWebSocket, FileWorkers,
};
use super::parse::Origin;
use super::{
    AlertChannel, AlertMetric, AlertOperator, AlertRule, AlertScope, Alerts, AsyncSettings,
    Balance, BalanceStrategy, Cluster, Config, Cors, Discovery, Endpoint, Health, InboundRule,
    KubernetesWorkers, Listener, ObjectStore, Problem, Project, QueueBackend, SecurityGroup,
    Server, Smtp, SmtpTls, Timeouts, Tls, Token, WebSocket, WorkerKind, WorkerProtocol, Workers,
};

/// Ids appear in URL paths, logs and metric labels: `[A-Za-z0-9._-]+`, not only dots.
pub(crate) fn is_id(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !text.chars().all(|c| c == '.')
}

/// `[id]` for an element with a valid id, else `[#position]` (1-based).
pub(crate) fn element_label(id: &str, position: usize) -> String {
    if is_id(id) {
        format!("[{id}]")
    } else {
        format!("[#{position}]")
    }
}

/// `path.key`, quoting keys that are not bare TOML keys.
pub(crate) fn path_key(path: &str, key: &str) -> String {
    let bare = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if bare {
        key.to_string()
    } else {
        format!("{key:?}")
    };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// Validates `file`; `problems` already holds the parse problems, which come first.
pub(crate) fn validate(
    file: &FileConfig,
    origin: &Origin,
    base_dir: &Path,
    problems: Vec<Problem>,
) -> Result<Config, Vec<Problem>> {
    let base_dir = absolute(base_dir);
    let mut check = Check {
        origin,
        base_dir: &base_dir,
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    let mut config = check.config(file);
    if let Some(config) = &mut config {
        config.warnings = std::mem::take(&mut check.warnings);
    }
    let mut all = problems;
    // A value that failed to parse was reported once already; a default stood in for it.
    all.extend(
        check
            .problems
            .into_iter()
            .filter(|p| !origin.covers(&p.path)),
    );
    // Parse problems came first; report everything in file order instead (stable: within
    // an element, parse problems still precede the checks).
    all.sort_by_key(|p| origin.sort_key(&p.path));
    match config {
        Some(config) if all.is_empty() => Ok(config),
        _ if all.is_empty() => Err(vec![Problem::new(
            "<file>",
            "invalid configuration (internal error: no problem was recorded)",
        )]),
        _ => Err(all),
    }
}

/// Checks scaling settings outside a file (the admin API's `PATCH …/scaling`) exactly as
/// `[endpoint.scaling]` is checked; each problem is named by its key under `path`.
pub(crate) fn scaling_settings(
    path: &str,
    file: &FileScaling,
) -> Result<ScalingSettings, Vec<Problem>> {
    let origin = Origin::default();
    let mut check = Check {
        origin: &origin,
        base_dir: Path::new("."),
        problems: Vec::new(),
        warnings: Vec::new(),
    };
    match check.scaling(path, file) {
        Some(settings) if check.problems.is_empty() => Ok(settings),
        _ => Err(check.problems),
    }
}

struct Check<'a> {
    origin: &'a Origin,
    base_dir: &'a Path,
    problems: Vec<Problem>,
    warnings: Vec<Problem>,
}

/// Names of what endpoints may refer to.
struct Known {
    listeners: Vec<String>,
    projects: Vec<String>,
    security_groups: Vec<String>,
}

impl Check<'_> {
    fn bad(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn config(&mut self, file: &FileConfig) -> Option<Config> {
        let server = self.server(&file.server);
        let listeners = self.listeners(file.listener.as_deref(), server.as_ref());
        let object_store = self.object_store(&file.object_store);
        let admin_hash = server.as_ref().and_then(|s| s.admin_token_sha256);
        let projects = self.projects(&file.project, admin_hash);
        let security_groups = self.security_groups(&file.security_group);
        let known = Known {
            listeners: match &file.listener {
                None => vec!["public".to_string()],
                Some(list) => list.iter().map(|l| l.name.clone()).collect(),
            },
            projects: file.project.iter().map(|p| p.id.clone()).collect(),
            security_groups: file.security_group.iter().map(|g| g.id.clone()).collect(),
        };
        let endpoints = self.endpoints(&file.endpoint, &known);
        let alerts = self.alerts(file);
        let cluster = match &file.cluster {
            None => Some(None),
            Some(cluster) => self.cluster(cluster).map(Some),
        };
        Some(Config {
            server: server?,
            listeners: listeners.into_iter().collect::<Option<_>>()?,
            object_store: object_store?,
            projects: projects.into_iter().collect::<Option<_>>()?,
            security_groups: security_groups.into_iter().collect::<Option<_>>()?,
            endpoints: endpoints.into_iter().collect::<Option<_>>()?,
            alerts: alerts?,
            cluster: cluster?,
            warnings: Vec::new(),
            source: toml::Table::new(),
        })
    }

    // ---- [server] -------------------------------------------------------------------------

    fn server(&mut self, s: &FileServer) -> Option<Server> {
        let admin_listen = self.socket_addr("server.admin_listen", &s.admin_listen);
        let admin_token_sha256 = match &s.admin_token_sha256 {
            None => Some(None),
            Some(hex) => self.sha256("server.admin_token_sha256", hex).map(Some),
        };
        let trusted_proxies: Vec<Option<Cidr>> = s
            .trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, text)| self.trusted_proxy(&format!("server.trusted_proxies[{i}]"), text))
            .collect();
        let state_dir = self.path("server.state_dir", &s.state_dir);
        let access_log = match &s.access_log {
            None => Some(None),
            Some(path) => self.path("server.access_log", path).map(Some),
        };
        let worker_threads = self.at_most("server.worker_threads", s.worker_threads, 1024);
        let max_header_bytes = self.at_least("server.max_header_bytes", s.max_header_bytes, 1024);
        let max_headers = self.at_least("server.max_headers", s.max_headers, 8);
        let header_read_timeout = self.seconds(
            "server.header_read_timeout_seconds",
            s.header_read_timeout_seconds,
        );
        let keepalive_timeout = self.seconds(
            "server.keepalive_timeout_seconds",
            s.keepalive_timeout_seconds,
        );
        let config_watch =
            self.at_most("server.config_watch_seconds", s.config_watch_seconds, 3600);
        Some(Server {
            admin_listen: admin_listen?,
            admin_token_sha256: admin_token_sha256?,
            trusted_proxies: trusted_proxies.into_iter().collect::<Option<_>>()?,
            state_dir: state_dir?,
            grace_period: Duration::from_secs(s.grace_period_seconds),
            access_log: access_log?,
            metrics_public: s.metrics_public,
            worker_threads: worker_threads?,
            max_header_bytes: max_header_bytes?,
            max_headers: max_headers?,
            header_read_timeout: header_read_timeout?,
            keepalive_timeout: keepalive_timeout?,
            config_watch: config_watch
                .map(|seconds| (seconds > 0).then(|| Duration::from_secs(seconds as u64)))?,
        })
    }

    fn trusted_proxy(&mut self, path: &str, text: &str) -> Option<Cidr> {
        if text.trim().eq_ignore_ascii_case("any") {
            self.bad(
                path,
                "`any` is not allowed here (it would let every client set its own address); \
                 list the proxies' addresses or CIDR blocks",
            );
            return None;
        }
        self.cidr(path, text)
    }

    // ---- [[listener]] -----------------------------------------------------------------------

    fn listeners(
        &mut self,
        file: Option<&[FileListener]>,
        server: Option<&Server>,
    ) -> Vec<Option<Listener>> {
        let Some(file) = file else {
            return vec![Some(Listener {
                name: "public".into(),
                address: SocketAddr::from(([0, 0, 0, 0], 8080)),
                tls: None,
                proxy_protocol: false,
            })];
        };
        if file.is_empty() && !self.origin.lost_any("listener") {
            self.bad(
                "listener",
                "at least one [[listener]] is needed (leave the key out for the default: \
                 `public` on 0.0.0.0:8080)",
            );
        }
        // Bound addresses so far, with the key that claimed each.
        let mut taken: Vec<(String, SocketAddr)> = Vec::new();
        if let Some(server) = server {
            taken.push(("server.admin_listen".into(), server.admin_listen));
        }
        let mut names = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in file.iter().enumerate() {
            let position = Origin::position(&self.origin.listener, i);
            let prefix = format!("listener{}", element_label(&l.name, position));
            // Where names repeat, a conflict names the other listener by position.
            let unique = file.iter().filter(|other| other.name == l.name).count() == 1;
            let claim = if unique {
                format!("{prefix}.address")
            } else {
                format!("listener[#{position}].address")
            };
            self.id(&format!("{prefix}.name"), &l.name);
            if is_id(&l.name) && !names.insert(l.name.as_str()) {
                self.bad(
                    format!("{prefix}.name"),
                    format!("duplicate: another listener is named `{}`", l.name),
                );
            }
            let address = self.socket_addr(&format!("{prefix}.address"), &l.address);
            if let Some(address) = address {
                if let Some((key, other)) = taken.iter().find(|(_, o)| conflict(address, *o)) {
                    self.bad(
                        format!("{prefix}.address"),
                        format!("{address} conflicts with {key} ({other})"),
                    );
                }
                taken.push((claim, address));
            }
            let tls = match &l.tls {
                None => Some(None),
                Some(tls) => {
                    let cert = self.existing_file(&format!("{prefix}.tls.cert"), &tls.cert);
                    let key = self.existing_file(&format!("{prefix}.tls.key"), &tls.key);
                    let tls = cert.zip(key).map(|(cert, key)| Tls { cert, key });
                    // Both files exist: they must also parse and belong together, so that a
                    // bad pair fails `portico validate` and a reload, not the first handshake.
                    match tls.as_ref().map(crate::tls::certified_key) {
                        Some(Err(err)) => {
                            self.bad(format!("{prefix}.tls"), err.to_string());
                            None
                        }
                        _ => tls.map(Some),
                    }
                }
            };
            out.push(address.zip(tls).map(|(address, tls)| Listener {
                name: l.name.clone(),
                address,
                tls,
                proxy_protocol: l.proxy_protocol,
            }));
        }
        out
    }

    // ---- [object_store] ---------------------------------------------------------------------

    fn object_store(&mut self, o: &FileObjectStore) -> Option<ObjectStore> {
        let url = if let Some(path) = o.url.strip_prefix("file://") {
            if path.is_empty() {
                self.bad(
                    "object_store.url",
                    "file:// needs a path, e.g. file://./data/results",
                );
                None
            } else {
                let path = resolve(self.base_dir, Path::new(path));
                Some(format!("file://{}", path.display()))
            }
        } else if let Some(rest) = o.url.strip_prefix("s3://") {
            let bucket = rest.split('/').next().unwrap_or("");
            match bucket_problem(bucket) {
                Some(message) => {
                    self.bad("object_store.url", message);
                    None
                }
                None => Some(o.url.clone()),
            }
        } else {
            self.bad(
                "object_store.url",
                format!("`{}` must be file://PATH or s3://BUCKET[/PREFIX]", o.url),
            );
            None
        };
        let endpoint = match &o.endpoint {
            None => Some(None),
            Some(text) => self
                .http_url("object_store.endpoint", text)
                .map(|_| Some(text.clone())),
        };
        if o.region.trim().is_empty() {
            self.bad("object_store.region", "must not be empty");
        }
        Some(ObjectStore {
            url: url?,
            endpoint: endpoint?,
            region: o.region.clone(),
        })
    }

    // ---- [[project]] ------------------------------------------------------------------------

    fn projects(
        &mut self,
        file: &[FileProject],
        admin_hash: Option<[u8; 32]>,
    ) -> Vec<Option<Project>> {
        // Every hash seen so far and the key that holds it: one token, one identity.
        let mut hashes: HashMap<[u8; 32], String> = HashMap::new();
        if let Some(hash) = admin_hash {
            hashes.insert(hash, "server.admin_token_sha256".into());
        }
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for (i, p) in file.iter().enumerate() {
            let position = Origin::position(&self.origin.project, i);
            let prefix = format!("project{}", element_label(&p.id, position));
            self.id(&format!("{prefix}.id"), &p.id);
            if is_id(&p.id) && !ids.insert(p.id.as_str()) {
                self.bad(
                    format!("{prefix}.id"),
                    format!("duplicate: another project has id `{}`", p.id),
                );
            }
            let mut names = HashSet::new();
            let mut tokens = Vec::new();
            for (j, t) in p.tokens.iter().enumerate() {
                let path = format!("{prefix}.tokens{}", element_label(&t.name, j + 1));
                self.id(&format!("{path}.name"), &t.name);
                if is_id(&t.name) && !names.insert(t.name.as_str()) {
                    self.bad(
                        format!("{path}.name"),
                        format!(
                            "duplicate: another token of this project is named `{}`",
                            t.name
                        ),
                    );
                }
                let sha256 = self.sha256(&format!("{path}.sha256"), &t.sha256);
                if let Some(hash) = sha256 {
                    let key = format!("{path}.sha256");
                    match hashes.get(&hash) {
                        Some(other) => self.bad(
                            key,
                            format!("same hash as {other}: every token must be different"),
                        ),
                        None => {
                            hashes.insert(hash, key);
                        }
                    }
                }
                tokens.push(sha256.map(|sha256| Token {
                    name: t.name.clone(),
                    sha256,
                }));
            }
            out.push(
                tokens
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(|tokens| Project {
                        id: p.id.clone(),
                        tokens,
                    }),
            );
        }
        out
    }

    // ---- [[security_group]] -----------------------------------------------------------------

    fn security_groups(&mut self, file: &[FileSecurityGroup]) -> Vec<Option<SecurityGroup>> {
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for (i, g) in file.iter().enumerate() {
            let position = Origin::position(&self.origin.security_group, i);
            let prefix = format!("security_group{}", element_label(&g.id, position));
            self.id(&format!("{prefix}.id"), &g.id);
            if is_id(&g.id) && !ids.insert(g.id.as_str()) {
                self.bad(
                    format!("{prefix}.id"),
                    format!("duplicate: another security group has id `{}`", g.id),
                );
            }
            let inbound: Vec<Option<InboundRule>> = g
                .inbound
                .iter()
                .enumerate()
                .map(|(j, rule)| self.inbound(&format!("{prefix}.inbound[{j}]"), rule))
                .collect();
            out.push(
                inbound
                    .into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(|inbound| SecurityGroup {
                        id: g.id.clone(),
                        inbound,
                    }),
            );
        }
        out
    }

    fn inbound(&mut self, path: &str, rule: &FileInboundRule) -> Option<InboundRule> {
        let protocol_ok = rule.protocol == "tcp";
        if !protocol_ok {
            self.bad(
                format!("{path}.protocol"),
                format!("`{}` is not supported; only \"tcp\"", rule.protocol),
            );
        }
        let ports = match (rule.port, rule.port_range) {
            (Some(_), Some(_)) => {
                self.bad(
                    format!("{path}.port_range"),
                    "not allowed together with `port`: set one of them (neither = all ports)",
                );
                None
            }
            (Some(port), None) => {
                match u32::try_from(port).ok().filter(|p| (1..=65535).contains(p)) {
                    Some(port) => PortRange::new(port, port).ok(),
                    None => {
                        self.bad(
                            format!("{path}.port"),
                            format!("{port} is out of range 1..=65535"),
                        );
                        None
                    }
                }
            }
            (None, Some([lo, hi])) => {
                let range = u32::try_from(lo)
                    .ok()
                    .zip(u32::try_from(hi).ok())
                    .and_then(|(lo, hi)| PortRange::new(lo, hi).ok());
                if range.is_none() {
                    self.bad(
                        format!("{path}.port_range"),
                        format!("[{lo}, {hi}] is invalid: both in 1..=65535, low <= high"),
                    );
                }
                range
            }
            (None, None) => Some(PortRange::ALL),
        };
        let source = if rule.source.trim().is_empty() {
            self.bad(
                format!("{path}.source"),
                "is required: \"any\", an address or a CIDR block",
            );
            None
        } else {
            let text = rule.source.trim();
            if text.eq_ignore_ascii_case("any") {
                Some(Source::Any)
            } else {
                self.cidr(&format!("{path}.source"), text).map(Source::Cidr)
            }
        };
        if !protocol_ok {
            return None;
        }
        Some(InboundRule {
            ports: ports?,
            source: source?,
        })
    }

    // ---- [[endpoint]] -----------------------------------------------------------------------

    fn endpoints(&mut self, file: &[FileEndpoint], known: &Known) -> Vec<Option<Endpoint>> {
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for (i, e) in file.iter().enumerate() {
            let position = Origin::position(&self.origin.endpoint, i);
            let prefix = format!("endpoint{}", element_label(&e.id, position));
            self.id(&format!("{prefix}.id"), &e.id);
            if is_id(&e.id) && !ids.insert(e.id.as_str()) {
                self.bad(
                    format!("{prefix}.id"),
                    format!("duplicate: another endpoint has id `{}`", e.id),
                );
            }
            out.push(self.endpoint(&prefix, e, known));
        }
        out
    }

    fn endpoint(&mut self, prefix: &str, e: &FileEndpoint, known: &Known) -> Option<Endpoint> {
        let mut ok = true;
        if e.project.is_empty() {
            self.bad(
                format!("{prefix}.project"),
                "is required: the id of a [[project]]",
            );
            ok = false;
        } else {
            ok &= self.reference(
                &format!("{prefix}.project"),
                &e.project,
                "project",
                &known.projects,
            );
        }
        let listeners = match &e.listeners {
            None => known.listeners.clone(),
            Some(list) => {
                if list.is_empty() {
                    self.bad(
                        format!("{prefix}.listeners"),
                        "must not be empty (leave the key out to serve on every listener)",
                    );
                    ok = false;
                }
                ok &= self.references(
                    &format!("{prefix}.listeners"),
                    list,
                    "listener",
                    &known.listeners,
                );
                list.clone()
            }
        };
        ok &= self.references(
            &format!("{prefix}.security_groups"),
            &e.security_groups,
            "security_group",
            &known.security_groups,
        );
        if e.max_body_bytes == 0 {
            self.bad(format!("{prefix}.max_body_bytes"), "must be >= 1");
            ok = false;
        }
        let cors = self.cors(&format!("{prefix}.cors_origins"), &e.cors_origins);
        let timeouts = self.timeouts(&format!("{prefix}.timeouts"), &e.timeouts);
        let workers = self.workers(&format!("{prefix}.workers"), e.workers.as_ref());
        let scaling = self.scaling(&format!("{prefix}.scaling"), &e.scaling);
        let balance = self.balance(&format!("{prefix}.balance.strategy"), &e.balance.strategy);
        let health = self.health(&format!("{prefix}.health"), &e.health);
        let websocket = self.websocket(&format!("{prefix}.websocket"), &e.websocket);
        let async_ = match &e.async_ {
            None => Some(None),
            Some(a) => self.async_settings(&format!("{prefix}.async"), a).map(Some),
        };
        if !ok {
            return None;
        }
        Some(Endpoint {
            id: e.id.clone(),
            project: e.project.clone(),
            listeners,
            security_groups: e.security_groups.clone(),
            public: e.public,
            max_body_bytes: e.max_body_bytes,
            cors: cors?,
            timeouts: timeouts?,
            workers: workers?,
            scaling: scaling?,
            balance: balance?,
            health: health?,
            websocket: websocket?,
            async_: async_?,
        })
    }

    /// Checks that `id` names an element of `array` (or one dropped by a parse error).
    fn reference(&mut self, path: &str, id: &str, array: &str, known: &[String]) -> bool {
        if known.iter().any(|k| k == id) || self.origin.may_exist(array, id) {
            return true;
        }
        let defined: Vec<&str> = known
            .iter()
            .filter(|k| !k.is_empty())
            .map(String::as_str)
            .collect();
        let hint = if defined.is_empty() {
            format!("no [[{array}]] is defined")
        } else {
            format!("defined: {}", defined.join(", "))
        };
        self.bad(
            path,
            format!("unknown {} `{id}` ({hint})", array.replace('_', " ")),
        );
        false
    }

    /// Checks a list of references: each known, none twice.
    fn references(&mut self, path: &str, ids: &[String], array: &str, known: &[String]) -> bool {
        let mut ok = true;
        let mut seen = HashSet::new();
        for (i, id) in ids.iter().enumerate() {
            let item = format!("{path}[{i}]");
            ok &= self.reference(&item, id, array, known);
            if !seen.insert(id.as_str()) {
                self.bad(item, format!("`{id}` is listed twice"));
                ok = false;
            }
        }
        ok
    }

    fn timeouts(&mut self, path: &str, t: &FileTimeouts) -> Option<Timeouts> {
        let connect = if t.connect_ms == 0 {
            self.bad(format!("{path}.connect_ms"), "must be >= 1");
            None
        } else {
            Some(Duration::from_millis(t.connect_ms))
        };
        let first_byte = self.seconds(&format!("{path}.first_byte_seconds"), t.first_byte_seconds);
        let idle = self.seconds(&format!("{path}.idle_seconds"), t.idle_seconds);
        Some(Timeouts {
            connect: connect?,
            first_byte: first_byte?,
            idle: idle?,
        })
    }

    /// `cors_origins`: `["*"]`, or origins as browsers send them (`scheme://host[:port]`).
    fn cors(&mut self, path: &str, origins: &[String]) -> Option<Cors> {
        if origins.is_empty() {
            return Some(Cors::Off);
        }
        if origins.iter().any(|o| o == "*") {
            if origins.len() > 1 {
                self.bad(path, "\"*\" allows every origin: list it alone");
                return None;
            }
            return Some(Cors::Any);
        }
        let mut list = Vec::with_capacity(origins.len());
        let mut ok = true;
        for (i, origin) in origins.iter().enumerate() {
            match cors_origin(origin) {
                Some(origin) => list.push(origin),
                None => {
                    self.bad(
                        format!("{path}[{i}]"),
                        format!(
                            "{origin:?} is not an origin: write scheme://host[:port] \
                             (e.g. \"https://console.example.com\"), no path, or \"*\""
                        ),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(Cors::Origins(list))
    }

    fn websocket(&mut self, path: &str, w: &FileWebSocket) -> Option<WebSocket> {
        /// Frames and messages are held in memory whole; 1 GiB is far beyond any sane use.
        const MAX: u64 = 1 << 30;
        let mut ok = true;
        for (key, value) in [
            ("max_message_bytes", w.max_message_bytes),
            ("max_frame_bytes", w.max_frame_bytes),
        ] {
            if !(1..=MAX).contains(&value) {
                self.bad(format!("{path}.{key}"), format!("must be 1..={MAX}"));
                ok = false;
            }
        }
        if w.max_frame_bytes > w.max_message_bytes && ok {
            self.bad(
                format!("{path}.max_frame_bytes"),
                "must be <= max_message_bytes",
            );
            ok = false;
        }
        let idle = self.seconds(
            &format!("{path}.idle_timeout_seconds"),
            w.idle_timeout_seconds,
        );
        if !ok {
            return None;
        }
        Some(WebSocket {
            // Both were checked to be at most 1 GiB, which fits a usize.
            max_message_bytes: w.max_message_bytes as usize,
            max_frame_bytes: w.max_frame_bytes as usize,
            idle_timeout: idle?,
        })
    }

    fn health(&mut self, path: &str, h: &FileHealth) -> Option<Health> {
        let mut ok = true;
        for (key, value) in [
            ("interval_ms", h.interval_ms),
            ("timeout_ms", h.timeout_ms),
            ("healthy_threshold", u64::from(h.healthy_threshold)),
            ("unhealthy_threshold", u64::from(h.unhealthy_threshold)),
            ("eject_after_failures", u64::from(h.eject_after_failures)),
            ("eject_seconds", h.eject_seconds),
        ] {
            if value == 0 {
                self.bad(format!("{path}.{key}"), "must be >= 1");
                ok = false;
            }
        }
        if h.interval_ms > 0 && h.timeout_ms > h.interval_ms {
            self.bad(format!("{path}.timeout_ms"), "must be <= interval_ms");
            ok = false;
        }
        ok.then(|| Health {
            interval: Duration::from_millis(h.interval_ms),
            timeout: Duration::from_millis(h.timeout_ms),
            healthy_threshold: h.healthy_threshold,
            unhealthy_threshold: h.unhealthy_threshold,
            eject_after_failures: h.eject_after_failures,
            eject: Duration::from_secs(h.eject_seconds),
        })
    }

    fn workers(&mut self, path: &str, w: Option<&FileWorkers>) -> Option<Workers> {
        let Some(w) = w else {
            self.bad(
                path,
                "is required: an [endpoint.workers] table with kind = \"process\", \"static\", \"command\" or \"kubernetes\"",
            );
            return None;
        };
        let kind = match w.kind.as_str() {
            "" => implied_kind(w),
            named => named,
        };
        let kind = match kind {
            "process" => self.process_workers(path, w),
            "static" => self.static_workers(path, w),
            "command" => self.command_workers(path, w),
            "kubernetes" => self.kubernetes_workers(path, w),
            "" => {
                self.bad(
                    format!("{path}.kind"),
                    "is required unless the table sets only `command` (process workers) or \
                     only `urls` (static workers): \"process\", \"static\", \"command\" \
                     or \"kubernetes\"",
                );
                None
            }
            other => {
                self.bad(
                    format!("{path}.kind"),
                    format!(
                        "unknown kind \"{other}\"; expected \"process\", \"static\", \"command\" or \"kubernetes\""
                    ),
                );
                None
            }
        };
        let health_path = self.url_path(&format!("{path}.health_path"), &w.health_path);
        let metrics_path = self.url_path(&format!("{path}.metrics_path"), &w.metrics_path);
        let startup_timeout = self.seconds(
            &format!("{path}.startup_timeout_seconds"),
            w.startup_timeout_seconds,
        );
        let protocol = match w.protocol.as_str() {
            "http1" => Some(WorkerProtocol::Http1),
            "h2c" => Some(WorkerProtocol::H2c),
            other => {
                self.bad(
                    format!("{path}.protocol"),
                    format!("unknown protocol \"{other}\"; expected \"http1\" or \"h2c\""),
                );
                None
            }
        };
        Some(Workers {
            kind: kind?,
            health_path: health_path?,
            metrics_path: metrics_path?,
            startup_timeout: startup_timeout?,
            protocol: protocol?,
        })
    }

    fn process_workers(&mut self, path: &str, w: &FileWorkers) -> Option<WorkerKind> {
        let mut ok = true;
        ok &= self.foreign_keys(path, w, "process");
        if w.urls.is_some() {
            self.bad(
                format!("{path}.urls"),
                "not allowed with kind = \"process\"",
            );
            ok = false;
        }
        match w.command.as_deref() {
            None => {
                self.bad(
                    format!("{path}.command"),
                    "is required with kind = \"process\"",
                );
                ok = false;
            }
            Some([]) => {
                self.bad(format!("{path}.command"), "must not be empty");
                ok = false;
            }
            Some([program, ..]) if program.trim().is_empty() => {
                self.bad(
                    format!("{path}.command[0]"),
                    "the program must not be empty",
                );
                ok = false;
            }
            Some(_) => {}
        }
        let env = w.env.clone().unwrap_or_default();
        for (name, value) in &env {
            let key = path_key(&format!("{path}.env"), name);
            if name.is_empty() || name.contains(['=', '\0']) {
                self.bad(key, "is not a valid environment variable name");
                ok = false;
            } else if value.contains('\0') {
                self.bad(key, "must not contain a NUL character");
                ok = false;
            }
        }
        if !ok {
            return None;
        }
        Some(WorkerKind::Process {
            command: w.command.clone().unwrap_or_default(),
            env: env.into_iter().collect(),
        })
    }

    fn command_workers(&mut self, path: &str, w: &FileWorkers) -> Option<WorkerKind> {
        let mut ok = self.foreign_keys(path, w, "command");
        if w.command.is_some() {
            self.bad(
                format!("{path}.command"),
                "not allowed with kind = \"command\" (Portico does not run the workers; \
                 scale_command sets their count)",
            );
            ok = false;
        }
        match w.scale_command.as_deref() {
            None => {
                self.bad(
                    format!("{path}.scale_command"),
                    "is required with kind = \"command\"",
                );
                ok = false;
            }
            Some([]) => {
                self.bad(format!("{path}.scale_command"), "must not be empty");
                ok = false;
            }
            Some([program, ..]) if program.trim().is_empty() => {
                self.bad(
                    format!("{path}.scale_command[0]"),
                    "the program must not be empty",
                );
                ok = false;
            }
            Some(_) => {}
        }
        let env = w.env.clone().unwrap_or_default();
        for (name, value) in &env {
            if name.is_empty() || name.contains(['=', '\0']) || value.contains('\0') {
                self.bad(
                    path_key(&format!("{path}.env"), name),
                    "is not a valid environment variable",
                );
                ok = false;
            }
        }
        let discovery = match (w.urls.as_deref(), w.dns.as_deref()) {
            (Some(_), Some(_)) | (None, None) => {
                self.bad(
                    path,
                    "kind = \"command\" needs exactly one of urls (the workers) and dns \
                     (\"name:port\" whose addresses are the workers)",
                );
                None
            }
            (Some([]), None) => {
                self.bad(format!("{path}.urls"), "must not be empty");
                None
            }
            (Some(urls), None) => {
                let urls: Vec<Option<Uri>> = urls
                    .iter()
                    .enumerate()
                    .map(|(i, text)| self.worker_url(&format!("{path}.urls[{i}]"), text))
                    .collect();
                urls.into_iter()
                    .collect::<Option<Vec<_>>>()
                    .map(Discovery::Urls)
            }
            (None, Some(dns)) => self.dns_discovery(path, dns, w),
        };
        if w.urls.is_some() && (w.dns_server.is_some() || w.dns_refresh_seconds != 5) {
            self.bad(
                path,
                "dns_server and dns_refresh_seconds only apply with dns",
            );
            ok = false;
        }
        let discovery = discovery?;
        ok.then(|| WorkerKind::Command {
            scale_command: w.scale_command.clone().unwrap_or_default(),
            env: env.into_iter().collect(),
            discovery,
        })
    }

    fn kubernetes_workers(&mut self, path: &str, w: &FileWorkers) -> Option<WorkerKind> {
        let mut ok = self.foreign_keys(path, w, "kubernetes");
        for (key, set) in [
            ("command", w.command.is_some()),
            ("env", w.env.is_some()),
            ("urls", w.urls.is_some()),
        ] {
            if set {
                self.bad(
                    format!("{path}.{key}"),
                    "not allowed with kind = \"kubernetes\"",
                );
                ok = false;
            }
        }
        let namespace = self.kubernetes_name(path, "namespace", w.namespace.as_deref());
        let target = match (&w.deployment, &w.statefulset) {
            (Some(name), None) => Some(("deployments", name)),
            (None, Some(name)) => Some(("statefulsets", name)),
            _ => {
                self.bad(
                    path,
                    "kind = \"kubernetes\" needs exactly one of deployment and statefulset",
                );
                None
            }
        };
        let target = target.and_then(|(resource, name)| {
            let key = if resource == "deployments" {
                "deployment"
            } else {
                "statefulset"
            };
            self.kubernetes_name(path, key, Some(name))
                .map(|name| (resource, name))
        });
        let service = match &w.service {
            Some(service) => self.kubernetes_name(path, "service", Some(service)),
            None => target.as_ref().map(|(_, name)| name.clone()),
        };
        let port = match w.port {
            Some(port) if port > 0 => Some(port),
            _ => {
                self.bad(
                    format!("{path}.port"),
                    "is required with kind = \"kubernetes\": the workers' port (1-65535)",
                );
                None
            }
        };
        let api_server = match &w.api_server {
            None => Some(None),
            Some(text) => self.http_url(&format!("{path}.api_server"), text).map(Some),
        };
        const ACCOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
        let token_file = w
            .token_file
            .as_ref()
            .map(|p| self.base_dir.join(p))
            .unwrap_or_else(|| Path::new(ACCOUNT).join("token"));
        let ca_file = w
            .ca_file
            .as_ref()
            .map(|p| self.base_dir.join(p))
            .unwrap_or_else(|| Path::new(ACCOUNT).join("ca.crt"));
        let (resource, name) = target?;
        let kubernetes = KubernetesWorkers {
            namespace: namespace?,
            resource,
            name,
            service: service?,
            port: port?,
            api_server: api_server?,
            token_file,
            ca_file,
        };
        ok.then_some(WorkerKind::Kubernetes(kubernetes))
    }

    /// A Kubernetes object name (RFC 1123 label: lower-case letters, digits, `-`).
    fn kubernetes_name(&mut self, path: &str, key: &str, value: Option<&str>) -> Option<String> {
        match value {
            None => {
                self.bad(
                    format!("{path}.{key}"),
                    "is required with kind = \"kubernetes\"",
                );
                None
            }
            Some(name)
                if !name.is_empty()
                    && name.len() <= 63
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !name.starts_with('-')
                    && !name.ends_with('-') =>
            {
                Some(name.to_string())
            }
            Some(name) => {
                self.bad(
                    format!("{path}.{key}"),
                    format!("`{name}` is not a Kubernetes name (lower-case letters, digits and `-`, at most 63)"),
                );
                None
            }
        }
    }

    fn dns_discovery(&mut self, path: &str, dns: &str, w: &FileWorkers) -> Option<Discovery> {
        let target = dns
            .rsplit_once(':')
            .and_then(|(name, port)| Some((name, port.parse::<u16>().ok()?)))
            .filter(|(name, port)| is_dns_name(name) && *port > 0);
        if target.is_none() {
            self.bad(
                format!("{path}.dns"),
                format!("`{dns}` must be name:port, e.g. \"vllm.models.svc.cluster.local:8000\""),
            );
        }
        let server = match &w.dns_server {
            None => Some(None),
            Some(text) => match text.parse::<SocketAddr>() {
                Ok(addr) => Some(Some(addr)),
                Err(_) => {
                    self.bad(
                        format!("{path}.dns_server"),
                        format!("`{text}` must be ip:port, e.g. \"10.96.0.10:53\""),
                    );
                    None
                }
            },
        };
        let refresh = self.seconds(
            &format!("{path}.dns_refresh_seconds"),
            w.dns_refresh_seconds,
        );
        let (name, port) = target?;
        Some(Discovery::Dns {
            name: name.trim_end_matches('.').to_ascii_lowercase(),
            port,
            server: server?,
            refresh: refresh?,
        })
    }

    fn static_workers(&mut self, path: &str, w: &FileWorkers) -> Option<WorkerKind> {
        let mut ok = true;
        ok &= self.foreign_keys(path, w, "static");
        if w.command.is_some() {
            self.bad(
                format!("{path}.command"),
                "not allowed with kind = \"static\"",
            );
            ok = false;
        }
        if w.env.is_some() {
            self.bad(format!("{path}.env"), "not allowed with kind = \"static\"");
            ok = false;
        }
        let urls = match w.urls.as_deref() {
            None => {
                self.bad(format!("{path}.urls"), "is required with kind = \"static\"");
                return None;
            }
            Some([]) => {
                self.bad(format!("{path}.urls"), "must not be empty");
                return None;
            }
            Some(urls) => urls,
        };
        let urls: Vec<Option<Uri>> = urls
            .iter()
            .enumerate()
            .map(|(i, text)| self.worker_url(&format!("{path}.urls[{i}]"), text))
            .collect();
        let urls = urls.into_iter().collect::<Option<Vec<_>>>()?;
        ok.then_some(WorkerKind::Static { urls })
    }

    /// Refuses the keys of `kind = "command"` and `kind = "kubernetes"` on another kind.
    fn foreign_keys(&mut self, path: &str, w: &FileWorkers, kind: &str) -> bool {
        let mut ok = true;
        let keys = [
            ("command", "scale_command", w.scale_command.is_some()),
            ("command", "dns", w.dns.is_some()),
            ("command", "dns_server", w.dns_server.is_some()),
            ("command", "dns_refresh_seconds", w.dns_refresh_seconds != 5),
            ("kubernetes", "namespace", w.namespace.is_some()),
            ("kubernetes", "deployment", w.deployment.is_some()),
            ("kubernetes", "statefulset", w.statefulset.is_some()),
            ("kubernetes", "service", w.service.is_some()),
            ("kubernetes", "port", w.port.is_some()),
            ("kubernetes", "api_server", w.api_server.is_some()),
            ("kubernetes", "token_file", w.token_file.is_some()),
            ("kubernetes", "ca_file", w.ca_file.is_some()),
        ];
        for (owner, key, set) in keys {
            if set && owner != kind {
                self.bad(
                    format!("{path}.{key}"),
                    format!("not allowed with kind = \"{kind}\" (only with kind = \"{owner}\")"),
                );
                ok = false;
            }
        }
        ok
    }

    /// A static worker's base URL: http, a host, no credentials, path or query.
    fn worker_url(&mut self, path: &str, text: &str) -> Option<Uri> {
        let uri = self.http_url(path, text)?;
        let message = if uri.scheme_str() == Some("https") {
            Some("uses https, not supported for workers yet (use http:// or h2c)")
        } else if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            Some("must not contain credentials")
        } else if uri.path() != "/" && !uri.path().is_empty() {
            Some("must not have a path: the request path is appended to the worker's root")
        } else if uri.query().is_some() {
            Some("must not have a query")
        } else {
            None
        };
        match message {
            Some(message) => {
                self.bad(path, format!("`{text}` {message}"));
                None
            }
            None => Some(uri),
        }
    }

    fn scaling(&mut self, path: &str, s: &FileScaling) -> Option<ScalingSettings> {
        let mut ok = true;
        let custom_key = format!("{path}.custom_metric");
        // A stand-in metric keeps the other settings checked when this one is wrong.
        let metric = match (s.metric.as_str(), &s.custom_metric) {
            ("concurrency", None) => Metric::Concurrency,
            ("rps", None) => Metric::Rps,
            ("custom", Some(name)) => Metric::Custom(name.clone()),
            ("custom", None) => {
                self.bad(custom_key, "is required with metric = \"custom\"");
                ok = false;
                Metric::Concurrency
            }
            ("concurrency" | "rps", Some(_)) => {
                self.bad(custom_key, "only allowed with metric = \"custom\"");
                ok = false;
                Metric::Concurrency
            }
            (other, _) => {
                self.bad(
                    format!("{path}.metric"),
                    format!(
                        "unknown metric \"{other}\"; expected \"concurrency\", \"rps\" or \"custom\""
                    ),
                );
                ok = false;
                Metric::Concurrency
            }
        };
        let settings = ScalingSettings {
            min_workers: s.min_workers,
            max_workers: s.max_workers,
            metric,
            target: s.target,
            idle_timeout: Duration::from_secs(s.idle_timeout_seconds),
            initial_cooldown: Duration::from_secs(s.initial_cooldown_seconds),
            stable_window: Duration::from_secs(s.stable_window_seconds),
            panic_window: Duration::from_secs(s.panic_window_seconds),
            panic_threshold: s.panic_threshold,
            max_pending: s.max_pending,
            cold_start_timeout: Duration::from_secs(s.cold_start_timeout_seconds),
            waking_keepalive: Duration::from_secs(s.waking_keepalive_seconds),
        };
        for problem in settings.problems() {
            self.bad(format!("{path}.{}", problem.key), problem.message);
            ok = false;
        }
        ok.then_some(settings)
    }

    fn balance(&mut self, path: &str, strategy: &str) -> Option<Balance> {
        let strategy = match strategy {
            "least_inflight" => BalanceStrategy::LeastInflight,
            "round_robin" => BalanceStrategy::RoundRobin,
            "metric" | "session" | "prefix" => {
                self.bad(
                    path,
                    format!(
                        "\"{strategy}\" is not supported yet; use \"least_inflight\" or \"round_robin\""
                    ),
                );
                return None;
            }
            other => {
                self.bad(
                    path,
                    format!(
                        "unknown strategy \"{other}\"; expected \"least_inflight\" or \"round_robin\""
                    ),
                );
                return None;
            }
        };
        Some(Balance { strategy })
    }

    fn async_settings(&mut self, path: &str, a: &FileAsync) -> Option<AsyncSettings> {
        let mut ok = true;
        let mut seen = HashSet::new();
        for (i, route) in a.routes.iter().enumerate() {
            let key = format!("{path}.routes[{i}]");
            if !route.starts_with('/')
                || route.contains(|c: char| c.is_whitespace() || c == '?' || c == '#')
            {
                self.bad(
                    key,
                    format!("`{route}` must be a path starting with `/` (no query)"),
                );
                ok = false;
            } else if !seen.insert(route.as_str()) {
                self.bad(key, format!("`{route}` is listed twice"));
                ok = false;
            }
        }
        for (key, value) in [
            ("concurrency_per_worker", a.concurrency_per_worker),
            ("max_attempts", a.max_attempts),
        ] {
            if value == 0 {
                self.bad(format!("{path}.{key}"), "must be >= 1");
                ok = false;
            }
        }
        let ttl = self.seconds(&format!("{path}.ttl_seconds"), a.ttl_seconds);
        for (i, url) in a.webhook_allow.iter().enumerate() {
            ok &= self
                .http_url(&format!("{path}.webhook_allow[{i}]"), url)
                .is_some();
        }
        let queue = self.queue(&format!("{path}.queue"), &a.queue);
        let reclaim_after = self.seconds(
            &format!("{path}.reclaim_after_seconds"),
            a.reclaim_after_seconds,
        );
        if !ok {
            return None;
        }
        Some(AsyncSettings {
            routes: a.routes.clone(),
            concurrency_per_worker: a.concurrency_per_worker,
            max_attempts: a.max_attempts,
            ttl: ttl?,
            webhook_allow: a.webhook_allow.clone(),
            queue: queue?,
            reclaim_after: reclaim_after?,
        })
    }

    fn queue(&mut self, path: &str, text: &str) -> Option<QueueBackend> {
        if text == "embedded" {
            return Some(QueueBackend::Embedded);
        }
        if is_redis_url(text) {
            Some(QueueBackend::Redis(text.to_string()))
        } else {
            self.bad(
                path,
                format!("`{text}` must be \"embedded\" or a redis:// or rediss:// URL with a host"),
            );
            None
        }
    }

    // ---- [cluster] --------------------------------------------------------------------------

    fn cluster(&mut self, c: &FileCluster) -> Option<Cluster> {
        let mut ok = true;
        if c.redis.is_empty() {
            self.bad(
                "cluster.redis",
                "is required: the redis:// URL the replicas share",
            );
            ok = false;
        } else if !is_redis_url(&c.redis) {
            self.bad(
                "cluster.redis",
                format!(
                    "`{}` must be a redis:// or rediss:// URL with a host",
                    c.redis
                ),
            );
            ok = false;
        }
        let replica_id = match &c.replica_id {
            Some(id) => {
                self.id("cluster.replica_id", id);
                ok &= is_id(id);
                id.clone()
            }
            None => default_replica_id(),
        };
        if c.lease_seconds == 0 {
            self.bad("cluster.lease_seconds", "must be >= 1");
            ok = false;
        }
        if !is_id(&c.key_prefix) {
            self.bad("cluster.key_prefix", "must be [A-Za-z0-9._-]+");
            ok = false;
        }
        ok.then(|| Cluster {
            redis: c.redis.clone(),
            replica_id,
            lease: Duration::from_secs(c.lease_seconds),
            key_prefix: c.key_prefix.clone(),
        })
    }

    // ---- [[alert]], [alerts], [smtp] --------------------------------------------------------

    fn alerts(&mut self, file: &FileConfig) -> Option<Alerts> {
        let smtp = file.smtp.as_ref().map(|smtp| self.smtp(smtp));
        let channels = self.alert_channels(&file.alerts, file.smtp.is_some());
        // Channels the rules may use: configured, or lost to a parse error (then a rule
        // naming one is not reported again).
        let mut usable = Vec::new();
        if file.alerts.webhook_url.is_some() || self.origin.covers("alerts.webhook_url") {
            usable.push(AlertChannel::Webhook);
        }
        let smtp_lost = self.origin.covers("smtp");
        if (!file.alerts.email_to.is_empty() || self.origin.covers("alerts.email_to"))
            && (file.smtp.is_some() || smtp_lost)
        {
            usable.push(AlertChannel::Email);
        }
        let mut names = HashSet::new();
        let mut rules = Vec::new();
        for (i, rule) in file.alert.iter().enumerate() {
            let position = Origin::position(&self.origin.alert, i);
            let prefix = format!("alert{}", element_label(&rule.name, position));
            self.id(&format!("{prefix}.name"), &rule.name);
            if is_id(&rule.name) && !names.insert(rule.name.as_str()) {
                self.bad(
                    format!("{prefix}.name"),
                    format!("duplicate: another alert is named `{}`", rule.name),
                );
            }
            rules.push(self.alert_rule(&prefix, rule, &file.endpoint, &file.alerts, &usable));
        }
        let mut alerts = channels?;
        alerts.rules = rules.into_iter().collect::<Option<_>>()?;
        alerts.smtp = match smtp {
            None => None,
            Some(smtp) => Some(smtp?),
        };
        Some(alerts)
    }

    /// `[alerts]`: webhook URL, e-mail recipients, evaluation period (no rules, no smtp yet).
    fn alert_channels(&mut self, a: &FileAlerts, has_smtp: bool) -> Option<Alerts> {
        let webhook_url = match &a.webhook_url {
            None => Some(None),
            Some(text) => self.http_url("alerts.webhook_url", text).map(Some),
        };
        let webhook_timeout =
            self.seconds("alerts.webhook_timeout_seconds", a.webhook_timeout_seconds);
        let mut email_to = Vec::new();
        let mut ok = true;
        let mut seen = HashSet::new();
        for (i, text) in a.email_to.iter().enumerate() {
            let path = format!("alerts.email_to[{i}]");
            match self.mailbox(&path, text) {
                Some(mailbox) if !seen.insert(mailbox.email.clone()) => {
                    self.bad(path, format!("`{}` is listed twice", mailbox.email));
                    ok = false;
                }
                Some(mailbox) => email_to.push(mailbox),
                None => ok = false,
            }
        }
        if !a.email_to.is_empty() && !has_smtp && !self.origin.covers("smtp") {
            self.bad(
                "alerts.email_to",
                "needs an [smtp] table: the mail server alert e-mails go through",
            );
            ok = false;
        }
        let evaluate_every =
            self.seconds("alerts.evaluate_every_seconds", a.evaluate_every_seconds);
        if !ok {
            return None;
        }
        Some(Alerts {
            rules: Vec::new(),
            webhook_url: webhook_url?,
            webhook_timeout: webhook_timeout?,
            email_to,
            evaluate_every: evaluate_every?,
            smtp: None,
        })
    }

    fn alert_rule(
        &mut self,
        prefix: &str,
        rule: &FileAlert,
        endpoints: &[FileEndpoint],
        alerts: &FileAlerts,
        usable: &[AlertChannel],
    ) -> Option<AlertRule> {
        let mut ok = true;
        let metric = match AlertMetric::ALL
            .into_iter()
            .find(|m| m.as_str() == rule.metric)
        {
            Some(metric) => Some(metric),
            None => {
                let names: Vec<String> = AlertMetric::ALL
                    .iter()
                    .map(|m| format!("\"{}\"", m.as_str()))
                    .collect();
                let message = if rule.metric.is_empty() {
                    format!("is required: one of {}", names.join(", "))
                } else {
                    format!(
                        "unknown metric \"{}\"; expected one of {}",
                        rule.metric,
                        names.join(", ")
                    )
                };
                self.bad(format!("{prefix}.metric"), message);
                None
            }
        };
        let endpoint = if rule.endpoint == "*" {
            Some(AlertScope::Each)
        } else if rule.endpoint.is_empty() {
            self.bad(
                format!("{prefix}.endpoint"),
                "is required: an endpoint id, or \"*\" for each endpoint",
            );
            None
        } else {
            let known: Vec<String> = endpoints.iter().map(|e| e.id.clone()).collect();
            if self.reference(
                &format!("{prefix}.endpoint"),
                &rule.endpoint,
                "endpoint",
                &known,
            ) {
                let target = endpoints.iter().find(|e| e.id == rule.endpoint);
                if metric == Some(AlertMetric::AsyncQueueDepth)
                    && target.is_some_and(|e| e.async_.is_none())
                {
                    self.bad(
                        format!("{prefix}.metric"),
                        format!(
                            "\"async_queue_depth\" needs [endpoint.async] on endpoint `{}`",
                            rule.endpoint
                        ),
                    );
                    ok = false;
                }
                Some(AlertScope::Endpoint(rule.endpoint.clone()))
            } else {
                None
            }
        };
        let operator = match AlertOperator::ALL
            .into_iter()
            .find(|o| o.as_str() == rule.operator)
        {
            Some(operator) => Some(operator),
            None => {
                let message = if rule.operator.is_empty() {
                    "is required: one of \">\", \">=\", \"<\", \"<=\", \"==\"".to_string()
                } else {
                    format!(
                        "unknown operator \"{}\"; expected one of \">\", \">=\", \"<\", \"<=\", \"==\"",
                        rule.operator
                    )
                };
                self.bad(format!("{prefix}.operator"), message);
                None
            }
        };
        let threshold = match rule.threshold {
            None => {
                self.bad(format!("{prefix}.threshold"), "is required: a number");
                None
            }
            Some(t) if !t.is_finite() => {
                self.bad(format!("{prefix}.threshold"), "must be a finite number");
                None
            }
            Some(t) if metric == Some(AlertMetric::ErrorRate) && !(0.0..=1.0).contains(&t) => {
                self.bad(
                    format!("{prefix}.threshold"),
                    format!("{t} is out of range: error_rate is a fraction 0..=1 (0.05 = 5 %)"),
                );
                None
            }
            Some(t) if t < 0.0 => {
                self.bad(
                    format!("{prefix}.threshold"),
                    format!("{t} is negative; the metric never is"),
                );
                None
            }
            Some(t) => Some(t),
        };
        let min_requests = match (rule.min_requests, metric) {
            (None, _) => Some(10),
            (Some(0), _) => {
                self.bad(format!("{prefix}.min_requests"), "must be >= 1");
                None
            }
            (Some(n), Some(AlertMetric::ErrorRate) | None) => Some(n),
            (Some(_), Some(_)) => {
                self.bad(
                    format!("{prefix}.min_requests"),
                    "only allowed with metric = \"error_rate\"",
                );
                None
            }
        };
        let notify = match &rule.notify {
            // Every configured channel.
            None => {
                if usable.is_empty() {
                    self.warnings.push(Problem::new(
                        format!("{prefix}.notify"),
                        "no notification channel is configured ([alerts].webhook_url, or \
                         [alerts].email_to with [smtp]): the alert is shown by GET /admin/alerts \
                         and portico_alert_firing only",
                    ));
                }
                Some(usable.to_vec())
            }
            Some(names) => {
                let mut channels = Vec::new();
                for (i, name) in names.iter().enumerate() {
                    let path = format!("{prefix}.notify[{i}]");
                    let channel = match name.as_str() {
                        "webhook" => AlertChannel::Webhook,
                        "email" => AlertChannel::Email,
                        other => {
                            self.bad(
                                path,
                                format!(
                                    "unknown channel \"{other}\"; expected \"webhook\" or \"email\""
                                ),
                            );
                            ok = false;
                            continue;
                        }
                    };
                    if channels.contains(&channel) {
                        self.bad(path, format!("\"{name}\" is listed twice"));
                        ok = false;
                    } else if !usable.contains(&channel) {
                        let needs = match channel {
                            AlertChannel::Webhook => "needs [alerts].webhook_url".to_string(),
                            AlertChannel::Email if alerts.email_to.is_empty() => {
                                "needs [alerts].email_to".to_string()
                            }
                            AlertChannel::Email => "needs an [smtp] table".to_string(),
                        };
                        self.bad(path, format!("\"{name}\" {needs}"));
                        ok = false;
                    } else {
                        channels.push(channel);
                    }
                }
                Some(channels)
            }
        };
        if !ok {
            return None;
        }
        Some(AlertRule {
            name: rule.name.clone(),
            endpoint: endpoint?,
            metric: metric?,
            operator: operator?,
            threshold: threshold?,
            for_: Duration::from_secs(rule.for_seconds),
            notify: notify?,
            min_requests: min_requests?,
        })
    }

    fn smtp(&mut self, s: &FileSmtp) -> Option<Smtp> {
        let mut ok = true;
        let host = s.host.trim();
        if host.is_empty() {
            self.bad(
                "smtp.host",
                "is required: the mail server's host name or address",
            );
            ok = false;
        } else if host.contains(|c: char| c.is_whitespace() || c == '/' || c == '@') {
            self.bad(
                "smtp.host",
                format!("`{}` is not a host name or address", s.host),
            );
            ok = false;
        }
        let port = match u16::try_from(s.port).ok().filter(|p| *p != 0) {
            Some(port) => Some(port),
            None => {
                self.bad("smtp.port", format!("{} is out of range 1..=65535", s.port));
                None
            }
        };
        let from = if s.from.is_empty() {
            self.bad(
                "smtp.from",
                "is required: the sender, e.g. \"Portico <alerts@example.com>\"",
            );
            None
        } else {
            self.mailbox("smtp.from", &s.from)
        };
        let credentials = match (&s.username, &s.password) {
            (None, None) => Some(None),
            (Some(user), Some(password)) if !user.is_empty() => {
                Some(Some((user.clone(), password.clone())))
            }
            (Some(_), Some(_)) => {
                self.bad("smtp.username", "must not be empty");
                None
            }
            (Some(_), None) => {
                self.bad("smtp.password", "is required with username");
                None
            }
            (None, Some(_)) => {
                self.bad("smtp.username", "is required with password");
                None
            }
        };
        let tls = match s.starttls.as_str() {
            "required" => Some(SmtpTls::Required),
            "opportunistic" => Some(SmtpTls::Opportunistic),
            "off" => Some(SmtpTls::Off),
            "implicit" => Some(SmtpTls::Implicit),
            other => {
                self.bad(
                    "smtp.starttls",
                    format!(
                        "unknown mode \"{other}\"; expected \"required\", \"opportunistic\", \
                         \"off\" or \"implicit\""
                    ),
                );
                None
            }
        };
        if tls == Some(SmtpTls::Off) && s.password.is_some() {
            self.warnings.push(Problem::new(
                "smtp.starttls",
                "\"off\" sends the password in clear text",
            ));
        }
        let timeout = self.seconds("smtp.timeout_seconds", s.timeout_seconds);
        if !ok {
            return None;
        }
        Some(Smtp {
            host: host.to_string(),
            port: port?,
            from: from?,
            credentials: credentials?,
            tls: tls?,
            timeout: timeout?,
        })
    }

    /// A mailbox: `name@example.com` or `Name <name@example.com>`.
    fn mailbox(&mut self, path: &str, text: &str) -> Option<lettre::message::Mailbox> {
        match text.parse::<lettre::message::Mailbox>() {
            Ok(mailbox) => Some(mailbox),
            Err(err) => {
                self.bad(
                    path,
                    format!(
                        "`{text}` is not an e-mail address ({err}); write \
                         name@example.com or \"Name <name@example.com>\""
                    ),
                );
                None
            }
        }
    }

    // ---- value checks -----------------------------------------------------------------------

    fn id(&mut self, path: &str, value: &str) {
        if value.is_empty() {
            self.bad(path, "is required");
        } else if !is_id(value) {
            self.bad(
                path,
                format!(
                    "`{value}` is not a valid id: use letters, digits, `.`, `_` and `-` \
                     (not only dots); ids appear in URL paths"
                ),
            );
        }
    }

    fn socket_addr(&mut self, path: &str, text: &str) -> Option<SocketAddr> {
        match text.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.bad(
                    path,
                    format!(
                        "`{text}` is not a socket address: write IP:PORT (e.g. 0.0.0.0:8080 or \
                         [::]:8080); host names are not accepted"
                    ),
                );
                None
            }
        }
    }

    fn cidr(&mut self, path: &str, text: &str) -> Option<Cidr> {
        match Cidr::parse_with_warning(text) {
            Ok((cidr, host_bits_set)) => {
                if host_bits_set {
                    self.warnings.push(Problem::new(
                        path,
                        format!("`{text}` has host bits set; it means `{cidr}`"),
                    ));
                }
                Some(cidr)
            }
            Err(err) => {
                self.bad(path, err.to_string());
                None
            }
        }
    }

    fn sha256(&mut self, path: &str, hex: &str) -> Option<[u8; 32]> {
        match decode_sha256(hex) {
            Some(hash) => Some(hash),
            None => {
                let message = if hex.is_empty() {
                    "is required: the hex SHA-256 of the token (`portico token new` prints one)"
                } else {
                    "must be 64 hex characters: the SHA-256 of the token \
                     (`portico token new` prints one)"
                };
                self.bad(path, message);
                None
            }
        }
    }

    /// An absolute http(s) URL with a host.
    fn http_url(&mut self, path: &str, text: &str) -> Option<Uri> {
        let problem = match text.parse::<Uri>() {
            Err(err) => Some(format!("`{text}` is not a URL: {err}")),
            Ok(uri) => match uri.scheme_str() {
                None => Some(format!(
                    "`{text}` must be an absolute URL starting with http:// or https://"
                )),
                Some("http" | "https") if uri.host().is_none_or(str::is_empty) => {
                    Some(format!("`{text}` has no host"))
                }
                Some("http" | "https") => return Some(uri),
                Some(scheme) => Some(format!(
                    "`{text}`: scheme `{scheme}` is not supported; use http:// or https://"
                )),
            },
        };
        if let Some(message) = problem {
            self.bad(path, message);
        }
        None
    }

    fn url_path(&mut self, path: &str, value: &str) -> Option<String> {
        if value.starts_with('/') && !value.contains(char::is_whitespace) {
            Some(value.to_string())
        } else {
            self.bad(path, format!("`{value}` must be a path starting with `/`"));
            None
        }
    }

    fn path(&mut self, key: &str, path: &Path) -> Option<PathBuf> {
        if path.as_os_str().is_empty() {
            self.bad(key, "must not be empty");
            return None;
        }
        Some(resolve(self.base_dir, path))
    }

    fn existing_file(&mut self, key: &str, path: &Path) -> Option<PathBuf> {
        let resolved = self.path(key, path)?;
        match std::fs::metadata(&resolved) {
            Ok(meta) if meta.is_file() => Some(resolved),
            Ok(_) => {
                self.bad(key, format!("{} is not a file", resolved.display()));
                None
            }
            Err(err) => {
                self.bad(key, format!("{}: {err}", resolved.display()));
                None
            }
        }
    }

    fn seconds(&mut self, path: &str, seconds: u64) -> Option<Duration> {
        if seconds == 0 {
            self.bad(path, "must be >= 1");
            None
        } else {
            Some(Duration::from_secs(seconds))
        }
    }

    fn at_least(&mut self, path: &str, value: u64, min: u64) -> Option<usize> {
        if value < min {
            self.bad(path, format!("must be >= {min}"));
            return None;
        }
        Some(usize::try_from(value).unwrap_or(usize::MAX))
    }

    fn at_most(&mut self, path: &str, value: u64, max: u64) -> Option<usize> {
        if value > max {
            self.bad(path, format!("must be <= {max}"));
            return None;
        }
        // At most `max`, which fits in usize.
        Some(usize::try_from(value).unwrap_or(usize::MAX))
    }
}

/// Two binds on the same port conflict when the addresses are equal or either one is the
/// unspecified address that covers the other (`0.0.0.0` covers IPv4, `[::]` covers both).
/// Port 0 never conflicts: each bind gets a free port.
fn conflict(a: SocketAddr, b: SocketAddr) -> bool {
    let covers =
        |x: SocketAddr, y: SocketAddr| x.ip().is_unspecified() && (x.is_ipv6() || y.is_ipv4());
    a.port() != 0 && a.port() == b.port() && (a.ip() == b.ip() || covers(a, b) || covers(b, a))
}

/// Why an S3 bucket name is invalid, if it is: 3 to 63 lowercase letters, digits, `.` and
/// `-`, starting and ending with a letter or digit, no `..`, not an IPv4 address.
fn bucket_problem(bucket: &str) -> Option<String> {
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && bucket.starts_with(|c: char| c.is_ascii_alphanumeric())
        && bucket.ends_with(|c: char| c.is_ascii_alphanumeric())
        && !bucket.contains("..")
        && bucket.parse::<std::net::Ipv4Addr>().is_err();
    (!valid).then(|| {
        format!(
            "`{bucket}` is not a valid S3 bucket name (3-63 lowercase letters, digits, `.` \
             and `-`, starting and ending with a letter or digit)"
        )
    })
}

fn decode_sha256(hex: &str) -> Option<[u8; 32]> {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (byte, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let digit = |c: u8| char::from(c).to_digit(16);
        // Each digit is < 16, so the pair fits in a byte.
        *byte = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

/// The absolute form of `dir`, or `dir` itself when the current directory is unknown.
fn absolute(dir: &Path) -> PathBuf {
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    std::path::absolute(dir)
        .map(|abs| normalize(&abs))
        .unwrap_or_else(|_| dir.to_path_buf())
}

/// `path` resolved against `base`, with `.` components removed.
fn resolve(base: &Path, path: &Path) -> PathBuf {
    normalize(&base.join(path))
}

fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// An origin as browsers serialize it (`http`/`https`, host, optional port, no path),
/// lower-cased; `None` when `text` is not one.
fn cors_origin(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if !matches!(scheme.as_str(), "http" | "https") || rest.is_empty() {
        return None;
    }
    let authority: http::uri::Authority = rest.parse().ok()?;
    // `Authority` takes any digits for a port (`port()` is then `None`).
    let bad_port = rest
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.contains(']') && port.parse::<u16>().is_err());
    if authority.as_str() != rest || rest.contains('@') || authority.host().is_empty() || bad_port {
        return None;
    }
    Some(format!("{scheme}://{}", rest.to_ascii_lowercase()))
}

/// A `redis://` or `rediss://` URL with a host.
fn is_redis_url(text: &str) -> bool {
    text.parse::<Uri>()
        .ok()
        .filter(|uri| matches!(uri.scheme_str(), Some("redis" | "rediss")))
        .is_some_and(|uri| uri.host().is_some_and(|h| !h.is_empty()))
}

/// `<host name>-<pid>`: unique among replicas on different hosts and on one host.
fn default_replica_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| is_id(h))
        .unwrap_or_else(|| "portico".to_string());
    format!("{host}-{}", std::process::id())
}

/// A DNS name: dot-separated labels of letters, digits and hyphens (and underscores, as
/// in service records), each 1–63 bytes, 253 in all.
fn is_dns_name(name: &str) -> bool {
    let name = name.trim_end_matches('.');
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// The kind a `[endpoint.workers]` table without `kind` means: `process` when it sets
/// `command`, `static` when it sets `urls`; empty (required) when it sets both, neither, or
/// a key of another kind beside `urls`.
fn implied_kind(w: &FileWorkers) -> &'static str {
    let other_kind = w.scale_command.is_some() || w.dns.is_some() || w.namespace.is_some();
    match (w.command.is_some(), w.urls.is_some()) {
        (true, false) if !other_kind => "process",
        (false, true) if !other_kind => "static",
        _ => "",
    }
}

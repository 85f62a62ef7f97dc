//! Hot reload: the config file is re-read, validated, and applied without a restart and
//! without dropping a request. A reload is all or nothing: a config that does not validate,
//! or a certificate that does not load, leaves everything as it was.
//!
//! What it swaps, each whole, so that the next request sees the new config and open
//! connections are left alone:
//! - security groups, project tokens, trusted proxies, the admin token, TLS certificates;
//! - alert rules and channels;
//! - scaling settings of endpoints whose `[endpoint.scaling]` changed in the file (settings
//!   changed through the admin API stay until the file's own settings change);
//! - the routing table: added endpoints start, removed ones stop taking requests and drain,
//!   and an endpoint whose other settings changed (workers, timeouts, balance, listeners it
//!   serves…) is replaced by a fresh one while the old one drains.
//!
//! Listeners, `[server]` settings other than those above, and endpoints with
//! `[endpoint.async]` (whose queue dispatchers start with the daemon) keep running as they
//! are; the report names them as needing a restart. `SIGHUP`, `POST /admin/reload` and the
//! file watcher ([`watch`], on a change to the file) all reload the file the daemon was
//! started with.

pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::access::{EndpointAccess, ServerAccess};
use crate::alerts::AlertBoard;
use crate::config::{self, Config, ConfigError, Tls};
use crate::control::{Detail, EventKind};
use crate::endpoint::Endpoint;
use crate::lifecycle::Lifecycle;
use crate::pipeline::Shared;
use crate::routes::Routes;
use crate::tls::{self, CertStore};

/// Why a reload applied nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The daemon was not started from a file, so there is nothing to re-read.
    #[error("the daemon was started without a configuration file")]
    NoFile,
    /// The file is unreadable or invalid.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A listener's certificate or key could not be loaded.
    #[error("listener {listener}: {error}")]
    Tls {
        /// The listener's name.
        listener: String,
        /// What failed.
        error: tls::TlsError,
    },
}

/// Counts a reload's outcome: `portico_config_reloads_total{trigger, outcome}` and
/// `portico_config_last_reload_successful`. `trigger` is `sighup`, `admin_api`,
/// `file_changed` or `certificate`.
pub fn count(trigger: &'static str, applied: bool) {
    let outcome = if applied { "applied" } else { "refused" };
    metrics::counter!("portico_config_reloads_total", "trigger" => trigger, "outcome" => outcome)
        .increment(1);
    metrics::gauge!("portico_config_last_reload_successful").set(if applied { 1.0 } else { 0.0 });
}

/// Logs and counts the outcome of a reload that `trigger` (`sighup`, `file_changed`) set
/// off; the admin API answers with it instead.
pub fn log(
    trigger: &'static str,
    outcome: Result<Result<ReloadReport, ReloadError>, tokio::task::JoinError>,
) {
    count(trigger, matches!(outcome, Ok(Ok(_))));
    match outcome {
        Ok(Ok(report)) => tracing::info!(
            trigger,
            certificates = report.certificates,
            needs_restart = ?report.needs_restart,
            "{}",
            report.summary()
        ),
        Ok(Err(err)) => tracing::error!(
            trigger,
            error = %err,
            "reload failed; the running configuration is unchanged"
        ),
        Err(err) => tracing::error!(trigger, error = %err, "reload task failed"),
    }
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Endpoints started.
    pub added: Vec<String>,
    /// Endpoints retired (draining).
    pub removed: Vec<String>,
    /// Endpoints replaced by a fresh one built from changed settings.
    pub replaced: Vec<String>,
    /// Endpoints kept, with their access rules replaced, and the ones among them whose
    /// scaling settings changed.
    pub kept: Vec<String>,
    /// Endpoints whose scaling settings were replaced.
    pub rescaled: Vec<String>,
    /// Certificates replaced.
    pub certificates: usize,
    /// Changes in the file that need a restart to take effect.
    pub needs_restart: Vec<String>,
}

impl ReloadReport {
    /// The report as the admin API returns it.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "reloaded": true,
            "endpoints": {
                "added": self.added,
                "removed": self.removed,
                "replaced": self.replaced,
                "kept": self.kept,
                "scaling_updated": self.rescaled,
            },
            "certificates": self.certificates,
            "needs_restart": self.needs_restart,
        })
    }
}

/// Applies new configs to a running daemon.
#[derive(Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
    lifecycle: Arc<Lifecycle>,
    alerts: Arc<AlertBoard>,
    /// The certificate store of each TLS listener, by listener name.
    certificates: Vec<(String, Arc<CertStore>)>,
    /// The config in force, and what the last reload read; reloads hold it from reading to
    /// applying, so they run one at a time, in order.
    running: std::sync::Mutex<Running>,
    path: Option<PathBuf>,
    /// Counts reloads of the file, whatever came of them.
    reloads: AtomicU64,
}

/// What the [`Reloader`] guards.
#[derive(Debug)]
struct Running {
    /// The config the daemon runs now (for telling what changed).
    config: Config,
    /// The file's text as the last reload read it, whatever came of it.
    last_read: Option<String>,
}

/// Whether a text of the config file needs a reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InForce {
    /// The last reload read this text (and applied or refused it).
    Read,
    /// It means the config in force (it differs in comments, blank lines, key order).
    SameMeaning,
    /// It needs a reload.
    No,
}

impl Running {
    fn in_force(&self, text: &str) -> InForce {
        if self.last_read.as_deref() == Some(text) {
            InForce::Read
        } else if text
            .parse::<toml::Table>()
            .is_ok_and(|table| table == self.config.source)
        {
            InForce::SameMeaning
        } else {
            InForce::No
        }
    }
}

impl Reloader {
    /// A reloader for a daemon started with `config` (from `path`, if it came from a file).
    pub fn new(
        shared: Arc<Shared>,
        lifecycle: Arc<Lifecycle>,
        alerts: Arc<AlertBoard>,
        certificates: Vec<(String, Arc<CertStore>)>,
        config: Config,
        path: Option<&Path>,
    ) -> Reloader {
        Reloader {
            shared,
            lifecycle,
            alerts,
            certificates,
            running: std::sync::Mutex::new(Running {
                config,
                last_read: None,
            }),
            path: path.map(Path::to_path_buf),
            reloads: AtomicU64::new(0),
        }
    }

    /// The file reloads read, if the daemon was started from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The config file in force, as written.
    pub fn running_source(&self) -> toml::Table {
        self.running().config.source.clone()
    }

    /// Re-reads the daemon's config file and applies it.
    pub fn reload_file(&self) -> Result<ReloadReport, ReloadError> {
        let Some(path) = &self.path else {
            return Err(ReloadError::NoFile);
        };
        let mut running = self.running();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        self.reload_text(&mut running, path, text)
    }

    /// Applies `text`, read from the config file at `path`, unless it is in force already
    /// (`None`): the watcher's reload, judged again under the lock that orders reloads.
    fn reload_changed(
        &self,
        path: &Path,
        text: String,
    ) -> Option<Result<ReloadReport, ReloadError>> {
        let mut running = self.running();
        if running.in_force(&text) != InForce::No {
            return None;
        }
        Some(self.reload_text(&mut running, path, text))
    }

    fn reload_text(
        &self,
        running: &mut Running,
        path: &Path,
        text: String,
    ) -> Result<ReloadReport, ReloadError> {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let config = Config::from_toml_str(&text, path.parent().unwrap_or(Path::new(".")));
        running.last_read = Some(text);
        self.apply(&mut running.config, config?)
    }

    /// How many reloads of the file have run: a change tells the watcher that what it knew
    /// of the file's effect is out of date.
    fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Whether `text` is in force: the last reload read it (applied or refused), or it means
    /// what runs now (a comment, blank lines, an order of keys). `None` while a reload runs.
    fn in_force(&self, text: &str) -> Option<InForce> {
        Some(self.try_running()?.in_force(text))
    }

    /// Forgets what the last reload read, so that the watcher tries a refused text again
    /// (a certificate file it may have needed has changed). Skipped while a reload runs: it
    /// reads the file anew.
    fn retry_refused(&self) {
        if let Some(mut running) = self.try_running() {
            running.last_read = None;
            self.reloads.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The TLS listeners in force: their names, certificate and key files, and the digest
    /// of the files their certificate in use was loaded from; `None` while a reload runs.
    fn tls_listeners(&self) -> Option<Vec<(String, Tls, tls::FilesDigest)>> {
        let running = self.try_running()?;
        Some(
            self.certificates
                .iter()
                .filter_map(|(name, store)| {
                    let listener = running.config.listeners.iter().find(|l| &l.name == name)?;
                    Some((name.clone(), listener.tls.clone()?, store.files()))
                })
                .collect(),
        )
    }

    /// Loads `listener`'s certificate and key from `tls` again, for new handshakes, unless a
    /// reload has changed the listener's files meanwhile (`Ok(false)`).
    fn reload_certificate(&self, listener: &str, tls: &Tls) -> Result<bool, ReloadError> {
        let running = self.running();
        let in_force = running
            .config
            .listeners
            .iter()
            .any(|l| l.name == listener && l.tls.as_ref() == Some(tls));
        let store = self.certificates.iter().find(|(name, _)| name == listener);
        let (true, Some((_, store))) = (in_force, store) else {
            return Ok(false);
        };
        let key = tls::certified_key(tls).map_err(|error| ReloadError::Tls {
            listener: listener.to_string(),
            error,
        })?;
        store.replace(key);
        Ok(true)
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Running> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state, unless a reload holds it (the watcher skips a check rather than block a
    /// runtime thread).
    fn try_running(&self) -> Option<std::sync::MutexGuard<'_, Running>> {
        match self.running.try_lock() {
            Ok(running) => Some(running),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Applies `config` over `running`: everything hot-reloadable, or nothing.
    fn apply(&self, running: &mut Config, config: Config) -> Result<ReloadReport, ReloadError> {
        for warning in &config.warnings {
            tracing::warn!(%warning, "configuration");
        }
        // Everything that can fail first, so that a failure changes nothing.
        let mut certificates = Vec::new();
        for (name, store) in &self.certificates {
            let listener = config.listeners.iter().find(|l| &l.name == name);
            if let Some(settings) = listener.and_then(|l| l.tls.as_ref()) {
                let key = tls::certified_key(settings).map_err(|error| ReloadError::Tls {
                    listener: name.clone(),
                    error,
                })?;
                certificates.push((store, key));
            }
        }

        let mut report = ReloadReport {
            certificates: certificates.len(),
            needs_restart: needs_restart(running, &config),
            ..ReloadReport::default()
        };
        let plan = self.plan(running, &config, &mut report);

        // Fresh endpoints are running before they are routed to; old ones are retired once
        // no new request can find them.
        for endpoint in &plan.fresh {
            self.lifecycle.start(endpoint);
        }
        for (store, key) in certificates {
            store.replace(key);
        }
        self.shared
            .access
            .store(Arc::new(ServerAccess::build(&config.server)));
        for (endpoint, settings) in &plan.kept {
            endpoint
                .access
                .store(Arc::new(EndpointAccess::build(&config, settings)));
        }
        self.shared
            .routes
            .store(Arc::new(Routes::from_endpoints(plan.routed)));
        for endpoint in &plan.retired {
            self.lifecycle.retire(endpoint);
        }
        self.alerts.replace_rules(&config);
        for (endpoint, settings) in plan.rescaled {
            // The controller takes them on its runtime; this thread does not wait for it.
            tokio::spawn(async move {
                let _ = endpoint
                    .control
                    .update_settings(settings, "a configuration reload")
                    .await;
            });
        }
        let summary = report.summary();
        // A replaced endpoint shares its predecessor's events: one record tells both.
        let told = plan
            .kept
            .iter()
            .map(|(endpoint, _)| endpoint)
            .chain(&plan.retired);
        for endpoint in told {
            endpoint.control.events.record(
                EventKind::ConfigReloaded,
                summary.clone(),
                Detail::default(),
            );
        }
        *running = config;
        Ok(report)
    }

    /// Decides the fate of every endpoint, old and new.
    fn plan<'a>(&self, old: &Config, new: &'a Config, report: &mut ReloadReport) -> Plan<'a> {
        let listener_names: Vec<String> = new.listeners.iter().map(|l| l.name.clone()).collect();
        let routes = self.shared.routes.load();
        let running = |id: &str| routes.endpoints().iter().find(|e| e.id() == id).cloned();
        let mut plan = Plan::default();
        for settings in &new.endpoints {
            let id = settings.id.clone();
            let Some(endpoint) = running(&id) else {
                if settings.async_.is_some() {
                    report
                        .needs_restart
                        .push(format!("endpoint {id} (added, with [endpoint.async])"));
                    continue;
                }
                let fresh = Arc::new(Endpoint::new(new, settings.clone(), &listener_names));
                plan.fresh.push(Arc::clone(&fresh));
                plan.routed.push(fresh);
                report.added.push(id);
                continue;
            };
            let was = old.endpoint(&id).unwrap_or(&endpoint.config);
            let asynchronous = settings.async_.is_some() || endpoint.config.async_.is_some();
            if !same_but_hot(&endpoint.config, settings) && !asynchronous {
                let fresh = Arc::new(Endpoint::succeeding(
                    new,
                    settings.clone(),
                    &listener_names,
                    &endpoint,
                ));
                plan.fresh.push(Arc::clone(&fresh));
                plan.routed.push(fresh);
                plan.retired.push(endpoint);
                report.replaced.push(id);
                continue;
            }
            if !same_but_hot(&endpoint.config, settings) {
                report.needs_restart.push(format!("endpoint {id}"));
            }
            if was.scaling != settings.scaling {
                plan.rescaled
                    .push((Arc::clone(&endpoint), settings.scaling.clone()));
                report.rescaled.push(id.clone());
            }
            plan.kept.push((Arc::clone(&endpoint), settings));
            plan.routed.push(endpoint);
            report.kept.push(id);
        }
        for endpoint in routes.endpoints() {
            if new.endpoint(endpoint.id()).is_some() {
                continue;
            }
            if endpoint.config.async_.is_some() {
                // Its dispatcher runs until the daemon stops; it keeps serving until then.
                report.needs_restart.push(format!(
                    "endpoint {} (removed, with [endpoint.async])",
                    endpoint.id()
                ));
                plan.routed.push(Arc::clone(endpoint));
                continue;
            }
            plan.retired.push(Arc::clone(endpoint));
            report.removed.push(endpoint.id().to_string());
        }
        plan
    }
}

/// What a reload does to the endpoints.
#[derive(Default)]
struct Plan<'a> {
    /// The new routing table, in config order.
    routed: Vec<Arc<Endpoint>>,
    /// Endpoints to start.
    fresh: Vec<Arc<Endpoint>>,
    /// Endpoints to retire.
    retired: Vec<Arc<Endpoint>>,
    /// Endpoints kept, with their new settings (access rules are rebuilt from them).
    kept: Vec<(Arc<Endpoint>, &'a config::Endpoint)>,
    /// Kept endpoints whose scaling settings changed in the file.
    rescaled: Vec<(Arc<Endpoint>, scaler::ScalingSettings)>,
}

impl ReloadReport {
    /// One line for events and logs.
    pub fn summary(&self) -> String {
        let list = |ids: &[String]| {
            if ids.is_empty() {
                "none".to_string()
            } else {
                ids.join(", ")
            }
        };
        let mut line = format!(
            "configuration reloaded: added {}, removed {}, replaced {}, scaling updated {}",
            list(&self.added),
            list(&self.removed),
            list(&self.replaced),
            list(&self.rescaled)
        );
        if !self.needs_restart.is_empty() {
            line.push_str(&format!(
                "; waiting for a restart: {}",
                self.needs_restart.join(", ")
            ));
        }
        line
    }
}

/// Whether `a` and `b` differ only in what a reload applies to a running endpoint:
/// security groups, `public`, and scaling settings.
fn same_but_hot(a: &config::Endpoint, b: &config::Endpoint) -> bool {
    let mut a = a.clone();
    a.security_groups.clone_from(&b.security_groups);
    a.public = b.public;
    a.scaling.clone_from(&b.scaling);
    &a == b
}

/// The parts of `new` outside endpoints that differ from `old` and only a restart applies.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if old.listeners != new.listeners {
        let certificates_only = old.listeners.len() == new.listeners.len()
            && old.listeners.iter().zip(&new.listeners).all(|(a, b)| {
                (a.name == b.name)
                    && (a.address == b.address)
                    && (a.proxy_protocol == b.proxy_protocol)
                    && (a.tls.is_some() == b.tls.is_some())
            });
        if !certificates_only {
            out.push("listeners".to_string());
        }
    }
    let mut server = old.server.clone();
    server
        .trusted_proxies
        .clone_from(&new.server.trusted_proxies);
    server.admin_token_sha256 = new.server.admin_token_sha256;
    server.metrics_public = new.server.metrics_public;
    if server != new.server {
        out.push("server".to_string());
    }
    if old.object_store != new.object_store {
        out.push("object_store".to_string());
    }
    if old.cluster != new.cluster {
        out.push("cluster".to_string());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra_server: &str, endpoints: &[(&str, &str)]) -> Config {
        let mut text = format!(
            "[server]\n{extra_server}\n[[listener]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\n\
             [[project]]\nid = \"p\"\n[[security_group]]\nid = \"sg\"\ninbound = [{{ source = \"any\" }}]\n"
        );
        for (id, keys) in endpoints {
            text.push_str(&format!(
                "[[endpoint]]\nid = \"{id}\"\nproject = \"p\"\n{keys}\n\
                 [endpoint.workers]\nkind = \"static\"\nurls = [\"http://127.0.0.1:9\"]\n"
            ));
        }
        Config::from_toml_str(&text, Path::new(".")).expect("valid config")
    }

    /// A text needs no reload when the last reload read it, applied or refused, or when it
    /// means the config in force; any other needs one.
    #[test]
    fn tells_what_is_in_force() {
        let text = "[[listener]]\nname = \"public\"\naddress = \"127.0.0.1:0\"\n";
        let mut running = Running {
            config: Config::from_toml_str(text, Path::new(".")).expect("valid config"),
            last_read: None,
        };
        assert_eq!(running.in_force(text), InForce::SameMeaning);
        let commented = format!("# the listener\n{text}\n");
        assert_eq!(running.in_force(&commented), InForce::SameMeaning);
        let changed = text.replace("127.0.0.1:0", "127.0.0.1:1");
        assert_eq!(running.in_force(&changed), InForce::No);
        assert_eq!(running.in_force("not toml ["), InForce::No);
        running.last_read = Some("not toml [".into());
        assert_eq!(running.in_force("not toml ["), InForce::Read);
        assert_eq!(running.in_force(&changed), InForce::No);
    }

    /// Only listener and server changes outside what a reload applies are reported here
    /// (endpoints are planned one by one).
    #[test]
    fn reports_what_needs_a_restart() {
        let old = config("", &[("a", ""), ("b", "")]);
        let hot = config(
            "trusted_proxies = [\"10.0.0.0/8\"]\nmetrics_public = true",
            &[("a", "max_body_bytes = 10"), ("c", "")],
        );
        assert!(needs_restart(&old, &hot).is_empty());
        let cold = config("grace_period_seconds = 1", &[("a", "")]);
        assert_eq!(needs_restart(&old, &cold), ["server"]);
    }

    /// Security groups, `public` and scaling change in place; anything else replaces the
    /// endpoint.
    #[test]
    fn what_changes_in_place() {
        let old = config("", &[("a", "")]);
        let hot = config(
            "",
            &[(
                "a",
                "security_groups = [\"sg\"]\npublic = true\n[endpoint.scaling]\nmax_workers = 9",
            )],
        );
        assert!(same_but_hot(&old.endpoints[0], &hot.endpoints[0]));
        let cold = config("", &[("a", "max_body_bytes = 10")]);
        assert!(!same_but_hot(&old.endpoints[0], &cold.endpoints[0]));
    }
}

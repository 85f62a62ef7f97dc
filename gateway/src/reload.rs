//! Hot reload of what may change without a restart: security groups, project tokens,
//! trusted proxies, the admin token, and TLS certificates. Each is swapped whole, so the next
//! request (or handshake) sees the new config and open connections are left alone.
//!
//! A reload is all or nothing: a config that does not validate, or a certificate that does
//! not load, leaves everything as it was. Changes that need the data plane rebuilt (listeners,
//! endpoints added or removed, workers) are reported and wait for a restart.
//! `SIGHUP` triggers a reload of the file the daemon was started with.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::access::{EndpointAccess, ServerAccess};
use crate::config::{Config, ConfigError};
use crate::pipeline::Shared;
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

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Endpoints whose security groups and tokens were replaced.
    pub endpoints: usize,
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
            "endpoints": self.endpoints,
            "certificates": self.certificates,
            "needs_restart": self.needs_restart,
        })
    }
}

/// Applies new configs to a running daemon.
#[derive(Debug)]
pub struct Reloader {
    shared: Arc<Shared>,
    /// The certificate store of each TLS listener, by listener name.
    certificates: Vec<(String, Arc<CertStore>)>,
    /// The config the daemon runs now (for telling what changed).
    running: std::sync::Mutex<Config>,
    path: Option<PathBuf>,
}

impl Reloader {
    /// A reloader for a daemon started with `config` (from `path`, if it came from a file).
    pub fn new(
        shared: Arc<Shared>,
        certificates: Vec<(String, Arc<CertStore>)>,
        config: Config,
        path: Option<&Path>,
    ) -> Reloader {
        Reloader {
            shared,
            certificates,
            running: std::sync::Mutex::new(config),
            path: path.map(Path::to_path_buf),
        }
    }

    /// The file reloads read, if the daemon was started from one.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// The config file in force, as written.
    pub fn running_source(&self) -> toml::Table {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .source
            .clone()
    }

    /// Re-reads the daemon's config file and applies it.
    pub fn reload_file(&self) -> Result<ReloadReport, ReloadError> {
        let Some(path) = &self.path else {
            return Err(ReloadError::NoFile);
        };
        let config = Config::load(path)?;
        self.apply(config)
    }

    /// Applies `config`: everything hot-reloadable, or nothing.
    pub fn apply(&self, config: Config) -> Result<ReloadReport, ReloadError> {
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
            ..ReloadReport::default()
        };
        for (store, key) in certificates {
            store.replace(key);
        }
        self.shared
            .access
            .store(Arc::new(ServerAccess::build(&config.server)));
        let routes = self.shared.routes.load();
        for endpoint in routes.endpoints() {
            if let Some(settings) = config.endpoint(endpoint.id()) {
                endpoint
                    .access
                    .store(Arc::new(EndpointAccess::build(&config, settings)));
                report.endpoints += 1;
            }
        }

        let mut running = self
            .running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        report.needs_restart = needs_restart(&running, &config);
        *running = config;
        Ok(report)
    }
}

/// The parts of `new` that differ from `old` and only a restart applies.
fn needs_restart(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let listeners = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| (l.name.clone(), l.address, l.proxy_protocol, l.tls.is_some()))
            .collect::<Vec<_>>()
    };
    if listeners(old) != listeners(new) {
        out.push("listeners".to_string());
    }
    for endpoint in &new.endpoints {
        match old.endpoint(&endpoint.id) {
            None => out.push(format!("endpoint {} (added)", endpoint.id)),
            Some(before) => {
                // What reload applies is ignored here; anything else differing waits.
                let mut before = before.clone();
                before.security_groups.clone_from(&endpoint.security_groups);
                before.public = endpoint.public;
                if &before != endpoint {
                    out.push(format!("endpoint {}", endpoint.id));
                }
            }
        }
    }
    for endpoint in &old.endpoints {
        if new.endpoint(&endpoint.id).is_none() {
            out.push(format!("endpoint {} (removed)", endpoint.id));
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

    /// What a reload applies is not reported; everything else that changed is.
    #[test]
    fn reports_what_needs_a_restart() {
        let old = config("", &[("a", ""), ("b", "")]);
        let hot = config(
            "trusted_proxies = [\"10.0.0.0/8\"]\nmetrics_public = true",
            &[
                ("a", "security_groups = [\"sg\"]\npublic = true"),
                ("b", ""),
            ],
        );
        assert!(needs_restart(&old, &hot).is_empty());
        let cold = config(
            "grace_period_seconds = 1",
            &[("a", "max_body_bytes = 10"), ("c", "")],
        );
        assert_eq!(
            needs_restart(&old, &cold),
            [
                "endpoint a",
                "endpoint c (added)",
                "endpoint b (removed)",
                "server"
            ]
        );
    }
}

//! The daemon: starts the data plane and the control loops on bound listeners, and drains
//! them on shutdown.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::signal::unix::Signal;
use tokio::sync::watch;

use crate::access::ServerAccess;
use crate::admin::Admin;
use crate::admin_state::AdminState;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::dataplane::{self, DataListener};
use crate::lifecycle::Lifecycle;
use crate::listen::Listeners;
use crate::pipeline::Shared;
use crate::reload::Reloader;
use crate::routes::Routes;
use crate::store::Store;
use crate::{accesslog, admin, jobs, metrics, tls};

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A listener could not be prepared (socket, TLS).
    #[error("listener {name}: {reason}")]
    Listener {
        /// The listener's name.
        name: String,
        /// What failed.
        reason: String,
    },
    /// The access log could not be opened.
    #[error("access log: {0}")]
    AccessLog(std::io::Error),
    /// The async queue or the result store could not start.
    #[error("{0}")]
    Jobs(#[from] jobs::StartError),
    /// The embedded state store could not open.
    #[error("{0}")]
    Store(#[from] crate::store::StoreError),
    /// A thread or the admin listener failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The `[cluster]` settings could not be used.
    #[error("{0}")]
    Cluster(String),
}

/// Serves `listeners` with `config` until `shutdown` completes, then stops accepting and
/// lets open connections finish for up to `server.grace_period_seconds`.
///
/// Must be called on a multi-thread tokio runtime: the control loops and the admin API run
/// there, while the data plane gets threads of its own.
///
/// With `reload`, each `SIGHUP` reloads the config file ([`crate::reload`]), and so does a
/// change to it, checked every `server.config_watch_seconds` ([`crate::reload::watch`]).
pub async fn run(
    listeners: Listeners,
    config: Config,
    reload: Option<ReloadOn>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    for warning in &config.warnings {
        tracing::warn!(%warning, "configuration");
    }
    let prometheus = metrics::install();
    // The config in force loaded whole; reloads count from here.
    ::metrics::gauge!("portico_config_last_reload_successful").set(1.0);
    accesslog::start(config.server.access_log.as_deref()).map_err(RunError::AccessLog)?;
    let threads = match config.server.worker_threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };

    let mut data = Vec::with_capacity(listeners.data.len());
    let mut data_bases = Vec::with_capacity(listeners.data.len());
    let mut certificates = Vec::new();
    for (index, (name, socket)) in listeners.data.into_iter().enumerate() {
        let settings = config.listeners.get(index);
        let scheme = match settings.is_some_and(|l| l.tls.is_some()) {
            true => "https",
            false => "http",
        };
        data_bases.push(match socket.local_addr() {
            Ok(addr) => format!("{scheme}://{addr}"),
            Err(_) => format!(
                "{scheme}://{}",
                settings.map_or(String::new(), |l| l.address.to_string())
            ),
        });
        let tls = match settings.and_then(|l| l.tls.as_ref()) {
            Some(tls) => {
                let (acceptor, store) = tls::acceptor(tls).map_err(|err| RunError::Listener {
                    name: name.clone(),
                    reason: err.to_string(),
                })?;
                certificates.push((name.clone(), store));
                Some(acceptor)
            }
            None => None,
        };
        let proxy_protocol = settings.is_some_and(|l| l.proxy_protocol);
        let listener = DataListener::new(index, name.clone(), socket, threads, tls, proxy_protocol)
            .map_err(|err| RunError::Listener {
                name,
                reason: err.to_string(),
            })?;
        data.push(listener);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let shared = Arc::new(Shared {
        routes: ArcSwap::from_pointee(Routes::build(&config)),
        access: ArcSwap::from_pointee(ServerAccess::build(&config.server)),
        stop: stop_rx.clone(),
        grace: config.server.grace_period,
    });
    // Controllers outlive the data plane's drain: requests finishing on a worker need it
    // running, so workers are stopped only after the last connection closed.
    let (control_stop_tx, control_stop_rx) = watch::channel(false);
    // In a cluster, demand and orders go through Redis, and only the leader actuates.
    let cluster = match &config.cluster {
        Some(settings) => Some(
            Cluster::new(settings.clone())
                .map_err(|err| RunError::Cluster(format!("cluster.redis: {err}")))?,
        ),
        None => None,
    };
    let store = Store::open(&config.server.state_dir)?;
    // Operators' settings and the event timeline: in Redis for a cluster, else on disk.
    let state: Arc<dyn AdminState> = match &cluster {
        Some(cluster) => Arc::clone(cluster) as Arc<dyn AdminState>,
        None => crate::admin_state::embedded(&store),
    };
    let lifecycle = Arc::new(Lifecycle::new(
        store,
        config.server.grace_period,
        stop_rx.clone(),
        control_stop_rx,
        cluster.clone(),
        Arc::clone(&state),
    ));
    for endpoint in shared.routes.load().endpoints() {
        lifecycle.start(endpoint);
    }
    // Dispatchers, like controllers, run until the data plane drained; they need workers.
    let dispatchers = jobs::start(
        &shared.routes.load(),
        &config,
        stop_rx.clone(),
        config.server.grace_period,
    )
    .await?;
    // Alerts: rules evaluated on this (control) runtime; the admin API shows their state.
    let alerts = crate::alerts::start(Arc::clone(&shared), &config, stop_rx.clone());
    let data_threads = dataplane::start(
        Arc::clone(&shared),
        data,
        threads,
        &config.server,
        stop_rx.clone(),
    )?;
    let reloader = Arc::new(Reloader::new(
        Arc::clone(&shared),
        Arc::clone(&lifecycle),
        Arc::clone(&alerts),
        certificates,
        config.clone(),
        reload.as_ref().map(|reload| reload.path.as_path()),
    ));
    // The config watcher: a change to the file reloads it, as a `SIGHUP` would.
    let watcher = match (&reload, config.server.config_watch) {
        (Some(reload), Some(every)) => Some(tokio::spawn(crate::reload::watch::run(
            Arc::clone(&reloader),
            reload.path.clone(),
            every,
        ))),
        _ => None,
    };
    let cluster_task = cluster.as_ref().map(|cluster| {
        tokio::spawn(crate::cluster::run(
            Arc::clone(cluster),
            Arc::clone(&shared),
            stop_rx.clone(),
        ))
    });
    let admin = tokio::spawn(admin::serve(
        listeners.admin,
        Admin::new(
            Arc::clone(&shared),
            prometheus,
            Arc::clone(&reloader),
            Arc::clone(&alerts),
            data_bases,
            cluster,
            state,
        ),
        stop_rx,
    ));
    if config.server.admin_token_sha256.is_none() && !config.server.admin_listen.ip().is_loopback()
    {
        tracing::warn!(
            admin_listen = %config.server.admin_listen,
            "no server.admin_token_sha256: the admin API is open to anyone who can reach it"
        );
    }
    tracing::info!(summary = %config.summary(), threads, "portico started");
    let reloads = reload.map(|reload| tokio::spawn(reload_on_hangup(reloader, reload.hangups)));

    shutdown.await;
    if let Some(reloads) = reloads {
        reloads.abort();
    }
    if let Some(watcher) = watcher {
        watcher.abort();
    }
    let _ = stop_tx.send(true);
    let joined = tokio::task::spawn_blocking(move || {
        for thread in data_threads {
            let _ = thread.join();
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!("a data-plane thread panicked");
    }
    match admin.await {
        Ok(Err(err)) => tracing::warn!(error = %err, "admin listener failed"),
        Err(err) => tracing::warn!(error = %err, "admin listener task failed"),
        Ok(Ok(())) => {}
    }
    if let Some(dispatchers) = dispatchers {
        let joined = tokio::task::spawn_blocking(move || dispatchers.join()).await;
        if !matches!(joined, Ok(Ok(()))) {
            tracing::warn!("the async dispatcher thread panicked");
        }
    }
    // The lease goes to another replica before this one's workers stop.
    if let Some(task) = cluster_task
        && task.await.is_err()
    {
        tracing::warn!("the cluster task failed");
    }
    let _ = control_stop_tx.send(true);
    for controller in lifecycle.take_controllers() {
        if let Err(err) = controller.await {
            tracing::warn!(error = %err, "a controller task failed");
        }
    }
    // The workers' last events (draining, stopped) are on disk before the daemon exits.
    if !crate::control::journal::flush(lifecycle.store()) {
        tracing::warn!("the last lifecycle events may not have been saved");
    }
    // And the traffic counted since the last periodic write.
    if tokio::task::spawn_blocking(crate::traffic::flush_all)
        .await
        .is_err()
    {
        tracing::warn!("the last traffic counts may not have been saved");
    }
    tracing::info!("all workers stopped");
    tracing::info!("all connections closed");
    Ok(())
}

/// Where reloads come from: the config file, re-read on each `SIGHUP`.
#[derive(Debug)]
pub struct ReloadOn {
    /// The config file the daemon was started with.
    pub path: PathBuf,
    /// The `SIGHUP` stream, installed before the daemon announced its ports.
    pub hangups: Signal,
}

/// Reloads the config file on every `SIGHUP`.
async fn reload_on_hangup(reloader: Arc<Reloader>, mut hangups: Signal) {
    while hangups.recv().await.is_some() {
        let reloader = Arc::clone(&reloader);
        // Reading files and hashing certificates is blocking work.
        let result = tokio::task::spawn_blocking(move || reloader.reload_file()).await;
        crate::reload::log("sighup", result);
    }
}

//! Endpoints coming and going while the daemon runs: at start every configured endpoint is
//! started here, and a reload starts the endpoints it adds and retires those it removes.
//!
//! Starting an endpoint gives it its persisted history (events, traffic), health probes for
//! its fixed workers, and its controller. Retiring one tells its controller to let the
//! requests in flight finish, then stop the workers.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::admin_state::AdminState;
use crate::cluster::Cluster;
use crate::endpoint::Endpoint;
use crate::store::Store;
use crate::{control, discovery, health};

/// What starting and retiring endpoints needs.
#[derive(Debug)]
pub struct Lifecycle {
    store: Arc<Store>,
    grace: Duration,
    /// Turns true when the data plane stops: ends health probes.
    probers: watch::Receiver<bool>,
    /// Turns true once the data plane drained: ends controllers, which stop the workers.
    controllers_stop: watch::Receiver<bool>,
    controllers: Mutex<Vec<JoinHandle<()>>>,
    /// The deployment this replica belongs to (`[cluster]`), whose leader alone actuates.
    cluster: Option<Arc<Cluster>>,
    /// Operators' saved settings, applied to each endpoint it starts.
    state: Arc<dyn AdminState>,
}

impl Lifecycle {
    /// A lifecycle whose controllers end on `controllers_stop` and whose probes end on
    /// `probers`; a retired endpoint's requests get `grace` to finish; in a `cluster`, only
    /// its leader's controllers actuate.
    pub fn new(
        store: Arc<Store>,
        grace: Duration,
        probers: watch::Receiver<bool>,
        controllers_stop: watch::Receiver<bool>,
        cluster: Option<Arc<Cluster>>,
        state: Arc<dyn AdminState>,
    ) -> Lifecycle {
        Lifecycle {
            store,
            grace,
            probers,
            controllers_stop,
            controllers: Mutex::new(Vec::new()),
            cluster,
            state,
        }
    }

    /// Starts `endpoint` on the current (control) runtime.
    pub fn start(&self, endpoint: &Arc<Endpoint>) {
        self.store.attach(endpoint);
        for worker in endpoint.workers().iter() {
            health::spawn_prober(&endpoint.config, worker, &self.probers);
        }
        // Ends with the endpoint or at shutdown.
        let _ = discovery::spawn(endpoint, &self.probers);
        let _ = crate::kubernetes::spawn_discovery(endpoint, &self.probers);
        let controller = control::spawn(
            endpoint,
            self.grace,
            &self.controllers_stop,
            &self.probers,
            self.cluster.clone(),
        );
        self.lock().push(controller);
        if let Some(cluster) = &self.cluster {
            endpoint
                .control
                .events
                .set_sink(cluster.event_sink(endpoint.id()));
        }
        // The mode and scaling operators saved (before a restart, or on another replica).
        let state = Arc::clone(&self.state);
        let endpoint = Arc::clone(endpoint);
        tokio::spawn(async move { crate::admin_state::apply(&*state, &endpoint).await });
    }

    /// Retires `endpoint` (no longer routed): its requests finish, its workers stop.
    pub fn retire(&self, endpoint: &Endpoint) {
        endpoint.control.retire();
    }

    /// The embedded state store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Every controller started so far, for the daemon to wait on at shutdown.
    pub fn take_controllers(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.controllers
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

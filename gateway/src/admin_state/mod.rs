//! What operators set on an endpoint — its mode (pinned, stopped) and scaling settings
//! changed through the admin API — and its event timeline, kept where every replica and
//! the next start of Portico find them, behind one trait: [`AdminState`]. Alone, Portico
//! keeps them in the embedded store ([`Embedded`]); in a cluster, in Redis (the
//! [`Cluster`](crate::cluster::Cluster) implements the trait).
//!
//! A replica (or a restarted Portico) applies the saved state when it starts an endpoint;
//! saved scaling settings apply only while the file's `[endpoint.scaling]` is still the
//! one they were made over (a changed file wins, as on reload).
//!
//! Layout:
//! - `embedded`: the `admin_state` table of the embedded store.

mod embedded;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use embedded::Embedded;

use crate::config::file::FileScaling;
use crate::config::{self};
use crate::control::{Event, Order};
use crate::endpoint::Endpoint;

/// An endpoint's mode as operators set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum SharedMode {
    /// Autoscaled.
    Auto,
    /// Pinned to a count.
    Manual {
        /// The pinned count.
        workers: u32,
    },
    /// Stopped.
    Stopped,
}

impl SharedMode {
    /// The mode an order leaves the endpoint in; `None` for orders that are not kept.
    pub fn after(order: Order) -> Option<SharedMode> {
        match order {
            Order::Scale(workers) => Some(SharedMode::Manual { workers }),
            Order::Autoscale | Order::Start => Some(SharedMode::Auto),
            Order::Stop => Some(SharedMode::Stopped),
            Order::Reconfigure => None,
        }
    }

    /// The endpoint's mode now.
    pub fn of(endpoint: &Endpoint) -> SharedMode {
        match endpoint.control.status().mode {
            scaler::Mode::Auto => SharedMode::Auto,
            scaler::Mode::Pinned(workers) => SharedMode::Manual { workers },
            scaler::Mode::Stopped => SharedMode::Stopped,
        }
    }
}

/// Scaling settings changed through the admin API, with the file's settings they were
/// changed from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedScaling {
    /// The settings in force after the change.
    pub settings: FileScaling,
    /// The file's `[endpoint.scaling]` at the time.
    pub over: FileScaling,
}

/// What is saved for one endpoint.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// The mode, once an operator set one.
    pub mode: Option<SharedMode>,
    /// Scaling settings changed through the admin API.
    pub scaling: Option<SavedScaling>,
}

/// Why saved state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StateError(pub String);

/// Where operators' settings and the event timeline are kept.
pub trait AdminState: Send + Sync + std::fmt::Debug {
    /// What is saved for `endpoint`.
    fn load<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Saved, StateError>>;

    /// Saves `endpoint`'s mode (and tells the other replicas, in a cluster).
    fn save_mode<'a>(
        &'a self,
        endpoint: &'a str,
        mode: SharedMode,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// Saves `endpoint`'s changed scaling settings (and tells the other replicas).
    fn save_scaling<'a>(
        &'a self,
        endpoint: &'a str,
        scaling: SavedScaling,
    ) -> BoxFuture<'a, Result<(), StateError>>;

    /// The newest `limit` events of `endpoint` after sequence number `since`, oldest first.
    fn events<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>, StateError>>;
}

/// Brings `endpoint` to what `state` saved for it: its mode, and its scaling settings
/// while the file's are those they were changed from. Logged, never fatal.
pub async fn apply(state: &dyn AdminState, endpoint: &Endpoint) {
    let saved = match state.load(endpoint.id()).await {
        Ok(saved) => saved,
        Err(err) => {
            tracing::warn!(endpoint = endpoint.id(), error = %err, "could not read the saved mode and scaling");
            return;
        }
    };
    if let Some(scaling) = saved.scaling {
        let current = FileScaling::from(endpoint.control.settings().as_ref());
        let file = FileScaling::from(&endpoint.config.scaling);
        if scaling.over == file && scaling.settings != current {
            match config::scaling_settings("scaling", &scaling.settings) {
                Ok(settings) => {
                    let _ = endpoint
                        .control
                        .update_settings(settings, "a saved admin change")
                        .await;
                }
                Err(problems) => tracing::warn!(
                    endpoint = endpoint.id(),
                    problems = ?problems,
                    "saved scaling settings no longer validate; the file's apply"
                ),
            }
        }
    }
    let Some(mode) = saved.mode else {
        return;
    };
    let current = SharedMode::of(endpoint);
    if mode == current {
        return;
    }
    let order = match (current, mode) {
        // From a stopped endpoint, "auto" is a start.
        (SharedMode::Stopped, SharedMode::Auto) => Order::Start,
        (_, SharedMode::Auto) => Order::Autoscale,
        (_, SharedMode::Manual { workers }) => Order::Scale(workers),
        (_, SharedMode::Stopped) => Order::Stop,
    };
    if endpoint.control.order(order).await.is_ok() {
        tracing::info!(endpoint = endpoint.id(), ?mode, "applied the saved mode");
    }
}

/// The state of a lone Portico, in its embedded store.
pub fn embedded(store: &Arc<crate::store::Store>) -> Arc<dyn AdminState> {
    Arc::new(Embedded::new(Arc::clone(store)))
}

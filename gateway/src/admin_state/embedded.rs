//! [`AdminState`] in the embedded store: one JSON row per endpoint in the `admin_state`
//! table; events are the endpoint's own (kept by the event journal).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use redb::{ReadableDatabase as _, TableDefinition};

use super::{AdminState, Saved, SavedScaling, SharedMode, StateError};
use crate::control::Event;
use crate::endpoint::Endpoint;
use crate::store::Store;

const STATE: TableDefinition<'_, &str, &str> = TableDefinition::new("admin_state");

/// The embedded store's admin state.
#[derive(Debug)]
pub struct Embedded {
    store: Arc<Store>,
}

impl Embedded {
    /// The admin state kept in `store`.
    pub fn new(store: Arc<Store>) -> Embedded {
        Embedded { store }
    }

    fn read(store: &Store, endpoint: &str) -> Result<Saved, StateError> {
        let failed = |err: &dyn std::fmt::Display| StateError(format!("state store: {err}"));
        let tx = store.db().begin_read().map_err(|e| failed(&e))?;
        let table = match tx.open_table(STATE) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Saved::default()),
            Err(err) => return Err(failed(&err)),
        };
        let row = table.get(endpoint).map_err(|e| failed(&e))?;
        Ok(row
            .and_then(|text| serde_json::from_str(text.value()).ok())
            .unwrap_or_default())
    }

    /// Reads, changes and writes `endpoint`'s row in one write transaction.
    async fn update(
        &self,
        endpoint: &str,
        change: impl FnOnce(&mut Saved) + Send + 'static,
    ) -> Result<(), StateError> {
        let store = Arc::clone(&self.store);
        let endpoint = endpoint.to_string();
        tokio::task::spawn_blocking(move || {
            let failed = |err: &dyn std::fmt::Display| StateError(format!("state store: {err}"));
            let mut saved = Embedded::read(&store, &endpoint)?;
            change(&mut saved);
            let text = serde_json::to_string(&saved).map_err(|e| failed(&e))?;
            let tx = store.db().begin_write().map_err(|e| failed(&e))?;
            {
                let mut table = tx.open_table(STATE).map_err(|e| failed(&e))?;
                table
                    .insert(endpoint.as_str(), text.as_str())
                    .map_err(|e| failed(&e))?;
            }
            tx.commit().map_err(|e| failed(&e))
        })
        .await
        .map_err(|err| StateError(err.to_string()))?
    }
}

impl AdminState for Embedded {
    fn load<'a>(&'a self, endpoint: &'a str) -> BoxFuture<'a, Result<Saved, StateError>> {
        let store = Arc::clone(&self.store);
        let endpoint = endpoint.to_string();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || Embedded::read(&store, &endpoint))
                .await
                .map_err(|err| StateError(err.to_string()))?
        })
    }

    fn save_mode<'a>(
        &'a self,
        endpoint: &'a str,
        mode: SharedMode,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.update(endpoint, move |saved| saved.mode = Some(mode)))
    }

    fn save_scaling<'a>(
        &'a self,
        endpoint: &'a str,
        scaling: SavedScaling,
    ) -> BoxFuture<'a, Result<(), StateError>> {
        Box::pin(self.update(endpoint, move |saved| saved.scaling = Some(scaling)))
    }

    fn events<'a>(
        &'a self,
        endpoint: &'a Endpoint,
        since: u64,
        limit: usize,
    ) -> BoxFuture<'a, Result<Vec<Event>, StateError>> {
        Box::pin(async move { Ok(endpoint.control.events.list(since, limit)) })
    }
}

//! The embedded store: one redb file, `<state_dir>/state.redb`, holding what must survive a
//! restart of Portico besides the async queue (which has its own file and writer): each
//! endpoint's lifecycle events and its hourly access analytics.
//!
//! Each user of the store keeps to its own tables; [`Store::attach`] hands the store to an
//! endpoint's parts when the endpoint is created (at start and on reload).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::control::journal::Journal;
use crate::endpoint::Endpoint;

/// Why the store could not open.
#[derive(Debug, thiserror::Error)]
#[error("state store {path}: {error}")]
pub struct StoreError {
    path: String,
    error: String,
}

/// The open store.
pub struct Store {
    db: redb::Database,
    /// The event journal's writer, while any endpoint uses it.
    journal: Mutex<Weak<Journal>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) `<dir>/state.redb`.
    pub fn open(dir: &Path) -> Result<Arc<Store>, StoreError> {
        let path = dir.join("state.redb");
        let failed = |error: String| StoreError {
            path: path.display().to_string(),
            error,
        };
        std::fs::create_dir_all(dir).map_err(|err| failed(err.to_string()))?;
        let db = redb::Database::create(&path).map_err(|err| failed(err.to_string()))?;
        Ok(Arc::new(Store {
            db,
            journal: Mutex::new(Weak::new()),
        }))
    }

    /// The database, for the tables of each user.
    pub fn db(&self) -> &redb::Database {
        &self.db
    }

    /// Where the event journal of this store is kept (see [`Journal::of`]).
    pub(crate) fn journal_slot(&self) -> MutexGuard<'_, Weak<Journal>> {
        self.journal
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Gives a new endpoint's persistent parts their history and a place to write.
    pub fn attach(self: &Arc<Self>, endpoint: &Endpoint) {
        endpoint.control.events.attach(self);
        endpoint.traffic.attach(self);
    }
}

//! The persistent side of lifecycle events: the `events` table of the embedded store and the
//! one writer thread per store that fills it.
//!
//! [`Events::record`](super::Events::record) runs on async tasks and replica hooks, so it only
//! hands the event to a bounded channel; the writer commits whatever is waiting in one
//! fsync'd transaction (group commit), right away, so an event is durable a few milliseconds
//! after it happened. In the same transaction it trims each endpoint it touched to the
//! newest [`CAPACITY`] events and drops those older than [`MAX_AGE`].
//!
//! Rows: key `(endpoint id, seq)`, value `(unix seconds when recorded, JSON of the Event)`.
//! The time beside the JSON lets the trim judge age without parsing every event. Rows of an
//! endpoint that left the configuration stay, so one added back continues its numbering.
//!
//! A failure to persist is logged (at most one warning a minute, counting what it lost) and
//! never reaches the caller: the in-memory ring stays the source of truth while running.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redb::{Durability, ReadableDatabase as _, ReadableTable as _, TableDefinition};

use super::events::{CAPACITY, Event};
use crate::store::Store;

/// `(endpoint, seq)` → `(unix seconds recorded, event JSON)`.
const EVENTS: TableDefinition<'_, (&str, u64), (u64, &str)> = TableDefinition::new("events");

/// Events older than this are dropped from the table (and not loaded).
pub const MAX_AGE: Duration = Duration::from_secs(30 * 24 * 3600);

/// Events waiting for the writer; beyond this, new ones are not persisted (and a warning
/// says so) rather than making `record` wait.
const QUEUE: usize = 8192;

/// Most events folded into one commit.
const MAX_BATCH: usize = 1024;

/// How long [`Journal::flush`] waits for the writer.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// At most one persistence warning per this interval.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Work for the writer thread.
enum Op {
    /// Store one event.
    Append(Row),
    /// Trim an endpoint's rows by count and age.
    Trim(String),
    /// Answer once everything sent before is committed.
    Flush(SyncSender<()>),
}

/// One event ready to be written.
struct Row {
    endpoint: String,
    seq: u64,
    at: u64,
    json: String,
}

/// An endpoint's history as the table holds it.
#[derive(Debug, Default)]
pub struct History {
    /// The newest events (at most [`CAPACITY`], none older than [`MAX_AGE`]), oldest first.
    pub events: Vec<Event>,
    /// The highest sequence number ever stored for the endpoint (0 when none), including
    /// events too old to load, so numbering never goes back.
    pub last_seq: u64,
}

/// The event writer of one store.
pub struct Journal {
    store: Arc<Store>,
    /// `None` when the writer thread could not start (events then stay in memory only).
    ops: Option<SyncSender<Op>>,
    writer: Option<JoinHandle<()>>,
    /// The generation that owns each endpoint id: only the most recently attached `Events`
    /// of an id persists, so an endpoint removed by a reload and still winding down cannot
    /// overwrite the numbering of its successor.
    owners: Mutex<HashMap<String, u64>>,
    generations: AtomicU64,
    warnings: Arc<Warnings>,
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("running", &self.ops.is_some())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// The journal of `store`, starting its writer on first use.
    pub fn of(store: &Arc<Store>) -> Arc<Journal> {
        // Every endpoint of a store shares one writer; the store keeps it weakly (the
        // journal holds the store), so it goes when the last endpoint does.
        let mut slot = store.journal_slot();
        if let Some(journal) = slot.upgrade() {
            return journal;
        }
        let journal = Arc::new(Journal::start(Arc::clone(store)));
        *slot = Arc::downgrade(&journal);
        journal
    }

    fn start(store: Arc<Store>) -> Journal {
        let warnings = Arc::new(Warnings::default());
        let commits = Arc::new(AtomicU64::new(0));
        let (ops, inbox) = mpsc::sync_channel(QUEUE);
        let writer = {
            let store = Arc::clone(&store);
            let warnings = Arc::clone(&warnings);
            let commits = Arc::clone(&commits);
            std::thread::Builder::new()
                .name("portico-events".into())
                .spawn(move || write_loop(&store, &inbox, &warnings, &commits))
        };
        let (ops, writer) = match writer {
            Ok(writer) => (Some(ops), Some(writer)),
            Err(err) => {
                tracing::warn!(error = %err, "event journal: no writer thread, events are not persisted");
                (None, None)
            }
        };
        Journal {
            store,
            ops,
            writer,
            owners: Mutex::new(HashMap::new()),
            generations: AtomicU64::new(0),
            warnings,
            commits,
        }
    }

    /// Makes the caller the writer of `endpoint`'s events and returns its generation, to be
    /// passed to [`Journal::append`]; an earlier owner's appends are ignored from now on.
    pub fn claim(&self, endpoint: &str) -> u64 {
        let generation = self.generations.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock_owners().insert(endpoint.to_string(), generation);
        generation
    }

    /// Reads `endpoint`'s stored history. Call [`Journal::flush`] first so nothing sent is
    /// still on its way.
    pub fn load(&self, endpoint: &str) -> Result<History, redb::Error> {
        let cutoff = unix_now().saturating_sub(MAX_AGE.as_secs());
        let tx = self.store.db().begin_read()?;
        let table = match tx.open_table(EVENTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(History::default()),
            Err(err) => return Err(err.into()),
        };
        let mut history = History::default();
        let mut newest_first = Vec::new();
        for row in table.range((endpoint, 0)..=(endpoint, u64::MAX))?.rev() {
            let (key, value) = row?;
            let (_, seq) = key.value();
            let (at, json) = value.value();
            history.last_seq = history.last_seq.max(seq);
            if newest_first.len() == CAPACITY {
                // Rows come newest first: the rest are beyond the bound.
                break;
            }
            if at < cutoff {
                // Judged row by row, like the trim: a clock set back can leave an old row
                // after newer ones.
                continue;
            }
            match serde_json::from_str::<Event>(json) {
                Ok(event) => newest_first.push(event),
                Err(err) => tracing::warn!(
                    endpoint,
                    seq,
                    error = %err,
                    "event journal: skipping an unreadable event"
                ),
            }
        }
        newest_first.reverse();
        history.events = newest_first;
        Ok(history)
    }

    /// Queues `event` of `endpoint` for the writer, unless `generation` no longer owns the
    /// endpoint. Never blocks: a full queue or a stopped writer loses the event (with a
    /// warning), not the caller's time.
    pub fn append(&self, endpoint: &str, generation: u64, event: &Event) {
        if self.lock_owners().get(endpoint) != Some(&generation) {
            tracing::debug!(
                endpoint,
                seq = event.seq,
                "event journal: superseded endpoint, not persisted"
            );
            return;
        }
        let json = match serde_json::to_string(event) {
            Ok(json) => json,
            Err(err) => {
                self.warnings.warn(&format!("encoding failed: {err}"), 1);
                return;
            }
        };
        self.send(Op::Append(Row {
            endpoint: endpoint.to_string(),
            seq: event.seq,
            at: unix_now(),
            json,
        }));
    }

    /// Asks the writer to trim `endpoint`'s rows by count and age (done at attach, so a quiet
    /// endpoint's old events go too).
    pub fn trim(&self, endpoint: &str) {
        self.send(Op::Trim(endpoint.to_string()));
    }

    /// Blocks until everything queued so far is committed (or failed), at most 5 seconds.
    /// Returns whether the writer confirmed it in time.
    pub fn flush(&self) -> bool {
        let Some(ops) = &self.ops else { return false };
        let (done, wait) = mpsc::sync_channel(1);
        let deadline = Instant::now() + FLUSH_TIMEOUT;
        let mut op = Op::Flush(done);
        // The queue is full only while the writer is behind; waiting for room is what a
        // flush is for.
        loop {
            match ops.try_send(op) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) => {
                    if Instant::now() >= deadline {
                        return false;
                    }
                    op = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        wait.recv_timeout(left).is_ok()
    }

    /// Transactions the writer committed so far (each holds a batch of events).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    fn send(&self, op: Op) {
        let Some(ops) = &self.ops else {
            self.warnings.warn("no writer", 1);
            return;
        };
        match ops.try_send(op) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.warnings.warn("the writer is behind", 1),
            Err(TrySendError::Disconnected(_)) => self.warnings.warn("the writer stopped", 1),
        }
    }

    fn lock_owners(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.owners
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Journal {
    /// Closes the queue and waits for the writer to commit what it holds, so events are not
    /// lost when the last endpoint of a store goes away.
    fn drop(&mut self) {
        self.ops = None;
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::warn!("event journal: the writer thread panicked");
        }
    }
}

/// Flushes the journal of `store` if it has one (see [`Journal::flush`]); returns `false`
/// only when events were queued and could not be confirmed committed. Portico calls this
/// at the end of a run, after the controllers stopped, so the last events survive.
pub fn flush(store: &Arc<Store>) -> bool {
    let journal = store.journal_slot().upgrade();
    // No journal left means every endpoint is gone, and its drop already waited for the
    // writer.
    journal.is_none_or(|journal| journal.flush())
}

/// The writer: one transaction per batch of whatever is waiting; exits when every sender
/// is gone, after committing the last batch.
fn write_loop(store: &Store, inbox: &Receiver<Op>, warnings: &Warnings, commits: &AtomicU64) {
    while let Ok(first) = inbox.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match inbox.try_recv() {
                Ok(op) => batch.push(op),
                Err(_) => break,
            }
        }
        let mut rows = Vec::new();
        let mut trims = BTreeSet::new();
        let mut flushes = Vec::new();
        for op in batch {
            match op {
                Op::Append(row) => rows.push(row),
                Op::Trim(endpoint) => {
                    trims.insert(endpoint);
                }
                Op::Flush(done) => flushes.push(done),
            }
        }
        if !rows.is_empty() || !trims.is_empty() {
            match commit(store, &rows, &trims, unix_now()) {
                Ok(()) => {
                    commits.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => warnings.warn(&format!("commit failed: {err}"), rows.len() as u64),
            }
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Writes `rows` and trims every endpoint they touch, plus `trims`, in one durable commit.
fn commit(
    store: &Store,
    rows: &[Row],
    trims: &BTreeSet<String>,
    now: u64,
) -> Result<(), redb::Error> {
    let mut tx = store.db().begin_write()?;
    tx.set_durability(Durability::Immediate)?;
    {
        let mut table = tx.open_table(EVENTS)?;
        for row in rows {
            table.insert(
                (row.endpoint.as_str(), row.seq),
                (row.at, row.json.as_str()),
            )?;
        }
        let touched: BTreeSet<&str> = rows
            .iter()
            .map(|row| row.endpoint.as_str())
            .chain(trims.iter().map(String::as_str))
            .collect();
        let cutoff = now.saturating_sub(MAX_AGE.as_secs());
        for endpoint in touched {
            trim(&mut table, endpoint, cutoff)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Removes `endpoint`'s rows beyond the newest [`CAPACITY`] and those recorded before
/// `cutoff`.
fn trim(
    table: &mut redb::Table<'_, (&'static str, u64), (u64, &'static str)>,
    endpoint: &str,
    cutoff: u64,
) -> Result<(), redb::Error> {
    let mut rows = Vec::new();
    for row in table.range((endpoint, 0)..=(endpoint, u64::MAX))? {
        let (key, value) = row?;
        rows.push((key.value().1, value.value().0));
    }
    let excess = rows.len().saturating_sub(CAPACITY);
    for (index, (seq, at)) in rows.into_iter().enumerate() {
        if index < excess || at < cutoff {
            table.remove((endpoint, seq))?;
        }
    }
    Ok(())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

/// Rate-limited warnings about lost events.
#[derive(Debug, Default)]
struct Warnings {
    last: Mutex<Option<Instant>>,
    lost: AtomicU64,
}

impl Warnings {
    /// Counts `lost` events and warns about `why` unless a warning went out in the last
    /// minute (the next one reports the total lost since).
    fn warn(&self, why: &str, lost: u64) {
        self.lost.fetch_add(lost, Ordering::Relaxed);
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| at.elapsed() < WARN_EVERY) {
            return;
        }
        *last = Some(Instant::now());
        let lost = self.lost.swap(0, Ordering::Relaxed);
        tracing::warn!(
            lost_events = lost,
            "event journal: events not persisted: {why}"
        );
    }
}

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::Duration;

use redb::ReadableDatabase as _;

use super::*;
use crate::control::events::{Detail, EventKind, Events};
use crate::store::Store;

fn record(events: &Events, n: usize) {
    for i in 0..n {
        events.record(EventKind::ScaledUp, format!("event {i}"), Detail::default());
    }
}

/// `(seq, recorded at)` of every stored row of `endpoint`, in key order.
fn stored(store: &Store, endpoint: &str) -> Vec<(u64, u64)> {
    let tx = store.db().begin_read().unwrap();
    let table = tx.open_table(EVENTS).unwrap();
    table
        .range((endpoint, 0)..=(endpoint, u64::MAX))
        .unwrap()
        .map(|row| {
            let (key, value) = row.unwrap();
            (key.value().1, value.value().0)
        })
        .collect()
}

fn attached(store: &Arc<Store>, endpoint: &str) -> Events {
    let events = Events::new(endpoint);
    events.attach(store);
    events
}

fn journal_flush(store: &Arc<Store>) {
    assert!(flush(store), "the writer confirmed the flush");
}

fn reopen(dir: &Path) -> Arc<Store> {
    Store::open(dir).expect("reopening the store")
}

/// Events survive closing and reopening the store: a fresh ring attached to it lists the
/// same events, numbering continues after the last one, and endpoints keep apart.
#[test]
fn restart_keeps_events_and_numbering() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let e1 = attached(&store, "e1");
        let e2 = attached(&store, "e2");
        record(&e1, 3);
        e2.record(EventKind::Woke, "woke".into(), Detail::default());
        journal_flush(&store);
        // Dropping the rings drops the journal, whose writer holds the file: reopening
        // below works only if that writer really ended.
    }
    let store = reopen(dir.path());
    let e1 = attached(&store, "e1");
    let before = e1.list(0, usize::MAX);
    let seqs: Vec<u64> = before.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(before[2].message, "event 2");
    assert_eq!(before[2].kind, EventKind::ScaledUp);
    e1.record(EventKind::Created, "again".into(), Detail::default());
    let after = e1.list(3, 10);
    assert_eq!(after.len(), 1);
    assert_eq!(after[0].seq, 4);
    assert_eq!(after[0].kind, EventKind::Created);

    let e2 = attached(&store, "e2");
    let e2_events = e2.list(0, 10);
    assert_eq!(e2_events.len(), 1);
    assert_eq!(e2_events[0].kind, EventKind::Woke);
}

/// The table keeps only the newest CAPACITY events of an endpoint; a reattached ring holds
/// those and continues after the newest.
#[test]
fn retention_by_count() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let events = attached(&store, "e");
    record(&events, CAPACITY + 10);
    journal_flush(&store);
    let rows = stored(&store, "e");
    assert_eq!(rows.len(), CAPACITY);
    assert_eq!(rows[0].0, 11);
    assert_eq!(rows.last().unwrap().0, CAPACITY as u64 + 10);
    drop(events);

    let again = attached(&store, "e");
    let listed = again.list(0, usize::MAX);
    assert_eq!(listed.len(), CAPACITY);
    assert_eq!(listed[0].seq, 11);
    again.record(EventKind::Woke, "next".into(), Detail::default());
    assert_eq!(again.list(0, 1)[0].seq, CAPACITY as u64 + 11);
}

/// Events older than 30 days are neither loaded nor kept (attach trims even a quiet
/// endpoint), but numbering still continues after them.
#[test]
fn retention_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let now = unix_now();
    let old = now - MAX_AGE.as_secs() - 3600;
    {
        let tx = store.db().begin_write().unwrap();
        {
            let mut table = tx.open_table(EVENTS).unwrap();
            for (seq, at) in [(1, old), (2, old), (3, now), (9, old)] {
                let event = Event {
                    seq,
                    time: "2020-01-01T00:00:00.000Z".into(),
                    kind: EventKind::ReplicaReady,
                    message: format!("row {seq}"),
                    replica: Some(0),
                    reason: None,
                    workers: None,
                    replica_id: None,
                };
                let json = serde_json::to_string(&event).unwrap();
                table.insert(("e", seq), (at, json.as_str())).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let events = attached(&store, "e");
    // Seq 9 is the newest row but too old: it is not loaded, yet numbering follows it.
    let loaded: Vec<u64> = events.list(0, 10).iter().map(|e| e.seq).collect();
    assert_eq!(loaded, [3]);
    events.record(EventKind::Woke, "fresh".into(), Detail::default());
    let listed: Vec<u64> = events.list(0, 10).iter().map(|e| e.seq).collect();
    assert_eq!(listed, [3, 10]);
    journal_flush(&store);
    let seqs: Vec<u64> = stored(&store, "e").iter().map(|row| row.0).collect();
    assert_eq!(seqs, [3, 10]);
}

/// `record` never waits for the database: while another writer holds it, events queue and
/// are then committed together in at most two transactions.
#[test]
fn batches_while_the_database_is_busy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let events = attached(&store, "e");
    journal_flush(&store);
    let journal = Journal::of(&store);
    let before = journal.commits();

    let busy = store.db().begin_write().unwrap();
    record(&events, 200);
    drop(busy);
    journal_flush(&store);
    let commits = journal.commits() - before;
    assert!(
        (1..=2).contains(&commits),
        "{commits} commits for 200 events"
    );
    assert_eq!(stored(&store, "e").len(), 200);
}

/// `flush` returns only once what was recorded is committed: it waits while the writer is
/// held up, and the rows are readable as soon as it returns.
#[test]
fn flush_waits_for_the_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let events = attached(&store, "e");
    journal_flush(&store);

    let busy = store.db().begin_write().unwrap();
    record(&events, 5);
    let (done_tx, done) = mpsc::channel();
    let flusher = {
        let store = Arc::clone(&store);
        std::thread::spawn(move || done_tx.send(flush(&store)).unwrap())
    };
    assert!(
        done.recv_timeout(Duration::from_millis(200)).is_err(),
        "flush returned while the writer could not commit"
    );
    drop(busy);
    assert_eq!(done.recv_timeout(FLUSH_TIMEOUT), Ok(true));
    flusher.join().unwrap();
    assert_eq!(stored(&store, "e").len(), 5);
}

/// An endpoint removed and added back (a new ring for the same id) continues the numbering
/// of the old one, and the old ring, if still recording, no longer writes to the table.
#[test]
fn readded_endpoint_continues_and_old_ring_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let old = attached(&store, "e");
    record(&old, 2);
    // No flush: attach itself must see the two events still on their way.
    let new = attached(&store, "e");
    assert_eq!(new.list(0, 10).len(), 2);
    old.record(EventKind::ReplicaStopped, "late".into(), Detail::default());
    new.record(EventKind::Created, "back".into(), Detail::default());
    journal_flush(&store);
    assert_eq!(new.list(0, 10).last().unwrap().seq, 3);

    let reread = attached(&store, "e");
    let messages: Vec<String> = reread.list(0, 10).into_iter().map(|e| e.message).collect();
    assert_eq!(messages, ["event 0", "event 1", "back"]);
}

/// Events recorded before attach stay in the ring, renumbered after the stored ones, and
/// are persisted.
#[test]
fn events_before_attach_are_kept_and_renumbered() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let first = attached(&store, "e");
    record(&first, 2);
    journal_flush(&store);
    drop(first);

    let events = Events::new("e");
    events.record(EventKind::Created, "early".into(), Detail::default());
    events.attach(&store);
    let listed = events.list(0, 10);
    let seqs: Vec<u64> = listed.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(listed[2].message, "early");
    journal_flush(&store);
    assert_eq!(stored(&store, "e").len(), 3);
}

//! One dispatcher per async endpoint: claims queued jobs as the endpoint's workers have
//! room (`concurrency_per_worker` × ready workers), runs each as its own task, reports the
//! queue as scaling demand, and wakes the endpoint when jobs wait and no worker is ready.
//!
//! A job holds a worker slot only while it needs a worker; writing its result and finishing
//! it happen after the slot is free, bounded by [`WRITE_BACKLOG`] jobs.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};
use tokio::task::LocalSet;

use super::{Jobs, run};
use crate::endpoint::Endpoint;
use crate::queue::{JobQueue, now_ms};

/// How often a dispatcher looks at its queue when nothing told it to (jobs queued by
/// another replica, a worker becoming ready).
const POLL: Duration = Duration::from_millis(250);

/// How often an idle dispatcher claims anyway, to take back jobs another replica abandoned.
const RECLAIM_POLL: Duration = Duration::from_secs(2);

/// How often a dispatcher with no ready worker looks for jobs waiting past their TTL.
const EXPIRY_POLL: Duration = Duration::from_secs(1);

/// How often finished jobs past their TTL are forgotten.
const SWEEP: Duration = Duration::from_secs(60);

/// The jobs a dispatcher runs now, by id.
pub(super) type Running = Rc<RefCell<HashSet<String>>>;

/// Runs every dispatcher (and one sweeper per queue) on this thread until `stop`, then
/// gives running jobs up to `grace` to finish.
pub(super) fn run_all(
    endpoints: Vec<Arc<Endpoint>>,
    queues: Vec<Arc<dyn JobQueue>>,
    stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!(error = %err, "async dispatcher runtime failed to start");
            return;
        }
    };
    let local = LocalSet::new();
    for queue in queues {
        local.spawn_local(sweep(queue, stop.clone()));
    }
    let dispatchers: Vec<_> = endpoints
        .into_iter()
        .filter_map(|endpoint| {
            let jobs = Arc::clone(endpoint.jobs()?);
            Some(local.spawn_local(dispatch(endpoint, jobs, stop.clone(), grace)))
        })
        .collect();
    local.block_on(&runtime, async {
        for dispatcher in dispatchers {
            let _ = dispatcher.await;
        }
    });
}

/// Jobs past their worker (writing the result, finishing) a dispatcher lets pile up before
/// it stops claiming: the bound on memory while the object store is down.
const WRITE_BACKLOG: usize = 256;

/// One endpoint's dispatcher: what it runs and when it last did each chore.
struct Dispatcher {
    endpoint: Arc<Endpoint>,
    jobs: Arc<Jobs>,
    /// Every claimed job not finished yet (renewed with `touch`, awaited at shutdown).
    running: Running,
    /// Jobs holding a worker slot (`concurrency_per_worker` × ready workers).
    busy: Rc<Cell<usize>>,
    /// Told when a job frees its slot or ends.
    freed: Rc<Notify>,
    last_claim: Instant,
    last_touch: Instant,
    last_expiry: Instant,
}

/// A job's hold on a worker slot, released when its worker part is over (before the result
/// is written), so that slow result writes do not idle the workers.
pub(super) struct Slot {
    busy: Rc<Cell<usize>>,
    freed: Rc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.busy.set(self.busy.get().saturating_sub(1));
        self.freed.notify_one();
    }
}

async fn dispatch(
    endpoint: Arc<Endpoint>,
    jobs: Arc<Jobs>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    tracing::info!(endpoint = %endpoint.id(), "async dispatcher started");
    let long_ago = Instant::now() - RECLAIM_POLL.max(EXPIRY_POLL);
    let mut dispatcher = Dispatcher {
        endpoint,
        jobs,
        running: Rc::default(),
        busy: Rc::default(),
        freed: Rc::new(Notify::new()),
        last_claim: long_ago,
        last_touch: Instant::now(),
        last_expiry: long_ago,
    };
    while !*stop.borrow() {
        let (claimed_all, arrivals_matter) = dispatcher.turn().await;
        if !claimed_all {
            dispatcher.wait(&mut stop, arrivals_matter).await;
        }
    }
    let id = dispatcher.endpoint.id().to_string();
    drain(&id, &dispatcher.running, &dispatcher.freed, grace).await;
}

impl Dispatcher {
    /// Looks at the queue once: reports demand, claims what the workers have room for, or
    /// wakes the endpoint. Returns whether it claimed all it had room for (more may wait)
    /// and whether a new arrival would change what it does.
    async fn turn(&mut self) -> (bool, bool) {
        let id = self.endpoint.id();
        let depth = match self.jobs.queue.depth(id).await {
            Ok(depth) => depth,
            Err(err) => {
                tracing::warn!(endpoint = %id, error = %err, "async queue unreadable");
                return (false, true);
            }
        };
        let running = self.running.borrow().len();
        self.jobs.metrics.depth.set(depth as f64);
        self.endpoint.control.set_queued(depth, running as u64);

        let ready = self
            .endpoint
            .workers()
            .iter()
            .filter(|w| w.available())
            .count();
        let slots = self.jobs.settings.concurrency_per_worker as usize * ready;
        let room = slots
            .saturating_sub(self.busy.get())
            .min((slots + WRITE_BACKLOG).saturating_sub(running));
        let mut claimed_all = false;
        if room > 0 && (depth > 0 || self.last_claim.elapsed() >= RECLAIM_POLL) {
            self.last_claim = Instant::now();
            claimed_all = self.claim(room).await == room;
        } else if depth > 0 && ready == 0 {
            // A job at zero workers wakes the endpoint at once (DESIGN.md §4), and jobs
            // waiting past their TTL for a worker that never comes still get a result.
            self.endpoint.control.wake();
            if self.last_expiry.elapsed() >= EXPIRY_POLL {
                self.last_expiry = Instant::now();
                if oldest_expired(&self.jobs, id).await {
                    self.claim(1).await;
                }
            }
        }
        self.touch().await;
        // With jobs waiting and no room, another arrival changes nothing: the endpoint is
        // woken already, and a ready replica or a freed slot is what to wait for.
        (claimed_all, room > 0 || depth == 0)
    }

    /// Claims up to `room` jobs and starts each as its own task; returns how many.
    async fn claim(&self, room: usize) -> usize {
        let claimed = match self.jobs.queue.claim(self.endpoint.id(), room).await {
            Ok(claimed) => claimed,
            Err(err) => {
                tracing::warn!(endpoint = %self.endpoint.id(), error = %err, "could not claim jobs");
                return 0;
            }
        };
        let count = claimed.len();
        for job in claimed {
            let id = job.state.id.clone();
            self.running.borrow_mut().insert(id.clone());
            self.busy.set(self.busy.get() + 1);
            let slot = Slot {
                busy: Rc::clone(&self.busy),
                freed: Rc::clone(&self.freed),
            };
            let (endpoint, jobs) = (Arc::clone(&self.endpoint), Arc::clone(&self.jobs));
            let (running, freed) = (Rc::clone(&self.running), Rc::clone(&self.freed));
            tokio::task::spawn_local(async move {
                run::job(&endpoint, &jobs, job, slot).await;
                running.borrow_mut().remove(&id);
                freed.notify_one();
            });
        }
        count
    }

    /// Renews the claims of running jobs every third of `reclaim_after`, so that no other
    /// replica takes them back.
    async fn touch(&mut self) {
        let every = (self.jobs.settings.reclaim_after / 3).max(Duration::from_millis(100));
        if self.last_touch.elapsed() < every || self.running.borrow().is_empty() {
            return;
        }
        self.last_touch = Instant::now();
        let ids: Vec<String> = self.running.borrow().iter().cloned().collect();
        if let Err(err) = self.jobs.queue.touch(self.endpoint.id(), &ids).await {
            tracing::warn!(endpoint = %self.endpoint.id(), error = %err, "could not renew job claims");
        }
    }

    async fn wait(&self, stop: &mut watch::Receiver<bool>, arrivals: bool) {
        tokio::select! {
            () = self.jobs.arrived.notified(), if arrivals => {}
            () = self.freed.notified() => {}
            () = self.endpoint.control.replica_ready() => {}
            () = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => {}
        }
    }
}

async fn oldest_expired(jobs: &Jobs, endpoint: &str) -> bool {
    let ttl = jobs.settings.ttl.as_millis() as u64;
    matches!(
        jobs.queue.oldest_waiting(endpoint).await,
        Ok(Some(submitted)) if submitted + ttl <= now_ms()
    )
}

/// Lets running jobs finish for up to `grace`; those still running stay claimed in the
/// queue and run again after a restart (or on another replica).
async fn drain(endpoint: &str, running: &Running, finished: &Notify, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while !running.borrow().is_empty() {
        if tokio::time::timeout_at(deadline, finished.notified())
            .await
            .is_err()
        {
            tracing::warn!(
                endpoint,
                jobs = running.borrow().len(),
                "async jobs still running at shutdown; they run again on the next start"
            );
            return;
        }
    }
}

async fn sweep(queue: Arc<dyn JobQueue>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SWEEP) => {}
            _ = stop.changed() => return,
        }
        match queue.sweep().await {
            Ok(0) => {}
            Ok(gone) => tracing::debug!(gone, "finished async jobs past their TTL forgotten"),
            Err(err) => tracing::warn!(error = %err, "async queue sweep failed"),
        }
    }
}

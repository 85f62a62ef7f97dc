//! One dispatcher per async endpoint: claims queued jobs as the endpoint's workers have
//! room (`concurrency_per_worker` × ready workers), runs each as its own task, reports the
//! queue as scaling demand, and wakes the endpoint when jobs wait and no worker is ready.

use std::cell::RefCell;
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

async fn dispatch(
    endpoint: Arc<Endpoint>,
    jobs: Arc<Jobs>,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) {
    let id = endpoint.id().to_string();
    let per_worker = jobs.settings.concurrency_per_worker as usize;
    let running: Running = Rc::default();
    let finished = Rc::new(Notify::new());
    let touch_every = (jobs.settings.reclaim_after / 3).max(Duration::from_millis(100));
    let mut last_touch = Instant::now();
    let mut last_claim = Instant::now() - RECLAIM_POLL;
    let mut last_expiry = Instant::now() - EXPIRY_POLL;
    tracing::info!(endpoint = %id, "async dispatcher started");
    while !*stop.borrow() {
        let ready = endpoint.workers().iter().filter(|w| w.available()).count();
        let depth = match jobs.queue.depth(&id).await {
            Ok(depth) => depth,
            Err(err) => {
                tracing::warn!(endpoint = %id, error = %err, "async queue unreadable");
                wait(
                    &endpoint,
                    &jobs,
                    &finished,
                    &mut stop,
                    true,
                    Duration::from_secs(1),
                )
                .await;
                continue;
            }
        };
        let in_progress = running.borrow().len();
        jobs.metrics.depth.set(depth as f64);
        endpoint.control.set_queued(depth, in_progress as u64);

        let room = (per_worker * ready).saturating_sub(in_progress);
        let mut full = false;
        if room > 0 && (depth > 0 || last_claim.elapsed() >= RECLAIM_POLL) {
            last_claim = Instant::now();
            full = claim(&endpoint, &jobs, &running, &finished, room).await == room;
        } else if depth > 0 && ready == 0 {
            // A job at zero workers wakes the endpoint at once (DESIGN.md §4), and jobs
            // waiting past their TTL for a worker that never comes still get a result.
            endpoint.control.wake();
            if last_expiry.elapsed() >= EXPIRY_POLL {
                last_expiry = Instant::now();
                if oldest_expired(&jobs, &id).await {
                    claim(&endpoint, &jobs, &running, &finished, 1).await;
                }
            }
        }
        if last_touch.elapsed() >= touch_every && !running.borrow().is_empty() {
            last_touch = Instant::now();
            let ids: Vec<String> = running.borrow().iter().cloned().collect();
            if let Err(err) = jobs.queue.touch(&id, &ids).await {
                tracing::warn!(endpoint = %id, error = %err, "could not renew job claims");
            }
        }
        if !full {
            // With jobs waiting and no room, another arrival changes nothing: the endpoint is
            // woken already, and a ready replica or a finished job is what to wait for.
            let arrivals_matter = room > 0 || depth == 0;
            wait(
                &endpoint,
                &jobs,
                &finished,
                &mut stop,
                arrivals_matter,
                POLL,
            )
            .await;
        }
    }
    drain(&id, &running, &finished, grace).await;
}

/// Claims up to `room` jobs and starts them; returns how many were claimed.
async fn claim(
    endpoint: &Arc<Endpoint>,
    jobs: &Arc<Jobs>,
    running: &Running,
    finished: &Rc<Notify>,
    room: usize,
) -> usize {
    let claimed = match jobs.queue.claim(endpoint.id(), room).await {
        Ok(claimed) => claimed,
        Err(err) => {
            tracing::warn!(endpoint = %endpoint.id(), error = %err, "could not claim jobs");
            return 0;
        }
    };
    let count = claimed.len();
    for job in claimed {
        running.borrow_mut().insert(job.state.id.clone());
        let (endpoint, jobs) = (Arc::clone(endpoint), Arc::clone(jobs));
        let (running, finished) = (Rc::clone(running), Rc::clone(finished));
        tokio::task::spawn_local(async move {
            let id = job.state.id.clone();
            run::job(&endpoint, &jobs, job).await;
            running.borrow_mut().remove(&id);
            finished.notify_one();
        });
    }
    count
}

async fn oldest_expired(jobs: &Jobs, endpoint: &str) -> bool {
    let ttl = jobs.settings.ttl.as_millis() as u64;
    matches!(
        jobs.queue.oldest_waiting(endpoint).await,
        Ok(Some(submitted)) if submitted + ttl <= now_ms()
    )
}

async fn wait(
    endpoint: &Endpoint,
    jobs: &Jobs,
    finished: &Notify,
    stop: &mut watch::Receiver<bool>,
    arrivals: bool,
    most: Duration,
) {
    tokio::select! {
        () = jobs.arrived.notified(), if arrivals => {}
        () = finished.notified() => {}
        () = endpoint.control.replica_ready() => {}
        () = tokio::time::sleep(most) => {}
        _ = stop.changed() => {}
    }
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

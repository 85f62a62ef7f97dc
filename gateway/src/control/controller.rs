//! One controller task per endpoint: every tick (and at once on a wake or an operator's
//! order) it samples the endpoint's demand, asks the [`Policy`] for a worker count, and hands
//! the count to the endpoint's [`Actuator`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use scaler::{
    Actuator, CommandSpec, Decision, Direction, ExternalActuator, FixedActuator, Metric, Mode,
    Policy, ProcessActuator, ProcessSpec, ReplicaState, Sample,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;

use super::hooks::EndpointHooks;
use super::{Command, Detail, EventKind, Order, scrape};
use crate::cluster::{Cluster, Demand};
use crate::config::{self, WorkerKind};
use crate::endpoint::Endpoint;

/// How often the policy samples demand (DESIGN.md §1: tick ≤ 1 s).
const TICK: Duration = Duration::from_secs(1);
/// The longest a `scale_command` run may take.
const SCALE_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// How often a retired endpoint looks whether its last request finished.
const DRAIN_POLL: Duration = Duration::from_millis(50);

/// Starts the controller of one endpoint on the current (control) runtime. It ends when
/// `stop` turns true, or after a drain when its endpoint is retired, stopping the workers
/// first; `probers` ends the health probes of replicas it adds. In a `cluster` it decides
/// on the demand of every replica, and actuates only while this replica leads.
pub fn spawn(
    endpoint: &Arc<Endpoint>,
    grace: Duration,
    stop: &watch::Receiver<bool>,
    probers: &watch::Receiver<bool>,
    cluster: Option<Arc<Cluster>>,
) -> JoinHandle<()> {
    let actuator = actuator(endpoint, grace, probers);
    if endpoint
        .control
        .actuator
        .set(Arc::clone(&actuator))
        .is_err()
    {
        tracing::warn!(endpoint = endpoint.id(), "controller started twice");
    }
    let driver = Driver { actuator, cluster };
    tokio::spawn(run(Arc::clone(endpoint), driver, grace, stop.clone()))
}

/// What carries a decision out: the actuator, and the cluster that says whether this
/// replica may use it.
struct Driver {
    actuator: Arc<dyn Actuator>,
    cluster: Option<Arc<Cluster>>,
}

impl Driver {
    /// Hands `desired` to the actuator when this replica actuates. A follower runs no
    /// process workers of its own (it routes to the leader's), and leaves other workers to
    /// the leader.
    fn set_desired(&self, endpoint: &Endpoint, desired: u32) {
        match &self.cluster {
            Some(_) if !self.actuates() => {
                if matches!(endpoint.config.workers.kind, WorkerKind::Process { .. }) {
                    self.actuator.set_desired(0);
                }
            }
            _ => self.actuator.set_desired(desired),
        }
    }

    /// Whether this replica's decisions are carried out (always, outside a cluster).
    fn actuates(&self) -> bool {
        self.cluster.as_ref().is_none_or(|cluster| cluster.leads())
    }

    /// A request found no ready worker: on a follower, the leader hears of it at once.
    fn woke(&self, endpoint: &Endpoint) {
        if let Some(cluster) = &self.cluster {
            cluster.wake(endpoint.id());
        }
    }
}

fn actuator(
    endpoint: &Arc<Endpoint>,
    grace: Duration,
    probers: &watch::Receiver<bool>,
) -> Arc<dyn Actuator> {
    let config = &endpoint.config;
    match &config.workers.kind {
        WorkerKind::Static { .. } => Arc::new(FixedActuator::new(
            endpoint
                .workers()
                .iter()
                .map(|w| w.authority().to_string())
                .collect(),
        )),
        WorkerKind::Process { command, env } => {
            let spec = ProcessSpec::new(
                config.id.clone(),
                command.clone(),
                env.clone(),
                config.workers.health_path.clone(),
                config.workers.startup_timeout,
                grace,
            );
            let hooks = EndpointHooks::new(endpoint, probers.clone());
            ProcessActuator::start(spec, Arc::new(hooks))
        }
        WorkerKind::Kubernetes(settings) => crate::kubernetes::actuator(&config.id, settings),
        WorkerKind::Command {
            scale_command, env, ..
        } => ExternalActuator::command(CommandSpec {
            endpoint: config.id.clone(),
            command: scale_command.clone(),
            env: env.clone(),
            timeout: SCALE_COMMAND_TIMEOUT,
        }),
    }
}

async fn run(
    endpoint: Arc<Endpoint>,
    driver: Driver,
    grace: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let actuator = &*driver.actuator;
    let control = &endpoint.control;
    let Some(mut inbox) = super::lock(&control.inbox).take() else {
        return;
    };
    let epoch = Instant::now();
    let now = || epoch.elapsed();
    let mut policy = Policy::new(control.settings().as_ref().clone(), now());
    control.events.record(
        EventKind::Created,
        format!(
            "endpoint created: {} workers, {} to {}",
            worker_kind(&endpoint.config),
            policy.settings().min_workers,
            policy.settings().max_workers
        ),
        Detail {
            workers: Some(policy.desired()),
            ..Detail::default()
        },
    );
    let first = policy.decide_now(now());
    act(&endpoint, &driver, &policy, &first, None);

    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut retired = control.retired.subscribe();
    loop {
        tokio::select! {
            () = stopped(&mut stop) => break,
            () = stopped(&mut retired) => {
                drain(&endpoint, grace, &mut stop).await;
                for worker in endpoint.workers().iter() {
                    // Ends its health probe.
                    worker.retire();
                }
                break;
            }
            _ = control.wake.notified() => {
                driver.woke(&endpoint);
                let decision = policy.wake(now());
                act(&endpoint, &driver, &policy, &decision, None);
            }
            Some(command) = inbox.recv() => {
                let Command { order, reply } = command;
                let decision = obey(&mut policy, now(), order, &control.settings());
                act(&endpoint, &driver, &policy, &decision, Some(order));
                let _ = reply.send(control.status());
            }
            _ = ticks.tick() => {
                let metric = policy.settings().metric.clone();
                let sample = sample(&endpoint, actuator, driver.cluster.as_deref(), metric).await;
                let decision = policy.tick(now(), sample);
                act(&endpoint, &driver, &policy, &decision, None);
            }
        }
    }
    actuator.shutdown().await;
}

/// Waits until the requests in flight on a retired endpoint (and those held for it) are
/// done, for at most `grace`, or until the daemon stops.
async fn drain(endpoint: &Endpoint, grace: Duration, stop: &mut watch::Receiver<bool>) {
    let deadline = tokio::time::Instant::now() + grace;
    let idle = || endpoint.inflight() == 0 && endpoint.control.admission.pending() == 0;
    while !idle() && tokio::time::Instant::now() < deadline {
        tokio::select! {
            () = stopped(stop) => return,
            () = tokio::time::sleep(DRAIN_POLL) => {}
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The borrow `wait_for` returns must not live across the select's other arms.
    let _ = stop.wait_for(|stopped| *stopped).await.map(|_| ());
}

fn obey(
    policy: &mut Policy,
    now: Duration,
    order: Order,
    control_settings: &scaler::ScalingSettings,
) -> Decision {
    match order {
        Order::Scale(n) => policy.pin(now, n),
        Order::Autoscale => policy.unpin(now),
        Order::Stop => policy.stop(now),
        Order::Start => policy.start(now),
        Order::Reconfigure => policy.set_settings(now, control_settings.clone()),
    }
}

/// Demand and workers now; in a cluster, the demand of every replica.
async fn sample(
    endpoint: &Endpoint,
    actuator: &dyn Actuator,
    cluster: Option<&Cluster>,
    metric: Metric,
) -> Sample {
    let control = &endpoint.control;
    // Held requests and waiting async jobs are demand too: they wait for workers that do
    // not exist yet (running jobs are in flight already).
    let local = Demand {
        inflight: endpoint.inflight(),
        pending: u64::from(control.admission.pending()) + control.waiting(),
        arrivals: control.take_arrivals(),
    };
    let demand = match cluster {
        Some(cluster) => local + cluster.report(endpoint.id(), local),
        None => local,
    };
    let workers = endpoint.workers();
    let ready = workers.iter().filter(|w| w.available()).count();
    let starting = actuator
        .replicas()
        .iter()
        .filter(|r| r.state == ReplicaState::Starting)
        .count();
    drop(workers);
    let custom = match &metric {
        Metric::Custom(name) => scrape::custom_metric(endpoint, name).await,
        _ => None,
    };
    Sample {
        in_flight: u32::try_from(demand.inflight + demand.pending).unwrap_or(u32::MAX),
        arrivals: demand.arrivals,
        custom,
        queue_depth: control.queued(),
        ready: u32::try_from(ready).unwrap_or(u32::MAX),
        starting: u32::try_from(starting).unwrap_or(u32::MAX),
    }
}

/// Publishes a decision: status, metrics, events, and the count to the actuator.
fn act(
    endpoint: &Endpoint,
    driver: &Driver,
    policy: &Policy,
    decision: &Decision,
    order: Option<Order>,
) {
    let control = &endpoint.control;
    let mode = policy.mode();
    let before = control.status();
    control.set_status(decision, mode);
    control.set_stopped(mode == Mode::Stopped);
    endpoint.metrics.desired_workers(decision.desired);
    if let Some(order) = order {
        let event = match order {
            Order::Scale(n) => Some((EventKind::Pinned, format!("pinned to {n} workers"))),
            Order::Autoscale => Some((EventKind::Autoscaled, "autoscaling resumed".into())),
            Order::Stop => Some((EventKind::Stopped, "stopped: traffic refused".into())),
            Order::Start => Some((EventKind::Started, "started".into())),
            // Recorded, with what changed, by whoever changed the settings.
            Order::Reconfigure => None,
        };
        if let Some((kind, message)) = event
            && (before.mode != mode || matches!(order, Order::Scale(_)))
        {
            control.events.record(kind, message, Detail::default());
        }
    }
    // A follower decides too (to take over at once), but the scaling is the leader's: its
    // decisions are not events here.
    let direction = decision.direction().filter(|_| driver.actuates());
    if let Some(direction) = direction {
        if decision.previous == 0 && direction == Direction::Up {
            control.mark_woken();
            control.events.record(
                EventKind::Woke,
                format!("woke from zero: {}", decision.reason),
                Detail {
                    reason: Some(decision.reason.to_string()),
                    ..Detail::default()
                },
            );
        }
        endpoint.metrics.scale_event(direction);
        let kind = match direction {
            Direction::Up => EventKind::ScaledUp,
            Direction::Down => EventKind::ScaledDown,
        };
        control.events.record(
            kind,
            decision.to_string(),
            Detail {
                reason: Some(decision.reason.to_string()),
                workers: Some(decision.desired),
                ..Detail::default()
            },
        );
    }
    driver.set_desired(endpoint, decision.desired);
}

fn worker_kind(config: &config::Endpoint) -> &'static str {
    match config.workers.kind {
        WorkerKind::Static { .. } => "static",
        WorkerKind::Process { .. } => "process",
        WorkerKind::Command { .. } => "command",
        WorkerKind::Kubernetes(_) => "kubernetes",
    }
}

//! Replica events from the actuator, applied to the endpoint: a ready replica joins the
//! worker set (and held requests are released at once), a draining one stops taking
//! requests, a stopped or crashed one leaves.

use std::sync::{Arc, Weak};

use http::uri::Authority;
use scaler::{Hooks, ReplicaEvent};
use tokio::runtime::Handle;
use tokio::sync::watch;

use super::{Detail, EventKind};
use crate::endpoint::{Endpoint, next_worker_id};
use crate::health;
use crate::worker::Worker;

/// The gateway side of an endpoint's actuator.
#[derive(Debug)]
pub struct EndpointHooks {
    // Weak: the endpoint owns the actuator, which owns these hooks.
    endpoint: Weak<Endpoint>,
    /// Ends the health probes of replicas added here.
    probers: watch::Receiver<bool>,
    /// The control runtime, where probes run whatever thread reports the event.
    runtime: Handle,
}

impl EndpointHooks {
    /// Hooks for `endpoint`; must be created on the control runtime.
    pub fn new(endpoint: &Arc<Endpoint>, probers: watch::Receiver<bool>) -> EndpointHooks {
        EndpointHooks {
            endpoint: Arc::downgrade(endpoint),
            probers,
            runtime: Handle::current(),
        }
    }

    fn ready(&self, endpoint: &Endpoint, replica: u32, address: &str) {
        let authority = match address.parse::<Authority>() {
            Ok(authority) => authority,
            Err(err) => {
                tracing::error!(endpoint = endpoint.id(), replica, address, error = %err, "replica address is not host:port");
                return;
            }
        };
        // A restarted replica may still be listed from its previous run.
        endpoint.remove_replica(replica);
        let worker = Arc::new(Worker::replica(next_worker_id(), authority, Some(replica)));
        endpoint.add_worker(Arc::clone(&worker));
        let _guard = self.runtime.enter();
        health::spawn_prober(&endpoint.config, &worker, &self.probers);
        if let Some(waited) = endpoint.control.woken_for() {
            endpoint.metrics.cold_start(waited.as_secs_f64());
        }
        // Last: held requests and the async dispatcher must find the worker when they wake.
        endpoint.control.worker_added();
    }
}

impl Hooks for EndpointHooks {
    fn on_event(&self, event: ReplicaEvent) {
        let Some(endpoint) = self.endpoint.upgrade() else {
            return;
        };
        let replica = Some(event.replica());
        let (kind, message) = match &event {
            ReplicaEvent::Starting {
                replica,
                address,
                pid,
            } => (
                EventKind::ReplicaStarting,
                match pid {
                    Some(pid) => format!("replica {replica} starting on {address} (pid {pid})"),
                    None => format!("replica {replica} starting on {address}"),
                },
            ),
            ReplicaEvent::Ready {
                replica,
                address,
                startup,
            } => {
                self.ready(&endpoint, *replica, address);
                (
                    EventKind::ReplicaReady,
                    format!(
                        "replica {replica} ready on {address} after {:.2} s",
                        startup.as_secs_f64()
                    ),
                )
            }
            ReplicaEvent::Draining { replica } => {
                if let Some(worker) = endpoint.replica_worker(*replica) {
                    worker.drain();
                }
                (
                    EventKind::ReplicaDraining,
                    format!("replica {replica} draining"),
                )
            }
            ReplicaEvent::Replaced { replica, by } => (
                EventKind::ReplicaRestarted,
                format!("replica {replica} replaced by replica {by}, which is ready"),
            ),
            ReplicaEvent::Stopped { replica } => {
                endpoint.remove_replica(*replica);
                (
                    EventKind::ReplicaStopped,
                    format!("replica {replica} stopped"),
                )
            }
            ReplicaEvent::Crashed {
                replica,
                reason,
                restart_in,
            } => {
                endpoint.remove_replica(*replica);
                (
                    EventKind::ReplicaCrashed,
                    format!(
                        "replica {replica} crashed ({reason}); restarting in {:.1} s",
                        restart_in.as_secs_f64()
                    ),
                )
            }
        };
        endpoint.control.events.record(
            kind,
            message,
            Detail {
                replica,
                ..Detail::default()
            },
        );
    }

    fn inflight(&self, replica: u32) -> u64 {
        self.endpoint
            .upgrade()
            .and_then(|endpoint| endpoint.replica_worker(replica))
            .map_or(0, |worker| worker.inflight())
    }
}

//! The actuator of `kind = "static"`: workers run elsewhere, at fixed addresses.
//!
//! Nothing is started or stopped. The controller still runs the policy and shows its
//! decisions (so an operator sees what autoscaling *would* do), but the count stays the
//! length of the list: [`Actuator::scales`] is `false`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::SystemTime;

use crate::actuator::{Actuator, Replica, ReplicaState};

/// Fixed workers, reported as ready replicas `0..n` in the order given.
#[derive(Debug)]
pub struct FixedActuator {
    replicas: Vec<Replica>,
    desired: AtomicU32,
}

impl FixedActuator {
    /// Workers at `addresses` (`host:port` each), all counted ready from now.
    pub fn new(addresses: Vec<String>) -> FixedActuator {
        let now = SystemTime::now();
        let replicas: Vec<Replica> = (0u32..)
            .zip(addresses)
            .map(|(id, address)| Replica {
                id,
                address: Some(address),
                state: ReplicaState::Ready,
                pid: None,
                started_at: now,
                ready_at: Some(now),
                restarts: 0,
            })
            .collect();
        let count = u32::try_from(replicas.len()).unwrap_or(u32::MAX);
        FixedActuator {
            replicas,
            desired: AtomicU32::new(count),
        }
    }

    /// The count last asked for through [`Actuator::set_desired`] (the number of workers
    /// until then); recorded, never acted on.
    pub fn desired(&self) -> u32 {
        self.desired.load(Ordering::Relaxed)
    }
}

impl Actuator for FixedActuator {
    fn set_desired(&self, replicas: u32) {
        self.desired.store(replicas, Ordering::Relaxed);
    }

    fn replicas(&self) -> Vec<Replica> {
        self.replicas.clone()
    }

    fn scales(&self) -> bool {
        false
    }

    fn shutdown(&self) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        // The workers are not ours to stop.
        Box::pin(std::future::ready(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Addresses become ready replicas 0..n; set_desired is recorded, not acted on.
    #[test]
    fn fixed_replicas_never_change() {
        let fixed = FixedActuator::new(vec!["10.0.0.5:8000".into(), "10.0.0.6:8000".into()]);
        assert!(!fixed.scales());
        assert_eq!(fixed.desired(), 2);
        fixed.set_desired(5);
        assert_eq!(fixed.desired(), 5);
        let replicas = fixed.replicas();
        assert_eq!(replicas.len(), 2);
        assert_eq!(replicas[1].id, 1);
        assert_eq!(replicas[1].address.as_deref(), Some("10.0.0.6:8000"));
        assert!(
            replicas
                .iter()
                .all(|r| r.state == ReplicaState::Ready && r.pid.is_none())
        );
    }

    /// shutdown resolves at once.
    #[tokio::test]
    async fn shutdown_is_immediate() {
        let fixed = FixedActuator::new(vec!["127.0.0.1:1".into()]);
        fixed.shutdown().await;
        assert_eq!(fixed.replicas().len(), 1);
    }
}

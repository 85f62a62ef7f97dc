//! Requests held while an endpoint has no ready worker: a bounded count and a FIFO of
//! waiters, released in arrival order the moment a worker becomes ready.
//!
//! Only requests that find no ready worker come here, so a mutex is fine: the hot path
//! never touches it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::oneshot;

/// One endpoint's held requests.
#[derive(Debug, Default)]
pub struct Admission {
    pending: AtomicU32,
    waiters: Mutex<VecDeque<oneshot::Sender<()>>>,
}

impl Admission {
    /// Counts one more held request unless `max` are already held.
    pub fn enter(&self, max: u32) -> Option<PendingGuard<'_>> {
        self.pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| PendingGuard { admission: self })
    }

    /// Requests held now.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Acquire)
    }

    /// A signal for the next [`Admission::release`]. Register before checking for a ready
    /// worker, so a release between the check and the wait is not missed.
    pub fn waiter(&self) -> oneshot::Receiver<()> {
        let (tx, rx) = oneshot::channel();
        let mut waiters = self.lock();
        // Waiters whose client left are dropped here, so the queue stays bounded by the
        // requests actually held.
        waiters.retain(|w| !w.is_closed());
        waiters.push_back(tx);
        rx
    }

    /// Wakes every waiter, oldest first: a worker became ready, or the endpoint stopped.
    pub fn release(&self) {
        let waiters = std::mem::take(&mut *self.lock());
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<oneshot::Sender<()>>> {
        // A panic while holding the lock leaves a plain queue, still usable.
        self.waiters
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// One held request; dropping it (released, timed out, client gone) uncounts it.
#[derive(Debug)]
pub struct PendingGuard<'a> {
    admission: &'a Admission,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.admission.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count is bounded and released by the guards.
    #[test]
    fn bounded_count() {
        let a = Admission::default();
        let one = a.enter(2).unwrap();
        let two = a.enter(2).unwrap();
        assert!(a.enter(2).is_none());
        assert_eq!(a.pending(), 2);
        drop(one);
        assert_eq!(a.pending(), 1);
        assert!(a.enter(2).is_some());
        drop(two);
    }

    /// Release wakes every waiter; dropped waiters are pruned.
    #[tokio::test]
    async fn release_wakes_in_order() {
        let a = Admission::default();
        let first = a.waiter();
        let gone = a.waiter();
        drop(gone);
        let second = a.waiter();
        assert_eq!(a.lock().len(), 2);
        a.release();
        assert!(first.await.is_ok());
        assert!(second.await.is_ok());
        assert!(a.lock().is_empty());
    }
}

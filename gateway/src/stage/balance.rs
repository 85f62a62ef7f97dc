//! Balance: which worker serves a request. `least_inflight` is the power of two random
//! choices on in-flight counts (Mitzenmacher): near-optimal spread with two atomic loads
//! and no shared state; `round_robin` walks the workers in turn.

use std::cell::Cell;
use std::sync::Arc;

use crate::config::BalanceStrategy;
use crate::endpoint::Endpoint;
use crate::error::ProxyError;
use crate::worker::{Worker, WorkerId};

/// Picks an available worker, preferring any other than `exclude` (the one a retry moves
/// away from) and falling back to it when it is the only one left.
pub fn pick(endpoint: &Endpoint, exclude: Option<WorkerId>) -> Result<Arc<Worker>, ProxyError> {
    let chosen = match exclude {
        Some(id) => choose(endpoint, |w| w.available() && w.id() != id)
            .or_else(|| choose(endpoint, Worker::available)),
        None => choose(endpoint, Worker::available),
    };
    chosen.ok_or_else(|| ProxyError::NoHealthyWorker {
        endpoint: endpoint.id().to_string(),
    })
}

fn choose(endpoint: &Endpoint, usable: impl Fn(&Worker) -> bool) -> Option<Arc<Worker>> {
    let workers = endpoint.workers();
    let chosen = match endpoint.config.balance.strategy {
        BalanceStrategy::LeastInflight => least_inflight(&workers, usable),
        BalanceStrategy::RoundRobin => {
            let start = endpoint.next_cursor();
            (0..workers.len())
                .map(|i| &workers[(start + i) % workers.len()])
                .find(|w| usable(w))
        }
    };
    chosen.cloned()
}

fn least_inflight(
    workers: &[Arc<Worker>],
    usable: impl Fn(&Worker) -> bool,
) -> Option<&Arc<Worker>> {
    let n = workers.len();
    if n >= 2 {
        let a = random_below(n);
        let b = (a + 1 + random_below(n - 1)) % n;
        let (wa, wb) = (&workers[a], &workers[b]);
        match (usable(wa), usable(wb)) {
            (true, true) => {
                return Some(if wb.inflight() < wa.inflight() {
                    wb
                } else {
                    wa
                });
            }
            (true, false) => return Some(wa),
            (false, true) => return Some(wb),
            (false, false) => {}
        }
    }
    // Few usable workers left: the least loaded of them.
    workers
        .iter()
        .filter(|w| usable(w))
        .min_by_key(|w| w.inflight())
}

/// A fast per-thread xorshift generator; balancing needs spread, not secrecy.
fn random_below(n: usize) -> usize {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    STATE.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        (x % n as u64) as usize
    })
}

fn seed() -> u64 {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let local = 0u8;
    // Address of a stack variable: differs per thread.
    (time ^ (&local as *const u8 as u64).rotate_left(32)) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workers(n: u64) -> Vec<Arc<Worker>> {
        (0..n)
            .map(|i| {
                Arc::new(Worker::new(
                    WorkerId(i),
                    format!("127.0.0.1:{}", 1000 + i).parse().unwrap(),
                ))
            })
            .collect()
    }

    /// Two choices always prefer the less loaded worker when both are sampled.
    #[test]
    fn prefers_the_less_loaded() {
        let ws = workers(2);
        let _busy: Vec<_> = (0..5).map(|_| ws[0].guard()).collect();
        for _ in 0..100 {
            let w = least_inflight(&ws, |w| w.available()).unwrap();
            assert_eq!(w.id(), WorkerId(1));
        }
    }

    /// Unavailable and excluded workers are never picked; none usable → none.
    #[test]
    fn skips_unusable() {
        let ws = workers(3);
        ws[0].set_probed_up(false);
        for _ in 0..100 {
            let w = least_inflight(&ws, |w| w.available() && w.id() != WorkerId(2)).unwrap();
            assert_eq!(w.id(), WorkerId(1));
        }
        assert!(least_inflight(&ws, |_| false).is_none());
    }

    /// The generator spreads over its range.
    #[test]
    fn random_spreads() {
        let mut seen = [0u32; 4];
        for _ in 0..4000 {
            seen[random_below(4)] += 1;
        }
        assert!(seen.iter().all(|&c| c > 700), "{seen:?}");
    }
}

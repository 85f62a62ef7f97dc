//! The last minute: twelve slots of five seconds, each with its counts and a latency
//! histogram. A slot is reused (cleared) when its five seconds come round again, so
//! recording never allocates and reading sums the slots still inside the minute.

use super::histogram::Histogram;

/// Seconds per slot.
pub const SLOT_SECONDS: u64 = 5;
/// Slots in the window (one minute).
pub const SLOTS: usize = 12;
const SLOT_MS: u64 = SLOT_SECONDS * 1000;

/// One five-second slot.
#[derive(Debug, Clone, Default)]
struct Slot {
    /// `unix ms / 5000` of the five seconds it counts.
    epoch: u64,
    requests: u64,
    client_errors: u64,
    server_errors: u64,
    latency: Histogram,
}

/// The rolling minute of one shard.
#[derive(Debug, Clone, Default)]
pub struct Window {
    slots: [Slot; SLOTS],
}

/// Sums over the window's slots (of one or more shards).
#[derive(Debug, Clone, Default)]
pub struct MinuteSum {
    /// Requests finished.
    pub requests: u64,
    /// 4xx answers.
    pub client_errors: u64,
    /// 5xx answers.
    pub server_errors: u64,
    /// Their durations.
    pub latency: Histogram,
}

impl Window {
    /// Counts a request that finished at `now_ms` (unix milliseconds).
    #[inline]
    pub fn record(&mut self, now_ms: u64, status: u16, micros: u64) {
        let epoch = now_ms / SLOT_MS;
        let slot = &mut self.slots[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            if slot.epoch > epoch {
                // The clock stepped back by over a minute: the sample is outside the window.
                return;
            }
            slot.epoch = epoch;
            slot.requests = 0;
            slot.client_errors = 0;
            slot.server_errors = 0;
            slot.latency.clear();
        }
        slot.requests += 1;
        match status {
            400..=499 => slot.client_errors += 1,
            500..=599 => slot.server_errors += 1,
            _ => {}
        }
        slot.latency.record(micros);
    }

    /// Adds the slots inside the minute ending at `now_ms` to `sum`.
    pub fn add_to(&self, now_ms: u64, sum: &mut MinuteSum) {
        let now = now_ms / SLOT_MS;
        for slot in &self.slots {
            if slot.epoch <= now && slot.epoch + (SLOTS as u64) > now {
                sum.requests += slot.requests;
                sum.client_errors += slot.client_errors;
                sum.server_errors += slot.server_errors;
                sum.latency.merge(&slot.latency);
            }
        }
    }
}

/// The seconds the window covers at `now_ms`: eleven whole slots and the current one so
/// far (between 55 and 60).
pub fn covered_seconds(now_ms: u64) -> f64 {
    let first = (now_ms / SLOT_MS).saturating_sub(SLOTS as u64 - 1) * SLOT_MS;
    (now_ms - first) as f64 / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(window: &Window, now_ms: u64) -> MinuteSum {
        let mut sum = MinuteSum::default();
        window.add_to(now_ms, &mut sum);
        sum
    }

    /// Requests stay in the window for a minute (to slot precision), then leave it; a
    /// slot reused for a later five seconds starts from zero.
    #[test]
    fn slots_rotate_out_after_a_minute() {
        let mut w = Window::default();
        let t0 = 1_800_000_000_000; // a multiple of 5 s
        w.record(t0, 200, 1_000);
        w.record(t0 + 1_000, 503, 2_000);
        w.record(t0 + 4_999, 404, 3_000);
        let s = sum(&w, t0 + 4_999);
        assert_eq!((s.requests, s.server_errors, s.client_errors), (3, 1, 1));
        // 59.999 s later the slot is still the oldest one of the window.
        assert_eq!(sum(&w, t0 + 59_999).requests, 3);
        // From the 61st second its slot has left the window.
        assert_eq!(sum(&w, t0 + 60_000).requests, 0);
        // The same slot index, a minute later, starts afresh.
        w.record(t0 + 60_000, 200, 5_000);
        let s = sum(&w, t0 + 60_000);
        assert_eq!((s.requests, s.server_errors, s.client_errors), (1, 0, 0));
        assert!(s.latency.percentile_ms(0.5).unwrap() > 4.0);
        // A sample from before the slot's current five seconds is not counted.
        w.record(t0 + 1, 500, 1);
        assert_eq!(sum(&w, t0 + 60_000).server_errors, 0);
    }

    /// Spread over several slots, every request of the last minute is counted.
    #[test]
    fn sums_every_slot_of_the_minute() {
        let mut w = Window::default();
        let t0 = 1_800_000_000_000;
        for i in 0..60 {
            w.record(t0 + i * 1_000, if i % 10 == 0 { 500 } else { 200 }, 1_000);
        }
        let s = sum(&w, t0 + 59_500);
        assert_eq!(s.requests, 60);
        assert_eq!(s.server_errors, 6);
        assert_eq!(covered_seconds(t0 + 59_500), 59.5);
        assert_eq!(covered_seconds(t0 + 55_000), 55.0);
    }
}

//! Per-tick values over a sliding span of virtual time: time-weighted averages and maxima.

use std::collections::VecDeque;
use std::time::Duration;

/// Values that each cover a span of time `(start, end]`, oldest first.
#[derive(Debug, Clone, Default)]
pub(crate) struct Window {
    entries: VecDeque<Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    start: Duration,
    end: Duration,
    value: f64,
}

impl Window {
    /// Records `value` as holding over `(start, end]`; `end` must not go backwards.
    pub(crate) fn push(&mut self, start: Duration, end: Duration, value: f64) {
        self.entries.push_back(Entry { start, end, value });
    }

    /// Drops the entries that ended at or before `cutoff`.
    pub(crate) fn forget_until(&mut self, cutoff: Duration) {
        while self.entries.front().is_some_and(|e| e.end <= cutoff) {
            self.entries.pop_front();
        }
    }

    /// Drops every entry.
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// The time-weighted average over `(now - span, now]`, or `None` when no entry covers any
    /// of it. Only covered time counts: a policy created 5 s ago averages over those 5 s,
    /// because time without a sample is not time without load.
    pub(crate) fn average(&self, now: Duration, span: Duration) -> Option<f64> {
        let from = now.saturating_sub(span);
        let (mut sum, mut weight) = (0.0, 0.0);
        for e in &self.entries {
            let (lo, hi) = (e.start.max(from), e.end.min(now));
            if hi > lo {
                let w = (hi - lo).as_secs_f64();
                sum += e.value * w;
                weight += w;
            }
        }
        (weight > 0.0).then(|| sum / weight)
    }

    /// The largest value among the entries that end within `(now - span, now]`.
    pub(crate) fn max(&self, now: Duration, span: Duration) -> Option<f64> {
        let from = now.saturating_sub(span);
        self.entries
            .iter()
            .filter(|e| e.end > from && e.end <= now)
            .map(|e| e.value)
            .reduce(f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The average weighs each value by the time it covers and clips entries at the span's edge.
    #[test]
    fn average_is_time_weighted_and_clipped() {
        let mut w = Window::default();
        w.push(secs(0), secs(1), 10.0);
        w.push(secs(1), secs(4), 2.0);
        assert_eq!(w.average(secs(4), secs(60)), Some(4.0));
        // (2, 4]: only two seconds of the second entry.
        assert_eq!(w.average(secs(4), secs(2)), Some(2.0));
        // (0.5, 4]: half of the first entry.
        assert_eq!(
            w.average(secs(4), Duration::from_millis(3500)),
            Some(11.0 / 3.5)
        );
        assert_eq!(w.average(secs(10), secs(5)), None);
        assert_eq!(Window::default().average(secs(4), secs(60)), None);
    }

    /// Forgotten and out-of-span entries no longer count for the maximum.
    #[test]
    fn max_and_forget_follow_the_span() {
        let mut w = Window::default();
        for (t, v) in [(1, 4.0), (2, 3.0), (3, 1.0)] {
            w.push(secs(t), secs(t), v);
        }
        assert_eq!(w.max(secs(3), secs(3)), Some(4.0));
        assert_eq!(w.max(secs(3), secs(2)), Some(3.0));
        w.forget_until(secs(2));
        assert_eq!(w.max(secs(3), secs(60)), Some(1.0));
        w.clear();
        assert_eq!(w.max(secs(3), secs(60)), None);
    }
}

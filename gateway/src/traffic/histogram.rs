//! Fixed log-linear latency histograms: four buckets per power of two of microseconds, so
//! recording is a few integer instructions and merging is an element-wise sum.
//!
//! Bucket `i < 4` holds exactly `i` µs; above that, bucket `4·(k−1) + s` (`k` ≥ 2 the
//! octave, `s` in 0..4) holds `[(4+s)·2^(k−2), (5+s)·2^(k−2))` µs. A bucket is at most a
//! quarter as wide as its lower bound, and a percentile is reported as its bucket's
//! midpoint, so it is within 12.5 % of the true value. Durations of 2^32 µs (71 minutes)
//! and more fall into the last bucket.

/// Number of buckets: 4 exact ones and 30 octaves of 4.
pub const BUCKETS: usize = 124;

/// Largest duration with a bucket of its own, in microseconds.
const MAX_MICROS: u64 = (1 << 32) - 1;

/// Counts of durations per bucket. Counts saturate at `u32::MAX` (over four billion
/// requests in one bucket of one hour).
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: [u32; BUCKETS],
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram::new()
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.sparse()).finish()
    }
}

impl Histogram {
    /// An empty histogram.
    pub const fn new() -> Histogram {
        Histogram {
            counts: [0; BUCKETS],
        }
    }

    /// Counts one duration of `micros` microseconds.
    #[inline]
    pub fn record(&mut self, micros: u64) {
        let slot = &mut self.counts[index(micros)];
        *slot = slot.saturating_add(1);
    }

    /// Adds every count of `other`.
    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine = mine.saturating_add(*theirs);
        }
    }

    /// Empties the histogram.
    pub fn clear(&mut self) {
        self.counts = [0; BUCKETS];
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(|&c| c == 0)
    }

    /// The non-empty buckets as `(index, count)`, for storage.
    pub fn sparse(&self) -> Vec<(u16, u32)> {
        self.counts
            .iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(i, c)| (i as u16, *c))
            .collect()
    }

    /// Adds the stored `(index, count)` pairs; pairs with an index out of range are
    /// ignored.
    pub fn add_sparse(&mut self, pairs: &[(u16, u32)]) {
        for &(i, count) in pairs {
            if let Some(slot) = self.counts.get_mut(usize::from(i)) {
                *slot = slot.saturating_add(count);
            }
        }
    }

    /// The `q` quantile (0 < q ≤ 1) in milliseconds, `None` when empty.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        percentile_ms(self.counts.iter().map(|&c| u64::from(c)), q)
    }
}

/// A histogram with 64-bit counts, for sums over many hours.
#[derive(Clone)]
pub struct WideHistogram {
    counts: [u64; BUCKETS],
}

impl Default for WideHistogram {
    fn default() -> WideHistogram {
        WideHistogram {
            counts: [0; BUCKETS],
        }
    }
}

impl std::fmt::Debug for WideHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WideHistogram").finish_non_exhaustive()
    }
}

impl WideHistogram {
    /// Adds every count of `other`.
    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(other.counts.iter()) {
            *mine += u64::from(*theirs);
        }
    }

    /// The `q` quantile (0 < q ≤ 1) in milliseconds, `None` when empty.
    pub fn percentile_ms(&self, q: f64) -> Option<f64> {
        percentile_ms(self.counts.iter().copied(), q)
    }
}

/// The bucket of a duration of `micros` microseconds.
#[inline]
pub fn index(micros: u64) -> usize {
    let v = micros.min(MAX_MICROS);
    if v < 4 {
        return v as usize;
    }
    // v ≥ 4, so the octave is at least 2 and the shift below is defined.
    let octave = 63 - v.leading_zeros() as usize;
    4 * (octave - 1) + ((v >> (octave - 2)) & 3) as usize
}

/// The bucket's range `[low, high)` in microseconds.
pub fn bounds(index: usize) -> (u64, u64) {
    if index < 4 {
        return (index as u64, index as u64 + 1);
    }
    let octave = index / 4 + 1;
    let sub = (index % 4) as u64;
    let width = 1u64 << (octave - 2);
    let low = (4 + sub) * width;
    (low, low + width)
}

/// Nearest-rank quantile over bucket counts, as the bucket's midpoint in milliseconds
/// rounded to the microsecond.
fn percentile_ms(counts: impl Iterator<Item = u64> + Clone, q: f64) -> Option<f64> {
    let total: u64 = counts.clone().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, count) in counts.enumerate() {
        seen += count;
        if seen >= rank {
            let (low, high) = bounds(i);
            let mid_micros = (low + high) as f64 / 2.0;
            return Some((mid_micros).round() / 1000.0);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every duration falls in the bucket whose bounds contain it, buckets are contiguous,
    /// and each is at most a quarter as wide as its lower bound.
    #[test]
    fn buckets_cover_durations() {
        for micros in (0..5000).chain([65_535, 65_536, 1_000_000, MAX_MICROS]) {
            let (low, high) = bounds(index(micros));
            assert!(low <= micros && micros < high, "{micros}: [{low}, {high})");
        }
        for i in 1..BUCKETS {
            assert_eq!(bounds(i - 1).1, bounds(i).0, "gap before bucket {i}");
            let (low, high) = bounds(i);
            if i >= 4 {
                assert!((high - low) * 4 <= low, "bucket {i} too wide");
            }
        }
        assert_eq!(index(u64::MAX), BUCKETS - 1);
        assert_eq!(bounds(BUCKETS - 1).1, MAX_MICROS + 1);
    }

    /// Percentiles land within a bucket's precision of the exact answer.
    #[test]
    fn percentiles_within_precision() {
        let mut h = Histogram::new();
        assert_eq!(h.percentile_ms(0.5), None);
        // 1..=1000 ms, one each.
        for ms in 1..=1000u64 {
            h.record(ms * 1000);
        }
        let p50 = h.percentile_ms(0.5).unwrap();
        let p95 = h.percentile_ms(0.95).unwrap();
        assert!((p50 - 500.0).abs() <= 500.0 * 0.125, "p50 {p50}");
        assert!((p95 - 950.0).abs() <= 950.0 * 0.125, "p95 {p95}");
        assert!(p50 < p95);
        // One value: every percentile is its bucket.
        let mut one = Histogram::new();
        one.record(2_000);
        assert_eq!(one.percentile_ms(0.5), one.percentile_ms(0.95));
        let only = one.percentile_ms(0.5).unwrap();
        assert!((only - 2.0).abs() <= 0.25, "{only}");
    }

    /// Merging, the wide sum and the sparse form agree with recording directly.
    #[test]
    fn merge_wide_and_sparse_agree() {
        let mut a = Histogram::new();
        let mut b = Histogram::new();
        let mut both = Histogram::new();
        for (i, micros) in [10u64, 300, 5_000, 70_000, 70_001, 2_000_000]
            .iter()
            .enumerate()
        {
            if i % 2 == 0 {
                a.record(*micros)
            } else {
                b.record(*micros)
            }
            both.record(*micros);
        }
        let mut merged = a.clone();
        merged.merge(&b);
        assert_eq!(merged, both);
        let mut wide = WideHistogram::default();
        wide.add(&a);
        wide.add(&b);
        assert_eq!(wide.percentile_ms(0.5), both.percentile_ms(0.5));
        let mut restored = Histogram::new();
        restored.add_sparse(&both.sparse());
        restored.add_sparse(&[(u16::MAX, 7)]);
        assert_eq!(restored, both);
        merged.clear();
        assert!(merged.is_empty());
    }
}

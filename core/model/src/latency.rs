//! Latency histograms with fixed buckets, cheap to update from any thread (a few relaxed
//! atomics per observation, no lock), read as a [`HistogramSnapshot`] that a metrics exporter
//! turns into a Prometheus histogram.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets (upper bounds, seconds) for model requests: a reply takes from tens of milliseconds
/// (a mock, a cached prompt) to minutes (a long streamed answer).
pub const LLM_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets (upper bounds, seconds) for sandbox commands: a `true` in a container is a few
/// milliseconds, a build minutes.
pub const EXEC_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Buckets (upper bounds, seconds) for claiming a warm sandbox from a pool: a lock and a
/// store write when it works, so sub-millisecond to tens of milliseconds.
pub const CLAIM_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Buckets (upper bounds, seconds) for placing a sandbox: a decision over the placement
/// index and its reservation, microseconds even at 10,000 nodes.
pub const PLACEMENT_BUCKETS: &[f64] = &[
    0.000005, 0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.005, 0.025,
];

/// A latency histogram over fixed upper bounds.
pub struct LatencyHistogram {
    /// Upper bounds in seconds, ascending.
    bounds: &'static [f64],
    /// One counter per bound plus one for everything above the last (`+Inf`), not cumulative:
    /// an observation is one increment however slow it was.
    buckets: Box<[AtomicU64]>,
    /// Observations.
    count: AtomicU64,
    /// Their total, microseconds (seconds in a float would need a lock or a CAS loop).
    sum_us: AtomicU64,
}

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// What a [`LatencyHistogram`] held when read.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Upper bounds in seconds, ascending (`+Inf` implied after the last).
    pub bounds: &'static [f64],
    /// Observations per bucket, not cumulative: one per bound, then the `+Inf` bucket.
    pub buckets: Vec<u64>,
    /// Observations.
    pub count: u64,
    /// Their total, seconds.
    pub sum_seconds: f64,
}

impl LatencyHistogram {
    /// An empty histogram over `bounds` (seconds, ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        LatencyHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Counts one observation of `latency`.
    pub fn observe(&self, latency: Duration) {
        let secs = latency.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(b) = self.buckets.get(i) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds,
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_us.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket_and_above_the_last_in_inf() {
        let h = LatencyHistogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(10));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![2, 1, 1]);
        assert_eq!(s.count, 4);
        assert!((s.sum_seconds - 3.065).abs() < 1e-9, "{}", s.sum_seconds);
    }

    #[test]
    fn bucket_bounds_ascend() {
        for bounds in [LLM_BUCKETS, EXEC_BUCKETS, CLAIM_BUCKETS, PLACEMENT_BUCKETS] {
            assert!(bounds.windows(2).all(|w| w[0] < w[1]), "{bounds:?}");
        }
    }
}

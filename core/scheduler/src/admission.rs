//! Admission: a bounded number of Docker starts in flight per node, a bounded queue behind
//! them, and beyond the queue an immediate [`Error::Busy`] that says when to retry.
//!
//! Starting containers is what saturates a node (measured: 7–8 cold starts per second on two
//! cores), so it is gated per node; execs and file operations are not.

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The gate of one node.
#[derive(Debug)]
pub struct Admission {
    /// The node, for messages.
    node_id: String,
    /// One permit per start allowed in flight.
    permits: std::sync::Arc<Semaphore>,
    /// The permits there are, for the retry estimate.
    max_in_flight: usize,
    /// Starts waiting for a permit now.
    waiting: AtomicUsize,
    /// Starts allowed to wait; one more is refused as busy.
    max_queue: usize,
    /// Moving average of a start's duration, ms, for the retry estimate.
    avg_start_ms: AtomicU64,
}

/// Holding it means a Docker start may proceed on the node. Dropping it lets the next one in.
#[derive(Debug)]
pub struct AdmissionPermit {
    /// The semaphore permit itself.
    _permit: OwnedSemaphorePermit,
}

struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    /// A gate admitting `max_in_flight` starts at once with `max_queue` waiting behind them.
    pub fn new(node_id: impl Into<String>, max_in_flight: usize, max_queue: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Admission {
            node_id: node_id.into(),
            permits: std::sync::Arc::new(Semaphore::new(max_in_flight)),
            max_in_flight,
            waiting: AtomicUsize::new(0),
            max_queue,
            avg_start_ms: AtomicU64::new(300),
        }
    }

    /// Waits for a permit, or fails at once with `Busy` when the queue is full.
    pub async fn admit(&self) -> Result<AdmissionPermit> {
        if let Ok(p) = self.permits.clone().try_acquire_owned() {
            return Ok(AdmissionPermit { _permit: p });
        }
        let queued = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if queued >= self.max_queue {
            let retry_after = retry_after(
                queued + 1,
                self.max_in_flight,
                self.avg_start_ms.load(Ordering::Relaxed),
            );
            return Err(Error::Busy {
                message: format!(
                    "node {} is busy: {} container starts in flight and {} queued; retry after {} ms",
                    self.node_id,
                    self.max_in_flight,
                    queued,
                    retry_after.as_millis()
                ),
                retry_after,
            });
        }
        let p = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| Error::Cancelled("the scheduler is shutting down".into()))?;
        Ok(AdmissionPermit { _permit: p })
    }

    /// Records how long a start took, for the retry estimate.
    pub fn record_start(&self, took: Duration) {
        let ms = took.as_millis().min(u128::from(u32::MAX)) as u64;
        let old = self.avg_start_ms.load(Ordering::Relaxed);
        self.avg_start_ms
            .store((old * 7 + ms) / 8, Ordering::Relaxed);
    }

    /// Starts waiting now.
    pub fn queued(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// Starts in flight now.
    pub fn in_flight(&self) -> usize {
        self.max_in_flight - self.permits.available_permits()
    }
}

/// When a refused start should come back: the time for the queue ahead of it to drain,
/// `queued / max_in_flight` rounds of an average start, at least 100 ms.
pub fn retry_after(queued: usize, max_in_flight: usize, avg_start_ms: u64) -> Duration {
    let rounds = queued.div_ceil(max_in_flight.max(1)) as u64;
    Duration::from_millis((rounds.max(1) * avg_start_ms.max(1)).max(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_grows_with_the_queue() {
        assert_eq!(retry_after(1, 4, 300), Duration::from_millis(300));
        assert_eq!(retry_after(9, 4, 300), Duration::from_millis(900));
        assert_eq!(retry_after(1, 4, 10), Duration::from_millis(100));
    }

    #[tokio::test]
    async fn beyond_the_queue_is_busy_with_a_retry_hint() {
        let gate = std::sync::Arc::new(Admission::new("n1", 1, 1));
        let first = gate.admit().await.unwrap();
        // One may wait...
        let g2 = gate.clone();
        let waiter = tokio::spawn(async move { g2.admit().await.map(|_| ()) });
        while gate.queued() == 0 {
            tokio::task::yield_now().await;
        }
        // ...the next is refused at once.
        let e = gate.admit().await.unwrap_err();
        assert_eq!(e.kind(), crate::error::ErrorKind::Unavailable);
        assert!(e.retry_after().is_some());
        assert!(e.to_string().contains("node n1 is busy"), "{e}");
        assert!(e.to_string().contains("retry after"), "{e}");
        drop(first);
        waiter.await.unwrap().unwrap();
        assert_eq!(gate.queued(), 0);
        assert_eq!(gate.in_flight(), 0);
    }
}

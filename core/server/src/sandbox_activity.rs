//! Traffic through the port proxy is activity of its sandbox.
//!
//! The scheduler pauses or ends a sandbox left idle for its template's idle timeout, and it
//! sees only its own execs, file operations and terminals. A WebSocket to a dev server in the
//! sandbox, a long download or an upload through `/v1/sandboxes/{id}/ports/{port}/…` would
//! otherwise count only when it started, and the sweep would freeze (or end) the sandbox in
//! the middle of it. Here every byte that moves marks the sandbox active, at most once per
//! [`NOTE_EVERY`]. A connection left open with nothing moving is idle, like a silent terminal.

use agentvm::scheduler::Scheduler;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// How often moving bytes mark the sandbox, at most: well under the shortest idle timeout
/// (one second) and the sweep's interval, yet no lock per chunk of a large transfer.
const NOTE_EVERY: Duration = Duration::from_millis(250);

/// Marks one sandbox active as its proxied bytes move. Cheap to clone; a no-op without a
/// scheduler.
#[derive(Clone)]
pub(crate) struct Activity(Option<Arc<Marker>>);

struct Marker {
    scheduler: Scheduler,
    sandbox_id: String,
    since: Instant,
    /// When the sandbox was last marked, in ms after `since` (0: not yet).
    last_ms: AtomicU64,
}

impl Activity {
    /// For `sandbox_id` on `scheduler` (`None`: a runtime without one).
    pub(crate) fn new(scheduler: Option<&Scheduler>, sandbox_id: &str) -> Self {
        Activity(scheduler.map(|scheduler| {
            Arc::new(Marker {
                scheduler: scheduler.clone(),
                sandbox_id: sandbox_id.to_string(),
                since: Instant::now(),
                last_ms: AtomicU64::new(0),
            })
        }))
    }

    /// Bytes moved: marks the sandbox unless it was marked less than [`NOTE_EVERY`] ago.
    pub(crate) fn note(&self) {
        let Some(m) = &self.0 else { return };
        // +1 so that the first note, at 0 ms, is told apart from "never".
        let now = u64::try_from(m.since.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .saturating_add(1);
        let last = m.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= NOTE_EVERY.as_millis() as u64;
        if due
            && m.last_ms
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            m.scheduler.mark_active(&m.sandbox_id);
        }
    }
}

/// A byte stream whose reads and writes are [`Activity`].
pub(crate) struct ActiveIo<T> {
    io: T,
    activity: Activity,
}

impl<T> ActiveIo<T> {
    pub(crate) fn new(io: T, activity: Activity) -> Self {
        ActiveIo { io, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ActiveIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.note();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ActiveIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.note();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn without_a_scheduler_noting_is_harmless() {
        let a = Activity::new(None, "sb_1");
        a.note();
        a.clone().note();
    }

    #[tokio::test]
    async fn bytes_pass_through_unchanged_both_ways() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut io = ActiveIo::new(near, Activity::new(None, "sb_1"));
        io.write_all(b"ping").await.unwrap();
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");
        far.write_all(b"pong").await.unwrap();
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");
        drop(far);
        assert_eq!(
            io.read(&mut got).await.unwrap(),
            0,
            "end of stream passes too"
        );
    }
}

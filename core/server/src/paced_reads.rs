//! A server socket that reads a streaming client's acks in batches.
//!
//! The stock AgentX client answers every event frame with an ack (`{"__ack":"…"}`), which the
//! server only has to read and drop. Read the usual way, each ack arrives on a socket registered
//! for readability, so each wakes a parked runtime worker through epoll: a streamed reply cost
//! two wake-ups per delta (its event, its ack), and on a virtual machine a wake-up costs far
//! more than framing and writing the delta.
//!
//! While a connection is streaming events, [`PacedStream`] takes its socket out of epoll's read
//! set (it stays registered for writability) and reads what the client sent — acks, and
//! requests too — when the connection next writes an event, or at the latest the delay
//! after its last one (`ServerConfig::ack_read_delay`), when the socket goes back to ordinary
//! reads. A request sent during a
//! stream therefore waits for the next event or that delay; a request sent while no event has
//! gone out for the delay, and any request after a response, is read at once. The
//! connection says which is which through its [`ReadPacing`]: [`ReadPacing::events_written`]
//! after a batch of events, [`ReadPacing::read_now`] when it writes anything a client waits on.
//! Plain HTTP, terminals, port proxies and cluster members relaying commands never pace.

use std::future::Future;
use std::io::{IoSlice, Read, Write};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What a connection tells its socket about its reads. Shared by the connection's task and its
/// socket (which the same task polls).
#[derive(Debug)]
pub(crate) struct ReadPacing {
    /// How long after its last event a paced socket goes back to ordinary reads. Longer saves
    /// more wake-ups on slow streams; it is also the most a request sent mid-stream waits.
    /// Zero: never paced.
    delay: Duration,
    /// Reads wait for the next write or the delay.
    paced: AtomicBool,
    /// Batches of events written so far: each one moves the delay's deadline.
    batches: AtomicU64,
}

impl ReadPacing {
    /// Pacing with this delay (zero: reads are never paced).
    pub(crate) fn new(delay: Duration) -> Self {
        ReadPacing {
            delay,
            paced: AtomicBool::new(false),
            batches: AtomicU64::new(0),
        }
    }

    /// A batch of events went out: read the client's acks with the next batch.
    pub(crate) fn events_written(&self) {
        if self.delay.is_zero() {
            return;
        }
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.paced.store(true, Ordering::Relaxed);
    }

    /// Something the client waits on went out (a response): read its next frame at once.
    pub(crate) fn read_now(&self) {
        self.paced.store(false, Ordering::Relaxed);
    }

    fn is_paced(&self) -> bool {
        self.paced.load(Ordering::Relaxed)
    }
}

/// A TCP socket whose reads follow a [`ReadPacing`].
pub(crate) struct PacedStream {
    /// Registered with the runtime's reactor: for writability always, for readability unless
    /// reads are paced. `None` only if re-registering failed.
    fd: Option<AsyncFd<std::net::TcpStream>>,
    /// Whether `fd` is registered for readability.
    readable: bool,
    pacing: Arc<ReadPacing>,
    /// `pacing.batches` when the deadline was last moved.
    seen_batches: u64,
    /// When paced reads go back to ordinary ones (moved by every batch of events).
    deadline: Option<Pin<Box<Sleep>>>,
}

/// `tcp` registered with the runtime's reactor for `interest`.
#[allow(unsafe_code)]
fn register(
    tcp: std::net::TcpStream,
    interest: Interest,
) -> std::io::Result<AsyncFd<std::net::TcpStream>> {
    // SAFETY: the `TcpStream` owns its descriptor: it stays open, and is the same one, for as
    // long as the `AsyncFd` owns the stream.
    Ok(unsafe { AsyncFd::register_with_interest(tcp, interest) }?)
}

fn gone() -> std::io::Error {
    std::io::Error::other("the socket could not be registered with the runtime")
}

impl PacedStream {
    /// Takes over `tcp`, reading it the ordinary way until `pacing` says otherwise.
    pub(crate) fn new(
        tcp: tokio::net::TcpStream,
        pacing: Arc<ReadPacing>,
    ) -> std::io::Result<Self> {
        let fd = register(tcp.into_std()?, Interest::READABLE | Interest::WRITABLE)?;
        Ok(PacedStream {
            fd: Some(fd),
            readable: true,
            pacing,
            seen_batches: 0,
            deadline: None,
        })
    }

    fn fd(&self) -> std::io::Result<&AsyncFd<std::net::TcpStream>> {
        self.fd.as_ref().ok_or_else(gone)
    }

    /// Registers the socket again, for readability too or not. Any waiter of the old
    /// registration is dropped with it, so the task is woken to poll again.
    fn register(&mut self, readable: bool, cx: &mut Context<'_>) -> std::io::Result<()> {
        let Some(fd) = self.fd.take() else {
            return Err(gone());
        };
        let interest = if readable {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::WRITABLE
        };
        self.fd = Some(register(fd.into_inner(), interest)?);
        self.readable = readable;
        cx.waker().wake_by_ref();
        Ok(())
    }

    /// Paced: one read without waiting for readiness, then a wait for the deadline. `None`
    /// when the deadline passed with no event since: read the ordinary way.
    fn poll_paced_read(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Option<Poll<std::io::Result<()>>> {
        if self.readable {
            if let Err(e) = self.register(false, cx) {
                return Some(Poll::Ready(Err(e)));
            }
        }
        let fd = match self.fd() {
            Ok(fd) => fd,
            Err(e) => return Some(Poll::Ready(Err(e))),
        };
        let unfilled = buf.initialize_unfilled();
        match fd.get_ref().read(unfilled) {
            Ok(n) => {
                buf.advance(n);
                return Some(Poll::Ready(Ok(())));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                cx.waker().wake_by_ref();
                return Some(Poll::Pending);
            }
            Err(e) => return Some(Poll::Ready(Err(e))),
        }
        let batches = self.pacing.batches.load(Ordering::Relaxed);
        if batches != self.seen_batches || self.deadline.is_none() {
            self.seen_batches = batches;
            let at = Instant::now() + self.pacing.delay;
            match &mut self.deadline {
                Some(sleep) => sleep.as_mut().reset(at),
                None => self.deadline = Some(Box::pin(tokio::time::sleep_until(at))),
            }
        }
        let sleep = self.deadline.as_mut()?;
        match sleep.as_mut().poll(cx) {
            Poll::Pending => Some(Poll::Pending),
            Poll::Ready(()) => {
                // Quiet for the whole delay: the stream is over.
                self.pacing.read_now();
                None
            }
        }
    }
}

impl AsyncRead for PacedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.pacing.is_paced() {
            if let Some(polled) = this.poll_paced_read(cx, buf) {
                return polled;
            }
        }
        if !this.readable {
            this.register(true, cx)?;
        }
        let fd = this.fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            match guard.try_io(|s| s.get_ref().read(unfilled)) {
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsyncWrite for PacedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            if let Ok(written) = guard.try_io(|s| s.get_ref().write(buf)) {
                return Poll::Ready(written);
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let fd = self.fd()?;
        loop {
            let mut guard = ready!(fd.poll_write_ready(cx))?;
            if let Ok(written) = guard.try_io(|s| s.get_ref().write_vectored(bufs)) {
                return Poll::Ready(written);
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let fd = self.fd()?;
        match fd.get_ref().shutdown(std::net::Shutdown::Write) {
            Err(e) if e.kind() != std::io::ErrorKind::NotConnected => Poll::Ready(Err(e)),
            _ => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    const DELAY: Duration = Duration::from_millis(5);

    async fn pair(delay: Duration) -> (TcpStream, PacedStream, Arc<ReadPacing>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let client = TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        let pacing = Arc::new(ReadPacing::new(delay));
        let server = PacedStream::new(accepted, pacing.clone()).expect("register");
        (client, server, pacing)
    }

    #[tokio::test]
    async fn a_paced_socket_reads_what_came_meanwhile_at_its_deadline_then_reads_at_once() {
        let (mut client, mut server, pacing) = pair(DELAY).await;
        let mut buf = [0u8; 16];

        // Ordinary reads first: registered for readability.
        client.write_all(b"hello").await.expect("write");
        let n = server.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"hello");
        assert!(server.readable);

        // Events went out: the socket leaves epoll's read set, and what the client sends
        // while the read waits is read at the deadline, not when it arrives.
        let paced_at = Instant::now();
        pacing.events_written();
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = server.read(&mut buf).await.expect("paced read");
            (buf[..n].to_vec(), Instant::now(), server)
        });
        tokio::task::yield_now().await;
        client.write_all(b"ack").await.expect("write ack");
        let (got, read_at, mut server) = reader.await.expect("reader");
        assert_eq!(got, b"ack");
        assert!(
            read_at >= paced_at + DELAY,
            "read {:?} after pacing began, before the {DELAY:?} delay",
            read_at - paced_at
        );
        assert!(!server.readable, "a paced socket is not in the read set");

        // The delay passed with no event since: a read that has to wait is an ordinary one.
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = server.read(&mut buf).await.expect("read request");
            (buf[..n].to_vec(), server)
        });
        tokio::task::yield_now().await;
        client.write_all(b"request").await.expect("write request");
        let (got, mut server) = reader.await.expect("reader");
        assert_eq!(got, b"request");
        assert!(!pacing.is_paced());
        assert!(server.readable, "back in the read set");

        // A response went out: the next frame is read at once, registered for it again.
        pacing.events_written();
        pacing.read_now();
        client.write_all(b"next").await.expect("write next");
        let n = server.read(&mut buf).await.expect("read next");
        assert_eq!(&buf[..n], b"next");
        assert!(server.readable);

        // Writes go out whichever way reads are made, and a client that leaves is seen.
        pacing.events_written();
        server.write_all(b"event").await.expect("server write");
        let n = client.read(&mut buf).await.expect("client read");
        assert_eq!(&buf[..n], b"event");
        drop(client);
        let n = server.read(&mut buf).await.expect("read at end");
        assert_eq!(n, 0, "end of stream");
    }

    #[tokio::test]
    async fn with_no_delay_reads_are_never_paced() {
        let (mut client, mut server, pacing) = pair(Duration::ZERO).await;
        pacing.events_written();
        assert!(!pacing.is_paced());
        client.write_all(b"ack").await.expect("write");
        let mut buf = [0u8; 16];
        let n = server.read(&mut buf).await.expect("read");
        assert_eq!(&buf[..n], b"ack");
        assert!(server.readable, "still in the read set");
    }
}

//! The accept loop: every socket holds one of `max_connections` permits for as long as it is
//! open (plain HTTP, kept alive, or upgraded to a WebSocket), and HTTP/1 connections must send
//! each request head within `header_timeout` — counted from the accept, and from the previous
//! response on a kept-alive connection — so idle or trickling sockets cannot pin descriptors.

use crate::paced_reads::{PacedStream, ReadPacing};
use crate::ServerState;
use axum::extract::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, OwnedSemaphorePermit};

/// What a socket accepted over the limit is told before it is closed.
fn over_limit_response(limit: usize) -> Vec<u8> {
    let body = serde_json::json!({
        "error": format!("too many connections (limit {limit}); retry later"),
        "kind": "unavailable",
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A socket and the permit it holds until it is dropped (after an upgrade too: the
/// WebSocket owns it then).
struct PermittedStream {
    tcp: PacedStream,
    /// Returned to the limit when the socket closes.
    _permit: OwnedSemaphorePermit,
}

impl AsyncRead for PermittedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for PermittedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

/// Accepts until `shutdown` turns true, then lets open connections finish.
pub(crate) async fn run(
    listener: TcpListener,
    app: Router,
    state: Arc<ServerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let over_limit = over_limit_response(state.config.max_connections);
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        let (tcp, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (or another transient error): wait for some to close.
                tracing::warn!(error = %e, "accepting a connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = state.sockets.clone().try_acquire_owned() else {
            state.metrics.connection_refused();
            tracing::debug!(%remote, limit = state.config.max_connections, "connection limit reached: refusing a socket");
            // Best effort, never waiting: the socket is closed right after.
            let _ = tcp.try_write(&over_limit);
            continue;
        };
        // Small frames (a text_delta is ~300 bytes) must not wait for Nagle's algorithm:
        // without this a stream stalls ~40 ms at a time.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "TCP_NODELAY");
        }
        let pacing = Arc::new(ReadPacing::new(state.config.ack_read_delay));
        let tcp = match PacedStream::new(tcp, pacing.clone()) {
            Ok(tcp) => tcp,
            Err(e) => {
                tracing::warn!(%remote, error = %e, "registering an accepted socket");
                continue;
            }
        };
        let io = TokioIo::new(PermittedStream {
            tcp,
            _permit: permit,
        });
        let app = app.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(remote));
                // A WebSocket on this socket paces its reads (see `paced_reads`).
                req.extensions_mut().insert(pacing.clone());
                let mut app = app.clone();
                async move { tower_service::Service::call(&mut app, req).await }
            });
        let header_timeout = state.config.header_timeout;
        let mut stop = shutdown.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout);
            let conn = builder.serve_connection(io, service).with_upgrades();
            tokio::pin!(conn);
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(e) = served {
                        tracing::debug!(%remote, error = %e, "connection ended");
                    }
                    return;
                }
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(%remote, error = %e, "connection ended");
            }
        });
    }
    // Open HTTP connections finish their request; WebSockets close with 1001 on their own.
    let all = state
        .config
        .max_connections
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    while state.sockets.available_permits() < all {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

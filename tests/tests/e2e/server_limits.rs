//! Sockets that never finish a request cannot exhaust the server's descriptors: the
//! connection limit counts every accepted socket, and a request head must arrive within the
//! header timeout.

use agentvm::MockDriver;
use agentvm_e2e::wire::{TestServer, WsClient};
use agentvm_server::ServerConfig;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET /health` on a fresh socket: the status, or `None` when the socket was dropped
/// without an answer.
async fn health(addr: SocketAddr) -> Option<u16> {
    let mut s = TcpStream::connect(addr).await.ok()?;
    let _ = s
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut raw)).await;
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
}

/// Whether the server closed `s` (EOF or an error on read) within `within`.
async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickling_sockets_over_the_limit_are_closed_after_the_header_timeout() {
    const LIMIT: usize = 10;
    let s = TestServer::start_with(
        ServerConfig {
            max_connections: LIMIT,
            header_timeout: Duration::from_secs(1),
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    assert_eq!(health(s.addr).await, Some(200));

    // More sockets than the limit, each sending a request head a byte at a time.
    let mut sockets = Vec::new();
    for _ in 0..LIMIT + 5 {
        let mut t = TcpStream::connect(s.addr).await.expect("connect");
        let _ = t.write_all(b"GET /health HTTP/1.1\r\n").await;
        sockets.push(t);
    }
    let opened = Instant::now();
    // The limit is taken: a new socket is refused with a 503 (or dropped), not served.
    assert_ne!(health(s.addr).await, Some(200));
    let trickle = async {
        for _ in 0..5 {
            for t in sockets.iter_mut() {
                let _ = t.write_all(b"X").await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    trickle.await;
    // Every one of them is closed by the header timeout (1 s), trickling or not.
    for t in sockets.iter_mut() {
        assert!(
            closed_within(t, Duration::from_secs(5)).await,
            "a trickling socket still open after {:?}",
            opened.elapsed()
        );
    }
    // And the server answers again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if health(s.addr).await == Some(200) {
            break;
        }
        assert!(Instant::now() < deadline, "/health never answered again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_that_sends_nothing_is_closed_after_the_header_timeout() {
    let s = TestServer::start_with(
        ServerConfig {
            header_timeout: Duration::from_millis(500),
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    let mut silent = TcpStream::connect(s.addr).await.expect("connect");
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);
    // A kept-alive connection gets the same time to send its next request.
    let mut kept = TcpStream::connect(s.addr).await.expect("connect");
    kept.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 512];
    let n = kept.read(&mut buf).await.expect("response");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(closed_within(&mut kept, Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_100_accepts_exactly_100_websockets() {
    const LIMIT: usize = 100;
    let s = TestServer::start_with(
        ServerConfig {
            max_connections: LIMIT,
            ..Default::default()
        },
        MockDriver::default(),
    )
    .await;
    let url = s.ws_url();
    let attempts: Vec<_> = (0..=LIMIT)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move { WsClient::try_connect(&url, None).await })
        })
        .collect();
    let mut open = Vec::new();
    let mut refused = 0;
    for a in attempts {
        match a.await.expect("task") {
            Ok(c) => open.push(c),
            Err(_) => refused += 1,
        }
    }
    assert_eq!(open.len(), LIMIT, "{refused} refused");
    assert_eq!(refused, 1);
    // Closing one frees its place.
    open.pop().expect("one").close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if WsClient::try_connect(&url, None).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the freed place was never reused"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

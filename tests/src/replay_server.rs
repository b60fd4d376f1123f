//! A tiny HTTP/1.1 server on 127.0.0.1:0 that answers each request with the next scripted
//! [`Reply`]: a status, headers, and a body written as HTTP chunks split wherever the test says
//! (every N bytes, at random points, at given offsets), optionally slowly, optionally stalling,
//! or a connection dropped without an answer. It records every request, and when a client
//! hung up in the middle of a reply.
//!
//! Raw tokio sockets rather than a server library: the tests need exact control of what goes on
//! the wire and when.

use serde_json::Value;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How a reply body is cut into HTTP chunks (each written and flushed on its own).
#[derive(Debug, Clone)]
pub enum Chunking {
    /// One chunk.
    Whole,
    /// Chunks of `n` bytes.
    Every(usize),
    /// Chunks of 1..=max bytes, sizes drawn from a seeded generator.
    Random {
        /// The generator's seed.
        seed: u64,
        /// The largest chunk.
        max: usize,
    },
    /// Cut at these byte offsets.
    At(Vec<usize>),
}

impl Chunking {
    /// The chunks of `body`.
    pub fn split<'a>(&self, body: &'a [u8]) -> Vec<&'a [u8]> {
        let cuts: Vec<usize> = match self {
            Chunking::Whole => vec![],
            Chunking::Every(n) => (1..)
                .map(|i| i * (*n).max(1))
                .take_while(|c| *c < body.len())
                .collect(),
            Chunking::Random { seed, max } => {
                let mut state = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407)
                    | 1;
                let mut cuts = Vec::new();
                let mut at = 0;
                loop {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    at += 1 + (state % (*max).max(1) as u64) as usize;
                    if at >= body.len() {
                        break cuts;
                    }
                    cuts.push(at);
                }
            }
            Chunking::At(offsets) => offsets
                .iter()
                .copied()
                .filter(|c| *c > 0 && *c < body.len())
                .collect(),
        };
        let mut out = Vec::new();
        let mut start = 0;
        for c in cuts {
            out.push(&body[start..c]);
            start = c;
        }
        out.push(&body[start..]);
        out
    }
}

/// One scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    chunking: Chunking,
    delay: Duration,
    stall: bool,
    drop_connection: bool,
    cut: bool,
}

impl Reply {
    /// `200` with an SSE body.
    pub fn sse(body: impl Into<Vec<u8>>) -> Self {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/event-stream".into())],
            body: body.into(),
            chunking: Chunking::Whole,
            delay: Duration::ZERO,
            stall: false,
            drop_connection: false,
            cut: false,
        }
    }

    /// A JSON answer with `status`.
    pub fn json(status: u16, body: Value) -> Self {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            ..Reply::sse(body.to_string())
        }
    }

    /// The connection is closed without an answer (a connection error for the client).
    pub fn drop_connection() -> Self {
        Reply {
            drop_connection: true,
            ..Reply::sse("")
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// Cuts the body so.
    pub fn chunking(mut self, chunking: Chunking) -> Self {
        self.chunking = chunking;
        self
    }

    /// Waits this long before each chunk after the first.
    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// After the body, closes the connection without ending the chunked body: the reply is cut.
    pub fn cut(mut self) -> Self {
        self.cut = true;
        self
    }

    /// After the body, keeps the connection open, sending nothing, until the client leaves.
    pub fn stall(mut self) -> Self {
        self.stall = true;
        self
    }
}

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `POST`, ...
    pub method: String,
    /// `/v1/messages`, ...
    pub path: String,
    /// Headers, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
}

impl RecordedRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON. Panics when it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the request body is JSON")
    }
}

#[derive(Default)]
struct State {
    replies: VecDeque<Reply>,
    requests: Vec<RecordedRequest>,
    /// When a client went away before its reply was complete (or during a stall).
    hangups: Vec<Instant>,
}

/// The server. It stops when dropped.
pub struct ReplayServer {
    url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ReplayServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ReplayServer {
    /// Starts a server answering with `replies`, in order.
    pub async fn start(replies: impl IntoIterator<Item = Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(State {
            replies: replies.into_iter().collect(),
            ..State::default()
        }));
        let s = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, s.clone()));
            }
        });
        ReplayServer { url, state, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// Queues another reply.
    pub fn push(&self, reply: Reply) {
        self.state
            .lock()
            .expect("replay state")
            .replies
            .push_back(reply);
    }

    /// The requests received so far.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.lock().expect("replay state").requests.clone()
    }

    /// When clients hung up before their reply was complete.
    pub fn hangups(&self) -> Vec<Instant> {
        self.state.lock().expect("replay state").hangups.clone()
    }

    /// Waits up to `within` for a hang-up; its time.
    pub async fn wait_for_hangup(&self, within: Duration) -> Option<Instant> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(t) = self.hangups().first() {
                return Some(*t);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        None
    }
}

async fn read_request(socket: &mut TcpStream) -> Option<RecordedRequest> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, path) = (first.next()?.to_string(), first.next()?.to_string());
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = socket.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(RecordedRequest {
        method,
        path,
        headers,
        body,
        at: Instant::now(),
    })
}

async fn serve(mut socket: TcpStream, state: Arc<Mutex<State>>) {
    let Some(request) = read_request(&mut socket).await else {
        return;
    };
    let reply = {
        let mut s = state.lock().expect("replay state");
        s.requests.push(request);
        s.replies.pop_front()
    };
    let reply = reply.unwrap_or_else(|| {
        Reply::json(500, serde_json::json!({"error": {"message": "the test scripted no more replies", "type": "test_error"}}))
            .header("x-should-retry", "false")
    });
    if reply.drop_connection {
        return;
    }
    let _ = socket.set_nodelay(true);
    let mut head = format!("HTTP/1.1 {} Scripted\r\n", reply.status);
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("transfer-encoding: chunked\r\nconnection: close\r\n\r\n");
    let hangup = |state: &Arc<Mutex<State>>| {
        state
            .lock()
            .expect("replay state")
            .hangups
            .push(Instant::now())
    };
    if socket.write_all(head.as_bytes()).await.is_err() {
        return hangup(&state);
    }
    for (i, piece) in reply.chunking.split(&reply.body).into_iter().enumerate() {
        if i > 0 && !reply.delay.is_zero() {
            tokio::time::sleep(reply.delay).await;
        }
        if piece.is_empty() {
            continue;
        }
        let mut framed = format!("{:x}\r\n", piece.len()).into_bytes();
        framed.extend_from_slice(piece);
        framed.extend_from_slice(b"\r\n");
        if socket.write_all(&framed).await.is_err() || socket.flush().await.is_err() {
            return hangup(&state);
        }
    }
    if reply.stall {
        // Wait for the client to leave; it sends nothing more, so a read ends only then.
        let mut sink = [0u8; 64];
        loop {
            match socket.read(&mut sink).await {
                Ok(0) | Err(_) => return hangup(&state),
                Ok(_) => {}
            }
        }
    }
    if !reply.cut {
        let _ = socket.write_all(b"0\r\n\r\n").await;
    }
    let _ = socket.shutdown().await;
}

/// The text of `tests/fixtures/<path>`.
pub fn fixture(path: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

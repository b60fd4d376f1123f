//! A raw Channel client for tests: frames as JSON, the way the AgentX client sees them.

use agentvm::{AgentVm, MockDriver};
use agentvm_server::{ServerConfig, ServerManager};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A server on a port-0 listener with the mock driver and a data dir of its own.
pub struct TestServer {
    /// The runtime behind it.
    pub vm: AgentVm,
    /// The server.
    pub server: ServerManager,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its data dir (kept alive with the server).
    pub dir: tempfile::TempDir,
}

impl TestServer {
    /// Defaults, mock driver.
    pub async fn start() -> Self {
        Self::start_with(ServerConfig::default(), MockDriver::default()).await
    }

    /// A custom config and driver.
    pub async fn start_with(config: ServerConfig, driver: MockDriver) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let vm = AgentVm::builder()
            .data_dir(dir.path())
            .llm(Arc::new(driver))
            .open()
            .await
            .expect("open runtime");
        let server = ServerManager::new(vm.clone(), config);
        let addr = server.listen("127.0.0.1:0").await.expect("listen");
        TestServer {
            vm,
            server,
            addr,
            dir,
        }
    }

    /// `ws://…/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }
}

/// One frame from the server, unwrapped.
#[derive(Debug, Clone)]
pub struct Frame {
    /// `__msgId`, when wrapped.
    pub msg_id: Option<String>,
    /// `__cursor`, for session events.
    pub cursor: Option<u64>,
    /// The event or response.
    pub payload: Value,
    /// Whether the frame was wrapped.
    pub wrapped: bool,
}

impl Frame {
    /// The payload's `type`.
    pub fn type_name(&self) -> &str {
        self.payload["type"].as_str().unwrap_or_default()
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A raw WebSocket client.
pub struct WsClient {
    ws: Ws,
    /// Frames received but not yet consumed.
    backlog: VecDeque<Frame>,
    /// Acknowledge wrapped frames, as the stock client does.
    pub ack: bool,
    next: u64,
}

impl WsClient {
    /// Connects without a token.
    pub async fn connect(url: &str) -> Self {
        Self::try_connect(url, None).await.expect("connect")
    }

    /// Connects with an optional bearer token in the upgrade request.
    pub async fn try_connect(
        url: &str,
        token: Option<&str>,
    ) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let mut req = url.into_client_request()?;
        if let Some(t) = token {
            req.headers_mut().insert(
                "authorization",
                format!("Bearer {t}").parse().expect("header"),
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(WsClient {
            ws,
            backlog: VecDeque::new(),
            ack: true,
            next: 0,
        })
    }

    /// Sends raw text.
    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, bytes: Vec<u8>) {
        self.ws
            .send(Message::Binary(bytes.into()))
            .await
            .expect("send");
    }

    /// Sends a request like the stock client; returns its requestId.
    pub async fn send_request(&mut self, type_name: &str, mut data: Value) -> String {
        self.next += 1;
        let id = format!("req_{}_{:06}", self.next, self.next);
        data["requestId"] = json!(id);
        let frame = json!({"type": type_name, "timestamp": 0, "data": data, "source": "command", "category": "request", "intent": "request"});
        self.send_text(&frame.to_string()).await;
        id
    }

    /// The next frame from the wire (acknowledging it if wrapped and `ack` is on). `None` when
    /// the connection closed; panics after 10 s of silence.
    pub async fn read_frame(&mut self) -> Option<Frame> {
        self.read_frame_within(Duration::from_secs(10))
            .await
            .expect("a frame within 10 s")
    }

    /// Like `read_frame`, `Err` on timeout.
    pub async fn read_frame_within(&mut self, d: Duration) -> Result<Option<Frame>, ()> {
        loop {
            let msg = match tokio::time::timeout(d, self.ws.next()).await {
                Err(_) => return Err(()),
                Ok(None) => return Ok(None),
                Ok(Some(Err(_))) => return Ok(None),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                Message::Text(t) => {
                    let v: Value =
                        serde_json::from_str(t.as_str()).expect("server frames are JSON");
                    if v.get("__ack").is_some() {
                        return Ok(Some(Frame {
                            msg_id: None,
                            cursor: None,
                            payload: v,
                            wrapped: false,
                        }));
                    }
                    let frame = match v.get("__payload") {
                        Some(p) => Frame {
                            msg_id: v["__msgId"].as_str().map(str::to_string),
                            cursor: v["__cursor"]
                                .as_str()
                                .map(|c| c.parse().expect("cursor is a number")),
                            payload: serde_json::from_str(
                                p.as_str().expect("__payload is a string"),
                            )
                            .expect("payload JSON"),
                            wrapped: true,
                        },
                        None => Frame {
                            msg_id: None,
                            cursor: None,
                            payload: v,
                            wrapped: false,
                        },
                    };
                    if self.ack {
                        if let Some(id) = &frame.msg_id {
                            let _ = self
                                .ws
                                .send(Message::Text(json!({"__ack": id}).to_string().into()))
                                .await;
                        }
                    }
                    return Ok(Some(frame));
                }
                Message::Close(c) => {
                    return Ok(Some(Frame {
                        msg_id: None,
                        cursor: None,
                        payload: json!({"type": "__close", "code": c.as_ref().map(|c| u16::from(c.code)), "reason": c.map(|c| c.reason.to_string())}),
                        wrapped: false,
                    }))
                }
                _ => continue,
            }
        }
    }

    /// The next frame, from the backlog first.
    pub async fn next_frame(&mut self) -> Frame {
        if let Some(f) = self.backlog.pop_front() {
            return f;
        }
        self.read_frame().await.expect("the connection is open")
    }

    /// Sends a request and waits for its response (other frames go to the backlog).
    pub async fn request(&mut self, type_name: &str, data: Value) -> Value {
        let id = self.send_request(type_name, data).await;
        self.response_to(&id).await
    }

    /// Waits for the response with `requestId == id`.
    pub async fn response_to(&mut self, id: &str) -> Value {
        if let Some(pos) = self.backlog.iter().position(|f| {
            f.type_name().ends_with("_response") && f.payload["data"]["requestId"] == id
        }) {
            return self.backlog.remove(pos).expect("present").payload;
        }
        loop {
            let f = self.read_frame().await.expect("open connection");
            if f.type_name().ends_with("_response") && f.payload["data"]["requestId"] == id {
                return f.payload;
            }
            self.backlog.push_back(f);
        }
    }

    /// Frames (backlog first) up to and including the first of type `until`.
    pub async fn frames_until(&mut self, until: &str) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            let f = self.next_frame().await;
            let done = f.type_name() == until;
            out.push(f);
            if done {
                return out;
            }
        }
    }

    /// Drops everything in the backlog.
    pub fn clear_backlog(&mut self) {
        self.backlog.clear();
    }

    /// Whether nothing arrives within `d`.
    pub async fn silent_for(&mut self, d: Duration) -> bool {
        self.backlog.is_empty() && matches!(self.read_frame_within(d).await, Err(()))
    }

    /// Closes the socket.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// A minimal HTTP/1.1 request; returns status and body.
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.unwrap_or("");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    let text = String::from_utf8_lossy(&raw).to_string();
    let status: u16 = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let (head, rest) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_string()
    };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n.min(rest.len())]);
        s = rest.get(n + 2..).unwrap_or("");
    }
    out
}

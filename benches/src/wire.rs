//! WebSocket fixtures for the server benches: an agentvm server on a loopback port-0 listener,
//! and a raw Channel client (tokio-tungstenite, Nagle off) that reads frames as cheaply as it
//! can, so the numbers are the server's rather than the client's JSON parsing.
//!
//! A server frame is `{"__msgId":"…","__payload":"<json string>","__cursor"?:"…"}`; the payload
//! is an event or response serialized with `type` first, so [`payload_type`] finds the type
//! with a substring search instead of two JSON parses.

use crate::mock_vm;
use agentvm::{AgentVm, ImageConfig, RuntimeExt};
use agentvm_server::{ServerConfig, ServerManager};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// A raw client connection.
pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// How long any single wait for a frame may take before the bench fails loudly.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(30);

/// An agentvm server over an in-memory [`AgentVm`] with the mock driver, on 127.0.0.1:0.
pub struct BenchServer {
    /// The runtime behind it.
    pub vm: AgentVm,
    /// The server.
    pub server: ServerManager,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl BenchServer {
    /// Starts a server with `config` the way embedders do, `ServerManager::listen`. Must run
    /// inside a tokio runtime.
    pub async fn start(config: ServerConfig) -> Self {
        let vm = mock_vm(None).await;
        let server = ServerManager::new(vm.clone(), config);
        let addr = server
            .listen("127.0.0.1:0")
            .await
            .expect("listening on 127.0.0.1:0");
        BenchServer { vm, server, addr }
    }

    /// Like [`BenchServer::start`], but served (`ServerManager::serve`) on a listener with
    /// `TCP_NODELAY` set, which Linux copies to every accepted socket. A diagnostic: the stock
    /// server leaves Nagle's algorithm on.
    pub async fn start_nodelay(config: ServerConfig) -> Self {
        let vm = mock_vm(None).await;
        let server = ServerManager::new(vm.clone(), config);
        let socket = tokio::net::TcpSocket::new_v4().expect("a TCP socket");
        socket.set_nodelay(true).expect("setting TCP_NODELAY");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("binding 127.0.0.1:0");
        let listener = socket.listen(1024).expect("listening");
        let addr = listener.local_addr().expect("the bound address");
        server.serve(listener).await.expect("serving");
        BenchServer { vm, server, addr }
    }

    /// [`BenchServer::start_nodelay`] when `nodelay`, else [`BenchServer::start`].
    pub async fn start_with(config: ServerConfig, nodelay: bool) -> Self {
        if nodelay {
            Self::start_nodelay(config).await
        } else {
            Self::start(config).await
        }
    }

    /// `ws://127.0.0.1:<port>/ws`.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The value of the Prometheus metric `name` (a plain gauge or counter) on `/metrics`.
    pub fn metric(&self, name: &str) -> Option<u64> {
        let text = self.server.metrics().render(
            &agentvm_server::metrics::Sources {
                requests: self.vm.request_metrics(),
                llm: self.vm.llm_latency(),
                agents_running: 0,
                scheduler: None,
                sandbox_usage: &[],
            },
            "",
        );
        text.lines()
            .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|v| v.trim().parse().ok())
    }

    /// Stops the server and the runtime.
    pub async fn close(self) {
        self.server.close().await;
    }
}

/// An image in `container_id` whose model is the mock's `long-stream` (100 deltas per reply).
/// Returns `(image_id, session_id)`.
pub async fn long_stream_image(vm: &AgentVm, container_id: &str) -> (String, String) {
    let image = vm
        .images()
        .create(
            container_id,
            ImageConfig {
                model: Some("long-stream".into()),
                ..Default::default()
            },
        )
        .await
        .expect("creating a long-stream image");
    (image.record.image_id, image.record.session_id)
}

/// Opens a raw client connection with Nagle off (as the remote runtime does).
pub async fn connect(url: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .expect("opening a WebSocket");
    ws
}

/// Sends one text frame.
pub async fn send_text(ws: &mut Ws, text: String) {
    ws.send(Message::Text(text.into()))
        .await
        .expect("sending a frame");
}

/// A request frame as the stock client sends it (without the envelope fields the server
/// ignores).
pub fn request_frame(type_name: &str, mut data: Value, request_id: &str) -> String {
    data["requestId"] = json!(request_id);
    json!({ "type": type_name, "data": data }).to_string()
}

/// The next text frame, `None` when the connection closed. Panics when none comes within
/// [`FRAME_TIMEOUT`] (pings do not count).
pub async fn next_text(ws: &mut Ws) -> Option<String> {
    let deadline = tokio::time::Instant::now() + FRAME_TIMEOUT;
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a text frame within the timeout");
        match msg {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Text(t))) => return Some(t.as_str().to_owned()),
            Some(Ok(_)) => continue,
        }
    }
}

/// The `type` of a wrapped server frame's payload, found without parsing JSON. Events are
/// serialized with `type` first; responses are built as `serde_json` maps, whose keys are sorted,
/// so there `type` is the last key of the payload.
pub fn payload_type(frame: &str) -> Option<&str> {
    const PAYLOAD: &str = "\"__payload\":\"";
    const TYPE: &str = "\\\"type\\\":\\\"";
    let payload = &frame[frame.find(PAYLOAD)? + PAYLOAD.len()..];
    let start = if payload.get(1..)?.starts_with(TYPE) {
        1 + TYPE.len()
    } else {
        payload.rfind(TYPE)? + TYPE.len()
    };
    let len = payload[start..].find('\\')?;
    Some(&payload[start..start + len])
}

/// Whether a wrapped frame's payload carries `"requestId":"<id>"`.
pub fn has_request_id(frame: &str, request_id: &str) -> bool {
    frame.contains(&format!("\\\"requestId\\\":\\\"{request_id}\\\""))
}

/// Reads frames until the response of type `response_type` to `request_id`; returns it.
pub async fn read_response(ws: &mut Ws, response_type: &str, request_id: &str) -> String {
    loop {
        let frame = next_text(ws).await.expect("the connection is open");
        if payload_type(&frame) == Some(response_type) && has_request_id(&frame, request_id) {
            return frame;
        }
    }
}

/// Joins `session_id` and waits for the `subscribe_response`, which the server sends only to a
/// client that asks for it (`__subscribeResponse`, as agentvm's own client does).
pub async fn subscribe(ws: &mut Ws, session_id: &str) {
    send_text(
        ws,
        json!({ "type": "subscribe", "sessionId": session_id, "__subscribeResponse": true })
            .to_string(),
    )
    .await;
    loop {
        let frame = next_text(ws).await.expect("the connection is open");
        match payload_type(&frame) {
            Some("subscribe_response") => return,
            Some("system_error") => panic!("subscribe refused: {frame}"),
            _ => {}
        }
    }
}

/// What a client received during a turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Received {
    /// `text_delta` events.
    pub text_deltas: u64,
    /// Every text frame, `conversation_end` included.
    pub frames: u64,
}

impl std::ops::AddAssign for Received {
    fn add_assign(&mut self, other: Received) {
        self.text_deltas += other.text_deltas;
        self.frames += other.frames;
    }
}

/// Reads frames until `conversation_end`; counts what came.
pub async fn count_until_end(ws: &mut Ws) -> Received {
    let mut got = Received::default();
    loop {
        let frame = next_text(ws).await.expect("the connection is open");
        got.frames += 1;
        match payload_type(&frame) {
            Some("text_delta") => got.text_deltas += 1,
            Some("conversation_end") => return got,
            Some("system_error") | Some("error_message") => panic!("the turn failed: {frame}"),
            _ => {}
        }
    }
}

/// The value at quantile `q` (0..=1) of sorted `values` (nearest rank).
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> T {
    assert!(!sorted.is_empty(), "quantile of nothing");
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_type_reads_the_wrapped_type() {
        let payload = r#"{"type":"text_delta","data":{"text":"x"}}"#;
        let frame = agentvm::channel::codec::wrap("conn_1_2", payload, Some(3));
        assert_eq!(payload_type(&frame), Some("text_delta"));
        let payload = r#"{"type":"image_get_response","data":{"requestId":"r7"}}"#;
        let frame = agentvm::channel::codec::wrap("conn_1_3", payload, None);
        assert_eq!(payload_type(&frame), Some("image_get_response"));
        assert!(has_request_id(&frame, "r7"));
        assert!(!has_request_id(&frame, "r"));
        assert_eq!(payload_type(r#"{"__ack":"m"}"#), None);
        // Responses have sorted keys: `type` comes last, after nested `type`s.
        let payload = r#"{"category":"response","data":{"parts":[{"type":"text"}],"requestId":"r8"},"intent":"result","source":"command","timestamp":1,"type":"message_send_response"}"#;
        let frame = agentvm::channel::codec::wrap("conn_1_4", payload, None);
        assert_eq!(payload_type(&frame), Some("message_send_response"));
    }

    #[test]
    fn quantiles_are_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), 50);
        assert_eq!(quantile(&v, 0.99), 99);
        assert_eq!(quantile(&v, 1.0), 100);
        assert_eq!(quantile(&v, 0.0), 1);
    }
}

//! The WebSocket edges, on real sockets: the RFC 6455 close handshake, close codes for frames
//! that break the protocol (written byte by byte on a raw TCP socket), error responses that do
//! not echo large input, and one size limit for a REST body and a WebSocket message. After
//! each abuse the server still serves another client.

use agentvm_e2e::wire::{http, TestServer, WsClient};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

const OP_TEXT: u8 = 0x1;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// A WebSocket client that writes its frames byte by byte.
struct RawWs {
    tcp: TcpStream,
}

impl RawWs {
    /// Opens `/ws` with a hand-written upgrade request.
    async fn connect(addr: SocketAddr) -> Self {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
        let req = format!(
            "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.expect("upgrade");
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = tcp.read(&mut byte).await.expect("read head");
            assert_eq!(n, 1, "the server closed during the upgrade");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head).to_string();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawWs { tcp }
    }

    /// Writes one masked frame: `first` is FIN, RSV and opcode.
    async fn write_frame(&mut self, first: u8, payload: &[u8]) {
        let mut f = vec![first];
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= u16::MAX as usize => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        // A server that refused the frame may stop reading it: what it sends back is what the
        // tests look at.
        let _ = self.tcp.write_all(&f).await;
    }

    /// The next frame from the server (opcode, payload), `None` at EOF or after 10 s.
    async fn read_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        tokio::time::timeout(Duration::from_secs(10), async {
            let mut h = [0u8; 2];
            self.tcp.read_exact(&mut h).await.ok()?;
            assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut l = [0u8; 2];
                    self.tcp.read_exact(&mut l).await.ok()?;
                    u16::from_be_bytes(l) as usize
                }
                127 => {
                    let mut l = [0u8; 8];
                    self.tcp.read_exact(&mut l).await.ok()?;
                    u64::from_be_bytes(l) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.tcp.read_exact(&mut payload).await.ok()?;
            Some((h[0] & 0x0f, payload))
        })
        .await
        .ok()
        .flatten()
    }

    /// The close frame the server sends (code, reason), skipping other frames; `None` when
    /// the connection ends without one (what a client reports as 1006).
    async fn close_frame(&mut self) -> Option<(u16, String)> {
        loop {
            let (op, payload) = self.read_frame().await?;
            if op == OP_CLOSE {
                assert!(payload.len() >= 2, "a close frame with a code");
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                return Some((code, String::from_utf8_lossy(&payload[2..]).to_string()));
            }
        }
    }

    /// Answers the server's Close, as a client completing the closing handshake does.
    async fn answer_close(&mut self) {
        self.write_frame(0x80 | OP_CLOSE, &[]).await;
    }

    /// Whether the server closes the TCP connection within 10 s.
    async fn ends(&mut self) -> bool {
        let mut buf = [0u8; 256];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), async {
                loop {
                    match self.tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => continue,
                    }
                }
            })
            .await,
            Ok(())
        )
    }
}

/// Another client is served normally.
async fn still_serves(s: &TestServer) {
    let mut c = WsClient::connect(&s.ws_url()).await;
    let r = c.request("container_list_request", json!({})).await;
    assert_eq!(r["type"], "container_list_response", "{r}");
    assert!(r["data"]["error"].is_null(), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_close_is_answered_with_a_close_echoing_its_code() {
    let s = TestServer::start().await;
    // On the wire: the server's Close echoes the client's code and reason, then the TCP
    // connection ends.
    let mut raw = RawWs::connect(s.addr).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"bye");
    raw.write_frame(0x80 | OP_CLOSE, &payload).await;
    assert_eq!(raw.close_frame().await, Some((1000, "bye".into())));
    assert!(
        raw.ends().await,
        "the server ends the connection after the handshake"
    );

    // A normal client sees a clean close (not 1006), with its own application code too.
    let (mut ws, _) = tokio_tungstenite::connect_async(s.ws_url())
        .await
        .expect("connect");
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4000),
        reason: "done".into(),
    })))
    .await
    .expect("send close");
    let reply = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a reply within 10 s");
    match reply {
        Some(Ok(Message::Close(Some(f)))) => {
            assert_eq!(u16::from(f.code), 4000);
            assert_eq!(f.reason.as_str(), "done");
        }
        other => panic!("expected the server's Close, got {other:?}"),
    }
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_get_pongs_and_an_oversized_ping_is_a_protocol_error() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(s.addr).await;
    // The largest ping a control frame may carry is answered with the same payload.
    let payload = vec![b'p'; 125];
    raw.write_frame(0x80 | OP_PING, &payload).await;
    assert_eq!(raw.read_frame().await, Some((OP_PONG, payload)));

    // One byte more is a protocol error: 1002 with a reason that says so, never 1009.
    raw.write_frame(0x80 | OP_PING, &[b'p'; 126]).await;
    let (code, reason) = raw.close_frame().await.expect("a close frame");
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("125 bytes"), "{reason}");
    raw.answer_close().await;
    assert!(raw.ends().await);
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_closed_with_1002() {
    let s = TestServer::start().await;
    // Each on a connection of its own: (first byte, payload, what the reason names).
    let cases: [(u8, &[u8], &str); 4] = [
        // RSV1 set without an extension that defines it.
        (0x80 | 0x40 | OP_TEXT, b"{}", "Reserved bits"),
        // Opcode 0x3 is reserved.
        (0x80 | 0x3, b"x", "invalid opcode"),
        // A fragmented ping.
        (OP_PING, b"x", "Fragmented control frame"),
        // A continuation with nothing to continue.
        (0x80, b"x", "Continue frame"),
    ];
    for (first, payload, named) in cases {
        let mut raw = RawWs::connect(s.addr).await;
        raw.write_frame(first, payload).await;
        let (code, reason) = raw.close_frame().await.expect("a close frame");
        assert_eq!(code, 1002, "{first:#x}: {reason}");
        assert!(reason.contains(named), "{first:#x}: {reason}");
        raw.answer_close().await;
        assert!(raw.ends().await);
    }
    // A client frame without a mask.
    let mut raw = RawWs::connect(s.addr).await;
    raw.tcp
        .write_all(&[0x80 | OP_TEXT, 2, b'{', b'}'])
        .await
        .expect("write");
    let (code, reason) = raw.close_frame().await.expect("a close frame");
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("unmasked frame"), "{reason}");
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_frame_that_is_not_utf8_is_closed_with_1007() {
    let s = TestServer::start().await;
    let mut raw = RawWs::connect(s.addr).await;
    raw.write_frame(0x80 | OP_TEXT, b"{\"type\":\"\xff\xfe\"}")
        .await;
    let (code, reason) = raw.close_frame().await.expect("a close frame");
    assert_eq!(code, 1007, "{reason}");
    assert_eq!(reason, "invalid UTF-8 in a text frame");
    raw.answer_close().await;
    assert!(raw.ends().await);
    still_serves(&s).await;
}

/// Every frame up to and including the response to `id`, and their total size in bytes.
async fn frames_to(c: &mut WsClient, id: &str) -> (Vec<Value>, usize) {
    let mut frames = Vec::new();
    let mut bytes = 0;
    loop {
        let f = c.next_frame().await;
        bytes += f.payload.to_string().len();
        let done = f.payload["data"]["requestId"] == id && f.type_name().ends_with("_response");
        frames.push(f.payload);
        if done {
            return (frames, bytes);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_quote_at_most_a_short_prefix_of_large_input() {
    let s = TestServer::start().await;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let huge = "y".repeat(3_000_000);
    // A value the server names in its error (a variant it does not know: it is quoted in the
    // `system_error` and again in the error response), and a type it does not know.
    let id = c
        .send_request(
            "node_register_request",
            json!({ "nodeId": "n", "apiEndpoint": "http://127.0.0.1:1", "liveness": huge }),
        )
        .await;
    let (frames, bytes) = frames_to(&mut c, &id).await;
    assert!(bytes < 8 * 1024, "{bytes} bytes sent back for a 3 MB value");
    let response = frames.last().expect("a response");
    let error = response["data"]["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{frames:?}"));
    assert!(error.contains("unknown variant `yyyy"), "{error}");
    assert!(
        error.contains("bytes)"),
        "the length of what was cut: {error}"
    );
    assert!(error.len() <= 1100 + 100, "{} bytes", error.len());

    // A type it does not know gets a `system_error` only (a typed response would echo it).
    c.send_request(&format!("{huge}_request"), json!({})).await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "system_error", "{:?}", f.payload);
    let bytes = f.payload.to_string().len();
    assert!(bytes < 4 * 1024, "{bytes} bytes sent back for a 3 MB type");

    // A bad cursor in a subscribe frame.
    c.send_text(&json!({"type":"subscribe","sessionId":"s","afterCursor": huge}).to_string())
        .await;
    let f = c.next_frame().await;
    assert_eq!(f.type_name(), "system_error", "{:?}", f.payload);
    assert!(
        f.payload.to_string().len() < 4 * 1024,
        "{} bytes",
        f.payload.to_string().len()
    );
    // The connection is still in use.
    let r = c.request("container_list_request", json!({})).await;
    assert!(r["data"]["error"].is_null(), "{r}");
}

/// An image to send messages to.
async fn image(c: &mut WsClient) -> String {
    let r = c
        .request("container_create_request", json!({"containerId":"limits"}))
        .await;
    assert!(r["data"]["error"].is_null(), "{r}");
    let r = c
        .request(
            "image_create_request",
            json!({"containerId":"limits","config":{"name":"Limits"}}),
        )
        .await;
    r["data"]["record"]["imageId"]
        .as_str()
        .expect("an imageId")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_largest_content_fits_rest_and_websocket_alike() {
    let s = TestServer::start().await;
    let limit = agentvm::Limits::default().max_content_bytes;
    let max_frame = agentvm_server::ServerConfig::default().max_frame_bytes;
    let mut c = WsClient::connect(&s.ws_url()).await;
    let image_id = image(&mut c).await;
    let path = format!("/v1/images/{image_id}/messages");
    let over_message = format!("content is {} bytes; the limit is {limit}", limit + 1);

    // The largest content: accepted by both.
    let body = json!({ "content": "a".repeat(limit) }).to_string();
    let (st, text) = http(s.addr, "POST", &path, &[], Some(&body)).await;
    assert_eq!(st, 202, "{}", &text[..text.len().min(300)]);
    let r = c
        .request(
            "message_send_request",
            json!({ "imageId": image_id, "content": "a".repeat(limit) }),
        )
        .await;
    assert!(r["data"]["error"].is_null(), "{r}");

    // One byte more: refused by both, with the same clear message.
    let body = json!({ "content": "a".repeat(limit + 1) }).to_string();
    let (st, text) = http(s.addr, "POST", &path, &[], Some(&body)).await;
    assert_eq!(st, 400, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["kind"], "invalid_input");
    assert_eq!(v["error"], over_message);
    let r = c
        .request(
            "message_send_request",
            json!({ "imageId": image_id, "content": "a".repeat(limit + 1) }),
        )
        .await;
    assert_eq!(r["data"]["error"], over_message, "{r}");
    assert_eq!(r["data"]["errorKind"], "invalid_input", "{r}");

    // The envelope limit is one value too: a body or a message of `max_frame_bytes` reaches
    // the runtime (which refuses its content), one byte more is refused at the door.
    let pad = |n: usize| {
        let shell = json!({ "content": "" }).to_string().len();
        json!({ "content": "b".repeat(n - shell) }).to_string()
    };
    let (st, text) = http(s.addr, "POST", &path, &[], Some(&pad(max_frame))).await;
    assert_eq!(st, 400, "{text}");
    assert!(text.contains("the limit is"), "{text}");
    let (st, text) = http(s.addr, "POST", &path, &[], Some(&pad(max_frame + 1))).await;
    assert_eq!(st, 413, "{text}");
    let v: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(v["kind"], "invalid_input", "{text}");
    assert_eq!(
        v["error"],
        format!("request body larger than {max_frame} bytes (max_frame_bytes, the WebSocket message limit too)")
    );

    let mut raw = RawWs::connect(s.addr).await;
    let frame = vec![b' '; max_frame + 1];
    raw.write_frame(0x80 | OP_TEXT, &frame).await;
    let (code, reason) = raw.close_frame().await.expect("a close frame");
    assert_eq!(code, 1009, "{reason}");
    assert_eq!(reason, format!("message larger than {max_frame} bytes"));
    still_serves(&s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_authenticating_too_a_close_is_answered_and_a_bad_frame_is_1002() {
    let s = TestServer::start_with(
        agentvm_server::ServerConfig {
            auth: agentvm_server::AuthMode::Required,
            ..Default::default()
        },
        agentvm::MockDriver::default(),
    )
    .await;
    // The connection awaits its `auth` frame; the client closes instead.
    let mut raw = RawWs::connect(s.addr).await;
    let mut payload = 1001u16.to_be_bytes().to_vec();
    payload.extend_from_slice(b"leaving");
    raw.write_frame(0x80 | OP_CLOSE, &payload).await;
    assert_eq!(raw.close_frame().await, Some((1001, "leaving".into())));
    assert!(raw.ends().await);

    // An oversized ping instead of the `auth` frame: a protocol error, not a failed auth.
    let mut raw = RawWs::connect(s.addr).await;
    raw.write_frame(0x80 | OP_PING, &[0; 200]).await;
    let (code, reason) = raw.close_frame().await.expect("a close frame");
    assert_eq!(code, 1002, "{reason}");
    assert!(reason.contains("125 bytes"), "{reason}");
    raw.answer_close().await;
    assert!(raw.ends().await);

    // Other clients are still served (and still need a token).
    let (st, _) = http(s.addr, "GET", "/health", &[], None).await;
    assert_eq!(st, 200);
}

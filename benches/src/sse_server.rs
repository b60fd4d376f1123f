//! Synthetic provider streams, and a loopback HTTP/1.1 server that streams one as an
//! OpenAI-compatible chat completion, one SSE event per HTTP chunk, noting when it wrote each.
//!
//! The server is the minimum of `tests/src/replay_server.rs` the latency bench needs: read a
//! request, answer `200 text/event-stream` with a chunked body, `TCP_NODELAY` on, and record an
//! [`Instant`] just before each chunk's write so a receiver can compute chunk-to-event latency.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The text of delta `i`: short, with a little non-ASCII, and parseable back to `i`.
pub fn delta_text(i: usize) -> String {
    format!("tök{i} ")
}

/// The index of a [`delta_text`].
pub fn delta_index(text: &str) -> Option<usize> {
    text.strip_prefix("tök")?.trim_end().parse().ok()
}

/// An Anthropic Messages stream with `deltas` `content_block_delta` text events (and a `ping`
/// every 100), as the API sends it.
pub fn anthropic_transcript(deltas: usize) -> String {
    let mut s = String::with_capacity(deltas * 140 + 1024);
    s.push_str("event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-bench\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n");
    s.push_str("event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n");
    for i in 0..deltas {
        if i % 100 == 0 {
            s.push_str("event: ping\ndata: {\"type\": \"ping\"}\n\n");
        }
        s.push_str("event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"");
        s.push_str(&delta_text(i));
        s.push_str("\"}}\n\n");
    }
    s.push_str(
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    );
    s.push_str("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":");
    s.push_str(&deltas.to_string());
    s.push_str("}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
    s
}

/// One OpenAI chat completion chunk event carrying `content`.
pub fn openai_delta_event(content: &str) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\"model\":\"gpt-bench\",\"system_fingerprint\":\"fp_bench\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"logprobs\":null,\"finish_reason\":null}}]}}\n\n",
        serde_json::Value::String(content.into())
    )
}

/// The events that end an OpenAI stream: `finish_reason`, usage, `[DONE]`.
pub fn openai_tail(deltas: usize) -> String {
    format!(
        "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\"model\":\"gpt-bench\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"logprobs\":null,\"finish_reason\":\"stop\"}}]}}\n\n\
         data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1731000000,\"model\":\"gpt-bench\",\"choices\":[],\"usage\":{{\"prompt_tokens\":19,\"completion_tokens\":{deltas},\"total_tokens\":{}}}}}\n\n\
         data: [DONE]\n\n",
        deltas + 19
    )
}

/// An OpenAI-compatible chat completions stream with `deltas` content chunks.
pub fn openai_transcript(deltas: usize) -> String {
    let mut s = String::with_capacity(deltas * 300 + 1024);
    s.push_str(&openai_delta_event(""));
    for i in 0..deltas {
        s.push_str(&openai_delta_event(&delta_text(i)));
    }
    s.push_str(&openai_tail(deltas));
    s
}

/// How the server paces its chunks.
#[derive(Debug, Clone, Copy)]
pub enum Pacing {
    /// Every chunk written as soon as the previous one was.
    BackToBack,
    /// A sleep of this long before each delta chunk after the first.
    Every(Duration),
}

/// A loopback server answering every request with an OpenAI stream of `deltas` text chunks.
/// It stops when dropped.
pub struct SseServer {
    url: String,
    writes: Arc<Mutex<Vec<Vec<Instant>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SseServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SseServer {
    /// Starts the server on 127.0.0.1:0. Must run inside a tokio runtime.
    pub async fn start(deltas: usize, pacing: Pacing) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding 127.0.0.1:0");
        let url = format!(
            "http://{}",
            listener.local_addr().expect("the bound address")
        );
        let writes: Arc<Mutex<Vec<Vec<Instant>>>> = Arc::default();
        let w = writes.clone();
        let task = tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, deltas, pacing, w.clone()));
            }
        });
        SseServer { url, writes, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// For each reply served so far, when the chunk of each delta was written (by delta index).
    pub fn writes(&self) -> Vec<Vec<Instant>> {
        self.writes.lock().expect("the write log").clone()
    }
}

/// Reads one request (head and `content-length` body); `false` when the client went away.
async fn read_request(socket: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut have = buf.len() - (head_end + 4);
    while have < length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => have += n,
        }
    }
    true
}

async fn write_chunk(socket: &mut TcpStream, data: &[u8]) -> std::io::Result<()> {
    let mut framed = format!("{:x}\r\n", data.len()).into_bytes();
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    socket.write_all(&framed).await?;
    socket.flush().await
}

async fn serve(
    mut socket: TcpStream,
    deltas: usize,
    pacing: Pacing,
    writes: Arc<Mutex<Vec<Vec<Instant>>>>,
) {
    if !read_request(&mut socket).await {
        return;
    }
    let _ = socket.set_nodelay(true);
    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    if socket.write_all(head.as_bytes()).await.is_err()
        || write_chunk(&mut socket, openai_delta_event("").as_bytes())
            .await
            .is_err()
    {
        return;
    }
    let events: Vec<String> = (0..deltas)
        .map(|i| openai_delta_event(&delta_text(i)))
        .collect();
    let mut stamps = Vec::with_capacity(deltas);
    for (i, event) in events.iter().enumerate() {
        if let (Pacing::Every(d), true) = (pacing, i > 0) {
            tokio::time::sleep(d).await;
        }
        stamps.push(Instant::now());
        if write_chunk(&mut socket, event.as_bytes()).await.is_err() {
            return;
        }
    }
    writes.lock().expect("the write log").push(stamps);
    let _ = write_chunk(&mut socket, openai_tail(deltas).as_bytes()).await;
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentvm::llm::anthropic::AnthropicDecoder;
    use agentvm::llm::openai::OpenAiDecoder;
    use agentvm::llm::sse::SseParser;
    use agentvm::LlmEvent;

    fn texts(events: &[LlmEvent]) -> Vec<usize> {
        events
            .iter()
            .filter_map(|e| match e {
                LlmEvent::TextDelta(t) => delta_index(t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn transcripts_decode_to_their_deltas() {
        let mut parser = SseParser::new();
        let mut sse = Vec::new();
        parser.feed(anthropic_transcript(250).as_bytes(), &mut sse);
        parser.finish(&mut sse);
        let mut decoder = AnthropicDecoder::new();
        let mut out = Vec::new();
        for e in &sse {
            decoder.decode(e, &mut out);
        }
        assert_eq!(texts(&out), (0..250).collect::<Vec<_>>());
        assert_eq!(out.last(), Some(&LlmEvent::MessageStop));

        let mut parser = SseParser::new();
        let mut sse = Vec::new();
        parser.feed(openai_transcript(250).as_bytes(), &mut sse);
        parser.finish(&mut sse);
        let mut decoder = OpenAiDecoder::new();
        let mut out = Vec::new();
        for e in &sse {
            decoder.decode(e, &mut out);
        }
        assert_eq!(texts(&out), (0..250).collect::<Vec<_>>());
        assert_eq!(out.last(), Some(&LlmEvent::MessageStop));
    }
}

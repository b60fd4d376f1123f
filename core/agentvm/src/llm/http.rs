//! What the HTTP drivers share: the client, the settings of a connection to a provider, and the
//! stream that turns a response body into [`LlmEvent`]s through an SSE parser and a provider's
//! decoder.
//!
//! The split follows the rest of the runtime: the decoders are pure (an SSE event in, LLM
//! events out, unit-tested without a socket); this file does the I/O. The reply stream is lazy
//! and owns the response, so dropping it (an interrupt) closes the connection at once.

use super::retry::{self, RetryPolicy};
use super::sse::{SseEvent, SseParser};
use super::{LlmEvent, LlmStream};
use futures::future::BoxFuture;
use futures::StreamExt;
use std::collections::VecDeque;
use std::time::Duration;

/// How a driver reaches its provider.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The base URL, e.g. `https://api.anthropic.com` or `http://127.0.0.1:8080`.
    pub base_url: String,
    /// The API key, when the server wants one.
    pub api_key: Option<String>,
    /// Retries of a failed request.
    pub retry: RetryPolicy,
    /// How long one attempt may wait for the response headers, and the longest silence
    /// tolerated inside a streaming reply. Both fail with the `timeout` code.
    pub timeout: Duration,
}

impl HttpSettings {
    /// Settings for `base_url` with the given key, 2 retries and a 10 minute timeout (the
    /// SDKs' defaults).
    pub fn new(base_url: impl Into<String>, api_key: Option<String>) -> Self {
        HttpSettings {
            base_url: base_url.into(),
            api_key,
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(600),
        }
    }

    /// `path` under the base URL. A base that already ends in `/v1` is not given a second one,
    /// so both `http://host:11434` and `http://host:11434/v1` work.
    pub fn endpoint(&self, path_after_v1: &str) -> String {
        let base = self.base_url.trim_end_matches('/');
        if base.ends_with("/v1") {
            format!("{base}/{path_after_v1}")
        } else {
            format!("{base}/v1/{path_after_v1}")
        }
    }
}

/// A client with the settings' timeouts. Connection pooling is per client: a driver keeps one.
pub(crate) fn client(settings: &HttpSettings) -> crate::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(settings.timeout.min(Duration::from_secs(30)))
        .read_timeout(settings.timeout)
        .user_agent(concat!("agentvm/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| crate::Error::Internal(format!("building the HTTP client: {e}")))
}

/// A provider's stream format: SSE events in, LLM events out. Pure.
pub(crate) trait ReplyDecoder: Send + 'static {
    /// Handles one SSE event.
    fn event(&mut self, event: SseEvent, out: &mut Vec<LlmEvent>);
    /// The body ended; pushes what completes the reply, or an error if it was cut short.
    fn end(&mut self, out: &mut Vec<LlmEvent>);
}

#[cfg(test)]
/// Runs a decoder over whole input, for tests: feeds `chunks` as they come, then
/// ends, stopping after the first `MessageStop` or `Error` like the live stream does.
pub(crate) fn decode_all<'a>(
    decoder: &mut dyn ReplyDecoder,
    chunks: impl IntoIterator<Item = &'a [u8]>,
) -> Vec<LlmEvent> {
    let mut parser = SseParser::new();
    let mut sse = Vec::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed(chunk, &mut sse);
        for e in sse.drain(..) {
            decoder.event(e, &mut out);
            if let Some(end) = out.iter().position(is_final) {
                out.truncate(end + 1);
                return out;
            }
        }
    }
    parser.finish(&mut sse);
    for e in sse.drain(..) {
        decoder.event(e, &mut out);
    }
    if !out.iter().any(is_final) {
        decoder.end(&mut out);
    }
    if let Some(end) = out.iter().position(is_final) {
        out.truncate(end + 1);
    }
    out
}

fn is_final(e: &LlmEvent) -> bool {
    matches!(e, LlmEvent::MessageStop | LlmEvent::Error { .. })
}

/// The state of a reply stream between polls.
struct Reply<D> {
    provider: &'static str,
    start: Option<BoxFuture<'static, Result<reqwest::Response, LlmEvent>>>,
    body: Option<reqwest::Response>,
    parser: SseParser,
    decoder: D,
    sse: Vec<SseEvent>,
    out: Vec<LlmEvent>,
    pending: VecDeque<LlmEvent>,
    finished: bool,
}

/// Sends a streaming request with retries and decodes its SSE body. Nothing happens until the
/// stream is polled; dropping it cancels the request.
pub(crate) fn reply_stream<D: ReplyDecoder>(
    provider: &'static str,
    settings: &HttpSettings,
    request: impl Fn() -> reqwest::RequestBuilder + Send + Sync + 'static,
    decoder: D,
) -> LlmStream {
    let policy = settings.retry.clone();
    let timeout = settings.timeout;
    let start = Box::pin(async move { retry::send(&policy, provider, timeout, request).await });
    let state = Reply {
        provider,
        start: Some(start),
        body: None,
        parser: SseParser::new(),
        decoder,
        sse: Vec::new(),
        out: Vec::new(),
        pending: VecDeque::new(),
        finished: false,
    };
    futures::stream::unfold(state, move |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((e, st));
            }
            if st.finished {
                return None;
            }
            if let Some(start) = st.start.take() {
                match start.await {
                    Ok(response) if is_json(&response) => {
                        let body = retry::read_error_body(response, timeout).await;
                        st.finish_with(json_instead_of_stream(st.provider, &body));
                    }
                    Ok(response) => st.body = Some(response),
                    Err(error) => st.finish_with(error),
                }
                continue;
            }
            let body = st.body.as_mut()?;
            match body.chunk().await {
                Ok(Some(chunk)) => {
                    st.parser.feed(chunk.as_ref(), &mut st.sse);
                    st.decode();
                }
                Err(e) => {
                    let code = if e.is_timeout() { "timeout" } else { "network" };
                    let message = format!(
                        "the connection to {} failed during the reply: {}",
                        st.provider,
                        retry::error_chain(&e)
                    );
                    st.finish_with(LlmEvent::Error {
                        message,
                        code: Some(code.into()),
                    });
                }
                Ok(None) => {
                    st.parser.finish(&mut st.sse);
                    st.decode();
                    if !st.finished {
                        st.decoder.end(&mut st.out);
                        st.flush();
                        st.finished = true;
                        st.body = None;
                    }
                }
            }
        }
    })
    .boxed()
}

/// A success answered with JSON instead of an event stream: a server that ignored
/// `stream: true`, or one that reports errors with status 200.
fn is_json(response: &reqwest::Response) -> bool {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("json") && !ct.contains("event-stream"))
}

fn json_instead_of_stream(provider: &str, body: &str) -> LlmEvent {
    match retry::provider_error(body) {
        Some((message, kind)) => LlmEvent::Error {
            message: format!("{provider} reported an error: {message}"),
            code: Some(
                kind.as_deref()
                    .map(retry::code_for_error_type)
                    .unwrap_or("invalid_request")
                    .into(),
            ),
        },
        None => LlmEvent::Error {
            message: format!(
                "{provider} answered with JSON instead of an event stream (does it support \
                 stream: true?): {}",
                body.chars().take(300).collect::<String>()
            ),
            code: Some("invalid_request".into()),
        },
    }
}

impl<D: ReplyDecoder> Reply<D> {
    /// Decodes the parsed SSE events; stops reading after the reply's last event.
    fn decode(&mut self) {
        for e in std::mem::take(&mut self.sse) {
            if self.finished {
                break;
            }
            self.decoder.event(e, &mut self.out);
            self.flush();
        }
    }

    fn flush(&mut self) {
        for e in self.out.drain(..) {
            if self.finished {
                break;
            }
            if is_final(&e) {
                self.finished = true;
                // Dropping the body closes the connection: nothing after the end is read.
                self.body = None;
            }
            self.pending.push_back(e);
        }
    }

    fn finish_with(&mut self, e: LlmEvent) {
        self.pending.push_back(e);
        self.finished = true;
        self.body = None;
    }
}

//! Fixtures for the LLM driver tests: drivers pointed at a [`ReplayServer`](crate::replay_server),
//! with retries fast enough for tests.

use crate::replay_server::{fixture, Chunking, RecordedRequest, ReplayServer, Reply};
use agentvm::llm::retry::RetryPolicy;
use agentvm::{
    AnthropicDriver, HttpSettings, LlmDriver, LlmEvent, LlmRequest, Message, OpenAiDriver, Usage,
};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Settings for `url`: a test key, 2 retries backing off from 10 ms, a 10 s timeout.
pub fn settings(url: &str) -> HttpSettings {
    let mut s = HttpSettings::new(url, Some("test-key".into()));
    s.retry = RetryPolicy {
        max_retries: 2,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(40),
    };
    s.timeout = Duration::from_secs(10);
    s
}

/// An Anthropic driver for `url` (default model `claude-test`).
pub fn anthropic(url: &str) -> Arc<dyn LlmDriver> {
    Arc::new(AnthropicDriver::new(settings(url), "claude-test").expect("build the driver"))
}

/// An OpenAI-compatible driver for `url` (default model `gpt-test`).
pub fn openai(url: &str) -> Arc<dyn LlmDriver> {
    Arc::new(OpenAiDriver::new(settings(url), "gpt-test").expect("build the driver"))
}

/// A one-message request to `model`.
pub fn request(model: &str, text: &str) -> LlmRequest {
    LlmRequest {
        model: model.into(),
        system: Some("You are terse.".into()),
        messages: vec![Message::user("msg_1".into(), text.into(), 0)],
        tools: vec![],
        max_tokens: 256,
    }
}

/// Every event of a reply, with a 10 s bound.
pub async fn collect(driver: &dyn LlmDriver, request: LlmRequest) -> Vec<LlmEvent> {
    tokio::time::timeout(
        Duration::from_secs(10),
        driver.stream(request).collect::<Vec<_>>(),
    )
    .await
    .expect("the reply ended within 10 s")
}

/// The events a driver decodes from the SSE `transcript` (a file under `tests/fixtures`) served
/// cut as each of `chunkings`, asserted equal under every cut, and the last request it sent.
/// `driver` makes the driver for a server URL ([`anthropic`] or [`openai`]); `model` goes into
/// the request.
pub async fn decoded_under(
    chunkings: &[Chunking],
    driver: fn(&str) -> Arc<dyn LlmDriver>,
    model: &str,
    transcript: &str,
) -> (Vec<LlmEvent>, RecordedRequest) {
    let mut first: Option<Vec<LlmEvent>> = None;
    let mut last_request = None;
    for c in chunkings {
        let server =
            ReplayServer::start([Reply::sse(fixture(transcript)).chunking(c.clone())]).await;
        let events = collect(&*driver(&server.url()), request(model, "Hi")).await;
        match &first {
            None => first = Some(events),
            Some(f) => assert_eq!(&events, f, "{transcript} cut as {c:?}"),
        }
        last_request = server.requests().pop();
    }
    (
        first.expect("at least one chunking"),
        last_request.expect("the driver sent a request"),
    )
}

/// The `usage` a decoded `message_delta` carries.
pub fn usage(input_tokens: u64, output_tokens: u64) -> Option<Usage> {
    Some(Usage {
        input_tokens,
        output_tokens,
    })
}

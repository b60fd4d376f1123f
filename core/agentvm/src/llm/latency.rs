//! How long model requests take, by provider: every driver the runtime uses is wrapped in a
//! [`TimedDriver`], which times each reply from the request to the end of its stream.

use super::{LlmDriver, LlmEvent, LlmRequest, LlmStream};
use crate::scheduler::latency::LLM_BUCKETS;
use crate::scheduler::{HistogramSnapshot, LatencyHistogram};
use futures::Stream;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

/// The `provider` label values: a fixed set, so a driver's name can never grow the metrics.
/// A driver outside the known ones (an embedder's own) counts as `other`.
pub const PROVIDERS: [&str; 4] = ["anthropic", "mock", "openai", "other"];

/// Model request latency per provider in [`PROVIDERS`].
#[derive(Debug)]
pub struct LlmLatency {
    by_provider: [LatencyHistogram; PROVIDERS.len()],
}

impl Default for LlmLatency {
    fn default() -> Self {
        LlmLatency {
            by_provider: std::array::from_fn(|_| LatencyHistogram::new(LLM_BUCKETS)),
        }
    }
}

impl LlmLatency {
    /// The index in [`PROVIDERS`] of a driver named `name`.
    fn provider_index(name: &str) -> usize {
        PROVIDERS
            .iter()
            .position(|p| *p == name)
            .unwrap_or(PROVIDERS.len() - 1)
    }

    /// Each provider's histogram now, in [`PROVIDERS`] order.
    pub fn snapshots(&self) -> Vec<(&'static str, HistogramSnapshot)> {
        PROVIDERS
            .iter()
            .zip(&self.by_provider)
            .map(|(p, h)| (*p, h.snapshot()))
            .collect()
    }
}

/// A driver whose replies are timed into an [`LlmLatency`].
pub(crate) struct TimedDriver {
    inner: Arc<dyn LlmDriver>,
    latency: Arc<LlmLatency>,
    provider: usize,
}

impl TimedDriver {
    /// Wraps `inner`, counting into `latency` under its provider.
    pub(crate) fn new(inner: Arc<dyn LlmDriver>, latency: Arc<LlmLatency>) -> Self {
        let provider = LlmLatency::provider_index(inner.name());
        TimedDriver {
            inner,
            latency,
            provider,
        }
    }
}

impl LlmDriver for TimedDriver {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn default_model(&self) -> &str {
        self.inner.default_model()
    }

    fn endpoint(&self) -> Option<&str> {
        self.inner.endpoint()
    }

    fn stream(&self, request: LlmRequest) -> LlmStream {
        Box::pin(TimedStream {
            inner: self.inner.stream(request),
            started: Instant::now(),
            latency: self.latency.clone(),
            provider: self.provider,
            observed: false,
        })
    }
}

/// A reply's stream that records its latency once: when it ends, or when it is dropped before
/// (the agent drops a reply once it has what it needs, or on an interrupt or a timeout).
struct TimedStream {
    inner: LlmStream,
    started: Instant,
    latency: Arc<LlmLatency>,
    provider: usize,
    observed: bool,
}

impl TimedStream {
    fn observe(&mut self) {
        if !self.observed {
            self.observed = true;
            if let Some(h) = self.latency.by_provider.get(self.provider) {
                h.observe(self.started.elapsed());
            }
        }
    }
}

impl Stream for TimedStream {
    type Item = LlmEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<LlmEvent>> {
        let next = self.inner.as_mut().poll_next(cx);
        if let Poll::Ready(None) = next {
            self.observe();
        }
        next
    }
}

impl Drop for TimedStream {
    fn drop(&mut self) {
        self.observe();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::MockDriver;
    use futures::StreamExt;

    #[tokio::test]
    async fn a_reply_is_timed_once_under_its_provider() {
        let latency = Arc::new(LlmLatency::default());
        let driver = TimedDriver::new(Arc::new(MockDriver::default()), latency.clone());
        let request = LlmRequest {
            model: "mock".into(),
            system: None,
            messages: vec![crate::model::Message::user("m1".into(), "hello".into(), 0)],
            tools: vec![],
            max_tokens: 64,
        };
        let mut stream = driver.stream(request);
        while stream.next().await.is_some() {}
        drop(stream);
        let snaps = latency.snapshots();
        let count = |name: &str| snaps.iter().find(|(p, _)| *p == name).map(|(_, s)| s.count);
        assert_eq!(count("mock"), Some(1));
        assert_eq!(count("openai"), Some(0));
        assert_eq!(LlmLatency::provider_index("someone-else"), 3);
    }

    #[test]
    fn the_wrapper_answers_for_its_driver() {
        let settings = crate::llm::http::HttpSettings::new("http://127.0.0.1:9", None);
        let inner = crate::llm::openai::OpenAiDriver::new(settings, "m").expect("driver");
        let driver = TimedDriver::new(Arc::new(inner), Arc::new(LlmLatency::default()));
        assert_eq!(driver.name(), "openai");
        assert_eq!(driver.default_model(), "m");
        assert_eq!(driver.endpoint(), Some("http://127.0.0.1:9"));
    }
}

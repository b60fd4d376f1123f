//! Event streams, taken in batches of JSON.

use crate::error::AgentVmError;
use crate::task::on_runtime;
use std::sync::Arc;
use std::time::Duration;

/// A stream of events from [`AgentVm::subscribe`](crate::AgentVm::subscribe). Each batch is a
/// JSON array of wire events (`type`, `data`, `timestamp`, ...; `cursor` for events of a
/// topic). A subscriber that falls behind is resumed from its last cursor; a gap the replay
/// log cannot fill arrives as one `{"type": "subscription_gap", ...}` event. Any thread may
/// call it; each batch goes to one caller.
#[derive(uniffi::Object)]
pub struct EventStream {
    /// embed's stream, shared with the task of a waiting `next`.
    stream: Arc<agentvm_embed::EventStream>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl EventStream {
    pub(crate) fn new(stream: agentvm_embed::EventStream) -> Self {
        EventStream {
            stream: Arc::new(stream),
        }
    }
}

/// `max` as a batch limit (0: everything waiting).
fn limit(max: u32) -> usize {
    match max {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    }
}

#[uniffi::export]
impl EventStream {
    /// Up to `max` events (0: all waiting) as one JSON array text, waiting at most
    /// `timeout_ms` (absent: until one arrives) for the first. `"[]"` when the time ran out;
    /// `None` once the stream has ended (closed, or its runtime closed) and every event was
    /// taken.
    #[uniffi::method(default(max = 0, timeout_ms = None))]
    pub async fn next(
        &self,
        max: u32,
        timeout_ms: Option<u64>,
    ) -> Result<Option<String>, AgentVmError> {
        let stream = self.stream.clone();
        on_runtime(async move {
            let timeout = timeout_ms.map(Duration::from_millis);
            Ok(match stream.next_batch(limit(max), timeout).await {
                Some(batch) => Some(batch),
                None if stream.is_ended() => None,
                None => Some("[]".to_string()),
            })
        })
        .await
    }

    /// The events waiting now (up to `max`, 0: all), without waiting: `"[]"` when none
    /// wait, `None` once the stream has ended and every event was taken.
    #[uniffi::method(default(max = 0))]
    pub fn try_next(&self, max: u32) -> Option<String> {
        match self.stream.try_next_batch(limit(max)) {
            Some(batch) => Some(batch),
            None if self.stream.is_ended() => None,
            None => Some("[]".to_string()),
        }
    }

    /// Ends the stream: a waiting `next` returns; later ones give `None` once the events
    /// already waiting were taken.
    pub fn close(&self) {
        self.stream.close();
    }

    /// Whether the stream has ended and every event was taken.
    pub fn is_ended(&self) -> bool {
        self.stream.is_ended()
    }
}

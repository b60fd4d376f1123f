//! `EventStream`: embed's event stream, taken in batches. Each event is the protocol's JSON
//! as a dict (`type`, `data`, `timestamp`, `source`, `category`, `intent`, `context`) plus
//! `cursor` for events of a topic. The overflow policy is embed's: a subscriber that falls
//! behind is resumed from its last cursor, and what cannot be replayed is one
//! `subscription_gap` event.

use crate::call::{Call, Out};
use pyo3::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// A stream of events, taken in batches with `next_batch`; `close()` ends it.
#[pyclass(module = "agentvm._native", frozen)]
pub struct EventStream {
    /// Shared with the call waiting for a batch.
    stream: Arc<agentvm_embed::EventStream>,
}

impl EventStream {
    pub(crate) fn new(stream: agentvm_embed::EventStream) -> Self {
        EventStream {
            stream: Arc::new(stream),
        }
    }
}

#[pymethods]
impl EventStream {
    /// Up to `max` events as a list, waiting at most `timeout` seconds (None: until one
    /// arrives) for the first; the call gives None when the time ran out or the stream ended
    /// (see `ended`).
    #[pyo3(signature = (max=256, timeout=None))]
    fn next_batch(&self, max: usize, timeout: Option<f64>) -> PyResult<Call> {
        let timeout = match timeout {
            Some(t) if t.is_finite() && t >= 0.0 => Some(Duration::from_secs_f64(t)),
            Some(_) => Some(Duration::ZERO),
            None => None,
        };
        let stream = self.stream.clone();
        Call::start(Box::pin(async move {
            Ok(Out::Batch(stream.next_batch(max, timeout).await))
        }))
    }

    /// Ends the stream: a waiting `next_batch` gives None.
    fn close(&self) {
        self.stream.close();
    }

    /// Whether the stream has ended (closed, or its runtime closed) and every event was taken.
    #[getter]
    fn ended(&self) -> bool {
        self.stream.is_ended()
    }
}

//! Event streams: embed's [`EventStream`] taken in batches (one JSON array text per call,
//! parsed once by JavaScript), or pushed to a callback. The overflow policy is embed's: a
//! subscriber that falls behind resumes transparently, with one `subscription_gap` event when
//! events may have been lost.

use crate::settle::{settle, CoreResult};
use agentvm_embed::EventStream;
use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;
use std::sync::Arc;
use std::time::Duration;

/// Events per batch when the caller gives no bound.
const DEFAULT_BATCH: usize = 1024;

/// A stream of events, taken in batches. The `agentvm` package wraps it as an async iterator
/// (`vm.events()`) or a listener (`vm.on()`); use those.
#[napi]
pub struct NativeEventStream {
    stream: Arc<EventStream>,
    /// Embed's runtime, where waits and listeners run.
    runtime: tokio::runtime::Handle,
}

impl NativeEventStream {
    pub(crate) fn new(stream: EventStream, runtime: tokio::runtime::Handle) -> Self {
        NativeEventStream {
            stream: Arc::new(stream),
            runtime,
        }
    }
}

#[napi]
impl NativeEventStream {
    /// Up to `max` events (default 1024) as a JSON array text, waiting at most `timeoutMs`
    /// (default: until one arrives) for the first; `null` when the time ran out or the stream
    /// ended. Waiting events are returned at once, without a Promise.
    #[napi(ts_return_type = "string | null | Promise<string | null>")]
    pub fn next_batch<'env>(
        &self,
        env: &'env Env,
        max: Option<u32>,
        timeout_ms: Option<u32>,
    ) -> Result<Unknown<'env>> {
        let max = max.map(|m| m as usize).unwrap_or(DEFAULT_BATCH);
        if let Some(batch) = self.stream.try_next_batch(max) {
            return batch.into_unknown(env);
        }
        if self.stream.is_ended() {
            return Null.into_unknown(env);
        }
        let stream = self.stream.clone();
        let timeout = timeout_ms.map(|ms| Duration::from_millis(ms.into()));
        settle(env, &self.runtime, async move {
            CoreResult::Ok(stream.next_batch(max, timeout).await)
        })
    }

    /// Whether the stream has ended and every event was taken.
    #[napi(getter)]
    pub fn ended(&self) -> bool {
        self.stream.is_ended()
    }

    /// Pushes every batch to `callback` from now on, instead of being pulled. The callback
    /// does not keep Node running (a weak thread-safe function); `close()` stops it.
    #[napi]
    pub fn listen(&self, callback: Function<'_, String, ()>) -> Result<()> {
        let tsfn: ThreadsafeFunction<String, (), String, Status, false, true> = callback
            .build_threadsafe_function::<String>()
            .callee_handled::<false>()
            .weak::<true>()
            .build()?;
        let stream = self.stream.clone();
        // One batch in flight at a time: a slow callback slows the pull, and the stream's
        // buffer and then the overflow policy absorb the rest, not this process's memory.
        self.runtime.spawn(async move {
            while let Some(batch) = stream.next_batch(DEFAULT_BATCH, None).await {
                if tsfn.call_async(batch).await.is_err() {
                    // The façade catches what handlers throw, so an error here means Node is
                    // shutting down: there is nobody left to call.
                    break;
                }
            }
            stream.close();
        });
        Ok(())
    }

    /// Ends the stream; a pending `nextBatch` resolves to `null`.
    #[napi]
    pub fn close(&self) {
        self.stream.close();
    }
}

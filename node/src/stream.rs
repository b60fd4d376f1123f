//! Streams of JSON items (bus events, exec output) pulled by JavaScript in batches, and
//! listeners that push batches to a callback.
//!
//! A batch is one JSON array text: JavaScript parses it with one `JSON.parse`, which is much
//! cheaper than building objects property by property through Node-API.

use crate::settle::{settle, CoreResult};
use agentvm::{BusItem, Published, Subscription};
use futures::stream::BoxStream;
use futures::{FutureExt, StreamExt};
use napi::bindgen_prelude::*;
use napi::threadsafe_function::ThreadsafeFunction;
use napi_derive::napi;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::watch;

/// Items per batch when the caller gives no bound.
const DEFAULT_BATCH: usize = 1024;

/// The source of a stream: JSON texts, one per item.
pub(crate) type Source = BoxStream<'static, String>;

/// A stream shared by its JavaScript handle, its listener task and the runtime that closes it.
pub(crate) struct StreamState {
    /// The items; `None` once ended or closed (which drops a bus subscription at once).
    source: tokio::sync::Mutex<Option<Source>>,
    /// Set by `close()`: wakes a waiting `next_batch`, which then ends the stream.
    closed: watch::Sender<bool>,
}

impl StreamState {
    pub(crate) fn new(source: Source) -> Arc<Self> {
        Arc::new(StreamState {
            source: tokio::sync::Mutex::new(Some(source)),
            closed: watch::channel(false).0,
        })
    }

    /// Up to `max` items as a JSON array, waiting for the first; `None` once ended.
    pub(crate) async fn next_batch(&self, max: usize) -> Option<String> {
        let mut closed = self.closed.subscribe();
        if *closed.borrow() {
            return None;
        }
        let mut guard = self.source.lock().await;
        let source = guard.as_mut()?;
        let first = tokio::select! {
            biased;
            item = source.next() => item,
            _ = closed.wait_for(|c| *c) => None,
        };
        let Some(first) = first else {
            *guard = None;
            return None;
        };
        let mut batch = String::with_capacity(first.len() * 2 + 2);
        batch.push('[');
        batch.push_str(&first);
        for _ in 1..max.max(1) {
            match source.next().now_or_never() {
                Some(Some(item)) => {
                    batch.push(',');
                    batch.push_str(&item);
                }
                Some(None) => {
                    *guard = None;
                    break;
                }
                None => break,
            }
        }
        batch.push(']');
        Some(batch)
    }

    /// Ends the stream: a waiting `next_batch` returns `None`, the source is dropped.
    pub(crate) fn close(&self) {
        self.closed.send_replace(true);
        if let Ok(mut guard) = self.source.try_lock() {
            *guard = None;
        }
    }
}

/// Streams a runtime keeps so that `close()` ends them all.
#[derive(Default)]
pub(crate) struct StreamRegistry(Mutex<Vec<Weak<StreamState>>>);

impl StreamRegistry {
    pub(crate) fn add(&self, state: &Arc<StreamState>) {
        let mut streams = self.0.lock().unwrap_or_else(|p| p.into_inner());
        streams.retain(|w| w.strong_count() > 0);
        streams.push(Arc::downgrade(state));
    }

    pub(crate) fn close_all(&self) {
        let streams = std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()));
        for state in streams.iter().filter_map(Weak::upgrade) {
            state.close();
        }
    }
}

/// An event as JavaScript sees it: the wire event, plus `cursor` for session events.
pub(crate) fn event_json(p: &Published) -> String {
    let json = p.json();
    match p.cursor {
        Some(cursor) if json.len() > 2 && json.starts_with('{') => {
            format!("{{\"cursor\":{cursor},{}", &json[1..])
        }
        _ => json.to_string(),
    }
}

/// A bus subscription as a source. An overflow ends it with a last item
/// `{"type":"subscription_overflowed","data":{"lastCursors":{...}}}`: resubscribe with
/// `afterCursor` to resume without a gap.
pub(crate) fn subscription_source(sub: Subscription) -> Source {
    futures::stream::unfold(Some(sub), |sub| async move {
        let mut sub = sub?;
        match sub.recv().await? {
            BusItem::Event(p) => Some((event_json(&p), Some(sub))),
            BusItem::Overflowed { last_cursors } => {
                let notice = serde_json::json!({
                    "type": "subscription_overflowed",
                    "data": { "lastCursors": last_cursors },
                });
                Some((notice.to_string(), None))
            }
        }
    })
    .boxed()
}

/// A stream of JSON items, pulled in batches. The `agentvm` package wraps it as an async
/// iterator; use that instead.
#[napi]
pub struct JsonStream {
    state: Arc<StreamState>,
}

impl JsonStream {
    pub(crate) fn new(state: Arc<StreamState>) -> Self {
        JsonStream { state }
    }
}

#[napi]
impl JsonStream {
    /// Up to `max` items (default 1024) as a JSON array text, waiting for the first one;
    /// `null` once the stream ended or was closed. A pending call keeps Node running.
    #[napi(ts_return_type = "string | null | Promise<string | null>")]
    pub fn next_batch<'env>(&self, env: &'env Env, max: Option<u32>) -> Result<Unknown<'env>> {
        let state = self.state.clone();
        let max = max.map(|m| m as usize).unwrap_or(DEFAULT_BATCH);
        settle(
            env,
            async move { CoreResult::Ok(state.next_batch(max).await) },
        )
    }

    /// Pushes every batch to `callback` from now on, instead of being pulled. The callback
    /// does not keep Node running (a weak thread-safe function); `close()` stops it.
    #[napi]
    pub fn listen(&self, callback: Function<'_, String, ()>) -> Result<()> {
        start_listener(self.state.clone(), callback)
    }

    /// Ends the stream; a pending `nextBatch` resolves to `null`.
    #[napi]
    pub fn close(&self) {
        self.state.close();
    }
}

/// Starts a listener task: one batch in flight at a time, so a slow callback slows the pull
/// (the bus queue then absorbs, and overflows, instead of this process's memory).
pub(crate) fn start_listener(
    state: Arc<StreamState>,
    callback: Function<'_, String, ()>,
) -> Result<()> {
    let tsfn: ThreadsafeFunction<String, (), String, Status, false, true> = callback
        .build_threadsafe_function::<String>()
        .callee_handled::<false>()
        .weak::<true>()
        .build()?;
    napi::bindgen_prelude::spawn(async move {
        while let Some(batch) = state.next_batch(DEFAULT_BATCH).await {
            if tsfn.call_async(batch).await.is_err() {
                // The façade catches what handlers throw, so an error here means Node is
                // shutting down: there is nobody left to call.
                break;
            }
        }
        state.close();
    });
    Ok(())
}

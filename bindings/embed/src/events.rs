//! Event streams: a bus subscription pumped into a bounded buffer and taken in batches.
//!
//! ## Overflow policy (the same in every binding)
//!
//! A subscriber that falls behind is resumed from the last cursor it received, transparently:
//! no event of a joined topic is lost or repeated. When the replay log can no longer fill the
//! gap (the events left memory before reaching the persisted log, or its retention trimmed
//! them — also for a topic joined with an `afterCursor` the retention has passed),
//! or the subscription also received events that are never replayed (`global`, or sessions
//! seen only through `allSessions`), the stream carries exactly one event for that overflow,
//!
//! ```json
//! {"type": "subscription_gap", "data": {"topics": ["<session id>", "global", "*"], "lastCursors": {"<session id>": 123}}}
//! ```
//!
//! and goes on with what comes after. `topics` names what may have lost events (`*`: sessions
//! seen through `allSessions`); `lastCursors` is where each joined topic was.
//!
//! Each item of a batch is the wire event (`type`, `data`, `timestamp`, `source`, `category`,
//! `intent`, `context`) plus `cursor` for events of a topic.

use agentvm::{BusItem, Published, Subscription};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Items buffered per stream beyond which the pump stops pulling (the bus queue then fills
/// and the overflow policy applies).
const BUFFER: usize = 4096;

/// Called when the buffer goes from empty to non-empty, or the stream ends: a binding wakes
/// its event loop (the C ABI writes to its file descriptor).
pub type ReadyHook = Box<dyn Fn() + Send + Sync>;

/// One item waiting in a stream's buffer.
enum Item {
    /// An event of the bus, shared with its other subscribers: its JSON (serialized once,
    /// by the pump, for all of them) is copied straight into the batch a reader takes.
    Event(Arc<Published>),
    /// A `subscription_gap` event's JSON.
    Gap(String),
}

impl Item {
    /// Appends the item's JSON to `out`: the wire event, plus `cursor` for topic events.
    fn write_to(&self, out: &mut String) {
        match self {
            Item::Event(p) => write_event(p, out),
            Item::Gap(json) => out.push_str(json),
        }
    }

    /// About how many bytes `write_to` appends.
    fn len_hint(&self) -> usize {
        match self {
            Item::Event(p) => p.json().len() + 32,
            Item::Gap(json) => json.len(),
        }
    }
}

/// What the pump and the readers share.
struct Buffer {
    /// The items waiting.
    items: VecDeque<Item>,
    /// The pump finished (the subscription ended or the stream was closed).
    ended: bool,
}

pub(crate) struct Shared {
    buffer: Mutex<Buffer>,
    /// Wakes readers (an item arrived, or the stream ended).
    readable: Notify,
    /// Wakes the pump (room in the buffer, or close).
    writable: Notify,
    /// Set by `close()`.
    closed: std::sync::atomic::AtomicBool,
    hook: Mutex<Option<ReadyHook>>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn fire_hook(&self) {
        if let Some(h) = self.hook.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            h();
        }
    }

    /// Adds items; returns whether there is room for more.
    fn push(&self, items: Vec<Item>) -> bool {
        let (was_empty, room) = {
            let mut b = self.lock();
            let was_empty = b.items.is_empty();
            b.items.extend(items);
            (was_empty, b.items.len() < BUFFER)
        };
        self.readable.notify_waiters();
        self.readable.notify_one();
        if was_empty {
            self.fire_hook();
        }
        room
    }

    fn end(&self) {
        self.lock().ended = true;
        self.readable.notify_waiters();
        self.readable.notify_one();
        self.fire_hook();
    }

    pub(crate) fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.writable.notify_waiters();
        self.writable.notify_one();
        self.end();
    }
}

/// A stream of events; see the module documentation for its overflow policy.
/// Cheap to share between threads: batches are taken one reader at a time.
pub struct EventStream {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

/// An event as bindings see it: the wire event, plus `cursor` for topic events.
pub fn event_json(p: &Published) -> String {
    let mut out = String::with_capacity(p.json().len() + 32);
    write_event(p, &mut out);
    out
}

/// Appends [`event_json`] to `out`, without a text of its own.
fn write_event(p: &Published, out: &mut String) {
    let json = p.json();
    match p.cursor {
        Some(cursor) if json.len() > 2 && json.starts_with('{') => {
            out.push_str("{\"cursor\":");
            push_u64(out, cursor);
            out.push(',');
            out.push_str(&json[1..]);
        }
        _ => out.push_str(json),
    }
}

/// Appends `n` in decimal (what `format!` would write, without its machinery).
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[at..] {
        out.push(char::from(d));
    }
}

/// The one event for a gap the replay log cannot fill.
fn gap_json(topics: &[String], last_cursors: &HashMap<String, u64>) -> String {
    serde_json::json!({
        "type": "subscription_gap",
        "data": {"topics": topics, "lastCursors": last_cursors},
    })
    .to_string()
}

/// Pulls from `sub` into the buffer until the subscription ends or the stream is closed.
async fn pump(mut sub: Subscription, wide: (bool, bool), shared: Arc<Shared>) {
    let (global, all_sessions) = wide;
    // Joined after a cursor the log's retention has already passed: say so before anything.
    let trimmed = sub.trimmed();
    if !trimmed.is_empty() {
        let cursors: HashMap<String, u64> = sub.last_cursors().clone();
        shared.push(vec![Item::Gap(gap_json(&trimmed, &cursors))]);
    }
    loop {
        if shared.closed.load(std::sync::atomic::Ordering::Acquire) {
            break;
        }
        let first = tokio::select! {
            item = sub.recv() => item,
            _ = shared.writable.notified() => continue,
        };
        let mut batch = Vec::new();
        let mut next = first;
        loop {
            match next {
                Some(BusItem::Event(p)) => {
                    // Serialized here, on the runtime, once for every subscriber: the reader
                    // (a host language's thread) only copies it.
                    p.json();
                    batch.push(Item::Event(p));
                }
                Some(BusItem::Overflowed { last_cursors }) => {
                    let mut gaps = sub.unreplayable();
                    if global {
                        gaps.push("global".into());
                    }
                    if all_sessions {
                        gaps.push("*".into());
                    }
                    match sub.resume() {
                        Ok(resumed) => sub = resumed,
                        Err(e) => {
                            tracing::warn!(error = %e.chain(), "resuming a subscription after an overflow");
                            batch.push(Item::Gap(gap_json(&["*".to_string()], &last_cursors)));
                            shared.push(batch);
                            shared.end();
                            return;
                        }
                    }
                    if !gaps.is_empty() {
                        batch.push(Item::Gap(gap_json(&gaps, &last_cursors)));
                    }
                }
                None => {
                    if !batch.is_empty() {
                        shared.push(batch);
                    }
                    shared.end();
                    return;
                }
            }
            if batch.len() >= 1024 {
                break;
            }
            next = match sub.try_recv() {
                Some(item) => Some(item),
                None => break,
            };
        }
        if !shared.push(batch) {
            // Full: wait for a reader (or close) before pulling more.
            loop {
                let notified = shared.writable.notified();
                if shared.lock().items.len() < BUFFER
                    || shared.closed.load(std::sync::atomic::Ordering::Acquire)
                {
                    break;
                }
                notified.await;
            }
        }
    }
    shared.end();
}

impl EventStream {
    /// Starts pumping `sub` on the process runtime.
    pub(crate) fn start(
        sub: Subscription,
        global: bool,
        all_sessions: bool,
    ) -> agentvm::Result<(Self, Arc<Shared>)> {
        let shared = Arc::new(Shared {
            buffer: Mutex::new(Buffer {
                items: VecDeque::new(),
                ended: false,
            }),
            readable: Notify::new(),
            writable: Notify::new(),
            closed: std::sync::atomic::AtomicBool::new(false),
            hook: Mutex::new(None),
        });
        crate::process::handle()?.spawn(pump(sub, (global, all_sessions), shared.clone()));
        Ok((
            EventStream {
                shared: shared.clone(),
            },
            shared,
        ))
    }

    /// Up to `max` items as one JSON array text, if any are waiting; `Ok(None)` when none are
    /// (check [`is_ended`](Self::is_ended) to tell an ended stream).
    pub fn try_next_batch(&self, max: usize) -> Option<String> {
        let (batch, freed) = {
            let mut b = self.shared.lock();
            if b.items.is_empty() {
                return None;
            }
            let n = max.max(1).min(b.items.len());
            let freed = b.items.len() >= BUFFER;
            let size: usize = b.items.iter().take(n).map(|i| i.len_hint() + 1).sum();
            let mut out = String::with_capacity(size + 2);
            out.push('[');
            for (i, item) in b.items.drain(..n).enumerate() {
                if i > 0 {
                    out.push(',');
                }
                item.write_to(&mut out);
            }
            out.push(']');
            (out, freed)
        };
        if freed {
            self.shared.writable.notify_one();
        }
        Some(batch)
    }

    /// Up to `max` items as one JSON array text, waiting at most `timeout` (`None`: until
    /// one arrives) for the first. `None` when the time ran out or the stream ended.
    pub async fn next_batch(&self, max: usize, timeout: Option<Duration>) -> Option<String> {
        let wait = async {
            loop {
                let notified = self.shared.readable.notified();
                if let Some(batch) = self.try_next_batch(max) {
                    return Some(batch);
                }
                if self.is_ended() {
                    return None;
                }
                notified.await;
            }
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, wait).await.ok().flatten(),
            None => wait.await,
        }
    }

    /// Whether items are waiting.
    pub fn has_pending(&self) -> bool {
        !self.shared.lock().items.is_empty()
    }

    /// Whether the stream has ended and everything was taken.
    pub fn is_ended(&self) -> bool {
        let b = self.shared.lock();
        b.ended && b.items.is_empty()
    }

    /// Calls `hook` (on a runtime thread) whenever items become waiting after none were, and
    /// when the stream ends. Replaces an earlier hook; called once now if items are waiting.
    pub fn set_ready_hook(&self, hook: ReadyHook) {
        *self.shared.hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(hook);
        let b = self.shared.lock();
        let ready = !b.items.is_empty() || b.ended;
        drop(b);
        if ready {
            self.shared.fire_hook();
        }
    }

    /// Removes the hook; once this returns it is not running and will not be called again.
    pub fn clear_ready_hook(&self) {
        *self.shared.hook.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Ends the stream: a waiting `next_batch` returns, the bus subscription is dropped.
    pub fn close(&self) {
        self.shared.close();
    }
}

impl Drop for EventStream {
    fn drop(&mut self) {
        self.shared.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use agentvm::{Bus, BusConfig, Event, EventContext, EventFilter, EventPayload};

    fn delta(text: &str) -> Event {
        Event::new(
            EventPayload::TextDelta { text: text.into() },
            Some(EventContext {
                container_id: Some("c1".into()),
                session_id: Some("s1".into()),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn cursors_are_written_as_format_writes_them() {
        for n in [0, 7, 10, 99, 100, 123_456_789, u64::MAX] {
            let mut out = String::from("x");
            push_u64(&mut out, n);
            assert_eq!(out, format!("x{n}"));
        }
        // One event (its timestamp is the clock's when made), with and without a cursor.
        let event = delta("hi");
        let p = Published::new(event.clone(), Some(42));
        let json = event_json(&p);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["cursor"], 42);
        assert_eq!(v["data"]["text"], "hi");
        assert_eq!(event_json(&Published::new(event, None)), p.json());
    }

    #[test]
    fn joining_after_a_cursor_the_retention_passed_starts_with_one_gap_then_what_is_left() {
        crate::process::block_on(async {
            let store: std::sync::Arc<dyn agentvm::store::Store> =
                std::sync::Arc::new(agentvm::store::MemoryStore::new());
            let bus = Bus::new(
                BusConfig {
                    ring_capacity: 1,
                    ..Default::default()
                },
                Some(store.clone()),
            )
            .unwrap();
            for t in ["a", "b", "c", "d"] {
                bus.publish(delta(t));
            }
            bus.flush().await;
            assert_eq!(store.trim_replay(2, 0).unwrap(), 2, "a and b trimmed");
            let sub = bus
                .subscribe(EventFilter {
                    sessions: vec![("s1".into(), Some(0))],
                    ..Default::default()
                })
                .unwrap();
            let (stream, _) = EventStream::start(sub, false, false).unwrap();
            let mut items = Vec::new();
            while items.len() < 3 {
                let batch = stream
                    .next_batch(16, Some(Duration::from_secs(5)))
                    .await
                    .expect("items");
                items.extend(serde_json::from_str::<Vec<serde_json::Value>>(&batch).unwrap());
            }
            assert_eq!(items[0]["type"], "subscription_gap");
            assert_eq!(items[0]["data"]["topics"], serde_json::json!(["s1"]));
            assert_eq!(items[0]["data"]["lastCursors"]["s1"], 0);
            let texts: Vec<&str> = items[1..]
                .iter()
                .map(|e| e["data"]["text"].as_str().unwrap())
                .collect();
            assert_eq!(texts, ["c", "d"]);
            stream.close();
        })
        .unwrap();
    }

    #[test]
    fn a_gap_memory_cannot_fill_is_one_typed_event_then_the_stream_goes_on() {
        crate::process::block_on(async {
            // No store and a ring of 2: what the slow subscriber missed is gone.
            let bus = Bus::in_memory(BusConfig {
                ring_capacity: 2,
                ..Default::default()
            });
            let sub = bus
                .subscribe(EventFilter {
                    sessions: vec![("s1".into(), None)],
                    queue: Some(1),
                    ..Default::default()
                })
                .unwrap();
            for t in ["a", "b", "c", "d", "e"] {
                bus.publish(delta(t));
            }
            let (stream, _) = EventStream::start(sub, false, false).unwrap();
            let mut items = Vec::new();
            while items.len() < 4 {
                let batch = stream
                    .next_batch(16, Some(Duration::from_secs(5)))
                    .await
                    .expect("items");
                items.extend(serde_json::from_str::<Vec<serde_json::Value>>(&batch).unwrap());
            }
            let kinds: Vec<String> = items
                .iter()
                .map(|e| match e["type"].as_str().unwrap() {
                    "text_delta" => e["data"]["text"].as_str().unwrap().to_string(),
                    other => other.to_string(),
                })
                .collect();
            assert_eq!(kinds, ["a", "subscription_gap", "d", "e"]);
            assert_eq!(items[1]["data"]["topics"], serde_json::json!(["s1"]));
            assert!(items[1]["data"]["lastCursors"]["s1"].is_u64());
            // Later events arrive live.
            bus.publish(delta("f"));
            let batch = stream
                .next_batch(16, Some(Duration::from_secs(5)))
                .await
                .unwrap();
            assert!(batch.contains("\"f\""), "{batch}");
            assert!(stream.try_next_batch(16).is_none());
        })
        .unwrap();
    }
}

//! The Bus: `global` plus one topic per session, monotonic cursors, bounded subscriber queues
//! and a replay log.
//!
//! - Publishing never waits on a subscriber: each has a bounded queue and a full queue marks
//!   the subscriber *overflowed*. It receives everything queued before that point, then
//!   [`BusItem::Overflowed`] with the last cursor it saw per topic, and can resubscribe from there.
//! - Every session event gets a cursor, unique across the process and increasing across
//!   restarts and across the servers of a cluster: a hybrid clock, the greater of the last
//!   cursor + 1 and the time in microseconds (so a server that started earlier does not number
//!   below one that started later), raised past the shared log's newest cursor when a server
//!   takes a container over ([`Bus::advance_past`]).
//! - Replay: a per-topic ring in memory for recent events, and the persisted log in the
//!   store for older ones, written in batches by a background task. A ring only drops
//!   events already persisted, so a replay has no gaps and no duplicates.
//! - Across servers (a store whose log other servers write, [`Store::replay_notices`]): the
//!   events of a session another server runs are read from the shared log as their appends
//!   commit and relayed to this bus's subscribers of that session, with their cursors
//!   (`bus/relay.rs`). A subscription delivers each cursor of a topic at most once, so an
//!   event both replayed and relayed reaches it once.

use crate::model::Event;
use crate::store::{ReplayEntry, Store};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

/// Tuning of the bus.
#[derive(Debug, Clone)]
pub struct BusConfig {
    /// Capacity of each subscriber's queue; beyond it the subscriber overflows.
    pub subscriber_queue: usize,
    /// Recent events kept in memory per topic for fast replay.
    pub ring_capacity: usize,
    /// Events kept per topic in the persisted replay log.
    pub replay_max_events: usize,
    /// Age after which persisted replay entries are dropped.
    pub replay_max_age: Duration,
    /// Events waiting to be persisted before new ones are only kept in memory.
    pub persist_queue: usize,
    /// After it writes a batch, the persister waits this long before it takes the next one:
    /// what is published meanwhile is written together, and a stream of events wakes it once
    /// per interval instead of once per event. The first event after a quiet spell is
    /// written at once. Until written, events are replayed from the in-memory ring.
    pub persist_delay: Duration,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            subscriber_queue: 4096,
            ring_capacity: 256,
            replay_max_events: 10_000,
            replay_max_age: Duration::from_secs(7 * 24 * 3600),
            persist_queue: 65_536,
            persist_delay: Duration::from_millis(2),
        }
    }
}

/// Which containers a subscriber (or a connection) may see.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Scope {
    /// Everything.
    #[default]
    All,
    /// Only these containers.
    Containers(Arc<HashSet<String>>),
}

impl Scope {
    /// A scope of the given container ids.
    pub fn containers<I: IntoIterator<Item = S>, S: Into<String>>(ids: I) -> Self {
        Scope::Containers(Arc::new(ids.into_iter().map(Into::into).collect()))
    }

    /// Whether the scope includes `container_id`.
    pub fn allows(&self, container_id: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Containers(set) => set.contains(container_id),
        }
    }

    /// Whether a record owned by `owner` may be used: a container in the scope, or, for a
    /// record with no owner (an operator's sandbox), only by a caller allowed everything.
    pub fn allows_owner(&self, owner: Option<&str>) -> bool {
        match owner {
            Some(c) => self.allows(c),
            None => *self == Scope::All,
        }
    }

    /// Whether an event concerning `container_id` (or none) may be seen.
    pub fn allows_event(&self, container_id: Option<&str>) -> bool {
        match container_id {
            Some(c) => self.allows(c),
            None => true,
        }
    }
}

/// What a subscription listens to.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Receive events of the `global` topic (lifecycle events, ...).
    pub global: bool,
    /// Receive events of every session topic (embedders watching everything).
    pub all_sessions: bool,
    /// Session topics to join now, with the cursor to replay after (`None`: only new events).
    pub sessions: Vec<(String, Option<u64>)>,
    /// Containers the subscriber may see; events of others are never delivered.
    pub scope: Scope,
    /// Queue capacity for this subscriber; `None` uses the bus's `subscriber_queue`.
    pub queue: Option<usize>,
}

impl EventFilter {
    /// Everything, in every container.
    pub fn everything() -> Self {
        EventFilter {
            global: true,
            all_sessions: true,
            ..Default::default()
        }
    }

    /// One session's events, new ones only.
    pub fn session(session_id: impl Into<String>) -> Self {
        EventFilter {
            sessions: vec![(session_id.into(), None)],
            ..Default::default()
        }
    }
}

/// An event as published: its cursor (session events only) and, cached, its JSON.
#[derive(Debug)]
pub struct Published {
    /// The cursor within its topic, for session events.
    pub cursor: Option<u64>,
    /// The event.
    pub event: Event,
    /// Its JSON and that JSON as a string literal, written together on first use.
    text: OnceLock<EventText>,
    /// Set once the event is in the persisted replay log; until then the ring keeps it.
    persisted: AtomicBool,
}

impl Published {
    /// Wraps an event with a cursor (session events) or none.
    pub fn new(event: Event, cursor: Option<u64>) -> Self {
        Published {
            cursor,
            event,
            text: OnceLock::new(),
            persisted: AtomicBool::new(false),
        }
    }

    /// The event's JSON as a JSON string literal (quotes included), computed once.
    pub fn escaped_json(&self) -> &str {
        &self.text().literal
    }

    /// The event as JSON, serialized once and shared by every subscriber.
    pub fn json(&self) -> &str {
        &self.text().json
    }

    /// [`json`](Self::json), shared rather than copied (the replay log keeps it).
    pub fn shared_json(&self) -> Arc<str> {
        self.text().json.clone()
    }

    /// Both texts, written in one serialization the first time either is wanted: a
    /// connection frames the literal and the replay log keeps the JSON, so a delivered event
    /// needs both, and writing them together costs less than escaping the JSON afterwards.
    fn text(&self) -> &EventText {
        self.text.get_or_init(|| EventText::of(&self.event))
    }
}

/// An event's texts: its JSON and that JSON as a JSON string literal.
#[derive(Debug)]
struct EventText {
    json: Arc<str>,
    literal: String,
}

impl EventText {
    fn of(event: &Event) -> Self {
        // Sized for a typical event (a delta with its context is ~300 bytes).
        match crate::channel::json_literal::to_json_and_literal(event, 512) {
            // The literal is kept as written, not shrunk (a copy); the JSON is shared.
            Ok((json, literal)) => EventText {
                json: json.into(),
                literal,
            },
            Err(e) => {
                tracing::error!(error = %e, "serializing an event");
                EventText {
                    json: "{}".into(),
                    literal: "\"{}\"".into(),
                }
            }
        }
    }
}

/// One thing a subscription yields.
#[derive(Debug, Clone)]
pub enum BusItem {
    /// An event.
    Event(Arc<Published>),
    /// The subscriber fell behind and was dropped; resubscribe after these cursors.
    Overflowed {
        /// The last cursor received per session topic.
        last_cursors: HashMap<String, u64>,
    },
}

struct Slot {
    id: u64,
    tx: mpsc::Sender<Arc<Published>>,
    overflowed: AtomicBool,
    scope: Scope,
    global: bool,
    all_sessions: bool,
}

impl Slot {
    /// Queues `p` unless full; a full queue marks the slot overflowed for good.
    fn offer(&self, p: &Arc<Published>) {
        if self.overflowed.load(Ordering::Relaxed) {
            return;
        }
        match self.tx.try_send(p.clone()) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.overflowed.store(true, Ordering::Release);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[derive(Default)]
struct TopicState {
    ring: VecDeque<Arc<Published>>,
    subscribers: Vec<Arc<Slot>>,
    last_publish: Option<Instant>,
    /// The newest cursor dropped from the ring that the persisted log does not hold: a replay
    /// after an older cursor has a gap ([`Subscription::unreplayable`] reports it).
    lost_upto: Option<u64>,
    /// The newest cursor of this topic this bus has: published here, relayed from the shared
    /// log, or (set by the first join) the cursor at joining. Relaying reads the log after it.
    mark: Option<u64>,
}

/// How many times `ring_capacity` a ring may grow while its oldest events wait to be
/// persisted, before it drops them anyway (and says so) to keep memory bounded.
const RING_HARD_FACTOR: usize = 64;

impl TopicState {
    /// Drops the oldest events beyond `cap`, but only those already in the persisted log
    /// (when there is one), so a replay never has a gap; past the hard limit, drops anyway.
    fn trim(&mut self, cap: usize, persisting: bool) -> u64 {
        let mut lost = 0;
        while self.ring.len() > cap {
            let front_safe = !persisting
                || self
                    .ring
                    .front()
                    .map(|f| f.persisted.load(Ordering::Acquire))
                    .unwrap_or(true);
            if front_safe {
                let dropped = self.ring.pop_front();
                if !persisting {
                    self.note_lost(dropped.as_ref());
                }
            } else if self.ring.len() > cap.saturating_mul(RING_HARD_FACTOR).max(cap + 1) {
                let dropped = self.ring.pop_front();
                self.note_lost(dropped.as_ref());
                lost += 1;
            } else {
                break;
            }
        }
        lost
    }

    /// Remembers that `dropped` left memory without being in the persisted log.
    fn note_lost(&mut self, dropped: Option<&Arc<Published>>) {
        if let Some(c) = dropped.and_then(|p| p.cursor) {
            self.lost_upto = Some(self.lost_upto.map_or(c, |l| l.max(c)));
        }
    }
}

struct BusInner {
    config: BusConfig,
    next_cursor: AtomicU64,
    next_slot: AtomicU64,
    topics: Mutex<HashMap<String, Arc<Mutex<TopicState>>>>,
    /// Subscribers of `global` and/or all sessions.
    wide: RwLock<Vec<Arc<Slot>>>,
    persist_tx: Option<mpsc::Sender<Arc<Published>>>,
    /// Where the replay log is persisted, if anywhere.
    store: Option<Arc<dyn Store>>,
    dropped_persists: AtomicU64,
    /// Whether other servers' events are relayed from a shared log (`bus/relay.rs`).
    relaying: AtomicBool,
}

/// The event bus. Cheap to clone.
#[derive(Clone)]
pub struct Bus {
    inner: Arc<BusInner>,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The next cursor of `next` (which holds the smallest cursor not yet handed out): at least
/// the time in microseconds, so cursors of servers that started at different times still
/// increase from one to the next. One clock read and (without contention) one CAS.
fn next_hybrid(next: &AtomicU64) -> u64 {
    let now = now_micros();
    let mut current = next.load(Ordering::Relaxed);
    loop {
        let cursor = current.max(now);
        match next.compare_exchange_weak(
            current,
            cursor.saturating_add(1),
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => return cursor,
            Err(seen) => current = seen,
        }
    }
}

/// A bus that does not keep it (and the store it persists to) alive: for background tasks
/// that must end with the runtime.
#[derive(Clone)]
pub(crate) struct WeakBus(std::sync::Weak<BusInner>);

impl WeakBus {
    /// The bus, while something else still holds it.
    pub(crate) fn upgrade(&self) -> Option<Bus> {
        self.0.upgrade().map(|inner| Bus { inner })
    }
}

impl Bus {
    /// A handle that does not keep the bus alive.
    pub(crate) fn downgrade(&self) -> WeakBus {
        WeakBus(Arc::downgrade(&self.inner))
    }

    /// A bus with a persisted replay log in `store` (if given). Must be called inside a tokio
    /// runtime when `store` is given: it starts the persisting task.
    pub fn new(config: BusConfig, store: Option<Arc<dyn Store>>) -> crate::Result<Self> {
        let persisted_max = match &store {
            Some(r) => r.max_replay_cursor()?,
            None => 0,
        };
        let (persist_tx, persist_rx) = match &store {
            Some(_) => {
                let (tx, rx) = mpsc::channel(config.persist_queue.max(1));
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        let inner = Arc::new(BusInner {
            next_cursor: AtomicU64::new((persisted_max + 1).max(now_micros())),
            next_slot: AtomicU64::new(1),
            topics: Mutex::new(HashMap::new()),
            wide: RwLock::new(Vec::new()),
            persist_tx,
            store,
            dropped_persists: AtomicU64::new(0),
            relaying: AtomicBool::new(false),
            config,
        });
        if let Some(rx) = persist_rx {
            tokio::spawn(persist_loop(Arc::downgrade(&inner), rx));
        }
        if let Some(notices) = inner.store.as_ref().and_then(|s| s.replay_notices()) {
            inner.relaying.store(true, Ordering::Release);
            tokio::spawn(relay::relay_loop(Arc::downgrade(&inner), notices));
        }
        Ok(Bus { inner })
    }

    /// An in-memory bus (no persisted replay log).
    pub fn in_memory(config: BusConfig) -> Self {
        Bus {
            inner: Arc::new(BusInner {
                next_cursor: AtomicU64::new(now_micros()),
                next_slot: AtomicU64::new(1),
                topics: Mutex::new(HashMap::new()),
                wide: RwLock::new(Vec::new()),
                persist_tx: None,
                store: None,
                dropped_persists: AtomicU64::new(0),
                relaying: AtomicBool::new(false),
                config,
            }),
        }
    }

    fn topic(&self, name: &str) -> Arc<Mutex<TopicState>> {
        let mut topics = lock(&self.inner.topics);
        if let Some(t) = topics.get(name) {
            return t.clone();
        }
        let t = Arc::new(Mutex::new(TopicState::default()));
        topics.insert(name.to_string(), t.clone());
        t
    }

    /// Publishes an event: on its topic (with a cursor) when it has one (a session, or a
    /// sandbox for exec events), on `global` otherwise. Never waits.
    pub fn publish(&self, event: Event) -> Arc<Published> {
        match event.topic().map(|t| self.topic(t)) {
            Some(state) => self.publish_in(&state, event, None),
            None => {
                let p = Arc::new(Published::new(event, None));
                let cid = p.event.container_id();
                let wide = self.inner.wide.read().unwrap_or_else(|e| e.into_inner());
                for slot in wide.iter() {
                    if slot.global && slot.scope.allows_event(cid) {
                        slot.offer(&p);
                    }
                }
                p
            }
        }
    }

    /// Publishes a session event with a cursor assigned elsewhere (the remote runtime mirrors
    /// the server's cursors). Events without a session go to `global` as with `publish`.
    pub fn inject(&self, event: Event, cursor: u64) -> Arc<Published> {
        match event.topic().map(|t| self.topic(t)) {
            Some(state) => self.publish_in(&state, event, Some(cursor)),
            None => self.publish(event),
        }
    }

    /// Every cursor handed out from now on is greater than `cursor`: a server taking over a
    /// container whose events another server numbered calls this with the shared log's newest.
    pub fn advance_past(&self, cursor: u64) {
        self.inner
            .next_cursor
            .fetch_max(cursor.saturating_add(1), Ordering::Relaxed);
    }

    /// The newest cursor handed out so far: every later event has a greater one.
    pub fn current_cursor(&self) -> u64 {
        self.inner
            .next_cursor
            .load(Ordering::Relaxed)
            .saturating_sub(1)
    }

    fn publish_in(
        &self,
        state: &Mutex<TopicState>,
        event: Event,
        at: Option<u64>,
    ) -> Arc<Published> {
        let mut st = lock(state);
        let cursor = match at {
            Some(c) => {
                self.inner.next_cursor.fetch_max(c + 1, Ordering::Relaxed);
                c
            }
            None => next_hybrid(&self.inner.next_cursor),
        };
        let p = Arc::new(Published::new(event, Some(cursor)));
        st.mark = Some(st.mark.map_or(cursor, |m| m.max(cursor)));
        self.fan_out(&mut st, &p);
        let persisting = match &self.inner.persist_tx {
            Some(tx) => {
                if tx.try_send(p.clone()).is_err() {
                    self.inner.dropped_persists.fetch_add(1, Ordering::Relaxed);
                }
                true
            }
            None => false,
        };
        st.ring.push_back(p.clone());
        let lost = st.trim(self.inner.config.ring_capacity, persisting);
        if lost > 0 {
            self.inner
                .dropped_persists
                .fetch_add(lost, Ordering::Relaxed);
            tracing::warn!(
                topic = p.event.topic().unwrap_or_default(),
                lost,
                "replay log persistence is behind: oldest unpersisted events dropped from memory"
            );
        }
        p
    }

    /// When this bus relays other servers' events and `topic` has no mark yet: the newest
    /// cursor of the topic in the shared log, read before the first join takes the topic's
    /// lock. `None` otherwise.
    fn relay_start(&self, topic: &str, state: &Mutex<TopicState>) -> Option<u64> {
        if !self.inner.relaying.load(Ordering::Acquire) {
            return None;
        }
        if let Some(mark) = lock(state).mark {
            return Some(mark);
        }
        let store = self.inner.store.as_ref()?;
        match store.replay_newest(topic) {
            Ok(newest) => Some(newest),
            Err(e) => {
                tracing::warn!(topic, error = %e.chain(), "reading the shared replay log's newest cursor; relaying this topic from the cursor at joining");
                Some(self.current_cursor())
            }
        }
    }

    /// Offers a topic event to the topic's subscribers and to those of all sessions.
    fn fan_out(&self, st: &mut TopicState, p: &Arc<Published>) {
        st.last_publish = Some(Instant::now());
        for slot in &st.subscribers {
            slot.offer(p);
        }
        let cid = p.event.container_id();
        let wide = self.inner.wide.read().unwrap_or_else(|e| e.into_inner());
        for slot in wide.iter() {
            // A topic event without an owner (an operator's sandbox) is for operators only.
            if slot.all_sessions && slot.scope.allows_owner(cid) {
                slot.offer(p);
            }
        }
    }

    /// Subscribes with `filter`. Session topics listed with a cursor are replayed first.
    pub fn subscribe(&self, filter: EventFilter) -> crate::Result<Subscription> {
        let capacity = filter.queue.unwrap_or(self.inner.config.subscriber_queue);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let slot = Arc::new(Slot {
            id: self.inner.next_slot.fetch_add(1, Ordering::Relaxed),
            tx,
            overflowed: AtomicBool::new(false),
            scope: filter.scope.clone(),
            global: filter.global,
            all_sessions: filter.all_sessions,
        });
        if filter.global || filter.all_sessions {
            self.inner
                .wide
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .push(slot.clone());
        }
        let mut sub = Subscription {
            bus: self.clone(),
            slot,
            rx,
            pending: VecDeque::new(),
            walks: VecDeque::new(),
            topics: HashSet::new(),
            last_cursors: HashMap::new(),
            delivered: HashMap::new(),
            done: false,
        };
        for (topic, after) in filter.sessions {
            sub.join(&topic, after)?;
        }
        Ok(sub)
    }

    /// One page of a topic's replay: up to `limit` events with a cursor in `(after, upto]`,
    /// oldest first, from the persisted log for what left memory and from the ring for the
    /// rest. An empty page means the walk is over.
    fn replay_page(
        &self,
        topic: &str,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> crate::Result<Vec<Arc<Published>>> {
        let state = self.topic(topic);
        // The topic's lock is never held while the store is read: a store that needs this
        // runtime to make progress (PostgreSQL) would otherwise wait for workers that wait
        // for this lock. So the ring is looked at, the store read, and the ring looked at
        // again; what left the ring meanwhile is in the store, and is read on another pass.
        loop {
            let ring_start = lock(&state).ring.front().and_then(|p| p.cursor);
            let mut out: Vec<Arc<Published>> = Vec::new();
            // Older than the ring: from the store, a page at a time.
            let need_log = match ring_start {
                Some(start) => start > after.saturating_add(1),
                None => true,
            };
            if need_log {
                if let Some(store) = &self.inner.store {
                    let below = ring_start.unwrap_or(u64::MAX);
                    for e in store.read_replay(topic, after, limit)? {
                        if e.cursor >= below || e.cursor > upto {
                            break;
                        }
                        match serde_json::from_slice::<Event>(&e.json) {
                            Ok(ev) => out.push(Arc::new(Published::new(ev, Some(e.cursor)))),
                            Err(err) => {
                                tracing::warn!(topic, cursor = e.cursor, error = %err, "skipping an unreadable replay entry")
                            }
                        }
                    }
                    if !out.is_empty() {
                        return Ok(out);
                    }
                }
            }
            let st = lock(&state);
            let moved = st.ring.front().and_then(|p| p.cursor) != ring_start;
            if moved && self.inner.store.is_some() {
                // The ring dropped (persisted) events since it was looked at: read again.
                continue;
            }
            out.extend(
                st.ring
                    .iter()
                    .filter(|p| p.cursor.is_some_and(|c| c > after && c <= upto))
                    .take(limit)
                    .cloned(),
            );
            return Ok(out);
        }
    }

    /// Whether the persisted log's retention removed events of `topic` after `after`. A
    /// store that cannot answer is logged and taken as no gap.
    fn trimmed_past(&self, topic: &str, after: u64) -> bool {
        let Some(store) = &self.inner.store else {
            return false;
        };
        match store.replay_floor(topic) {
            Ok(floor) => floor > after,
            Err(e) => {
                tracing::warn!(topic, error = %e.chain(), "reading the replay floor");
                false
            }
        }
    }

    /// Waits until every event published so far is in the store.
    pub async fn flush(&self) {
        let Some(tx) = &self.inner.persist_tx else {
            return;
        };
        let marker = Arc::new(Published::new(
            Event::new(crate::model::EventPayload::ConversationResponding {}, None),
            None,
        ));
        let _ = tx.send(marker.clone()).await;
        // The persister drops its clone of the marker once everything before it is written.
        while Arc::strong_count(&marker) > 1 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Events that could not be queued for persistence (kept in memory only).
    pub fn dropped_persists(&self) -> u64 {
        self.inner.dropped_persists.load(Ordering::Relaxed)
    }

    /// The number of live session topics in memory.
    pub fn topic_count(&self) -> usize {
        lock(&self.inner.topics).len()
    }
}

/// Events a replay loads from the store at a time.
const REPLAY_PAGE: usize = 256;

/// A replay in progress: the events of `topic` after `after`, up to `upto` (the newest cursor
/// when the topic was joined; later ones arrive live).
#[derive(Debug)]
struct ReplayWalk {
    topic: String,
    after: u64,
    upto: u64,
}

/// A stream of events from the bus.
pub struct Subscription {
    bus: Bus,
    slot: Arc<Slot>,
    rx: mpsc::Receiver<Arc<Published>>,
    /// The current page of a replay, delivered before the live queue. At most
    /// [`REPLAY_PAGE`] events: a replay is a walk of the log, never all of it in memory.
    pending: VecDeque<Arc<Published>>,
    /// Replays not yet delivered, one per joined topic, walked a page at a time.
    walks: VecDeque<ReplayWalk>,
    topics: HashSet<String>,
    last_cursors: HashMap<String, u64>,
    /// The newest cursor delivered per topic: an older or equal one is not delivered again.
    delivered: HashMap<String, u64>,
    done: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("topics", &self.topics)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// Joins a session topic; with `after`, first replays the events after that cursor.
    /// Joining a topic already joined does nothing. Returns the newest cursor at the moment
    /// of joining: every event delivered live after this has a greater cursor.
    pub fn join(&mut self, topic: &str, after: Option<u64>) -> crate::Result<u64> {
        if self.topics.contains(topic) {
            return Ok(self.bus.current_cursor());
        }
        let state = self.bus.topic(topic);
        let relayed_from = self.bus.relay_start(topic, &state);
        let mut st = lock(&state);
        let now = self.bus.current_cursor();
        // Every event of the topic up to `upto` is in the ring or the store (cursors are
        // handed out under this lock); later ones reach the queue pushed below.
        let mut upto = now;
        if let Some(newest) = relayed_from {
            // Relaying (`bus/relay.rs`) starts after what the shared log held before the
            // topic's first join here: the replay covers that much, the relay what follows.
            let mark = *st.mark.get_or_insert(newest);
            upto = upto.max(mark);
            if after.is_none() {
                // Live only: other servers number their events by their clocks, so an event
                // published there before this moment (and persisted after it) is not new here.
                self.delivered
                    .insert(topic.to_string(), now.max(now_micros()));
            }
        }
        if let Some(after) = after {
            if after < upto {
                self.walks.push_back(ReplayWalk {
                    topic: topic.to_string(),
                    after,
                    upto,
                });
            }
        }
        if !self.slot.all_sessions {
            st.subscribers.push(self.slot.clone());
        }
        self.topics.insert(topic.to_string());
        // Where a resume after an overflow starts if nothing arrives before it.
        self.last_cursors
            .entry(topic.to_string())
            .or_insert(after.unwrap_or(now));
        Ok(now)
    }

    /// The last cursor received (or joined after) per session topic: where a resume starts.
    pub fn last_cursors(&self) -> &HashMap<String, u64> {
        &self.last_cursors
    }

    /// Whether this subscription has joined `topic`.
    pub fn has_topic(&self, topic: &str) -> bool {
        self.topics.contains(topic)
    }

    /// Leaves a session topic.
    pub fn leave(&mut self, topic: &str) {
        if self.topics.remove(topic) {
            let state = self.bus.topic(topic);
            lock(&state).subscribers.retain(|s| s.id != self.slot.id);
            self.walks.retain(|w| w.topic != topic);
            self.pending.retain(|p| p.event.topic() != Some(topic));
            self.delivered.remove(topic);
        }
    }

    /// The next replayed event, loading the next page of a walk when the current one is spent.
    fn next_replayed(&mut self) -> Option<Arc<Published>> {
        loop {
            if let Some(p) = self.pending.pop_front() {
                return Some(p);
            }
            let walk = self.walks.front_mut()?;
            match self
                .bus
                .replay_page(&walk.topic, walk.after, walk.upto, REPLAY_PAGE)
            {
                Ok(page) if !page.is_empty() => {
                    walk.after = page.last().and_then(|p| p.cursor).unwrap_or(walk.upto);
                    self.pending.extend(page);
                }
                Ok(_) => {
                    self.walks.pop_front();
                }
                Err(e) => {
                    tracing::warn!(topic = %walk.topic, error = %e.chain(), "replaying a topic: the rest of its replay is skipped");
                    self.walks.pop_front();
                }
            }
        }
    }

    /// The session topics joined.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.topics.iter().map(String::as_str)
    }

    /// The next item; `None` once the subscription ended (after an overflow notice).
    pub async fn recv(&mut self) -> Option<BusItem> {
        loop {
            if self.done {
                return None;
            }
            let p = match self.next_replayed() {
                Some(p) => p,
                None => match self.rx.try_recv() {
                    Ok(p) => p,
                    Err(mpsc::error::TryRecvError::Disconnected) => return None,
                    Err(mpsc::error::TryRecvError::Empty) => {
                        if self.slot.overflowed.load(Ordering::Acquire) {
                            return Some(self.overflow());
                        }
                        self.rx.recv().await?
                    }
                },
            };
            if let Some(item) = self.seen(p) {
                return Some(item);
            }
        }
    }

    /// The next item if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<BusItem> {
        loop {
            if self.done {
                return None;
            }
            let p = match self.next_replayed() {
                Some(p) => p,
                None => match self.rx.try_recv() {
                    Ok(p) => p,
                    Err(_) if self.slot.overflowed.load(Ordering::Acquire) => {
                        return Some(self.overflow())
                    }
                    Err(_) => return None,
                },
            };
            if let Some(item) = self.seen(p) {
                return Some(item);
            }
        }
    }

    fn overflow(&mut self) -> BusItem {
        self.done = true;
        BusItem::Overflowed {
            last_cursors: self.last_cursors.clone(),
        }
    }

    /// The item for `p`, noting its cursor; `None` when its topic already delivered that
    /// cursor or a newer one (an event replayed and then relayed from a shared log).
    fn seen(&mut self, p: Arc<Published>) -> Option<BusItem> {
        if let (Some(c), Some(topic)) = (p.cursor, p.event.topic()) {
            // Only a relaying bus can offer a cursor twice (replayed, then relayed); one that
            // is not skips the lookup.
            if self.bus.inner.relaying.load(Ordering::Relaxed) {
                match self.delivered.get_mut(topic) {
                    Some(d) if c <= *d => return None,
                    Some(d) => *d = c,
                    None => {
                        self.delivered.insert(topic.to_string(), c);
                    }
                }
            }
            match self.last_cursors.get_mut(topic) {
                Some(last) => *last = (*last).max(c),
                None => {
                    self.last_cursors.insert(topic.to_string(), c);
                }
            }
        }
        Some(BusItem::Event(p))
    }

    /// The joined session topics whose events after the last cursor received can no longer
    /// all be replayed — they left memory without reaching the persisted log, or the log's
    /// retention (count or age) trimmed them — so a [`resume`](Self::resume) would have a gap.
    /// Events of `global` and of sessions seen only through `all_sessions` are never
    /// replayed; this does not list them.
    pub fn unreplayable(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .topics
            .iter()
            .filter(|t| {
                let after = self.last_cursors.get(*t).copied().unwrap_or(0);
                let state = self.bus.topic(t);
                let lost = lock(&state).lost_upto;
                lost.is_some_and(|l| l > after) || self.bus.trimmed_past(t, after)
            })
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// The joined session topics the persisted log's retention has already trimmed past the
    /// cursor they were joined after (or last received): their replay starts with a gap.
    pub fn trimmed(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .topics
            .iter()
            .filter(|t| {
                let after = self.last_cursors.get(*t).copied().unwrap_or(0);
                self.bus.trimmed_past(t, after)
            })
            .cloned()
            .collect();
        out.sort();
        out
    }

    /// After an overflow: a fresh subscription with the same filter that replays every joined
    /// topic from the last cursor received.
    pub fn resume(&self) -> crate::Result<Subscription> {
        let sessions = self
            .topics
            .iter()
            .map(|t| {
                (
                    t.clone(),
                    Some(self.last_cursors.get(t).copied().unwrap_or(0)),
                )
            })
            .collect();
        self.bus.subscribe(EventFilter {
            global: self.slot.global,
            all_sessions: self.slot.all_sessions,
            sessions,
            scope: self.slot.scope.clone(),
            queue: Some(self.slot.tx.max_capacity()),
        })
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        for topic in std::mem::take(&mut self.topics) {
            let topics = lock(&self.bus.inner.topics);
            if let Some(state) = topics.get(&topic) {
                lock(state).subscribers.retain(|s| s.id != self.slot.id);
            }
        }
        if self.slot.global || self.slot.all_sessions {
            self.bus
                .inner
                .wide
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|s| s.id != self.slot.id);
        }
    }
}

/// How often the persister looks for quiet topics to forget.
const FORGET_EVERY: Duration = Duration::from_secs(1);

async fn persist_loop(inner: std::sync::Weak<BusInner>, mut rx: mpsc::Receiver<Arc<Published>>) {
    let mut last_trim = Instant::now();
    let mut last_forget = Instant::now();
    let mut batch: Vec<Arc<Published>> = Vec::with_capacity(1024);
    loop {
        // The batch is emptied at the end of every pass, so `flush` markers are released
        // only after what precedes them is written.
        if rx.recv_many(&mut batch, 4096).await == 0 {
            return;
        }
        let Some(bus) = inner.upgrade() else { return };
        let Some(store) = bus.store.clone() else {
            return;
        };
        let entries: Vec<ReplayEntry> = batch
            .iter()
            .filter_map(|p| {
                let topic = p.event.topic()?;
                Some(ReplayEntry {
                    topic: topic.to_string(),
                    cursor: p.cursor?,
                    timestamp: p.event.timestamp,
                    json: p.shared_json().into(),
                })
            })
            .collect();
        let trim = last_trim.elapsed() > Duration::from_secs(60);
        let keep = bus.config.replay_max_events;
        let min_ts = crate::model::now_ms() - bus.config.replay_max_age.as_millis() as i64;
        let write = move || {
            store.append_replay_capped(&entries, keep)?;
            if trim {
                store.trim_replay(keep, min_ts)?;
            }
            Ok::<_, crate::Error>(())
        };
        // An in-memory log is written here: the blocking pool would cost a wake-up of one of
        // its threads and of this task for every lone event.
        let written = if bus.store.as_ref().is_some_and(|s| s.is_in_memory()) {
            Ok(write())
        } else {
            tokio::task::spawn_blocking(write).await
        };
        if trim {
            last_trim = Instant::now();
        }
        match written {
            Ok(Ok(_)) => {
                for p in &batch {
                    p.persisted.store(true, Ordering::Release);
                }
                let cap = bus.config.ring_capacity;
                let topics = lock(&bus.topics);
                let mut seen: HashSet<&str> = HashSet::new();
                for p in &batch {
                    if let Some(topic) = p.event.topic() {
                        if seen.insert(topic) {
                            if let Some(state) = topics.get(topic) {
                                lock(state).trim(cap, true);
                            }
                        }
                    }
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e.chain(), "persisting the replay log"),
            Err(e) => tracing::warn!(error = %e, "the replay persister panicked"),
        }
        // Forget topics nobody listens to that have been quiet a while and are persisted. A
        // pass visits every topic, so it runs at most once a second, not once per batch.
        if last_forget.elapsed() < FORGET_EVERY {
            batch.clear();
            pause(bus).await;
            continue;
        }
        last_forget = Instant::now();
        // Scoped: the guard must be gone before the pause below awaits.
        {
            let mut topics = lock(&bus.topics);
            topics.retain(|_, state| {
                // Someone between `topic()` and publishing or joining holds a clone: keep it.
                if Arc::strong_count(state) > 1 {
                    return true;
                }
                let st = lock(state);
                let quiet = st
                    .last_publish
                    .map(|t| t.elapsed() > Duration::from_secs(300))
                    .unwrap_or(true);
                let persisted = st
                    .ring
                    .back()
                    .map(|p| p.persisted.load(Ordering::Acquire))
                    .unwrap_or(true);
                !(st.subscribers.is_empty() && quiet && persisted)
            });
        }
        batch.clear();
        pause(bus).await;
    }
}

/// The persister's wait between batches ([`BusConfig::persist_delay`]), without keeping the
/// bus alive meanwhile.
async fn pause(bus: Arc<BusInner>) {
    let delay = bus.config.persist_delay;
    drop(bus);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}

impl agentvm_scheduler::EventSink for Bus {
    fn publish(&self, event: Event) {
        Bus::publish(self, event);
    }
}

mod relay;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventContext, EventPayload};

    fn delta(session: &str, text: &str) -> Event {
        Event::new(
            EventPayload::TextDelta { text: text.into() },
            Some(EventContext {
                container_id: Some("c1".into()),
                session_id: Some(session.into()),
                ..Default::default()
            }),
        )
    }

    #[test]
    fn cursors_follow_the_clock_so_a_server_that_started_earlier_does_not_number_lower() {
        // Two servers: A started later than B (its counter is ahead), A numbered a session, B
        // takes it over. B's next cursor is above A's, from the clock and from advance_past.
        let a = Bus::in_memory(BusConfig::default());
        let b = Bus::in_memory(BusConfig::default());
        a.advance_past(now_micros() + 5_000_000); // A's clock runs 5 s ahead
        let on_a = a.publish(delta("s", "on a")).cursor.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let on_b = b.publish(delta("s", "on b")).cursor.unwrap();
        assert!(on_b < on_a, "clock skew alone would number lower");
        b.advance_past(on_a);
        let after = b.publish(delta("s", "after the takeover")).cursor.unwrap();
        assert!(after > on_a, "{after} after {on_a}");
        // Idle for a while: the next cursor is at least the clock, not last + 1.
        let before = now_micros();
        std::thread::sleep(Duration::from_millis(2));
        let c = Bus::in_memory(BusConfig::default());
        let first = c.publish(delta("t", "x")).cursor.unwrap();
        std::thread::sleep(Duration::from_millis(3));
        let second = c.publish(delta("t", "y")).cursor.unwrap();
        assert!(
            first >= before && second >= first + 3_000,
            "{first} {second}"
        );
        // Many at once stay unique and increasing.
        let burst: Vec<u64> = (0..10_000)
            .map(|i| c.publish(delta("t", &i.to_string())).cursor.unwrap())
            .collect();
        assert!(burst.windows(2).all(|w| w[1] > w[0]));
    }

    #[tokio::test]
    async fn an_overflow_past_what_memory_keeps_is_reported_unreplayable() {
        // No store, a ring of 2: events leave memory for good.
        let bus = Bus::in_memory(BusConfig {
            subscriber_queue: 1,
            ring_capacity: 2,
            ..Default::default()
        });
        let mut kept = bus
            .subscribe(EventFilter {
                sessions: vec![("s1".into(), None)],
                queue: Some(64),
                ..Default::default()
            })
            .unwrap();
        let mut slow = bus.subscribe(EventFilter::session("s1")).unwrap();
        bus.publish(delta("s1", "a"));
        assert_eq!(kept.unreplayable(), Vec::<String>::new());
        for t in ["b", "c", "d", "e"] {
            bus.publish(delta("s1", t));
        }
        assert_eq!(text(slow.recv().await.unwrap()), "a");
        assert_eq!(text(slow.recv().await.unwrap()), "OVERFLOW");
        assert_eq!(slow.unreplayable(), vec!["s1".to_string()]);
        // One that received everything has nothing to miss.
        for _ in 0..5 {
            kept.recv().await.unwrap();
        }
        assert_eq!(kept.unreplayable(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn events_the_logs_retention_trimmed_are_reported_unreplayable() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let bus = Bus::new(
            BusConfig {
                ring_capacity: 1,
                ..Default::default()
            },
            Some(store.clone()),
        )
        .unwrap();
        let cursors: Vec<u64> = ["a", "b", "c", "d"]
            .iter()
            .filter_map(|t| bus.publish(delta("s1", t)).cursor)
            .collect();
        bus.flush().await;
        // Retention keeps the newest two: the first two are gone from the log.
        assert_eq!(store.trim_replay(2, 0).unwrap(), 2);
        let from_start = bus
            .subscribe(EventFilter {
                sessions: vec![("s1".into(), Some(0))],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(from_start.unreplayable(), vec!["s1".to_string()]);
        assert_eq!(from_start.trimmed(), vec!["s1".to_string()]);
        let after_trimmed = bus
            .subscribe(EventFilter {
                sessions: vec![("s1".into(), Some(cursors[1]))],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(after_trimmed.unreplayable(), Vec::<String>::new());
        assert_eq!(after_trimmed.trimmed(), Vec::<String>::new());
    }

    /// An in-memory log lives in RAM: it is held to `replay_max_events` per topic as it is
    /// written, not once a minute, and what it dropped is reported like a trim.
    #[tokio::test]
    async fn an_in_memory_log_never_holds_more_than_its_cap() {
        let store: Arc<dyn Store> = Arc::new(crate::store::MemoryStore::new());
        let bus = Bus::new(
            BusConfig {
                ring_capacity: 1,
                replay_max_events: 3,
                ..Default::default()
            },
            Some(store.clone()),
        )
        .unwrap();
        let cursors: Vec<u64> = (0..10)
            .filter_map(|i| bus.publish(delta("s1", &i.to_string())).cursor)
            .collect();
        bus.flush().await;
        let kept: Vec<u64> = store
            .read_replay("s1", 0, usize::MAX)
            .unwrap()
            .iter()
            .map(|e| e.cursor)
            .collect();
        assert_eq!(kept, cursors[7..]);
        assert_eq!(store.replay_floor("s1").unwrap(), cursors[6]);
        let from_start = bus
            .subscribe(EventFilter {
                sessions: vec![("s1".into(), Some(0))],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(from_start.trimmed(), vec!["s1".to_string()]);
    }

    fn text(item: BusItem) -> String {
        match item {
            BusItem::Event(p) => match &p.event.payload {
                EventPayload::TextDelta { text } => text.clone(),
                other => format!("{other:?}"),
            },
            BusItem::Overflowed { .. } => "OVERFLOW".into(),
        }
    }

    #[tokio::test]
    async fn cursors_increase_and_replay_has_no_gaps_or_duplicates() {
        let bus = Bus::in_memory(BusConfig::default());
        let first = bus.publish(delta("s", "a"));
        bus.publish(delta("s", "b"));
        bus.publish(delta("s", "c"));
        let mut sub = bus
            .subscribe(EventFilter {
                sessions: vec![("s".into(), first.cursor)],
                ..Default::default()
            })
            .unwrap();
        bus.publish(delta("s", "d"));
        let mut got = Vec::new();
        while let Some(item) = sub.try_recv() {
            got.push(text(item));
        }
        assert_eq!(got, ["b", "c", "d"]);
    }

    #[tokio::test]
    async fn slow_subscriber_overflows_and_resumes_without_loss() {
        let bus = Bus::in_memory(BusConfig {
            subscriber_queue: 4,
            ring_capacity: 1000,
            ..Default::default()
        });
        let mut sub = bus.subscribe(EventFilter::session("s")).unwrap();
        for i in 0..10 {
            bus.publish(delta("s", &i.to_string()));
        }
        let mut got = Vec::new();
        loop {
            match sub.recv().await.unwrap() {
                BusItem::Overflowed { .. } => break,
                item => got.push(text(item)),
            }
        }
        assert_eq!(got, ["0", "1", "2", "3"]);
        assert!(sub.recv().await.is_none());
        let mut resumed = sub.resume().unwrap();
        while let Some(item) = resumed.try_recv() {
            got.push(text(item));
        }
        assert_eq!(got, (0..10).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn scope_filters_wide_subscribers() {
        let bus = Bus::in_memory(BusConfig::default());
        let mut other = bus
            .subscribe(EventFilter {
                scope: Scope::containers(["c2"]),
                ..EventFilter::everything()
            })
            .unwrap();
        let mut mine = bus
            .subscribe(EventFilter {
                scope: Scope::containers(["c1"]),
                ..EventFilter::everything()
            })
            .unwrap();
        bus.publish(delta("s", "x"));
        assert!(other.try_recv().is_none());
        assert_eq!(text(mine.try_recv().unwrap()), "x");
    }

    #[tokio::test]
    async fn sandbox_exec_events_have_a_topic_and_ownerless_ones_reach_operators_only() {
        let bus = Bus::in_memory(BusConfig::default());
        let mut tenant = bus
            .subscribe(EventFilter {
                scope: Scope::containers(["c1"]),
                ..EventFilter::everything()
            })
            .unwrap();
        let mut operator = bus.subscribe(EventFilter::everything()).unwrap();
        let output = |owner: Option<&str>| {
            Event::new(
                EventPayload::SandboxExecOutput {
                    sandbox_id: "sbx_1".into(),
                    execution_id: "exec_1".into(),
                    stream: "stdout".into(),
                    data: "hi".into(),
                },
                owner.map(|o| EventContext {
                    container_id: Some(o.into()),
                    ..Default::default()
                }),
            )
        };
        let first = bus.publish(output(None));
        assert!(
            first.cursor.is_some(),
            "exec events get a cursor on the sandbox topic"
        );
        bus.publish(output(Some("c1")));
        let mut seen = 0;
        while tenant.try_recv().is_some() {
            seen += 1;
        }
        assert_eq!(seen, 1, "the tenant sees its own sandbox's output only");
        let mut seen = 0;
        while operator.try_recv().is_some() {
            seen += 1;
        }
        assert_eq!(seen, 2);
        assert!(!Scope::containers(["c1"]).allows_owner(None));
        assert!(Scope::All.allows_owner(None));
    }

    #[tokio::test]
    async fn persisted_log_serves_replay_beyond_the_ring() {
        let bus = Bus::new(
            BusConfig {
                ring_capacity: 2,
                ..Default::default()
            },
            Some(Arc::new(crate::store::MemoryStore::new())),
        )
        .unwrap();
        let first = bus.publish(delta("s", "0"));
        for i in 1..20 {
            bus.publish(delta("s", &i.to_string()));
        }
        bus.flush().await;
        let mut sub = bus
            .subscribe(EventFilter {
                sessions: vec![("s".into(), first.cursor)],
                ..Default::default()
            })
            .unwrap();
        let mut got = Vec::new();
        while let Some(item) = sub.try_recv() {
            got.push(text(item));
        }
        assert_eq!(got, (1..20).map(|i| i.to_string()).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_long_replay_is_walked_a_page_at_a_time_and_unsubscribing_drops_it() {
        let n = REPLAY_PAGE * 4 + 7;
        let bus = Bus::new(
            BusConfig {
                ring_capacity: 16,
                ..Default::default()
            },
            Some(Arc::new(crate::store::MemoryStore::new())),
        )
        .unwrap();
        for i in 0..n {
            bus.publish(delta("s", &i.to_string()));
        }
        bus.flush().await;
        let mut sub = bus
            .subscribe(EventFilter {
                sessions: vec![("s".into(), Some(0))],
                ..Default::default()
            })
            .unwrap();
        // Nothing is loaded until it is asked for, and never more than a page.
        assert!(sub.pending.is_empty());
        let mut got = Vec::new();
        while let Some(item) = sub.try_recv() {
            assert!(sub.pending.len() < REPLAY_PAGE);
            got.push(text(item));
        }
        // Every event once, in order, across the store's pages and the ring.
        assert_eq!(got, (0..n).map(|i| i.to_string()).collect::<Vec<_>>());
        // Events published during a walk arrive live, after it, once.
        let mut sub = bus
            .subscribe(EventFilter {
                sessions: vec![("s".into(), Some(0))],
                ..Default::default()
            })
            .unwrap();
        assert!(sub.try_recv().is_some());
        bus.publish(delta("s", "live"));
        let mut rest = Vec::new();
        while let Some(item) = sub.try_recv() {
            rest.push(text(item));
        }
        assert_eq!(rest.len(), n);
        assert_eq!(rest.last().map(String::as_str), Some("live"));
        // Leaving the topic drops what is left of its replay.
        let mut sub = bus
            .subscribe(EventFilter {
                sessions: vec![("s".into(), Some(0))],
                ..Default::default()
            })
            .unwrap();
        assert!(sub.try_recv().is_some());
        sub.leave("s");
        assert!(sub.walks.is_empty() && sub.pending.is_empty());
        assert!(sub.try_recv().is_none());
    }
}

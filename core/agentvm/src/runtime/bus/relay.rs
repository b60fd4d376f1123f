//! Relaying the events of sessions another server runs, live, from a replay log shared with
//! it ([`Store::replay_notices`]).
//!
//! When another server's append commits, its notice names the topics (or says "any"). For
//! each named topic that has subscribers here, the log is read after the newest cursor this
//! bus has of the topic (its `mark`), a page at a time, and every entry is published to the
//! topic's subscribers with its own cursor — never persisted again (it is in the log), and
//! never twice (a cursor at or below the mark is skipped). Only topics somebody here joined are
//! read: a subscriber of *all* sessions sees other servers' events only for those topics.

use super::{lock, Bus, BusInner, Published, TopicState};
use crate::model::Event;
use crate::store::{ReplayNotice, ReplayNotices, Store};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

/// Entries read from the log per request.
const RELAY_PAGE: usize = 512;

/// Follows `notices` for as long as the bus lives.
pub(super) async fn relay_loop(inner: Weak<BusInner>, mut notices: ReplayNotices) {
    loop {
        let notice = notices.next().await;
        let Some(inner) = inner.upgrade() else { return };
        let bus = Bus { inner };
        let Some(store) = bus.inner.store.clone() else {
            return;
        };
        // Number this server's events above every one appended elsewhere, so a subscriber
        // joining here after an event was appended there does not receive it as new.
        bus.advance_past(notice.newest);
        for (topic, after) in bus.followed(&notice) {
            bus.catch_up(&store, topic, after).await;
        }
    }
}

impl Bus {
    /// The topics of `notice` that have subscribers here, each with its mark.
    fn followed(&self, notice: &ReplayNotice) -> Vec<(String, u64)> {
        let states: Vec<(String, Arc<Mutex<TopicState>>)> = {
            let topics = lock(&self.inner.topics);
            match &notice.topics {
                None => topics.iter().map(|(t, s)| (t.clone(), s.clone())).collect(),
                Some(names) => names
                    .iter()
                    .filter_map(|t| topics.get(t).map(|s| (t.clone(), s.clone())))
                    .collect(),
            }
        };
        states
            .into_iter()
            .filter_map(|(topic, state)| {
                let st = lock(&state);
                if st.subscribers.is_empty() {
                    return None;
                }
                Some((topic, st.mark.unwrap_or(0)))
            })
            .collect()
    }

    /// Reads `topic`'s entries after `after` from the log and relays them.
    async fn catch_up(&self, store: &Arc<dyn Store>, topic: String, mut after: u64) {
        loop {
            let (reader, name) = (store.clone(), topic.clone());
            let page =
                tokio::task::spawn_blocking(move || reader.read_replay(&name, after, RELAY_PAGE))
                    .await;
            let page = match page {
                Ok(Ok(page)) => page,
                Ok(Err(e)) => {
                    tracing::warn!(topic = %topic, error = %e.chain(), "reading another server's events from the shared replay log; they reach this server's subscribers at the next notice");
                    return;
                }
                Err(e) => {
                    tracing::warn!(topic = %topic, error = %e, "the replay relay panicked");
                    return;
                }
            };
            let full = page.len() == RELAY_PAGE;
            for entry in page {
                after = entry.cursor;
                match serde_json::from_slice::<Event>(&entry.json) {
                    Ok(event) => self.relay(&topic, event, entry.cursor),
                    Err(e) => {
                        tracing::warn!(topic = %topic, cursor = entry.cursor, error = %e, "skipping an unreadable replay entry")
                    }
                }
            }
            if !full {
                return;
            }
        }
    }

    /// Publishes an event another server numbered and persisted: to this topic's subscribers
    /// and ring, with its cursor, unless this bus has that cursor (or a newer one) already.
    pub(super) fn relay(&self, topic: &str, event: Event, cursor: u64) {
        let state = self.topic(topic);
        let mut st = lock(&state);
        if st.mark.is_some_and(|m| cursor <= m) {
            return;
        }
        st.mark = Some(cursor);
        // Events this server numbers later come after it.
        self.inner
            .next_cursor
            .fetch_max(cursor.saturating_add(1), Ordering::Relaxed);
        let p = Arc::new(Published::new(event, Some(cursor)));
        p.persisted.store(true, Ordering::Release);
        self.fan_out(&mut st, &p);
        st.ring.push_back(p);
        st.trim(self.inner.config.ring_capacity, true);
    }
}

//! Replay notices on PostgreSQL: every append of replay entries runs `pg_notify` in its own
//! transaction (delivered when it commits, never before), and a listener per bus holds one
//! connection with `LISTEN` on the channel.
//!
//! The payload is `<instance> <newest cursor> <topic> <topic> ...`: `instance` is the
//! appending store's own random id, so a store never notifies itself; topics that would pass
//! [`PAYLOAD_MAX`] bytes are replaced by `*` (any topic). A listener that loses its connection reconnects with
//! backoff and then sends [`ReplayNotice::Any`]: whatever was appended meanwhile is read from
//! the log, so nothing is missed, only read later.

use super::super::notices::{NoticeSender, ReplayNotice};
use futures::StreamExt;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, Config, NoTls};

/// The notification channel (database-wide in PostgreSQL, so one name for every schema).
pub(super) const CHANNEL: &str = "agentvm_replay";

/// PostgreSQL refuses payloads of 8000 bytes or more; stay well below.
const PAYLOAD_MAX: usize = 7000;

/// The first and the longest wait before reconnecting the listener.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(30));

/// The payload of an append by `instance` of entries in `topics`, the newest with cursor
/// `newest`: `<instance> <newest> <topic>...`, or `<instance> <newest> *` when the topics do
/// not fit.
pub(super) fn payload<'a>(
    instance: &str,
    newest: u64,
    topics: impl Iterator<Item = &'a str>,
) -> String {
    let head = format!("{instance} {newest}");
    let mut out = head.clone();
    for topic in topics {
        if out.len() + 1 + topic.len() > PAYLOAD_MAX {
            return format!("{head} *");
        }
        out.push(' ');
        out.push_str(topic);
    }
    out
}

/// The notice a payload carries for the store `me`; `None` for its own appends (and for a
/// payload that is not one of ours).
pub(super) fn parse(payload: &str, me: &str) -> Option<ReplayNotice> {
    let mut words = payload.split(' ');
    if words.next()? == me {
        return None;
    }
    let newest = words.next()?.parse::<u64>().ok()?;
    let topics: Vec<String> = words.map(str::to_string).collect();
    if topics.iter().any(|t| t == "*") {
        Some(ReplayNotice::any(newest))
    } else {
        Some(ReplayNotice::topics(topics, newest))
    }
}

/// Listens until `out`'s receiver is dropped, reconnecting after errors.
pub(super) async fn listen(config: Config, server: String, me: String, out: NoticeSender) {
    let mut backoff = BACKOFF.0;
    while !out.is_closed() {
        match listen_once(&config, &me, &out).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(
                    server = %server,
                    error = %e,
                    retry_in_ms = backoff.as_millis() as u64,
                    "listening for other servers' events on PostgreSQL failed; live events of \
                     sessions run elsewhere wait until it reconnects"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF.1);
            }
        }
    }
}

/// One connection's life: `LISTEN`, then forward notices. `Ok` when the receiver is gone.
async fn listen_once(config: &Config, me: &str, out: &NoticeSender) -> Result<(), String> {
    let (client, mut connection) = config.connect(NoTls).await.map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<String, String>>(256);
    // The connection must be polled for the LISTEN below to complete, and for notifications.
    let driver = tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let forward = match message {
                Ok(AsyncMessage::Notification(n)) => Ok(n.payload().to_string()),
                Ok(_) => continue,
                Err(e) => Err(e.to_string()),
            };
            let failed = forward.is_err();
            if tx.send(forward).await.is_err() || failed {
                return;
            }
        }
        let _ = tx
            .send(Err("the server closed the connection".into()))
            .await;
    });
    let listening = client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| e.to_string());
    if let Err(e) = listening {
        driver.abort();
        return Err(e);
    }
    // Whatever was appended before this LISTEN (while connecting, or while disconnected) is
    // read from the log now.
    out.send(ReplayNotice::any(0));
    let result = loop {
        let next = tokio::select! {
            next = rx.recv() => next,
            // Checked now and then, so a dropped receiver on an idle database ends the listener.
            _ = tokio::time::sleep(Duration::from_secs(5)) => {
                if out.is_closed() { break Ok(()); }
                continue;
            }
        };
        match next {
            Some(Ok(payload)) => {
                if let Some(notice) = parse(&payload, me) {
                    if !out.send(notice) {
                        break Ok(());
                    }
                }
            }
            Some(Err(e)) => break Err(e),
            None => break Err("the listening connection ended".into()),
        }
    };
    driver.abort();
    drop(client);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_topics_and_fall_back_to_any() {
        let p = payload("inst_a", 42, ["s1", "s2"].into_iter());
        assert_eq!(p, "inst_a 42 s1 s2");
        assert_eq!(parse(&p, "inst_a"), None);
        assert_eq!(
            parse(&p, "inst_b"),
            Some(ReplayNotice::topics(vec!["s1".into(), "s2".into()], 42))
        );
        let long: Vec<String> = (0..1000).map(|i| format!("sess_{i:020}")).collect();
        let p = payload("inst_a", 7, long.iter().map(String::as_str));
        assert!(p.len() < PAYLOAD_MAX, "{}", p.len());
        assert_eq!(parse(&p, "inst_b"), Some(ReplayNotice::any(7)));
        assert_eq!(parse("someone else's words", "inst_b"), None);
    }
}

#[cfg(test)]
mod bus_tests {
    use super::super::testing;
    use super::super::PostgresStore;
    use crate::model::{Event, EventContext, EventPayload};
    use crate::store::Store;
    use crate::{Bus, BusConfig, BusItem, EventFilter, Subscription};
    use std::sync::Arc;
    use std::time::Duration;

    fn delta(session: &str, i: usize) -> Event {
        Event::new(
            EventPayload::TextDelta {
                text: i.to_string(),
            },
            Some(EventContext {
                container_id: Some("c".into()),
                session_id: Some(session.into()),
                ..Default::default()
            }),
        )
    }

    /// A bus on a store of its own on the schema at `url`: one server of a cluster.
    async fn server(url: &str) -> Bus {
        let store: Arc<dyn Store> = Arc::new(PostgresStore::open(url).await.unwrap());
        Bus::new(BusConfig::default(), Some(store)).unwrap()
    }

    /// The texts and cursors of the next `n` events, within 10 s.
    async fn take(sub: &mut Subscription, n: usize) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        while out.len() < n {
            let item = tokio::time::timeout(Duration::from_secs(10), sub.recv())
                .await
                .unwrap_or_else(|_| panic!("only {} of {n} events within 10 s", out.len()))
                .expect("the subscription is open");
            let BusItem::Event(p) = item else {
                panic!("unexpected {item:?}")
            };
            let EventPayload::TextDelta { text } = &p.event.payload else {
                panic!("unexpected {:?}", p.event)
            };
            out.push((text.clone(), p.cursor.unwrap()));
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn subscribers_on_one_server_follow_a_session_another_server_runs_live_and_once() {
        if testing::skipped() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let url = tokio::task::spawn_blocking(move || testing::schema_url(&path))
            .await
            .unwrap();
        let (a, b) = (server(&url).await, server(&url).await);

        // B runs session s: ten events are in the shared log before anyone on A listens.
        let early: Vec<u64> = (0..10)
            .map(|i| b.publish(delta("s", i)).cursor.unwrap())
            .collect();
        b.flush().await;
        // A hears of B's appends and numbers above them: a live subscriber joining now does
        // not get them as new.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while a.current_cursor() < early[9] {
            assert!(
                std::time::Instant::now() < deadline,
                "A never heard of B's events"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut replaying = a
            .subscribe(EventFilter {
                sessions: vec![("s".into(), Some(0))],
                ..Default::default()
            })
            .unwrap();
        let mut live = a.subscribe(EventFilter::session("s")).unwrap();

        // B streams 90 more, persisted in several batches while A's subscribers read.
        let mut later = Vec::new();
        for i in 10..100 {
            later.push(b.publish(delta("s", i)).cursor.unwrap());
            if i % 15 == 0 {
                b.flush().await;
            }
        }
        b.flush().await;

        let all: Vec<(String, u64)> = (0..100)
            .map(|i| i.to_string())
            .zip(early.iter().chain(&later).copied())
            .collect();
        assert_eq!(take(&mut replaying, 100).await, all, "replay, then live");
        assert_eq!(
            take(&mut live, 90).await,
            all[10..],
            "live only, B's cursors"
        );
        // Nothing twice: neither has anything more.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(replaying.try_recv().is_none());
        assert!(live.try_recv().is_none());

        // A server that takes the session over numbers above everything B did.
        let on_a = a.publish(delta("s", 100)).cursor.unwrap();
        assert!(on_a > later[89], "{on_a} after {}", later[89]);
        assert_eq!(take(&mut live, 1).await, vec![("100".to_string(), on_a)]);
    }
}

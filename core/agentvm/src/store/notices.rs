//! Notices of replay entries that other servers append to a shared replay log
//! ([`Store::replay_notices`](super::Store::replay_notices)): what lets a subscriber on one
//! server follow, live, a session that another server runs.
//!
//! A notice only says *where* to look (which topics, or any); the entries themselves are read
//! from the log, so a notice lost or merged with others loses nothing: the reader asks the log
//! for everything after the last cursor it has. Pending notices are merged into one set of
//! topics with a bound ([`MAX_TOPICS`]); past it they become [`ReplayNotice::Any`], so a
//! burst of appends never grows memory.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use tokio::sync::Notify;

/// Topics held in pending notices before they are merged into [`ReplayNotice::Any`].
pub(crate) const MAX_TOPICS: usize = 1024;

/// What other servers appended to the shared replay log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayNotice {
    /// The topics (session ids) with new entries, sorted; `None`: maybe any topic (after the
    /// listener (re)connected, or when too many topics were pending to list).
    pub topics: Option<Vec<String>>,
    /// The newest cursor appended (0 when unknown): a server numbers its own events above it.
    pub newest: u64,
}

impl ReplayNotice {
    /// New entries in these topics, the newest with cursor `newest`.
    pub fn topics(topics: Vec<String>, newest: u64) -> Self {
        ReplayNotice {
            topics: Some(topics),
            newest,
        }
    }

    /// New entries maybe in any topic.
    pub fn any(newest: u64) -> Self {
        ReplayNotice {
            topics: None,
            newest,
        }
    }
}

#[derive(Default)]
struct Pending {
    any: bool,
    topics: HashSet<String>,
    newest: u64,
    /// A notice arrived since the last `next` (one with no topics still says `newest`).
    ready: bool,
}

#[derive(Default)]
struct Board {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// The receiving end: the merged notices, in [`next`](Self::next). Dropping it tells the
/// listener to stop.
pub struct ReplayNotices {
    board: Arc<Board>,
}

impl std::fmt::Debug for ReplayNotices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayNotices").finish_non_exhaustive()
    }
}

/// The sending end, held by the listener: it stops when [`is_closed`](Self::is_closed).
#[derive(Clone)]
pub struct NoticeSender {
    board: Weak<Board>,
}

/// A connected pair.
pub fn channel() -> (NoticeSender, ReplayNotices) {
    let board = Arc::new(Board::default());
    (
        NoticeSender {
            board: Arc::downgrade(&board),
        },
        ReplayNotices { board },
    )
}

impl NoticeSender {
    /// Adds a notice to the pending ones (merged; never waits). False when the receiver is gone.
    pub fn send(&self, notice: ReplayNotice) -> bool {
        let Some(board) = self.board.upgrade() else {
            return false;
        };
        {
            let mut pending = board.pending.lock().unwrap_or_else(|p| p.into_inner());
            pending.newest = pending.newest.max(notice.newest);
            match notice.topics {
                None => {
                    pending.any = true;
                    pending.topics.clear();
                }
                Some(topics) if !pending.any => {
                    pending.topics.extend(topics);
                    if pending.topics.len() > MAX_TOPICS {
                        pending.any = true;
                        pending.topics.clear();
                    }
                }
                Some(_) => {}
            }
            pending.ready = true;
        }
        board.wake.notify_one();
        true
    }

    /// Whether the receiver was dropped.
    pub fn is_closed(&self) -> bool {
        self.board.strong_count() == 0
    }
}

impl ReplayNotices {
    /// The notices pending since the last call, merged; waits for one when none is.
    pub async fn next(&mut self) -> ReplayNotice {
        loop {
            {
                let mut pending = self.board.pending.lock().unwrap_or_else(|p| p.into_inner());
                if pending.ready {
                    let taken = std::mem::take(&mut *pending);
                    if taken.any {
                        return ReplayNotice::any(taken.newest);
                    }
                    let mut topics: Vec<String> = taken.topics.into_iter().collect();
                    topics.sort();
                    return ReplayNotice::topics(topics, taken.newest);
                }
            }
            self.board.wake.notified().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notices_merge_and_overflow_into_any() {
        let (tx, mut rx) = channel();
        assert!(tx.send(ReplayNotice::topics(vec!["b".into(), "a".into()], 7)));
        assert!(tx.send(ReplayNotice::topics(vec!["a".into(), "c".into()], 5)));
        assert_eq!(
            rx.next().await,
            ReplayNotice::topics(vec!["a".into(), "b".into(), "c".into()], 7)
        );
        let many: Vec<String> = (0..=MAX_TOPICS).map(|i| format!("t{i}")).collect();
        tx.send(ReplayNotice::topics(many, 9));
        tx.send(ReplayNotice::topics(vec!["later".into()], 8));
        assert_eq!(rx.next().await, ReplayNotice::any(9));
        // Nothing pending: the next call waits for the next notice.
        let waiting = tokio::spawn(async move { rx.next().await });
        tokio::task::yield_now().await;
        tx.send(ReplayNotice::topics(vec![], 12));
        assert_eq!(waiting.await.unwrap(), ReplayNotice::topics(vec![], 12));
        assert!(tx.is_closed());
        assert!(!tx.send(ReplayNotice::any(0)));
    }
}

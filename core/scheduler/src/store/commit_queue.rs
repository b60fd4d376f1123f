//! Group commit: the writes queued behind one durable commit share the next.
//!
//! A durable redb commit costs one or two `fsync`s, whatever it holds, so one commit per record
//! caps the scheduler's writes at the disk's commit rate. Here a writer queues its write and
//! waits; whichever waiter finds no commit in progress becomes the committer: it takes
//! everything queued, hands it to the commit function as one batch (one write transaction),
//! and files each write's outcome for its waiter, who then returns it. Nobody learns of a
//! success before the batch holding its write is committed, and a failed batch fails every
//! write in it.
//!
//! The committer is one of the waiting writers (they already run on the blocking pool), not a
//! thread of its own: nothing else holds the database, so it can be closed and reopened as
//! soon as the callers are done, and there is no thread to start or stop.
//!
//! The queue holds at most `capacity` writes not yet taken by a committer; more writers wait
//! for room before queuing (backpressure). Writes are taken in the order they were queued and
//! batches are committed one after the other, so two writes of the same record land in the
//! order they were queued. No I/O here: the commit function is the caller's (the redb store's
//! here, the PostgreSQL store's in the runtime crate).

use agentvm_model::{Error, Result};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// How many commits were made and how many writes they held, since the queue was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Batches committed or failed (one write transaction each).
    pub commits: u64,
    /// Writes those batches held.
    pub writes: u64,
}

/// Writes of type `W` waiting for a shared commit, each answered with an `O` or an error.
/// A store makes one per database and routes its durable writes through
/// [`submit`](CommitQueue::submit) from blocking threads.
pub struct CommitQueue<W, O> {
    state: Mutex<State<W, O>>,
    /// Signalled when writes were taken from the queue, for writers waiting for room.
    room: Condvar,
    /// Signalled when a batch is done, for waiters whose outcome may be filed now and for one
    /// of them to commit the next batch.
    done: Condvar,
    /// Most writes queued and not taken yet.
    capacity: usize,
    /// Counted outside the lock for [`CommitQueue::stats`].
    commits: AtomicU64,
    writes: AtomicU64,
}

struct State<W, O> {
    /// Writes not taken by a committer yet, oldest first, with their tickets.
    queued: VecDeque<(u64, W)>,
    /// Whether a committer holds a batch now (at most one does).
    committing: bool,
    /// Outcomes of committed (or failed) writes, by ticket, until their waiter takes them.
    outcomes: HashMap<u64, Result<O>>,
    /// The ticket the next write gets.
    next_ticket: u64,
    /// Writers waiting for room in the queue (for tests of the backpressure).
    waiting_for_room: usize,
}

impl<W, O> CommitQueue<W, O> {
    /// An empty queue holding at most `capacity` (at least 1) writes not yet taken.
    pub fn new(capacity: usize) -> Self {
        CommitQueue {
            state: Mutex::new(State {
                queued: VecDeque::new(),
                committing: false,
                outcomes: HashMap::new(),
                next_ticket: 0,
                waiting_for_room: 0,
            }),
            room: Condvar::new(),
            done: Condvar::new(),
            capacity: capacity.max(1),
            commits: AtomicU64::new(0),
            writes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<W, O>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `write` and returns its outcome once the batch holding it was committed (or
    /// failed). `commit` is called with a whole batch, oldest write first, when this caller
    /// becomes the committer; it returns one outcome per write, in the same order. Blocks.
    pub fn submit(&self, write: W, commit: impl FnOnce(Vec<W>) -> Vec<Result<O>>) -> Result<O> {
        let mut state = self.lock();
        if state.queued.len() >= self.capacity {
            state.waiting_for_room += 1;
            while state.queued.len() >= self.capacity {
                state = self.room.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.waiting_for_room -= 1;
        }
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push_back((ticket, write));
        let mut commit = Some(commit);
        loop {
            if let Some(outcome) = state.outcomes.remove(&ticket) {
                return outcome;
            }
            if state.committing {
                state = self.done.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // No commit in progress and ours is still queued: commit everything queued.
            let Some(commit) = commit.take() else {
                // Unreachable: once we committed, our outcome was filed before `committing`
                // was cleared. Reported rather than looping forever.
                return Err(Error::Internal(
                    "a scheduler record was lost from its commit batch".into(),
                ));
            };
            let (tickets, batch): (Vec<u64>, Vec<W>) = state.queued.drain(..).unzip();
            state.committing = true;
            drop(state);
            self.room.notify_all();
            let mut leading = Leading {
                queue: self,
                tickets,
            };
            let outcomes = commit(batch);
            leading.file(outcomes);
            state = self.lock();
        }
    }

    /// Commits and writes so far.
    pub fn stats(&self) -> CommitStats {
        CommitStats {
            commits: self.commits.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
        }
    }

    /// Writes queued and not taken by a committer.
    #[cfg(test)]
    pub(crate) fn queued(&self) -> usize {
        self.lock().queued.len()
    }

    /// Writers waiting for room before they can queue.
    #[cfg(test)]
    pub(crate) fn waiting_for_room(&self) -> usize {
        self.lock().waiting_for_room
    }
}

/// The committer's hold on a batch: files the outcomes, or, if the commit function panicked,
/// fails the batch, and either way lets the next committer start.
struct Leading<'a, W, O> {
    queue: &'a CommitQueue<W, O>,
    /// The batch's tickets, oldest first; emptied once the outcomes are filed.
    tickets: Vec<u64>,
}

impl<W, O> Leading<'_, W, O> {
    /// Files one outcome per ticket; a commit function that returned too few fails the rest.
    fn file(&mut self, outcomes: Vec<Result<O>>) {
        let tickets = std::mem::take(&mut self.tickets);
        let n = tickets.len() as u64;
        let mut outcomes = outcomes.into_iter();
        let mut state = self.queue.lock();
        for ticket in tickets {
            let outcome = outcomes.next().unwrap_or_else(|| {
                Err(Error::Internal(
                    "a scheduler record's commit reported no outcome".into(),
                ))
            });
            state.outcomes.insert(ticket, outcome);
        }
        state.committing = false;
        drop(state);
        self.queue.commits.fetch_add(1, Ordering::Relaxed);
        self.queue.writes.fetch_add(n, Ordering::Relaxed);
        self.queue.done.notify_all();
    }
}

impl<W, O> Drop for Leading<'_, W, O> {
    fn drop(&mut self) {
        if self.tickets.is_empty() {
            return;
        }
        // Only when the commit function panicked: its writes were not committed.
        let failed = (0..self.tickets.len())
            .map(|_| {
                Err(Error::Internal(
                    "the commit of a batch of scheduler records panicked".into(),
                ))
            })
            .collect();
        self.file(failed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::thread;
    use std::time::Duration;

    /// Waits (up to 10 s) until `f` holds.
    fn until(what: &str, f: impl Fn() -> bool) {
        for _ in 0..10_000 {
            if f() {
                return;
            }
            thread::sleep(Duration::from_millis(1));
        }
        panic!("timed out waiting for {what}");
    }

    #[test]
    fn concurrent_writers_share_commits_and_each_gets_its_own_outcome() {
        let queue = Arc::new(CommitQueue::<u32, u32>::new(1024));
        let batches = Arc::new(Mutex::new(Vec::<Vec<u32>>::new()));
        let start = Arc::new(Barrier::new(16));
        let writers: Vec<_> = (0..16u32)
            .map(|w| {
                let (queue, batches, start) = (queue.clone(), batches.clone(), start.clone());
                thread::spawn(move || {
                    start.wait();
                    for i in 0..50u32 {
                        let v = w * 1000 + i;
                        let out = queue
                            .submit(v, |batch| {
                                thread::sleep(Duration::from_micros(300));
                                let out = batch.iter().map(|v| Ok(v * 2)).collect();
                                batches.lock().unwrap().push(batch);
                                out
                            })
                            .unwrap();
                        assert_eq!(out, v * 2);
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        let batches = batches.lock().unwrap();
        let all: Vec<u32> = batches.iter().flatten().copied().collect();
        assert_eq!(all.len(), 800, "every write committed exactly once");
        // Each writer's writes were committed in the order it made them.
        for w in 0..16u32 {
            let mine: Vec<u32> = all.iter().copied().filter(|v| v / 1000 == w).collect();
            assert_eq!(mine, (0..50).map(|i| w * 1000 + i).collect::<Vec<_>>());
        }
        let stats = queue.stats();
        assert_eq!(stats.writes, 800);
        assert_eq!(stats.commits as usize, batches.len());
        assert!(
            stats.commits < 800,
            "16 writers never shared a commit ({} commits)",
            stats.commits
        );
    }

    #[test]
    fn a_failed_batch_fails_its_writes_only_and_the_queue_goes_on() {
        let queue = Arc::new(CommitQueue::<u32, ()>::new(64));
        let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        // The first write's commit holds until the second batch has queued up behind it.
        let first = {
            let (queue, entered, release) = (queue.clone(), entered.clone(), release.clone());
            thread::spawn(move || {
                queue.submit(0, |batch| {
                    entered.wait();
                    release.wait();
                    batch.iter().map(|_| Ok(())).collect()
                })
            })
        };
        entered.wait();
        let failed_batch = Arc::new(Mutex::new(Vec::new()));
        let behind: Vec<_> = (1..=5u32)
            .map(|v| {
                let (queue, failed_batch) = (queue.clone(), failed_batch.clone());
                thread::spawn(move || {
                    queue.submit(v, |batch| {
                        let out = batch
                            .iter()
                            .map(|_| Err(Error::Internal("disk on fire".into())))
                            .collect();
                        *failed_batch.lock().unwrap() = batch;
                        out
                    })
                })
            })
            .collect();
        until("five writes queued", || queue.queued() == 5);
        release.wait();
        assert!(first.join().unwrap().is_ok());
        for w in behind {
            let e = w.join().unwrap().unwrap_err();
            assert!(e.to_string().contains("disk on fire"), "{e}");
        }
        let mut failed = failed_batch.lock().unwrap().clone();
        failed.sort();
        assert_eq!(
            failed,
            vec![1, 2, 3, 4, 5],
            "the five queued writes were one batch"
        );
        let after = queue.submit(9, |b| b.iter().map(|_| Ok(())).collect());
        assert!(after.is_ok(), "{after:?}");
        assert_eq!(
            queue.stats(),
            CommitStats {
                commits: 3,
                writes: 7
            }
        );
    }

    #[test]
    fn a_panicking_commit_fails_its_batch_and_the_queue_goes_on() {
        let queue = Arc::new(CommitQueue::<u32, ()>::new(8));
        let q = queue.clone();
        let panicked = thread::spawn(move || q.submit(1, |_| panic!("commit bug")));
        assert!(panicked.join().is_err(), "the committer's own call unwinds");
        let ok = queue.submit(2, |b| b.iter().map(|_| Ok(())).collect());
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn writers_beyond_the_capacity_wait_for_room() {
        let queue = Arc::new(CommitQueue::<u32, ()>::new(2));
        let (entered, release) = (Arc::new(Barrier::new(2)), Arc::new(Barrier::new(2)));
        let first = {
            let (queue, entered, release) = (queue.clone(), entered.clone(), release.clone());
            thread::spawn(move || {
                queue.submit(0, |batch| {
                    entered.wait();
                    release.wait();
                    batch.iter().map(|_| Ok(())).collect()
                })
            })
        };
        entered.wait();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rest: Vec<_> = (1..=5u32)
            .map(|v| {
                let (queue, seen) = (queue.clone(), seen.clone());
                thread::spawn(move || {
                    queue.submit(v, |batch| {
                        seen.lock().unwrap().push(batch.len());
                        batch.iter().map(|_| Ok(())).collect()
                    })
                })
            })
            .collect();
        until("two queued, three waiting for room", || {
            queue.queued() == 2 && queue.waiting_for_room() == 3
        });
        release.wait();
        assert!(first.join().unwrap().is_ok());
        for w in rest {
            assert!(w.join().unwrap().is_ok());
        }
        assert!(seen.lock().unwrap().iter().all(|&n| n <= 2), "{seen:?}");
    }
}

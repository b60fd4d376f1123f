//! The store: every record the runtime keeps, behind one trait with interchangeable backends.
//!
//! [`Store`] is the contract: containers, definitions, images (listed by container), sessions
//! (listed by image), messages keyed `(sessionId, seq)`, the replay log keyed
//! `(topic, cursor)`, access tokens, and the scheduler's tables through
//! [`Store::scheduler_store`], so one backend holds everything. Backends:
//!
//! - [`RedbStore`]: the embedded default, one redb file (`<data-dir>/agentvm.redb`);
//! - [`MemoryStore`]: maps behind a lock, for ephemeral runtimes and tests;
//! - `PostgresStore` (feature `postgres`): a PostgreSQL database several servers can share.
//!
//! Servers sharing a database coordinate through the store too: cluster membership and
//! container leases with fencing epochs (`store/lease.rs`, `docs/cluster.md`); a store that
//! joined a cluster refuses container writes it holds no live lease for.
//!
//! Each backend runs the same conformance suite (`store/conformance.rs`,
//! `store_conformance_tests!`): a backend that needs a different expectation means the
//! contract written here is wrong, not the backend. The trait names no backend type, so a
//! server database can implement it too.
//!
//! Calls block (redb does, and PostgreSQL's does): async code runs writes on the blocking
//! pool. Unless a method says otherwise, a write is atomic (all of it or none of it
//! is visible, also after a crash) and durable: when it returns `Ok`, every later call on any
//! thread sees it, and a persistent backend keeps it through a crash.

mod lease;
mod memory;
mod notices;
#[cfg(feature = "postgres")]
mod postgres;
mod redb;

#[cfg(test)]
mod conformance;

pub use self::redb::RedbStore;
pub use lease::{ClusterMember, Lease, LeaseClaim, LeaseRecord, MemberRecord};
pub use memory::MemoryStore;
pub use notices::{channel as replay_notice_channel, NoticeSender, ReplayNotice, ReplayNotices};
#[cfg(feature = "postgres")]
pub use postgres::PostgresStore;

use crate::error::Result;
use crate::model::{ContainerRecord, Definition, ImageRecord, Message, SessionRecord};
use agentvm_scheduler::SchedulerStore;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// The version of the record schema this build reads and writes. A persistent backend
/// records it and refuses to open data written by a newer schema.
pub const SCHEMA_VERSION: u64 = 1;

/// Every record the runtime keeps. See the module docs for the atomicity and durability
/// every write promises; methods state only what they add to it.
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The schema version of the stored data ([`SCHEMA_VERSION`] once opened by this build).
    fn schema_version(&self) -> Result<u64>;

    /// The scheduler's tables (runtime nodes, templates, sandboxes, executions) in this same
    /// backend. Every call returns a handle on the same tables; the first may create them, so
    /// a store whose runtime has no scheduler never pays for them.
    fn scheduler_store(&self) -> Result<Arc<dyn SchedulerStore>>;

    // ----- containers -----

    /// Creates the container unless it exists (then `created_at` is `now`). With a sandbox
    /// template, sets it, on an existing container too; without one an existing container's
    /// template is kept. Returns the record as stored and whether it was created.
    fn create_container(
        &self,
        container_id: &str,
        sandbox_template: Option<&str>,
        now: i64,
    ) -> Result<(ContainerRecord, bool)>;

    /// A container, if it exists.
    fn get_container(&self, container_id: &str) -> Result<Option<ContainerRecord>>;

    /// Every container, by id.
    fn list_containers(&self) -> Result<Vec<ContainerRecord>>;

    /// Deletes a container and everything under it (its images, their sessions, messages and
    /// replay log) in one atomic write. Returns what it removed (images in id order, sessions
    /// image by image in id order) so the caller can stop agents and free disk; `None` when the
    /// container did not exist.
    fn delete_container(&self, container_id: &str) -> Result<Option<Removed>>;

    // ----- definitions -----

    /// Stores a definition, replacing one of the same name. Returns whether it replaced one.
    fn put_definition(&self, definition: &Definition) -> Result<bool>;

    /// A definition by name.
    fn get_definition(&self, name: &str) -> Result<Option<Definition>>;

    /// Every definition, by name.
    fn list_definitions(&self) -> Result<Vec<Definition>>;

    // ----- images -----

    /// Stores a new image and its first session in one atomic write, creating the image's
    /// container (at `image.created_at`) if missing. Returns whether the container was created.
    ///
    /// The two records must name each other (`image.session_id`, `session.image_id`) and the
    /// same container, else `InvalidInput`; an image or session id that exists is
    /// `AlreadyExists`. On any error nothing is written.
    fn create_image(&self, image: &ImageRecord, session: &SessionRecord) -> Result<bool>;

    /// An image by id.
    fn get_image(&self, image_id: &str) -> Result<Option<ImageRecord>>;

    /// The images of a container, oldest first (`created_at`, then id).
    fn list_images(&self, container_id: &str) -> Result<Vec<ImageRecord>>;

    /// Replaces a stored image (its name, description, updatedAt, ...). `NotFound` if it is
    /// gone; an image never changes container or first session (`InvalidInput`).
    fn update_image(&self, image: &ImageRecord) -> Result<()>;

    /// Deletes an image with its sessions, their messages and replay log, in one atomic write.
    /// Returns the image and what was removed; `None` if it did not exist.
    fn delete_image(&self, image_id: &str) -> Result<Option<(ImageRecord, Removed)>>;

    // ----- sessions -----

    /// Stores a new session of an existing image (`NotFound` if the image is missing). The
    /// session names the image's container, else `InvalidInput`; an existing session id is
    /// `AlreadyExists`.
    fn create_session(&self, session: &SessionRecord) -> Result<()>;

    /// A session by id.
    fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>>;

    /// The sessions of an image, oldest first (`created_at`, then id).
    fn list_sessions(&self, image_id: &str) -> Result<Vec<SessionRecord>>;

    /// Replaces a stored session (title, updatedAt). `NotFound` if it is gone; a session never
    /// changes image or container (`InvalidInput`).
    fn update_session(&self, session: &SessionRecord) -> Result<()>;

    /// Deletes a session with its messages and replay log, in one atomic write. Returns the
    /// record; `None` if it did not exist.
    fn delete_session(&self, session_id: &str) -> Result<Option<SessionRecord>>;

    // ----- messages -----

    /// Appends a message to a session and returns its sequence number: 0 for the first, then
    /// one more than the previous, also under concurrent appends. Refuses a session that does
    /// not exist (`NotFound`), so a deleted conversation cannot be resurrected.
    fn append_message(&self, session_id: &str, message: &Message) -> Result<u64>;

    /// The messages of a session in sequence order (empty for an unknown session). Reads the
    /// whole history: requests page with [`Store::page_messages`] instead.
    fn list_messages(&self, session_id: &str) -> Result<Vec<Message>>;

    /// One page of a session's messages with their sequence numbers, oldest first (empty for
    /// an unknown session). See [`MessagePageRequest`] for which page; a backend reads only
    /// that page, never the whole history.
    fn page_messages(&self, session_id: &str, page: &MessagePageRequest) -> Result<MessagePage>;

    /// How many messages a session has.
    fn count_messages(&self, session_id: &str) -> Result<u64>;

    // ----- replay log -----

    /// Stores replay entries (replacing any with the same topic and cursor), atomically but
    /// **not durably**: a persistent backend may lose the last batches on a crash, which only
    /// shortens what can be replayed (the messages themselves are stored durably on their own).
    /// Entries are not tied to a session record, but deleting a session deletes its topic.
    fn append_replay(&self, entries: &[ReplayEntry]) -> Result<()>;

    /// [`append_replay`](Self::append_replay), after which a store that can do it cheaply
    /// drops each written topic's entries beyond its newest `keep` at once, raising the
    /// topic's [`replay_floor`](Self::replay_floor) as [`trim_replay`](Self::trim_replay)
    /// does. The in-memory store does, so its log (which lives in RAM) never holds more than
    /// `keep` entries per topic; the others keep everything until the next `trim_replay`.
    fn append_replay_capped(&self, entries: &[ReplayEntry], keep: usize) -> Result<()> {
        let _ = keep;
        self.append_replay(entries)
    }

    /// Whether this store's calls return without I/O (an in-memory store), so a caller on an
    /// async task may make them there instead of handing them to the blocking pool (a thread
    /// wake-up each way). False unless a backend says otherwise.
    fn is_in_memory(&self) -> bool {
        false
    }

    /// Entries of `topic` with a cursor greater than `after`, in cursor order, at most `limit`.
    fn read_replay(&self, topic: &str, after: u64, limit: usize) -> Result<Vec<ReplayEntry>>;

    /// The highest cursor stored in any topic (0 when the log is empty).
    fn max_replay_cursor(&self) -> Result<u64>;

    /// Trims every topic to its newest `keep` entries and drops entries with a timestamp older
    /// than `min_ts`, in one atomic write. Returns how many were removed.
    fn trim_replay(&self, keep: usize, min_ts: i64) -> Result<u64>;

    /// The highest cursor of `topic` that trimming removed (0 when none was): a replay after
    /// an older cursor has lost what lies between. Survives restarts with the log.
    fn replay_floor(&self, topic: &str) -> Result<u64>;

    /// The newest cursor of `topic` in the log (0 when it has none).
    fn replay_newest(&self, topic: &str) -> Result<u64> {
        let mut newest = 0;
        loop {
            let page = self.read_replay(topic, newest, 1024)?;
            match page.last() {
                Some(last) => newest = last.cursor,
                None => return Ok(newest),
            }
        }
    }

    /// Notices of the entries *other* servers append to this log, as their appends commit:
    /// with them a server's bus relays, live, the events of sessions another server runs
    /// (see `Bus`). `None` (the default) for a log no other server writes. Each call starts
    /// a listener of its own, which stops when the returned receiver is dropped.
    fn replay_notices(&self) -> Option<ReplayNotices> {
        None
    }

    // ----- tokens -----

    /// Stores a token record, keyed by its hash (replacing one with the same hash).
    fn put_token(&self, token: &TokenRecord) -> Result<()>;

    /// The token with this hash.
    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>>;

    /// Every token, oldest first (`created_at`, then id).
    fn list_tokens(&self) -> Result<Vec<TokenRecord>>;

    /// Marks the token with id `id` revoked at `now` (a revoked token keeps its first
    /// revocation time). Returns false when there is no such token.
    fn revoke_token(&self, id: &str, now: i64) -> Result<bool>;

    // ----- health -----

    /// Whether the store can write now, cheaply: a backend that saw no write fail answers at
    /// once; during a failure episode (a full disk) it tries one small write, so readiness
    /// turns true again as soon as space is back. `StorageFull` or `Storage` while it cannot.
    fn check_writable(&self) -> Result<()> {
        Ok(())
    }

    // ----- cluster membership and container leases (see `store/lease.rs`) -----

    /// Registers this store's server as a cluster member (or refreshes it: heartbeat now, not
    /// draining) and from then on fences every write that belongs to a container: it commits
    /// only under a live lease this server holds. Single-process backends accept and ignore it.
    fn join_cluster(&self, member: &ClusterMember) -> Result<()> {
        let _ = member;
        Ok(())
    }

    /// Records a heartbeat of this store's member (database time). Marks it draining when
    /// `draining`, so others know it is handing its leases over.
    fn heartbeat(&self, draining: bool) -> Result<()> {
        let _ = draining;
        Ok(())
    }

    /// The registered servers, by id (empty for single-process backends).
    fn cluster_members(&self) -> Result<Vec<MemberRecord>> {
        Ok(Vec::new())
    }

    /// Takes the lease of `container_id` for `server_id` for `ttl`: a new lease at epoch 1, an
    /// expired or released one at its epoch + 1, or the caller's own live one extended at the
    /// same epoch; one atomic statement, database time. [`LeaseClaim::Taken`] when another
    /// server holds a live lease. Single-process backends always grant it (epoch 1).
    fn acquire_lease(
        &self,
        container_id: &str,
        server_id: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim> {
        let _ = ttl;
        Ok(LeaseClaim::Held(lease::local_lease(
            container_id,
            server_id,
        )))
    }

    /// Extends a held lease by `ttl` if it is still this owner's, at this epoch, and not
    /// expired. `false` (and fencing forgets it) when it was lost: the holder must step down.
    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let _ = (lease, ttl);
        Ok(true)
    }

    /// Gives a held lease up at once (it expires now), so another server can take it without
    /// waiting for its TTL. `false` when it was not held any more.
    fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let _ = lease;
        Ok(true)
    }

    /// A container's lease as stored; `None` when it never had one (always, for
    /// single-process backends).
    fn get_lease(&self, container_id: &str) -> Result<Option<LeaseRecord>> {
        let _ = container_id;
        Ok(None)
    }
}

/// Which page of a session's messages [`Store::page_messages`] reads.
///
/// Without `before` the page goes forward: the oldest messages with a sequence number greater
/// than `after` (from the first when `None`). With `before` (and no `after`) it goes backward:
/// the newest messages with a sequence number lower than `before`. With both, forward within
/// the range. Either way it returns at most `limit` messages (at least one if any is left) and
/// stops early once their stored size reaches `max_bytes`, so a page's size is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessagePageRequest {
    /// Only messages after this sequence number.
    pub after: Option<u64>,
    /// Only messages before this sequence number.
    pub before: Option<u64>,
    /// At most this many messages (0 is read as 1).
    pub limit: usize,
    /// Stop adding messages once the page's stored bytes reach this.
    pub max_bytes: usize,
}

/// A page of messages read by [`Store::page_messages`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MessagePage {
    /// `(seq, message)`, oldest first.
    pub messages: Vec<(u64, Message)>,
    /// Whether more messages lie beyond the page in its direction (older ones for a backward
    /// page, newer ones within the range for a forward page).
    pub has_more: bool,
}

impl MessagePageRequest {
    /// Whether the page is read newest-first (a `before` cursor without `after`).
    pub fn backward(&self) -> bool {
        self.before.is_some() && self.after.is_none()
    }

    /// The range of sequence numbers the page may come from, as inclusive bounds (`None` when
    /// it is empty).
    pub fn range(&self) -> Option<(u64, u64)> {
        let lo = match self.after {
            Some(a) => a.checked_add(1)?,
            None => 0,
        };
        let hi = match self.before {
            Some(b) => b.checked_sub(1)?,
            None => u64::MAX,
        };
        (lo <= hi).then_some((lo, hi))
    }

    /// Collects a page from rows of `(seq, stored)` in the page's direction (newest first when
    /// [`backward`](Self::backward)), measuring each with `size` and decoding only the rows
    /// it keeps.
    pub(crate) fn collect<R, I>(
        &self,
        rows: I,
        size: impl Fn(&R) -> usize,
        decode: impl Fn(R) -> Result<Message>,
    ) -> Result<MessagePage>
    where
        I: IntoIterator<Item = Result<(u64, R)>>,
    {
        let limit = self.limit.max(1);
        let mut page = MessagePage::default();
        let mut bytes = 0usize;
        for row in rows {
            let (seq, raw) = row?;
            let full = page.messages.len() >= limit
                || (!page.messages.is_empty() && bytes >= self.max_bytes);
            if full {
                page.has_more = true;
                break;
            }
            bytes = bytes.saturating_add(size(&raw));
            page.messages.push((seq, decode(raw)?));
        }
        if self.backward() {
            page.messages.reverse();
        }
        Ok(page)
    }
}

/// One stored replay-log entry: a session event and its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayEntry {
    /// The topic (a session id).
    pub topic: String,
    /// Its cursor, unique and increasing within the topic.
    pub cursor: u64,
    /// When it was published, ms (for trimming by age).
    pub timestamp: i64,
    /// The event, JSON: shared with the bus's copy of the event, so appending it to an
    /// in-memory log neither copies it nor keeps a second copy.
    pub json: std::sync::Arc<[u8]>,
}

/// What deleting a container or image removed, so the caller can stop agents and free disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Removed image ids.
    pub images: Vec<String>,
    /// Removed session ids.
    pub sessions: Vec<String>,
}

/// A stored access token (never the token itself: its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// `tok_…`, shown to operators and used to revoke.
    pub id: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// The containers it may use; `None`: all.
    pub containers: Option<Vec<String>>,
    /// Creation time, ms.
    pub created_at: i64,
    /// Revocation time, ms; a revoked token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// Checks the preconditions of [`Store::create_image`] that concern the records alone.
fn check_new_image(image: &ImageRecord, session: &SessionRecord) -> Result<()> {
    if image.session_id != session.session_id
        || session.image_id != image.image_id
        || session.container_id != image.container_id
    {
        return Err(crate::Error::invalid(format!(
            "image {} and session {} do not name each other and one container",
            image.image_id, session.session_id
        )));
    }
    Ok(())
}

/// Refuses an update that would move a record to another parent.
fn check_same_parent(what: &str, id: &str, stored: &str, given: &str) -> Result<()> {
    if stored != given {
        return Err(crate::Error::invalid(format!(
            "{what} {id} belongs to {stored}; it cannot move to {given}"
        )));
    }
    Ok(())
}

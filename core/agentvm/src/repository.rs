//! The Repository: every record agentvm keeps, in one redb database.
//!
//! One table per record type plus the secondary indexes the queries need (images by container,
//! sessions by image). Messages are keyed `(sessionId, seq)` and only ever appended; the replay
//! log is keyed `(topic, cursor)`. Records are stored as JSON, the same bytes the protocol sends.
//!
//! Every write method commits with redb's `Immediate` durability: when it returns `Ok`, the
//! write survives a crash — except [`Repository::append_replay`], the replay log, which is a
//! best-effort buffer of events whose messages are stored durably on their own.
//!
//! The methods are synchronous (redb is); async callers run writes on the blocking pool.

use crate::error::{Error, Result};
use crate::model::{ContainerRecord, Definition, ImageRecord, Message, SessionRecord};
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod tokens;
pub use tokens::TokenRecord;

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const CONTAINERS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("containers");
const DEFINITIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("definitions");
const IMAGES: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("images");
const IMAGES_BY_CONTAINER: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("images_by_container");
const SESSIONS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("sessions");
const SESSIONS_BY_IMAGE: TableDefinition<'_, (&str, &str), ()> =
    TableDefinition::new("sessions_by_image");
const MESSAGES: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("messages");
const REPLAY: TableDefinition<'_, (&str, u64), &[u8]> = TableDefinition::new("replay");

/// One stored replay-log entry: a session event and its cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayEntry {
    /// The topic (a session id).
    pub topic: String,
    /// Its cursor, unique and increasing within the topic.
    pub cursor: u64,
    /// When it was published, ms (for trimming by age).
    pub timestamp: i64,
    /// The event, JSON.
    pub json: Vec<u8>,
}

/// What deleting a container or image removed, so the caller can stop agents and free disk.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    /// Removed image ids.
    pub images: Vec<String>,
    /// Removed session ids.
    pub sessions: Vec<String>,
}

/// The agentvm repository on redb.
pub struct Repository {
    db: Arc<Database>,
    /// The file, or `None` for the in-memory backend.
    path: Option<PathBuf>,
}

impl std::fmt::Debug for Repository {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repository")
            .field("path", &self.path)
            .finish()
    }
}

/// A redb failure as a storage error.
pub(crate) fn db(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::storage("redb", e)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::storage("decoding a stored record", e))
}

impl Repository {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if let Some(dir) = path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(|e| {
                    Error::storage(format!("creating data directory {}", dir.display()), e)
                })?;
            }
        }
        let db = Database::builder()
            .set_cache_size(64 * 1024 * 1024)
            .create(path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => Error::Unavailable {
                    message: format!(
                        "the database {} is open in another agentvm process; use another data dir",
                        path.display()
                    ),
                    source: Some(Box::new(e)),
                },
                other => Error::storage(format!("opening {}", path.display()), other),
            })?;
        let repo = Repository {
            db: Arc::new(db),
            path: Some(path.to_path_buf()),
        };
        repo.init()?;
        Ok(repo)
    }

    /// An ephemeral repository in memory: nothing survives the process.
    pub fn in_memory() -> Result<Self> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| Error::storage("creating the in-memory database", e))?;
        let repo = Repository {
            db: Arc::new(db),
            path: None,
        };
        repo.init()?;
        Ok(repo)
    }

    /// The scheduler's tables, in this repository's database file.
    pub fn scheduler_store(&self) -> Result<agentvm_scheduler::RedbSchedulerStore> {
        agentvm_scheduler::RedbSchedulerStore::open(self.db.clone())
    }

    /// The database file, `None` in memory.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn init(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut meta = txn.open_table(META).map_err(db)?;
            let version = meta.get("schema_version").map_err(db)?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(db)?;
                }
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(Error::Storage {
                        message: format!(
                            "the database has schema version {v}; this agentvm reads up to {SCHEMA_VERSION}: upgrade agentvm"
                        ),
                        source: None,
                    })
                }
                Some(_) => {}
            }
            txn.open_table(CONTAINERS).map_err(db)?;
            txn.open_table(DEFINITIONS).map_err(db)?;
            txn.open_table(IMAGES).map_err(db)?;
            txn.open_table(IMAGES_BY_CONTAINER).map_err(db)?;
            txn.open_table(SESSIONS).map_err(db)?;
            txn.open_table(SESSIONS_BY_IMAGE).map_err(db)?;
            txn.open_table(MESSAGES).map_err(db)?;
            txn.open_table(REPLAY).map_err(db)?;
            txn.open_table(tokens::TOKENS).map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// The schema version stored in the file.
    pub fn schema_version(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        Ok(meta
            .get("schema_version")
            .map_err(db)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        id: &str,
    ) -> Result<Option<T>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(table).map_err(db)?;
        match t.get(id).map_err(db)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    // ----- containers -----

    /// Creates the container unless it exists. Returns the record and whether it was created.
    pub fn create_container(
        &self,
        container_id: &str,
        now: i64,
    ) -> Result<(ContainerRecord, bool)> {
        self.create_container_with(container_id, None, now)
    }

    /// Creates the container unless it exists; with a sandbox template, sets it (on an existing
    /// container too). Returns the record and whether it was created.
    pub fn create_container_with(
        &self,
        container_id: &str,
        sandbox_template: Option<&str>,
        now: i64,
    ) -> Result<(ContainerRecord, bool)> {
        let txn = self.db.begin_write().map_err(db)?;
        let out = {
            let mut t = txn.open_table(CONTAINERS).map_err(db)?;
            let (mut record, created) = ensure_container(&mut t, container_id, now)?;
            if let Some(template) = sandbox_template {
                if record.sandbox_template.as_deref() != Some(template) {
                    record.sandbox_template = Some(template.to_string());
                    t.insert(container_id, encode(&record)?.as_slice())
                        .map_err(db)?;
                }
            }
            (record, created)
        };
        txn.commit().map_err(db)?;
        Ok(out)
    }

    /// A container, if it exists.
    pub fn get_container(&self, container_id: &str) -> Result<Option<ContainerRecord>> {
        self.get_json(CONTAINERS, container_id)
    }

    /// Every container, sorted by id.
    pub fn list_containers(&self) -> Result<Vec<ContainerRecord>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(CONTAINERS).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Deletes a container and everything in it (images, sessions, messages, replay log), in one
    /// transaction. `None` when it did not exist.
    pub fn delete_container(&self, container_id: &str) -> Result<Option<Removed>> {
        let txn = self.db.begin_write().map_err(db)?;
        let removed = {
            let mut containers = txn.open_table(CONTAINERS).map_err(db)?;
            if containers.remove(container_id).map_err(db)?.is_none() {
                None
            } else {
                let mut by_container = txn.open_table(IMAGES_BY_CONTAINER).map_err(db)?;
                let mut image_ids: Vec<String> = Vec::new();
                for row in by_container.range((container_id, "")..).map_err(db)? {
                    let (k, _) = row.map_err(db)?;
                    let (cid, iid) = k.value();
                    if cid != container_id {
                        break;
                    }
                    image_ids.push(iid.to_string());
                }
                let mut removed = Removed::default();
                for image_id in &image_ids {
                    by_container
                        .remove((container_id, image_id.as_str()))
                        .map_err(db)?;
                    remove_image_in(&txn, image_id, &mut removed)?;
                }
                Some(removed)
            }
        };
        txn.commit().map_err(db)?;
        Ok(removed)
    }

    // ----- definitions -----

    /// Stores a definition, replacing one of the same name. Returns whether it replaced one.
    pub fn put_definition(&self, definition: &Definition) -> Result<bool> {
        let bytes = encode(definition)?;
        let txn = self.db.begin_write().map_err(db)?;
        let replaced = {
            let mut t = txn.open_table(DEFINITIONS).map_err(db)?;
            let r = t
                .insert(definition.name.as_str(), bytes.as_slice())
                .map_err(db)?
                .is_some();
            r
        };
        txn.commit().map_err(db)?;
        Ok(replaced)
    }

    /// A definition by name.
    pub fn get_definition(&self, name: &str) -> Result<Option<Definition>> {
        self.get_json(DEFINITIONS, name)
    }

    /// Every definition, by name.
    pub fn list_definitions(&self) -> Result<Vec<Definition>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(DEFINITIONS).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    // ----- images -----

    /// Stores a new image and its first session, creating the container if missing, in one
    /// transaction. Returns whether the container was created.
    pub fn create_image(&self, image: &ImageRecord, session: &SessionRecord) -> Result<bool> {
        let image_bytes = encode(image)?;
        let session_bytes = encode(session)?;
        let txn = self.db.begin_write().map_err(db)?;
        let created = {
            let mut containers = txn.open_table(CONTAINERS).map_err(db)?;
            let (_, created) =
                ensure_container(&mut containers, &image.container_id, image.created_at)?;
            let mut images = txn.open_table(IMAGES).map_err(db)?;
            if images.get(image.image_id.as_str()).map_err(db)?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "Image",
                    id: image.image_id.clone(),
                });
            }
            images
                .insert(image.image_id.as_str(), image_bytes.as_slice())
                .map_err(db)?;
            txn.open_table(IMAGES_BY_CONTAINER)
                .map_err(db)?
                .insert((image.container_id.as_str(), image.image_id.as_str()), ())
                .map_err(db)?;
            txn.open_table(SESSIONS)
                .map_err(db)?
                .insert(session.session_id.as_str(), session_bytes.as_slice())
                .map_err(db)?;
            txn.open_table(SESSIONS_BY_IMAGE)
                .map_err(db)?
                .insert((session.image_id.as_str(), session.session_id.as_str()), ())
                .map_err(db)?;
            created
        };
        txn.commit().map_err(db)?;
        Ok(created)
    }

    /// An image by id.
    pub fn get_image(&self, image_id: &str) -> Result<Option<ImageRecord>> {
        self.get_json(IMAGES, image_id)
    }

    /// The images of a container, oldest first.
    pub fn list_images(&self, container_id: &str) -> Result<Vec<ImageRecord>> {
        let txn = self.db.begin_read().map_err(db)?;
        let index = txn.open_table(IMAGES_BY_CONTAINER).map_err(db)?;
        let images = txn.open_table(IMAGES).map_err(db)?;
        let mut out: Vec<ImageRecord> = Vec::new();
        for row in index.range((container_id, "")..).map_err(db)? {
            let (k, _) = row.map_err(db)?;
            let (cid, image_id) = k.value();
            if cid != container_id {
                break;
            }
            if let Some(v) = images.get(image_id).map_err(db)? {
                out.push(decode(v.value())?);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.image_id).cmp(&(b.created_at, &b.image_id)));
        Ok(out)
    }

    /// Replaces a stored image (name, description, updatedAt). `NotFound` if it is gone.
    pub fn update_image(&self, image: &ImageRecord) -> Result<()> {
        let bytes = encode(image)?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut images = txn.open_table(IMAGES).map_err(db)?;
            if images.get(image.image_id.as_str()).map_err(db)?.is_none() {
                return Err(Error::not_found("Image", image.image_id.clone()));
            }
            images
                .insert(image.image_id.as_str(), bytes.as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Deletes an image with its sessions, messages and replay log. `None` if it did not exist.
    pub fn delete_image(&self, image_id: &str) -> Result<Option<(ImageRecord, Removed)>> {
        let txn = self.db.begin_write().map_err(db)?;
        let out = {
            let images = txn.open_table(IMAGES).map_err(db)?;
            let record: Option<ImageRecord> = match images.get(image_id).map_err(db)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            drop(images);
            match record {
                None => None,
                Some(record) => {
                    txn.open_table(IMAGES_BY_CONTAINER)
                        .map_err(db)?
                        .remove((record.container_id.as_str(), image_id))
                        .map_err(db)?;
                    let mut removed = Removed::default();
                    remove_image_in(&txn, image_id, &mut removed)?;
                    Some((record, removed))
                }
            }
        };
        txn.commit().map_err(db)?;
        Ok(out)
    }

    // ----- sessions -----

    /// Stores a new session of an existing image.
    pub fn create_session(&self, session: &SessionRecord) -> Result<()> {
        let bytes = encode(session)?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            if txn
                .open_table(IMAGES)
                .map_err(db)?
                .get(session.image_id.as_str())
                .map_err(db)?
                .is_none()
            {
                return Err(Error::not_found("Image", session.image_id.clone()));
            }
            txn.open_table(SESSIONS)
                .map_err(db)?
                .insert(session.session_id.as_str(), bytes.as_slice())
                .map_err(db)?;
            txn.open_table(SESSIONS_BY_IMAGE)
                .map_err(db)?
                .insert((session.image_id.as_str(), session.session_id.as_str()), ())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Replaces a stored session (title, updatedAt). `NotFound` if it is gone.
    pub fn update_session(&self, session: &SessionRecord) -> Result<()> {
        let bytes = encode(session)?;
        let txn = self.db.begin_write().map_err(db)?;
        {
            let mut t = txn.open_table(SESSIONS).map_err(db)?;
            if t.get(session.session_id.as_str()).map_err(db)?.is_none() {
                return Err(Error::not_found("Session", session.session_id.clone()));
            }
            t.insert(session.session_id.as_str(), bytes.as_slice())
                .map_err(db)?;
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// A session by id.
    pub fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        self.get_json(SESSIONS, session_id)
    }

    /// The sessions of an image, oldest first.
    pub fn list_sessions(&self, image_id: &str) -> Result<Vec<SessionRecord>> {
        let txn = self.db.begin_read().map_err(db)?;
        let index = txn.open_table(SESSIONS_BY_IMAGE).map_err(db)?;
        let sessions = txn.open_table(SESSIONS).map_err(db)?;
        let mut out: Vec<SessionRecord> = Vec::new();
        for row in index.range((image_id, "")..).map_err(db)? {
            let (k, _) = row.map_err(db)?;
            let (iid, sid) = k.value();
            if iid != image_id {
                break;
            }
            if let Some(v) = sessions.get(sid).map_err(db)? {
                out.push(decode(v.value())?);
            }
        }
        out.sort_by(|a, b| (a.created_at, &a.session_id).cmp(&(b.created_at, &b.session_id)));
        Ok(out)
    }

    /// Deletes a session, its messages and its replay log. `None` if it did not exist.
    pub fn delete_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        let txn = self.db.begin_write().map_err(db)?;
        let out = {
            let mut sessions = txn.open_table(SESSIONS).map_err(db)?;
            let record: Option<SessionRecord> = match sessions.remove(session_id).map_err(db)? {
                Some(v) => Some(decode(v.value())?),
                None => None,
            };
            drop(sessions);
            if let Some(s) = &record {
                txn.open_table(SESSIONS_BY_IMAGE)
                    .map_err(db)?
                    .remove((s.image_id.as_str(), session_id))
                    .map_err(db)?;
                remove_session_data(&txn, session_id)?;
            }
            record
        };
        txn.commit().map_err(db)?;
        Ok(out)
    }

    // ----- messages -----

    /// Appends a message to a session durably and returns its sequence number (0, 1, 2, ...).
    /// Refuses a session that does not exist, so a deleted conversation cannot be resurrected.
    pub fn append_message(&self, session_id: &str, message: &Message) -> Result<u64> {
        let bytes = encode(message)?;
        let txn = self.db.begin_write().map_err(db)?;
        let seq = {
            if txn
                .open_table(SESSIONS)
                .map_err(db)?
                .get(session_id)
                .map_err(db)?
                .is_none()
            {
                return Err(Error::not_found("Session", session_id));
            }
            let mut t = txn.open_table(MESSAGES).map_err(db)?;
            let seq = match t
                .range((session_id, 0u64)..=(session_id, u64::MAX))
                .map_err(db)?
                .next_back()
            {
                Some(row) => row.map_err(db)?.0.value().1 + 1,
                None => 0,
            };
            t.insert((session_id, seq), bytes.as_slice()).map_err(db)?;
            seq
        };
        txn.commit().map_err(db)?;
        Ok(seq)
    }

    /// The messages of a session, oldest first.
    pub fn list_messages(&self, session_id: &str) -> Result<Vec<Message>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(MESSAGES).map_err(db)?;
        let mut out = Vec::new();
        for row in t
            .range((session_id, 0u64)..=(session_id, u64::MAX))
            .map_err(db)?
        {
            let (_, v) = row.map_err(db)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// How many messages a session has.
    pub fn count_messages(&self, session_id: &str) -> Result<u64> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(MESSAGES).map_err(db)?;
        Ok(t.range((session_id, 0u64)..=(session_id, u64::MAX))
            .map_err(db)?
            .count() as u64)
    }

    // ----- replay log -----

    /// Appends replay entries in one non-durable commit (they become durable with the next
    /// durable commit; losing the last few on a crash only shortens what can be replayed).
    pub fn append_replay(&self, entries: &[ReplayEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut txn = self.db.begin_write().map_err(db)?;
        txn.set_durability(Durability::None)
            .map_err(|e| Error::storage("setting durability", e))?;
        {
            let mut t = txn.open_table(REPLAY).map_err(db)?;
            let mut buf = Vec::new();
            for e in entries {
                buf.clear();
                buf.extend_from_slice(&e.timestamp.to_be_bytes());
                buf.extend_from_slice(&e.json);
                t.insert((e.topic.as_str(), e.cursor), buf.as_slice())
                    .map_err(db)?;
            }
        }
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// Replay entries of `topic` with a cursor greater than `after`, oldest first, at most `limit`.
    pub fn read_replay(&self, topic: &str, after: u64, limit: usize) -> Result<Vec<ReplayEntry>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(REPLAY).map_err(db)?;
        let mut out = Vec::new();
        if after == u64::MAX {
            return Ok(out);
        }
        for row in t
            .range((topic, after + 1)..=(topic, u64::MAX))
            .map_err(db)?
            .take(limit)
        {
            let (k, v) = row.map_err(db)?;
            out.push(split_replay(topic, k.value().1, v.value())?);
        }
        Ok(out)
    }

    /// The highest cursor stored in any topic (0 when none).
    pub fn max_replay_cursor(&self) -> Result<u64> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(REPLAY).map_err(db)?;
        let mut max = 0;
        for row in t.iter().map_err(db)? {
            let (k, _) = row.map_err(db)?;
            max = max.max(k.value().1);
        }
        Ok(max)
    }

    /// Trims every topic to its newest `keep` entries and drops entries older than `min_ts`.
    /// Returns how many were removed.
    pub fn trim_replay(&self, keep: usize, min_ts: i64) -> Result<u64> {
        let txn = self.db.begin_write().map_err(db)?;
        let removed = {
            let mut t = txn.open_table(REPLAY).map_err(db)?;
            // Count per topic first, then remove the oldest beyond `keep` and the too-old.
            let mut counts: std::collections::HashMap<String, usize> = Default::default();
            for row in t.iter().map_err(db)? {
                let (k, _) = row.map_err(db)?;
                *counts.entry(k.value().0.to_string()).or_default() += 1;
            }
            let mut seen: std::collections::HashMap<String, usize> = Default::default();
            let mut doomed: Vec<(String, u64)> = Vec::new();
            for row in t.iter().map_err(db)? {
                let (k, v) = row.map_err(db)?;
                let (topic, cursor) = k.value();
                let n = seen.entry(topic.to_string()).or_default();
                *n += 1;
                let total = counts.get(topic).copied().unwrap_or(0);
                let too_many = total.saturating_sub(*n) >= keep;
                let ts = v.value().get(..8).map(|b| {
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    i64::from_be_bytes(a)
                });
                let too_old = ts.map(|ts| ts < min_ts).unwrap_or(true);
                if too_many || too_old {
                    doomed.push((topic.to_string(), cursor));
                }
            }
            for (topic, cursor) in &doomed {
                t.remove((topic.as_str(), *cursor)).map_err(db)?;
            }
            doomed.len() as u64
        };
        txn.commit().map_err(db)?;
        Ok(removed)
    }
}

fn split_replay(topic: &str, cursor: u64, raw: &[u8]) -> Result<ReplayEntry> {
    if raw.len() < 8 {
        return Err(Error::Storage {
            message: "corrupt replay entry".into(),
            source: None,
        });
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&raw[..8]);
    Ok(ReplayEntry {
        topic: topic.to_string(),
        cursor,
        timestamp: i64::from_be_bytes(ts),
        json: raw[8..].to_vec(),
    })
}

fn ensure_container(
    t: &mut redb::Table<'_, &str, &[u8]>,
    container_id: &str,
    now: i64,
) -> Result<(ContainerRecord, bool)> {
    if let Some(v) = t.get(container_id).map_err(db)? {
        return Ok((decode(v.value())?, false));
    }
    let record = ContainerRecord {
        container_id: container_id.to_string(),
        created_at: now,
        sandbox_template: None,
    };
    t.insert(container_id, encode(&record)?.as_slice())
        .map_err(db)?;
    Ok((record, true))
}

/// Removes an image's record, sessions, messages and replay log inside `txn` (not its
/// container index entry, which the caller handles).
fn remove_image_in(
    txn: &redb::WriteTransaction,
    image_id: &str,
    removed: &mut Removed,
) -> Result<()> {
    txn.open_table(IMAGES)
        .map_err(db)?
        .remove(image_id)
        .map_err(db)?;
    let mut by_image = txn.open_table(SESSIONS_BY_IMAGE).map_err(db)?;
    let session_ids: Vec<String> = {
        let mut ids = Vec::new();
        for row in by_image.range((image_id, "")..).map_err(db)? {
            let (k, _) = row.map_err(db)?;
            let (iid, sid) = k.value();
            if iid != image_id {
                break;
            }
            ids.push(sid.to_string());
        }
        ids
    };
    let mut sessions = txn.open_table(SESSIONS).map_err(db)?;
    for sid in &session_ids {
        by_image.remove((image_id, sid.as_str())).map_err(db)?;
        sessions.remove(sid.as_str()).map_err(db)?;
        remove_session_data(txn, sid)?;
    }
    removed.images.push(image_id.to_string());
    removed.sessions.extend(session_ids);
    Ok(())
}

fn remove_session_data(txn: &redb::WriteTransaction, session_id: &str) -> Result<()> {
    txn.open_table(MESSAGES)
        .map_err(db)?
        .retain_in((session_id, 0u64)..=(session_id, u64::MAX), |_, _| false)
        .map_err(db)?;
    txn.open_table(REPLAY)
        .map_err(db)?
        .retain_in((session_id, 0u64)..=(session_id, u64::MAX), |_, _| false)
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Definition, Message};

    fn image(cid: &str, iid: &str, sid: &str, t: i64) -> (ImageRecord, SessionRecord) {
        (
            ImageRecord {
                image_id: iid.into(),
                container_id: cid.into(),
                session_id: sid.into(),
                name: "n".into(),
                description: None,
                definition_name: None,
                definition: Definition::default(),
                created_at: t,
                updated_at: t,
            },
            SessionRecord {
                session_id: sid.into(),
                image_id: iid.into(),
                container_id: cid.into(),
                title: None,
                created_at: t,
                updated_at: t,
            },
        )
    }

    #[test]
    fn cascade_delete_removes_everything_of_a_container_only() {
        let repo = Repository::in_memory().unwrap();
        let (i1, s1) = image("a", "img_1", "sess_1", 1);
        let (i2, s2) = image("b", "img_2", "sess_2", 2);
        assert!(repo.create_image(&i1, &s1).unwrap());
        assert!(repo.create_image(&i2, &s2).unwrap());
        repo.append_message("sess_1", &Message::user("m1".into(), "x".into(), 1))
            .unwrap();
        repo.append_message("sess_2", &Message::user("m2".into(), "y".into(), 1))
            .unwrap();
        let removed = repo.delete_container("a").unwrap().unwrap();
        assert_eq!(removed.images, vec!["img_1"]);
        assert_eq!(removed.sessions, vec!["sess_1"]);
        assert!(repo.get_image("img_1").unwrap().is_none());
        assert!(repo.list_messages("sess_1").unwrap().is_empty());
        assert_eq!(repo.list_messages("sess_2").unwrap().len(), 1);
        assert_eq!(repo.list_images("b").unwrap().len(), 1);
        assert!(repo.delete_container("a").unwrap().is_none());
    }

    #[test]
    fn messages_append_in_sequence_and_refuse_unknown_sessions() {
        let repo = Repository::in_memory().unwrap();
        let (i, s) = image("a", "img_1", "sess_1", 1);
        repo.create_image(&i, &s).unwrap();
        for n in 0..5 {
            let seq = repo
                .append_message("sess_1", &Message::user(format!("m{n}"), "x".into(), n))
                .unwrap();
            assert_eq!(seq, n as u64);
        }
        let ids: Vec<_> = repo
            .list_messages("sess_1")
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(ids, ["m0", "m1", "m2", "m3", "m4"]);
        let e = repo
            .append_message("nope", &Message::user("m".into(), "x".into(), 0))
            .unwrap_err();
        assert_eq!(e.to_string(), "Session not found: nope");
    }

    #[test]
    fn replay_log_reads_after_a_cursor_and_trims() {
        let repo = Repository::in_memory().unwrap();
        let entries: Vec<_> = (1..=10)
            .map(|c| ReplayEntry {
                topic: "t".into(),
                cursor: c,
                timestamp: c as i64,
                json: vec![b'x'],
            })
            .collect();
        repo.append_replay(&entries).unwrap();
        let got = repo.read_replay("t", 7, 100).unwrap();
        assert_eq!(
            got.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![8, 9, 10]
        );
        assert_eq!(repo.max_replay_cursor().unwrap(), 10);
        // keep 5 newest, and drop anything older than ts 7
        assert_eq!(repo.trim_replay(5, 7).unwrap(), 6);
        let got = repo.read_replay("t", 0, 100).unwrap();
        assert_eq!(
            got.iter().map(|e| e.cursor).collect::<Vec<_>>(),
            vec![7, 8, 9, 10]
        );
    }

    #[test]
    fn schema_version_is_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentvm.redb");
        {
            let repo = Repository::open(&path).unwrap();
            assert_eq!(repo.schema_version().unwrap(), SCHEMA_VERSION);
        }
        let repo = Repository::open(&path).unwrap();
        assert_eq!(repo.schema_version().unwrap(), SCHEMA_VERSION);
    }
}

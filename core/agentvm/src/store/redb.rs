//! [`RedbStore`]: the store in one redb file, the embedded default.
//!
//! One table per record type plus the secondary indexes the queries need (images by container,
//! sessions by image). Messages are keyed `(sessionId, seq)` and only ever appended; the replay
//! log is keyed `(topic, cursor)`, each value the timestamp (8 bytes, big-endian) then the
//! event JSON. Records are stored as JSON, the same bytes the protocol sends. Table names and
//! encodings are the on-disk format: existing data dirs must keep opening, so change them only
//! with a [`SCHEMA_VERSION`] bump and a migration.
//!
//! Every write commits with redb's `Immediate` durability (it survives a crash once it returns),
//! except [`Store::append_replay`], which commits with none: it becomes durable with the next
//! durable commit. The scheduler's tables live in the same file (`agentvm_scheduler::RedbSchedulerStore`).

use super::SCHEMA_VERSION;
use super::{
    check_new_image, check_same_parent, MessagePage, MessagePageRequest, Removed, ReplayEntry,
    Store, TokenRecord,
};
use crate::error::{Error, Result};
use crate::model::{ContainerRecord, Definition, ImageRecord, Message, SessionRecord};
use agentvm_scheduler::SchedulerStore;
use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::path::Path;
use std::sync::{Arc, OnceLock};

mod file;
mod handle;
mod health;
mod scheduler;
mod tokens;

use handle::Handle;
use scheduler::SchedulerTables;

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
/// By topic: the highest cursor trimming removed from the replay log.
const REPLAY_FLOORS: TableDefinition<'_, &str, u64> = TableDefinition::new("replay_floors");

/// The store in a redb database file.
pub struct RedbStore {
    /// The open database, shared with the scheduler's tables (which live in the same file),
    /// reopened after a failed write (see `redb/handle.rs`).
    handle: Arc<Handle>,
    /// The scheduler's tables in the same file, opened on first use (creating them is a
    /// durable write a runtime without a scheduler should not pay on every start), then shared.
    scheduler: OnceLock<Arc<SchedulerTables>>,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore")
            .field("path", &self.handle.path)
            .finish_non_exhaustive()
    }
}

/// A redb failure as a storage error (the model's `Error` knows no redb types).
pub(crate) fn db(e: impl std::error::Error + Send + Sync + 'static) -> Error {
    Error::storage("redb", e)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::Internal(format!("encoding a record: {e}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::storage("decoding a stored record", e))
}

impl RedbStore {
    /// Opens (or creates) the database file at `path`, creating its directory. A new file is
    /// created whole or not at all. Refuses a file written by a newer schema, and a file another
    /// process has open (`Unavailable`).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let database = file::open(path)?;
        let database = Arc::new(database);
        init(&database)?;
        Ok(RedbStore {
            handle: Arc::new(Handle::new(database, path.to_path_buf())),
            scheduler: OnceLock::new(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.handle.path
    }

    /// The open database (see [`Handle::database`]).
    fn database(&self) -> Result<Arc<Database>> {
        self.handle.database()
    }

    /// Starts a write transaction (reopening the file first if a write failed).
    fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.handle.begin_write()
    }

    /// Commits `txn`; a failure is classified (a full disk is `StorageFull`) and logged once.
    fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        self.handle.commit(txn)
    }

    /// Whether writes work: `Ok` at once while no write failed; during a failure episode,
    /// one small durable write decides (and ends the episode when it succeeds).
    fn probe_write(&self) -> Result<()> {
        if !self.handle.health.failing() {
            return Ok(());
        }
        let txn = self.begin_write()?;
        txn.open_table(META)
            .map_err(db)?
            .insert("write_probe", crate::model::now_ms().max(0) as u64)
            .map_err(db)?;
        self.commit(txn)
    }

    fn get_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        id: &str,
    ) -> Result<Option<T>> {
        let txn = self.database()?.begin_read().map_err(db)?;
        let t = txn.open_table(table).map_err(db)?;
        match t.get(id).map_err(db)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    fn list_json<T: DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
    ) -> Result<Vec<T>> {
        let txn = self.database()?.begin_read().map_err(db)?;
        let t = txn.open_table(table).map_err(db)?;
        let mut out = Vec::new();
        for row in t.iter().map_err(db)? {
            let (_, v) = row.map_err(db)?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    /// Replaces the record stored under `id`, after `check` accepted the stored one.
    fn replace_json<T: Serialize + DeserializeOwned>(
        &self,
        table: TableDefinition<'_, &str, &[u8]>,
        what: &'static str,
        id: &str,
        value: &T,
        check: impl FnOnce(&T) -> Result<()>,
    ) -> Result<()> {
        let bytes = encode(value)?;
        let txn = self.begin_write()?;
        {
            let mut t = txn.open_table(table).map_err(db)?;
            let stored: T = match t.get(id).map_err(db)? {
                Some(v) => decode(v.value())?,
                None => return Err(Error::not_found(what, id)),
            };
            check(&stored)?;
            t.insert(id, bytes.as_slice()).map_err(db)?;
        }
        self.commit(txn)?;
        Ok(())
    }
}

/// Records the schema version (refusing a newer one) and creates every table, so readers
/// never meet a missing table.
fn init(database: &Database) -> Result<()> {
    let txn = database.begin_write().map_err(db)?;
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

impl Store for RedbStore {
    fn schema_version(&self) -> Result<u64> {
        let txn = self.database()?.begin_read().map_err(db)?;
        let meta = txn.open_table(META).map_err(db)?;
        Ok(meta
            .get("schema_version")
            .map_err(db)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    fn scheduler_store(&self) -> Result<Arc<dyn SchedulerStore>> {
        if let Some(scheduler) = self.scheduler.get() {
            return Ok(scheduler.clone());
        }
        let opened = Arc::new(SchedulerTables::open(self.handle.clone())?);
        Ok(self.scheduler.get_or_init(|| opened).clone())
    }

    // ----- containers -----

    fn create_container(
        &self,
        container_id: &str,
        sandbox_template: Option<&str>,
        now: i64,
    ) -> Result<(ContainerRecord, bool)> {
        let txn = self.begin_write()?;
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
        self.commit(txn)?;
        Ok(out)
    }

    fn get_container(&self, container_id: &str) -> Result<Option<ContainerRecord>> {
        self.get_json(CONTAINERS, container_id)
    }

    fn list_containers(&self) -> Result<Vec<ContainerRecord>> {
        self.list_json(CONTAINERS)
    }

    fn delete_container(&self, container_id: &str) -> Result<Option<Removed>> {
        let txn = self.begin_write()?;
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
        self.commit(txn)?;
        Ok(removed)
    }

    // ----- definitions -----

    fn put_definition(&self, definition: &Definition) -> Result<bool> {
        let bytes = encode(definition)?;
        let txn = self.begin_write()?;
        let replaced = {
            let mut t = txn.open_table(DEFINITIONS).map_err(db)?;
            let r = t
                .insert(definition.name.as_str(), bytes.as_slice())
                .map_err(db)?
                .is_some();
            r
        };
        self.commit(txn)?;
        Ok(replaced)
    }

    fn get_definition(&self, name: &str) -> Result<Option<Definition>> {
        self.get_json(DEFINITIONS, name)
    }

    fn list_definitions(&self) -> Result<Vec<Definition>> {
        self.list_json(DEFINITIONS)
    }

    // ----- images -----

    fn create_image(&self, image: &ImageRecord, session: &SessionRecord) -> Result<bool> {
        check_new_image(image, session)?;
        let image_bytes = encode(image)?;
        let session_bytes = encode(session)?;
        let txn = self.begin_write()?;
        // An early return drops `txn` uncommitted: nothing of it is written.
        let created = {
            let mut images = txn.open_table(IMAGES).map_err(db)?;
            if images.get(image.image_id.as_str()).map_err(db)?.is_some() {
                return Err(Error::AlreadyExists {
                    what: "Image",
                    id: image.image_id.clone(),
                });
            }
            let mut sessions = txn.open_table(SESSIONS).map_err(db)?;
            if sessions
                .get(session.session_id.as_str())
                .map_err(db)?
                .is_some()
            {
                return Err(Error::AlreadyExists {
                    what: "Session",
                    id: session.session_id.clone(),
                });
            }
            let mut containers = txn.open_table(CONTAINERS).map_err(db)?;
            let (_, created) =
                ensure_container(&mut containers, &image.container_id, image.created_at)?;
            images
                .insert(image.image_id.as_str(), image_bytes.as_slice())
                .map_err(db)?;
            txn.open_table(IMAGES_BY_CONTAINER)
                .map_err(db)?
                .insert((image.container_id.as_str(), image.image_id.as_str()), ())
                .map_err(db)?;
            sessions
                .insert(session.session_id.as_str(), session_bytes.as_slice())
                .map_err(db)?;
            txn.open_table(SESSIONS_BY_IMAGE)
                .map_err(db)?
                .insert((session.image_id.as_str(), session.session_id.as_str()), ())
                .map_err(db)?;
            created
        };
        self.commit(txn)?;
        Ok(created)
    }

    fn get_image(&self, image_id: &str) -> Result<Option<ImageRecord>> {
        self.get_json(IMAGES, image_id)
    }

    fn list_images(&self, container_id: &str) -> Result<Vec<ImageRecord>> {
        let txn = self.database()?.begin_read().map_err(db)?;
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

    fn update_image(&self, image: &ImageRecord) -> Result<()> {
        self.replace_json(
            IMAGES,
            "Image",
            &image.image_id,
            image,
            |stored: &ImageRecord| {
                check_same_parent(
                    "image",
                    &image.image_id,
                    &stored.container_id,
                    &image.container_id,
                )?;
                check_same_parent(
                    "image",
                    &image.image_id,
                    &stored.session_id,
                    &image.session_id,
                )
            },
        )
    }

    fn delete_image(&self, image_id: &str) -> Result<Option<(ImageRecord, Removed)>> {
        let txn = self.begin_write()?;
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
        self.commit(txn)?;
        Ok(out)
    }

    // ----- sessions -----

    fn create_session(&self, session: &SessionRecord) -> Result<()> {
        let bytes = encode(session)?;
        let txn = self.begin_write()?;
        // An early return drops `txn` uncommitted: nothing of it is written.
        {
            let image: ImageRecord = match txn
                .open_table(IMAGES)
                .map_err(db)?
                .get(session.image_id.as_str())
                .map_err(db)?
            {
                Some(v) => decode(v.value())?,
                None => return Err(Error::not_found("Image", session.image_id.clone())),
            };
            check_same_parent(
                "session",
                &session.session_id,
                &image.container_id,
                &session.container_id,
            )?;
            let mut sessions = txn.open_table(SESSIONS).map_err(db)?;
            if sessions
                .get(session.session_id.as_str())
                .map_err(db)?
                .is_some()
            {
                return Err(Error::AlreadyExists {
                    what: "Session",
                    id: session.session_id.clone(),
                });
            }
            sessions
                .insert(session.session_id.as_str(), bytes.as_slice())
                .map_err(db)?;
            txn.open_table(SESSIONS_BY_IMAGE)
                .map_err(db)?
                .insert((session.image_id.as_str(), session.session_id.as_str()), ())
                .map_err(db)?;
        }
        self.commit(txn)?;
        Ok(())
    }

    fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        self.get_json(SESSIONS, session_id)
    }

    fn list_sessions(&self, image_id: &str) -> Result<Vec<SessionRecord>> {
        let txn = self.database()?.begin_read().map_err(db)?;
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

    fn update_session(&self, session: &SessionRecord) -> Result<()> {
        self.replace_json(
            SESSIONS,
            "Session",
            &session.session_id,
            session,
            |stored: &SessionRecord| {
                check_same_parent(
                    "session",
                    &session.session_id,
                    &stored.image_id,
                    &session.image_id,
                )?;
                check_same_parent(
                    "session",
                    &session.session_id,
                    &stored.container_id,
                    &session.container_id,
                )
            },
        )
    }

    fn delete_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        let txn = self.begin_write()?;
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
        self.commit(txn)?;
        Ok(out)
    }

    // ----- messages -----

    fn append_message(&self, session_id: &str, message: &Message) -> Result<u64> {
        let bytes = encode(message)?;
        let txn = self.begin_write()?;
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
        self.commit(txn)?;
        Ok(seq)
    }

    fn list_messages(&self, session_id: &str) -> Result<Vec<Message>> {
        let txn = self.database()?.begin_read().map_err(db)?;
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

    fn page_messages(&self, session_id: &str, page: &MessagePageRequest) -> Result<MessagePage> {
        let Some((lo, hi)) = page.range() else {
            return Ok(MessagePage::default());
        };
        let txn = self.database()?.begin_read().map_err(db)?;
        let t = txn.open_table(MESSAGES).map_err(db)?;
        let range = t.range((session_id, lo)..=(session_id, hi)).map_err(db)?;
        let size = |v: &redb::AccessGuard<'_, &'static [u8]>| v.value().len();
        let decode = |v: redb::AccessGuard<'_, &'static [u8]>| decode(v.value());
        if page.backward() {
            page.collect(range.rev().map(message_row), size, decode)
        } else {
            page.collect(range.map(message_row), size, decode)
        }
    }

    fn count_messages(&self, session_id: &str) -> Result<u64> {
        let txn = self.database()?.begin_read().map_err(db)?;
        let t = txn.open_table(MESSAGES).map_err(db)?;
        Ok(t.range((session_id, 0u64)..=(session_id, u64::MAX))
            .map_err(db)?
            .count() as u64)
    }

    // ----- replay log -----

    fn append_replay(&self, entries: &[ReplayEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut txn = self.begin_write()?;
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
        self.commit(txn)?;
        Ok(())
    }

    fn read_replay(&self, topic: &str, after: u64, limit: usize) -> Result<Vec<ReplayEntry>> {
        let txn = self.database()?.begin_read().map_err(db)?;
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

    fn max_replay_cursor(&self) -> Result<u64> {
        let txn = self.database()?.begin_read().map_err(db)?;
        let t = txn.open_table(REPLAY).map_err(db)?;
        let mut max = 0;
        for row in t.iter().map_err(db)? {
            let (k, _) = row.map_err(db)?;
            max = max.max(k.value().1);
        }
        Ok(max)
    }

    fn trim_replay(&self, keep: usize, min_ts: i64) -> Result<u64> {
        let txn = self.begin_write()?;
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
            let mut highest: std::collections::HashMap<&str, u64> = Default::default();
            for (topic, cursor) in &doomed {
                let h = highest.entry(topic.as_str()).or_default();
                *h = (*h).max(*cursor);
            }
            let mut floors = txn.open_table(REPLAY_FLOORS).map_err(db)?;
            for (topic, cursor) in highest {
                let old = floors
                    .get(topic)
                    .map_err(db)?
                    .map(|v| v.value())
                    .unwrap_or(0);
                floors.insert(topic, old.max(cursor)).map_err(db)?;
            }
            doomed.len() as u64
        };
        self.commit(txn)?;
        Ok(removed)
    }

    fn replay_floor(&self, topic: &str) -> Result<u64> {
        let txn = self.database()?.begin_read().map_err(db)?;
        // A file from before the table existed has no floors.
        let floors = match txn.open_table(REPLAY_FLOORS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(db(e)),
        };
        Ok(floors
            .get(topic)
            .map_err(db)?
            .map(|v| v.value())
            .unwrap_or(0))
    }

    // ----- health -----

    fn check_writable(&self) -> Result<()> {
        self.probe_write()
    }

    // ----- tokens -----

    fn put_token(&self, token: &TokenRecord) -> Result<()> {
        let txn = self.begin_write()?;
        tokens::put(&txn, token)?;
        self.commit(txn)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        self.get_json(tokens::TOKENS, hash)
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut out: Vec<TokenRecord> = self.list_json(tokens::TOKENS)?;
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    fn revoke_token(&self, id: &str, now: i64) -> Result<bool> {
        let txn = self.begin_write()?;
        let found = tokens::revoke(&txn, id, now)?;
        self.commit(txn)?;
        Ok(found)
    }
}

/// A row of `MESSAGES` as `(seq, stored bytes)`.
#[allow(clippy::type_complexity)]
fn message_row<'a>(
    row: std::result::Result<
        (
            redb::AccessGuard<'a, (&'static str, u64)>,
            redb::AccessGuard<'a, &'static [u8]>,
        ),
        redb::StorageError,
    >,
) -> Result<(u64, redb::AccessGuard<'a, &'static [u8]>)> {
    let (k, v) = row.map_err(db)?;
    Ok((k.value().1, v))
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
        json: raw[8..].into(),
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

/// What only the redb backend promises; the rest is in the conformance suite.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_of_a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentvm.redb");
        drop(RedbStore::open(&path).unwrap());
        {
            let database = Database::create(&path).unwrap();
            let txn = database.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", SCHEMA_VERSION + 1)
                .unwrap();
            txn.commit().unwrap();
        }
        let e = RedbStore::open(&path).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Storage);
        assert!(e.to_string().contains("upgrade agentvm"), "{e}");
    }

    #[test]
    fn first_opens_racing_to_create_the_file_agree_on_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agentvm.redb");
        let results: Vec<Result<RedbStore>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| scope.spawn(|| RedbStore::open(&path)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut opened = 0;
        for result in results {
            match result {
                Ok(store) => {
                    opened += 1;
                    assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
                }
                Err(e) => assert_eq!(e.kind(), crate::ErrorKind::Unavailable, "{e}"),
            }
        }
        assert!(opened >= 1);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "agentvm.redb")
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary files are removed: {leftovers:?}"
        );
        RedbStore::open(&path).unwrap();
    }

    #[test]
    fn a_database_open_elsewhere_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/agentvm.redb");
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.path(), path, "the directory is created");
        let e = RedbStore::open(&path).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unavailable);
        assert!(e.to_string().contains("another data dir"), "{e}");
    }
}

//! [`MemoryStore`]: the store in maps behind one lock. Nothing survives the process.
//!
//! The runtime uses it when it has no data dir; tests use it as the plainest reading of the
//! [`Store`] contract. Every call takes the one lock for its whole duration, so each write is
//! atomic and seen by every later call, and concurrent appends get consecutive sequence
//! numbers. Records are kept as values (not encoded), so this backend also never fails.

use super::{
    check_new_image, check_same_parent, MessagePage, MessagePageRequest, Removed, ReplayEntry,
    Store, TokenRecord, SCHEMA_VERSION,
};
use crate::error::{Error, Result};
use crate::model::{ContainerRecord, Definition, ImageRecord, Message, SessionRecord};
use agentvm_scheduler::{MemorySchedulerStore, SchedulerStore};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

/// The store in memory.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    /// The scheduler's tables: one instance, so every caller of `scheduler_store` shares them.
    scheduler: Arc<MemorySchedulerStore>,
}

/// One replay-log entry as kept: its timestamp and its event's JSON (shared with the bus).
type Logged = (i64, Arc<[u8]>);

#[derive(Default)]
struct Tables {
    containers: BTreeMap<String, ContainerRecord>,
    definitions: BTreeMap<String, Definition>,
    images: BTreeMap<String, ImageRecord>,
    sessions: BTreeMap<String, SessionRecord>,
    /// By session id; a message's sequence number is its index.
    messages: HashMap<String, Vec<Message>>,
    /// By topic, then cursor.
    replay: BTreeMap<String, BTreeMap<u64, Logged>>,
    /// By topic: the highest cursor trimming removed.
    replay_floors: HashMap<String, u64>,
    /// By hash.
    tokens: BTreeMap<String, TokenRecord>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The tables. A panic while they were held leaves them as that call left them; each write
    /// checks before it changes anything, so that is a consistent state.
    fn tables(&self) -> MutexGuard<'_, Tables> {
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Tables {
    /// Removes an image, its sessions and their messages and replay logs.
    fn remove_image(&mut self, image_id: &str, removed: &mut Removed) -> Option<ImageRecord> {
        let image = self.images.remove(image_id)?;
        let session_ids: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.image_id == image_id)
            .map(|s| s.session_id.clone())
            .collect();
        for sid in &session_ids {
            self.remove_session(sid);
        }
        removed.images.push(image_id.to_string());
        removed.sessions.extend(session_ids);
        Some(image)
    }

    /// Removes a session and its messages and replay log.
    fn remove_session(&mut self, session_id: &str) -> Option<SessionRecord> {
        let session = self.sessions.remove(session_id)?;
        self.messages.remove(session_id);
        self.replay.remove(session_id);
        Some(session)
    }
}

impl Store for MemoryStore {
    fn schema_version(&self) -> Result<u64> {
        Ok(SCHEMA_VERSION)
    }

    fn scheduler_store(&self) -> Result<Arc<dyn SchedulerStore>> {
        Ok(self.scheduler.clone())
    }

    // ----- containers -----

    fn create_container(
        &self,
        container_id: &str,
        sandbox_template: Option<&str>,
        now: i64,
    ) -> Result<(ContainerRecord, bool)> {
        let mut t = self.tables();
        let mut created = false;
        let record = t
            .containers
            .entry(container_id.to_string())
            .or_insert_with(|| {
                created = true;
                ContainerRecord {
                    container_id: container_id.to_string(),
                    created_at: now,
                    sandbox_template: None,
                }
            });
        if let Some(template) = sandbox_template {
            record.sandbox_template = Some(template.to_string());
        }
        Ok((record.clone(), created))
    }

    fn get_container(&self, container_id: &str) -> Result<Option<ContainerRecord>> {
        Ok(self.tables().containers.get(container_id).cloned())
    }

    fn list_containers(&self) -> Result<Vec<ContainerRecord>> {
        Ok(self.tables().containers.values().cloned().collect())
    }

    fn delete_container(&self, container_id: &str) -> Result<Option<Removed>> {
        let mut t = self.tables();
        if t.containers.remove(container_id).is_none() {
            return Ok(None);
        }
        let image_ids: Vec<String> = t
            .images
            .values()
            .filter(|i| i.container_id == container_id)
            .map(|i| i.image_id.clone())
            .collect();
        let mut removed = Removed::default();
        for image_id in &image_ids {
            t.remove_image(image_id, &mut removed);
        }
        Ok(Some(removed))
    }

    // ----- definitions -----

    fn put_definition(&self, definition: &Definition) -> Result<bool> {
        Ok(self
            .tables()
            .definitions
            .insert(definition.name.clone(), definition.clone())
            .is_some())
    }

    fn get_definition(&self, name: &str) -> Result<Option<Definition>> {
        Ok(self.tables().definitions.get(name).cloned())
    }

    fn list_definitions(&self) -> Result<Vec<Definition>> {
        Ok(self.tables().definitions.values().cloned().collect())
    }

    // ----- images -----

    fn create_image(&self, image: &ImageRecord, session: &SessionRecord) -> Result<bool> {
        check_new_image(image, session)?;
        let mut t = self.tables();
        if t.images.contains_key(&image.image_id) {
            return Err(Error::AlreadyExists {
                what: "Image",
                id: image.image_id.clone(),
            });
        }
        if t.sessions.contains_key(&session.session_id) {
            return Err(Error::AlreadyExists {
                what: "Session",
                id: session.session_id.clone(),
            });
        }
        let created = !t.containers.contains_key(&image.container_id);
        if created {
            t.containers.insert(
                image.container_id.clone(),
                ContainerRecord {
                    container_id: image.container_id.clone(),
                    created_at: image.created_at,
                    sandbox_template: None,
                },
            );
        }
        t.images.insert(image.image_id.clone(), image.clone());
        t.sessions
            .insert(session.session_id.clone(), session.clone());
        Ok(created)
    }

    fn get_image(&self, image_id: &str) -> Result<Option<ImageRecord>> {
        Ok(self.tables().images.get(image_id).cloned())
    }

    fn list_images(&self, container_id: &str) -> Result<Vec<ImageRecord>> {
        let mut out: Vec<ImageRecord> = self
            .tables()
            .images
            .values()
            .filter(|i| i.container_id == container_id)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.image_id).cmp(&(b.created_at, &b.image_id)));
        Ok(out)
    }

    fn update_image(&self, image: &ImageRecord) -> Result<()> {
        let mut t = self.tables();
        let Some(stored) = t.images.get_mut(&image.image_id) else {
            return Err(Error::not_found("Image", image.image_id.clone()));
        };
        let id = &image.image_id;
        check_same_parent("image", id, &stored.container_id, &image.container_id)?;
        check_same_parent("image", id, &stored.session_id, &image.session_id)?;
        *stored = image.clone();
        Ok(())
    }

    fn delete_image(&self, image_id: &str) -> Result<Option<(ImageRecord, Removed)>> {
        let mut removed = Removed::default();
        Ok(self
            .tables()
            .remove_image(image_id, &mut removed)
            .map(|image| (image, removed)))
    }

    // ----- sessions -----

    fn create_session(&self, session: &SessionRecord) -> Result<()> {
        let mut t = self.tables();
        let Some(image) = t.images.get(&session.image_id) else {
            return Err(Error::not_found("Image", session.image_id.clone()));
        };
        check_same_parent(
            "session",
            &session.session_id,
            &image.container_id,
            &session.container_id,
        )?;
        if t.sessions.contains_key(&session.session_id) {
            return Err(Error::AlreadyExists {
                what: "Session",
                id: session.session_id.clone(),
            });
        }
        t.sessions
            .insert(session.session_id.clone(), session.clone());
        Ok(())
    }

    fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        Ok(self.tables().sessions.get(session_id).cloned())
    }

    fn list_sessions(&self, image_id: &str) -> Result<Vec<SessionRecord>> {
        let mut out: Vec<SessionRecord> = self
            .tables()
            .sessions
            .values()
            .filter(|s| s.image_id == image_id)
            .cloned()
            .collect();
        out.sort_by(|a, b| (a.created_at, &a.session_id).cmp(&(b.created_at, &b.session_id)));
        Ok(out)
    }

    fn update_session(&self, session: &SessionRecord) -> Result<()> {
        let mut t = self.tables();
        let Some(stored) = t.sessions.get_mut(&session.session_id) else {
            return Err(Error::not_found("Session", session.session_id.clone()));
        };
        let id = &session.session_id;
        check_same_parent("session", id, &stored.image_id, &session.image_id)?;
        check_same_parent("session", id, &stored.container_id, &session.container_id)?;
        *stored = session.clone();
        Ok(())
    }

    fn delete_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        Ok(self.tables().remove_session(session_id))
    }

    // ----- messages -----

    fn append_message(&self, session_id: &str, message: &Message) -> Result<u64> {
        let mut t = self.tables();
        if !t.sessions.contains_key(session_id) {
            return Err(Error::not_found("Session", session_id));
        }
        let messages = t.messages.entry(session_id.to_string()).or_default();
        messages.push(message.clone());
        Ok(messages.len() as u64 - 1)
    }

    fn list_messages(&self, session_id: &str) -> Result<Vec<Message>> {
        Ok(self
            .tables()
            .messages
            .get(session_id)
            .cloned()
            .unwrap_or_default())
    }

    fn page_messages(&self, session_id: &str, page: &MessagePageRequest) -> Result<MessagePage> {
        let Some((lo, hi)) = page.range() else {
            return Ok(MessagePage::default());
        };
        let t = self.tables();
        let all = t.messages.get(session_id).map(Vec::as_slice).unwrap_or(&[]);
        let end = usize::try_from(hi)
            .unwrap_or(usize::MAX)
            .saturating_add(1)
            .min(all.len());
        let start = usize::try_from(lo).unwrap_or(usize::MAX).min(end);
        let rows = all[start..end]
            .iter()
            .enumerate()
            .map(|(i, m)| Ok(((start + i) as u64, m)));
        // The size a persistent backend would store: the message's JSON.
        let size = |m: &&Message| serde_json::to_vec(*m).map_or(0, |v| v.len());
        let decode = |m: &Message| Ok(m.clone());
        if page.backward() {
            page.collect(rows.rev(), size, decode)
        } else {
            page.collect(rows, size, decode)
        }
    }

    fn count_messages(&self, session_id: &str) -> Result<u64> {
        Ok(self
            .tables()
            .messages
            .get(session_id)
            .map_or(0, |m| m.len() as u64))
    }

    // ----- replay log -----

    fn is_in_memory(&self) -> bool {
        true
    }

    fn append_replay(&self, entries: &[ReplayEntry]) -> Result<()> {
        self.append_replay_capped(entries, usize::MAX)
    }

    fn append_replay_capped(&self, entries: &[ReplayEntry], keep: usize) -> Result<()> {
        let mut t = self.tables();
        let t = &mut *t;
        for e in entries {
            // The topic's log usually exists: look it up before cloning its name.
            let log = match t.replay.get_mut(&e.topic) {
                Some(log) => log,
                None => t.replay.entry(e.topic.clone()).or_default(),
            };
            log.insert(e.cursor, (e.timestamp, e.json.clone()));
            // Held to `keep` as it is written: dropping the oldest now reuses their memory
            // for the next events instead of growing the heap until the next trim.
            let mut dropped = None;
            while log.len() > keep {
                dropped = log.pop_first().map(|(cursor, _)| cursor).or(dropped);
            }
            if let Some(highest) = dropped {
                let floor = match t.replay_floors.get_mut(&e.topic) {
                    Some(floor) => floor,
                    None => t.replay_floors.entry(e.topic.clone()).or_default(),
                };
                *floor = (*floor).max(highest);
            }
        }
        Ok(())
    }

    fn read_replay(&self, topic: &str, after: u64, limit: usize) -> Result<Vec<ReplayEntry>> {
        let t = self.tables();
        let (Some(log), Some(first)) = (t.replay.get(topic), after.checked_add(1)) else {
            return Ok(Vec::new());
        };
        Ok(log
            .range(first..)
            .take(limit)
            .map(|(cursor, (timestamp, json))| ReplayEntry {
                topic: topic.to_string(),
                cursor: *cursor,
                timestamp: *timestamp,
                json: json.clone(),
            })
            .collect())
    }

    fn max_replay_cursor(&self) -> Result<u64> {
        Ok(self
            .tables()
            .replay
            .values()
            .filter_map(|log| log.keys().next_back().copied())
            .max()
            .unwrap_or(0))
    }

    fn trim_replay(&self, keep: usize, min_ts: i64) -> Result<u64> {
        let mut t = self.tables();
        let mut removed = 0u64;
        let mut floors: Vec<(String, u64)> = Vec::new();
        for (topic, log) in t.replay.iter_mut() {
            let before = log.len();
            let excess = before.saturating_sub(keep);
            let doomed: Vec<u64> = log
                .iter()
                .enumerate()
                .filter(|(n, (_, (ts, _)))| *n < excess || *ts < min_ts)
                .map(|(_, (cursor, _))| *cursor)
                .collect();
            if let Some(highest) = doomed.iter().max() {
                floors.push((topic.clone(), *highest));
            }
            for cursor in doomed {
                log.remove(&cursor);
            }
            removed += (before - log.len()) as u64;
        }
        t.replay.retain(|_, log| !log.is_empty());
        for (topic, highest) in floors {
            let floor = t.replay_floors.entry(topic).or_default();
            *floor = (*floor).max(highest);
        }
        Ok(removed)
    }

    fn replay_floor(&self, topic: &str) -> Result<u64> {
        Ok(self.tables().replay_floors.get(topic).copied().unwrap_or(0))
    }

    // ----- tokens -----

    fn put_token(&self, token: &TokenRecord) -> Result<()> {
        self.tables()
            .tokens
            .insert(token.hash.clone(), token.clone());
        Ok(())
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        Ok(self.tables().tokens.get(hash).cloned())
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut out: Vec<TokenRecord> = self.tables().tokens.values().cloned().collect();
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    fn revoke_token(&self, id: &str, now: i64) -> Result<bool> {
        let mut t = self.tables();
        match t.tokens.values_mut().find(|r| r.id == id) {
            Some(record) => {
                record.revoked_at.get_or_insert(now);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

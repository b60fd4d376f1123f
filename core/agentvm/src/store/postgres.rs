//! [`PostgresStore`]: the store in a PostgreSQL database, for servers that share one (feature
//! `postgres`).
//!
//! The tables mirror redb's (`store/redb.rs`): one per record type, records as JSONB next to
//! the columns queries use; messages keyed `(session_id, seq)`, the replay log keyed
//! `(topic, cursor)`, indexes for images by container and sessions by image. Key columns use
//! the `"C"` collation, so listings come in byte order like redb's whatever the database's
//! locale. The layout is created and upgraded by the SQL files in `postgres/migrations/`,
//! applied at open in one transaction and recorded in `schema_migrations`
//! (`postgres/migrate.rs`); data written by a newer agentvm is refused, as with redb.
//!
//! Every write is one transaction (or one statement) that has committed when the call returns
//! `Ok`, except [`Store::append_replay`], which commits with `synchronous_commit = off` (the
//! trait allows it to be lost on a crash, as redb's is). A message's sequence number is taken
//! from its session's row with `UPDATE ... RETURNING`, so concurrent appends queue on that row.
//!
//! Connections come from a deadpool pool, without TLS for now (`NoTls`: use it on a trusted
//! network or through a local proxy). A server that cannot be reached is `Unavailable`, with a
//! message naming it; a pooled connection the server closed is replaced on the next call, so
//! the store works again as soon as the server is back, without reopening. How the
//! synchronous trait waits for the async client is in `postgres/bridge.rs`.

use super::{
    check_new_image, check_same_parent, MessagePage, MessagePageRequest, Removed, ReplayEntry,
    Store, TokenRecord,
};
use super::{ClusterMember, Lease, LeaseClaim, LeaseRecord, MemberRecord};
use crate::error::{Error, Result};
use crate::model::{ContainerRecord, Definition, ImageRecord, Message, SessionRecord};
use agentvm_scheduler::SchedulerStore;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio_postgres::NoTls;

mod bridge;
mod cluster;
mod db;
mod migrate;
mod notify;
mod scheduler;

use bridge::Bridge;
use cluster::Fencing;
use db::{bigint, delete_topics, describe, ensure_container, execute, json, query, record, seq};
use db::{AtServer, Db};
use scheduler::PostgresSchedulerStore;

/// How long a call waits for a new connection (twice that for a free pooled one).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// At most this many connections per store (per server process).
const POOL_SIZE: usize = 16;

/// The store in a PostgreSQL database.
pub struct PostgresStore {
    /// The pool and runtime, shared with the scheduler's tables.
    db: Arc<Db>,
    /// The scheduler's tables in the same database: one handle shared by every caller.
    scheduler: Arc<PostgresSchedulerStore>,
    /// This server's cluster membership and leases: what container writes are fenced by.
    fencing: Fencing,
    /// Where replay notices are listened for: the pool's connection settings.
    listen_config: tokio_postgres::Config,
    /// This store's random id in replay notices, so it never notifies itself.
    instance: String,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("server", &self.db.server)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// How many transactions the scheduler's sandbox and execution writes took, for how many
    /// writes, since the store was opened: writes per transaction is what group commit saved.
    pub fn scheduler_commit_stats(&self) -> agentvm_scheduler::CommitStats {
        self.scheduler.commit_stats()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user[:password]@host[:port]/dbname`,
    /// libpq's URL; `?options=-c%20search_path%3Dname` puts the tables in schema `name`), applies
    /// missing migrations and checks the schema version. Must run inside tokio's multi-thread
    /// runtime, which then drives the connections. An unreachable server is `Unavailable`; data
    /// written by a newer agentvm is refused (`Storage`).
    pub async fn open(url: &str) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(url).map_err(|e| {
            Error::invalid(format!(
                "not a PostgreSQL URL (postgres://user@host:port/dbname): {e}"
            ))
        })?;
        let server = describe(&config);
        let bridge = Bridge::current()?;
        let mut config = config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let listen_config = config.clone();
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_TIMEOUT * 2))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::Internal(format!("building the PostgreSQL pool: {e}")))?;
        let db = Arc::new(Db {
            pool,
            bridge,
            server,
        });
        let mut client = db.client().await?;
        migrate::run(&db, &mut client).await?;
        drop(client);
        Ok(PostgresStore {
            scheduler: Arc::new(PostgresSchedulerStore::new(db.clone())),
            db,
            fencing: Fencing::default(),
            listen_config,
            instance: crate::model::new_id("store"),
        })
    }

    /// The server, as `host:port/dbname`.
    pub fn server(&self) -> &str {
        &self.db.server
    }
}

impl Store for PostgresStore {
    fn schema_version(&self) -> Result<u64> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let row = client
                .query_opt("SELECT value FROM meta WHERE key = 'schema_version'", &[])
                .await
                .at(db)?;
            match row {
                None => Ok(0),
                Some(row) => migrate::parse_version(db, &row.try_get::<_, String>(0).at(db)?),
            }
        })
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
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            self.fencing.check(db, &tx, container_id).await?;
            let fresh = ContainerRecord {
                container_id: container_id.to_string(),
                created_at: now,
                sandbox_template: sandbox_template.map(str::to_string),
            };
            if ensure_container(db, &tx, &fresh).await? {
                tx.commit().await.at(db)?;
                return Ok((fresh, true));
            }
            let rows = query(
                db,
                &tx,
                "SELECT record FROM containers WHERE container_id = $1 FOR UPDATE",
                &[&container_id],
            )
            .await?;
            let Some(row) = rows.first() else {
                return Err(Error::Conflict(format!(
                    "container {container_id} was deleted while it was being created"
                )));
            };
            let mut stored: ContainerRecord = record(db, row, 0)?;
            if let Some(template) = sandbox_template {
                if stored.sandbox_template.as_deref() != Some(template) {
                    stored.sandbox_template = Some(template.to_string());
                    execute(
                        db,
                        &tx,
                        "UPDATE containers SET record = $2 WHERE container_id = $1",
                        &[&container_id, &json(&stored)],
                    )
                    .await?;
                }
            }
            tx.commit().await.at(db)?;
            Ok((stored, false))
        })
    }

    fn get_container(&self, container_id: &str) -> Result<Option<ContainerRecord>> {
        let db = &*self.db;
        db.run(db.one(
            "SELECT record FROM containers WHERE container_id = $1",
            &[&container_id],
        ))
    }

    fn list_containers(&self) -> Result<Vec<ContainerRecord>> {
        let db = &*self.db;
        db.run(db.list("SELECT record FROM containers ORDER BY container_id", &[]))
    }

    fn delete_container(&self, container_id: &str) -> Result<Option<Removed>> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            self.fencing.check(db, &tx, container_id).await?;
            let locked = query(
                db,
                &tx,
                "SELECT 1 FROM containers WHERE container_id = $1 FOR UPDATE",
                &[&container_id],
            )
            .await?;
            if locked.is_empty() {
                return Ok(None);
            }
            let rows = query(
                db,
                &tx,
                "SELECT i.image_id, s.session_id FROM images i \
                 LEFT JOIN sessions s ON s.image_id = i.image_id \
                 WHERE i.container_id = $1 ORDER BY i.image_id, s.session_id",
                &[&container_id],
            )
            .await?;
            let mut removed = Removed::default();
            for row in &rows {
                let image: String = row.try_get(0).at(db)?;
                if removed.images.last() != Some(&image) {
                    removed.images.push(image);
                }
                if let Some(session) = row.try_get::<_, Option<String>>(1).at(db)? {
                    removed.sessions.push(session);
                }
            }
            delete_topics(db, &tx, &removed.sessions).await?;
            // Images, sessions and messages go with it (ON DELETE CASCADE).
            execute(
                db,
                &tx,
                "DELETE FROM containers WHERE container_id = $1",
                &[&container_id],
            )
            .await?;
            tx.commit().await.at(db)?;
            Ok(Some(removed))
        })
    }

    // ----- definitions -----

    fn put_definition(&self, definition: &Definition) -> Result<bool> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            // xmax is 0 on a freshly inserted row and set on one the upsert replaced.
            let statement = client
                .prepare_cached(
                    "INSERT INTO definitions (name, record) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET record = EXCLUDED.record \
                     RETURNING xmax::text <> '0'",
                )
                .await
                .at(db)?;
            let row = client
                .query_one(&statement, &[&definition.name, &json(definition)])
                .await
                .at(db)?;
            row.try_get(0).at(db)
        })
    }

    fn get_definition(&self, name: &str) -> Result<Option<Definition>> {
        let db = &*self.db;
        db.run(db.one("SELECT record FROM definitions WHERE name = $1", &[&name]))
    }

    fn list_definitions(&self) -> Result<Vec<Definition>> {
        let db = &*self.db;
        db.run(db.list("SELECT record FROM definitions ORDER BY name", &[]))
    }

    // ----- images -----

    fn create_image(&self, image: &ImageRecord, session: &SessionRecord) -> Result<bool> {
        check_new_image(image, session)?;
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            // An early return drops `tx` uncommitted: nothing of it is written.
            let tx = client.transaction().await.at(db)?;
            self.fencing.check(db, &tx, &image.container_id).await?;
            let container = ContainerRecord {
                container_id: image.container_id.clone(),
                created_at: image.created_at,
                sandbox_template: None,
            };
            let created = ensure_container(db, &tx, &container).await?;
            let inserted = execute(
                db,
                &tx,
                "INSERT INTO images (image_id, container_id, created_at, record) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (image_id) DO NOTHING",
                &[
                    &image.image_id,
                    &image.container_id,
                    &image.created_at,
                    &json(image),
                ],
            )
            .await?;
            if inserted == 0 {
                return Err(Error::AlreadyExists {
                    what: "Image",
                    id: image.image_id.clone(),
                });
            }
            let inserted = execute(
                db,
                &tx,
                "INSERT INTO sessions (session_id, image_id, container_id, created_at, record) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id) DO NOTHING",
                &[
                    &session.session_id,
                    &session.image_id,
                    &session.container_id,
                    &session.created_at,
                    &json(session),
                ],
            )
            .await?;
            if inserted == 0 {
                return Err(Error::AlreadyExists {
                    what: "Session",
                    id: session.session_id.clone(),
                });
            }
            tx.commit().await.at(db)?;
            Ok(created)
        })
    }

    fn get_image(&self, image_id: &str) -> Result<Option<ImageRecord>> {
        let db = &*self.db;
        db.run(db.one(
            "SELECT record FROM images WHERE image_id = $1",
            &[&image_id],
        ))
    }

    fn list_images(&self, container_id: &str) -> Result<Vec<ImageRecord>> {
        let db = &*self.db;
        db.run(db.list(
            "SELECT record FROM images WHERE container_id = $1 ORDER BY created_at, image_id",
            &[&container_id],
        ))
    }

    fn update_image(&self, image: &ImageRecord) -> Result<()> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            let rows = query(
                db,
                &tx,
                "SELECT record FROM images WHERE image_id = $1 FOR UPDATE",
                &[&image.image_id],
            )
            .await?;
            let Some(row) = rows.first() else {
                return Err(Error::not_found("Image", image.image_id.clone()));
            };
            let stored: ImageRecord = record(db, row, 0)?;
            self.fencing.check(db, &tx, &stored.container_id).await?;
            let id = &image.image_id;
            check_same_parent("image", id, &stored.container_id, &image.container_id)?;
            check_same_parent("image", id, &stored.session_id, &image.session_id)?;
            execute(
                db,
                &tx,
                "UPDATE images SET record = $2, created_at = $3 WHERE image_id = $1",
                &[&image.image_id, &json(image), &image.created_at],
            )
            .await?;
            tx.commit().await.at(db)?;
            Ok(())
        })
    }

    fn delete_image(&self, image_id: &str) -> Result<Option<(ImageRecord, Removed)>> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            let rows = query(
                db,
                &tx,
                "SELECT record FROM images WHERE image_id = $1 FOR UPDATE",
                &[&image_id],
            )
            .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let image: ImageRecord = record(db, row, 0)?;
            self.fencing.check(db, &tx, &image.container_id).await?;
            let rows = query(
                db,
                &tx,
                "SELECT session_id FROM sessions WHERE image_id = $1 ORDER BY session_id",
                &[&image_id],
            )
            .await?;
            let mut removed = Removed {
                images: vec![image_id.to_string()],
                sessions: Vec::with_capacity(rows.len()),
            };
            for row in &rows {
                removed.sessions.push(row.try_get(0).at(db)?);
            }
            delete_topics(db, &tx, &removed.sessions).await?;
            // Sessions and messages go with it (ON DELETE CASCADE).
            execute(
                db,
                &tx,
                "DELETE FROM images WHERE image_id = $1",
                &[&image_id],
            )
            .await?;
            tx.commit().await.at(db)?;
            Ok(Some((image, removed)))
        })
    }

    // ----- sessions -----

    fn create_session(&self, session: &SessionRecord) -> Result<()> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            // An early return drops `tx` uncommitted: nothing of it is written.
            let tx = client.transaction().await.at(db)?;
            let rows = query(
                db,
                &tx,
                "SELECT container_id FROM images WHERE image_id = $1 FOR SHARE",
                &[&session.image_id],
            )
            .await?;
            let Some(row) = rows.first() else {
                return Err(Error::not_found("Image", session.image_id.clone()));
            };
            let container_id: String = row.try_get(0).at(db)?;
            check_same_parent(
                "session",
                &session.session_id,
                &container_id,
                &session.container_id,
            )?;
            self.fencing.check(db, &tx, &container_id).await?;
            let inserted = execute(
                db,
                &tx,
                "INSERT INTO sessions (session_id, image_id, container_id, created_at, record) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (session_id) DO NOTHING",
                &[
                    &session.session_id,
                    &session.image_id,
                    &session.container_id,
                    &session.created_at,
                    &json(session),
                ],
            )
            .await?;
            if inserted == 0 {
                return Err(Error::AlreadyExists {
                    what: "Session",
                    id: session.session_id.clone(),
                });
            }
            tx.commit().await.at(db)?;
            Ok(())
        })
    }

    fn get_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        let db = &*self.db;
        db.run(db.one(
            "SELECT record FROM sessions WHERE session_id = $1",
            &[&session_id],
        ))
    }

    fn list_sessions(&self, image_id: &str) -> Result<Vec<SessionRecord>> {
        let db = &*self.db;
        db.run(db.list(
            "SELECT record FROM sessions WHERE image_id = $1 ORDER BY created_at, session_id",
            &[&image_id],
        ))
    }

    fn update_session(&self, session: &SessionRecord) -> Result<()> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            let rows = query(
                db,
                &tx,
                "SELECT record FROM sessions WHERE session_id = $1 FOR UPDATE",
                &[&session.session_id],
            )
            .await?;
            let Some(row) = rows.first() else {
                return Err(Error::not_found("Session", session.session_id.clone()));
            };
            let stored: SessionRecord = record(db, row, 0)?;
            self.fencing.check(db, &tx, &stored.container_id).await?;
            let id = &session.session_id;
            check_same_parent("session", id, &stored.image_id, &session.image_id)?;
            check_same_parent("session", id, &stored.container_id, &session.container_id)?;
            execute(
                db,
                &tx,
                "UPDATE sessions SET record = $2, created_at = $3 WHERE session_id = $1",
                &[&session.session_id, &json(session), &session.created_at],
            )
            .await?;
            tx.commit().await.at(db)?;
            Ok(())
        })
    }

    fn delete_session(&self, session_id: &str) -> Result<Option<SessionRecord>> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            if let Some(row) = query(
                db,
                &tx,
                "SELECT container_id FROM sessions WHERE session_id = $1",
                &[&session_id],
            )
            .await?
            .first()
            {
                let container_id: String = row.try_get(0).at(db)?;
                self.fencing.check(db, &tx, &container_id).await?;
            }
            // Messages go with it (ON DELETE CASCADE).
            let rows = query(
                db,
                &tx,
                "DELETE FROM sessions WHERE session_id = $1 RETURNING record",
                &[&session_id],
            )
            .await?;
            let Some(row) = rows.first() else {
                return Ok(None);
            };
            let session: SessionRecord = record(db, row, 0)?;
            delete_topics(db, &tx, &[session_id.to_string()]).await?;
            tx.commit().await.at(db)?;
            Ok(Some(session))
        })
    }

    // ----- messages -----

    fn append_message(&self, session_id: &str, message: &Message) -> Result<u64> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            // The UPDATE locks the session's row until the message is inserted, so concurrent
            // appends take consecutive numbers. In a cluster the lease is checked first, in the
            // same transaction, and the message is stamped with the epoch it was written in.
            let tx = client.transaction().await.at(db)?;
            let mut stamp = None;
            if self.fencing.active() {
                let rows = query(
                    db,
                    &tx,
                    "SELECT container_id FROM sessions WHERE session_id = $1",
                    &[&session_id],
                )
                .await?;
                let Some(row) = rows.first() else {
                    return Err(Error::not_found("Session", session_id));
                };
                let container_id: String = row.try_get(0).at(db)?;
                stamp = self.fencing.check(db, &tx, &container_id).await?;
            }
            let (owner, epoch) = match &stamp {
                Some(s) => (Some(s.owner.as_str()), Some(s.epoch)),
                None => (None, None),
            };
            let rows = query(
                db,
                &tx,
                "WITH next AS ( \
                     UPDATE sessions SET next_seq = next_seq + 1 WHERE session_id = $1 \
                     RETURNING next_seq - 1 AS seq) \
                 INSERT INTO messages (session_id, seq, message, lease_owner, lease_epoch) \
                 SELECT $1, seq, $2, $3, $4 FROM next RETURNING seq",
                &[&session_id, &json(message), &owner, &epoch],
            )
            .await?;
            let Some(row) = rows.first() else {
                return Err(Error::not_found("Session", session_id));
            };
            let seq = seq(row.try_get(0).at(db)?);
            tx.commit().await.at(db)?;
            Ok(seq)
        })
    }

    fn list_messages(&self, session_id: &str) -> Result<Vec<Message>> {
        let db = &*self.db;
        db.run(db.list(
            "SELECT message FROM messages WHERE session_id = $1 ORDER BY seq",
            &[&session_id],
        ))
    }

    fn page_messages(&self, session_id: &str, page: &MessagePageRequest) -> Result<MessagePage> {
        /// Rows fetched per query: a page never holds more than its budget and a chunk.
        const CHUNK: i64 = 16;
        let Some((lo, hi)) = page.range() else {
            return Ok(MessagePage::default());
        };
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let (mut lo, mut hi) = (as_i64(lo), as_i64(hi));
        let sql = if page.backward() {
            "SELECT seq, message::text FROM messages WHERE session_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq DESC LIMIT $4"
        } else {
            "SELECT seq, message::text FROM messages WHERE session_id = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4"
        };
        let db = &*self.db;
        let rows = db.run(async {
            let client = db.client().await?;
            let statement = client.prepare_cached(sql).await.at(db)?;
            // The rows the page keeps plus one past it (so it knows whether more are left).
            let mut rows: Vec<Result<(u64, String)>> = Vec::new();
            let mut bytes = 0usize;
            let mut full = false;
            'chunks: while lo <= hi {
                let chunk = client
                    .query(&statement, &[&session_id, &lo, &hi, &CHUNK])
                    .await
                    .at(db)?;
                let n = chunk.len() as i64;
                for row in chunk {
                    let s: i64 = row.try_get(0).at(db)?;
                    let text: String = row.try_get(1).at(db)?;
                    if page.backward() {
                        hi = s - 1;
                    } else {
                        lo = s + 1;
                    }
                    bytes = bytes.saturating_add(text.len());
                    rows.push(Ok((seq(s), text)));
                    if full {
                        break 'chunks;
                    }
                    full = rows.len() >= page.limit.max(1) || bytes >= page.max_bytes;
                }
                if n < CHUNK {
                    break;
                }
            }
            Ok(rows)
        })?;
        page.collect(
            rows,
            |text: &String| text.len(),
            |text| {
                serde_json::from_str(&text)
                    .map_err(|e| Error::storage("decoding a stored message", e))
            },
        )
    }

    fn count_messages(&self, session_id: &str) -> Result<u64> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let statement = client
                .prepare_cached("SELECT count(*) FROM messages WHERE session_id = $1")
                .await
                .at(db)?;
            let row = client.query_one(&statement, &[&session_id]).await.at(db)?;
            Ok(seq(row.try_get(0).at(db)?))
        })
    }

    // ----- replay log -----

    fn append_replay(&self, entries: &[ReplayEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // One row per key, the last entry winning (one INSERT cannot update a row twice).
        let mut last: std::collections::BTreeMap<(&str, u64), &ReplayEntry> = Default::default();
        for e in entries {
            last.insert((e.topic.as_str(), e.cursor), e);
        }
        let mut topics = Vec::with_capacity(last.len());
        let mut cursors = Vec::with_capacity(last.len());
        let mut timestamps = Vec::with_capacity(last.len());
        let mut events: Vec<&[u8]> = Vec::with_capacity(last.len());
        for e in last.values() {
            topics.push(e.topic.as_str());
            cursors.push(bigint("replay cursor", e.cursor)?);
            timestamps.push(e.timestamp);
            events.push(&e.json);
        }
        let notice = {
            let mut distinct: Vec<&str> = topics.clone();
            distinct.dedup();
            let newest = last.keys().map(|(_, c)| *c).max().unwrap_or(0);
            notify::payload(&self.instance, newest, distinct.into_iter())
        };
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            // Not durable on its own (see the trait): a crash may lose the last batches.
            tx.batch_execute("SET LOCAL synchronous_commit = off")
                .await
                .at(db)?;
            // Other servers following these topics hear of them when this commits (the
            // notification is sent at commit, never for a rolled-back write).
            execute(
                db,
                &tx,
                "WITH written AS ( \
                   INSERT INTO replay (topic, cursor, timestamp, event) \
                   SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::bytea[]) \
                   ON CONFLICT (topic, cursor) DO UPDATE \
                   SET timestamp = EXCLUDED.timestamp, event = EXCLUDED.event \
                   RETURNING 1) \
                 SELECT pg_notify($5, $6) FROM (SELECT count(*) FROM written) AS n",
                &[
                    &topics,
                    &cursors,
                    &timestamps,
                    &events,
                    &notify::CHANNEL,
                    &notice,
                ],
            )
            .await?;
            tx.commit().await.at(db)
        })
    }

    fn read_replay(&self, topic: &str, after: u64, limit: usize) -> Result<Vec<ReplayEntry>> {
        let Ok(after) = i64::try_from(after) else {
            return Ok(Vec::new());
        };
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let statement = client
                .prepare_cached(
                    "SELECT cursor, timestamp, event FROM replay \
                     WHERE topic = $1 AND cursor > $2 ORDER BY cursor LIMIT $3",
                )
                .await
                .at(db)?;
            let rows = client
                .query(&statement, &[&topic, &after, &limit])
                .await
                .at(db)?;
            rows.iter()
                .map(|row| {
                    Ok(ReplayEntry {
                        topic: topic.to_string(),
                        cursor: seq(row.try_get(0).at(db)?),
                        timestamp: row.try_get(1).at(db)?,
                        json: row.try_get::<_, Vec<u8>>(2).at(db)?.into(),
                    })
                })
                .collect()
        })
    }

    /// Readiness on PostgreSQL: one round trip on a pooled connection, so a server whose
    /// database went away (or became a read-only standby) reports it instead of answering
    /// ready while every write fails. `Unavailable` naming the database when it cannot.
    fn check_writable(&self) -> Result<()> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .at(db)?;
            if row.try_get::<_, bool>(0).at(db)? {
                return Err(Error::unavailable(format!(
                    "PostgreSQL at {} is a read-only standby (in recovery): point --store at the primary",
                    db.server
                )));
            }
            Ok(())
        })
    }

    fn max_replay_cursor(&self) -> Result<u64> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let row = client
                .query_one("SELECT COALESCE(MAX(cursor), 0)::int8 FROM replay", &[])
                .await
                .at(db)?;
            Ok(seq(row.try_get(0).at(db)?))
        })
    }

    fn trim_replay(&self, keep: usize, min_ts: i64) -> Result<u64> {
        let keep = i64::try_from(keep).unwrap_or(i64::MAX);
        let db = &*self.db;
        // One statement, atomic on its own: the delete, then each topic's floor raised to the
        // highest cursor it lost.
        db.run(async {
            let client = db.client().await?;
            let row = client
                .query_one(
                    "WITH ranked AS ( \
                         SELECT topic, cursor, timestamp, \
                                row_number() OVER (PARTITION BY topic ORDER BY cursor DESC) AS newer \
                         FROM replay), \
                     gone AS ( \
                         DELETE FROM replay r USING ranked d \
                         WHERE r.topic = d.topic AND r.cursor = d.cursor \
                           AND (d.newer > $1 OR d.timestamp < $2) \
                         RETURNING r.topic, r.cursor), \
                     floors AS ( \
                         INSERT INTO replay_floors (topic, cursor) \
                         SELECT topic, MAX(cursor) FROM gone GROUP BY topic \
                         ON CONFLICT (topic) DO UPDATE \
                         SET cursor = GREATEST(replay_floors.cursor, EXCLUDED.cursor)) \
                     SELECT COUNT(*)::int8 FROM gone",
                    &[&keep, &min_ts],
                )
                .await
                .at(db)?;
            Ok(seq(row.try_get(0).at(db)?))
        })
    }

    fn replay_newest(&self, topic: &str) -> Result<u64> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let row = client
                .query_one(
                    "SELECT COALESCE(MAX(cursor), 0)::int8 FROM replay WHERE topic = $1",
                    &[&topic],
                )
                .await
                .at(db)?;
            Ok(seq(row.try_get(0).at(db)?))
        })
    }

    fn replay_notices(&self) -> Option<super::ReplayNotices> {
        let (tx, rx) = super::replay_notice_channel();
        self.db.bridge.spawn(notify::listen(
            self.listen_config.clone(),
            self.db.server.clone(),
            self.instance.clone(),
            tx,
        ));
        Some(rx)
    }

    fn replay_floor(&self, topic: &str) -> Result<u64> {
        let db = &*self.db;
        db.run(async {
            let client = db.client().await?;
            let row = client
                .query_opt(
                    "SELECT cursor FROM replay_floors WHERE topic = $1",
                    &[&topic],
                )
                .await
                .at(db)?;
            match row {
                Some(row) => Ok(seq(row.try_get(0).at(db)?)),
                None => Ok(0),
            }
        })
    }

    // ----- tokens -----

    fn put_token(&self, token: &TokenRecord) -> Result<()> {
        let db = &*self.db;
        db.run(db.execute(
            "INSERT INTO tokens (hash, id, created_at, record) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (hash) DO UPDATE \
             SET id = EXCLUDED.id, created_at = EXCLUDED.created_at, record = EXCLUDED.record",
            &[&token.hash, &token.id, &token.created_at, &json(token)],
        ))
        .map(drop)
    }

    fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let db = &*self.db;
        db.run(db.one("SELECT record FROM tokens WHERE hash = $1", &[&hash]))
    }

    fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let db = &*self.db;
        db.run(db.list("SELECT record FROM tokens ORDER BY created_at, id", &[]))
    }

    fn revoke_token(&self, id: &str, now: i64) -> Result<bool> {
        let db = &*self.db;
        db.run(async {
            let mut client = db.client().await?;
            let tx = client.transaction().await.at(db)?;
            let rows = query(
                db,
                &tx,
                "SELECT record FROM tokens WHERE id = $1 FOR UPDATE",
                &[&id],
            )
            .await?;
            for row in &rows {
                let mut token: TokenRecord = record(db, row, 0)?;
                if token.revoked_at.is_none() {
                    token.revoked_at = Some(now);
                    execute(
                        db,
                        &tx,
                        "UPDATE tokens SET record = $2 WHERE hash = $1",
                        &[&token.hash, &json(&token)],
                    )
                    .await?;
                }
            }
            tx.commit().await.at(db)?;
            Ok(!rows.is_empty())
        })
    }

    // ----- cluster membership and container leases -----

    fn join_cluster(&self, member: &ClusterMember) -> Result<()> {
        let db = &*self.db;
        db.run(cluster::join(db, &self.fencing, member))
    }

    fn heartbeat(&self, draining: bool) -> Result<()> {
        let db = &*self.db;
        db.run(cluster::heartbeat(db, &self.fencing, draining))
    }

    fn cluster_members(&self) -> Result<Vec<MemberRecord>> {
        let db = &*self.db;
        db.run(cluster::members(db))
    }

    fn acquire_lease(
        &self,
        container_id: &str,
        server_id: &str,
        ttl: Duration,
    ) -> Result<LeaseClaim> {
        let db = &*self.db;
        db.run(cluster::acquire(
            db,
            &self.fencing,
            container_id,
            server_id,
            ttl,
        ))
    }

    fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let db = &*self.db;
        db.run(cluster::renew(db, &self.fencing, lease, ttl))
    }

    fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let db = &*self.db;
        db.run(cluster::release(db, &self.fencing, lease))
    }

    fn get_lease(&self, container_id: &str) -> Result<Option<LeaseRecord>> {
        let db = &*self.db;
        db.run(cluster::get(db, container_id))
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;

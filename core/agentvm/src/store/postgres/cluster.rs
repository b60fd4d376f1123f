//! Cluster membership, container leases and write fencing in PostgreSQL (tables from migration
//! `0002_cluster.sql`; the model is in `store/lease.rs`).
//!
//! Every expiry is computed by the database (`now()`), so servers whose clocks disagree still
//! agree on who owns a container. Taking a lease is one `INSERT ... ON CONFLICT DO UPDATE ...
//! WHERE` statement: it creates the lease, takes over an expired or released one with
//! `epoch + 1`, or extends the caller's own live one, and changes nothing when another server
//! holds a live lease. A fenced write first reads the lease row `FOR SHARE` in its own
//! transaction: a takeover (an `UPDATE` of that row) waits until the write has committed, and a
//! write that finds the row changed, expired or in another epoch fails without writing. So a
//! write commits only while its server's lease is live, and every write is attributable to one
//! epoch.

use super::{AtServer, Db};
use crate::error::{Error, Result};
use crate::store::{ClusterMember, Lease, LeaseClaim, LeaseRecord, MemberRecord};
use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Who wrote a row: the server and its lease epoch (stored on messages).
#[derive(Debug, Clone)]
pub(super) struct Stamp {
    /// The writing server.
    pub(super) owner: String,
    /// Its epoch of the container's lease.
    pub(super) epoch: i64,
}

/// This store's membership and the leases it holds: what its writes are checked against.
#[derive(Debug, Default)]
pub(super) struct Fencing {
    /// Set by `join_cluster`: from then on every container write is fenced. `None`: a store
    /// used by one server alone, which writes unfenced as before clusters existed.
    member: RwLock<Option<ClusterMember>>,
    /// The epoch this server acquired per container. A write for a container missing here is
    /// refused before it reaches the database.
    held: Mutex<HashMap<String, i64>>,
}

impl Fencing {
    /// Whether this store joined a cluster (its container writes are fenced).
    pub(super) fn active(&self) -> bool {
        self.member_id().is_some()
    }

    fn member_id(&self) -> Option<String> {
        self.member
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.id.clone())
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<String, i64>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Inside a write's transaction: checks (and locks against takeover until commit) that this
    /// server still holds the lease of `container_id` at the epoch it acquired. `None` when the
    /// store is not in a cluster (nothing to check); the stamp for the written rows otherwise.
    pub(super) async fn check(
        &self,
        db: &Db,
        tx: &deadpool_postgres::Transaction<'_>,
        container_id: &str,
    ) -> Result<Option<Stamp>> {
        let Some(me) = self.member_id() else {
            return Ok(None);
        };
        let mine = self.held().get(container_id).copied();
        let rows = super::query(
            db,
            tx,
            "SELECT l.owner, l.epoch, l.expires_at > now(), s.url FROM container_leases l \
             LEFT JOIN cluster_servers s ON s.id = l.owner \
             WHERE l.container_id = $1 FOR SHARE OF l",
            &[&container_id],
        )
        .await?;
        let (owner, epoch, live, url) = match rows.first() {
            Some(row) => (
                row.try_get::<_, String>(0).at(db)?,
                row.try_get::<_, i64>(1).at(db)?,
                row.try_get::<_, bool>(2).at(db)?,
                row.try_get::<_, Option<String>>(3).at(db)?,
            ),
            None => (String::new(), 0, false, None),
        };
        if owner == me && Some(epoch) == mine && live {
            return Ok(Some(Stamp { owner, epoch }));
        }
        let holder = if owner.is_empty() {
            "no server".to_string()
        } else {
            let at = url.map(|u| format!(" at {u}")).unwrap_or_default();
            let state = if live { "" } else { ", expired" };
            format!("server {owner}{at} (epoch {epoch}{state})")
        };
        let ours = match mine {
            Some(mine) => {
                self.forget(container_id, mine);
                format!("this server's lease (epoch {mine}) was lost")
            }
            None => format!("server {me} holds no lease on it and must acquire one first"),
        };
        Err(Error::Conflict(format!(
            "container {container_id} is owned by {holder}; {ours}; nothing was written"
        )))
    }

    /// Forgets the lease of `container_id` if it is still at `epoch`.
    fn forget(&self, container_id: &str, epoch: i64) {
        let mut held = self.held();
        if held.get(container_id) == Some(&epoch) {
            held.remove(container_id);
        }
    }
}

/// A TTL as whole milliseconds for SQL (at least 1).
fn ttl_ms(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)
}

/// Registers (or refreshes) `member` and turns fencing on.
pub(super) async fn join(db: &Db, fencing: &Fencing, member: &ClusterMember) -> Result<()> {
    let client = db.client().await?;
    client
        .execute(
            "INSERT INTO cluster_servers (id, url) VALUES ($1, $2) \
             ON CONFLICT (id) DO UPDATE SET url = EXCLUDED.url, heartbeat_at = now(), \
             draining = false",
            &[&member.id, &member.url],
        )
        .await
        .at(db)?;
    *fencing.member.write().unwrap_or_else(|p| p.into_inner()) = Some(member.clone());
    Ok(())
}

/// A heartbeat of the joined member.
pub(super) async fn heartbeat(db: &Db, fencing: &Fencing, draining: bool) -> Result<()> {
    let Some(me) = fencing.member_id() else {
        return Err(Error::invalid(
            "this store has not joined a cluster (join_cluster) and cannot heartbeat",
        ));
    };
    let client = db.client().await?;
    let changed = client
        .execute(
            "UPDATE cluster_servers SET heartbeat_at = now(), draining = $2 WHERE id = $1",
            &[&me, &draining],
        )
        .await
        .at(db)?;
    if changed == 0 {
        return Err(Error::not_found("Cluster server", me));
    }
    Ok(())
}

/// The registered servers.
pub(super) async fn members(db: &Db) -> Result<Vec<MemberRecord>> {
    let client = db.client().await?;
    let rows = client
        .query(
            "SELECT id, url, (extract(epoch FROM now() - heartbeat_at) * 1000)::int8, draining \
             FROM cluster_servers ORDER BY id",
            &[],
        )
        .await
        .at(db)?;
    rows.iter()
        .map(|row| {
            Ok(MemberRecord {
                id: row.try_get(0).at(db)?,
                url: row.try_get(1).at(db)?,
                heartbeat_age_ms: row.try_get(2).at(db)?,
                draining: row.try_get(3).at(db)?,
            })
        })
        .collect()
}

/// Takes (or extends) the lease of `container_id` for `server_id`.
pub(super) async fn acquire(
    db: &Db,
    fencing: &Fencing,
    container_id: &str,
    server_id: &str,
    ttl: Duration,
) -> Result<LeaseClaim> {
    let ttl = ttl_ms(ttl);
    let client = db.client().await?;
    // One statement: concurrent claims serialize on the row, and the WHERE is evaluated on
    // its newest version, so exactly one of two servers racing for an expired lease wins.
    let won = client
        .query_opt(
            "INSERT INTO container_leases AS l (container_id, owner, epoch, expires_at) \
             VALUES ($1, $2, 1, now() + $3::int8 * interval '1 millisecond') \
             ON CONFLICT (container_id) DO UPDATE SET \
                 owner = EXCLUDED.owner, \
                 expires_at = EXCLUDED.expires_at, \
                 epoch = CASE WHEN l.owner = EXCLUDED.owner AND l.expires_at > now() \
                              THEN l.epoch ELSE l.epoch + 1 END \
             WHERE l.expires_at <= now() OR l.owner = EXCLUDED.owner \
             RETURNING epoch",
            &[&container_id, &server_id, &ttl],
        )
        .await
        .at(db)?;
    if let Some(row) = won {
        let epoch: i64 = row.try_get(0).at(db)?;
        if fencing.member_id().as_deref() == Some(server_id) {
            fencing.held().insert(container_id.to_string(), epoch);
        }
        return Ok(LeaseClaim::Held(Lease {
            container_id: container_id.to_string(),
            owner: server_id.to_string(),
            epoch: super::seq(epoch),
        }));
    }
    let row = client
        .query_opt(
            "SELECT l.owner, l.epoch, s.url FROM container_leases l \
             LEFT JOIN cluster_servers s ON s.id = l.owner WHERE l.container_id = $1",
            &[&container_id],
        )
        .await
        .at(db)?;
    match row {
        Some(row) => Ok(LeaseClaim::Taken {
            owner: row.try_get(0).at(db)?,
            epoch: super::seq(row.try_get(1).at(db)?),
            url: row.try_get(2).at(db)?,
        }),
        // Deleted between the two statements: rare; the caller may simply ask again.
        None => Err(Error::Conflict(format!(
            "the lease of container {container_id} changed while it was being acquired; retry"
        ))),
    }
}

/// Extends `lease` by `ttl` if it is still held as it was acquired.
pub(super) async fn renew(
    db: &Db,
    fencing: &Fencing,
    lease: &Lease,
    ttl: Duration,
) -> Result<bool> {
    let epoch = super::bigint("lease epoch", lease.epoch)?;
    let client = db.client().await?;
    let renewed = client
        .execute(
            "UPDATE container_leases SET expires_at = now() + $4::int8 * interval '1 millisecond' \
             WHERE container_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()",
            &[&lease.container_id, &lease.owner, &epoch, &ttl_ms(ttl)],
        )
        .await
        .at(db)?;
    if renewed == 0 {
        fencing.forget(&lease.container_id, epoch);
    }
    Ok(renewed == 1)
}

/// Gives `lease` up now.
pub(super) async fn release(db: &Db, fencing: &Fencing, lease: &Lease) -> Result<bool> {
    let epoch = super::bigint("lease epoch", lease.epoch)?;
    // Forgotten first: no write of this server may start under a lease being given up.
    fencing.forget(&lease.container_id, epoch);
    let client = db.client().await?;
    let released = client
        .execute(
            "UPDATE container_leases SET expires_at = now() \
             WHERE container_id = $1 AND owner = $2 AND epoch = $3 AND expires_at > now()",
            &[&lease.container_id, &lease.owner, &epoch],
        )
        .await
        .at(db)?;
    Ok(released == 1)
}

/// A container's lease row.
pub(super) async fn get(db: &Db, container_id: &str) -> Result<Option<LeaseRecord>> {
    let client = db.client().await?;
    let row = client
        .query_opt(
            "SELECT owner, epoch, expires_at > now() FROM container_leases \
             WHERE container_id = $1",
            &[&container_id],
        )
        .await
        .at(db)?;
    row.map(|row| {
        Ok(LeaseRecord {
            container_id: container_id.to_string(),
            owner: row.try_get(0).at(db)?,
            epoch: super::seq(row.try_get(1).at(db)?),
            live: row.try_get(2).at(db)?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests;

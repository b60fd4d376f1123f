//! Cluster membership and container leases, as the store keeps them.
//!
//! Several servers may share one database (`PostgresStore`). Each registers as a
//! [`ClusterMember`] and heartbeats; each container (tenant) is owned by at most one live server
//! through a lease: an owner, an expiry (database time) and a fencing **epoch** that grows by
//! one every time the lease changes hands or is taken again after it expired. A store that
//! joined a cluster ([`Store::join_cluster`](super::Store::join_cluster)) fences its writes:
//! a write that belongs to a container commits only if, in the same transaction, the lease row
//! still names this server with the epoch it acquired and has not expired; otherwise it fails
//! with `Conflict` and writes nothing. A server that was paused or partitioned past its lease
//! can therefore never write again under its old epoch.
//!
//! Backends used by one process (redb, memory) have no one to share with: the trait's default
//! methods grant every lease to the caller at once and fence nothing.

/// A server of a cluster, as it registers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterMember {
    /// Unique among the servers sharing the database (`srv_…` by default).
    pub id: String,
    /// Where clients reach its Channel (`http://host:port`), so a refusal can name the owner.
    pub url: String,
}

/// A registered server, as the store lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRecord {
    /// Its id.
    pub id: String,
    /// Its advertised URL.
    pub url: String,
    /// Milliseconds since its last heartbeat (database time).
    pub heartbeat_age_ms: i64,
    /// Whether it is handing its leases over before it exits.
    pub draining: bool,
}

/// A lease this server holds: the proof it presents with every write for the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The container (tenant) it covers.
    pub container_id: String,
    /// The server holding it.
    pub owner: String,
    /// Its fencing epoch: 1 for the first holder, one more at every change of hands.
    pub epoch: u64,
}

/// What asking for a lease gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseClaim {
    /// The caller holds the lease (new, taken over, or its own renewed).
    Held(Lease),
    /// Another live server holds it.
    Taken {
        /// The owner's id.
        owner: String,
        /// The owner's advertised URL, when it is registered.
        url: Option<String>,
        /// The owner's epoch.
        epoch: u64,
    },
}

/// A container's lease as stored (for operators and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The container.
    pub container_id: String,
    /// The last server to hold it.
    pub owner: String,
    /// Its epoch.
    pub epoch: u64,
    /// Whether it is still live (not expired nor released), by database time.
    pub live: bool,
}

/// The lease every single-process backend grants: held by the asker, epoch 1.
pub(crate) fn local_lease(container_id: &str, server_id: &str) -> Lease {
    Lease {
        container_id: container_id.to_string(),
        owner: server_id.to_string(),
        epoch: 1,
    }
}

//! Which sandboxes this process looks after when several servers share one store.
//!
//! On one server the scheduler tends every sandbox in its store. In a cluster the store (and
//! the Docker nodes) are shared, and each sandbox must be created, swept, reconciled, paused
//! and ended by exactly one server: the one that holds the lease of the container that owns
//! it. Sandboxes without an owner (an operator's, or a warm one in a template's pool) and
//! Docker containers with no record at all belong to whichever server holds the lease named
//! [`UNOWNED`]. The cluster's lease manager tells a [`Stewardship`] which leases it holds; the
//! scheduler asks it before touching a sandbox it did not create itself.
//!
//! A scheduler built with a stewardship also follows the shared store: nodes registered,
//! drained or removed through another server, heartbeats received by another server, and the
//! resources other servers' sandboxes hold on each node (see `Scheduler::sync_nodes`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// The lease key of sandboxes without an owner, and of labelled containers without a record.
/// A container id cannot contain `/`, so no container's lease can collide with it.
pub const UNOWNED: &str = "agentvm/unowned-sandboxes";

/// The lease keys this process holds, each until when it is sure to hold it; it tends the
/// sandboxes they own. A lease not confirmed in time (the process was paused, or the database
/// was unreachable) stops counting at its deadline, before any other server can take it, even
/// if the lease manager has not noticed yet.
#[derive(Debug, Default)]
pub struct Stewardship {
    held: Mutex<HashMap<String, Instant>>,
}

impl Stewardship {
    /// Tends nothing until leases are added.
    pub fn new() -> Self {
        Self::default()
    }

    /// This process holds `key`'s lease (a container id, or [`UNOWNED`]) at least until
    /// `until` (taken or renewed; give a deadline earlier than the lease's expiry).
    pub fn hold(&self, key: &str, until: Instant) {
        self.lock().insert(key.to_string(), until);
    }

    /// This process no longer holds `key`'s lease.
    pub fn release(&self, key: &str) {
        self.lock().remove(key);
    }

    /// Whether this process tends a sandbox owned by `owner` (`None`: no owner).
    pub fn tends(&self, owner: Option<&str>) -> bool {
        self.lock()
            .get(owner.unwrap_or(UNOWNED))
            .is_some_and(|until| Instant::now() < *until)
    }

    /// The lease key of a sandbox owned by `owner`.
    pub fn key_of(owner: Option<&str>) -> &str {
        owner.unwrap_or(UNOWNED)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tends_what_it_holds_and_unowned_only_with_that_lease() {
        let s = Stewardship::new();
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert!(!s.tends(Some("tenant-1")));
        assert!(!s.tends(None));
        s.hold("tenant-1", later);
        assert!(s.tends(Some("tenant-1")));
        assert!(!s.tends(Some("tenant-2")));
        assert!(!s.tends(None));
        s.hold(UNOWNED, later);
        assert!(s.tends(None));
        s.release("tenant-1");
        assert!(!s.tends(Some("tenant-1")));
        assert_eq!(Stewardship::key_of(None), UNOWNED);
        assert_eq!(Stewardship::key_of(Some("t")), "t");
    }

    #[test]
    fn a_lease_not_confirmed_in_time_stops_counting() {
        let s = Stewardship::new();
        s.hold("tenant-1", Instant::now());
        assert!(!s.tends(Some("tenant-1")));
        s.hold(
            "tenant-1",
            Instant::now() + std::time::Duration::from_secs(60),
        );
        assert!(s.tends(Some("tenant-1")));
    }
}

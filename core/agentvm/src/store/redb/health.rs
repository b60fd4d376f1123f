//! Write failures of the redb file: a full disk named as such, logged once per episode, and
//! recovery without a restart.
//!
//! redb refuses every transaction after a commit failed with an I/O error (`PreviousIo`) until
//! the database is closed and opened again. [`Health`] remembers that a write failed, so the
//! store reopens the file before its next transaction, and whether the disk was full, so the
//! caller gets [`Error::StorageFull`] naming the data dir instead of a bare redb error. The
//! first failure of an episode is logged at ERROR with its cause; the first successful commit
//! after it ends the episode (logged at INFO).

use crate::error::Error;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

/// `ENOSPC` (no space left on device) and `EDQUOT` (disk quota exceeded) on Linux.
const ENOSPC: i32 = 28;
const EDQUOT: i32 = 122;

/// What the store knows about its last writes.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// A write failed and none has succeeded since.
    failing: AtomicBool,
    /// The database must be closed and opened again before its next transaction.
    reopen: AtomicBool,
    /// The failure of this episode was a full disk (kept while `PreviousIo` hides the cause).
    full: AtomicBool,
}

impl Health {
    /// Whether writes are failing now (no write succeeded since the last failure).
    pub(super) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Whether the database must be reopened before it is used again.
    pub(super) fn needs_reopen(&self) -> bool {
        self.reopen.load(Ordering::Acquire)
    }

    /// The database was reopened.
    pub(super) fn reopened(&self) {
        self.reopen.store(false, Ordering::Release);
    }

    /// A commit succeeded: ends a failure episode.
    pub(super) fn wrote(&self, path: &Path) {
        if self.failing.swap(false, Ordering::AcqRel) {
            self.full.store(false, Ordering::Release);
            tracing::info!(path = %path.display(), "the store is writable again");
        }
    }

    /// The error a failed redb operation on the database at `path` is reported as. An I/O
    /// failure starts (or continues) an episode: the first is logged at ERROR, the database is
    /// marked for reopening, and a full disk becomes [`Error::StorageFull`].
    pub(super) fn failed(&self, path: &Path, e: impl Into<redb::Error>) -> Error {
        let e: redb::Error = e.into();
        let io = match &e {
            redb::Error::Io(io) => Some(is_full(io)),
            redb::Error::PreviousIo => Some(false),
            _ => None,
        };
        let Some(full_now) = io else {
            return super::db(e);
        };
        if full_now {
            self.full.store(true, Ordering::Release);
        }
        self.reopen.store(true, Ordering::Release);
        let full = self.full.load(Ordering::Acquire);
        let error = if full {
            full_error(path, e)
        } else {
            super::db(e)
        };
        if !self.failing.swap(true, Ordering::AcqRel) {
            tracing::error!(
                path = %path.display(),
                error = %error.chain(),
                "the store cannot write; writes fail until this is fixed, then resume without a restart"
            );
        }
        error
    }
}

/// Whether an I/O error means the disk (or the quota) is full.
pub(super) fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT))
}

/// [`Error::StorageFull`] naming the data dir of the database at `path`.
pub(super) fn full_error(
    path: &Path,
    source: impl std::error::Error + Send + Sync + 'static,
) -> Error {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(path);
    Error::StorageFull {
        message: format!(
            "no space left for the data dir {}: free space there; writes resume by themselves",
            dir.display()
        ),
        source: Some(Box::new(source)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn a_full_disk_is_storage_full_until_a_write_succeeds() {
        let h = Health::default();
        let path = Path::new("/data/agentvm.redb");
        let e = h.failed(
            path,
            redb::Error::Io(std::io::Error::from_raw_os_error(ENOSPC)),
        );
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        assert!(e.to_string().contains("/data"), "{e}");
        assert!(h.failing() && h.needs_reopen());
        // redb hides the cause afterwards: still the same episode, still full.
        let e = h.failed(path, redb::Error::PreviousIo);
        assert_eq!(e.kind(), ErrorKind::StorageFull);
        h.reopened();
        h.wrote(path);
        assert!(!h.failing() && !h.needs_reopen());
        // Another I/O failure is a plain storage error.
        let e = h.failed(path, redb::Error::Io(std::io::Error::other("bad sector")));
        assert_eq!(e.kind(), ErrorKind::Storage);
    }

    #[test]
    fn other_redb_errors_start_no_episode() {
        let h = Health::default();
        let e = h.failed(Path::new("x"), redb::Error::Corrupted("x".into()));
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert!(!h.failing() && !h.needs_reopen());
    }
}

//! The open database file, shared by the runtime's tables and the scheduler's, and reopened
//! after a failed write.
//!
//! redb refuses every transaction after a commit failed with an I/O error until the database
//! is closed and opened again. Everyone reaches the database through one [`Handle`], so a
//! reopen swaps it for all: the scheduler's tables drop their copy first (see
//! `redb/scheduler.rs`), then the old database is closed and the file opened again.

use super::file;
use super::health::{self, Health};
use crate::error::{Error, Result};
use agentvm_scheduler::RedbSchedulerStore;
use redb::Database;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

/// The database of a [`super::RedbStore`], reopened when a failed write requires it.
pub(super) struct Handle {
    /// `None` while a reopen after a failed write has not succeeded yet.
    db: RwLock<Option<Arc<Database>>>,
    /// Whether writes fail now, and whether the file must be reopened first.
    pub(super) health: Health,
    /// The file, for reopening and for messages.
    pub(super) path: PathBuf,
    /// The scheduler's tables on the current database; dropped before a reopen (they hold
    /// the database too), opened again on next use.
    pub(super) scheduler: Mutex<Option<Arc<RedbSchedulerStore>>>,
}

impl Handle {
    pub(super) fn new(database: Arc<Database>, path: PathBuf) -> Self {
        Handle {
            db: RwLock::new(Some(database)),
            health: Health::default(),
            path,
            scheduler: Mutex::new(None),
        }
    }

    /// The open database, reopened first when a failed write left redb refusing transactions.
    pub(super) fn database(&self) -> Result<Arc<Database>> {
        if !self.health.needs_reopen() {
            let slot = self.db.read().unwrap_or_else(|p| p.into_inner());
            if let Some(database) = slot.as_ref() {
                return Ok(database.clone());
            }
        }
        self.reopen()
    }

    /// Closes and opens the database file again (redb's way out of `PreviousIo`). Fails while
    /// a transaction in flight still holds the old database: the next call tries again.
    fn reopen(&self) -> Result<Arc<Database>> {
        let mut slot = self.db.write().unwrap_or_else(|p| p.into_inner());
        if !self.health.needs_reopen() {
            if let Some(database) = slot.as_ref() {
                return Ok(database.clone());
            }
        }
        // The scheduler's tables hold the database too.
        drop(
            self.scheduler
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take(),
        );
        if let Some(old) = slot.take() {
            match Arc::try_unwrap(old) {
                Ok(old) => drop(old),
                Err(shared) => {
                    *slot = Some(shared);
                    return Err(Error::Storage {
                        message: format!(
                            "{} must be reopened after a failed write but is still in use; retry",
                            self.path.display()
                        ),
                        source: None,
                    });
                }
            }
        }
        let database = Arc::new(file::open(&self.path).map_err(|e| self.open_failed(e))?);
        tracing::info!(path = %self.path.display(), "reopened the store after a failed write");
        self.health.reopened();
        *slot = Some(database.clone());
        Ok(database)
    }

    /// A failed reopen during a failure episode is reported like the failure (`StorageFull`
    /// when the disk is full).
    fn open_failed(&self, e: Error) -> Error {
        if self.health.failing() && e.kind() == crate::error::ErrorKind::Storage {
            return health::full_error(&self.path, e);
        }
        e
    }

    /// Starts a write transaction (reopening the file first if a write failed).
    pub(super) fn begin_write(&self) -> Result<redb::WriteTransaction> {
        self.database()?
            .begin_write()
            .map_err(|e| self.health.failed(&self.path, e))
    }

    /// Commits `txn`; a failure is classified (a full disk is `StorageFull`) and logged once.
    pub(super) fn commit(&self, txn: redb::WriteTransaction) -> Result<()> {
        txn.commit()
            .map_err(|e| self.health.failed(&self.path, e))?;
        self.health.wrote(&self.path);
        Ok(())
    }

    /// Reports a failed call of the scheduler's tables like a failed write of ours: an I/O
    /// failure behind it starts an episode and schedules the reopen.
    pub(super) fn scheduler_failed(&self, e: Error) -> Error {
        match redb_io(&e) {
            Some(io) => self.health.failed(&self.path, io),
            None => e,
        }
    }
}

/// The redb I/O failure behind a storage error of the scheduler's tables, as a `redb::Error`.
fn redb_io(e: &Error) -> Option<redb::Error> {
    let source = std::error::Error::source(e)?;
    let storage = if let Some(c) = source.downcast_ref::<redb::CommitError>() {
        match c {
            redb::CommitError::Storage(s) => s,
            _ => return None,
        }
    } else if let Some(t) = source.downcast_ref::<redb::TransactionError>() {
        match t {
            redb::TransactionError::Storage(s) => s,
            _ => return None,
        }
    } else {
        source.downcast_ref::<redb::StorageError>()?
    };
    match storage {
        redb::StorageError::Io(io) => Some(redb::Error::Io(std::io::Error::new(
            io.kind(),
            io.to_string(),
        ))),
        redb::StorageError::PreviousIo => Some(redb::Error::PreviousIo),
        _ => None,
    }
}

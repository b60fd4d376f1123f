//! The database file: created whole or not at all, then opened.
//!
//! redb cannot open a file whose creation was interrupted (its header is missing: "not a redb
//! database"), so a process killed while creating its data dir would leave one that never
//! opens again. A new file is therefore created and initialised under a temporary name and
//! linked into place only once complete; a crash leaves at most a stray temporary file.

use super::init;
use crate::error::{Error, Result};
use rand::Rng;
use redb::Database;
use std::path::Path;

/// redb's page cache for the runtime's database.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Opens the database at `path`, creating it (and its directory) when missing.
pub(super) fn open(path: &Path) -> Result<Database> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).map_err(|e| {
                Error::storage(format!("creating data directory {}", dir.display()), e)
            })?;
        }
    }
    if !path.exists() {
        create(path)?;
    }
    Database::builder()
        .set_cache_size(CACHE_BYTES)
        .create(path)
        .map_err(|e| opening(path, e))
}

/// Creates an initialised database at `path`, atomically. Another process creating the same
/// file at the same time is fine: the first complete file wins and both open it.
fn create(path: &Path) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(
        ".{name}.{}-{:08x}.tmp",
        std::process::id(),
        rand::rng().random::<u32>()
    ));
    let built = Database::builder()
        .create(&tmp)
        .map_err(|e| opening(&tmp, e))
        .and_then(|database| init(&database));
    if let Err(e) = built {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // A hard link never replaces a file another process completed first; where links are not
    // supported, a rename still puts only a complete file in place.
    let placed = match std::fs::hard_link(&tmp, path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(_) => std::fs::rename(&tmp, path),
    };
    let _ = std::fs::remove_file(&tmp);
    placed.map_err(|e| Error::storage(format!("creating {}", path.display()), e))?;
    sync_dir(path)
}

/// Makes the new directory entry durable, so the file a caller saw created stays.
fn sync_dir(path: &Path) -> Result<()> {
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| Error::storage(format!("syncing {}", dir.display()), e))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn opening(path: &Path, e: redb::DatabaseError) -> Error {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen => Error::Unavailable {
            message: format!(
                "the database {} is open in another agentvm process; use another data dir",
                path.display()
            ),
            source: Some(Box::new(e)),
        },
        other => Error::storage(format!("opening {}", path.display()), other),
    }
}

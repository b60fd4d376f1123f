//! Files in a sandbox through Docker's archive API: upload (a one-file tar, owned by the
//! sandbox's user), download (one regular file) and list (one directory level).
//!
//! Relative paths are relative to the sandbox's workdir. With a read-only root, only the
//! workdir (a volume) and nothing else can be written: Docker's archive API does not reach
//! tmpfs mounts.

use super::Scheduler;
use crate::error::{Error, ErrorKind, Result};
use crate::model::now_ms;
pub use agentvm_model::scheduler::file::*;
use futures::StreamExt;
use std::io::Read;

/// The script `delete_file` runs: `$1` the path, `$2` 1 for recursive. Exit 3: no such path;
/// 2: a directory without recursive; anything else: `rm` failed (its message on stderr).
const DELETE: &str = r#"if [ ! -e "$1" ] && [ ! -L "$1" ]; then exit 3; fi
if [ -d "$1" ] && [ ! -L "$1" ]; then
  [ "$2" = 1 ] || exit 2
  rm -rf -- "$1" 2>&1 || exit 4
  exit 0
fi
rm -f -- "$1" 2>&1 || exit 4"#;

/// `path` made absolute against `workdir`, refusing empty paths and NUL bytes.
pub(crate) fn absolute(workdir: &str, path: &str) -> Result<String> {
    if path.is_empty() || path.contains('\0') {
        return Err(Error::invalid(
            "path must be a non-empty path without NUL bytes",
        ));
    }
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), path)
    };
    let mut parts: Vec<&str> = Vec::new();
    for p in joined.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            other => parts.push(other),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Splits an absolute path into its parent directory and file name.
fn split(path: &str) -> Result<(String, String)> {
    match path.rsplit_once('/') {
        Some((_, "")) | None => Err(Error::invalid(format!("{path:?} names no file"))),
        Some(("", name)) => Ok(("/".into(), name.into())),
        Some((dir, name)) => Ok((dir.into(), name.into())),
    }
}

fn kind_of(t: tar::EntryType) -> FileKind {
    if t.is_file() {
        FileKind::File
    } else if t.is_dir() {
        FileKind::Dir
    } else if t.is_symlink() {
        FileKind::Symlink
    } else {
        FileKind::Other
    }
}

impl Scheduler {
    /// Writes `data` to `path` (its directory must exist), owned by the sandbox's user.
    pub async fn write_file(&self, sandbox_id: &str, path: &str, data: Vec<u8>) -> Result<()> {
        if data.len() > self.inner.config.max_file_bytes {
            return Err(Error::invalid(format!(
                "the file is {} bytes; the limit is {}",
                data.len(),
                self.inner.config.max_file_bytes
            )));
        }
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let path = absolute(&sandbox.workdir, path)?;
        let (dir, name) = split(&path)?;
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(now_ms().max(0) as u64 / 1000);
        let (uid, gid) = sandbox.uid_gid.unwrap_or((0, 0));
        header.set_uid(u64::from(uid));
        header.set_gid(u64::from(gid));
        header.set_entry_type(tar::EntryType::Regular);
        let mut builder = tar::Builder::new(Vec::with_capacity(data.len() + 2048));
        builder
            .append_data(&mut header, &name, data.as_slice())
            .map_err(|e| Error::invalid(format!("file name {name:?}: {e}")))?;
        let tarball = builder
            .into_inner()
            .map_err(|e| Error::Internal(format!("building a tar: {e}")))?;
        let engine = self.engine(&sandbox.node_id).await?;
        let target = sandbox
            .docker_container_id
            .clone()
            .unwrap_or(sandbox.docker_container_name.clone());
        engine
            .upload(&target, &dir, tarball)
            .await
            .map_err(|e| self.file_error(&sandbox.node_id, sandbox_id, &dir, e))
    }

    /// Reads the regular file at `path`.
    pub async fn read_file(&self, sandbox_id: &str, path: &str) -> Result<Vec<u8>> {
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let path = absolute(&sandbox.workdir, path)?;
        let tarball = self.download(&sandbox, &path).await?;
        let mut archive = tar::Archive::new(std::io::Cursor::new(tarball));
        let entries = archive
            .entries()
            .map_err(|e| Error::Protocol(format!("Docker sent a bad archive: {e}")))?;
        if let Some(entry) = entries.into_iter().next() {
            let mut entry =
                entry.map_err(|e| Error::Protocol(format!("Docker sent a bad archive: {e}")))?;
            let kind = kind_of(entry.header().entry_type());
            if kind != FileKind::File {
                return Err(Error::invalid(format!(
                    "{path} is a {}, not a regular file{}",
                    match kind {
                        FileKind::Dir => "directory",
                        FileKind::Symlink => "symbolic link",
                        _ => "special file",
                    },
                    if kind == FileKind::Dir {
                        "; list it instead"
                    } else {
                        ""
                    }
                )));
            }
            let mut out = Vec::with_capacity(entry.size() as usize);
            entry
                .read_to_end(&mut out)
                .map_err(|e| Error::Protocol(format!("Docker sent a bad archive: {e}")))?;
            return Ok(out);
        }
        Err(Error::not_found(
            "File",
            format!("{path} in sandbox {sandbox_id}"),
        ))
    }

    /// Lists one level of the directory at `path`, by name.
    pub async fn list_files(&self, sandbox_id: &str, path: &str) -> Result<Vec<FileEntry>> {
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let path = absolute(&sandbox.workdir, path)?;
        let tarball = self.download(&sandbox, &path).await?;
        let mut archive = tar::Archive::new(std::io::Cursor::new(tarball));
        let bad = |e: std::io::Error| Error::Protocol(format!("Docker sent a bad archive: {e}"));
        let mut out = Vec::new();
        let mut root_kind = None;
        for entry in archive.entries().map_err(bad)? {
            let entry = entry.map_err(bad)?;
            let h = entry.header();
            let rel = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let rel = rel.trim_end_matches('/');
            let mut parts = rel.splitn(2, '/');
            let _top = parts.next();
            let Some(sub) = parts.next() else {
                root_kind = Some(kind_of(h.entry_type()));
                continue;
            };
            if sub.contains('/') {
                continue;
            }
            out.push(FileEntry {
                name: sub.to_string(),
                path: format!("{}/{sub}", path.trim_end_matches('/')),
                kind: kind_of(h.entry_type()),
                size: if h.entry_type().is_dir() {
                    0
                } else {
                    h.size().unwrap_or(0)
                },
                mode: h.mode().unwrap_or(0),
                modified: h.mtime().unwrap_or(0),
                link_target: h
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|p| p.to_string_lossy().into_owned()),
            });
        }
        if root_kind.is_some_and(|k| k != FileKind::Dir) {
            return Err(Error::invalid(format!("{path} is not a directory")));
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Deletes the file (or symbolic link) at `path`; a directory only with `recursive`, and
    /// then with everything in it. Runs `rm` inside the sandbox as its user, so it can delete
    /// exactly what its commands could.
    pub async fn delete_file(&self, sandbox_id: &str, path: &str, recursive: bool) -> Result<()> {
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let path = absolute(&sandbox.workdir, path)?;
        if path == "/" {
            return Err(Error::invalid("refusing to delete /"));
        }
        let engine = self.engine(&sandbox.node_id).await?;
        let target = sandbox
            .docker_container_id
            .clone()
            .unwrap_or(sandbox.docker_container_name.clone());
        let flag = if recursive { "1" } else { "0" };
        let argv = vec!["/bin/sh", "-c", DELETE, "agentvm-rm", path.as_str(), flag];
        let (code, out) = self
            .run_quiet(&engine, &target, &sandbox.user, argv)
            .await?;
        match code {
            0 => Ok(()),
            3 => Err(Error::not_found(
                "Path",
                format!("{path} in sandbox {sandbox_id}"),
            )),
            2 => Err(Error::invalid(format!(
                "{path} is a directory; give recursive: true to delete it and everything in it"
            ))),
            _ => Err(Error::Conflict(format!(
                "{path} in sandbox {sandbox_id} could not be deleted: {}",
                out.trim()
            ))),
        }
    }

    /// The archive of `path`, refused beyond the file size limit (plus tar overhead).
    async fn download(&self, sandbox: &super::Sandbox, path: &str) -> Result<Vec<u8>> {
        let engine = self.engine(&sandbox.node_id).await?;
        let target = sandbox
            .docker_container_id
            .clone()
            .unwrap_or(sandbox.docker_container_name.clone());
        let mut stream = engine.download(&target, path);
        let limit = self.inner.config.max_file_bytes + 1024 * 1024;
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk =
                chunk.map_err(|e| self.file_error(&sandbox.node_id, &sandbox.id, path, e))?;
            out.extend_from_slice(&chunk);
            if out.len() > limit {
                return Err(Error::invalid(format!(
                    "{path} is larger than the {} byte file limit",
                    self.inner.config.max_file_bytes
                )));
            }
        }
        Ok(out)
    }

    fn file_error(&self, node_id: &str, sandbox_id: &str, path: &str, mapped: Error) -> Error {
        self.node_failed(node_id, &mapped);
        match mapped.kind() {
            ErrorKind::NotFound => Error::not_found("Path", format!("{path} in sandbox {sandbox_id}")),
            ErrorKind::Conflict => Error::Conflict(format!(
                "{path} in sandbox {sandbox_id} cannot be written ({mapped}); with a read-only root only the workdir is writable"
            )),
            _ => mapped,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_against_the_workdir() {
        assert_eq!(absolute("/workspace", "a.txt").unwrap(), "/workspace/a.txt");
        assert_eq!(absolute("/workspace/", "./d/../b").unwrap(), "/workspace/b");
        assert_eq!(absolute("/workspace", "/etc/hosts").unwrap(), "/etc/hosts");
        assert_eq!(absolute("/w", "../../..").unwrap(), "/");
        assert!(absolute("/w", "").is_err());
        assert!(absolute("/w", "a\0b").is_err());
        assert_eq!(split("/a/b.txt").unwrap(), ("/a".into(), "b.txt".into()));
        assert_eq!(split("/b.txt").unwrap(), ("/".into(), "b.txt".into()));
        assert!(split("/").is_err());
    }
}

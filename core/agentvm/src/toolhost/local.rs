//! The local sandbox: tools run on this machine, in
//! `<data-dir>/containers/<containerId>/workdirs/<imageId>`.
//!
//! The file tools are confined to that directory: a path with `..` is refused, an absolute path
//! is accepted only inside it, and every existing component is checked with `lstat` so that a
//! symlink (one the agent made with `bash`, say) cannot lead outside — it is resolved and must
//! land inside the directory; a dangling one is refused. New components are created only under
//! an already-checked directory.
//!
//! `bash` runs with that directory as its working directory, in its own process group, which
//! is killed (SIGKILL) when the command ends, times out or is cancelled. It runs as the agentvm
//! process's user, or, under a [`LocalToolsPolicy`] naming a user and a process running as
//! root, as that user (supplementary groups dropped); the file tools then run on a thread of
//! their own with that user's credentials, so they can do what its `bash` can and no more, and
//! the image's directory is given to it. The policy also names the containers allowed local
//! tools at all. It is not an isolation boundary: a command can still read what its user can
//! read, and a process that leaves the group (`setsid`) is not tracked. Use a container backend
//! for untrusted agents.

use super::{
    StdioCommand, StdioProcess, ToolCommand, ToolCommandOutput, ToolFileContent, ToolFileEntry,
    ToolHost, Workspace,
};
use crate::error::{Error, Result};
use async_trait::async_trait;
use std::io::ErrorKind as IoKind;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// How long output is still read after a command's process group was killed (a process that
/// left the group could hold the pipes open).
const DRAIN_GRACE: Duration = Duration::from_secs(1);

mod policy;
pub use policy::{running_as_root, LocalToolsPolicy, ToolUser};

/// Tools on this machine, in the runtime's data dir.
#[derive(Debug, Clone)]
pub struct LocalToolHost {
    data_dir: PathBuf,
    /// Which containers may use the tools, and as whom they run.
    policy: LocalToolsPolicy,
}

impl LocalToolHost {
    /// A sandbox whose workspaces live under `data_dir/containers/`, open to every container,
    /// running as this process's user.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        LocalToolHost {
            data_dir: data_dir.into(),
            policy: LocalToolsPolicy::default(),
        }
    }

    /// The same, under `policy`.
    pub fn with_policy(mut self, policy: LocalToolsPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// The user the tools switch to: the policy's, when this process can switch (is root).
    fn switch_to(&self) -> Option<ToolUser> {
        self.policy.run_as.filter(|_| running_as_root())
    }

    /// Runs a file operation: on a blocking thread, or, when the tools switch users, on a
    /// thread of its own that takes the user's credentials first (Linux credentials are per
    /// thread), so the kernel checks every path and permission as that user.
    async fn file_op<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Some(user) = self.switch_to() else {
            return blocking(f).await;
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("agentvm-local-file".into())
            .spawn(move || {
                let _ = tx.send(become_user(user).and_then(|()| f()));
            })
            .map_err(|e| Error::Internal(format!("starting a file thread: {e}")))?;
        rx.await
            .map_err(|_| Error::Internal("a file operation panicked".into()))?
    }

    /// The working directory of `ws` (not created).
    pub fn workdir(&self, ws: &Workspace) -> Result<PathBuf> {
        for (what, id) in [("containerId", &ws.container_id), ("imageId", &ws.image_id)] {
            let plain = Path::new(id.as_str()).components().count() == 1
                && matches!(
                    Path::new(id.as_str()).components().next(),
                    Some(Component::Normal(_))
                );
            if !plain {
                return Err(Error::invalid(format!(
                    "{what} '{id}' cannot name a directory"
                )));
            }
        }
        Ok(self
            .data_dir
            .join("containers")
            .join(&ws.container_id)
            .join("workdirs")
            .join(&ws.image_id))
    }

    /// The working directory, created if missing (and given to the tools' user), canonical.
    /// Refused for a container the policy does not allow.
    async fn root(&self, ws: &Workspace) -> Result<PathBuf> {
        self.policy.check(&ws.container_id)?;
        let dir = self.workdir(ws)?;
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| Error::storage(format!("creating the workdir {}", dir.display()), e))?;
        if let Some(u) = self.switch_to() {
            std::os::unix::fs::lchown(&dir, Some(u.uid), Some(u.gid)).map_err(|e| {
                Error::storage(
                    format!("giving the workdir {} to uid {}", dir.display(), u.uid),
                    e,
                )
            })?;
        }
        tokio::fs::canonicalize(&dir)
            .await
            .map_err(|e| Error::storage(format!("resolving the workdir {}", dir.display()), e))
    }
}

/// Resolves `path` inside the canonical `root`, refusing any way out (see the module docs).
/// The result may not exist yet; everything of it that exists is inside `root`.
pub fn resolve(root: &Path, path: &str) -> Result<PathBuf> {
    let requested = Path::new(path);
    if path.contains('\0') {
        return Err(Error::invalid("a path cannot contain a NUL byte"));
    }
    if requested.components().any(|c| c == Component::ParentDir) {
        return Err(Error::invalid(format!(
            "'{path}': '..' is not allowed; paths stay inside the workspace"
        )));
    }
    let relative = if requested.is_absolute() {
        requested.strip_prefix(root).map_err(|_| {
            Error::invalid(format!(
                "'{path}' is outside the workspace ({})",
                root.display()
            ))
        })?
    } else {
        requested
    };
    let mut current = root.to_path_buf();
    let mut parts = relative
        .components()
        .filter(|c| matches!(c, Component::Normal(_)));
    for part in parts.by_ref() {
        let next = current.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = std::fs::canonicalize(&next).map_err(|_| {
                    Error::invalid(format!(
                        "'{path}': the symlink {} points nowhere",
                        next.display()
                    ))
                })?;
                if !target.starts_with(root) {
                    return Err(Error::invalid(format!(
                        "'{path}': the symlink {} points outside the workspace",
                        next.display()
                    )));
                }
                current = target;
            }
            Ok(_) => current = next,
            Err(e) if e.kind() == IoKind::NotFound => {
                current = next;
                break;
            }
            Err(e) => return Err(io_error(path, e)),
        }
    }
    // What does not exist yet is created under `current`, which is inside the root.
    current.extend(parts);
    Ok(current)
}

fn io_error(path: &str, e: std::io::Error) -> Error {
    match e.kind() {
        IoKind::NotFound => Error::not_found("File", path.to_string()),
        IoKind::PermissionDenied => Error::Unauthorized(format!("'{path}': permission denied")),
        _ => Error::invalid(format!("'{path}': {e}")),
    }
}

fn relative(root: &Path, p: &Path) -> String {
    let rel = p.strip_prefix(root).unwrap_or(p);
    let s = rel.to_string_lossy().replace('\\', "/");
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

/// Takes `user`'s credentials on this thread only: no supplementary groups, then its gid,
/// then its uid (real, effective and saved, so there is no way back).
fn become_user(user: ToolUser) -> Result<()> {
    use rustix::process::{Gid, Uid};
    use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};
    let (uid, gid) = (Uid::from_raw(user.uid), Gid::from_raw(user.gid));
    set_thread_groups(&[])
        .and_then(|()| set_thread_res_gid(gid, gid, gid))
        .and_then(|()| set_thread_res_uid(uid, uid, uid))
        .map_err(|e| Error::Internal(format!("switching to uid {}: {e}", user.uid)))
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a file operation panicked: {e}")))?
}

/// Kills a process group when dropped: a finished command's leftovers, a timed-out one, or one
/// whose caller went away (an interrupt).
struct GroupKiller(Option<rustix::process::Pid>);

impl Drop for GroupKiller {
    fn drop(&mut self) {
        if let Some(pid) = self.0.take() {
            // ESRCH (nothing left in the group) is the normal case.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Reads a pipe to its end into `buf`, keeping at most `cap` bytes.
async fn read_capped(
    pipe: Option<impl AsyncRead + Unpin>,
    cap: usize,
    buf: &mut Vec<u8>,
    truncated: &mut bool,
) {
    let Some(mut pipe) = pipe else { return };
    let mut chunk = [0u8; 8192];
    loop {
        match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = cap.saturating_sub(buf.len());
                if n > room {
                    *truncated = true;
                }
                buf.extend_from_slice(&chunk[..n.min(room)]);
            }
        }
    }
}

#[async_trait]
impl ToolHost for LocalToolHost {
    fn name(&self) -> &str {
        "local"
    }

    async fn exec(&self, ws: &Workspace, request: ToolCommand) -> Result<ToolCommandOutput> {
        let root = self.root(ws).await?;
        let mut command = tokio::process::Command::new("bash");
        command
            .arg("-c")
            .arg(&request.command)
            .current_dir(&root)
            .env("PWD", &root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(u) = self.switch_to() {
            // The child drops root's supplementary groups, then takes the gid and the uid
            // before it changes into the workdir (which must be reachable by that user).
            command.uid(u.uid).gid(u.gid);
        }
        let mut child = command.spawn().map_err(|e| Error::Unavailable {
            message: match self.switch_to() {
                Some(u) => format!(
                    "could not start bash as uid {} in {} (every directory above it must be \
                     searchable by that user)",
                    u.uid,
                    root.display()
                ),
                None => "could not start bash".into(),
            },
            source: Some(Box::new(e)),
        })?;
        let mut killer = GroupKiller(
            child
                .id()
                .and_then(|id| rustix::process::Pid::from_raw(id as i32)),
        );
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let cap = request.max_output_bytes;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut out_cut, mut err_cut) = (false, false);
        let mut status = None;
        let mut timed_out = false;
        let run = async {
            tokio::join!(
                async {
                    match tokio::time::timeout(request.timeout, child.wait()).await {
                        Ok(Ok(s)) => status = Some(s),
                        Ok(Err(e)) => tracing::warn!(error = %e, "waiting for a command"),
                        Err(_) => timed_out = true,
                    }
                    // Whatever the command left running goes with it; this closes the pipes.
                    drop(std::mem::replace(&mut killer, GroupKiller(None)));
                    // A killed bash is reaped here; `kill_on_drop` covers a cancelled wait.
                    let _ = child.wait().await;
                },
                read_capped(stdout, cap, &mut out, &mut out_cut),
                read_capped(stderr, cap, &mut err, &mut err_cut),
            )
        };
        let _ = tokio::time::timeout(request.timeout + DRAIN_GRACE, run).await;
        Ok(ToolCommandOutput {
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            exit_code: status.and_then(|s| s.code()),
            timed_out,
            truncated: out_cut || err_cut,
        })
    }

    async fn read_file(
        &self,
        ws: &Workspace,
        path: &str,
        max_bytes: usize,
    ) -> Result<ToolFileContent> {
        let root = self.root(ws).await?;
        let path = path.to_string();
        self.file_op(move || {
            use std::io::Read;
            let target = resolve(&root, &path)?;
            let file = std::fs::File::open(&target).map_err(|e| io_error(&path, e))?;
            let meta = file.metadata().map_err(|e| io_error(&path, e))?;
            if meta.is_dir() {
                return Err(Error::invalid(format!(
                    "'{path}' is a directory; use list_files"
                )));
            }
            let mut data = Vec::new();
            file.take(max_bytes as u64)
                .read_to_end(&mut data)
                .map_err(|e| io_error(&path, e))?;
            Ok(ToolFileContent {
                data,
                size: meta.len(),
            })
        })
        .await
    }

    async fn write_file(&self, ws: &Workspace, path: &str, data: &[u8]) -> Result<()> {
        let root = self.root(ws).await?;
        let (path, data) = (path.to_string(), data.to_vec());
        self.file_op(move || {
            let target = resolve(&root, &path)?;
            if target == root {
                return Err(Error::invalid("write_file needs a file path"));
            }
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(|e| io_error(&path, e))?;
            }
            std::fs::write(&target, &data).map_err(|e| io_error(&path, e))
        })
        .await
    }

    async fn list_files(
        &self,
        ws: &Workspace,
        path: &str,
        recursive: bool,
        max_entries: usize,
    ) -> Result<Vec<ToolFileEntry>> {
        let root = self.root(ws).await?;
        let path = if path.is_empty() {
            ".".to_string()
        } else {
            path.to_string()
        };
        self.file_op(move || {
            let start = resolve(&root, &path)?;
            let meta = std::fs::metadata(&start).map_err(|e| io_error(&path, e))?;
            if !meta.is_dir() {
                return Ok(vec![ToolFileEntry {
                    path: relative(&root, &start),
                    is_dir: false,
                    size: meta.len(),
                }]);
            }
            let mut out = Vec::new();
            let mut dirs = vec![start];
            while let Some(dir) = dirs.pop() {
                let mut entries: Vec<_> = std::fs::read_dir(&dir)
                    .map_err(|e| io_error(&path, e))?
                    .filter_map(|e| e.ok())
                    .collect();
                entries.sort_by_key(|e| e.file_name());
                for e in entries {
                    if out.len() >= max_entries {
                        return Ok(out);
                    }
                    // lstat: a symlink is listed, never followed.
                    let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                        continue;
                    };
                    let is_dir = meta.is_dir();
                    if is_dir && recursive {
                        dirs.push(e.path());
                    }
                    out.push(ToolFileEntry {
                        path: relative(&root, &e.path()),
                        is_dir,
                        size: if is_dir { 0 } else { meta.len() },
                    });
                }
            }
            out.sort_by(|a, b| a.path.cmp(&b.path));
            Ok(out)
        })
        .await
    }

    async fn spawn_stdio(&self, ws: &Workspace, command: &StdioCommand) -> Result<StdioProcess> {
        let root = self.root(ws).await?;
        super::stdio::spawn_local(&root, command, self.switch_to())
    }
}

#[cfg(test)]
mod tests;

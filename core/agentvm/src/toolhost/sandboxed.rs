//! Tools in Docker: a [`ToolHost`] backed by the scheduler.
//!
//! A container that names a sandbox template (`container_create_request {sandboxTemplate}`)
//! has its agents' tools run in one sandbox of that template, created on the first tool call,
//! shared by every agent of the container, and reaped by the scheduler when idle. Each image
//! works in its own directory inside it (`<sandbox workdir>/<imageId>`), as locally. Containers
//! without a template fall back to the runtime's other sandbox (local tools), if any.
//!
//! Every tool runs as the sandbox's user: `bash` as an exec, the file tools as execs too
//! (see [`confined`](crate::scheduler::confined)), so they see the permissions the agent's own
//! shell sees, and a path whose symbolic links lead out of the image's directory is refused.
//! A `bash` call leaves no process behind: what it started is killed when it returns.

use super::{
    StdioCommand, StdioProcess, ToolCommand, ToolCommandOutput, ToolFileContent, ToolFileEntry,
    ToolHost, Workspace,
};
use crate::error::{Error, Result};
use crate::scheduler::{self, ExecStatus, Scheduler};
use crate::store::Store;
use async_trait::async_trait;
use std::sync::Arc;

/// Routes tool operations to the container's Docker sandbox, or to a fallback.
pub struct SandboxToolHost {
    scheduler: Scheduler,
    /// Where the containers (and so their sandbox templates) are recorded.
    store: Arc<dyn Store>,
    /// For containers with no template (the local sandbox when local tools are on).
    fallback: Option<Arc<dyn ToolHost>>,
}

impl std::fmt::Debug for SandboxToolHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxToolHost").finish_non_exhaustive()
    }
}

/// A path inside the image's directory, relative to it: no leading `/`, no `..`,
/// `/`-separated, empty for the directory itself. Symbolic links are resolved (and refused
/// when they leave the directory) inside the sandbox.
fn inside(path: &str) -> Result<String> {
    if path.starts_with('/') {
        return Err(Error::invalid(format!(
            "{path:?} is absolute: paths are relative to the working directory"
        )));
    }
    let mut parts = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(format!(
                    "{path:?} leaves the working directory"
                )))
            }
            p => parts.push(p),
        }
    }
    Ok(parts.join("/"))
}

/// Single-quotes `s` for `sh`.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

enum Target<'a> {
    Docker(scheduler::SandboxRef),
    Fallback(&'a Arc<dyn ToolHost>),
}

impl SandboxToolHost {
    /// Routes containers with a template to `scheduler`, others to `fallback`.
    pub fn new(
        scheduler: Scheduler,
        store: Arc<dyn Store>,
        fallback: Option<Arc<dyn ToolHost>>,
    ) -> Self {
        SandboxToolHost {
            scheduler,
            store,
            fallback,
        }
    }

    async fn target(&self, ws: &Workspace) -> Result<Target<'_>> {
        let template = self
            .store
            .get_container(&ws.container_id)?
            .and_then(|c| c.sandbox_template);
        match (template, &self.fallback) {
            (Some(t), _) => Ok(Target::Docker(self.scheduler.sandbox_for_owner(&ws.container_id, &t).await?)),
            (None, Some(f)) => Ok(Target::Fallback(f)),
            (None, None) => Err(Error::unavailable(format!(
                "container {} has no sandbox: create it with a sandboxTemplate, or enable local tools",
                ws.container_id
            ))),
        }
    }
}

#[async_trait]
impl ToolHost for SandboxToolHost {
    fn name(&self) -> &str {
        "docker"
    }

    async fn exec(&self, ws: &Workspace, request: ToolCommand) -> Result<ToolCommandOutput> {
        let sandbox = match self.target(ws).await? {
            Target::Fallback(f) => return f.exec(ws, request).await,
            Target::Docker(s) => s,
        };
        let dir = quote(&ws.image_id);
        let script = format!("mkdir -p {dir} && cd {dir} && {}", request.command);
        let mut req = scheduler::ExecRequest::shell(script).timeout(request.timeout);
        req.max_output_bytes = Some(request.max_output_bytes);
        // Whatever the command left running (`setsid … &` included) is killed with it.
        let run = sandbox.exec_reaped(req).await?;
        Ok(ToolCommandOutput {
            stdout: run.stdout,
            stderr: run.stderr,
            exit_code: run.exit_code.map(|c| c as i32),
            timed_out: run.status == ExecStatus::Timeout,
            truncated: run.truncated,
        })
    }

    async fn read_file(
        &self,
        ws: &Workspace,
        path: &str,
        max_bytes: usize,
    ) -> Result<ToolFileContent> {
        let sandbox = match self.target(ws).await? {
            Target::Fallback(f) => return f.read_file(ws, path, max_bytes).await,
            Target::Docker(s) => s,
        };
        let rel = inside(path)?;
        let mut data = sandbox.read_file_confined(&ws.image_id, &rel).await?;
        let size = data.len() as u64;
        data.truncate(max_bytes);
        Ok(ToolFileContent { data, size })
    }

    async fn write_file(&self, ws: &Workspace, path: &str, data: &[u8]) -> Result<()> {
        let sandbox = match self.target(ws).await? {
            Target::Fallback(f) => return f.write_file(ws, path, data).await,
            Target::Docker(s) => s,
        };
        let rel = inside(path)?;
        sandbox
            .write_file_confined(&ws.image_id, &rel, data.to_vec())
            .await
    }

    async fn list_files(
        &self,
        ws: &Workspace,
        path: &str,
        recursive: bool,
        max_entries: usize,
    ) -> Result<Vec<ToolFileEntry>> {
        let sandbox = match self.target(ws).await? {
            Target::Fallback(f) => return f.list_files(ws, path, recursive, max_entries).await,
            Target::Docker(s) => s,
        };
        let rel = inside(path)?;
        let entries = sandbox
            .list_files_confined(&ws.image_id, &rel, recursive, max_entries)
            .await?;
        Ok(entries
            .into_iter()
            .map(|e| ToolFileEntry {
                path: if rel.is_empty() {
                    e.path
                } else {
                    format!("{rel}/{}", e.path)
                },
                is_dir: e.is_dir,
                size: e.size,
            })
            .collect())
    }

    async fn spawn_stdio(&self, ws: &Workspace, command: &StdioCommand) -> Result<StdioProcess> {
        let sandbox = match self.target(ws).await? {
            Target::Fallback(f) => return f.spawn_stdio(ws, command).await,
            Target::Docker(s) => s,
        };
        let mut argv = vec![command.command.clone()];
        argv.extend(command.args.iter().cloned());
        let exec = sandbox.exec_stdio(&ws.image_id, argv, &command.env).await?;
        Ok(super::stdio::from_exec(exec, sandbox.id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_inside_the_image_directory() {
        assert_eq!(inside("a/./b.txt").unwrap(), "a/b.txt");
        assert_eq!(inside(".").unwrap(), "");
        assert!(inside("../x").is_err());
        assert!(inside("a/../../x").is_err());
        assert!(inside("/etc/passwd").is_err());
        assert_eq!(quote("it's"), "'it'\\''s'");
    }
}

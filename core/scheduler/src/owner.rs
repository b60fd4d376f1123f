//! Sandboxes for agents: one per (owner, template), created on first use, shared by the
//! owner's agents, reaped by the idle sweep; and [`SandboxRef`], the small surface a tool
//! runner needs (exec with a timeout, read, write, list).

use super::confined::ConfinedEntry;
use super::exec::{ExecRequest, Execution};
use super::files::FileEntry;
use super::sandbox::{SandboxStatus, TerminationReason};
use super::template::SandboxRequest;
use super::{lock, Scheduler};
use crate::error::Result;
use std::sync::Arc;
use std::time::Duration;

/// One sandbox, by id, with the operations agents' tools use.
#[derive(Debug, Clone)]
pub struct SandboxRef {
    /// The scheduler it lives in.
    scheduler: Scheduler,
    /// The sandbox id.
    id: String,
}

impl SandboxRef {
    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs `script` with `/bin/sh -c`, killed with its process group after `timeout`.
    pub async fn exec(&self, script: &str, timeout: Duration) -> Result<Execution> {
        self.scheduler
            .exec_collect(&self.id, ExecRequest::shell(script).timeout(timeout))
            .await
    }

    /// Runs `script` as [`exec`](Self::exec) does, then kills whatever it left running.
    pub async fn exec_reaped(&self, request: ExecRequest) -> Result<Execution> {
        let run = self.scheduler.exec_collect(&self.id, request).await?;
        if let Err(e) = self.scheduler.reap_exec(&self.id, &run.id).await {
            tracing::warn!(sandbox = %self.id, exec = %run.id, error = %e.chain(), "reaping an exec's leftovers");
        }
        Ok(run)
    }

    /// Starts a process with stdin and stdout attached (see [`stdio`](super::stdio)) in
    /// `workdir`, relative to the sandbox's workdir.
    pub async fn exec_stdio(
        &self,
        workdir: &str,
        argv: Vec<String>,
        env: &std::collections::BTreeMap<String, String>,
    ) -> Result<super::StdioExec> {
        self.scheduler
            .exec_stdio(&self.id, workdir, argv, env)
            .await
    }

    /// Reads `rel` inside `root` as the sandbox's user (see [`confined`](super::confined)).
    pub async fn read_file_confined(&self, root: &str, rel: &str) -> Result<Vec<u8>> {
        self.scheduler.read_file_confined(&self.id, root, rel).await
    }

    /// Writes `rel` inside `root` as the sandbox's user, making parent directories.
    pub async fn write_file_confined(&self, root: &str, rel: &str, data: Vec<u8>) -> Result<()> {
        self.scheduler
            .write_file_confined(&self.id, root, rel, data)
            .await
    }

    /// Lists `rel` inside `root` as the sandbox's user.
    pub async fn list_files_confined(
        &self,
        root: &str,
        rel: &str,
        recursive: bool,
        max_entries: usize,
    ) -> Result<Vec<ConfinedEntry>> {
        self.scheduler
            .list_files_confined(&self.id, root, rel, recursive, max_entries)
            .await
    }

    /// Reads a file (relative paths are relative to the workdir).
    pub async fn read_file(&self, path: &str) -> Result<Vec<u8>> {
        self.scheduler.read_file(&self.id, path).await
    }

    /// Writes a file (its directory must exist).
    pub async fn write_file(&self, path: &str, data: Vec<u8>) -> Result<()> {
        self.scheduler.write_file(&self.id, path, data).await
    }

    /// Lists a directory.
    pub async fn list_files(&self, path: &str) -> Result<Vec<FileEntry>> {
        self.scheduler.list_files(&self.id, path).await
    }
}

impl Scheduler {
    /// A handle on the sandbox `id` (not checked until used).
    pub fn sandbox(&self, id: impl Into<String>) -> SandboxRef {
        SandboxRef {
            scheduler: self.clone(),
            id: id.into(),
        }
    }

    /// The sandbox that `owner`'s agents share for `template_id`: the running one, or a new one
    /// (from the warm pool when it has one). Concurrent first calls create one sandbox, not
    /// several. It ends after the template's idle timeout, or the scheduler's
    /// `owner_idle_timeout` when the template has none.
    pub async fn sandbox_for_owner(&self, owner: &str, template_id: &str) -> Result<SandboxRef> {
        let slot = lock(&self.inner.owners)
            .entry((owner.to_string(), template_id.to_string()))
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(None)))
            .clone();
        let mut current = slot.lock().await;
        if let Some(id) = current.as_ref() {
            let running = lock(&self.inner.live)
                .get(id)
                .map(|l| {
                    matches!(
                        l.record.status,
                        SandboxStatus::Running | SandboxStatus::Paused
                    )
                })
                .unwrap_or(false);
            if running {
                return Ok(self.sandbox(id.clone()));
            }
        }
        let template = self.template(template_id).await?;
        let idle = template
            .spec
            .idle_timeout_s
            .unwrap_or(self.inner.config.owner_idle_timeout.as_secs().max(1));
        let request = SandboxRequest {
            owner: Some(owner.to_string()),
            idle_timeout_s: Some(idle),
            ..SandboxRequest::new(template_id)
        };
        let sandbox = self.create_sandbox(request).await?;
        *current = Some(sandbox.id.clone());
        Ok(self.sandbox(sandbox.id))
    }

    /// Ends every live sandbox of `owner` (its agentvm container was deleted); how many.
    pub async fn release_owner(&self, owner: &str) -> Result<usize> {
        let ids: Vec<String> = lock(&self.inner.live)
            .values()
            .filter(|l| l.record.owner.as_deref() == Some(owner))
            .map(|l| l.record.id.clone())
            .collect();
        lock(&self.inner.owners).retain(|(o, _), _| o != owner);
        for id in &ids {
            self.end_sandbox(id, TerminationReason::OwnerReleased, None, None)
                .await?;
        }
        Ok(ids.len())
    }
}

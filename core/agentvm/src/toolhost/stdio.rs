//! Stdio processes of the tool hosts: a Docker exec with both streams attached, or a child
//! process of this machine in its own process group. Both are killed with everything they
//! started when their guard is killed or dropped.

use super::local::ToolUser;
use super::{StdioCommand, StdioGuard, StdioProcess};
use crate::error::{Error, Result};
use crate::scheduler::StdioExec;
use async_trait::async_trait;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;

/// Standard error kept per process (the end of it).
const STDERR_TAIL: usize = 8 * 1024;

struct ExecGuard(StdioExec);

#[async_trait]
impl StdioGuard for ExecGuard {
    async fn kill(self: Box<Self>) {
        let id = self.0.id.clone();
        if let Err(e) = self.0.kill().await {
            tracing::warn!(exec = %id, error = %e.chain(), "killing a stdio exec");
        }
    }
}

/// A stdio process from a sandbox exec.
pub(super) fn from_exec(exec: StdioExec, sandbox_id: &str) -> StdioProcess {
    let stderr = exec.stderr.clone();
    let (stdout, stdin, guard) = exec.split();
    StdioProcess {
        stdout: Box::new(stdout),
        stdin: Box::new(stdin),
        stderr,
        place: format!("sandbox {sandbox_id}"),
        guard: Box::new(ExecGuard(guard)),
    }
}

/// A local child and its process group.
struct ChildGuard {
    child: tokio::process::Child,
    group: Option<rustix::process::Pid>,
}

impl ChildGuard {
    fn kill_group(&mut self) {
        if let Some(pid) = self.group.take() {
            // ESRCH (nothing left in the group) is the normal case.
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill_group();
    }
}

#[async_trait]
impl StdioGuard for ChildGuard {
    async fn kill(mut self: Box<Self>) {
        self.kill_group();
        let _ = self.child.kill().await;
    }
}

/// Starts `command` on this machine in `root`, in a process group of its own, as `user`
/// when given (supplementary groups dropped).
pub(super) fn spawn_local(
    root: &Path,
    command: &StdioCommand,
    user: Option<ToolUser>,
) -> Result<StdioProcess> {
    let mut cmd = tokio::process::Command::new(&command.command);
    cmd.args(&command.args)
        .envs(&command.env)
        .current_dir(root)
        .env("PWD", root)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(u) = user {
        cmd.uid(u.uid).gid(u.gid);
    }
    let mut child = cmd.spawn().map_err(|e| Error::Unavailable {
        message: format!(
            "could not start {:?} in {}{}",
            command.command,
            root.display(),
            user.map(|u| format!(" as uid {}", u.uid))
                .unwrap_or_default()
        ),
        source: Some(Box::new(e)),
    })?;
    let group = child
        .id()
        .and_then(|id| rustix::process::Pid::from_raw(id as i32));
    let (Some(stdout), Some(stdin), Some(mut err)) =
        (child.stdout.take(), child.stdin.take(), child.stderr.take())
    else {
        return Err(Error::Internal("a piped child has no pipes".into()));
    };
    let stderr = Arc::new(Mutex::new(String::new()));
    let tail = stderr.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = err.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let Ok(mut t) = tail.lock() else { break };
            t.push_str(&String::from_utf8_lossy(&buf[..n]));
            if t.len() > STDERR_TAIL {
                let mut cut = t.len() - STDERR_TAIL;
                while !t.is_char_boundary(cut) {
                    cut += 1;
                }
                t.drain(..cut);
            }
        }
    });
    Ok(StdioProcess {
        stdout: Box::new(stdout),
        stdin: Box::new(stdin),
        stderr,
        place: match user {
            Some(u) => format!("this host as uid {}", u.uid),
            None => "this host".into(),
        },
        guard: Box::new(ChildGuard { child, group }),
    })
}

//! Long-lived processes whose stdin and stdout are a conversation: an exec with both streams
//! attached, for protocols such as MCP's stdio transport.
//!
//! Unlike [`exec`](super::exec), nothing is recorded and there is no timeout: the process
//! lives until its caller [`kill`](StdioExec::kill)s it (or drops it, which kills it in the
//! background). It runs as the sandbox's user and carries `AGENTVM_EXEC_ID` like every exec,
//! so the killer finds it and every process it started.

use super::engine::{Chunk, ExecSpec};
use super::Scheduler;
use crate::error::{Error, Result};
use crate::model::new_id;
use futures::StreamExt;
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncWrite, AsyncWriteExt, DuplexStream};

/// Standard error kept per process (the end of it), for error messages.
const STDERR_TAIL: usize = 8 * 1024;

/// A running stdio exec. Dropping it kills the process in the background.
pub struct StdioExec {
    /// The tag its processes carry (`AGENTVM_EXEC_ID`).
    pub id: String,
    /// Its standard output; ends when the process does.
    pub stdout: DuplexStream,
    /// Its standard input.
    pub stdin: Pin<Box<dyn AsyncWrite + Send>>,
    /// The last bytes of its standard error.
    pub stderr: Arc<Mutex<String>>,
    /// Who kills it.
    killer: Option<(Scheduler, String)>,
}

impl std::fmt::Debug for StdioExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StdioExec")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl StdioExec {
    /// Kills the process and everything it started, and waits for that.
    pub async fn kill(mut self) -> Result<()> {
        match self.killer.take() {
            Some((scheduler, sandbox)) => scheduler.reap_exec(&sandbox, &self.id).await.map(|_| ()),
            None => Ok(()),
        }
    }

    /// Splits it into its streams and a guard that kills the process when dropped or
    /// [`kill`](StdioExec::kill)ed.
    pub fn split(mut self) -> (DuplexStream, Pin<Box<dyn AsyncWrite + Send>>, StdioExec) {
        let (out, _) = tokio::io::duplex(1);
        let stdout = std::mem::replace(&mut self.stdout, out);
        let stdin = std::mem::replace(&mut self.stdin, Box::pin(tokio::io::sink()));
        (stdout, stdin, self)
    }
}

impl Drop for StdioExec {
    fn drop(&mut self) {
        if let Some((scheduler, sandbox)) = self.killer.take() {
            let id = self.id.clone();
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    if let Err(e) = scheduler.reap_exec(&sandbox, &id).await {
                        tracing::warn!(sandbox = %sandbox, exec = %id, error = %e.chain(), "killing a stdio exec");
                    }
                });
            }
        }
    }
}

fn keep_tail(tail: &Mutex<String>, bytes: &[u8]) {
    let Ok(mut t) = tail.lock() else { return };
    t.push_str(&String::from_utf8_lossy(bytes));
    if t.len() > STDERR_TAIL {
        let mut cut = t.len() - STDERR_TAIL;
        while !t.is_char_boundary(cut) {
            cut += 1;
        }
        t.drain(..cut);
    }
}

impl Scheduler {
    /// Starts `argv` in a running sandbox as its user, in `workdir` (relative to the sandbox's
    /// workdir, created if missing), with stdin and stdout attached.
    pub async fn exec_stdio(
        &self,
        sandbox_id: &str,
        workdir: &str,
        argv: Vec<String>,
        env: &BTreeMap<String, String>,
    ) -> Result<StdioExec> {
        if argv.is_empty() {
            return Err(Error::invalid("no command to run"));
        }
        for k in env.keys() {
            if k.is_empty() || k.contains('=') || k.starts_with("AGENTVM_") {
                return Err(Error::invalid(format!(
                    "environment variable name {k:?} is not allowed"
                )));
            }
        }
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let container = sandbox
            .docker_container_id
            .clone()
            .unwrap_or_else(|| sandbox.docker_container_name.clone());
        let engine = self.engine(&sandbox.node_id).await?;
        let node_id = sandbox.node_id.clone();
        let id = new_id("exec");
        let mut env: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        env.push(format!("AGENTVM_EXEC_ID={id}"));
        // The directory is made and entered by the shell, so it belongs to the sandbox's user.
        let mut cmd = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            r#"mkdir -p -- "$1" && cd -- "$1" && shift && exec "$@""#.into(),
            "agentvm-stdio".into(),
            workdir.to_string(),
        ];
        cmd.extend(argv);
        let started = engine
            .exec(
                &container,
                ExecSpec {
                    argv: cmd,
                    env,
                    user: sandbox.user.clone(),
                    workdir: Some(sandbox.workdir.clone()),
                    stdin: true,
                    tty: false,
                    what: "a stdio exec",
                },
            )
            .await
            .map_err(|e| self.engine_error(&node_id, e))?;
        let (mut output, input) = (started.output, started.input);
        let (mut to_reader, reader) = tokio::io::duplex(64 * 1024);
        let stderr = Arc::new(Mutex::new(String::new()));
        let tail = stderr.clone();
        tokio::spawn(async move {
            while let Some(chunk) = output.next().await {
                match chunk {
                    Ok(Chunk::Stdout(message)) => {
                        if to_reader.write_all(&message).await.is_err() {
                            // The reader is gone; keep draining so the exec is not blocked.
                            continue;
                        }
                    }
                    Ok(Chunk::Stderr(message)) => keep_tail(&tail, &message),
                    Err(_) => break,
                }
            }
            let _ = to_reader.shutdown().await;
        });
        Ok(StdioExec {
            id,
            stdout: reader,
            stdin: input,
            stderr,
            killer: Some((self.clone(), sandbox_id.to_string())),
        })
    }
}

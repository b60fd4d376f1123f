//! Interactive terminals: a command (a shell by default) on a pseudo-terminal in a sandbox,
//! with its input written as it comes, its window resized, and its output read as a stream.
//!
//! A terminal is a Docker exec with a TTY and stdin attached, run as the sandbox's user in its
//! workdir (the same rules as [`exec`](super::exec)), tagged with `AGENTVM_EXEC_ID=<terminal
//! id>` so the killer ends it and everything it started on [`Scheduler::close_terminal`].
//! It lives until its command exits, it is closed, or its sandbox ends — not as long as its
//! [`TerminalSession`]: dropping that only stops the output from being read.
//!
//! What a client can hold is bounded: [`MAX_TERMINALS_PER_SANDBOX`] terminals per sandbox,
//! [`MAX_TERMINAL_INPUT_BYTES`] per input, and [`OUTPUT_CHUNKS_IN_FLIGHT`] output chunks (of
//! at most [`OUTPUT_CHUNK_BYTES`]) between Docker and the reader, beyond which Docker's
//! stream is not read, so a command that writes faster than its output is taken blocks on
//! its terminal. Input, resize and
//! output count as the sandbox's activity (its idle timeout), and input or a resize resumes
//! a paused sandbox first.

use super::engine::{Chunk, ChunkStream, EngineRef, ExecSpec};
use super::exec::Utf8Carry;
use super::{lock, Scheduler};
use crate::error::{Error, Result};
use crate::model::{new_id, now_ms, validate_id};
pub use agentvm_model::scheduler::terminal::*;
use futures::{FutureExt, StreamExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// Output chunks queued between Docker and the session's reader; past this Docker's stream
/// waits (the command blocks on a full terminal), so a slow reader holds at most this much.
pub const OUTPUT_CHUNKS_IN_FLIGHT: usize = 16;

/// The most bytes of output gathered into one chunk (one event).
pub const OUTPUT_CHUNK_BYTES: usize = 32 * 1024;

/// How long an input may wait for the terminal to take it (a command that reads nothing
/// fills the pseudo-terminal's buffer).
const INPUT_TIMEOUT: Duration = Duration::from_secs(10);

/// An open terminal's output, as its opener reads it.
#[derive(Debug)]
pub struct TerminalSession {
    /// The terminal as it opened.
    pub terminal: Terminal,
    /// Output chunks, then one [`TerminalEvent::Exited`].
    output: mpsc::Receiver<TerminalEvent>,
}

impl TerminalSession {
    /// The next output chunk or the end; `None` after [`TerminalEvent::Exited`].
    pub async fn next_event(&mut self) -> Option<TerminalEvent> {
        self.output.recv().await
    }
}

/// A terminal in the scheduler's table: reserved while it opens, then running.
pub(crate) struct TerminalEntry {
    /// Its sandbox, for the per-sandbox limit.
    sandbox_id: String,
    /// `None` while it is being opened.
    control: Option<Arc<TerminalControl>>,
}

/// What input, resize and close need of a running terminal.
pub(crate) struct TerminalControl {
    /// The record; its size changes on resize.
    record: std::sync::Mutex<Terminal>,
    /// The sandbox's node's engine.
    engine: EngineRef,
    /// The engine's id of the exec, for resize.
    engine_exec_id: String,
    /// The terminal's input; one writer at a time so inputs are not interleaved.
    stdin: tokio::sync::Mutex<Pin<Box<dyn AsyncWrite + Send>>>,
    /// `Some(exit code)` once its command has ended.
    ended: watch::Sender<Option<Option<i64>>>,
}

/// Removes a reservation that did not become a terminal.
struct Reservation<'a> {
    /// Whose table.
    scheduler: &'a Scheduler,
    /// The terminal id reserved; `None` once it is running.
    id: Option<String>,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            lock(&self.scheduler.inner.terminals).remove(&id);
        }
    }
}

impl Scheduler {
    /// Opens a terminal in a running sandbox (resuming a paused one, waiting for one being
    /// created) and returns its output stream.
    pub async fn open_terminal(
        &self,
        sandbox_id: &str,
        request: TerminalRequest,
    ) -> Result<TerminalSession> {
        check_terminal_size(request.cols, request.rows)?;
        for k in request.env.keys() {
            if k.is_empty() || k.contains('=') || k.starts_with("AGENTVM_") {
                return Err(Error::invalid(format!(
                    "environment variable name {k:?} is not allowed"
                )));
            }
        }
        let id = match &request.terminal_id {
            Some(id) => {
                validate_id("terminalId", id)?;
                if !id.starts_with("term_") {
                    return Err(Error::invalid(format!(
                        "terminalId {id:?} must start with term_"
                    )));
                }
                id.clone()
            }
            None => new_id("term"),
        };
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let mut reservation = Reservation {
            scheduler: self,
            id: None,
        };
        {
            let mut terminals = lock(&self.inner.terminals);
            if terminals.contains_key(&id) {
                return Err(Error::AlreadyExists {
                    what: "Terminal",
                    id,
                });
            }
            let open = terminals
                .values()
                .filter(|t| t.sandbox_id == sandbox.id)
                .count();
            if open >= MAX_TERMINALS_PER_SANDBOX {
                return Err(Error::Conflict(format!(
                    "sandbox {} already has {open} open terminals, the most it may have; close one first",
                    sandbox.id
                )));
            }
            terminals.insert(
                id.clone(),
                TerminalEntry {
                    sandbox_id: sandbox.id.clone(),
                    control: None,
                },
            );
            reservation.id = Some(id.clone());
        }
        let container = sandbox
            .docker_container_id
            .clone()
            .unwrap_or_else(|| sandbox.docker_container_name.clone());
        let engine = self.engine(&sandbox.node_id).await?;
        let node_id = sandbox.node_id.clone();
        let argv = request.argv();
        let mut env: Vec<String> = request
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if !request.env.contains_key("TERM") {
            env.push("TERM=xterm".into());
        }
        env.push(format!("AGENTVM_EXEC_ID={id}"));
        let started = engine
            .exec(
                &container,
                ExecSpec {
                    argv: argv.clone(),
                    env,
                    user: sandbox.user.clone(),
                    workdir: Some(sandbox.workdir.clone()),
                    stdin: true,
                    tty: true,
                    what: "a terminal",
                },
            )
            .await
            .map_err(|e| self.engine_error(&node_id, e))?;
        let (output, input) = (started.output, started.input);
        let record = Terminal {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            command: argv,
            cols: request.cols,
            rows: request.rows,
            created_at: now_ms(),
        };
        let control = Arc::new(TerminalControl {
            record: std::sync::Mutex::new(record.clone()),
            engine,
            engine_exec_id: started.id.clone(),
            stdin: tokio::sync::Mutex::new(input),
            ended: watch::channel(None).0,
        });
        // The size is set once the exec runs (the daemon's API has no size at create).
        if let Err(e) = control.resize(request.cols, request.rows).await {
            tracing::warn!(terminal = %id, error = %e, "setting a new terminal's size");
        }
        if let Some(entry) = lock(&self.inner.terminals).get_mut(&id) {
            entry.control = Some(control.clone());
        }
        reservation.id = None;
        let (tx, rx) = mpsc::channel(OUTPUT_CHUNKS_IN_FLIGHT);
        tokio::spawn(self.clone().pump(id, sandbox.id, output, tx, control));
        Ok(TerminalSession {
            terminal: record,
            output: rx,
        })
    }

    /// Reads the terminal's output into `tx` (waiting while it is full) until the command
    /// ends, then records the exit code and removes the terminal.
    async fn pump(
        self,
        id: String,
        sandbox_id: String,
        mut output: ChunkStream,
        tx: mpsc::Sender<TerminalEvent>,
        control: Arc<TerminalControl>,
    ) {
        let mut carry = Utf8Carry::default();
        let mut reader_gone = false;
        let mut open = true;
        while open {
            // What Docker has ready goes out as one chunk (it splits a terminal's output at
            // line ends), up to OUTPUT_CHUNK_BYTES: a screenful is one event, not one per line.
            let mut bytes = Vec::new();
            while open && bytes.len() < OUTPUT_CHUNK_BYTES {
                let next = if bytes.is_empty() {
                    Some(output.next().await)
                } else {
                    output.next().now_or_never()
                };
                match next {
                    None => break,
                    Some(Some(Ok(Chunk::Stdout(message) | Chunk::Stderr(message)))) => {
                        bytes.extend_from_slice(&message)
                    }
                    Some(Some(Err(e))) => {
                        tracing::debug!(terminal = %id, error = %e, "a terminal's output broke");
                        open = false;
                    }
                    Some(None) => open = false,
                }
            }
            if bytes.is_empty() {
                continue;
            }
            self.mark_active(&sandbox_id);
            let text = carry.push(&bytes);
            // With the reader gone the output is still drained, so the command never blocks
            // on a terminal nobody reads; it ends when closed, or with its sandbox.
            if !text.is_empty()
                && !reader_gone
                && tx.send(TerminalEvent::Output(text)).await.is_err()
            {
                reader_gone = true;
            }
        }
        let exit_code = control.exit_code().await;
        lock(&self.inner.terminals).remove(&id);
        control.ended.send_replace(Some(exit_code));
        let _ = tx.send(TerminalEvent::Exited(exit_code)).await;
    }

    /// An open terminal, as it is now (its current size); `None` when unknown or ended.
    pub fn terminal(&self, id: &str) -> Option<Terminal> {
        self.control_of(id).ok().map(|c| lock(&c.record).clone())
    }

    /// The open terminals of a sandbox, oldest first.
    pub fn list_terminals(&self, sandbox_id: &str) -> Vec<Terminal> {
        let mut all: Vec<Terminal> = lock(&self.inner.terminals)
            .values()
            .filter(|t| t.sandbox_id == sandbox_id)
            .filter_map(|t| t.control.as_ref().map(|c| lock(&c.record).clone()))
            .collect();
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        all
    }

    fn control_of(&self, id: &str) -> Result<Arc<TerminalControl>> {
        lock(&self.inner.terminals)
            .get(id)
            .and_then(|t| t.control.clone())
            .ok_or_else(|| Error::not_found("Terminal", id))
    }

    /// Writes `bytes` to a terminal's input (at most [`MAX_TERMINAL_INPUT_BYTES`]), resuming
    /// its sandbox if paused. `NotFound` for an unknown or ended terminal.
    pub async fn terminal_input(&self, id: &str, bytes: &[u8]) -> Result<usize> {
        if bytes.len() > MAX_TERMINAL_INPUT_BYTES {
            return Err(Error::invalid(format!(
                "terminal input is {} bytes; the limit is {MAX_TERMINAL_INPUT_BYTES} per request",
                bytes.len()
            )));
        }
        let control = self.control_of(id)?;
        let sandbox_id = lock(&control.record).sandbox_id.clone();
        self.ready_sandbox(&sandbox_id).await?;
        // Waiting for an earlier input counts against the same bound.
        let write = async {
            let mut stdin = control.stdin.lock().await;
            stdin.write_all(bytes).await?;
            stdin.flush().await
        };
        match tokio::time::timeout(INPUT_TIMEOUT, write).await {
            Ok(Ok(())) => Ok(bytes.len()),
            Ok(Err(e)) => Err(Error::Conflict(format!(
                "terminal {id} takes no more input: {e}"
            ))),
            Err(_) => Err(Error::unavailable(format!(
                "terminal {id} did not take its input within {} s (its command reads nothing)",
                INPUT_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Sets a terminal's window size (its command gets `SIGWINCH`), resuming its sandbox if
    /// paused. Returns the terminal at its new size.
    pub async fn resize_terminal(&self, id: &str, cols: u16, rows: u16) -> Result<Terminal> {
        check_terminal_size(cols, rows)?;
        let control = self.control_of(id)?;
        let sandbox_id = lock(&control.record).sandbox_id.clone();
        self.ready_sandbox(&sandbox_id).await?;
        control.resize(cols, rows).await?;
        let mut record = lock(&control.record);
        record.cols = cols;
        record.rows = rows;
        Ok(record.clone())
    }

    /// Ends a terminal: kills its command's process group and every process it started, and
    /// waits for its end. Returns the exit code when Docker reports one.
    pub async fn close_terminal(&self, id: &str) -> Result<Option<i64>> {
        let control = self.control_of(id)?;
        let sandbox_id = lock(&control.record).sandbox_id.clone();
        let mut ended = control.ended.subscribe();
        if ended.borrow().is_none() {
            match self.reap_exec(&sandbox_id, id).await {
                Ok(_) => {}
                // A sandbox that has ended took its terminals with it.
                Err(e) if e.kind() == crate::error::ErrorKind::Conflict => {}
                Err(e) => return Err(e),
            }
        }
        let wait = Duration::from_secs(10);
        let code = match tokio::time::timeout(wait, ended.wait_for(Option::is_some)).await {
            Ok(Ok(code)) => Ok(code.flatten()),
            _ => Err(Error::unavailable(format!(
                "terminal {id} did not end within {} s of its close",
                wait.as_secs()
            ))),
        };
        code
    }
}

impl TerminalControl {
    async fn resize(&self, cols: u16, rows: u16) -> Result<()> {
        self.engine.resize(&self.engine_exec_id, cols, rows).await
    }

    /// The exit code once the engine sees the exec stopped (it may lag the end of the output).
    async fn exit_code(&self) -> Option<i64> {
        for _ in 0..40 {
            match self.engine.exec_state(&self.engine_exec_id).await {
                Ok(i) if !i.running => return i.exit_code,
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(_) => return None,
            }
        }
        None
    }
}

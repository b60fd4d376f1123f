//! Executions: run a command in a sandbox with streamed stdout/stderr, the exit code, a
//! timeout that kills the whole process group, stdin closed and output capped.
//!
//! Docker starts every exec as a session and process-group leader. Each exec carries
//! `AGENTVM_EXEC_ID` in its environment; on timeout a second exec (as the same user, so it
//! needs no capability) finds every process with that tag and `kill -9`s its process group and
//! itself, which also catches children that left the group. The same killer ends an exec
//! that [`Scheduler::cancel_exec`] cancels.

use super::engine::{Chunk, ChunkStream, EngineRef, ExecSpec};
use super::{blocking, lock, Scheduler};
use crate::error::{Error, Result};
use crate::model::{new_id, now_ms, validate_id};
pub use agentvm_model::scheduler::exec::*;
use futures::{Stream, StreamExt};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// The span of one exec (see `agentvm_model::TRACE_TARGET`), from its start to its end.
fn exec_span(sandbox_id: &str, node_id: &str, exec_id: &str) -> tracing::Span {
    use tracing::field::Empty;
    tracing::info_span!(
        target: agentvm_model::TRACE_TARGET,
        "exec",
        otel.name = "sandbox.exec",
        agentvm.sandbox.id = sandbox_id,
        agentvm.node.id = node_id,
        agentvm.exec.id = exec_id,
        agentvm.exec.status = Empty,
        process.exit.code = Empty,
        otel.status_code = Empty,
        otel.status_description = Empty,
        error.type = Empty,
    )
}

/// Records how an exec ended on its span; an exec killed or failed to run is an error.
fn exec_finished(span: &tracing::Span, done: &Execution) {
    if span.is_disabled() {
        return;
    }
    let status = serde_json::to_value(done.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    span.record("agentvm.exec.status", status.as_str());
    if let Some(code) = done.exit_code {
        span.record("process.exit.code", code);
    }
    if matches!(done.status, ExecStatus::Timeout | ExecStatus::Cancelled) || done.error.is_some() {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status.as_str());
        if let Some(e) = &done.error {
            span.record("otel.status_description", e.as_str());
        }
    }
}

/// The stream of an exec. Dropping it does not stop the command (its timeout does).
#[derive(Debug)]
pub struct ExecStream {
    /// The execution id.
    pub id: String,
    /// Events from the task that drives the exec.
    rx: mpsc::UnboundedReceiver<ExecEvent>,
}

impl ExecStream {
    /// The next event; `None` after `Finished`.
    pub async fn next_event(&mut self) -> Option<ExecEvent> {
        self.rx.recv().await
    }

    /// Waits for the end and returns the execution.
    pub async fn finish(mut self) -> Result<Execution> {
        while let Some(e) = self.rx.recv().await {
            if let ExecEvent::Finished(x) = e {
                return Ok(*x);
            }
        }
        Err(Error::Internal(format!(
            "execution {} ended without a result",
            self.id
        )))
    }
}

impl Stream for ExecStream {
    type Item = ExecEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<ExecEvent>> {
        self.rx.poll_recv(cx)
    }
}

/// Decodes a byte stream into whole UTF-8 characters, keeping a split character for later.
#[derive(Debug, Default)]
pub(crate) struct Utf8Carry {
    /// Bytes of a character cut by a chunk boundary.
    pending: Vec<u8>,
}

impl Utf8Carry {
    pub(crate) fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }
}

/// Keeps at most `cap` bytes of one stream.
#[derive(Debug)]
struct Capped {
    /// What was kept.
    text: String,
    /// The cap, bytes.
    cap: usize,
    /// Something was dropped.
    truncated: bool,
}

impl Capped {
    /// Appends what fits; returns the part kept (to stream).
    fn take(&mut self, s: String) -> Option<String> {
        if self.truncated {
            // Past the cap nothing more is kept, so the output never has a hole in it.
            return None;
        }
        let room = self.cap.saturating_sub(self.text.len());
        if s.len() <= room {
            self.text.push_str(&s);
            return (!s.is_empty()).then_some(s);
        }
        self.truncated = true;
        let mut end = room;
        while end > 0 && !s.is_char_boundary(end) {
            end -= 1;
        }
        let kept = &s[..end];
        self.text.push_str(kept);
        (!kept.is_empty()).then(|| kept.to_string())
    }
}

/// A running exec, as [`Scheduler::cancel_exec`] and the lookups see it.
pub(crate) struct ExecControl {
    /// The record as it started (status `running`, no output yet).
    pub(crate) started: Execution,
    /// Set to `true` to cancel.
    cancel: watch::Sender<bool>,
    /// The finished execution, once it is.
    finished: watch::Sender<Option<Execution>>,
}

/// The script the killer exec runs: `kill -9` the process group of, and, every process whose
/// environment carries `AGENTVM_EXEC_ID=$1`. Prints how many it found.
const KILLER: &str = r#"n=0
for p in /proc/[0-9]*; do
  [ -r "$p/environ" ] || continue
  if tr '\0' '\n' < "$p/environ" 2>/dev/null | grep -qx "AGENTVM_EXEC_ID=$1"; then
    pg=$(sed 's/.*) //' "$p/stat" 2>/dev/null | cut -d' ' -f3)
    [ -n "$pg" ] && [ "$pg" -gt 1 ] && kill -9 -"$pg" 2>/dev/null
    kill -9 "${p#/proc/}" 2>/dev/null
    n=$((n+1))
  fi
done
echo $n"#;

impl Scheduler {
    /// `id` if it is a valid execution id (`exec_…`) no execution has yet.
    async fn unused_execution_id(&self, id: &str) -> Result<String> {
        validate_id("executionId", id)?;
        if !id.starts_with("exec_") {
            return Err(Error::invalid(format!(
                "executionId {id:?} must start with exec_"
            )));
        }
        let running = lock(&self.inner.running).contains_key(id);
        if running || self.get_execution(id).await?.is_some() {
            return Err(Error::AlreadyExists {
                what: "Execution",
                id: id.to_string(),
            });
        }
        Ok(id.to_string())
    }

    /// Starts a command in a running sandbox (waiting for one being created) and streams its
    /// output. The command runs to its end or its timeout even if the stream is dropped.
    pub async fn exec(&self, sandbox_id: &str, request: ExecRequest) -> Result<ExecStream> {
        let argv = request.argv()?;
        for k in request.env.keys() {
            if k.is_empty() || k.contains('=') || k.starts_with("AGENTVM_") {
                return Err(Error::invalid(format!(
                    "environment variable name {k:?} is not allowed"
                )));
            }
        }
        if request.timeout_ms == Some(0) {
            return Err(Error::invalid("timeoutMs must be at least 1"));
        }
        let timeout = request
            .timeout_ms
            .map(Duration::from_millis)
            .unwrap_or(self.inner.config.default_exec_timeout);
        let cap = request
            .max_output_bytes
            .unwrap_or(usize::MAX)
            .min(self.inner.config.max_output_bytes);
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let container = sandbox
            .docker_container_id
            .clone()
            .unwrap_or_else(|| sandbox.docker_container_name.clone());
        let engine = self.engine(&sandbox.node_id).await?;
        let node_id = sandbox.node_id.clone();
        let id = match &request.execution_id {
            Some(id) => self.unused_execution_id(id).await?,
            None => new_id("exec"),
        };
        let mut env: Vec<String> = request
            .env
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("AGENTVM_EXEC_ID={id}"));
        let span = exec_span(&sandbox.id, &node_id, &id);
        let started = engine
            .exec(
                &container,
                ExecSpec {
                    argv: argv.clone(),
                    env,
                    user: sandbox.user.clone(),
                    workdir: Some(request.workdir.clone().unwrap_or(sandbox.workdir.clone())),
                    stdin: false,
                    tty: false,
                    what: "the exec",
                },
            )
            .await
            .map_err(|e| self.engine_error(&node_id, e))?;
        let created_at = now_ms();
        // Nothing is ever written: the command's stdin is closed.
        let output = started.output;
        drop(started.input);
        let (tx, rx) = mpsc::unbounded_channel();
        let record = Execution {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            command: argv,
            language: request
                .code
                .as_ref()
                .map(|_| request.language.clone().unwrap_or_else(|| "sh".into())),
            status: ExecStatus::Running,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            exit_code: None,
            error: None,
            created_at,
            finished_at: None,
            duration_ms: None,
        };
        let control = Arc::new(ExecControl {
            started: record.clone(),
            cancel: watch::channel(false).0,
            finished: watch::channel(None).0,
        });
        lock(&self.inner.running).insert(id.clone(), control.clone());
        let this = self.clone();
        let engine_exec_id = started.id;
        let traced = span.clone();
        let drive = async move {
            let run = Run {
                scheduler: this,
                engine,
                container,
                user: sandbox.user,
                engine_exec_id,
                timeout,
                cap,
            };
            run.drive(record, output, tx, control.clone()).await;
            if let Some(done) = control.finished.borrow().as_ref() {
                exec_finished(&traced, done);
            }
        };
        tokio::spawn(tracing::Instrument::instrument(drive, span));
        Ok(ExecStream { id, rx })
    }

    /// Runs a command and waits for the execution.
    pub async fn exec_collect(&self, sandbox_id: &str, request: ExecRequest) -> Result<Execution> {
        self.exec(sandbox_id, request).await?.finish().await
    }

    /// An execution by id; a running one as it started (status `running`, output not yet
    /// collected).
    pub async fn get_execution(&self, id: &str) -> Result<Option<Execution>> {
        if let Some(c) = lock(&self.inner.running).get(id) {
            return Ok(Some(c.started.clone()));
        }
        let store = self.inner.store.clone();
        let id = id.to_string();
        blocking(move || store.get_execution(&id)).await
    }

    /// The executions of a sandbox, oldest first; running ones as they started.
    pub async fn list_executions(&self, sandbox_id: &str) -> Result<Vec<Execution>> {
        let store = self.inner.store.clone();
        let id = sandbox_id.to_string();
        let mut all = blocking(move || store.list_executions(&id)).await?;
        {
            let running = lock(&self.inner.running);
            for c in running.values() {
                if c.started.sandbox_id == sandbox_id && !all.iter().any(|x| x.id == c.started.id) {
                    all.push(c.started.clone());
                }
            }
        }
        all.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(all)
    }

    /// Cancels a running execution: kills its process group (and every process tagged with
    /// its id) and waits for it to end. Returns the execution and whether this call cancelled
    /// it; an execution that already ended is returned unchanged with `false`.
    pub async fn cancel_exec(&self, id: &str) -> Result<(Execution, bool)> {
        let control = lock(&self.inner.running).get(id).cloned();
        let Some(control) = control else {
            return match self.get_execution(id).await? {
                Some(x) => Ok((x, false)),
                None => Err(Error::not_found("Execution", id)),
            };
        };
        let mut finished = control.finished.subscribe();
        control.cancel.send_replace(true);
        // The killer runs, then the output must close within 5 s of it, or the run is marked
        // crashed: bounded either way.
        let wait = self.inner.config.docker_timeout + Duration::from_secs(10);
        let ended = tokio::time::timeout(wait, finished.wait_for(Option::is_some)).await;
        let execution = match ended {
            Ok(Ok(x)) => x.clone(),
            _ => {
                return Err(Error::unavailable(format!(
                    "execution {id} did not end within {} ms of its cancel",
                    wait.as_millis()
                )))
            }
        };
        match execution {
            Some(x) => {
                let cancelled = x.status == ExecStatus::Cancelled;
                Ok((x, cancelled))
            }
            None => Err(Error::Internal(format!(
                "execution {id} ended without a result"
            ))),
        }
    }

    /// Kills every process a finished execution left behind (started in the background,
    /// in a new session with `setsid`, or daemonised): each process still tagged with its id,
    /// and its process group. Returns how many were found. Agents' tool calls end with it, so
    /// a call leaves nothing running in the sandbox.
    pub async fn reap_exec(&self, sandbox_id: &str, exec_id: &str) -> Result<usize> {
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let engine = self.engine(&sandbox.node_id).await?;
        let target = sandbox
            .docker_container_id
            .clone()
            .unwrap_or(sandbox.docker_container_name.clone());
        let mut found = 0;
        // Twice over at most, to catch forks racing the first pass.
        for _ in 0..3 {
            let argv = vec!["/bin/sh", "-c", KILLER, "agentvm-kill", exec_id];
            let (code, out) = self
                .run_quiet(&engine, &target, &sandbox.user, argv)
                .await?;
            if code != 0 {
                return Err(Error::Conflict(format!(
                    "the killer exec failed ({code}): {}",
                    out.trim()
                )));
            }
            let n: usize = out.trim().parse().unwrap_or(0);
            if n == 0 {
                break;
            }
            found += n;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(found)
    }

    /// Runs `argv` to its end and returns its exit code and (capped) combined output.
    /// For the readiness check and the killer; no record, no stream.
    pub(crate) async fn run_quiet(
        &self,
        engine: &EngineRef,
        container: &str,
        user: &str,
        argv: Vec<&str>,
    ) -> Result<(i64, String)> {
        let started = engine
            .exec(
                container,
                ExecSpec {
                    argv: argv.into_iter().map(str::to_string).collect(),
                    user: user.to_string(),
                    what: "an exec",
                    ..Default::default()
                },
            )
            .await?;
        drop(started.input);
        let mut output = started.output;
        let mut out = String::new();
        while let Some(chunk) = output.next().await {
            let (Chunk::Stdout(bytes) | Chunk::Stderr(bytes)) = chunk?;
            if out.len() < 64 * 1024 {
                out.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        let state = engine.exec_state(&started.id).await?;
        Ok((state.exit_code.unwrap_or(-1), out))
    }
}

/// Everything the task driving one exec needs.
struct Run {
    /// For the killer, the record and the counters.
    scheduler: Scheduler,
    /// The sandbox's node's engine.
    engine: EngineRef,
    /// The sandbox's container.
    container: String,
    /// The sandbox's user (the killer runs as it).
    user: String,
    /// The engine's id of the exec, for its exit code.
    engine_exec_id: String,
    /// When to kill it.
    timeout: Duration,
    /// Bytes kept per stream.
    cap: usize,
}

impl Run {
    async fn drive(
        self,
        mut record: Execution,
        mut output: ChunkStream,
        tx: mpsc::UnboundedSender<ExecEvent>,
        control: Arc<ExecControl>,
    ) {
        let started = std::time::Instant::now();
        let mut cancel = control.cancel.subscribe();
        let deadline = tokio::time::sleep(self.timeout);
        tokio::pin!(deadline);
        let (mut out_utf8, mut err_utf8) = (Utf8Carry::default(), Utf8Carry::default());
        let mut stdout = Capped {
            text: String::new(),
            cap: self.cap,
            truncated: false,
        };
        let mut stderr = Capped {
            text: String::new(),
            cap: self.cap,
            truncated: false,
        };
        let mut timed_out = false;
        let mut cancelled = false;
        let mut broken: Option<String> = None;
        loop {
            tokio::select! {
                chunk = output.next() => match chunk {
                    Some(Ok(Chunk::Stdout(message))) => {
                        if let Some(data) = stdout.take(out_utf8.push(&message)) {
                            let _ = tx.send(ExecEvent::Output { stream: OutputStream::Stdout, data });
                        }
                    }
                    Some(Ok(Chunk::Stderr(message))) => {
                        if let Some(data) = stderr.take(err_utf8.push(&message)) {
                            let _ = tx.send(ExecEvent::Output { stream: OutputStream::Stderr, data });
                        }
                    }
                    Some(Err(e)) => { broken = Some(e.to_string()); break; }
                    None => break,
                },
                Ok(()) = async { cancel.wait_for(|c| *c).await.map(|_| ()) }, if !cancelled && !timed_out => {
                    cancelled = true;
                    self.kill(&record.id);
                    deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                _ = &mut deadline => {
                    if timed_out || cancelled {
                        broken = Some("the output did not close 5 s after the kill".into());
                        break;
                    }
                    timed_out = true;
                    self.kill(&record.id);
                    // The stream ends once the killed processes close their output.
                    deadline.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(5));
                }
            }
        }
        let exit_code = match self.engine.exec_state(&self.engine_exec_id).await {
            Ok(i) if !i.running => i.exit_code,
            _ => None,
        };
        record.stdout = stdout.text;
        record.stderr = stderr.text;
        record.truncated = stdout.truncated || stderr.truncated;
        record.exit_code = exit_code;
        record.status = if timed_out {
            ExecStatus::Timeout
        } else if cancelled {
            ExecStatus::Cancelled
        } else if broken.is_some() || exit_code.is_none() {
            ExecStatus::Crashed
        } else if exit_code == Some(0) {
            ExecStatus::Completed
        } else {
            ExecStatus::Failed
        };
        record.error = if timed_out {
            Some(format!(
                "killed after the {} ms timeout (process group and tagged processes)",
                self.timeout.as_millis()
            ))
        } else if cancelled {
            Some("cancelled: its process group and tagged processes were killed".into())
        } else {
            broken
        };
        let now = now_ms();
        record.finished_at = Some(now);
        let took = started.elapsed();
        record.duration_ms = Some(took.as_millis() as u64);
        let s = &self.scheduler;
        s.inner.counters.executions.fetch_add(1, Ordering::Relaxed);
        s.inner.counters.latency.exec.observe(took);
        if timed_out {
            s.inner
                .counters
                .exec_timeouts
                .fetch_add(1, Ordering::Relaxed);
        }
        if let Some(l) = lock(&s.inner.live).get_mut(&record.sandbox_id) {
            l.record.last_activity_at = now;
        }
        let store = s.inner.store.clone();
        let stored = record.clone();
        if let Err(e) = blocking(move || store.put_execution(&stored)).await {
            tracing::warn!(execution = %record.id, error = %e.chain(), "storing an execution");
        }
        // Stored first, so a lookup that misses the running map finds the record.
        lock(&s.inner.running).remove(&record.id);
        control.finished.send_replace(Some(record.clone()));
        let _ = tx.send(ExecEvent::Finished(Box::new(record)));
    }

    /// Kills every process of the exec, twice over to catch forks racing the first pass. It
    /// runs beside the drive, which goes on reading the output meanwhile: the killer's own
    /// output may come through the same channel as the exec's (the sandbox's exec agent), so
    /// the drive must never wait for it.
    fn kill(&self, exec_id: &str) {
        let (scheduler, engine) = (self.scheduler.clone(), self.engine.clone());
        let (container, user) = (self.container.clone(), self.user.clone());
        let exec_id = exec_id.to_string();
        tokio::spawn(async move {
            Self::killer(&scheduler, &engine, &container, &user, &exec_id).await
        });
    }

    async fn killer(
        scheduler: &Scheduler,
        engine: &EngineRef,
        container: &str,
        user: &str,
        exec_id: &str,
    ) {
        for _ in 0..3 {
            let argv = vec!["/bin/sh", "-c", KILLER, "agentvm-kill", exec_id];
            match scheduler.run_quiet(engine, container, user, argv).await {
                Ok((0, out)) if out.trim() == "0" => return,
                Ok((0, _)) => tokio::time::sleep(Duration::from_millis(20)).await,
                Ok((code, out)) => {
                    tracing::warn!(exec_id, code, out = out.trim(), "the killer exec failed");
                    return;
                }
                Err(e) => {
                    tracing::warn!(exec_id, error = %e, "could not run the killer exec");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let mut c = Utf8Carry::default();
        let bytes = "héllo".as_bytes();
        assert_eq!(c.push(&bytes[..2]), "h");
        assert_eq!(c.push(&bytes[2..]), "éllo");
        assert_eq!(c.push(&[0xff, b'a']), "\u{FFFD}a");
    }

    #[test]
    fn output_is_capped_on_a_char_boundary() {
        let mut s = Capped {
            text: String::new(),
            cap: 4,
            truncated: false,
        };
        assert_eq!(s.take("ab".into()).as_deref(), Some("ab"));
        assert_eq!(s.take("cé".into()).as_deref(), Some("c"));
        assert!(s.truncated);
        assert_eq!(s.take("x".into()), None);
        assert_eq!(s.text, "abc");
    }

    #[test]
    fn requests_resolve_to_an_argv() {
        assert_eq!(
            ExecRequest::shell("echo hi").argv().unwrap(),
            ["/bin/sh", "-c", "echo hi"]
        );
        let code = ExecRequest {
            code: Some("print(1)".into()),
            language: Some("python".into()),
            ..Default::default()
        };
        assert_eq!(code.argv().unwrap(), ["python3", "-c", "print(1)"]);
        let bad = ExecRequest {
            code: Some("x".into()),
            language: Some("cobol".into()),
            ..Default::default()
        };
        assert!(bad.argv().unwrap_err().to_string().contains("cobol"));
        assert!(ExecRequest::default().argv().is_err());
    }

    #[test]
    fn the_final_event_carries_exit_code_and_status() {
        let x = Execution {
            id: "exec_1".into(),
            sandbox_id: "sbx_1".into(),
            command: vec!["true".into()],
            language: None,
            status: ExecStatus::Completed,
            stdout: String::new(),
            stderr: String::new(),
            truncated: false,
            exit_code: Some(0),
            error: None,
            created_at: 1,
            finished_at: Some(2),
            duration_ms: Some(1),
        };
        let v = serde_json::to_value(ExecEvent::Finished(Box::new(x))).unwrap();
        assert_eq!(v["exitCode"], 0);
        assert_eq!(v["status"], "completed");
        let o = serde_json::to_value(ExecEvent::Output {
            stream: OutputStream::Stdout,
            data: "hi".into(),
        })
        .unwrap();
        assert_eq!(o, serde_json::json!({"stream":"stdout","data":"hi"}));
    }
}

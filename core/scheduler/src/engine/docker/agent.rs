//! The host side of the sandbox exec agent (`core/scheduler/agent/main.rs`, which documents
//! the frames). A Docker exec costs three round trips to the daemon (create, start, inspect;
//! ≈ 50 ms together here), so each sandbox gets one long-lived exec running the agent, and
//! every later non-interactive exec is a frame to it: the command starts in about a
//! millisecond, as the sandbox's user, in its own process group, with the same environment,
//! working directory, output streams and exit code a Docker exec gives it.
//!
//! On a node reached through a unix socket (a daemon on this machine) the agent is written
//! once to a file here and bind-mounted read-only into every container at
//! `/.agentvm/exec-agent` when it is created, which costs nothing; on other nodes it is
//! copied in through Docker's archive API (≈ 50 ms, a round trip that mounts the container's
//! filesystem) by the first exec. The first exec of a sandbox (the scheduler's readiness
//! check, while the sandbox is still being created) starts the agent and runs through it. It is started in the foreground,
//! never beside other work on the container: a Docker exec being set up while the container is
//! frozen by a pause can hang the pause. Execs while an agent starts go through Docker exec,
//! as does every exec with stdin or a terminal and every exec of a sandbox the agent cannot
//! run in (a read-only root filesystem, an image of another architecture, a build without the
//! agent), for a minute before the next attempt. When the agent
//! ends (the container stopped, or a process of the sandbox killed it) its running execs end
//! with an error and the next exec starts it again.
//!
//! The agent runs inside the tenant's sandbox, so its frames are untrusted: they are bounded
//! in size, unknown ids are ignored, and an agent that breaks the protocol is dropped.

use super::super::{Chunk, ExecIo, ExecSpec, ExecState, Input};
use crate::error::{Error, Result};
use bytes::{Buf, Bytes, BytesMut};
use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

/// The agent program, built by `build.rs` (empty where it could not be built).
static PROGRAM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/agentvm-exec-agent"));

/// Where the agent is put in a sandbox.
pub(super) const DIR: &str = "/.agentvm";
/// The agent's path in a sandbox.
pub(super) const PATH: &str = "/.agentvm/exec-agent";

#[path = "../../../agent/protocol.rs"]
mod protocol;
use protocol::*;

/// The largest frame accepted from an agent (it sends at most 32 KiB of output per frame).
const MAX_FRAME: usize = 64 * 1024;
/// Output chunks buffered per exec before the agent's reader waits for the exec's reader.
const QUEUE: usize = 64;
/// How long a sandbox the agent failed in goes without a new attempt.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long the agent has to say hello, and a request to be written to it.
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Exit codes kept for `exec_state` at most; finished ones past this are forgotten.
const MAX_EXITS: usize = 16 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A container's agent, by container.
enum Slot {
    /// Being copied in and started.
    Starting,
    /// Serving execs.
    Ready(Arc<Session>),
    /// Could not be started, at this time.
    Failed(Instant),
}

/// The agents of one Docker engine's containers, and the exit codes of their execs.
#[derive(Default)]
pub(super) struct Agents {
    slots: Mutex<HashMap<String, Slot>>,
    /// Containers created with the agent bind-mounted, until their agent's first start.
    bound: Mutex<std::collections::HashSet<String>>,
    /// Set once a create with the bind mount failed: this daemon cannot see this machine's
    /// files (a daemon in a VM), so later creates go without it.
    no_binds: AtomicBool,
    /// Engine exec id → its exit code, `None` while it runs.
    exits: Mutex<HashMap<String, Option<i64>>>,
    next_exec: AtomicU64,
}

impl std::fmt::Debug for Agents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agents")
            .field("slots", &lock(&self.slots).len())
            .finish_non_exhaustive()
    }
}

/// The agent written to a file on this machine, for bind mounts: once per process, named by
/// its content so processes of different builds never share one. `None` when it cannot be
/// written (or was not built).
fn host_copy() -> Option<&'static std::path::Path> {
    static COPY: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();
    COPY.get_or_init(|| {
        if PROGRAM.is_empty() {
            return None;
        }
        // FNV-1a: a name, not a defence (the file is checked by its content below).
        let hash = PROGRAM.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
        let path = std::env::temp_dir().join(format!("agentvm-exec-agent-{hash:016x}"));
        let write = || -> std::io::Result<()> {
            use std::os::unix::fs::PermissionsExt;
            if std::fs::read(&path).is_ok_and(|b| b == PROGRAM) {
                return Ok(());
            }
            let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
            std::fs::write(&tmp, PROGRAM)?;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
            std::fs::rename(&tmp, &path)
        };
        match write() {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the exec agent for bind mounts; it is copied into each sandbox instead");
                None
            }
        }
    })
    .as_deref()
}

/// How one exec runs.
pub(super) enum Claim {
    /// Through this agent.
    Use(Arc<Session>),
    /// Through an agent the caller starts now.
    Start,
    /// Through Docker exec (no agent for this container, or not for this user).
    Docker,
}

/// What a start needs from the engine: the daemon calls, kept out of this file.
pub(super) struct Started {
    /// The agent's exec output (its frames on stdout, its complaints on stderr).
    pub output: Pin<Box<dyn Stream<Item = Result<Chunk>> + Send>>,
    /// Its stdin.
    pub input: Input,
}

impl Agents {
    /// Whether execs can go through agents at all (the agent was built).
    pub(super) fn enabled() -> bool {
        !PROGRAM.is_empty()
    }

    /// The bind mount (`source:target:ro`) that puts the agent into a container this daemon
    /// creates, when the agent can be bind-mounted.
    pub(super) fn bind(&self) -> Option<String> {
        if self.no_binds.load(Ordering::Relaxed) {
            return None;
        }
        host_copy().map(|p| format!("{}:{PATH}:ro", p.display()))
    }

    /// Records the outcome of a create that carried [`bind`](Self::bind): `Some(id)` of the
    /// container made, `None` when the daemon refused it (later creates go without).
    pub(super) fn created_with_bind(&self, container: Option<&str>) {
        match container {
            Some(id) => {
                let mut bound = lock(&self.bound);
                // A bound container whose first exec never came (its create failed later)
                // is only a name: keep the set from growing without end.
                if bound.len() >= MAX_EXITS {
                    bound.clear();
                }
                bound.insert(id.to_string());
            }
            None => self.no_binds.store(true, Ordering::Relaxed),
        }
    }

    /// Whether `container`'s agent is bind-mounted (forgotten once asked: a later start
    /// copies it in, and tolerates that failing where the bind is).
    pub(super) fn take_bound(&self, container: &str) -> bool {
        lock(&self.bound).remove(container)
    }

    /// How an exec of `container` as `user` should run. `Start` marks the agent as being
    /// started: the caller must [`attach`](Self::attach) the outcome.
    pub(super) fn claim(&self, container: &str, user: &str) -> Claim {
        let mut slots = lock(&self.slots);
        match slots.get(container) {
            Some(Slot::Ready(s)) if s.open.load(Ordering::Acquire) => {
                if s.user == user {
                    Claim::Use(s.clone())
                } else {
                    Claim::Docker
                }
            }
            Some(Slot::Starting) => Claim::Docker,
            Some(Slot::Failed(at)) if at.elapsed() < RETRY_AFTER => Claim::Docker,
            _ => {
                // Forget failures long past, so the map holds only live containers' slots.
                slots.retain(|_, s| !matches!(s, Slot::Failed(at) if at.elapsed() >= RETRY_AFTER));
                slots.insert(container.to_string(), Slot::Starting);
                Claim::Start
            }
        }
    }

    /// The tar archive that puts the agent at [`PATH`] when unpacked at `/`.
    pub(super) fn archive() -> Result<Vec<u8>> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut dir = tar::Header::new_gnu();
        dir.set_entry_type(tar::EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        dir.set_uid(0);
        dir.set_gid(0);
        dir.set_cksum();
        let name = DIR.trim_start_matches('/');
        let io = |e: std::io::Error| Error::Internal(format!("packing the exec agent: {e}"));
        tar.append_data(&mut dir, format!("{name}/"), std::io::empty())
            .map_err(io)?;
        let mut file = tar::Header::new_gnu();
        file.set_entry_type(tar::EntryType::Regular);
        file.set_mode(0o755);
        file.set_size(PROGRAM.len() as u64);
        file.set_uid(0);
        file.set_gid(0);
        file.set_cksum();
        tar.append_data(&mut file, PATH.trim_start_matches('/'), PROGRAM)
            .map_err(io)?;
        tar.into_inner().map_err(io)
    }

    /// Completes a start: waits for the agent's hello, then serves it. On failure the
    /// container is marked failed (for [`RETRY_AFTER`]) and its execs keep using Docker.
    pub(super) async fn attach(
        self: &Arc<Self>,
        container: &str,
        user: &str,
        started: Result<Started>,
    ) -> Result<Arc<Session>> {
        let result = match started {
            Ok(s) => self.handshake(container, user, s).await,
            Err(e) => Err(e),
        };
        if let Err(e) = &result {
            tracing::debug!(container, error = %e, "the exec agent did not start; execs use Docker exec");
            lock(&self.slots).insert(container.to_string(), Slot::Failed(Instant::now()));
        }
        result
    }

    async fn handshake(
        self: &Arc<Self>,
        container: &str,
        user: &str,
        s: Started,
    ) -> Result<Arc<Session>> {
        let mut frames = Frames::new(s.output);
        let hello = tokio::time::timeout(HANDSHAKE, frames.next())
            .await
            .map_err(|_| Error::unavailable("the exec agent did not say hello in time"))??;
        match hello {
            Some((HELLO, 0, payload)) if payload.as_ref() == PROTOCOL => {}
            Some((kind, _, _)) => {
                return Err(Error::unavailable(format!(
                    "the exec agent opened with an unexpected frame (kind {kind})"
                )))
            }
            None => {
                return Err(Error::unavailable(format!(
                    "the exec agent ended before its hello{}",
                    frames.complaint()
                )))
            }
        }
        let session = Arc::new(Session {
            user: user.to_string(),
            input: tokio::sync::Mutex::new(s.input),
            next_id: AtomicU32::new(1),
            execs: Mutex::new(HashMap::new()),
            open: AtomicBool::new(true),
        });
        lock(&self.slots).insert(container.to_string(), Slot::Ready(session.clone()));
        let (agents, reader) = (self.clone(), session.clone());
        let container = container.to_string();
        tokio::spawn(async move {
            let session = reader;
            let why = session.read(&agents, frames).await;
            tracing::debug!(container, why, "the exec agent ended");
            session.close(&agents, &why);
            let mut slots = lock(&agents.slots);
            if matches!(slots.get(&container), Some(Slot::Ready(s)) if Arc::ptr_eq(s, &session)) {
                slots.remove(&container);
            }
        });
        Ok(session)
    }

    /// Runs `spec` through `session`. An error means the request did not reach the agent
    /// (the command did not run), so the caller can use Docker exec instead.
    pub(super) async fn exec(&self, session: &Arc<Session>, spec: &ExecSpec) -> Result<ExecIo> {
        if !session.open.load(Ordering::Acquire) {
            return Err(Error::unavailable("the exec agent has ended"));
        }
        let frame = spawn_frame(spec)?;
        let n = session.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("agent:{}", self.next_exec.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = mpsc::channel(QUEUE);
        {
            // Under the lock `close` drains with: an exec is either seen by it or refused here.
            let mut execs = lock(&session.execs);
            if !session.open.load(Ordering::Acquire) {
                return Err(Error::unavailable("the exec agent has ended"));
            }
            execs.insert(
                n,
                ExecSlot {
                    engine_id: id.clone(),
                    tx,
                },
            );
        }
        {
            let mut exits = lock(&self.exits);
            if exits.len() >= MAX_EXITS {
                exits.retain(|_, code| code.is_none());
            }
            exits.insert(id.clone(), None);
        }
        let mut framed = Vec::with_capacity(9 + frame.len());
        framed.push(SPAWN);
        framed.extend_from_slice(&n.to_le_bytes());
        framed.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        framed.extend_from_slice(&frame);
        let written = {
            let mut input = session.input.lock().await;
            let written = tokio::time::timeout(HANDSHAKE, async {
                input.write_all(&framed).await?;
                input.flush().await
            })
            .await;
            if !matches!(written, Ok(Ok(()))) {
                // A request cut short leaves the agent's input out of step: it is done. Its
                // input is closed, so it ends (and its reader fails what it still ran).
                session.open.store(false, Ordering::Release);
                *input = Box::pin(tokio::io::sink());
            }
            written
        };
        if !matches!(written, Ok(Ok(()))) {
            lock(&session.execs).remove(&n);
            lock(&self.exits).remove(&id);
            return Err(Error::unavailable(
                "the exec agent did not take the request",
            ));
        }
        Ok(ExecIo {
            id,
            output: Box::pin(rx),
            input: Box::pin(tokio::io::sink()),
        })
    }

    /// The state of an exec an agent ran (`None` when `id` is not one).
    pub(super) fn state(&self, id: &str) -> Option<ExecState> {
        if !id.starts_with("agent:") {
            return None;
        }
        let mut exits = lock(&self.exits);
        Some(match exits.get(id) {
            Some(None) => ExecState {
                running: true,
                exit_code: None,
            },
            Some(Some(code)) => {
                let code = *code;
                exits.remove(id);
                ExecState {
                    running: false,
                    exit_code: Some(code),
                }
            }
            // Its agent ended before it did: no exit code.
            None => ExecState {
                running: false,
                exit_code: None,
            },
        })
    }
}

/// One running agent.
pub(super) struct Session {
    /// The user it runs as (and so every command it starts).
    user: String,
    input: tokio::sync::Mutex<Input>,
    next_id: AtomicU32,
    execs: Mutex<HashMap<u32, ExecSlot>>,
    /// False once it ended or its input broke.
    open: AtomicBool,
}

/// An exec in flight on an agent.
struct ExecSlot {
    engine_id: String,
    tx: mpsc::Sender<Result<Chunk>>,
}

impl Session {
    /// Serves the agent's frames until it ends; why it ended.
    async fn read(&self, agents: &Agents, mut frames: Frames) -> String {
        loop {
            let (kind, id, payload) = match frames.next().await {
                Ok(Some(f)) => f,
                Ok(None) => return format!("its output closed{}", frames.complaint()),
                Err(e) => return e.to_string(),
            };
            match kind {
                STDOUT | STDERR => {
                    let tx = lock(&self.execs).get(&id).map(|s| s.tx.clone());
                    if let Some(mut tx) = tx {
                        let chunk = if kind == STDOUT {
                            Chunk::Stdout(payload)
                        } else {
                            Chunk::Stderr(payload)
                        };
                        // A reader that went away just misses its output.
                        let _ = tx.send(Ok(chunk)).await;
                    }
                }
                EXIT => {
                    let Ok(code) = <[u8; 4]>::try_from(payload.as_ref()) else {
                        return "it sent a malformed exit frame".into();
                    };
                    // The code is recorded before the output stream ends (the slot dropped).
                    if let Some(slot) = lock(&self.execs).remove(&id) {
                        let mut exits = lock(&agents.exits);
                        if let Some(entry) = exits.get_mut(&slot.engine_id) {
                            *entry = Some(i64::from(i32::from_le_bytes(code)));
                        }
                    }
                }
                other => return format!("it sent an unknown frame (kind {other})"),
            }
        }
    }

    /// Ends every exec still in flight with an error.
    fn close(&self, agents: &Agents, why: &str) {
        let execs: Vec<ExecSlot> = {
            let mut execs = lock(&self.execs);
            self.open.store(false, Ordering::Release);
            execs.drain().map(|(_, s)| s).collect()
        };
        let mut exits = lock(&agents.exits);
        for mut slot in execs {
            exits.remove(&slot.engine_id);
            let _ = slot.tx.try_send(Err(Error::unavailable(format!(
                "the sandbox's exec agent ended: {why}"
            ))));
        }
    }
}

/// A `SPAWN` payload for `spec`.
fn spawn_frame(spec: &ExecSpec) -> Result<Vec<u8>> {
    fn put(out: &mut Vec<u8>, s: &[u8]) -> Result<()> {
        let len =
            u32::try_from(s.len()).map_err(|_| Error::invalid("an exec argument is too long"))?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(s);
        Ok(())
    }
    let mut out = Vec::new();
    put(&mut out, spec.workdir.as_deref().unwrap_or("").as_bytes())?;
    for list in [&spec.argv, &spec.env] {
        out.extend_from_slice(&(list.len() as u32).to_le_bytes());
        for s in list {
            put(&mut out, s.as_bytes())?;
        }
    }
    // The agent refuses larger requests; Docker exec takes them.
    if out.len() > MAX_REQUEST {
        return Err(Error::invalid(
            "the exec request is too large for the exec agent",
        ));
    }
    Ok(out)
}

/// The agent's frames, reassembled from its stdout as Docker hands it over.
struct Frames {
    output: Pin<Box<dyn Stream<Item = Result<Chunk>> + Send>>,
    buf: BytesMut,
    /// The start of what it wrote to stderr, for messages.
    stderr: String,
}

impl Frames {
    fn new(output: Pin<Box<dyn Stream<Item = Result<Chunk>> + Send>>) -> Self {
        Frames {
            output,
            buf: BytesMut::new(),
            stderr: String::new(),
        }
    }

    fn complaint(&self) -> String {
        if self.stderr.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.stderr.trim())
        }
    }

    /// The next frame; `None` when the output closed between frames.
    async fn next(&mut self) -> Result<Option<(u8, u32, Bytes)>> {
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_le_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]])
                    as usize;
                if len > MAX_FRAME {
                    return Err(Error::unavailable(format!(
                        "the exec agent sent a {len}-byte frame"
                    )));
                }
                if self.buf.len() >= 9 + len {
                    let kind = self.buf[0];
                    let id =
                        u32::from_le_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
                    self.buf.advance(9);
                    return Ok(Some((kind, id, self.buf.split_to(len).freeze())));
                }
            }
            match self.output.next().await {
                Some(Ok(Chunk::Stdout(bytes))) => self.buf.extend_from_slice(&bytes),
                Some(Ok(Chunk::Stderr(bytes))) => {
                    if self.stderr.len() < 1024 {
                        self.stderr.push_str(&String::from_utf8_lossy(&bytes));
                    }
                }
                Some(Err(e)) => return Err(e),
                None if self.buf.is_empty() => return Ok(None),
                None => {
                    return Err(Error::unavailable(
                        "the exec agent's output ended inside a frame",
                    ))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! The agent run on this host (it is a static Linux program) and spoken to through its
    //! pipes, as Docker would carry them: the whole protocol without a container.

    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tokio::io::AsyncReadExt;

    /// Starts the agent here; the agents' table holds it as container `c`.
    async fn agent_here(
        dir: &std::path::Path,
    ) -> (Arc<Agents>, Arc<Session>, tokio::process::Child) {
        let path = dir.join("exec-agent");
        std::fs::write(&path, PROGRAM).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Another test forking while this file was open for writing makes it busy for a moment.
        let mut tries = 0;
        let mut child = loop {
            match tokio::process::Command::new(&path)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
            {
                Ok(c) => break c,
                Err(e) if e.raw_os_error() == Some(26) && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("starting the agent: {e}"),
            }
        };
        let stdout = child.stdout.take().unwrap();
        let output = futures::stream::unfold(stdout, |mut out| async move {
            let mut buf = vec![0u8; 1000];
            match out.read(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => {
                    buf.truncate(n);
                    Some((Ok(Chunk::Stdout(Bytes::from(buf))), out))
                }
            }
        });
        let input: Input = Box::pin(child.stdin.take().unwrap());
        let agents = Arc::new(Agents::default());
        assert!(matches!(agents.claim("c", "me"), Claim::Start));
        let started = Started {
            output: Box::pin(output),
            input,
        };
        let session = agents.attach("c", "me", Ok(started)).await.unwrap();
        (agents, session, child)
    }

    async fn run(
        agents: &Agents,
        session: &Arc<Session>,
        spec: ExecSpec,
    ) -> (String, String, ExecState) {
        let io = agents.exec(session, &spec).await.unwrap();
        let (mut out, mut err) = (String::new(), String::new());
        let mut output = io.output;
        while let Some(chunk) = output.next().await {
            match chunk.unwrap() {
                Chunk::Stdout(b) => out.push_str(&String::from_utf8_lossy(&b)),
                Chunk::Stderr(b) => err.push_str(&String::from_utf8_lossy(&b)),
            }
        }
        let state = agents.state(&io.id).unwrap();
        (out, err, state)
    }

    fn sh(script: &str) -> ExecSpec {
        ExecSpec {
            argv: vec!["/bin/sh".into(), "-c".into(), script.into()],
            user: "me".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn commands_run_with_their_env_workdir_streams_and_exit_codes() {
        assert!(Agents::enabled(), "the agent was built for this target");
        let dir = tempfile::tempdir().unwrap();
        let (agents, session, _child) = agent_here(dir.path()).await;
        assert!(matches!(agents.claim("c", "me"), Claim::Use(_)));
        assert!(matches!(agents.claim("c", "someone else"), Claim::Docker));

        let mut spec = sh("echo \"$GREETING\"; pwd; echo oops >&2; cat; exit 4");
        spec.env = vec!["GREETING=hello = there".into()];
        spec.workdir = Some(dir.path().to_string_lossy().into_owned());
        let (out, err, state) = run(&agents, &session, spec).await;
        assert_eq!(out, format!("hello = there\n{}\n", dir.path().display()));
        assert_eq!(err, "oops\n");
        assert_eq!((state.running, state.exit_code), (false, Some(4)));
        // Read once: the code is then forgotten.
        assert_eq!(agents.state("agent:0").map(|s| s.exit_code), Some(None));

        let (_, _, state) = run(&agents, &session, sh("kill -TERM $$")).await;
        assert_eq!(state.exit_code, Some(128 + 15));

        let missing = ExecSpec {
            argv: vec!["/no/such/program".into()],
            ..sh("")
        };
        let (_, err, state) = run(&agents, &session, missing).await;
        assert_eq!(state.exit_code, Some(127));
        assert!(err.contains("cannot run /no/such/program"), "{err}");

        // Many at once, and more output than one frame carries.
        let runs = futures::future::join_all((0..10).map(|n| {
            run(
                &agents,
                &session,
                sh(&format!("head -c {} /dev/zero | tr '\\0' {n}", 100_000 + n)),
            )
        }))
        .await;
        for (n, (out, _, state)) in runs.into_iter().enumerate() {
            assert_eq!(out.len(), 100_000 + n);
            assert!(out.bytes().all(|b| b == b'0' + n as u8));
            assert_eq!(state.exit_code, Some(0));
        }
    }

    #[tokio::test]
    async fn an_agent_that_ends_fails_its_execs_and_frees_its_slot() {
        let dir = tempfile::tempdir().unwrap();
        let (agents, session, mut child) = agent_here(dir.path()).await;
        let io = agents.exec(&session, &sh("sleep 3")).await.unwrap();
        child.start_kill().unwrap();
        let mut output = io.output;
        let end = output.next().await.expect("an error, not a silent end");
        let e = end.expect_err("the exec fails");
        assert!(e.to_string().contains("exec agent ended"), "{e}");
        assert!(output.next().await.is_none());
        // No exit code: the exec crashed.
        let state = agents.state(&io.id).unwrap();
        assert_eq!((state.running, state.exit_code), (false, None));
        // The slot is gone, so the next exec starts a new agent; the old session refuses.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !matches!(agents.claim("c", "me"), Claim::Start) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
        assert!(agents.exec(&session, &sh("true")).await.is_err());
    }

    #[tokio::test]
    async fn frames_are_reassembled_and_bounded() {
        let frame = |kind: u8, id: u32, payload: &[u8]| {
            let mut f = vec![kind];
            f.extend_from_slice(&id.to_le_bytes());
            f.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            f.extend_from_slice(payload);
            f
        };
        let mut bytes = frame(STDOUT, 7, b"hello");
        bytes.extend(frame(EXIT, 7, &0i32.to_le_bytes()));
        // Docker may cut the output anywhere: one byte at a time.
        let chunks: Vec<Result<Chunk>> = bytes
            .iter()
            .map(|b| Ok(Chunk::Stdout(Bytes::copy_from_slice(&[*b]))))
            .collect();
        let mut frames = Frames::new(Box::pin(futures::stream::iter(chunks)));
        let (kind, id, payload) = frames.next().await.unwrap().unwrap();
        assert_eq!((kind, id, payload.as_ref()), (STDOUT, 7, &b"hello"[..]));
        assert_eq!(frames.next().await.unwrap().unwrap().0, EXIT);
        assert!(frames.next().await.unwrap().is_none());

        let mut huge = frame(STDOUT, 1, b"");
        huge[5..9].copy_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        let mut frames = Frames::new(Box::pin(futures::stream::iter([Ok(Chunk::Stdout(
            Bytes::from(huge),
        ))])));
        assert!(
            frames.next().await.is_err(),
            "an oversized frame is refused"
        );

        let cut = frame(STDOUT, 1, b"abc");
        let mut frames = Frames::new(Box::pin(futures::stream::iter([Ok(Chunk::Stdout(
            Bytes::copy_from_slice(&cut[..10]),
        ))])));
        assert!(
            frames.next().await.is_err(),
            "an end inside a frame is an error"
        );
    }

    #[test]
    fn a_spawn_request_lists_workdir_argv_and_env() {
        let spec = ExecSpec {
            argv: vec!["a".into(), "bc".into()],
            env: vec!["K=v".into()],
            workdir: Some("/w".into()),
            ..Default::default()
        };
        let f = spawn_frame(&spec).unwrap();
        let mut expected = Vec::new();
        for part in [
            &2u32.to_le_bytes()[..],
            b"/w",
            &2u32.to_le_bytes(),
            &1u32.to_le_bytes(),
            b"a",
        ] {
            expected.extend_from_slice(part);
        }
        for part in [
            &2u32.to_le_bytes()[..],
            b"bc",
            &1u32.to_le_bytes(),
            &3u32.to_le_bytes(),
            b"K=v",
        ] {
            expected.extend_from_slice(part);
        }
        assert_eq!(f, expected);
    }
}

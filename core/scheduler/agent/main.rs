//! agentvm's sandbox exec agent.
//!
//! A small program the Docker engine copies into a sandbox (`/.agentvm/exec-agent`) and
//! starts once per sandbox with one `docker exec`. Each later non-interactive command is a
//! frame written to its stdin instead of a Docker exec of its own, which saves the engine's
//! create/start/inspect round trips (≈ 50 ms per command). It uses the standard library only
//! and is built by `build.rs` with `rustc` alone, statically linked, so it runs in any Linux
//! image, busybox included. It runs as the sandbox's user, with the rights every command of
//! the sandbox has and no others.
//!
//! Frames, both ways: `kind: u8`, `id: u32` little endian, `len: u32` little endian, then
//! `len` bytes. The host side is `core/scheduler/src/engine/docker/agent.rs`.
//!
//! - agent → host `HELLO` (id 0): the protocol's name and version, once, at start.
//! - host → agent `SPAWN`: run a command as exec `id`. Payload: the working directory (empty
//!   for the agent's own), `argc: u32`, each argument, `envc: u32`, each `KEY=value`; every
//!   string as `len: u32` + bytes. The command gets stdin from `/dev/null`, the agent's
//!   environment plus the given one, and a process group of its own (so killing its group
//!   never reaches the agent).
//! - agent → host `STDOUT` / `STDERR`: output of exec `id`, at most 32 KiB per frame.
//! - agent → host `EXIT`: exec `id` ended and both its outputs closed; payload `code: i32`
//!   (`128 + signal` when a signal ended it; 127 / 126 when it could not be started, after a
//!   `STDERR` frame saying why).
//!
//! When its stdin closes (the host went away) the agent kills the process group of every
//! command it still runs and exits. A malformed frame ends it (exit status 2).

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::io::FromRawFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;

mod protocol;
use protocol::*;

/// The most output bytes per frame.
const CHUNK: usize = 32 * 1024;
/// Each command's two output readers need little stack.
const STACK: usize = 64 * 1024;
const SIGKILL: i32 = 9;

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// The agent's stdout, shared by every reader: one frame per `write_all`, never interleaved.
#[derive(Clone)]
struct Out(Arc<Mutex<File>>);

impl Out {
    fn send(&self, kind: u8, id: u32, payload: &[u8]) -> io::Result<()> {
        let mut frame = Vec::with_capacity(9 + payload.len());
        frame.push(kind);
        frame.extend_from_slice(&id.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(payload);
        lock(&self.0).write_all(&frame)
    }
}

/// The process groups of the commands still running, by exec id.
type Running = Arc<Mutex<HashMap<u32, i32>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A `SPAWN` request.
struct Spawn {
    workdir: Option<OsString>,
    argv: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
}

/// Reads the strings of a request.
struct Fields<'a>(&'a [u8]);

impl Fields<'_> {
    fn u32(&mut self) -> Option<u32> {
        let (head, rest) = self.0.split_at_checked(4)?;
        self.0 = rest;
        Some(u32::from_le_bytes(head.try_into().ok()?))
    }

    fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.u32()? as usize;
        let (head, rest) = self.0.split_at_checked(len)?;
        self.0 = rest;
        Some(head.to_vec())
    }

    fn list(&mut self) -> Option<Vec<Vec<u8>>> {
        let n = self.u32()? as usize;
        // Each entry takes at least its 4-byte length: a count beyond that is a lie.
        if n > self.0.len() / 4 {
            return None;
        }
        (0..n).map(|_| self.bytes()).collect()
    }
}

fn parse_spawn(payload: &[u8]) -> Option<Spawn> {
    let mut f = Fields(payload);
    let workdir = f.bytes()?;
    let argv = f.list()?;
    let env = f.list()?;
    if argv.is_empty() || !f.0.is_empty() {
        return None;
    }
    let env = env
        .into_iter()
        .map(|kv| {
            let at = kv.iter().position(|&b| b == b'=')?;
            let (k, v) = kv.split_at(at);
            Some((
                OsString::from_vec(k.to_vec()),
                OsString::from_vec(v[1..].to_vec()),
            ))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Spawn {
        workdir: (!workdir.is_empty()).then(|| OsString::from_vec(workdir)),
        argv: argv.into_iter().map(OsString::from_vec).collect(),
        env,
    })
}

/// Copies one output of exec `id` to the host until it closes.
fn pump(out: &Out, id: u32, kind: u8, mut from: impl Read) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if out.send(kind, id, &buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Tells the host exec `id` could not start.
fn refuse(out: &Out, id: u32, argv0: &OsString, e: &io::Error) {
    let why = format!("agentvm: cannot run {}: {e}\n", argv0.to_string_lossy());
    let code: i32 = if e.kind() == io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    let _ = out.send(STDERR, id, why.as_bytes());
    let _ = out.send(EXIT, id, &code.to_le_bytes());
}

fn spawn(out: &Out, running: &Running, id: u32, req: Spawn) {
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .envs(req.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(dir) = &req.workdir {
        cmd.current_dir(dir);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return refuse(out, id, &req.argv[0], &e),
    };
    let pid = child.id() as i32;
    lock(running).insert(id, pid);
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let (o, r) = (out.clone(), running.clone());
    let waiter = thread::Builder::new().stack_size(STACK).spawn(move || {
        let o2 = o.clone();
        let err_reader = stderr.and_then(|e| {
            thread::Builder::new()
                .stack_size(STACK)
                .spawn(move || pump(&o2, id, STDERR, e))
                .ok()
        });
        if let Some(s) = stdout {
            pump(&o, id, STDOUT, s);
        }
        if let Some(t) = err_reader {
            let _ = t.join();
        }
        let code = match child.wait() {
            Ok(s) => s
                .code()
                .or_else(|| s.signal().map(|n| 128 + n))
                .unwrap_or(-1),
            Err(_) => -1,
        };
        lock(&r).remove(&id);
        let _ = o.send(EXIT, id, &code.to_le_bytes());
    });
    if let Err(e) = waiter {
        // No thread for it (the sandbox's pids limit): it cannot be watched, so it must not run.
        // SAFETY: kill(2) on the process group this agent just created.
        unsafe { kill(-pid, SIGKILL) };
        lock(running).remove(&id);
        refuse(out, id, &req.argv[0], &e);
    }
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` on a clean end before the first byte.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<bool> {
    let mut at = 0;
    while at < buf.len() {
        match input.read(&mut buf[at..]) {
            Ok(0) if at == 0 => return Ok(false),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// Serves frames until the host goes away; the exit status.
fn serve(out: &Out, running: &Running) -> i32 {
    let mut input = io::stdin().lock();
    let mut header = [0u8; 9];
    loop {
        match read_full(&mut input, &mut header) {
            Ok(true) => {}
            Ok(false) => return 0,
            Err(e) => {
                eprintln!("exec agent: reading a frame: {e}");
                return 2;
            }
        }
        let kind = header[0];
        let id = u32::from_le_bytes([header[1], header[2], header[3], header[4]]);
        let len = u32::from_le_bytes([header[5], header[6], header[7], header[8]]) as usize;
        if kind != SPAWN || len > MAX_REQUEST {
            eprintln!("exec agent: unexpected frame (kind {kind}, {len} bytes)");
            return 2;
        }
        let mut payload = vec![0u8; len];
        if let Err(e) = read_full(&mut input, &mut payload) {
            eprintln!("exec agent: reading a frame: {e}");
            return 2;
        }
        match parse_spawn(&payload) {
            Some(req) => spawn(out, running, id, req),
            None => {
                eprintln!("exec agent: malformed request for exec {id}");
                return 2;
            }
        }
    }
}

fn main() {
    // SAFETY: fd 1 is this process's stdout, open for its whole life and used only here.
    let out = Out(Arc::new(Mutex::new(unsafe { File::from_raw_fd(1) })));
    let running: Running = Arc::default();
    if out.send(HELLO, 0, PROTOCOL).is_err() {
        std::process::exit(2);
    }
    let status = serve(&out, &running);
    for (_, pgid) in lock(&running).drain() {
        // SAFETY: kill(2) on a process group this agent created.
        unsafe { kill(-pgid, SIGKILL) };
    }
    std::process::exit(status);
}

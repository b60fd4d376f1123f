//! What the tests of the `agentvm-server` binary share: starting it and reading the address it
//! announces, signals, waiting for its exit, and a PostgreSQL schema of one's own.
// Each test module uses a part of this.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Lines};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_agentvm-server");

/// A running server; killed (after a SIGCONT, in case a test paused it) and reaped when
/// dropped, so a failed assertion leaves nothing running.
pub(crate) struct Server {
    pub(crate) child: Child,
    /// `ws://…/ws`.
    pub(crate) url: String,
    /// `http://…`.
    pub(crate) http: String,
    /// Its "listening on ..." line.
    pub(crate) listening: String,
    /// The lines it printed before that line (a bootstrap token, say).
    pub(crate) before: Vec<String>,
    /// Its stdout after that line.
    pub(crate) stdout: Option<Lines<BufReader<ChildStdout>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        signal(&self.child, "CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `serve --port 0 --data-dir <dir> <args>` with the mock LLM, logging warnings to the test's
/// stderr.
pub(crate) fn serve(dir: &Path, args: &[&str]) -> Server {
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("LLM_PROVIDER", "mock")
        .env("AGENTVM_LOG", "warn")
        .stderr(Stdio::inherit());
    spawn(command)
}

/// Spawns `command` (a `serve`) with its stdout piped and waits for its "listening" line.
pub(crate) fn spawn(mut command: Command) -> Server {
    let child = command
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn agentvm-server");
    let mut server = Server {
        child,
        url: String::new(),
        http: String::new(),
        listening: String::new(),
        before: Vec::new(),
        stdout: None,
    };
    let mut lines = BufReader::new(server.child.stdout.take().unwrap()).lines();
    loop {
        let line = match lines.next() {
            Some(Ok(line)) => line,
            other => panic!(
                "agentvm-server exited before listening ({other:?}), after {:?}",
                server.before
            ),
        };
        if let Some(rest) = line.split("listening on http://").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_string();
            server.url = format!("ws://{addr}/ws");
            server.http = format!("http://{addr}");
            server.listening = line;
            server.stdout = Some(lines);
            return server;
        }
        server.before.push(line);
    }
}

/// Sends signal `name` (`TERM`, `STOP`, `CONT`, ...) to `child`.
pub(crate) fn signal(child: &Child, name: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
}

/// SIGTERM: the graceful stop.
pub(crate) fn sigterm(child: &Child) {
    signal(child, "TERM");
}

/// Waits for `child` to exit; fails the test after `within`.
pub(crate) fn wait_exit(child: &mut Child, within: Duration) -> ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not exit within {within:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `AGENTVM_SKIP_POSTGRES=1`: the PostgreSQL tests are skipped, loudly.
pub(crate) fn postgres_skipped(what: &str) -> bool {
    if std::env::var("AGENTVM_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SKIPPED: {what} (AGENTVM_SKIP_POSTGRES=1)");
        return true;
    }
    false
}

/// `AGENTVM_TEST_POSTGRES`, or a failure saying how to get one.
pub(crate) fn postgres_url() -> String {
    std::env::var("AGENTVM_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "AGENTVM_TEST_POSTGRES is not set: run `export AGENTVM_TEST_POSTGRES=\"$(bash \
                 scripts/setup-postgres.sh)\"` as root (it installs Debian's postgresql and \
                 starts a test cluster), or set AGENTVM_SKIP_POSTGRES=1 to skip"
            )
        })
}

/// A fresh schema `bin_<name>_<pid>` on `AGENTVM_TEST_POSTGRES`: the store URL that uses it,
/// and a client whose search path is set to it.
pub(crate) async fn fresh_schema(name: &str) -> (String, tokio_postgres::Client) {
    let server = postgres_url();
    let schema = format!("bin_{name}_{}", std::process::id());
    let (db, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}; \
         SET search_path = {schema}"
    ))
    .await
    .unwrap();
    let separator = if server.contains('?') { '&' } else { '?' };
    let url = format!("{server}{separator}options=-c%20search_path%3D{schema}");
    (url, db)
}

/// One turn's events as a client sees them, up to its `conversation_end`.
pub(crate) async fn turn(
    sub: &mut agentvm::Subscription,
) -> Vec<std::sync::Arc<agentvm::Published>> {
    let mut out = Vec::new();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(20), sub.recv())
            .await
            .expect("events keep coming")
            .expect("open");
        let agentvm::BusItem::Event(p) = item else {
            panic!("overflow")
        };
        let end = matches!(
            p.event.payload,
            agentvm::EventPayload::ConversationEnd { .. }
        );
        out.push(p);
        if end {
            return out;
        }
    }
}

//! The `agentvm-server` binary on a PostgreSQL store (`--store postgres://...`): the history
//! survives a restart, and a database that goes away mid-use is an `Unavailable` error naming
//! it, until it is back, with no restart of the server.
//!
//! The server for the first test is `AGENTVM_TEST_POSTGRES` (`scripts/setup-postgres.sh`), a
//! schema per test; the second stops and starts PostgreSQL, so it runs a cluster of its own.
//! Both fail with a clear message without PostgreSQL, unless `AGENTVM_SKIP_POSTGRES=1`.
// Test helpers: a failed unwrap is a failed assertion.
#![allow(clippy::unwrap_used)]

use agentvm::{connect, ConnectOptions, ErrorKind, ImageConfig, RemoteRuntime, Role, RuntimeExt};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_agentvm-server");

fn skipped() -> bool {
    if std::env::var("AGENTVM_SKIP_POSTGRES").as_deref() == Ok("1") {
        eprintln!("SKIPPED: PostgreSQL test (AGENTVM_SKIP_POSTGRES=1)");
        return true;
    }
    false
}

fn missing(what: &str) -> ! {
    panic!(
        "{what}: the PostgreSQL tests need it. Run `export AGENTVM_TEST_POSTGRES=\"$(bash \
         scripts/setup-postgres.sh)\"` as root (it installs Debian's postgresql and starts a \
         test cluster), or set AGENTVM_SKIP_POSTGRES=1 to skip them"
    )
}

struct Server {
    child: Child,
    url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the binary on the store `store` and a fresh data dir (its workdirs).
fn start(dir: &Path, store: &str) -> Server {
    start_with(dir, &["--store", store])
}

/// Starts the binary with `args` after `serve --port 0 --data-dir dir`.
fn start_with(dir: &Path, args: &[&str]) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--port", "0", "--data-dir"])
        .arg(dir)
        .args(args)
        .env("LLM_PROVIDER", "mock")
        .env("AGENTVM_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn agentvm-server");
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains("store PostgreSQL at"), "{line}");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_string();
    Server {
        child,
        url: format!("ws://{addr}/ws"),
    }
}

fn stop(server: &mut Server) {
    let ok = Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let deadline = Instant::now() + Duration::from_secs(15);
    while server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the server did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn client(url: &str) -> RemoteRuntime {
    let options = ConnectOptions {
        reconnect: false,
        ..Default::default()
    };
    connect(url, options).await.unwrap()
}

/// Sends `text` to a new image of `container` and waits for the mock's reply to be stored.
async fn converse(rt: &RemoteRuntime, container: &str, text: &str) -> String {
    let image = rt
        .images()
        .create(container, ImageConfig::default())
        .await
        .unwrap()
        .record;
    rt.agents()
        .send_to_image(&image.image_id, text)
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let history = rt.images().messages(&image.image_id).await.unwrap();
        if history.len() == 2 {
            break;
        }
        assert!(Instant::now() < deadline, "no reply stored: {history:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    image.image_id
}

/// `AGENTVM_TEST_POSTGRES` with a schema of its own.
async fn fresh_schema(name: &str) -> Option<String> {
    if skipped() {
        return None;
    }
    let server = std::env::var("AGENTVM_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| missing("AGENTVM_TEST_POSTGRES is not set"));
    let schema = format!("bin_{name}_{}", std::process::id());
    let (db, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connecting to AGENTVM_TEST_POSTGRES ({server}): {e}"));
    tokio::spawn(connection);
    db.batch_execute(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .await
    .unwrap();
    let separator = if server.contains('?') { '&' } else { '?' };
    Some(format!(
        "{server}{separator}options=-c%20search_path%3D{schema}"
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_of_the_server() {
    let Some(store) = fresh_schema("restart").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = start(dir.path(), &store);
    let rt = client(&server.url).await;
    let image_id = converse(&rt, "user-alice", "hello postgres").await;
    drop(rt);
    stop(&mut server);

    // The second time from the config file's `store = "..."`.
    let config = dir.path().join("agentvm.toml");
    std::fs::write(&config, format!("store = {store:?}\n")).unwrap();
    let server = start_with(dir.path(), &["--config", config.to_str().unwrap()]);
    let rt = client(&server.url).await;
    assert_eq!(rt.containers().list().await.unwrap(), ["user-alice"]);
    let history = rt.images().messages(&image_id).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0].role, Role::User);
    assert_eq!(history[1].role, Role::Assistant);
    // The restarted server keeps numbering after what is stored.
    rt.agents()
        .send_to_image(&image_id, "and again")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while rt.images().messages(&image_id).await.unwrap().len() < 4 {
        assert!(Instant::now() < deadline, "no second reply");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_cli_uses_the_postgres_store() {
    let Some(store) = fresh_schema("tokens").await else {
        return;
    };
    let cli = |args: &[&str]| {
        let out = Command::new(BIN)
            .arg("token")
            .args(args)
            .args(["--store", &store])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let token = cli(&["create", "--containers", "a,b"]);
    assert!(token.starts_with("avm_"), "{token}");
    let listing = cli(&["list"]);
    assert!(listing.contains("active\ta,b"), "{listing}");
    let id = listing.split('\t').next().unwrap().to_string();
    cli(&["revoke", &id]);
    assert!(cli(&["list"]).contains("revoked"));
}

/// A PostgreSQL cluster of this test's own (it is stopped and started), on a free port.
struct Cluster {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

impl Cluster {
    fn start() -> Cluster {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("initdb").exists())
            .unwrap_or_else(|| missing("PostgreSQL is not installed (/usr/lib/postgresql/*/bin)"));
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Cluster { bin, dir, port };
        if is_root() {
            // initdb refuses root: the cluster belongs to the package's `postgres` user.
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(cluster.dir.path())
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown the cluster's directory to postgres");
        }
        cluster.run(
            "initdb",
            &["-U", "postgres", "-A", "trust", "--no-sync", "-D"],
            &[cluster.data()],
        );
        cluster.pg_ctl("start");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, action: &str) {
        let options = format!(
            "-h 127.0.0.1 -p {} -k {}",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        self.run(
            "pg_ctl",
            &["-w", "-t", "30", "-m", "fast", "-o", &options, "-l"],
            &[log, "-D".into(), self.data(), action.into()],
        );
    }

    fn run(&self, tool: &str, args: &[&str], paths: &[PathBuf]) {
        let program = self.bin.join(tool);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = command.args(args).args(paths).output().unwrap();
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(if is_root() { "runuser" } else { "true" })
            .args(if is_root() {
                vec!["-u", "postgres", "--"]
            } else {
                vec![]
            })
            .arg(self.bin.join("pg_ctl"))
            .args(["-m", "immediate", "-D"])
            .arg(self.data())
            .arg("stop")
            .output();
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_going_away_is_unavailable_and_its_return_needs_no_restart() {
    if skipped() {
        return;
    }
    let cluster = tokio::task::spawn_blocking(Cluster::start).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &cluster.url());
    let rt = client(&server.url).await;
    let before = converse(&rt, "user-alice", "before the outage").await;

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.pg_ctl("stop");
        cluster
    })
    .await
    .unwrap();
    // What a user sees while the database is down: Unavailable, naming the database.
    let e = rt
        .images()
        .create("user-alice", ImageConfig::default())
        .await
        .unwrap_err();
    eprintln!("while PostgreSQL is stopped, images.create fails with: {e}");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    let address = format!("127.0.0.1:{}/postgres", cluster.port);
    assert!(e.to_string().contains(&address), "names the database: {e}");
    let e = rt.images().messages(&before).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.pg_ctl("start");
        cluster
    })
    .await
    .unwrap();
    // The same server, not restarted: what was acknowledged is there, and new writes work.
    let history = rt.images().messages(&before).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    let after = converse(&rt, "user-alice", "after the outage").await;
    let images: Vec<String> = rt
        .images()
        .list(Some("user-alice"))
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.image_id)
        .collect();
    assert!(
        images.contains(&before) && images.contains(&after),
        "{images:?}"
    );
    drop(cluster);
}

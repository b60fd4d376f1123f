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
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{fresh_schema, postgres_skipped, serve, sigterm, wait_exit, Server, BIN};

fn skipped() -> bool {
    postgres_skipped("PostgreSQL test")
}

fn missing(what: &str) -> ! {
    panic!(
        "{what}: the PostgreSQL tests need it. Run `export AGENTVM_TEST_POSTGRES=\"$(bash \
         scripts/setup-postgres.sh)\"` as root (it installs Debian's postgresql and starts a \
         test cluster), or set AGENTVM_SKIP_POSTGRES=1 to skip them"
    )
}

/// Starts the binary on the store `store` and a fresh data dir (its workdirs).
fn start(dir: &Path, store: &str) -> Server {
    start_with(dir, &["--store", store])
}

/// Starts the binary with `args` after `serve --port 0 --data-dir dir`.
fn start_with(dir: &Path, args: &[&str]) -> Server {
    let server = serve(dir, args);
    assert!(
        server.listening.contains("store PostgreSQL at"),
        "{}",
        server.listening
    );
    server
}

fn stop(server: &mut Server) {
    sigterm(&server.child);
    wait_exit(&mut server.child, Duration::from_secs(15));
}

async fn client(url: &str) -> RemoteRuntime {
    let options = ConnectOptions {
        reconnect: false,
        ..Default::default()
    };
    connect(url, options).await.unwrap()
}

/// `GET /readyz`: its status and, when not ready, its `reason`.
async fn readyz(http: &str) -> (u16, String) {
    let r = reqwest::get(format!("{http}/readyz")).await.unwrap();
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.unwrap();
    let reason = body["reason"].as_str().unwrap_or_default().to_string();
    (status, reason)
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
async fn schema(name: &str) -> Option<String> {
    if skipped() {
        return None;
    }
    Some(fresh_schema(name).await.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_survives_a_restart_of_the_server() {
    let Some(store) = schema("restart").await else {
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
    let Some(store) = schema("tokens").await else {
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
    assert_eq!(readyz(&server.http).await, (200, "".to_string()));

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
    // A load balancer stops sending clients here: /readyz says why.
    let (status, reason) = readyz(&server.http).await;
    assert_eq!((status, reason.as_str()), (503, "unavailable"));

    let cluster = tokio::task::spawn_blocking(move || {
        cluster.pg_ctl("start");
        cluster
    })
    .await
    .unwrap();
    // The same server, not restarted: what was acknowledged is there, and new writes work.
    let history = rt.images().messages(&before).await.unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(readyz(&server.http).await, (200, "".to_string()));
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

//! A full disk, on a real small filesystem: writes fail with `storage_full` naming the data
//! dir, `/readyz` answers 503 while they do, and once space is freed writes succeed and
//! `/readyz` answers 200 again, without a restart.
//!
//! Needs permission to mount a tmpfs (root, as in CI); without it the test says so and
//! returns.

use agentvm::{AgentVm, ImageConfig, MockDriver, RuntimeExt};
use agentvm_server::{ServerConfig, ServerManager};
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

/// A tmpfs of `size` mounted on a new directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!(
                "SKIPPED: cannot mount a tmpfs here ({}); run as root to test a full disk",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Fills the filesystem of `path` with a file until no space is left; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    loop {
        match f.write_all(&chunk).and_then(|_| f.sync_all()) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(28), "filling stopped for {e}");
                break;
            }
        }
    }
    // Also the last few bytes a smaller write could take.
    let _ = f.write_all(&[7u8; 512]);
    let _ = f.sync_all();
    filler
}

async fn readyz(base: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}/readyz")).await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_storage_full_then_recovers_without_a_restart() {
    let Some(fs) = Tmpfs::mount("6m") else {
        return;
    };
    let data_dir = fs.path().join("data");
    let vm = AgentVm::builder()
        .data_dir(&data_dir)
        .llm(Arc::new(MockDriver::default()))
        // As the server binary runs: with a scheduler, whose tables share the redb file.
        .scheduler(agentvm::Scheduler::builder())
        .open()
        .await
        .unwrap();
    let server = ServerManager::new(vm.clone(), ServerConfig::default());
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();

    let image = vm
        .images()
        .create("c1", ImageConfig::default())
        .await
        .unwrap()
        .record;
    assert_eq!(readyz(&base).await.0, 200);
    assert_eq!(
        reqwest::get(format!("{base}/livez"))
            .await
            .unwrap()
            .status(),
        200
    );

    let filler = fill(fs.path());
    // Writes now fail: each message is ~200 KB, more than any free page redb has left.
    let content = "y".repeat(200 * 1024);
    let send = || {
        client
            .post(format!("{base}/v1/images/{}/messages", image.image_id))
            .json(&json!({ "content": content }))
            .send()
    };
    let mut refused = None;
    for _ in 0..40 {
        let r = send().await.unwrap();
        if r.status() == 507 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(r.status(), 202, "{:?}", r.text().await);
    }
    let refused = refused.expect("a write failed with 507 on the full disk");
    assert_eq!(refused["kind"], "storage_full", "{refused}");
    let message = refused["error"].as_str().unwrap();
    assert!(
        message.contains(&data_dir.display().to_string()),
        "names the data dir: {message}"
    );

    // Not ready while writes fail, alive all along.
    let (status, body) = readyz(&base).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["reason"], "storage_full", "{body}");
    assert_eq!(
        reqwest::get(format!("{base}/livez"))
            .await
            .unwrap()
            .status(),
        200
    );

    // Space is back: ready again and writes succeed, same process, same store.
    std::fs::remove_file(&filler).unwrap();
    let (status, body) = readyz(&base).await;
    assert_eq!(status, 200, "{body}");
    let r = send().await.unwrap();
    assert_eq!(r.status(), 202, "{:?}", r.text().await);
    let history = vm.images().messages(&image.image_id).await.unwrap();
    assert!(history.iter().any(|m| m
        .content
        .as_ref()
        .is_some_and(|c| c.byte_len() == 200 * 1024)));

    // Draining turns readiness off first.
    server.drain();
    assert_eq!(readyz(&base).await.1["reason"], "draining");
    server.close().await;
}

//! Agents' tools in a Docker sandbox act as the sandbox's user and stay in the image's
//! directory: `write_file` through a link the agent made to `/etc` is refused, `read_file` of
//! a file the user may not read fails as the agent's own `cat` does, and a `bash` call leaves no process
//! behind.

use agentvm::toolhost::sandboxed::SandboxToolHost;
use agentvm::toolhost::{ToolCommand, ToolHost, Workspace};
use agentvm::*;
use agentvm_e2e::docker::{require_docker, vm_with_sandboxed_container};
use std::process::Command;
use std::time::Duration;

async fn bash(host: &SandboxToolHost, ws: &Workspace, command: &str) -> String {
    let out = host
        .exec(
            ws,
            ToolCommand {
                command: command.into(),
                timeout: Duration::from_secs(30),
                max_output_bytes: 64 * 1024,
            },
        )
        .await
        .unwrap();
    format!("{}{}", out.stdout, out.stderr)
}

/// Runs `script` as root in the Docker container (what only the image's author could do).
fn as_root(container: &str, script: &str) -> String {
    let out = Command::new("docker")
        .args(["exec", "-u", "0", container, "sh", "-c", script])
        .output()
        .expect("the docker CLI");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_tools_act_as_the_sandbox_user_inside_the_workspace() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let vm = vm_with_sandboxed_container(dir.path(), "confined", None).await;
    let scheduler = vm.scheduler().unwrap().clone();
    let host = SandboxToolHost::new(scheduler.clone(), vm.store().clone(), None);
    let ws = Workspace {
        container_id: "confined".into(),
        image_id: "img_confined".into(),
    };

    // The agent's shell is not root and makes links out of its directory.
    let made = bash(
        &host,
        &ws,
        "id -u; ln -s /etc etc_link; ln -s /root root_link; ln -s /etc/agent_evil evil; ln -s sub inner",
    )
    .await;
    assert_ne!(made.trim(), "0", "the shell runs as root: {made}");
    let sandbox = scheduler
        .sandbox_for_owner("confined", "busybox")
        .await
        .unwrap();
    let record = scheduler.get_sandbox(sandbox.id()).await.unwrap().unwrap();
    let container = record.docker_container_id.clone().unwrap();
    as_root(
        &container,
        "mkdir -p /root && echo rootsecret > /root/secret && chmod 700 /root && chmod 600 /root/secret",
    );
    // A file in the directory the shell may not read (root in the sandbox has no
    // CAP_DAC_OVERRIDE, so it cannot plant one in the user's directory; the mode does it).
    bash(
        &host,
        &ws,
        "echo topsecret > secret.txt && chmod 000 secret.txt",
    )
    .await;

    // Writes through links that leave the directory are refused, and nothing appears.
    for path in ["etc_link/agent_evil", "evil", "root_link/evil"] {
        let e = host.write_file(&ws, path, b"pwned").await.expect_err(path);
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{path}: {e}");
        assert!(
            e.to_string().contains("outside the working directory"),
            "{e}"
        );
    }
    // A large refused write is refused as fast (the script stops reading its stdin).
    let big = vec![b'x'; 3 << 20];
    let started = std::time::Instant::now();
    let e = host
        .write_file(&ws, "etc_link/big", &big)
        .await
        .expect_err("a large write through /etc");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        as_root(
            &container,
            "ls /etc/agent_evil /etc/big /root/evil 2>/dev/null; true"
        ),
        ""
    );
    // And a large accepted one arrives whole.
    host.write_file(&ws, "big.bin", &big).await.unwrap();
    let back = host.read_file(&ws, "big.bin", 4 << 20).await.unwrap();
    assert_eq!(back.data.len(), big.len());

    // Reads through a link out of the directory are refused, before any permission check.
    let e = host
        .read_file(&ws, "root_link/secret", 1024)
        .await
        .expect_err("read through /root");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    let e = host
        .read_file(&ws, "etc_link/passwd", 1024)
        .await
        .expect_err("read through /etc");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    // A file the user may not read fails as the agent's own `cat` does.
    let cat = bash(&host, &ws, "cat secret.txt").await;
    assert!(cat.contains("Permission denied"), "{cat}");
    let e = host
        .read_file(&ws, "secret.txt", 1024)
        .await
        .expect_err("an unreadable file");
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert!(e.to_string().contains("Permission denied"), "{e}");
    // Nor can it be overwritten.
    let e = host
        .write_file(&ws, "secret.txt", b"x")
        .await
        .expect_err("overwriting a read-only file");
    assert!(e.to_string().contains("Permission denied"), "{e}");

    // Inside the directory everything works, through links that stay in it too, byte for
    // byte, owned by the shell's user.
    let bytes: Vec<u8> = (0u8..=255).chain(b"\n\0end".iter().copied()).collect();
    host.write_file(&ws, "sub/deeper/data.bin", &bytes)
        .await
        .unwrap();
    let back = host
        .read_file(&ws, "inner/deeper/data.bin", 4096)
        .await
        .unwrap();
    assert_eq!(back.data, bytes);
    assert_eq!(back.size, bytes.len() as u64);
    let owner = bash(
        &host,
        &ws,
        "[ \"$(stat -c %u sub/deeper/data.bin)\" = \"$(id -u)\" ] && echo mine",
    )
    .await;
    assert_eq!(owner.trim(), "mine");
    let listed = host.list_files(&ws, ".", true, 100).await.unwrap();
    let paths: Vec<&str> = listed.iter().map(|e| e.path.as_str()).collect();
    assert!(paths.contains(&"sub/deeper/data.bin"), "{paths:?}");
    assert!(paths.contains(&"etc_link"), "{paths:?}");
    // Links are listed, not followed.
    assert!(
        !paths.iter().any(|p| p.starts_with("etc_link/")),
        "{paths:?}"
    );
    let data = listed
        .iter()
        .find(|e| e.path == "sub/deeper/data.bin")
        .unwrap();
    assert_eq!((data.is_dir, data.size), (false, bytes.len() as u64));
    assert!(listed.iter().any(|e| e.path == "sub" && e.is_dir));
    let e = host
        .list_files(&ws, "etc_link", false, 100)
        .await
        .expect_err("listing /etc");
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");

    // A process started in a new session in the background is gone when the call returns.
    let started = bash(&host, &ws, "setsid sleep 1000 & echo started").await;
    assert!(started.contains("started"), "{started}");
    let ps = as_root(&container, "ps -o pid,args");
    assert!(
        !ps.contains("sleep 1000"),
        "a process outlived its call:\n{ps}"
    );

    scheduler.terminate_sandbox(sandbox.id()).await.unwrap();
}

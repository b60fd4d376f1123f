use super::*;
use crate::ErrorKind;

fn setup() -> (tempfile::TempDir, LocalToolHost, Workspace) {
    let dir = tempfile::tempdir().unwrap();
    let sandbox = LocalToolHost::new(dir.path());
    let ws = Workspace {
        container_id: "c1".into(),
        image_id: "img_1".into(),
    };
    (dir, sandbox, ws)
}

fn exec(command: &str, timeout_ms: u64) -> ToolCommand {
    ToolCommand {
        command: command.into(),
        timeout: Duration::from_millis(timeout_ms),
        max_output_bytes: 1024,
    }
}

#[tokio::test]
async fn files_round_trip_inside_the_workspace() {
    let (_d, s, ws) = setup();
    s.write_file(&ws, "notes/a.txt", b"hello").await.unwrap();
    let f = s.read_file(&ws, "notes/a.txt", 3).await.unwrap();
    assert_eq!((f.data.as_slice(), f.size), (&b"hel"[..], 5));
    let root = s.root(&ws).await.unwrap();
    // An absolute path inside the workspace is fine.
    let abs = root.join("notes/a.txt");
    assert_eq!(
        s.read_file(&ws, abs.to_str().unwrap(), 100)
            .await
            .unwrap()
            .data,
        b"hello"
    );
    s.write_file(&ws, "./b.txt", b"x").await.unwrap();
    let names: Vec<_> = s
        .list_files(&ws, "", true, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.path, e.is_dir))
        .collect();
    assert_eq!(
        names,
        [
            ("b.txt".into(), false),
            ("notes".into(), true),
            ("notes/a.txt".into(), false)
        ]
    );
    let top: Vec<_> = s
        .list_files(&ws, ".", false, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.path)
        .collect();
    assert_eq!(top, ["b.txt", "notes"]);
    let err = s.read_file(&ws, "missing.txt", 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

#[tokio::test]
async fn escapes_are_refused() {
    let (d, s, ws) = setup();
    let outside = d.path().join("secret.txt");
    std::fs::write(&outside, "secret").unwrap();
    let root = s.root(&ws).await.unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    std::os::unix::fs::symlink(d.path(), root.join("dirlink")).unwrap();
    std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
    std::fs::write(root.join("inside.txt"), "ok").unwrap();
    std::os::unix::fs::symlink(root.join("inside.txt"), root.join("goodlink")).unwrap();

    for path in [
        "../../../../secret.txt",
        "a/../../x",
        outside.to_str().unwrap(),
        "/etc/passwd",
        "link",
        "dirlink/secret.txt",
        "dirlink/new/file.txt",
    ] {
        let e = s.read_file(&ws, path, 100).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{path}: {e}");
        let e = s.write_file(&ws, path, b"pwned").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{path}: {e}");
    }
    // A dangling symlink is not followed to create a file.
    let e = s.write_file(&ws, "dangling", b"x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    assert!(!root.join("nowhere").exists());
    assert!(s.list_files(&ws, "dirlink", false, 10).await.is_err());
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "secret");
    assert!(!d.path().join("new").exists());
    // A symlink that stays inside is fine.
    assert_eq!(s.read_file(&ws, "goodlink", 100).await.unwrap().data, b"ok");
    // Ids that would name other directories are refused.
    let bad = Workspace {
        container_id: "..".into(),
        image_id: "x".into(),
    };
    assert!(s.read_file(&bad, "a", 1).await.is_err());
    let bad = Workspace {
        container_id: "c1".into(),
        image_id: "a/b".into(),
    };
    assert!(s.write_file(&bad, "a", b"").await.is_err());
}

#[tokio::test]
async fn bash_runs_in_the_workspace_with_exit_codes_and_stderr() {
    let (_d, s, ws) = setup();
    s.write_file(&ws, "f.txt", b"content").await.unwrap();
    let out = s
        .exec(&ws, exec("cat f.txt; pwd; echo oops >&2; exit 3", 10_000))
        .await
        .unwrap();
    let root = s.root(&ws).await.unwrap();
    assert_eq!(out.stdout, format!("content{}\n", root.display()));
    assert_eq!(out.stderr, "oops\n");
    assert_eq!(out.exit_code, Some(3));
    assert!(!out.timed_out && !out.truncated);
}

#[tokio::test]
async fn output_is_capped_and_drained() {
    let (_d, s, ws) = setup();
    let out = s
        .exec(
            &ws,
            exec(
                "head -c 1000000 /dev/zero | tr '\\0' a; echo done >&2",
                10_000,
            ),
        )
        .await
        .unwrap();
    assert_eq!(out.stdout.len(), 1024);
    assert!(out.truncated);
    assert_eq!(out.exit_code, Some(0));
    assert_eq!(out.stderr, "done\n");
}

#[tokio::test]
async fn a_timeout_kills_the_whole_process_group() {
    let (_d, s, ws) = setup();
    let started = std::time::Instant::now();
    // The background sleep holds stdout open; it must die with the group.
    let out = s
        .exec(&ws, exec("sleep 30 & echo started; sleep 30", 300))
        .await
        .unwrap();
    assert!(out.timed_out);
    assert_eq!(out.exit_code, None);
    assert_eq!(out.stdout, "started\n");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn background_leftovers_do_not_outlive_a_finished_command() {
    let (_d, s, ws) = setup();
    let started = std::time::Instant::now();
    let out = s
        .exec(&ws, exec("(sleep 30; echo late) & echo now", 10_000))
        .await
        .unwrap();
    assert_eq!(out.stdout, "now\n");
    assert_eq!(out.exit_code, Some(0));
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn cancelling_exec_kills_the_command() {
    let (d, s, ws) = setup();
    let marker = d.path().join("marker");
    let cmd = format!("sleep 0.5; touch {}", marker.display());
    let run = s.exec(&ws, exec(&cmd, 10_000));
    let _ = tokio::time::timeout(Duration::from_millis(100), run).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert!(
        !marker.exists(),
        "the command ran on after its future was dropped"
    );
}

#[tokio::test]
async fn only_the_containers_the_operator_allows_use_local_tools() {
    let dir = tempfile::tempdir().unwrap();
    let host = LocalToolHost::new(dir.path()).with_policy(LocalToolsPolicy::allow(["allowed"]));
    let ws = |c: &str| Workspace {
        container_id: c.into(),
        image_id: "img_1".into(),
    };
    let out = host
        .exec(&ws("allowed"), exec("echo hi", 5000))
        .await
        .unwrap();
    assert_eq!(out.stdout, "hi\n");
    let e = host
        .exec(&ws("other"), exec("echo hi", 5000))
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized);
    assert!(
        e.to_string().contains("not enabled for container other"),
        "{e}"
    );
    for e in [
        host.read_file(&ws("other"), "a", 10).await.unwrap_err(),
        host.write_file(&ws("other"), "a", b"x").await.unwrap_err(),
        host.list_files(&ws("other"), ".", false, 10)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    }
    // Nothing was made for the refused container.
    assert!(!dir.path().join("containers/other").exists());
}

#[tokio::test]
async fn local_tools_run_as_the_unprivileged_user_when_root() {
    if !running_as_root() {
        eprintln!(
            "not root: local tools cannot switch users here (the server says so when it starts)"
        );
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    // The tools' user must be able to reach its workdir.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = ToolUser::resolve("nobody").unwrap();
    assert_ne!(nobody.uid, 0);
    let host =
        LocalToolHost::new(dir.path()).with_policy(LocalToolsPolicy::allow(["c1"]).run_as(nobody));
    let ws = Workspace {
        container_id: "c1".into(),
        image_id: "img_1".into(),
    };
    let out = host
        .exec(&ws, exec("echo $(id -u):$(id -g):$(id -G)", 5000))
        .await
        .unwrap();
    assert_eq!(
        out.stdout.trim(),
        format!("{}:{}:{}", nobody.uid, nobody.gid, nobody.gid),
        "root's groups are dropped: {out:?}"
    );
    // A root-only file in the workspace: neither bash nor read_file may read it.
    let root = host.root(&ws).await.unwrap();
    let secret = root.join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cat = host.exec(&ws, exec("cat secret", 5000)).await.unwrap();
    assert_ne!(cat.exit_code, Some(0), "{cat:?}");
    assert!(cat.stderr.contains("Permission denied"), "{cat:?}");
    let e = host.read_file(&ws, "secret", 100).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    let e = host.write_file(&ws, "secret", b"x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unauthorized, "{e}");
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "s3cret");
    // What the tools write belongs to the user, so its bash can change it.
    host.write_file(&ws, "d/note.txt", b"hi").await.unwrap();
    let meta = std::fs::metadata(root.join("d/note.txt")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (nobody.uid, nobody.gid));
    let out = host
        .exec(&ws, exec("echo more >> d/note.txt && cat d/note.txt", 5000))
        .await
        .unwrap();
    assert_eq!(out.stdout, "himore\n", "{out:?}");
    // Outside the workspace, root's files stay out of reach for bash.
    let out = host
        .exec(&ws, exec("touch /etc/agentvm_local_evil", 5000))
        .await
        .unwrap();
    assert_ne!(out.exit_code, Some(0));
    assert!(!std::path::Path::new("/etc/agentvm_local_evil").exists());
}

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

//! Group commit on real redb files: durability across a reopen, a failed batch, ordering.

use super::*;
use agentvm_model::scheduler::{ExecStatus, Resources, SandboxStatus};
use redb::backends::FileBackend;
use redb::StorageBackend;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread;
use std::time::Duration;

const ENOSPC: i32 = 28;

fn sandbox(id: &str, activity: i64) -> Sandbox {
    Sandbox {
        id: id.into(),
        template_id: "busybox".into(),
        docker_image: "agentvm-test/busybox:latest".into(),
        node_id: "local".into(),
        docker_container_id: None,
        docker_container_name: format!("agentvm-{id}"),
        status: SandboxStatus::Creating,
        resources: Resources {
            cpu_cores: 0.5,
            memory_mb: 512,
            disk_mb: None,
            pids_limit: 256,
        },
        env: BTreeMap::new(),
        user: "1000:1000".into(),
        uid_gid: None,
        workdir: "/workspace".into(),
        network: "none".into(),
        read_only_root: true,
        owner: None,
        warm: false,
        lifetime_s: 600,
        idle_timeout_s: None,
        idle_action: Default::default(),
        expires_at: 1_700_000_600_000,
        paused_at: None,
        resumed_at: None,
        created_at: 1_700_000_000_000,
        ready_at: None,
        last_activity_at: activity,
        executor_url: None,
        termination: None,
    }
}

fn execution(id: &str, sandbox_id: &str) -> Execution {
    Execution {
        id: id.into(),
        sandbox_id: sandbox_id.into(),
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
    }
}

/// The store on the file at `path`, opened with redb's own file backend.
fn open_file(path: &Path) -> RedbSchedulerStore {
    let database = Database::create(path).expect("open the database file");
    RedbSchedulerStore::open(Arc::new(database)).expect("open the scheduler's tables")
}

/// Waits (up to 10 s) until `f` holds.
fn until(what: &str, f: impl Fn() -> bool) {
    for _ in 0..10_000 {
        if f() {
            return;
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("timed out waiting for {what}");
}

/// A real file whose `fsync`s can be held (so writes queue up behind a commit in progress)
/// and whose writes fail like a full disk when they carry a marked record.
#[derive(Debug)]
struct Disk {
    file: FileBackend,
    /// While true, `sync_data` waits.
    hold: Mutex<bool>,
    released: Condvar,
    /// Syncs waiting in `hold` now.
    held: AtomicUsize,
    /// Writes of data holding these bytes fail with ENOSPC.
    refuse: Vec<u8>,
}

impl Disk {
    fn hold(&self, on: bool) {
        *self.hold.lock().unwrap() = on;
        self.released.notify_all();
    }
}

/// Shares the [`Disk`] with the test, which redb's `Box<dyn StorageBackend>` would not.
#[derive(Debug)]
struct Shared(Arc<Disk>);

impl StorageBackend for Shared {
    fn len(&self) -> std::result::Result<u64, std::io::Error> {
        self.0.file.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::result::Result<(), std::io::Error> {
        self.0.file.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::result::Result<(), std::io::Error> {
        self.0.file.set_len(len)
    }
    fn sync_data(&self) -> std::result::Result<(), std::io::Error> {
        let mut hold = self.0.hold.lock().unwrap();
        if *hold {
            self.0.held.fetch_add(1, Ordering::SeqCst);
            while *hold {
                hold = self.0.released.wait(hold).unwrap();
            }
            self.0.held.fetch_sub(1, Ordering::SeqCst);
        }
        drop(hold);
        self.0.file.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::result::Result<(), std::io::Error> {
        if data
            .windows(self.0.refuse.len())
            .any(|w| w == self.0.refuse)
        {
            return Err(std::io::Error::from_raw_os_error(ENOSPC));
        }
        self.0.file.write(offset, data)
    }
    fn close(&self) -> std::result::Result<(), std::io::Error> {
        self.0.file.close()
    }
}

/// The store on the file at `path` through a [`Disk`] the test controls.
fn open_disk(path: &Path, refuse: &str) -> (RedbSchedulerStore, Arc<Disk>) {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    let disk = Arc::new(Disk {
        file: FileBackend::new(file).unwrap(),
        hold: Mutex::new(false),
        released: Condvar::new(),
        held: AtomicUsize::new(0),
        refuse: refuse.as_bytes().to_vec(),
    });
    let database = Database::builder()
        .create_with_backend(Shared(disk.clone()))
        .unwrap();
    let store = RedbSchedulerStore::open(Arc::new(database)).unwrap();
    (store, disk)
}

/// Starts `f` on a thread and waits until the store's queue holds `queued` writes, so writes
/// started one after the other are queued in that order.
fn queue_up<T: Send + 'static>(
    store: &RedbSchedulerStore,
    queued: usize,
    f: impl FnOnce() -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let writer = thread::spawn(f);
    until(&format!("{queued} writes queued"), || {
        store.queue.queued() == queued
    });
    writer
}

/// Holds the disk and starts one write, whose commit then waits in its fsync: what is
/// written next queues up behind it and goes into one batch once the disk is released.
fn hold_a_commit(store: &RedbSchedulerStore, disk: &Arc<Disk>) -> thread::JoinHandle<Result<()>> {
    disk.hold(true);
    let s = store.clone();
    let first = thread::spawn(move || s.put_sandbox(&sandbox("sbx_first", 0)));
    until("a commit waiting in fsync", || {
        disk.held.load(Ordering::SeqCst) > 0
    });
    first
}

#[test]
fn many_concurrent_writers_share_commits_and_all_of_them_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sched.redb");
    let store = open_file(&path);
    let (threads, each) = (16, 40);
    let writers: Vec<_> = (0..threads)
        .map(|t| {
            let store = store.clone();
            thread::spawn(move || {
                let mut acknowledged = Vec::new();
                for i in 0..each {
                    let id = format!("sbx_{t:02}_{i:03}");
                    store.put_sandbox(&sandbox(&id, i)).unwrap();
                    // Each writer also rewrites its first sandbox: the last write must win.
                    store
                        .put_sandbox(&sandbox(&format!("sbx_{t:02}_000"), 1000 + i))
                        .unwrap();
                    store
                        .put_execution(&execution(&format!("exec_{t:02}_{i:03}"), &id))
                        .unwrap();
                    acknowledged.push(id);
                }
                acknowledged
            })
        })
        .collect();
    let acknowledged: Vec<String> = writers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    let stats = store.commit_stats();
    assert_eq!(stats.writes, (threads * each * 3) as u64);
    assert!(
        stats.commits < stats.writes,
        "{threads} writers never shared a commit: {stats:?}"
    );
    drop(store);

    let store = open_file(&path);
    let stored: BTreeMap<String, Sandbox> = store
        .list_sandboxes()
        .unwrap()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    assert_eq!(stored.len(), acknowledged.len());
    for id in &acknowledged {
        let s = stored.get(id).unwrap_or_else(|| panic!("{id} lost"));
        let (t, i): (usize, i64) = (id[4..6].parse().unwrap(), id[7..].parse().unwrap());
        let expected = if i == 0 { 1000 + each - 1 } else { i };
        assert_eq!(s.last_activity_at, expected, "{id} (writer {t})");
        assert_eq!(
            store.list_executions(id).unwrap(),
            vec![execution(&format!("exec_{}", &id[4..]), id)]
        );
    }
}

#[test]
fn writes_queued_together_land_in_the_order_they_were_made() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sched.redb");
    let (store, disk) = open_disk(&path, "never written");
    let first = hold_a_commit(&store, &disk);
    // One batch: v1, an execution, v2, delete (existed), delete again (gone), v3.
    let s = store.clone();
    let put1 = queue_up(&store, 1, move || s.put_sandbox(&sandbox("sbx_x", 1)));
    let s = store.clone();
    let exec = queue_up(&store, 2, move || {
        s.put_execution(&execution("exec_x", "sbx_x"))
    });
    let s = store.clone();
    let put2 = queue_up(&store, 3, move || s.put_sandbox(&sandbox("sbx_x", 2)));
    let s = store.clone();
    let delete1 = queue_up(&store, 4, move || s.delete_sandbox("sbx_x"));
    let s = store.clone();
    let delete2 = queue_up(&store, 5, move || s.delete_sandbox("sbx_x"));
    let s = store.clone();
    let put3 = queue_up(&store, 6, move || s.put_sandbox(&sandbox("sbx_x", 3)));
    let before = store.commit_stats();
    disk.hold(false);
    first.join().unwrap().unwrap();
    for w in [put1, exec, put2, put3] {
        w.join().unwrap().unwrap();
    }
    assert!(
        delete1.join().unwrap().unwrap(),
        "the first delete found it"
    );
    assert!(!delete2.join().unwrap().unwrap(), "the second did not");
    let after = store.commit_stats();
    assert_eq!(
        (after.commits - before.commits, after.writes - before.writes),
        (2, 7),
        "the first commit, then the six queued writes as one"
    );
    let check = |store: &RedbSchedulerStore| {
        let x = store.get_sandbox("sbx_x").unwrap().expect("sbx_x");
        assert_eq!(x.last_activity_at, 3, "the last write won");
        assert!(store.list_executions("sbx_x").unwrap().is_empty());
        assert!(store.get_execution("exec_x").unwrap().is_none());
    };
    check(&store);
    drop(store);
    check(&open_file(&path));
}

#[test]
fn a_failed_commit_fails_exactly_its_batch_and_nothing_of_it_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sched.redb");
    let (store, disk) = open_disk(&path, "refused-by-the-disk");
    let first = hold_a_commit(&store, &disk);
    let mut batch = Vec::new();
    for i in 1..=5 {
        let s = store.clone();
        batch.push(queue_up(&store, i, move || {
            let mut r = sandbox(&format!("sbx_batch_{i}"), i as i64);
            if i == 3 {
                r.env.insert("MARK".into(), "refused-by-the-disk".into());
            }
            s.put_sandbox(&r)
        }));
    }
    disk.hold(false);
    first
        .join()
        .unwrap()
        .expect("the commit ahead of the batch succeeded");
    for w in batch {
        let e = w
            .join()
            .unwrap()
            .expect_err("every write of the batch fails");
        assert_eq!(e.kind(), agentvm_model::ErrorKind::Storage);
        assert!(
            e.chain().contains("a commit of 5 scheduler records"),
            "{}",
            e.chain()
        );
        // The real cause, as a redb storage error (the runtime reopens its file on these).
        let source = std::error::Error::source(&e).expect("a source");
        match source.downcast_ref::<redb::StorageError>() {
            Some(redb::StorageError::Io(io)) => assert_eq!(io.raw_os_error(), Some(ENOSPC)),
            other => panic!("expected the disk's ENOSPC, got {other:?}"),
        }
    }
    // redb refuses every write after an I/O failure until the file is reopened: the next
    // write is answered at once with that, not left waiting behind the failed batch.
    let e = store.put_sandbox(&sandbox("sbx_after", 0)).unwrap_err();
    let source = std::error::Error::source(&e).expect("a source");
    assert!(
        matches!(
            source.downcast_ref::<redb::StorageError>(),
            Some(redb::StorageError::PreviousIo)
        ),
        "{}",
        e.chain()
    );
    drop(store);

    let store = open_file(&path);
    let ids: Vec<String> = store
        .list_sandboxes()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(ids, vec!["sbx_first".to_string()], "nothing of the batch");
    store.put_sandbox(&sandbox("sbx_after", 0)).unwrap();
    drop(store);
    assert!(open_file(&path).get_sandbox("sbx_after").unwrap().is_some());
}

//! Crash safety: a child process appending messages is killed with SIGKILL at random points,
//! many rounds. Reopening always succeeds and every message whose append had returned is
//! present, exactly once, in order.

use agentvm::{RedbStore, Store};
use rand::Rng;
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

const ROUNDS: usize = 40;

#[test]
fn sigkill_never_loses_an_acknowledged_message() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("agentvm.redb");
    let mut rng = rand::rng();
    let mut acknowledged: Vec<String> = Vec::new();
    let mut killed_mid_run = 0;
    for round in 0..ROUNDS {
        let mut child = Command::new(env!("CARGO_BIN_EXE_append-child"))
            .arg(&db)
            .arg(round.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter_map(|l| l.strip_prefix("ok ").map(str::to_string))
                .collect::<Vec<_>>()
        });
        // Anywhere from during open to a few hundred appends in.
        std::thread::sleep(Duration::from_micros(rng.random_range(0..60_000)));
        if child.try_wait().unwrap().is_none() {
            killed_mid_run += 1;
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        let acks = reader.join().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        assert!(
            !stderr.contains("failed"),
            "round {round}: the child failed on its own ({status}): {stderr}"
        );
        acknowledged.extend(acks);

        // Reopen after every kill: must succeed and hold every acknowledged message once.
        let store = RedbStore::open(&db)
            .unwrap_or_else(|e| panic!("round {round}: reopening failed: {}", e.chain()));
        let stored: Vec<String> = store
            .list_messages("sess_crash")
            .unwrap()
            .into_iter()
            .map(|m| m.id)
            .collect();
        let unique: HashSet<&String> = stored.iter().collect();
        assert_eq!(
            unique.len(),
            stored.len(),
            "round {round}: a message is stored twice"
        );
        let stored_set: HashSet<&String> = stored.iter().collect();
        for id in &acknowledged {
            assert!(
                stored_set.contains(id),
                "round {round}: acknowledged message {id} is lost"
            );
        }
        // Stored order is append order: within a round, indices increase.
        let mut last: Option<(usize, usize)> = None;
        for id in &stored {
            let (r, i) = id[1..].split_once('-').unwrap();
            let key = (r.parse().unwrap(), i.parse().unwrap());
            if let Some(prev) = last {
                assert!(key > prev, "round {round}: {id} stored out of order");
            }
            last = Some(key);
        }
        drop(store);
    }
    assert!(
        acknowledged.len() > 100,
        "too few appends to mean anything: {}",
        acknowledged.len()
    );
    assert!(
        killed_mid_run > ROUNDS / 2,
        "most kills must land mid-run: {killed_mid_run}"
    );
}

//! The warm pool (claims hit after a refill, miss when empty, counters right), the sandboxes
//! agents share per owner, and the sweep of expired and idle sandboxes.

use agentvm::scheduler::{ExecRequest, SandboxRequest, SandboxStatus, TerminationReason};
use agentvm::SchedulerConfig;
use agentvm_e2e::docker::*;
use std::time::{Duration, Instant};

fn manual() -> SchedulerConfig {
    // No background loop: the test decides when pools refill and sweeps run.
    SchedulerConfig {
        background: false,
        ..fast_config()
    }
}

#[tokio::test]
async fn claims_hit_after_a_refill_and_miss_when_empty() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(manual()).await;
    let mut spec = busybox_spec();
    spec.warm_pool_size = 2;
    spec.default_cpu_cores = 0.1;
    s.create_template("busybox", spec).await.unwrap();
    assert_eq!(s.fill_pool("busybox").await.unwrap(), 2);
    assert_eq!(s.metrics().pool_ready, 2);
    assert!(
        s.list_sandboxes().await.unwrap().is_empty(),
        "warm sandboxes are not listed"
    );

    let t = Instant::now();
    let a = s
        .create_sandbox(SandboxRequest {
            owner: Some("c1".into()),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    let claim = t.elapsed();
    assert!(claim < Duration::from_millis(100), "a claim took {claim:?}");
    eprintln!("warm claim took {claim:?}");
    assert_eq!(
        (a.owner.as_deref(), a.warm, a.status),
        (Some("c1"), false, SandboxStatus::Running)
    );
    assert!(a.expires_at > 0);
    assert_eq!(
        s.exec_collect(&a.id, ExecRequest::shell("echo warm"))
            .await
            .unwrap()
            .stdout,
        "warm\n"
    );
    let _b = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    // Both were hits; each claim started a background refill.
    let m = s.metrics();
    assert_eq!(
        (m.pool_hits, m.pool_misses, m.cold_starts),
        (2, 0, 0),
        "{m:?}"
    );
    // Wait for the refills the claims started.
    eventually(Duration::from_secs(20), "the pool refilled", || async {
        s.metrics().pool_ready == 2
    })
    .await;
    let _c = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    let _d = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    let m = s.metrics();
    assert_eq!(m.pool_hits, 4, "{m:?}");
    // Each claim was timed (and none took a cold start's seconds).
    let claims = s.latency().pool_claim;
    assert_eq!(claims.count, 4, "{claims:?}");
    assert!(claims.sum_seconds < 4.0, "{claims:?}");
    // Claims refill in the background; a claim racing an empty pool starts cold.
    let mut misses = 0;
    for _ in 0..3 {
        let before = s.metrics();
        let _x = s
            .create_sandbox(SandboxRequest::new("busybox"))
            .await
            .unwrap();
        let after = s.metrics();
        if after.pool_misses > before.pool_misses {
            misses += 1;
            assert_eq!(after.cold_starts, before.cold_starts + 1);
        } else {
            assert_eq!(after.pool_hits, before.pool_hits + 1);
        }
    }
    assert!(
        misses >= 1,
        "three claims right after emptying a pool of two: at least one miss"
    );
    // A request that overrides the defaults bypasses the pool: a cold start, no hit or miss.
    let before = s.metrics();
    let big = s
        .create_sandbox(SandboxRequest {
            memory_mb: Some(64),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    let after = s.metrics();
    assert_eq!(
        (after.pool_hits, after.pool_misses, after.cold_starts),
        (before.pool_hits, before.pool_misses, before.cold_starts + 1)
    );
    assert_eq!(big.resources.memory_mb, 64);
    // Changing the template drains the pool.
    eventually(Duration::from_secs(20), "the pool refilled", || async {
        s.metrics().pool_ready == 2
    })
    .await;
    let mut spec = busybox_spec();
    spec.default_cpu_cores = 0.1;
    spec.warm_pool_size = 0;
    s.update_template("busybox", spec).await.unwrap();
    assert_eq!(s.metrics().pool_ready, 0);
    for sb in s.list_sandboxes().await.unwrap() {
        s.terminate_sandbox(&sb.id).await.unwrap();
    }
    eventually(Duration::from_secs(20), "no container left", || async {
        containers_of(&local().await, s.instance()).await.is_empty()
    })
    .await;
}

#[tokio::test]
async fn owners_share_one_sandbox_until_it_idles_out() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(manual()).await;
    let mut spec = busybox_spec();
    spec.idle_timeout_s = Some(1);
    s.create_template("busybox", spec).await.unwrap();
    let (x, y) = tokio::join!(
        s.sandbox_for_owner("user-alice", "busybox"),
        s.sandbox_for_owner("user-alice", "busybox")
    );
    let (x, y) = (x.unwrap(), y.unwrap());
    assert_eq!(x.id(), y.id(), "concurrent first calls share one sandbox");
    x.write_file("note.txt", b"from agent one".to_vec())
        .await
        .unwrap();
    let seen = y
        .exec("cat note.txt", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(seen.stdout, "from agent one");
    let other = s.sandbox_for_owner("user-bob", "busybox").await.unwrap();
    assert_ne!(other.id(), x.id());
    assert_eq!(s.list_files(x.id(), ".").await.unwrap()[0].name, "note.txt");

    tokio::time::sleep(Duration::from_millis(1200)).await;
    let report = s.sweep().await.unwrap();
    assert!(report.idle.contains(&x.id().to_string()), "{report:?}");
    assert!(report.idle.contains(&other.id().to_string()), "{report:?}");
    let ended = s.get_sandbox(x.id()).await.unwrap().unwrap();
    assert_eq!(ended.termination.unwrap().reason, TerminationReason::Idle);
    let again = s.sandbox_for_owner("user-alice", "busybox").await.unwrap();
    assert_ne!(
        again.id(),
        x.id(),
        "a reaped sandbox is replaced on the next use"
    );
    assert_eq!(s.release_owner("user-alice").await.unwrap(), 1);
    assert_eq!(
        s.release_owner("user-bob").await.unwrap(),
        0,
        "bob's idled out already"
    );
    assert!(containers_of(&local().await, s.instance()).await.is_empty());
}

#[tokio::test]
async fn the_sweep_times_out_expired_sandboxes() {
    if !require_docker().await {
        return;
    }
    let s = local_scheduler(manual()).await;
    s.create_template("busybox", busybox_spec()).await.unwrap();
    let sb = s
        .create_sandbox(SandboxRequest {
            timeout_s: Some(1),
            ..SandboxRequest::new("busybox")
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let report = s.sweep().await.unwrap();
    assert_eq!(report.expired, vec![sb.id.clone()]);
    let ended = s.get_sandbox(&sb.id).await.unwrap().unwrap();
    assert_eq!(ended.status, SandboxStatus::Timeout);
    assert!(containers_of(&local().await, s.instance()).await.is_empty());
}

//! Reconciliation: the scheduler is dropped without cleanup (as if killed), a new one opens the
//! same store file, and every surviving container is adopted or removed as configured;
//! none is leaked.

use agentvm::scheduler::{
    ExecRequest, NodeRegistration, OrphanPolicy, SandboxRequest, SandboxStatus, Scheduler,
    TerminationReason,
};
use agentvm::{RedbStore, SchedulerConfig, Store};
use agentvm_e2e::docker::*;
use bollard::models::ContainerCreateBody;
use std::collections::HashMap;

async fn open(path: &std::path::Path, orphans: OrphanPolicy) -> Scheduler {
    // A pool refill started by the previous scheduler may still hold the file for a moment.
    let start = std::time::Instant::now();
    let store = loop {
        match RedbStore::open(path) {
            Ok(s) => break s,
            Err(e) if start.elapsed() < std::time::Duration::from_secs(20) => {
                assert_eq!(e.kind(), agentvm::ErrorKind::Unavailable, "{e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let mut reg = NodeRegistration::new("local", ENDPOINT);
    reg.total_cpu_cores = Some(4.0);
    reg.total_memory_mb = Some(8192);
    Scheduler::builder()
        .store(store.scheduler_store().unwrap())
        .config(SchedulerConfig {
            orphans,
            background: false,
            ..fast_config()
        })
        .node(reg)
        .open()
        .await
        .expect("open the scheduler")
}

#[tokio::test]
async fn survivors_are_adopted_and_strays_removed() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agentvm.redb");
    let d = local().await;
    let (ids, instance, gone) = {
        let s = open(&path, OrphanPolicy::Adopt).await;
        let mut spec = busybox_spec();
        spec.warm_pool_size = 1;
        s.create_template("busybox", spec).await.unwrap();
        assert_eq!(s.fill_pool("busybox").await.unwrap(), 1);
        let mut ids = Vec::new();
        for i in 0..3 {
            let sb = s
                .create_sandbox(SandboxRequest {
                    owner: Some(format!("c{i}")),
                    cpu_cores: Some(0.25),
                    ..SandboxRequest::new("busybox")
                })
                .await
                .unwrap();
            ids.push(sb.id);
        }
        // One whose container disappears while agentvm is down.
        let gone = s
            .create_sandbox(SandboxRequest {
                cpu_cores: Some(0.25),
                ..SandboxRequest::new("busybox")
            })
            .await
            .unwrap();
        (ids, s.instance().to_string(), gone)
        // Dropped here with no cleanup: the containers keep running.
    };
    let rm = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
        .force(true)
        .build();
    d.remove_container(&gone.docker_container_name, Some(rm))
        .await
        .unwrap();
    // A stray with our label and no record (a crash between create and record).
    let mut labels = HashMap::new();
    labels.insert("agentvm.instance".to_string(), instance.clone());
    labels.insert("agentvm.sandbox".to_string(), "sbx_stray".to_string());
    let stray = d
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            ContainerCreateBody {
                image: Some(TEST_IMAGE.into()),
                cmd: Some(vec!["true".into()]),
                labels: Some(labels),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(containers_of(&d, &instance).await.len(), 5 + 1 - 1);

    let s = open(&path, OrphanPolicy::Adopt).await;
    assert_eq!(
        s.instance(),
        instance,
        "the instance id is kept in the store"
    );
    let report = s.reconcile().await.unwrap();
    assert!(
        report.adopted.is_empty(),
        "open() already reconciled: {report:?}"
    );
    let m = s.metrics();
    assert_eq!(m.adopted, 4, "3 sandboxes + 1 warm: {m:?}");
    assert_eq!(m.orphans_removed, 1);
    assert_eq!(m.pool_ready, 1, "the warm one is back in its pool");
    for id in &ids {
        let sb = s.get_sandbox(id).await.unwrap().unwrap();
        assert_eq!(sb.status, SandboxStatus::Running);
        let hi = s
            .exec_collect(id, ExecRequest::shell("echo adopted"))
            .await
            .unwrap();
        assert_eq!(hi.stdout, "adopted\n");
    }
    let lost = s.get_sandbox(&gone.id).await.unwrap().unwrap();
    assert_eq!(lost.status, SandboxStatus::Failed);
    assert_eq!(
        lost.termination.unwrap().reason,
        TerminationReason::ContainerLost
    );
    assert!(
        d.inspect_container(
            &stray.id,
            None::<bollard::query_parameters::InspectContainerOptions>
        )
        .await
        .is_err(),
        "the stray was removed"
    );
    let node = s.get_node("local").unwrap().unwrap();
    assert_eq!(
        node.running_containers, 4,
        "adopted sandboxes count against the node"
    );
    // A claim is served by the adopted warm sandbox.
    let claimed = s
        .create_sandbox(SandboxRequest::new("busybox"))
        .await
        .unwrap();
    assert_eq!(s.metrics().pool_hits, 1, "{claimed:?}");
    drop(s);

    // Again, configured to remove: nothing survives, every record says why.
    let s = open(&path, OrphanPolicy::Remove).await;
    assert_eq!(s.metrics().adopted, 0);
    assert!(
        containers_of(&d, &instance).await.is_empty(),
        "no container leaked"
    );
    for id in ids.iter().chain([&claimed.id]) {
        let sb = s.get_sandbox(id).await.unwrap().unwrap();
        assert_eq!(sb.status, SandboxStatus::Terminated);
        assert_eq!(
            sb.termination.unwrap().reason,
            TerminationReason::Reconciled
        );
    }
}

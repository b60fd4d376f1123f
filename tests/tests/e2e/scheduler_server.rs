//! The scheduler on agentvm-server's port: its routes behind the server's auth (operator
//! tokens only), its counters in `/metrics`, sandboxes created and exec'd over REST.

use agentvm::scheduler::{NodeRegistration, Scheduler};
use agentvm::AgentVm;
use agentvm_e2e::docker::{require_docker, ENDPOINT, TEST_IMAGE};
use agentvm_server::{AuthMode, ServerConfig, ServerManager};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduler_routes_are_operator_only_and_counted_in_metrics() {
    if !require_docker().await {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeRegistration::new("local", ENDPOINT);
    node.max_containers = 20;
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .scheduler(Scheduler::builder().node(node))
        .open()
        .await
        .unwrap();
    let scheduler = vm.scheduler().unwrap().clone();
    let server = ServerManager::new(
        vm.clone(),
        ServerConfig {
            auth: AuthMode::Required,
            ..Default::default()
        },
    );
    let addr = server.listen("127.0.0.1:0").await.unwrap();
    let base = format!("http://{addr}");
    let (tenant, _) = agentvm::auth::create_token(&**vm.store(), Some(vec!["a".into()])).unwrap();
    let (admin, _) = agentvm::auth::create_token(&**vm.store(), None).unwrap();
    let c = reqwest::Client::new();

    // No token, and a tenant's token, are refused.
    let r = c.get(format!("{base}/v1/nodes")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/v1/nodes"))
        .bearer_auth(&tenant)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("needs a token for all containers"));
    let r = c
        .post(format!("{base}/internal/runtime/heartbeat"))
        .json(&json!({"node_id":"x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // The operator creates a template and a sandbox, and runs a command with streamed output.
    let nodes: Value = c
        .get(format!("{base}/v1/nodes"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes[0]["status"], "online", "{nodes}");
    let r = c
        .post(format!("{base}/v1/templates"))
        .bearer_auth(&admin)
        .json(&json!({"id":"busybox","name":"busybox","image": TEST_IMAGE,"defaultCpuCores":0.5,"defaultMemoryMb":128,"workdir":"/workspace"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let sandbox: Value = c
        .post(format!("{base}/v1/sandboxes"))
        .bearer_auth(&admin)
        .json(&json!({"templateId":"busybox"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sandbox["id"].as_str().unwrap().to_string();
    let text = c
        .post(format!("{base}/v1/sandboxes/{id}/exec"))
        .bearer_auth(&admin)
        .json(&json!({"command":["/bin/sh","-c","echo hi"]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"{"stream":"stdout","data":"hi\n"}"#),
        "{text}"
    );

    // Counters in the server's Prometheus text.
    let metrics = c
        .get(format!("{base}/metrics"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("agentvm_pool_hits_total 0"), "{metrics}");
    assert!(
        metrics.contains("agentvm_sandbox_cold_starts_total 1"),
        "{metrics}"
    );
    assert!(metrics.contains("agentvm_executions_total 1"), "{metrics}");
    // Egress refusals by reason, every reason present from the start.
    assert!(
        metrics.contains("agentvm_egress_refusals_total{reason=\"not_allowed\"} 0\n"),
        "{metrics}"
    );
    assert_eq!(
        metrics
            .matches("agentvm_egress_refusals_total{reason=")
            .count(),
        6,
        "{metrics}"
    );
    // The exec's latency, in its histogram; no warm pool, so no claim was timed.
    assert!(
        metrics.contains("agentvm_sandbox_exec_duration_seconds_count 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentvm_pool_claim_duration_seconds_count 0\n"),
        "{metrics}"
    );
    // The one cold start was placed once.
    assert!(
        metrics.contains("agentvm_placement_duration_seconds_count 1\n"),
        "{metrics}"
    );
    assert!(metrics.contains("agentvm_nodes_online 1"), "{metrics}");
    // What the live sandbox uses, per node (no per-sandbox series).
    assert!(
        metrics.contains("agentvm_node_sandboxes{node=\"local\"} 1"),
        "{metrics}"
    );
    let memory: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("agentvm_node_sandbox_memory_bytes{node=\"local\"} "))
        .expect("a memory gauge for node local")
        .parse()
        .unwrap();
    assert!(memory > 0.0, "{metrics}");
    assert!(!metrics.contains(&id), "no series names a sandbox");

    // Pause, usage and resume over REST.
    let paused: Value = c
        .post(format!("{base}/v1/sandboxes/{id}/pause"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(paused["status"], "paused", "{paused}");
    let r = c
        .post(format!("{base}/v1/sandboxes/{id}/pause"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "pausing a paused sandbox");
    let usage: Value = c
        .get(format!("{base}/v1/sandboxes/{id}/usage"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(usage["status"], "paused", "{usage}");
    assert!(usage["memoryBytes"].as_u64().unwrap() > 0, "{usage}");
    let r = c
        .post(format!("{base}/v1/sandboxes/{id}/extend"))
        .bearer_auth(&admin)
        .json(&json!({"ttlS": -3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a negative ttl");
    let resumed: Value = c
        .post(format!("{base}/v1/sandboxes/{id}/resume"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(resumed["status"], "running", "{resumed}");

    scheduler.terminate_sandbox(&id).await.unwrap();
    server.close().await;
}

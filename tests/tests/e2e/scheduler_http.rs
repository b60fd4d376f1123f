//! The scheduler's HTTP interface over real HTTP on 127.0.0.1: REST under /v1 with a streamed
//! exec, files, JSON errors with the right status, and the /internal/runtime protocol driven by
//! the node agent (`node_agent::join`).

use agentvm::scheduler::{NodeStatus, Scheduler};
use agentvm::SchedulerConfig;
use agentvm_e2e::docker::*;
use agentvm_server::node_agent::{join, JoinOptions};
use agentvm_server::{ServerConfig, ServerManager};
use serde_json::{json, Value};
use std::time::Duration;

/// agentvm-server on 127.0.0.1 for a runtime embedding this scheduler; its handle and URL.
async fn serve(builder: agentvm::scheduler::SchedulerBuilder) -> (Scheduler, String) {
    let vm = agentvm::AgentVm::builder()
        .scheduler(builder)
        .open()
        .await
        .expect("open the runtime");
    let s = vm.scheduler().expect("the runtime's scheduler").clone();
    let server = ServerManager::new(vm, ServerConfig::default());
    let addr = server.listen("127.0.0.1:0").await.expect("listen");
    // The server lives as long as the test process.
    Box::leak(Box::new(server));
    (s, format!("http://{addr}"))
}

async fn error_of(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("a JSON error body"))
}

#[tokio::test]
async fn rest_exec_stream_files_and_errors() {
    if !require_docker().await {
        return;
    }
    let (s, base) = serve(Scheduler::builder().config(fast_config())).await;
    let c = reqwest::Client::new();

    let r = c
        .post(format!("{base}/v1/nodes"))
        .json(&json!({"node_id": "local", "api_endpoint": ENDPOINT, "total_cpu_cores": 4.0, "total_memory_mb": 8192}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "online");
    let r = c
        .post(format!("{base}/v1/templates"))
        .json(
            &json!({"id": "busybox", "name": "busybox", "image": TEST_IMAGE, "defaultCpuCores": 0.5,
                      "defaultMemoryMb": 128, "workdir": "/workspace"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{:?}", r.text().await);
    let sandbox: Value = c
        .post(format!("{base}/v1/sandboxes"))
        .json(&json!({"templateId": "busybox", "owner": "user-alice"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sandbox["status"], "running");
    let id = sandbox["id"].as_str().unwrap().to_string();

    // exec: NDJSON lines, streamed, the execution last.
    let r = c
        .post(format!("{base}/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": ["/bin/sh", "-c", "echo hi; echo err >&2"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.contains(&json!({"stream": "stdout", "data": "hi\n"})),
        "{text}"
    );
    assert!(
        lines.contains(&json!({"stream": "stderr", "data": "err\n"})),
        "{text}"
    );
    let last = lines.last().unwrap();
    assert_eq!(
        (last["exitCode"].clone(), last["status"].clone()),
        (json!(0), json!("completed"))
    );
    let exec_id = last["id"].as_str().unwrap();
    // One string is a shell line, as in every binding.
    let text = c
        .post(format!("{base}/v1/sandboxes/{id}/exec"))
        .json(&json!({"command": "echo $((1+2)) | tr 3 x"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| serde_json::from_str::<Value>(l).unwrap()
                == json!({"stream": "stdout", "data": "x\n"})),
        "{text}"
    );
    let stored: Value = c
        .get(format!("{base}/v1/executions/{exec_id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stored["stdout"], "hi\n");
    let listed: Vec<Value> = c
        .get(format!("{base}/v1/sandboxes/{id}/executions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.len(), 2, "the argv exec and the shell line");

    // files
    let r = c
        .put(format!("{base}/v1/sandboxes/{id}/files?path=data.bin"))
        .body(vec![0u8, 1, 2, 255])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let bytes = c
        .get(format!(
            "{base}/v1/sandboxes/{id}/files?path=/workspace/data.bin"
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &[0u8, 1, 2, 255]);
    let entries: Vec<Value> = c
        .get(format!(
            "{base}/v1/sandboxes/{id}/files/list?path=/workspace"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(entries[0]["name"], "data.bin");
    assert_eq!(entries[0]["size"], 4);

    // errors: JSON with a kind and the status of the kind
    let (st, e) = error_of(
        c.post(format!("{base}/v1/sandboxes"))
            .json(&json!({"templateId": "nope"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["kind"].as_str(), e["error"].as_str()),
        (404, Some("not_found"), Some("Template not found: nope"))
    );
    let (st, e) = error_of(
        c.post(format!("{base}/v1/sandboxes"))
            .json(&json!({"templateId": "busybox", "gpus": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (400, Some("invalid_input")));
    assert!(
        e["error"]
            .as_str()
            .unwrap()
            .contains("unknown field `gpus`"),
        "{e}"
    );
    let (st, e) = error_of(
        c.post(format!("{base}/v1/sandboxes"))
            .json(&json!({"templateId": "busybox", "cpuCores": 99}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (st, e["kind"].as_str()),
        (400, Some("invalid_input")),
        "{e}"
    );
    let (st, _) = error_of(
        c.post(format!("{base}/v1/sandboxes"))
            .body("{")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 400);
    let (st, e) = error_of(
        c.get(format!("{base}/v1/sandboxes/{id}/files?path=/nope"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (404, Some("not_found")), "{e}");
    let (st, _) = error_of(
        c.post(format!("{base}/v1/templates"))
            .json(&json!({"id":"busybox","name":"b","image":TEST_IMAGE}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, 409);

    // executors report through /internal/runtime
    let docker_id = sandbox["containerId"].as_str().unwrap();
    let r = c
        .post(format!("{base}/internal/runtime/containers/ready"))
        .json(
            &json!({"container_id": docker_id, "session_id": id, "executor_url": "http://x:8080"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<Value>().await.unwrap()["executorUrl"],
        "http://x:8080"
    );
    let r = c
        .post(format!("{base}/internal/runtime/containers/exited"))
        .json(&json!({"container_id": docker_id, "exit_code": 0}))
        .send()
        .await
        .unwrap();
    let ended: Value = r.json().await.unwrap();
    assert_eq!(
        (
            ended["status"].as_str(),
            ended["termination"]["reason"].as_str()
        ),
        (Some("completed"), Some("container_exited"))
    );
    let (st, e) = error_of(
        c.post(format!("{base}/v1/sandboxes/{id}/exec"))
            .json(&json!({"command": ["true"]}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (409, Some("conflict")), "{e}");
    assert_eq!(
        c.delete(format!("{base}/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        c.get(format!("{base}/v1/sandboxes/{id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let m: Value = c
        .get(format!("{base}/v1/metrics"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["executions"], 2);
    assert!(containers_of(&local().await, s.instance()).await.is_empty());
}

#[tokio::test]
async fn a_node_agent_joins_heartbeats_and_goes_offline_when_stopped() {
    if !require_docker().await {
        return;
    }
    let (s, base) = serve(Scheduler::builder().config(SchedulerConfig {
        internal_token: Some("t0ken".into()),
        ..fast_config()
    }))
    .await;
    let c = reqwest::Client::new();
    // Without the token the internal endpoints refuse.
    let (st, e) = error_of(
        c.post(format!("{base}/internal/runtime/heartbeat"))
            .json(&json!({"node_id": "n"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((st, e["kind"].as_str()), (401, Some("unauthorized")));
    let mut bad = JoinOptions::new(&base, "edge-1", ENDPOINT);
    bad.token = Some("wrong".into());
    let e = join(bad).await.unwrap_err();
    assert_eq!(e.kind(), agentvm::ErrorKind::Unauthorized, "{e}");

    let mut opts = JoinOptions::new(&base, "edge-1", ENDPOINT);
    opts.token = Some("t0ken".into());
    opts.heartbeat_interval = Duration::from_millis(200);
    let agent = tokio::spawn(join(opts));
    eventually(
        Duration::from_secs(5),
        "edge-1 registered online",
        || async {
            s.get_node("edge-1")
                .unwrap()
                .is_some_and(|n| n.status == NodeStatus::Online)
        },
    )
    .await;
    let node = s.get_node("edge-1").unwrap().unwrap();
    assert_eq!(node.liveness, agentvm::scheduler::Liveness::Heartbeat);
    assert!(
        node.total_cpu_cores > 0.0 && node.total_memory_mb > 0,
        "capacity asked from Docker: {node:?}"
    );
    // Still online well past offline_after: the heartbeats keep it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        s.get_node("edge-1").unwrap().unwrap().status,
        NodeStatus::Online
    );
    agent.abort();
    eventually(Duration::from_secs(5), "edge-1 offline", || async {
        s.get_node("edge-1").unwrap().unwrap().status == NodeStatus::Offline
    })
    .await;
    let nodes: Vec<Value> = c
        .get(format!("{base}/v1/nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes[0]["status"], "offline");
    assert!(nodes[0]["status_message"]
        .as_str()
        .unwrap()
        .contains("no heartbeat"));
    let r = c
        .post(format!("{base}/v1/nodes/edge-1/status"))
        .json(&json!({"status": "offline"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

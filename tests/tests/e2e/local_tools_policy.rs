//! Local tools under the operator's policy, through real turns: an agent of a container the
//! operator allowed runs `bash` on this host (as `nobody` when the runtime is root); an agent
//! of any other container gets a clear `unauthorized` tool error, whatever its image enables.

use agentvm::toolhost::local::{running_as_root, LocalToolsPolicy, ToolUser};
use agentvm::*;
use agentvm_e2e::collect_turn;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

fn tool_result(events: &[Event]) -> (String, bool) {
    events
        .iter()
        .find_map(|e| match &e.payload {
            EventPayload::ToolResult {
                result, is_error, ..
            } => Some((result.clone(), is_error.unwrap_or(false))),
            _ => None,
        })
        .expect("a tool_result event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_containers_run_local_tools_and_as_the_tools_user() {
    let dir = tempfile::tempdir().unwrap();
    // The tools' user must be able to reach the workdirs.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut policy = LocalToolsPolicy::allow(["trusted"]);
    let nobody = ToolUser::resolve("nobody").unwrap();
    if running_as_root() {
        policy = policy.run_as(nobody);
    }
    let vm = AgentVm::builder()
        .data_dir(dir.path())
        .llm(Arc::new(MockDriver::new(MockScenario::WithTool)))
        .local_tools_policy(policy)
        .open()
        .await
        .unwrap();
    let config = ImageConfig {
        tools: Some(vec!["bash".into()]),
        ..Default::default()
    };
    let mut results = Vec::new();
    for container in ["trusted", "tenant"] {
        let img = vm
            .images()
            .create(container, config.clone())
            .await
            .unwrap()
            .record;
        let mut sub = vm.sessions().events(&img.session_id).await.unwrap();
        vm.agents()
            .send_to_image(&img.image_id, "run it")
            .await
            .unwrap();
        results.push(tool_result(&collect_turn(&mut sub).await));
    }
    assert_eq!(
        results[0],
        ("hello from the sandbox\n".to_string(), false),
        "{results:?}"
    );
    let (text, is_error) = &results[1];
    assert!(is_error, "{results:?}");
    assert!(
        text.contains("unauthorized") && text.contains("not enabled for container tenant"),
        "{text}"
    );
    // The allowed container's workdir belongs to the tools' user.
    if running_as_root() {
        use std::os::unix::fs::MetadataExt;
        let workdirs = dir.path().join("containers/trusted/workdirs");
        let image_dir = std::fs::read_dir(&workdirs)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert_eq!(std::fs::metadata(image_dir).unwrap().uid(), nobody.uid);
    }
}

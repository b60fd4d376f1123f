//! The bodies of the runtime-node protocol that executors inside sandboxes send.

use serde::{Deserialize, Serialize};

/// `POST /internal/runtime/containers/ready`: an executor inside a sandbox is up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub struct ContainerReady {
    /// The Docker container id (or name).
    #[serde(rename = "container_id", alias = "containerId")]
    pub docker_container_id: String,
    /// The sandbox id (the seed calls sandboxes sessions).
    #[serde(
        default,
        alias = "sessionId",
        alias = "sandbox_id",
        alias = "sandboxId"
    )]
    pub session_id: Option<String>,
    /// Where the executor listens.
    #[serde(default, alias = "executorUrl")]
    pub executor_url: Option<String>,
}

/// `POST /internal/runtime/containers/exited`: a sandbox's main process ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub struct ContainerExited {
    /// The Docker container id (or name).
    #[serde(rename = "container_id", alias = "containerId")]
    pub docker_container_id: String,
    /// The sandbox id.
    #[serde(
        default,
        alias = "sessionId",
        alias = "sandbox_id",
        alias = "sandboxId"
    )]
    pub session_id: Option<String>,
    /// Its exit code.
    #[serde(default, alias = "exitCode")]
    pub exit_code: Option<i64>,
}

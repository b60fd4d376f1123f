//! Runtime node commands: register, heartbeat, list, get, update, delete (docs/commands.md).
//! Nodes are shared by every tenant, so all of them are for operators only.

use super::super::bus::Scope;
use super::super::local::AgentVm;
use super::sandbox::require_operator;
use crate::error::Result;
use crate::model::*;
use crate::scheduler::{ContainerExited, ContainerReady, Heartbeat, NodeRegistration};

impl AgentVm {
    pub(super) async fn node_register(
        &self,
        scope: &Scope,
        r: NodeRegisterRequest,
    ) -> Result<NodeRegisterResponse> {
        require_operator(scope, "node_register_request")?;
        let s = self.scheduler_or_unavailable()?;
        let mut reg = NodeRegistration::new(r.node_id, r.api_endpoint);
        reg.hostname = r.hostname;
        if let Some(t) = r.runtime_type {
            reg.runtime_type = t;
        }
        reg.ip_address = r.ip_address;
        reg.tls = r.tls;
        reg.total_cpu_cores = r.total_cpu_cores;
        reg.total_memory_mb = r.total_memory_mb;
        if let Some(m) = r.max_containers {
            reg.max_containers = m;
        }
        reg.cached_images = r.cached_images;
        reg.labels = r.labels;
        if let Some(l) = r.liveness {
            reg.liveness = l;
        }
        Ok(NodeRegisterResponse {
            node: s.register_node(reg).await?,
        })
    }

    pub(super) async fn node_heartbeat(
        &self,
        scope: &Scope,
        r: NodeHeartbeatRequest,
    ) -> Result<NodeHeartbeatResponse> {
        require_operator(scope, "node_heartbeat_request")?;
        validate_id("nodeId", &r.node_id)?;
        let node = self
            .scheduler_or_unavailable()?
            .heartbeat(Heartbeat {
                node_id: r.node_id,
                container_id: r.container_id,
                timestamp: r.timestamp,
                cached_images: r.cached_images,
            })
            .await?;
        Ok(NodeHeartbeatResponse { node })
    }

    pub(super) async fn executor_ready(
        &self,
        scope: &Scope,
        r: ExecutorReadyRequest,
    ) -> Result<ExecutorReadyResponse> {
        require_operator(scope, "executor_ready_request")?;
        let sandbox = self
            .scheduler_or_unavailable()?
            .container_ready(ContainerReady {
                docker_container_id: r.docker_container_id,
                session_id: r.sandbox_id,
                executor_url: r.executor_url,
            })
            .await?;
        Ok(ExecutorReadyResponse { sandbox })
    }

    pub(super) async fn executor_exited(
        &self,
        scope: &Scope,
        r: ExecutorExitedRequest,
    ) -> Result<ExecutorExitedResponse> {
        require_operator(scope, "executor_exited_request")?;
        let sandbox = self
            .scheduler_or_unavailable()?
            .container_exited(ContainerExited {
                docker_container_id: r.docker_container_id,
                session_id: r.sandbox_id,
                exit_code: r.exit_code,
            })
            .await?;
        Ok(ExecutorExitedResponse { sandbox })
    }

    pub(super) async fn node_list(
        &self,
        scope: &Scope,
        _r: NodeListRequest,
    ) -> Result<NodeListResponse> {
        require_operator(scope, "node_list_request")?;
        Ok(NodeListResponse {
            nodes: self.scheduler_or_unavailable()?.list_nodes(),
        })
    }

    pub(super) async fn node_get(
        &self,
        scope: &Scope,
        r: NodeGetRequest,
    ) -> Result<NodeGetResponse> {
        require_operator(scope, "node_get_request")?;
        Ok(NodeGetResponse {
            node: self.scheduler_or_unavailable()?.get_node(&r.node_id)?,
        })
    }

    pub(super) async fn node_update(
        &self,
        scope: &Scope,
        r: NodeUpdateRequest,
    ) -> Result<NodeUpdateResponse> {
        require_operator(scope, "node_update_request")?;
        validate_id("nodeId", &r.node_id)?;
        Ok(NodeUpdateResponse {
            node: self
                .scheduler_or_unavailable()?
                .set_node_status(&r.node_id, r.status)
                .await?,
        })
    }

    pub(super) async fn node_delete(
        &self,
        scope: &Scope,
        r: NodeDeleteRequest,
    ) -> Result<NodeDeleteResponse> {
        require_operator(scope, "node_delete_request")?;
        validate_id("nodeId", &r.node_id)?;
        self.scheduler_or_unavailable()?
            .remove_node(&r.node_id)
            .await?;
        Ok(NodeDeleteResponse { node_id: r.node_id })
    }
}

//! Container commands: create, get, list, delete.
//!
//! Creating an existing container is not an error (it may replace its sandbox template), and
//! `container_created` is published only for a container that did not exist. Deleting one
//! stops its agents and ends its sandboxes before removing everything stored in it (in one
//! repository transaction) and its directory; `container_deleted` is published only when the
//! container existed.

use super::check_scope;
use crate::error::Result;
use crate::model::*;
use crate::runtime::bus::Scope;
use crate::runtime::local::AgentVm;

impl AgentVm {
    pub(super) async fn container_create(
        &self,
        r: ContainerCreateRequest,
        scope: &Scope,
    ) -> Result<ContainerCreateResponse> {
        validate_id("containerId", &r.container_id)?;
        check_scope(scope, &r.container_id)?;
        if let Some(t) = &r.sandbox_template {
            validate_id("sandboxTemplate", t)?;
        }
        let id = r.container_id.clone();
        let template = r.sandbox_template.clone();
        let (record, created) = self
            .write(move |repo| repo.create_container(&id, template.as_deref(), now_ms()))
            .await?;
        if created {
            self.publish_container_created(&record);
        }
        Ok(ContainerCreateResponse {
            container_id: r.container_id,
        })
    }

    pub(super) async fn container_get(
        &self,
        r: ContainerGetRequest,
        scope: &Scope,
    ) -> Result<ContainerGetResponse> {
        validate_id("containerId", &r.container_id)?;
        let record = if scope.allows(&r.container_id) {
            self.repo().get_container(&r.container_id)?
        } else {
            None
        };
        Ok(ContainerGetResponse {
            exists: record.is_some(),
            container_id: record.as_ref().map(|c| c.container_id.clone()),
            sandbox_template: record.and_then(|c| c.sandbox_template),
        })
    }

    pub(super) async fn container_list(
        &self,
        _r: ContainerListRequest,
        scope: &Scope,
    ) -> Result<ContainerListResponse> {
        Ok(ContainerListResponse {
            container_ids: self
                .repo()
                .list_containers()?
                .into_iter()
                .map(|c| c.container_id)
                .filter(|c| scope.allows(c))
                .collect(),
        })
    }

    pub(super) async fn container_delete(
        &self,
        r: ContainerDeleteRequest,
        scope: &Scope,
    ) -> Result<ContainerDeleteResponse> {
        validate_id("containerId", &r.container_id)?;
        check_scope(scope, &r.container_id)?;
        self.inner.manager.destroy_all(&r.container_id).await;
        if let Some(s) = &self.inner.scheduler {
            if let Err(e) = s.release_owner(&r.container_id).await {
                tracing::warn!(container = %r.container_id, error = %e.chain(), "ending the container's sandboxes");
            }
        }
        let id = r.container_id.clone();
        let removed = self.write(move |repo| repo.delete_container(&id)).await?;
        if let Some(removed) = &removed {
            if let Some(dir) = &self.inner.data_dir {
                self.remove_dir(Some(dir.join("containers").join(&r.container_id)))
                    .await;
            }
            self.inner.manager.destroy_sessions(&removed.sessions).await;
            self.inner.bus.publish(Event::new(
                EventPayload::ContainerDeleted {
                    container_id: r.container_id.clone(),
                },
                Some(EventContext {
                    container_id: Some(r.container_id.clone()),
                    ..Default::default()
                }),
            ));
        }
        Ok(ContainerDeleteResponse {
            container_id: r.container_id,
            deleted: removed.is_some(),
        })
    }
}

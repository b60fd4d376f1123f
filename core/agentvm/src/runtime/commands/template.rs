//! Sandbox template commands (docs/commands.md). Every caller may read templates (a tenant
//! needs their ids to create sandboxes); only operators create, update or delete them.

use super::super::bus::Scope;
use super::super::local::AgentVm;
use super::sandbox::require_operator;
use crate::error::Result;
use crate::model::*;

impl AgentVm {
    pub(super) async fn template_create(
        &self,
        scope: &Scope,
        r: TemplateCreateRequest,
    ) -> Result<TemplateCreateResponse> {
        require_operator(scope, "template_create_request")?;
        let s = self.scheduler_or_unavailable()?;
        let (id, spec) = r.into_parts();
        Ok(TemplateCreateResponse {
            template: s.create_template(&id, spec).await?,
        })
    }

    pub(super) async fn template_get(
        &self,
        _scope: &Scope,
        r: TemplateGetRequest,
    ) -> Result<TemplateGetResponse> {
        let s = self.scheduler_or_unavailable()?;
        Ok(TemplateGetResponse {
            template: s.get_template(&r.template_id).await?.map(|t| t.redacted()),
        })
    }

    pub(super) async fn template_list(
        &self,
        _scope: &Scope,
        _r: TemplateListRequest,
    ) -> Result<TemplateListResponse> {
        Ok(TemplateListResponse {
            templates: self
                .scheduler_or_unavailable()?
                .list_templates()
                .await?
                .into_iter()
                .map(|t| t.redacted())
                .collect(),
        })
    }

    pub(super) async fn template_update(
        &self,
        scope: &Scope,
        r: TemplateUpdateRequest,
    ) -> Result<TemplateUpdateResponse> {
        require_operator(scope, "template_update_request")?;
        let s = self.scheduler_or_unavailable()?;
        let (id, spec) = r.into_parts();
        validate_id("templateId", &id)?;
        Ok(TemplateUpdateResponse {
            template: s.update_template(&id, spec).await?,
        })
    }

    pub(super) async fn template_delete(
        &self,
        scope: &Scope,
        r: TemplateDeleteRequest,
    ) -> Result<TemplateDeleteResponse> {
        require_operator(scope, "template_delete_request")?;
        validate_id("templateId", &r.template_id)?;
        self.scheduler_or_unavailable()?
            .delete_template(&r.template_id)
            .await?;
        Ok(TemplateDeleteResponse {
            template_id: r.template_id,
        })
    }
}

//! Definition commands: list, get, register.
//!
//! Definitions are shared by every container, so anyone may read them but only a caller
//! scoped to all containers may register one. A registered definition is validated against
//! the runtime's limits first; images built from it keep their own copy.

use super::validate_definition;
use crate::error::{Error, Result};
use crate::model::*;
use crate::runtime::bus::Scope;
use crate::runtime::local::AgentVm;

impl AgentVm {
    pub(super) async fn definition_list(
        &self,
        _r: DefinitionListRequest,
        _scope: &Scope,
    ) -> Result<DefinitionListResponse> {
        Ok(DefinitionListResponse {
            definitions: self.repo().list_definitions()?,
        })
    }

    pub(super) async fn definition_get(
        &self,
        r: DefinitionGetRequest,
        _scope: &Scope,
    ) -> Result<DefinitionGetResponse> {
        validate_id("name", &r.name)?;
        Ok(DefinitionGetResponse {
            definition: self.repo().get_definition(&r.name)?,
        })
    }

    pub(super) async fn definition_register(
        &self,
        r: DefinitionRegisterRequest,
        scope: &Scope,
    ) -> Result<DefinitionRegisterResponse> {
        if *scope != Scope::All {
            return Err(Error::Unauthorized(
                "registering definitions needs a token for all containers".into(),
            ));
        }
        validate_definition(&r.definition, &self.inner.limits)?;
        if let Some(m) = &r.definition.mcp_servers {
            m.check().map_err(Error::invalid)?;
        }
        let name = r.definition.name.clone();
        let replaced = self
            .write(move |repo| repo.put_definition(&r.definition))
            .await?;
        Ok(DefinitionRegisterResponse { name, replaced })
    }
}

//! Access token commands (docs/commands.md): create (the secret is returned once), list
//! (never secrets or hashes), revoke. Operators only: a token decides what others may see.

use super::super::bus::Scope;
use super::super::local::AgentVm;
use super::sandbox::require_operator;
use crate::error::{Error, Result};
use crate::model::*;
use crate::store::TokenRecord;

fn info(r: TokenRecord) -> TokenInfo {
    TokenInfo {
        id: r.id,
        containers: r.containers,
        created_at: r.created_at,
        revoked_at: r.revoked_at,
    }
}

impl AgentVm {
    pub(super) async fn token_create(
        &self,
        scope: &Scope,
        r: TokenCreateRequest,
    ) -> Result<TokenCreateResponse> {
        require_operator(scope, "token_create_request")?;
        let containers = match (r.containers, r.all) {
            (Some(_), true) => {
                return Err(Error::invalid(
                    "give either containers or all: true, not both",
                ))
            }
            (None, false) => {
                return Err(Error::invalid(
                    "say which containers the token may use (containers: [..]) or all: true for every container",
                ))
            }
            (containers, _) => containers,
        };
        let (token, record) = self
            .write(move |repo| crate::auth::create_token(repo, containers))
            .await?;
        Ok(TokenCreateResponse {
            token,
            record: info(record),
        })
    }

    pub(super) async fn token_list(
        &self,
        scope: &Scope,
        _r: TokenListRequest,
    ) -> Result<TokenListResponse> {
        require_operator(scope, "token_list_request")?;
        Ok(TokenListResponse {
            tokens: self.repo().list_tokens()?.into_iter().map(info).collect(),
        })
    }

    pub(super) async fn token_revoke(
        &self,
        scope: &Scope,
        r: TokenRevokeRequest,
    ) -> Result<TokenRevokeResponse> {
        require_operator(scope, "token_revoke_request")?;
        validate_id("tokenId", &r.token_id)?;
        let id = r.token_id;
        let record = self
            .write(move |repo| {
                if !repo.revoke_token(&id, now_ms())? {
                    return Err(Error::not_found("Token", id));
                }
                repo.list_tokens()?
                    .into_iter()
                    .find(|t| t.id == id)
                    .ok_or_else(|| Error::not_found("Token", id))
            })
            .await?;
        Ok(TokenRevokeResponse {
            record: info(record),
            revoked: true,
        })
    }
}

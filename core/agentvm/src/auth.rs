//! Access tokens: creation, verification and their scopes (docs/protocol.md §1).
//!
//! A token is shown once, at creation; the store keeps only its SHA-256. A token is
//! scoped to a set of containers or to all.

use crate::error::{Error, Result};
use crate::model::{new_id, now_ms};
use crate::runtime::Scope;
use crate::store::{Store, TokenRecord};
use rand::Rng;
use sha2::{Digest, Sha256};

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Hex SHA-256 of a token.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Creates a token for `containers` (`None`: all). Returns the token (shown once) and its record.
pub fn create_token(
    store: &dyn Store,
    containers: Option<Vec<String>>,
) -> Result<(String, TokenRecord)> {
    if let Some(list) = &containers {
        if list.is_empty() {
            return Err(Error::invalid(
                "a token needs at least one container, or all",
            ));
        }
        for c in list {
            crate::model::validate_id("containerId", c)?;
        }
    }
    let mut rng = rand::rng();
    let secret: String = (0..40)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let token = format!("avm_{secret}");
    let record = TokenRecord {
        id: new_id("tok"),
        hash: hash_token(&token),
        containers,
        created_at: now_ms(),
        revoked_at: None,
    };
    store.put_token(&record)?;
    Ok((token, record))
}

/// Whether `token` is one agentvm issued (revoked or not), as opposed to a foreign one.
pub fn is_issued(store: &dyn Store, token: &str) -> Result<bool> {
    Ok(store.token_by_hash(&hash_token(token))?.is_some())
}

/// Checks a presented token and returns its scope. Unknown and revoked tokens are refused
/// with `Unauthorized` and a message saying which.
pub fn verify_token(store: &dyn Store, token: &str) -> Result<(TokenRecord, Scope)> {
    let record = store
        .token_by_hash(&hash_token(token))?
        .ok_or_else(|| Error::Unauthorized("invalid token".into()))?;
    if record.revoked_at.is_some() {
        return Err(Error::Unauthorized(format!(
            "token {} has been revoked",
            record.id
        )));
    }
    let scope = match &record.containers {
        None => Scope::All,
        Some(list) => Scope::containers(list.iter().cloned()),
    };
    Ok((record, scope))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_until_revoked() {
        let store = crate::store::MemoryStore::new();
        let (token, record) = create_token(&store, Some(vec!["a".into()])).unwrap();
        assert!(token.starts_with("avm_"));
        assert_ne!(record.hash, token);
        let (_, scope) = verify_token(&store, &token).unwrap();
        assert!(scope.allows("a") && !scope.allows("b"));
        assert_eq!(
            verify_token(&store, "avm_nope").unwrap_err().to_string(),
            "unauthorized: invalid token"
        );
        assert!(store.revoke_token(&record.id, 1).unwrap());
        let e = verify_token(&store, &token).unwrap_err();
        assert!(e.to_string().contains("revoked"), "{e}");
        assert!(!store.revoke_token("tok_unknown", 1).unwrap());
        assert_eq!(store.list_tokens().unwrap().len(), 1);
    }
}

//! Access tokens, stored hashed: the table maps the SHA-256 of a token to its record.

use super::{db, decode, encode, Repository};
use crate::error::Result;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

pub(super) const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");

/// A stored access token (never the token itself: its hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    /// `tok_…`, shown to operators and used to revoke.
    pub id: String,
    /// Hex SHA-256 of the token.
    pub hash: String,
    /// The containers it may use; `None`: all.
    pub containers: Option<Vec<String>>,
    /// Creation time, ms.
    pub created_at: i64,
    /// Revocation time, ms; a revoked token is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

impl Repository {
    /// Stores a new token record.
    pub fn put_token(&self, token: &TokenRecord) -> Result<()> {
        let bytes = encode(token)?;
        let txn = self.db.begin_write().map_err(db)?;
        txn.open_table(TOKENS)
            .map_err(db)?
            .insert(token.hash.as_str(), bytes.as_slice())
            .map_err(db)?;
        txn.commit().map_err(db)?;
        Ok(())
    }

    /// The token with this hash.
    pub fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(TOKENS).map_err(db)?;
        match t.get(hash).map_err(db)? {
            Some(v) => Ok(Some(decode(v.value())?)),
            None => Ok(None),
        }
    }

    /// Every token, oldest first.
    pub fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let txn = self.db.begin_read().map_err(db)?;
        let t = txn.open_table(TOKENS).map_err(db)?;
        let mut out: Vec<TokenRecord> = Vec::new();
        for row in t.iter().map_err(db)? {
            out.push(decode(row.map_err(db)?.1.value())?);
        }
        out.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(out)
    }

    /// Marks the token with id `id` revoked. Returns false when there is none.
    pub fn revoke_token(&self, id: &str, now: i64) -> Result<bool> {
        let txn = self.db.begin_write().map_err(db)?;
        let found = {
            let mut t = txn.open_table(TOKENS).map_err(db)?;
            let mut found: Option<TokenRecord> = None;
            for row in t.iter().map_err(db)? {
                let rec: TokenRecord = decode(row.map_err(db)?.1.value())?;
                if rec.id == id {
                    found = Some(rec);
                    break;
                }
            }
            match found {
                Some(mut rec) => {
                    if rec.revoked_at.is_none() {
                        rec.revoked_at = Some(now);
                    }
                    t.insert(rec.hash.as_str(), encode(&rec)?.as_slice())
                        .map_err(db)?;
                    true
                }
                None => false,
            }
        };
        txn.commit().map_err(db)?;
        Ok(found)
    }
}

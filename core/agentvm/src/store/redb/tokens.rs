//! Access tokens in redb, stored hashed: the table maps the SHA-256 of a token to its record.

use super::{db, decode, encode};
use crate::error::Result;
use crate::store::TokenRecord;
use redb::{ReadableTable, TableDefinition, WriteTransaction};

pub(super) const TOKENS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("tokens");

/// Stores a token record under its hash, in `txn`.
pub(super) fn put(txn: &WriteTransaction, token: &TokenRecord) -> Result<()> {
    let bytes = encode(token)?;
    txn.open_table(TOKENS)
        .map_err(db)?
        .insert(token.hash.as_str(), bytes.as_slice())
        .map_err(db)?;
    Ok(())
}

/// Marks the token with id `id` revoked (keeping an earlier revocation time); false when
/// there is none, in `txn`. Tokens are keyed by hash, so this scans: there are few.
pub(super) fn revoke(txn: &WriteTransaction, id: &str, now: i64) -> Result<bool> {
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
    Ok(found)
}

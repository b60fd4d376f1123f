//! The one place where agentvm errors become JavaScript errors.
//!
//! Every error that crosses the boundary is a plain `Error` with
//! - `kind`: the stable snake_case kind of embed and the core (`not_found`, `already_exists`,
//!   `invalid_input`, `conflict`, `unavailable`, `storage`, `storage_full`, `protocol`, `cancelled`,
//!   `unauthorized`, `internal`), the same in every binding;
//! - `code`: the same kind in PascalCase (`NotFound`, ...), the package's `ErrorCode`;
//! - `message`: the error followed by its cause chain ([`agentvm::Error::chain`]);
//! - `retryAfterMs` when the core says when to retry (a `Busy` refusal).

use agentvm_embed::agentvm::{self, ErrorKind};
use napi::bindgen_prelude::*;

/// The JavaScript `code` of a kind: the variant's name, stable across releases.
pub(crate) fn code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::NotFound => "NotFound",
        ErrorKind::AlreadyExists => "AlreadyExists",
        ErrorKind::InvalidInput => "InvalidInput",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::Unavailable => "Unavailable",
        ErrorKind::Storage => "Storage",
        ErrorKind::StorageFull => "StorageFull",
        ErrorKind::Protocol => "Protocol",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Unauthorized => "Unauthorized",
        // `ErrorKind` is non-exhaustive: a kind added later is reported as a bug until it is
        // named here.
        _ => "Internal",
    }
}

/// The error that leaves the binding: an `Error` object with `kind`, `code` (and
/// `retryAfterMs`), wrapped so napi throws or rejects with that very object.
pub(crate) fn to_js(env: &Env, error: &agentvm::Error) -> napi::Error {
    let message = error.chain();
    let build = || -> napi::Result<napi::Error> {
        let mut object =
            env.create_error(napi::Error::new(Status::GenericFailure, message.clone()))?;
        object.set("kind", error.kind().as_str())?;
        object.set("code", code(error.kind()))?;
        if let Some(after) = error.retry_after() {
            object.set("retryAfterMs", after.as_millis() as f64)?;
        }
        Ok(napi::Error::from(object.to_unknown()))
    };
    // If even building the object fails (the environment is shutting down), fall back to
    // napi's own error with the same text.
    build().unwrap_or_else(|e| {
        napi::Error::new(
            Status::GenericFailure,
            format!("{message} ({}; {e})", error.kind().as_str()),
        )
    })
}

/// A panic caught at the boundary, reported as an `Internal` error instead of aborting Node.
pub(crate) fn panicked(payload: Box<dyn std::any::Any + Send>) -> agentvm::Error {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    agentvm::Error::Internal(format!("agentvm panicked: {what}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_distinct_code_and_kind_name() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::Storage,
            ErrorKind::StorageFull,
            ErrorKind::Protocol,
            ErrorKind::Cancelled,
            ErrorKind::Unauthorized,
            ErrorKind::Internal,
        ];
        let codes: std::collections::HashSet<_> = kinds.iter().map(|k| code(*k)).collect();
        assert_eq!(codes.len(), kinds.len());
        for k in kinds {
            // The code is the kind's name in PascalCase.
            assert_eq!(code(k).to_lowercase(), k.as_str().replace('_', ""));
        }
    }
}

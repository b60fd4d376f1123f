//! The one place where agentvm errors become JavaScript errors.
//!
//! Every error that crosses the boundary is a plain `Error` whose `code` is the PascalCase name
//! of the core's [`ErrorKind`] (`NotFound`, `AlreadyExists`, `InvalidInput`, `Conflict`,
//! `Unavailable`, `Storage`, `Protocol`, `Cancelled`, `Unauthorized`, `Internal`) and whose
//! message is the error followed by its source chain, one `Caused by: ...` line per cause (the
//! layout of lancedb's `nodejs/src/error.rs`). A `Busy` refusal also carries `retryAfterMs`.

use agentvm::ErrorKind;
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
        ErrorKind::Protocol => "Protocol",
        ErrorKind::Cancelled => "Cancelled",
        ErrorKind::Unauthorized => "Unauthorized",
        // `ErrorKind` is non-exhaustive: a kind added later is reported as a bug until it is
        // named here.
        _ => "Internal",
    }
}

/// The message with the whole cause chain.
pub(crate) fn message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        // Errors that print their source inline would repeat it: skip exact repeats.
        if !text.contains(&line) {
            text.push_str("\nCaused by: ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

/// The error that leaves the binding: an `Error` object with `code` (and `retryAfterMs` when
/// the core says when to retry), wrapped so napi throws or rejects with that very object.
pub(crate) fn to_js(env: &Env, error: &agentvm::Error) -> napi::Error {
    let build = || -> napi::Result<napi::Error> {
        let mut object =
            env.create_error(napi::Error::new(Status::GenericFailure, message(error)))?;
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
            format!("{} ({}; {e})", message(error), code(error.kind())),
        )
    })
}

/// An agentvm error built on the binding's side (bad arguments, a closed handle).
pub(crate) fn invalid(message: impl Into<String>) -> agentvm::Error {
    agentvm::Error::invalid(message)
}

/// The error of a call on a handle after `close()`.
pub(crate) fn closed(what: &str) -> agentvm::Error {
    agentvm::Error::unavailable(format!("the {what} is closed"))
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
    fn every_kind_has_a_distinct_pascal_case_code() {
        let kinds = [
            ErrorKind::NotFound,
            ErrorKind::AlreadyExists,
            ErrorKind::InvalidInput,
            ErrorKind::Conflict,
            ErrorKind::Unavailable,
            ErrorKind::Storage,
            ErrorKind::Protocol,
            ErrorKind::Cancelled,
            ErrorKind::Unauthorized,
            ErrorKind::Internal,
        ];
        let codes: std::collections::HashSet<_> = kinds.iter().map(|k| code(*k)).collect();
        assert_eq!(codes.len(), kinds.len());
    }

    #[test]
    fn message_lists_causes() {
        let io = std::io::Error::other("disk on fire");
        let e = agentvm::Error::storage("writing a message", io);
        let text = message(&e);
        assert!(
            text.starts_with("storage error: writing a message"),
            "{text}"
        );
        assert!(text.ends_with("Caused by: disk on fire"), "{text}");
    }
}

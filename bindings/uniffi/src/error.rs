//! The one error of the bindings: a variant per stable error kind, mapped in one place.

use agentvm_embed::agentvm::{Error, ErrorKind};

/// A failed call. The variant is the error's stable kind (`NotFound` is `not_found` in the
/// protocol); the message is the error with its causes (`a: b: c`). Python raises
/// `AgentVmError.NotFound` (`str(e)` is the message), Ruby `AgentvmUniffi::AgentVmError::NotFound`
/// (`e.message`), Kotlin `AgentVmException.NotFound` (`e.message`), Swift
/// `AgentVmError.NotFound(message:)`.
///
/// A flat error: only the variant and the message cross the boundary, so every language
/// keeps its own `message` (a field named `message` would clash with Kotlin's `Throwable`).
#[derive(Debug, PartialEq, Eq, thiserror::Error, uniffi::Error)]
#[uniffi(flat_error)]
#[non_exhaustive]
pub enum AgentVmError {
    /// The named thing does not exist.
    #[error("{message}")]
    NotFound {
        /// What was not found, with causes.
        message: String,
    },
    /// The thing to create exists already.
    #[error("{message}")]
    AlreadyExists {
        /// What exists, with causes.
        message: String,
    },
    /// The input is malformed (bad JSON, unknown command or field), too large or refused.
    #[error("{message}")]
    InvalidInput {
        /// What is wrong with the input, with causes.
        message: String,
    },
    /// The operation conflicts with the current state.
    #[error("{message}")]
    Conflict {
        /// The conflict, with causes.
        message: String,
    },
    /// A dependency (LLM provider, Docker, the server) cannot be reached now.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable, with causes.
        message: String,
    },
    /// The store failed to read or write.
    #[error("{message}")]
    Storage {
        /// The store's failure, with causes.
        message: String,
    },
    /// The store's disk is full; writes succeed again once space is freed.
    #[error("{message}")]
    StorageFull {
        /// Where, with causes.
        message: String,
    },
    /// A peer spoke the wire protocol wrongly.
    #[error("{message}")]
    Protocol {
        /// The protocol violation, with causes.
        message: String,
    },
    /// The call was cancelled (by its cancel id or by the caller's task), timed out, or its
    /// runtime was closed.
    #[error("{message}")]
    Cancelled {
        /// Why, with causes.
        message: String,
    },
    /// The caller is not allowed to do this.
    #[error("{message}")]
    Unauthorized {
        /// What was refused, with causes.
        message: String,
    },
    /// A bug in agentvm (or a kind added after these bindings were built).
    #[error("{message}")]
    Internal {
        /// The failure, with causes.
        message: String,
    },
}

impl AgentVmError {
    /// The stable snake_case name of the kind (`not_found`, `invalid_input`, ...).
    pub fn kind(&self) -> &'static str {
        self.error_kind().as_str()
    }

    fn error_kind(&self) -> ErrorKind {
        match self {
            AgentVmError::NotFound { .. } => ErrorKind::NotFound,
            AgentVmError::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            AgentVmError::InvalidInput { .. } => ErrorKind::InvalidInput,
            AgentVmError::Conflict { .. } => ErrorKind::Conflict,
            AgentVmError::Unavailable { .. } => ErrorKind::Unavailable,
            AgentVmError::Storage { .. } => ErrorKind::Storage,
            AgentVmError::StorageFull { .. } => ErrorKind::StorageFull,
            AgentVmError::Protocol { .. } => ErrorKind::Protocol,
            AgentVmError::Cancelled { .. } => ErrorKind::Cancelled,
            AgentVmError::Unauthorized { .. } => ErrorKind::Unauthorized,
            AgentVmError::Internal { .. } => ErrorKind::Internal,
        }
    }

    /// An error of `kind` with `message`: the one mapping from a kind to a variant.
    pub(crate) fn of(kind: ErrorKind, message: String) -> Self {
        match kind {
            ErrorKind::NotFound => AgentVmError::NotFound { message },
            ErrorKind::AlreadyExists => AgentVmError::AlreadyExists { message },
            ErrorKind::InvalidInput => AgentVmError::InvalidInput { message },
            ErrorKind::Conflict => AgentVmError::Conflict { message },
            ErrorKind::Unavailable => AgentVmError::Unavailable { message },
            ErrorKind::Storage => AgentVmError::Storage { message },
            ErrorKind::StorageFull => AgentVmError::StorageFull { message },
            ErrorKind::Protocol => AgentVmError::Protocol { message },
            ErrorKind::Cancelled => AgentVmError::Cancelled { message },
            ErrorKind::Unauthorized => AgentVmError::Unauthorized { message },
            // Internal, and any kind added later.
            _ => AgentVmError::Internal { message },
        }
    }
}

impl From<Error> for AgentVmError {
    fn from(e: Error) -> Self {
        AgentVmError::of(e.kind(), e.chain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_to_its_variant_and_back() {
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
        for kind in kinds {
            let e = AgentVmError::of(kind, "m".into());
            assert_eq!(e.error_kind(), kind);
            assert_eq!(e.kind(), kind.as_str());
            assert_eq!(e.to_string(), "m");
        }
    }

    #[test]
    fn the_message_keeps_the_cause_chain() {
        let e = AgentVmError::from(Error::invalid("Unknown request type: x"));
        assert_eq!(e.kind(), "invalid_input");
        assert!(e.to_string().contains("Unknown request type: x"), "{e}");
    }
}

//! The one error type of agentvm, and the small stable set of kinds every binding maps from.

use std::fmt;

/// The stable classification of an [`Error`]. Bindings map from this, in one place each:
/// a Python exception class, a Node `code`, a C result code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorKind {
    /// The named thing does not exist.
    NotFound,
    /// The thing to create exists already.
    AlreadyExists,
    /// The input is malformed, empty, too large or otherwise refused.
    InvalidInput,
    /// The operation conflicts with the current state.
    Conflict,
    /// A dependency (LLM provider, Docker, the remote server) cannot be reached right now.
    Unavailable,
    /// The store failed to read or write.
    Storage,
    /// The store cannot write because its disk (or database) is full; it recovers by itself once
    /// space is freed.
    StorageFull,
    /// A peer spoke the wire protocol wrongly.
    Protocol,
    /// The operation was cancelled or interrupted.
    Cancelled,
    /// The caller is not allowed to do this.
    Unauthorized,
    /// A bug in agentvm.
    Internal,
}

impl ErrorKind {
    /// The kind as its stable snake_case name (`not_found`, `invalid_input`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "already_exists",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Storage => "storage",
            ErrorKind::StorageFull => "storage_full",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Internal => "internal",
        }
    }

    /// The kind of a turn that failed with the LLM error code `code` (`errorCode` of
    /// `error_received`): a missing LLM (`not_configured`) or any transient failure
    /// (`rate_limit`, `overloaded`, `timeout`, `network`, none, ...) is `Unavailable`, a refused
    /// key (`authentication`) `Unauthorized`, a request the provider rejected
    /// (`invalid_request`) `InvalidInput`.
    pub fn of_turn_error(code: Option<&str>) -> ErrorKind {
        match code {
            Some("authentication") => ErrorKind::Unauthorized,
            Some("invalid_request") => ErrorKind::InvalidInput,
            _ => ErrorKind::Unavailable,
        }
    }

    /// Parses a name produced by [`ErrorKind::as_str`]; unknown names are `Internal`.
    pub fn parse(name: &str) -> ErrorKind {
        match name {
            "not_found" => ErrorKind::NotFound,
            "already_exists" => ErrorKind::AlreadyExists,
            "invalid_input" => ErrorKind::InvalidInput,
            "conflict" => ErrorKind::Conflict,
            "unavailable" => ErrorKind::Unavailable,
            "storage" => ErrorKind::Storage,
            "storage_full" => ErrorKind::StorageFull,
            "protocol" => ErrorKind::Protocol,
            "cancelled" => ErrorKind::Cancelled,
            "unauthorized" => ErrorKind::Unauthorized,
            _ => ErrorKind::Internal,
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every failure agentvm reports. The message is what a user reads; `kind()` is what code matches.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A named record does not exist.
    #[error("{what} not found: {id}")]
    NotFound {
        /// What was looked up: `Image`, `Container`, `Session`, ...
        what: &'static str,
        /// The id that was asked for.
        id: String,
    },
    /// A record with this id exists already.
    #[error("{what} already exists: {id}")]
    AlreadyExists {
        /// What was created.
        what: &'static str,
        /// The id that is taken.
        id: String,
    },
    /// Input that agentvm refuses, with the reason.
    #[error("{0}")]
    InvalidInput(String),
    /// The operation conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// A dependency cannot be reached.
    #[error("{message}")]
    Unavailable {
        /// What is unavailable and what to do.
        message: String,
        /// The underlying cause, when there is one.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store failed.
    #[error("storage error: {message}")]
    Storage {
        /// What was being done.
        message: String,
        /// The redb or I/O error behind it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The store's disk is full: nothing can be written until space is freed.
    #[error("storage full: {message}")]
    StorageFull {
        /// Where (the data dir or database) and what to do.
        message: String,
        /// The I/O or database error behind it.
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// A peer broke the wire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The operation was cancelled.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// The caller may not do this.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// An error reported by a remote peer, with its kind preserved.
    #[error("{message}")]
    Remote {
        /// The kind the peer reported.
        kind: ErrorKind,
        /// The peer's message.
        message: String,
    },
    /// Too much is in flight right now (for example Docker starts on a node); the request was
    /// not queued. Its kind is [`ErrorKind::Unavailable`]; retry after `retry_after`.
    #[error("{message}")]
    Busy {
        /// What is busy, and when to retry.
        message: String,
        /// How long to wait before retrying.
        retry_after: std::time::Duration,
    },
    /// A bug in agentvm.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } => ErrorKind::AlreadyExists,
            Error::InvalidInput(_) => ErrorKind::InvalidInput,
            Error::Conflict(_) => ErrorKind::Conflict,
            Error::Unavailable { .. } => ErrorKind::Unavailable,
            Error::Storage { .. } => ErrorKind::Storage,
            Error::StorageFull { .. } => ErrorKind::StorageFull,
            Error::Protocol(_) => ErrorKind::Protocol,
            Error::Cancelled(_) => ErrorKind::Cancelled,
            Error::Unauthorized(_) => ErrorKind::Unauthorized,
            Error::Remote { kind, .. } => *kind,
            Error::Busy { .. } => ErrorKind::Unavailable,
            Error::Internal(_) => ErrorKind::Internal,
        }
    }

    /// For a [`Error::Busy`], how long to wait before retrying.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            Error::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// `NotFound` for `what` with `id`.
    pub fn not_found(what: &'static str, id: impl Into<String>) -> Self {
        Error::NotFound {
            what,
            id: id.into(),
        }
    }

    /// `InvalidInput` with a message.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// `Unavailable` with a message and no source.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Error::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// `Storage` wrapping a source error.
    pub fn storage(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Error::Storage {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// The message followed by its cause chain, `: `-separated.
    pub fn chain(&self) -> String {
        let mut out = self.to_string();
        let mut source = std::error::Error::source(self);
        while let Some(s) = source {
            out.push_str(": ");
            out.push_str(&s.to_string());
            source = s.source();
        }
        out
    }
}

/// `Result` with agentvm's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::InvalidInput(format!("invalid JSON: {e}"))
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Storage {
            message: "I/O".into(),
            source: Some(Box::new(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn turn_errors_map_to_stable_kinds() {
        use super::ErrorKind as K;
        assert_eq!(K::of_turn_error(Some("authentication")), K::Unauthorized);
        assert_eq!(K::of_turn_error(Some("invalid_request")), K::InvalidInput);
        for code in [
            Some("not_configured"),
            Some("rate_limit"),
            Some("timeout"),
            Some("x"),
            None,
        ] {
            assert_eq!(K::of_turn_error(code), K::Unavailable, "{code:?}");
        }
    }

    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in [
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
        ] {
            assert_eq!(ErrorKind::parse(k.as_str()), k);
        }
    }

    #[test]
    fn not_found_names_the_id() {
        let e = Error::not_found("Image", "img_1");
        assert_eq!(e.to_string(), "Image not found: img_1");
        assert_eq!(e.kind(), ErrorKind::NotFound);
    }
}

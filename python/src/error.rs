//! The exceptions: `AgentVmError` and one subclass per [`ErrorKind`], raised from one mapping.

use agentvm_embed::agentvm::{Error, ErrorKind};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    agentvm._native,
    AgentVmError,
    PyException,
    "Every error agentvm raises; `kind` names the stable kind (`not_found`, ...)."
);
create_exception!(
    agentvm._native,
    NotFoundError,
    AgentVmError,
    "The named thing does not exist."
);
create_exception!(
    agentvm._native,
    AlreadyExistsError,
    AgentVmError,
    "The thing to create exists already."
);
create_exception!(
    agentvm._native,
    InvalidInputError,
    AgentVmError,
    "The input is malformed, empty, too large or refused."
);
create_exception!(
    agentvm._native,
    ConflictError,
    AgentVmError,
    "The operation conflicts with the current state."
);
create_exception!(
    agentvm._native,
    UnavailableError,
    AgentVmError,
    "A dependency (LLM, Docker, the server) cannot be reached now."
);
create_exception!(
    agentvm._native,
    StorageError,
    AgentVmError,
    "The store failed to read or write."
);
create_exception!(
    agentvm._native,
    StorageFullError,
    StorageError,
    "The store's disk is full; writes succeed again once space is freed."
);
create_exception!(
    agentvm._native,
    ProtocolError,
    AgentVmError,
    "A peer spoke the wire protocol wrongly."
);
create_exception!(
    agentvm._native,
    CancelledError,
    AgentVmError,
    "The operation was cancelled or interrupted."
);
create_exception!(
    agentvm._native,
    UnauthorizedError,
    AgentVmError,
    "The caller is not allowed to do this."
);
create_exception!(
    agentvm._native,
    InternalError,
    AgentVmError,
    "A bug in agentvm."
);

/// The Python exception for an agentvm error: the class from its kind, the message with its
/// cause chain. Each class carries its kind as the class attribute `kind`. Lazy: building it
/// needs no GIL, so futures on the runtime's workers can fail with it.
pub(crate) fn to_py(e: Error) -> PyErr {
    from_kind(e.kind(), e.chain())
}

/// The exception of `kind` with `message`. The one place kinds become classes.
pub(crate) fn from_kind(kind: ErrorKind, message: String) -> PyErr {
    match kind {
        ErrorKind::NotFound => NotFoundError::new_err(message),
        ErrorKind::AlreadyExists => AlreadyExistsError::new_err(message),
        ErrorKind::InvalidInput => InvalidInputError::new_err(message),
        ErrorKind::Conflict => ConflictError::new_err(message),
        ErrorKind::Unavailable => UnavailableError::new_err(message),
        ErrorKind::Storage => StorageError::new_err(message),
        ErrorKind::StorageFull => StorageFullError::new_err(message),
        ErrorKind::Protocol => ProtocolError::new_err(message),
        ErrorKind::Cancelled => CancelledError::new_err(message),
        ErrorKind::Unauthorized => UnauthorizedError::new_err(message),
        ErrorKind::Internal => InternalError::new_err(message),
        // ErrorKind is non-exhaustive: a kind added later is still an AgentVmError.
        _ => AgentVmError::new_err(message),
    }
}

/// Test hook: raises the exception agentvm maps `kind` (`not_found`, ...) to, so each kind's
/// class can be checked even where the API cannot trigger it.
#[pyfunction]
pub(crate) fn _raise_error(kind: &str, message: String) -> PyResult<()> {
    Err(from_kind(ErrorKind::parse(kind), message))
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let classes = [
        ("AgentVmError", py.get_type::<AgentVmError>(), "internal"),
        ("NotFoundError", py.get_type::<NotFoundError>(), "not_found"),
        (
            "AlreadyExistsError",
            py.get_type::<AlreadyExistsError>(),
            "already_exists",
        ),
        (
            "InvalidInputError",
            py.get_type::<InvalidInputError>(),
            "invalid_input",
        ),
        ("ConflictError", py.get_type::<ConflictError>(), "conflict"),
        (
            "UnavailableError",
            py.get_type::<UnavailableError>(),
            "unavailable",
        ),
        ("StorageError", py.get_type::<StorageError>(), "storage"),
        (
            "StorageFullError",
            py.get_type::<StorageFullError>(),
            "storage_full",
        ),
        ("ProtocolError", py.get_type::<ProtocolError>(), "protocol"),
        (
            "CancelledError",
            py.get_type::<CancelledError>(),
            "cancelled",
        ),
        (
            "UnauthorizedError",
            py.get_type::<UnauthorizedError>(),
            "unauthorized",
        ),
        ("InternalError", py.get_type::<InternalError>(), "internal"),
    ];
    for (name, class, kind) in classes {
        class.setattr("kind", kind)?;
        m.add(name, class)?;
    }
    // The provider's error code of a failed turn (`ask()` sets it); None on every other error.
    py.get_type::<AgentVmError>()
        .setattr("error_code", py.None())?;
    m.add_function(wrap_pyfunction!(_raise_error, m)?)?;
    Ok(())
}

//! Result codes, mapped from the error kind in one place, and the thread's last error message.

use agentvm_embed::agentvm::{Error, ErrorKind};
use std::cell::RefCell;
use std::ffi::{c_char, CString};

/// What an agentvm call did. `AGENTVM_RESULT_OK` is 0; the error codes 1–10 and 16 are the stable
/// error kinds; the message (with its causes) is in `agentvm_last_error()`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentvmResult {
    /// Success.
    Ok = 0,
    /// The named thing does not exist.
    NotFound = 1,
    /// The thing to create exists already.
    AlreadyExists = 2,
    /// The input is malformed (bad JSON, unknown command or field), too large or refused.
    InvalidInput = 3,
    /// The operation conflicts with the current state.
    Conflict = 4,
    /// A dependency (LLM, Docker, the server) cannot be reached now.
    Unavailable = 5,
    /// The store failed to read or write.
    Storage = 6,
    /// A peer spoke the wire protocol wrongly.
    Protocol = 7,
    /// The call was cancelled (`agentvm_cancel`), timed out, or its runtime was closed.
    Cancelled = 8,
    /// The caller is not allowed to do this.
    Unauthorized = 9,
    /// A bug in agentvm.
    Internal = 10,
    /// Not an error: no event arrived within the timeout (`_next`) or none is waiting
    /// (`_try_next`); the output is NULL.
    NoEvents = 11,
    /// Not an error: the subscription has ended (closed, or its runtime closed) and every
    /// event was taken; the output is NULL.
    Ended = 12,
    /// A required pointer argument was NULL.
    NullArgument = 13,
    /// A string argument was not UTF-8.
    InvalidUtf8 = 14,
    /// agentvm panicked inside this call (a bug); the panic did not cross the boundary.
    Panic = 15,
    /// The store's disk is full; writes succeed again once space is freed (an error kind
    /// added after the first ten, so it follows the non-error codes).
    StorageFull = 16,
}

/// The one mapping from an error kind to a result code.
pub(crate) fn code_of(kind: ErrorKind) -> AgentvmResult {
    match kind {
        ErrorKind::NotFound => AgentvmResult::NotFound,
        ErrorKind::AlreadyExists => AgentvmResult::AlreadyExists,
        ErrorKind::InvalidInput => AgentvmResult::InvalidInput,
        ErrorKind::Conflict => AgentvmResult::Conflict,
        ErrorKind::Unavailable => AgentvmResult::Unavailable,
        ErrorKind::Storage => AgentvmResult::Storage,
        ErrorKind::StorageFull => AgentvmResult::StorageFull,
        ErrorKind::Protocol => AgentvmResult::Protocol,
        ErrorKind::Cancelled => AgentvmResult::Cancelled,
        ErrorKind::Unauthorized => AgentvmResult::Unauthorized,
        // Internal, and any kind added later.
        _ => AgentvmResult::Internal,
    }
}

/// A failed call: its code and its message.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) code: AgentvmResult,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(code: AgentvmResult, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure::new(code_of(e.kind()), e.chain())
    }
}

thread_local! {
    /// The message of the last failed call on this thread.
    static LAST_ERROR: RefCell<Option<CString>> = const { RefCell::new(None) };
}

/// Records `message` as this thread's last error (interior NULs become spaces).
pub(crate) fn set_last_error(message: &str) {
    let text = CString::new(message.replace('\0', " ")).unwrap_or_default();
    LAST_ERROR.with(|e| *e.borrow_mut() = Some(text));
}

/// Forgets this thread's last error (at the start of every call).
pub(crate) fn clear_last_error() {
    LAST_ERROR.with(|e| *e.borrow_mut() = None);
}

/// The message of the last call on this thread that failed, with its causes (`a: b: c`), or
/// NULL when the last call succeeded. Owned by agentvm: valid until the next agentvm call on
/// this thread; do not free it (copy it to keep it).
#[no_mangle]
pub extern "C" fn agentvm_last_error() -> *const c_char {
    LAST_ERROR.with(|e| e.borrow().as_ref().map_or(std::ptr::null(), |s| s.as_ptr()))
}

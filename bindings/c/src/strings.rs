//! Strings across the boundary: reading the caller's, handing out ours, and the one free.

use crate::error::{AgentvmResult, Failure};
use crate::panic::guard_void;
use std::ffi::{c_char, CStr, CString};

/// Reads a NUL-terminated UTF-8 argument; NULL is `NullArgument` naming `what`.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn read<'a>(ptr: *const c_char, what: &str) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::new(
            AgentvmResult::NullArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: not NULL, and the caller guarantees a valid NUL-terminated string.
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str().map_err(|e| {
        Failure::new(
            AgentvmResult::InvalidUtf8,
            format!("{what} is not UTF-8: {e}"),
        )
    })
}

/// Like [`read`], but NULL means "absent".
///
/// # Safety
/// As [`read`].
pub(crate) unsafe fn read_opt<'a>(
    ptr: *const c_char,
    what: &str,
) -> Result<Option<&'a str>, Failure> {
    if ptr.is_null() {
        return Ok(None);
    }
    // SAFETY: forwarded contract.
    unsafe { read(ptr, what) }.map(Some)
}

/// Hands `text` to the caller (freed with `agentvm_string_free`).
pub(crate) fn give(text: String) -> *mut c_char {
    // Interior NULs cannot occur in JSON text we produce; replace them rather than fail.
    let c = CString::new(text).unwrap_or_else(|e| {
        CString::new(
            e.into_vec()
                .into_iter()
                .map(|b| if b == 0 { b' ' } else { b })
                .collect::<Vec<u8>>(),
        )
        .unwrap_or_default()
    });
    c.into_raw()
}

/// Writes `value` through the output pointer `out`, which must not be NULL.
///
/// # Safety
/// `out` is NULL or valid for one write of `T`.
pub(crate) unsafe fn put<T>(out: *mut T, what: &str, value: T) -> Result<(), Failure> {
    if out.is_null() {
        return Err(Failure::new(
            AgentvmResult::NullArgument,
            format!("{what} is NULL"),
        ));
    }
    // SAFETY: not NULL, and the caller guarantees it is valid for a write.
    unsafe { out.write(value) };
    Ok(())
}

/// Checks an output pointer before the work, and clears it (NULL) so a failed call leaves NULL.
///
/// # Safety
/// As [`put`].
pub(crate) unsafe fn clear_out<T>(out: *mut *mut T, what: &str) -> Result<(), Failure> {
    // SAFETY: forwarded contract.
    unsafe { put(out, what, std::ptr::null_mut()) }
}

/// Frees a string returned by agentvm (a JSON answer, a batch of events). NULL is ignored.
/// Every string agentvm returns must be freed with this function, exactly once.
///
/// # Safety
/// `s` is NULL or a string returned by agentvm and not yet freed.
#[no_mangle]
pub unsafe extern "C" fn agentvm_string_free(s: *mut c_char) {
    guard_void(|| {
        if !s.is_null() {
            // SAFETY: the caller guarantees `s` came from `CString::into_raw` in `give` and is
            // freed once.
            drop(unsafe { CString::from_raw(s) });
        }
    })
}

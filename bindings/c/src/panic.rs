//! The panic boundary: every `extern "C"` function runs its body through [`guard`], so a panic
//! becomes `AGENTVM_RESULT_PANIC` with a message instead of unwinding into C (undefined
//! behaviour).

use crate::error::{clear_last_error, set_last_error, AgentvmResult, Failure};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs `body`, turning its failure or panic into a result code and this thread's last error.
pub(crate) fn guard(body: impl FnOnce() -> Result<AgentvmResult, Failure>) -> AgentvmResult {
    clear_last_error();
    // AssertUnwindSafe: after a panic the only state we touch is the thread's last error;
    // handles shared with the panicking code use poison-tolerant locks.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(code)) => code,
        Ok(Err(failure)) => {
            set_last_error(&failure.message);
            failure.code
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            set_last_error(&format!("agentvm panicked (a bug): {what}"));
            AgentvmResult::Panic
        }
    }
}

/// [`guard`] for functions that return nothing (the `_free` functions).
pub(crate) fn guard_void(body: impl FnOnce()) {
    let _ = guard(|| {
        body();
        Ok(AgentvmResult::Ok)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::agentvm_last_error;
    use std::ffi::CStr;

    fn last_error() -> Option<String> {
        let p = agentvm_last_error();
        // SAFETY: NULL or this thread's last error, valid until the next call on this thread.
        (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }

    #[test]
    fn a_panic_becomes_a_code_and_a_message() {
        let rc = guard(|| panic!("boom"));
        assert_eq!(rc, AgentvmResult::Panic);
        assert!(last_error().unwrap().contains("boom"));
        // The next call clears it.
        assert_eq!(guard(|| Ok(AgentvmResult::Ok)), AgentvmResult::Ok);
        assert_eq!(last_error(), None);
    }

    #[test]
    fn errors_map_from_their_kind() {
        let rc = guard(|| Err(agentvm_embed::agentvm::Error::invalid("bad").into()));
        assert_eq!(rc, AgentvmResult::InvalidInput);
        assert_eq!(last_error().as_deref(), Some("bad"));
        let rc = guard(|| Err(agentvm_embed::agentvm::Error::not_found("Image", "x").into()));
        assert_eq!(rc, AgentvmResult::NotFound);
    }
}

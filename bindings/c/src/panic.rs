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

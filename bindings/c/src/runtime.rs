//! The runtime handle: open, connect, request, cancel, serve, close, free.

use crate::error::{AgentvmResult, Failure};
use crate::panic::guard;
use crate::strings::{clear_out, give, put, read, read_opt};
use agentvm_embed::process::block_on;
use agentvm_embed::{ConnectOptions, Embed, EmbedOptions, ServeOptions};
use std::ffi::c_char;
use std::time::Duration;

/// A runtime: local (`agentvm_open`) or remote (`agentvm_connect`). Thread-safe: any number
/// of threads may call functions on one handle at once, except `agentvm_runtime_free`, which
/// must be the last call on it.
pub struct AgentvmRuntime {
    pub(crate) embed: Embed,
}

/// Runs a blocking step on the process runtime, mapping errors (before a handle exists).
pub(crate) fn wait<T>(
    fut: impl std::future::Future<Output = agentvm_embed::agentvm::Result<T>>,
) -> Result<T, Failure> {
    Ok(block_on(fut)??)
}

/// Runs a blocking step of `rt` on its runtime, mapping errors.
pub(crate) fn wait_on<T>(
    rt: &AgentvmRuntime,
    fut: impl std::future::Future<Output = agentvm_embed::agentvm::Result<T>>,
) -> Result<T, Failure> {
    Ok(rt.embed.block_on(fut)??)
}

/// The handle behind `rt`, or `NullArgument`.
///
/// # Safety
/// `rt` is NULL or a live handle from `agentvm_open` / `agentvm_connect`.
pub(crate) unsafe fn runtime<'a>(rt: *const AgentvmRuntime) -> Result<&'a AgentvmRuntime, Failure> {
    // SAFETY: the caller guarantees `rt` is NULL or a live handle (not yet freed).
    unsafe { rt.as_ref() }
        .ok_or_else(|| Failure::new(AgentvmResult::NullArgument, "runtime is NULL"))
}

/// A timeout in milliseconds: negative waits without limit.
pub(crate) fn timeout_of(ms: i64) -> Option<Duration> {
    u64::try_from(ms).ok().map(Duration::from_millis)
}

fn hand_out(out: *mut *mut AgentvmRuntime, embed: Embed) -> Result<AgentvmResult, Failure> {
    let handle = Box::into_raw(Box::new(AgentvmRuntime { embed }));
    // SAFETY: `out` was checked non-NULL by `clear_out` at the start of the call.
    unsafe { put(out, "out", handle) }?;
    Ok(AgentvmResult::Ok)
}

/// Opens a local runtime. `options_json` (NULL or `""`: defaults, everything in memory):
/// `{"dataDir"?, "llm"?: "mock" | "env" | "anthropic" | {"provider", "apiKey", "url", "model"},
/// "scheduler"?: {...}, "limits"?: {...}, "localTools"?, "definitions"?, "maxTokens"?}`;
/// unknown fields are `AGENTVM_RESULT_INVALID_INPUT`. On success `*out` is the handle
/// (free it with `agentvm_runtime_free`); on failure NULL. Blocks at most `timeout_ms`
/// (negative: no limit); `cancel_id` (0: none) names the call for `agentvm_cancel(NULL, id)`
/// from another thread (`AGENTVM_RESULT_CANCELLED`, and no handle).
///
/// # Safety
/// `options_json` is NULL or a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn agentvm_open(
    options_json: *const c_char,
    timeout_ms: i64,
    cancel_id: u64,
    out: *mut *mut AgentvmRuntime,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for `out` and `options_json`.
        unsafe { clear_out(out, "out") }?;
        let json = unsafe { read_opt(options_json, "options_json") }?.unwrap_or("");
        let options = EmbedOptions::from_json(json)?;
        let cancel = (cancel_id != 0).then_some(cancel_id);
        let embed = wait(Embed::open_with(options, cancel, timeout_of(timeout_ms)))?;
        hand_out(out, embed)
    })
}

/// Connects to an agentvm server: `{"url": "ws://host:port/ws", "token"?, "timeoutMs"?}`, or to
/// the servers of a cluster with `"urls": [...]` instead of `"url"` (the first that answers, then
/// the next in turn when the connection drops). The handle answers the same commands as a local one. Blocks at most `timeout_ms` (negative: no
/// limit beyond the options' `timeoutMs`); `cancel_id` (0: none) names the call for
/// `agentvm_cancel(NULL, id)` from another thread (`AGENTVM_RESULT_CANCELLED`, and no handle).
///
/// # Safety
/// `options_json` is a NUL-terminated string; `out` is valid for a write.
#[no_mangle]
pub unsafe extern "C" fn agentvm_connect(
    options_json: *const c_char,
    timeout_ms: i64,
    cancel_id: u64,
    out: *mut *mut AgentvmRuntime,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for `out` and `options_json`.
        unsafe { clear_out(out, "out") }?;
        let json = unsafe { read(options_json, "options_json") }?;
        let options = ConnectOptions::from_json(json)?;
        let cancel = (cancel_id != 0).then_some(cancel_id);
        let embed = wait(Embed::connect_with(options, cancel, timeout_of(timeout_ms)))?;
        hand_out(out, embed)
    })
}

/// Runs one command: `request_json` is `{"type": "<name>_request", "data": {...}}`; on
/// success `*out_json` is the response's `data` (free it with `agentvm_string_free`), on
/// failure NULL with the code of the error's kind and its message in `agentvm_last_error()`.
/// Blocks at most `timeout_ms` (negative: no limit); `cancel_id` (0: none) names the call for
/// `agentvm_cancel` from another thread. A timed-out or cancelled call is
/// `AGENTVM_RESULT_CANCELLED`; what the command already did stays done.
///
/// # Safety
/// `rt` is a live handle; `request_json` a NUL-terminated string; `out_json` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn agentvm_request(
    rt: *const AgentvmRuntime,
    request_json: *const c_char,
    timeout_ms: i64,
    cancel_id: u64,
    out_json: *mut *mut c_char,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for each pointer.
        unsafe { clear_out(out_json, "out_json") }?;
        let rt = unsafe { runtime(rt) }?;
        let json = unsafe { read(request_json, "request_json") }?;
        let cancel = (cancel_id != 0).then_some(cancel_id);
        let embed = &rt.embed;
        let data = embed.call_blocking(cancel, timeout_of(timeout_ms), embed.request(json))?;
        // SAFETY: checked non-NULL above.
        unsafe { put(out_json, "out_json", give(data)) }?;
        Ok(AgentvmResult::Ok)
    })
}

/// Cancels the call running on `rt` with `cancel_id`: it returns `AGENTVM_RESULT_CANCELLED`.
/// With `rt` NULL, cancels the `agentvm_open` / `agentvm_connect` running with `cancel_id`.
/// `AGENTVM_RESULT_NOT_FOUND` when no call runs with that id (it ended, or has not started).
/// Any thread.
///
/// # Safety
/// `rt` is NULL or a live handle.
#[no_mangle]
pub unsafe extern "C" fn agentvm_cancel(
    rt: *const AgentvmRuntime,
    cancel_id: u64,
) -> AgentvmResult {
    guard(|| {
        let fired = if rt.is_null() {
            agentvm_embed::cancel_opening(cancel_id)
        } else {
            // SAFETY: the header's contract for `rt`.
            unsafe { runtime(rt) }?.embed.cancel(cancel_id)
        };
        if fired {
            Ok(AgentvmResult::Ok)
        } else {
            Err(Failure::new(
                AgentvmResult::NotFound,
                format!("no call is running with cancel id {cancel_id}"),
            ))
        }
    })
}

/// Serves a local runtime in this process (WebSocket `/ws`, REST `/v1`, `/health`,
/// `/metrics`, the scheduler's routes): `options_json` NULL or `{"addr"?: "127.0.0.1:0",
/// "auth"?: "auto" | "required" | "disabled"}`. `*out_json` is `{"url", "wsUrl", "port"}`.
/// The server stops on `agentvm_close`.
///
/// # Safety
/// `rt` is a live handle; `options_json` NULL or a NUL-terminated string; `out_json` valid
/// for a write.
#[no_mangle]
pub unsafe extern "C" fn agentvm_serve(
    rt: *const AgentvmRuntime,
    options_json: *const c_char,
    out_json: *mut *mut c_char,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for each pointer.
        unsafe { clear_out(out_json, "out_json") }?;
        let rt = unsafe { runtime(rt) }?;
        let json = unsafe { read_opt(options_json, "options_json") }?.unwrap_or("");
        let served = wait_on(rt, rt.embed.serve(ServeOptions::from_json(json)?))?;
        let text = serde_json::to_string(&served)
            .map_err(|e| Failure::new(AgentvmResult::Internal, e.to_string()))?;
        // SAFETY: checked non-NULL above.
        unsafe { put(out_json, "out_json", give(text)) }?;
        Ok(AgentvmResult::Ok)
    })
}

/// Closes the runtime: ends its subscriptions and running calls (`CANCELLED`), stops its
/// servers and agents, writes everything out (local) or closes the connection (remote). The
/// handle stays valid (later calls fail with `CANCELLED`) until `agentvm_runtime_free`.
/// Idempotent. Blocks.
///
/// # Safety
/// `rt` is a live handle.
#[no_mangle]
pub unsafe extern "C" fn agentvm_close(rt: *const AgentvmRuntime) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for `rt`.
        let rt = unsafe { runtime(rt) }?;
        rt.embed.block_on(rt.embed.close())?;
        Ok(AgentvmResult::Ok)
    })
}

/// Closes (if not yet closed) and frees the handle. NULL is ignored. No other call on this
/// handle may run at the same time or follow; subscriptions made from it stay valid (ended)
/// until freed themselves.
///
/// # Safety
/// `rt` is NULL or a live handle, freed once.
#[no_mangle]
pub unsafe extern "C" fn agentvm_runtime_free(rt: *mut AgentvmRuntime) {
    crate::panic::guard_void(|| {
        if rt.is_null() {
            return;
        }
        // SAFETY: `rt` came from `Box::into_raw` in `hand_out` and the caller frees it once.
        let handle = unsafe { Box::from_raw(rt) };
        let _ = block_on(handle.embed.close());
    })
}

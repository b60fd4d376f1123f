//! Subscriptions: pulled in batches, with a file descriptor readable while events wait.

use crate::error::{AgentvmResult, Failure};
use crate::panic::{guard, guard_void};
use crate::runtime::{runtime, timeout_of, wait_on, AgentvmRuntime};
use crate::strings::{clear_out, give, put, read_opt};
use agentvm_embed::process::block_on;
use agentvm_embed::{EventStream, SubscribeOptions};
use rustix::fd::{AsFd, AsRawFd, OwnedFd};
use std::ffi::{c_char, c_int};
use std::sync::Arc;

/// A stream of events from one runtime. Thread-safe: `_next`, `_try_next`, `_fd` and `_close`
/// may be called from any thread, also at once (each batch goes to one caller); `_free` must be
/// the last call on it.
pub struct AgentvmSubscription {
    stream: EventStream,
    /// The pipe that is readable while events wait: (read end, write end).
    wake: Arc<(OwnedFd, OwnedFd)>,
}

/// Makes the wake-up pipe: both ends non-blocking and close-on-exec.
fn wake_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = rustix::pipe::pipe()?;
    for fd in [&r, &w] {
        rustix::io::ioctl_fionbio(fd, true)?;
        rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::CLOEXEC)?;
    }
    Ok((r, w))
}

fn signal(wake: &(OwnedFd, OwnedFd)) {
    // A full pipe is already readable: ignore EAGAIN.
    let _ = rustix::io::write(wake.1.as_fd(), &[1u8]);
}

impl AgentvmSubscription {
    /// After taking events: empties the pipe, then makes it readable again if events still
    /// wait (or the stream ended). In this order a wake-up of the pump is never lost.
    fn rearm(&self) {
        let mut buf = [0u8; 64];
        while matches!(rustix::io::read(self.wake.0.as_fd(), &mut buf), Ok(n) if n > 0) {}
        if self.stream.has_pending() || self.stream.is_ended() {
            signal(&self.wake);
        }
    }

    fn take(&self, batch: Option<String>, out: *mut *mut c_char) -> Result<AgentvmResult, Failure> {
        self.rearm();
        match batch {
            Some(b) => {
                // SAFETY: `out` was checked non-NULL by `clear_out` at the start of the call.
                unsafe { put(out, "out_batch", give(b)) }?;
                Ok(AgentvmResult::Ok)
            }
            None if self.stream.is_ended() => Ok(AgentvmResult::Ended),
            None => Ok(AgentvmResult::NoEvents),
        }
    }
}

/// # Safety
/// `sub` is NULL or a live subscription.
unsafe fn subscription<'a>(
    sub: *const AgentvmSubscription,
) -> Result<&'a AgentvmSubscription, Failure> {
    // SAFETY: the caller guarantees NULL or a live subscription (not yet freed).
    unsafe { sub.as_ref() }
        .ok_or_else(|| Failure::new(AgentvmResult::NullArgument, "subscription is NULL"))
}

/// Subscribes to events: `options_json` is `{"sessions": [{"sessionId", "afterCursor"?}],
/// "allSessions"?, "global"?, "queue"?}` (a sandbox id works as a `sessionId` for its exec
/// events). Events caused after this returns are never missed. A subscriber that falls behind
/// is resumed from its last cursor; a gap the replay log cannot fill arrives as one
/// `{"type": "subscription_gap", "data": {"topics", "lastCursors"}}` event.
///
/// # Safety
/// `rt` is a live handle; `options_json` NULL or a NUL-terminated string; `out` valid for a
/// write.
#[no_mangle]
pub unsafe extern "C" fn agentvm_subscribe(
    rt: *const AgentvmRuntime,
    options_json: *const c_char,
    out: *mut *mut AgentvmSubscription,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for each pointer.
        unsafe { clear_out(out, "out") }?;
        let rt = unsafe { runtime(rt) }?;
        let json = unsafe { read_opt(options_json, "options_json") }?.unwrap_or("");
        let options = SubscribeOptions::from_json(json)?;
        let stream = wait_on(rt, rt.embed.subscribe(options))?;
        let wake = Arc::new(wake_pipe().map_err(|e| {
            Failure::new(
                AgentvmResult::Internal,
                format!("cannot make the wake-up pipe: {e}"),
            )
        })?);
        let hook_wake = wake.clone();
        stream.set_ready_hook(Box::new(move || signal(&hook_wake)));
        let handle = Box::into_raw(Box::new(AgentvmSubscription { stream, wake }));
        // SAFETY: checked non-NULL above.
        unsafe { put(out, "out", handle) }?;
        Ok(AgentvmResult::Ok)
    })
}

/// Takes up to `max_events` waiting events (0: all waiting) as one JSON array text in
/// `*out_batch` (free it with `agentvm_string_free`), waiting at most `timeout_ms` (negative:
/// no limit) for the first. `AGENTVM_RESULT_NO_EVENTS` (time ran out) and
/// `AGENTVM_RESULT_ENDED` (closed, everything taken) leave `*out_batch` NULL. Each event is
/// the wire event (`type`, `data`, `timestamp`, ...) with `cursor` for topic events.
///
/// # Safety
/// `sub` is a live subscription; `out_batch` valid for a write.
#[no_mangle]
pub unsafe extern "C" fn agentvm_subscription_next(
    sub: *const AgentvmSubscription,
    timeout_ms: i64,
    max_events: usize,
    out_batch: *mut *mut c_char,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for each pointer.
        unsafe { clear_out(out_batch, "out_batch") }?;
        let sub = unsafe { subscription(sub) }?;
        let max = if max_events == 0 {
            usize::MAX
        } else {
            max_events
        };
        let batch = block_on(sub.stream.next_batch(max, timeout_of(timeout_ms)))?;
        sub.take(batch, out_batch)
    })
}

/// `agentvm_subscription_next` without waiting: `AGENTVM_RESULT_NO_EVENTS` when none wait.
///
/// # Safety
/// As `agentvm_subscription_next`.
#[no_mangle]
pub unsafe extern "C" fn agentvm_subscription_try_next(
    sub: *const AgentvmSubscription,
    max_events: usize,
    out_batch: *mut *mut c_char,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for each pointer.
        unsafe { clear_out(out_batch, "out_batch") }?;
        let sub = unsafe { subscription(sub) }?;
        let max = if max_events == 0 {
            usize::MAX
        } else {
            max_events
        };
        sub.take(sub.stream.try_next_batch(max), out_batch)
    })
}

/// A file descriptor that is readable while events wait (and once the subscription ended),
/// for `poll`/`epoll`/`select` loops: when readable, call `agentvm_subscription_try_next`
/// until `NO_EVENTS`. Do not read, write or close it; it lives until `agentvm_subscription_free`.
/// -1 for a NULL subscription.
///
/// # Safety
/// `sub` is NULL or a live subscription.
#[no_mangle]
pub unsafe extern "C" fn agentvm_subscription_fd(sub: *const AgentvmSubscription) -> c_int {
    let mut fd = -1;
    guard(|| {
        // SAFETY: the header's contract for `sub`.
        let sub = unsafe { subscription(sub) }?;
        fd = sub.wake.0.as_raw_fd();
        Ok(AgentvmResult::Ok)
    });
    fd
}

/// Ends the subscription: a waiting `_next` returns; later ones give `AGENTVM_RESULT_ENDED`
/// once the events already waiting were taken.
///
/// # Safety
/// `sub` is a live subscription.
#[no_mangle]
pub unsafe extern "C" fn agentvm_subscription_close(
    sub: *const AgentvmSubscription,
) -> AgentvmResult {
    guard(|| {
        // SAFETY: the header's contract for `sub`.
        let sub = unsafe { subscription(sub) }?;
        sub.stream.close();
        Ok(AgentvmResult::Ok)
    })
}

/// Ends and frees the subscription and closes its file descriptor. NULL is ignored.
///
/// # Safety
/// `sub` is NULL or a live subscription, freed once, with no other call on it running.
#[no_mangle]
pub unsafe extern "C" fn agentvm_subscription_free(sub: *mut AgentvmSubscription) {
    guard_void(|| {
        if sub.is_null() {
            return;
        }
        // SAFETY: `sub` came from `Box::into_raw` in `agentvm_subscribe`; freed once.
        let sub = unsafe { Box::from_raw(sub) };
        sub.stream.close();
        // After this the hook no longer runs, so the pipe can close with the handle.
        sub.stream.clear_ready_hook();
    })
}

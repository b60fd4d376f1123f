//! The C ABI of agentvm: a thin shell over `agentvm-embed`.
//!
//! - Opaque handles ([`AgentvmRuntime`], [`AgentvmSubscription`]), each freed by its own
//!   `_free` function.
//! - UTF-8 JSON in and out: commands are `{"type": "<name>_request", "data": {...}}`, answers
//!   are the response's `data`. Every string agentvm returns is the caller's and is freed with
//!   the one function [`agentvm_string_free`].
//! - Every entry point returns an [`AgentvmResult`] mapped from the error's stable kind in one
//!   place (`error.rs`) and leaves the message with its cause chain in
//!   [`agentvm_last_error`]. No panic crosses the boundary (`panic.rs`).
//! - Blocking calls take a timeout and a cancel id ([`agentvm_cancel`]); subscriptions are
//!   pulled ([`agentvm_subscription_next`], [`agentvm_subscription_try_next`]) and offer a file
//!   descriptor that is readable while events wait ([`agentvm_subscription_fd`]).
//!
//! The header `include/agentvm.h` is generated from this crate by cbindgen
//! (`cargo run -p agentvm-ffi-header`) and committed; `scripts/test-all.sh` fails when it
//! drifts.

// The workspace denies `unsafe_code`. A C ABI cannot be written without it: it dereferences
// pointers the caller passes and hands out raw pointers it later takes back. Every unsafe block
// is one pointer operation with a SAFETY comment stating the caller's contract from the header.
#![allow(unsafe_code)]

mod error;
mod panic;
mod runtime;
mod strings;
mod subscription;

pub use error::{agentvm_last_error, AgentvmResult};
pub use runtime::{
    agentvm_cancel, agentvm_close, agentvm_connect, agentvm_open, agentvm_request,
    agentvm_runtime_free, agentvm_serve, AgentvmRuntime,
};
pub use strings::agentvm_string_free;
pub use subscription::{
    agentvm_subscribe, agentvm_subscription_close, agentvm_subscription_fd,
    agentvm_subscription_free, agentvm_subscription_next, agentvm_subscription_try_next,
    AgentvmSubscription,
};

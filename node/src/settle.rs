//! Turning a core future into a JavaScript value or Promise.
//!
//! Every call first polls its future once on the JavaScript thread (inside the module's tokio
//! runtime context). Most reads finish there (the core answers them from memory or with one
//! redb read, and moves writes to the blocking pool), so they return the value at once and skip
//! two thread hops; the JavaScript façade `await`s either shape. A future that is not ready
//! moves, already started, to the tokio runtime, and its Promise settles on the event loop.
//!
//! Panics are caught in both places and become `Internal` errors. A pending Promise keeps
//! Node's event loop alive until it settles (work in flight), nothing else does.

use crate::error;
use futures::FutureExt;
use napi::bindgen_prelude::*;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};

/// The result of a core future.
pub(crate) type CoreResult<T> = std::result::Result<T, agentvm::Error>;

/// Runs `fut`: its value when it finishes on the first poll, a Promise of it otherwise.
/// Errors are thrown (or reject the Promise) as JavaScript errors with a `code`.
pub(crate) fn settle<'env, V, F>(env: &'env Env, fut: F) -> napi::Result<Unknown<'env>>
where
    V: ToNapiValue + Send + 'static,
    F: Future<Output = CoreResult<V>> + Send + 'static,
{
    let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind());
    let polled = napi::bindgen_prelude::within_runtime_if_available(|| {
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        fut.as_mut().poll(&mut cx)
    });
    match polled {
        Poll::Ready(out) => match flatten(out) {
            Ok(v) => v.into_unknown(env),
            Err(e) => Err(error::to_js(env, &e)),
        },
        Poll::Pending => {
            let promise = env
                .spawn_future_with_callback(async move { Ok(fut.await) }, |env, out| {
                    flatten(out).map_err(|e| error::to_js(env, &e))
                })?;
            Ok(promise.to_unknown())
        }
    }
}

/// Always a Promise (for calls whose caller wants one even when the value is ready).
pub(crate) fn spawn<'env, V, F>(env: &'env Env, fut: F) -> napi::Result<PromiseRaw<'env, V>>
where
    V: ToNapiValue + Send + 'static,
    F: Future<Output = CoreResult<V>> + Send + 'static,
{
    let fut = AssertUnwindSafe(fut).catch_unwind();
    env.spawn_future_with_callback(async move { Ok(fut.await) }, |env, out| {
        flatten(out).map_err(|e| error::to_js(env, &e))
    })
}

fn flatten<V>(out: std::thread::Result<CoreResult<V>>) -> CoreResult<V> {
    match out {
        Ok(r) => r,
        Err(panic) => Err(error::panicked(panic)),
    }
}

//! Turning an embed future into a JavaScript value or Promise.
//!
//! Every call first polls its future once on the JavaScript thread, inside embed's tokio
//! runtime. Most reads finish there (the core answers them from memory or with one store read),
//! so they return the value at once and skip two thread hops; the façade `await`s either shape.
//! A future that is not ready moves, already started, to embed's runtime, and its Promise
//! settles on the event loop. There is no second runtime: napi's own is not used.
//!
//! Panics are caught in both places and become `internal` errors. A pending Promise keeps
//! Node's event loop alive until it settles (work in flight), nothing else does.

use crate::error;
use agentvm_embed::agentvm;
use futures::FutureExt;
use napi::bindgen_prelude::*;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::task::{Context, Poll};
use tokio::runtime::Handle;

/// Embed's runtime (the process's one), as a JavaScript error when it cannot start.
pub(crate) fn runtime(env: &Env) -> napi::Result<Handle> {
    agentvm_embed::process::handle().map_err(|e| error::to_js(env, &e))
}

/// The result of an embed future.
pub(crate) type CoreResult<T> = std::result::Result<T, agentvm::Error>;

/// Runs `fut`: its value when it finishes on the first poll, a Promise of it otherwise.
/// Errors are thrown (or reject the Promise) as JavaScript errors with `kind` and `code`.
pub(crate) fn settle<'env, V, F>(
    env: &'env Env,
    runtime: &Handle,
    fut: F,
) -> napi::Result<Unknown<'env>>
where
    V: ToNapiValue + Send + 'static,
    F: Future<Output = CoreResult<V>> + Send + 'static,
{
    let mut fut = Box::pin(AssertUnwindSafe(fut).catch_unwind());
    let polled = {
        let _context = runtime.enter();
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        fut.as_mut().poll(&mut cx)
    };
    match polled {
        Poll::Ready(out) => match flatten(out) {
            Ok(v) => v.into_unknown(env),
            Err(e) => Err(error::to_js(env, &e)),
        },
        Poll::Pending => {
            let (deferred, promise) = env.create_deferred()?;
            runtime.spawn(async move {
                let out = flatten(fut.await);
                deferred.resolve(move |env| out.map_err(|e| error::to_js(&env, &e)));
            });
            Ok(promise.to_unknown())
        }
    }
}

/// Always a Promise (for calls whose caller wants one even when the value is ready).
pub(crate) fn spawn<'env, V, F>(
    env: &'env Env,
    runtime: &Handle,
    fut: F,
) -> napi::Result<Unknown<'env>>
where
    V: ToNapiValue + Send + 'static,
    F: Future<Output = CoreResult<V>> + Send + 'static,
{
    let fut = AssertUnwindSafe(fut).catch_unwind();
    let (deferred, promise) = env.create_deferred()?;
    runtime.spawn(async move {
        let out = flatten(fut.await);
        deferred.resolve(move |env| out.map_err(|e| error::to_js(&env, &e)));
    });
    Ok(promise.to_unknown())
}

fn flatten<V>(out: std::thread::Result<CoreResult<V>>) -> CoreResult<V> {
    match out {
        Ok(r) => r,
        Err(panic) => Err(error::panicked(panic)),
    }
}

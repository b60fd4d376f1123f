//! Runs the work of every async method on embed's one process runtime.
//!
//! The foreign side polls uniffi's futures from its own executor (asyncio, Kotlin coroutines,
//! Swift tasks, Ruby threads), which is not a tokio context. Each call is therefore spawned on
//! [`agentvm_embed::process`]'s runtime and the foreign executor only awaits its
//! `JoinHandle`, which needs no runtime. No second tokio runtime is ever built. When the
//! foreign side drops the future (an asyncio task cancelled, a Kotlin job cancelled, a Ruby
//! `Timeout`), the spawned task is aborted with it.

use crate::error::AgentVmError;
use agentvm_embed::process;
use std::future::Future;
use tokio::task::JoinHandle;

/// Aborts the task when the caller stops waiting for it.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Runs `work` on the process runtime and waits for it from any executor. A panic in `work`
/// is `Internal`; it never reaches the foreign side.
pub(crate) async fn on_runtime<T, F>(work: F) -> Result<T, AgentVmError>
where
    F: Future<Output = Result<T, AgentVmError>> + Send + 'static,
    T: Send + 'static,
{
    let mut task = AbortOnDrop(process::handle()?.spawn(work));
    match (&mut task.0).await {
        Ok(result) => result,
        Err(e) if e.is_cancelled() => Err(AgentVmError::Cancelled {
            message: "the call's task was aborted".into(),
        }),
        Err(e) => Err(AgentVmError::Internal {
            message: format!("agentvm panicked in a call: {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    /// A minimal executor that is not tokio, as a foreign language's would be.
    fn foreign_block_on<F: Future>(fut: F) -> F::Output {
        use std::task::{Context, Poll, Wake, Waker};
        struct Unpark(std::thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(fut);
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
            std::thread::park();
        }
    }

    #[test]
    fn tokio_work_runs_on_the_process_runtime_from_a_foreign_executor() {
        let thread = foreign_block_on(on_runtime(async {
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok(std::thread::current().name().map(str::to_string))
        }))
        .unwrap();
        assert_eq!(thread.as_deref(), Some("agentvm-tokio"));
    }

    #[test]
    fn a_panic_is_an_internal_error() {
        let r: Result<(), _> = foreign_block_on(on_runtime(async { panic!("boom") }));
        assert!(
            matches!(r, Err(AgentVmError::Internal { ref message }) if message.contains("panicked")),
            "{r:?}"
        );
    }

    #[test]
    fn dropping_the_call_aborts_its_task() {
        let finished = Arc::new(AtomicBool::new(false));
        let flag = finished.clone();
        let call = on_runtime(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            flag.store(true, Ordering::SeqCst);
            Ok(())
        });
        // Start it, then stop waiting (what a cancelled foreign task does).
        let mut call = Box::pin(call);
        let waker = std::task::Waker::noop();
        let _ = call
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker));
        drop(call);
        std::thread::sleep(Duration::from_millis(600));
        assert!(!finished.load(Ordering::SeqCst), "the aborted task ran on");
    }
}

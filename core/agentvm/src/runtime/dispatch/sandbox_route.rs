//! In a cluster, which lease a sandbox command runs under: the container that owns the
//! sandbox, or [`UNOWNED`] for an operator's sandboxes (and their warm pools). The server
//! holding that lease tends the sandbox (see `agentvm_scheduler::Stewardship`), so every
//! operation on it runs there, once.

use crate::model::{Command, Response};
use crate::runtime::AgentVm;
use agentvm_scheduler::stewardship::{Stewardship, UNOWNED};
use std::collections::HashMap;
use std::sync::Mutex;

/// Terminals opened through this server on another one, remembered so their input, resize
/// and close go to the same place; at most this many (the oldest half is dropped past it).
const MAX_TERMINAL_ROUTES: usize = 4096;

/// Terminal id -> the lease its sandbox runs under, with the order each was put in.
#[derive(Debug, Default)]
pub(crate) struct TerminalRoutes(Mutex<Routes>);

#[derive(Debug, Default)]
struct Routes {
    /// How many were ever put: the age of each entry.
    puts: u64,
    by_terminal: HashMap<String, (u64, String)>,
}

impl TerminalRoutes {
    fn get(&self, terminal_id: &str) -> Option<String> {
        self.lock()
            .by_terminal
            .get(terminal_id)
            .map(|(_, key)| key.clone())
    }

    fn put(&self, terminal_id: String, key: String) {
        let mut routes = self.lock();
        if routes.by_terminal.len() >= MAX_TERMINAL_ROUTES {
            let cut = routes.puts - (MAX_TERMINAL_ROUTES / 2) as u64;
            routes.by_terminal.retain(|_, (n, _)| *n > cut);
        }
        routes.puts += 1;
        let n = routes.puts;
        routes.by_terminal.insert(terminal_id, (n, key));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `key` is the lease of unowned sandboxes (callers need an operator's scope).
pub(crate) fn is_unowned(key: &str) -> bool {
    key == UNOWNED
}

impl AgentVm {
    /// The lease a sandbox command runs under; `None` for commands that touch no one
    /// sandbox (lists, templates, nodes) or name nothing that exists (the handler reports it).
    pub(crate) async fn sandbox_key(&self, command: &Command) -> Option<String> {
        let scheduler = self.inner.scheduler.as_ref()?;
        let sandbox_id = match command {
            Command::SandboxCreate(r) => {
                return Some(Stewardship::key_of(r.owner.as_deref()).to_string())
            }
            Command::SandboxTerminalInput(r) => {
                return self.inner.terminal_routes.get(&r.terminal_id)
            }
            Command::SandboxTerminalResize(r) => {
                return self.inner.terminal_routes.get(&r.terminal_id)
            }
            Command::SandboxTerminalClose(r) => {
                return self.inner.terminal_routes.get(&r.terminal_id)
            }
            Command::SandboxExecCancel(r) => self.execution_sandbox(&r.execution_id).await?,
            Command::ExecutionGet(r) => self.execution_sandbox(&r.execution_id).await?,
            other
                if other.type_name().starts_with("sandbox_")
                    || matches!(other, Command::ExecutionList(_)) =>
            {
                let value = serde_json::to_value(other).ok()?;
                value.get("data")?.get("sandboxId")?.as_str()?.to_string()
            }
            _ => return None,
        };
        let sandbox = scheduler.get_sandbox(&sandbox_id).await.ok()??;
        Some(Stewardship::key_of(sandbox.owner.as_deref()).to_string())
    }

    async fn execution_sandbox(&self, execution_id: &str) -> Option<String> {
        let scheduler = self.inner.scheduler.as_ref()?;
        let execution = scheduler.get_execution(execution_id).await.ok()??;
        Some(execution.sandbox_id)
    }

    /// Remembers where a terminal opened through this server runs.
    pub(crate) fn route_terminal(&self, key: &str, response: &crate::Result<Response>) {
        if let Ok(Response::SandboxTerminalOpen(r)) = response {
            self.inner
                .terminal_routes
                .put(r.terminal.id.clone(), key.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_routes_are_bounded_and_keep_the_newest() {
        let routes = TerminalRoutes::default();
        for i in 0..(MAX_TERMINAL_ROUTES + 10) {
            routes.put(format!("term_{i}"), format!("c{i}"));
        }
        let kept = routes.lock().by_terminal.len();
        assert!(kept <= MAX_TERMINAL_ROUTES, "{kept}");
        let newest = MAX_TERMINAL_ROUTES + 9;
        assert_eq!(
            routes.get(&format!("term_{newest}")),
            Some(format!("c{newest}"))
        );
        assert_eq!(routes.get("term_0"), None);
        assert!(is_unowned(UNOWNED) && !is_unowned("tenant-1"));
    }
}

//! Terminal commands (docs/commands.md, *Terminals*): open an interactive terminal in a
//! sandbox, write to it, resize it, close it. Its output and its end are events on the
//! sandbox's topic, published by a task that reads the scheduler's terminal stream.
//!
//! Scope rule: a terminal is visible exactly when its sandbox is; one outside the caller's
//! scope is `NotFound`, like one that does not exist.

use super::super::bus::Scope;
use super::super::local::AgentVm;
use crate::error::{Error, Result};
use crate::model::*;
use crate::scheduler::terminal::MAX_TERMINAL_INPUT_BYTES;
use crate::scheduler::{Terminal, TerminalEvent};
use base64::Engine;

impl AgentVm {
    /// The open terminal, or `NotFound` (also when its sandbox is outside the scope).
    async fn visible_terminal(&self, scope: &Scope, terminal_id: &str) -> Result<Terminal> {
        validate_id("terminalId", terminal_id)?;
        let s = self.scheduler_or_unavailable()?;
        match s.terminal(terminal_id) {
            Some(t) if self.visible_sandbox(scope, &t.sandbox_id).await?.is_some() => Ok(t),
            _ => Err(Error::not_found("Terminal", terminal_id)),
        }
    }

    /// Opens the terminal and starts publishing its output on the sandbox's topic; answers
    /// once it runs.
    pub(super) async fn sandbox_terminal_open(
        &self,
        scope: &Scope,
        r: SandboxTerminalOpenRequest,
    ) -> Result<SandboxTerminalOpenResponse> {
        let sandbox = self.sandbox(scope, &r.sandbox_id).await?;
        let s = self.scheduler_or_unavailable()?;
        let (_, request) = r.into_parts();
        let mut session = s.open_terminal(&sandbox.id, request).await?;
        let terminal = session.terminal.clone();
        let context = sandbox.owner.map(|owner| EventContext {
            container_id: Some(owner),
            ..Default::default()
        });
        let bus = self.inner.bus.clone();
        let (sandbox_id, terminal_id) = (terminal.sandbox_id.clone(), terminal.id.clone());
        tokio::spawn(async move {
            while let Some(event) = session.next_event().await {
                let payload = match event {
                    TerminalEvent::Output(data) => EventPayload::SandboxTerminalOutput {
                        sandbox_id: sandbox_id.clone(),
                        terminal_id: terminal_id.clone(),
                        data,
                    },
                    TerminalEvent::Exited(exit_code) => EventPayload::SandboxTerminalExited {
                        sandbox_id: sandbox_id.clone(),
                        terminal_id: terminal_id.clone(),
                        exit_code,
                    },
                };
                bus.publish(Event::new(payload, context.clone()));
            }
        });
        Ok(SandboxTerminalOpenResponse { terminal })
    }

    pub(super) async fn sandbox_terminal_input(
        &self,
        scope: &Scope,
        r: SandboxTerminalInputRequest,
    ) -> Result<SandboxTerminalInputResponse> {
        // Refused before decoding: base64 of the limit is 4/3 of it.
        if r.data.len() > MAX_TERMINAL_INPUT_BYTES / 3 * 4 + 4 {
            return Err(Error::invalid(format!(
                "terminal input is {} bytes; the limit is {MAX_TERMINAL_INPUT_BYTES} per request",
                r.data.len()
            )));
        }
        let bytes = match r.encoding {
            FileEncoding::Utf8 => r.data.into_bytes(),
            FileEncoding::Base64 => base64::engine::general_purpose::STANDARD
                .decode(r.data.as_bytes())
                .map_err(|e| Error::invalid(format!("data is not valid base64: {e}")))?,
        };
        let t = self.visible_terminal(scope, &r.terminal_id).await?;
        let bytes = self
            .scheduler_or_unavailable()?
            .terminal_input(&t.id, &bytes)
            .await?;
        Ok(SandboxTerminalInputResponse {
            terminal_id: t.id,
            bytes,
        })
    }

    pub(super) async fn sandbox_terminal_resize(
        &self,
        scope: &Scope,
        r: SandboxTerminalResizeRequest,
    ) -> Result<SandboxTerminalResizeResponse> {
        crate::scheduler::terminal::check_terminal_size(r.cols, r.rows)?;
        let t = self.visible_terminal(scope, &r.terminal_id).await?;
        let terminal = self
            .scheduler_or_unavailable()?
            .resize_terminal(&t.id, r.cols, r.rows)
            .await?;
        Ok(SandboxTerminalResizeResponse { terminal })
    }

    pub(super) async fn sandbox_terminal_close(
        &self,
        scope: &Scope,
        r: SandboxTerminalCloseRequest,
    ) -> Result<SandboxTerminalCloseResponse> {
        let t = self.visible_terminal(scope, &r.terminal_id).await?;
        let exit_code = self
            .scheduler_or_unavailable()?
            .close_terminal(&t.id)
            .await?;
        Ok(SandboxTerminalCloseResponse {
            terminal_id: t.id,
            exit_code,
        })
    }
}

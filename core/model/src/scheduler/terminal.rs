//! Interactive terminals as clients see them: a shell (or any command) on a pseudo-terminal in
//! a sandbox, its size, and the limits on what a client can hold.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Terminals open at once in one sandbox; one more is refused (`Conflict`) until one ends.
pub const MAX_TERMINALS_PER_SANDBOX: usize = 4;

/// Bytes of one input (decoded); more is refused (`InvalidInput`). Paste in pieces.
pub const MAX_TERMINAL_INPUT_BYTES: usize = 64 * 1024;

/// The largest number of columns or rows.
pub const MAX_TERMINAL_SIZE: u16 = 1000;

/// Columns of a terminal opened without a size.
pub const DEFAULT_TERMINAL_COLS: u16 = 80;

/// Rows of a terminal opened without a size.
pub const DEFAULT_TERMINAL_ROWS: u16 = 24;

/// What a new terminal runs and at which size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TerminalRequest {
    /// The argv to run; `/bin/sh` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// Columns, 1 to 1000.
    pub cols: u16,
    /// Rows, 1 to 1000.
    pub rows: u16,
    /// Extra environment (`TERM` is `xterm` unless given).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The id to give the terminal (`term_…`, unused); one is made when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminal_id: Option<String>,
}

impl Default for TerminalRequest {
    fn default() -> Self {
        TerminalRequest {
            command: Vec::new(),
            cols: DEFAULT_TERMINAL_COLS,
            rows: DEFAULT_TERMINAL_ROWS,
            env: BTreeMap::new(),
            terminal_id: None,
        }
    }
}

impl TerminalRequest {
    /// The argv it runs: `command`, or `/bin/sh`.
    pub fn argv(&self) -> Vec<String> {
        if self.command.is_empty() {
            vec!["/bin/sh".into()]
        } else {
            self.command.clone()
        }
    }
}

/// `InvalidInput` unless `cols` and `rows` are both 1 to [`MAX_TERMINAL_SIZE`].
pub fn check_terminal_size(cols: u16, rows: u16) -> Result<()> {
    for (name, v) in [("cols", cols), ("rows", rows)] {
        if v == 0 || v > MAX_TERMINAL_SIZE {
            return Err(Error::invalid(format!(
                "{name} must be 1 to {MAX_TERMINAL_SIZE}, not {v}"
            )));
        }
    }
    Ok(())
}

/// An open terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase")]
pub struct Terminal {
    /// Its id (`term_…`), for input, resize and close.
    pub id: String,
    /// The sandbox it runs in (its output goes on this sandbox's topic).
    pub sandbox_id: String,
    /// The argv run.
    pub command: Vec<String>,
    /// Columns now.
    pub cols: u16,
    /// Rows now.
    pub rows: u16,
    /// When it was opened, ms since the epoch.
    pub created_at: i64,
}

/// What a terminal's output stream carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TerminalEvent {
    /// Output, whole UTF-8 characters (invalid bytes become U+FFFD).
    Output(String),
    /// The command ended, with its exit code when Docker reports one.
    Exited(Option<i64>),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_out_of_range_are_refused_by_name() {
        assert!(check_terminal_size(80, 24).is_ok());
        assert!(check_terminal_size(1000, 1).is_ok());
        let e = check_terminal_size(0, 24).unwrap_err();
        assert!(
            e.to_string().contains("cols must be 1 to 1000, not 0"),
            "{e}"
        );
        let e = check_terminal_size(80, 1001).unwrap_err();
        assert!(e.to_string().contains("rows"), "{e}");
    }

    #[test]
    fn a_terminal_runs_a_shell_by_default() {
        assert_eq!(TerminalRequest::default().argv(), ["/bin/sh"]);
    }
}

//! The operator's socket: a Unix socket in the data dir (mode 0600) that takes one command per
//! line, as a Channel request frame, and answers one response frame per line, with the rights
//! of an all-containers token. Whoever can open it can already read the data dir, so it grants
//! nothing new; it lets `agentvm-server token create|list|revoke` work while the server runs
//! (redb allows one process per database file).

use crate::channel::codec::{self, ClientFrame};
use crate::error::{Error, Result};
use crate::runtime::{Caller, Scope};
use crate::ServerState;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

/// The socket's file name in the data dir.
pub const ADMIN_SOCKET: &str = "agentvm.sock";

/// The longest command line accepted.
const MAX_LINE: u64 = 1024 * 1024;

/// Binds `path` (replacing a stale socket no server answers on) and serves it until shutdown.
pub(crate) async fn serve(
    state: Arc<ServerState>,
    path: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) -> Result<()> {
    if path.exists() {
        if UnixStream::connect(&path).await.is_ok() {
            return Err(Error::Conflict(format!(
                "{} answers: another agentvm-server serves this data dir",
                path.display()
            )));
        }
        let _ = std::fs::remove_file(&path);
    }
    let listener = UnixListener::bind(&path).map_err(|e| Error::Unavailable {
        message: format!("cannot listen on {}: {e}", path.display()),
        source: Some(Box::new(e)),
    })?;
    restrict(&path)?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = async { let _ = shutdown.wait_for(|s| *s).await; } => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(serve_connection(state.clone(), stream));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "operator socket: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                },
            }
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

fn restrict(path: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| {
        Error::Unavailable {
            message: format!("cannot restrict {} to its owner: {e}", path.display()),
            source: Some(Box::new(e)),
        }
    })
}

async fn serve_connection(state: Arc<ServerState>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read.take(MAX_LINE)).lines();
    let caller = Caller {
        scope: Scope::All,
        token_id: None,
        deadline: Some(state.config.request_timeout),
        hook: None,
    };
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = match codec::decode_client_frame(&line).frame {
            Ok(ClientFrame::Request {
                request_id,
                command,
            }) => {
                let response_type = command.response_type();
                let result = state.vm.dispatch(*command, &caller).await;
                state.after_dispatch(&result);
                match result {
                    Ok(r) => codec::response_value(&r, request_id.as_deref()),
                    Err(e) => codec::error_response_value(response_type, request_id.as_deref(), &e),
                }
            }
            Ok(_) => codec::error_response_value(
                "error_response",
                None,
                &Error::invalid("the operator socket takes commands only"),
            ),
            Err(e) => codec::error_response_value(
                e.response_type.as_deref().unwrap_or("error_response"),
                e.request_id.as_deref(),
                &e.error,
            ),
        };
        let mut text = answer.to_string();
        text.push('\n');
        if write.write_all(text.as_bytes()).await.is_err() {
            break;
        }
    }
}

/// Sends one command frame to the server on `path` and returns its response frame.
pub async fn request(path: &Path, frame: &serde_json::Value) -> Result<serde_json::Value> {
    let stream = UnixStream::connect(path)
        .await
        .map_err(|e| Error::Unavailable {
            message: format!("no server answers on {}: {e}", path.display()),
            source: Some(Box::new(e)),
        })?;
    let (read, mut write) = stream.into_split();
    let mut text = frame.to_string();
    text.push('\n');
    write.write_all(text.as_bytes()).await?;
    let mut lines = BufReader::new(read.take(64 * MAX_LINE)).lines();
    let line = lines.next_line().await?.ok_or_else(|| {
        Error::unavailable(format!("{} closed without answering", path.display()))
    })?;
    serde_json::from_str(&line)
        .map_err(|e| Error::unavailable(format!("{} answered with bad JSON: {e}", path.display())))
}

//! Docker through bollard, one client per node, connected to that node's own `api_endpoint`
//! (a unix socket, or TCP with TLS). Errors are mapped here, once: a daemon that does not
//! answer is [`Error::Unavailable`] naming the node and the endpoint (and turns the node
//! offline); a daemon that answers with an error keeps its kind (404, 409, 400, ...).

use crate::error::{Error, ErrorKind, Result};
use crate::model::scheduler::TlsFiles;
pub use agentvm_model::scheduler::node::Endpoint;
use bollard::errors::Error as DockerError;
use bollard::Docker;

/// Connects to a node's endpoint and negotiates the API version (Debian's 20.10 speaks 1.41,
/// bollard defaults to 1.53). `timeout` bounds each request.
pub async fn connect(
    node_id: &str,
    api_endpoint: &str,
    tls: Option<&TlsFiles>,
    timeout: std::time::Duration,
) -> Result<Docker> {
    let secs = timeout.as_secs().max(1);
    let version = bollard::API_DEFAULT_VERSION;
    let client = match Endpoint::parse(api_endpoint, tls)? {
        Endpoint::Unix(path) => {
            if !std::path::Path::new(&path).exists() {
                return Err(Error::unavailable(format!(
                    "Docker on node {node_id} is unavailable: no socket at {path} ({api_endpoint}); is dockerd running?"
                )));
            }
            Docker::connect_with_unix(&path, secs, version)
        }
        Endpoint::Tls { addr, tls } => {
            Docker::connect_with_ssl(&addr, &tls.key, &tls.cert, &tls.ca, secs, version)
        }
        Endpoint::Plain(addr) => Docker::connect_with_http(&addr, secs, version),
    }
    .map_err(|e| map_err(node_id, api_endpoint, "connecting", e))?;
    client
        .negotiate_version()
        .await
        .map_err(|e| map_err(node_id, api_endpoint, "negotiating the API version", e))
}

/// Whether `e` means the daemon did not answer at all (as opposed to answering with an error).
pub fn is_unreachable(e: &DockerError) -> bool {
    matches!(
        e,
        DockerError::HyperLegacyError { .. }
            | DockerError::IOError { .. }
            | DockerError::RequestTimeoutError
            | DockerError::SocketNotFoundError(_)
            | DockerError::HttpClientError { .. }
            | DockerError::HyperResponseError { .. }
            | DockerError::NoNativeCertsError { .. }
            | DockerError::LoadNativeCertsErrors { .. }
            | DockerError::CertPathError { .. }
            | DockerError::CertParseError { .. }
            | DockerError::CertMultipleKeys { .. }
    )
}

/// Maps a bollard error met while `doing` something on `node_id`.
pub fn map_err(node_id: &str, api_endpoint: &str, doing: &str, e: DockerError) -> Error {
    if is_unreachable(&e) {
        return Error::Unavailable {
            message: format!(
                "Docker on node {node_id} ({api_endpoint}) does not answer while {doing}: {e}"
            ),
            source: Some(Box::new(e)),
        };
    }
    match e {
        DockerError::DockerResponseServerError {
            status_code,
            message,
        } => {
            let kind = match status_code {
                400 => ErrorKind::InvalidInput,
                401 | 403 => ErrorKind::Conflict,
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                _ => ErrorKind::Unavailable,
            };
            Error::Remote {
                kind,
                message: format!("Docker on node {node_id} refused {doing}: {message}"),
            }
        }
        other => Error::Remote {
            kind: ErrorKind::Unavailable,
            message: format!("Docker on node {node_id} failed while {doing}: {other}"),
        },
    }
}

/// Whether a mapped error says the node's daemon is gone (so the node turns offline).
pub fn node_is_down(e: &Error) -> bool {
    matches!(e, Error::Unavailable { .. })
}

/// The HTTP status of a Docker error, when the daemon answered.
pub fn status_of(e: &DockerError) -> Option<u16> {
    match e {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_by_scheme() {
        assert_eq!(
            Endpoint::parse("unix:///var/run/docker.sock", None).unwrap(),
            Endpoint::Unix("/var/run/docker.sock".into())
        );
        assert_eq!(
            Endpoint::parse("tcp://127.0.0.1:2375", None).unwrap(),
            Endpoint::Plain("127.0.0.1:2375".into())
        );
        let tls = TlsFiles {
            ca: "ca.pem".into(),
            cert: "cert.pem".into(),
            key: "key.pem".into(),
        };
        assert!(matches!(
            Endpoint::parse("tcp://h:2376", Some(&tls)).unwrap(),
            Endpoint::Tls { .. }
        ));
        assert!(Endpoint::parse("tcp://h:2376", None).is_err());
        assert!(Endpoint::parse("https://h:2376", None).is_err());
        assert!(Endpoint::parse("unix://relative.sock", None).is_err());
        assert!(Endpoint::parse("ssh://h", None).is_err());
        assert!(Endpoint::parse("nonsense", None).is_err());
    }

    #[test]
    fn server_errors_keep_their_kind_and_unreachable_is_unavailable() {
        let e = map_err(
            "n1",
            "unix:///x",
            "creating a container",
            DockerError::DockerResponseServerError {
                status_code: 404,
                message: "No such image: nope:1".into(),
            },
        );
        assert_eq!(e.kind(), ErrorKind::NotFound);
        assert!(!node_is_down(&e));
        assert!(e.to_string().contains("node n1"), "{e}");
        let e = map_err(
            "n1",
            "unix:///x",
            "pinging",
            DockerError::SocketNotFoundError("/x".into()),
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(node_is_down(&e));
        assert!(e.to_string().contains("does not answer"), "{e}");
    }
}

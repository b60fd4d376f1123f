//! Who may use the local tools, and as whom they run: the operator's gate on running `bash`
//! on the host.
//!
//! A server that turns local tools on names the containers allowed to use them; any other
//! container's tool call is refused (`Unauthorized`), whatever its images enable. `bash` runs
//! as an unprivileged user (`nobody` by default) when the server runs as root: the child
//! drops its supplementary groups and switches gid and uid before it starts. A server that is
//! not root cannot switch, and says so when it starts.

use crate::error::{Error, Result};
use std::collections::BTreeSet;

/// A numeric user and group to run commands as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolUser {
    /// The user id.
    pub uid: u32,
    /// The group id.
    pub gid: u32,
}

impl ToolUser {
    /// Resolves `spec`: `uid:gid`, a bare `uid` (its group the same number), or a user name
    /// from `/etc/passwd` (`nobody`).
    pub fn resolve(spec: &str) -> Result<ToolUser> {
        Self::resolve_in(spec, "/etc/passwd")
    }

    fn resolve_in(spec: &str, passwd: &str) -> Result<ToolUser> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(Error::invalid("local_tools_user is empty"));
        }
        if let Some((u, g)) = spec.split_once(':') {
            return match (u.parse(), g.parse()) {
                (Ok(uid), Ok(gid)) => Ok(ToolUser { uid, gid }),
                _ => Err(Error::invalid(format!(
                    "local_tools_user {spec:?} is not uid:gid"
                ))),
            };
        }
        if let Ok(uid) = spec.parse() {
            return Ok(ToolUser { uid, gid: uid });
        }
        let text = std::fs::read_to_string(passwd).map_err(|e| {
            Error::invalid(format!(
                "local_tools_user {spec:?}: cannot read {passwd} ({e}); give uid:gid"
            ))
        })?;
        text.lines()
            .filter_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                match f.as_slice() {
                    [name, _, uid, gid, ..] if *name == spec => {
                        Some((uid.parse().ok()?, gid.parse().ok()?))
                    }
                    _ => None,
                }
            })
            .next()
            .map(|(uid, gid)| ToolUser { uid, gid })
            .ok_or_else(|| {
                Error::invalid(format!(
                    "local_tools_user {spec:?} is not a user of {passwd}; give a name or uid:gid"
                ))
            })
    }
}

/// The operator's rules for the local tools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalToolsPolicy {
    /// The containers whose agents may use them; `None`: every container (the embedded
    /// default, where the embedding program is the operator).
    pub containers: Option<BTreeSet<String>>,
    /// Run `bash` as this user (needs the process to be root); `None`: as this process's user.
    pub run_as: Option<ToolUser>,
}

impl LocalToolsPolicy {
    /// Only `containers` may use local tools (`*` among them: every container).
    pub fn allow<I, S>(containers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let set: BTreeSet<String> = containers.into_iter().map(Into::into).collect();
        LocalToolsPolicy {
            containers: if set.contains("*") { None } else { Some(set) },
            run_as: None,
        }
    }

    /// Runs `bash` as `user`.
    pub fn run_as(mut self, user: ToolUser) -> Self {
        self.run_as = Some(user);
        self
    }

    /// Refuses a container the operator did not allow.
    pub fn check(&self, container_id: &str) -> Result<()> {
        match &self.containers {
            Some(set) if !set.contains(container_id) => Err(Error::Unauthorized(format!(
                "local tools are not enabled for container {container_id}: the operator allows \
                 them per container (--local-tools-container, local_tools_containers)"
            ))),
            _ => Ok(()),
        }
    }
}

/// Whether this process runs as root (and so can switch to another user).
pub fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_resolve_from_numbers_and_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let passwd = dir.path().join("passwd");
        std::fs::write(
            &passwd,
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        )
        .unwrap();
        let p = passwd.to_str().unwrap();
        assert_eq!(
            ToolUser::resolve_in("nobody", p).unwrap(),
            ToolUser {
                uid: 65534,
                gid: 65534
            }
        );
        assert_eq!(
            ToolUser::resolve_in("1000:100", p).unwrap(),
            ToolUser {
                uid: 1000,
                gid: 100
            }
        );
        assert_eq!(ToolUser::resolve_in("42", p).unwrap().gid, 42);
        assert!(ToolUser::resolve_in("ghost", p).is_err());
        assert!(ToolUser::resolve_in("a:b", p).is_err());
        assert!(ToolUser::resolve_in("", p).is_err());
    }

    #[test]
    fn only_allowed_containers_pass() {
        let p = LocalToolsPolicy::allow(["a"]);
        assert!(p.check("a").is_ok());
        let e = p.check("b").unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Unauthorized);
        assert!(e.to_string().contains("container b"), "{e}");
        assert!(LocalToolsPolicy::allow(["*"]).check("b").is_ok());
        assert!(LocalToolsPolicy::default().check("b").is_ok());
        assert!(LocalToolsPolicy::allow(Vec::<String>::new())
            .check("a")
            .is_err());
    }
}

//! Files of a sandbox as its user, confined to one directory: what agents' file tools use.
//!
//! Every operation is one exec as the sandbox's user (the user its commands run as), so a file
//! tool can read, write and list exactly what the agent's own shell could, and nothing more.
//! Paths are resolved inside the container (`realpath`, following every symbolic link) and
//! refused when the result leaves the directory, so a link the agent made to `/etc` or `/root`
//! leads nowhere. Data goes through the exec's stdin and stdout, byte for byte.
//!
//! The archive API (see [`files`](super::files)) runs as root and is kept for the sandbox REST
//! API, whose callers own the sandbox.

use super::engine::{Chunk, ExecSpec};
use super::Scheduler;
use crate::error::{Error, Result};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

/// Shared by the scripts: `$1` the root (relative to the workdir), `$2` the path inside it.
/// Makes the root, resolves it, and defines `inside` (is `$1` the root or under it?) and
/// `resolve` (sets `r` to the resolved `$1`; exit 15 when it, or the directory it is in,
/// resolves outside the root, 13 when it cannot be resolved). Exit codes of the scripts: 13 no such path, 14 cannot be created,
/// 15 leaves the root, 16 is a directory, 17 not a regular file / not a directory.
const PRELUDE: &str = r#"mkdir -p -- "$1" 2>/dev/null
root=$(realpath "./$1") || exit 14
rel=$2
inside() { case "$1" in "$root"|"$root"/*) return 0;; esac; return 1; }
resolve() {
  r=$(realpath "$1" 2>&1) || {
    d=$(realpath "${1%/*}" 2>/dev/null) && ! inside "$d" && { printf '%s\n' "$d" >&2; exit 15; }
    printf '%s\n' "$r" >&2; exit 13
  }
  inside "$r" || { printf '%s\n' "$r" >&2; exit 15; }
}
"#;

/// Prints the file `$root/$rel` to stdout.
const READ: &str = r#"p="$root/$rel"
resolve "$p"
[ -e "$r" ] || exit 13
[ -d "$r" ] && exit 16
[ -f "$r" ] || exit 17
exec cat -- "$r"
"#;

/// Writes stdin to `$root/$rel`, making its parent directories one at a time, each resolved
/// and checked before the next is made.
const WRITE: &str = r#"d=$root
case "$rel" in */*) parents=${rel%/*} ;; *) parents= ;; esac
name=${rel##*/}
set -f
IFS=/
for c in $parents; do
  d="$d/$c"
  if [ ! -e "$d" ] && [ ! -L "$d" ]; then mkdir -- "$d" || exit 14; fi
  resolve "$d"
  d=$r
  [ -d "$d" ] || { printf '%s is not a directory\n' "$c" >&2; exit 14; }
done
unset IFS
t="$d/$name"
if [ -e "$t" ] || [ -L "$t" ]; then
  r=$(realpath "$t" 2>&1) || { printf '%s\n' "$r" >&2; exit 15; }
  inside "$r" || { printf '%s\n' "$r" >&2; exit 15; }
  [ -d "$r" ] && exit 16
  t=$r
fi
cat > "$t"
"#;

/// Lists `$root/$rel` (a directory): for each entry below it (`$3` = 1: recursively), `d` or
/// `f`, its size and its path relative to the directory, NUL-terminated. Links are listed,
/// never followed.
const LIST: &str = r#"p="$root/$rel"
resolve "$p"
[ -e "$r" ] || exit 13
[ -d "$r" ] || exit 17
cd -- "$r" || exit 13
if [ "$3" = 1 ]; then depth=; else depth="-maxdepth 1"; fi
find . -mindepth 1 $depth -exec sh -c 'for f; do
  if [ -d "$f" ] && [ ! -L "$f" ]; then k=d; s=0; else k=f; s=$(stat -c %s -- "$f" 2>/dev/null || echo 0); fi
  printf "%s %s %s\0" "$k" "$s" "${f#./}"
done' agentvm-list {} +
exit 0
"#;

/// One entry of a confined listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfinedEntry {
    /// The path relative to the listed directory, `/`-separated.
    pub path: String,
    /// A directory (a link to one is not).
    pub is_dir: bool,
    /// Size in bytes (0 for directories).
    pub size: u64,
}

/// What a user exec gave back.
struct UserRun {
    code: i64,
    stdout: Vec<u8>,
    stderr: String,
    /// Stdout went past the limit (the rest was dropped).
    truncated: bool,
}

/// Checks that `rel` is a relative path without `..` or NUL bytes, and returns it normalised
/// (`.` for the directory itself).
fn relative(rel: &str) -> Result<String> {
    if rel.contains('\0') || rel.starts_with('/') {
        return Err(Error::invalid(format!(
            "{rel:?} must be a relative path without NUL bytes"
        )));
    }
    let mut parts = Vec::new();
    for part in rel.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(Error::invalid(format!(
                    "{rel:?} leaves the working directory"
                )))
            }
            p => parts.push(p),
        }
    }
    Ok(if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    })
}

/// The error for a script's exit `code` on `rel`, with its stderr.
fn script_error(sandbox_id: &str, rel: &str, code: i64, stderr: &str) -> Error {
    let why = stderr.trim();
    match code {
        13 if why.is_empty() || why.contains("No such file") => {
            Error::not_found("File", format!("{rel} in sandbox {sandbox_id}"))
        }
        15 => Error::invalid(format!(
            "{rel} resolves to {why}, outside the working directory: refused"
        )),
        16 => Error::invalid(format!("{rel} is a directory")),
        17 => Error::invalid(format!("{rel} is not a regular file or directory")),
        _ if why.contains("Permission denied") => Error::Unauthorized(why.to_string()),
        _ => Error::Conflict(format!(
            "{rel} in sandbox {sandbox_id}: {}",
            if why.is_empty() { "failed" } else { why }
        )),
    }
}

impl Scheduler {
    /// Reads `rel` inside `root` (a directory relative to the workdir) as the sandbox's user.
    /// Refused when it resolves outside `root`; fails as `cat` would when the user may not
    /// read it.
    pub async fn read_file_confined(
        &self,
        sandbox_id: &str,
        root: &str,
        rel: &str,
    ) -> Result<Vec<u8>> {
        let rel = relative(rel)?;
        let limit = self.inner.config.max_file_bytes;
        let run = self
            .run_as_user(sandbox_id, &[READ, root, &rel], None, limit)
            .await?;
        if run.code != 0 {
            return Err(script_error(sandbox_id, &rel, run.code, &run.stderr));
        }
        if run.truncated {
            return Err(Error::invalid(format!(
                "{rel} is larger than the {limit} byte file limit"
            )));
        }
        Ok(run.stdout)
    }

    /// Writes `data` to `rel` inside `root` as the sandbox's user, making parent directories.
    /// Refused when the file or a parent resolves outside `root`.
    pub async fn write_file_confined(
        &self,
        sandbox_id: &str,
        root: &str,
        rel: &str,
        data: Vec<u8>,
    ) -> Result<()> {
        let rel = relative(rel)?;
        if rel == "." {
            return Err(Error::invalid("the path names no file"));
        }
        if data.len() > self.inner.config.max_file_bytes {
            return Err(Error::invalid(format!(
                "the file is {} bytes; the limit is {}",
                data.len(),
                self.inner.config.max_file_bytes
            )));
        }
        let run = self
            .run_as_user(sandbox_id, &[WRITE, root, &rel], Some(data), 64 * 1024)
            .await?;
        if run.code != 0 {
            return Err(script_error(sandbox_id, &rel, run.code, &run.stderr));
        }
        Ok(())
    }

    /// Lists `rel` inside `root` as the sandbox's user (what its `find` sees), at most
    /// `max_entries` entries, paths relative to `rel`.
    pub async fn list_files_confined(
        &self,
        sandbox_id: &str,
        root: &str,
        rel: &str,
        recursive: bool,
        max_entries: usize,
    ) -> Result<Vec<ConfinedEntry>> {
        let rel = relative(rel)?;
        let flag = if recursive { "1" } else { "0" };
        let limit = max_entries.saturating_mul(256).clamp(64 * 1024, 8 << 20);
        let run = self
            .run_as_user(sandbox_id, &[LIST, root, &rel, flag], None, limit)
            .await?;
        if run.code != 0 {
            return Err(script_error(sandbox_id, &rel, run.code, &run.stderr));
        }
        let mut out = Vec::new();
        for record in run.stdout.split(|b| *b == 0) {
            // The last piece is empty, or cut short by the output limit.
            let Ok(text) = std::str::from_utf8(record) else {
                continue;
            };
            let mut fields = text.splitn(3, ' ');
            let (Some(kind), Some(size), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                continue;
            };
            out.push(ConfinedEntry {
                path: path.to_string(),
                is_dir: kind == "d",
                size: size.parse().unwrap_or(0),
            });
            if out.len() >= max_entries {
                break;
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Runs `script` (with `args`) under `sh -c` as the sandbox's user in its workdir, feeding
    /// `stdin` and keeping at most `limit` bytes of stdout.
    async fn run_as_user(
        &self,
        sandbox_id: &str,
        script_and_args: &[&str],
        stdin: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<UserRun> {
        // Held until this returns: no pause or end interleaves with it.
        let (sandbox, _held) = self.ready_held(sandbox_id).await?;
        let engine = self.engine(&sandbox.node_id).await?;
        let node_id = sandbox.node_id.clone();
        let target = sandbox
            .docker_container_id
            .clone()
            .unwrap_or(sandbox.docker_container_name.clone());
        let Some((script, args)) = script_and_args.split_first() else {
            return Err(Error::Internal("no script to run".into()));
        };
        let script = format!("{PRELUDE}{script}");
        let mut argv = vec![
            "/bin/sh".to_string(),
            "-c".into(),
            script,
            "agentvm-files".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let started = engine
            .exec(
                &target,
                ExecSpec {
                    argv,
                    env: Vec::new(),
                    user: sandbox.user.clone(),
                    workdir: Some(sandbox.workdir.clone()),
                    stdin: stdin.is_some(),
                    tty: false,
                    what: "a file exec",
                },
            )
            .await
            .map_err(|e| self.engine_error(&node_id, e))?;
        let (mut output, input) = (started.output, started.input);
        let feed = async move {
            let mut input = input;
            if let Some(data) = stdin {
                // A script that exits early closes its stdin; the error it then reports says
                // more than a broken pipe.
                let _ = input.write_all(&data).await;
            }
            let _ = input.shutdown().await;
        };
        let read = async {
            let mut run = UserRun {
                code: -1,
                stdout: Vec::new(),
                stderr: String::new(),
                truncated: false,
            };
            while let Some(chunk) = output.next().await {
                match chunk? {
                    Chunk::Stdout(message) => {
                        let room = limit.saturating_sub(run.stdout.len());
                        if message.len() > room {
                            run.truncated = true;
                        }
                        run.stdout
                            .extend_from_slice(&message[..message.len().min(room)]);
                    }
                    Chunk::Stderr(message) if run.stderr.len() < 16 * 1024 => {
                        run.stderr.push_str(&String::from_utf8_lossy(&message));
                    }
                    _ => {}
                }
            }
            Ok::<_, Error>(run)
        };
        let timeout = self.inner.config.default_exec_timeout;
        // The output ends when the script does; a script that stopped reading its stdin
        // (a refused write) must not leave the feed waiting, so it is dropped then.
        let both = async {
            tokio::pin!(feed);
            tokio::pin!(read);
            let mut fed = false;
            loop {
                tokio::select! {
                    () = &mut feed, if !fed => fed = true,
                    run = &mut read => return run,
                }
            }
        };
        let run = tokio::time::timeout(timeout, both).await.map_err(|_| {
            Error::unavailable(format!(
                "a file operation in sandbox {sandbox_id} took longer than {} s",
                timeout.as_secs()
            ))
        })?;
        let mut run = run?;
        run.code = engine
            .exec_state(&started.id)
            .await?
            .exit_code
            .unwrap_or(-1);
        Ok(run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_normalised_and_confined() {
        assert_eq!(relative("a/./b.txt").unwrap(), "a/b.txt");
        assert_eq!(relative(".").unwrap(), ".");
        assert_eq!(relative("").unwrap(), ".");
        assert!(relative("../x").is_err());
        assert!(relative("a/../../x").is_err());
        assert!(relative("/etc/passwd").is_err());
        assert!(relative("a\0b").is_err());
    }

    #[test]
    fn script_errors_keep_their_kinds() {
        use crate::error::ErrorKind;
        let e = script_error("s", "x", 15, "/etc/agent_evil");
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("/etc/agent_evil"), "{e}");
        let e = script_error("s", "x", 1, "cat: can't open 'x': Permission denied");
        assert_eq!(e.kind(), ErrorKind::Unauthorized);
        assert_eq!(script_error("s", "x", 13, "").kind(), ErrorKind::NotFound);
    }
}

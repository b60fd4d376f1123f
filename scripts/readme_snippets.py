"""Runs the code blocks of the READMEs marked runnable, as written.

A block is runnable when the line before its opening fence is ``<!-- snippet: LANG -->``:

- ``rust-deps``: a ``[dependencies]`` TOML block; the next ``rust`` snippet of the same file is
  built with it (``path = "..."`` is read from the repository root) in a scratch crate;
- ``rust``: ``cargo run`` in that scratch crate (with the workspace's Cargo.lock);
- ``python``: the venv's Python (the wheel installed by scripts/test-python.sh) in an empty dir;
- ``node``: a ``.mjs`` file in an empty npm project where ``npm install <repo>/node`` was run;
- ``python local-llm``: as ``python``, skipped with AGENTVM_SKIP_LLAMACPP=1.

Each must exit 0 within its time limit. Exits 1 naming the snippet that failed, or when a file
that should have snippets has none.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FILES = ["README.md", "python/README.md", "node/README.md"]
MARK = re.compile(r"^<!--\s*snippet:\s*([a-z-]+)(?:\s+([a-z-]+))?\s*-->\s*$")
FENCE = re.compile(r"^```")


def snippets(path: Path) -> list[tuple[str, str, int, str]]:
    """(lang, flag, line, code) of every marked block in ``path``."""
    lines = path.read_text().splitlines()
    out = []
    i = 0
    while i < len(lines):
        m = MARK.match(lines[i])
        if m and i + 1 < len(lines) and FENCE.match(lines[i + 1]):
            start = i + 2
            end = start
            while end < len(lines) and not FENCE.match(lines[end]):
                end += 1
            out.append((m.group(1), m.group(2) or "", start + 1, "\n".join(lines[start:end]) + "\n"))
            i = end
        i += 1
    return out


def run(cmd: list[str], cwd: Path, timeout: int, env: dict[str, str] | None = None) -> None:
    print(f"    $ {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, cwd=cwd, timeout=timeout, check=True, env=env)


def run_rust(code: str, deps: str, work: Path) -> None:
    crate = work / "rust"
    (crate / "src").mkdir(parents=True)
    deps = re.sub(r'path\s*=\s*"([^"]+)"', lambda m: f'path = "{ROOT / m.group(1)}"', deps)
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "readme-snippet"\nversion = "0.0.0"\nedition = "2021"\npublish = false\n\n'
        "[workspace]\n\n" + deps
    )
    shutil.copy(ROOT / "Cargo.lock", crate / "Cargo.lock")
    (crate / "src" / "main.rs").write_text(code)
    env = dict(os.environ, CARGO_TARGET_DIR=os.environ.get("CARGO_TARGET_DIR", str(ROOT / "target")))
    run(["cargo", "run", "--quiet"], crate, 1800, env)


def run_python(code: str, work: Path) -> None:
    python = ROOT / ".venv-py" / "bin" / "python"
    (work / "snippet.py").write_text(code)
    run([str(python), "snippet.py"], work, 600)


def run_node(code: str, work: Path) -> None:
    (work / "package.json").write_text('{"name": "readme-snippet", "private": true, "type": "module"}\n')
    run(["npm", "install", "--no-audit", "--no-fund", "--silent", str(ROOT / "node")], work, 300)
    (work / "snippet.mjs").write_text(code)
    run(["node", "snippet.mjs"], work, 300)


def main() -> int:
    ran = 0
    for name in FILES:
        path = ROOT / name
        found = snippets(path)
        if not found:
            print(f"{name}: no runnable snippet (mark blocks with <!-- snippet: LANG -->)", file=sys.stderr)
            return 1
        deps = None
        for lang, flag, line, code in found:
            if lang == "rust-deps":
                deps = code
                continue
            where = f"{name}:{line} ({lang}{' ' + flag if flag else ''})"
            if flag == "local-llm" and os.environ.get("AGENTVM_SKIP_LLAMACPP") == "1":
                print(f"--- {where}: skipped (AGENTVM_SKIP_LLAMACPP=1)")
                continue
            print(f"--- {where}", flush=True)
            with tempfile.TemporaryDirectory(prefix="agentvm-snippet-") as tmp:
                work = Path(tmp)
                try:
                    if lang == "rust":
                        if deps is None:
                            raise RuntimeError("a rust snippet needs a rust-deps block before it")
                        run_rust(code, deps, work)
                    elif lang == "python":
                        run_python(code, work)
                    elif lang == "node":
                        run_node(code, work)
                    else:
                        raise RuntimeError(f"unknown snippet language {lang!r}")
                except (subprocess.CalledProcessError, subprocess.TimeoutExpired, RuntimeError) as e:
                    print(f"FAILED: {where}: {e}", file=sys.stderr)
                    return 1
            print(flush=True)
            ran += 1
    print(f"{ran} README snippets ran as written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

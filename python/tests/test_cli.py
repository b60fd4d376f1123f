"""``python -m agentvm serve`` as an operator meets it: a warning without an LLM, one clear line
(no traceback) when the data dir is already served."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def _serve(data_dir: Path, *extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
    return subprocess.Popen(
        [sys.executable, "-m", "agentvm", "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_serve_warns_without_an_llm_and_a_second_server_on_the_data_dir_says_why(tmp_path: Path) -> None:
    first = _serve(tmp_path)
    try:
        assert first.stdout is not None and first.stderr is not None
        listening = json.loads(first.stdout.readline())
        assert listening["port"] > 0
        second = _serve(tmp_path)
        out, err = second.communicate(timeout=60)
        assert second.returncode == 1, (out, err)
        assert "Traceback" not in err, err
        assert err.startswith("python -m agentvm: warning: no LLM provider configured"), err
        lines = [line for line in err.splitlines() if line and "warning" not in line]
        assert len(lines) == 1 and lines[0].startswith(f"python -m agentvm: cannot open {tmp_path}"), err
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert "no LLM provider configured" in err, err


def test_serve_with_mock_has_no_llm_warning_and_a_taken_port_is_one_line(tmp_path: Path) -> None:
    first = _serve(tmp_path / "a", "--mock")
    try:
        assert first.stdout is not None
        port = json.loads(first.stdout.readline())["port"]
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_")}
        second = subprocess.run(
            [sys.executable, "-m", "agentvm", "serve", "--mock", "--port", str(port), "--data-dir", str(tmp_path / "b")],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert second.returncode == 1, second
        assert "Traceback" not in second.stderr, second.stderr
        assert second.stderr.startswith(f"python -m agentvm: cannot serve on 127.0.0.1:{port}"), second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=60)
    assert "no LLM provider" not in err, err

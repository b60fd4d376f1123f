"""Shared fixtures: runtimes on the mock model, and helpers to collect a turn's events."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any, AsyncIterator, Iterator

import pytest

import agentvm

PYTHON = sys.executable


@pytest.fixture
async def vm(tmp_path: Any) -> AsyncIterator[agentvm.AgentVm]:
    """A local runtime with a data dir and the mock model."""
    v = await agentvm.open(str(tmp_path / "data"), llm="mock")
    yield v
    await v.close()


@pytest.fixture
def sync_vm(tmp_path: Any) -> Iterator[agentvm.sync.AgentVm]:
    """The blocking runtime, in memory, on the mock model."""
    v = agentvm.open_sync(llm="mock")
    yield v
    v.close()


async def collect_turn(events: agentvm.Subscription, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Events up to and including conversation_end."""
    import asyncio

    out: list[dict[str, Any]] = []

    async def run() -> None:
        async for e in events:
            out.append(e)
            if e["type"] == "conversation_end":
                return

    await asyncio.wait_for(run(), timeout)
    return out


def collect_turn_sync(events: agentvm.Subscription, timeout: float = 10.0) -> list[dict[str, Any]]:
    """Events up to and including conversation_end (blocking)."""
    out: list[dict[str, Any]] = []
    while True:
        e = events.next_blocking(timeout)
        assert e is not None, f"no conversation_end within {timeout} s: {[x['type'] for x in out]}"
        out.append(e)
        if e["type"] == "conversation_end":
            return out


def types(events: list[dict[str, Any]]) -> list[str]:
    """The event types, in order."""
    return [e["type"] for e in events]


def run_python(code: str, timeout: float, **kw: Any) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter with this venv's agentvm."""
    env = dict(os.environ)
    return subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, **kw
    )

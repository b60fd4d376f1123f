"""The server in-process and the remote runtime: the same API over the WebSocket."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request

import agentvm
from conftest import collect_turn, collect_turn_sync, types


async def test_serve_and_connect_have_the_same_api(vm: agentvm.AgentVm) -> None:
    server = await vm.serve("127.0.0.1", 0)
    assert server.port > 0 and server.url == f"http://127.0.0.1:{server.port}"
    with urllib.request.urlopen(f"{server.url}/health", timeout=5) as r:
        assert json.loads(r.read())["status"] == "ok"
    remote = await agentvm.connect(server.ws_url)
    assert not remote.is_local
    img = await remote.images.create("c1", name="remote", model="mock:multi-delta")
    assert (await vm.images.get(img["imageId"]) or {})["name"] == "remote"  # same runtime
    events = remote.events(img["sessionId"])
    await remote.agents.send("hi", image_id=img["imageId"])
    turn = await collect_turn(events)
    assert types(turn).count("text_delta") == 5
    assert [m["role"] for m in await remote.images.messages(img["imageId"])] == ["user", "assistant"]
    assert await remote.agents.ask("again", image_id=img["imageId"], timeout=10) == "Hello from multi-delta mock!"
    assert await remote.containers.list() == ["c1"]
    await remote.close()
    await server.close()


def test_sync_serve_and_connect() -> None:
    vm = agentvm.open_sync(llm="mock")
    server = vm.serve()
    remote = agentvm.connect_sync(server.ws_url)
    img = remote.images.create("c1")
    events = remote.events(img["sessionId"])
    remote.agents.send("hi", image_id=img["imageId"])
    assert types(collect_turn_sync(events))[-1] == "conversation_end"
    remote.close()
    server.close()
    vm.close()


def test_python_m_agentvm_serve(tmp_path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentvm", "serve", "--port", "0", "--data-dir", str(tmp_path / "d"), "--mock"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        info = json.loads(line)
        remote = agentvm.connect_sync(info["ws"])
        img = remote.images.create("c1")
        assert remote.agents.ask("hi", image_id=img["imageId"], timeout=10) == "Hello from mock!"
        remote.close()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert os.path.exists(tmp_path / "d" / "agentvm.redb")


async def test_connect_with_several_urls_fails_over(vm: agentvm.AgentVm) -> None:
    a = await vm.serve("127.0.0.1", 0)
    b = await vm.serve("127.0.0.1", 0)
    remote = await agentvm.connect([a.ws_url, b.ws_url], timeout=10)
    await remote.containers.create("c1")
    await a.close()  # the server it is on stops: the client moves to the other
    # A request the dropped connection carried fails with UnavailableError ("may or may not
    # have run"); once the client is on the second server, requests are answered again.
    for _ in range(100):
        try:
            listed = await remote.containers.list()
            break
        except agentvm.UnavailableError:
            await asyncio.sleep(0.05)
    else:
        raise AssertionError("the client did not reach the second server within 5 s")
    assert listed == ["c1"]
    await remote.close()
    await b.close()
    try:
        await agentvm.connect([])
    except agentvm.InvalidInputError as e:
        assert "urls is empty" in str(e)
    else:
        raise AssertionError("an empty list connected")

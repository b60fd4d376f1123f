"""The sandbox scheduler through the package only: ``agentvm.open(scheduler=...)`` embeds it
(the core parses the options) and ``vm.scheduler`` drives it with the runtime's commands; no
scheduler code in the binding. The sandbox tests run on the real Docker engine."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any, AsyncIterator, Iterator

import pytest

import agentvm
from docker_env import BUSYBOX, FAST, NODE, require_docker

BYTES = b"\x00\x01binary\xff\xfe\n"


@pytest.fixture
async def svm(tmp_path: Any) -> AsyncIterator[agentvm.AgentVm]:
    """A runtime with the scheduler embedded and the local Docker engine as its node."""
    require_docker()
    v = await agentvm.open(str(tmp_path / "data"), llm="mock", scheduler={**FAST, "nodes": [NODE]})
    yield v
    for sb in await v.scheduler.list_sandboxes():
        if sb["status"] in ("creating", "running"):
            await v.scheduler.terminate_sandbox(sb["id"])
    await v.close()


@pytest.fixture
def sync_svm() -> Iterator[agentvm.sync.AgentVm]:
    """The blocking runtime with the scheduler embedded (nodes registered by the test)."""
    require_docker()
    v = agentvm.open_sync(scheduler=FAST)
    yield v
    for sb in v.scheduler.list_sandboxes():
        if sb["status"] in ("creating", "running"):
            v.scheduler.terminate_sandbox(sb["id"])
    v.close()


# ----- without Docker -----


async def test_a_bad_option_is_the_cores_invalid_input() -> None:
    with pytest.raises(agentvm.InvalidInputError) as e:
        await agentvm.open(scheduler={"nodez": []})
    message = str(e.value)
    assert "Invalid scheduler options: unknown field `nodez`" in message, message
    assert "nodes" in message and "heartbeatIntervalMs" in message, message
    assert e.value.kind == "invalid_input"
    with pytest.raises(agentvm.InvalidInputError, match="unknown field `nodez`"):
        agentvm.open_sync(scheduler={"nodez": []})
    with pytest.raises(agentvm.InvalidInputError, match="invalid type"):
        await agentvm.open(scheduler={"sweepIntervalMs": "soon"})
    # Checked by the core's builder too: values it cannot use.
    with pytest.raises(agentvm.InvalidInputError, match="orphans"):
        await agentvm.open(scheduler={"orphans": "keep"})


async def test_a_runtime_without_scheduler_says_how_to_embed_one(vm: agentvm.AgentVm) -> None:
    with pytest.raises(agentvm.UnavailableError, match="no sandbox scheduler"):
        await vm.scheduler.list_templates()


def test_scheduler_open_is_gone() -> None:
    with pytest.raises(RuntimeError, match=r"agentvm.open\(\.\.\., scheduler="):
        agentvm.Scheduler.open()
    with pytest.raises(RuntimeError, match="vm.scheduler"):
        agentvm.sync.Scheduler.open(config={})


async def test_templates_without_docker() -> None:
    vm = await agentvm.open(scheduler={"background": False})
    s = vm.scheduler
    spec = {"name": "bb", "image": "agentvm-test/busybox:latest"}
    t = await s.create_template("bb", spec)
    assert t["id"] == "bb" and t["image"] == spec["image"]
    with pytest.raises(agentvm.AlreadyExistsError):
        await s.create_template("bb", spec)
    with pytest.raises(agentvm.InvalidInputError, match="bogus"):
        await s.create_template("bad", {**spec, "bogus": 1})
    assert (await s.update_template("bb", {**spec, "defaultMemoryMb": 256}))["defaultMemoryMb"] == 256
    assert [x["id"] for x in await s.list_templates()] == ["bb"]
    assert await s.get_template("nope") is None
    assert await s.list_nodes() == []
    assert await s.get_sandbox("sbx_nope") is None
    with pytest.raises(agentvm.NotFoundError):
        await s.create_sandbox("nope")
    assert (await s.metrics())["nodesOnline"] == 0
    await s.delete_template("bb")
    assert await s.list_templates() == []
    await vm.close()


# ----- on Docker -----


async def test_sandbox_end_to_end(svm: agentvm.AgentVm) -> None:
    """template -> sandbox -> streamed exec -> files (bytes) -> lists -> delete."""
    s = svm.scheduler
    await s.create_template("bb", BUSYBOX)
    sb = await s.create_sandbox("bb", owner="tenant-1")
    assert sb["status"] == "running" and sb["templateId"] == "bb"

    stream = s.exec(sb["id"], "echo hi; echo err >&2")
    assert stream.execution_id.startswith("exec_")
    chunks = []
    async for chunk in stream:
        assert stream.execution is None, "chunks come before the execution"
        chunks.append(chunk)
    assert chunks, "the output streamed as chunks"
    assert "".join(c["data"] for c in chunks if c["stream"] == "stdout") == "hi\n"
    assert "".join(c["data"] for c in chunks if c["stream"] == "stderr") == "err\n"
    execution = stream.execution
    assert execution is not None
    assert execution["id"] == stream.execution_id
    assert execution["exitCode"] == 0 and execution["status"] == "completed"
    assert execution["stdout"] == "hi\n" and execution["stderr"] == "err\n"

    await s.write_file(sb["id"], "blob.bin", BYTES)
    assert await s.read_file(sb["id"], "/workspace/blob.bin") == BYTES
    await s.write_file(sb["id"], "note.txt", "text ü")
    assert await s.read_file(sb["id"], "note.txt") == "text ü".encode()
    files = {f["name"]: f for f in await s.list_files(sb["id"])}
    assert files["blob.bin"]["size"] == len(BYTES) and files["blob.bin"]["kind"] == "file"
    assert [x["id"] for x in await s.list_sandboxes()] == [sb["id"]]
    assert [x["id"] for x in await s.list_sandboxes(owner="tenant-1")] == [sb["id"]]
    assert [x["id"] for x in await s.list_executions(sb["id"])] == [stream.execution_id]

    await s.delete_file(sb["id"], "blob.bin")
    with pytest.raises(agentvm.NotFoundError):
        await s.read_file(sb["id"], "blob.bin")
    await s.delete_sandbox(sb["id"])
    assert await s.get_sandbox(sb["id"]) is None
    assert await s.list_sandboxes() == []


async def test_nodes_and_templates(svm: agentvm.AgentVm) -> None:
    s = svm.scheduler
    nodes = await s.list_nodes()
    assert [n["node_id"] for n in nodes] == ["local"]
    assert (await s.get_node("local") or {})["status"] == "online"
    assert await s.get_node("nope") is None
    assert (await s.set_node_status("local", "draining"))["status"] == "draining"
    assert (await s.set_node_status("local", "online"))["status"] == "online"
    with pytest.raises(agentvm.InvalidInputError):
        await s.set_node_status("local", "sideways")
    assert (await s.heartbeat("local"))["node_id"] == "local"
    t = await s.create_template("bb", BUSYBOX)
    assert t["id"] == "bb" and t["image"] == BUSYBOX["image"]
    await s.delete_template("bb")
    assert (await s.metrics())["nodesOnline"] == 1
    await s.remove_node("local")
    assert await s.list_nodes() == []


async def test_exec_stream_runs_and_events(svm: agentvm.AgentVm) -> None:
    s = svm.scheduler
    await s.create_template("bb", BUSYBOX)
    events = svm.events(global_events=True)
    sb = await s.create_sandbox("bb", owner="tenant-1")

    stream = s.exec(sb["id"], "for i in 1 2 3; do echo line$i; sleep 0.1; done; echo oops >&2; exit 3")
    chunks = [c async for c in stream]
    out = "".join(c["data"] for c in chunks if c["stream"] == "stdout")
    assert out == "line1\nline2\nline3\n"
    assert len([c for c in chunks if c["stream"] == "stdout"]) >= 2  # streamed, not one blob
    execution = stream.execution
    assert execution is not None
    assert execution["exitCode"] == 3 and execution["status"] == "failed"
    assert execution["stderr"] == "oops\n"

    run = await s.run(sb["id"], ["echo", "hi"])
    assert run["stdout"] == "hi\n" and run["status"] == "completed"
    code = await s.run(sb["id"], code="echo $((6*7))", language="sh")
    assert code["stdout"] == "42\n"
    timed = await s.run(sb["id"], "sleep 30", timeout=0.5)
    assert timed["status"] == "timeout"
    assert (await s.get_execution(run["id"]) or {})["stdout"] == "hi\n"
    assert len(await s.list_executions(sb["id"])) == 4

    ended = await s.terminate_sandbox(sb["id"])
    assert ended["status"] == "terminated"
    with pytest.raises(agentvm.ConflictError):
        await s.run(sb["id"], "true")
    with pytest.raises(agentvm.ConflictError):
        [c async for c in s.exec(sb["id"], "true")]

    seen = []
    while (e := events.next_blocking(0.5)) is not None:
        seen.append(e["type"])
    assert "sandbox_created" in seen and "sandbox_terminated" in seen, seen


async def test_concurrent_execs_are_told_apart_and_cancel(svm: agentvm.AgentVm) -> None:
    s = svm.scheduler
    await s.create_template("bb", BUSYBOX)
    sb = await s.create_sandbox("bb")
    a = s.exec(sb["id"], "for i in 1 2 3; do echo a$i; sleep 0.05; done")
    b = s.exec(sb["id"], "for i in 1 2 3; do echo b$i; sleep 0.05; done", execution_id="exec_mine_b")
    assert b.execution_id == "exec_mine_b"

    async def text(stream: agentvm.ExecStream) -> str:
        return "".join([c["data"] async for c in stream])

    out_a, out_b = await asyncio.gather(text(a), text(b))
    assert (out_a, out_b) == ("a1\na2\na3\n", "b1\nb2\nb3\n")
    assert (await s.get_execution("exec_mine_b") or {})["stdout"] == "b1\nb2\nb3\n"
    with pytest.raises(agentvm.AlreadyExistsError):
        await s.exec(sb["id"], "true", execution_id="exec_mine_b").wait()

    slow = s.exec(sb["id"], "echo started; sleep 30")
    first = await slow.__anext__()
    assert first["data"] == "started\n"
    cancelled = await s.cancel_exec(slow.execution_id)
    assert cancelled["status"] == "cancelled"
    execution = await slow.wait()
    assert execution["status"] == "cancelled"


async def test_unknown_sandbox_is_not_found(svm: agentvm.AgentVm) -> None:
    with pytest.raises(agentvm.NotFoundError):
        await svm.scheduler.run("sbx_nope", "true")
    with pytest.raises(agentvm.NotFoundError):
        [c async for c in svm.scheduler.exec("sbx_nope", "true")]


def test_sync_end_to_end(sync_svm: agentvm.sync.AgentVm) -> None:
    s = sync_svm.scheduler
    assert s.register_node(**NODE)["status"] == "online"
    s.create_template("bb", BUSYBOX)
    sb = s.create_sandbox("bb")
    stream = s.exec(sb["id"], "echo hi; echo err >&2")
    chunks = []
    for chunk in stream:
        assert stream.execution is None
        chunks.append(chunk)
    assert "".join(c["data"] for c in chunks if c["stream"] == "stdout") == "hi\n"
    assert "".join(c["data"] for c in chunks if c["stream"] == "stderr") == "err\n"
    assert stream.execution is not None and stream.execution["exitCode"] == 0
    assert s.run(sb["id"], "echo x")["stdout"] == "x\n"
    s.write_file(sb["id"], "f.bin", BYTES)
    assert s.read_file(sb["id"], "f.bin") == BYTES
    assert [e["name"] for e in s.list_files(sb["id"])].count("f.bin") == 1
    s.delete_file(sb["id"], "f.bin")
    assert s.list_files(sb["id"]) == []
    with pytest.raises(agentvm.NotFoundError):
        list(s.exec("sbx_nope", "true"))
    s.delete_sandbox(sb["id"])
    assert s.get_sandbox(sb["id"]) is None


async def test_served_and_connected(svm: agentvm.AgentVm) -> None:
    """The server serves the runtime's scheduler; a connected runtime drives it with the same
    package API (commands over the WebSocket)."""
    server = await svm.serve()
    with urllib.request.urlopen(server.url + "/v1/nodes", timeout=5) as r:
        assert "local" in json.dumps(json.loads(r.read()))
    remote = await agentvm.connect(server.ws_url)
    try:
        s = remote.scheduler
        assert [n["node_id"] for n in await s.list_nodes()] == ["local"]
        await s.create_template("bb", BUSYBOX)
        sb = await s.create_sandbox("bb")
        stream = s.exec(sb["id"], "echo hi; echo err >&2")
        chunks = [c async for c in stream]
        assert "".join(c["data"] for c in chunks if c["stream"] == "stdout") == "hi\n"
        assert stream.execution is not None and stream.execution["exitCode"] == 0
        await s.write_file(sb["id"], "f.bin", BYTES)
        assert await s.read_file(sb["id"], "f.bin") == BYTES
        await s.delete_sandbox(sb["id"])
    finally:
        await remote.close()
        await server.close()

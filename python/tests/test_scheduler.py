"""The scheduler against real Docker: nodes, templates, sandboxes, streamed exec, files."""

from __future__ import annotations

from typing import AsyncIterator, Iterator

import pytest

import agentvm
from docker_env import BUSYBOX, FAST, NODE, require_docker


@pytest.fixture
async def sched(vm: agentvm.AgentVm) -> AsyncIterator[agentvm.Scheduler]:
    require_docker()
    s = await agentvm.Scheduler.open(vm, nodes=[NODE], config=FAST)
    yield s
    for sb in await s.list_sandboxes():
        if sb["status"] in ("creating", "running"):
            await s.terminate_sandbox(sb["id"])


@pytest.fixture
def sync_sched() -> Iterator[agentvm.SyncScheduler]:
    require_docker()
    s = agentvm.sync.Scheduler.open(config=FAST)
    yield s
    for sb in s.list_sandboxes():
        if sb["status"] in ("creating", "running"):
            s.terminate_sandbox(sb["id"])


async def test_nodes_and_templates(sched: agentvm.Scheduler) -> None:
    nodes = await sched.list_nodes()
    assert [n["node_id"] for n in nodes] == ["local"]
    assert (await sched.get_node("local") or {})["status"] == "online"
    assert await sched.get_node("nope") is None
    assert (await sched.set_node_status("local", "draining"))["status"] == "draining"
    assert (await sched.set_node_status("local", "online"))["status"] == "online"
    t = await sched.create_template("bb", BUSYBOX)
    assert t["id"] == "bb" and t["image"] == BUSYBOX["image"]
    assert [x["id"] for x in await sched.list_templates()] == ["bb"]
    updated = await sched.update_template("bb", {**BUSYBOX, "defaultMemoryMb": 256})
    assert updated["defaultMemoryMb"] == 256
    assert (await sched.get_template("bb") or {})["defaultMemoryMb"] == 256
    await sched.delete_template("bb")
    assert await sched.get_template("bb") is None
    with pytest.raises(agentvm.InvalidInputError):
        await sched.create_template("bad", {"name": "x"})
    metrics = await sched.metrics()
    assert metrics["nodesOnline"] == 1


async def test_sandbox_exec_stream_and_files(sched: agentvm.Scheduler, vm: agentvm.AgentVm) -> None:
    await sched.create_template("bb", BUSYBOX)
    events = vm.events(global_events=True)
    sb = await sched.create_sandbox("bb", owner="tenant-1")
    assert sb["status"] == "running" and sb["templateId"] == "bb"
    assert (await sched.get_sandbox(sb["id"]) or {})["status"] == "running"

    stream = sched.exec(sb["id"], "for i in 1 2 3; do echo line$i; sleep 0.1; done; echo oops >&2; exit 3")
    chunks = [c async for c in stream]
    out = "".join(c["data"] for c in chunks if c["stream"] == "stdout")
    assert out == "line1\nline2\nline3\n"
    assert any(c["stream"] == "stderr" for c in chunks)
    assert len([c for c in chunks if c["stream"] == "stdout"]) >= 2  # streamed, not one blob
    execution = stream.execution
    assert execution is not None
    assert execution["exitCode"] == 3 and execution["status"] == "failed"
    assert execution["stderr"] == "oops\n"

    run = await sched.run(sb["id"], ["echo", "hi"])
    assert run["stdout"] == "hi\n" and run["status"] == "completed"
    code = await sched.run(sb["id"], code="echo $((6*7))", language="sh")
    assert code["stdout"] == "42\n"
    timed = await sched.run(sb["id"], "sleep 30", timeout=0.5)
    assert timed["status"] == "timeout"
    assert (await sched.get_execution(run["id"]) or {})["stdout"] == "hi\n"
    assert len(await sched.list_executions(sb["id"])) >= 4

    await sched.write_file(sb["id"], "notes.txt", b"hello\x00bytes")
    assert await sched.read_file(sb["id"], "/workspace/notes.txt") == b"hello\x00bytes"
    names = [e["name"] for e in await sched.list_files(sb["id"], ".")]
    assert "notes.txt" in names
    with pytest.raises(agentvm.NotFoundError):
        await sched.read_file(sb["id"], "missing.txt")

    ended = await sched.terminate_sandbox(sb["id"])
    assert ended["status"] in ("terminated", "stopped", "completed")
    with pytest.raises(agentvm.ConflictError):
        await sched.run(sb["id"], "true")
    await sched.delete_sandbox(sb["id"])
    assert await sched.get_sandbox(sb["id"]) is None

    seen = []
    while (e := events.next_blocking(0.5)) is not None:
        seen.append(e["type"])
    assert "sandbox_created" in seen or any(t.startswith("sandbox_") for t in seen), seen


def test_sync_scheduler(sync_sched: agentvm.SyncScheduler) -> None:
    s = sync_sched
    s.register_node(**NODE)
    s.create_template("bb", BUSYBOX)
    sb = s.create_sandbox("bb")
    chunks = list(s.exec(sb["id"], ["sh", "-c", "echo a; echo b"]))
    assert "".join(c["data"] for c in chunks) == "a\nb\n"
    assert s.run(sb["id"], "echo x")["stdout"] == "x\n"
    s.write_file(sb["id"], "f.txt", "text")
    assert s.read_file(sb["id"], "f.txt") == b"text"
    assert [e["name"] for e in s.list_files(sb["id"])].count("f.txt") == 1
    assert s.heartbeat("local")["node_id"] == "local"
    s.terminate_sandbox(sb["id"])
    assert s.get_sandbox(sb["id"])["status"] != "running"  # type: ignore[index]


async def test_unknown_sandbox_is_not_found(sched: agentvm.Scheduler) -> None:
    with pytest.raises(agentvm.NotFoundError):
        await sched.run("sbx_nope", "true")
    with pytest.raises(agentvm.NotFoundError):
        chunks = [c async for c in sched.exec("sbx_nope", "true")]
        assert chunks == []


async def test_serve_with_scheduler_routes(sched: agentvm.Scheduler, vm: agentvm.AgentVm) -> None:
    import json
    import urllib.request

    server = await vm.serve(scheduler=sched)
    with urllib.request.urlopen(f"{server.url}/v1/nodes", timeout=5) as r:
        body = json.loads(r.read())
    nodes = body if isinstance(body, list) else body.get("nodes", body.get("data"))
    assert "local" in json.dumps(nodes)
    await server.close()

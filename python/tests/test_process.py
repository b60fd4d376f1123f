"""Process behaviour: fork, interpreter exit with agents running, Ctrl-C, many tasks."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

import agentvm
from conftest import PYTHON, run_python


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_opens_its_own_runtime(sync_vm: agentvm.sync.AgentVm) -> None:
    # The parent's runtime has worker threads (and a busy agent) when it forks.
    img = sync_vm.images.create("parent")
    assert sync_vm.agents.ask("hi", image_id=img["imageId"], timeout=10) == "Hello from mock!"
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(r)
            child = agentvm.open_sync(llm="mock")
            cimg = child.images.create("child")
            reply = child.agents.ask("hi", image_id=cimg["imageId"], timeout=10)
            os.write(w, reply.encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    _, status = os.waitpid(pid, 0)
    got = os.read(r, 1024).decode()
    os.close(r)
    assert os.waitstatus_to_exitcode(status) == 0
    assert got == "Hello from mock!"
    # The parent still works.
    assert sync_vm.images.get(img["imageId"]) is not None


async def test_async_in_forked_child() -> None:
    code = """
import asyncio, os, agentvm
async def use():
    vm = await agentvm.open(llm="mock")
    img = await vm.images.create("c")
    return await vm.agents.ask("hi", image_id=img["imageId"], timeout=10)
print(asyncio.run(use()))            # the parent's runtime is up
pid = os.fork()
if pid == 0:
    try:
        print("child", asyncio.run(use()), flush=True)
    finally:
        os._exit(0)
os.waitpid(pid, 0)
"""
    out = run_python(code, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "child Hello from mock!" in out.stdout


def test_interpreter_exits_promptly_with_agents_running() -> None:
    code = """
import asyncio, agentvm
async def main():
    vm = await agentvm.open(llm="mock:slow-stream")
    for i in range(5):
        img = await vm.images.create("c")
        await vm.agents.send("go", image_id=img["imageId"])
    events = vm.events(all_sessions=True)
    async for e in events:
        if e["type"] == "text_delta":
            break
    print("streaming", flush=True)
asyncio.run(main())
"""
    t = time.monotonic()
    out = run_python(code, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "streaming" in out.stdout
    assert time.monotonic() - t < 15

    sync_code = """
import agentvm
vm = agentvm.open_sync(llm="mock:slow-stream")
img = vm.images.create("c")
vm.agents.send("go", image_id=img["imageId"])
print("sent", flush=True)
"""
    out = run_python(sync_code, timeout=30)
    assert out.returncode == 0, out.stderr


def test_ctrl_c_interrupts_a_blocking_wait() -> None:
    code = """
import agentvm
vm = agentvm.open_sync(llm="mock")
img = vm.images.create("c")
events = vm.events(img["sessionId"])
print("waiting", flush=True)
try:
    for e in events:   # nothing is sent: this waits forever
        pass
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""
    proc = subprocess.Popen([PYTHON, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(0.3)
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
        assert "interrupted" in out, err
        assert time.monotonic() - t < 2
    finally:
        if proc.poll() is None:
            proc.kill()


async def test_100_concurrent_tasks_sending_messages(vm: agentvm.AgentVm) -> None:
    images = [await vm.images.create(f"c{i % 10}", model="mock:instant") for i in range(100)]

    async def converse(img: dict) -> str:
        return await vm.agents.ask("hi", image_id=img["imageId"], timeout=60)

    replies = await asyncio.gather(*(asyncio.create_task(converse(i)) for i in images))
    assert replies == ["Instant response"] * 100
    for img in images[:5]:
        assert [m["role"] for m in await vm.images.messages(img["imageId"])] == ["user", "assistant"]


async def test_100_tasks_on_one_image_queue_their_turns(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", model="mock:instant")
    sends = await asyncio.gather(*(vm.agents.send(f"m{i}", image_id=img["imageId"]) for i in range(100)))
    assert len({s["messageId"] for s in sends}) == 100
    events = vm.events(img["sessionId"], after=0)
    ends = 0
    async def count() -> None:
        nonlocal ends
        async for e in events:
            if e["type"] == "conversation_end":
                ends += 1
                if ends == 100:
                    return
    await asyncio.wait_for(count(), 60)
    # One page is 100 messages unless a limit says otherwise; the cursor reads the rest.
    first = await vm.images.messages_page(img["imageId"])
    assert len(first["messages"]) == 100 and first["hasMore"]
    rest = await vm.images.messages(img["imageId"], after=first["nextCursor"])
    assert len(rest) == 100
    every = await vm.images.messages(img["imageId"], limit=1000)
    assert len(every) == 200
    newest = await vm.images.messages(img["imageId"], limit=2, before=2**53 - 1)
    assert newest == every[-2:]
    # history() walks every page: 200 messages in pages of 30, the same as one big page.
    walked = [m async for m in vm.images.history(img["imageId"], page_size=30)]
    assert walked == every
    by_session = [m async for m in vm.sessions.history(img["sessionId"], page_size=7)]
    assert by_session == every


def test_sys_executable_is_the_test_venv() -> None:
    assert sys.executable == PYTHON

"""The binding converts and nothing else: options are checked by the embedding layer, the
blocking API is generated from the async one, events come a batch per native call."""

from __future__ import annotations

import inspect

import pytest

import agentvm
from agentvm import events, scheduler, sync, vm
from conftest import collect_turn, types

ASYNC_CLASSES = [
    vm.AgentVm, vm.Agent, vm.Containers, vm.Images, vm.Sessions, vm.Definitions, vm.Agents,
    vm.Server, events.Subscription, scheduler.Scheduler, scheduler.ExecStream,
]


@pytest.mark.parametrize("cls", ASYNC_CLASSES, ids=lambda c: c.__name__)
def test_every_blocking_class_is_generated_from_its_async_class(cls: type) -> None:
    blocking = getattr(sync, cls.__name__)
    assert blocking.__module__ == "agentvm.sync" and issubclass(blocking, sync._Blocking)
    coroutines = [n for n, m in inspect.getmembers(cls) if inspect.iscoroutinefunction(m) and not n.startswith("_")]
    for name in coroutines:
        method = getattr(blocking, name)
        assert not inspect.iscoroutinefunction(method), name
        assert method.__wrapped__ is getattr(cls, name), name
    assert [c for c in vars(sync).values() if inspect.isclass(c) and c.__module__ == "agentvm.sync"
            and c is not sync._Blocking and c not in sync._BLOCKING.values()] == []


def test_a_method_added_to_the_async_api_is_in_the_blocking_one() -> None:
    class Extra(vm.Containers):
        async def twice(self, container_id: str) -> list[str]:
            return [await self.create(container_id), await self.create(container_id)]

    blocking = sync.blocking(Extra)
    with agentvm.open_sync(llm="mock") as v:
        assert blocking(Extra(v.native)).twice("c1") == ["c1", "c1"]


async def test_open_options_are_embeds_and_checked_there() -> None:
    with pytest.raises(agentvm.InvalidInputError, match="Invalid open options: .*maxNameBytez"):
        await agentvm.open(limits={"maxNameBytez": 3})
    with pytest.raises(agentvm.InvalidInputError, match="apikey"):
        await agentvm.open(llm={"provider": "openai", "apikey": "k"})
    with pytest.raises(agentvm.InvalidInputError, match="llm provider"):
        await agentvm.open(llm="bogus")
    v = await agentvm.open(llm={"provider": "mock", "max_retries": 1}, limits={"maxNameBytes": 8})
    with pytest.raises(agentvm.InvalidInputError):
        await v.images.create("c1", name="a name longer than eight bytes")
    assert (await v.images.create("c1", name="short"))["name"] == "short"
    await v.close()


async def test_a_command_is_parsed_strictly_by_embed(vm: agentvm.AgentVm) -> None:
    with pytest.raises(agentvm.InvalidInputError, match="missing field `imageId`"):
        await vm.request({"type": "image_get_request", "data": {"imageid": "x"}})
    with pytest.raises(agentvm.InvalidInputError, match="bogus"):
        await vm.request({"type": "image_get_request", "data": {"imageId": "x", "bogus": 1}})
    with pytest.raises(agentvm.InvalidInputError, match="unknown field `extra`"):
        await vm.request({"type": "container_list_request", "data": {}, "extra": 1})
    with pytest.raises(agentvm.InvalidInputError, match="Unknown request type"):
        await vm.native.request({"type": "nope_request"})


async def test_events_come_in_batches(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", model="mock:long-stream")
    sub = vm.events(img["sessionId"])
    await vm.agents.send("go", image_id=img["imageId"])
    seen: list[dict] = []
    async for batch in sub.batches():
        assert isinstance(batch, list) and batch
        seen.extend(batch)
        if seen[-1]["type"] == "conversation_end":
            break
    assert types(seen).count("text_delta") == 100
    assert len(seen) == len({e["cursor"] for e in seen})
    # The same log replayed, taken with next_batch and a bound.
    replay = vm.events(img["sessionId"], after=0)
    first = await replay.next_batch(10)
    assert first is not None and [e["cursor"] for e in first] == [e["cursor"] for e in seen[:10]]
    assert types(await collect_turn(replay))[-1] == "conversation_end"
    assert await replay.next_batch(timeout=0.05) is None and not replay.closed
    await vm.close()
    assert await replay.next_batch() is None and replay.closed


async def test_a_request_can_be_bounded_and_the_call_reports_it(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1")
    assert (await vm.request({"type": "image_get_request", "data": {"imageId": img["imageId"]}}, timeout=5))[
        "data"
    ]["record"]["imageId"] == img["imageId"]
    call = vm.native.request({"type": "container_list_request", "data": {}})
    assert call.done()
    assert await call == {"containerIds": ["c1"]}
    with pytest.raises(RuntimeError, match="awaited already"):
        await call


async def test_run_blocking_refuses_what_only_an_event_loop_can_wait_for() -> None:
    import asyncio

    async def sleeps() -> None:
        await asyncio.sleep(0.01)

    with pytest.raises(RuntimeError, match="blocking agentvm API cannot wait"):
        agentvm._native.run_blocking(sleeps())

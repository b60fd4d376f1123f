"""The asyncio API, every group, on a local runtime with the mock model."""

from __future__ import annotations

import asyncio

import pytest

import agentvm
from conftest import collect_turn, types

REPLY_ORDER = [
    "message_start",
    "conversation_start",
    "text_delta",
    "conversation_responding",
    "message_stop",
    "assistant_message",
    "conversation_end",
]


async def test_containers(vm: agentvm.AgentVm) -> None:
    assert await vm.containers.create("c1") == "c1"
    assert await vm.containers.exists("c1")
    assert not await vm.containers.exists("nope")
    assert "c1" in await vm.containers.list()
    assert await vm.containers.delete("c1")
    assert not await vm.containers.exists("c1")


async def test_images(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", name="helper", system_prompt="Be brief.", model="mock")
    assert img["name"] == "helper" and img["containerId"] == "c1"
    assert img["imageId"].startswith("img_") and img["sessionId"].startswith("sess_")
    got = await vm.images.get(img["imageId"])
    assert got is not None and got["imageId"] == img["imageId"]
    assert await vm.images.get("img_unknown") is None
    assert [r["imageId"] for r in await vm.images.list("c1")] == [img["imageId"]]
    assert len(await vm.images.list()) == 1
    updated = await vm.images.update(img["imageId"], name="renamed", description="d")
    assert updated["name"] == "renamed" and updated["description"] == "d"
    run = await vm.images.run(img["imageId"])
    assert run["agentId"].startswith("agent_") and run["reused"] is False
    assert (await vm.images.run(img["imageId"]))["reused"] is True
    assert (await vm.images.get(img["imageId"]) or {})["online"] is True
    await vm.images.stop(img["imageId"])
    assert (await vm.images.get(img["imageId"]) or {})["online"] is False
    assert await vm.images.messages(img["imageId"]) == []
    await vm.images.delete(img["imageId"])
    assert await vm.images.get(img["imageId"]) is None


async def test_sessions(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1")
    s2 = await vm.sessions.create(img["imageId"], "second")
    assert s2["title"] == "second"
    ids = {s["sessionId"] for s in await vm.sessions.list(img["imageId"])}
    assert ids == {img["sessionId"], s2["sessionId"]}
    assert (await vm.sessions.get(s2["sessionId"]) or {})["imageId"] == img["imageId"]
    assert await vm.sessions.get("sess_unknown") is None
    assert (await vm.sessions.update(s2["sessionId"], "renamed"))["title"] == "renamed"
    resumed = await vm.sessions.resume(s2["sessionId"])
    assert resumed["sessionId"] == s2["sessionId"]
    events = vm.events(s2["sessionId"])
    await vm.agents.send("hi", session_id=s2["sessionId"])
    await collect_turn(events)
    msgs = await vm.sessions.messages(s2["sessionId"])
    assert [m["role"] for m in msgs] == ["user", "assistant"]
    assert await vm.images.messages(img["imageId"]) == []  # the first session is untouched
    await vm.sessions.delete(s2["sessionId"])
    assert await vm.sessions.get(s2["sessionId"]) is None


async def test_definitions(vm: agentvm.AgentVm) -> None:
    assert await vm.definitions.register("coder", system_prompt="You code.", model="mock:multi-delta") is False
    assert await vm.definitions.register("coder", system_prompt="You code well.") is True
    d = await vm.definitions.get("coder")
    assert d is not None and d["systemPrompt"] == "You code well."
    assert await vm.definitions.get("nope") is None
    assert [x["name"] for x in await vm.definitions.list()] == ["coder"]
    img = await vm.images.build("c1", "coder", name="from-def")
    assert img["name"] == "from-def"


async def test_definitions_at_open(tmp_path) -> None:
    vm = await agentvm.open(llm="mock", definitions=[{"name": "d1", "systemPrompt": "x"}])
    assert (await vm.definitions.get("d1") or {})["systemPrompt"] == "x"
    await vm.close()


async def test_streamed_reply_end_to_end(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", model="mock:multi-delta")
    events = vm.events(img["sessionId"])
    sent = await vm.agents.send("Hello!", image_id=img["imageId"])
    assert sent["imageId"] == img["imageId"] and sent["sessionId"] == img["sessionId"]
    turn = await collect_turn(events)
    t = types(turn)
    assert t.count("text_delta") == 5
    assert t[:2] == ["message_start", "conversation_start"]
    assert t[-3:] == ["message_stop", "assistant_message", "conversation_end"]
    text = "".join(e["data"]["text"] for e in turn if e["type"] == "text_delta")
    assert text == "Hello from multi-delta mock!"
    assert turn[-1]["data"]["reason"] == "completed"
    cursors = [e["cursor"] for e in turn]
    assert cursors == sorted(cursors) and len(set(cursors)) == len(cursors)
    ctx = turn[0]["context"]
    assert ctx["imageId"] == img["imageId"] and ctx["sessionId"] == img["sessionId"]
    # Replay after a cursor: the same events again, from the log.
    replay = vm.events(img["sessionId"], after=cursors[0])
    again = await collect_turn(replay)
    assert [e["cursor"] for e in again] == cursors[1:]


async def test_default_reply_order(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1")
    events = vm.events(img["sessionId"])
    await vm.agents.send("hi", image_id=img["imageId"])
    assert types(await collect_turn(events)) == REPLY_ORDER


async def test_agents(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", model="mock:slow-stream")
    agent = await vm.agents.start(img["imageId"])
    assert agent.session_id == img["sessionId"]
    info = await vm.agents.get(agent.agent_id)
    assert info["exists"] and info["containerId"] == "c1"
    assert [a["agentId"] for a in await vm.agents.list("c1")] == [agent.agent_id]
    events = agent.events()
    await agent.send("go")
    async for e in events:
        if e["type"] == "text_delta":
            break
    await agent.interrupt()
    rest = await collect_turn(events)
    assert "interrupted" in types(rest)
    assert rest[-1]["data"]["reason"] == "interrupted"
    assert await vm.agents.destroy(agent.agent_id) is True
    assert await vm.agents.destroy(agent.agent_id) is False
    await vm.images.run(img["imageId"])
    await vm.agents.destroy_all("c1")
    assert await vm.agents.list("c1") == []


async def test_ask_and_agent_handle(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", model="mock:instant")
    assert await vm.agents.ask("hi", image_id=img["imageId"], timeout=10) == "Instant response"
    agent = await vm.agents.start(img["imageId"])
    assert await agent.ask("again", timeout=10) == "Instant response"
    assert len(await agent.messages()) == 4
    await agent.stop()


async def test_ask_raises_the_kind_of_a_failed_turn(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", model="mock:error")
    with pytest.raises(agentvm.UnavailableError, match="the scenario 'error' always fails") as e:
        await vm.agents.ask("hi", image_id=img["imageId"], timeout=10)
    assert e.value.kind == "unavailable"
    assert e.value.error_code == "mock_error"
    agent = await vm.agents.start(img["imageId"])
    with pytest.raises(agentvm.UnavailableError):
        await agent.ask("again", timeout=10)
    # A normal turn still returns its text; other errors carry no error_code.
    ok = await vm.images.create("c1", model="mock:instant")
    assert await vm.agents.ask("hi", image_id=ok["imageId"], timeout=10) == "Instant response"
    with pytest.raises(agentvm.NotFoundError) as missing:
        await vm.agents.ask("hi", image_id="nope", timeout=10)
    assert missing.value.error_code is None


async def test_ask_without_an_llm_raises_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_PROVIDER", raising=False)
    v = await agentvm.open()
    try:
        img = await v.images.create("c1")
        with pytest.raises(agentvm.UnavailableError, match="LLM_PROVIDER") as e:
            await v.agents.ask("hi", image_id=img["imageId"], timeout=10)
        assert e.value.error_code == "not_configured"
    finally:
        await v.close()


async def test_ask_interrupted_returns_the_text_so_far(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1", model="mock:slow-stream")
    with vm.events(img["sessionId"]) as events:
        task = asyncio.create_task(vm.agents.ask("go", image_id=img["imageId"], timeout=10))
        async for e in events:
            if e["type"] == "text_delta":
                break
        await vm.agents.interrupt(image_id=img["imageId"])
        text = await task
    assert isinstance(text, str)


async def test_raw_request(vm: agentvm.AgentVm) -> None:
    resp = await vm.request({"type": "container_list_request", "data": {}})
    assert resp == {"type": "container_list_response", "data": {"containerIds": []}}
    img = await vm.images.create("c1")
    resp = await vm.request({"type": "image_get_request", "data": {"imageId": img["imageId"]}})
    assert resp["type"] == "image_get_response"
    assert resp["data"]["record"]["imageId"] == img["imageId"]
    assert resp["data"]["__subscriptions"] == [img["sessionId"]]


async def test_global_and_all_session_events(vm: agentvm.AgentVm) -> None:
    everything = vm.events(all_sessions=True, global_events=True)
    img = await vm.images.create("c9")
    await vm.agents.send("hi", image_id=img["imageId"])
    seen = types(await collect_turn(everything))
    assert "container_created" in seen and "agent_registered" in seen and "text_delta" in seen


async def test_subscription_close_ends_iteration(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1")
    events = vm.events(img["sessionId"])

    async def consume() -> int:
        n = 0
        async for _ in events:
            n += 1
        return n

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    events.close()
    assert await asyncio.wait_for(task, 5) == 0
    assert events.closed


async def test_persistence_across_reopen(tmp_path) -> None:
    data = str(tmp_path / "d")
    vm = await agentvm.open(data, llm="mock")
    img = await vm.images.create("c1", name="kept")
    await vm.agents.ask("hi", image_id=img["imageId"], timeout=10)
    await vm.close()
    del vm
    import gc

    gc.collect()
    vm2 = await agentvm.open(data, llm="mock")
    assert (await vm2.images.get(img["imageId"]) or {})["name"] == "kept"
    assert [m["role"] for m in await vm2.images.messages(img["imageId"])] == ["user", "assistant"]
    await vm2.close()


async def test_json_boundary() -> None:
    value = {"a": [1, 2.5, True, None, "x", {"b": -3}], "big": 2**63 + 1, "t": (1, 2)}
    assert agentvm._native._json_round_trip(value) == {**value, "t": [1, 2]}
    with pytest.raises(TypeError):
        agentvm._native._json_round_trip({"a": object()})
    with pytest.raises(TypeError):
        agentvm._native._json_round_trip({1: "non-str key"})


async def test_create_task_and_gather(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1")
    got = await asyncio.gather(*(vm.images.get(img["imageId"]) for _ in range(10)))
    assert all(g and g["imageId"] == img["imageId"] for g in got)
    task = asyncio.create_task(vm.images.list("c1"))
    assert len(await task) == 1

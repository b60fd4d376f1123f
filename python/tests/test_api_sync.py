"""The blocking API: the same groups without await, events as a plain iterator."""

from __future__ import annotations

import threading
import time

import pytest

import agentvm
from conftest import collect_turn_sync, types


def test_groups(sync_vm: agentvm.sync.AgentVm) -> None:
    vm = sync_vm
    assert vm.containers.create("c1") == "c1"
    assert vm.containers.exists("c1") and vm.containers.list() == ["c1"]
    img = vm.images.create("c1", name="s", model="mock:multi-delta")
    assert (vm.images.get(img["imageId"]) or {})["name"] == "s"
    assert vm.images.update(img["imageId"], name="t")["name"] == "t"
    assert len(vm.images.list("c1")) == 1
    s2 = vm.sessions.create(img["imageId"], "two")
    assert len(vm.sessions.list(img["imageId"])) == 2
    assert vm.sessions.update(s2["sessionId"], "2")["title"] == "2"
    assert vm.definitions.register("d", system_prompt="p") is False
    assert [d["name"] for d in vm.definitions.list()] == ["d"]
    assert (vm.definitions.get("d") or {})["systemPrompt"] == "p"
    run = vm.images.run(img["imageId"])
    assert vm.agents.get(run["agentId"])["exists"]
    assert len(vm.agents.list()) == 1
    assert vm.sessions.resume(s2["sessionId"])["sessionId"] == s2["sessionId"]
    vm.images.stop(img["imageId"])
    vm.sessions.delete(s2["sessionId"])
    vm.agents.destroy_all("c1")
    vm.images.delete(img["imageId"])
    assert vm.images.get(img["imageId"]) is None
    assert vm.containers.delete("c1")
    resp = vm.request({"type": "container_list_request", "data": {}})
    assert resp["data"]["containerIds"] == []


def test_streamed_reply_with_a_plain_iterator(sync_vm: agentvm.sync.AgentVm) -> None:
    vm = sync_vm
    img = vm.images.create("c1", model="mock:long-stream")
    events = vm.events(img["sessionId"])
    vm.agents.send("go", image_id=img["imageId"])
    seen = []
    for e in events:
        seen.append(e)
        if e["type"] == "conversation_end":
            break
    assert types(seen).count("text_delta") == 100
    assert [m["role"] for m in vm.images.messages(img["imageId"])] == ["user", "assistant"]
    # history() is a plain iterator here, over every page.
    history = vm.sessions.history(img["sessionId"], page_size=1)
    assert [m["role"] for m in history] == ["user", "assistant"]


def test_ask_interrupt_and_agent(sync_vm: agentvm.sync.AgentVm) -> None:
    vm = sync_vm
    img = vm.images.create("c1")
    assert vm.agents.ask("hi", image_id=img["imageId"], timeout=10) == "Hello from mock!"
    slow = vm.images.create("c1", model="mock:slow-stream")
    agent = vm.agents.start(slow["imageId"])
    events = agent.events()
    agent.send("go")
    for e in events:
        if e["type"] == "text_delta":
            break
    agent.interrupt()
    assert collect_turn_sync(events)[-1]["data"]["reason"] == "interrupted"
    agent.stop()


def test_ask_raises_the_kind_of_a_failed_turn(sync_vm: agentvm.sync.AgentVm) -> None:
    vm = sync_vm
    img = vm.images.create("c1", model="mock:error")
    with pytest.raises(agentvm.UnavailableError, match="the scenario 'error' always fails") as e:
        vm.agents.ask("hi", image_id=img["imageId"], timeout=10)
    assert e.value.error_code == "mock_error"
    with pytest.raises(agentvm.UnavailableError):
        vm.agents.start(img["imageId"]).ask("again", timeout=10)
    ok = vm.images.create("c1", model="mock:instant")
    assert vm.agents.ask("hi", image_id=ok["imageId"], timeout=10) == "Instant response"


def test_ask_without_an_llm_raises_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_PROVIDER", raising=False)
    vm = agentvm.open_sync()
    try:
        img = vm.images.create("c1")
        with pytest.raises(agentvm.UnavailableError, match="LLM_PROVIDER") as e:
            vm.agents.ask("hi", image_id=img["imageId"], timeout=10)
        assert e.value.error_code == "not_configured"
    finally:
        vm.close()


def test_iterator_wakes_on_close_from_another_thread(sync_vm: agentvm.sync.AgentVm) -> None:
    img = sync_vm.images.create("c1")
    events = sync_vm.events(img["sessionId"])
    threading.Timer(0.2, events.close).start()
    t = time.monotonic()
    assert list(events) == []
    assert time.monotonic() - t < 5


def test_context_managers() -> None:
    with agentvm.sync.open(llm="mock") as vm:
        img = vm.images.create("c1")
        with vm.events(img["sessionId"]) as events:
            vm.agents.send("hi", image_id=img["imageId"])
            assert types(collect_turn_sync(events))[-1] == "conversation_end"
        assert events.closed

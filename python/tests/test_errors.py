"""Each error kind raises its exception class: real errors where the API can cause them,
the one mapping function (through a test hook) for the rest."""

from __future__ import annotations

import socket

import pytest

import agentvm
from agentvm import _native

KINDS = {
    "not_found": agentvm.NotFoundError,
    "already_exists": agentvm.AlreadyExistsError,
    "invalid_input": agentvm.InvalidInputError,
    "conflict": agentvm.ConflictError,
    "unavailable": agentvm.UnavailableError,
    "storage": agentvm.StorageError,
    "storage_full": agentvm.StorageFullError,
    "protocol": agentvm.ProtocolError,
    "cancelled": agentvm.CancelledError,
    "unauthorized": agentvm.UnauthorizedError,
    "internal": agentvm.InternalError,
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_kind_maps_to_its_class(kind: str) -> None:
    with pytest.raises(KINDS[kind]) as info:
        _native._raise_error(kind, f"a {kind} error")
    assert isinstance(info.value, agentvm.AgentVmError)
    assert info.value.kind == kind
    assert str(info.value) == f"a {kind} error"


def test_storage_full_is_a_storage_error() -> None:
    with pytest.raises(agentvm.StorageError):
        _native._raise_error("storage_full", "no space left for the data dir /x")


def test_unknown_kind_is_internal() -> None:
    with pytest.raises(agentvm.InternalError):
        _native._raise_error("something_new", "x")


async def test_not_found(vm: agentvm.AgentVm) -> None:
    with pytest.raises(agentvm.NotFoundError, match="Image not found: img_nope"):
        await vm.agents.send("hi", image_id="img_nope")
    with pytest.raises(agentvm.NotFoundError):
        await vm.images.update("img_nope", name="x")


def test_not_found_sync(sync_vm: agentvm.sync.AgentVm) -> None:
    with pytest.raises(agentvm.NotFoundError):
        sync_vm.sessions.resume("sess_nope")


async def test_invalid_input(vm: agentvm.AgentVm) -> None:
    with pytest.raises(agentvm.InvalidInputError, match="Either imageId or agentId"):
        await vm.agents.send("hi")
    with pytest.raises(agentvm.InvalidInputError):
        await vm.request({"type": "no_such_request", "data": {}})
    with pytest.raises(agentvm.InvalidInputError):
        await agentvm.open(llm="mock:no-such-scenario")
    with pytest.raises(agentvm.InvalidInputError):
        await agentvm.connect("http://not-a-ws-url")


async def test_conflict(vm: agentvm.AgentVm) -> None:
    img = await vm.images.create("c1")
    with pytest.raises(agentvm.ConflictError, match="first session"):
        await vm.sessions.delete(img["sessionId"])


async def test_already_exists() -> None:
    vm = await agentvm.open(scheduler={"background": False})
    spec = {"name": "bb", "image": "agentvm-test/busybox:latest"}
    await vm.scheduler.create_template("bb", spec)
    with pytest.raises(agentvm.AlreadyExistsError):
        await vm.scheduler.create_template("bb", spec)
    await vm.close()


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


async def test_unavailable_when_nothing_listens() -> None:
    with pytest.raises(agentvm.UnavailableError):
        await agentvm.connect(f"ws://127.0.0.1:{_closed_port()}/ws", timeout=5)


def test_unavailable_sync() -> None:
    with pytest.raises(agentvm.UnavailableError):
        agentvm.connect_sync(f"ws://127.0.0.1:{_closed_port()}/ws", timeout=5)


async def test_unauthorized_with_a_scoped_token(vm: agentvm.AgentVm) -> None:
    server = await vm.serve("127.0.0.1", 0, auth="required")
    try:
        # The server refuses the connection: connect, or at the latest the first request,
        # says why.
        with pytest.raises(agentvm.UnauthorizedError, match="authentication required"):
            anonymous = await agentvm.connect(server.ws_url, timeout=5)
            await anonymous.containers.list()
        with pytest.raises(agentvm.UnauthorizedError, match="invalid token"):
            wrong = await agentvm.connect(server.ws_url, token="avm_wrong", timeout=5)
            await wrong.containers.list()
        token = vm.create_token(["tenant-a"])
        remote = await agentvm.connect(server.ws_url, token=token, timeout=5)
        img = await remote.images.create("tenant-a")
        assert img["containerId"] == "tenant-a"
        with pytest.raises(agentvm.UnauthorizedError):
            await remote.images.create("tenant-b")
        await remote.close()
    finally:
        await server.close()


async def test_remote_runtime_refuses_local_only_calls(vm: agentvm.AgentVm) -> None:
    server = await vm.serve()
    remote = await agentvm.connect(server.ws_url)
    with pytest.raises(agentvm.InvalidInputError, match="local runtime"):
        remote.create_token()
    await remote.close()
    await server.close()


def test_a_failed_turn_raises_the_kind_the_core_put_on_the_event() -> None:
    from agentvm._turn import Reply

    reply = Reply()
    reply.feed({"type": "text_delta", "data": {"text": "par"}})
    reply.feed({"type": "error_received", "data": {"message": "no", "errorCode": "rate_limit", "errorKind": "unauthorized"}})
    with pytest.raises(agentvm.UnauthorizedError, match="no") as e:
        reply.feed({"type": "conversation_end", "data": {"reason": "error"}})
    assert e.value.error_code == "rate_limit"
    done = Reply()
    assert done.feed({"type": "conversation_end", "data": {"reason": "interrupted"}})


async def test_create_token_says_which_containers_or_all(vm: agentvm.AgentVm) -> None:
    with pytest.raises(agentvm.InvalidInputError, match="say which containers"):
        vm.create_token()
    assert vm.create_token(all=True).startswith("avm_")

"""agentvm: an embeddable AI-agent runtime, in-process.

Async (asyncio)::

    import agentvm

    vm = await agentvm.open(data_dir="./data", llm="mock")
    image = await vm.images.create("user-alice", name="helper", system_prompt="Be brief.")
    events = vm.events(image["sessionId"])          # subscribed now: nothing is missed
    await vm.agents.send("Hello!", image_id=image["imageId"])
    async for event in events:
        if event["type"] == "text_delta":
            print(event["data"]["text"], end="")
        elif event["type"] == "conversation_end":
            break

Blocking (scripts): ``vm = agentvm.open_sync(...)`` (or ``agentvm.sync.open``) has the same
methods without ``await`` and a plain iterator for events; it is derived from the async API
(:mod:`agentvm.sync`). Remote: ``await agentvm.connect("ws://host:port/ws", token=...)``
returns the same API. Server in-process: ``server = await vm.serve("127.0.0.1", 8080)``;
``python -m agentvm serve``. Sandboxes: ``vm = await agentvm.open(scheduler={"nodes":
[...]})`` embeds the Docker scheduler, driven through ``vm.scheduler``
(:mod:`agentvm.scheduler`).

Errors raise :class:`AgentVmError` subclasses, one per kind: :class:`NotFoundError`,
:class:`AlreadyExistsError`, :class:`InvalidInputError`, :class:`ConflictError`,
:class:`UnavailableError`, :class:`StorageError` (and its :class:`StorageFullError`), :class:`ProtocolError`,
:class:`CancelledError`, :class:`UnauthorizedError`, :class:`InternalError`.
"""

from __future__ import annotations

import atexit as _atexit
import os as _os

from . import _native, sync
from ._native import (
    AgentVmError,
    AlreadyExistsError,
    CancelledError,
    ConflictError,
    InternalError,
    InvalidInputError,
    NotFoundError,
    ProtocolError,
    StorageError,
    StorageFullError,
    UnauthorizedError,
    UnavailableError,
)
from .events import Subscription
from .scheduler import ExecStream, Scheduler
from .vm import Agent, AgentVm, Server, connect, open

__version__: str = _native.__version__

#: The blocking :func:`open` (same as ``agentvm.sync.open``).
open_sync = sync.open
#: The blocking :func:`connect` (same as ``agentvm.sync.connect``).
connect_sync = sync.connect
#: The blocking :class:`Scheduler` (``vm.scheduler`` of :func:`open_sync`).
SyncScheduler = sync.Scheduler
#: The blocking :class:`ExecStream` (from ``SyncScheduler.exec``).
SyncExecStream = sync.ExecStream

# tokio's threads do not survive fork(): a child builds its own runtime on first use.
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_native._after_fork)

# Stop tokio's threads before the interpreter finalizes: none may call into Python after.
_atexit.register(_native._shutdown)

_native.init_logging()

__all__ = [
    "Agent",
    "AgentVm",
    "AgentVmError",
    "AlreadyExistsError",
    "CancelledError",
    "ConflictError",
    "ExecStream",
    "InternalError",
    "InvalidInputError",
    "NotFoundError",
    "ProtocolError",
    "Scheduler",
    "Server",
    "StorageError",
    "StorageFullError",
    "Subscription",
    "SyncExecStream",
    "SyncScheduler",
    "UnauthorizedError",
    "UnavailableError",
    "connect",
    "connect_sync",
    "open",
    "open_sync",
    "sync",
]

"""The Docker sandbox scheduler: runtime nodes, templates, sandboxes, exec with streamed
output, and files.

Embed it when opening the runtime, then use ``vm.scheduler``::

    vm = await agentvm.open(scheduler={
        "nodes": [{"nodeId": "local", "apiEndpoint": "unix:///var/run/docker.sock"}],
    })
    await vm.scheduler.create_template("bb", {"name": "busybox", "image": "busybox:latest"})
    sandbox = await vm.scheduler.create_sandbox("bb")
    stream = vm.scheduler.exec(sandbox["id"], "echo hi")
    async for chunk in stream:          # {"stream": "stdout" | "stderr", "data": str}
        print(chunk["data"], end="")
    print(stream.execution["exitCode"])

The ``scheduler`` options are the core's ``SchedulerOptions`` (``nodes``,
``heartbeatIntervalMs``, ``offlineAfterMs``, ``sweepIntervalMs``, ``dockerTimeoutMs``,
``defaultExecTimeoutMs``, ``maxOutputBytes``, ``internalToken``, ``background``, ...; snake_case
accepted too); the core checks them and refuses unknown ones.

Every method here is one command of the runtime (``template_create_request``,
``sandbox_exec_request``, ...; see docs/commands.md), so the same calls work on a runtime from
:func:`agentvm.connect` when its server embeds a scheduler. :class:`Scheduler` is the asyncio
API; the blocking one (``agentvm.SyncScheduler``, ``vm.scheduler`` of
:func:`agentvm.open_sync`) is derived from it. Records are the JSON the REST API serves
(camelCase keys; node records keep their snake_case).
"""

from __future__ import annotations

import base64
import secrets
import time
from typing import Any, AsyncGenerator, Optional, Union, cast

from . import _native
from .events import Subscription

Record = dict[str, Any]

#: After the execution's response, how long to wait for its last output events (they are
#: published before the response, so they are normally queued already).
_TAIL_WAIT = 2.0

#: While the command runs, how often the stream looks whether its response has come (output
#: is read as soon as it comes; this only bounds how late a failed request is noticed).
_POLL = 0.05

_MOVED = (
    "Scheduler.open() was removed: the scheduler is embedded in the runtime. Open it with "
    "agentvm.open(..., scheduler={\"nodes\": [{\"nodeId\": ..., \"apiEndpoint\": ...}], ...}) "
    "(or agentvm.open_sync) and use vm.scheduler"
)


def _command(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": f"{name}_request", "data": {k: v for k, v in data.items() if v is not None}}


def _exec_data(
    sandbox_id: str,
    command: Union[str, list[str], None],
    code: Optional[str],
    language: Optional[str],
    env: Optional[dict[str, str]],
    workdir: Optional[str],
    timeout: Optional[float],
    execution_id: Optional[str] = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"sandboxId": sandbox_id}
    if command is not None:
        # A string runs with /bin/sh -c (the core reads either form).
        data["command"] = command if isinstance(command, str) else list(command)
    if code is not None:
        data["code"] = code
    if language is not None:
        data["language"] = language
    if env:
        data["env"] = env
    if workdir is not None:
        data["workdir"] = workdir
    if timeout is not None:
        data["timeoutMs"] = max(1, int(timeout * 1000))
    if execution_id is not None:
        data["executionId"] = execution_id
    return data


def _new_execution_id() -> str:
    return f"exec_{secrets.token_hex(10)}"


def _file_write_data(sandbox_id: str, path: str, data: Union[bytes, str]) -> dict[str, Any]:
    if isinstance(data, str):
        return {"sandboxId": sandbox_id, "path": path, "content": data, "encoding": "utf8"}
    content = base64.b64encode(bytes(data)).decode("ascii")
    return {"sandboxId": sandbox_id, "path": path, "content": content, "encoding": "base64"}


def _file_read_data(sandbox_id: str, path: str) -> dict[str, Any]:
    return {"sandboxId": sandbox_id, "path": path, "encoding": "base64"}


def _decode(content: str) -> bytes:
    return base64.b64decode(content)


def _exec_event(event: dict[str, Any], execution_id: str) -> tuple[Optional[Record], bool]:
    """``(chunk, finished)`` for an event of the sandbox's topic: an output chunk of this
    execution, and whether this execution has finished. Other executions' events are
    ``(None, False)``."""
    data = event.get("data") or {}
    if data.get("executionId") != execution_id:
        return None, False
    t = event.get("type")
    if t == "sandbox_exec_output":
        return {"stream": data.get("stream"), "data": data.get("data", "")}, False
    return None, t == "sandbox_exec_finished"


class ExecStream:
    """A command running in a sandbox (from :meth:`Scheduler.exec`). ``async for chunk in
    stream`` yields ``{"stream": "stdout" | "stderr", "data": str}`` as the command writes;
    after the last one, :attr:`execution` holds the finished execution (``status``,
    ``exitCode``, ``stdout``, ``stderr``, ...). On a local runtime the command starts when
    ``exec`` is called (on a connected one, once the sandbox's events are subscribed: at the
    first read) and runs to its end (or timeout) even if the stream is not read."""

    def __init__(self, rt: _native.Runtime, data: dict[str, Any]) -> None:
        #: The execution's id (for :meth:`Scheduler.cancel_exec` and ``get_execution``).
        self.execution_id: str = data["executionId"]
        #: The sandbox it runs in.
        self.sandbox_id: str = data["sandboxId"]
        #: The finished execution; None until the stream has ended.
        self.execution: Optional[Record] = None
        self._rt = rt
        self._command = _command("sandbox_exec", data)
        # Subscribed before the command is sent, so no output is missed.
        self._events = Subscription(rt, {"sessions": [{"sessionId": self.sandbox_id}]})
        self._request: Optional[_native.Call] = None
        if self._events._starting is None or self._events._starting.done():
            self._request = rt.request(self._command)
        self._chunks = self._run()

    def __aiter__(self) -> "ExecStream":
        return self

    async def __anext__(self) -> Record:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        """Stops reading (the command goes on running)."""
        await self._chunks.aclose()

    async def wait(self) -> Record:
        """Reads the rest of the output and returns the finished execution."""
        async for _ in self:
            pass
        assert self.execution is not None
        return self.execution

    async def _run(self) -> AsyncGenerator[Record, None]:
        try:
            await self._events.ready()
            request = self._request or self._rt.request(self._command)
            finished = False
            tail_until: Optional[float] = None
            while not finished:
                if self.execution is None and request.done():
                    # Raises when the command failed: there is no output to wait for then.
                    self.execution = cast(Record, (await request)["execution"])
                    tail_until = time.monotonic() + _TAIL_WAIT
                wait = _POLL if tail_until is None else tail_until - time.monotonic()
                if wait <= 0:
                    break
                batch = await self._events.next_batch(timeout=wait)
                if batch is None:
                    if self._events.closed:
                        break
                    continue
                for event in batch:
                    chunk, finished = _exec_event(event, self.execution_id)
                    if chunk is not None:
                        yield chunk
                    if finished:
                        break
            if self.execution is None:
                self.execution = cast(Record, (await request)["execution"])
        finally:
            self._events.close()


class Scheduler:
    """The sandbox scheduler of a runtime (asyncio): ``vm.scheduler``. Each method is one
    command; a runtime opened without ``scheduler=`` answers them with
    :class:`agentvm.UnavailableError`."""

    __slots__ = ("_rt",)

    def __init__(self, rt: _native.Runtime) -> None:
        self._rt = rt

    @classmethod
    def open(cls, *_args: Any, **_kwargs: Any) -> "Scheduler":
        """Removed: use ``agentvm.open(..., scheduler={...})`` and ``vm.scheduler``."""
        raise RuntimeError(_MOVED)

    async def _call(self, name: str, pick: str, data: dict[str, Any]) -> Any:
        return (await self._rt.request(_command(name, data))).get(pick)

    # nodes
    async def register_node(self, node_id: str, api_endpoint: str, **extra: Any) -> Record:
        """Registers (or updates) a Docker node; ``extra``: ``total_cpu_cores``,
        ``total_memory_mb``, ``max_containers``, ``labels``, ``liveness`` ("probe" | "heartbeat"),
        ``tls``, ... (camelCase or snake_case)."""
        data = {"nodeId": node_id, "apiEndpoint": api_endpoint, **extra}
        return cast(Record, await self._call("node_register", "node", data))

    async def heartbeat(self, node_id: str, **extra: Any) -> Record:
        """A node agent's heartbeat (``cached_images``, ``container_id``, ``timestamp``)."""
        return cast(Record, await self._call("node_heartbeat", "node", {"nodeId": node_id, **extra}))

    async def list_nodes(self) -> list[Record]:
        """Every node with its status and load."""
        return cast(list[Record], await self._call("node_list", "nodes", {}))

    async def get_node(self, node_id: str) -> Optional[Record]:
        """A node, or None."""
        return cast(Optional[Record], await self._call("node_get", "node", {"nodeId": node_id}))

    async def set_node_status(self, node_id: str, status: str) -> Record:
        """``online``, ``draining`` or ``maintenance``."""
        data = {"nodeId": node_id, "status": status}
        return cast(Record, await self._call("node_update", "node", data))

    async def remove_node(self, node_id: str) -> None:
        """Removes a node (it must have no live sandboxes)."""
        await self._call("node_delete", "nodeId", {"nodeId": node_id})

    # templates
    async def create_template(self, template_id: str, spec: dict[str, Any]) -> Record:
        """Creates a template: ``spec`` has ``name``, ``image`` and optional limits
        (``defaultCpuCores``, ``defaultMemoryMb``, ``warmPoolSize``, ...)."""
        data = {**spec, "templateId": template_id}
        return cast(Record, await self._call("template_create", "template", data))

    async def update_template(self, template_id: str, spec: dict[str, Any]) -> Record:
        """Replaces a template's spec."""
        data = {**spec, "templateId": template_id}
        return cast(Record, await self._call("template_update", "template", data))

    async def get_template(self, template_id: str) -> Optional[Record]:
        """A template, or None."""
        data = {"templateId": template_id}
        return cast(Optional[Record], await self._call("template_get", "template", data))

    async def list_templates(self) -> list[Record]:
        """Every template."""
        return cast(list[Record], await self._call("template_list", "templates", {}))

    async def delete_template(self, template_id: str) -> None:
        """Deletes a template."""
        await self._call("template_delete", "templateId", {"templateId": template_id})

    # sandboxes
    async def create_sandbox(self, template_id: str, **request: Any) -> Record:
        """Places and starts a sandbox; returns once it runs. ``request``: ``owner``,
        ``cpuCores``, ``memoryMb``, ``env``, ``timeoutS``, ``idleTimeoutS``, ``nodeId``."""
        data = {**request, "templateId": template_id}
        return cast(Record, await self._call("sandbox_create", "sandbox", data))

    async def get_sandbox(self, sandbox_id: str) -> Optional[Record]:
        """A sandbox, or None."""
        data = {"sandboxId": sandbox_id}
        return cast(Optional[Record], await self._call("sandbox_get", "sandbox", data))

    async def list_sandboxes(self, owner: Optional[str] = None) -> list[Record]:
        """Every sandbox (of one owner when given)."""
        return cast(list[Record], await self._call("sandbox_list", "sandboxes", {"owner": owner}))

    async def terminate_sandbox(self, sandbox_id: str) -> Record:
        """Stops and removes a sandbox's container; the record stays."""
        data = {"sandboxId": sandbox_id}
        return cast(Record, await self._call("sandbox_terminate", "sandbox", data))

    async def delete_sandbox(self, sandbox_id: str) -> None:
        """Terminates a sandbox (if needed) and deletes its record."""
        await self._call("sandbox_delete", "sandboxId", {"sandboxId": sandbox_id})

    # exec
    def exec(
        self,
        sandbox_id: str,
        command: Union[str, list[str], None] = None,
        *,
        code: Optional[str] = None,
        language: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
        workdir: Optional[str] = None,
        timeout: Optional[float] = None,
        execution_id: Optional[str] = None,
    ) -> ExecStream:
        """Starts a command (a str runs with ``/bin/sh -c``) or ``code`` in ``language``;
        ``async for chunk in ...`` yields ``{"stream", "data"}`` as output comes, then
        ``.execution`` holds the result (``status``, ``exitCode``, ``stdout``, ``stderr``)."""
        data = _exec_data(
            sandbox_id, command, code, language, env, workdir, timeout,
            execution_id or _new_execution_id(),
        )
        return ExecStream(self._rt, data)

    async def run(
        self,
        sandbox_id: str,
        command: Union[str, list[str], None] = None,
        *,
        code: Optional[str] = None,
        language: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
        workdir: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> Record:
        """Runs a command to the end and returns the execution."""
        data = _exec_data(sandbox_id, command, code, language, env, workdir, timeout)
        return cast(Record, await self._call("sandbox_exec", "execution", data))

    async def cancel_exec(self, execution_id: str) -> Record:
        """Kills a running execution; returns it (``status: "cancelled"``, or unchanged when it
        had ended already)."""
        data = {"executionId": execution_id}
        return cast(Record, await self._call("sandbox_exec_cancel", "execution", data))

    async def get_execution(self, execution_id: str) -> Optional[Record]:
        """An execution, or None."""
        data = {"executionId": execution_id}
        return cast(Optional[Record], await self._call("execution_get", "execution", data))

    async def list_executions(self, sandbox_id: str) -> list[Record]:
        """The executions of a sandbox, oldest first."""
        data = {"sandboxId": sandbox_id}
        return cast(list[Record], await self._call("execution_list", "executions", data))

    # files
    async def write_file(self, sandbox_id: str, path: str, data: Union[bytes, str]) -> None:
        """Writes a file (its directory must exist); a relative path is in the workdir."""
        await self._call("sandbox_file_write", "size", _file_write_data(sandbox_id, path, data))

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        """Reads a file."""
        return _decode(await self._call("sandbox_file_read", "content", _file_read_data(sandbox_id, path)))

    async def list_files(self, sandbox_id: str, path: str = ".") -> list[Record]:
        """Lists a directory (one level)."""
        data = {"sandboxId": sandbox_id, "path": path}
        return cast(list[Record], await self._call("sandbox_file_list", "files", data))

    async def delete_file(self, sandbox_id: str, path: str, *, recursive: bool = False) -> None:
        """Deletes a file or link; a directory only with ``recursive=True``."""
        data = {"sandboxId": sandbox_id, "path": path, "recursive": recursive or None}
        await self._call("sandbox_file_delete", "path", data)

    async def metrics(self) -> Record:
        """Counters and gauges (pool hits, cold starts, live sandboxes, nodes online...)."""
        return cast(Record, await self._call("scheduler_metrics", "metrics", {}))

"""The Docker sandbox scheduler: runtime nodes, templates, sandboxes, exec with streamed
output, and files. :class:`Scheduler` is the asyncio API, :class:`SyncScheduler` the
blocking one; records are the JSON the REST API serves (camelCase keys).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional, Union

from . import _native

if TYPE_CHECKING:
    from . import sync as _sync
    from . import vm as _vm

Record = dict[str, Any]


def _exec_request(
    command: Union[str, list[str], None],
    code: Optional[str],
    language: Optional[str],
    env: Optional[dict[str, str]],
    workdir: Optional[str],
    timeout: Optional[float],
) -> dict[str, Any]:
    request: dict[str, Any] = {}
    if isinstance(command, str):
        request["command"] = ["/bin/sh", "-c", command]
    elif command is not None:
        request["command"] = list(command)
    if code is not None:
        request["code"] = code
    if language is not None:
        request["language"] = language
    if env:
        request["env"] = env
    if workdir is not None:
        request["workdir"] = workdir
    if timeout is not None:
        request["timeoutMs"] = int(timeout * 1000)
    return request


def _node(node_id: str, api_endpoint: str, extra: dict[str, Any]) -> dict[str, Any]:
    return {"node_id": node_id, "api_endpoint": api_endpoint, **extra}


class Scheduler:
    """The scheduler (asyncio). Open with ``await Scheduler.open(...)``."""

    def __init__(self, native: _native.Scheduler) -> None:
        #: The native handle (``call(op, args)``).
        self.native = native

    @classmethod
    async def open(
        cls,
        runtime: Optional["_vm.AgentVm"] = None,
        *,
        nodes: Optional[list[dict[str, Any]]] = None,
        config: Optional[dict[str, Any]] = None,
    ) -> "Scheduler":
        """Opens a scheduler. ``runtime`` (a local :class:`agentvm.AgentVm`) shares its
        store and event bus; ``nodes`` registers Docker nodes
        (``[{"node_id": "local", "api_endpoint": "unix:///var/run/docker.sock"}]``);
        ``config`` tunes it (durations in seconds: ``heartbeat_interval``, ``offline_after``,
        ``sweep_interval``, ``default_exec_timeout``, ...)."""
        native_rt = runtime.native if runtime is not None else None
        return cls(await _native.open_scheduler(native_rt, nodes, config))

    async def _call(self, op: str, **args: Any) -> Any:
        return await self.native.call(op, args)

    # nodes
    async def register_node(self, node_id: str, api_endpoint: str, **extra: Any) -> Record:
        """Registers (or updates) a Docker node; ``extra``: ``total_cpu_cores``,
        ``total_memory_mb``, ``max_containers``, ``labels``, ``liveness`` ("probe" | "heartbeat")."""
        return await self._call("register_node", registration=_node(node_id, api_endpoint, extra))  # type: ignore[no-any-return]

    async def heartbeat(self, node_id: str, **extra: Any) -> Record:
        """A node agent's heartbeat."""
        return await self._call("heartbeat", heartbeat={"node_id": node_id, **extra})  # type: ignore[no-any-return]

    async def list_nodes(self) -> list[Record]:
        """Every node with its status and load."""
        return await self._call("list_nodes")  # type: ignore[no-any-return]

    async def get_node(self, node_id: str) -> Optional[Record]:
        """A node, or None."""
        return await self._call("get_node", node_id=node_id)  # type: ignore[no-any-return]

    async def set_node_status(self, node_id: str, status: str) -> Record:
        """``online``, ``draining`` or ``maintenance``."""
        return await self._call("set_node_status", node_id=node_id, status=status)  # type: ignore[no-any-return]

    async def remove_node(self, node_id: str) -> None:
        """Removes a node (it must have no live sandboxes)."""
        await self._call("remove_node", node_id=node_id)

    # templates
    async def create_template(self, template_id: str, spec: dict[str, Any]) -> Record:
        """Creates a template: ``spec`` has ``name``, ``image`` and optional limits
        (``defaultCpuCores``, ``defaultMemoryMb``, ``warmPoolSize``, ...)."""
        return await self._call("create_template", template_id=template_id, spec=spec)  # type: ignore[no-any-return]

    async def update_template(self, template_id: str, spec: dict[str, Any]) -> Record:
        """Replaces a template's spec."""
        return await self._call("update_template", template_id=template_id, spec=spec)  # type: ignore[no-any-return]

    async def get_template(self, template_id: str) -> Optional[Record]:
        """A template, or None."""
        return await self._call("get_template", template_id=template_id)  # type: ignore[no-any-return]

    async def list_templates(self) -> list[Record]:
        """Every template."""
        return await self._call("list_templates")  # type: ignore[no-any-return]

    async def delete_template(self, template_id: str) -> None:
        """Deletes a template."""
        await self._call("delete_template", template_id=template_id)

    # sandboxes
    async def create_sandbox(self, template_id: str, **request: Any) -> Record:
        """Places and starts a sandbox; returns once it runs. ``request``: ``owner``,
        ``cpuCores``, ``memoryMb``, ``env``, ``timeoutS``, ``idleTimeoutS``, ``nodeId``."""
        return await self._call("create_sandbox", request={"templateId": template_id, **request})  # type: ignore[no-any-return]

    async def get_sandbox(self, sandbox_id: str) -> Optional[Record]:
        """A sandbox, or None."""
        return await self._call("get_sandbox", sandbox_id=sandbox_id)  # type: ignore[no-any-return]

    async def list_sandboxes(self) -> list[Record]:
        """Every sandbox."""
        return await self._call("list_sandboxes")  # type: ignore[no-any-return]

    async def terminate_sandbox(self, sandbox_id: str) -> Record:
        """Stops and removes a sandbox's container; the record stays."""
        return await self._call("terminate_sandbox", sandbox_id=sandbox_id)  # type: ignore[no-any-return]

    async def delete_sandbox(self, sandbox_id: str) -> None:
        """Terminates a sandbox (if needed) and deletes its record."""
        await self._call("delete_sandbox", sandbox_id=sandbox_id)

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
    ) -> _native.ExecStream:
        """Starts a command (a str runs with ``/bin/sh -c``) or ``code`` in ``language``;
        ``async for chunk in ...`` yields ``{"stream", "data"}`` as output comes, then
        ``.execution`` holds the result (``status``, ``exitCode``, ``stdout``, ``stderr``)."""
        return self.native.exec(sandbox_id, _exec_request(command, code, language, env, workdir, timeout))

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
        request = _exec_request(command, code, language, env, workdir, timeout)
        return await self._call("exec_collect", sandbox_id=sandbox_id, request=request)  # type: ignore[no-any-return]

    async def get_execution(self, execution_id: str) -> Optional[Record]:
        """An execution, or None."""
        return await self._call("get_execution", execution_id=execution_id)  # type: ignore[no-any-return]

    async def list_executions(self, sandbox_id: str) -> list[Record]:
        """The executions of a sandbox."""
        return await self._call("list_executions", sandbox_id=sandbox_id)  # type: ignore[no-any-return]

    # files
    async def write_file(self, sandbox_id: str, path: str, data: Union[bytes, str]) -> None:
        """Writes a file (its directory must exist)."""
        raw = data.encode() if isinstance(data, str) else data
        await self.native.write_file(sandbox_id, path, raw)

    async def read_file(self, sandbox_id: str, path: str) -> bytes:
        """Reads a file."""
        return await self.native.read_file(sandbox_id, path)

    async def list_files(self, sandbox_id: str, path: str = ".") -> list[Record]:
        """Lists a directory."""
        return await self._call("list_files", sandbox_id=sandbox_id, path=path)  # type: ignore[no-any-return]

    async def metrics(self) -> Record:
        """Counters and gauges (pool hits, cold starts, live sandboxes, nodes online...)."""
        return await self._call("metrics")  # type: ignore[no-any-return]


class SyncScheduler:
    """The scheduler, blocking. Open with ``SyncScheduler.open(...)``."""

    def __init__(self, native: _native.Scheduler) -> None:
        #: The native handle (``call_blocking(op, args)``).
        self.native = native

    @classmethod
    def open(
        cls,
        runtime: Optional["_sync.AgentVm"] = None,
        *,
        nodes: Optional[list[dict[str, Any]]] = None,
        config: Optional[dict[str, Any]] = None,
    ) -> "SyncScheduler":
        """Opens a scheduler (see :meth:`Scheduler.open`)."""
        native_rt = runtime.native if runtime is not None else None
        return cls(_native.open_scheduler_blocking(native_rt, nodes, config))

    def _call(self, op: str, **args: Any) -> Any:
        return self.native.call_blocking(op, args)

    def register_node(self, node_id: str, api_endpoint: str, **extra: Any) -> Record:
        """Registers (or updates) a Docker node."""
        return self._call("register_node", registration=_node(node_id, api_endpoint, extra))  # type: ignore[no-any-return]

    def heartbeat(self, node_id: str, **extra: Any) -> Record:
        """A node agent's heartbeat."""
        return self._call("heartbeat", heartbeat={"node_id": node_id, **extra})  # type: ignore[no-any-return]

    def list_nodes(self) -> list[Record]:
        """Every node."""
        return self._call("list_nodes")  # type: ignore[no-any-return]

    def get_node(self, node_id: str) -> Optional[Record]:
        """A node, or None."""
        return self._call("get_node", node_id=node_id)  # type: ignore[no-any-return]

    def set_node_status(self, node_id: str, status: str) -> Record:
        """``online``, ``draining`` or ``maintenance``."""
        return self._call("set_node_status", node_id=node_id, status=status)  # type: ignore[no-any-return]

    def remove_node(self, node_id: str) -> None:
        """Removes a node."""
        self._call("remove_node", node_id=node_id)

    def create_template(self, template_id: str, spec: dict[str, Any]) -> Record:
        """Creates a template."""
        return self._call("create_template", template_id=template_id, spec=spec)  # type: ignore[no-any-return]

    def update_template(self, template_id: str, spec: dict[str, Any]) -> Record:
        """Replaces a template's spec."""
        return self._call("update_template", template_id=template_id, spec=spec)  # type: ignore[no-any-return]

    def get_template(self, template_id: str) -> Optional[Record]:
        """A template, or None."""
        return self._call("get_template", template_id=template_id)  # type: ignore[no-any-return]

    def list_templates(self) -> list[Record]:
        """Every template."""
        return self._call("list_templates")  # type: ignore[no-any-return]

    def delete_template(self, template_id: str) -> None:
        """Deletes a template."""
        self._call("delete_template", template_id=template_id)

    def create_sandbox(self, template_id: str, **request: Any) -> Record:
        """Places and starts a sandbox."""
        return self._call("create_sandbox", request={"templateId": template_id, **request})  # type: ignore[no-any-return]

    def get_sandbox(self, sandbox_id: str) -> Optional[Record]:
        """A sandbox, or None."""
        return self._call("get_sandbox", sandbox_id=sandbox_id)  # type: ignore[no-any-return]

    def list_sandboxes(self) -> list[Record]:
        """Every sandbox."""
        return self._call("list_sandboxes")  # type: ignore[no-any-return]

    def terminate_sandbox(self, sandbox_id: str) -> Record:
        """Stops a sandbox."""
        return self._call("terminate_sandbox", sandbox_id=sandbox_id)  # type: ignore[no-any-return]

    def delete_sandbox(self, sandbox_id: str) -> None:
        """Deletes a sandbox."""
        self._call("delete_sandbox", sandbox_id=sandbox_id)

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
    ) -> _native.ExecStream:
        """Starts a command; ``for chunk in ...`` yields its output as it comes."""
        return self.native.exec(sandbox_id, _exec_request(command, code, language, env, workdir, timeout))

    def run(
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
        request = _exec_request(command, code, language, env, workdir, timeout)
        return self._call("exec_collect", sandbox_id=sandbox_id, request=request)  # type: ignore[no-any-return]

    def get_execution(self, execution_id: str) -> Optional[Record]:
        """An execution, or None."""
        return self._call("get_execution", execution_id=execution_id)  # type: ignore[no-any-return]

    def list_executions(self, sandbox_id: str) -> list[Record]:
        """The executions of a sandbox."""
        return self._call("list_executions", sandbox_id=sandbox_id)  # type: ignore[no-any-return]

    def write_file(self, sandbox_id: str, path: str, data: Union[bytes, str]) -> None:
        """Writes a file."""
        raw = data.encode() if isinstance(data, str) else data
        self.native.write_file_blocking(sandbox_id, path, raw)

    def read_file(self, sandbox_id: str, path: str) -> bytes:
        """Reads a file."""
        return self.native.read_file_blocking(sandbox_id, path)

    def list_files(self, sandbox_id: str, path: str = ".") -> list[Record]:
        """Lists a directory."""
        return self._call("list_files", sandbox_id=sandbox_id, path=path)  # type: ignore[no-any-return]

    def metrics(self) -> Record:
        """Counters and gauges."""
        return self._call("metrics")  # type: ignore[no-any-return]

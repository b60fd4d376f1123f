"""The blocking API for scripts: the same classes and methods as :mod:`agentvm.vm`, without
``await``. Waits release the GIL and Ctrl-C interrupts them.

Every helper builds a protocol command, sends it through the native runtime and returns
part of the response as plain Python data (dicts with the protocol's camelCase keys).
"""

from __future__ import annotations

import builtins

import time
from typing import Any, Optional, Union

from . import _commands as c
from . import _native
from ._commands import Content
from .scheduler import SyncScheduler

Record = dict[str, Any]
Event = dict[str, Any]


class _Group:
    __slots__ = ("_rt",)

    def __init__(self, rt: _native.Runtime) -> None:
        self._rt = rt

    def _call(self, command: c.Command) -> Any:
        return self._rt.request_blocking(command[0], command[1])


class Containers(_Group):
    """Containers: the isolation unit of one tenant."""

    def create(self, container_id: str) -> str:
        """Gets or creates a container; returns its id."""
        return self._call(c.container_create(container_id))  # type: ignore[no-any-return]

    def exists(self, container_id: str) -> bool:
        """Whether the container exists."""
        return bool(self._call(c.container_exists(container_id)))

    def list(self) -> builtins.list[str]:
        """The ids of the containers this runtime may see."""
        return self._call(c.container_list())  # type: ignore[no-any-return]

    def delete(self, container_id: str) -> bool:
        """Deletes a container and everything in it; False when it did not exist."""
        return bool(self._call(c.container_delete(container_id)))


class Images(_Group):
    """Images: built agent configurations, each with its first session."""

    def create(
        self,
        container_id: str,
        *,
        name: Optional[str] = None,
        description: Optional[str] = None,
        system_prompt: Optional[str] = None,
        model: Optional[str] = None,
        tools: Optional[builtins.list[str]] = None,
        mcp_servers: Optional[dict[str, Any]] = None,
        definition: Optional[Union[str, dict[str, Any]]] = None,
    ) -> Record:
        """Creates an image and its first session (creating the container if missing)."""
        config = c.image_config(name, description, system_prompt, model, tools, mcp_servers, definition)
        return self._call(c.image_create(container_id, config))  # type: ignore[no-any-return]

    def build(self, container_id: str, definition_name: str, **config: Any) -> Record:
        """Builds an image from a registered definition (keyword args as in ``create``)."""
        return self._call(  # type: ignore[no-any-return]
            c.image_build(container_id, definition_name, c.image_config(**config))
        )

    def get(self, image_id: str) -> Optional[Record]:
        """An image record, or None when unknown."""
        return self._rt.request_blocking(  # type: ignore[no-any-return]
            {"type": "image_get_request", "data": {"imageId": image_id}}, "record"
        )

    def list(self, container_id: Optional[str] = None) -> builtins.list[Record]:
        """Images of one container, or of every visible one."""
        return self._call(c.image_list(container_id))  # type: ignore[no-any-return]

    def update(
        self, image_id: str, *, name: Optional[str] = None, description: Optional[str] = None
    ) -> Record:
        """Renames or re-describes an image."""
        return self._call(c.image_update(image_id, name, description))  # type: ignore[no-any-return]

    def delete(self, image_id: str) -> None:
        """Deletes an image with its sessions, messages and workdir."""
        self._call(c.image_delete(image_id))

    def run(self, image_id: str) -> Record:
        """Starts (or reuses) the image's agent: ``{imageId, agentId, reused}``."""
        return self._call(c.image_run(image_id))  # type: ignore[no-any-return]

    def stop(self, image_id: str) -> None:
        """Stops the image's agent (the image stays)."""
        self._call(c.image_stop(image_id))

    def messages(self, image_id: str) -> builtins.list[Record]:
        """The stored history of the image's first session, oldest first."""
        return self._call(c.image_messages(image_id))  # type: ignore[no-any-return]


class Sessions(_Group):
    """Sessions: conversations on an image."""

    def create(self, image_id: str, title: Optional[str] = None) -> Record:
        """Another conversation on an image."""
        return self._call(c.session_create(image_id, title))  # type: ignore[no-any-return]

    def list(self, image_id: str) -> builtins.list[Record]:
        """The sessions of an image."""
        return self._call(c.session_list(image_id))  # type: ignore[no-any-return]

    def get(self, session_id: str) -> Optional[Record]:
        """A session, or None when unknown."""
        return self._call(c.session_get(session_id))  # type: ignore[no-any-return]

    def update(self, session_id: str, title: Optional[str]) -> Record:
        """Sets (or clears) a session's title."""
        return self._call(c.session_update(session_id, title))  # type: ignore[no-any-return]

    def delete(self, session_id: str) -> None:
        """Deletes a session and its messages."""
        self._call(c.session_delete(session_id))

    def resume(self, session_id: str) -> Record:
        """Starts (or reuses) the session's agent."""
        return self._call(c.session_resume(session_id))  # type: ignore[no-any-return]

    def messages(self, session_id: str) -> builtins.list[Record]:
        """The session's history, oldest first."""
        return self._call(c.session_messages(session_id))  # type: ignore[no-any-return]


class Definitions(_Group):
    """Definitions: named agent templates that images are built from."""

    def register(
        self,
        name: str,
        *,
        description: Optional[str] = None,
        system_prompt: Optional[str] = None,
        model: Optional[str] = None,
        tools: Optional[builtins.list[str]] = None,
        mcp_servers: Optional[dict[str, Any]] = None,
    ) -> bool:
        """Registers (or replaces) a definition; True when it replaced one."""
        d = c.definition(name, description, system_prompt, model, tools, mcp_servers)
        return bool(self._call(c.definition_register(d)))

    def list(self) -> builtins.list[Record]:
        """Registered definitions."""
        return self._call(c.definition_list())  # type: ignore[no-any-return]

    def get(self, name: str) -> Optional[Record]:
        """A definition by name, or None."""
        return self._call(c.definition_get(name))  # type: ignore[no-any-return]


class Agents(_Group):
    """Running agents and the messages sent to them."""

    def send(
        self,
        content: Optional[Content] = None,
        *,
        image_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> Record:
        """Sends a user message (starting the agent if needed) and returns at once with
        ``{imageId, agentId, sessionId, messageId}``; the reply streams as events."""
        return self._call(  # type: ignore[no-any-return]
            c.message_send(content if content is not None else "", image_id, agent_id, session_id)
        )

    def interrupt(
        self,
        *,
        image_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> Record:
        """Stops the current turn (a success when the image is offline)."""
        return self._call(c.agent_interrupt(image_id, agent_id, session_id))  # type: ignore[no-any-return]

    def get(self, agent_id: str) -> Record:
        """``{agentId?, containerId?, exists}``."""
        return self._call(c.agent_get(agent_id))  # type: ignore[no-any-return]

    def list(self, container_id: Optional[str] = None) -> builtins.list[Record]:
        """Running agents, of one container or all."""
        return self._call(c.agent_list(container_id))  # type: ignore[no-any-return]

    def destroy(self, agent_id: str) -> bool:
        """Stops an agent; False when it was not running."""
        return bool(self._call(c.agent_destroy(agent_id)))

    def destroy_all(self, container_id: str) -> None:
        """Stops every agent of a container."""
        self._call(c.agent_destroy_all(container_id))

    def ask(
        self,
        content: Content,
        *,
        image_id: Optional[str] = None,
        session_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Sends a message and waits for the whole reply; returns its text.

        A turn that ends in error raises the :class:`AgentVmError` subclass of its kind, with
        the message and the provider's code as ``error_code``: no LLM configured
        (``not_configured``) is :class:`UnavailableError`, a refused key (``authentication``)
        :class:`UnauthorizedError`, a rejected request (``invalid_request``)
        :class:`InvalidInputError`, any other failure (rate limit, network, timeout, ...)
        :class:`UnavailableError`. An interrupted turn is not an error: it returns the text
        streamed before the interrupt (maybe ``""``)."""
        if session_id is None:
            if image_id is None:
                raise _native.InvalidInputError("Either image_id or session_id must be given")
            record = Images(self._rt).get(image_id)
            if record is None:
                raise _native.NotFoundError(f"Image not found: {image_id}")
            session_id = record["sessionId"]
        reply = c.Reply()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._rt.subscribe(session_id=session_id) as events:
            self.send(content, image_id=image_id, session_id=None if image_id else session_id)
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                event = events.next_blocking(left)
                if event is None:
                    raise TimeoutError(f"no complete reply within {timeout} s")
                if reply.feed(event):
                    break
        return reply.text()

    def start(self, image_id: str) -> "Agent":
        """Runs an image's agent and returns a handle on it."""
        run = Images(self._rt).run(image_id)
        record = Images(self._rt).get(image_id)
        if record is None:
            raise _native.NotFoundError(f"Image not found: {image_id}")
        return Agent(self._rt, image_id, run["agentId"], record["sessionId"])


class Agent:
    """A running agent of an image: send to it, interrupt it, watch its events."""

    def __init__(self, rt: _native.Runtime, image_id: str, agent_id: str, session_id: str) -> None:
        self._rt = rt
        #: The image it runs.
        self.image_id = image_id
        #: The agent id.
        self.agent_id = agent_id
        #: The session it talks in.
        self.session_id = session_id

    def send(self, content: Content) -> Record:
        """Sends a user message; the reply streams as events."""
        return Agents(self._rt).send(content, image_id=self.image_id)

    def ask(self, content: Content, timeout: Optional[float] = None) -> str:
        """Sends a message and returns the whole reply's text; raises like
        :meth:`Agents.ask` when the turn ends in error."""
        return Agents(self._rt).ask(content, image_id=self.image_id, timeout=timeout)

    def interrupt(self) -> Record:
        """Stops the current turn."""
        return Agents(self._rt).interrupt(image_id=self.image_id)

    def stop(self) -> None:
        """Stops the agent (the image and its history stay)."""
        Images(self._rt).stop(self.image_id)

    def messages(self) -> builtins.list[Record]:
        """The stored history."""
        return Images(self._rt).messages(self.image_id)

    def events(self, after: Optional[int] = None) -> _native.Subscription:
        """The session's events from now (or replayed after the cursor ``after``)."""
        return self._rt.subscribe(session_id=self.session_id, after=after)

    def __repr__(self) -> str:
        return f"<Agent {self.agent_id} image={self.image_id} session={self.session_id}>"


class AgentVm:
    """A runtime, local (:func:`agentvm.open`) or remote (:func:`agentvm.connect`): the same
    methods either way."""

    def __init__(self, native: _native.Runtime) -> None:
        #: The native handle (``request``/``subscribe`` with the protocol's JSON).
        self.native = native
        #: Containers.
        self.containers = Containers(native)
        #: Images.
        self.images = Images(native)
        #: Sessions.
        self.sessions = Sessions(native)
        #: Definitions.
        self.definitions = Definitions(native)
        #: Agents and messages.
        self.agents = Agents(native)
        #: The Docker sandbox scheduler (embedded with ``open(scheduler={...})``, or the
        #: server's when connected).
        self.scheduler = SyncScheduler(native)

    def request(self, command: dict[str, Any]) -> dict[str, Any]:
        """Runs a raw command ``{"type": "<name>_request", "data": {...}}`` and returns the
        response ``{"type": "<name>_response", "data": {...}}``."""
        return self.native.request_blocking(command)  # type: ignore[no-any-return]

    def events(
        self,
        session_id: Optional[str] = None,
        *,
        after: Optional[int] = None,
        all_sessions: bool = False,
        global_events: bool = False,
    ) -> _native.Subscription:
        """Subscribes at once (so nothing caused afterwards is missed); iterate with
        ``for``. One session's events (replayed after ``after``), every session's, and/or
        the global topic (lifecycle events)."""
        return self.native.subscribe(session_id, after, all_sessions, global_events)

    def serve(self, host: str = "127.0.0.1", port: int = 0, *, auth: str = "auto") -> _native.Server:
        """Serves this runtime (WebSocket ``/ws``, REST ``/v1``, ``/health``, ``/metrics``)
        in-process, with the scheduler's routes when it was opened with one."""
        return self.native.serve_blocking(host, port, auth)

    def create_token(self, containers: Optional[list[str]] = None) -> str:
        """Creates an access token for ``containers`` (None: all); shown once. Local
        runtimes only."""
        if not self.native.is_local:
            # Token commands work remotely for operators; kept local as before.
            raise _native.InvalidInputError(
                "create_token needs a local runtime (agentvm.open), not a connected one"
            )
        return self.native.request_blocking(*c.token_create(containers))  # type: ignore[no-any-return]

    def close(self) -> None:
        """Stops every agent (partial replies are stored) and writes everything out; closes
        the connection of a remote runtime."""
        self.native.close_blocking()

    def __enter__(self) -> "AgentVm":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_local(self) -> bool:
        """Whether the runtime runs in this process."""
        return self.native.is_local

    def __repr__(self) -> str:
        return repr(self.native)


def open(
    data_dir: Optional[str] = None,
    *,
    llm: Optional[Union[str, dict[str, Any]]] = None,
    local_tools: bool = False,
    definitions: Optional[list[dict[str, Any]]] = None,
    max_tokens: Optional[int] = None,
    scheduler: Optional[dict[str, Any]] = None,
) -> AgentVm:
    """Opens a local runtime.

    ``data_dir``: where everything is kept (None: in memory). ``llm``: ``"mock"``,
    ``"mock:<scenario>"``, ``"env"`` (the ``LLM_*`` variables), or a dict with ``provider``
    (anthropic | openai | mock), ``url``, ``api_key``, ``model``; None reads the
    environment when ``LLM_PROVIDER`` is set. ``local_tools``: run the built-in tools on this
    machine (trusted agents only). ``max_tokens``: the reply length limit per model call.
    ``scheduler``: embeds the Docker sandbox scheduler (``vm.scheduler``) with these options,
    the core's ``SchedulerOptions``: ``nodes`` (``[{"nodeId", "apiEndpoint", ...}]``),
    ``heartbeatIntervalMs``, ``offlineAfterMs``, ``sweepIntervalMs``, ``dockerTimeoutMs``,
    ``defaultExecTimeoutMs``, ``maxOutputBytes``, ``internalToken``, ``background``, ...
    (snake_case accepted); an unknown option raises :class:`agentvm.InvalidInputError`.
    """
    native = _native.open_blocking(data_dir, llm, local_tools, definitions, max_tokens, scheduler)
    return AgentVm(native)


def connect(url: str, *, token: Optional[str] = None, timeout: Optional[float] = None) -> AgentVm:
    """Connects to an agentvm server (``ws://host:port/ws``); same API as a local runtime."""
    native = _native.connect_blocking(url, token, timeout)
    return AgentVm(native)


#: The blocking scheduler (``vm.scheduler`` of a blocking runtime).
Scheduler = SyncScheduler

__all__ = [
    "AgentVm",
    "Agent",
    "Scheduler",
    "open",
    "connect",
]

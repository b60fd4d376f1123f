"""The API: :class:`AgentVm` and its groups of typed helpers, asyncio. The blocking API
(:mod:`agentvm.sync`) is derived from these classes.

Every helper builds a protocol command (``{"type": "<name>_request", "data": {...}}``, see
docs/commands.md), sends it through the native runtime (the embedding layer) and returns part
of the response as plain Python data (dicts with the protocol's camelCase keys), typed with the
generated TypedDicts of :mod:`agentvm._protocol` (``ImageListItem``, ``SessionRecord``, ...).
"""

from __future__ import annotations

import builtins
import json
import os
import re
import time
from typing import TYPE_CHECKING, Any, AsyncIterator, Optional, Sequence, Union

from . import _native
from ._turn import Reply
from .events import Event, Subscription
from .scheduler import Scheduler

if TYPE_CHECKING:
    # Types only (annotations are not evaluated at run time).
    from . import _protocol as p
    from ._protocol import Content


__all__ = ["Agent", "AgentVm", "Event", "Server", "Subscription", "connect", "open"]


def _command(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"type": f"{name}_request", "data": {k: v for k, v in data.items() if v is not None}}


class _Group:
    __slots__ = ("_rt",)

    def __init__(self, rt: _native.Runtime) -> None:
        self._rt = rt

    async def _call(self, command: str, pick: Optional[str], /, **data: Any) -> Any:
        answer = await self._rt.request(_command(command, data))
        return answer if pick is None else answer.get(pick)


def _config(**fields: Any) -> dict[str, Any]:
    """An image config or definition: the keyword arguments in the protocol's names."""
    names = {"system_prompt": "systemPrompt", "mcp_servers": "mcpServers"}
    return {names.get(k, k): v for k, v in fields.items() if v is not None}



async def _every_page(page: Any, limit: Optional[int]) -> AsyncIterator[p.Message]:
    """Every message of a history, oldest first: ``page(limit=, after=)`` page after page,
    following ``nextCursor`` while ``hasMore``. One page is in memory at a time."""
    after: Optional[int] = None
    while True:
        answer = await page(limit=limit, after=after)
        for message in answer["messages"]:
            yield message
        following = answer.get("nextCursor")
        if not answer.get("hasMore") or following is None:
            return
        after = following

class Containers(_Group):
    """Containers: the isolation unit of one tenant."""

    async def create(self, container_id: str) -> str:
        """Gets or creates a container; returns its id."""
        return await self._call("container_create", "containerId", containerId=container_id)  # type: ignore[no-any-return]

    async def exists(self, container_id: str) -> bool:
        """Whether the container exists."""
        return bool(await self._call("container_get", "exists", containerId=container_id))

    async def list(self) -> builtins.list[str]:
        """The ids of the containers this runtime may see."""
        return await self._call("container_list", "containerIds")  # type: ignore[no-any-return]

    async def delete(self, container_id: str) -> bool:
        """Deletes a container and everything in it; False when it did not exist."""
        return bool(await self._call("container_delete", "deleted", containerId=container_id))


class Images(_Group):
    """Images: built agent configurations, each with its first session."""

    async def create(
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
    ) -> p.ImageListItem:
        """Creates an image and its first session (creating the container if missing)."""
        config = _config(
            name=name, description=description, system_prompt=system_prompt, model=model,
            tools=tools, mcp_servers=mcp_servers, definition=definition,
        )
        return await self._call("image_create", "record", containerId=container_id, config=config)  # type: ignore[no-any-return]

    async def build(self, container_id: str, definition_name: str, **config: Any) -> p.ImageListItem:
        """Builds an image from a registered definition (keyword args as in ``create``)."""
        return await self._call(  # type: ignore[no-any-return]
            "image_build", "record", containerId=container_id, definitionName=definition_name,
            config=_config(**config),
        )

    async def get(self, image_id: str) -> Optional[p.ImageListItem]:
        """An image record, or None when unknown."""
        answer = await self._rt.request({"type": "image_get_request", "data": {"imageId": image_id}})
        return answer.get("record")  # type: ignore[no-any-return]

    async def list(self, container_id: Optional[str] = None) -> builtins.list[p.ImageListItem]:
        """Images of one container, or of every visible one."""
        return await self._call("image_list", "records", containerId=container_id)  # type: ignore[no-any-return]

    async def update(
        self, image_id: str, *, name: Optional[str] = None, description: Optional[str] = None
    ) -> p.ImageListItem:
        """Renames or re-describes an image."""
        updates = _config(name=name, description=description)
        return await self._call("image_update", "record", imageId=image_id, updates=updates)  # type: ignore[no-any-return]

    async def delete(self, image_id: str) -> None:
        """Deletes an image with its sessions, messages and workdir."""
        await self._call("image_delete", None, imageId=image_id)

    async def run(self, image_id: str) -> p.ImageRunResponse:
        """Starts (or reuses) the image's agent: ``{imageId, agentId, reused}``."""
        return await self._call("image_run", None, imageId=image_id)  # type: ignore[no-any-return]

    async def stop(self, image_id: str) -> None:
        """Stops the image's agent (the image stays)."""
        await self._call("image_stop", None, imageId=image_id)

    async def messages(
        self,
        image_id: str,
        *,
        limit: Optional[int] = None,
        after: Optional[int] = None,
        before: Optional[int] = None,
    ) -> builtins.list[p.Message]:
        """A page of the stored history of the image's first session, oldest first (100
        messages unless ``limit``; ``after``/``before`` a ``nextCursor``)."""
        page = await self.messages_page(image_id, limit=limit, after=after, before=before)
        return page["messages"]

    async def messages_page(
        self,
        image_id: str,
        *,
        limit: Optional[int] = None,
        after: Optional[int] = None,
        before: Optional[int] = None,
    ) -> p.ImageMessagesResponse:
        """The same page with ``hasMore`` and ``nextCursor``, to read the next one."""
        return await self._call(  # type: ignore[no-any-return]
            "image_messages", None, imageId=image_id, limit=limit, after=after, before=before
        )

    async def history(self, image_id: str, *, page_size: Optional[int] = None) -> AsyncIterator[p.Message]:
        """Every message of the image's first session, oldest first, read a page at a time
        (``page_size`` messages per request, 100 unless given): ``async for m in ...``."""
        async for message in _every_page(
            lambda **page: self.messages_page(image_id, **page), page_size
        ):
            yield message


class Sessions(_Group):
    """Sessions: conversations on an image."""

    async def create(self, image_id: str, title: Optional[str] = None) -> p.SessionRecord:
        """Another conversation on an image."""
        return await self._call("session_create", "session", imageId=image_id, title=title)  # type: ignore[no-any-return]

    async def list(self, image_id: str) -> builtins.list[p.SessionRecord]:
        """The sessions of an image."""
        return await self._call("session_list", "sessions", imageId=image_id)  # type: ignore[no-any-return]

    async def get(self, session_id: str) -> Optional[p.SessionRecord]:
        """A session, or None when unknown."""
        return await self._call("session_get", "session", sessionId=session_id)  # type: ignore[no-any-return]

    async def update(self, session_id: str, title: Optional[str]) -> p.SessionRecord:
        """Sets (or clears) a session's title."""
        return await self._call("session_update", "session", sessionId=session_id, title=title)  # type: ignore[no-any-return]

    async def delete(self, session_id: str) -> None:
        """Deletes a session and its messages."""
        await self._call("session_delete", None, sessionId=session_id)

    async def resume(self, session_id: str) -> p.SessionResumeResponse:
        """Starts (or reuses) the session's agent."""
        return await self._call("session_resume", None, sessionId=session_id)  # type: ignore[no-any-return]

    async def messages(
        self,
        session_id: str,
        *,
        limit: Optional[int] = None,
        after: Optional[int] = None,
        before: Optional[int] = None,
    ) -> builtins.list[p.Message]:
        """A page of the session's history, oldest first (100 messages unless ``limit``;
        ``after``/``before`` a ``nextCursor``)."""
        page = await self.messages_page(session_id, limit=limit, after=after, before=before)
        return page["messages"]

    async def messages_page(
        self,
        session_id: str,
        *,
        limit: Optional[int] = None,
        after: Optional[int] = None,
        before: Optional[int] = None,
    ) -> p.SessionMessagesResponse:
        """The same page with ``hasMore`` and ``nextCursor``, to read the next one."""
        return await self._call(  # type: ignore[no-any-return]
            "session_messages", None, sessionId=session_id, limit=limit, after=after, before=before
        )

    async def history(self, session_id: str, *, page_size: Optional[int] = None) -> AsyncIterator[p.Message]:
        """Every message of the session, oldest first, read a page at a time (``page_size``
        messages per request, 100 unless given): ``async for m in ...``."""
        async for message in _every_page(
            lambda **page: self.messages_page(session_id, **page), page_size
        ):
            yield message


class Definitions(_Group):
    """Definitions: named agent templates that images are built from."""

    async def register(
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
        d = _config(
            name=name, description=description, system_prompt=system_prompt, model=model,
            tools=tools, mcp_servers=mcp_servers,
        )
        return bool(await self._call("definition_register", "replaced", definition=d))

    async def list(self) -> builtins.list[p.Definition]:
        """Registered definitions."""
        return await self._call("definition_list", "definitions")  # type: ignore[no-any-return]

    async def get(self, name: str) -> Optional[p.Definition]:
        """A definition by name, or None."""
        return await self._call("definition_get", "definition", name=name)  # type: ignore[no-any-return]


class Agents(_Group):
    """Running agents and the messages sent to them."""

    async def send(
        self,
        content: Optional[Content] = None,
        *,
        image_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> p.MessageSendResponse:
        """Sends a user message (starting the agent if needed) and returns at once with
        ``{imageId, agentId, sessionId, messageId}``; the reply streams as events."""
        return await self._call(  # type: ignore[no-any-return]
            "message_send", None, content=content if content is not None else "",
            imageId=image_id, agentId=agent_id, sessionId=session_id,
        )

    async def interrupt(
        self,
        *,
        image_id: Optional[str] = None,
        agent_id: Optional[str] = None,
        session_id: Optional[str] = None,
    ) -> p.AgentInterruptResponse:
        """Stops the current turn (a success when the image is offline)."""
        return await self._call(  # type: ignore[no-any-return]
            "agent_interrupt", None, imageId=image_id, agentId=agent_id, sessionId=session_id
        )

    async def get(self, agent_id: str) -> p.AgentGetResponse:
        """``{agentId?, containerId?, exists}``."""
        return await self._call("agent_get", None, agentId=agent_id)  # type: ignore[no-any-return]

    async def list(self, container_id: Optional[str] = None) -> builtins.list[p.AgentInfo]:
        """Running agents, of one container or all."""
        return await self._call("agent_list", "agents", containerId=container_id)  # type: ignore[no-any-return]

    async def destroy(self, agent_id: str) -> bool:
        """Stops an agent; False when it was not running."""
        return bool(await self._call("agent_destroy", "success", agentId=agent_id))

    async def destroy_all(self, container_id: str) -> None:
        """Stops every agent of a container."""
        await self._call("agent_destroy_all", None, containerId=container_id)

    async def ask(
        self,
        content: Content,
        *,
        image_id: Optional[str] = None,
        session_id: Optional[str] = None,
        timeout: Optional[float] = None,
    ) -> str:
        """Sends a message and waits for the whole reply; returns its text. ``timeout``
        (seconds) raises :class:`TimeoutError` when the reply is not complete by then.

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
            record = await Images(self._rt).get(image_id)
            if record is None:
                raise _native.NotFoundError(f"Image not found: {image_id}")
            session_id = record["sessionId"]
        reply = Reply()
        deadline = None if timeout is None else time.monotonic() + timeout
        with await Subscription(self._rt, {"sessions": [{"sessionId": session_id}]}).ready() as events:
            await self.send(content, image_id=image_id, session_id=None if image_id else session_id)
            while True:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                event = await events.next(left)
                if event is None:
                    if events.closed:
                        raise _native.CancelledError("the runtime was closed before the reply ended")
                    raise TimeoutError(f"no complete reply within {timeout} s")
                if reply.feed(event):
                    return reply.text()

    async def start(self, image_id: str) -> "Agent":
        """Runs an image's agent and returns a handle on it."""
        run = await Images(self._rt).run(image_id)
        record = await Images(self._rt).get(image_id)
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

    async def send(self, content: Content) -> p.MessageSendResponse:
        """Sends a user message; the reply streams as events."""
        return await Agents(self._rt).send(content, image_id=self.image_id)

    async def ask(self, content: Content, timeout: Optional[float] = None) -> str:
        """Sends a message and returns the whole reply's text; raises like
        :meth:`Agents.ask` when the turn ends in error."""
        return await Agents(self._rt).ask(content, image_id=self.image_id, timeout=timeout)

    async def interrupt(self) -> p.AgentInterruptResponse:
        """Stops the current turn."""
        return await Agents(self._rt).interrupt(image_id=self.image_id)

    async def stop(self) -> None:
        """Stops the agent (the image and its history stay)."""
        await Images(self._rt).stop(self.image_id)

    async def messages(self) -> builtins.list[p.Message]:
        """The stored history."""
        return await Images(self._rt).messages(self.image_id)

    def events(self, after: Optional[int] = None) -> Subscription:
        """The session's events from now (or replayed after the cursor ``after``)."""
        return _subscribe(self._rt, self.session_id, after, False, False)

    def __repr__(self) -> str:
        return f"<Agent {self.agent_id} image={self.image_id} session={self.session_id}>"


def _subscribe(
    rt: _native.Runtime, session_id: Optional[str], after: Optional[int], all_sessions: bool, global_events: bool
) -> Subscription:
    options: dict[str, Any] = {"allSessions": all_sessions, "global": global_events}
    if session_id is not None:
        topic: dict[str, Any] = {"sessionId": session_id}
        if after is not None:
            topic["afterCursor"] = after
        options["sessions"] = [topic]
    return Subscription(rt, options)


class Server:
    """agentvm's server running in this process (from :meth:`AgentVm.serve`)."""

    def __init__(self, rt: _native.Runtime, served: dict[str, Any]) -> None:
        self._rt = rt
        #: ``http://host:port``.
        self.url: str = served["url"]
        #: ``ws://host:port/ws``, for :func:`agentvm.connect`.
        self.ws_url: str = served["wsUrl"]
        #: The port it listens on (the one picked when 0 was asked for).
        self.port: int = served["port"]
        #: The host it listens on.
        self.host: str = self.url.removeprefix("http://").rsplit(":", 1)[0]

    async def close(self) -> None:
        """Stops accepting, lets running turns finish (up to a grace period), writes
        everything out. The runtime stays open."""
        await self._rt.stop_serving(self.port)

    def __repr__(self) -> str:
        return f"<agentvm Server {self.url}>"


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
        self.scheduler = Scheduler(native)

    async def request(self, command: dict[str, Any], *, timeout: Optional[float] = None) -> dict[str, Any]:
        """Runs a raw command ``{"type": "<name>_request", "data": {...}}`` and returns the
        response ``{"type": "<name>_response", "data": {...}}``; ``timeout`` (seconds) raises
        :class:`CancelledError` when it passes first (what the command did stays done)."""
        data = await self.native.request(command, timeout)
        name = str(command.get("type", "")).removesuffix("_request")
        return {"type": f"{name}_response", "data": data}

    def events(
        self,
        session_id: Optional[str] = None,
        *,
        after: Optional[int] = None,
        all_sessions: bool = False,
        global_events: bool = False,
    ) -> Subscription:
        """Subscribes at once (so nothing caused afterwards is missed; remote: once
        ``await sub.ready()`` returns); iterate with ``async for``. One session's events
        (replayed after ``after``), every session's, and/or the global topic (lifecycle
        events)."""
        return _subscribe(self.native, session_id, after, all_sessions, global_events)

    async def serve(self, host: str = "127.0.0.1", port: int = 0, *, auth: str = "auto") -> Server:
        """Serves this runtime (WebSocket ``/ws``, REST ``/v1``, ``/health``, ``/metrics``)
        in-process, with the scheduler's routes when it was opened with one. ``auth``:
        ``auto`` (tokens required off loopback), ``required`` or ``disabled``."""
        served = await self.native.serve(json.dumps({"addr": f"{host}:{port}", "auth": auth}))
        return Server(self.native, served)

    def create_token(
        self, containers: Optional[builtins.list[str]] = None, *, all: bool = False
    ) -> str:
        """Creates an access token for ``containers``, or for every container with
        ``all=True`` (said explicitly); shown once. Local runtimes only."""
        if not self.native.is_local:
            raise _native.InvalidInputError(
                "create_token needs a local runtime (agentvm.open), not a connected one"
            )
        data: dict[str, object] = {"all": True} if all else {"containers": containers}
        command = {"type": "token_create_request", "data": data}
        return _native.run_blocking(self.native.request(command))["token"]  # type: ignore[no-any-return]

    async def close(self) -> None:
        """Stops every agent (partial replies are stored) and writes everything out; closes
        the connection of a remote runtime. Subscriptions and servers of this runtime end."""
        await self.native.close()

    async def __aenter__(self) -> "AgentVm":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def is_local(self) -> bool:
        """Whether the runtime runs in this process."""
        return self.native.is_local

    def __repr__(self) -> str:
        return repr(self.native)


def _camel(name: str) -> str:
    return re.sub(r"_([a-z])", lambda m: m.group(1).upper(), name)


async def open(
    data_dir: Optional[Union[str, os.PathLike[str]]] = None,
    *,
    llm: Optional[Union[str, dict[str, Any]]] = None,
    local_tools: bool = False,
    definitions: Optional[builtins.list[dict[str, Any]]] = None,
    max_tokens: Optional[int] = None,
    scheduler: Optional[dict[str, Any]] = None,
    limits: Optional[dict[str, int]] = None,
) -> AgentVm:
    """Opens a local runtime. The arguments are the embedding layer's open options (the same
    names in every binding: ``dataDir``, ``llm``, ``localTools``, ``definitions``,
    ``maxTokens``, ``scheduler``, ``limits``), checked there.

    ``data_dir``: where everything is kept (None: in memory). ``llm``: ``"mock"``,
    ``"mock:<scenario>"``, ``"env"`` (the ``LLM_*`` variables), ``"anthropic"``,
    ``"openai"``, or a dict with ``provider`` (anthropic | openai | mock), ``url``,
    ``api_key``, ``model``, ``max_retries``, ``timeout_secs`` (snake_case or camelCase);
    None reads the environment when ``LLM_PROVIDER`` is set. ``local_tools``: run the
    built-in tools on this machine (trusted agents only). ``max_tokens``: the reply length
    limit per model call. ``scheduler``: embeds the Docker sandbox scheduler
    (``vm.scheduler``) with these options, the core's ``SchedulerOptions``: ``nodes``
    (``[{"nodeId", "apiEndpoint", ...}]``), ``heartbeatIntervalMs``, ``offlineAfterMs``,
    ``sweepIntervalMs``, ``dockerTimeoutMs``, ``defaultExecTimeoutMs``, ``maxOutputBytes``,
    ``internalToken``, ``background``, ... (snake_case accepted). ``limits``: input limits in
    bytes (``maxNameBytes``, ``maxDescriptionBytes``, ``maxSystemPromptBytes``,
    ``maxConfigBytes``, ``maxContentBytes``). An unknown option raises
    :class:`agentvm.InvalidInputError` naming it.
    """
    if isinstance(llm, dict):
        llm = {_camel(k): v for k, v in llm.items()}
    options = {
        "dataDir": None if data_dir is None else os.fspath(data_dir),
        "llm": llm,
        "localTools": local_tools or None,
        "definitions": definitions,
        "maxTokens": max_tokens,
        "scheduler": scheduler,
        "limits": limits,
    }
    native = await _native.open(json.dumps({k: v for k, v in options.items() if v is not None}))
    return AgentVm(native)


async def connect(
    url: Union[str, Sequence[str]], *, token: Optional[str] = None, timeout: Optional[float] = None
) -> AgentVm:
    """Connects to an agentvm server (``ws://host:port/ws``); same API as a local runtime.
    A list of URLs (the servers of one cluster) connects to the first that answers and fails
    over to the next in turn when the connection drops. ``timeout`` (seconds) bounds the
    connection and each request."""
    options: dict[str, Any] = {"token": token}
    if isinstance(url, str):
        options["url"] = url
    else:
        options["urls"] = list(url)
    if timeout is not None:
        options["timeoutMs"] = max(0, round(timeout * 1000))
    native = await _native.connect(json.dumps({k: v for k, v in options.items() if v is not None}))
    return AgentVm(native)

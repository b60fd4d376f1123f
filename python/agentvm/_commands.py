"""The protocol's commands, built once for the async and the sync API.

Each function returns ``(command, pick)``: the command as the wire's JSON
(``{"type": "image_get_request", "data": {...}}``) and which part of the
response's ``data`` the typed helper returns (``"*"``: all of it).
"""

from __future__ import annotations

from typing import Any, Optional, Union

Command = tuple[dict[str, Any], Optional[str]]
Content = Union[str, list[dict[str, Any]]]


def _cmd(_name: str, pick: Optional[str], **data: Any) -> Command:
    return (
        {"type": f"{_name}_request", "data": {k: v for k, v in data.items() if v is not None}},
        pick,
    )


def image_config(
    name: Optional[str] = None,
    description: Optional[str] = None,
    system_prompt: Optional[str] = None,
    model: Optional[str] = None,
    tools: Optional[list[str]] = None,
    mcp_servers: Optional[dict[str, Any]] = None,
    definition: Optional[Union[str, dict[str, Any]]] = None,
) -> dict[str, Any]:
    config = {
        "name": name,
        "description": description,
        "systemPrompt": system_prompt,
        "model": model,
        "tools": tools,
        "mcpServers": mcp_servers,
        "definition": definition,
    }
    return {k: v for k, v in config.items() if v is not None}


# containers
def container_create(container_id: str) -> Command:
    return _cmd("container_create", "containerId", containerId=container_id)


def container_exists(container_id: str) -> Command:
    return _cmd("container_get", "exists", containerId=container_id)


def container_list() -> Command:
    return _cmd("container_list", "containerIds")


def container_delete(container_id: str) -> Command:
    return _cmd("container_delete", "deleted", containerId=container_id)


# images
def image_create(container_id: str, config: dict[str, Any]) -> Command:
    return _cmd("image_create", "record", containerId=container_id, config=config)


def image_build(container_id: str, definition_name: str, config: dict[str, Any]) -> Command:
    return _cmd(
        "image_build",
        "record",
        containerId=container_id,
        definitionName=definition_name,
        config=config,
    )


def image_get(image_id: str) -> Command:
    return _cmd("image_get", "record", imageId=image_id)


def image_list(container_id: Optional[str] = None) -> Command:
    return _cmd("image_list", "records", containerId=container_id)


def image_update(image_id: str, name: Optional[str], description: Optional[str]) -> Command:
    updates = {k: v for k, v in {"name": name, "description": description}.items() if v is not None}
    return _cmd("image_update", "record", imageId=image_id, updates=updates)


def image_delete(image_id: str) -> Command:
    return _cmd("image_delete", "imageId", imageId=image_id)


def image_run(image_id: str) -> Command:
    return _cmd("image_run", "*", imageId=image_id)


def image_stop(image_id: str) -> Command:
    return _cmd("image_stop", "imageId", imageId=image_id)


def image_messages(image_id: str) -> Command:
    return _cmd("image_messages", "messages", imageId=image_id)


# sessions
def session_create(image_id: str, title: Optional[str]) -> Command:
    return _cmd("session_create", "session", imageId=image_id, title=title)


def session_list(image_id: str) -> Command:
    return _cmd("session_list", "sessions", imageId=image_id)


def session_get(session_id: str) -> Command:
    return _cmd("session_get", "session", sessionId=session_id)


def session_update(session_id: str, title: Optional[str]) -> Command:
    return _cmd("session_update", "session", sessionId=session_id, title=title)


def session_delete(session_id: str) -> Command:
    return _cmd("session_delete", "sessionId", sessionId=session_id)


def session_resume(session_id: str) -> Command:
    return _cmd("session_resume", "*", sessionId=session_id)


def session_messages(session_id: str) -> Command:
    return _cmd("session_messages", "messages", sessionId=session_id)


# definitions
def definition_register(definition: dict[str, Any]) -> Command:
    return _cmd("definition_register", "replaced", definition=definition)


def definition_list() -> Command:
    return _cmd("definition_list", "definitions")


def definition_get(name: str) -> Command:
    return _cmd("definition_get", "definition", name=name)


def definition(
    name: str,
    description: Optional[str] = None,
    system_prompt: Optional[str] = None,
    model: Optional[str] = None,
    tools: Optional[list[str]] = None,
    mcp_servers: Optional[dict[str, Any]] = None,
) -> dict[str, Any]:
    d = {
        "name": name,
        "description": description,
        "systemPrompt": system_prompt,
        "model": model,
        "tools": tools,
        "mcpServers": mcp_servers,
    }
    return {k: v for k, v in d.items() if v is not None}


# agents and messages
def message_send(
    content: Content,
    image_id: Optional[str],
    agent_id: Optional[str],
    session_id: Optional[str],
) -> Command:
    return _cmd(
        "message_send",
        "*",
        content=content,
        imageId=image_id,
        agentId=agent_id,
        sessionId=session_id,
    )


def agent_interrupt(
    image_id: Optional[str], agent_id: Optional[str], session_id: Optional[str]
) -> Command:
    return _cmd("agent_interrupt", "*", imageId=image_id, agentId=agent_id, sessionId=session_id)


def agent_get(agent_id: str) -> Command:
    return _cmd("agent_get", "*", agentId=agent_id)


def agent_list(container_id: Optional[str]) -> Command:
    return _cmd("agent_list", "agents", containerId=container_id)


def agent_destroy(agent_id: str) -> Command:
    return _cmd("agent_destroy", "success", agentId=agent_id)


def agent_destroy_all(container_id: str) -> Command:
    return _cmd("agent_destroy_all", "containerId", containerId=container_id)


# tokens
def token_create(containers: Optional[list[str]]) -> Command:
    # `containers` is sent even when None: null asks for an operator token.
    return ({"type": "token_create_request", "data": {"containers": containers}}, "token")


#: The kind of a failed turn, from the provider's error code (``errorCode`` of ``error_received``);
#: any other code (``rate_limit``, ``overloaded``, ``timeout``, ``network``, ``mock_error``, ...)
#: or none is ``unavailable``: the model could not give an answer now.
TURN_ERROR_KINDS = {
    "not_configured": "unavailable",
    "authentication": "unauthorized",
    "invalid_request": "invalid_input",
}


def turn_error(message: str, error_code: Optional[str]) -> Exception:
    """The exception of a turn that ended in error: the class of its kind (the one mapping in
    ``_native``), the message, and the provider's code as ``error_code``."""
    from . import _native

    kind = TURN_ERROR_KINDS.get(error_code or "", "unavailable")
    try:
        _native._raise_error(kind, message)
    except _native.AgentVmError as e:
        e.error_code = error_code
        return e
    raise AssertionError("unreachable: _raise_error always raises")


class Reply:
    """Collects a reply from a turn's events."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.error_message: Optional[str] = None
        self.error_code: Optional[str] = None

    def feed(self, event: dict[str, Any]) -> bool:
        """Takes one event; True once the turn ended. Raises the turn's error when it ended in
        ``conversation_end {reason: "error"}``; an interrupted turn ends without error (the
        text so far is the reply)."""
        t = event["type"]
        data = event.get("data") or {}
        if t == "text_delta":
            self.parts.append(data["text"])
        elif t == "error_received":
            self.error_message = data.get("message")
            self.error_code = data.get("errorCode")
        elif t == "error_message" and self.error_message is None:
            self.error_message = data.get("content")
            self.error_code = data.get("errorCode")
        elif t == "conversation_end":
            if data.get("reason") == "error":
                raise turn_error(self.error_message or "the turn ended in error", self.error_code)
            return True
        return False

    def text(self) -> str:
        return "".join(self.parts)

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


def reply_text(event: dict[str, Any], parts: list[str]) -> bool:
    """Collects a reply from its events; True once the turn ended."""
    t = event["type"]
    if t == "text_delta":
        parts.append(event["data"]["text"])
    return bool(t == "conversation_end")

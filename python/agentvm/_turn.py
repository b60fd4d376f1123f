"""A turn's reply collected from its events, for ``ask()``."""

from __future__ import annotations

from typing import Any, Optional

from . import _native


def turn_error(message: str, kind: Optional[str], error_code: Optional[str]) -> Exception:
    """The exception of a turn that ended in error: the class of its kind (``errorKind`` of
    ``error_received``, decided by the core; ``unavailable`` when the event carries none), the
    message, and the provider's code as ``error_code``."""
    try:
        _native._raise_error(kind or "unavailable", message)
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
        self.error_kind: Optional[str] = None

    def _error(self, data: dict[str, Any], message: Optional[str]) -> None:
        self.error_message = message
        self.error_code = data.get("errorCode")
        self.error_kind = data.get("errorKind")

    def feed(self, event: dict[str, Any]) -> bool:
        """Takes one event; True once the turn ended. Raises the turn's error when it ended in
        ``conversation_end {reason: "error"}``; an interrupted turn ends without error (the
        text so far is the reply)."""
        t = event["type"]
        data = event.get("data") or {}
        if t == "text_delta":
            self.parts.append(data["text"])
        elif t == "error_received":
            self._error(data, data.get("message"))
        elif t == "error_message" and self.error_message is None:
            self._error(data, data.get("content"))
        elif t == "conversation_end":
            if data.get("reason") == "error":
                message = self.error_message or "the turn ended in error"
                raise turn_error(message, self.error_kind, self.error_code)
            return True
        return False

    def text(self) -> str:
        return "".join(self.parts)

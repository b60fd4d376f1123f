"""Event subscriptions: :class:`Subscription`, embed's event stream taken in batches.

Each event is the protocol's JSON as a dict (``type``, ``data``, ``timestamp``, ``source``,
``category``, ``intent``, ``context``) plus ``cursor`` for events of a topic. A subscriber
that falls behind is resumed from its last cursor without losing or repeating an event; what
the replay log can no longer fill (or events that are never replayed: ``global``, sessions seen
only through ``all_sessions``) is one ``{"type": "subscription_gap", "data": {"topics": [...],
"lastCursors": {...}}}`` event, and the stream goes on.
"""

from __future__ import annotations

import json
from collections import deque
from typing import Any, AsyncIterator, Optional, cast

from . import _native

Event = dict[str, Any]

#: Events taken from the native stream per call.
BATCH = 256


class Subscription:
    """A stream of events, subscribed when it is made (on a remote runtime, once
    :meth:`ready` returns): ``async for event in sub``, or a batch at a time with
    :meth:`next_batch`; :meth:`close` ends it (from any thread)."""

    def __init__(self, rt: _native.Runtime, options: dict[str, Any]) -> None:
        self._starting: Optional[_native.Call] = rt.subscribe(json.dumps(options))
        self._stream: Optional[_native.EventStream] = None
        self._pending: deque[Event] = deque()
        self._closed = False

    async def ready(self) -> "Subscription":
        """Waits until the subscription is in place (at once on a local runtime): events
        caused afterwards are never missed."""
        if self._starting is not None:
            starting, self._starting = self._starting, None
            self._stream = await starting
            if self._closed:
                self._stream.close()
        return self

    async def next_batch(self, max: int = BATCH, timeout: Optional[float] = None) -> Optional[list[Event]]:
        """Up to ``max`` events, waiting at most ``timeout`` seconds (None: until one comes)
        for the first; None when the time ran out or the subscription ended."""
        if self._pending:
            n = min(max, len(self._pending))
            return [self._pending.popleft() for _ in range(n)]
        if self._closed:
            return None
        if self._stream is None:
            await self.ready()
        assert self._stream is not None
        return cast(Optional[list[Event]], await self._stream.next_batch(max, timeout))

    async def batches(self, max: int = BATCH) -> AsyncIterator[list[Event]]:
        """The events a batch at a time, until the subscription ends."""
        while (batch := await self.next_batch(max)) is not None:
            yield batch

    async def next(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event; None when ``timeout`` seconds passed first or the subscription
        ended."""
        if not self._pending:
            batch = await self.next_batch(BATCH, timeout)
            if not batch:
                return None
            self._pending.extend(batch)
        return self._pending.popleft()

    def next_blocking(self, timeout: Optional[float] = None) -> Optional[Event]:
        """:meth:`next`, waiting on this thread (GIL released, Ctrl-C honoured)."""
        return _native.run_blocking(self.next(timeout))  # type: ignore[no-any-return]

    def __aiter__(self) -> "Subscription":
        return self

    async def __anext__(self) -> Event:
        if self._pending:
            return self._pending.popleft()
        batch = await self.next_batch(BATCH)
        if not batch:
            raise StopAsyncIteration
        self._pending.extend(batch)
        return self._pending.popleft()

    def close(self) -> None:
        """Ends the subscription; iteration stops (a waiting one too)."""
        self._closed = True
        self._pending.clear()
        if self._stream is not None:
            self._stream.close()

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called, or the stream ended (its runtime closed)."""
        return self._closed or (self._stream is not None and self._stream.ended and not self._pending)

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

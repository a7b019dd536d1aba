"""Streams that resume: a bounded in-memory event store for streamable HTTP (SEP-1699).

With an event store the SDK's streamable HTTP transport (2025-11-25 sessions) gives every SSE
event an id, opens each stream with a priming event (an id, no data, and ``retry``: how long a
client waits before it reconnects), and answers a client that reconnects with ``Last-Event-ID``
by replaying what it missed, then the rest of the stream live: a connection dropped during a
long call loses none of its progress and not its result.

:class:`BoundedEventStore` keeps the newest events, up to a count and a size, the oldest forgotten
first; a client that comes back after its events were forgotten is answered as for an unknown id.
The SDK hands one store to every session and names a stream by its request id, which sessions
share ("1", "2", …): :class:`SessionScope` tells the store whose each event is, so a resumed stream
replays its own session's events only. Event ids are unguessable.
"""

from __future__ import annotations

import collections
import secrets
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp_types.jsonrpc import JSONRPCMessage

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

#: The newest events kept, all sessions together: a long video's progress is a few hundred.
MAX_EVENTS = 4096
#: Their size, as sent (a result with a preview is a few hundred kB).
MAX_BYTES = 32 << 20
#: How long a client waits before it reconnects a dropped stream (the priming event's ``retry``).
RETRY_MS = 2000

_HEADER = b"mcp-session-id"


@dataclass
class _Session:
    """The session of one HTTP request: from its header, or (the request that opens a session)
    from the response's header, learnt as the response starts."""

    id: str | None


#: The session of the request being served; the tasks it starts (the session's own message
#: router, started by the request that opens it) share the same object.
_SESSION: ContextVar[_Session | None] = ContextVar("unison_mcp_http_session", default=None)


def _session_id() -> str | None:
    session = _SESSION.get()
    return session.id if session is not None else None


class SessionScope:
    """ASGI middleware: the session of each request, for :class:`BoundedEventStore`."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        header = dict(scope.get("headers") or []).get(_HEADER)
        session = _Session(header.decode("latin-1") if header else None)

        async def learn(message: Message) -> None:
            if message["type"] == "http.response.start" and session.id is None:
                found = dict(message.get("headers") or []).get(_HEADER)
                if found:
                    session.id = found.decode("latin-1")
            await send(message)

        token = _SESSION.set(session)
        try:
            await self.app(scope, receive, learn)
        finally:
            _SESSION.reset(token)


@dataclass(frozen=True)
class _Stored:
    session: str | None
    stream: StreamId
    message: JSONRPCMessage | None  # None: a stream's priming event
    size: int


class BoundedEventStore(EventStore):
    """The SDK's ``EventStore``, in memory, bounded by ``max_events`` and ``max_bytes``."""

    def __init__(self, max_events: int = MAX_EVENTS, max_bytes: int = MAX_BYTES):
        if max_events < 1 or max_bytes < 1:
            raise ValueError(f"max_events={max_events}, max_bytes={max_bytes}: both must be 1 or more")
        self.max_events = max_events
        self.max_bytes = max_bytes
        self._events: collections.OrderedDict[EventId, _Stored] = collections.OrderedDict()  # oldest first
        self._bytes = 0

    # No __len__: the SDK tests the store for truth (`if self._event_store`), and an empty one
    # would read as none.
    @property
    def count(self) -> int:
        """Events kept."""
        return len(self._events)

    @property
    def size(self) -> int:
        """Bytes of the events kept, as sent."""
        return self._bytes

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = secrets.token_urlsafe(12)
        size = len(message.model_dump_json(by_alias=True, exclude_unset=True)) if message is not None else 0
        self._events[event_id] = _Stored(_session_id(), stream_id, message, size)
        self._bytes += size
        while len(self._events) > self.max_events or (self._bytes > self.max_bytes and len(self._events) > 1):
            _, old = self._events.popitem(last=False)
            self._bytes -= old.size
        return event_id

    async def replay_events_after(
        self, last_event_id: EventId, send_callback: EventCallback
    ) -> StreamId | None:
        """Send the events of ``last_event_id``'s stream that came after it; ``None`` when the id is
        unknown, forgotten, or another session's."""
        last = self._events.get(last_event_id)
        if last is None or last.session != _session_id():
            return None
        ids = list(self._events)
        later = [
            (event_id, stored)
            for event_id in ids[ids.index(last_event_id) + 1 :]
            if (stored := self._events[event_id]).stream == last.stream and stored.session == last.session
        ]
        for event_id, stored in later:
            if stored.message is not None:
                await send_callback(EventMessage(stored.message, event_id))
        return last.stream


__all__ = ["MAX_BYTES", "MAX_EVENTS", "RETRY_MS", "BoundedEventStore", "SessionScope"]

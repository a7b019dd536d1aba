"""stdio with an answer for every line: a filter in front of the SDK's stdio reader.

The SDK's stdio transport (``mcp.server.stdio.stdio_server``, mcp 2.3) validates each line
against its JSON-RPC models; a line that fails is handed to the dispatcher as an exception, which
logs it at DEBUG and sends nothing back (``shared/jsonrpc_dispatcher.py``). A message whose ``id``
is not a string or a whole number (an object, ``true``, ``1.5``) validates as a *notification*,
which is never answered either. Either way the client waits until its own timeout.

:class:`AnsweringStdin` sits where the SDK reads stdin (``stdio_server(stdin=...)``): lines the SDK
accepts pass through unchanged; a line it would drop is answered here with a JSON-RPC error (parse
error ``-32700`` when the line is not JSON, invalid request ``-32600`` when it is JSON but not a
message the SDK takes), with the request's ``id`` when one can be read and ``null`` otherwise,
and the next line is read. The error goes out through the SDK's own write stream, so it is framed
and serialised by the same writer as every other message. Blank lines are skipped: they carry no
message to answer. See docs/stdio.md for the SDK behaviour this works around.
"""

import json
import logging
import sys
from collections.abc import AsyncIterator
from typing import Any

import anyio
import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from engine.errors import shown

log = logging.getLogger(__name__)

#: Longest run of digits read as a number; Python refuses to convert more than 4300, and no id,
#: count or size in this protocol comes near it.
MAX_NUMBER_DIGITS = 100
#: Longest id or params shown in an answer to a malformed line.
_SHOWN_JSON_CHARS = 40


class _HugeNumber:
    """Stands in for a number too long to convert, so the rest of the message can still be read."""


def _read_number(text: str) -> int | _HugeNumber:
    return int(text) if len(text) <= MAX_NUMBER_DIGITS else _HugeNumber()


def _read_float(text: str) -> float | _HugeNumber:
    return float(text) if len(text) <= MAX_NUMBER_DIGITS else _HugeNumber()


def _valid_id(value: Any) -> bool:
    """A JSON-RPC id as MCP allows it: a string or a whole number (``true`` is not a number)."""
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def refusal(line: str) -> types.JSONRPCError | None:
    """The error that answers ``line``, or ``None`` when the SDK takes it as it is.

    The SDK's own validation decides what it takes; the line is then parsed once more, leniently,
    only to read an ``id`` for the answer and to say what was wrong.
    """
    try:
        message = types.jsonrpc_message_adapter.validate_json(line, by_name=False)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        sdk_reason: str | None = _first_reason(exc)
    else:
        # Taken, but an ``id`` the models could not read turned a request into a notification.
        if isinstance(message, types.JSONRPCNotification):
            raw = _lenient(line)
            if isinstance(raw, dict) and "id" in raw and not _valid_id(raw["id"]):
                return _error(
                    types.INVALID_REQUEST,
                    f"Invalid request: id {_shown(raw['id'])} must be a string or a whole number",
                )
        return None

    raw = _lenient(line)
    if raw is None:
        return _error(types.PARSE_ERROR, f"Parse error: the line is not JSON ({sdk_reason})")
    if isinstance(raw, list):
        return _error(
            types.INVALID_REQUEST,
            "Invalid request: one JSON-RPC message per line (batches are not supported)",
        )
    if not isinstance(raw, dict):
        return _error(types.INVALID_REQUEST, "Invalid request: a JSON-RPC message is a JSON object")
    request_id = raw.get("id") if _valid_id(raw.get("id")) else None
    if "params" in raw and not isinstance(raw["params"], dict):
        reason = f"params must be an object, not {_shown(raw['params'])}"
    elif "id" in raw and request_id is None and "method" in raw:
        reason = f"id {_shown(raw['id'])} must be a string or a whole number"
    elif sdk_reason and sdk_reason.startswith("Invalid JSON: "):
        # Python's reader took it, the SDK's strict one did not: a lone UTF-16 surrogate in a
        # string, or a number out of range.
        reason = (
            sdk_reason.removeprefix("Invalid JSON: ")
            + " (strict JSON: no lone UTF-16 surrogates, numbers in range)"
        )
    else:
        reason = sdk_reason or "not a JSON-RPC 2.0 request, notification or response"
    return _error(types.INVALID_REQUEST, f"Invalid request: {reason}", request_id)


def _lenient(line: str) -> Any:
    """The line as Python's JSON reader sees it (lone surrogates and long numbers kept), or None."""
    try:
        return json.loads(line, parse_int=_read_number, parse_float=_read_float)
    except ValueError:
        return None


def _first_reason(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        for err in errors():
            # Several union members fail at once; the JSON reader's own complaint is the clearest.
            if err.get("type") == "json_invalid":
                return str(err.get("msg", ""))
        first = errors()[:1]
        if first:
            where = ".".join(str(p) for p in first[0].get("loc", ())[1:])
            return f"{where}: {first[0].get('msg')}" if where else str(first[0].get("msg"))
    return str(exc).splitlines()[0]


def _shown(value: Any) -> str:
    if isinstance(value, _HugeNumber):
        return f"(a number over {MAX_NUMBER_DIGITS} digits)"
    # As JSON (an id of true reads "true"), cut like every value a message shows.
    return shown(json.dumps(value, default=lambda v: "…"), _SHOWN_JSON_CHARS, quoted=False)


def _error(code: int, message: str, request_id: str | int | None = None) -> types.JSONRPCError:
    return types.JSONRPCError(jsonrpc="2.0", id=request_id, error=types.ErrorData(code=code, message=message))


class AnsweringStdin:
    """The lines of stdin the SDK can take; every other line is answered with a JSON-RPC error.

    Iterated by the SDK's stdin reader in place of its own stdin; :meth:`answer_through` gives
    it the write stream to answer on once ``stdio_server`` has made it (a bad line read before
    that waits for it).
    """

    def __init__(self, binary: Any = None):
        # Bytes, decoded here as the SDK decodes its own stdin (UTF-8, undecodable bytes replaced).
        self._file = anyio.wrap_file(binary if binary is not None else sys.stdin.buffer)
        self._write_stream: Any = None
        self._ready = anyio.Event()
        self.answered = 0

    def answer_through(self, write_stream: Any) -> None:
        self._write_stream = write_stream
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _lines(self) -> AsyncIterator[str]:
        async for raw in self._file:
            line = raw.decode("utf-8", errors="replace")
            if not line.strip():
                continue
            error = refusal(line)
            if error is None:
                yield line
                continue
            self.answered += 1
            log.info("answered a malformed line with %d: %s", error.error.code, error.error.message)
            await self._ready.wait()
            await self._write_stream.send(SessionMessage(error))


async def serve_stdio(server: MCPServer) -> None:
    """``server.run_stdio_async()`` with :class:`AnsweringStdin` in front of the SDK's reader.

    The same steps as the SDK's method (its stdio transport, its low-level server's run); only
    stdin is ours. stdout is still claimed by the SDK (fd 1 points at stderr while serving).
    """
    stdin = AnsweringStdin()
    # No public accessor for the low-level server in mcp 2.3: run_stdio_async uses this attribute.
    lowlevel = server._lowlevel_server
    async with stdio_server(stdin=stdin) as (read_stream, write_stream):  # type: ignore[arg-type]
        stdin.answer_through(write_stream)
        await lowlevel.run(read_stream, write_stream, lowlevel.create_initialization_options())


__all__ = ["AnsweringStdin", "refusal", "serve_stdio"]

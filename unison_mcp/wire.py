"""What one incoming JSON-RPC message must be before the SDK reads it: the rules both transports apply.

A line on stdio (:mod:`unison_mcp.stdio`) and a POST body on HTTP (:mod:`unison_mcp.http`) go
through :func:`refusal`, which returns the JSON-RPC error that answers the message, or ``None``
when the SDK may take it as it is. The checks run cheapest first, and nothing recursive runs
before the depth is known:

1. size: at most :data:`MAX_MESSAGE_BYTES`, checked by the transports as they read (they read no
   more than that; :func:`too_large` answers);
2. UTF-8: strict; a byte that does not decode is a parse error naming its offset (never replaced:
   that would silently change the payload);
3. nesting: at most :data:`MAX_DEPTH` arrays/objects inside one another, found by a linear scan
   (:func:`outline`) that also reads the top-level ``id`` without decoding anything else;
4. JSON, each key once per object: Python's reader (safe at this depth), huge numbers kept as
   placeholders so the rest of the message can still be read;
5. the SDK's own validation; what it would drop or take as a notification by mistake is answered.

A refused message is always answered, with its ``id`` when :func:`outline` reads one (a string or
a whole number, once at the top level), else ``null``, as JSON-RPC asks for an invalid request.
See docs/stdio.md for the SDK behaviour this works around and the rules as a table.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import mcp_types as types
from mcp.server.transport_security import DEFAULT_MAX_REQUEST_BODY_SIZE

from engine.errors import shown

#: Largest message, in bytes, on either transport: the SDK's own HTTP body limit (4 MiB). The
#: largest request the default limits allow (two 4000-character prompts and eight 4096-character
#: paths, every character escaped as a surrogate pair) is under 1 MiB.
MAX_MESSAGE_BYTES: int = DEFAULT_MAX_REQUEST_BODY_SIZE
#: Most arrays/objects inside one another. A tool call needs 4 (message, params, arguments,
#: margins); Python's reader recurses once per level, the SDK's stops at 200.
MAX_DEPTH = 64
#: Longest run of digits read as a number; Python refuses to convert more than 4300, and no id,
#: count or size in this protocol comes near it.
MAX_NUMBER_DIGITS = 100
#: Longest id or params shown in an answer to a malformed message.
_SHOWN_JSON_CHARS = 40

# A string (to its closing quote, or to the end when it has none) or a bracket. Possessive
# quantifiers: the scan never backtracks, so it stays linear in the length of the text.
_TOKEN = re.compile(r'"(?:[^"\\]++|\\.)*+"?|[\[\]{}]', re.S)
_COLON = re.compile(r"\s*:\s*")
_ID_VALUE = re.compile(r'"(?:[^"\\]++|\\.)*+"|-?\d++(?![.eE\d])')
_OBJECT_START = re.compile(r"\s*\{")


@dataclass(frozen=True)
class Outline:
    """What a linear scan of a message's text tells without decoding it."""

    #: Deepest nesting of arrays and objects (brackets inside strings not counted).
    depth: int
    #: The top-level ``id`` when it is a string or a whole number given once, else ``None``.
    request_id: str | int | None


def outline(text: str) -> Outline:
    """Nesting depth and top-level ``id`` of ``text``, in one pass over its strings and brackets.

    Linear and non-recursive, so it is safe on any input, JSON or not (a cut-off prefix too).
    """
    depth = deepest = 0
    in_object = _OBJECT_START.match(text) is not None  # only an object's keys are read
    ids: list[str | int | None] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in ("]", "}"):
            depth -= 1
        elif depth == 1 and in_object and token == '"id"':
            colon = _COLON.match(text, match.end())
            if colon is not None:
                ids.append(_id_at(text, colon.end()))
    request_id = ids[0] if len(ids) == 1 else None  # an id given twice is no id
    return Outline(deepest, request_id)


def _id_at(text: str, pos: int) -> str | int | None:
    value = _ID_VALUE.match(text, pos)
    if value is None:
        return None
    token = value.group()
    if not token.startswith('"'):
        return int(token) if len(token.lstrip("-")) <= MAX_NUMBER_DIGITS else None
    try:
        read = json.loads(token)  # one string: nothing to recurse into
    except ValueError:
        return None
    return read if _valid_id(read) else None


def too_large(prefix: bytes, size: int, complete: bool) -> types.JSONRPCError:
    """The answer to a message over :data:`MAX_MESSAGE_BYTES`, of which ``prefix`` was read
    (the ``id`` is taken from it when it comes early); ``size`` is exact when ``complete``."""
    request_id = outline(prefix.decode("utf-8", errors="replace")).request_id if prefix else None
    said = f"{size:,} bytes" if complete else f"over {size:,} bytes"
    return _error(
        types.INVALID_REQUEST,
        f"Invalid request: the message is {said}; at most {MAX_MESSAGE_BYTES:,} bytes are accepted",
        request_id,
    )


class _HugeNumber:
    """Stands in for a number too long to convert, so the rest of the message can still be read."""


class _DuplicateKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _read_number(text: str) -> int | _HugeNumber:
    return int(text) if len(text) <= MAX_NUMBER_DIGITS else _HugeNumber()


def _read_float(text: str) -> float | _HugeNumber:
    return float(text) if len(text) <= MAX_NUMBER_DIGITS else _HugeNumber()


def _each_key_once(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON readers disagree on which of two equal keys counts (and a proxy may check the other
    # one), so no message may hold one twice.
    found = dict(pairs)
    if len(found) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return found


def _valid_id(value: Any) -> bool:
    """A JSON-RPC id as MCP allows it: a string (one that can be written back: no lone UTF-16
    surrogate) or a whole number (``true`` is not a number)."""
    if isinstance(value, str):
        return value.isascii() or _encodable(value)
    return isinstance(value, int) and not isinstance(value, bool)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def refusal(message: bytes | str) -> types.JSONRPCError | None:
    """The error that answers ``message`` (one line or one body, already within the size bound),
    or ``None`` when the SDK takes it as it is."""
    # 1. UTF-8, strictly.
    if isinstance(message, bytes):
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError as exc:
            request_id = outline(message.decode("utf-8", errors="replace")).request_id
            byte = message[exc.start]
            return _error(
                types.PARSE_ERROR,
                f"Parse error: invalid UTF-8 at byte {exc.start} (0x{byte:02x}); JSON text is UTF-8",
                request_id,
            )
    else:
        text = message

    # 2. Nesting, before anything recursive reads the text.
    shape = outline(text)
    if shape.depth > MAX_DEPTH:
        return _error(
            types.INVALID_REQUEST,
            f"Invalid request: arrays/objects nested {shape.depth:,} deep; at most {MAX_DEPTH} levels "
            "are accepted",
            shape.request_id,
        )

    # 3. JSON, each key once.
    try:
        raw = json.loads(
            text, parse_int=_read_number, parse_float=_read_float, object_pairs_hook=_each_key_once
        )
    except _DuplicateKey as exc:
        return _error(
            types.INVALID_REQUEST,
            f"Invalid request: the key {_shown(exc.key)} appears twice in one object; each key may "
            "appear once",
            shape.request_id,
        )
    except ValueError as exc:
        return _error(types.PARSE_ERROR, f"Parse error: the message is not JSON ({exc})", shape.request_id)

    # 4. The SDK's own validation: what it takes passes through unchanged.
    try:
        taken = types.jsonrpc_message_adapter.validate_json(text, by_name=False)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return _invalid(raw, _first_reason(exc))
    # Taken, but an ``id`` the models could not read turned a request into a notification.
    misread = isinstance(taken, types.JSONRPCNotification) and isinstance(raw, dict) and "id" in raw
    if misread and not _valid_id(raw["id"]):
        return _error(
            types.INVALID_REQUEST,
            f"Invalid request: id {_shown(raw['id'])} must be a string or a whole number",
        )
    return None


def _invalid(raw: Any, sdk_reason: str) -> types.JSONRPCError:
    """JSON that the SDK's models do not take, answered with what was wrong."""
    if isinstance(raw, list):
        return _error(
            types.INVALID_REQUEST,
            "Invalid request: one JSON-RPC message at a time (batches are not supported)",
        )
    if not isinstance(raw, dict):
        return _error(types.INVALID_REQUEST, "Invalid request: a JSON-RPC message is a JSON object")
    request_id = raw.get("id") if _valid_id(raw.get("id")) else None
    if "params" in raw and not isinstance(raw["params"], dict):
        reason = f"params must be an object, not {_shown(raw['params'])}"
    elif sdk_reason.startswith("Invalid JSON: "):
        # Python's reader took it, the SDK's strict one did not: a lone UTF-16 surrogate in a
        # string, or a number out of range.
        reason = (
            sdk_reason.removeprefix("Invalid JSON: ")
            + " (strict JSON: no lone UTF-16 surrogates, numbers in range)"
        )
    elif "id" in raw and request_id is None and "method" in raw:
        reason = f"id {_shown(raw['id'])} must be a string or a whole number"
    else:
        reason = sdk_reason or "not a JSON-RPC 2.0 request, notification or response"
    return _error(types.INVALID_REQUEST, f"Invalid request: {reason}", request_id)


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


__all__ = [
    "MAX_DEPTH",
    "MAX_MESSAGE_BYTES",
    "MAX_NUMBER_DIGITS",
    "Outline",
    "outline",
    "refusal",
    "too_large",
]

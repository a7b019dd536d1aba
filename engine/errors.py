"""The engine's named errors.

Every failure a caller can act on is one of these; the MCP layer maps them to tool errors in one
function (``unison_mcp.errors``). Messages are written for the reader who has to fix the request:
they name the field, the value received and the rule. A received value is always shown through
:func:`shown`, cut to a readable length with its full size said, so no message grows with its input
(a 10 MB prompt is refused in a few hundred characters, in the tool result and the log alike).
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Mapping
from itertools import islice
from typing import Any, TypeVar

from pydantic import ValidationError

#: Longest value a message shows (its start … its end), the full size said beside it.
SHOWN_CHARS = 200
#: Inside a container: the items shown, the characters shown of each string, the levels shown.
_ITEMS = 6
_ITEM_CHARS = 40
_LEVELS = 3
#: A whole number longer than this many bits is said by its size (Python refuses to write out
#: one of more than 4300 digits, and none is worth reading).
_NUMBER_BITS = 2000
_BRACKETS: dict[type, tuple[str, str]] = {
    Mapping: ("{", "}"),
    list: ("[", "]"),
    tuple: ("(", ")"),
    set: ("{", "}"),
    frozenset: ("{", "}"),
}


def shown(value: object, limit: int = SHOWN_CHARS, *, quoted: bool = True) -> str:
    """``value`` as a message shows it: at most about ``limit`` characters, with its full size
    said when it is cut, e.g. ``'aaaa…aaaa' (100,000 characters)``.

    A string or a path keeps its start and its end (the start says where a path is, the end names
    the file), quoted as ``repr`` quotes it (``quoted=False``: as it is). Anything else is a bounded
    ``repr``: a few items of a container and its size (``[1, 1, …] (1,000,000 items)``),
    a few levels deep, a number too long to write said by its size. Only the part shown is ever
    copied, so showing a 10 MB value costs no more than showing a short one.
    """
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        cut = len(value) > limit
        text = _cut(value, limit) if cut else value
        if quoted:
            text = repr(text)
        if len(text) > limit + 2:  # escapes (\x00, \u2028...) made the repr longer than the value
            text, cut = _cut(text, limit + 2), True
        return f"{text} ({len(value):,} characters)" if cut else text
    text = _brief(value, _LEVELS)
    if len(text) > limit:
        text = _cut(text, limit)
    size = _size(value)
    return f"{text} ({size})" if size else text


def _cut(text: str, limit: int) -> str:
    """``text`` in ``limit`` characters: its start, an ellipsis, its end."""
    head = (limit - 1) // 2
    tail = limit - 1 - head
    return f"{text[:head]}…{text[len(text) - tail :] if tail else ''}"


def _brief(value: object, levels: int) -> str:
    """A ``repr`` of ``value`` that reads a bounded part of it: :data:`_ITEMS` items per container,
    :data:`_ITEM_CHARS` characters per string, :data:`_LEVELS` levels (no sorting, no recursion
    into what is not shown)."""
    if isinstance(value, (str, bytes, bytearray)):
        more = "…" if len(value) > _ITEM_CHARS else ""
        return repr(value[:_ITEM_CHARS]) + more
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > _NUMBER_BITS:
            return f"<a whole number of about {int(value.bit_length() * math.log10(2)) + 1:,} digits>"
        return repr(value)
    if isinstance(value, (Mapping, list, tuple, set, frozenset)):
        opening, closing = _BRACKETS[next(t for t in _BRACKETS if isinstance(value, t))]
        if levels <= 0:
            return f"{opening}…{closing}"
        pairs = islice(value.items(), _ITEMS) if isinstance(value, Mapping) else None
        items = (
            [f"{_brief(k, levels - 1)}: {_brief(v, levels - 1)}" for k, v in pairs]
            if pairs is not None
            else [_brief(v, levels - 1) for v in islice(value, _ITEMS)]
        )
        if len(value) > _ITEMS:
            items.append("…")
        return opening + ", ".join(items) + closing
    return repr(value)


def _size(value: object) -> str:
    """How big a cut container is (``1,000,000 items``), or ``""`` when all of it shows."""
    if isinstance(value, (bytes, bytearray)) and len(value) > _ITEM_CHARS:
        return f"{len(value):,} bytes"
    if isinstance(value, (Mapping, list, tuple, set, frozenset)) and len(value) > _ITEMS:
        return f"{len(value):,} items"
    return ""


class UnisonError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "error"

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message and attributes, not by calling __init__ again (whose arguments
        # differ per class): an error crosses processes intact (a pool replica to the server).
        return (_rebuild, (type(self), str(self), dict(self.__dict__)))


def _rebuild(cls: type[UnisonError], message: str, state: dict[str, Any]) -> UnisonError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class InvalidRequest(UnisonError):
    """A parameter or plan breaks a rule (size, frame count, task, role...)."""

    code = "invalid_request"

    def __init__(self, message: str, *, field: str | None = None, value: Any = None, rule: str | None = None):
        self.field = field
        self.value = value
        self.rule = rule
        super().__init__(message)

    @classmethod
    def for_field(cls, field: str, value: Any, rule: str) -> InvalidRequest:
        return cls(f"{field}={shown(value)}: {rule}", field=field, value=value, rule=rule)


class InputRefused(UnisonError):
    """An input file cannot be used: missing, outside the allowed roots, corrupt, too large, a bomb."""

    code = "input_refused"

    def __init__(self, message: str, *, path: str | None = None):
        #: The path refused, as a message shows it (cut to :data:`SHOWN_CHARS`).
        self.path = None if path is None else shown(path, quoted=False)
        super().__init__(message)


class Busy(UnisonError):
    """The job queue is full."""

    code = "busy"

    def __init__(self, ahead: int, capacity: int):
        self.ahead = ahead
        self.capacity = capacity
        super().__init__(
            f"busy: {ahead} jobs ahead (queue holds {capacity}); try again when a job has finished"
        )


class Cancelled(UnisonError):
    """The job was cancelled; nothing was written."""

    code = "cancelled"

    def __init__(self, message: str = "the job was cancelled; nothing was written"):
        super().__init__(message)


class OutOfMemory(UnisonError):
    """The accelerator ran out of memory; caches were freed and the server keeps serving."""

    code = "out_of_memory"


class ModelError(UnisonError):
    """Weights cannot be found, loaded or combined (missing adapter, mismatched projector...)."""

    code = "model_error"


class ServerConfigError(ModelError):
    """The server's own setup is wrong (a device this machine lacks, weights it cannot find or fetch).

    Not the caller's doing: whoever runs the server fixes it, so it is reported apart from a bad
    argument. A :class:`ModelError`, so code that catches those catches it too.
    """

    code = "server_config_error"


class HubUnreachable(ServerConfigError):
    """Weights had to be fetched and the hub (or the network on the way) could not be reached.

    Not a wrong setting: the same configuration works once the network is back, or offline with
    the weights already here. Reported apart so the advice is about the network, not the setup.
    """

    code = "hub_unreachable"


class ServerSettingError(ServerConfigError, InvalidRequest):
    """A server setting breaks a rule (an unknown device name, a switch this machine cannot run).

    An :class:`InvalidRequest` naming the setting, as the configuration checks raise it, that is
    reported as the server's configuration, not as the caller's argument.
    """


class OutputUnavailable(UnisonError):
    """The server cannot write its output directory: missing and not creatable, read-only, not
    writable for it, replaced while it ran, or its disk failing.

    The server's own problem, not the call's: the same call fails the same way until whoever runs
    the server fixes it, so it is reported apart (the message names the cause and the path).
    """

    code = "output_unavailable"

    def __init__(self, message: str, *, path: str | None = None):
        #: The output directory, as a message shows it.
        self.path = None if path is None else shown(path, quoted=False)
        super().__init__(message)


class OutOfSpace(OutputUnavailable):
    """The output directory's file system has no room for what a job writes (checked before the
    model work against the job's expected size, and when a write fails with ENOSPC/EDQUOT)."""

    code = "out_of_space"


class WorkerLost(UnisonError):
    """The process running the job (a pool replica) stopped before it answered: the job is lost,
    the server keeps serving, and the same call again runs on a worker that is up."""

    code = "worker_lost"

    def __init__(self, message: str = "the worker running this job stopped; retry"):
        super().__init__(message)


class OutputStalled(UnisonError):
    """Writing into the output directory took longer than ``results.write_timeout_s``: the disk
    (often a network mount) is not answering. Nothing of the job was written; the server serves on."""

    code = "output_stalled"


class ShuttingDown(Cancelled):
    """The server is stopping: the job was cancelled (running) or never started (queued)."""

    code = "shutting_down"

    def __init__(self, message: str = "the server is shutting down; nothing was written"):
        super().__init__(message)


class PlannerError(UnisonError):
    """The planner's output could not be turned into a valid plan."""

    code = "planner_error"


M = TypeVar("M")


def validated(model: type[M], /, **data: Any) -> M:
    """``model(**data)``, with pydantic's errors turned into one :class:`InvalidRequest` naming the field.

    An unknown field is named with the closest known one ("num_frame: unknown; did you mean
    num_frames?"); a wrong type or a broken bound says the rule pydantic reports.
    """
    try:
        return model(**data)
    except ValidationError as exc:
        raise invalid_request(exc, getattr(model, "model_fields", {})) from None


def invalid_request(exc: Any, fields: Any = ()) -> InvalidRequest:
    """The :class:`InvalidRequest` for a pydantic ``ValidationError`` (its first error).

    The field's name is the caller's too (an unknown key can be any length): it is shown cut, like
    the value.
    """
    err = exc.errors(include_url=False)[0]
    field = shown(".".join(str(p) for p in err["loc"]), quoted=False) or "request"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        # A name far longer than every known one is close to none of them (and is not compared).
        close = difflib.get_close_matches(name, list(fields), n=1) if len(name) <= SHOWN_CHARS else []
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(fields)}"
        return InvalidRequest(f"{field}: unknown{hint}", field=field, value=value, rule="unknown field")
    if err["type"] == "missing":
        # pydantic's input for a missing field is the whole request: nothing to show.
        return InvalidRequest(f"{field}: {err['msg']}", field=field, rule=err["msg"])
    return InvalidRequest.for_field(field, value, err["msg"])

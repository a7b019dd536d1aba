"""The engine's named errors.

Every failure a caller can act on is one of these; the MCP layer maps them to tool errors in one
function (``unison_mcp.errors``). Messages are written for the reader who has to fix the request:
they name the field, the value received and the rule.
"""

from __future__ import annotations

import difflib
from typing import Any, TypeVar


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
        return cls(f"{field}={value!r}: {rule}", field=field, value=value, rule=rule)


class InputRefused(UnisonError):
    """An input file cannot be used: missing, outside the allowed roots, corrupt, too large, a bomb."""

    code = "input_refused"

    def __init__(self, message: str, *, path: str | None = None):
        self.path = path
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


class ServerSettingError(ServerConfigError, InvalidRequest):
    """A server setting breaks a rule (an unknown device name, a switch this machine cannot run).

    An :class:`InvalidRequest` naming the setting, as the configuration checks raise it, that is
    reported as the server's configuration, not as the caller's argument.
    """


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
    from pydantic import ValidationError

    try:
        return model(**data)
    except ValidationError as exc:
        raise invalid_request(exc, getattr(model, "model_fields", {})) from None


def invalid_request(exc: Any, fields: Any = ()) -> InvalidRequest:
    """The :class:`InvalidRequest` for a pydantic ``ValidationError`` (its first error)."""
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "request"
    value = err.get("input")
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), list(fields), n=1)
        hint = f"; did you mean {close[0]}?" if close else f"; known: {', '.join(fields)}"
        return InvalidRequest(f"{field}: unknown{hint}", field=field, value=value, rule="unknown field")
    return InvalidRequest.for_field(field, value, err["msg"])

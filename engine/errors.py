"""The engine's named errors.

Every failure a caller can act on is one of these; the MCP layer maps them to tool errors in one
function (``unison_mcp.errors``). Messages are written for the reader who has to fix the request:
they name the field, the value received and the rule.
"""

from __future__ import annotations

from typing import Any


class UnisonError(Exception):
    """Base of every error the engine raises on purpose."""

    code = "error"


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


class PlannerError(UnisonError):
    """The planner's output could not be turned into a valid plan."""

    code = "planner_error"

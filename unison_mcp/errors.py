"""Errors cross into MCP here, in one function.

Every engine error becomes the SDK's ``ToolError``: the call returns ``isError`` with a message a
model can act on, and the SDK logs it at INFO without a traceback. Anything else is a bug: its
traceback is logged here and the client gets a generic message (internal details stay on the
server). Either way the server keeps serving.

The command line reports the same errors with the same hints (:func:`describe_error`), so this
module imports the SDK only when a ``ToolError`` is made (``--help`` stays instant).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engine.errors import (
    Busy,
    Cancelled,
    InputRefused,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    PlannerError,
    ServerConfigError,
    ShuttingDown,
    UnisonError,
)

if TYPE_CHECKING:
    from mcp.server.mcpserver.exceptions import ToolError

log = logging.getLogger(__name__)

#: What the caller can do next, per error type (appended to the engine's own message); the
#: first class that matches wins, so subclasses come before their bases.
_HINTS: dict[type[UnisonError], str] = {
    ServerConfigError: "This is the server's setup, not the call: whoever runs the server fixes it "
    "(`unison-mcp doctor` on the server says what is missing).",
    ShuttingDown: "Call again when the server is back.",
    InvalidRequest: "Fix that argument and call again.",
    InputRefused: "Pass a file the server may read, or the unison://outputs/<name> URI of an earlier result.",
    Busy: "",  # the message already says when to retry
    Cancelled: "",
    OutOfMemory: "Retry with a smaller width/height, fewer frames or fewer steps.",
    ModelError: "The server's model configuration needs fixing: run `unison-mcp doctor` on the server.",
    PlannerError: "Rephrase the request, or call `generate` with an explicit task.",
}


def describe_error(exc: BaseException, *, tool: str = "tool", cli: bool = False) -> str:
    """What the client is told about ``exc``: an engine error's message with its code and hint,
    anything else a generic line (its details stay in the server's log).

    ``cli``: for the command line, where a bad argument's message already names the flag (the
    "call again" hint is for a calling model).
    """
    if isinstance(exc, UnisonError):
        hint = next((h for cls, h in _HINTS.items() if isinstance(exc, cls)), "")
        if cli and hint == _HINTS[InvalidRequest]:
            hint = ""
        message = str(exc).rstrip()
        # The code leads so a model can branch on it; some messages already start with it ("busy: ...").
        text = message if message.startswith(f"{exc.code}:") else f"{exc.code}: {message}"
        if hint:
            text = f"{text}{'' if text.endswith(('.', '!', '?')) else '.'} {hint}"
        return text
    return (
        f"internal_error: {tool} failed unexpectedly ({type(exc).__name__}); the details are in the "
        "server's log. The server keeps serving: check the request and try again."
    )


def tool_error(exc: BaseException, *, tool: str = "tool") -> ToolError:
    """The ``ToolError`` to raise for ``exc`` (engine errors keep their message; others are logged)."""
    from mcp.server.mcpserver.exceptions import ToolError

    if isinstance(exc, ToolError):
        return exc
    if not isinstance(exc, UnisonError):
        log.error("%s failed unexpectedly", tool, exc_info=(type(exc), exc, exc.__traceback__))
    return ToolError(describe_error(exc, tool=tool))

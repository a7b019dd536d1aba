"""Errors cross into MCP here, in one function, and nothing the server says grows with its input.

Every engine error becomes the SDK's ``ToolError``: the call returns ``isError`` with a message a
model can act on, and the SDK logs it at INFO without a traceback. Anything else is a bug: its
traceback is logged here and the client gets a generic message (internal details stay on the
server). Either way the server keeps serving.

The command line reports the same errors (:func:`describe_error` with ``cli=True``), with hints
written for the person who ran the command rather than for a client of a server. This module
imports the SDK only when a ``ToolError`` or an ``MCPError`` is made (``--help`` stays instant).

What the SDK itself echoes is kept short here too: :func:`short_rpc_errors` cuts the message and
data of every JSON-RPC error (an unknown method or resource URI comes back in them), and
:class:`ShortLogArgs` cuts the arguments of the SDK's log records (it logs an unknown tool's name
and a refused URI whole). Values are cut by :func:`engine.errors.shown`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from engine.errors import (
    SHOWN_CHARS,
    Busy,
    Cancelled,
    HubUnreachable,
    InputRefused,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    OutOfSpace,
    OutputStalled,
    OutputUnavailable,
    PlannerError,
    ServerConfigError,
    ShuttingDown,
    UnisonError,
    WorkerLost,
    shown,
)

if TYPE_CHECKING:
    from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
    from mcp.server.mcpserver.exceptions import ToolError

log = logging.getLogger(__name__)

#: Longest message an error or a log line carries; a longer one (a library's error text quoted in
#: a model error) keeps its start and end. Every value in it is already cut to SHOWN_CHARS.
MAX_MESSAGE_CHARS = 4000

#: Longest text argument a log record of the SDK keeps whole: one of our messages (a few hundred
#: characters) stays whole, a client's value (a tool name, a URI) is cut.
LOG_ARG_CHARS = 2 * SHOWN_CHARS

#: What to do next, per error type: (over MCP, for the calling model; on the command line, for
#: the person who ran it). The first class that matches wins, so subclasses come before their bases.
_HINTS: dict[type[UnisonError], tuple[str, str]] = {
    HubUnreachable: (
        "The server could not reach the model hub to fetch weights: this is its network, not the call; "
        "whoever runs the server connects it, or fetches the weights where the hub is reachable "
        "(`unison-mcp doctor` on the server says which are missing).",
        "The network or the hub could not be reached: check the connection (and HTTPS_PROXY or "
        "HF_ENDPOINT if you set them), then run it again. To work offline, set HF_HUB_OFFLINE=1 with "
        "the weights already in the cache, give local paths, or try everything with `--preset tiny`.",
    ),
    ServerConfigError: (
        "This is the server's setup, not the call: whoever runs the server fixes it "
        "(`unison-mcp doctor` on the server says what is missing).",
        "Fix the setting it names; `unison-mcp doctor` checks the whole setup and says what is missing.",
    ),
    OutOfSpace: (
        "This is the server's disk, not the call: the same call fails the same way until whoever runs "
        "the server frees space there (a smaller size, fewer frames or fewer candidates need less).",
        "Free space on that disk, or write elsewhere with --output-dir (a smaller --width/--height or "
        "fewer --num-frames need less).",
    ),
    OutputUnavailable: (
        "This is the server's output directory, not the call: the same call fails the same way until "
        "whoever runs the server fixes what the message names.",
        "Fix what the message names (create the folder, make it writable, remount it read-write), or "
        "write elsewhere with --output-dir.",
    ),
    WorkerLost: (
        "Nothing about the call was wrong: call again and a worker that is up runs it.",
        "Run it again.",
    ),
    ShuttingDown: ("Call again when the server is back.", ""),
    OutputStalled: (
        "The server's output disk did not answer in time: this is the server's storage, not the call; "
        "retry later (nothing was written).",
        "The output directory's disk did not answer in time (a network mount?): check it, or give "
        "writes longer with --write-timeout-s.",
    ),
    InvalidRequest: ("Fix that argument and call again.", ""),  # the CLI's message names the flag
    InputRefused: (
        "Pass a file the server may read, or the unison://outputs/<name> URI of an earlier result.",
        "Give the path of an image or video file on this machine.",
    ),
    Busy: ("", ""),  # the message already says when to retry
    Cancelled: ("", ""),
    OutOfMemory: (
        "Retry with a smaller width/height, fewer frames or fewer steps.",
        "Retry with a smaller --width/--height, fewer --num-frames or fewer --steps.",
    ),
    ModelError: (
        "The server's model configuration needs fixing: run `unison-mcp doctor` on the server.",
        "The model configuration needs fixing: `unison-mcp doctor` says which weights or settings.",
    ),
    PlannerError: (
        "Rephrase the request, or call `generate` with an explicit task.",
        "Rephrase the request, or run `unison-mcp generate` with an explicit --task.",
    ),
}


def hint_for(exc: UnisonError, *, cli: bool = False) -> str:
    """What to do about ``exc``: for a calling model, or (``cli``) for the person at the command line."""
    hints = next((h for cls, h in _HINTS.items() if isinstance(exc, cls)), ("", ""))
    return hints[1] if cli else hints[0]


def describe_error(exc: BaseException, *, tool: str = "tool", cli: bool = False) -> str:
    """What the client is told about ``exc``: an engine error's message with its code and hint,
    anything else a generic line (its details stay in the server's log).

    ``cli``: for the command line, whose hints speak to the person who ran the command (and whose
    bad-argument messages already name the flag).
    """
    if isinstance(exc, UnisonError):
        hint = hint_for(exc, cli=cli)
        message = shown(str(exc).rstrip(), MAX_MESSAGE_CHARS, quoted=False)
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


# ---------------------------------------------------------------------------------------------
# What the SDK echoes: JSON-RPC errors and its log lines


async def short_rpc_errors(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: a JSON-RPC error's message and data are cut like any message.

    The SDK puts what the client sent into some errors whole: an unknown method in ``data``, an
    unknown resource URI in the message and in ``data.uri``. Everything else passes untouched.
    """
    from mcp.shared.exceptions import MCPError

    try:
        return await call_next(ctx)
    except MCPError as exc:
        error = exc.error
        echoed = _long_texts(error.data)
        if not echoed and len(error.message) <= MAX_MESSAGE_CHARS:
            raise
        message = error.message
        for text in echoed:  # "Unknown resource: <uri>": the value the data holds, cut in place
            message = message.replace(text, shown(text))
        data = (
            {k: _short(v) for k, v in error.data.items()}
            if isinstance(error.data, Mapping)
            else _short(error.data)
        )
        message = shown(message, MAX_MESSAGE_CHARS, quoted=False)
        raise MCPError(code=error.code, message=message, data=data) from exc


def _long_texts(data: Any) -> list[str]:
    """The long strings of an error's data (itself, or the values of an object)."""
    values = data.values() if isinstance(data, Mapping) else [data]
    return [v for v in values if isinstance(v, str) and len(v) > SHOWN_CHARS]


def _short(value: Any) -> Any:
    return shown(value, quoted=False) if isinstance(value, str) else value


class _Shown:
    """A log argument that formats as :func:`shown` does (``%s``: as it is, ``%r``: quoted), cut
    only if the record is ever formatted."""

    __slots__ = ("value",)

    def __init__(self, value: str | bytes):
        self.value = value

    def __str__(self) -> str:
        return shown(self.value, LOG_ARG_CHARS, quoted=False)

    def __repr__(self) -> str:
        return shown(self.value, LOG_ARG_CHARS)


class ShortLogArgs(logging.Filter):
    """Cuts each long text argument of a log record (a tool name, a URI) to :data:`LOG_ARG_CHARS`,
    so no log line grows with the client's input.

    A logger's filter runs before any handler sees the record, so every handler (stderr, a test's
    capture) gets the short line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(_short_arg(a) for a in record.args)
        elif isinstance(record.msg, str) and not record.args and len(record.msg) > MAX_MESSAGE_CHARS:
            record.msg = shown(record.msg, MAX_MESSAGE_CHARS, quoted=False)
        return True


def _short_arg(value: object) -> object:
    return _Shown(value) if isinstance(value, (str, bytes)) and len(value) > LOG_ARG_CHARS else value


_SHORT_LOG_ARGS = ShortLogArgs()


def shorten_sdk_logs() -> None:
    """Put :class:`ShortLogArgs` on every logger of the MCP SDK (idempotent).

    The SDK's loggers are made when its modules are imported; a filter must sit on the logger that
    makes the record (a parent's filters do not see its children's records).
    """
    names = [n for n in logging.Logger.manager.loggerDict if n == "mcp" or n.startswith("mcp.")]
    for name in names:
        logging.getLogger(name).addFilter(_SHORT_LOG_ARGS)

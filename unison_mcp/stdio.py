"""stdio with an answer for every line: a filter in front of the SDK's stdio reader.

The SDK's stdio transport (``mcp.server.stdio.stdio_server``, mcp 2.3) validates each line
against its JSON-RPC models; a line that fails is handed to the dispatcher as an exception, which
logs it at DEBUG and sends nothing back (``shared/jsonrpc_dispatcher.py``). A message whose ``id``
is not a string or a whole number (an object, ``true``, ``1.5``) validates as a *notification*,
which is never answered either. Either way the client waits until its own timeout. Its reader
also holds a whole line, however long, and Python's JSON reader, run on a deeply nested one,
ends the process with a ``RecursionError``.

:class:`AnsweringStdin` sits where the SDK reads stdin (``stdio_server(stdin=...)``): each line is
read with a size cap and checked by :func:`unison_mcp.wire.refusal` (the rules HTTP applies too:
size, strict UTF-8, nesting depth, each key once, then the SDK's own validation). A line that
passes goes to the SDK unchanged; any other is answered here with a JSON-RPC error, with the
request's ``id`` when one can be read and ``null`` otherwise, and the next line is read. The error
goes out through the SDK's own write stream, so it is framed and serialised by the same writer as
every other message. Blank lines are skipped: they carry no message to answer. See docs/stdio.md.
"""

import logging
import sys
from collections.abc import AsyncIterator
from typing import Any, BinaryIO

import anyio
import mcp_types as types
from mcp.server.mcpserver import MCPServer
from mcp.server.stdio import stdio_server
from mcp.shared.message import SessionMessage

from .wire import MAX_MESSAGE_BYTES, refusal, too_large

log = logging.getLogger(__name__)

#: Bytes read at a time while the rest of an over-long line is skipped.
_SKIP_CHUNK = 1 << 16


class AnsweringStdin:
    """The lines of stdin the SDK can take; every other line is answered with a JSON-RPC error.

    Iterated by the SDK's stdin reader in place of its own stdin; :meth:`answer_through` gives
    it the write stream to answer on once ``stdio_server`` has made it (a bad line read before
    that waits for it). A line is read with a cap of :data:`~unison_mcp.wire.MAX_MESSAGE_BYTES`:
    the rest of a longer one is read in chunks and dropped, so no line makes the reader hold more.
    """

    def __init__(self, binary: BinaryIO | None = None):
        self._file = binary if binary is not None else sys.stdin.buffer
        self._write_stream: Any = None
        self._ready = anyio.Event()
        self.answered = 0

    def answer_through(self, write_stream: Any) -> None:
        self._write_stream = write_stream
        self._ready.set()

    def __aiter__(self) -> AsyncIterator[str]:
        return self._lines()

    async def _readline(self, limit: int) -> bytes:
        # abandon_on_cancel: a read blocked on an idle client must not hold up the server's exit.
        return await anyio.to_thread.run_sync(self._file.readline, limit, abandon_on_cancel=True)

    async def _lines(self) -> AsyncIterator[str]:
        while raw := await self._readline(MAX_MESSAGE_BYTES + 1):
            if len(raw) > MAX_MESSAGE_BYTES and not raw.endswith(b"\n"):
                size = len(raw) + await self._skip_rest_of_line()
                await self._answer(too_large(raw, size, complete=True))
                continue
            if not raw.strip():
                continue
            error = refusal(raw)
            if error is None:
                yield raw.decode("utf-8")  # refusal decoded it strictly already
            else:
                await self._answer(error)

    async def _skip_rest_of_line(self) -> int:
        """Read to the end of the line, a chunk at a time, keeping nothing; the bytes skipped."""
        skipped = 0
        while chunk := await self._readline(_SKIP_CHUNK):
            if chunk.endswith(b"\n"):
                return skipped + len(chunk.rstrip(b"\r\n"))
            skipped += len(chunk)
        return skipped

    async def _answer(self, error: types.JSONRPCError) -> None:
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


__all__ = ["AnsweringStdin", "serve_stdio"]

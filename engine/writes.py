"""Writing bytes into the output directory so that a stalled disk never holds the server.

Files are encoded in memory first (:mod:`engine.media`); only then does anything touch the
disk, and only here: plain ``os`` calls (``open``, ``write``, ``fsync``, ``replace``), each of
which releases Python's interpreter lock while it waits, run on a worker thread of their own with
a time limit. A disk that stops answering (a frozen filesystem, a hung network mount) then
blocks that thread alone: the event loop, the other requests and the signal handlers run on,
and the job fails after ``timeout_s`` with :class:`~engine.errors.OutputStalled`. The stuck
thread is abandoned (a daemon: it never keeps the process alive); if its call ever returns, it
removes the temporary file it was writing.

Before this, PyAV wrote the MP4 itself and held the lock while blocked on the disk: the whole
server froze, SIGTERM included (issue 22).

The functions, from the lowest: :func:`limited` (any call, on a thread, with the limit),
:func:`write_new` (a new file with these bytes, flushed to disk), :func:`place` (temporary
names renamed to final ones, the directory flushed), :func:`remove` (best effort, also limited).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from .errors import OutputStalled

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Bytes per ``os.write`` call: small enough that a slow disk shows progress, large enough to
#: cost nothing (a 10 MB video is 10 calls).
CHUNK = 1 << 20


def limited(
    fn: Callable[[], T], *, timeout_s: float, what: str, cleanup: Callable[[], None] | None = None
) -> T:
    """``fn()`` on a worker thread: its result or its exception, or :class:`OutputStalled` when it
    has not returned within ``timeout_s`` seconds.

    ``cleanup`` runs on the worker thread if ``fn`` returns (or raises) after it was given up on,
    so what the late call made is taken back. ``what`` names the work in the error.
    """
    finished = threading.Event()
    lock = threading.Lock()
    state: dict[str, object] = {}

    def work() -> None:
        try:
            state["value"] = fn()
        except BaseException as exc:  # handed to the waiting thread, raised there
            state["error"] = exc
        finally:
            with lock:
                state["done"] = True
                late = "abandoned" in state
            finished.set()
            if late:
                log.warning("%s returned after its time limit: undoing it", what)
                if cleanup is not None:
                    with contextlib.suppress(Exception):
                        cleanup()

    thread = threading.Thread(target=work, name="unison-write", daemon=True)
    thread.start()
    if not finished.wait(timeout_s):
        with lock:
            if "done" not in state:
                state["abandoned"] = True
        if "abandoned" in state:
            log.error("%s: no answer from the disk in %.0f s; given up", what, timeout_s)
            raise OutputStalled(
                f"{what}: the output directory's disk did not answer within {timeout_s:g} s "
                "(results.write_timeout_s); nothing was written"
            )
    if "error" in state:
        raise state["error"]  # type: ignore[misc]
    return state["value"]  # type: ignore[return-value]


def _write_all(path: Path, data: bytes | memoryview) -> None:
    """Create ``path`` (it must not exist; a link is never followed), write ``data``, flush it to disk."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view[:CHUNK])
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes | memoryview, *, timeout_s: float) -> None:
    """Write ``data`` to the new file ``path`` and flush it to disk, within ``timeout_s``.

    On any failure (the disk full, a stall) the file is removed; a stalled write removes it when
    it returns, if it ever does.
    """

    def undo() -> None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()

    try:
        limited(
            lambda: _write_all(path, data), timeout_s=timeout_s, what=f"writing {path.name}", cleanup=undo
        )
    except OutputStalled:
        raise
    except BaseException:
        remove([path], timeout_s=timeout_s)
        raise


def _fsync_dir(path: Path) -> None:
    # Makes the renames durable; not every platform/filesystem allows opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def place(moves: Sequence[tuple[Path, Path]], directory: Path, *, timeout_s: float) -> list[Path]:
    """Rename each ``(temporary, final)`` in order, then flush ``directory``, within ``timeout_s``.

    Returns the final paths placed. If a rename fails, the ones already placed are removed again
    (a media file without its sidecar is a half-output) and the error is raised.
    """
    placed: list[Path] = []

    def run() -> None:
        for temporary, final in moves:
            os.replace(temporary, final)
            placed.append(final)
        _fsync_dir(directory)

    def undo() -> None:
        for path in placed:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    try:
        limited(run, timeout_s=timeout_s, what=f"placing {len(moves)} file(s) in {directory}", cleanup=undo)
    except OutputStalled:
        raise
    except BaseException:
        remove(placed, timeout_s=timeout_s)
        raise
    return placed


def remove(paths: Iterable[Path], *, timeout_s: float) -> None:
    """Remove ``paths`` that exist, best effort: a stalled disk is logged, not raised (this runs
    while another error is on its way to the caller)."""
    paths = list(paths)

    def run() -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    if not paths:
        return
    try:
        limited(run, timeout_s=timeout_s, what=f"removing {len(paths)} file(s)")
    except OutputStalled:
        log.warning("could not remove %s: the disk did not answer", ", ".join(p.name for p in paths))
    except OSError as exc:
        log.warning("could not remove %s: %s", ", ".join(p.name for p in paths), exc)


def make_dir(directory: Path, *, timeout_s: float) -> Path:
    """``directory`` resolved and created if missing, within ``timeout_s``."""

    def run() -> Path:
        resolved = directory.expanduser().resolve()
        resolved.mkdir(parents=True, exist_ok=True)
        return resolved

    return limited(run, timeout_s=timeout_s, what=f"opening the output directory {directory}")

"""The output directory: what the server wrote, read back through a handle; room before a job;
the temporaries a killed write left.

Only files this server wrote are ever served (``resources/read``, the gallery, ``resources/list``):
names of the form :func:`new_output_name` gives (``<UTC time>-<task>-<8 hex>.png|mp4``, and the
``.json`` sidecar beside each), regular files with one link, opened relative to a handle on the
directory (:class:`OutputDir`) with ``O_NOFOLLOW``. So a file someone drops there (``evil.html``,
``.svg``, ``.js``), a symlink, a hard link to a file elsewhere, or the directory itself swapped for
a link while the server runs is never served: it is "no output named …".

Writing: :meth:`OutputDir.check_room` runs before a job's model work (the directory there and
writable, the file system's free space against :func:`expected_bytes`), and :func:`output_error`
turns a write's ``OSError`` (disk full, read-only, removed) into the server's own error naming the
cause and the path (:class:`~engine.errors.OutOfSpace`, :class:`~engine.errors.OutputUnavailable`).

Temporaries: a writer names its work in progress ``.tmp-<32 hex>.<ext>`` and every writing process
holds a shared ``flock`` on the directory itself (:func:`hold_writer_lease`; the kernel drops it
when the process ends, ``kill -9`` included). At start, :func:`remove_stale_temps` removes every
temporary when no other process holds it (nothing can be writing: whatever is there was left by a
killed write, whatever its age), and only those older than :data:`STALE_TEMP_AGE_S` while another
server or CLI writes there too (or where the file system has no such locks).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import re
import stat
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from .errors import InputRefused, OutOfSpace, OutputUnavailable, shown

try:
    import fcntl
except ImportError:  # pragma: no cover - not on Windows: the age rule alone applies there
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

#: The media types of what the writer makes, by extension: nothing else is ever served.
OUTPUT_TYPES = {"png": "image/png", "mp4": "video/mp4", "json": "application/json"}
#: Exactly the names :func:`new_output_name` gives, and their sidecars (``<name>.json``).
OUTPUT_NAME = re.compile(r"\d{8}T\d{6}Z-[a-z0-9_]{1,40}-[0-9a-f]{8}\.(?:png|mp4)(?:\.json)?")

TEMP_PREFIX = ".tmp-"
#: Exactly the names the writer gives its temporary files, and nothing else.
TEMP_NAME = re.compile(re.escape(TEMP_PREFIX) + r"[0-9a-f]{32}\.(png|mp4|json)")
#: While another process writes into the same directory, a temporary younger than this may be
#: its work in progress (a write takes seconds): only older ones are removed then.
STALE_TEMP_AGE_S = 600.0
#: Directories whose lease one process keeps open at most (a server writes into one).
MAX_LEASES = 16

#: What a job's files are expected to take, per pixel of each frame: a PNG's worst case (noise)
#: is about 3 bytes; H.264 at the encoder's quality stays well under 1 byte for generated video.
BYTES_PER_PIXEL = {"png": 3.0, "mp4": 0.75}
#: Room beside the media: sidecars, the audio muxed in, and the file system's own blocks.
SPARE_BYTES = 1 << 20

_DIR_FLAGS = (
    os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
)
_FILE_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)


# ---------------------------------------------------------------------------------------------
# Names


def _safe_task(task: str) -> str:
    # Names come from the Task table, but a file name must never carry anything path-like.
    cleaned = re.sub(r"[^a-z0-9_]+", "_", str(task).lower()).strip("_")
    return cleaned[:40] or "output"


def new_output_name(task: str, ext: str, now: datetime) -> str:
    """A fresh output name, ``<UTC time>-<task>-<8 hex>.<ext>``; never taken from a request."""
    return f"{now:%Y%m%dT%H%M%S}Z-{_safe_task(task)}-{os.urandom(4).hex()}.{ext}"


def is_output_name(name: str) -> bool:
    """Whether ``name`` is one the writer gives (a result or its sidecar)."""
    return OUTPUT_NAME.fullmatch(name) is not None


def output_type(name: str) -> str:
    """The media type of an output name (``application/octet-stream`` for anything else)."""
    return OUTPUT_TYPES.get(name.rpartition(".")[2], "application/octet-stream")


def expected_bytes(width: int, height: int, frames: int, count: int) -> int:
    """What a job's files are expected to take: each candidate's media at :data:`BYTES_PER_PIXEL`,
    twice (room for a second file of the generation: a new part, a mask, a control), and
    :data:`SPARE_BYTES`."""
    per_pixel = BYTES_PER_PIXEL["mp4" if frames > 1 else "png"]
    return int(2 * count * width * height * frames * per_pixel) + SPARE_BYTES


# ---------------------------------------------------------------------------------------------
# The directory


@dataclass(frozen=True)
class Listed:
    """One output in a listing: its name, its path for messages, its size and time."""

    name: str
    path: Path
    size: int
    mtime: float


class OutputDir:
    """The output directory, read through a handle: opened once (:meth:`open`, at the server's
    start, or on first use), never through a link. When the directory it holds is removed and a
    real directory takes its place (``rm -r`` then a new write), the handle is taken again; a
    link in its place is never followed.
    """

    def __init__(self, path: Path | str):
        self.path = Path(path).expanduser().resolve()
        self._fd: int | None = None
        self._closer: weakref.finalize | None = None  # closes the handle with this object
        self._lock = threading.Lock()

    def open(self) -> bool:
        """Take the handle now (the server does at start); ``False`` when there is no directory."""
        with self._dup() as fd:
            return fd is not None

    @contextlib.contextmanager
    def _dup(self) -> Iterator[int | None]:
        """A duplicate of the handle for one use (``None``: no directory): a handle taken again
        by another thread meanwhile never leaves this use with a closed or reused number."""
        with self._lock:
            if self._fd is not None and os.fstat(self._fd).st_nlink == 0 and self._closer is not None:
                self._closer()  # removed: the directory now at the path, if any
                self._fd = None
            if self._fd is None:
                with contextlib.suppress(OSError):
                    self._fd = os.open(self.path, _DIR_FLAGS)
                    self._closer = weakref.finalize(self, os.close, self._fd)
            fd = os.dup(self._fd) if self._fd is not None else None
        try:
            yield fd
        finally:
            if fd is not None:
                os.close(fd)

    def _missing(self, name: str) -> InputRefused:
        return InputRefused(
            f"no output named {shown(name)} in {self.path} (only the files this server wrote are "
            "served: its PNG and MP4 results and their JSON sidecars, by their names)",
            path=name,
        )

    def open_file(self, name: str) -> tuple[BinaryIO, os.stat_result]:
        """The output ``name`` opened for reading, and its ``stat``; ``InputRefused`` for any name
        the writer does not give, a link, a file with more than one link, anything not regular."""
        if not isinstance(name, str) or not is_output_name(name):
            raise self._missing(name)
        with self._dup() as directory:
            if directory is None:
                raise self._missing(name)
            try:
                fd = os.open(name, _FILE_FLAGS, dir_fd=directory)
            except OSError as exc:  # missing, or ELOOP: a link
                log.debug("output %s not opened: %s", name, exc.strerror)
                raise self._missing(name) from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            log.info("refused to serve %s: not a regular file with one link (%d links)", name, st.st_nlink)
            raise self._missing(name)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb"), st

    def read(self, name: str, max_bytes: int) -> tuple[bytes | None, os.stat_result]:
        """The bytes of output ``name`` (``None``, unread, when it is over ``max_bytes``) and its
        ``stat``; ``InputRefused`` as :meth:`open_file`."""
        f, st = self.open_file(name)
        with f:
            if st.st_size > max_bytes:
                return None, st
            data = f.read(max_bytes + 1)  # never more, even if it grew since the stat
        return (data if len(data) <= max_bytes else None), st

    def listing(self) -> list[Listed]:
        """The outputs, newest first; a file removed while it is listed is left out."""
        found: list[Listed] = []
        with self._dup() as directory:
            if directory is None:
                return []
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not is_output_name(entry.name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:  # removed between the scan and its stat
                        continue
                    if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                        found.append(Listed(entry.name, self.path / entry.name, st.st_size, st.st_mtime))
        found.sort(key=lambda e: e.mtime, reverse=True)
        return found

    def version(self) -> int:
        """Changes whenever an output is renamed into place or removed (the directory's mtime)."""
        with self._dup() as directory:
            return os.fstat(directory).st_mtime_ns if directory is not None else 0

    # ------------------------------------------------------------------ writing

    def check_room(self, needed: int) -> None:
        """Before a job's model work: the directory there (created if missing), still the one
        this server reads, writable, with ``needed`` bytes free; else the server's own error."""
        where = shown(self.path, quoted=False)
        self._ensure_present()
        with self._dup() as directory:
            try:
                if directory is None:  # the handle cannot be taken: an open says why
                    os.close(os.open(self.path, _DIR_FLAGS))
                    raise OSError(errno.EAGAIN, "it changed while it was opened")
                held, now, vfs = os.fstat(directory), os.stat(self.path), os.fstatvfs(directory)
            except OSError as exc:
                raise _unavailable(exc, self.path) from None
        if (held.st_dev, held.st_ino) != (now.st_dev, now.st_ino):
            raise OutputUnavailable(
                f"the output directory {where} is no longer the directory the server started with "
                "(it was moved, or something was mounted over it): restart the server to use it",
                path=str(self.path),
            )
        if vfs.f_flag & getattr(os, "ST_RDONLY", 1):
            raise OutputUnavailable(
                f"the output directory {where} is on a read-only file system", path=str(self.path)
            )
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise OutputUnavailable(
                f"the server may not write into the output directory {where} (permission denied)",
                path=str(self.path),
            )
        free = vfs.f_bavail * vfs.f_frsize
        if free < needed:
            raise OutOfSpace(
                f"no room in the output directory {where}: {_mb(free)} free on its file system, "
                f"this job's files need about {_mb(needed)}",
                path=str(self.path),
            )

    def _ensure_present(self) -> None:
        """The directory at the path: made when missing; never a link (a swap since the start)."""
        where = shown(self.path, quoted=False)
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise _unavailable(exc, self.path, creating=True) from None
            return
        except OSError as exc:
            raise _unavailable(exc, self.path) from None
        if stat.S_ISLNK(info.st_mode):
            target = shown(os.readlink(self.path), quoted=False)
            raise OutputUnavailable(
                f"the output directory {where} was replaced by a link (to {target}) since the server "
                "started; it writes only into a real directory: put the directory back, or restart the server",
                path=str(self.path),
            )
        if not stat.S_ISDIR(info.st_mode):
            raise OutputUnavailable(f"the output directory {where} is not a directory", path=str(self.path))


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def _unavailable(exc: OSError, directory: Path, *, creating: bool = False) -> OutputUnavailable:
    cause = exc.strerror or type(exc).__name__
    verb = "cannot be created" if creating else "cannot be used"
    return OutputUnavailable(
        f"the output directory {shown(directory, quoted=False)} {verb} ({cause})", path=str(directory)
    )


#: A write's errno → what it says about the output directory (else the error is not the disk's).
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on its device",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "it is on a read-only file system",
    errno.EACCES: "the server may not write there (permission denied)",
    errno.EPERM: "the server may not write there (operation not permitted)",
    errno.ENOENT: "it is missing (removed while the server ran?)",
    errno.ENOTDIR: "it is not a directory",
    errno.EIO: "its disk failed (input/output error)",
}


def output_error(exc: BaseException, directory: Path | str) -> OutputUnavailable | None:
    """The server's own error for a write that failed because of the output directory (disk full,
    read-only, removed...), naming the cause and the path; ``None`` for any other failure."""
    code = getattr(exc, "errno", None)
    if not isinstance(exc, OSError) or code not in _WRITE_ERRORS:
        return None
    cls = OutOfSpace if code in (errno.ENOSPC, errno.EDQUOT) else OutputUnavailable
    where = shown(Path(directory), quoted=False)
    return cls(
        f"writing into the output directory {where} failed: {_WRITE_ERRORS[code]}", path=str(directory)
    )


# ---------------------------------------------------------------------------------------------
# Temporaries of killed writes

#: The lease of each directory this process writes into (the directory opened, a shared lock on it).
_leases: OrderedDict[Path, int] = OrderedDict()
_leases_lock = threading.Lock()


def _lease(directory: Path) -> int | None:
    """This process's lease on ``directory``: the directory opened once and kept open, ``None``
    when it cannot be opened."""
    if fcntl is None:
        return None
    with _leases_lock:
        fd = _leases.get(directory)
        if fd is not None:
            _leases.move_to_end(directory)
            return fd
        try:
            fd = os.open(directory, _DIR_FLAGS)
        except OSError as exc:
            log.debug("no writer lease in %s: %s", directory, exc.strerror)
            return None
        _leases[directory] = fd
        while len(_leases) > MAX_LEASES:
            os.close(_leases.popitem(last=False)[1])
        return fd


def hold_writer_lease(directory: Path | str) -> None:
    """Say (with a shared lock, held until this process ends) that this process writes into
    ``directory``, so another's start leaves its temporaries alone."""
    fd = _lease(Path(directory))
    if fd is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)


def ready_to_write(output_dir: Path | str) -> Path:
    """Before a write into ``output_dir``: its real path, made if missing (else the server's own
    error naming why), with this process's writer lease held (:func:`hold_writer_lease`)."""
    directory = Path(output_dir).expanduser().resolve()
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise output_error(exc, directory) or _unavailable(exc, directory, creating=True) from exc
    hold_writer_lease(directory)
    return directory


def _sole_writer(directory: Path) -> bool:
    """Whether no other process holds a lease on ``directory`` (this one keeps its own, shared)."""
    fd = _lease(directory)
    if fd is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another writer holds it, or locks do not work here: the age rule
        return False
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_SH)
    return True


def remove_stale_temps(output_dir: Path | str, *, older_than_s: float = STALE_TEMP_AGE_S) -> list[Path]:
    """Delete the temporary files a killed writer left in ``output_dir``; returns what was deleted.

    Only regular files named as the writer names its temporaries (``.tmp-<32 hex>.png``, ``.mp4``
    or ``.json``) are removed, never a user's own hidden files, links or directories: all of them
    when no other process holds a writer's lease on the directory, else those last modified more
    than ``older_than_s`` seconds ago. A missing directory has nothing to clean. This process
    holds its own lease afterwards.
    """
    directory = Path(output_dir).expanduser().resolve()
    if not directory.is_dir():
        return []
    cutoff = None if _sole_writer(directory) else time.time() - older_than_s
    hold_writer_lease(directory)
    removed: list[Path] = []
    for path in directory.iterdir():
        if not TEMP_NAME.fullmatch(path.name):
            continue
        try:
            info = path.lstat()  # lstat: a link named like a temporary is not ours
            if not stat.S_ISREG(info.st_mode) or (cutoff is not None and info.st_mtime > cutoff):
                continue
            path.unlink()
        except OSError as exc:  # gone already (another server cleaned it), or not ours to delete
            log.debug("left %s: %s", path, exc)
            continue
        removed.append(path)
    if removed:
        log.info("removed %d stale temporary file(s) from %s", len(removed), directory)
    return removed


__all__ = [
    "OUTPUT_NAME",
    "OUTPUT_TYPES",
    "STALE_TEMP_AGE_S",
    "TEMP_PREFIX",
    "Listed",
    "OutputDir",
    "expected_bytes",
    "hold_writer_lease",
    "is_output_name",
    "new_output_name",
    "output_error",
    "output_type",
    "ready_to_write",
    "remove_stale_temps",
]

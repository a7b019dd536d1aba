"""Progress a person can see, on stderr, for the CLI's long commands.

:class:`Progress` is fed by the engine's :class:`~engine.control.JobControl`: each stage as it
begins (:meth:`~engine.control.JobControl.set_stage`, heard as a step 0) and each step; a small thread keeps the
clock going while a stage reports no step (a model loading):

- on a terminal, one line per stage redrawn in place: the stage, a bar with ``done/total`` when
  the stage has steps, and the time since the command started, ticking while a model loads;
- otherwise (a pipe, a CI log, an MCP client's stderr) one line when a stage begins, one each
  time the stage passes another tenth of its steps (with step, total and elapsed time), and one
  every :attr:`Progress.HEARTBEAT_S` seconds in a stage that reports nothing.

The loading stages are named with the size of what they load ("loading the planner, 7.5 GB"),
read from the files on disk as the stage begins: a local directory, or the snapshot in the
Hugging Face cache (:func:`stage_label`); the tiny preset's first build is named as such. Nothing
here goes to stdout, which carries results only.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from engine.config import TINY_BUILD_STAGE
from engine.control import JobControl

from .download import weight_sources

if TYPE_CHECKING:
    from engine.config import EngineConfig

log = logging.getLogger(__name__)

#: The engine's loading stages (engine/engine.py) and the weights each loads.
LOADING_STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "loading planner": ("loading the planner", ("planner", "adapter")),
    "loading models": ("loading the generator", ("generator", "transformer", "projector")),
}


def stage_label(config: EngineConfig, stage: str) -> str | None:
    """The words for one of the engine's stages, as things are on disk now (``None``: its own name).

    A loading stage is named with the size of its weights ("loading the planner, 7.5 GB"); one
    whose weights are not on disk yet is named as downloading (the hub's own progress bars
    follow). Nothing is fetched here.
    """
    if stage == TINY_BUILD_STAGE and config.tiny_dir is not None:
        return "building the tiny models (first use)"
    if stage not in LOADING_STAGES:
        return None
    words, roles = LOADING_STAGES[stage]
    sources = [s for s in weight_sources(config) if s.role in roles]
    if not sources:
        return None
    if any(s.kind == "tiny" for s in sources):
        return f"{words} (tiny, built first)"
    sizes = [_size_on_disk(s, config.cache_dir) for s in sources]
    if any(size is None for size in sizes):
        return f"{words} (not all on disk: downloading first)"
    return f"{words}, {format_size(sum(size or 0 for size in sizes))}"


def stage_labels(config: EngineConfig) -> dict[str, str]:
    """:func:`stage_label` of every stage that has words of its own, as things are on disk now."""
    stages = (TINY_BUILD_STAGE, *LOADING_STAGES)
    return {stage: label for stage in stages if (label := stage_label(config, stage)) is not None}


def _size_on_disk(source: Any, cache_dir: Path | None) -> int | None:
    """Bytes of one configured weight on disk, or None when it is not there (still to download)."""
    if source.kind == "local":
        return _tree_size(Path(source.spec).expanduser())
    if source.kind not in ("repo", "file") or not source.repo_id:
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - a dependency of transformers
        return None
    try:
        found = try_to_load_from_cache(source.repo_id, source.filename or "", cache_dir=cache_dir)
    except ValueError:  # an id the cache cannot name (HFValidationError): not on disk, and not ours to judge
        return None
    if not isinstance(found, str):
        return None
    path = Path(found)
    if source.kind == "file":
        return path.stat().st_size
    snapshot = path.parent
    for _ in Path(source.filename or "").parent.parts:  # the probe may sit in a subfolder
        snapshot = snapshot.parent
    return _tree_size(snapshot / source.subfolder if source.subfolder else snapshot)


def _tree_size(path: Path) -> int | None:
    """Bytes under ``path`` (a file or a directory), links followed as loading follows them."""
    try:
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return None


def format_size(n: int) -> str:
    """``7.5 GB``, ``50 MB``, ``812 kB`` (decimal units, as the hub shows sizes)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            value = n / scale
            return f"{value:.1f} {unit}" if value < 10 else f"{value:.0f} {unit}"
    return f"{n} B"


class Progress:
    """Progress of one command on ``stream`` (stderr), fed by the engine's ``JobControl``.

    ``labels`` renames engine stages: a mapping, or a function asked once as each stage begins
    (:func:`stage_label`: the size on disk of what a stage loads, known only once an earlier stage
    has built or fetched it); ``tty`` overrides the terminal check (tests). Use it as a context
    manager: the watching thread runs inside the block.
    """

    WIDTH = 28
    #: Redraw period on a terminal.
    TICK_S = 0.2
    #: Longest silence in a log (a stage without steps, e.g. a model loading).
    HEARTBEAT_S = 15.0

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        labels: Mapping[str, str] | Callable[[str], str | None] | None = None,
        tty: bool | None = None,
    ):
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)()) if tty is None else tty
        self._labels: Callable[[str], str | None] = labels if callable(labels) else dict(labels or {}).get
        self._shown = ""  # the current stage's words
        self._lock = threading.Lock()
        self._t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # What was last shown: the stage, its steps, and when a line was last written.
        self._stage: str | None = None
        self._done = 0
        self._total = 0
        self._tenth = -1
        self._last_line = 0.0
        self._open = False  # a terminal line without its newline yet

    # ------------------------------------------------------------------ feeding

    def control(self) -> JobControl:
        """A ``JobControl`` whose stages (as each begins: a model loading has no step) and steps are
        shown here."""
        return JobControl(on_progress=self.update)

    def begin(self, stage: str) -> None:
        """A stage begins (before its first step, which may be a long way off)."""
        with self._lock:
            if stage != self._stage:
                self._show(stage, 0, 0)

    def update(self, done: int, total: int, stage: str) -> None:
        """One step of ``stage``, or (``done`` 0) the stage beginning (the engine calls this on its thread)."""
        if done == 0:
            self.begin(stage)
            return
        with self._lock:
            self._show(stage, done, total)

    def _poll(self) -> None:
        """The clock, which no step reports while a model loads."""
        while not self._stop.wait(self.TICK_S if self._tty else 0.5):
            with self._lock:
                if self._tty and self._stage is not None:
                    self._draw()
                elif self._stage is not None and time.perf_counter() - self._last_line >= self.HEARTBEAT_S:
                    self._line(f"still {self._label()}" if not self._total else self._step_text())

    # ------------------------------------------------------------------ showing (under the lock)

    def _show(self, stage: str, done: int, total: int) -> None:
        if stage != self._stage:
            self._end_line()
            self._stage, self._tenth = stage, -1
            self._shown = self._labels(stage) or stage
            if not self._tty:
                self._line(self._label() + ("…" if not total else ""))
        self._done, self._total = done, total
        if self._tty:
            self._draw()
            return
        if total:
            tenth = 10 * done // total
            if tenth > self._tenth:  # every tenth of the steps, the last one included
                self._tenth = tenth
                self._line(self._step_text())

    def _label(self) -> str:
        return self._shown

    def _elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def _step_text(self) -> str:
        pct = 100 * self._done // max(self._total, 1)
        return f"{self._label()}: step {self._done}/{self._total} ({pct}%), {self._elapsed():.1f} s elapsed"

    def _line(self, text: str) -> None:
        self._stream.write(f"unison-mcp: {text}\n")
        self._stream.flush()
        self._last_line = time.perf_counter()

    def _draw(self) -> None:
        label = self._label()
        if self._total:
            filled = self.WIDTH * self._done // self._total
            bar = "#" * filled + "." * (self.WIDTH - filled)
            text = f"{label[:36]:<36} [{bar}] {self._done}/{self._total} {self._elapsed():6.1f}s"
        else:
            text = f"{label + '…':<36} {self._elapsed():6.1f}s"
        self._stream.write("\r" + text)
        self._stream.flush()
        self._open = True

    def _end_line(self) -> None:
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = False

    # ------------------------------------------------------------------ lifetime

    def __enter__(self) -> Progress:
        self._thread = threading.Thread(target=self._poll, name="progress", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        with self._lock:
            self._end_line()  # a finished or interrupted bar: the next output starts on its own line


__all__ = ["LOADING_STAGES", "Progress", "format_size", "stage_label", "stage_labels"]

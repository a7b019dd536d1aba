"""Progress and cancellation for one job: the bridge between a model's step loop and its caller.

Each stage of a job (a model loading, an annotator, the denoising loop, decoding, writing) begins
with :meth:`JobControl.set_stage`, and a stage with steps reports each one with
:meth:`JobControl.step`. The listener hears both: a stage's beginning as ``(0, total, stage)``
(``total`` 0 when the stage has no steps), then each step as ``(done, total, stage)`` with
``done`` from 1, so a caller can say what a job is doing from its first second, a model loading
included. Both raise :class:`~engine.errors.Cancelled` when someone called :meth:`cancel`, so a
cancelled job stops within one step and never reaches the point where files are written.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from .asking import Ask
from .errors import Cancelled

#: ``(done, total, stage)``: a stage begins with ``done`` 0, each of its steps counts from 1.
ProgressFn = Callable[[int, int, str], None]


class JobControl:
    """Thread-safe progress and cancel flag for one job.

    ``ask`` is how the job may ask its user a question the request leaves open
    (:mod:`engine.asking`); ``None`` (the default) when nobody can be asked: the job then plans its
    best guess and says so in the notes. The MCP layer sets it for a client that can answer.
    """

    def __init__(self, on_progress: ProgressFn | None = None, ask: Ask | None = None):
        self._on_progress = on_progress
        self.ask = ask
        self._cancelled = threading.Event()
        self._lock = threading.Lock()
        self.done = 0
        self.total = 0
        self.stage = "queued"
        #: When the job was made (``time.perf_counter()``): a queued job's control is made when it
        #: is submitted, so the job's timings count its wait in the queue (engine.timings).
        self.created = time.perf_counter()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        self._cancelled.set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block up to ``timeout`` seconds for a cancel; ``True`` once the job is cancelled."""
        return self._cancelled.wait(timeout)

    def check(self) -> None:
        """Raise :class:`Cancelled` if the job was cancelled."""
        if self._cancelled.is_set():
            raise Cancelled()

    def set_stage(self, stage: str, total: int | None = None) -> None:
        """A stage begins (``total``: its steps, when it counts any); the listener hears it at once,
        since its first step (or its end, for a model loading) may be a long way off."""
        with self._lock:
            self.stage = stage
            if total is not None:
                self.total, self.done = total, 0
        if self._on_progress is not None:
            self._on_progress(0, total or 0, stage)
        self.check()

    def step(self, done: int, total: int) -> None:
        """Record progress (``done`` of ``total``), tell the listener, then honour a cancel."""
        with self._lock:
            self.done, self.total = done, total
        if self._on_progress is not None:
            self._on_progress(done, total, self.stage)
        self.check()

    def snapshot(self) -> dict:
        with self._lock:
            return {"stage": self.stage, "done": self.done, "total": self.total}

"""Seconds per stage of one job: the one place that names the stages and keeps their order.

Every result and every sidecar carries ``timings``: ``<stage>_s`` in the order the stages run,
then ``total_s``, which covers the whole call from the moment the job was submitted (its wait in
the queue included) to its last file placed. A stage that runs more than once (windows of a
chain, candidates one after another) adds up. The stages of a generation are listed in
:data:`GENERATION`; they are always present (0 where nothing of that kind happened), except
``annotate`` and ``plan``, present only when used. The stages inside the pipeline call
(``vace_encode``, ``denoise``, ``vae_decode``) are read from the pipeline's own hooks
(:mod:`engine.generator`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

#: Every stage a job may time, in the order they run.
STAGES = (
    "queue",  # waiting in the job queue, from submission to the start of the work
    "load",  # the models checked, built (tiny preset) or loaded
    "plan",  # an auto call's plan
    "answer",  # an understanding answer
    "prepare",  # sources decoded into the generator's inputs (annotators not counted)
    "annotate",  # masks and control signals extracted by the annotators
    "project",  # the projector's 4 tokens
    "encode_prompt",  # umT5 over the prompt and the negative prompt
    "vace_encode",  # VACE's inputs scaled on the device and encoded by the VAE
    "denoise",  # the denoising steps
    "vae_decode",  # the VAE decode of the last latents
    "postprocess",  # the frames made uint8 (on the device) and copied to the host
    "composite",  # the source pasted back
    "write",  # files encoded and written (media, sidecars)
    "total",
)

#: The stages every generation result carries, whatever happened (0.0 where nothing did).
GENERATION = (
    "queue",
    "load",
    "prepare",
    "encode_prompt",
    "vace_encode",
    "denoise",
    "vae_decode",
    "postprocess",
    "composite",
    "write",
    "total",
)


class Timings:
    """The seconds of one job's stages, added up as they happen (:meth:`add`, :meth:`measure`).

    ``started`` is the ``time.perf_counter()`` the job's clock starts at: its submission to the
    queue (:attr:`engine.control.JobControl.created`), so that ``total`` and ``queue`` cover the
    wait. Not thread-safe: one job's stages run on its one thread.
    """

    def __init__(self, started: float | None = None):
        self.started = time.perf_counter() if started is None else started
        self.seconds: dict[str, float] = {}

    def add(self, stage: str, seconds: float) -> None:
        """Add ``seconds`` to ``stage`` (one of :data:`STAGES`)."""
        if stage not in STAGES:
            raise KeyError(f"stage={stage!r}: not one of {', '.join(STAGES)}")
        self.seconds[stage] = self.seconds.get(stage, 0.0) + max(0.0, seconds)

    @contextmanager
    def measure(self, stage: str) -> Iterator[None]:
        """Time the block as ``stage`` (added up, also when the block raises)."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.add(stage, time.perf_counter() - t)

    def waited(self, until: float | None = None) -> None:
        """Record the wait in the queue: from :attr:`started` to ``until`` (default: now)."""
        self.seconds["queue"] = max(0.0, (time.perf_counter() if until is None else until) - self.started)

    def finish(self) -> None:
        """Record ``total``: from :attr:`started` to now."""
        self.seconds["total"] = time.perf_counter() - self.started

    def get(self, stage: str) -> float:
        return self.seconds.get(stage, 0.0)

    def as_dict(self, required: tuple[str, ...] = ()) -> dict[str, float]:
        """``{"<stage>_s": seconds}`` in :data:`STAGES` order: the recorded stages and ``required``."""
        return {
            f"{stage}_s": round(self.seconds.get(stage, 0.0), 4)
            for stage in STAGES
            if stage in self.seconds or stage in required
        }


class Laps:
    """Consecutive stages timed by their ends: :meth:`lap` closes the running stage.

    The pipeline call is one opaque function; its hooks (the step callback, the conditioning and
    the output conversion) call ``lap(stage)`` as each stage ends, so each stage's time is the
    gap since the previous lap.
    """

    def __init__(self, timings: Timings):
        self.timings = timings
        self.last = time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings.add(stage, now - self.last)
        self.last = now

"""Long videos as a chain of windows: each generator run of a plan, and how their frames join.

Wan2.1-VACE makes at most one window of frames per run (``Limits.max_frames``, 161 = 10 s at
16 fps: the tiny model's rotary table and the real model's memory both bound it). A longer
``text_to_video``, ``image_to_video`` or ``video_extend`` is made window after window: each one
after the first opens on the last ``overlap`` frames of what is made so far, kept (mask 0), and
generates the rest. Every run must have 4k+1 frames, so a window may generate up to 3 frames
more than it keeps; they are dropped from its end. How many frames each window makes and keeps is
:func:`engine.bounds.layout` (arithmetic on the frame grid, which the preparation of video_extend
reads too); :class:`Chain` runs the windows.

The trade-off (docs/performance.md): each join sees only the overlap, so motion and identity
drift a little at every window, and the whole video takes one window's time per window.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .bounds import Window, layout
from .prepare import Prepared, prepare_window
from .vocab import Role, Task

if TYPE_CHECKING:
    from .composite import Composited
    from .config import EngineConfig
    from .plan import CheckedPlan


# ---------------------------------------------------------------------------------------------
# Running a plan's windows, for every candidate.


@dataclass
class Made:
    """What the generator made for a plan: one ``(F, H, W, 3)`` uint8 video per candidate.

    ``new_from`` is where the new frames start (video_extend: after the source clip), ``None``
    when the whole output is new. ``preserved`` says per candidate what was pasted back.
    """

    frames: list[np.ndarray]
    new_from: int | None = None
    preserved: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    #: What was extracted to make the inputs (``("mask", frames)``, ``("control", frames)``),
    #: ``(F, H, W, 3)`` uint8: written beside the results.
    extras: list[tuple[str, np.ndarray]] = field(default_factory=list)


class Chain:
    """The windows of one plan and how their frames join (see the module docstring).

    A plan that fits one window is a chain of one. ``video_extend`` starts from the source clip
    (the first window's ``prefix``); ``image_to_video`` with only a last frame is made backwards
    from its end, each window ending on the first frames of the one after it.
    """

    def __init__(self, plan: CheckedPlan, *, window: int, overlap: int):
        self.plan = plan
        self.window = window
        self.overlap = overlap
        self.chained = plan.spec.chain
        self.extend = plan.task is Task.VIDEO_EXTEND
        self.reverse = plan.task is Task.IMAGE_TO_VIDEO and not plan.by_role(Role.FIRST_FRAME)
        n = plan.num_frames
        if self.chained:
            self.windows = layout(n, window=window, overlap=overlap)
        else:
            self.windows = [Window(context=0, new=n, total=n)]
        self.prepared: Prepared | None = None

    @classmethod
    def of(cls, plan: CheckedPlan, config: EngineConfig) -> Chain:
        return cls(plan, window=config.limits.max_frames, overlap=config.results.window_overlap)

    def first_plan(self, plan: CheckedPlan) -> CheckedPlan:
        """The plan the first window is prepared from (its frame count: the first window's).

        video_extend's preparation lays out its own first window from the context it finds.
        """
        if self.extend or self.windows[0].total == plan.num_frames:
            return plan
        return plan.model_copy(update={"num_frames": self.windows[0].total})

    def start(self, prepared: Prepared) -> None:
        """Take the first window's inputs (for video_extend: lay out the windows after its context)."""
        if self.extend:
            self.windows = layout(
                self.plan.num_frames,
                window=self.window,
                overlap=self.overlap,
                first_context=prepared.context,
            )
        if self.windows[0].total != prepared.num_frames:
            raise RuntimeError(
                f"window 1 is {self.windows[0].total} frames but {prepared.num_frames} were prepared"
            )
        self.prepared = prepared

    def note(self) -> str:
        w = self.windows
        return (
            f"made as a chain of {len(w)} windows of up to {self.window} frames, each after the "
            f"first continuing from {self.overlap} frames of the one before"
        )

    def make(
        self,
        run: Callable[..., np.ndarray],
        seeds: Sequence[int],
        *,
        batch: bool,
        composite: Callable[..., Composited] | None,
        steps: int,
    ) -> Made:
        """Every candidate's frames: ``run(prepared, seeds=..., progress=..., stage=...)`` is the
        generator's run with everything else bound; ``composite`` pastes kept frames back."""
        prepared = self.prepared
        if prepared is None:
            raise RuntimeError("Chain.start was not called")
        runs = len(self.windows) * (1 if batch else len(seeds))
        overall, done = steps * runs, 0
        made = Made(frames=[], new_from=len(prepared.prefix) if self.extend and prepared.prefix else None)
        for role, images in prepared.extras:
            made.extras.append((role, np.stack([np.asarray(im.convert("RGB")) for im in images])))
        if batch:
            outs = run(prepared, seeds=list(seeds), progress=(0, overall), stage="generating")
            for k in range(len(seeds)):
                frames, info = self._finish(prepared, outs[k], composite)
                made.frames.append(frames[: self.windows[0].new])
                made.preserved.append(info)
        else:
            for k, seed in enumerate(seeds):
                acc = [np.asarray(im) for im in prepared.prefix or ()]
                kept: list[dict[str, Any]] = []
                for i, w in enumerate(self.windows):
                    prep = prepared if i == 0 else self._window(acc, w)
                    stage = self._stage(k, len(seeds), i)
                    out = run(prep, seeds=[seed], progress=(done, overall), stage=stage)[0]
                    done += steps
                    frames, info = self._finish(prep, out, composite)
                    kept.append(info)
                    new = (
                        frames[w.extra : w.extra + w.new]
                        if self.reverse
                        else frames[w.context : w.context + w.new]
                    )
                    acc = [*new, *acc] if self.reverse else [*acc, *new]
                # One window and nothing before it: its frames as they are, not a 100 MB copy.
                made.frames.append(new if len(acc) == len(new) else np.stack(acc))
                made.preserved.append(_joined(kept))
        first = made.preserved[0] if made.preserved else {}
        if first.get("summary"):
            made.notes.append(f"preserved: {first['summary']}")
        return made

    def _stage(self, candidate: int, count: int, window: int) -> str:
        parts = ["generating"]
        if count > 1:
            parts.append(f"candidate {candidate + 1}/{count}")
        if len(self.windows) > 1:
            parts.append(f"window {window + 1}/{len(self.windows)}")
        return ", ".join(parts)

    def _window(self, acc: list[np.ndarray], w: Window) -> Prepared:
        from PIL import Image

        context = acc[: w.context] if self.reverse else acc[len(acc) - w.context :]
        size = (self.plan.width, self.plan.height)
        images = [Image.fromarray(f) for f in context]
        return prepare_window(size, w.total, images, at_end=self.reverse)

    @staticmethod
    def _finish(
        prep: Prepared, out: np.ndarray, composite: Callable[..., Composited] | None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        if composite is None or prep.mask is None or prep.video is None:
            return (out if isinstance(out, np.ndarray) else out.cpu().numpy()), {"preserved": False}
        # The uint8 arrays the generator was given; ``out`` may still be on the generator's
        # device (a torch tensor): the composite pastes there, then copies it to the host.
        done = composite(out, *prep.arrays())
        return done.frames, done.metadata()


def _joined(kept: list[dict[str, Any]]) -> dict[str, Any]:
    """One candidate's compositing record over its windows."""
    if len(kept) == 1:
        return kept[0]
    return {
        "preserved": any(k.get("preserved") for k in kept),
        "windows": kept,
        "summary": kept[0].get("summary", ""),
    }

"""Pasting the source back after decoding: what a task keeps is the user's own pixels.

VACE regenerates the whole frame, so pixels it was told to keep come back changed (they pass
through the VAE twice). :func:`composite` puts the source back wherever the mask keeps it:

- outside the mask and farther than ``feather_px`` from it: the source pixel, exactly;
- inside the mask (255): the generated pixel (colour-corrected, see below);
- in the band of kept pixels within ``feather_px`` of the mask: a smooth blend from the
  generated pixel at the mask's edge to the source at the band's outer edge (``feather_px=0``:
  a hard edge);
- a frame whose mask is all 0 (the given frame of ``image_to_video``, the context of
  ``video_extend``) is the source frame; a frame whose mask is all 255 is left as generated.

Colour match: the VAE can shift a frame's colours a little, which would show as a seam around a
pasted region. The shift is measured as the mean difference (generated − source) per channel over
the kept pixels next to the mask (the band and a ring of :data:`RING_PX` beyond it), pooled over
all partly masked frames so the correction does not flicker, and subtracted from the generated
pixels inside the mask and the band. It is applied only when it is measurable: enough pixels, and
small enough to be a tint rather than new content. Kept pixels outside the band never change.

Masks follow engine.prepare: "L" images, 255 = regenerate, 0 = keep (thresholded at 128, as the
pipeline thresholds at 0.5). Identical masks (the same object, or the same bytes) are analysed once.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .geometry import uint8_frames

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)

#: Kept pixels this far beyond the band (in pixels) also measure the colour shift.
RING_PX = 8
#: Fewer kept pixels than this next to the mask measure no shift (the mean would be noise).
MIN_RING_PIXELS = 64
#: A mean difference below this (in 8-bit levels, every channel) is not worth correcting.
MIN_SHIFT = 0.5
#: A mean difference above this on some channel is new content, not a tint: left as it is.
MAX_SHIFT = 24.0


@dataclass
class Composited:
    """The frames after compositing, and what was kept.

    ``kept[i]`` is the fraction of frame ``i``'s pixels that are the source's exactly (1.0 for a
    whole kept frame, 0.0 for a frame left as generated). ``color_shift`` is the per-channel
    (R, G, B) shift subtracted from the generated area, ``None`` when none was.
    """

    frames: np.ndarray  # (F, H, W, 3) uint8
    kept: list[float] = field(default_factory=list)
    feather_px: int = 0
    color_shift: tuple[float, float, float] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def kept_fraction(self) -> float:
        """The fraction of all the output's pixels that are the source's exactly."""
        return sum(self.kept) / len(self.kept) if self.kept else 0.0

    @property
    def summary(self) -> str:
        """One line for the result's notes, e.g. "kept 71% of the pixels of 1 frame from the source;
        4 px feathered band; colour shift (+3,-1,+2) corrected"."""
        return "; ".join(self.notes)

    def metadata(self) -> dict[str, Any]:
        """What the sidecar records about the compositing."""
        return {
            "preserved": any(k > 0 for k in self.kept),
            "kept_fraction": round(self.kept_fraction, 4),
            "whole_frames": [i for i, k in enumerate(self.kept) if k == 1.0],
            "feather_px": self.feather_px,
            "color_shift": self.color_shift,
            "summary": self.summary,
        }


@dataclass(frozen=True)
class _MaskPlan:
    """One distinct mask, analysed once: where the output is generated, blended or kept."""

    kind: str  # "keep" (all 0), "generate" (all 255) or "partial"
    inside: np.ndarray | None = None  # flat indices of the pixels to regenerate
    band: np.ndarray | None = None  # flat indices of the blended kept pixels
    alpha: np.ndarray | None = None  # (len(band), 1) float32 weight of the generated pixel
    ring: np.ndarray | None = None  # flat indices of kept pixels that measure the colour shift
    kept: float = 0.0  # fraction of pixels taken from the source exactly


@dataclass(frozen=True)
class Analysis:
    """The masks of one run analysed (:func:`analyse`), before the frames they apply to exist:
    they depend on the masks and the settings alone, so a job has them made while the model
    runs (engine.job) and :func:`composite` only pastes."""

    mask: Any  # the masks analysed (the same object must reach composite)
    feather_px: int
    color_match: bool
    plans: list[_MaskPlan]


def analyse(mask: Sequence[Image.Image] | np.ndarray, *, feather_px: int, color_match: bool) -> Analysis:
    """Each distinct mask's plan (where the output is generated, blended and kept) for
    :func:`composite`'s ``analysed``. Raises ``ValueError`` for a negative ``feather_px``."""
    if feather_px < 0:
        raise ValueError(f"feather_px={feather_px}: must be 0 or more")
    reach = feather_px + (RING_PX if color_match else 0)
    plans = _plans(mask, reach=reach, feather_px=feather_px, ring=color_match)
    return Analysis(mask=mask, feather_px=feather_px, color_match=color_match, plans=plans)


class AnalysisAhead:
    """:func:`analyse` on a thread of its own, started as soon as the masks exist: on a GPU the
    analysis (a distance transform per distinct mask, 0.2 s for an 81-frame edit on 2 cores) is
    done while the model runs instead of after it. numpy releases the GIL for the heavy parts."""

    def __init__(self, mask: Sequence[Image.Image] | np.ndarray, *, feather_px: int, color_match: bool):
        self._done = threading.Event()
        self._analysis: Analysis | None = None
        self._thread = threading.Thread(
            target=self._run, args=(mask, feather_px, color_match), name="unison-masks", daemon=True
        )
        self._thread.start()

    def _run(self, mask: Any, feather_px: int, color_match: bool) -> None:
        try:
            self._analysis = analyse(mask, feather_px=feather_px, color_match=color_match)
        except Exception:  # composite analyses again and raises where its caller expects it
            log.debug("masks not analysed ahead", exc_info=True)
        finally:
            self._done.set()

    def result(self) -> Analysis | None:
        """The analysis (waiting for it), or ``None`` if it failed."""
        self._done.wait()
        return self._analysis


def composite(
    frames: np.ndarray,
    video: Sequence[Image.Image] | np.ndarray | None,
    mask: Sequence[Image.Image] | np.ndarray | None,
    *,
    feather_px: int,
    color_match: bool,
    in_place: bool = False,
    analysed: Analysis | None = None,
) -> Composited:
    """Paste the source back into the generated ``frames`` wherever ``mask`` keeps it.

    Args:
        frames: the decoded output, ``(F, H, W, 3)`` uint8 RGB: an array, or the generator's
            output left on its device as a torch tensor (a GPU), pasted there in place and then
            copied to the host once (the result's frames are an array either way).
        video: the F source frames the generator was given (PIL RGB at (W, H), or their
            ``(F, H, W, 3)`` uint8 array: :meth:`engine.prepare.Prepared.arrays`; inside the mask
            they are grey and never used), or ``None`` for a task that keeps nothing.
        mask: the F masks (PIL "L" at (W, H), or their ``(F, H, W, 1)`` uint8 array; 255 =
            regenerate, 0 = keep), or ``None``: nothing is kept (the pipeline reads a missing
            mask as "generate everything").
        feather_px: width in pixels of the blended band outside the mask (0 = hard edge).
        color_match: correct a measurable colour shift of the generated area (see the module).
        in_place: write into ``frames`` itself (the generator's output, which nothing else holds)
            instead of a copy: no second 100 MB array for an 81-frame 832×480 video.
        analysed: :func:`analyse` of this very ``mask`` with these settings, made beforehand;
            anything else (another mask, other settings) is ignored and the masks are analysed here.

    Returns:
        :class:`Composited`; ``frames`` itself is not modified unless ``in_place``.

    Raises:
        ValueError: ``frames``, ``video`` and ``mask`` disagree on the frame count or size, or
            ``feather_px`` is negative.
    """
    import numpy as np

    _check_frames(frames, feather_px)
    count, height, width = frames.shape[:3]
    if video is None or mask is None:
        return Composited(
            frames=_on_host(frames),
            kept=[0.0] * count,
            feather_px=feather_px,
            notes=["nothing kept from a source"],
        )
    _check_sequence("video", video, count, (width, height))
    _check_sequence("mask", mask, count, (width, height))

    # 1. Each distinct mask once (prepare gives one object for repeated masks; equal bytes too).
    if (
        analysed is None
        or analysed.mask is not mask  # the object itself: arrays compare by value
        or (analysed.feather_px, analysed.color_match) != (feather_px, color_match)
    ):
        analysed = analyse(mask, feather_px=feather_px, color_match=color_match)
    plans = analysed.plans

    # 2. The colour shift, pooled over every partly masked frame.
    def source(i: int) -> np.ndarray:  # (H*W, 3) uint8: a view of an array, else converted when needed
        if isinstance(video, np.ndarray):
            return video[i].reshape(-1, 3)
        im = video[i] if video[i].mode == "RGB" else video[i].convert("RGB")
        return np.asarray(im, dtype=np.uint8).reshape(-1, 3)

    if _is_tensor(frames):  # the generator's output, still on its device (a GPU)
        out, shift, shift_note = _on_device(frames, plans, video, color_match)
    else:
        shift, shift_note = None, None
        if color_match:
            shift, shift_note = _color_shift(frames, plans, source)
        # 3. The output, frame by frame.
        out = _pasted(frames, plans, source, shift, in_place=in_place)

    kept = [p.kept for p in plans]
    result = Composited(frames=out, kept=kept, feather_px=feather_px, color_shift=shift)
    result.notes = _notes(plans, feather_px, shift, shift_note)
    log.debug("composite: %s", result.summary)
    return result


def _pasted(
    frames: np.ndarray,
    plans: Sequence[_MaskPlan],
    source: Callable[[int], np.ndarray],
    shift: tuple[float, float, float] | None,
    *,
    in_place: bool,
) -> np.ndarray:
    """``frames`` (or a copy) with each frame's kept area from ``source(i)`` and its band
    blended; only the band is computed in floating point."""
    import numpy as np

    out = frames if in_place else frames.copy()
    flat = out.reshape(len(frames), -1, 3)
    for i, plan in enumerate(plans):
        if plan.kind == "generate":
            continue
        src = source(i)
        if plan.kind == "keep":
            flat[i] = src
            continue
        # The generated pixels still needed, taken (fancy indexing copies) before the source
        # is laid over the frame.
        gen = flat[i]
        inside = _corrected(gen[plan.inside], shift)
        band = gen[plan.band] if plan.band is not None and plan.band.size else None
        flat[i] = src
        flat[i, plan.inside] = inside
        if band is not None:
            s = src[plan.band].astype(np.float32)
            g = _corrected(band, shift).astype(np.float32)
            flat[i, plan.band] = np.clip(np.rint(s + plan.alpha * (g - s)), 0, 255).astype(np.uint8)
    return out


def _check_frames(frames: Any, feather_px: int) -> None:
    import numpy as np

    if (
        not (isinstance(frames, np.ndarray) or _is_tensor(frames))
        or str(frames.dtype) not in ("uint8", "torch.uint8")
        or frames.ndim != 4
        or frames.shape[-1] != 3
    ):
        raise ValueError(
            f"frames: expected a uint8 (F, H, W, 3) array, got {getattr(frames, 'shape', frames)!r}"
        )
    if feather_px < 0:
        raise ValueError(f"feather_px={feather_px}: must be 0 or more")


def _check_sequence(name: str, items: Sequence[Any], count: int, size: tuple[int, int]) -> None:
    if len(items) != count:
        raise ValueError(f"{name}: {len(items)} frames for {count} generated frames")
    if hasattr(items, "shape"):  # an array: (F, H, W, C)
        shape = tuple(items.shape)  # type: ignore[attr-defined]
        if shape[1:3] != (size[1], size[0]) or len(shape) != 4 or shape[3] not in (1, 3):
            raise ValueError(f"{name}: array of shape {shape}, the output is {size[0]}x{size[1]}")
        return
    for i, im in enumerate(items):
        if tuple(im.size) != size:
            raise ValueError(
                f"{name}[{i}]: size {im.size[0]}x{im.size[1]}, the output is {size[0]}x{size[1]}"
            )


def _plans(
    masks: Sequence[Image.Image] | np.ndarray, *, reach: int, feather_px: int, ring: bool
) -> list[_MaskPlan]:
    """One plan per frame; frames with the same mask object or the same mask bytes share one."""
    import numpy as np

    by_object: dict[int, _MaskPlan] = {}
    by_bytes: dict[bytes, _MaskPlan] = {}
    plans: list[_MaskPlan] = []
    for m in masks:
        plan = by_object.get(id(m))
        if plan is None:
            if isinstance(m, np.ndarray):  # a row of an (F, H, W, 1) array
                arr = m[..., 0]
            else:
                arr = np.asarray(m.convert("L") if m.mode != "L" else m, dtype=np.uint8)
            digest = hashlib.blake2b(arr.tobytes(), digest_size=16).digest()
            plan = by_bytes.get(digest)
            if plan is None:
                plan = by_bytes[digest] = _plan(arr >= 128, reach=reach, feather_px=feather_px, ring=ring)
            if not isinstance(m, np.ndarray):  # a view's id is reused once it is freed
                by_object[id(m)] = plan
        plans.append(plan)
    return plans


def _plan(inside: np.ndarray, *, reach: int, feather_px: int, ring: bool) -> _MaskPlan:
    """The plan of one mask (``inside``: (H, W) bool, True = regenerate)."""
    import numpy as np

    total = inside.size
    n_inside = int(inside.sum())
    if n_inside == 0:
        return _MaskPlan(kind="keep", kept=1.0)
    if n_inside == total:
        return _MaskPlan(kind="generate", kept=0.0)
    dist = _distance(inside, reach).reshape(-1)  # 0 inside, Euclidean px outside (inf past reach)
    inside_idx = np.flatnonzero(inside)
    band_idx = np.flatnonzero((dist > 0) & (dist <= feather_px)) if feather_px else np.empty(0, np.int64)
    # Generated at the mask's edge (d→0), source at the band's outer edge: a smoothstep in d.
    t = dist[band_idx].astype(np.float32) / np.float32(feather_px + 1)
    alpha = (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32)[:, None]
    ring_idx = np.flatnonzero((dist > 0) & (dist <= reach)) if ring else None
    kept = (total - n_inside - band_idx.size) / total
    return _MaskPlan(kind="partial", inside=inside_idx, band=band_idx, alpha=alpha, ring=ring_idx, kept=kept)


def _distance(inside: np.ndarray, reach: int) -> np.ndarray:
    """Euclidean distance of each pixel to the nearest True pixel of ``inside``, exact up to
    ``reach`` and ``inf`` beyond (float32, (H, W)).

    Only the mask's bounding box grown by ``reach`` is computed (nothing farther can be within
    reach). Separable, as exact distance transforms are: the distance along each column first
    (two running extrema, no per-pixel Python), then for each pixel the minimum over the columns
    within ``reach`` of (dx² + column distance²). Work is O(box area · reach).
    """
    import numpy as np

    h, w = inside.shape
    far = np.float32(np.inf)
    dist = np.full((h, w), far, dtype=np.float32)
    if reach <= 0:
        dist[inside] = 0
        return dist
    ys = np.flatnonzero(inside.any(axis=1))
    xs = np.flatnonzero(inside.any(axis=0))
    y0, y1 = max(0, int(ys[0]) - reach), min(h, int(ys[-1]) + reach + 1)
    x0, x1 = max(0, int(xs[0]) - reach), min(w, int(xs[-1]) + reach + 1)
    box = inside[y0:y1, x0:x1]
    bh, bw = box.shape
    rows = np.arange(bh, dtype=np.int32)[:, None]
    big = np.int32(bh + reach + 1)
    # The nearest True row above (at or before) and below (at or after) each pixel.
    above = np.maximum.accumulate(np.where(box, rows, -big), axis=0)
    below = np.minimum.accumulate(np.where(box, rows, 2 * big)[::-1], axis=0)[::-1]
    column = np.minimum(rows - above, below - rows).astype(np.float32)
    column[column > reach] = far
    squared = column * column
    padded = np.pad(squared, ((0, 0), (reach, reach)), constant_values=far)
    best = squared.copy()
    for dx in range(1, reach + 1):
        step = np.float32(dx * dx)
        np.minimum(best, padded[:, reach - dx : reach - dx + bw] + step, out=best)
        np.minimum(best, padded[:, reach + dx : reach + dx + bw] + step, out=best)
    near = np.sqrt(best)
    near[near > reach] = far
    dist[y0:y1, x0:x1] = near
    return dist


def _color_shift(
    frames: np.ndarray, plans: Sequence[_MaskPlan], source: Any
) -> tuple[tuple[float, float, float] | None, str | None]:
    """The mean (generated − source) per channel on the kept pixels next to the mask, pooled
    over the partly masked frames, and a note when it was not applied."""
    import numpy as np

    total = np.zeros(3, dtype=np.float64)
    n = 0
    for i, plan in enumerate(plans):
        if plan.kind != "partial" or plan.ring is None or not plan.ring.size:
            continue
        gen = frames[i].reshape(-1, 3)[plan.ring].astype(np.int32)
        src = source(i)[plan.ring].astype(np.int32)
        total += (gen - src).sum(axis=0)
        n += plan.ring.size
    return _shift_from(total, n)


def _shift_from(total: np.ndarray, n: int) -> tuple[tuple[float, float, float] | None, str | None]:
    """The shift to subtract from the summed (generated − source) differences of ``n`` pixels
    per channel, or ``None`` and a note saying why not."""
    import numpy as np

    if n < MIN_RING_PIXELS:
        return None, None if n == 0 else f"colour shift not measured ({n} pixels along the edge)"
    mean = total / n
    if float(np.abs(mean).max()) < MIN_SHIFT:
        return None, None
    if float(np.abs(mean).max()) > MAX_SHIFT:
        return None, f"colour difference {_signed(mean)} along the edge too large for a shift: not corrected"
    r, g, b = (round(float(v), 2) for v in mean)
    return (r, g, b), None


def _is_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch")  # no torch import for an array


def _on_host(frames: Any) -> np.ndarray:
    return frames.cpu().numpy() if _is_tensor(frames) else frames


def _on_device(
    frames: Any, plans: Sequence[_MaskPlan], video: Any, color_match: bool
) -> tuple[np.ndarray, tuple[float, float, float] | None, str | None]:
    """:func:`_color_shift` and :func:`_pasted` on the frames' own device, in place, with the
    same arithmetic (float32, rounded half to even), then the one copy to the host. The source
    goes to the device once, and each distinct plan's indices once (frames share plans)."""
    import numpy as np
    import torch

    device, count = frames.device, frames.shape[0]
    flat = frames.view(count, -1, 3)
    source = torch.from_numpy(uint8_frames(video)).to(device).view(count, -1, 3)
    moved: dict[tuple[int, str], torch.Tensor] = {}

    def on(plan: _MaskPlan, name: str) -> torch.Tensor:
        key = (id(plan), name)
        if key not in moved:
            moved[key] = torch.from_numpy(np.ascontiguousarray(getattr(plan, name))).to(device)
        return moved[key]

    shift, note = None, None
    if color_match:
        total, n = torch.zeros(3, dtype=torch.int64, device=device), 0
        for i, plan in enumerate(plans):
            if plan.kind == "partial" and plan.ring is not None and plan.ring.size:
                ring = on(plan, "ring")
                total += (flat[i, ring].long() - source[i, ring].long()).sum(dim=0)
                n += plan.ring.size
        shift, note = _shift_from(total.cpu().numpy().astype(np.float64), n)
    offset = None if shift is None else torch.tensor(shift, dtype=torch.float32, device=device)

    def corrected(pixels: torch.Tensor) -> torch.Tensor:
        if offset is None:
            return pixels
        return (pixels.float() - offset).round_().clamp_(0, 255).to(torch.uint8)

    for i, plan in enumerate(plans):
        if plan.kind == "generate":
            continue
        if plan.kind == "keep":
            flat[i].copy_(source[i])
            continue
        inside = on(plan, "inside")
        generated = corrected(flat[i, inside])
        band = on(plan, "band") if plan.band is not None and plan.band.size else None
        blended = None
        if band is not None:
            s, g = source[i, band].float(), corrected(flat[i, band]).float()
            blended = (s + on(plan, "alpha") * (g - s)).round_().clamp_(0, 255).to(torch.uint8)
        flat[i].copy_(source[i])
        flat[i, inside] = generated
        if blended is not None:
            flat[i, band] = blended
    return frames.cpu().numpy(), shift, note


def _corrected(pixels: np.ndarray, shift: tuple[float, float, float] | None) -> np.ndarray:
    """Generated ``pixels`` (N, 3) uint8 with ``shift`` subtracted (rounded, clipped)."""
    import numpy as np

    if shift is None:
        return pixels
    moved = pixels.astype(np.float32) - np.asarray(shift, dtype=np.float32)
    return np.clip(np.rint(moved), 0, 255).astype(np.uint8)


def _signed(values: Sequence[float] | np.ndarray) -> str:
    return "(" + ",".join(f"{round(float(v)):+d}" for v in values) + ")"


def _notes(
    plans: Sequence[_MaskPlan],
    feather_px: int,
    shift: tuple[float, float, float] | None,
    shift_note: str | None,
) -> list[str]:
    whole = [i for i, p in enumerate(plans) if p.kind == "keep"]
    partial = [p.kept for p in plans if p.kind == "partial"]
    notes: list[str] = []
    if whole:
        shown = ", ".join(str(i) for i in whole) if len(whole) <= 4 else f"{whole[0]}–{whole[-1]}"
        notes.append(f"{len(whole)} frame{'s' if len(whole) != 1 else ''} ({shown}) kept as the source's")
    if partial:
        lo, hi, mean = min(partial), max(partial), sum(partial) / len(partial)
        share = f"{mean:.0%}" if hi - lo < 0.01 else f"{lo:.0%}–{hi:.0%} (mean {mean:.0%})"
        counted = f"{len(partial)} frame{'s' if len(partial) != 1 else ''}"
        notes.append(f"kept {share} of the pixels of {counted} from the source")
        notes.append(f"{feather_px} px feathered band" if feather_px else "hard edge")
        if shift is not None:
            notes.append(f"colour shift {_signed(shift)} corrected")
    if shift_note:
        notes.append(shift_note)
    if not notes:
        notes.append("nothing kept from the source (every frame regenerated)")
    return notes

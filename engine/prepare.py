"""Source preparation: for each generation task, the function that turns a checked plan into what
``WanVACEPipeline`` takes (video, mask, reference images, size, frames).

Each task's row in :data:`engine.tasks.TASKS` names its function in :data:`PREPARERS`;
:func:`prepare` looks it up. Every function returns frames at the plan's output size, masks with
only 0 (keep) and 255 (regenerate), and notes on what was adjusted (padding, cropping). Finding
the region an edit repaints when no mask is given reads :mod:`engine.region`.
Identical frames (a grey filler, a mask repeated on every frame) may be the same PIL object:
treat prepared images as read-only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .annotators.segment import dilate
from .bounds import layout
from .config import Limits
from .control import JobControl
from .errors import InvalidRequest, shown
from .geometry import (
    GREY,
    ArrayFrames,
    Size,
    binarize,
    even_indices,
    fit_box,
    letterbox,
    resize_cover,
    uint8_frames,
)
from .media import open_image
from .region import Box, box_mask, clean_boxes, interpolate_boxes, object_phrase
from .source import source_for
from .video import VideoClip, probe_video, read_video
from .vocab import MediaKind, Role

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

    from .plan import CheckedPlan, MediaInput
    from .source import Source

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """Inputs for one VACE run. Masks: 255 = generate, 0 = keep."""

    width: int
    height: int
    num_frames: int
    #: num_frames RGB frames at (width, height): a list, or :class:`ArrayFrames` over an array
    video: Sequence[Image.Image] | None = None
    mask: Sequence[Image.Image] | None = None  # num_frames "L" frames at (width, height), the same
    reference_images: list[Image.Image] | None = None  # each letterboxed on white at (width, height)
    notes: list[str] = field(default_factory=list)
    #: Frames that precede this window in the output (video_extend: the source clip at the
    #: output size and rate); the window's first ``context`` frames are its last ones.
    prefix: list[Image.Image] | None = None
    context: int = 0
    #: What was extracted to make the inputs, returned beside the result so a user can check and
    #: reuse it: ``("control", frames)`` (a control signal), ``("mask", frames)`` (a mask found
    #: from words, white = regenerated). Frames at the output size.
    extras: list[tuple[str, list[Image.Image]]] = field(default_factory=list)
    #: ``video`` and ``mask`` as ``(F, H, W, 3)`` and ``(F, H, W, 1)`` uint8 arrays, made once
    #: (:meth:`arrays`) or given by a preparer that had them (the generator and the composite
    #: read these, never converting the images again).
    video_u8: np.ndarray | None = field(default=None, repr=False)
    mask_u8: np.ndarray | None = field(default=None, repr=False)

    def arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """``(video, mask)`` as uint8 arrays (``None`` where there is none), converted once."""
        if self.video is not None and self.video_u8 is None:
            self.video_u8 = uint8_frames(self.video)
        if self.mask is not None and self.mask_u8 is None:
            self.mask_u8 = uint8_frames(self.mask)
        return self.video_u8, self.mask_u8


@dataclass
class PrepContext:
    limits: Limits
    ground: Callable[[Image.Image, str], list[Box]] | None = None
    control: JobControl | None = None
    #: The inputs opened when the request was admitted, by the path in the plan: decoding reads
    #: them, never the path again (every input of the plan must have one).
    sources: Mapping[str, Source] = field(default_factory=dict)
    #: ``annotate(kind, frames)``: a control signal of ``kind`` ((F, H, W, 3) uint8 → same) from
    #: plain frames (engine.annotators); ``None``: only raw control inputs.
    annotate: Callable[[str, np.ndarray], np.ndarray] | None = None
    #: ``looks_like(frames)``: the control kind frames already look like, or ``None``.
    looks_like: Callable[[np.ndarray], str | None] | None = None
    #: ``segment(frames, phrase)``: (F, H, W) bool masks of what the phrase names, tracked; ``None``:
    #: no segmenter (the box grounding ``ground`` is the fallback).
    segment: Callable[[np.ndarray, str], np.ndarray] | None = None
    #: ``phrase(prompt)``: the object an edit prompt names, read by the planner (any language).
    phrase: Callable[[str], str | None] | None = None
    #: Pixels a mask found from words grows by on each side.
    dilate_px: int = 8

    def source(self, m: MediaInput) -> Source:
        return source_for(self.sources, m.path)


# ---------------------------------------------------------------------------------------------
# How each task's sources become VACE inputs.
#
# What WanVACEPipeline does with them (diffusers 0.42, ``preprocess_conditions``): ``video=None``
# becomes zeros in [-1, 1] (mid-grey) and ``mask=None`` all ones (generate everything); masks are
# thresholded at 0.5; the model sees ``video * (1 - mask)`` (kept pixels) and ``video * mask`` (the
# area to regenerate) as two latents. Reference images are letterboxed by the pipeline onto a
# white canvas of the output size; they arrive here already letterboxed, so that step is the
# identity. VACE's own annotators fill the area to regenerate with grey 128 (``MASK_COLOR``), so
# masked source pixels are greyed here too: the model never sees content it was not trained to see.

#: Frames of a source video on which the grounding model looks for the region to edit.
GROUND_SAMPLES = 4
#: A mask pixel at or above this is "regenerate" (255), below it "keep" (0).
MASK_THRESHOLD = 128


def _size(plan: CheckedPlan) -> Size:
    return plan.width, plan.height


def _check(ctx: PrepContext) -> None:
    if ctx.control is not None:
        ctx.control.check()


def _open(ctx: PrepContext, m: MediaInput, mode: str = "RGB") -> Image.Image:
    _check(ctx)
    return open_image(ctx.source(m), max_pixels=ctx.limits.max_input_pixels, mode=mode)


def _read(
    plan: CheckedPlan,
    ctx: PrepContext,
    m: MediaInput,
    notes: list[str],
    *,
    size: Size | None,
    num_frames: int | None = None,
    from_end: bool = False,
    pad: bool = True,
) -> VideoClip:
    """A video input at the plan's rate and frame count (or ``num_frames``), resized to ``size``."""
    _check(ctx)
    clip = read_video(
        ctx.source(m),
        fps=plan.fps,
        num_frames=plan.num_frames if num_frames is None else num_frames,
        size=size,
        from_end=from_end,
        pad=pad,
        max_pixels=ctx.limits.max_input_pixels,
        check=ctx.control.check if ctx.control is not None else None,
    )
    notes.extend(f"{m.role}: {n}" for n in clip.notes)
    return clip


def _grey(size: Size) -> Image.Image:
    from PIL import Image

    return Image.new("RGB", size, (GREY, GREY, GREY))


def _flat_mask(size: Size, value: int) -> Image.Image:
    from PIL import Image

    return Image.new("L", size, value)


def _grey_out(frame: Image.Image, mask: Image.Image) -> Image.Image:
    """``frame`` with the area to regenerate (mask 255) filled with grey, as VACE was trained."""
    from PIL import Image

    return Image.composite(_grey(frame.size), frame, mask)


def _has_white(masks: Sequence[Image.Image]) -> bool:
    if isinstance(masks, ArrayFrames):
        return bool(masks.array.max() >= MASK_THRESHOLD)
    return any(m.getextrema()[1] >= MASK_THRESHOLD for m in masks)


def _crop_note(role: Role, src: Size, out: Size) -> list[str]:
    """A note when covering the output crops a noticeable part of the source (aspect mismatch)."""
    sa, oa = src[0] / src[1], out[0] / out[1]
    if abs(sa - oa) / oa <= 0.02:
        return []
    return [f"{role}: {src[0]}×{src[1]} centre-cropped to the {out[0]}×{out[1]} output's aspect"]


def binary_masks(frames: np.ndarray) -> ArrayFrames:
    """``(F, H, W, 3)`` uint8 RGB frames as masks of only 0 and 255: Pillow's own grey
    (``convert("L")``: ITU-R 601 luma in 16-bit fixed point, ``(19595 R + 38470 G + 7471 B +
    2^15) >> 16``) thresholded at :data:`MASK_THRESHOLD`, computed on the arrays frame by frame.

    The weighted sum is taken in float32, where it is exact: each product and every partial sum
    is a whole number below 2^24 (at most 255 · 65536), so comparing it with the threshold in the
    same units gives Pillow's answer for every pixel, at a third of the cost of 32-bit integers.
    """
    import numpy as np

    weights = np.array([19595, 38470, 7471], np.float32)
    at_least = float((MASK_THRESHOLD << 16) - 0x8000)  # luma >= threshold, before the shift
    out = np.empty((*frames.shape[:3], 1), np.uint8)
    for i, frame in enumerate(frames):
        luma = frame.reshape(-1, 3).astype(np.float32) @ weights
        np.multiply(luma >= at_least, 255, out=out[i].reshape(-1), casting="unsafe")
    return ArrayFrames(out)


def _align_mask(mask: Image.Image, source: Size, out: Size) -> Image.Image:
    """A mask drawn on the source, brought to the output exactly as the source frames were."""
    from PIL import Image

    if mask.size != source:
        mask = mask.resize(source, Image.Resampling.BILINEAR)
    return binarize(resize_cover(mask, out), MASK_THRESHOLD)


# ---------------------------------------------------------------------------------------------
# The preparers, one per kind of task.


def prepare_text_only(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """text_to_image / text_to_video: no sources; the pipeline's defaults (grey video, all-ones mask)."""
    w, h = _size(plan)
    return Prepared(width=w, height=h, num_frames=plan.num_frames)


def prepare_image_edit(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """Source + the region to regenerate, brought to the output size by the same cover-crop: the
    white of a mask image, or (no mask) the object ``plan.target`` or the prompt names, segmented
    (or, without a segmenter, grounded as boxes) and returned beside the result."""
    size = _size(plan)
    src_in = plan.one(Role.SOURCE)
    source = _open(ctx, src_in)
    notes = _crop_note(Role.SOURCE, source.size, size)
    frame = resize_cover(source, size)
    extras: list[tuple[str, list[Image.Image]]] = []
    masks = plan.by_role(Role.MASK)
    if masks:
        mask_in = masks[0]
        mask = _open(ctx, mask_in, mode="L")
        if mask.size != source.size:
            notes.append(
                f"mask {mask.width}×{mask.height} stretched to the source's {source.width}×{source.height}"
            )
        out_mask = _align_mask(mask, source.size, size)
        if not _has_white([out_mask]):
            raise InvalidRequest.for_field(
                "mask", mask_in.path, "has no white (≥128) pixels in the output area: nothing would be edited"
            )
    else:
        (out_mask,) = _mask_from_words(plan, ctx, [frame], notes)
        extras.append(("mask", [out_mask]))
    return Prepared(
        width=size[0],
        height=size[1],
        num_frames=plan.num_frames,
        video=[_grey_out(frame, out_mask)],
        mask=[out_mask],
        notes=notes,
        extras=extras,
    )


def prepare_image_control(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """A control image as a 1-frame control video, all of it to generate: the signal of
    ``plan.control_kind`` extracted from a plain image at the output size, or the image as it is."""
    size = _size(plan)
    m = plan.one(Role.CONTROL)
    control = _open(ctx, m)
    notes = _crop_note(Role.CONTROL, control.size, size)
    frames, extras = _control_signal(plan, ctx, [resize_cover(control, size)], notes)
    return Prepared(
        width=size[0],
        height=size[1],
        num_frames=plan.num_frames,
        video=frames,
        mask=[_flat_mask(size, 255)],
        notes=notes,
        extras=extras,
    )


def _control_signal(
    plan: CheckedPlan, ctx: PrepContext, frames: list[Image.Image], notes: list[str]
) -> tuple[list[Image.Image], list[tuple[str, list[Image.Image]]]]:
    """The control frames VACE follows: extracted (``plan.control_kind``), or the input as it is
    (``raw``; unset: raw when the input already looks like a control signal, else depth)."""
    import numpy as np
    from PIL import Image

    kind = plan.control_kind
    pixels = np.stack([np.asarray(f) for f in frames])
    if kind != "raw":
        # A signal already extracted (skeletons on black, a grey map) is followed as it is:
        # extracting pose from a skeleton would lose it.
        seen = ctx.looks_like(pixels) if ctx.looks_like is not None else None
        if seen is not None:
            notes.append(f"control: the input looks like a {seen} signal already: used as it is (raw)")
            kind = "raw"
        elif kind is None:
            notes.append(
                "control: no control_kind given: depth extracted (say pose, edges, flow, gray or raw)"
            )
            kind = "depth"
    if kind == "raw":
        return frames, []
    if ctx.annotate is None:
        raise InvalidRequest.for_field(
            "control_kind", kind, "needs the annotators, which this engine has not got; give control_kind raw"
        )
    _check(ctx)
    out = ctx.annotate(kind, pixels)  # (F, H, W, 3) uint8 at the output size
    extracted = [Image.fromarray(f) for f in out]
    notes.append(f"control: {kind} extracted from the {len(frames)}-frame input (returned beside the result)")
    return extracted, [("control", extracted)]


def prepare_reference(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """image_reference / video_reference: the reference images letterboxed on white at the output size."""
    size = _size(plan)
    refs = [letterbox(_open(ctx, m), size, fill=(255, 255, 255)) for m in plan.by_role(Role.REFERENCE)]
    return Prepared(width=size[0], height=size[1], num_frames=plan.num_frames, reference_images=refs)


def prepare_anchor_frames(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """image_to_video / first_last_to_video: given images fix the first and/or last frame.

    The clip is grey and masked (255) except at the given frames (mask 0), which VACE keeps.
    """
    size = _size(plan)
    n = plan.num_frames
    anchors: dict[int, MediaInput] = {}  # at least one: the task's row says so (check_plan)
    for m in plan.by_role(Role.FIRST_FRAME):
        anchors[0] = m
    for m in plan.by_role(Role.LAST_FRAME):
        anchors[n - 1] = m
    video = [_grey(size)] * n
    mask = [_flat_mask(size, 255)] * n
    notes: list[str] = []
    keep = _flat_mask(size, 0)
    for i, m in sorted(anchors.items()):
        img = _open(ctx, m)
        notes.extend(_crop_note(m.role, img.size, size))
        video[i], mask[i] = resize_cover(img, size), keep
    return Prepared(width=size[0], height=size[1], num_frames=n, video=video, mask=mask, notes=notes)


def prepare_video_control(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """A control video as VACE's input video, all to generate: the signal of ``plan.control_kind``
    extracted from a plain video at the output size and rate, or the video as it is."""
    size = _size(plan)
    m = plan.one(Role.CONTROL)
    notes: list[str] = []
    clip = _read(plan, ctx, m, notes, size=size)
    frames, extras = _control_signal(plan, ctx, clip.images(), notes)
    n = len(frames)
    return Prepared(
        width=size[0],
        height=size[1],
        num_frames=n,
        video=frames,
        mask=[_flat_mask(size, 255)] * n,
        notes=notes,
        extras=extras,
    )


def prepare_video_edit(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """Source video + the region to regenerate.

    The region is, in order: a mask video (resampled like the source), a mask image applied to
    every frame, or, with neither, the object ``plan.target`` (else the one the prompt names)
    segmented and tracked through the clip by ``ctx.segment`` and dilated; without a segmenter,
    boxes found by ``ctx.ground`` on a few frames, interpolated over time and dilated.
    """
    size = _size(plan)
    src_in = plan.one(Role.SOURCE)
    notes: list[str] = []
    info = probe_video(ctx.source(src_in), max_pixels=ctx.limits.max_input_pixels)
    native = (info.width, info.height)
    notes.extend(_crop_note(Role.SOURCE, native, size))
    clip = _read(plan, ctx, src_in, notes, size=size)
    given = plan.by_role(Role.MASK)
    extras: list[tuple[str, list[Image.Image]]] = []
    if given:
        mask = _given_mask(plan, ctx, given[0], native, size, notes)
        if not _has_white(mask):
            raise InvalidRequest.for_field(
                "mask",
                given[0].path,
                "has no white (≥128) pixels in the output area: nothing would be edited",
            )
    else:
        mask = _mask_from_words(plan, ctx, clip.images(), notes)
        extras.append(("mask", mask))
    video, video_u8, mask_u8 = _greyed_out(clip.frames, mask)
    return Prepared(
        width=size[0],
        height=size[1],
        num_frames=len(video),
        video=video,
        mask=mask,
        notes=notes,
        extras=extras,
        video_u8=video_u8,
        mask_u8=mask_u8,
    )


def _greyed_out(
    frames: np.ndarray, mask: Sequence[Image.Image]
) -> tuple[ArrayFrames, np.ndarray, np.ndarray]:
    """The decoded ``(F, H, W, 3)`` frames with the area to regenerate grey (as :func:`_grey_out`
    does to one image; the masks hold only 0 and 255), in place on the decoded array: the frames
    as :class:`ArrayFrames`, and the arrays the generator and the composite read
    (:meth:`Prepared.arrays`)."""
    import torch  # lazy: loaded with the generator; its fill is threaded (0.06 s, numpy's 0.18 s)

    masks = uint8_frames(mask)  # (F, H, W, 1), each distinct mask converted once
    regenerated = torch.from_numpy(masks).ge(MASK_THRESHOLD)  # broadcast over the 3 channels
    torch.from_numpy(frames).masked_fill_(regenerated, GREY)  # in place: frames are this clip's own
    return ArrayFrames(frames), frames, masks


def _given_mask(
    plan: CheckedPlan, ctx: PrepContext, m: MediaInput, native: Size, size: Size, notes: list[str]
) -> Sequence[Image.Image]:
    from PIL import Image

    n = plan.num_frames
    if m.kind is MediaKind.IMAGE:
        img = _open(ctx, m, mode="L")
        if img.size != native:
            notes.append(f"mask {img.width}×{img.height} stretched to the source's {native[0]}×{native[1]}")
        one = _align_mask(img, native, size)
        return [one] * n  # the same mask on every frame
    info = probe_video(ctx.source(m), max_pixels=ctx.limits.max_input_pixels)
    same = (info.width, info.height) == native
    if not same:
        notes.append(
            f"mask video {info.width}×{info.height} stretched to the source's {native[0]}×{native[1]}"
        )
    if same:
        # Read straight at the output size by the same cover-crop as the source: already aligned.
        # (Stretching these frames back to the source size and cropping again would crop twice.)
        clip = _read(plan, ctx, m, notes, size=size)
        return binary_masks(clip.frames)
    clip = _read(plan, ctx, m, notes, size=None)
    return [_align_mask(Image.fromarray(f).convert("L"), native, size) for f in clip.frames]


def prepare_outpaint(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """image_outpaint / video_outpaint: the source placed inside the output, the new area masked.

    With ``plan.margins`` the source covers the inner rectangle (width-left-right)×(height-top-bottom)
    at (left, top); without, it is fitted, centred, inside the output size.
    """
    size = _size(plan)
    m = plan.one(Role.SOURCE)
    notes: list[str] = []
    if m.kind is MediaKind.IMAGE:
        image = _open(ctx, m)
        native = image.size
    else:
        info = probe_video(ctx.source(m), max_pixels=ctx.limits.max_input_pixels)
        native = (info.width, info.height)
    left, top, iw, ih = _inner_rect(plan, native, size)
    if (iw, ih) == size:
        raise InvalidRequest.for_field(
            "margins",
            None if plan.margins is None else plan.margins.model_dump(),
            f"the {native[0]}×{native[1]} source already fills the {size[0]}×{size[1]} output: "
            "nothing to outpaint (give margins or an output size of another aspect)",
        )
    if plan.margins is not None:
        notes.extend(_crop_note(Role.SOURCE, native, (iw, ih)))
    if m.kind is MediaKind.IMAGE:
        inner = [resize_cover(image, (iw, ih))]
    else:
        inner = _read(plan, ctx, m, notes, size=(iw, ih)).images()
    mask = _flat_mask(size, 255)
    mask.paste(0, (left, top, left + iw, top + ih))
    video = []
    for img in inner:
        canvas = _grey(size)
        canvas.paste(img, (left, top))
        video.append(canvas)
    return Prepared(
        width=size[0],
        height=size[1],
        num_frames=len(video),
        video=video,
        mask=[mask] * len(video),
        notes=notes,
    )


def _inner_rect(plan: CheckedPlan, native: Size, size: Size) -> tuple[int, int, int, int]:
    if plan.margins is None:
        return fit_box(native, size)
    mg = plan.margins
    return mg.left, mg.top, size[0] - mg.left - mg.right, size[1] - mg.top - mg.bottom


def prepare_video_extend(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """Continue a clip by ``plan.num_frames`` new frames: the whole clip (at the plan's rate and
    size, up to the longest video) is the output's ``prefix``; the first window opens on its last
    ``context_frames`` frames, kept (mask 0), and generates the rest (grey, mask 255)."""
    size = _size(plan)
    c = plan.context_frames  # check_plan fills it for video_extend
    m = plan.one(Role.SOURCE)
    notes: list[str] = []
    # The whole clip comes back in the output (at most the longest video it may hold), read
    # once; its end is the context. No padding: repeating a frame at the end of the context
    # would make the continuation start from a frozen picture; a short source just gives fewer
    # context frames.
    longest = int(ctx.limits.max_duration_s * plan.fps) + 1
    read: list[str] = []
    clip = _read(plan, ctx, m, read, size=size, num_frames=longest, from_end=True, pad=False)
    # "gave only N of <longest>" is the normal case here (the whole clip is wanted).
    notes.extend(n for n in read if "gave only" not in n)
    frames = clip.images()
    if clip.source_frames and len(frames) >= longest:
        notes.append(
            f"source: longer than {ctx.limits.max_duration_s:g} s; only its last {longest} frames are kept"
        )
    got = min(c, len(frames))
    if got < c:
        notes.append(f"source: only {len(frames)} frames, fewer than the {c} context frames asked")
    first = layout(plan.num_frames, window=ctx.limits.max_frames, overlap=c, first_context=got)[0]
    window = prepare_window(size, first.total, frames[len(frames) - first.context :])
    window.prefix, window.notes = frames, notes
    return window


def prepare_window(
    size: Size, total: int, context: Sequence[Image.Image], *, at_end: bool = False
) -> Prepared:
    """A window of a chain: ``context`` frames kept (mask 0) at its start (or its end), the rest
    grey and generated (mask 255)."""
    c = len(context)
    grey = [_grey(size)] * (total - c)
    keep, make = _flat_mask(size, 0), _flat_mask(size, 255)
    video = [*grey, *context] if at_end else [*context, *grey]
    mask = [make] * (total - c) + [keep] * c if at_end else [keep] * c + [make] * (total - c)
    return Prepared(width=size[0], height=size[1], num_frames=total, video=video, mask=mask, context=c)


# ---------------------------------------------------------------------------------------------
# The region to edit when no mask is given: segmented, or grounded as boxes (engine.region holds
# the words and the box arithmetic).


def _edit_phrase(plan: CheckedPlan, ctx: PrepContext, notes: list[str]) -> str:
    """The object to find: ``plan.target``, else what the planner reads in the prompt, else the
    English heuristic :func:`engine.region.object_phrase`, else the whole prompt."""
    if plan.target:
        return plan.target.strip()
    if ctx.phrase is not None:
        read = ctx.phrase(plan.prompt)
        if read:
            notes.append(f"edit region: {shown(read)}, read from the prompt by the planner")
            return read
    return object_phrase(plan.prompt) or plan.prompt.strip()


def _mask_from_words(
    plan: CheckedPlan, ctx: PrepContext, frames: list[Image.Image], notes: list[str]
) -> list[Image.Image]:
    """Masks (255 = regenerate) of the object the request names, one per frame: segmented (and
    tracked) when a segmenter is configured, else grounded boxes."""
    import numpy as np
    from PIL import Image

    if ctx.segment is None:
        if ctx.ground is not None:
            notes.append("no segmenter configured: the edit region is the planner's grounding boxes")
        return _auto_mask(plan, ctx, frames, notes)
    phrase = _edit_phrase(plan, ctx, notes)
    _check(ctx)
    found = ctx.segment(np.stack([np.asarray(f) for f in frames]), phrase)  # (F, H, W) bool
    if not found.any():
        raise InvalidRequest.for_field(
            "mask",
            None,
            f"no region matching {shown(phrase)} was found in the source; give a mask (white = "
            "regenerate) or another target",
        )
    if ctx.dilate_px > 0:
        # Segmentation edges are tight: pixels left unmasked at the object's rim show as a halo.
        found = dilate(found, ctx.dilate_px)
    masks = [Image.fromarray(np.where(m, 255, 0).astype(np.uint8), mode="L") for m in found]

    notes.append(
        f"edit region for {shown(phrase)} segmented on {int(found.any(axis=(1, 2)).sum())} of {len(frames)} "
        f"frame(s), grown by {ctx.dilate_px} px (returned beside the result)"
    )
    return masks


def _auto_mask(
    plan: CheckedPlan, ctx: PrepContext, frames: list[Image.Image], notes: list[str]
) -> list[Image.Image]:
    if ctx.ground is None:
        raise InvalidRequest.for_field(
            "mask",
            None,
            f"{plan.task} without a mask needs a segmenter or the planner's grounding to find the region "
            "to edit, and neither is configured; give a mask (white = regenerate)",
        )
    phrase = _edit_phrase(plan, ctx, notes)
    size = frames[0].size
    keys = even_indices(len(frames), min(GROUND_SAMPLES, len(frames)))
    found: dict[int, list[Box]] = {}
    for i in keys:
        _check(ctx)
        boxes = clean_boxes(ctx.ground(frames[i], phrase), size)
        if boxes:
            found[i] = boxes
    if not found:
        raise InvalidRequest.for_field(
            "mask",
            None,
            f"no region matching {shown(phrase)} was found in the source video (looked at frames "
            f"{keys}); give a mask (image or video, white = regenerate)",
        )
    notes.append(
        f"edit region for {shown(phrase)} found automatically on frames {sorted(found)} of {keys}, "
        "interpolated over the clip"
    )
    return [box_mask(size, boxes) for boxes in interpolate_boxes(found, len(frames))]


#: Each task row's preparation function, by the name the row gives (:attr:`TaskSpec.prepare
#: <engine.tasks.TaskSpec.prepare>`): the table names them, so it imports nothing of this module.
PREPARERS: dict[str, Callable[[CheckedPlan, PrepContext], Prepared]] = {
    "text_only": prepare_text_only,
    "image_edit": prepare_image_edit,
    "image_control": prepare_image_control,
    "reference": prepare_reference,
    "anchor_frames": prepare_anchor_frames,
    "video_control": prepare_video_control,
    "video_edit": prepare_video_edit,
    "outpaint": prepare_outpaint,
    "video_extend": prepare_video_extend,
}


# ---------------------------------------------------------------------------------------------
# The entry point.


def prepare(plan: CheckedPlan, ctx: PrepContext) -> Prepared:
    """The generator's inputs for a checked generation plan (:func:`engine.plan.check_plan`), by
    the preparation function its task's row names.

    Raises:
        InvalidRequest: sources that cannot make the task (an all-black mask, no region found to
            edit, ...).
        InputRefused: an input file that is missing, corrupt or too large.
        Cancelled: ``ctx.control`` was cancelled between decodes.
    """
    started = time.perf_counter()
    prepared = PREPARERS[plan.spec.prepare](plan, ctx)  # named on every generation task's row
    log.info(
        "prepared %s: %d×%d, %d frames, video=%s mask=%s refs=%s in %.2fs",
        plan.task,
        prepared.width,
        prepared.height,
        prepared.num_frames,
        None if prepared.video is None else len(prepared.video),
        None if prepared.mask is None else len(prepared.mask),
        None if prepared.reference_images is None else len(prepared.reference_images),
        time.perf_counter() - started,
    )
    return prepared

"""Understanding and grounding: Qwen2.5-VL answering about text, images and videos, and finding things.

These run on the same loaded model as planning (a :class:`~engine.planners.qwen_model.QwenModel`;
:class:`~engine.planners.qwen.QwenPlanner`'s ``understand`` and ``ground`` methods call the
functions here) but are not planning, so they live in their own module:

- :func:`understand` answers a question. Images go in as images, decoded reduced to the
  understanding pixel budget (eight large inputs never sit in memory at full size); videos go in
  as real video (frames sampled at ``understanding.video_fps``, with their timing), decoded from
  the already-opened :class:`~engine.source.Source`, never reopened by path.
- :func:`ground` asks for the boxes of a phrase in an image (the video-edit mask when no mask
  file is given); :func:`parse_boxes` reads the answer and :func:`scale_boxes` maps it back from
  the size the model saw to the image's own.

Which understanding task a request is (text, image, video) is :func:`engine.tasks.understanding_task`.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .errors import InputRefused, InvalidRequest
from .media import open_image
from .planners.instruct import json_values
from .source import source_for
from .video import VideoClip, probe_video, read_video
from .vocab import MediaKind

if TYPE_CHECKING:
    from PIL import Image

    from .control import JobControl
    from .plan import MediaInput
    from .planners.qwen_model import QwenModel
    from .source import Source

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

#: Pixel floors handed to the processors (Qwen's own: 4 patches of 28 px for images; 128 for
#: video frames, as qwen-vl-utils does), lowered to the configured ceiling when that is smaller.
IMAGE_MIN_PIXELS = 4 * 28 * 28
VIDEO_MIN_PIXELS = 128 * 28 * 28


# ---------------------------------------------------------------------------------------------
# Understanding.


def understand(
    qwen: QwenModel,
    prompt: str,
    media: Sequence[MediaInput],
    *,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    control: JobControl | None = None,
    sources: Mapping[str, Source] | None = None,
) -> str:
    """Answer ``prompt`` about the images and videos in ``media`` (text alone works too).

    Images are passed as images and videos as real video input (frames sampled at
    ``understanding.video_fps``, at most ``video_max_frames``), each frame at most
    ``understanding.max_pixels``: images are decoded reduced to that budget, so eight large
    inputs never sit in memory at full size. ``sources`` are the opened inputs by path, one for
    each of ``media`` (decoded from, never reopened by path; a path without one is refused).
    ``temperature`` 0 is greedy; ``None`` takes the configured default, as does ``max_new_tokens``.
    """
    defaults = qwen.config.understanding
    max_new_tokens = defaults.max_new_tokens if max_new_tokens is None else max_new_tokens
    temperature = defaults.temperature if temperature is None else temperature
    if max_new_tokens < 1:
        raise InvalidRequest.for_field("max_new_tokens", max_new_tokens, "must be at least 1")
    if temperature < 0:
        raise InvalidRequest.for_field("temperature", temperature, "must be 0 (greedy) or more")
    qwen.load()
    check = control.check if control is not None else None

    # 1. Decode each input from its opened source, reduced to the pixel budget.
    images, videos, metadata, content = _decode_media(qwen, media, sources or {}, check)
    # 2. The chat with one placeholder per input, then the processor's tensors.
    content.append({"type": "text", "text": prompt})
    text = qwen.chat_text([{"role": "user", "content": content}], generation_prompt=True)
    inputs = vision_inputs(qwen, text, images, videos, metadata)
    if check:
        check()
    # 3. Generate, reporting each token to ``control``.
    gen = qwen.generation_config(max_new_tokens, temperature, plain_greedy=False)
    out = qwen.generate(inputs, gen, control)
    return qwen.decode(out[0, inputs["input_ids"].shape[1] :])


def _decode_media(
    qwen: QwenModel,
    media: Sequence[MediaInput],
    sources: Mapping[str, Source],
    check: Callable[[], None] | None,
) -> tuple[list[Image.Image], list[Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(images, videos as (F, H, W, 3) uint8 frames, their metadata, the chat content so far)."""
    images: list[Image.Image] = []
    videos: list[Any] = []
    metadata: list[dict[str, Any]] = []
    content: list[dict[str, Any]] = []
    for m in media:
        if check:
            check()
        source = source_for(sources, m.path)
        if m.kind is MediaKind.IMAGE:
            images.append(
                open_image(
                    source,
                    max_pixels=qwen.config.limits.max_input_pixels,
                    reduce_to_pixels=qwen.config.understanding.max_pixels,
                )
            )
            content.append({"type": "image"})
        else:
            clip = _read_video(qwen, source, check)
            n = len(clip.frames)
            videos.append(clip.frames)  # (F, H, W, 3) uint8
            metadata.append({"total_num_frames": n, "fps": clip.fps, "frames_indices": list(range(n))})
            content.append({"type": "video"})
    return images, videos, metadata, content


def _read_video(qwen: QwenModel, source: Source, check: Callable[[], None] | None) -> VideoClip:
    """Frames at the understanding rate, decoded straight to the pixel budget."""
    u = qwen.config.understanding
    limit = qwen.config.limits.max_input_pixels  # the same input limit generation applies
    info = probe_video(source, max_pixels=limit)
    size = None
    if info.width * info.height > u.max_pixels:
        # Decode straight to the pixel budget (aspect kept) instead of holding full frames.
        s = math.sqrt(u.max_pixels / (info.width * info.height))
        size = (max(2, round(info.width * s / 2) * 2), max(2, round(info.height * s / 2) * 2))
    return read_video(
        source,
        fps=u.video_fps,
        max_frames=u.video_max_frames,
        size=size,
        max_pixels=limit,
        check=check,
    )


def vision_inputs(
    qwen: QwenModel,
    text: str,
    images: list[Image.Image],
    videos: list[Any],
    metadata: list[dict[str, Any]],
) -> dict[str, Any]:
    """The processor's whole output (ids, pixels, grids, mm_token_type_ids, second_per_grid_ts)."""
    max_px = qwen.config.understanding.max_pixels
    try:
        inputs = qwen.processor(
            text=[text],
            images=images or None,
            videos=videos or None,
            images_kwargs={"size": {"shortest_edge": min(IMAGE_MIN_PIXELS, max_px), "longest_edge": max_px}},
            videos_kwargs={
                "size": {"shortest_edge": min(VIDEO_MIN_PIXELS, max_px), "longest_edge": max_px},
                # Frames were sampled by read_video at video_fps; the metadata tells the processor
                # their real rate so the temporal positions (second_per_grid_ts) are right.
                "do_sample_frames": False,
                "video_metadata": metadata or None,
                # qwen-vl-utils' bound on a whole video's pixels (on top of max_pixels per frame).
                "cap_pixels_per_frame": True,
            },
            return_tensors="pt",
        )
    except ValueError as exc:  # e.g. an aspect ratio over 200:1, which Qwen's resizer refuses
        raise InputRefused(f"an input image or video cannot be prepared for Qwen2.5-VL: {exc}") from None
    inputs = inputs.to(qwen.device)
    for key in ("pixel_values", "pixel_values_videos"):
        # Only the pixels take the model's dtype: second_per_grid_ts stays exact in float32.
        if key in inputs:
            inputs[key] = inputs[key].to(qwen.dtype)
    return inputs


# ---------------------------------------------------------------------------------------------
# Grounding.


def ground(qwen: QwenModel, image: Image.Image, phrase: str) -> list[Box]:
    """Boxes ``(x0, y0, x1, y1)`` of ``phrase`` in ``image``, in that image's pixels.

    Qwen2.5-VL answers in absolute coordinates of the image it was shown (resized by the
    processor); they are scaled back. An answer with no readable box gives ``[]``.
    """
    qwen.load()
    image = image.convert("RGB")
    content = [
        {"type": "image"},
        {
            "type": "text",
            "text": f"Locate every {phrase} in the image and output the bbox coordinates in JSON format.",
        },
    ]
    text = qwen.chat_text([{"role": "user", "content": content}], generation_prompt=True)
    inputs = vision_inputs(qwen, text, [image], [], [])
    _, grid_h, grid_w = (int(v) for v in inputs["image_grid_thw"][0])
    patch = qwen.processor.image_processor.patch_size
    shown = (grid_w * patch, grid_h * patch)  # (w, h) the model saw
    out = qwen.generate(inputs, qwen.generation_config(qwen.ground_max_new_tokens, 0.0, plain_greedy=True))
    answer = qwen.tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    boxes = scale_boxes(parse_boxes(answer), shown, image.size)
    log.info("grounded %r: %d box(es) from %r", phrase, len(boxes), answer[:120])
    return boxes


_NUM = r"(-?\d+(?:\.\d+)?)"
_BOX_RE = re.compile(r"[\[(]\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*[\])]")


def _boxes_in(value: Any) -> list[list[Any]]:
    if isinstance(value, dict):
        for key in ("bbox_2d", "bbox", "box", "box_2d"):
            if key in value:
                return [value[key]]
        return [b for v in value.values() for b in _boxes_in(v)]
    if isinstance(value, list):
        if len(value) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [value]
        return [b for v in value for b in _boxes_in(v)]
    return []


def parse_boxes(text: str) -> list[Box]:
    """Boxes ``(x0, y0, x1, y1)`` in a grounding answer, in the answer's own coordinates.

    Reads Qwen2.5-VL's JSON (``[{"bbox_2d": [x0, y0, x1, y1], "label": ...}]``, fenced or not)
    and, failing that, any bracketed group of four numbers. Corners are put in order; empty and
    repeated boxes are dropped. Nothing usable gives ``[]``.
    """
    raw: list[list[Any]] = [b for v in json_values(text) for b in _boxes_in(v)]
    if not raw:
        raw = [list(m.groups()) for m in _BOX_RE.finditer(text)]
    boxes: list[Box] = []
    for b in raw:
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in b)
        except (TypeError, ValueError):
            continue
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if box[2] > box[0] and box[3] > box[1] and box not in boxes:
            boxes.append(box)
    return boxes


def scale_boxes(boxes: Sequence[Box], src: tuple[int, int], dst: tuple[int, int]) -> list[Box]:
    """Map boxes from an image of size ``src`` (w, h) to one of size ``dst``, clipped to it."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    out: list[Box] = []
    for x0, y0, x1, y1 in boxes:
        box = (
            min(max(x0 * sx, 0.0), dst[0]),
            min(max(y0 * sy, 0.0), dst[1]),
            min(max(x1 * sx, 0.0), dst[0]),
            min(max(y1 * sy, 0.0), dst[1]),
        )
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


# ---------------------------------------------------------------------------------------------
# The object of an edit.

#: Longest phrase taken as an edit's object (an answer that runs on is not a phrase).
TARGET_MAX_WORDS = 6
_TARGET_QUESTION = (
    "An image or video edit request follows. Which object in the picture should be changed, "
    "removed or replaced? Answer with that object only, as a short English noun phrase, "
    "nothing else.\nRequest: {prompt}"
)


def edit_target(qwen: QwenModel, prompt: str) -> str | None:
    """The object an edit ``prompt`` names, in a few English words, as the planner model reads it
    (so a request in any language it reads works); ``None`` when the answer is not a short phrase."""
    answer = qwen.reply([{"role": "user", "content": _TARGET_QUESTION.format(prompt=prompt)}], 16)
    line = answer.strip().splitlines()[0] if answer.strip() else ""
    phrase = line.strip(" \t\"'`.,;:!?").removeprefix("the ").strip()
    words = phrase.split()
    if not words or len(words) > TARGET_MAX_WORDS or not any(c.isalpha() for c in phrase):
        log.info("no edit target in the planner's answer %r", answer[:80])
        return None
    return phrase

"""Previews a calling model can look at: an image downscaled, a video as a contact sheet.

A video's first frame says nothing of its motion, so its preview is a sheet of evenly spaced
frames (:data:`SHEET_FRAMES` at most, first and last included), tiled in reading order, each
labelled with its time, at most :data:`SHEET_WIDTH` pixels wide and :data:`PREVIEW_MAX_BYTES` as a
JPEG. The functions take frames in memory (uint8 ``(H, W, 3)`` arrays), so the writer can make the
preview from the frames it encodes, without reading the file back (:func:`make_preview`, called by
``engine.outputs`` for every file it writes); a result that carries no preview has its file read
back (:func:`file_sheet`).

numpy and Pillow are imported inside the functions: importing the engine's light modules (the CLI's
help, the server's start) stays free of them.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .results import Preview

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

#: A picture's preview: its longest side at most this (the MCP layer scales it further down).
MAX_SIDE = 1024
#: Frames a video's sheet shows at most (4-6 let a model judge the motion; more get too small).
SHEET_FRAMES = 6
#: Widest sheet, in pixels.
SHEET_WIDTH = 1024
#: Pixels between the tiles of a sheet (grey), so that frames alike still read as separate.
SHEET_GAP = 2
#: Largest preview JPEG: a result holds one per file, and clients cap a whole result near 1 MB.
PREVIEW_MAX_BYTES = 200_000
#: JPEG qualities tried in turn until the preview fits its byte budget.
_QUALITIES = (85, 70, 55, 40)


def file_sheet(
    path: Path | str,
    num_frames: int,
    fps: float | None,
    *,
    width: int = SHEET_WIDTH,
    max_bytes: int = PREVIEW_MAX_BYTES,
) -> bytes:
    """The contact sheet of the video written at ``path`` (:func:`contact_sheet`), its frames at
    :func:`sheet_indices` decoded one at a time, so that a long video is never held whole."""
    import av

    indices = sheet_indices(num_frames)
    wanted, frames, found = set(indices), [], []
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames.append(frame.to_ndarray(format="rgb24"))
                found.append(i)
            if i >= indices[-1]:
                break
    if not frames:
        raise ValueError(f"{path} has no video frame")
    return contact_sheet(frames, labels=frame_labels(found, fps), width=width, max_bytes=max_bytes)


def sheet_indices(num_frames: int, count: int = SHEET_FRAMES) -> list[int]:
    """``count`` frame indices evenly spaced from the first frame to the last (all of a shorter video)."""
    n = max(1, min(count, num_frames))
    if n == 1:
        return [0]
    return [round(i * (num_frames - 1) / (n - 1)) for i in range(n)]


def video_sheet(frames: np.ndarray | Sequence[np.ndarray], fps: float | None, **kw: int) -> bytes:
    """A video's contact sheet (JPEG) from all its frames, ``(T, H, W, 3)`` uint8: the frames at
    :func:`sheet_indices` tiled by :func:`contact_sheet`, each labelled with its time at ``fps``."""
    picked = sheet_indices(len(frames))
    return contact_sheet([frames[i] for i in picked], labels=frame_labels(picked, fps), **kw)


def frame_labels(indices: Sequence[int], fps: float | None) -> list[str]:
    """Each frame's label: its time at ``fps`` (``2.5 s``), else its index (``frame 40``)."""
    return [f"{i / fps:.1f} s" if fps else f"frame {i}" for i in indices]


def contact_sheet(
    frames: Sequence[np.ndarray],
    *,
    labels: Sequence[str] = (),
    width: int = SHEET_WIDTH,
    max_bytes: int = PREVIEW_MAX_BYTES,
) -> bytes:
    """``frames`` (each ``(H, W, 3)`` uint8, one size) tiled in reading order as one JPEG at most
    ``width`` wide and ``max_bytes`` long: 2 columns for 4 frames, 3 for 5-6 (one row up to 3).
    Frames are never enlarged."""
    from PIL import Image, ImageDraw

    if not frames:
        raise ValueError("a contact sheet needs at least one frame")
    n = len(frames)
    cols = n if n <= 3 else math.ceil(n / 2)
    rows = math.ceil(n / cols)
    h, w = frames[0].shape[:2]
    tile_w = max(1, min(w, (width - (cols - 1) * SHEET_GAP) // cols))
    tile_h = max(1, round(h * tile_w / w))
    step_x, step_y = tile_w + SHEET_GAP, tile_h + SHEET_GAP
    sheet = Image.new("RGB", (step_x * cols - SHEET_GAP, step_y * rows - SHEET_GAP), (128, 128, 128))
    draw = ImageDraw.Draw(sheet)
    for k, frame in enumerate(frames):
        x, y = (k % cols) * step_x, (k // cols) * step_y
        sheet.paste(Image.fromarray(frame).convert("RGB").resize((tile_w, tile_h), Image.BILINEAR), (x, y))
        if k < len(labels):
            # A dark box behind the text keeps it legible on any frame.
            box = draw.textbbox((x + 3, y + 2), labels[k])
            draw.rectangle((box[0] - 2, box[1] - 1, box[2] + 2, box[3] + 1), fill=(0, 0, 0))
            draw.text((x + 3, y + 2), labels[k], fill=(255, 255, 255))
    return jpeg(sheet, max_bytes)


def make_preview(frames: np.ndarray, fps: float | None = None) -> Preview:
    """The preview of an output's ``(F, H, W, 3)`` uint8 frames, made when it is written: the
    picture scaled down (F = 1), or a video's contact sheet labelled with times at ``fps``."""
    from PIL import Image

    if len(frames) == 1:
        indices, data = [0], image_preview(frames[0], MAX_SIDE)
    else:
        indices = sheet_indices(len(frames))
        data = contact_sheet([frames[i] for i in indices], labels=frame_labels(indices, fps))
    with Image.open(io.BytesIO(data)) as img:  # reads the header only
        width, height = img.size
    return Preview(data=data, width=width, height=height, frames=indices)


def image_preview(image: np.ndarray | Image.Image, side: int, max_bytes: int = PREVIEW_MAX_BYTES) -> bytes:
    """An image (``(H, W, 3)`` uint8 or PIL) as a JPEG whose longest side is at most ``side``."""
    from PIL import Image

    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    img = img.convert("RGB")
    img.thumbnail((side, side))
    return jpeg(img, max_bytes)


def jpeg(img: Image.Image, max_bytes: int = PREVIEW_MAX_BYTES) -> bytes:
    """``img`` as a JPEG of at most ``max_bytes``: lower qualities first, then smaller sizes."""
    while True:
        for quality in _QUALITIES:
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality)
            if buf.tell() <= max_bytes:
                return buf.getvalue()
        if min(img.size) <= 16:
            return buf.getvalue()  # as small as a preview gets; its budget cannot be met
        img = img.resize((max(1, img.width * 3 // 4), max(1, img.height * 3 // 4)))


__all__ = [
    "MAX_SIDE",
    "PREVIEW_MAX_BYTES",
    "SHEET_FRAMES",
    "SHEET_GAP",
    "SHEET_WIDTH",
    "contact_sheet",
    "frame_labels",
    "image_preview",
    "make_preview",
    "jpeg",
    "sheet_indices",
    "video_sheet",
]

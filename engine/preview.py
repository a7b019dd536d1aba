"""Small JPEG previews of an output, made from its frames in memory when it is written.

A picture's preview is the picture scaled down (longest side :data:`MAX_SIDE` at most); a
video's is a contact sheet: :data:`SHEET_FRAMES` evenly spaced frames (first and last
included) tiled in rows, at most :data:`SHEET_WIDTH` pixels wide. Either is at most
:data:`MAX_BYTES` (the JPEG quality steps down until it fits). Nothing is read back from disk.

Heavy imports (Pillow, numpy) happen inside functions so ``import engine`` stays cheap.
"""

from __future__ import annotations

import io
import logging
from typing import TYPE_CHECKING

from .geometry import even_indices
from .results import Preview

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)

#: A picture's preview: its longest side at most this (the MCP layer scales it further down).
MAX_SIDE = 1024
#: A video's contact sheet: this many frames, at most this wide, in rows of :data:`SHEET_COLUMNS`.
SHEET_FRAMES = 6
SHEET_WIDTH = 1024
SHEET_COLUMNS = 3
#: Pixels between the tiles of a sheet (dark, so the frames read as separate pictures).
GAP = 2
#: Either preview fits in this many bytes.
MAX_BYTES = 200_000
#: JPEG qualities tried in turn until the preview fits.
QUALITIES = (85, 75, 60, 45, 30)


def make_preview(frames: np.ndarray) -> Preview:
    """The preview of ``(F, H, W, 3)`` uint8 frames: the picture (F = 1) or a contact sheet."""
    from PIL import Image

    count = len(frames)
    if count == 1:
        image = Image.fromarray(frames[0])
        image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
        return _jpeg(image, [0])
    indices = even_indices(count, min(SHEET_FRAMES, count))
    return _jpeg(_sheet(frames, indices), indices)


def _sheet(frames: np.ndarray, indices: list[int]) -> Image.Image:
    """The frames at ``indices`` tiled left to right, top to bottom."""
    from PIL import Image

    columns = min(SHEET_COLUMNS, len(indices))
    rows = -(-len(indices) // columns)
    height, width = frames.shape[1:3]
    tile_w = min(width, (SHEET_WIDTH - GAP * (columns - 1)) // columns)
    tile_h = max(1, round(tile_w * height / width))
    sheet = Image.new(
        "RGB", (columns * tile_w + GAP * (columns - 1), rows * tile_h + GAP * (rows - 1)), (24, 24, 24)
    )
    for k, i in enumerate(indices):
        tile = Image.fromarray(frames[i]).resize(
            (tile_w, tile_h), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        row, column = divmod(k, columns)
        sheet.paste(tile, (column * (tile_w + GAP), row * (tile_h + GAP)))
    return sheet


def _jpeg(image: Image.Image, indices: list[int]) -> Preview:
    data = b""
    for quality in QUALITIES:
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=quality)
        data = buffer.getvalue()
        if len(data) <= MAX_BYTES:
            break
    else:
        log.debug("preview of %dx%d still %d bytes at quality %d", *image.size, len(data), QUALITIES[-1])
    return Preview(data=data, width=image.width, height=image.height, frames=indices)

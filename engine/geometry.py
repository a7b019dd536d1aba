"""Sizes, crops, letterboxes and frame-index arithmetic on PIL images; no I/O.

Sizes are ``(width, height)`` tuples throughout. Pillow is imported inside the functions that
need it so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

#: Grey used for "unknown" pixels: 128 is VACE's mask colour and ≈ 0 in the pipeline's [-1, 1].
GREY = 128

Size = tuple[int, int]  # (width, height)


# ---------------------------------------------------------------------------------------------
# Geometry (PIL images; sizes are (width, height))


def fit_box(src: Size, size: Size) -> tuple[int, int, int, int]:
    """Where ``src`` lands when fitted inside ``size`` keeping its aspect: (left, top, width, height)."""
    sw, sh = src
    w, h = size
    scale = min(w / sw, h / sh)
    fw, fh = max(1, min(w, round(sw * scale))), max(1, min(h, round(sh * scale)))
    return (w - fw) // 2, (h - fh) // 2, fw, fh


def _resample(img: Image.Image) -> int:
    from PIL import Image

    # Bilinear for masks (then binarised by the caller), Lanczos for pictures.
    return Image.Resampling.BILINEAR if img.mode == "L" else Image.Resampling.LANCZOS


def resize_cover(img: Image.Image, size: Size) -> Image.Image:
    """Scale ``img`` to cover ``size`` keeping its aspect, then crop the centre to exactly ``size``."""
    w, h = size
    sw, sh = img.size
    if (sw, sh) == (w, h):
        return img.copy()
    scale = max(w / sw, h / sh)
    # The crop box in source pixels: the centred region with the output's aspect.
    cw, ch = w / scale, h / scale
    left, top = (sw - cw) / 2, (sh - ch) / 2
    return img.resize((w, h), _resample(img), box=(left, top, left + cw, top + ch))


def resize_fit(img: Image.Image, size: Size) -> Image.Image:
    """Scale ``img`` to fit inside ``size`` keeping its aspect (the result may be smaller than ``size``)."""
    _, _, fw, fh = fit_box(img.size, size)
    if img.size == (fw, fh):
        return img.copy()
    return img.resize((fw, fh), _resample(img))


def letterbox(
    img: Image.Image, size: Size, fill: tuple[int, int, int] | int = (255, 255, 255)
) -> Image.Image:
    """Fit ``img`` inside ``size`` and centre it on a ``fill`` canvas (the reference-image treatment)."""
    from PIL import Image

    left, top, fw, fh = fit_box(img.size, size)
    if img.mode == "L" and not isinstance(fill, int):
        fill = fill[0]  # a grey canvas for a grey image
    canvas = Image.new(img.mode, size, fill)
    canvas.paste(resize_fit(img, size), (left, top))
    return canvas


def binarize(mask: Image.Image, threshold: int = 128) -> Image.Image:
    """An "L" mask with only 0 and 255: pixels at or above ``threshold`` become 255."""
    return mask.convert("L").point(lambda v: 255 if v >= threshold else 0)


class ArrayFrames(Sequence["Image.Image"]):
    """``(F, H, W, C)`` uint8 frames (C = 3 RGB, 1 a mask) read as a sequence of PIL images, each
    made when it is read. A preparer that decoded or computed its frames as one array hands them
    on like this: the generator and the composite take the array itself (:func:`uint8_frames`),
    and only a reader that wants images (a control signal's annotator, diffusers' stock PIL path)
    pays for them."""

    def __init__(self, array: np.ndarray):
        if array.ndim != 4 or array.shape[-1] not in (1, 3) or str(array.dtype) != "uint8":
            raise ValueError(f"frames: want (F, H, W, 1 or 3) uint8, got {array.shape} {array.dtype}")
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        from PIL import Image

        frame = self.array[index]
        return Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame)


def uint8_frames(images: Sequence[Any] | np.ndarray) -> np.ndarray:
    """``(F, H, W, C)`` uint8 (C = 3 for RGB, 1 for "L" masks) from PIL images or arrays.

    Each distinct object is converted once: prepared frames repeat one image (a grey filler, a
    mask on every frame), and converting it once per frame would be most of the cost.
    """
    import numpy as np

    if isinstance(images, ArrayFrames):
        return images.array
    if isinstance(images, np.ndarray):
        return images if images.ndim == 4 else images[..., None]
    seen: dict[int, np.ndarray] = {}
    out: np.ndarray | None = None
    for i, image in enumerate(images):
        arr = seen.get(id(image))
        if arr is None:
            arr = np.asarray(image, dtype=np.uint8)
            seen[id(image)] = arr = arr if arr.ndim == 3 else arr[..., None]  # (H, W, C)
        if out is None:
            out = np.empty((len(images), *arr.shape), dtype=np.uint8)
        out[i] = arr
    if out is None:
        raise ValueError("no frames to convert")
    return out


# ---------------------------------------------------------------------------------------------
# Frame counts


def even_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included."""
    if count <= 0 or total <= 0:
        return []
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]


def resampled_count(num_frames: int, src_fps: float, fps: float) -> int:
    """How many frames a clip of ``num_frames`` at ``src_fps`` yields at ``fps``.

    Target frame k sits at k/fps seconds; it exists while some source frame lies within half a
    source frame interval of it, so resampling to the same rate is the identity.
    """
    if num_frames <= 0:
        return 0
    last = (num_frames - 1) / src_fps + 0.5 / src_fps
    return math.floor(last * fps + 1e-9) + 1

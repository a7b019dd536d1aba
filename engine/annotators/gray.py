"""Grayscale, no model: what VACE's gray control (colourise) was trained on.

``(F, H, W, 3)`` uint8 RGB in → ``(F, H, W, 3)`` uint8 grey out, luminance with the ITU-R BT.601
weights (0.299 R + 0.587 G + 0.114 B, the weights of OpenCV's and PIL's RGB→L conversions) in all
three channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import batches, check_frames, grey_to_rgb

if TYPE_CHECKING:
    from ..control import JobControl

#: BT.601 luma weights for R, G, B.
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class GrayAnnotator:
    """Luminance on the CPU (a weighted sum is memory-bound: moving frames to a GPU costs more)."""

    kind = "gray"
    name = "gray (BT.601 luminance)"

    def __init__(self, *, batch_size: int = 32):
        self.batch_size = batch_size

    @property
    def loaded(self) -> bool:
        return True  # no weights

    def load(self) -> None:
        """Nothing to load."""

    def unload(self) -> None:
        """Nothing to free."""

    def memory_bytes(self) -> int:
        return 0

    def __call__(self, frames: np.ndarray, *, control: JobControl | None = None) -> np.ndarray:
        frames = check_frames(frames)
        out = np.empty(frames.shape[:3], dtype=np.uint8)  # (F, H, W)
        for part in batches(len(frames), self.batch_size, control):
            luma = frames[part].astype(np.float32) @ LUMA
            out[part] = np.clip(np.rint(luma), 0, 255).astype(np.uint8)
        return grey_to_rgb(out)

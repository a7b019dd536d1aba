"""Canny edges with kornia (``kornia.filters.canny``), no model.

``(F, H, W, 3)`` uint8 RGB in → ``(F, H, W, 3)`` uint8 out: white (255) edges on black, the same
in all three channels, as the edge videos VACE's canny control was trained on. kornia converts to
grey, smooths with a Gaussian, and keeps gradients above ``high`` plus those above ``low`` that
touch them (hysteresis). The thresholds are on the gradient of the image in [0, 1]; kornia's
defaults (0.1, 0.2) behave like OpenCV's usual ``Canny(100, 200)`` on 0-255 images.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .base import Placement, batches, check_frames, grey_to_rgb, to_tensor

if TYPE_CHECKING:
    from ..control import JobControl


class EdgesAnnotator:
    """Canny edges on the configured device; nothing to load."""

    kind = "edges"

    def __init__(self, placement: Placement, *, low: float = 0.1, high: float = 0.2, batch_size: int = 16):
        if not 0 < low < high:
            raise ValueError(f"edges thresholds low={low}, high={high}: need 0 < low < high")
        self.placement = placement
        self.low, self.high = low, high
        self.batch_size = batch_size
        self.name = f"edges (kornia Canny {low}/{high})"

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
        import kornia
        import torch

        frames = check_frames(frames)
        out = np.empty(frames.shape[:3], dtype=np.uint8)  # (F, H, W)
        for part in batches(len(frames), self.batch_size, control):
            images = to_tensor(frames[part], self.placement.device)  # (B, 3, H, W) in [0, 1]
            with torch.inference_mode():
                _, edges = kornia.filters.canny(images, low_threshold=self.low, high_threshold=self.high)
            out[part] = (edges[:, 0] > 0.5).to(torch.uint8).mul_(255).cpu().numpy()
        return grey_to_rgb(out)

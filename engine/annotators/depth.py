"""Depth maps with Depth Anything (transformers ``DepthAnythingForDepthEstimation``).

``(F, H, W, 3)`` uint8 RGB in → ``(F, H, W, 3)`` uint8 grey out: near is bright, far is dark, as
in the depth videos VACE's depth control was trained on. Depth Anything predicts relative inverse
depth (larger = nearer), so the prediction is used as it is, resized back to the input size and
stretched to 0-255 over the whole clip: one scale for all frames, so a static scene does not
flicker when something moves in front of it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .base import ModelAnnotator, Placement, batches, check_frames, grey_to_rgb

if TYPE_CHECKING:
    from ..control import JobControl


class DepthAnnotator(ModelAnnotator):
    """Depth Anything from a hub id or a local directory (model + its image processor)."""

    kind = "depth"

    def __init__(self, spec: str, placement: Placement, *, batch_size: int = 8):
        super().__init__(spec, placement, setting="depth_model")
        self.batch_size = batch_size

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from transformers import AutoImageProcessor, DepthAnythingForDepthEstimation

        kwargs = self.placement.hub_kwargs()
        model = DepthAnythingForDepthEstimation.from_pretrained(self.spec, **kwargs)
        processor = AutoImageProcessor.from_pretrained(self.spec, **kwargs)
        return {"model": model}, {"processor": processor}

    def __call__(self, frames: np.ndarray, *, control: JobControl | None = None) -> np.ndarray:
        import torch

        frames = check_frames(frames)
        self._ready()
        model, processor = self.models["model"], self.extras["processor"]
        count, height, width = frames.shape[:3]
        depth = torch.empty((count, height, width), dtype=torch.float32)  # (F, H, W), on the CPU
        for part in batches(count, self.batch_size, control):
            inputs = processor(images=list(frames[part]), return_tensors="pt")
            pixels = inputs["pixel_values"].to(self.placement.device, self.placement.dtype)
            with torch.inference_mode():
                predicted = model(pixel_values=pixels).predicted_depth  # (B, h, w) at the model's size
                resized = torch.nn.functional.interpolate(
                    predicted.float()[:, None], size=(height, width), mode="bilinear", align_corners=False
                )[:, 0]
            depth[part] = resized.cpu()
        low, high = float(depth.min()), float(depth.max())
        scaled = (depth - low) / (high - low) if high > low else torch.zeros_like(depth)
        return grey_to_rgb((scaled * 255.0).round().clamp(0, 255).to(torch.uint8).numpy())

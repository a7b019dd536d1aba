"""Optical flow with torchvision's RAFT, drawn with the standard flow colour wheel.

``(F, H, W, 3)`` uint8 RGB in → ``(F, H, W, 3)`` uint8 RGB out. Frame ``i`` shows the motion from
frame ``i - 1`` to frame ``i``; frame 0 has no predecessor and repeats frame 1's flow, so the count
stays F (a single image has no motion: its flow frame is white, the wheel's centre).

The colours are the Middlebury colour coding (Baker et al., "A Database and Evaluation
Methodology for Optical Flow", IJCV 2011): the direction of a vector is the hue on a wheel of 55
colours (red → yellow → green → cyan → blue → magenta), its length the saturation (white = still),
normalised by the longest vector of the frame; vectors longer than that are darkened. This is the
drawing RAFT's ``flow_to_image`` makes and VACE's flow annotator uses, per frame.

``flow_model``: ``raft_small`` / ``raft_large`` (torchvision's pretrained weights, fetched by
torchvision into the torch hub cache, ``$TORCH_HOME/hub/checkpoints``) or a local file holding a
state dict of either (its keys say which: only ``raft_large`` has a mask predictor).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ModelError
from ..hub import TORCHVISION_RAFT, raft_cache_file, torchvision_weights
from .base import ModelAnnotator, Placement, batches, check_frames, to_tensor

if TYPE_CHECKING:
    import torch

    from ..control import JobControl

log = logging.getLogger(__name__)

# RAFT's feature maps are 1/8 of the image and its correlation pyramid halves them three more
# times, so the working size is a multiple of 8 with a short side of at least 128. The correlation
# volume grows with the square of the pixel count: big frames are estimated at about 1024x576
# and the flow is resized back.
_MULTIPLE = 8
_MIN_SHORT_SIDE = 128
_MAX_WORK_PIXELS = 1024 * 576


# --- The colour wheel --------------------------------------------------------------------------

#: Hues per wheel segment (Baker et al.): red-yellow, yellow-green, green-cyan, cyan-blue,
#: blue-magenta, magenta-red; the counts follow how finely the eye tells those hues apart.
WHEEL_SEGMENTS: tuple[int, ...] = (15, 6, 4, 11, 13, 6)


def colour_wheel() -> np.ndarray:
    """The 55 wheel colours, ``(55, 3)`` float RGB in [0, 255], from red round to just before it."""
    # Each segment ramps one channel up or down between two of the six primaries and secondaries.
    corners = [(255, 0, 0), (255, 255, 0), (0, 255, 0), (0, 255, 255), (0, 0, 255), (255, 0, 255)]
    rows = []
    for index, count in enumerate(WHEEL_SEGMENTS):
        start = np.array(corners[index], dtype=np.float64)
        end = np.array(corners[(index + 1) % len(corners)], dtype=np.float64)
        for step in range(count):
            # floor as in the reference coding, so the table matches it level for level
            rows.append(start + np.floor((end - start) * step / count))
    return np.stack(rows)


def flow_to_colour(flow: np.ndarray, max_radius: float | None = None) -> np.ndarray:
    """``(..., 2)`` flow (u right, v down) → ``(..., 3)`` uint8 RGB with the Middlebury wheel.

    ``max_radius``: the length drawn at full saturation (default: the longest vector here).
    """
    flow = np.asarray(flow, dtype=np.float64)
    u, v = flow[..., 0], flow[..., 1]
    radius = np.hypot(u, v)
    if max_radius is None:
        max_radius = float(radius.max()) if radius.size else 0.0
    scale = 1.0 / (max_radius + 1e-5)
    u, v, radius = u * scale, v * scale, radius * scale

    wheel = colour_wheel() / 255.0  # (55, 3)
    count = len(wheel)
    # The angle from pointing left (-u) measured towards up: -1..1 round the wheel.
    angle = np.arctan2(-v, -u) / math.pi
    position = (angle + 1) / 2 * (count - 1)
    k0 = np.floor(position).astype(np.int64)
    k1 = (k0 + 1) % count
    fraction = (position - k0)[..., None]
    colour = (1 - fraction) * wheel[k0 % count] + fraction * wheel[k1]
    inside = (radius <= 1)[..., None]
    # Short vectors fade to white; those past the normalising length are darkened instead.
    colour = np.where(inside, 1 - radius[..., None] * (1 - colour), colour * 0.75)
    return np.floor(255 * colour).astype(np.uint8)


# --- Weights (where torchvision keeps them: engine.hub) ------------------------------------


def read_raft(spec: str, *, local_files_only: bool = False) -> torch.nn.Module:
    """A RAFT model on the CPU, from torchvision's pretrained weights or a local state dict."""
    import torch
    from torchvision.models.optical_flow import raft_large, raft_small

    if spec in TORCHVISION_RAFT:
        file = raft_cache_file(spec)
        if local_files_only and not file.exists():
            raise ModelError(
                f"flow_model={spec!r}: torchvision's weights are not in {file.parent} and "
                "local_files_only is set; run `unison-mcp download --only flow`"
            )
        builder = raft_small if spec == "raft_small" else raft_large
        return builder(weights=torchvision_weights(spec), progress=False)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise ModelError(
            f"flow_model={spec!r}: not {' or '.join(TORCHVISION_RAFT)} and not a local weights file"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and safety errors all mean "not a usable state dict"
        raise ModelError(f"flow_model={spec!r}: cannot be read as a torch state dict: {exc}") from exc
    if not isinstance(state, dict):
        raise ModelError(f"flow_model={spec!r}: must hold a state dict of a torchvision RAFT")
    large = any(key.startswith("mask_predictor.") for key in state)
    model = (raft_large if large else raft_small)(weights=None)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ModelError(
            f"flow_model={spec!r}: not a state dict of torchvision's "
            f"{'raft_large' if large else 'raft_small'}: {str(exc)[:300]}"
        ) from exc
    return model


def work_size(height: int, width: int) -> tuple[int, int]:
    """The size RAFT estimates at: multiples of 8, short side >= 128, about <= 1024x576 pixels."""
    scale = max(1.0, _MIN_SHORT_SIDE / min(height, width))
    if height * width * scale**2 > _MAX_WORK_PIXELS:
        scale = math.sqrt(_MAX_WORK_PIXELS / (height * width))

    def snap(side: float) -> int:
        return max(_MULTIPLE, int(round(side / _MULTIPLE)) * _MULTIPLE)

    return snap(height * scale), snap(width * scale)


class FlowAnnotator(ModelAnnotator):
    """RAFT between consecutive frames, drawn with :func:`flow_to_colour`."""

    kind = "flow"
    # RAFT refines its flow over a dozen recurrent updates through a correlation lookup; in half
    # precision the error builds up, and the model is small (1-5 M parameters): keep float32.
    float32_modules = frozenset({"model"})

    def __init__(self, spec: str, placement: Placement, *, updates: int = 12, batch_size: int = 4):
        super().__init__(spec, placement, setting="flow_model")
        #: Recurrent refinements per pair (torchvision's default, 12).
        self.updates = updates
        self.batch_size = batch_size

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"model": read_raft(self.spec, local_files_only=self.placement.local_files_only)}, {}

    def estimate(self, frames: np.ndarray, *, control: JobControl | None = None) -> np.ndarray:
        """``(F, H, W, 3)`` uint8 → ``(F - 1, H, W, 2)`` float32 flow in pixels (frame i → i + 1)."""
        import torch
        import torch.nn.functional as functional

        frames = check_frames(frames)
        self._ready()
        count, height, width = frames.shape[:3]
        work_h, work_w = work_size(height, width)
        flows = np.zeros((max(count - 1, 0), height, width, 2), dtype=np.float32)
        for part in batches(count - 1, self.batch_size, control):
            images = to_tensor(frames[part.start : part.stop + 1], self.placement.device)  # (B+1, 3, H, W)
            images = functional.interpolate(
                images, size=(work_h, work_w), mode="bilinear", align_corners=False
            )
            images = images * 2 - 1  # RAFT takes [-1, 1]
            with torch.inference_mode():
                flow = self.models["model"](images[:-1], images[1:], num_flow_updates=self.updates)[-1]
                # (B, 2, h, w) at the working size → the frame's size, vectors scaled with it
                flow = functional.interpolate(
                    flow, size=(height, width), mode="bilinear", align_corners=False
                )
                flow = (
                    flow * torch.tensor([width / work_w, height / work_h], device=flow.device)[:, None, None]
                )
            flows[part] = flow.permute(0, 2, 3, 1).float().cpu().numpy()
        return flows

    def __call__(self, frames: np.ndarray, *, control: JobControl | None = None) -> np.ndarray:
        flows = self.estimate(frames, control=control)
        if not len(flows):  # one image: no motion, drawn as the wheel's white centre
            return np.full(np.asarray(frames).shape, 255, dtype=np.uint8)
        return render_flows(flows)


def render_flows(flows: np.ndarray) -> np.ndarray:
    """``(F - 1, H, W, 2)`` flows between consecutive frames → ``(F, H, W, 3)`` uint8 RGB.

    Each flow is normalised by its own longest vector (as VACE's flow annotator draws them);
    frame 0 repeats the first flow so there is one drawing per input frame.
    """
    drawn = np.stack([flow_to_colour(flow) for flow in flows])
    return np.concatenate([drawn[:1], drawn])

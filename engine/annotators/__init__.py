"""Annotators: control signals and masks from plain media, with models from transformers,
torchvision and kornia.

VACE's controllable generation is driven by a control video (pose skeletons, depth maps, edges,
optical flow, grayscale) and its editing by a mask. People have plain photos and videos; the
annotators turn them into what VACE was trained on. One module each:

- :mod:`~engine.annotators.segment`: a text phrase + an image or a video → masks, tracked across
  the frames of a video.
- :mod:`~engine.annotators.depth`: depth maps.
- :mod:`~engine.annotators.pose`: a person detector + keypoints, rendered as skeletons in the
  colour convention of VACE's pose control.
- :mod:`~engine.annotators.edges`: Canny edges (kornia).
- :mod:`~engine.annotators.flow`: optical flow (torchvision RAFT), rendered with the standard
  flow colour wheel.
- :mod:`~engine.annotators.gray`: grayscale (no model).

Each model loads from a hub id or a local directory like the other models (settings in
:class:`engine.config.AnnotatorSettings`), lazily on first use, on the configured device while it
is used and offloaded after (``unload``). Shapes: frames in are ``(F, H, W, 3)`` uint8 RGB; a
control signal out is ``(F, H, W, 3)`` uint8 RGB at the same size; masks out are ``(F, H, W)``
bool (True = the object = regenerate).

Importing this package is cheap: no torch, no transformers (each annotator imports its model's
library when it loads).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidRequest
from ..vocab import CONTROL_KINDS
from .base import Placement, check_frames
from .depth import DepthAnnotator
from .edges import EdgesAnnotator
from .flow import FlowAnnotator
from .gray import GrayAnnotator
from .pose import PoseAnnotator
from .segment import Sam3Segmenter

if TYPE_CHECKING:
    from ..config import EngineConfig
    from ..control import JobControl


@runtime_checkable
class Annotator(Protocol):
    """A model (or none) loaded on first use and offloaded after."""

    #: What it is, for logs and notes ("depth (depth-anything/Depth-Anything-V2-Small-hf)").
    name: str

    @property
    def loaded(self) -> bool: ...

    def load(self) -> None:
        """Load the weights onto the configured device (once; again after :meth:`unload`)."""
        ...

    def unload(self) -> None:
        """Free the accelerator memory it holds (weights moved to the CPU or dropped)."""
        ...

    def memory_bytes(self) -> int:
        """About how much accelerator memory it takes while loaded (for doctor's estimate)."""
        ...


@runtime_checkable
class ControlAnnotator(Annotator, Protocol):
    """Plain frames → a control signal at the same size."""

    def __call__(self, frames: np.ndarray, *, control: JobControl | None = None) -> np.ndarray:
        """``(F, H, W, 3)`` uint8 RGB in → ``(F, H, W, 3)`` uint8 RGB control frames out.

        Calls ``control.check()`` between frames (or batches), so a cancel stops it.
        """
        ...


@runtime_checkable
class Segmenter(Annotator, Protocol):
    """A phrase + frames → the masks of what the phrase names, tracked through a video."""

    def __call__(self, frames: np.ndarray, phrase: str, *, control: JobControl | None = None) -> np.ndarray:
        """``(F, H, W, 3)`` uint8 RGB in → ``(F, H, W)`` bool masks (all False where nothing is found)."""
        ...


class RawControl:
    """``control_kind='raw'``: the input already is a control signal; frames pass through unchanged."""

    kind = "raw"
    name = "raw (the input as given)"

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
        if control is not None:
            control.check()
        return check_frames(frames).copy()


def build_control(kind: str, config: EngineConfig) -> ControlAnnotator:
    """The annotator for ``control_kind`` with ``config``'s models, device and dtype (not loaded yet).

    Raises :class:`~engine.errors.InvalidRequest` for a kind that is not one of
    :data:`CONTROL_KINDS`, and :class:`~engine.errors.ModelError` when ``annotator_device`` names a
    device this machine lacks.
    """
    if kind not in CONTROL_KINDS:
        raise InvalidRequest.for_field("control_kind", kind, f"must be one of {', '.join(CONTROL_KINDS)}")
    if kind == "raw":
        return RawControl()
    if kind == "gray":
        return GrayAnnotator()
    placement = Placement.from_config(config)
    settings = config.annotators
    if kind == "edges":
        return EdgesAnnotator(placement)
    if kind == "depth":
        return DepthAnnotator(settings.depth_model, placement)
    if kind == "pose":
        return PoseAnnotator(settings.pose_model, settings.person_detector, placement)
    return FlowAnnotator(settings.flow_model, placement)


def build_segmenter(config: EngineConfig) -> Segmenter | None:
    """The text-prompted segmenter of ``config.annotators.segment_model`` (``None``: none set)."""
    return Sam3Segmenter.from_config(config)


def looks_like_control(frames: np.ndarray) -> str | None:
    """Which control signal ``frames`` (``(F, H, W, 3)`` uint8) already look like, or ``None``.

    A heuristic on up to 8 frames spread over the clip, for keeping a control input as ``raw``
    (with a note) rather than extracting a signal from a signal:

    - ``pose``: mostly black, with a little strongly coloured drawing (skeleton lines);
    - ``edges``: grey, mostly black, the rest near white;
    - ``depth``: grey and smooth (neighbouring pixels differ by a few levels);
    - ``gray``: grey with a photo's texture;
    - ``None``: anything else (a photo, a video).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or not frames.size:
        return None
    picks = np.unique(np.linspace(0, len(frames) - 1, num=min(8, len(frames))).round().astype(int))
    sample = frames[picks].astype(np.int16)  # (S, H, W, 3)
    spread = sample.max(axis=-1) - sample.min(axis=-1)  # 0 where R = G = B
    brightest = sample.max(axis=-1)
    black = brightest < 24
    black_share = float(black.mean())
    drawn = ~black
    # Skeletons first: their black background alone would pass for a grey map.
    if 0.7 < black_share < 0.999 and float((spread[drawn] > 100).mean()) > 0.6:
        return "pose"
    if float((spread <= 8).mean()) > 0.98:  # one value per pixel: a single-channel map
        value = sample[..., 0]
        if black_share > 0.7 and float(((value > 200) | (value < 24)).mean()) > 0.97:
            return "edges"
        step = float(np.abs(np.diff(value, axis=2)).mean() + np.abs(np.diff(value, axis=1)).mean()) / 2
        return "depth" if step < 3.0 else "gray"
    return None


__all__ = [
    "Annotator",
    "ControlAnnotator",
    "RawControl",
    "Segmenter",
    "build_control",
    "build_segmenter",
    "looks_like_control",
]

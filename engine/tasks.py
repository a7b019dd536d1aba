"""Source preparation per task: a table from task name to the function that turns a Plan into
what ``WanVACEPipeline`` takes (video, mask, reference images, size, frames)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .control import JobControl
from .plan import Limits

if TYPE_CHECKING:
    from PIL import Image

Box = tuple[float, float, float, float]


@dataclass
class Prepared:
    """Inputs for one VACE run. Masks: 255 = generate, 0 = keep."""

    width: int
    height: int
    num_frames: int
    video: list[Image.Image] | None = None  # num_frames RGB frames at (width, height)
    mask: list[Image.Image] | None = None  # num_frames "L" frames at (width, height)
    reference_images: list[Image.Image] | None = None  # each letterboxed on white at (width, height)
    notes: list[str] = field(default_factory=list)


@dataclass
class PrepContext:
    limits: Limits
    ground: Callable[[Image.Image, str], list[Box]] | None = None
    control: JobControl | None = None

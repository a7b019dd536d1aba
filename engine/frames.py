"""Frames in and out of ``WanVACEPipeline`` as uint8, scaled on the device.

diffusers' ``VideoProcessor`` takes VACE's video and mask as lists of PIL images and converts
each to float32 numpy, then to a tensor, on the CPU (3.3 s for an 81-frame 832×480 video edit on
a 2-core machine); at the end it copies the decoded float video to the host and converts it
there. This module hands the pipeline uint8 tensors instead, already on the execution device, and
gives it back uint8 frames made on the device, so one uint8 copy crosses to the host:

- :func:`device_frames` puts a prepared input's ``(F, H, W, C)`` uint8 frames
  (:meth:`engine.prepare.Prepared.arrays`) on the device as the ``(1, F, C, H, W)`` tensor the
  pipeline's ``video`` and ``mask`` take.
- :class:`FramesProcessor` is the pipeline's ``video_processor``: for a uint8 tensor it does the
  stock arithmetic (``x / 255``, then ``2x - 1``) on the tensor's device, for anything else it is
  diffusers' own; ``output_type="uint8"`` gives ``(B, F, H, W, 3)`` uint8 on the device, frame by
  frame, with the stock arithmetic (``(x·0.5 + 0.5)`` clamped, ``·255``, rounded half to even).

Why a processor and not a pipeline subclass: ``WanVACEPipeline.__call__`` already routes video and
mask through ``self.video_processor.preprocess_video`` and the output through
``postprocess_video(video, output_type)``; a 5-D tensor passes ``check_inputs`` (its length is
its batch, 1, for video and mask alike) and ``get_default_height_width`` reads a ``(F, C, H, W)``
tensor's height and width where they are. Replacing the one object keeps every other line of the
pipeline (conditioning latents, masks, reference images, decode) diffusers' own. Reference images
stay PIL: ``check_inputs`` requires it, and they are one to three images, not a video. Two small
wrappers on the pipeline instance (:func:`install`) time the end of the conditioning and give a
call without a mask (text-to-video) a one-channel all-ones mask instead of three equal channels.

The results are equal to the stock conversion's, bit for bit on the CPU (tests/test_frames.py).
This module imports torch and diffusers at the top: import it lazily (the generator does).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from diffusers.video_processor import VideoProcessor

from .geometry import uint8_frames
from .timings import Laps

#: The ``output_type`` that gives uint8 frames on the device.
UINT8 = "uint8"


def device_frames(images: Sequence[Any] | np.ndarray | None, device: Any) -> torch.Tensor | None:
    """``images`` as the ``(1, F, C, H, W)`` uint8 tensor on ``device`` that the pipeline's
    ``video``/``mask`` take (through :class:`FramesProcessor`); ``None`` stays ``None``."""
    if images is None:
        return None
    frames = torch.from_numpy(uint8_frames(images))  # (F, H, W, C), host
    return frames.to(device).permute(0, 3, 1, 2).unsqueeze(0)  # (1, F, C, H, W), a view


def scaled(frames: torch.Tensor) -> torch.Tensor:
    """``(B, F, C, H, W)`` uint8 -> ``(B, C, F, H, W)`` float32 in [-1, 1] on the same device:
    diffusers' ``x / 255`` then ``2x - 1``, frame by frame into one new tensor (each frame's
    passes stay in the cache instead of streaming the whole video four times)."""
    b, f, c, h, w = frames.shape
    out = torch.empty((b, c, f, h, w), dtype=torch.float32, device=frames.device)
    for k in range(f):
        frame = out[:, :, k]  # (B, C, H, W)
        frame.copy_(frames[:, k])  # uint8 -> float32
        frame.div_(255.0).mul_(2.0).sub_(1.0)
    return out


def to_uint8_frames(video: torch.Tensor) -> torch.Tensor:
    """The VAE's ``(B, C, F, H, W)`` output in [-1, 1] -> ``(B, F, H, W, C)`` uint8 on its device.

    Frame by frame into one preallocated tensor (a float frame at a time, never a float copy of
    the whole video), with the stock arithmetic: ``(x·0.5 + 0.5)`` clamped to [0, 1], ``·255``,
    rounded half to even.
    """
    b, c, f, h, w = video.shape
    out = torch.empty((b, f, h, w, c), dtype=torch.uint8, device=video.device)
    for i in range(b):
        for k in range(f):
            x = video[i, :, k].float().mul(0.5).add_(0.5).clamp_(0.0, 1.0).mul_(255.0).round_()
            out[i, k].copy_(x.permute(1, 2, 0))  # exact: x holds whole numbers in [0, 255]
    return out


class FramesProcessor(VideoProcessor):
    """diffusers' ``VideoProcessor`` that also takes uint8 tensors and gives uint8 frames.

    ``laps``: set for one pipeline call, so the decode's end is timed (``vae_decode``) when the
    output conversion starts.
    """

    laps: Laps | None = None

    def preprocess_video(
        self, video: Any, height: int | None = None, width: int | None = None, **kwargs: Any
    ):
        if isinstance(video, torch.Tensor) and video.dtype == torch.uint8:
            if (
                video.ndim != 5
                or (height, width) != (None, None)
                and tuple(video.shape[-2:]) != (height, width)
            ):
                raise ValueError(
                    f"video: a uint8 tensor must be (B, F, C, H, W) at {height}x{width}, got {tuple(video.shape)}"
                )
            return scaled(video)
        return super().preprocess_video(video, height, width, **kwargs)

    def postprocess_video(self, video: torch.Tensor, output_type: str = "np", **kwargs: Any):
        if output_type != UINT8:
            return super().postprocess_video(video, output_type=output_type, **kwargs)
        if self.laps is not None:
            self.laps.lap("vae_decode")
        return to_uint8_frames(video)


def install(pipe: Any) -> None:
    """Give ``pipe`` a :class:`FramesProcessor` (once) with its processor's settings, and time
    the end of its conditioning (``vace_encode``: ``prepare_masks`` runs right after the VAE
    encoded VACE's inputs, before the first step)."""
    current = pipe.video_processor
    if isinstance(current, FramesProcessor):
        return
    settings = {k: v for k, v in current.config.items() if not k.startswith("_")}
    pipe.video_processor = processor = FramesProcessor(**settings)
    conditions = pipe.preprocess_conditions

    def preprocess_conditions(video: Any = None, mask: Any = None, *args: Any, **kwargs: Any) -> Any:
        scaled_video, scaled_mask, references = conditions(video, mask, *args, **kwargs)
        if mask is None and scaled_mask.shape[1] > 1:
            # No mask: diffusers makes ones in every channel of the video. One channel says the
            # same (the kept/regenerated split broadcasts it, prepare_masks reads channel 0) and
            # spares the binarising and the split two thirds of their work on a text-to-video.
            scaled_mask = scaled_mask[:, :1]
        return scaled_video, scaled_mask, references

    pipe.preprocess_conditions = preprocess_conditions
    original = pipe.prepare_masks

    def prepare_masks(*args: Any, **kwargs: Any) -> torch.Tensor:
        masks = original(*args, **kwargs)
        if processor.laps is not None:
            processor.laps.lap("vace_encode")
        return masks

    pipe.prepare_masks = prepare_masks

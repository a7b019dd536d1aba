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

Why a processor and wrappers, not a pipeline subclass: ``WanVACEPipeline.__call__`` routes its
inputs through ``preprocess_conditions``, ``prepare_video_latents`` and ``prepare_masks`` and its
output through ``self.video_processor.postprocess_video(video, output_type)``; a 5-D tensor
passes ``check_inputs`` (its length is its batch, 1, for video and mask alike). :func:`install`
replaces those three methods on the pipeline instance for uint8 inputs only
(:class:`Conditioning`: the conditioning made frame by frame, a blank clip's latents kept) and
keeps every other line of the pipeline (checks, references' letterboxing, denoising, decode)
diffusers' own; anything else (PIL lists) takes diffusers' path unchanged. Reference images stay
PIL: ``check_inputs`` requires it, and they are one to three images, not a video.

The results are equal to the stock conversion's and conditioning's, bit for bit on the CPU
(tests/test_frames.py).
This module imports torch and diffusers at the top: import it lazily (the generator does).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def _scale_into(out: torch.Tensor, frame: torch.Tensor) -> torch.Tensor:
    """A uint8 frame into ``out`` as diffusers scales it (``x / 255``, then ``2x - 1``), in float32
    and then ``out``'s dtype (diffusers converts the scaled video to the VAE's dtype)."""
    work = (
        out if out.dtype == torch.float32 else torch.empty(out.shape, dtype=torch.float32, device=out.device)
    )
    work.copy_(frame).div_(255.0).mul_(2.0).sub_(1.0)
    if work is not out:
        out.copy_(work)
    return out


def _mask_levels(device: Any) -> torch.Tensor:
    """For each uint8 level, the float diffusers' ``preprocess_conditions`` makes of a mask pixel
    (``clamp((m + 1) / 2, 0, 1)`` of the scaled value), by the same operations: a lookup table."""
    levels = torch.arange(256, dtype=torch.uint8, device=device).view(1, 1, 1, 1, 256)
    return scaled(levels).add_(1.0).div_(2.0).clamp_(0.0, 1.0).flatten()


@dataclass(frozen=True)
class _Made:
    """VACE's inputs as :func:`install`'s ``preprocess_conditions`` leaves them: still uint8, on the
    device, for the same call's ``prepare_video_latents`` and ``prepare_masks`` (which receive this
    object in place of the float video and mask diffusers would have made)."""

    video: torch.Tensor | None  # (1, F, 3, H, W) uint8; None: no video (a blank clip)
    mask: torch.Tensor | None  # (1, F, 1, H, W) uint8; None: regenerate everything
    shape: tuple[int, int, int]  # (F, H, W)
    dtype: torch.dtype  # the dtype diffusers would have made the video and mask in
    device: Any


class Conditioning:
    """VACE's conditioning latents and masks from uint8 inputs, without diffusers' whole-video
    arithmetic and with the same results (tests/test_frames.py).

    diffusers scales the video and the mask to float over the whole clip, binarises the mask and
    multiplies the video by ``1 - mask`` and by ``mask``: several passes over fresh 100-400 MB
    tensors (about half of an 81-frame video edit's conditioning time on 2 cores, much of it the
    kernel handing out new pages). Here each frame is scaled and masked in one buffer while it is
    in the cache, the buffer is encoded, then filled again with the other half; the mask VACE's
    DiT reads (``prepare_masks``: 8×8 pixel blocks as 64 channels, every fourth frame) is taken
    from the uint8 mask at the frames and blocks it keeps, through a table of the 256 levels.
    Without a video (text-to-video, references only) both halves are the VAE's latents of a blank
    clip: encoded once per size and kept, since VACE's conditioning of an empty canvas does not
    depend on the request.
    """

    #: Blank clips' latents kept, keyed by shape, dtype, device and the VAE's tiling switch.
    BLANKS = 2

    def __init__(self, pipe: Any):
        self.pipe = pipe
        self.blanks: dict[tuple[Any, ...], tuple[Any, torch.Tensor]] = {}

    def _encode(self, x: torch.Tensor, generator: Any) -> torch.Tensor:
        """``x`` through the VAE (the mode of its distribution), normalised as VACE's latents are."""
        from diffusers.pipelines.wan.pipeline_wan_vace import retrieve_latents

        vae = self.pipe.vae
        z_dim = vae.config.z_dim
        mean = torch.tensor(vae.config.latents_mean, device=x.device, dtype=torch.float32)
        inv_std = 1.0 / torch.tensor(vae.config.latents_std, device=x.device, dtype=torch.float32)
        latents = retrieve_latents(vae.encode(x), generator, sample_mode="argmax")
        return ((latents.float() - mean.view(1, z_dim, 1, 1, 1)) * inv_std.view(1, z_dim, 1, 1, 1)).to(
            vae.dtype
        )

    def _blank(self, made: _Made, generator: Any) -> torch.Tensor:
        vae = self.pipe.vae
        shape = (1, 3, *made.shape)
        key = (shape, vae.dtype, str(made.device), id(vae), getattr(vae, "use_tiling", None))
        kept = self.blanks.get(key)
        if kept is not None and kept[0] is vae:
            return kept[1]
        latents = self._encode(torch.zeros(shape, dtype=vae.dtype, device=made.device), generator)
        if len(self.blanks) >= self.BLANKS:
            self.blanks.pop(next(iter(self.blanks)))
        self.blanks[key] = (vae, latents)
        return latents

    def _regenerated(self, made: _Made) -> Callable[[int], torch.Tensor]:
        """Frame ``k``'s binarised mask, ``(1, 1, H, W)`` of 1.0 (regenerate) and 0.0 (keep), as
        diffusers' ``torch.where(mask > 0.5, 1.0, 0.0)`` gives it, in the VAE's dtype."""
        dtype = self.pipe.vae.dtype
        if made.mask is None:
            ones = torch.ones((1, 1, *made.shape[1:]), dtype=dtype, device=made.device)
            return lambda _k: ones
        above = _mask_levels(made.device) > 0.5  # which of the 256 levels binarise to 1
        threshold = int(torch.nonzero(above)[0]) if bool(above.any()) else 256  # the levels rise
        return lambda k: made.mask[:, k].ge(threshold).to(dtype)

    def latents(self, made: _Made, references: list[list[torch.Tensor]], generator: Any) -> torch.Tensor:
        """diffusers' ``prepare_video_latents`` of the video and mask ``made`` holds."""
        dtype = self.pipe.vae.dtype
        if made.video is None:
            blank = self._blank(made, generator)  # zeros · (1 - mask) and zeros · mask
            latents = torch.cat([blank, blank], dim=1)
        else:
            regenerated = self._regenerated(made)
            half = torch.empty((1, 3, *made.shape), dtype=dtype, device=made.device)
            encoded = []
            for kept in (True, False):  # inactive = video · (1 - mask), then reactive = video · mask
                for k in range(made.shape[0]):
                    frame = _scale_into(half[:, :, k], made.video[:, k])
                    m = regenerated(k)
                    frame.mul_(1 - m if kept else m)
                encoded.append(self._encode(half, generator))
            latents = torch.cat(encoded, dim=1)
        batches = []
        for latent, refs in zip(latents, references, strict=True):
            for ref in refs:  # each reference's latents (and zeros for its reactive half) before the clip
                z = self._encode(ref.to(dtype)[None, :, None], generator).squeeze(0)
                latent = torch.cat([torch.cat([z, torch.zeros_like(z)], dim=0), latent], dim=1)
            batches.append(latent)
        return torch.stack(batches)

    def masks(self, made: _Made, references: list[list[torch.Tensor]]) -> torch.Tensor:
        """diffusers' ``prepare_masks`` of the mask ``made`` holds: ``(1, 64, F', H/8, W/8)``."""
        pipe = self.pipe
        transformer = pipe.transformer if pipe.transformer is not None else pipe.transformer_2
        patch = transformer.config.patch_size[1]
        s, t = pipe.vae_scale_factor_spatial, pipe.vae_scale_factor_temporal
        f, h, w = made.shape
        nf, nh, nw = (f + t - 1) // t, h // (s * patch) * patch, w // (s * patch) * patch
        if made.mask is None:
            out = torch.ones((s * s, nf, nh, nw), dtype=made.dtype, device=made.device)
        else:
            # The frames diffusers' nearest-exact resampling keeps: asked of torch itself.
            index = torch.arange(f, dtype=torch.float32, device=made.device).view(1, 1, f, 1, 1)
            index = torch.nn.functional.interpolate(index, size=(nf, 1, 1), mode="nearest-exact")
            kept = made.mask[0, index.flatten().long(), 0]  # (F', H, W) uint8
            blocks = kept.view(nf, nh, s, nw, s).permute(2, 4, 0, 1, 3).flatten(0, 1)  # (64, F', nh, nw)
            out = _mask_levels(made.device)[blocks.long()].to(made.dtype)
        n_refs = len(references[0])
        if n_refs:  # one zero frame per reference (diffusers 0.42 pads at most F': pad_reference_masks)
            out = torch.cat([out.new_zeros((out.shape[0], n_refs, *out.shape[2:])), out], dim=1)
        return out.unsqueeze(0)


def _ours(video: Any, mask: Any, batch_size: int) -> bool:
    """Inputs :class:`Conditioning` takes: uint8 tensors (a mask only with a video) or nothing."""
    if batch_size != 1:
        return False
    u8 = [x for x in (video, mask) if x is not None]
    if not all(isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and x.ndim == 5 for x in u8):
        return False
    return mask is None or video is not None


def install(pipe: Any) -> None:
    """Give ``pipe`` a :class:`FramesProcessor` (once) with its processor's settings, VACE's
    conditioning from uint8 inputs (:class:`Conditioning`), and time the end of its conditioning
    (``vace_encode``: ``prepare_masks`` runs right after the VAE encoded VACE's inputs, before
    the first step). Inputs of any other kind take diffusers' own path."""
    current = pipe.video_processor
    if isinstance(current, FramesProcessor):
        return
    settings = {k: v for k, v in current.config.items() if not k.startswith("_")}
    pipe.video_processor = processor = FramesProcessor(**settings)
    pipe.vace_conditioning = conditioning = Conditioning(pipe)
    conditions, video_latents, masks = (
        pipe.preprocess_conditions,
        pipe.prepare_video_latents,
        pipe.prepare_masks,
    )

    def preprocess_conditions(
        video: Any = None,
        mask: Any = None,
        reference_images: Any = None,
        batch_size: int = 1,
        height: int = 480,
        width: int = 832,
        num_frames: int = 81,
        dtype: torch.dtype | None = None,
        device: Any = None,
    ) -> Any:
        if not _ours(video, mask, batch_size):
            return conditions(
                video, mask, reference_images, batch_size, height, width, num_frames, dtype, device
            )
        for name, x in (("video", video), ("mask", mask)):
            if x is not None and tuple(x.shape[-2:]) != (height, width):
                raise ValueError(
                    f"{name}: a uint8 tensor must be (B, F, C, H, W) at {height}x{width}, got {tuple(x.shape)}"
                )
        # The references: diffusers' own handling, beside a one-frame blank that is not used.
        _, _, references = conditions(
            None, None, reference_images, batch_size, height, width, 1, dtype, device
        )
        frames = num_frames if video is None else video.shape[1]
        made = _Made(
            None if video is None else video.to(device),
            None if mask is None else mask.to(device),
            (frames, height, width),
            dtype or torch.float32,
            device,
        )
        return made, made, references

    def prepare_video_latents(
        video: Any, mask: Any, reference_images: Any = None, generator: Any = None, device: Any = None
    ) -> torch.Tensor:
        if isinstance(video, _Made):
            return conditioning.latents(video, reference_images, generator)
        return video_latents(video, mask, reference_images, generator, device)

    def prepare_masks(mask: Any, reference_images: Any = None, generator: Any = None) -> torch.Tensor:
        out = (
            conditioning.masks(mask, reference_images)
            if isinstance(mask, _Made)
            else masks(mask, reference_images, generator)
        )
        if processor.laps is not None:
            processor.laps.lap("vace_encode")
        return out

    pipe.preprocess_conditions = preprocess_conditions
    pipe.prepare_video_latents = prepare_video_latents
    pipe.prepare_masks = prepare_masks

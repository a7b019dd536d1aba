"""A stand-in Wan2.1-VACE whose model costs nothing, inside a real ``WanVACEPipeline``.

Everything of diffusers' pipeline runs (its checks, the conditioning arithmetic, the masks, the
scheduler's steps, the latents' scaling) and everything of this project around it (the
generator's text context, the frames in and out, the job), but the two networks are replaced:

- :class:`StandInTransformer`: the DiT, answers every step with zeros at once;
- :class:`StandInVAE`: encodes to zeros of the latent shape at once, and decodes to a prepared
  video (``outputs[num_frames]``, ``(1, 3, F, H, W)`` float32 in [-1, 1]): the frames a model
  would give, made before the run, so that the conversions, the composite and the encoder work
  on real pictures rather than on noise or a flat grey.

The text encoder is the tiny umT5 (32 wide, microseconds). What is excluded is therefore the
DiT's and the VAE's own compute, and nothing else.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch


class StandInTransformer(torch.nn.Module):
    """The DiT's interface (config, dtype, cache context, forward), no compute."""

    def __init__(self, *, in_channels: int = 16, vace_layers: tuple[int, ...] = (0, 2)):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # gives the module a device and a dtype
        self.config = SimpleNamespace(
            patch_size=(1, 2, 2),
            in_channels=in_channels,
            out_channels=in_channels,
            vace_layers=list(vace_layers),
        )

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    @contextlib.contextmanager
    def cache_context(self, _name: str) -> Iterator[None]:
        yield

    def set_attention_backend(self, _name: str) -> None:  # the engine names one: nothing attends
        pass

    def forward(self, hidden_states: torch.Tensor, **_: Any) -> tuple[torch.Tensor]:
        return (torch.zeros_like(hidden_states),)


class StandInVAE(torch.nn.Module):
    """The Wan VAE's interface: zeros as latents, a prepared video as the decode."""

    def __init__(self, z_dim: int = 16):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(
            z_dim=z_dim,
            latents_mean=[0.0] * z_dim,
            latents_std=[1.0] * z_dim,
            scale_factor_temporal=4,
            scale_factor_spatial=8,
        )
        # What the pipeline reads to size latents: stride 4 in time (two downsamplings), 8 in space.
        self.temperal_downsample = [False, True, True]
        #: What decoding ``F`` frames gives: ``(1, 3, F, H, W)`` float32 in [-1, 1].
        self.outputs: dict[int, torch.Tensor] = {}

    @property
    def dtype(self) -> torch.dtype:
        return self.anchor.dtype

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def encode(self, video: torch.Tensor) -> SimpleNamespace:
        b, _, f, h, w = video.shape
        shape = (b, self.config.z_dim, (f - 1) // 4 + 1, h // 8, w // 8)
        return SimpleNamespace(latents=torch.zeros(shape, dtype=video.dtype, device=video.device))

    def decode(self, latents: torch.Tensor, return_dict: bool = False) -> tuple[torch.Tensor]:
        frames = (latents.shape[2] - 1) * 4 + 1
        return (self.outputs[frames],)

    def enable_tiling(self) -> None:  # the engine's VAE-tiling switch: nothing to tile
        pass

    def disable_tiling(self) -> None:
        pass


def standin_pipeline(wan_dir: Path) -> Any:
    """A ``WanVACEPipeline`` of the stand-ins with the tiny umT5 and tokenizer of ``wan_dir``."""
    from diffusers import UniPCMultistepScheduler, WanVACEPipeline
    from transformers import AutoTokenizer, UMT5EncoderModel

    return WanVACEPipeline(
        tokenizer=AutoTokenizer.from_pretrained(wan_dir / "tokenizer"),
        text_encoder=UMT5EncoderModel.from_pretrained(wan_dir / "text_encoder"),
        transformer=StandInTransformer(),
        vae=StandInVAE(),
        scheduler=UniPCMultistepScheduler.from_pretrained(wan_dir / "scheduler"),
    )


def as_decoded(frames: Any) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 -> the VAE's ``(1, 3, F, H, W)`` float32 in [-1, 1]."""
    video = torch.from_numpy(frames).permute(3, 0, 1, 2).unsqueeze(0).float()
    return video.div_(127.5).sub_(1.0).contiguous()

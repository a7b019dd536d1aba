"""Quality and compute measures for the benchmarks: PSNR/SSIM and the DiT's FLOP count.

Not runtime code: the engine never measures itself. ``bench_gpu.py`` compares a switch's frames
with the baseline's (:func:`psnr`, :func:`ssim`) and divides :func:`dit_flops` by each measured
step time; ``tests/test_metrics.py`` pins both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from engine.errors import InvalidRequest


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 frame stacks ``(F, H, W, 3)``; inf if equal."""
    if a.shape != b.shape:
        raise InvalidRequest.for_field("frames", f"{a.shape} vs {b.shape}", "must have the same shape")
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two uint8 frame stacks ``(F, H, W, 3)``.

    The usual definition: luma, 11x11 Gaussian window (sigma 1.5), K1 0.01, K2 0.03, averaged
    over the valid window positions and the frames.
    """
    if a.shape != b.shape:
        raise InvalidRequest.for_field("frames", f"{a.shape} vs {b.shape}", "must have the same shape")

    def luma(x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(x.astype(np.float64))
        y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]  # (F, H, W)
        return y.unsqueeze(1)  # (F, 1, H, W)

    x, y = luma(a), luma(b)
    size = min(11, x.shape[-1], x.shape[-2])
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * 1.5**2))
    g = g / g.sum()
    window = (g[:, None] * g[None, :]).view(1, 1, size, size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(t, window)

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = blur(x), blur(y)
    vx = blur(x * x) - mx**2
    vy = blur(y * y) - my**2
    cxy = blur(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(s.mean())


# --- the compute floor ---------------------------------------------------------------------------


@dataclass(frozen=True)
class DitShape:
    """What the FLOP count needs from a Wan-VACE DiT config."""

    dim: int = 1536
    ffn_dim: int = 8960
    num_layers: int = 30
    vace_layers: int = 15
    patch: tuple[int, int, int] = (1, 2, 2)
    vae_stride: tuple[int, int, int] = (4, 8, 8)

    @classmethod
    def from_config(cls, config: Any) -> DitShape:
        return cls(
            dim=int(config["num_attention_heads"]) * int(config["attention_head_dim"]),
            ffn_dim=int(config["ffn_dim"]),
            num_layers=int(config["num_layers"]),
            vace_layers=len(config["vace_layers"]),
            patch=tuple(config["patch_size"]),
        )


def video_tokens(shape: DitShape, width: int, height: int, num_frames: int) -> int:
    """DiT sequence length: latent frames x latent rows x latent columns, after patching."""
    st, sh, sw = shape.vae_stride
    pt, ph, pw = shape.patch
    frames = (num_frames - 1) // st + 1
    return (frames // pt) * (height // sh // ph) * (width // sw // pw)


def dit_flops(
    shape: DitShape,
    *,
    width: int,
    height: int,
    num_frames: int,
    text_len: int,
    steps: int,
    cfg: bool = True,
) -> float:
    """Floating-point operations of the DiT over a whole generation (multiply-add = 2).

    Per block (main and VACE alike) over ``N`` video tokens of width ``d`` with ``L`` context
    positions: self-attention projections ``8 N d^2``, self-attention scores and mix ``4 N^2 d``,
    cross-attention query/output projections ``4 N d^2``, key/value projections of the context
    ``4 L d^2``, cross-attention ``4 N L d``, feed-forward ``4 N d ffn``; VACE blocks add their
    output projection (and the first its input projection), ``2 N d^2`` each. Embeddings, norms,
    modulation and the VAE are left out (under 1 %, and the VAE is not the DiT). One forward per
    step, two with classifier-free guidance.
    """
    n = video_tokens(shape, width, height, num_frames)
    d, f, L = shape.dim, shape.ffn_dim, text_len
    block = 8 * n * d * d + 4 * n * n * d + 4 * n * d * d + 4 * L * d * d + 4 * n * L * d + 4 * n * d * f
    blocks = shape.num_layers + shape.vace_layers
    vace_proj = (shape.vace_layers + 1) * 2 * n * d * d
    forward = blocks * block + vace_proj
    return float(forward * steps * (2 if cfg else 1))

"""The benchmarks' measures: PSNR/SSIM of frame stacks and the DiT's FLOP count."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import metrics
from engine.errors import InvalidRequest


def test_psnr_and_ssim_are_perfect_for_equal_frames_and_drop_with_noise() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:48, 0:64]
    frame = np.stack([x * 4, y * 5, (x + y) * 2], axis=-1)  # smooth gradients, like a real picture
    frames = np.stack([frame, frame[::-1]]).astype(np.uint8)  # (2, 48, 64, 3)
    noisy = np.clip(frames.astype(int) + rng.normal(0, 20, frames.shape), 0, 255).astype(np.uint8)
    assert metrics.psnr(frames, frames) == float("inf")
    assert metrics.ssim(frames, frames) == pytest.approx(1.0)
    assert 15 < metrics.psnr(frames, noisy) < 30
    assert metrics.ssim(frames, noisy) < 0.9
    with pytest.raises(InvalidRequest, match="must have the same shape"):
        metrics.psnr(frames, frames[:1])


def test_the_flop_floor_of_a_480p_81_frame_video_is_about_42_pflop() -> None:
    shape = metrics.DitShape.from_config(
        {
            "num_attention_heads": 12,
            "attention_head_dim": 128,
            "ffn_dim": 8960,
            "num_layers": 30,
            "vace_layers": list(range(0, 30, 2)),
            "patch_size": [1, 2, 2],
        }
    )
    assert metrics.video_tokens(shape, 832, 480, 81) == 32760
    flops = metrics.dit_flops(shape, width=832, height=480, num_frames=81, text_len=512, steps=50)
    assert flops == pytest.approx(42.7e15, rel=0.01)
    # The Unison context (2048 positions) adds about 3 %; without guidance it halves.
    unison = metrics.dit_flops(shape, width=832, height=480, num_frames=81, text_len=2048, steps=50)
    assert 1.02 < unison / flops < 1.05
    single = metrics.dit_flops(shape, width=832, height=480, num_frames=81, text_len=512, steps=50, cfg=False)
    assert single == pytest.approx(flops / 2)

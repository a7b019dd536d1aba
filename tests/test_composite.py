"""engine.composite: the source pasted back after decoding, on synthetic frames and masks."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.composite import RING_PX, composite

H, W = 48, 64


def _frames(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, H, W, 3), dtype=np.uint8)


def _source(seed: int = 1) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))


def _square_mask(top: int = 12, left: int = 20, size: int = 16) -> Image.Image:
    arr = np.zeros((H, W), np.uint8)
    arr[top : top + size, left : left + size] = 255
    return Image.fromarray(arr)


def _flat(value: int) -> Image.Image:
    return Image.new("L", (W, H), value)


def _distance_to(mask: Image.Image) -> np.ndarray:
    """Brute-force Euclidean distance of each pixel to the nearest mask pixel (the reference)."""
    inside = np.asarray(mask) >= 128
    ys, xs = np.nonzero(inside)
    yy, xx = np.mgrid[:H, :W]
    return np.sqrt(((yy[..., None] - ys) ** 2 + (xx[..., None] - xs) ** 2).min(axis=-1))


def test_outside_the_mask_and_its_band_the_output_is_the_source_pixel_for_pixel():
    frames, src, mask = _frames(1), _source(), _square_mask()
    out = composite(frames, [src], [mask], feather_px=4, color_match=False)
    far = _distance_to(mask) > 4
    assert np.array_equal(out.frames[0][far], np.asarray(src)[far])


def test_inside_the_mask_the_output_is_the_generated_pixel():
    frames, src, mask = _frames(1), _source(), _square_mask()
    out = composite(frames, [src], [mask], feather_px=4, color_match=False)
    inside = np.asarray(mask) == 255
    assert np.array_equal(out.frames[0][inside], frames[0][inside])


def test_the_band_blends_between_generated_and_source():
    frames, src, mask = _frames(1), _source(), _square_mask()
    out = composite(frames, [src], [mask], feather_px=4, color_match=False).frames[0].astype(int)
    d = _distance_to(mask)
    band = (d > 0) & (d <= 4)
    gen, source = frames[0].astype(int), np.asarray(src).astype(int)
    lo, hi = np.minimum(gen, source), np.maximum(gen, source)
    assert np.all((out[band] >= lo[band]) & (out[band] <= hi[band]))
    # The weight of the generated pixel falls off with the distance from the mask.
    weight = np.where(hi != lo, (out - source) / np.where(hi != lo, gen - source, 1), np.nan)
    near = np.nanmean(weight[(d > 0) & (d <= 1.0)])
    outer = np.nanmean(weight[(d > 3) & (d <= 4)])
    assert 0.7 < near <= 1.0 and 0.0 <= outer < 0.3


def test_feather_zero_gives_a_hard_edge():
    frames, src, mask = _frames(1), _source(), _square_mask()
    out = composite(frames, [src], [mask], feather_px=0, color_match=False)
    inside = np.asarray(mask) == 255
    expected = np.where(inside[..., None], frames[0], np.asarray(src))
    assert np.array_equal(out.frames[0], expected)
    assert "hard edge" in out.summary


def test_a_frame_whose_mask_is_all_zero_becomes_exactly_the_source_frame():
    frames, first = _frames(3), _source(7)
    grey = Image.new("RGB", (W, H), (128, 128, 128))
    out = composite(
        frames, [first, grey, grey], [_flat(0), _flat(255), _flat(255)], feather_px=4, color_match=True
    )
    assert np.array_equal(out.frames[0], np.asarray(first))
    assert out.kept == [1.0, 0.0, 0.0]
    assert "1 frame (0) kept as the source's" in out.summary


def test_frames_whose_mask_is_all_255_are_untouched():
    frames = _frames(2)
    grey = Image.new("RGB", (W, H), (128, 128, 128))
    out = composite(frames, [grey, grey], [_flat(255)] * 2, feather_px=4, color_match=True)
    assert np.array_equal(out.frames, frames)
    assert out.kept_fraction == 0.0
    assert not out.metadata()["preserved"]


def test_a_task_without_video_or_mask_returns_the_frames_as_generated():
    frames = _frames(1)
    out = composite(frames, None, None, feather_px=4, color_match=True)
    assert np.array_equal(out.frames, frames)
    assert out.summary == "nothing kept from a source"


def test_colour_match_removes_a_constant_shift_of_the_generated_frames():
    src = _source()
    mask = _square_mask()
    shift = np.array([6, -4, 3])
    # The VAE brought the source back with a tint, and drew something new inside the mask.
    generated = np.clip(np.asarray(src).astype(int) + shift, 0, 255)
    inside = np.asarray(mask) == 255
    generated[inside] = np.clip(_frames(1)[0][inside].astype(int) + shift, 0, 255)
    frames = generated.astype(np.uint8)[None]

    out = composite(frames, [src], [mask], feather_px=4, color_match=True)
    assert out.color_shift is not None
    # Clipping at 0/255 biases the measured mean a little; the shift itself is found.
    assert np.allclose(out.color_shift, shift, atol=0.6)
    # Inside the mask the tint is gone (up to the pixels the tint had clipped).
    untinted = np.clip(generated[inside] - np.rint(out.color_shift), 0, 255)
    assert np.abs(out.frames[0][inside].astype(int) - untinted).max() <= 1
    # Kept pixels outside the band are still exactly the source.
    far = _distance_to(mask) > 4
    assert np.array_equal(out.frames[0][far], np.asarray(src)[far])
    assert "colour shift (+6,-4,+3) corrected" in out.summary


def test_without_a_shift_colour_match_changes_nothing():
    src, mask = _source(), _square_mask()
    generated = np.asarray(src).copy()
    inside = np.asarray(mask) == 255
    generated[inside] = _frames(1)[0][inside]
    out = composite(generated[None], [src], [mask], feather_px=4, color_match=True)
    assert out.color_shift is None
    assert np.array_equal(out.frames[0][inside], generated[inside])


def test_a_difference_too_large_for_a_tint_is_not_corrected():
    src, mask = _source(), _square_mask()
    generated = np.clip(np.asarray(src).astype(int) + 60, 0, 255).astype(np.uint8)
    out = composite(generated[None], [src], [mask], feather_px=2, color_match=True)
    assert out.color_shift is None
    assert "too large for a shift" in out.summary


def test_the_colour_shift_is_measured_on_kept_pixels_next_to_the_mask_only():
    src, mask = _source(), _square_mask()
    generated = np.asarray(src).astype(int)
    d = _distance_to(mask)
    # A tint far from the mask (beyond the band and the ring) must not be measured.
    generated[d > 4 + RING_PX] += 20
    out = composite(
        np.clip(generated, 0, 255).astype(np.uint8)[None], [src], [mask], feather_px=4, color_match=True
    )
    assert out.color_shift is None


def test_one_mask_object_shared_by_every_frame_is_applied_to_each():
    frames, mask = _frames(5), _square_mask()
    sources = [_source(10 + i) for i in range(5)]
    out = composite(frames, sources, [mask] * 5, feather_px=3, color_match=False)
    far = _distance_to(mask) > 3
    inside = np.asarray(mask) == 255
    for i in range(5):
        assert np.array_equal(out.frames[i][far], np.asarray(sources[i])[far])
        assert np.array_equal(out.frames[i][inside], frames[i][inside])
    assert len(set(out.kept)) == 1
    assert "of 5 frames" in out.summary


def test_different_masks_per_frame_are_each_respected():
    frames = _frames(2)
    masks = [_square_mask(left=4), _square_mask(left=40)]
    sources = [_source(3), _source(4)]
    out = composite(frames, sources, masks, feather_px=2, color_match=False)
    for i in range(2):
        far = _distance_to(masks[i]) > 2
        inside = np.asarray(masks[i]) == 255
        assert np.array_equal(out.frames[i][far], np.asarray(sources[i])[far])
        assert np.array_equal(out.frames[i][inside], frames[i][inside])


def test_the_input_frames_are_not_modified():
    frames = _frames(1)
    before = frames.copy()
    composite(frames, [_source()], [_square_mask()], feather_px=4, color_match=True)
    assert np.array_equal(frames, before)


def test_the_metadata_says_what_was_kept():
    frames = _frames(2)
    out = composite(
        frames, [_source(), _source()], [_flat(0), _square_mask()], feather_px=4, color_match=False
    )
    meta = out.metadata()
    assert meta["preserved"] and meta["whole_frames"] == [0] and meta["feather_px"] == 4
    assert 0.5 < meta["kept_fraction"] < 1.0
    assert "kept" in meta["summary"] and "4 px feathered band" in meta["summary"]


@pytest.mark.parametrize(
    ("video", "mask", "message"),
    [
        ([_source()], [_square_mask()] * 2, "mask: 2 frames for 1"),
        ([_source().resize((32, 24))], [_square_mask()], "video[0]: size 32x24"),
    ],
)
def test_sources_that_disagree_with_the_frames_are_refused(video, mask, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        composite(_frames(1), video, mask, feather_px=4, color_match=False)


def test_pasting_in_place_gives_the_same_frames_as_pasting_into_a_copy():
    frames = _frames(2)
    sources, masks = [_source(), _source()], [_square_mask(), _flat(0)]
    copied = composite(frames, sources, masks, feather_px=4, color_match=True)
    mine = frames.copy()
    done = composite(mine, sources, masks, feather_px=4, color_match=True, in_place=True)
    assert done.frames is mine
    assert np.array_equal(done.frames, copied.frames)
    assert done.color_shift == copied.color_shift and done.kept == copied.kept


def test_the_generators_uint8_arrays_give_the_same_result_as_the_images():
    from engine.geometry import uint8_frames

    frames = _frames(3)
    sources, masks = [_source(), _source(), _source()], [_square_mask(), _flat(0), _square_mask()]
    from_images = composite(frames, sources, masks, feather_px=4, color_match=True)
    from_arrays = composite(
        frames, uint8_frames(sources), uint8_frames(masks), feather_px=4, color_match=True
    )
    assert np.array_equal(from_arrays.frames, from_images.frames)
    assert from_arrays.kept == from_images.kept and from_arrays.color_shift == from_images.color_shift


def test_masks_analysed_ahead_give_the_same_result_and_are_used_only_for_their_own_masks(monkeypatch):
    import engine.composite as composite_module
    from engine.composite import AnalysisAhead, analyse
    from engine.geometry import uint8_frames

    frames = _frames(3)
    sources = uint8_frames([_source(), _source(), _source()])
    masks = uint8_frames([_square_mask(), _flat(0), _square_mask()])
    want = composite(frames, sources, masks, feather_px=4, color_match=True)
    ahead = AnalysisAhead(masks, feather_px=4, color_match=True)
    analysed = ahead.result()
    assert analysed is not None and analysed.mask is masks

    calls: list[object] = []
    monkeypatch.setattr(composite_module, "analyse", lambda m, **kw: calls.append(m) or analyse(m, **kw))
    got = composite(frames, sources, masks, feather_px=4, color_match=True, analysed=analysed)
    assert calls == []  # pasted from the analysis made ahead
    assert np.array_equal(got.frames, want.frames)
    assert got.kept == want.kept and got.color_shift == want.color_shift
    # Another mask object (equal bytes or not) or other settings: analysed again, not trusted.
    other = masks.copy()
    composite(frames, sources, other, feather_px=4, color_match=True, analysed=analysed)
    composite(frames, sources, masks, feather_px=2, color_match=True, analysed=analysed)
    assert calls == [other, masks]


def test_an_analysis_ahead_that_fails_leaves_the_error_to_composite():
    from engine.composite import AnalysisAhead

    assert AnalysisAhead(np.zeros((2, 8, 8, 1), np.uint8), feather_px=-1, color_match=False).result() is None
    with pytest.raises(ValueError, match="feather_px"):
        composite(
            _frames(2)[:, :8, :8].copy(),
            np.zeros((2, 8, 8, 3), np.uint8),
            np.zeros((2, 8, 8, 1), np.uint8),
            feather_px=-1,
            color_match=False,
        )


@pytest.mark.parametrize(("feather_px", "color_match"), [(4, True), (0, False), (6, False)])
def test_the_paste_on_the_generators_device_equals_the_paste_on_the_host(feather_px, color_match):
    """The generator's output left on its device (a torch tensor; here the CPU's) is pasted there:
    the same frames, kept fractions, colour shift and notes as the numpy paste."""
    import torch

    from engine.geometry import uint8_frames

    src = _source()
    generated = np.clip(np.asarray(src).astype(int) + [6, -4, 3], 0, 255).astype(np.uint8)  # tinted
    frames = np.stack([generated, _frames(1, 5)[0], generated, _frames(1, 6)[0]])
    sources = uint8_frames([src, _source(2), src, _source(3)])
    masks = uint8_frames([_square_mask(), _flat(0), _square_mask(8, 10, 20), _flat(255)])
    want = composite(frames, sources, masks, feather_px=feather_px, color_match=color_match)
    on_device = torch.from_numpy(frames.copy())
    got = composite(on_device, sources, masks, feather_px=feather_px, color_match=color_match)
    assert isinstance(got.frames, np.ndarray) and np.array_equal(got.frames, want.frames)
    assert np.array_equal(on_device.numpy(), want.frames)  # pasted in place there
    assert (got.kept, got.color_shift, got.notes) == (want.kept, want.color_shift, want.notes)
    if color_match:
        assert got.color_shift is not None  # the tint was measured and removed on both paths

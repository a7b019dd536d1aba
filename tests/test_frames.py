"""engine.frames: VACE's inputs as uint8 tensors scaled on the device, the output made uint8 there,
each equal to diffusers' own conversion (synthetic frames, then the tiny pipeline end to end)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.video_processor import VideoProcessor
from PIL import Image

from engine.config import EngineConfig, SamplingDefaults
from engine.frames import FramesProcessor, device_frames, to_uint8_frames, uint8_frames
from engine.generator import Generator, build_text_context
from engine.geometry import ArrayFrames
from engine.prepare import Prepared
from engine.results import Sampling
from engine.sampling import resolve_sampling
from engine.timings import GENERATION, Timings

H, W, F = 48, 64, 9


def _video(seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for _ in range(F)]


def _masks() -> list[Image.Image]:
    box = np.zeros((H, W), np.uint8)
    box[10:30, 20:50] = 255
    one = Image.fromarray(box)
    return [one] * 4 + [Image.new("L", (W, H), 0)] + [Image.fromarray(255 - box)] * 4


def _stock_to_uint8(frames: np.ndarray) -> np.ndarray:
    """What the generator did before: the pipeline's "np" output, then rounded on the host."""
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)


def test_repeated_frames_are_converted_once_and_equal_to_each_image():
    masks = _masks()
    arr = uint8_frames(masks)
    assert arr.shape == (F, H, W, 1) and arr.dtype == np.uint8
    for i, m in enumerate(masks):
        assert np.array_equal(arr[i, ..., 0], np.asarray(m))


def test_array_frames_read_as_images_and_hand_over_their_array_uncopied():
    rgb = np.stack([np.asarray(im) for im in _video()])
    frames, masks = ArrayFrames(rgb), ArrayFrames(uint8_frames(_masks()))
    assert len(frames) == F and uint8_frames(frames) is rgb
    assert frames[2].mode == "RGB" and np.array_equal(np.asarray(frames[2]), rgb[2])
    assert masks[0].mode == "L" and np.array_equal(np.asarray(masks[0]), np.asarray(_masks()[0]))
    assert [np.asarray(im).sum() for im in frames[1:3]] == [rgb[1].sum(), rgb[2].sum()]
    with pytest.raises(ValueError, match="uint8"):
        ArrayFrames(rgb.astype(np.float32))


def test_video_and_mask_scaled_from_uint8_equal_diffusers_preprocessing_bit_for_bit():
    stock = VideoProcessor(vae_scale_factor=8)
    ours = FramesProcessor(vae_scale_factor=8)
    video, masks = _video(), _masks()
    want_video = stock.preprocess_video(video, H, W)  # (1, 3, F, H, W) in [-1, 1]
    want_mask = stock.preprocess_video(masks, H, W)  # (1, 1, F, H, W)
    got_video = ours.preprocess_video(device_frames(video, "cpu"), H, W)
    got_mask = ours.preprocess_video(device_frames(masks, "cpu"), H, W)
    assert got_video.shape == want_video.shape and got_mask.shape == want_mask.shape
    assert torch.equal(got_video, want_video.float())
    assert torch.equal(got_mask, want_mask.float())
    # PIL lists still take diffusers' own path.
    assert torch.equal(ours.preprocess_video(video, H, W), want_video)


def test_a_uint8_video_of_another_size_is_refused():
    with pytest.raises(ValueError, match="must be"):
        FramesProcessor(vae_scale_factor=8).preprocess_video(device_frames(_video(), "cpu"), H + 16, W)


def test_the_decoded_video_made_uint8_frame_by_frame_equals_the_stock_output_bit_for_bit():
    gen = torch.Generator().manual_seed(3)
    # VAE output in [-1, 1], with values beyond it and exact half levels, as a decode can give.
    decoded = torch.rand((1, 3, F, H, W), generator=gen) * 2.4 - 1.2
    decoded[0, 0, 0, 0, :8] = torch.tensor([(2 * k + 1) / 255 - 1 for k in range(8)])
    stock = _stock_to_uint8(VideoProcessor(vae_scale_factor=8).postprocess_video(decoded, output_type="np"))
    ours = FramesProcessor(vae_scale_factor=8).postprocess_video(decoded, output_type="uint8")
    assert ours.dtype == torch.uint8 and tuple(ours.shape) == stock.shape == (1, F, H, W, 3)
    assert np.array_equal(ours.numpy(), stock)
    assert np.array_equal(to_uint8_frames(decoded).numpy(), stock)


# ---------------------------------------------------------------------------------------------
# The tiny pipeline: the generator's path against diffusers' stock conversion of the same inputs


@pytest.fixture(scope="module")
def generator(tiny_paths) -> Generator:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    config = EngineConfig(
        planner_model=None,
        adapter=None,
        projector=None,
        generator_model=str(tiny_paths.wan),
        device="cpu",
        dtype="float32",
        local_files_only=True,
        sampling=SamplingDefaults(steps=2),
    )
    gen = Generator(config)
    gen.load()
    yield gen
    torch.set_num_threads(before)


def _stock_run(generator: Generator, prepared: Prepared, seed: int) -> np.ndarray:
    """The same run as diffusers alone would make it: PIL lists in, float frames out, uint8 on the host."""
    pipe = generator.pipeline
    sampling = resolve_sampling(Sampling(seed=seed, guidance=1.0), generator.config.sampling)
    embeds, _ = build_text_context(
        pipe, "a fox", negative_prompt=None, extra_tokens=None, text_len=512, max_sequence_length=512
    )
    out = pipe(
        prompt_embeds=embeds,
        video=prepared.video,
        mask=prepared.mask,
        height=prepared.height,
        width=prepared.width,
        num_frames=prepared.num_frames,
        num_inference_steps=sampling.steps,
        guidance_scale=sampling.guidance,
        conditioning_scale=sampling.conditioning_scale,
        generator=torch.Generator().manual_seed(seed),
        output_type="np",
        max_sequence_length=512,
    )
    return _stock_to_uint8(np.asarray(out.frames))[0]


def test_the_generators_uint8_path_equals_the_stock_pipeline_within_one_level(generator: Generator):
    """A video edit's inputs (a source video, a mask with a kept and a regenerated part) through
    the generator, and the same inputs handed to the pipeline as PIL lists with a float output."""
    prepared = Prepared(width=W, height=H, num_frames=F, video=_video(1), mask=_masks())
    sampling = resolve_sampling(Sampling(seed=7, guidance=1.0), generator.config.sampling)
    timings = Timings()
    ours = generator.run(
        prepared, "a fox", extra_tokens=None, sampling=sampling, control=None, timings=timings
    )
    stock = _stock_run(generator, prepared, seed=7)
    assert ours.shape == stock.shape == (F, H, W, 3) and ours.dtype == np.uint8
    diff = np.abs(ours.astype(np.int16) - stock.astype(np.int16))
    assert diff.max() <= 1, diff.max()
    assert ours.std() > 1  # real frames, not a constant
    # Every stage inside the run was timed.
    recorded = timings.as_dict()
    for stage in ("encode_prompt", "vace_encode", "denoise", "vae_decode", "postprocess"):
        assert stage in GENERATION and recorded[f"{stage}_s"] > 0, stage


def test_a_text_only_run_takes_the_pipelines_own_grey_video(generator: Generator, tmp_path: Path):
    prepared = Prepared(width=W, height=H, num_frames=5)
    sampling = resolve_sampling(Sampling(seed=2, guidance=1.0), generator.config.sampling)
    ours = generator.run(prepared, "a fox", extra_tokens=None, sampling=sampling, control=None)
    stock = _stock_run(generator, prepared, seed=2)
    assert np.abs(ours.astype(np.int16) - stock.astype(np.int16)).max() <= 1


# ---------------------------------------------------------------------------------------------
# VACE's conditioning from uint8 inputs (engine.frames.Conditioning) against diffusers' own methods


def _conditioning(pipe, video, mask, refs, num_frames: int = F, *, stock: bool):
    """The pipeline's steps 5a-5c (conditions, video latents, masks) with the installed wrappers,
    or with the class's own methods (diffusers' code, PIL inputs)."""
    cls = type(pipe)
    conditions, latents, masks = (
        (
            lambda *a: cls.preprocess_conditions(pipe, *a),
            lambda *a: cls.prepare_video_latents(pipe, *a),
            lambda *a: cls.prepare_masks(pipe, *a),
        )
        if stock
        else (pipe.preprocess_conditions, pipe.prepare_video_latents, pipe.prepare_masks)
    )
    v, m, r = conditions(video, mask, refs, 1, H, W, num_frames, torch.float32, torch.device("cpu"))
    return latents(v, m, r, None, torch.device("cpu")), masks(m, r, None)


def _grey_masks() -> list[Image.Image]:
    """Masks with values between 0 and 255 (a feathered edge), where binarising matters."""
    ramp = np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1))
    return [Image.fromarray(ramp)] * F


@pytest.mark.parametrize("masks", [_masks, _grey_masks], ids=["binary", "grey levels"])
@pytest.mark.parametrize("with_reference", [False, True], ids=["no reference", "a reference"])
def test_conditioning_from_uint8_equals_diffusers_own_bit_for_bit(
    generator: Generator, masks, with_reference
):
    pipe = generator.pipeline
    video, mask = _video(4), masks()
    refs = [Image.fromarray(np.full((H // 2, W, 3), 90, np.uint8))] if with_reference else None
    want = _conditioning(pipe, video, mask, refs, stock=True)
    got = _conditioning(pipe, device_frames(video, "cpu"), device_frames(mask, "cpu"), refs, stock=False)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and torch.equal(g, w)
    assert want[0].abs().sum() > 0  # real latents, not zeros on both sides


def test_a_blank_clips_conditioning_is_encoded_once_per_size_and_equals_diffusers(generator: Generator):
    pipe = generator.pipeline
    pipe.vace_conditioning.blanks.clear()
    encoded: list[tuple[int, ...]] = []
    encode = pipe.vae.encode

    def counting(x, *a, **k):
        encoded.append(tuple(x.shape))
        return encode(x, *a, **k)

    pipe.vae.encode = counting
    try:
        want = _conditioning(pipe, None, None, None, 5, stock=True)
        encoded.clear()
        first = _conditioning(pipe, None, None, None, 5, stock=False)
        again = _conditioning(pipe, None, None, None, 5, stock=False)
        other = _conditioning(pipe, None, None, None, 9, stock=False)
    finally:
        del pipe.vae.encode
    assert encoded == [(1, 3, 5, H, W), (1, 3, 9, H, W)]  # once per size, one half for both
    for got in (first, again):
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert other[0].shape[2] == 3  # 9 frames: 3 latent frames
    # References on a blank clip (reference-to-video): the kept blank and the references' latents.
    refs = [Image.fromarray(np.full((H, W // 2, 3), 200, np.uint8))]
    want = _conditioning(pipe, None, None, refs, 5, stock=True)
    got = _conditioning(pipe, None, None, refs, 5, stock=False)
    assert got[0].shape[2] == 3 and torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_a_run_can_leave_its_frames_on_the_device_for_the_paste(generator: Generator):
    """``on_device``: the uint8 frames as the tensor on the execution device (here the CPU's),
    the same frames the host copy gives."""
    prepared = Prepared(width=W, height=H, num_frames=5, video=_video(2)[:5], mask=_masks()[:5])
    sampling = resolve_sampling(Sampling(seed=4, guidance=1.0), generator.config.sampling)
    args = {"extra_tokens": None, "sampling": sampling, "control": None}
    on_host = generator.run(prepared, "a fox", **args)
    on_device = generator.run(prepared, "a fox", on_device=True, **args)
    assert isinstance(on_host, np.ndarray) and isinstance(on_device, torch.Tensor)
    assert on_device.dtype == torch.uint8 and np.array_equal(on_device.cpu().numpy(), on_host)

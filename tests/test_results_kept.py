"""What a user keeps (issue 9): the source pasted back, sizes and lengths from the source, long
videos as chains of windows, video_extend's whole clip, and candidates. Tiny models on the CPU,
through the engine's admit/run (the path MCP and the CLI take)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from engine.api import parse_arguments
from engine.config import TINY_LIMITS, EngineConfig
from engine.control import JobControl
from engine.engine import Engine
from engine.geometry import resize_cover
from engine.media import encode_mp4, encode_png
from engine.results import GenerateResult
from engine.video import probe_video, read_video

FEATHER = 2


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("kept-media")
    rng = np.random.default_rng(5)
    # A portrait photo and a mask with a white square in its middle.
    encode_png(d / "portrait.png", rng.integers(0, 255, (80, 48, 3), dtype=np.uint8))
    mask = np.zeros((80, 48), np.uint8)
    mask[30:50, 14:34] = 255
    encode_png(d / "mask.png", mask)
    # Smooth, so that the video codec's error stays small.
    y, x = np.mgrid[0:80, 0:48]
    smooth = np.stack([x * 5, y * 3, 255 - y * 3], axis=-1).clip(0, 255).astype(np.uint8)
    encode_png(d / "smooth.png", smooth)
    # A smooth clip (codec error stays small): 2 s at 16 fps, 32 frames.
    t = np.linspace(0, 1, 32)[:, None, None, None]
    ramp = np.linspace(0, 255, 64)[None, None, :, None]
    frames = np.clip(ramp * (0.5 + 0.5 * t) + np.zeros((32, 48, 64, 3)), 0, 255).astype(np.uint8)
    encode_mp4(d / "clip.mp4", frames, 16)
    # 12 s: longer than one window of the tiny limits below.
    encode_mp4(d / "long.mp4", np.repeat(frames[:1], 192, axis=0), 16)
    return {p.name: p for p in d.iterdir()}


@pytest.fixture(scope="module")
def engine(tiny_paths, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    # Small windows keep chains fast on a CPU: 33 frames a window, chains up to 8 s.
    limits = TINY_LIMITS.model_copy(update={"max_frames": 33, "max_duration_s": 8.0})
    config = EngineConfig.tiny(
        tiny_paths.root,
        output_dir=tmp_path_factory.mktemp("kept-out"),
        limits=limits,
        results={"feather_px": FEATHER, "window_overlap": 5},
    )
    eng = Engine(config)
    eng.preload()
    return eng


def generate(engine: Engine, job: JobControl | None = None, **arguments) -> GenerateResult:
    request = parse_arguments("generate", engine.config.limits, {"steps": 1, "seed": 3, **arguments})
    return engine.run(engine.admit(request), control=job)


@pytest.fixture()
def frames_of(opened):
    """A result's frames: a PNG as its one frame, an MP4 decoded as an input (``opened``)."""

    def read(path: str) -> np.ndarray:
        if path.endswith(".png"):
            return np.asarray(Image.open(path).convert("RGB"))[None]
        return read_video(opened(path)).frames

    return read


def far_from(mask: Image.Image, px: int) -> np.ndarray:
    """Pixels farther than ``px`` from every white pixel of ``mask``."""
    grown = mask.filter(ImageFilter.MaxFilter(2 * px + 3))  # a little beyond the band
    return np.asarray(grown) == 0


# ---------------------------------------------------------------------------------------------
# Preservation and source-aware sizes


def test_an_edited_portrait_photo_stays_portrait_and_keeps_its_unmasked_pixels(
    engine: Engine, media: dict[str, Path], frames_of
):
    result = generate(
        engine,
        task="image_edit",
        prompt="a red ball",
        source=str(media["portrait.png"]),
        mask=str(media["mask.png"]),
    )
    plan = result.plan
    assert plan.height > plan.width  # portrait stays portrait
    assert any("aspect at the default" in n for n in plan.notes)
    (out,) = result.outputs
    got = frames_of(out.path)[0]
    size = (plan.width, plan.height)
    source = np.asarray(resize_cover(Image.open(media["portrait.png"]).convert("RGB"), size))
    mask = resize_cover(Image.open(media["mask.png"]).convert("L"), size).point(
        lambda v: 255 if v >= 128 else 0
    )
    keep = far_from(mask, FEATHER)
    assert keep.sum() > 0.4 * keep.size
    np.testing.assert_array_equal(got[keep], source[keep])  # pixel for pixel
    inside = np.asarray(mask) == 255
    assert np.abs(got[inside].astype(int) - source[inside]).mean() > 10  # the masked area is new
    sidecar = json.loads(Path(out.sidecar).read_text())
    assert sidecar["preserved"]["preserved"] is True and sidecar["preserved"]["feather_px"] == FEATHER


def test_preserve_false_returns_the_generators_raw_output(engine: Engine, media: dict[str, Path], frames_of):
    args = dict(
        task="image_edit", prompt="a red ball", source=str(media["portrait.png"]), mask=str(media["mask.png"])
    )
    kept = frames_of(generate(engine, **args).outputs[0].path)[0]
    raw_result = generate(engine, preserve=False, **args)
    raw = frames_of(raw_result.outputs[0].path)[0]
    plan = raw_result.plan
    source = np.asarray(
        resize_cover(Image.open(media["portrait.png"]).convert("RGB"), (plan.width, plan.height))
    )
    outside = (
        np.asarray(resize_cover(Image.open(media["mask.png"]).convert("L"), (plan.width, plan.height))) < 128
    )
    # The tiny VAE does not give the source back: only pasting does.
    assert np.abs(raw[outside].astype(int) - source[outside]).mean() > 5
    assert (
        np.abs(kept[outside].astype(int) - source[outside]).mean()
        < np.abs(raw[outside].astype(int) - source[outside]).mean()
    )
    assert any("preserve is off" in n for n in raw_result.notes)


def test_the_given_first_frame_of_an_animation_is_the_given_image(
    engine: Engine, media: dict[str, Path], frames_of
):
    result = generate(
        engine, task="image_to_video", prompt="it moves", first_frame=str(media["smooth.png"]), num_frames=9
    )
    plan = result.plan
    assert plan.height > plan.width
    frames = frames_of(result.outputs[0].path)
    source = np.asarray(
        resize_cover(Image.open(media["smooth.png"]).convert("RGB"), (plan.width, plan.height))
    )
    first_error = np.abs(frames[0].astype(int) - source).mean()
    later_error = np.abs(frames[-1].astype(int) - source).mean()
    assert first_error < 6 < later_error  # the codec's error only, versus a generated frame


# ---------------------------------------------------------------------------------------------
# Lengths from the source, video_extend, chains


def test_a_video_edit_without_a_length_spans_the_whole_source(engine: Engine, media: dict[str, Path], opened):
    result = generate(
        engine, task="video_edit", prompt="snow", source=str(media["clip.mp4"]), mask=str(media["mask.png"])
    )
    assert result.plan.num_frames == 33  # 32 frames at 16 fps → 33 (4k+1, one frame repeated)
    assert any("length from the source" in n for n in result.plan.notes)
    assert probe_video(opened(result.outputs[0].path)).num_frames == 33


def test_a_source_longer_than_one_window_is_cut_with_a_note_that_says_what_was_left_out(
    engine: Engine, media: dict[str, Path]
):
    result = generate(engine, task="video_control", prompt="a dancer", control=str(media["long.mp4"]))
    assert result.plan.num_frames == 33
    note = next(n for n in result.plan.notes if "left out" in n)
    assert "12.00 s" in note and "first 2.00 s" in note


def test_video_extend_returns_the_whole_clip_and_the_new_part(
    engine: Engine, media: dict[str, Path], opened, frames_of
):
    result = generate(
        engine, task="video_extend", prompt="it goes on", source=str(media["clip.mp4"]), duration_s=1
    )
    whole, new = result.outputs
    assert (whole.role, new.role) == ("result", "new_part")
    assert new.num_frames == 17 and whole.num_frames == 32 + 17
    source = read_video(opened(media["clip.mp4"])).frames
    got = frames_of(whole.path)
    assert np.abs(got[:32].astype(int) - source).mean() < 4  # the source, through the codec only
    assert np.abs(frames_of(new.path).astype(int) - got[32:]).mean() < 4  # the same frames


def test_a_video_longer_than_a_window_is_a_chain_with_one_progress_and_the_joins_kept(
    engine: Engine, media: dict[str, Path], opened
):
    reports: list[tuple[int, int, str]] = []
    control = JobControl(on_progress=lambda done, total, stage: reports.append((done, total, stage)))
    result = generate(engine, job=control, task="text_to_video", prompt="waves", duration_s=5)
    assert result.plan.num_frames == 81
    assert probe_video(opened(result.outputs[0].path)).num_frames == 81
    assert any("chain of 3 windows" in n for n in result.notes)  # 33 + 28 + 20 new frames
    steps = [(d, t) for d, t, stage in reports if stage.startswith("generating") and d]  # not the beginnings
    assert steps == [(1, 3), (2, 3), (3, 3)]  # one step per window, counted across the chain
    assert {stage for *_, stage in reports if stage.startswith("generating")} == {
        "generating, window 1/3",
        "generating, window 2/3",
        "generating, window 3/3",
    }


def test_a_chain_is_cancelled_as_one_job_and_writes_nothing(engine: Engine):
    from engine.errors import Cancelled

    before = sorted(engine.config.output_dir.iterdir())
    control = JobControl()
    original = control.step

    def step(done: int, total: int) -> None:
        original(done, total)
        if done == 2:  # in the second window
            control.cancel()

    control.step = step  # type: ignore[method-assign]
    with pytest.raises(Cancelled):
        generate(engine, job=control, task="text_to_video", prompt="waves", duration_s=5)
    assert sorted(engine.config.output_dir.iterdir()) == before


# ---------------------------------------------------------------------------------------------
# Candidates


def test_count_makes_that_many_outputs_from_consecutive_seeds(engine: Engine, frames_of):
    result = generate(engine, task="text_to_image", prompt="a fox", count=3, seed=10)
    assert [o.seed for o in result.outputs] == [10, 11, 12]
    images = [frames_of(o.path)[0] for o in result.outputs]
    assert not np.array_equal(images[0], images[1])
    for o in result.outputs:
        assert json.loads(Path(o.sidecar).read_text())["seed"] == o.seed
    # Candidate 2 is what seed 11 alone makes.
    alone = generate(engine, task="text_to_image", prompt="a fox", seed=11)
    np.testing.assert_array_equal(frames_of(alone.outputs[0].path)[0], images[1])


def test_a_batch_of_candidates_gives_each_seed_its_own_result(engine: Engine):
    from engine.plan import build_plan
    from engine.prepare import PrepContext, prepare
    from engine.results import Sampling
    from engine.sampling import resolve_sampling

    plan = build_plan("text_to_image", "a fox", limits=engine.config.limits)
    prepared = prepare(plan, PrepContext(limits=engine.config.limits))
    sampling = resolve_sampling(Sampling(steps=1, seed=4), engine.config.sampling)
    run = dict(extra_tokens=None, sampling=sampling, control=None)
    batch = engine.generator.run(prepared, "a fox", seeds=[4, 5], **run)
    assert batch.shape[0] == 2
    for k, seed in enumerate((4, 5)):
        alone = engine.generator.run(prepared, "a fox", seeds=[seed], **run)[0]
        assert np.abs(batch[k].astype(int) - alone.astype(int)).max() <= 1


def test_count_is_bounded_and_refused_by_name(engine: Engine):
    from engine.errors import InvalidRequest

    with pytest.raises(InvalidRequest, match="count"):
        parse_arguments(
            "generate", engine.config.limits, {"task": "text_to_image", "prompt": "x", "count": 5}
        )


# ---------------------------------------------------------------------------------------------
# Source audio


def test_a_video_edit_keeps_the_source_audio_over_the_time_it_spans(engine: Engine, tmp_path: Path):
    from test_outputs import _streams, _with_audio

    clip = _with_audio(tmp_path / "talk.mp4", 2.0)
    mask = tmp_path / "m.png"
    encode_png(mask, np.pad(np.full((16, 16), 255, np.uint8), 16))
    result = generate(engine, task="video_edit", prompt="snow", source=str(clip), mask=str(mask))
    streams = _streams(result.outputs[0].path)
    assert streams["audio"][0] == "aac"
    assert streams["audio"][1] == pytest.approx(result.plan.num_frames / 16, abs=0.1)
    sidecar = json.loads(Path(result.outputs[0].sidecar).read_text())
    assert sidecar["audio"]["codec"] == "aac"
    # A task that makes new time (text_to_video) has no source audio to keep.
    assert "audio" not in _streams(
        generate(engine, task="text_to_video", prompt="x", num_frames=5).outputs[0].path
    )


def test_an_animation_ending_on_a_given_frame_is_chained_backwards_and_ends_on_it(
    engine: Engine, media: dict[str, Path], frames_of
):
    result = generate(
        engine, task="image_to_video", prompt="it arrives", last_frame=str(media["smooth.png"]), num_frames=49
    )
    assert any("chain of 2 windows" in n for n in result.notes)
    frames = frames_of(result.outputs[0].path)
    assert len(frames) == 49
    plan = result.plan
    source = np.asarray(
        resize_cover(Image.open(media["smooth.png"]).convert("RGB"), (plan.width, plan.height))
    )
    assert np.abs(frames[-1].astype(int) - source).mean() < 6 < np.abs(frames[0].astype(int) - source).mean()


def test_make_it_20_seconds_gives_a_20_second_video(engine: Engine, opened):
    """Through auto and the rules planner; the tiny limits here allow 8 s, the defaults 30 s."""
    from engine.config import TINY_LIMITS

    eng = Engine(
        engine.config.model_copy(update={"limits": TINY_LIMITS}),
        planner=engine.planner,
        generator=engine.generator,
        projector=engine.projector(),
    )
    request = parse_arguments(
        "auto", eng.config.limits, {"prompt": "a video of waves, make it 20 seconds", "steps": 1}
    )
    result = eng.run(eng.admit(request)).generation
    assert result is not None and result.plan.num_frames == 321
    info = probe_video(opened(result.outputs[0].path))
    assert info.num_frames == 321 and info.duration_s == pytest.approx(20.0, abs=0.1)

"""The Engine facade end to end on the tiny real-format models: every task writes a decodable file
of the requested size and frame count with its sidecar; planning features come from one pass;
cancellation and failures leave nothing in the output directory."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from engine.config import EngineConfig
from engine.control import JobControl
from engine.engine import Engine
from engine.errors import Cancelled, InputRefused, InvalidRequest, ModelError, OutOfMemory
from engine.jobs import JobQueue
from engine.media import encode_mp4, encode_png
from engine.plan import Margins, build_plan
from engine.request import request_for_plan
from engine.results import Sampling
from engine.timings import GENERATION
from engine.video import probe_video
from engine.vocab import Task


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    encode_png(d / "photo.png", rng.integers(0, 255, (60, 80, 3), dtype=np.uint8))
    mask = np.zeros((60, 80, 3), np.uint8)
    mask[10:40, 20:60] = 255
    encode_png(d / "mask.png", mask)
    encode_png(d / "face.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    encode_mp4(d / "clip.mp4", rng.integers(0, 255, (20, 48, 64, 3), dtype=np.uint8), 16)
    encode_mp4(d / "mask.mp4", np.repeat(mask[None, :48, :64], 20, axis=0), 16)
    return {p.stem + p.suffix: str(p) for p in d.iterdir()}


@pytest.fixture(scope="module")
def engine(tiny_paths, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    out = tmp_path_factory.mktemp("engine-out")
    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=out))
    eng.preload()
    return eng


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# (task, inputs, extra build_plan kwargs)
CASES = [
    ("text_to_image", [], {}),
    ("text_to_video", [], {"num_frames": 9}),
    ("image_edit", [("photo.png", "source"), ("mask.png", "mask")], {}),
    ("image_control", [("face.png", "control")], {}),
    ("image_reference", [("face.png", "reference"), ("photo.png", "reference")], {}),
    ("image_to_video", [("photo.png", "first_frame")], {"num_frames": 5}),
    ("image_to_video", [("photo.png", "last_frame")], {"num_frames": 5}),
    ("first_last_to_video", [("photo.png", "first_frame"), ("face.png", "last_frame")], {"num_frames": 9}),
    ("video_reference", [("face.png", "reference")], {"num_frames": 5}),
    ("video_edit", [("clip.mp4", "source"), ("mask.mp4", "mask")], {"num_frames": 9}),
    ("video_edit", [("clip.mp4", "source"), ("mask.png", "mask")], {"num_frames": 5}),
    ("video_control", [("clip.mp4", "control")], {"num_frames": 9}),
    ("image_outpaint", [("photo.png", "source")], {"margins": Margins(left=16, right=16)}),
    ("video_outpaint", [("clip.mp4", "source")], {"num_frames": 5, "width": 96}),
    ("video_extend", [("clip.mp4", "source")], {"num_frames": 13, "context_frames": 5}),
]


@pytest.mark.parametrize(("task", "inputs", "extra"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_every_task_writes_a_decodable_file_of_the_requested_shape_with_its_sidecar(
    engine: Engine, media: dict[str, str], task: str, inputs: list, extra: dict, opened
):
    plan = build_plan(
        task,
        "a small test scene",
        [(media[name], role) for name, role in inputs],
        limits=engine.config.limits,
        **extra,
    )
    steps: list[tuple[int, int]] = []
    control = JobControl(on_progress=lambda done, total, stage: steps.append((done, total)))
    result = engine.generate(plan, Sampling(steps=2, seed=7), control=control)

    if task == "video_extend":
        # The whole clip (the 20-frame source, then the new frames) and the new part alone.
        out, new = result.outputs
        assert (out.role, new.role) == ("result", "new_part")
        assert (new.num_frames, out.num_frames) == (plan.num_frames, 20 + plan.num_frames)
        plan = plan.model_copy(update={"num_frames": out.num_frames})
    else:
        (out,) = [o for o in result.outputs if o.role == "result"]
        if task.endswith("_control"):
            # A plain control input: its extracted signal comes back beside the result.
            (extra,) = [o for o in result.outputs if o.role != "result"]
            assert extra.role == "control" and extra.num_frames == out.num_frames
    path = Path(out.path)
    assert path.parent == engine.config.output_dir.resolve() or path.parent == engine.config.output_dir
    assert (out.width, out.height, out.num_frames) == (plan.width, plan.height, plan.num_frames)
    if plan.num_frames == 1:
        from PIL import Image

        with Image.open(path) as im:
            assert path.suffix == ".png" and im.size == (plan.width, plan.height)
    else:
        info = probe_video(opened(path))
        assert path.suffix == ".mp4"
        assert (info.width, info.height, info.num_frames) == (plan.width, plan.height, plan.num_frames)
        assert info.fps == pytest.approx(plan.fps)
    sidecar = json.loads(Path(out.sidecar).read_text())
    assert sidecar["task"] == task and sidecar["seed"] == 7 and sidecar["steps"] == 2
    assert sidecar["plan"]["inputs"] == [m.model_dump(mode="json") for m in plan.inputs]
    assert result.projector is True and sidecar["projector"] is True
    # The denoising stage heard as it begins (step 0), then one progress report per step.
    assert [s for s in steps if s[1] == 2] == [(0, 2), (1, 2), (2, 2)]
    # Timings: every stage, the write included, the same in the result and in the sidecar
    # (written after the media files), and the stages add up to no more than the total.
    assert {f"{stage}_s" for stage in GENERATION} <= set(result.timings)
    assert sidecar["timings"] == result.timings and result.timings["write_s"] > 0
    assert result.timings["denoise_s"] > 0 and result.timings["postprocess_s"] > 0
    assert sum(v for k, v in result.timings.items() if k != "total_s") <= result.timings["total_s"] + 0.01


def test_auto_uses_the_planning_pass_features_and_does_not_run_the_planner_twice(
    tiny_paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path, planner_backend="unison"))
    planner = eng.planner
    calls = []
    original = planner.features
    monkeypatch.setattr(planner, "features", lambda req: calls.append(req) or original(req))
    result = eng.auto("Draw a red fox sitting in the snow.", sampling=Sampling(steps=1, seed=0))
    assert result.plan.task is Task.TEXT_TO_IMAGE  # the trained tiny LoRA speaks the grammar
    assert result.generation is not None and result.generation.projector
    assert calls == []  # features came from the planning pass itself
    # A typed plan (the `generate` tool) has no planning pass: one features forward instead.
    eng.generate(result.plan, Sampling(steps=1, seed=0))
    assert len(calls) == 1 and calls[0] == request_for_plan(result.plan)


def test_the_same_seed_gives_the_same_file_and_a_missing_seed_is_chosen_and_reported(engine: Engine):
    plan = build_plan("text_to_image", "a red fox", limits=engine.config.limits)
    a = engine.generate(plan, Sampling(steps=1, seed=3))
    b = engine.generate(plan, Sampling(steps=1, seed=3))
    assert Path(a.outputs[0].path).read_bytes() == Path(b.outputs[0].path).read_bytes()
    c = engine.generate(plan, Sampling(steps=1))
    assert isinstance(c.seed, int) and json.loads(Path(c.outputs[0].sidecar).read_text())["seed"] == c.seed


def test_without_a_projector_generation_runs_as_plain_wan_vace_and_says_so(tiny_paths, tmp_path: Path):
    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path, projector=None))
    result = eng.generate(build_plan("text_to_image", "a fox", limits=eng.config.limits), Sampling(steps=1))
    meta = json.loads(Path(result.outputs[0].sidecar).read_text())
    assert result.projector is False and meta["projector"] is False and meta["text_context"] == 512
    assert any("plain Wan-VACE" in n for n in result.notes)


def test_a_cancel_mid_run_stops_and_leaves_nothing_in_the_output_directory(tiny_paths, tmp_path: Path):
    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path / "out"))
    control = JobControl()
    seen = []

    def on_progress(done: int, total: int, stage: str) -> None:
        seen.append(done)
        if stage == "generating" and done == 1:
            control.cancel()

    control._on_progress = on_progress
    plan = build_plan("text_to_video", "waves", num_frames=9, limits=eng.config.limits)
    with pytest.raises(Cancelled):
        eng.generate(plan, Sampling(steps=4), control=control)
    assert _files(tmp_path / "out") == []
    assert max(seen) == 1  # stopped within one step
    # The engine keeps working after a cancel.
    assert eng.generate(plan, Sampling(steps=1)).outputs


def test_an_out_of_memory_error_inside_the_model_is_reported_and_the_engine_recovers(
    tiny_paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import torch

    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path))
    eng.preload()
    transformer = eng.generator.pipeline.transformer
    original = transformer.forward

    def boom(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 40.00 GiB")

    monkeypatch.setattr(transformer, "forward", boom)
    plan = build_plan("text_to_image", "a fox", limits=eng.config.limits)
    with pytest.raises(OutOfMemory, match="out of accelerator memory"):
        eng.generate(plan, Sampling(steps=1))
    assert _files(tmp_path) == []
    monkeypatch.setattr(transformer, "forward", original)
    assert eng.generate(plan, Sampling(steps=1)).outputs


@pytest.mark.parametrize(
    ("task", "inputs", "error", "match"),
    [
        ("image_edit", [("missing.png", "source"), ("mask.png", "mask")], InputRefused, "missing.png"),
        ("image_edit", [("photo.png", "source"), ("clip.mp4", "mask")], InvalidRequest, "must be an image"),
        ("video_control", [("bad.mp4", "control")], InputRefused, "bad.mp4"),
        ("image_reference", [("bomb.png", "reference")], InputRefused, "pixels"),
    ],
)
def test_bad_inputs_raise_clear_errors_and_write_nothing(
    engine: Engine, media: dict[str, str], tmp_path: Path, task, inputs, error, match
):
    (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    _bomb_png(tmp_path / "bomb.png", 40_000, 40_000)
    paths = {**media, "missing.png": str(tmp_path / "missing.png"), "bad.mp4": str(tmp_path / "bad.mp4")}
    paths["bomb.png"] = str(tmp_path / "bomb.png")
    before = _files(engine.config.output_dir)
    with pytest.raises(error, match=match):
        plan = build_plan(task, "x", [(paths[n], r) for n, r in inputs], limits=engine.config.limits)
        engine.generate(plan, Sampling(steps=1))
    assert _files(engine.config.output_dir) == before


def test_an_impossible_size_or_frame_count_is_refused_before_any_model_work(engine: Engine):
    with pytest.raises(InvalidRequest, match="num_frames=1"):
        build_plan("text_to_video", "x", num_frames=1, limits=engine.config.limits)
    with pytest.raises(InvalidRequest, match="width"):
        build_plan("text_to_image", "x", width=100_000, limits=engine.config.limits)


def test_the_projector_loads_on_a_fresh_engine_without_deadlocking(tiny_paths, tmp_path: Path):
    # projector() builds the planner and the generator it is sized by; it used to do so while
    # holding the (non-reentrant) lock those builders take too, and hung forever.
    import threading

    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path))
    found: list = []
    worker = threading.Thread(target=lambda: found.append(eng.projector()), daemon=True)
    worker.start()
    worker.join(timeout=60)
    assert not worker.is_alive(), "Engine.projector() deadlocked"
    assert found and found[0] is not None and found[0].hidden_size == eng.planner.hidden_size


def test_understanding_without_planner_weights_is_a_model_error(tiny_paths, tmp_path: Path):
    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path, planner_model=None))
    assert eng.plan("Draw a cat").task is Task.TEXT_TO_IMAGE  # the rules planner still plans
    with pytest.raises(ModelError, match="planner"):
        eng.understand("What is this?")


def test_auto_answers_understanding_requests_with_text(engine: Engine, media: dict[str, str]):
    result = engine.auto(f"What is in this picture? ###{media['photo.png']}###")
    assert result.plan.task is Task.IMAGE_UNDERSTANDING and result.generation is None
    assert isinstance(result.answer.answer, str) and result.answer.model


def _bomb_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header declares a huge image (the data is never there)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
    )


def test_the_tiny_preset_builds_missing_models_on_first_load_as_a_stage_of_the_job_not_when_configured(
    tiny_paths, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import shutil

    import engine.tiny
    from engine.config import tiny_paths as tiny_paths_of

    root = tmp_path / "tiny"
    config = EngineConfig.tiny(root, output_dir=tmp_path / "out")
    assert not root.exists()  # configuring (server start-up) builds nothing
    built = []

    def ensure(where, *, on_step=None):  # stands in for the seconds-long build: a copy, in 2 steps
        built.append(Path(where))
        shutil.copytree(tiny_paths.qwen, tiny_paths_of(where).qwen)
        on_step(1, 2)
        shutil.copytree(tiny_paths.root, where, dirs_exist_ok=True)
        on_step(2, 2)
        return tiny_paths_of(where)

    monkeypatch.setattr(engine.tiny, "ensure_tiny", ensure)
    eng = Engine(config)
    assert eng.plan("Draw a cat").task is Task.TEXT_TO_IMAGE and built == []  # rules: no model
    seen: list[tuple[str, int, int]] = []
    control = JobControl(on_progress=lambda done, total, stage: seen.append((stage, done, total)))
    plan = build_plan("text_to_image", "a cat", limits=config.limits)
    result = eng.generate(plan, Sampling(steps=1), control=control)
    assert built == [root] and Path(result.outputs[0].path).exists()
    building = "building tiny models"
    assert seen[:3] == [(building, 0, 0), (building, 1, 2), (building, 2, 2)]  # begun, then each model
    eng.generate(plan, Sampling(steps=1))
    assert built == [root]  # once


def test_a_job_that_waited_in_the_queue_counts_its_wait_in_its_timings(engine: Engine):
    queue = JobQueue(capacity=2)
    plan = build_plan("text_to_image", "a fox", limits=engine.config.limits)
    gate = threading.Event()
    queue.submit("block", lambda control: gate.wait(10))
    job = queue.submit("generate", lambda control: engine.generate(plan, Sampling(steps=1), control=control))
    time.sleep(0.5)
    gate.set()
    assert job.wait(60)
    timings = job.outcome().timings
    assert timings["queue_s"] >= 0.45
    assert timings["total_s"] >= timings["queue_s"] + timings["load_s"] + timings["write_s"]
    queue.close()


def test_an_edits_masks_are_analysed_once_while_the_model_runs_for_every_candidate(
    engine: Engine, media: dict[str, str], monkeypatch
):
    """The composite's mask analysis starts before the model runs (engine.composite.AnalysisAhead)
    and serves each candidate: one analysis for two candidates, the kept pixels still the source's."""
    import engine.composite as composite_module

    calls: list[tuple[int, ...]] = []
    analyse = composite_module.analyse
    monkeypatch.setattr(
        composite_module, "analyse", lambda mask, **kw: calls.append(np.shape(mask)) or analyse(mask, **kw)
    )
    plan = build_plan(
        "video_edit",
        "a small test scene",
        [(media["clip.mp4"], "source"), (media["mask.mp4"], "mask")],
        limits=engine.config.limits,
        num_frames=5,
    )
    result = engine.generate(plan, Sampling(steps=1, seed=3, count=2))
    results = [o for o in result.outputs if o.role == "result"]
    assert len(results) == 2 and calls == [(5, plan.height, plan.width, 1)]
    for o in results:  # each candidate's sidecar says what was kept from the source
        assert json.loads(Path(str(o.sidecar)).read_text())["preserved"]["preserved"] is True

"""One check, one probe: a request is validated once, each input is opened once and decoded from
what was opened, and the typed request models refuse what they do not know.

Each test here failed before the reshaping of issue 8 (the bug it pins is named in its docstring).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from engine.api import EngineAPI, parse_arguments, request_model
from engine.config import EngineConfig, Limits
from engine.control import JobControl
from engine.engine import Engine
from engine.errors import InputRefused, InvalidRequest, ServerConfigError
from engine.media import encode_mp4, encode_png
from engine.plan import CheckedPlan, Plan, check_plan
from engine.tasks import TASKS
from engine.vocab import MediaKind, Task

LIMITS = Limits()


def refused(tool: str, arguments: dict, *, plan: bool = False) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        request = parse_arguments(tool, LIMITS, arguments)
        if plan:
            request.to_plan(LIMITS)
    return info.value


# ---------------------------------------------------------------------------------------------
# The request models: unknown fields, strict types, blank prompts, parameters a task does not take.


def test_a_misspelt_field_is_refused_with_the_closest_known_name():
    e = refused("generate", {"task": "text_to_video", "prompt": "waves", "num_frame": 17})
    assert str(e) == "num_frame: unknown; did you mean num_frames?"


@pytest.mark.parametrize("tool", ["understand", "generate", "auto"])
def test_an_unknown_field_is_refused_by_every_tool(tool: str):
    arguments = {"prompt": "a cat", "bogus_field": 1}
    if tool == "generate":
        arguments["task"] = "text_to_image"
    e = refused(tool, arguments)
    assert e.field == "bogus_field" and "unknown" in str(e)


@pytest.mark.parametrize(
    ("field", "value"), [("steps", True), ("seed", 1.0), ("width", "512"), ("guidance", False)]
)
def test_types_are_strict_so_true_is_not_one_step(field: str, value):
    e = refused("generate", {"task": "text_to_image", "prompt": "a cat", field: value})
    assert e.field == field


def test_a_whitespace_only_prompt_for_a_generation_task_is_refused():
    e = refused("generate", {"task": "text_to_image", "prompt": "   "}, plan=True)
    assert e.field == "prompt" and "needs a prompt" in str(e)


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"task": "image_edit", "source": "/a.png", "mask": "/m.png", "margins": {"left": 8}}, "margins"),
        ({"task": "text_to_video", "context_frames": 5}, "context_frames"),
        ({"task": "text_to_image", "fps": 24.0}, "fps"),
        ({"task": "text_to_image", "duration_s": 2.0}, "duration_s"),
        ({"task": "text_to_image", "mask": "/m.png"}, "mask"),
    ],
)
def test_a_parameter_the_task_does_not_take_is_refused_with_the_tasks_parameters(arguments: dict, field: str):
    e = refused("generate", {"prompt": "a cat", **arguments}, plan=True)
    assert e.field == field
    assert f"does not take {field}; it takes " in str(e)
    assert ", ".join(TASKS[Task(arguments["task"])].parameters) in str(e)


def test_bounds_come_from_the_configured_limits_and_the_longest_chain_bounds_the_duration():
    limits = Limits(max_side=512, max_frames=81, max_duration_s=12)
    schema = request_model("generate", limits).model_json_schema()
    props = schema["properties"]
    width = next(s for s in props["width"]["anyOf"] if s.get("type") == "integer")
    # Up to 4× the side is taken and scaled down into the limits; beyond that it is refused.
    assert width["maximum"] == 4 * 512
    duration = next(s for s in props["duration_s"]["anyOf"] if s.get("type") == "number")
    assert duration["maximum"] == 12  # the longest chain, not 600 s that no video can hold
    frames = next(s for s in props["num_frames"]["anyOf"] if s.get("type") == "integer")
    assert frames["maximum"] == 12 * 16 + 1
    guidance = next(s for s in props["guidance"]["anyOf"] if s.get("type") == "number")
    assert guidance["maximum"] == 30
    source = next(s for s in props["source"]["anyOf"] if s.get("type") == "string")
    assert source["maxLength"] <= 4096


def test_a_checked_plan_is_not_checked_again():
    plan = check_plan(Plan(task=Task.TEXT_TO_IMAGE, prompt="a cat", width=100), LIMITS)
    assert isinstance(plan, CheckedPlan) and plan.width == 96
    assert check_plan(plan, LIMITS) is plan
    assert plan.notes == ["width 100 rounded to 96 (multiple of 16)"]  # not noted twice


# ---------------------------------------------------------------------------------------------
# The engine: validated once, opened once, decoded from what was opened.


@pytest.fixture(scope="module")
def engine(tiny_paths, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    out = tmp_path_factory.mktemp("checks-out")
    eng = Engine(EngineConfig.tiny(tiny_paths.root, output_dir=out))
    eng.preload()
    return eng


def test_the_engine_satisfies_the_engine_protocol(engine: Engine):
    assert isinstance(engine, EngineAPI)


def test_an_auto_request_is_validated_once(engine: Engine, monkeypatch: pytest.MonkeyPatch):
    """Before: check_plan ran in Engine._plan and again in Engine.generate."""
    made: list[str] = []
    original = CheckedPlan.__init__

    def counting(self, *issued, **data):
        made.append(str(data.get("task")))
        original(self, *issued, **data)

    monkeypatch.setattr(CheckedPlan, "__init__", counting)
    admitted = engine.admit(
        parse_arguments("auto", engine.config.limits, {"prompt": "a red fox in the snow"})
    )
    result = engine.run(admitted)
    assert result.generation is not None and result.generation.outputs
    assert made == ["text_to_image"]


@pytest.fixture()
def opened_files(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every os.open by path, av.open and PIL.Image.open during a test."""
    seen: dict[str, list[str]] = {"os": [], "av": [], "pil": []}
    real_os_open, real_av_open, real_pil_open = os.open, av.open, Image.open

    def os_open(path, *a, **k):
        seen["os"].append(os.fspath(path))
        return real_os_open(path, *a, **k)

    def av_open(file, *a, **k):
        if (a[:1] or (k.get("mode", "r"),))[0] != "w":  # reading an input, not writing the output
            seen["av"].append(getattr(file, "name", str(file)))
        return real_av_open(file, *a, **k)

    def pil_open(fp, *a, **k):
        seen["pil"].append(getattr(fp, "name", str(fp)))
        return real_pil_open(fp, *a, **k)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(av, "open", av_open)
    monkeypatch.setattr(Image, "open", pil_open)
    return seen


def test_each_input_of_a_generate_call_is_opened_once_and_parsed_at_most_twice(
    engine: Engine, tmp_path: Path, opened_files: dict[str, list[str]]
):
    """Before: a video_edit with a mask video opened each video three times (probe, probe inside
    read_video, read), all by path, the first one before the job was queued."""
    rng = np.random.default_rng(0)
    src, mask = tmp_path / "src.mp4", tmp_path / "mask.mp4"
    encode_mp4(src, rng.integers(0, 255, (12, 48, 64, 3), dtype=np.uint8), 16)
    band = np.zeros((12, 48, 64, 3), np.uint8)
    band[:, 10:30] = 255
    encode_mp4(mask, band, 16)
    opened_files["os"].clear()
    opened_files["av"].clear()
    arguments = {
        "task": "video_edit",
        "prompt": "a blue car",
        "source": str(src),
        "mask": str(mask),
        "num_frames": 9,
    }
    admitted = engine.admit(parse_arguments("generate", engine.config.limits, arguments))
    result = engine.run(admitted)
    assert result.outputs
    for path in (src, mask):
        assert opened_files["os"].count(str(path)) == 1, opened_files["os"]
    # The header probe before the queue, then one container for probe + decode inside the job.
    assert len(opened_files["av"]) <= 2 * 2, opened_files["av"]


def test_an_input_folder_swapped_for_a_link_while_the_job_waits_is_not_followed(
    engine: Engine, tmp_path: Path
):
    """Before: the engine reopened inputs by path, so a folder replaced by a symlink to somewhere
    else between the check and the job's turn was followed outside the checked file."""
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    photo = root / "in" / "photo.png"
    encode_png(photo, np.full((48, 64, 3), 200, np.uint8))
    arguments = {
        "task": "image_outpaint",
        "prompt": "a wider beach",
        "source": str(photo),
        "margins": {"left": 16},
    }
    engine.inputs = type(engine.inputs)(
        [root], engine.config.output_dir, 1 << 30, engine.config.limits.max_input_pixels
    )
    try:
        admitted = engine.admit(parse_arguments("generate", engine.config.limits, arguments))
        # While it waits: the folder goes, a link to a folder holding a corrupt "photo.png" comes.
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        (elsewhere / "photo.png").write_bytes(b"not a png at all")
        shutil.move(root / "in", tmp_path / "moved")
        (root / "in").symlink_to(elsewhere, target_is_directory=True)
        result = engine.run(admitted)
    finally:
        engine.inputs = type(engine.inputs)(
            None, engine.config.output_dir, 1 << 31, engine.config.limits.max_input_pixels
        )
    assert result.outputs and result.plan.inputs[0].path == str(photo)


def test_the_same_request_gets_the_same_answer_through_the_cli_and_the_python_api(capsys, tiny_dir: Path):
    from unison_mcp.cli import main

    code = main(["generate", "--preset", "tiny", "--task", "image_edit", "--prompt", "x", "--source", "/a.png",
                 "--mask", "/m.png", "--margins", "8"])  # fmt: skip
    err = capsys.readouterr().err
    python = refused(
        "generate",
        {"task": "image_edit", "prompt": "x", "source": "/a.png", "mask": "/m.png", "margins": {"left": 8, "top": 8, "right": 8, "bottom": 8}},
        plan=True,
    )  # fmt: skip
    assert code == 2
    assert err.strip() == f"unison-mcp generate: invalid_request: {python}"


def test_understanding_decodes_each_image_reduced_to_its_pixel_budget(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Before: every input image was decoded at full size and kept until the processor ran, so
    eight 8000×8000 inputs took the server from 1.6 to 5 GiB for a fraction of a megapixel each."""
    import engine.understand as understand_module

    paths = []
    for i in range(3):
        path = tmp_path / f"big{i}.png"
        Image.new("RGB", (3000, 2000), (40 * i, 90, 200)).save(path)
        paths.append(str(path))
    seen: list[tuple[int, int]] = []
    real = understand_module.vision_inputs

    def spy(qwen, text, images, videos, metadata):
        seen.extend(im.size for im in images)
        return real(qwen, text, images, videos, metadata)

    monkeypatch.setattr(understand_module, "vision_inputs", spy)
    admitted = engine.admit(
        parse_arguments("understand", engine.config.limits, {"prompt": "what?", "media": paths})
    )
    engine.run(admitted)
    budget = engine.config.understanding.max_pixels
    assert len(seen) == 3
    assert all(w * h <= budget and w / h == pytest.approx(1.5, rel=0.05) for w, h in seen), seen


# ---------------------------------------------------------------------------------------------
# Issue 19: the engine is its models plus one job per request; the Python API is run(admit(...)).


class _Reads:
    """A compiled pattern that counts every use (``sub``, ``finditer``...) of it."""

    def __init__(self, pattern):
        self.pattern, self.uses = pattern, 0

    def __getattr__(self, name: str):
        self.uses += 1
        return getattr(self.pattern, name)


def test_the_markers_of_an_auto_request_are_read_once_at_admission_and_never_by_the_job(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Before: admission counted the markers, the input policy opened them with its own copy of
    the pattern, and the engine parsed the request again in auto (and in understand)."""
    import engine.inputs as inputs_module
    import engine.request as request_module

    photo = tmp_path / "photo.png"
    encode_png(photo, np.full((48, 64, 3), 120, np.uint8))
    arguments = {"prompt": f"What is in this picture? ###{photo}###"}
    admitted = engine.admit(parse_arguments("auto", engine.config.limits, arguments))
    assert admitted.parsed is not None
    assert admitted.parsed.text == "What is in this picture? <IMGPAD>"
    assert admitted.parsed.media == ((str(photo.resolve()), MediaKind.IMAGE),)
    reads = [_Reads(request_module.MARKER)]
    monkeypatch.setattr(request_module, "MARKER", reads[0])
    result = engine.run(admitted)
    assert result.plan.task is Task.IMAGE_UNDERSTANDING and result.answer is not None
    assert [r.uses for r in reads] == [0]
    assert not hasattr(inputs_module, "_MARKER")  # the input policy keeps no copy of the convention


def test_a_link_named_as_an_image_to_a_video_is_refused_in_a_question_as_in_a_generation(
    engine: Engine, tmp_path: Path
):
    """The placeholder the planner reads comes from the name, the decoder's kind from the real
    file: a generate call refused the disagreement; understand and auto now do too."""
    clip = tmp_path / "clip.mp4"
    encode_mp4(clip, np.zeros((9, 32, 48, 3), np.uint8), 16)
    (tmp_path / "still.png").symlink_to(clip)
    with pytest.raises(InputRefused, match="its real file is a video, not an image"):
        engine.admit(
            parse_arguments("understand", LIMITS, {"prompt": "what?", "media": [str(tmp_path / "still.png")]})
        )
    with pytest.raises(InputRefused, match="its real file is a video, not an image"):
        engine.admit(parse_arguments("auto", LIMITS, {"prompt": f"what is ###{tmp_path / 'still.png'}###?"}))


def test_the_python_api_checks_the_models_before_it_decodes_an_input(tmp_path: Path):
    """Before: Engine.generate (and understand, auto) skipped the model check a tool call makes
    first, so a missing generator was found only after the inputs were decoded."""
    photo = tmp_path / "photo.png"
    encode_png(photo, np.full((48, 64, 3), 90, np.uint8))
    config = EngineConfig(
        planner_model=None, generator_model="/nonexistent/wan", local_files_only=True, output_dir=tmp_path
    )
    stages: list[str] = []

    class Watched(JobControl):
        def set_stage(self, stage: str, total: int | None = None) -> None:
            stages.append(stage)
            super().set_stage(stage, total)

    control = Watched()
    plan = Plan(task=Task.IMAGE_OUTPAINT, prompt="wider", inputs=[{"path": str(photo), "kind": "image", "role": "source"}], margins={"left": 16})  # fmt: skip
    with pytest.raises(ServerConfigError, match="nonexistent"):
        Engine(config).generate(plan, control=control)
    assert stages == []  # refused before the first stage: nothing was prepared or decoded

"""One fact, one place (issue 19, items 1 and 2): every bound the request schema states is the one
check_plan holds a planner's plan to; a fact written in several places (the default rate, an
image's one frame, 4k+1 rounding, whether the projector applies, the edit verbs) is read from its
one home; and a checked plan is a type of its own that only check_plan makes.

Each test failed before that change: the drift or the second copy it pins is named in its docstring.
"""

from __future__ import annotations

import inspect
import json

import pytest
from pydantic import ValidationError

from engine.api import admit, parse_arguments, request_model
from engine.bounds import IMAGE_FRAMES, Bounds, frames_for_seconds, round_frames
from engine.config import EngineConfig, Limits, SamplingDefaults
from engine.engine import Engine
from engine.errors import InvalidRequest, ServerConfigError
from engine.inputs import InputPolicy
from engine.lexicon import LEXICON
from engine.plan import CheckedPlan, CheckedQuestion, MediaInput, Plan, build_plan, check_plan
from engine.planners.instruct import plan_from_json
from engine.planners.reading import EDIT
from engine.planners.rules import RulesPlanner
from engine.region import object_phrase
from engine.request import parse_request
from engine.vocab import MediaKind, Role, Task

LIMITS = Limits()
TINY = Limits(max_side=512, max_pixels=512 * 512, max_frames=125, default_width=64, default_height=48)


def prop(limits: Limits, name: str, tool: str = "generate") -> dict:
    """The schema of one request field, without its ``null`` alternative."""
    schema = request_model(tool, limits).model_json_schema()["properties"][name]
    inner = next((s for s in schema.get("anyOf", [schema]) if s.get("type") != "null"), schema)
    return {**schema, **inner}


def refused(plan: Plan, limits: Limits = LIMITS) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check_plan(plan, limits)
    return info.value


def extend(**kw) -> Plan:
    source = MediaInput(path="/a.mp4", kind=MediaKind.VIDEO, role=Role.SOURCE)
    return Plan(task=Task.VIDEO_EXTEND, prompt="on", inputs=[source], **kw)


# ---------------------------------------------------------------------------------------------
# Item 1: the schema's bounds are the check's.


@pytest.mark.parametrize("limits", [LIMITS, TINY], ids=["default", "tiny"])
def test_the_schemas_largest_context_frames_is_the_largest_check_plan_accepts(limits: Limits):
    """Before: the schema allowed up to max_frames (161), check_plan up to max_frames - 4, so 161
    passed the schema and failed with "must be between 1 and 157"."""
    most = prop(limits, "context_frames")["maximum"]
    assert check_plan(extend(context_frames=most), limits).context_frames == most
    e = refused(extend(context_frames=most + 1), limits)
    assert e.field == "context_frames" and f"between 1 and {most}" in e.rule


@pytest.mark.parametrize("limits", [LIMITS, TINY], ids=["default", "tiny"])
def test_every_bound_the_schema_states_is_the_one_the_check_holds_a_plan_to(limits: Limits):
    """Before: the prompt length, the input count, the sides, the rate and the target's length were
    each written in the schema and again in check_plan (or on the plan model)."""
    bounds = Bounds.of(limits)
    assert prop(limits, "prompt")["maxLength"] == bounds.prompt.high
    assert prop(limits, "negative_prompt")["maxLength"] == bounds.prompt.high
    assert prop(limits, "media", "auto")["maxItems"] == bounds.inputs.high
    assert prop(limits, "width")["maximum"] == prop(limits, "height")["maximum"] == bounds.side.high
    fps = prop(limits, "fps")
    assert (fps["minimum"], fps["maximum"]) == (bounds.fps.low, bounds.fps.high)
    duration = prop(limits, "duration_s")
    assert (duration["minimum"], duration["maximum"]) == (bounds.duration_s.low, bounds.duration_s.high)
    assert not {"exclusiveMinimum", "exclusiveMaximum"} & {k for p in (fps, duration) for k in p}
    assert prop(limits, "target")["maxLength"] == bounds.target.high
    assert Plan.model_json_schema()["properties"]["target"]["anyOf"][0]["maxLength"] == bounds.target.high
    assert prop(limits, "steps")["maximum"] == bounds.steps.high
    # The check refuses just past each bound with the bound's own rule.
    long_prompt = "x" * (int(bounds.prompt.high) + 1)
    assert refused(Plan(task=Task.TEXT_TO_IMAGE, prompt=long_prompt), limits).rule == bounds.prompt.rule
    files = [MediaInput(path=f"/{i}.png", kind=MediaKind.IMAGE, role=Role.QUERY) for i in range(9)]
    many = Plan(task=Task.IMAGE_UNDERSTANDING, prompt="?", inputs=files[: int(bounds.inputs.high) + 1])
    assert refused(many, limits).rule == bounds.inputs.rule
    fast = Plan(task=Task.TEXT_TO_VIDEO, prompt="waves", fps=bounds.fps.high + 1)
    assert refused(fast, limits).rule == bounds.fps.rule
    assert check_plan(fast.model_copy(update={"fps": bounds.fps.high}), limits).fps == bounds.fps.high


def test_admission_counts_input_files_against_the_same_bound():
    """Before: the input count was written three times (schema, admit, check_plan)."""
    limits = Limits(max_inputs=2)
    request = parse_arguments("auto", limits, {"prompt": "###/a.png### ###/b.png### ###/c.png###"})
    policy = InputPolicy(None, "/tmp", 1024, limits.max_input_pixels)
    with pytest.raises(InvalidRequest) as info:
        admit(request, EngineConfig(planner_model=None, limits=limits), policy)
    assert (info.value.field, info.value.value) == ("media", 3)
    assert info.value.rule.startswith(Bounds.of(limits).inputs.rule)


def test_the_default_rate_is_the_configured_one_for_every_planner_and_every_text():
    """Before: the rules planner turned "N seconds" into frames at a literal 16 fps whatever the
    configured rate (--fps 24: "2 seconds" made 33 frames, 1.4 s), and frames_for_seconds had 16
    as its default."""
    config = EngineConfig(planner_model=None, sampling=SamplingDefaults(fps=24.0))
    limits = config.limits
    assert Bounds.of(limits).default_fps == config.sampling.fps == 24.0
    plan = RulesPlanner(limits).plan(parse_request("A video of waves, 2 seconds"))
    assert plan.num_frames == 49  # 2 s at 24 fps
    assert build_plan("text_to_video", "waves", duration_s=2, limits=limits).num_frames == 49
    assert prop(limits, "fps")["description"] == "video frame rate (default 24)"
    assert inspect.signature(frames_for_seconds).parameters["fps"].default is inspect.Parameter.empty


def test_the_default_size_in_the_schema_text_is_the_configured_one():
    """Before: the width/height help said "832×480" whatever the configured default size."""
    width, height = prop(TINY, "width")["description"], prop(TINY, "height")["description"]
    assert "else 64)" in width and "else 48)" in height and "832" not in width + height


def test_an_image_is_one_frame_for_every_planner_and_the_check():
    """Before: "an image has one frame" was written in the rules planner, the instruct planner,
    check_plan and the preparation functions."""
    rules = RulesPlanner(LIMITS).plan(parse_request("Draw a cat."))
    instruct = plan_from_json('{"task": "text_to_image", "num_frames": 33}', [], prompt="a cat")
    checked = check_plan(Plan(task=Task.TEXT_TO_IMAGE, prompt="a cat"))
    assert rules.num_frames == instruct.num_frames == checked.num_frames == IMAGE_FRAMES
    assert prop(LIMITS, "num_frames")["description"].endswith(f"image: {IMAGE_FRAMES}")


def test_a_frame_count_off_the_grid_is_rounded_by_one_function_with_one_note():
    """Before: the instruct planner rounded to 4k+1 with its own note ("from the planner rounded
    to 81 (4k+1)") beside check_plan's ("rounded to 81 (Wan makes 4k+1 frames)")."""
    notes: list[str] = []
    assert round_frames(80, notes) == 81
    instruct = plan_from_json('{"task": "text_to_video", "num_frames": 80}', [], prompt="waves")
    checked = check_plan(Plan(task=Task.TEXT_TO_VIDEO, prompt="waves", num_frames=80))
    assert instruct.num_frames == checked.num_frames == 81
    assert instruct.notes == checked.notes == notes


def _config(**kw) -> EngineConfig:
    # Local paths that do not exist: a check of the planner's weights fails at once.
    return EngineConfig(
        planner_model="/nonexistent/qwen", projector="/nonexistent/projector.pth", local_files_only=True, **kw
    )


@pytest.mark.parametrize(
    ("config", "applies"),
    [
        (_config(adapter="/nonexistent/adapter"), True),
        (_config(adapter=None), False),
        (_config(adapter="/nonexistent/adapter").model_copy(update={"projector": None}), False),
    ],
    ids=["projector-planner-adapter", "no-adapter", "no-projector"],
)
def test_whether_the_projector_applies_is_decided_once_by_the_config(config: EngineConfig, applies: bool):
    """Before: four places in the engine decided it, with different rules (the planner's weights
    were required for a generation with a projector even when no adapter meant it never applied)."""
    assert (config.projector_off is None) is applies
    engine = Engine(config, generator=object())  # an injected generator is never checked
    if applies:
        with pytest.raises(ServerConfigError):
            engine.models.check("generate")  # the projector's input: the planner's weights
    else:
        engine.models.check("generate")
        assert engine.projector() is None  # nothing loaded for it


def test_the_edit_region_heuristic_reads_the_rules_planners_edit_verbs():
    """Before: engine/prepare.py had its own English list (no "fix", "fill", "get rid of", ...)
    beside the rules planner's eight languages. Now both read the lexicon's data files."""
    for verb in LEXICON.phrases("edit_repaint", "en"):
        request = f"{verb} the red car with a blue truck"
        # After a state verb the last word is the new state ("recolour the red car blue").
        state = LEXICON.says("state_verb", verb, "full")
        assert object_phrase(request) == ("red" if state else "red car"), verb
        assert LEXICON.says(EDIT, request), verb
    for code, language in LEXICON.languages.items():
        verbs = (*LEXICON.phrases("edit_repaint", code), *LEXICON.phrases("edit_other", code))
        assert LEXICON.phrases("edit_repaint", code) and LEXICON.phrases("edit_other", code), code
        assert all(LEXICON.says(EDIT, f"{w} " if language.spaced else w) for w in verbs), code


# ---------------------------------------------------------------------------------------------
# Item 2: the checked type says it is checked.


def test_a_checked_plan_is_made_by_check_plan_only():
    """Before: CheckedPlan was a Plan subclass anyone could build with any fields."""
    fields = {"task": Task.TEXT_TO_IMAGE, "prompt": "a cat", "width": 64, "height": 48, "num_frames": 1}
    with pytest.raises(TypeError, match="made by check_plan only"):
        CheckedPlan(**fields, fps=None)
    with pytest.raises(TypeError, match="made by check_plan only"):
        CheckedPlan.model_validate({**fields, "fps": None})
    with pytest.raises(TypeError, match="made by check_plan only"):
        CheckedQuestion(task=Task.TEXT_UNDERSTANDING, prompt="why?")
    assert not issubclass(CheckedPlan, Plan) and not isinstance(Plan(**fields), CheckedPlan)


def test_a_checked_plan_has_its_shape_required_and_cannot_change():
    plan = check_plan(Plan(task=Task.TEXT_TO_VIDEO, prompt="waves"))
    assert isinstance(plan, CheckedPlan)
    schema = CheckedPlan.model_json_schema()
    assert {"width", "height", "num_frames", "fps"} <= set(schema["required"])
    assert (plan.width, plan.height, plan.num_frames, plan.fps) == (832, 480, 81, 16.0)
    with pytest.raises(ValidationError):
        plan.width = 64
    image = check_plan(Plan(task=Task.TEXT_TO_IMAGE, prompt="a cat"))
    assert (image.num_frames, image.fps) == (IMAGE_FRAMES, None)  # an image has no rate
    question = check_plan(Plan(task=Task.TEXT_UNDERSTANDING, prompt="why?"))
    assert isinstance(question, CheckedQuestion) and question.width is None


def test_a_checked_plans_json_is_a_plans_and_replays_to_the_same_checked_plan():
    checked = build_plan(Task.VIDEO_EXTEND, "on", [("/a.mp4", "source")], num_frames=30)
    data = json.loads(json.dumps(checked.model_dump(mode="json")))
    assert list(data) == list(Plan.model_fields)
    again = check_plan(Plan.model_validate(data))
    assert again.model_dump(mode="json") == data

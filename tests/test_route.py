"""route(): the chosen planner, the rules planner behind it, and the check that no file is lost.

The primary planners here are the tiny Unison planner, or a small function that answers a fixed
Unison string parsed by the real grammar (what a model that writes it would give): the tests are
about routing, not about the model.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from engine.config import EngineConfig, Limits
from engine.errors import InvalidRequest, ModelError, PlannerError
from engine.grammar import parse_unison
from engine.plan import CheckedPlan, MediaInput, Plan, check_plan
from engine.planners import PlanOutput
from engine.planners.route import Routed, route
from engine.planners.rules import RulesPlanner
from engine.request import Request, parse_request
from engine.vocab import MediaKind, Role, Task

FEATURES = torch.ones(1, 5, 8)


def writes(text: str) -> Callable[[Request, bool], PlanOutput]:
    """A primary planner that answers ``text`` in the Unison grammar to every request."""

    def primary(request: Request, want_features: bool) -> PlanOutput:
        plan = parse_unison(text, request.media, prompt=request.prompt)
        return PlanOutput(plan=plan, features=FEATURES if want_features else None)

    return primary


def answers(plan: Plan) -> Callable[[Request, bool], PlanOutput]:
    return lambda request, want_features: PlanOutput(plan=plan, features=FEATURES)


def check(plan: Plan) -> CheckedPlan:
    return check_plan(plan, Limits())


def routed(
    text: str, primary, *, backend: str = "unison", fallback: bool = True, want: bool = True
) -> Routed:
    return route(
        parse_request(text),
        backend,
        primary=primary,
        rules=RulesPlanner(),
        check=check,
        fallback=fallback,
        want_features=want,
    )


def roles(plan: Plan) -> list[tuple[str, str]]:
    return [(m.path, m.role.value) for m in plan.inputs]


# ---------------------------------------------------------------------------------------------
# Which planner's plan runs


def test_the_rules_backend_plans_with_the_rules_planner_and_gives_no_features():
    out = routed("Animate ###a.png###, 2 seconds", None, backend="rules")
    assert isinstance(out.plan, CheckedPlan)
    assert out.plan.task is Task.IMAGE_TO_VIDEO and out.plan.num_frames == 33
    assert (out.planner, out.features, out.fallback_reason) == ("rules", None, None)
    assert out.plan.notes == []


def test_a_plan_of_the_primary_that_parses_and_checks_runs_with_its_features():
    out = routed("Edit ###photo.png### with the mask ###m.png###: a hat", writes("<CFI><BOEDIT>1,0<EOEDIT>"))
    assert out.planner == "unison" and out.fallback_reason is None
    assert roles(out.plan) == [("photo.png", "source"), ("m.png", "mask")]
    assert out.features is FEATURES
    assert not any("rules planner" in n for n in out.plan.notes)


def test_features_are_not_kept_when_they_were_not_asked_for():
    assert routed("Draw a cat.", writes("<CFI>"), want=False).features is None


def test_an_output_that_does_not_parse_is_planned_by_the_rules_planner_with_the_reason():
    out = routed("Animate ###a.png###, 2 seconds", writes("<CFV><BORES>832,480"))
    assert out.planner == "rules" and out.features is None
    assert out.plan.task is Task.IMAGE_TO_VIDEO and roles(out.plan) == [("a.png", "first_frame")]
    note = out.plan.notes[0]
    assert note.startswith("planned by the rules planner: the unison planner's output did not parse:")
    assert "'<CFV><BORES>832,480'" in note and "without <EORES>" in note
    assert out.fallback_reason == note.removeprefix("planned by the rules planner: ")


def test_an_output_that_does_not_parse_is_an_error_when_fallback_is_off():
    with pytest.raises(PlannerError, match="without <EORES>"):
        routed("Animate ###a.png###", writes("<CFV><BORES>832,480"), fallback=False)


def test_a_plan_that_does_not_check_is_planned_by_the_rules_planner_with_the_reason():
    # <BOEDIT>0,1 on two images with <CFV>: a video edit whose source is an image.
    out = routed(
        "Replace the sky in ###a.png###; the mask is ###m.png###", writes("<CFV><BOEDIT>1,0<EOEDIT>")
    )
    assert out.planner == "rules"
    assert out.plan.task is Task.IMAGE_EDIT and roles(out.plan) == [("a.png", "source"), ("m.png", "mask")]
    assert out.plan.notes[0].startswith(
        "planned by the rules planner: the unison planner's plan '<CFV><BOEDIT>1,0<EOEDIT>' (video_edit) "
        "did not check:"
    )
    assert "must be a video" in out.plan.notes[0]


def test_a_plan_that_does_not_check_is_an_error_when_fallback_is_off():
    with pytest.raises(InvalidRequest, match="must be a video"):
        routed(
            "Replace the sky in ###a.png###; the mask is ###m.png###",
            writes("<CFV><BOEDIT>1,0<EOEDIT>"),
            fallback=False,
        )


def test_when_the_rules_planner_fails_too_both_reasons_are_given():
    with pytest.raises(InvalidRequest) as info:
        routed("Generate a video of ###a.mp4### and ###b.mp4###", writes("<CFV><BONF>"))
    assert "no task takes these files" in str(info.value)
    assert "the unison planner's output did not parse" in str(info.value)


def test_a_model_backend_without_a_primary_planner_is_a_model_error():
    with pytest.raises(ModelError, match="instruct planner is not available"):
        routed("Draw a cat.", None, backend="instruct")


# ---------------------------------------------------------------------------------------------
# The files check


def test_a_generation_plan_that_ignores_every_file_is_re_planned_by_the_rules_planner():
    # The bug this guards: a request with ###a.png### became a text-to-video with no input.
    out = routed("Make a 2 second video of ###a.png### with the waves moving", writes("<CFV>"))
    assert out.planner == "rules" and out.features is None
    assert out.plan.task is Task.IMAGE_TO_VIDEO and roles(out.plan) == [("a.png", "first_frame")]
    assert out.plan.notes[0] == (
        "planned by the rules planner: the unison planner's plan '<CFV>' (text_to_video) used none of "
        "the request's files (a.png)"
    )


def test_a_plan_that_ignores_every_file_is_refused_with_how_to_call_generate_when_fallback_is_off():
    with pytest.raises(InvalidRequest) as info:
        routed("Make a video of ###a.png###", writes("<CFV>"), fallback=False)
    message = str(info.value)
    assert info.value.field == "inputs" and info.value.value == ["a.png"]
    assert "text_to_video plan ignored every file of the request, so it was not run" in message
    assert "generate(task='image_to_video', prompt=..., first_frame='a.png')" in message


def test_a_plan_that_ignores_every_file_is_refused_when_the_rules_planner_cannot_plan_it():
    with pytest.raises(InvalidRequest) as info:
        routed("Generate a video of ###a.mp4### and ###b.mp4###", writes("<CFV>"))
    message = str(info.value)
    assert "ignored every file" in message and "the rules planner could not plan it either" in message
    assert "generate(task='video_edit', prompt=..., source='a.mp4', mask='b.mp4')" in message


def test_a_plan_that_uses_some_of_the_files_runs_with_a_note_naming_the_others():
    out = routed("A picture of the dog in ###dog.png### next to ###clip.mp4###", writes("<CFI><REF>"))
    assert out.planner == "unison" and roles(out.plan) == [("dog.png", "reference")]
    assert out.plan.notes[-1].startswith("not used by the image_reference plan: clip.mp4")


def test_an_understanding_plan_must_read_every_file():
    # An understanding plan that dropped a file does not check: the rules planner reads both.
    half = Plan(
        task=Task.IMAGE_UNDERSTANDING,
        prompt="Compare them",
        inputs=[MediaInput(path="a.png", kind=MediaKind.IMAGE, role=Role.QUERY)],
    )
    out = routed("Compare ###a.png### and ###b.png###", answers(half))
    assert out.planner == "rules" and [m.path for m in out.plan.inputs] == ["a.png", "b.png"]
    assert "reads every file of the request as a query" in out.plan.notes[0]
    whole = routed("Compare ###a.png### and ###b.png###", writes("They differ."))
    assert whole.planner == "unison" and [m.role for m in whole.plan.inputs] == [Role.QUERY, Role.QUERY]


def test_a_request_without_files_may_make_a_plan_without_inputs():
    out = routed("Make a video of waves.", writes("<CFV><BONF>32<EONF>"))
    assert out.planner == "unison" and out.plan.num_frames == 33 and out.plan.notes == []


# ---------------------------------------------------------------------------------------------
# With the tiny Unison planner


@pytest.fixture(scope="module")
def unison(tiny_paths):
    from engine.planners.qwen import QwenPlanner

    planner = QwenPlanner(EngineConfig.tiny(tiny_paths.root, planner_backend="unison"))
    planner.load()
    return lambda request, want: planner.plan(request, backend="unison", want_features=want)


def test_the_tiny_unison_planner_routes_a_trained_request_with_its_features(unison):
    out = routed("In ###clip.mp4###, replace the dog with a cat.", unison)
    assert out.planner == "unison" and out.fallback_reason is None
    assert out.plan.task is Task.VIDEO_EDIT and roles(out.plan) == [("clip.mp4", "source")]
    assert out.features is not None and out.features.dtype == torch.float32


@pytest.mark.parametrize(
    "text",
    [
        "Anime cette photo ###port.jpg### : les bateaux bougent",
        "Put these two together at a picnic ###a.png### ###b.png###",
        "Keep ###surf.mp4### going for 2 more seconds",
    ],
)
def test_whatever_the_tiny_planner_writes_for_an_unseen_request_the_plan_keeps_its_files(unison, text):
    out = routed(text, unison)
    req = parse_request(text)
    assert {m.path for m in out.plan.inputs} & {p for p, _ in req.media}
    if out.planner == "rules":
        assert out.features is None and out.plan.notes[0].startswith("planned by the rules planner: ")

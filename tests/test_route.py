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


# ---------------------------------------------------------------------------------------------
# Tasks beyond the Unison grammar: the instruct backend, narrowed to them


def reaches(
    text: str, asked: list[frozenset[Task]]
) -> Callable[[Request, bool, frozenset[Task]], PlanOutput]:
    """An instruct planner narrowed to the tasks it is given, answering ``text`` (JSON)."""
    from engine.planners.instruct import plan_from_json

    def reach(request: Request, want_features: bool, tasks: frozenset[Task]) -> PlanOutput:
        asked.append(tasks)
        plan = plan_from_json(text, request.media, prompt=request.prompt)
        return PlanOutput(plan=plan, features=FEATURES if want_features else None)

    return reach


def never(request: Request, want_features: bool) -> PlanOutput:
    raise AssertionError("the Unison planner was asked for a task its grammar cannot write")


OUTPAINT_JSON = '{"task": "image_outpaint", "width": 832, "height": 464, "num_frames": null, "inputs": [{"index": 0, "role": "source"}]}'


def test_a_request_read_as_a_task_beyond_the_unison_grammar_is_planned_by_the_narrowed_instruct_backend():
    from engine.planners.route import BEYOND_GRAMMAR

    asked: list[frozenset[Task]] = []
    out = route(
        parse_request("Widen ###cat.png### to 16:9"),
        "unison",
        primary=never,
        rules=RulesPlanner(),
        check=check,
        fallback=True,
        want_features=True,
        reach=reaches(OUTPAINT_JSON, asked),
    )
    assert asked == [BEYOND_GRAMMAR]
    assert {
        Task.IMAGE_OUTPAINT,
        Task.VIDEO_OUTPAINT,
        Task.VIDEO_EXTEND,
        Task.FIRST_LAST_TO_VIDEO,
    } == BEYOND_GRAMMAR
    assert out.planner == "instruct" and out.fallback_reason is None and out.features is FEATURES
    assert out.plan.task is Task.IMAGE_OUTPAINT and (out.plan.width, out.plan.height) == (832, 464)
    assert out.plan.notes[0] == (
        "planned by the instruct planner: the request reads as image_outpaint, which the Unison grammar "
        "has no tokens for"
    )


@pytest.mark.parametrize(
    "text",
    [
        "Edit ###photo.png### with the mask ###m.png###: a hat",  # in the grammar
        "Draw a cat",
        "What is in ###a.png###?",
        "###a.png### ###b.png### ###c.png### ###d.png### ###e.mp4###",  # no reading fits: the model may find one
    ],
)
def test_a_request_the_unison_grammar_can_plan_stays_with_the_unison_planner(text):
    asked: list[frozenset[Task]] = []
    out = route(
        parse_request(text),
        "unison",
        primary=writes("<CFI><BOEDIT>1,0<EOEDIT>" if "mask" in text else "Fine."),
        rules=RulesPlanner(),
        check=check,
        fallback=True,
        want_features=False,
        reach=reaches(OUTPAINT_JSON, asked),
    )
    assert asked == [] and out.planner in {"unison", "rules"}


def test_the_instruct_backend_plans_every_task_itself_so_nothing_is_narrowed():
    asked: list[frozenset[Task]] = []
    out = route(
        parse_request("Widen ###cat.png### to 16:9"),
        "instruct",
        primary=answers(plan_json(OUTPAINT_JSON, "Widen ###cat.png### to 16:9")),
        rules=RulesPlanner(),
        check=check,
        fallback=True,
        want_features=False,
        reach=reaches(OUTPAINT_JSON, asked),
    )
    assert asked == [] and out.planner == "instruct" and out.plan.notes == []


def plan_json(text: str, request: str) -> Plan:
    from engine.planners.instruct import plan_from_json

    req = parse_request(request)
    return plan_from_json(text, req.media, prompt=req.prompt)


def test_a_narrowed_instruct_plan_that_does_not_check_is_planned_by_the_rules_planner():
    bad = '{"task": "image_outpaint", "width": 9000, "height": 464, "num_frames": null, "inputs": [{"index": 0, "role": "source"}]}'
    out = route(
        parse_request("Widen ###cat.png### to 16:9"),
        "unison",
        primary=never,
        rules=RulesPlanner(),
        check=check,
        fallback=True,
        want_features=True,
        reach=reaches(bad, []),
    )
    assert out.planner == "rules" and out.features is None and out.plan.task is Task.IMAGE_OUTPAINT
    assert out.fallback_reason.startswith("the instruct planner's plan ")
    with pytest.raises(InvalidRequest, match="width=9000"):
        route(
            parse_request("Widen ###cat.png### to 16:9"),
            "unison",
            primary=never,
            rules=RulesPlanner(),
            check=check,
            fallback=False,
            want_features=False,
            reach=reaches(bad, []),
        )


# ---------------------------------------------------------------------------------------------
# The same decision on the tiny models, with a scripted fake at the model seam


class _Force:
    """The last logits processor: the scripted tokens, one a step, then the end of the turn. A
    scripted token the grammar has masked is not forced: it is recorded, and from there the
    model's own best allowed token is taken (as a real model's would be)."""

    def __init__(self, script: list[int], start: int, end: int, refused: list[int]):
        self.script, self.start, self.end, self.refused = script, start, end, refused
        self.free = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        step = input_ids.shape[1] - self.start
        want = self.script[step] if step < len(self.script) else self.end
        if self.free or torch.isinf(scores[0, want]):
            self.free = self.free or step < len(self.script)
            if step < len(self.script):
                self.refused.append(want)
            return scores
        forced = torch.full_like(scores, float("-inf"))
        forced[0, want] = 0.0
        return forced


class Script:
    """Scripts the tiny planner's answers: ``model.generate`` runs (prompt, cache, the grammar's
    processor) but its scores become ``unison`` when the Unison planner is asked and ``instruct``
    when the JSON question is. ``asked`` lists which, in order; ``refused`` the scripted tokens
    the request's grammar did not allow."""

    def __init__(self, planner, monkeypatch: pytest.MonkeyPatch, *, unison: str, instruct: str):
        from transformers import LogitsProcessorList

        self.asked: list[str] = []
        self.refused: list[int] = []
        real = planner.model.generate

        def generate(*args, logits_processor=None, **kwargs):
            ids = kwargs["input_ids"]
            kind = (
                "instruct"
                if "Reply with only one JSON object" in planner.tokenizer.decode(ids[0])
                else "unison"
            )
            self.asked.append(kind)
            script = planner.token_ids(unison if kind == "unison" else instruct)
            end = planner.tokenizer.convert_tokens_to_ids("<|im_end|>")
            force = _Force(script, ids.shape[1], end, self.refused)
            return real(
                *args, logits_processor=LogitsProcessorList([*(logits_processor or []), force]), **kwargs
            )

        monkeypatch.setattr(planner.model, "generate", generate)


@pytest.fixture(scope="module")
def engine(tiny_paths):
    """The tiny engine with the Unison planner configured (the adapter merged)."""
    from engine.engine import Engine

    eng = Engine(EngineConfig.tiny(tiny_paths.root, planner_backend="unison"))
    eng.planner.load()
    return eng


def _json(task: str, inputs: list[tuple[int, str]], *, frames: int | None = None) -> str:
    items = ", ".join(f'{{"index": {i}, "role": "{r}"}}' for i, r in inputs)
    n = "null" if frames is None else str(frames)
    return f'{{"task": "{task}", "width": 64, "height": 48, "num_frames": {n}, "inputs": [{items}]}}'


@pytest.mark.parametrize(
    ("text", "answer", "task", "roles_"),
    [
        (
            "Widen ###cat.png### to 16:9",
            _json("image_outpaint", [(0, "source")]),
            Task.IMAGE_OUTPAINT,
            [("cat.png", "source")],
        ),
        (
            "Zoom out of ###clip.mp4###",
            _json("video_outpaint", [(0, "source")], frames=17),
            Task.VIDEO_OUTPAINT,
            [("clip.mp4", "source")],
        ),
        (
            "Keep ###surf.mp4### going for 2 more seconds",
            _json("video_extend", [(0, "source")], frames=33),
            Task.VIDEO_EXTEND,
            [("surf.mp4", "source")],
        ),
        (
            "Make a video from ###a.png### to ###b.png###",
            _json("first_last_to_video", [(0, "first_frame"), (1, "last_frame")]),
            Task.FIRST_LAST_TO_VIDEO,
            [("a.png", "first_frame"), ("b.png", "last_frame")],
        ),
    ],
)
def test_auto_reaches_each_task_beyond_the_unison_grammar_through_the_instruct_backend(
    engine, monkeypatch, text, answer, task, roles_
):
    # The Unison planner would write an edit; it is not asked.
    script = Script(engine.planner, monkeypatch, unison="<CFI><BOEDIT><EOEDIT>", instruct=answer)
    plan = engine.plan(text)
    assert script.asked == ["instruct"] and script.refused == []
    assert plan.task is task and plan.planner == "instruct" and roles(plan) == roles_
    assert (plan.width, plan.height) == (64, 48)  # the scripted answer's
    assert plan.notes[0].startswith(f"planned by the instruct planner: the request reads as {task.value}")
    # Under planner_backend 'unison' the plain model is not in memory: the plan says which model ran.
    assert any("Unison adapter merged" in n for n in plan.notes)


def test_a_request_within_the_grammar_is_planned_by_the_unison_planner(engine, monkeypatch):
    script = Script(engine.planner, monkeypatch, unison="<CFI><BOEDIT>1,0<EOEDIT>", instruct=OUTPAINT_JSON)
    plan = engine.plan("Edit ###photo.png### using the mask ###mask.png###: put a hat on the dog.")
    assert script.asked == ["unison"] and script.refused == []
    assert plan.planner == "unison" and plan.task is Task.IMAGE_EDIT
    assert roles(plan) == [("photo.png", "source"), ("mask.png", "mask")]


def test_the_narrowed_schema_keeps_the_instruct_backend_from_writing_a_task_of_the_grammar(
    engine, monkeypatch
):
    # Scripted to answer an edit: the schema has no such branch, so the model writes an outpaint.
    script = Script(
        engine.planner, monkeypatch, unison="<CFI>", instruct=_json("image_edit", [(0, "source")])
    )
    plan = engine.plan("Widen ###cat.png### to 16:9")
    assert script.asked == ["instruct"] and script.refused
    assert plan.planner == "instruct" and plan.task is Task.IMAGE_OUTPAINT

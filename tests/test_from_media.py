"""Masks and control signals from plain media (issue 10): the plan's control_kind and target, the
grammar's edit without a mask, the rules planner's wording, and the preparation that extracts
them. The annotators themselves are tested in test_annotators.py and test_segment.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.api import parse_arguments
from engine.config import Limits
from engine.errors import InvalidRequest
from engine.grammar import format_unison, parse_unison
from engine.plan import MediaInput, Plan, build_plan, check_plan
from engine.planners.rules import RulesPlanner
from engine.prepare import PrepContext, prepare
from engine.request import parse_request
from engine.source import Source
from engine.vocab import MediaKind, Role, Task


def plan_of(text: str) -> Plan:
    return check_plan(RulesPlanner().plan(parse_request(text)))


@pytest.mark.parametrize(
    ("request_text", "task", "kind"),
    [
        ("make an astronaut follow the moves in ###dance.mp4###", Task.VIDEO_CONTROL, "pose"),
        ("a knight copying the choreography of ###ballet.mp4###", Task.VIDEO_CONTROL, "pose"),
        ("a castle with the same depth as ###room.png###", Task.IMAGE_CONTROL, "depth"),
        ("a city street keeping the layout of ###street.mp4###", Task.VIDEO_CONTROL, "depth"),
        ("keep the outline of ###cat.png### but make it a tiger", Task.IMAGE_CONTROL, "edges"),
        ("colourise ###old_film.mp4###", Task.VIDEO_CONTROL, "gray"),
        ("colorize this photo ###grandpa.png###", Task.IMAGE_CONTROL, "gray"),
        ("a river of lava following the optical flow of ###river.mp4###", Task.VIDEO_CONTROL, "flow"),
    ],
)
def test_the_rules_planner_reads_what_a_control_request_follows(request_text, task, kind):
    plan = plan_of(request_text)
    assert (plan.task, plan.control_kind) == (task, kind)
    assert [m.role for m in plan.inputs] == [Role.CONTROL]


def test_a_control_request_that_names_no_signal_leaves_the_kind_to_the_input():
    plan = plan_of("generate a video of a robot from the control video ###guide.mp4###")
    assert plan.task is Task.VIDEO_CONTROL and plan.control_kind is None


def test_control_kind_and_target_are_taken_only_by_the_tasks_they_mean(tmp_path: Path):
    limits = Limits()
    req = parse_arguments(
        "generate",
        limits,
        {"task": "video_control", "prompt": "x", "control": "/d.mp4", "control_kind": "pose"},
    )
    assert req.unchecked_plan(limits).control_kind == "pose"
    with pytest.raises(InvalidRequest, match="image_edit does not take control_kind"):
        parse_arguments(
            "generate",
            limits,
            {"task": "image_edit", "prompt": "x", "source": "/a.png", "control_kind": "pose"},
        ).unchecked_plan(limits)
    with pytest.raises(InvalidRequest, match="control_kind"):
        parse_arguments(
            "generate", limits, {"task": "video_control", "prompt": "x", "control_kind": "skeleton"}
        )
    with pytest.raises(InvalidRequest, match="not both"):
        build_plan(
            "image_edit", "x", [("/a.png", "source"), ("/m.png", "mask")], target="the cat", limits=limits
        )
    # An image edit without a mask is a task now: the region comes from the words.
    plan = build_plan("image_edit", "remove the cat", [("/a.png", "source")], target="cat", limits=limits)
    assert plan.target == "cat" and not plan.by_role(Role.MASK)


@pytest.mark.parametrize(
    ("raw", "files", "roles"),
    [
        ("<CFI><BOEDIT>1,0<EOEDIT>", ["a.png", "m.png"], [Role.SOURCE, Role.MASK]),
        ("<CFI><BOEDIT>0<EOEDIT>", ["a.png"], [Role.SOURCE]),
        ("<CFI><BOEDIT><EOEDIT>", ["a.png"], [Role.SOURCE]),
    ],
)
def test_the_grammar_reads_an_image_edit_with_or_without_a_mask_and_writes_it_back(raw, files, roles):
    media = [(f, MediaKind.IMAGE) for f in files]
    plan = parse_unison(raw, media, prompt="remove the cat")
    assert plan.task is Task.IMAGE_EDIT
    assert sorted(m.role for m in plan.inputs) == sorted(roles)
    again = parse_unison(format_unison(plan), media, prompt="remove the cat")
    assert again.inputs == plan.inputs


# ---------------------------------------------------------------------------------------------
# Preparation with extraction: the context's callables are the engine's annotators in real runs;
# here plain functions stand in for them so the preparation's own rules are checked.


@pytest.fixture
def photo(tmp_path: Path) -> str:
    rng = np.random.default_rng(1)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture
def photo_source(photo: str, opened) -> dict[str, Source]:
    """The photo opened as admission opens it, by its path: what ``PrepContext.sources`` holds."""
    return {photo: opened(photo)}


def _plan(task: Task, inputs: list[tuple[str, Role]], **kw) -> Plan:
    media = [MediaInput(path=p, kind=MediaKind.IMAGE, role=r) for p, r in inputs]
    return check_plan(Plan(task=task, prompt="a robot", inputs=media, width=64, height=48, **kw))


def _grey(kind: str, frames: np.ndarray) -> np.ndarray:
    return np.repeat(frames.mean(axis=-1, keepdims=True), 3, axis=-1).astype(np.uint8)


def test_a_plain_control_image_is_extracted_and_returned_beside_the_result(photo: str, photo_source):
    calls: list[str] = []

    def annotate(kind: str, frames: np.ndarray) -> np.ndarray:
        calls.append(kind)
        return _grey(kind, frames)

    ctx = PrepContext(limits=Limits(), sources=photo_source, annotate=annotate, looks_like=lambda f: None)
    prepared = prepare(_plan(Task.IMAGE_CONTROL, [(photo, Role.CONTROL)], control_kind="edges"), ctx)
    assert calls == ["edges"]
    ((role, frames),) = prepared.extras
    assert role == "control" and frames is prepared.video
    assert np.asarray(prepared.video[0]).std(axis=-1).max() == 0  # what annotate returned


def test_an_input_that_already_looks_like_a_control_signal_is_kept_raw_with_a_note(photo: str, photo_source):
    ctx = PrepContext(
        limits=Limits(),
        sources=photo_source,
        annotate=lambda k, f: pytest.fail("extracted"),
        looks_like=lambda f: "pose",
    )
    prepared = prepare(_plan(Task.IMAGE_CONTROL, [(photo, Role.CONTROL)], control_kind="pose"), ctx)
    assert prepared.extras == [] and any("looks like a pose signal" in n for n in prepared.notes)


def test_without_a_control_kind_a_plain_input_gives_depth_and_raw_is_passed_through(photo: str, photo_source):
    seen: list[str] = []
    ctx = PrepContext(
        limits=Limits(),
        sources=photo_source,
        annotate=lambda k, f: seen.append(k) or f,
        looks_like=lambda f: None,
    )
    prepare(_plan(Task.IMAGE_CONTROL, [(photo, Role.CONTROL)]), ctx)
    prepare(_plan(Task.IMAGE_CONTROL, [(photo, Role.CONTROL)], control_kind="raw"), ctx)
    assert seen == ["depth"]


def test_an_edit_without_a_mask_segments_the_target_dilates_it_and_returns_the_mask(photo: str, photo_source):
    asked: list[str] = []

    def segment(frames: np.ndarray, phrase: str) -> np.ndarray:
        asked.append(phrase)
        found = np.zeros(frames.shape[:3], bool)
        found[:, 20:28, 30:38] = True
        return found

    ctx = PrepContext(limits=Limits(), sources=photo_source, segment=segment, dilate_px=2)
    prepared = prepare(_plan(Task.IMAGE_EDIT, [(photo, Role.SOURCE)], target="the red ball"), ctx)
    assert asked == ["the red ball"]
    mask = np.asarray(prepared.mask[0])
    assert (mask[18:30, 28:40] == 255).all() and mask.sum() == 255 * 12 * 12  # grown by 2 px a side
    assert [r for r, _ in prepared.extras] == ["mask"]


def test_an_edit_whose_target_is_nowhere_is_refused_saying_to_give_a_mask(photo: str, photo_source):
    ctx = PrepContext(limits=Limits(), sources=photo_source, segment=lambda f, p: np.zeros(f.shape[:3], bool))
    with pytest.raises(InvalidRequest, match="no region matching 'a unicorn' was found.*give a mask"):
        prepare(_plan(Task.IMAGE_EDIT, [(photo, Role.SOURCE)], target="a unicorn"), ctx)


def test_without_a_target_the_planner_reads_the_object_from_the_prompt(photo: str, photo_source):
    asked: list[str] = []
    ctx = PrepContext(
        limits=Limits(),
        sources=photo_source,
        segment=lambda f, p: asked.append(p) or np.ones(f.shape[:3], bool),
        phrase=lambda prompt: "le chat",
    )
    prepared = prepare(_plan(Task.IMAGE_EDIT, [(photo, Role.SOURCE)]), ctx)
    assert asked == ["le chat"] and any("read from the prompt by the planner" in n for n in prepared.notes)

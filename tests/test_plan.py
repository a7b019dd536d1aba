"""The plan layer: the Unison grammar, the request convention, and every rule of check_plan."""

from __future__ import annotations

import pytest

from engine.bounds import frames_for_seconds, nearest_4k1
from engine.config import Limits
from engine.errors import InvalidRequest, PlannerError
from engine.grammar import format_unison, parse_unison
from engine.plan import Margins, MediaInput, Plan, build_plan, check_plan
from engine.request import parse_request
from engine.vocab import IMGPAD, UNISON_TOKENS, VIDPAD, MediaKind, Role, Task

IMG, VID = MediaKind.IMAGE, MediaKind.VIDEO


def roles(plan: Plan) -> list[tuple[str, str]]:
    return sorted((m.path, m.role.value) for m in plan.inputs)


# ---------------------------------------------------------------------------------------------
# The grammar: every token of UNISON.md, parsed.

GRAMMAR = [
    # (planner output, request files, task, roles, width, height, num_frames)
    ("<CFI>", [], Task.TEXT_TO_IMAGE, [], None, None, 1),
    ("<CFV>", [], Task.TEXT_TO_VIDEO, [], None, None, None),
    ("<CFI><BORES>1024,576<EORES>", [], Task.TEXT_TO_IMAGE, [], 1024, 576, 1),
    ("<CFV><BORES>832,480<EORES><BONF>48<EONF>", [], Task.TEXT_TO_VIDEO, [], 832, 480, 49),
    ("<CFV><BONF>80<EONF>", [], Task.TEXT_TO_VIDEO, [], None, None, 81),
    (
        "<CFV><BOFIDX>first<EOFIDX>",
        [("a.png", IMG)],
        Task.IMAGE_TO_VIDEO,
        [("a.png", "first_frame")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BOFIDX>start<EOFIDX>",
        [("a.png", IMG)],
        Task.IMAGE_TO_VIDEO,
        [("a.png", "first_frame")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BOFIDX>0<EOFIDX>",
        [("a.png", IMG)],
        Task.IMAGE_TO_VIDEO,
        [("a.png", "first_frame")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BOFIDX>last<EOFIDX>",
        [("a.png", IMG)],
        Task.IMAGE_TO_VIDEO,
        [("a.png", "last_frame")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BOFIDX>end<EOFIDX>",
        [("a.png", IMG)],
        Task.IMAGE_TO_VIDEO,
        [("a.png", "last_frame")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BOFIDX>-1<EOFIDX>",
        [("a.png", IMG)],
        Task.IMAGE_TO_VIDEO,
        [("a.png", "last_frame")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BONF>48<EONF><BOFIDX>48<EOFIDX>",
        [("a.png", IMG)],
        Task.IMAGE_TO_VIDEO,
        [("a.png", "last_frame")],
        None,
        None,
        49,
    ),
    ("<CFI><REF>", [("a.png", IMG)], Task.IMAGE_REFERENCE, [("a.png", "reference")], None, None, 1),
    (
        "<CFV><REF>",
        [("a.png", IMG), ("b.jpg", IMG)],
        Task.VIDEO_REFERENCE,
        [("a.png", "reference"), ("b.jpg", "reference")],
        None,
        None,
        None,
    ),
    ("<CFI><CTRL>", [("depth.png", IMG)], Task.IMAGE_CONTROL, [("depth.png", "control")], None, None, 1),
    ("<CFV><CTRL>", [("pose.mp4", VID)], Task.VIDEO_CONTROL, [("pose.mp4", "control")], None, None, None),
    (
        "<CFI><BOEDIT>1,0<EOEDIT>",
        [("photo.png", IMG), ("mask.png", IMG)],
        Task.IMAGE_EDIT,
        [("mask.png", "mask"), ("photo.png", "source")],
        None,
        None,
        1,
    ),
    (
        "<CFI><BOEDIT>0,1<EOEDIT>",
        [("mask.png", IMG), ("photo.png", IMG)],
        Task.IMAGE_EDIT,
        [("mask.png", "mask"), ("photo.png", "source")],
        None,
        None,
        1,
    ),
    (
        "<CFV><BOEDIT><EOEDIT>",
        [("clip.mp4", VID)],
        Task.VIDEO_EDIT,
        [("clip.mp4", "source")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BOEDIT>1,0<EOEDIT>",
        [("clip.mp4", VID), ("m.mp4", VID)],
        Task.VIDEO_EDIT,
        [("clip.mp4", "source"), ("m.mp4", "mask")],
        None,
        None,
        None,
    ),
    (
        "<CFV><BOEDIT>0,1<EOEDIT>",
        [("m.png", IMG), ("clip.mp4", VID)],
        Task.VIDEO_EDIT,
        [("clip.mp4", "source"), ("m.png", "mask")],
        None,
        None,
        None,
    ),
]


@pytest.mark.parametrize(("text", "files", "task", "want_roles", "width", "height", "frames"), GRAMMAR)
def test_each_token_of_the_grammar_parses_to_its_plan(text, files, task, want_roles, width, height, frames):
    plan = parse_unison(text + "<|im_end|>", files, prompt="a prompt")
    assert plan.task is task
    assert roles(plan) == sorted(want_roles)
    assert (plan.width, plan.height, plan.num_frames) == (width, height, frames)
    assert plan.prompt == "a prompt"
    assert plan.raw.startswith(text)


@pytest.mark.parametrize(("text", "files", "task", "want_roles", "width", "height", "frames"), GRAMMAR)
def test_each_plan_of_the_grammar_round_trips_through_format_and_parse(
    text, files, task, want_roles, width, height, frames
):
    plan = parse_unison(text, files, prompt="a red fox")
    written = format_unison(plan, [p for p, _ in files])
    again = parse_unison(written, files)
    assert again.task is plan.task
    assert roles(again) == roles(plan)
    assert (again.width, again.height) == (plan.width, plan.height)
    assert again.num_frames == plan.num_frames
    assert again.prompt == "a red fox"  # the text after the tokens becomes the prompt


def test_the_first_frame_is_chosen_when_the_planner_says_first_unlike_the_reference():
    first = parse_unison("<CFV><BOFIDX>first<EOFIDX>", [("a.png", IMG)])
    last = parse_unison("<CFV><BOFIDX>last<EOFIDX>", [("a.png", IMG)])
    assert first.inputs[0].role is Role.FIRST_FRAME
    assert last.inputs[0].role is Role.LAST_FRAME
    assert format_unison(first).startswith("<CFV><BOFIDX>first<EOFIDX>")
    assert format_unison(last).startswith("<CFV><BOFIDX>last<EOFIDX>")


def test_image_to_video_takes_the_first_image_of_the_request():
    plan = parse_unison("<CFV><BOFIDX>first<EOFIDX>", [("clip.mp4", VID), ("a.png", IMG)])
    assert roles(plan) == [("a.png", "first_frame")]


def test_control_takes_the_first_file_of_the_outputs_kind():
    plan = parse_unison("<CFV><CTRL>", [("look.png", IMG), ("pose.mp4", VID)])
    assert roles(plan) == [("pose.mp4", "control")]


def test_the_planners_own_words_become_the_prompt_when_none_is_given():
    plan = parse_unison("<CFI><BORES>832,480<EORES> a red fox in the snow<|im_end|>")
    assert plan.prompt == "a red fox in the snow"
    assert plan.task is Task.TEXT_TO_IMAGE


def test_the_released_token_list_has_the_fourteen_tokens_in_order():
    assert len(UNISON_TOKENS) == 14
    assert UNISON_TOKENS[0] == "<CFI>" and UNISON_TOKENS[-2:] == (IMGPAD, VIDPAD)
    assert len(set(UNISON_TOKENS)) == 14


@pytest.mark.parametrize(
    ("files", "task"),
    [
        ([], Task.TEXT_UNDERSTANDING),
        ([("a.png", IMG)], Task.IMAGE_UNDERSTANDING),
        ([("a.png", IMG), ("b.jpg", IMG)], Task.IMAGE_UNDERSTANDING),
        ([("clip.mp4", VID)], Task.VIDEO_UNDERSTANDING),
        ([("a.png", IMG), ("clip.mp4", VID)], Task.VIDEO_UNDERSTANDING),
    ],
)
def test_an_output_without_cfi_or_cfv_is_understanding_typed_by_the_input_kinds(files, task):
    plan = parse_unison("A cat sitting on a red sofa.<|im_end|>", files, prompt="What is this?")
    assert plan.task is task
    assert [m.role for m in plan.inputs] == [Role.QUERY] * len(files)
    assert plan.prompt == "What is this?"
    checked = check_plan(plan)
    assert (checked.width, checked.height, checked.num_frames) == (None, None, None)


def test_an_understanding_plan_formats_as_its_plain_text():
    plan = parse_unison("Paris.", [], prompt="What is the capital of France?")
    assert format_unison(plan) == "What is the capital of France?"


MALFORMED = [
    ("<CFI><BORES>832,480", [], "without <EORES>"),
    ("<CFV><BONF>80", [], "without <EONF>"),
    ("<CFV><BOFIDX>first", [("a.png", IMG)], "without <EOFIDX>"),
    ("<CFI><BOEDIT>1,0", [("a.png", IMG), ("m.png", IMG)], "without <EOEDIT>"),
    ("<CFI>832,480<EORES>", [], "<EORES> without <BORES>"),
    ("<CFI><BORES>wide,tall<EORES>", [], "expected 2 whole number"),
    ("<CFI><BORES>832<EORES>", [], "expected 2 whole number"),
    ("<CFV><BONF>eighty<EONF>", [], "expected 1 whole number"),
    ("<CFI><BOEDIT>one<EOEDIT>", [("a.png", IMG), ("m.png", IMG)], "expected 1 whole number"),
    ("<CFI><BOEDIT>2,0<EOEDIT>", [("a.png", IMG), ("m.png", IMG)], "refers to input 2 but the request has 2"),
    ("<CFI><BOEDIT>0,0<EOEDIT>", [("a.png", IMG), ("m.png", IMG)], "both mask and source"),
    ("<CFI><CFV>", [], "both an image and a video"),
    ("<CFV><BOFIDX>middle<EOFIDX>", [("a.png", IMG)], "expected first/start/0 or last/end/-1"),
    ("<CFV><BOFIDX>7<EOFIDX>", [("a.png", IMG)], "the last index of 81 frames"),
    ("<CFI><BOFIDX>first<EOFIDX>", [("a.png", IMG)], "needs <CFV>"),
    ("<CFV><BOFIDX>first<EOFIDX>", [("clip.mp4", VID)], "needs an input image"),
    ("<CFV><BOEDIT><EOEDIT>", [("a.png", IMG)], "needs an input video"),
    ("<CFI><REF>", [("clip.mp4", VID)], "<REF> but the request has no image"),
    ("<CFV><CTRL>", [], "<CTRL> but the request has no file"),
]


@pytest.mark.parametrize(("text", "files", "says"), MALFORMED)
def test_a_malformed_planner_output_is_a_planner_error_that_quotes_it(text, files, says):
    with pytest.raises(PlannerError) as info:
        parse_unison(text, files)
    assert says in str(info.value)
    assert repr(text) in str(info.value)  # the raw output is quoted for the log


def test_format_refuses_a_task_the_released_grammar_cannot_express():
    plan = build_plan(Task.VIDEO_EXTEND, "more", [("clip.mp4", "source")])
    with pytest.raises(InvalidRequest) as info:
        format_unison(plan)
    assert info.value.field == "task" and info.value.value == "video_extend"


def test_format_refuses_files_that_leave_out_an_input():
    plan = build_plan(Task.IMAGE_EDIT, "a hat", [("a.png", "source"), ("m.png", "mask")])
    with pytest.raises(InvalidRequest) as info:
        format_unison(plan, ["a.png"])
    assert info.value.field == "files" and "m.png" in info.value.rule


# ---------------------------------------------------------------------------------------------
# The request convention.


def test_markers_are_numbered_in_order_and_replaced_by_placeholders_of_their_kind():
    req = parse_request("Replace the sky in ###photos/a b.JPG### with ###sky.mp4###, using ###m.png###.")
    assert req.media == (("photos/a b.JPG", IMG), ("sky.mp4", VID), ("m.png", IMG))
    assert req.kinds == (IMG, VID, IMG)
    assert req.text == f"Replace the sky in {IMGPAD} with {VIDPAD}, using {IMGPAD}."
    assert req.prompt == "Replace the sky in with, using."


def test_extra_media_follow_the_markers_and_their_placeholders_are_appended():
    req = parse_request("Animate ###a.png### like this", media=["clip.mov", "b.webp"])
    assert req.media == (("a.png", IMG), ("clip.mov", VID), ("b.webp", IMG))
    assert req.text == f"Animate {IMGPAD} like this {VIDPAD}{IMGPAD}"
    assert req.prompt == "Animate like this"


def test_a_request_without_markers_has_no_media_and_keeps_its_text():
    req = parse_request("  A red fox in the snow  ")
    assert req.media == () and req.text == "A red fox in the snow" and req.prompt == req.text


@pytest.mark.parametrize("name", ["notes.txt", "model.safetensors", "noextension"])
def test_an_unknown_file_extension_is_refused_naming_the_choices(name):
    with pytest.raises(InvalidRequest) as info:
        parse_request(f"Describe ###{name}###")
    assert info.value.field == "path" and info.value.value == name
    assert ".png" in info.value.rule and ".mp4" in info.value.rule


def test_an_unknown_extension_in_the_extra_media_is_refused_too():
    with pytest.raises(InvalidRequest, match="unsupported file type '.gif'"):
        parse_request("Describe this", media=["anim.gif"])


# ---------------------------------------------------------------------------------------------
# check_plan: normalisation and every rule, each naming field, value and rule.


def test_unset_size_and_frames_take_the_configured_defaults():
    plan = check_plan(Plan(task=Task.TEXT_TO_VIDEO, prompt="waves"))
    assert (plan.width, plan.height, plan.num_frames, plan.fps) == (832, 480, 81, 16.0)
    tiny = check_plan(
        Plan(task=Task.TEXT_TO_VIDEO, prompt="waves"),
        Limits(default_width=64, default_height=48, default_frames=9),
    )
    assert (tiny.width, tiny.height, tiny.num_frames) == (64, 48, 9)
    image = check_plan(Plan(task=Task.TEXT_TO_IMAGE, prompt="a fox"))
    assert image.num_frames == 1


def test_sizes_are_rounded_to_multiples_of_16_with_a_note():
    plan = check_plan(Plan(task=Task.TEXT_TO_IMAGE, prompt="a fox", width=1000, height=563))
    assert (plan.width, plan.height) == (1008, 560)  # 1000 is a tie: ties go up
    assert plan.notes == [
        "width 1000 rounded to 1008 (multiple of 16)",
        "height 563 rounded to 560 (multiple of 16)",
    ]


def test_a_size_already_on_the_grid_gets_no_note():
    plan = check_plan(Plan(task=Task.TEXT_TO_IMAGE, prompt="a fox", width=1280, height=720))
    assert plan.notes == []


def test_check_plan_returns_a_copy_and_leaves_the_plan_alone():
    plan = Plan(task=Task.TEXT_TO_IMAGE, prompt="a fox", width=1000)
    check_plan(plan)
    assert plan.width == 1000 and plan.notes == []


def invalid(plan: Plan, limits: Limits | None = None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        check_plan(plan, limits)
    e = info.value
    # Every refusal names the field, the value it got and the rule, in the message too.
    assert e.field and e.rule
    assert str(e).startswith(f"{e.field}=") and e.rule in str(e)
    return e


def _first_last() -> list[MediaInput]:
    return [
        MediaInput(path="/a.png", kind=MediaKind.IMAGE, role=Role.FIRST_FRAME),
        MediaInput(path="/b.png", kind=MediaKind.IMAGE, role=Role.LAST_FRAME),
    ]


def t2v(**kw) -> Plan:
    return Plan(task=Task.TEXT_TO_VIDEO, prompt="waves", **kw)


@pytest.mark.parametrize(
    ("plan", "field", "value", "rule"),
    [
        (t2v(height=0), "height", 0, "positive whole number"),
        (t2v(width=-64), "width", -64, "positive whole number"),
        (t2v(num_frames=1), "num_frames", 1, "5 to 481 frames"),
        (t2v(num_frames=485), "num_frames", 485, "5 to 481 frames (30 s, made as a chain"),
        (
            Plan(task=Task.FIRST_LAST_TO_VIDEO, prompt="x", num_frames=165, inputs=_first_last()),
            "num_frames",
            165,
            "5 to 161 frames; longer videos",
        ),
        (t2v(fps=0.0), "fps", 0.0, "between 1 and 60"),
        (t2v(fps=120.0), "fps", 120.0, "between 1 and 60"),
        (Plan(task=Task.TEXT_TO_IMAGE, prompt="x", num_frames=81), "num_frames", 81, "makes one image"),
        (Plan(task=Task.TEXT_TO_IMAGE, prompt="x" * 4001), "prompt", "4001 characters", "at most 4000"),
    ],
)
def test_a_size_frame_or_prompt_outside_the_rules_is_refused(plan, field, value, rule):
    e = invalid(plan)
    assert (e.field, e.value) == (field, value)
    assert rule in e.rule


@pytest.mark.parametrize(
    ("size", "scaled"),
    [
        ((1920, 1080), (1280, 720)),  # "1080p": scaled to the 1280×720 budget
        ((3840, 2160), (1280, 720)),  # "4K"
        ((1080, 1920), (720, 1280)),  # portrait stays portrait
        ((4000, 480), (1920, 224)),  # the longest side bounds it first
        ((1930, 100), (1920, 96)),  # rounding up past the bound is scaled back
    ],
)
def test_a_size_above_the_limits_is_scaled_down_keeping_its_aspect_with_a_note(size, scaled):
    plan = check_plan(t2v(width=size[0], height=size[1]))
    assert (plan.width, plan.height) == scaled
    assert plan.width * plan.height <= Limits().max_pixels and max(scaled) <= Limits().max_side
    assert plan.width % 16 == plan.height % 16 == 0
    assert abs(plan.width / plan.height - size[0] / size[1]) / (size[0] / size[1]) < 0.08
    assert any("scaled down" in n and f"{scaled[0]}×{scaled[1]}" in n for n in plan.notes)


@pytest.mark.parametrize(("given", "rounded"), [(30, 29), (50, 49), (48, 49), (2, 1)])
def test_an_off_grid_frame_count_is_rounded_to_4k_plus_1_with_a_note(given, rounded):
    if rounded < 5:
        assert invalid(t2v(num_frames=given)).value == given
        return
    plan = check_plan(t2v(num_frames=given))
    assert plan.num_frames == rounded
    assert f"num_frames {given} rounded to {rounded} (Wan makes 4k+1 frames)" in plan.notes


def test_a_duration_off_the_grid_is_rounded_with_the_same_note():
    plan = build_plan("text_to_video", "waves", duration_s=2.3)  # 2.3 s × 16 + 1 = 38 frames
    assert plan.num_frames == 37
    assert "num_frames 38 rounded to 37 (Wan makes 4k+1 frames)" in plan.notes
    assert build_plan("text_to_video", "waves", duration_s=3).notes == []  # 49 frames: on the grid


def test_chained_tasks_take_up_to_the_longest_duration_and_others_one_window():
    assert check_plan(t2v(num_frames=321)).num_frames == 321  # 20 s: a chain of windows
    assert build_plan("text_to_video", "waves", duration_s=20).num_frames == 321
    e = invalid(t2v(num_frames=321), Limits(max_duration_s=10))
    assert "5 to 161 frames" in e.rule


def test_a_side_below_the_minimum_is_refused():
    e = invalid(t2v(height=40), Limits(min_side=64))
    assert (e.field, e.value) == ("height", 40) and "at least 64 pixels" in e.rule


def test_limits_are_configurable():
    plan = Plan(task=Task.FIRST_LAST_TO_VIDEO, prompt="x", num_frames=49, inputs=_first_last())
    e = invalid(plan, Limits(max_frames=33))
    assert e.value == 49 and "5 to 33 frames" in e.rule


def mi(path: str, role: Role) -> MediaInput:
    kind = VID if path.endswith(".mp4") else IMG
    return MediaInput(path=path, kind=kind, role=role)


ROLE_CASES = [
    # image_edit: the mask must be an image, both roles exactly once
    (Task.IMAGE_EDIT, [mi("a.png", Role.SOURCE), mi("m.mp4", Role.MASK)], "inputs[1]", "must be an image"),
    (
        Task.IMAGE_EDIT,
        [mi("a.png", Role.SOURCE), mi("m.png", Role.MASK), mi("n.png", Role.MASK)],
        "mask",
        "needs 0 to 1 mask input(s)",
    ),
    (
        Task.IMAGE_EDIT,
        [mi("a.png", Role.SOURCE), mi("b.png", Role.SOURCE), mi("m.png", Role.MASK)],
        "source",
        "needs 1 source",
    ),
    (
        Task.IMAGE_EDIT,
        [mi("a.png", Role.REFERENCE), mi("m.png", Role.MASK)],
        "inputs[0].role",
        "takes source, mask",
    ),
    # control must match the output: a video for video_control, an image for image_control
    (Task.VIDEO_CONTROL, [mi("pose.png", Role.CONTROL)], "inputs[0]", "must be a video"),
    (Task.IMAGE_CONTROL, [mi("pose.mp4", Role.CONTROL)], "inputs[0]", "must be an image"),
    (Task.VIDEO_EDIT, [mi("a.png", Role.SOURCE)], "inputs[0]", "must be a video"),
    (
        Task.VIDEO_EDIT,
        [mi("a.mp4", Role.SOURCE), mi("m.png", Role.MASK), mi("n.png", Role.MASK)],
        "mask",
        "0 to 1",
    ),
    (Task.IMAGE_REFERENCE, [mi(f"{i}.png", Role.REFERENCE) for i in range(4)], "reference", "1 to 3"),
    (Task.VIDEO_REFERENCE, [], "reference", "needs 1 to 3 reference"),
    (
        Task.IMAGE_TO_VIDEO,
        [mi("a.png", Role.FIRST_FRAME), mi("b.png", Role.LAST_FRAME)],
        "inputs",
        "first_last_to_video",
    ),
    (Task.IMAGE_TO_VIDEO, [], "inputs", "exactly one image"),
    (Task.IMAGE_TO_VIDEO, [mi("a.mp4", Role.FIRST_FRAME)], "inputs[0]", "must be an image"),
    (Task.FIRST_LAST_TO_VIDEO, [mi("a.png", Role.FIRST_FRAME)], "last_frame", "needs 1 last_frame"),
    (Task.TEXT_TO_IMAGE, [mi("a.png", Role.QUERY)], "inputs[0].role", "takes no input files"),
    (Task.VIDEO_UNDERSTANDING, [mi("a.png", Role.QUERY)], "inputs", "needs a video"),
    (Task.IMAGE_UNDERSTANDING, [mi("a.mp4", Role.QUERY)], "inputs[0]", "must be an image"),
    (Task.VIDEO_EXTEND, [mi("a.png", Role.SOURCE)], "inputs[0]", "must be a video"),
    (Task.IMAGE_OUTPAINT, [mi("a.mp4", Role.SOURCE)], "inputs[0]", "must be an image"),
]


@pytest.mark.parametrize(("task", "inputs", "field", "rule"), ROLE_CASES)
def test_inputs_of_the_wrong_role_kind_or_count_are_refused(task, inputs, field, rule):
    e = invalid(Plan(task=task, prompt="p", inputs=inputs))
    assert e.field == field
    assert rule in e.rule


def test_too_many_inputs_are_refused():
    inputs = [mi(f"{i}.png", Role.QUERY) for i in range(9)]
    e = invalid(Plan(task=Task.IMAGE_UNDERSTANDING, prompt="?", inputs=inputs))
    assert (e.field, e.value) == ("inputs", 9)


@pytest.mark.parametrize(
    ("task", "inputs"),
    [
        (Task.IMAGE_EDIT, [mi("a.png", Role.SOURCE), mi("m.png", Role.MASK)]),
        (Task.VIDEO_EDIT, [mi("a.mp4", Role.SOURCE)]),
        (Task.VIDEO_EDIT, [mi("a.mp4", Role.SOURCE), mi("m.png", Role.MASK)]),
        (Task.VIDEO_EDIT, [mi("a.mp4", Role.SOURCE), mi("m.mp4", Role.MASK)]),
        (Task.IMAGE_TO_VIDEO, [mi("a.png", Role.LAST_FRAME)]),
        (Task.FIRST_LAST_TO_VIDEO, [mi("a.png", Role.FIRST_FRAME), mi("b.png", Role.LAST_FRAME)]),
        (Task.VIDEO_UNDERSTANDING, [mi("a.png", Role.QUERY), mi("a.mp4", Role.QUERY)]),
        (Task.IMAGE_REFERENCE, [mi(f"{i}.png", Role.REFERENCE) for i in range(3)]),
    ],
)
def test_inputs_that_fit_the_task_pass(task, inputs):
    assert check_plan(Plan(task=task, prompt="p", inputs=inputs)).inputs == inputs


def test_outpaint_margins_must_leave_room_for_the_source():
    plan = Plan(
        task=Task.IMAGE_OUTPAINT,
        prompt="more sky",
        inputs=[mi("a.png", Role.SOURCE)],
        margins=Margins(top=240, bottom=240),
    )
    e = invalid(plan)
    assert e.field == "margins" and e.value == {"left": 0, "top": 240, "right": 0, "bottom": 240}
    assert "832×480" in e.rule
    ok = check_plan(plan.model_copy(update={"margins": Margins(top=64, bottom=64)}))
    assert ok.margins.top == 64


def test_video_extend_gets_default_context_frames_and_its_frames_are_the_new_part():
    plan = Plan(task=Task.VIDEO_EXTEND, prompt="on", inputs=[mi("a.mp4", Role.SOURCE)])
    checked = check_plan(plan)
    assert checked.context_frames == 9 and checked.num_frames == 81  # 81 new frames by default
    # The new part may be shorter than the context: the window holds both.
    assert check_plan(plan.model_copy(update={"num_frames": 5})).context_frames == 9
    e = invalid(plan.model_copy(update={"context_frames": 158}))
    assert (e.field, e.value) == ("context_frames", 158) and "between 1 and 157" in e.rule


# ---------------------------------------------------------------------------------------------
# Frame arithmetic and build_plan.


@pytest.mark.parametrize(
    ("n", "want"), [(1, 1), (2, 1), (3, 5), (4, 5), (5, 5), (30, 29), (31, 33), (81, 81), (0, 1)]
)
def test_nearest_4k1_rounds_to_the_closest_valid_count_ties_up(n, want):
    assert nearest_4k1(n) == want


def test_nearest_4k1_stays_exact_for_counts_too_large_for_a_float():
    # A request may spell out any number of frames; float division used to overflow or round.
    assert nearest_4k1(10**30) == 10**30 + 1
    assert nearest_4k1(10**400) % 4 == 1


@pytest.mark.parametrize(("seconds", "want"), [(1, 17), (2, 33), (2.5, 41), (3, 49), (5, 81), (10, 161)])
def test_seconds_become_16_frames_each_plus_one(seconds, want):
    assert frames_for_seconds(seconds, fps=16) == want


def test_build_plan_turns_a_duration_into_frames():
    plan = build_plan("text_to_video", "waves", duration_s=3)
    assert plan.num_frames == 49 and plan.fps == 16.0
    fast = build_plan("text_to_video", "waves", duration_s=2, fps=24)
    assert fast.num_frames == 49 and fast.fps == 24.0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(duration_s=float("inf")), "duration_s"),
        (dict(duration_s=1e308, fps=24), "duration_s"),
        (dict(duration_s=2, fps=float("nan")), "fps"),
        (dict(duration_s=2, fps=float("inf")), "fps"),
    ],
)
def test_a_duration_or_rate_that_is_not_a_finite_number_is_refused_by_name(kwargs, field):
    with pytest.raises(InvalidRequest) as info:
        build_plan("text_to_video", "waves", **kwargs)
    assert info.value.field == field


def test_build_plan_gives_each_input_its_kind_and_role():
    plan = build_plan(
        Task.VIDEO_EDIT, "a red car", [("clip.mp4", "source"), ("m.png", Role.MASK)], width=1280, height=720
    )
    assert [(m.kind, m.role) for m in plan.inputs] == [(VID, Role.SOURCE), (IMG, Role.MASK)]
    assert (plan.width, plan.height, plan.num_frames) == (1280, 720, 81)


@pytest.mark.parametrize(
    ("kwargs", "field", "rule"),
    [
        (dict(task="text_to_video", duration_s=2, num_frames=33), "duration_s", "not both"),
        (dict(task="text_to_video", duration_s=0), "duration_s", "above 0"),
        (dict(task="text_to_video", duration_s=-1.5), "duration_s", "above 0"),
        (dict(task="text_to_image", duration_s=2), "duration_s", "does not make a video"),
        (dict(task="text_to_video", duration_s=60), "num_frames", "5 to 481 frames"),
        (dict(task="paint"), "task", "unknown task"),
        (dict(task="image_edit", inputs=[("a.png", "painter")]), "role", "one of query, source"),
    ],
)
def test_build_plan_refuses_bad_parameters_by_name(kwargs, field, rule):
    kwargs = dict(kwargs)
    task = kwargs.pop("task")
    inputs = kwargs.pop("inputs", ())
    with pytest.raises(InvalidRequest) as info:
        build_plan(task, "p", inputs, **kwargs)
    assert info.value.field == field and rule in info.value.rule

"""The rules planner on requests as users write them: task, roles, size and frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.config import Limits
from engine.errors import InvalidRequest
from engine.plan import Margins, Plan, check_plan
from engine.planners.rules import RulesPlanner
from engine.request import parse_request
from engine.vocab import Task

T = Task
Q, SRC, MASK, REF, CTRL = "query", "source", "mask", "reference", "control"
FIRST, LAST = "first_frame", "last_frame"


def plan_of(request: str, limits: Limits | None = None, media: tuple[str, ...] = ()) -> Plan:
    return RulesPlanner(limits).plan(parse_request(request, media))


# (request, task, roles in file order, width, height, num_frames) after check_plan, default limits.
REQUESTS = [
    # text understanding
    ("What is the capital of France?", T.TEXT_UNDERSTANDING, [], None, None, None),
    ("Write a haiku about the first snow of winter.", T.TEXT_UNDERSTANDING, [], None, None, None),
    ("Can you explain how a rainbow forms?", T.TEXT_UNDERSTANDING, [], None, None, None),
    # image understanding
    ("What breed is the dog in ###photos/dog.jpg###?", T.IMAGE_UNDERSTANDING, [Q], None, None, None),
    ("###receipt.png### How much did I pay in total?", T.IMAGE_UNDERSTANDING, [Q], None, None, None),
    (
        "Compare ###before.png### and ###after.png### and list the differences",
        T.IMAGE_UNDERSTANDING,
        [Q, Q],
        None,
        None,
        None,
    ),
    ("Generate a caption for ###beach.jpg###", T.IMAGE_UNDERSTANDING, [Q], None, None, None),
    # video understanding
    ("Describe what happens in ###clips/party.mp4###", T.VIDEO_UNDERSTANDING, [Q], None, None, None),
    (
        "How many people appear in ###crowd.jpg### and ###street.mov###?",
        T.VIDEO_UNDERSTANDING,
        [Q, Q],
        None,
        None,
        None,
    ),
    # text to image, with the size conventions
    ("Draw a red fox sitting in the snow.", T.TEXT_TO_IMAGE, [], 832, 480, 1),
    ("A watercolor painting of a lighthouse at dusk, portrait", T.TEXT_TO_IMAGE, [], 480, 832, 1),
    ("Generate an image of a dragon over a castle at 1024x576", T.TEXT_TO_IMAGE, [], 1024, 576, 1),
    ("Generate an image of a dragon, 1024×576", T.TEXT_TO_IMAGE, [], 1024, 576, 1),
    ("Make a square picture of a cup of coffee", T.TEXT_TO_IMAGE, [], 624, 624, 1),
    (
        "Can you generate a poster of a jazz festival, with a width of 720 and a height of 1280?",
        T.TEXT_TO_IMAGE,
        [],
        720,
        1280,
        1,
    ),
    ("Draw a cat, 4:3", T.TEXT_TO_IMAGE, [], 736, 544, 1),
    ("A 720P photo of a mountain lake, vertical", T.TEXT_TO_IMAGE, [], 720, 1280, 1),
    # text to video, with the frame conventions
    ("Make a video of waves crashing on a beach.", T.TEXT_TO_VIDEO, [], 832, 480, 81),
    ("Generate a 5-second clip of a hummingbird drinking nectar", T.TEXT_TO_VIDEO, [], 832, 480, 81),
    ("A 3 second video of rain on a window, 720p", T.TEXT_TO_VIDEO, [], 1280, 720, 49),
    (
        "Create a vertical 480P animation of a bouncing ball lasting two seconds",
        T.TEXT_TO_VIDEO,
        [],
        480,
        832,
        33,
    ),
    ("A cinematic timelapse of clouds over mountains, 49 frames", T.TEXT_TO_VIDEO, [], 832, 480, 49),
    ("Show me a 2.5 s clip of fireworks", T.TEXT_TO_VIDEO, [], 832, 480, 41),
    ("Film a dog surfing, 30 frames", T.TEXT_TO_VIDEO, [], 832, 480, 29),
    ("A 1980s style video of a diner", T.TEXT_TO_VIDEO, [], 832, 480, 81),
    ("A 5 second video at 24 frames per second of a train", T.TEXT_TO_VIDEO, [], 832, 480, 81),
    # image edit: the mask by file name, by the words near it, else the second image
    (
        "Edit ###photo.png### using the mask ###mask.png###: put a hat on the dog.",
        T.IMAGE_EDIT,
        [SRC, MASK],
        832,
        480,
        1,
    ),
    (
        "Replace the sky in ###beach.jpg### with a sunset, the mask is ###sky_region.png###",
        T.IMAGE_EDIT,
        [SRC, MASK],
        832,
        480,
        1,
    ),
    (
        "###m.png### is the mask, ###living_room.jpg### is the photo. Fill the masked area with a bookshelf.",
        T.IMAGE_EDIT,
        [MASK, SRC],
        832,
        480,
        1,
    ),
    (
        "Remove the person from ###street.jpg### (white area in ###person_mask.png###)",
        T.IMAGE_EDIT,
        [SRC, MASK],
        832,
        480,
        1,
    ),
    (
        "Swap the red car in ###a.png### for a blue truck; ###b.png### marks where",
        T.IMAGE_EDIT,
        [SRC, MASK],
        832,
        480,
        1,
    ),
    # image control
    ("Use the depth map ###depth.png### to draw a castle.", T.IMAGE_CONTROL, [CTRL], 832, 480, 1),
    (
        "Turn this sketch ###drafts/house_sketch.png### into a realistic photo, 720p",
        T.IMAGE_CONTROL,
        [CTRL],
        1280,
        720,
        1,
    ),
    ("Generate a picture of a ballerina in the pose of ###pose.jpg###", T.IMAGE_CONTROL, [CTRL], 832, 480, 1),
    # image reference
    (
        "Create a picture of the person in ###face.jpg### riding a horse.",
        T.IMAGE_REFERENCE,
        [REF],
        832,
        480,
        1,
    ),
    (
        "Put the woman from ###w.png### and the man from ###m.png### together in a cafe",
        T.IMAGE_REFERENCE,
        [REF, REF],
        832,
        480,
        1,
    ),
    (
        "Using my face ID ###me.jpg###, make a portrait of me as an astronaut",
        T.IMAGE_REFERENCE,
        [REF],
        480,
        832,
        1,
    ),
    # image to video: first frame unless the words near the image say last
    (
        "Animate ###start.png### as the first frame: the girl starts walking.",
        T.IMAGE_TO_VIDEO,
        [FIRST],
        832,
        480,
        81,
    ),
    (
        "Make a video that ends on ###end.png###: the car arrives home.",
        T.IMAGE_TO_VIDEO,
        [LAST],
        832,
        480,
        81,
    ),
    ("Bring ###old_photo.jpg### to life, 4 seconds", T.IMAGE_TO_VIDEO, [FIRST], 832, 480, 65),
    (
        "Use ###finale.png### as the last frame of a 3-second clip where the balloon rises",
        T.IMAGE_TO_VIDEO,
        [LAST],
        832,
        480,
        49,
    ),
    (
        "I have a photo ###a.png###. Can you animate it? Ten seconds.",
        T.IMAGE_TO_VIDEO,
        [FIRST],
        832,
        480,
        161,
    ),
    # first and last frames
    (
        "Generate a video that starts with ###a.png### and ends with ###b.png###",
        T.FIRST_LAST_TO_VIDEO,
        [FIRST, LAST],
        832,
        480,
        81,
    ),
    (
        "A smooth transition from ###day.jpg### to ###night.jpg###, 3 seconds",
        T.FIRST_LAST_TO_VIDEO,
        [FIRST, LAST],
        832,
        480,
        49,
    ),
    (
        "Use ###bud.png### and ###bloom.png### as the first and last frames: the flower opens",
        T.FIRST_LAST_TO_VIDEO,
        [FIRST, LAST],
        832,
        480,
        81,
    ),
    (
        "Make a clip ending on ###end.png### that starts from ###start.png###",
        T.FIRST_LAST_TO_VIDEO,
        [LAST, FIRST],
        832,
        480,
        81,
    ),
    # video reference
    ("Make a video of the cat in ###cat.png### playing with yarn.", T.VIDEO_REFERENCE, [REF], 832, 480, 81),
    (
        "Create a 2 second clip featuring ###hero.png### and ###sidekick.png### walking on the moon",
        T.VIDEO_REFERENCE,
        [REF, REF],
        832,
        480,
        33,
    ),
    # video edit: with a mask video, a mask image, or none (the region is found from the prompt)
    ("In ###clip.mp4###, replace the dog with a cat.", T.VIDEO_EDIT, [SRC], 832, 480, 81),
    (
        "Remove the car from ###street.mp4### using the mask ###car_mask.mp4###",
        T.VIDEO_EDIT,
        [SRC, MASK],
        832,
        480,
        81,
    ),
    (
        "Make the jacket in ###runway.mov### bright red; the mask is ###jacket.png###",
        T.VIDEO_EDIT,
        [SRC, MASK],
        832,
        480,
        81,
    ),
    # video control
    ("Follow the pose video ###pose.mp4### to show a robot dancing.", T.VIDEO_CONTROL, [CTRL], 832, 480, 81),
    (
        "Generate a video of an astronaut following the movements in ###dance.mp4###, 720p",
        T.VIDEO_CONTROL,
        [CTRL],
        1280,
        720,
        81,
    ),
    (
        "Render a knight in armor from the depth video ###depth.mp4###, 33 frames",
        T.VIDEO_CONTROL,
        [CTRL],
        832,
        480,
        33,
    ),
    # outpainting
    ("Zoom out ###room.png### by 128 pixels on each side", T.IMAGE_OUTPAINT, [SRC], 832, 480, 1),
    ("Extend ###landscape.jpg### to the left and right", T.IMAGE_OUTPAINT, [SRC], 832, 480, 1),
    ("Outpaint ###portrait.jpg### to 1280x720", T.IMAGE_OUTPAINT, [SRC], 1280, 720, 1),
    (
        "Expand the canvas of ###clip.mp4### by 64 pixels at the top and bottom",
        T.VIDEO_OUTPAINT,
        [SRC],
        832,
        480,
        81,
    ),
    ("Zoom out of ###drone.mp4###", T.VIDEO_OUTPAINT, [SRC], 832, 480, 81),
    # video extension
    ("Continue ###clip.mp4### for another 2 seconds", T.VIDEO_EXTEND, [SRC], 832, 480, 33),
    ("Make ###dance.mp4### longer: what happens next?", T.VIDEO_EXTEND, [SRC], 832, 480, 81),
    ("Extend the video ###waves.mp4### by 3 seconds", T.VIDEO_EXTEND, [SRC], 832, 480, 49),
]


@pytest.mark.parametrize(("request_text", "task", "roles", "width", "height", "frames"), REQUESTS)
def test_a_natural_request_is_planned_as_a_user_means_it(request_text, task, roles, width, height, frames):
    req = parse_request(request_text)
    plan = check_plan(RulesPlanner().plan(req))
    assert plan.task is task
    assert [m.path for m in plan.inputs] == [p for p, _ in req.media]  # every file, in order
    assert [m.role.value for m in plan.inputs] == roles
    assert (plan.width, plan.height, plan.num_frames) == (width, height, frames)
    assert plan.prompt == req.prompt
    assert plan.notes == []


def test_the_table_covers_all_sixteen_tasks():
    assert {row[1] for row in REQUESTS} == set(Task)


@pytest.mark.parametrize(
    ("request_text", "task", "roles"),
    [
        # a file called "end" is a last frame only when a clip is asked for
        ("Create a picture of the person in ###end.png### riding a horse", T.IMAGE_REFERENCE, [REF]),
        ("Make a video ###end.png###", T.IMAGE_TO_VIDEO, [LAST]),
        # "ends with" describes the story unless it leads straight to the file
        ("Make a video that ends with the car arriving home, from ###a.png###", T.IMAGE_TO_VIDEO, [FIRST]),
        ("Draw a comic where the story begins at the beach", T.TEXT_TO_IMAGE, []),
        # "longer" about a thing in the clip is an edit, not an extension
        ("Make the dog's tail longer in ###v.mp4###", T.VIDEO_EDIT, [SRC]),
        # a video noun inside the picture's subject does not ask for a video
        ("A photo of a movie theater", T.TEXT_TO_IMAGE, []),
        # edit and creation verbs inside a question do not make it a request to generate
        ("What should I change in ###a.png###?", T.IMAGE_UNDERSTANDING, [Q]),
        ("Describe the video I should make from ###a.png###", T.IMAGE_UNDERSTANDING, [Q]),
    ],
)
def test_wording_that_only_looks_like_a_cue_does_not_change_the_task(request_text, task, roles):
    plan = check_plan(plan_of(request_text))
    assert plan.task is task
    assert [m.role.value for m in plan.inputs] == roles


@pytest.mark.parametrize(
    ("request_text", "margins"),
    [
        (
            "Zoom out ###room.png### by 128 pixels on each side",
            Margins(left=128, top=128, right=128, bottom=128),
        ),
        ("Outpaint ###a.png### by 32 px", Margins(left=32, top=32, right=32, bottom=32)),
        ("Extend ###landscape.jpg### to the left and right", Margins(left=104, right=104)),
        ("Extend ###a.png### by 96 pixels to the right", Margins(right=96)),
        (
            "Expand the canvas of ###clip.mp4### by 64 pixels at the top and bottom",
            Margins(top=64, bottom=64),
        ),
        ("Zoom out of ###drone.mp4###", Margins(left=104, top=60, right=104, bottom=60)),
        ("Outpaint ###portrait.jpg### to 1280x720", None),
        ("Change the aspect ratio of ###a.png### to 21:9", None),
    ],
)
def test_outpainting_margins_follow_the_amount_and_the_sides_named(request_text, margins):
    plan = check_plan(plan_of(request_text))
    assert plan.task in (Task.IMAGE_OUTPAINT, Task.VIDEO_OUTPAINT)
    assert plan.margins == margins


def test_unsaid_sizes_and_frame_counts_are_left_to_the_configured_defaults():
    video = plan_of("Make a video of a fox")
    assert (video.width, video.height, video.num_frames) == (None, None, None)
    tiny = Limits(default_width=64, default_height=48, default_frames=9)
    assert (check_plan(video, tiny).width, check_plan(video, tiny).num_frames) == (64, 9)
    image = plan_of("Draw a fox")
    assert (image.width, image.height, image.num_frames) == (None, None, 1)


def test_portrait_and_default_margins_follow_the_planners_limits():
    tiny = Limits(default_width=64, default_height=48, default_frames=9)
    portrait = check_plan(plan_of("A vertical video of rain", tiny), tiny)
    assert (portrait.width, portrait.height) == (48, 64)
    zoom = check_plan(plan_of("Zoom out ###a.png###", tiny), tiny)
    assert zoom.margins == Margins(left=8, top=6, right=8, bottom=6)


def test_an_edit_of_one_image_without_a_mask_falls_back_to_a_reference_and_says_why():
    plan = check_plan(plan_of("Replace the dog in ###a.png### with a cat"))
    assert plan.task is Task.IMAGE_REFERENCE
    assert [m.role.value for m in plan.inputs] == [REF]
    assert len(plan.notes) == 1
    assert "image_edit" in plan.notes[0] and "mask" in plan.notes[0]
    assert plan.notes[0].endswith("planned as image_reference")


def test_an_action_word_on_a_video_picks_the_task_its_kind_allows():
    # "animate" asks for image_to_video, which needs an image: a lone video is edited instead.
    plan = check_plan(plan_of("Animate ###clip.mp4### with brighter colors"))
    assert plan.task is Task.VIDEO_EDIT


@pytest.mark.parametrize(
    ("request_text", "field", "rule"),
    [
        (
            "Create an image featuring ###a.png###, ###b.png###, ###c.png### and ###d.png###",
            "reference",
            "image_reference needs 1 to 3 reference input(s)",
        ),
        (
            "Generate an image in the style of ###a.png### following ###pose.mp4###",
            "inputs[0]",
            "the control of video_control must be a video",
        ),
        (
            # Two videos and no edit, control or extend wording: no task takes both.
            "Generate a video of ###a.mp4### and ###b.mp4###",
            "inputs",
            "no task takes these files",
        ),
    ],
)
def test_a_request_no_reading_of_which_fits_its_files_is_refused_by_name(request_text, field, rule):
    with pytest.raises(InvalidRequest) as info:
        plan_of(request_text)
    assert info.value.field == field
    assert rule in info.value.rule


@pytest.mark.parametrize(
    "request_text",
    [
        "A video of waves, " + "1" * 400 + " seconds long",
        "A video of waves, " + "9" * 400 + " minutes long",
        "A video of waves with " + "1" * 400 + " frames",
    ],
)
def test_a_number_too_large_for_a_float_is_refused_not_a_crash(request_text):
    with pytest.raises(InvalidRequest) as info:
        check_plan(plan_of(request_text))
    assert info.value.field in ("duration_s", "num_frames")


def test_files_given_beside_the_request_are_planned_like_markers():
    plan = check_plan(plan_of("Animate this photo: the leaves start to fall", media=("tree.png",)))
    assert plan.task is Task.IMAGE_TO_VIDEO
    assert [(m.path, m.role.value) for m in plan.inputs] == [("tree.png", FIRST)]


def test_a_user_typed_placeholder_does_not_confuse_the_file_positions():
    plan = check_plan(plan_of("Describe <IMGPAD> in ###a.png###"))
    assert plan.task is Task.IMAGE_UNDERSTANDING
    assert [m.path for m in plan.inputs] == ["a.png"]


def test_importing_the_rules_planner_does_not_import_torch():
    code = "import sys, engine.planners.rules; sys.exit('torch' in sys.modules)"
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root, check=False).returncode == 0


def test_every_task_row_is_planned_by_some_wording_or_deliberately_not():
    # A row the rules planner cannot reach must be declared (with why) in NOT_PLANNED; a row it
    # reaches must not be. REQUESTS holds, for each reachable row, a request it is planned from.
    from engine.planners.rules import NOT_PLANNED
    from engine.tasks import TASKS

    reached = {row[1] for row in REQUESTS}
    for task in TASKS:
        assert (task in reached) != (task in NOT_PLANNED), task
    assert all(reason.strip() for reason in NOT_PLANNED.values())


def test_a_task_without_worded_roles_gives_every_file_its_rows_first_role():
    # Roles come from the task row unless the wording decides them: three references, one source.
    refs = check_plan(plan_of("A picture featuring the people in ###a.png###, ###b.png### and ###c.png###"))
    assert refs.task is T.IMAGE_REFERENCE and [m.role.value for m in refs.inputs] == [REF, REF, REF]
    extend = check_plan(plan_of("Continue ###clip.mp4###"))
    assert extend.task is T.VIDEO_EXTEND and [m.role.value for m in extend.inputs] == [SRC]


def test_the_rules_planner_is_a_planner_and_returns_no_features():
    from engine.planners import Planner

    planner = RulesPlanner()
    assert isinstance(planner, Planner) and planner.name == "rules"
    out = planner(parse_request("Draw a cat."), want_features=True)
    assert out.plan == planner.plan(parse_request("Draw a cat.")) and out.features is None
    assert out.timings["plan_s"] >= 0

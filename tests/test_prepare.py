"""engine.tasks: every generation task turns its sources into exactly what WanVACEPipeline takes.

Sources are written into tmp dirs with the project's encoders; the grounding model is replaced
by a scripted function (the seam ``PrepContext.ground``), never by a model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.config import Limits
from engine.control import JobControl
from engine.errors import Cancelled, InputRefused, InvalidRequest
from engine.geometry import GREY
from engine.media import encode_mp4, encode_png
from engine.plan import CheckedPlan, CheckedQuestion, Margins, Plan, build_plan
from engine.prepare import PREPARERS, Prepared, PrepContext, prepare
from engine.region import interpolate_boxes, object_phrase
from engine.tasks import GENERATION_TASKS, TASKS
from engine.vocab import Role, Task

W, H = 64, 48
STEP = 4  # grey levels per frame index in coded videos
RED, BLUE = (220, 20, 20), (20, 20, 220)


def solid(path: Path, size: tuple[int, int], colour: tuple[int, int, int]) -> Path:
    w, h = size
    encode_png(path, np.full((h, w, 3), colour, np.uint8))
    return path


def coded_video(path: Path, n: int, fps: float, size: tuple[int, int] = (W, H)) -> Path:
    w, h = size
    encode_mp4(path, np.stack([np.full((h, w, 3), STEP * i, np.uint8) for i in range(n)]), fps)
    return path


def code(img: Image.Image) -> int:
    return round(float(np.asarray(img).mean()) / STEP)


def arr(img: Image.Image) -> np.ndarray:
    return np.asarray(img)


@pytest.fixture()
def prepare_opened(opened):
    """``prepare(plan, **context)`` with the plan's inputs opened as admission opens them."""

    def run(plan: Plan, **context) -> Prepared:
        return prepare(plan, PrepContext(limits=Limits(), sources=opened.sources(plan.inputs), **context))

    return run


def make_plan(task: Task, inputs=(), *, num_frames: int | None = None, **kw) -> Plan:
    fps = 16 if TASKS[task].output == "video" else None  # an image takes no frame rate
    if "control_kind" in TASKS[task].params:
        # The control inputs here are given as signals; extraction is tested in test_from_media.py.
        kw.setdefault("control_kind", "raw")
    return build_plan(task, "a test prompt", inputs, width=W, height=H, num_frames=num_frames, fps=fps, **kw)


def assert_vace_inputs(p: Prepared, n: int) -> None:
    """What the pipeline needs: n RGB frames and n binary "L" masks at the output size."""
    assert (p.width, p.height, p.num_frames) == (W, H, n)
    if p.video is not None:
        assert len(p.video) == n
        assert all(f.mode == "RGB" and f.size == (W, H) for f in p.video)
    if p.mask is not None:
        assert p.video is not None and len(p.mask) == n
        for m in p.mask:
            assert m.mode == "L" and m.size == (W, H)
            assert set(np.unique(arr(m))) <= {0, 255}
    for r in p.reference_images or []:
        assert r.mode == "RGB" and r.size == (W, H)


@pytest.fixture()
def files(tmp_path: Path) -> dict[str, Path]:
    half = np.zeros((96, 128), np.uint8)
    half[:, :64] = 200  # left half "regenerate", but not pure white: binarised at 128
    half[:, 64:] = 100
    encode_png(tmp_path / "mask.png", np.repeat(half[..., None], 3, axis=-1))
    return {
        "image": solid(tmp_path / "image.png", (128, 96), RED),
        "tall": solid(tmp_path / "tall.png", (24, 48), RED),
        "blue": solid(tmp_path / "blue.png", (W, H), BLUE),
        "mask": tmp_path / "mask.png",
        "video": coded_video(tmp_path / "video.mp4", 20, 16),
        "narrow_video": coded_video(tmp_path / "narrow.mp4", 20, 16, size=(32, 48)),
    }


def inputs_for(task: Task, f: dict[str, Path]) -> list[tuple[str, Role]]:
    return {
        Task.TEXT_TO_IMAGE: [],
        Task.TEXT_TO_VIDEO: [],
        Task.IMAGE_EDIT: [(f["image"], Role.SOURCE), (f["mask"], Role.MASK)],
        Task.IMAGE_CONTROL: [(f["image"], Role.CONTROL)],
        Task.IMAGE_REFERENCE: [(f["image"], Role.REFERENCE)],
        Task.VIDEO_REFERENCE: [(f["image"], Role.REFERENCE), (f["tall"], Role.REFERENCE)],
        Task.IMAGE_TO_VIDEO: [(f["image"], Role.FIRST_FRAME)],
        Task.FIRST_LAST_TO_VIDEO: [(f["image"], Role.FIRST_FRAME), (f["blue"], Role.LAST_FRAME)],
        Task.VIDEO_EDIT: [(f["video"], Role.SOURCE), (f["mask"], Role.MASK)],
        Task.VIDEO_CONTROL: [(f["video"], Role.CONTROL)],
        Task.IMAGE_OUTPAINT: [(f["tall"], Role.SOURCE)],
        Task.VIDEO_OUTPAINT: [(f["narrow_video"], Role.SOURCE)],
        Task.VIDEO_EXTEND: [(f["video"], Role.SOURCE)],
    }[task]


# ---------------------------------------------------------------------------------------------
# The table


def test_every_generation_task_has_a_preparer_and_no_understanding_task_does():
    assert {t for t, spec in TASKS.items() if spec.prepare is not None} == set(GENERATION_TASKS)


def test_every_preparation_a_row_names_exists_and_every_one_is_named_by_a_row():
    # The table names its preparation functions (it imports nothing of engine.prepare): a name
    # with no function, or a function no row names, is a slip this catches.
    named = {spec.prepare for spec in TASKS.values() if spec.prepare is not None}
    assert named == set(PREPARERS)
    assert all(callable(fn) and fn.__name__ == f"prepare_{name}" for name, fn in PREPARERS.items())


@pytest.mark.parametrize("task", sorted(GENERATION_TASKS, key=lambda t: t.value), ids=str)
def test_every_task_gives_frames_and_binary_masks_at_the_output_size(task: Task, files, prepare_opened):
    n = 1 if plan_is_image(task) else 17
    plan = make_plan(task, inputs_for(task, files), num_frames=None if n == 1 else n)
    # video_extend's frames are the new ones: its window also holds the 9 context frames (→ 29).
    assert_vace_inputs(prepare_opened(plan), 29 if task is Task.VIDEO_EXTEND else n)


def plan_is_image(task: Task) -> bool:
    return TASKS[task].output == "image"


def test_an_understanding_plan_checks_to_a_type_prepare_does_not_take():
    """prepare() takes a CheckedPlan and no longer checks at run time: an understanding plan checks
    to a CheckedQuestion, and its task's row has no preparation."""
    plan = build_plan(Task.TEXT_UNDERSTANDING, "why is the sky blue?")
    assert isinstance(plan, CheckedQuestion) and not isinstance(plan, CheckedPlan)
    assert plan.spec.prepare is None


def test_a_plan_that_was_not_checked_is_not_a_checked_plan_and_cannot_pass_for_one():
    plan = Plan(task=Task.TEXT_TO_VIDEO, prompt="a cat")
    assert not isinstance(plan, CheckedPlan)
    with pytest.raises(TypeError, match="made by check_plan only"):
        CheckedPlan(**plan.model_dump() | {"width": W, "height": H, "num_frames": 17, "fps": 16.0})


# ---------------------------------------------------------------------------------------------
# Per task


@pytest.mark.parametrize("task,n", [(Task.TEXT_TO_IMAGE, 1), (Task.TEXT_TO_VIDEO, 17)])
def test_text_only_tasks_leave_the_sources_to_the_pipeline(task: Task, n: int, prepare_opened):
    p = prepare_opened(make_plan(task, num_frames=None if n == 1 else n))
    assert (p.video, p.mask, p.reference_images) == (None, None, None)
    assert p.num_frames == n


def test_image_edit_binarises_the_mask_and_aligns_it_with_the_source(files, prepare_opened):
    p = prepare_opened(make_plan(Task.IMAGE_EDIT, inputs_for(Task.IMAGE_EDIT, files)))
    mask = arr(p.mask[0])
    assert (mask[:, : W // 2 - 1] == 255).all() and (mask[:, W // 2 + 1 :] == 0).all()
    frame = arr(p.video[0])
    # Kept half shows the source; the half to regenerate is grey, as VACE was trained.
    assert tuple(frame[24, 50]) == pytest.approx(RED, abs=2)
    assert tuple(frame[24, 10]) == (GREY, GREY, GREY)


def test_image_edit_stretches_a_mask_of_another_size_onto_the_source(files, tmp_path: Path, prepare_opened):
    small = np.zeros((24, 32, 3), np.uint8)
    small[:, :16] = 255
    encode_png(tmp_path / "small_mask.png", small)
    p = prepare_opened(
        make_plan(Task.IMAGE_EDIT, [(files["image"], Role.SOURCE), (tmp_path / "small_mask.png", "mask")])
    )
    mask = arr(p.mask[0])
    assert (mask[:, : W // 2 - 1] == 255).all() and (mask[:, W // 2 + 1 :] == 0).all()
    assert any("stretched" in n for n in p.notes)


def test_image_edit_with_an_all_black_mask_is_refused(files, tmp_path: Path, prepare_opened):
    black = solid(tmp_path / "black.png", (128, 96), (0, 0, 0))
    plan = make_plan(Task.IMAGE_EDIT, [(files["image"], Role.SOURCE), (black, Role.MASK)])
    with pytest.raises(InvalidRequest, match="black.png.*no white"):
        prepare_opened(plan)


@pytest.mark.parametrize("task,n", [(Task.IMAGE_REFERENCE, 1), (Task.VIDEO_REFERENCE, 9)])
def test_reference_images_are_letterboxed_on_white(task: Task, n: int, files, prepare_opened):
    plan = make_plan(task, [(files["tall"], Role.REFERENCE)], num_frames=None if n == 1 else n)
    p = prepare_opened(plan)
    assert p.video is None and p.mask is None and p.num_frames == n
    (ref,) = p.reference_images
    # 24×48 fits as 24×48 in the middle of 64×48: white bars left and right.
    assert ref.getpixel((5, 24)) == (255, 255, 255) and ref.getpixel((58, 24)) == (255, 255, 255)
    assert ref.getpixel((32, 24)) == pytest.approx(RED, abs=2)


def test_up_to_three_reference_images_are_kept_in_order(files, prepare_opened):
    refs = [
        (files["image"], Role.REFERENCE),
        (files["blue"], Role.REFERENCE),
        (files["tall"], Role.REFERENCE),
    ]
    p = prepare_opened(make_plan(Task.IMAGE_REFERENCE, refs))
    assert len(p.reference_images) == 3
    assert p.reference_images[1].getpixel((32, 24)) == pytest.approx(BLUE, abs=2)


@pytest.mark.parametrize("role,given", [(Role.FIRST_FRAME, 0), (Role.LAST_FRAME, 8)])
def test_image_to_video_fixes_the_given_end_and_masks_the_rest(role: Role, given: int, files, prepare_opened):
    p = prepare_opened(make_plan(Task.IMAGE_TO_VIDEO, [(files["image"], role)], num_frames=9))
    assert_vace_inputs(p, 9)
    for i in range(9):
        if i == given:
            assert (arr(p.mask[i]) == 0).all()
            assert arr(p.video[i])[24, 32] == pytest.approx(RED, abs=2)
        else:
            assert (arr(p.mask[i]) == 255).all()
            assert (arr(p.video[i]) == GREY).all()


def test_first_last_to_video_fixes_both_ends(files, prepare_opened):
    p = prepare_opened(
        make_plan(Task.FIRST_LAST_TO_VIDEO, inputs_for(Task.FIRST_LAST_TO_VIDEO, files), num_frames=9)
    )
    assert [int(arr(m).max()) for m in p.mask] == [0] + [255] * 7 + [0]
    assert arr(p.video[0])[0, 0] == pytest.approx(RED, abs=2)
    assert arr(p.video[8])[0, 0] == pytest.approx(BLUE, abs=2)


def test_image_control_is_a_one_frame_control_input_to_generate_whole(files, prepare_opened):
    p = prepare_opened(make_plan(Task.IMAGE_CONTROL, inputs_for(Task.IMAGE_CONTROL, files)))
    assert_vace_inputs(p, 1)
    assert (arr(p.mask[0]) == 255).all()
    assert arr(p.video[0])[24, 32] == pytest.approx(RED, abs=2)


def test_video_control_resamples_the_control_video_to_the_plan(tmp_path: Path, prepare_opened):
    video = coded_video(tmp_path / "pose.mp4", 60, 30)  # 2 s at 30 fps
    p = prepare_opened(make_plan(Task.VIDEO_CONTROL, [(video, Role.CONTROL)], num_frames=33))
    assert_vace_inputs(p, 33)
    assert all((arr(m) == 255).all() for m in p.mask)
    assert [code(f) for f in p.video[:5]] == [0, 2, 4, 6, 7]  # nearest frames at 16 fps
    assert any("padded to 33" in n for n in p.notes)


# ---------------------------------------------------------------------------------------------
# Video editing


def test_a_mask_image_is_applied_to_every_frame_of_the_source_video(files, prepare_opened):
    p = prepare_opened(make_plan(Task.VIDEO_EDIT, inputs_for(Task.VIDEO_EDIT, files), num_frames=9))
    assert_vace_inputs(p, 9)
    left, right = slice(0, W // 2 - 1), slice(W // 2 + 1, W)
    for i, (frame, mask) in enumerate(zip(p.video, p.mask, strict=True)):
        m = arr(mask)
        assert (m[:, left] == 255).all() and (m[:, right] == 0).all()
        assert (arr(frame)[:, left] == GREY).all()
        assert round(float(arr(frame)[:, right].mean()) / STEP) == i  # source kept where mask is 0


def test_a_mask_video_is_resampled_like_the_source(tmp_path: Path, prepare_opened):
    source = coded_video(tmp_path / "src.mp4", 60, 30)
    frames = np.zeros((60, H, W, 3), np.uint8)
    frames[15:] = 255  # regenerate from 0.5 s on
    encode_mp4(tmp_path / "mask.mp4", frames, 30)
    plan = make_plan(
        Task.VIDEO_EDIT, [(source, Role.SOURCE), (tmp_path / "mask.mp4", Role.MASK)], num_frames=17
    )
    p = prepare_opened(plan)
    assert_vace_inputs(p, 17)
    # At 16 fps frame k shows source frame ≈ k·30/16, so frames from k = 8 (source 15) are white.
    whites = [bool((arr(m) == 255).all()) for m in p.mask]
    assert whites == [False] * 8 + [True] * 9
    assert all((arr(m) == 0).all() for m in p.mask[:8])


def test_a_mask_video_of_the_sources_size_stays_aligned_when_the_output_crops_the_source(
    tmp_path: Path, prepare_opened
):
    # Source 96×48 into a 48×48 output: the cover-crop keeps source columns 24..72. A mask band
    # at source columns 40..56 must land on output columns 16..32, exactly where those pixels go.
    encode_mp4(tmp_path / "src.mp4", np.full((9, 48, 96, 3), 100, np.uint8), 16)
    band = np.zeros((9, 48, 96, 3), np.uint8)
    band[:, :, 40:56] = 255
    encode_mp4(tmp_path / "mask.mp4", band, 16)
    plan = build_plan(
        Task.VIDEO_EDIT,
        "a red car",
        [(tmp_path / "src.mp4", Role.SOURCE), (tmp_path / "mask.mp4", Role.MASK)],
        width=48,
        height=48,
        num_frames=9,
        fps=16,
    )
    p = prepare_opened(plan)
    for mask in p.mask:
        white = np.nonzero(arr(mask)[24] == 255)[0]
        # H.264 may soften the band's edges by a pixel; a re-stretched mask is 8 px off each side.
        assert abs(int(white.min()) - 16) <= 1 and abs(int(white.max()) - 31) <= 1


def scripted_ground(boxes_by_call: list[list[tuple[float, float, float, float]]]):
    """A stand-in for the planner's grounding: answers from a script and records its calls."""
    calls: list[tuple[tuple[int, int], str, int]] = []

    def ground(image: Image.Image, phrase: str):
        calls.append((image.size, phrase, code(image)))
        return boxes_by_call[len(calls) - 1]

    return ground, calls


def test_without_a_mask_the_named_object_is_grounded_and_its_boxes_interpolated(
    tmp_path: Path, prepare_opened
):
    source = coded_video(tmp_path / "src.mp4", 9, 16)
    plan = build_plan(
        Task.VIDEO_EDIT,
        "Replace the red car with a blue truck",
        [(source, Role.SOURCE)],
        width=W,
        height=H,
        num_frames=9,
        fps=16,
    )
    # Key frames 0, 3, 5, 8; the car moves 5 px right per frame, 10 px wide, rows 20-30.
    ground, calls = scripted_ground([[(5.0 * k, 20.0, 5.0 * k + 10, 30.0)] for k in (0, 3, 5, 8)])
    p = prepare_opened(plan, ground=ground)
    assert_vace_inputs(p, 9)
    assert [c[1] for c in calls] == ["red car"] * 4
    assert [c[2] for c in calls] == [0, 3, 5, 8] and all(c[0] == (W, H) for c in calls)
    # Frame 4 was not grounded: its box is interpolated to x 20-30, dilated by 4 px on each side.
    m = arr(p.mask[4])
    assert (m[16:34, 16:34] == 255).all()
    assert (m[:, :15] == 0).all() and (m[:, 35:] == 0).all() and (m[:15] == 0).all() and (m[35:] == 0).all()
    assert (arr(p.video[4])[20:30, 20:30] == GREY).all()
    assert any("red car" in n for n in p.notes)


def test_key_frames_where_nothing_is_found_are_bridged(tmp_path: Path, prepare_opened):
    source = coded_video(tmp_path / "src.mp4", 9, 16)
    plan = make_plan(Task.VIDEO_EDIT, [(source, Role.SOURCE)], num_frames=9)
    # Key frames 0, 3, 5, 8: found on the first and the last only.
    ground, _ = scripted_ground([[(0, 0, 10, 10)], [], [], [(30, 0, 40, 10)]])
    p = prepare_opened(plan, ground=ground)
    row = arr(p.mask[4])[5]  # halfway: x 15-25, dilated by 4 px
    assert (row[11:29] == 255).all() and (row[:10] == 0).all() and (row[30:] == 0).all()
    row = arr(p.mask[8])[5]
    assert (row[26:44] == 255).all() and (row[:25] == 0).all()


def test_without_a_mask_and_without_grounding_editing_is_refused(tmp_path: Path, prepare_opened):
    plan = make_plan(Task.VIDEO_EDIT, [(coded_video(tmp_path / "v.mp4", 9, 16), Role.SOURCE)], num_frames=9)
    with pytest.raises(InvalidRequest, match="give a mask"):
        prepare_opened(plan)


def test_when_grounding_finds_nothing_editing_is_refused_naming_the_phrase(tmp_path: Path, prepare_opened):
    source = coded_video(tmp_path / "v.mp4", 9, 16)
    plan = build_plan(
        Task.VIDEO_EDIT, "remove the dog", [(source, Role.SOURCE)], width=W, height=H, num_frames=9
    )
    ground, _ = scripted_ground([[], [(5, 5, 5, 5)], [], [(float("nan"), 0, 1, 1)]])  # empty, degenerate, bad
    with pytest.raises(InvalidRequest, match="no region matching 'dog'.*give a mask"):
        prepare_opened(plan, ground=ground)


def test_boxes_matched_by_count_move_separately_and_otherwise_merge():
    two = {0: [(0, 0, 10, 10), (40, 0, 50, 10)], 4: [(10, 0, 20, 10), (50, 0, 60, 10)]}
    assert interpolate_boxes(two, 5)[2] == [(5, 0, 15, 10), (45, 0, 55, 10)]
    mixed = {0: [(0, 0, 10, 10), (40, 0, 50, 10)], 2: [(0, 0, 10, 10)]}
    assert interpolate_boxes(mixed, 3)[0] == [(0, 0, 50, 10)]
    assert interpolate_boxes(mixed, 3)[2] == [(0, 0, 10, 10)]


@pytest.mark.parametrize(
    "prompt,phrase",
    [
        ("replace the red car with a blue truck", "red car"),
        ("Remove the dog from the video.", "dog"),
        ("make the sky purple", "sky"),
        ("change the colour of the car to red", "car"),
        ("turn the man into a robot", "man"),
        ("a quiet beach at sunset", None),
    ],
)
def test_the_object_to_edit_is_read_from_the_prompt(prompt: str, phrase: str | None):
    assert object_phrase(prompt) == phrase


# ---------------------------------------------------------------------------------------------
# Outpainting and extension


def test_image_outpaint_places_the_source_inside_the_margins_and_masks_only_the_new_area(
    files, prepare_opened
):
    margins = Margins(left=16, top=8, right=0, bottom=8)
    p = prepare_opened(make_plan(Task.IMAGE_OUTPAINT, [(files["blue"], Role.SOURCE)], margins=margins))
    assert_vace_inputs(p, 1)
    mask, frame = arr(p.mask[0]), arr(p.video[0])
    assert (mask[8:40, 16:] == 0).all()
    assert (mask[:8] == 255).all() and (mask[40:] == 255).all() and (mask[:, :16] == 255).all()
    assert frame[24, 40] == pytest.approx(BLUE, abs=2) and (frame[:8] == GREY).all()


def test_image_outpaint_without_margins_fits_the_source_in_the_centre(files, prepare_opened):
    p = prepare_opened(make_plan(Task.IMAGE_OUTPAINT, [(files["tall"], Role.SOURCE)]))
    mask = arr(p.mask[0])
    assert (mask[:, 20:44] == 0).all() and (mask[:, :20] == 255).all() and (mask[:, 44:] == 255).all()


def test_outpainting_a_source_that_already_fills_the_output_is_refused(files, prepare_opened):
    with pytest.raises(InvalidRequest, match="nothing to outpaint"):
        prepare_opened(make_plan(Task.IMAGE_OUTPAINT, [(files["blue"], Role.SOURCE)]))


def test_video_outpaint_masks_the_margins_on_every_frame(files, prepare_opened):
    margins = Margins(left=0, top=0, right=32, bottom=0)
    p = prepare_opened(
        make_plan(Task.VIDEO_OUTPAINT, [(files["video"], Role.SOURCE)], num_frames=9, margins=margins)
    )
    assert_vace_inputs(p, 9)
    for i, (frame, mask) in enumerate(zip(p.video, p.mask, strict=True)):
        assert (arr(mask)[:, :32] == 0).all() and (arr(mask)[:, 32:] == 255).all()
        assert round(float(arr(frame)[:, :32].mean()) / STEP) == i


def test_video_extend_opens_with_the_sources_last_frames_and_generates_the_new_ones(files, prepare_opened):
    # 17 new frames after 5 of context: a 25-frame window (4k+1), its last 3 frames dropped later.
    plan = make_plan(Task.VIDEO_EXTEND, [(files["video"], Role.SOURCE)], num_frames=17, context_frames=5)
    p = prepare_opened(plan)
    assert_vace_inputs(p, 25)
    assert p.context == 5
    assert [code(f) for f in p.video[:5]] == [15, 16, 17, 18, 19]  # the 20-frame source's last 5
    assert all((arr(f) == GREY).all() for f in p.video[5:])
    assert [int(arr(m).max()) for m in p.mask] == [0] * 5 + [255] * 20
    # The whole source comes back as the start of the output.
    assert [code(f) for f in p.prefix] == list(range(20))
    assert not any("gave only" in n for n in p.notes)


def test_video_extend_with_a_short_source_uses_fewer_context_frames(tmp_path: Path, prepare_opened):
    short = coded_video(tmp_path / "short.mp4", 3, 16)
    p = prepare_opened(make_plan(Task.VIDEO_EXTEND, [(short, Role.SOURCE)], num_frames=9, context_frames=5))
    assert [int(arr(m).max()) for m in p.mask] == [0] * 3 + [255] * 10  # 3 + 9 → 13 frames
    assert any("only 3 frames, fewer than the 5 context frames" in n for n in p.notes)


# ---------------------------------------------------------------------------------------------
# Bad inputs and cancellation


def test_a_missing_source_image_is_refused(tmp_path: Path, files, prepare_opened):
    plan = make_plan(Task.IMAGE_EDIT, [(tmp_path / "gone.png", Role.SOURCE), (files["mask"], Role.MASK)])
    with pytest.raises(InputRefused, match=r"gone\.png': no such file"):
        prepare_opened(plan)


def test_an_input_that_was_not_opened_is_refused_not_read_by_its_path(files):
    plan = make_plan(Task.IMAGE_REFERENCE, [(files["image"], Role.REFERENCE)])
    with pytest.raises(InputRefused, match=r"image\.png' was not admitted with the request"):
        prepare(plan, PrepContext(limits=Limits()))


def test_a_corrupt_source_video_is_refused(tmp_path: Path, prepare_opened):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video" * 50)
    with pytest.raises(InputRefused, match="bad.mp4"):
        prepare_opened(make_plan(Task.VIDEO_CONTROL, [(bad, Role.CONTROL)], num_frames=9))


def test_a_reference_image_bomb_is_refused(tmp_path: Path, prepare_opened):
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # A PNG whose header declares 10000×10000 pixels but which holds almost nothing.
    bomb = tmp_path / "bomb.png"
    ihdr = struct.pack(">IIBBBBB", 10_000, 10_000, 8, 2, 0, 0, 0)
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    with pytest.raises(InputRefused, match="bomb.png.*limit"):
        prepare_opened(make_plan(Task.IMAGE_REFERENCE, [(bomb, Role.REFERENCE)]))


def test_a_cancelled_job_stops_before_decoding(files, prepare_opened):
    control = JobControl()
    control.cancel()
    with pytest.raises(Cancelled):
        prepare_opened(
            make_plan(Task.VIDEO_CONTROL, [(files["video"], Role.CONTROL)], num_frames=9), control=control
        )


def test_masks_made_from_rgb_arrays_equal_pillows_grey_thresholded():
    from engine.geometry import binarize
    from engine.prepare import MASK_THRESHOLD, binary_masks

    rng = np.random.default_rng(5)
    frames = rng.integers(0, 256, (3, 17, 23, 3), dtype=np.uint8)
    # Many pixels whose luma lies on either side of the threshold, where rounding would show.
    near = rng.integers(96, 160, (2, 17, 23, 3), dtype=np.uint8)
    frames = np.concatenate([frames, near])
    frames[0, 0, :4] = [
        [127, 128, 128],
        [128, 127, 128],
        [128, 128, 127],
        [128, 128, 128],
    ]  # at the threshold
    got = binary_masks(frames)
    for f, m in zip(frames, got, strict=True):
        want = binarize(Image.fromarray(f).convert("L"), MASK_THRESHOLD)
        assert m.mode == "L" and np.array_equal(np.asarray(m), np.asarray(want))

"""Plans: the typed form of a request, the Unison token grammar, and validation in one place.

A :class:`Plan` is what every planner backend produces and what the generator consumes. The
Unison planner writes it as text with 14 special tokens (``../shared/UNISON.md``);
:func:`parse_unison` and :func:`format_unison` convert between the two. :func:`check_plan` holds
every rule of the generator (sizes, frame counts, which inputs each task needs) so that a bad
request fails before any model work, with a message naming the field, the value and the rule.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from .config import Limits
from .errors import InvalidRequest, PlannerError

log = logging.getLogger(__name__)


class Task(str, Enum):
    TEXT_UNDERSTANDING = "text_understanding"
    IMAGE_UNDERSTANDING = "image_understanding"
    VIDEO_UNDERSTANDING = "video_understanding"
    TEXT_TO_IMAGE = "text_to_image"
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_EDIT = "image_edit"
    IMAGE_CONTROL = "image_control"
    IMAGE_REFERENCE = "image_reference"
    IMAGE_TO_VIDEO = "image_to_video"
    VIDEO_REFERENCE = "video_reference"
    VIDEO_EDIT = "video_edit"
    VIDEO_CONTROL = "video_control"
    # Beyond the reference release:
    FIRST_LAST_TO_VIDEO = "first_last_to_video"
    IMAGE_OUTPAINT = "image_outpaint"
    VIDEO_OUTPAINT = "video_outpaint"
    VIDEO_EXTEND = "video_extend"

    def __str__(self) -> str:  # so f-strings show "image_edit", not "Task.IMAGE_EDIT"
        return self.value


class Role(str, Enum):
    QUERY = "query"
    SOURCE = "source"
    MASK = "mask"
    REFERENCE = "reference"
    CONTROL = "control"
    FIRST_FRAME = "first_frame"
    LAST_FRAME = "last_frame"

    def __str__(self) -> str:
        return self.value


class MediaKind(str, Enum):
    IMAGE = "image"
    VIDEO = "video"

    def __str__(self) -> str:
        return self.value


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv")


def media_kind(path: str | Path) -> MediaKind:
    """The kind of a file from its extension; an unknown extension is an error naming the choices."""
    suffix = Path(str(path)).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return MediaKind.IMAGE
    if suffix in VIDEO_EXTENSIONS:
        return MediaKind.VIDEO
    raise InvalidRequest.for_field(
        "path",
        str(path),
        f"unsupported file type {suffix or '(none)'!r}; images: {', '.join(IMAGE_EXTENSIONS)}; "
        f"videos: {', '.join(VIDEO_EXTENSIONS)}",
    )


class MediaInput(BaseModel):
    """One input file and what it is for."""

    model_config = ConfigDict(frozen=True)

    path: str
    kind: MediaKind
    role: Role


class Margins(BaseModel):
    """Outpainting margins in output pixels."""

    model_config = ConfigDict(frozen=True)

    left: int = Field(0, ge=0)
    top: int = Field(0, ge=0)
    right: int = Field(0, ge=0)
    bottom: int = Field(0, ge=0)


class Plan(BaseModel):
    """What to do: the task, the prompt, the inputs with their roles, and the output's shape.

    ``width``, ``height`` and ``num_frames`` are ``None`` for understanding tasks. ``raw`` is the
    planner's own text (Unison tokens, JSON, or ``None`` for a plan built from typed parameters).
    ``notes`` lists harmless adjustments made during normalisation (rounding), for the result.
    """

    task: Task
    prompt: str
    inputs: list[MediaInput] = Field(default_factory=list)
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    fps: float | None = None
    margins: Margins | None = None
    context_frames: int | None = None
    raw: str | None = None
    notes: list[str] = Field(default_factory=list)

    def by_role(self, role: Role) -> list[MediaInput]:
        return [m for m in self.inputs if m.role == role]

    def one(self, role: Role) -> MediaInput:
        found = self.by_role(role)
        if len(found) != 1:
            raise InvalidRequest.for_field(
                "inputs", [m.path for m in found], f"expected exactly one {role} input"
            )
        return found[0]

    @property
    def spec(self) -> TaskSpec:
        return TASKS[self.task]

    def summary(self) -> dict:
        """The plan as the CLI and the ``auto`` tool show it."""
        return {
            "task": self.task.value,
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "num_frames": self.num_frames,
            "inputs": [{"path": m.path, "kind": m.kind.value, "role": m.role.value} for m in self.inputs],
        }


# ---------------------------------------------------------------------------------------------
# The task table: what each task produces and which inputs it takes.


@dataclass(frozen=True)
class RoleRule:
    role: Role
    kinds: tuple[MediaKind, ...]
    min: int = 1
    max: int = 1


@dataclass(frozen=True)
class TaskSpec:
    task: Task
    output: str  # "text" | "image" | "video"
    roles: tuple[RoleRule, ...]
    summary: str

    @property
    def understanding(self) -> bool:
        return self.output == "text"


_I = (MediaKind.IMAGE,)
_V = (MediaKind.VIDEO,)
_IV = (MediaKind.IMAGE, MediaKind.VIDEO)

TASKS: dict[Task, TaskSpec] = {
    s.task: s
    for s in (
        TaskSpec(Task.TEXT_UNDERSTANDING, "text", (), "answer a question from text alone"),
        TaskSpec(
            Task.IMAGE_UNDERSTANDING, "text", (RoleRule(Role.QUERY, _I, 1, 8),), "answer about 1-8 images"
        ),
        TaskSpec(
            Task.VIDEO_UNDERSTANDING,
            "text",
            (RoleRule(Role.QUERY, _IV, 1, 8),),
            "answer about a video (images may accompany it)",
        ),
        TaskSpec(Task.TEXT_TO_IMAGE, "image", (), "create an image from text"),
        TaskSpec(Task.TEXT_TO_VIDEO, "video", (), "create a video from text"),
        TaskSpec(
            Task.IMAGE_EDIT,
            "image",
            (RoleRule(Role.SOURCE, _I), RoleRule(Role.MASK, _I)),
            "repaint the white area of `mask` in `source`",
        ),
        TaskSpec(
            Task.IMAGE_CONTROL,
            "image",
            (RoleRule(Role.CONTROL, _I),),
            "create an image following a control image (pose, depth, edges)",
        ),
        TaskSpec(
            Task.IMAGE_REFERENCE,
            "image",
            (RoleRule(Role.REFERENCE, _I, 1, 3),),
            "create an image of the subject(s)/face(s) in 1-3 reference images",
        ),
        TaskSpec(
            Task.IMAGE_TO_VIDEO,
            "video",
            (RoleRule(Role.FIRST_FRAME, _I, 0, 1), RoleRule(Role.LAST_FRAME, _I, 0, 1)),
            "animate an image given as the first or the last frame",
        ),
        TaskSpec(
            Task.FIRST_LAST_TO_VIDEO,
            "video",
            (RoleRule(Role.FIRST_FRAME, _I), RoleRule(Role.LAST_FRAME, _I)),
            "a video that starts at one image and ends at another",
        ),
        TaskSpec(
            Task.VIDEO_REFERENCE,
            "video",
            (RoleRule(Role.REFERENCE, _I, 1, 3),),
            "create a video of the subject(s) in 1-3 reference images",
        ),
        TaskSpec(
            Task.VIDEO_EDIT,
            "video",
            (RoleRule(Role.SOURCE, _V), RoleRule(Role.MASK, _IV, 0, 1)),
            "repaint a region of `source` video: the white area of `mask` (video, or image for every "
            "frame), or the object named in the prompt when no mask is given",
        ),
        TaskSpec(
            Task.VIDEO_CONTROL,
            "video",
            (RoleRule(Role.CONTROL, _V),),
            "create a video following a control video (pose, depth, edges) already extracted",
        ),
        TaskSpec(
            Task.IMAGE_OUTPAINT,
            "image",
            (RoleRule(Role.SOURCE, _I),),
            "extend an image's canvas by margins or to a larger size",
        ),
        TaskSpec(
            Task.VIDEO_OUTPAINT,
            "video",
            (RoleRule(Role.SOURCE, _V),),
            "extend a video's canvas by margins or to a larger size",
        ),
        TaskSpec(
            Task.VIDEO_EXTEND,
            "video",
            (RoleRule(Role.SOURCE, _V),),
            "continue a clip from its last frames",
        ),
    )
}

UNDERSTANDING_TASKS = frozenset(t for t, s in TASKS.items() if s.understanding)
GENERATION_TASKS = frozenset(t for t, s in TASKS.items() if not s.understanding)


# ---------------------------------------------------------------------------------------------
# Limits and normalisation.


DEFAULT_WIDTH, DEFAULT_HEIGHT = 832, 480
DEFAULT_VIDEO_FRAMES = 81
DEFAULT_FPS = 16.0
DEFAULT_CONTEXT_FRAMES = 9


def round16(value: int) -> int:
    """The nearest multiple of 16, ties up (``round`` would send ties to the even multiple: 1000
    to 992 but 1048 to 1056); never below 16."""
    return max(16, (int(value) + 8) // 16 * 16)


def nearest_4k1(n: int) -> int:
    """The nearest frame count of the form 4k+1 (ties go up)."""
    # Integer arithmetic: a request may spell out a count far beyond a float (check_plan then
    # refuses it by name); (n - 1) / 4 would overflow or round.
    return max(1, 4 * ((int(n) + 1) // 4) + 1)


def frames_for_seconds(seconds: float, fps: float = DEFAULT_FPS) -> int:
    """`seconds` of video at `fps`, as Wan needs it: 16·N+1 at 16 fps, normalised to 4k+1.

    Raises :class:`InvalidRequest` for a rate or a duration that is not a finite number (``round``
    of an infinity or a NaN would otherwise escape as a bare OverflowError/ValueError).
    """
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidRequest.for_field("fps", fps, "must be a finite number above 0")
    if not math.isfinite(seconds * fps):
        raise InvalidRequest.for_field("duration_s", seconds, "must be a finite number of seconds")
    return nearest_4k1(int(round(seconds * fps)) + 1)


def check_plan(plan: Plan, limits: Limits | None = None) -> Plan:
    """Validate and normalise a plan against the generator's rules; return the normalised copy.

    Width and height are rounded to multiples of 16 (recorded in ``notes``); everything else that
    breaks a rule raises :class:`InvalidRequest` naming the field, the value and the rule.
    """
    limits = limits or Limits()
    spec = TASKS[plan.task]
    notes = list(plan.notes)
    update: dict = {}

    if len(plan.prompt) > limits.max_prompt_chars:
        raise InvalidRequest.for_field(
            "prompt", f"{len(plan.prompt)} characters", f"at most {limits.max_prompt_chars} characters"
        )
    if len(plan.inputs) > limits.max_inputs:
        raise InvalidRequest.for_field("inputs", len(plan.inputs), f"at most {limits.max_inputs} input files")
    check_roles(plan)

    if spec.understanding:
        update.update(width=None, height=None, num_frames=None, fps=None)
        return plan.model_copy(update=update)

    # Output size: defaults, then rounding to multiples of 16, then bounds.
    for name, default in (("width", limits.default_width), ("height", limits.default_height)):
        value = getattr(plan, name)
        if value is None:
            value = default
        if not isinstance(value, int) or value <= 0:
            raise InvalidRequest.for_field(name, value, "must be a positive whole number of pixels")
        rounded = round16(value)
        if rounded != value:
            notes.append(f"{name} {value} rounded to {rounded} (multiple of 16)")
            log.warning("%s %d rounded to %d (multiple of 16)", name, value, rounded)
        if not limits.min_side <= rounded <= limits.max_side:
            raise InvalidRequest.for_field(
                name, value, f"must be between {limits.min_side} and {limits.max_side} pixels"
            )
        update[name] = rounded
    if update["width"] * update["height"] > limits.max_pixels:
        raise InvalidRequest.for_field(
            "width×height",
            f"{update['width']}×{update['height']}",
            f"at most {limits.max_pixels} pixels per frame (e.g. 1280×720)",
        )

    # Frame count: 1 for images, 4k+1 within bounds for video.
    if spec.output == "image":
        if plan.num_frames not in (None, 1):
            raise InvalidRequest.for_field(
                "num_frames", plan.num_frames, f"{plan.task} makes one image: use 1"
            )
        update["num_frames"] = 1
    else:
        n = limits.default_frames if plan.num_frames is None else plan.num_frames
        rule = f"must be 4k+1 between {limits.min_frames} and {limits.max_frames} (e.g. 17, 33, 49, 81)"
        if not isinstance(n, int) or n % 4 != 1 or not limits.min_frames <= n <= limits.max_frames:
            raise InvalidRequest.for_field("num_frames", n, rule)
        update["num_frames"] = n

    fps = limits.default_fps if plan.fps is None else plan.fps
    if not 0 < fps <= limits.max_fps:
        raise InvalidRequest.for_field("fps", fps, f"must be above 0 and at most {limits.max_fps}")
    update["fps"] = float(fps)

    if plan.task in (Task.IMAGE_OUTPAINT, Task.VIDEO_OUTPAINT) and plan.margins is not None:
        m = plan.margins
        if m.left + m.right >= update["width"] or m.top + m.bottom >= update["height"]:
            raise InvalidRequest.for_field(
                "margins",
                m.model_dump(),
                f"must leave room for the source inside the {update['width']}×{update['height']} output",
            )
    if plan.task is Task.VIDEO_EXTEND:
        c = DEFAULT_CONTEXT_FRAMES if plan.context_frames is None else plan.context_frames
        if not 1 <= c < update["num_frames"]:
            raise InvalidRequest.for_field(
                "context_frames", c, f"must be at least 1 and below num_frames ({update['num_frames']})"
            )
        update["context_frames"] = c
    update["notes"] = notes
    return plan.model_copy(update=update)


def check_roles(plan: Plan) -> None:
    """Check that the plan's inputs fit its task: each role allowed, of the right kind, counted.

    The part of :func:`check_plan` that depends only on the task and the inputs (planners use it
    to tell whether a reading of a request is possible). Raises :class:`InvalidRequest`.
    """
    spec = TASKS[plan.task]
    allowed = {r.role: r for r in spec.roles}
    for i, m in enumerate(plan.inputs):
        rule = allowed.get(m.role)
        if rule is None:
            expected = ", ".join(r.role.value for r in spec.roles) or "no input files"
            raise InvalidRequest.for_field(f"inputs[{i}].role", m.role.value, f"{plan.task} takes {expected}")
        if m.kind not in rule.kinds:
            raise InvalidRequest.for_field(
                f"inputs[{i}]",
                f"{m.path} ({m.kind.value})",
                f"the {m.role.value} of {plan.task} must be "
                + " or ".join(
                    f"an {k.value}" if k is MediaKind.IMAGE else f"a {k.value}" for k in rule.kinds
                ),
            )
    for rule in spec.roles:
        n = len(plan.by_role(rule.role))
        if not rule.min <= n <= rule.max:
            want = str(rule.min) if rule.min == rule.max else f"{rule.min} to {rule.max}"
            raise InvalidRequest.for_field(
                rule.role.value, n, f"{plan.task} needs {want} {rule.role.value} input(s)"
            )
    if plan.task is Task.IMAGE_TO_VIDEO and len(plan.inputs) != 1:
        raise InvalidRequest.for_field(
            "inputs",
            len(plan.inputs),
            "image_to_video needs exactly one image, as first_frame or last_frame "
            "(both ends: use first_last_to_video)",
        )
    if plan.task is Task.VIDEO_UNDERSTANDING and not any(m.kind is MediaKind.VIDEO for m in plan.inputs):
        raise InvalidRequest.for_field(
            "inputs", [m.path for m in plan.inputs], "video_understanding needs a video"
        )


def build_plan(
    task: Task | str,
    prompt: str,
    inputs: Sequence[tuple[str, Role | str]] = (),
    *,
    width: int | None = None,
    height: int | None = None,
    num_frames: int | None = None,
    duration_s: float | None = None,
    fps: float | None = None,
    margins: Margins | None = None,
    context_frames: int | None = None,
    limits: Limits | None = None,
) -> Plan:
    """A validated plan from typed parameters (the ``generate`` tool and CLI)."""
    try:
        task = Task(task)
    except ValueError:
        raise InvalidRequest.for_field(
            "task", task, "unknown task; one of " + ", ".join(t.value for t in Task)
        ) from None
    media = []
    for path, role in inputs:
        try:
            role = Role(role)
        except ValueError:
            raise InvalidRequest.for_field(
                "role", role, "one of " + ", ".join(r.value for r in Role)
            ) from None
        media.append(MediaInput(path=str(path), kind=media_kind(path), role=role))
    if duration_s is not None:
        if num_frames is not None:
            raise InvalidRequest.for_field(
                "duration_s", duration_s, "give num_frames or duration_s, not both"
            )
        if not duration_s > 0:
            raise InvalidRequest.for_field("duration_s", duration_s, "must be above 0 seconds")
        if TASKS[task].output != "video":
            # Said here rather than as a num_frames error the caller never set.
            raise InvalidRequest.for_field("duration_s", duration_s, f"{task} does not make a video")
        num_frames = frames_for_seconds(duration_s, fps or (limits or Limits()).default_fps)
    plan = Plan(
        task=task,
        prompt=prompt,
        inputs=media,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        margins=margins,
        context_frames=context_frames,
    )
    return check_plan(plan, limits)


# ---------------------------------------------------------------------------------------------
# The request convention: ###path### markers.

IMGPAD = "<IMGPAD>"
VIDPAD = "<VIDPAD>"
_MARKER = re.compile(r"###(.+?)###", re.DOTALL)


@dataclass(frozen=True)
class Request:
    """A free-form request with its input files, ready for a planner.

    ``text`` is what the planner reads (markers replaced by ``<IMGPAD>``/``<VIDPAD>``), ``prompt``
    is the same text without placeholders (what the generator is conditioned on), ``media`` are
    the files numbered 0, 1, … in order of appearance.
    """

    text: str
    prompt: str
    media: tuple[tuple[str, MediaKind], ...]

    @property
    def kinds(self) -> tuple[MediaKind, ...]:
        return tuple(k for _, k in self.media)


def parse_request(request: str, media: Sequence[str] = ()) -> Request:
    """Split a request into planner text, clean prompt and numbered inputs.

    ``###path###`` markers are numbered in order of appearance; files given separately in
    ``media`` follow them, and their placeholders are appended to the planner text.
    """
    found: list[tuple[str, MediaKind]] = []

    def pad(match: re.Match) -> str:
        path = match.group(1).strip()
        kind = media_kind(path)
        found.append((path, kind))
        return IMGPAD if kind is MediaKind.IMAGE else VIDPAD

    text = _MARKER.sub(pad, request)
    extra = [(str(p), media_kind(p)) for p in media]
    if extra:
        text = text.rstrip() + " " + "".join(IMGPAD if k is MediaKind.IMAGE else VIDPAD for _, k in extra)
    found.extend(extra)
    prompt = _MARKER.sub(" ", request)
    prompt = re.sub(r"\s+", " ", prompt).strip()
    prompt = re.sub(r"\s+([,.;:!?])", r"\1", prompt)
    return Request(text=text.strip(), prompt=prompt, media=tuple(found))


# ---------------------------------------------------------------------------------------------
# The Unison grammar.

CFI, CFV = "<CFI>", "<CFV>"
BORES, EORES = "<BORES>", "<EORES>"
BONF, EONF = "<BONF>", "<EONF>"
BOFIDX, EOFIDX = "<BOFIDX>", "<EOFIDX>"
REF, CTRL = "<REF>", "<CTRL>"
BOEDIT, EOEDIT = "<BOEDIT>", "<EOEDIT>"

#: The 14 special tokens the Unison LoRA adds to the tokenizer, in a fixed order.
UNISON_TOKENS: tuple[str, ...] = (
    CFI, CFV, BORES, EORES, BONF, EONF, BOFIDX, EOFIDX, REF, CTRL, BOEDIT, EOEDIT, IMGPAD, VIDPAD,
)  # fmt: skip

_FIRST_WORDS = {"first", "start", "begin", "beginning", "0", "head"}
_LAST_WORDS = {"last", "end", "final", "-1", "tail"}
_CHAT_END = ("<|im_end|>", "<|endoftext|>")
_PAIRS = ((BORES, EORES), (BONF, EONF), (BOFIDX, EOFIDX), (BOEDIT, EOEDIT))


def _span(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    if j < 0:
        raise PlannerError(f"planner output has {start} without {end}: {text!r}")
    return text[i + len(start) : j].strip()


def _ints(value: str, n: int, token: str, raw: str) -> list[int]:
    parts = [p for p in re.split(r"[,\sx×]+", value) if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise PlannerError(f"{token} holds {value!r}, expected {n} whole number(s): {raw!r}") from None
    if len(nums) != n:
        raise PlannerError(f"{token} holds {value!r}, expected {n} whole number(s): {raw!r}")
    return nums


def _strip_tokens(text: str) -> str:
    for a, b in _PAIRS:
        text = re.sub(re.escape(a) + r".*?" + re.escape(b), " ", text, flags=re.DOTALL)
    for tok in (*UNISON_TOKENS, *_CHAT_END):
        text = text.replace(tok, " ")
    return re.sub(r"\s+", " ", text).strip()


def parse_unison(
    text: str,
    inputs: Sequence[tuple[str, MediaKind | str]] = (),
    *,
    prompt: str | None = None,
) -> Plan:
    """Turn the Unison planner's output into a :class:`Plan` (not yet validated: see ``check_plan``).

    ``inputs`` are the request's files in order (path, kind); indices in the output refer to them.
    The generator's prompt is ``prompt`` (the user's request without markers) when given, else the
    text the planner wrote around its tokens.
    """
    raw = text
    for end in _CHAT_END:
        text = text.replace(end, "")
    for begin, end in _PAIRS:
        if end in text and (begin not in text or text.find(end) < text.find(begin)):
            raise PlannerError(f"planner output has {end} without {begin} before it: {raw!r}")
    files = [(str(p), MediaKind(k)) for p, k in inputs]
    leftover = _strip_tokens(text)
    gen_prompt = prompt if prompt is not None else leftover

    def ref(i: int, role: Role) -> MediaInput:
        if not 0 <= i < len(files):
            raise PlannerError(
                f"planner output refers to input {i} but the request has {len(files)} file(s): {raw!r}"
            )
        return MediaInput(path=files[i][0], kind=files[i][1], role=role)

    creates_image, creates_video = CFI in text, CFV in text
    if not creates_image and not creates_video:
        kinds = {k for _, k in files}
        task = (
            Task.VIDEO_UNDERSTANDING
            if MediaKind.VIDEO in kinds
            else Task.IMAGE_UNDERSTANDING
            if kinds
            else Task.TEXT_UNDERSTANDING
        )
        return Plan(
            task=task,
            prompt=prompt if prompt is not None else leftover,
            inputs=[ref(i, Role.QUERY) for i in range(len(files))],
            raw=raw,
        )
    if creates_image and creates_video:
        raise PlannerError(f"planner output asks for both an image and a video: {raw!r}")

    width = height = num_frames = None
    res = _span(text, BORES, EORES)
    if res is not None:
        width, height = _ints(res, 2, "<BORES>", raw)
    nf = _span(text, BONF, EONF)
    if nf is not None:
        num_frames = _ints(nf, 1, "<BONF>", raw)[0] + 1
    if creates_image:
        num_frames = 1

    fidx = _span(text, BOFIDX, EOFIDX)
    edit = _span(text, BOEDIT, EOEDIT)
    media: list[MediaInput]
    if fidx is not None:
        if creates_image:
            raise PlannerError(f"<BOFIDX> (image-to-video) needs <CFV>, but the output has <CFI>: {raw!r}")
        role = _frame_role(fidx, num_frames, raw)
        task, media = Task.IMAGE_TO_VIDEO, [ref(_first_of(files, MediaKind.IMAGE, raw), role)]
    elif REF in text:
        refs = [ref(i, Role.REFERENCE) for i, (_, k) in enumerate(files) if k is MediaKind.IMAGE]
        if not refs:
            raise PlannerError(f"<REF> but the request has no image: {raw!r}")
        task, media = (Task.IMAGE_REFERENCE if creates_image else Task.VIDEO_REFERENCE), refs
    elif CTRL in text:
        if not files:
            raise PlannerError(f"<CTRL> but the request has no file: {raw!r}")
        # The reference takes input 0; with several files the first of the output's kind is the
        # control (the same file whenever the request holds one), so a stray extra image before
        # a control video does not turn into an impossible plan.
        want = MediaKind.IMAGE if creates_image else MediaKind.VIDEO
        control_i = next((i for i, (_, k) in enumerate(files) if k is want), 0)
        task = Task.IMAGE_CONTROL if creates_image else Task.VIDEO_CONTROL
        media = [ref(control_i, Role.CONTROL)]
    elif edit is not None:
        if creates_image:
            mask_i, source_i = _ints(edit, 2, "<BOEDIT>", raw)
            if mask_i == source_i:
                raise PlannerError(f"<BOEDIT> names input {mask_i} as both mask and source: {raw!r}")
            task, media = Task.IMAGE_EDIT, [ref(source_i, Role.SOURCE), ref(mask_i, Role.MASK)]
        elif edit:
            # Video with indices: mask first, source second, as for images; equal indices mean
            # no mask (the region is then found from the prompt).
            mask_i, source_i = _ints(edit, 2, "<BOEDIT>", raw)
            media = [ref(source_i, Role.SOURCE)]
            if mask_i != source_i:
                media.append(ref(mask_i, Role.MASK))
            task = Task.VIDEO_EDIT
        else:
            # The released grammar: no indices, the region to edit is found automatically.
            task, media = Task.VIDEO_EDIT, [ref(_first_of(files, MediaKind.VIDEO, raw), Role.SOURCE)]
    elif creates_image:
        task, media = Task.TEXT_TO_IMAGE, []
    else:
        task, media = Task.TEXT_TO_VIDEO, []
    return Plan(
        task=task,
        prompt=gen_prompt,
        inputs=media,
        width=width,
        height=height,
        num_frames=num_frames,
        raw=raw,
    )


def _first_of(files: list[tuple[str, MediaKind]], kind: MediaKind, raw: str) -> int:
    for i, (_, k) in enumerate(files):
        if k is kind:
            return i
    raise PlannerError(f"planner output needs an input {kind.value} but the request has none: {raw!r}")


def _frame_role(value: str, num_frames: int | None, raw: str) -> Role:
    """Which end of the clip the image of ``<BOFIDX>`` is.

    Compared by value, unlike the reference (whose comparison with a constant always chose the
    last frame): a word (first/start/0 or last/end/-1) or the last index of the clip.
    """
    word = value.strip().lower()
    if word in _FIRST_WORDS:
        return Role.FIRST_FRAME
    if word in _LAST_WORDS:
        return Role.LAST_FRAME
    n = DEFAULT_VIDEO_FRAMES if num_frames is None else num_frames
    if word.isdigit() and int(word) == n - 1:
        return Role.LAST_FRAME
    raise PlannerError(
        f"<BOFIDX> holds {value!r}; expected first/start/0 or last/end/-1 (or {n - 1}, the last "
        f"index of {n} frames): {raw!r}"
    )


def format_unison(plan: Plan, files: Sequence[str] | None = None) -> str:
    """Write a plan in the Unison grammar (the inverse of :func:`parse_unison`).

    ``files`` are the request's paths in order (default: the plan's inputs in order); edit indices
    refer to them. Tasks the released grammar cannot express raise :class:`InvalidRequest`.
    """
    order = list(files) if files is not None else [m.path for m in plan.inputs]

    def idx(m: MediaInput) -> int:
        if m.path not in order:
            raise InvalidRequest.for_field(
                "files", order, f"must include the {m.role.value} input {m.path!r}"
            )
        return order.index(m.path)

    spec = TASKS[plan.task]
    if spec.understanding:
        return plan.prompt
    parts = [CFI if spec.output == "image" else CFV]
    if plan.width is not None and plan.height is not None:
        parts.append(f"{BORES}{plan.width},{plan.height}{EORES}")
    if spec.output == "video" and plan.num_frames is not None:
        parts.append(f"{BONF}{plan.num_frames - 1}{EONF}")
    t = plan.task
    if t is Task.IMAGE_TO_VIDEO:
        word = "first" if plan.by_role(Role.FIRST_FRAME) else "last"
        parts.append(f"{BOFIDX}{word}{EOFIDX}")
    elif t in (Task.IMAGE_REFERENCE, Task.VIDEO_REFERENCE):
        parts.append(REF)
    elif t in (Task.IMAGE_CONTROL, Task.VIDEO_CONTROL):
        parts.append(CTRL)
    elif t is Task.IMAGE_EDIT:
        parts.append(f"{BOEDIT}{idx(plan.one(Role.MASK))},{idx(plan.one(Role.SOURCE))}{EOEDIT}")
    elif t is Task.VIDEO_EDIT:
        masks = plan.by_role(Role.MASK)
        inner = f"{idx(masks[0])},{idx(plan.one(Role.SOURCE))}" if masks else ""
        parts.append(f"{BOEDIT}{inner}{EOEDIT}")
    elif t not in (Task.TEXT_TO_IMAGE, Task.TEXT_TO_VIDEO):
        raise InvalidRequest.for_field("task", t.value, "has no form in the Unison planner grammar")
    return "".join(parts) + (" " + plan.prompt if plan.prompt else "")

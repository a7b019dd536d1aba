"""Plans: the typed form of a request, and the one check that makes it runnable.

A :class:`Plan` is what every planner produces and what typed requests become: its shape fields
are optional. :func:`check_plan` holds the generator's rules and returns a checked plan, a frozen
type of its own that only it makes: a :class:`CheckedPlan` (a generation plan: width, height and
frame count decided, the rate too for a video) or a :class:`CheckedQuestion` (an understanding
plan). The generation path accepts only a ``CheckedPlan``, so a plan is checked once and nothing
downstream checks it again.

Single-field bounds are :class:`~engine.bounds.Bounds`, the same the request models read;
``check_plan`` checks them (a planner's plan never passed through the request models), then adjusts
(rounds, scales, fills defaults, each with a note in ``notes``) and checks the rules between fields.
Errors name the field, the value and the rule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, Strict

from .bounds import (
    DEFAULT_CONTEXT_FRAMES,
    IMAGE_FRAMES,
    MAX_TARGET_CHARS,
    Bounds,
    frames_for_seconds,
    nearest_4k1,
    number,
    round16,
    round_frames,
)
from .config import Limits
from .errors import InvalidRequest, validated
from .tasks import TASKS, TaskSpec
from .vocab import ControlKind, MediaKind, Role, Task, media_kind

if TYPE_CHECKING:
    from .geometry import Size

log = logging.getLogger(__name__)

#: Whole numbers that refuse ``True``/``1.0`` (pydantic's lax mode would turn ``steps: true`` into 1).
StrictInt = Annotated[int, Strict()]


class MediaInput(BaseModel):
    """One input file and what it is for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    kind: MediaKind
    role: Role


class Margins(BaseModel):
    """Outpainting margins in output pixels."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # No words: the side's name says it (and every word is in each tools/list).
    left: StrictInt = Field(0, ge=0)
    top: StrictInt = Field(0, ge=0)
    right: StrictInt = Field(0, ge=0)
    bottom: StrictInt = Field(0, ge=0)


class BasePlan(BaseModel):
    """What every plan says, checked or not: the task, the prompt, the inputs with their roles,
    and the output's shape; and how to read its inputs.

    ``raw`` is the planner's own text (Unison tokens, JSON, or ``None`` for a plan built from typed
    parameters). ``notes`` lists harmless adjustments made by the check. A plan's JSON
    (``model_dump(mode="json")``) replays through ``generate`` unchanged.
    """

    model_config = ConfigDict(extra="forbid")

    task: Task
    prompt: str
    inputs: list[MediaInput] = Field(default_factory=list)
    width: StrictInt | None = None
    height: StrictInt | None = None
    num_frames: StrictInt | None = None
    fps: float | None = None
    margins: Margins | None = None
    context_frames: StrictInt | None = None
    #: image/video_control: what to extract from a plain control input (engine.annotators).
    control_kind: ControlKind | None = None
    #: image/video_edit without a mask: the object to find and repaint (a short phrase).
    target: str | None = Field(None, max_length=MAX_TARGET_CHARS)
    raw: str | None = Field(None, description="the planner's own output (Unison tokens), when planned")
    planner: str | None = Field(None, description="the planner backend that made the plan, when planned")
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
        """The plan as the CLI shows it."""
        return {
            "task": self.task.value,
            "prompt": self.prompt,
            "width": self.width,
            "height": self.height,
            "num_frames": self.num_frames,
            "inputs": [{"path": m.path, "kind": m.kind.value, "role": m.role.value} for m in self.inputs],
        }


class Plan(BasePlan):
    """A plan as a planner or a typed request writes it, not yet checked: ``width``, ``height``,
    ``num_frames`` and ``fps`` may be unset (``None``: the source's or the configured default).
    The results show a plan in this form (its JSON schema is the MCP output's plan)."""


#: The key only :func:`check_plan` holds: a checked plan is made with it or not at all.
_ISSUED = object()


class _Checked(BasePlan):
    """A plan :func:`check_plan` made: frozen, and built by nobody else."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def __init__(self, _issued: object = None, /, **data: Any):
        if _issued is not _ISSUED:
            raise TypeError(f"a {type(self).__name__} is made by check_plan only; check a Plan instead")
        super().__init__(**data)


class CheckedPlan(_Checked):
    """A generation plan that passed :func:`check_plan`: sizes rounded and bounded, the frame count
    on the grid (an image: ``IMAGE_FRAMES``), defaults filled in, inputs and parameters fitting the
    task. ``fps`` is the video's rate; an image has none (``None``), as its plan's JSON says. The only
    plan the generation path takes."""

    width: StrictInt
    height: StrictInt
    num_frames: StrictInt
    fps: float | None


class CheckedQuestion(_Checked):
    """An understanding plan that passed :func:`check_plan`: its inputs are the request's files,
    each a ``query``. It has no output shape."""

    width: None = None
    height: None = None
    num_frames: None = None
    fps: None = None


#: What :func:`check_plan` returns.
Checked = CheckedPlan | CheckedQuestion


def budget_size(aspect: float, pixels: int) -> tuple[int, int]:
    """A width and height of about ``pixels`` pixels with this ``aspect`` (width / height),
    multiples of 16: 16:9 at 832×480's area is 848×480, 9:16 is 480×848... (the default budget)."""
    height = math.sqrt(pixels / aspect)
    return round16(height * aspect), round16(height)


class Shape(Protocol):
    """What a header-only probe knows of an input (engine.source.ImageHeader / VideoHeader)."""

    width: int
    height: int


#: Input shapes by path (the real paths in a plan), from the header probe at admission.
Shapes = Mapping[str, Shape]


def shapes_of(sources: Mapping[str, Any]) -> dict[str, Shape]:
    """The probed headers of opened inputs (engine.source.Source) by path."""
    return {path: s.header for path, s in sources.items() if getattr(s, "header", None) is not None}


def _source_of(plan: Plan, roles: Sequence[Role], shapes: Shapes | None) -> tuple[MediaInput, Shape] | None:
    """The first input of ``roles`` (in that order) whose header is known."""
    for role in roles:
        for m in plan.by_role(role):
            shape = (shapes or {}).get(m.path)
            if shape is not None:
                return m, shape
    return None


def _output_size(plan: Plan, spec: TaskSpec, bounds: Bounds, shapes: Shapes | None, notes: list[str]) -> Size:
    """Width and height: given, else from the source's aspect at the default pixel budget (tasks
    that transform a source), else the defaults; rounded to 16, then scaled into the limits."""
    limits, side = bounds.limits, bounds.side
    width, height = plan.width, plan.height
    for name, value in (("width", width), ("height", height)):
        if value is not None and value <= 0:
            raise InvalidRequest.for_field(name, value, "must be a positive whole number of pixels")
        if value is not None and value > side.high:
            raise InvalidRequest.for_field(
                name, value, f"at most {number(side.high)}{side.unit} ({side.why})"
            )
    found = _source_of(plan, spec.size_from, shapes)
    if found is not None and "margins" in spec.params and plan.margins is None:
        # Outpainting to a size: the source's own aspect would leave nothing to outpaint.
        found = None
    if found is not None and plan.margins is not None:
        if width is None and height is None:
            width, height = _outpaint_size(found, plan.margins, limits, notes)
        found = None  # margins are in output pixels: a given side stays as given
    if found is not None and (width is None or height is None):
        m, shape = found
        aspect = shape.width / shape.height
        if height is not None:
            width = round16(height * aspect)
            notes.append(f"width {width}: the {m.role.value}'s aspect at height {height}")
        elif width is not None:
            height = round16(width / aspect)
            notes.append(f"height {height}: the {m.role.value}'s aspect at width {width}")
        else:
            width, height = budget_size(aspect, limits.default_width * limits.default_height)
            notes.append(
                f"size {width}×{height}: the {m.role.value}'s {shape.width}×{shape.height} aspect at "
                f"the default {limits.default_width}×{limits.default_height} pixel budget"
            )
    width = limits.default_width if width is None else width
    height = limits.default_height if height is None else height
    for name, value in (("width", width), ("height", height)):
        if side.low is not None and round16(value) < side.low:
            raise InvalidRequest.for_field(name, value, f"must be at least {number(side.low)}{side.unit}")
    out: list[int] = []
    for name, value in (("width", width), ("height", height)):
        rounded = round16(value)
        if rounded != value:
            notes.append(f"{name} {value} rounded to {rounded} (multiple of 16)")
            log.warning("%s %d rounded to %d (multiple of 16)", name, value, rounded)
        out.append(rounded)
    w, h = out
    # Above the budget: scaled down keeping the aspect ("1080p", "4K"), not refused.
    scale = min(1.0, limits.max_side / max(w, h), math.sqrt(limits.max_pixels / (w * h)))
    if scale < 1.0:
        sw, sh = round16(w * scale), round16(h * scale)
        while max(sw, sh) > limits.max_side or sw * sh > limits.max_pixels:
            # Rounding went over: take 16 px off the side that is the longer for the aspect.
            if sw / sh > w / h or sh <= 16:
                sw -= 16
            else:
                sh -= 16
        notes.append(
            f"{w}×{h} is above the output limits ({limits.max_side} px a side, {limits.max_pixels} "
            f"pixels): scaled down to {sw}×{sh}, keeping the aspect"
        )
        w, h = max(sw, limits.min_side), max(sh, limits.min_side)
    return w, h


def _outpaint_size(
    found: tuple[MediaInput, Shape], margins: Margins, limits: Limits, notes: list[str]
) -> Size:
    """Outpainting by margins with no size: the source at the default pixel budget (or smaller,
    so the output fits the limits) plus the margins."""
    m, shape = found
    aspect = shape.width / shape.height
    pixels = limits.default_width * limits.default_height
    while True:
        iw, ih = budget_size(aspect, pixels)
        w, h = iw + margins.left + margins.right, ih + margins.top + margins.bottom
        fits = max(w, h) <= limits.max_side and w * h <= limits.max_pixels
        if fits or pixels <= 256:
            break
        pixels = int(pixels * 0.9)
    notes.append(
        f"size {w}×{h}: the {m.role.value} ({shape.width}×{shape.height}) at {iw}×{ih} plus the margins"
    )
    return w, h


def _source_length(
    plan: Plan, spec: TaskSpec, limits: Limits, fps: float, shapes: Shapes | None, notes: list[str]
) -> int | None:
    """Frames of the source video at ``fps`` (the output covers its time), capped at one window
    with a note saying what is left out; ``None`` when the task has no source video or its
    header does not say its length."""
    if spec.length_from is None:
        return None
    found = _source_of(plan, (spec.length_from,), shapes)
    if found is None:
        return None
    m, shape = found
    duration = getattr(shape, "duration_s", None)
    if duration is None:
        count, rate = getattr(shape, "num_frames", None), getattr(shape, "fps", None)
        duration = count / rate if count and rate else None
    if not duration or not math.isfinite(duration):
        notes.append(
            f"the {m.role.value}'s length is not in its header: {limits.default_frames} frames "
            "(give num_frames or duration_s)"
        )
        return None
    count = max(1, int(duration * fps + 1e-6))  # frames sampled at fps within the source's time
    # The nearest 4k+1, one frame over at most (the last frame repeats), never more.
    n = nearest_4k1(count)
    if n > count + 1:
        n -= 4
    n = max(n, nearest_4k1(limits.min_frames))
    if n > limits.max_frames:
        n = limits.max_frames
        kept = (n - 1) / fps
        notes.append(
            f"the {m.role.value} lasts {duration:.2f} s, longer than one {n}-frame window: the "
            f"output covers its first {kept:.2f} s, the last {duration - kept:.2f} s are left out"
        )
    else:
        notes.append(f"length from the {m.role.value}: {duration:.2f} s → {n} frames at {fps:g} fps")
    return n


def _output_frames(
    plan: Plan, spec: TaskSpec, bounds: Bounds, shapes: Shapes | None, notes: list[str]
) -> tuple[int, float | None]:
    """Frame count and rate: one image (no rate), or 4k+1 frames within the task's bounds at a
    rate within bounds (the source video's length when unset; off-grid counts rounded, noted)."""
    limits = bounds.limits
    if spec.output == "image":
        if plan.num_frames not in (None, IMAGE_FRAMES):
            raise InvalidRequest.for_field(
                "num_frames", plan.num_frames, f"{plan.task} makes one image: use {IMAGE_FRAMES}"
            )
        return IMAGE_FRAMES, None
    fps = bounds.default_fps if plan.fps is None else plan.fps
    bounds.fps.check("fps", fps)
    n = plan.num_frames
    if n is None:
        n = _source_length(plan, spec, limits, fps, shapes, notes) or limits.default_frames
    if n <= 0:
        raise InvalidRequest.for_field("num_frames", n, "must be a positive number of frames")
    given = n
    n = round_frames(n, notes)
    longest = bounds.longest(fps) if spec.chain else limits.max_frames
    if not limits.min_frames <= n <= longest:
        more = (
            f" ({limits.max_duration_s:g} s, made as a chain of {limits.max_frames}-frame windows)"
            if spec.chain
            else "; longer videos: text_to_video, image_to_video and video_extend chain windows"
        )
        raise InvalidRequest.for_field(
            "num_frames", given, f"{plan.task} makes {limits.min_frames} to {longest} frames{more}"
        )
    return n, float(fps)


def check_plan(
    plan: BasePlan, limits: Limits | None = None, shapes: Shapes | None = None
) -> CheckedPlan | CheckedQuestion:
    """Check a plan against the generator's rules: a :class:`CheckedPlan` for a generation task, a
    :class:`CheckedQuestion` for an understanding task.

    First the single-field bounds (:class:`~engine.bounds.Bounds`, the request models' own), the
    roles and the parameters. Then the adjustments, each recorded in ``notes``: unset sizes and
    frame counts take the source's (``shapes``: the headers of the plan's inputs by path, for tasks
    that transform a source) or the configured defaults; width and height are rounded to multiples
    of 16 and scaled down into the limits, frame counts rounded to 4k+1. Last the rules between
    fields. Whatever breaks a rule raises :class:`InvalidRequest` naming the field, the value and
    the rule. A plan that is already checked is returned as it is: a plan is checked once.
    """
    if isinstance(plan, _Checked):
        return plan
    bounds = Bounds.of(limits or Limits())
    spec = TASKS[plan.task]
    notes = list(plan.notes)

    # 1. Single-field bounds, roles, parameters.
    bounds.prompt.check("prompt", len(plan.prompt), shown_as=f"{len(plan.prompt)} characters")
    bounds.inputs.check("inputs", len(plan.inputs))
    check_roles(plan)
    check_params(spec, {k: getattr(plan, k) for k in _SHAPE_PARAMS if getattr(plan, k) is not None})
    if spec.understanding:
        return CheckedQuestion(_ISSUED, **_fields(plan), notes=notes)
    if not plan.prompt.strip():
        raise InvalidRequest.for_field(
            "prompt", plan.prompt, f"{plan.task} needs a prompt saying what to make"
        )

    # 2. Adjustments: sizes, frames and rate, defaults.
    width, height = _output_size(plan, spec, bounds, shapes, notes)
    num_frames, fps = _output_frames(plan, spec, bounds, shapes, notes)
    context_frames = plan.context_frames
    if "context_frames" in spec.params:
        context_frames = DEFAULT_CONTEXT_FRAMES if context_frames is None else context_frames
        bounds.context_frames.check("context_frames", context_frames)

    # 3. Rules between fields.
    if "margins" in spec.params and plan.margins is not None:
        m = plan.margins
        if m.left + m.right >= width or m.top + m.bottom >= height:
            raise InvalidRequest.for_field(
                "margins",
                m.model_dump(),
                f"must leave room for the source inside the {width}×{height} output",
            )
    if plan.target is not None:
        if not plan.target.strip():
            raise InvalidRequest.for_field("target", plan.target, "must name the object to repaint")
        if plan.by_role(Role.MASK):
            raise InvalidRequest.for_field(
                "target", plan.target, "give a mask or a target (the object to find), not both"
            )
    return CheckedPlan(
        _ISSUED,
        **_fields(plan),
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        context_frames=context_frames,
        notes=notes,
    )


def _fields(plan: BasePlan) -> dict[str, Any]:
    """The plan's fields a checked plan carries over as they are (the shape is the check's)."""
    return {k: v for k, v in dict(plan).items() if k not in _DECIDED}


#: The fields check_plan decides for a checked plan rather than carrying them over.
_DECIDED = frozenset({"width", "height", "num_frames", "fps", "context_frames", "notes"})


#: Plan fields that only some tasks take (checked against the task's parameters).
_SHAPE_PARAMS = (
    "width",
    "height",
    "num_frames",
    "fps",
    "margins",
    "context_frames",
    "control_kind",
    "target",
)


def check_params(spec: TaskSpec, given: dict[str, Any]) -> None:
    """Refuse a parameter the task does not take (rather than drop it), listing the ones it does."""
    for name in sorted(set(given) - set(spec.parameters)):
        value = given[name]
        shown = value.model_dump() if isinstance(value, BaseModel) else value
        raise InvalidRequest.for_field(
            name, shown, f"{spec.task} does not take {name}; it takes {', '.join(spec.parameters)}"
        )


def check_roles(plan: BasePlan) -> None:
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
    if spec.total_inputs is not None and not spec.total_inputs[0] <= len(plan.inputs) <= spec.total_inputs[1]:
        raise InvalidRequest.for_field("inputs", len(plan.inputs), f"{plan.task} {spec.note}")
    if spec.needs_kind is not None and not any(m.kind is spec.needs_kind for m in plan.inputs):
        raise InvalidRequest.for_field(
            "inputs", [m.path for m in plan.inputs], f"{plan.task} needs a {spec.needs_kind.value}"
        )


def build_plan(
    task: Task | str,
    prompt: str,
    inputs: Sequence[tuple[str, Role | str]] = (),
    *,
    limits: Limits | None = None,
    shapes: Shapes | None = None,
    **params: Any,
) -> CheckedPlan | CheckedQuestion:
    """A checked plan from typed parameters (the ``generate`` tool, the CLI and the Python API):
    :func:`plan_from_params` (whose keywords ``params`` are), then :func:`check_plan`."""
    return check_plan(plan_from_params(task, prompt, inputs, limits=limits, **params), limits, shapes)


def plan_from_params(
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
    control_kind: str | None = None,
    target: str | None = None,
    limits: Limits | None = None,
) -> Plan:
    """The plan typed parameters say, not yet checked (:func:`build_plan` checks it)."""
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
        media.append(MediaInput(path=str(path), kind=media_kind(path, field=role.value), role=role))
    if isinstance(duration_s, bool) or (duration_s is not None and not isinstance(duration_s, (int, float))):
        raise InvalidRequest.for_field("duration_s", duration_s, "must be a number of seconds")
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
        rate = Bounds.of(limits or Limits()).default_fps if fps is None else fps
        num_frames = frames_for_seconds(duration_s, rate)
    return validated(
        Plan,
        task=task,
        prompt=prompt,
        inputs=media,
        width=width,
        height=height,
        num_frames=num_frames,
        fps=fps,
        margins=margins,
        context_frames=context_frames,
        control_kind=control_kind,
        target=target,
    )

"""Plans: the typed form of a request, and the one check that makes it runnable.

A :class:`Plan` is what every planner produces and what typed requests become. :func:`check_plan`
holds every rule of the generator (sizes, frame counts, which inputs and which parameters each
task takes) and returns a :class:`CheckedPlan`, the only type the generation path accepts: a plan
is checked once, and nothing downstream checks it again. Errors name the field, the value and
the rule; harmless adjustments (rounding to a multiple of 16) are reported in ``notes``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, Strict

from .config import Limits
from .errors import InvalidRequest, validated
from .prepare import DEFAULT_CONTEXT_FRAMES
from .tasks import TASKS, TaskSpec
from .vocab import MediaKind, Role, Task, media_kind

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

    left: StrictInt = Field(0, ge=0, description="pixels added on the left")
    top: StrictInt = Field(0, ge=0, description="pixels added on top")
    right: StrictInt = Field(0, ge=0, description="pixels added on the right")
    bottom: StrictInt = Field(0, ge=0, description="pixels added at the bottom")


class Plan(BaseModel):
    """What to do: the task, the prompt, the inputs with their roles, and the output's shape.

    ``width``, ``height``, ``num_frames`` and ``fps`` are ``None`` for understanding tasks (and
    ``fps`` for images). ``raw`` is the planner's own text (Unison tokens, JSON, or ``None`` for a
    plan built from typed parameters). ``notes`` lists harmless adjustments made by the check.
    A plan's JSON (``model_dump(mode="json")``) replays through ``generate`` unchanged.
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
    raw: str | None = Field(None, description="the planner's own output (Unison tokens), when planned")
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


class CheckedPlan(Plan):
    """A plan that passed :func:`check_plan`: sizes rounded and bounded, defaults filled in,
    inputs and parameters fitting the task. Only :func:`check_plan` makes one."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def round16(value: int) -> int:
    """The nearest multiple of 16, ties up (``round`` would send ties to the even multiple: 1000
    to 992 but 1048 to 1056); never below 16."""
    return max(16, (int(value) + 8) // 16 * 16)


def nearest_4k1(n: int) -> int:
    """The nearest frame count of the form 4k+1 (ties go up)."""
    # Integer arithmetic: a request may spell out a count far beyond a float (check_plan then
    # refuses it by name); (n - 1) / 4 would overflow or round.
    return max(1, 4 * ((int(n) + 1) // 4) + 1)


def frames_for_seconds(seconds: float, fps: float = 16.0) -> int:
    """`seconds` of video at `fps`, as Wan needs it: 16·N+1 at 16 fps, normalised to 4k+1.

    Raises :class:`InvalidRequest` for a rate or a duration that is not a finite number (``round``
    of an infinity or a NaN would otherwise escape as a bare OverflowError/ValueError).
    """
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidRequest.for_field("fps", fps, "must be a finite number above 0")
    if not math.isfinite(seconds * fps):
        raise InvalidRequest.for_field("duration_s", seconds, "must be a finite number of seconds")
    return nearest_4k1(int(round(seconds * fps)) + 1)


def check_plan(plan: Plan, limits: Limits | None = None) -> CheckedPlan:
    """Check a plan against the generator's rules and return it as a :class:`CheckedPlan`.

    Unset sizes and frame counts take the configured defaults; width and height are rounded to
    multiples of 16 (recorded in ``notes``); everything else that breaks a rule raises
    :class:`InvalidRequest` naming the field, the value and the rule. A plan that is already a
    ``CheckedPlan`` is returned as it is: a plan is checked once.
    """
    if isinstance(plan, CheckedPlan):
        return plan
    limits = limits or Limits()
    spec = TASKS[plan.task]
    notes = list(plan.notes)
    update: dict[str, Any] = {}

    if len(plan.prompt) > limits.max_prompt_chars:
        raise InvalidRequest.for_field(
            "prompt", f"{len(plan.prompt)} characters", f"at most {limits.max_prompt_chars} characters"
        )
    if len(plan.inputs) > limits.max_inputs:
        raise InvalidRequest.for_field("inputs", len(plan.inputs), f"at most {limits.max_inputs} input files")
    check_roles(plan)
    check_params(spec, {k: getattr(plan, k) for k in _SHAPE_PARAMS if getattr(plan, k) is not None})

    if spec.understanding:
        return CheckedPlan(**{**dict(plan), **update})
    if not plan.prompt.strip():
        raise InvalidRequest.for_field(
            "prompt", plan.prompt, f"{plan.task} needs a prompt saying what to make"
        )

    # Output size: defaults, then rounding to multiples of 16, then bounds.
    for name, default in (("width", limits.default_width), ("height", limits.default_height)):
        value = getattr(plan, name)
        if value is None:
            value = default
        if value <= 0:
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

    # Frame count and rate: one image, or 4k+1 frames within bounds at a rate within bounds.
    if spec.output == "image":
        if plan.num_frames not in (None, 1):
            raise InvalidRequest.for_field(
                "num_frames", plan.num_frames, f"{plan.task} makes one image: use 1"
            )
        update["num_frames"] = 1
    else:
        n = limits.default_frames if plan.num_frames is None else plan.num_frames
        rule = f"must be 4k+1 between {limits.min_frames} and {limits.max_frames} (e.g. 17, 33, 49, 81)"
        if n % 4 != 1 or not limits.min_frames <= n <= limits.max_frames:
            raise InvalidRequest.for_field("num_frames", n, rule)
        update["num_frames"] = n
        fps = limits.default_fps if plan.fps is None else plan.fps
        if not (math.isfinite(fps) and 0 < fps <= limits.max_fps):
            raise InvalidRequest.for_field("fps", fps, f"must be above 0 and at most {limits.max_fps}")
        update["fps"] = float(fps)

    if "margins" in spec.params and plan.margins is not None:
        m = plan.margins
        if m.left + m.right >= update["width"] or m.top + m.bottom >= update["height"]:
            raise InvalidRequest.for_field(
                "margins",
                m.model_dump(),
                f"must leave room for the source inside the {update['width']}×{update['height']} output",
            )
    if "context_frames" in spec.params:
        c = DEFAULT_CONTEXT_FRAMES if plan.context_frames is None else plan.context_frames
        if not 1 <= c < update["num_frames"]:
            raise InvalidRequest.for_field(
                "context_frames", c, f"must be at least 1 and below num_frames ({update['num_frames']})"
            )
        update["context_frames"] = c
    update["notes"] = notes
    return CheckedPlan(**{**dict(plan), **update})


#: Plan fields that only some tasks take (checked against the task's parameters).
_SHAPE_PARAMS = ("width", "height", "num_frames", "fps", "margins", "context_frames")


def check_params(spec: TaskSpec, given: dict[str, Any]) -> None:
    """Refuse a parameter the task does not take (rather than drop it), listing the ones it does."""
    for name in sorted(set(given) - set(spec.parameters)):
        value = given[name]
        shown = value.model_dump() if isinstance(value, BaseModel) else value
        raise InvalidRequest.for_field(
            name, shown, f"{spec.task} does not take {name}; it takes {', '.join(spec.parameters)}"
        )


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
    width: int | None = None,
    height: int | None = None,
    num_frames: int | None = None,
    duration_s: float | None = None,
    fps: float | None = None,
    margins: Margins | None = None,
    context_frames: int | None = None,
    limits: Limits | None = None,
) -> CheckedPlan:
    """A checked plan from typed parameters (the ``generate`` tool, the CLI and the Python API)."""
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
        num_frames = frames_for_seconds(duration_s, fps or (limits or Limits()).default_fps)
    plan = validated(
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
    )
    return check_plan(plan, limits)

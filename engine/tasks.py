"""The task table: one row per task, holding everything about it.

A row says what the task makes, which inputs it takes (role, kinds, how many), which Unison
tokens select it, the function that prepares its sources for the generator, the parameters only
it takes, and the one-line summary that tool descriptions and CLI help show. The grammar
(:mod:`engine.grammar`), the role checks and the parameter checks (:mod:`engine.plan`), the rules
planner's default roles, the MCP tool descriptions and the CLI read the rows; adding a task is
one row here plus one preparation function in :mod:`engine.prepare` (which the row names).

The table is data: it imports nothing of the stages that read it, so the plan types, the
preparation functions and the checks can all read it without a circle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .bounds import DEFAULT_CONTEXT_FRAMES
from .vocab import BOEDIT, BOFIDX, CFI, CFV, CTRL, REF, MediaKind, Role, Task

Output = Literal["text", "image", "video"]

#: Parameters every generation task takes (besides its inputs).
GENERATION_PARAMS: tuple[str, ...] = (
    "prompt",
    "width",
    "height",
    "num_frames",
    "steps",
    "guidance",
    "seed",
    "negative_prompt",
    "conditioning_scale",
    "count",
    "preserve",
    "turbo",
    "loras",
)
#: Parameters every task that makes a video takes.
VIDEO_PARAMS: tuple[str, ...] = ("duration_s", "fps")


@dataclass(frozen=True)
class RoleRule:
    """Which inputs of one role a task takes: their kinds and how many."""

    role: Role
    kinds: tuple[MediaKind, ...]
    min: int = 1
    max: int = 1

    def count_text(self) -> str:
        """How many, for descriptions: '' (exactly one), ', optional' or ', 1-3'."""
        if self.min == self.max == 1:
            return ""
        if self.min == 0 and self.max == 1:
            return ", optional"
        return f", {self.min}-{self.max}"


@dataclass(frozen=True)
class TaskSpec:
    """One row of the task table."""

    task: Task
    output: Output
    roles: tuple[RoleRule, ...]
    summary: str
    #: The function that turns a checked plan into the generator's inputs, by its name in
    #: :data:`engine.prepare.PREPARERS`; ``None`` for understanding tasks.
    prepare: str | None = None
    #: The Unison tokens that select the task: the output token and the marker token (``None``:
    #: none besides the output token); ``None`` when the released grammar has no form for it.
    grammar: tuple[str, str | None] | None = None
    #: Parameters only this task takes (beyond GENERATION_PARAMS / VIDEO_PARAMS).
    params: tuple[str, ...] = ()
    #: Inputs in all, whatever their roles (``None``: the role counts decide).
    total_inputs: tuple[int, int] | None = None
    #: A kind at least one input must have.
    needs_kind: MediaKind | None = None
    #: A rule the summary does not say, for the tool descriptions.
    note: str = ""
    #: Roles whose input's aspect sets the output size when a request gives none (first found).
    size_from: tuple[Role, ...] = ()
    #: The role of the source video whose length (and audio) the output spans by default.
    length_from: Role | None = None
    #: Whether videos longer than one window are made as a chain of windows.
    chain: bool = False

    @property
    def understanding(self) -> bool:
        return self.output == "text"

    @property
    def parameters(self) -> tuple[str, ...]:
        """Every parameter the task takes, inputs by role included (for error messages and help)."""
        if self.understanding:
            return ("prompt",)
        video = VIDEO_PARAMS if self.output == "video" else ()
        return (*GENERATION_PARAMS, *video, *self.params, *(r.role.value for r in self.roles))

    def rule(self, role: Role) -> RoleRule | None:
        return next((r for r in self.roles if r.role is role), None)


#: What control tasks say about ``control_kind`` (the tool descriptions and the CLI show it).
CONTROL_NOTE = (
    "`control_kind` says what to follow: pose (skeletons), depth, edges, flow (motion) or gray, "
    "extracted from a plain image/video, or raw (the input already is a control signal); unset: raw "
    "when the input looks like one, else depth"
)

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
            needs_kind=MediaKind.VIDEO,
        ),
        TaskSpec(
            Task.TEXT_TO_IMAGE,
            "image",
            (),
            "create an image from text",
            prepare="text_only",
            grammar=(CFI, None),
        ),
        TaskSpec(
            Task.TEXT_TO_VIDEO,
            "video",
            (),
            "create a video from text",
            prepare="text_only",
            grammar=(CFV, None),
            chain=True,
        ),
        TaskSpec(
            Task.IMAGE_EDIT,
            "image",
            (RoleRule(Role.SOURCE, _I), RoleRule(Role.MASK, _I, 0, 1)),
            "repaint the white area of `mask` in `source`, or the object named by `target` (or the "
            "prompt) when no mask is given",
            prepare="image_edit",
            grammar=(CFI, BOEDIT),
            size_from=(Role.SOURCE,),
            params=("target",),
        ),
        TaskSpec(
            Task.IMAGE_CONTROL,
            "image",
            (RoleRule(Role.CONTROL, _I),),
            "create an image following the pose, depth, edges, motion or grey of a control image",
            prepare="image_control",
            grammar=(CFI, CTRL),
            size_from=(Role.CONTROL,),
            params=("control_kind",),
            note=CONTROL_NOTE,
        ),
        TaskSpec(
            Task.IMAGE_REFERENCE,
            "image",
            (RoleRule(Role.REFERENCE, _I, 1, 3),),
            "create an image of the subject(s)/face(s) in the reference images",
            prepare="reference",
            grammar=(CFI, REF),
        ),
        TaskSpec(
            Task.IMAGE_TO_VIDEO,
            "video",
            (RoleRule(Role.FIRST_FRAME, _I, 0, 1), RoleRule(Role.LAST_FRAME, _I, 0, 1)),
            "animate an image given as the first or the last frame",
            prepare="anchor_frames",
            grammar=(CFV, BOFIDX),
            total_inputs=(1, 1),
            note="needs exactly one image, as first_frame or last_frame (both ends: use first_last_to_video)",
            size_from=(Role.FIRST_FRAME, Role.LAST_FRAME),
            chain=True,
        ),
        TaskSpec(
            Task.FIRST_LAST_TO_VIDEO,
            "video",
            (RoleRule(Role.FIRST_FRAME, _I), RoleRule(Role.LAST_FRAME, _I)),
            "a video that starts at one image and ends at another",
            prepare="anchor_frames",
            size_from=(Role.FIRST_FRAME, Role.LAST_FRAME),
        ),
        TaskSpec(
            Task.VIDEO_REFERENCE,
            "video",
            (RoleRule(Role.REFERENCE, _I, 1, 3),),
            "create a video of the subject(s) in the reference images",
            prepare="reference",
            grammar=(CFV, REF),
        ),
        TaskSpec(
            Task.VIDEO_EDIT,
            "video",
            (RoleRule(Role.SOURCE, _V), RoleRule(Role.MASK, _IV, 0, 1)),
            "repaint a region of `source` video: the white area of `mask` (video, or image for every "
            "frame), or the object named by `target` (or the prompt), tracked, when no mask is given",
            prepare="video_edit",
            grammar=(CFV, BOEDIT),
            size_from=(Role.SOURCE,),
            length_from=Role.SOURCE,
            params=("target",),
        ),
        TaskSpec(
            Task.VIDEO_CONTROL,
            "video",
            (RoleRule(Role.CONTROL, _V),),
            "create a video following the pose, depth, edges, motion or grey of a control video",
            prepare="video_control",
            grammar=(CFV, CTRL),
            size_from=(Role.CONTROL,),
            length_from=Role.CONTROL,
            params=("control_kind",),
            note=CONTROL_NOTE,
        ),
        TaskSpec(
            Task.IMAGE_OUTPAINT,
            "image",
            (RoleRule(Role.SOURCE, _I),),
            "extend an image's canvas by margins or to a larger size",
            prepare="outpaint",
            params=("margins",),
            note="takes `margins` (pixels added left/top/right/bottom) or a larger width/height",
            size_from=(Role.SOURCE,),
        ),
        TaskSpec(
            Task.VIDEO_OUTPAINT,
            "video",
            (RoleRule(Role.SOURCE, _V),),
            "extend a video's canvas by margins or to a larger size",
            prepare="outpaint",
            params=("margins",),
            note="takes `margins` (pixels added left/top/right/bottom) or a larger width/height",
            size_from=(Role.SOURCE,),
            length_from=Role.SOURCE,
        ),
        TaskSpec(
            Task.VIDEO_EXTEND,
            "video",
            (RoleRule(Role.SOURCE, _V),),
            "continue a clip from its last frames",
            prepare="video_extend",
            params=("context_frames",),
            note=f"keeps `context_frames` frames of the source (default {DEFAULT_CONTEXT_FRAMES})",
            size_from=(Role.SOURCE,),
            chain=True,
        ),
    )
}

UNDERSTANDING_TASKS = frozenset(t for t, s in TASKS.items() if s.understanding)
GENERATION_TASKS = frozenset(t for t, s in TASKS.items() if not s.understanding)
#: Each role's own parameter name in typed requests (``reference`` takes a list).
ROLES_IN_REQUESTS: tuple[Role, ...] = tuple(r for r in Role if r is not Role.QUERY)


def understanding_task(kinds: tuple[MediaKind, ...] | list[MediaKind]) -> Task:
    """The understanding task for files of these kinds: any video → video, images → image, none → text.

    The one statement of this rule; every planner asks it.
    """
    if MediaKind.VIDEO in kinds:
        return Task.VIDEO_UNDERSTANDING
    return Task.IMAGE_UNDERSTANDING if kinds else Task.TEXT_UNDERSTANDING


def tasks_text(*, include_understanding: bool = False) -> str:
    """The task list as tool descriptions and CLI help show it, one line per row."""
    lines = []
    for spec in TASKS.values():
        if spec.understanding and not include_understanding:
            continue
        roles = ", ".join(
            f"{r.role.value} ({'/'.join(k.value for k in r.kinds)}{r.count_text()})" for r in spec.roles
        )
        extra = f" {spec.note[0].upper()}{spec.note[1:]}." if spec.note else ""
        lines.append(
            f"- {spec.task.value} → {spec.output}: {spec.summary}. Inputs: {roles or 'none'}.{extra}"
        )
    return "\n".join(lines)


def tasks_brief(*, include_understanding: bool = False) -> str:
    """The task list in one short line per row, for tool descriptions: the inputs by role and kind
    (``?``: optional, ``1-3``: how many), the output, and the parameters only the task takes.
    The rules a row's ``note`` and ``summary`` add are in :func:`tasks_text` (the server's guide)."""
    lines = []
    for spec in TASKS.values():
        if spec.understanding and not include_understanding:
            continue
        roles = ", ".join(
            f"{r.role.value} {'/'.join(k.value for k in r.kinds)}"
            + ("?" if (r.min, r.max) == (0, 1) else "" if r.max == 1 else f" {r.min}-{r.max}")
            for r in spec.roles
        )
        own = f" (+{', '.join(spec.params)})" if spec.params else ""
        lines.append(f"- {spec.task.value}: {roles or 'text'} → {spec.output}{own}")
    return "\n".join(lines)

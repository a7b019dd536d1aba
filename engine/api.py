"""What callers send: the typed requests of ``understand``, ``generate`` and ``auto``.

Each bound comes from :class:`~engine.bounds.Bounds` (derived once from the configured
:class:`~engine.config.Limits`, the same bounds :func:`~engine.plan.check_plan` holds planners'
plans to) or from the module that owns the fact (a path's length from :mod:`engine.inputs`, the
most references from the task table); every free-text field has a ``maxLength``, so a 10 MB
argument is refused by its length alone. The MCP tool schemas and the CLI's ``generate`` flags
are derived from these models, and the Python API validates with them, so a request gets the
same answer through all three. The models are strict: an unknown field is
refused by name (with the closest known one suggested), ``true`` is not a number, and a parameter
the chosen task does not take is refused with the task's list of parameters
(:meth:`GenerateRequest.to_plan`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from .bounds import DEFAULT_CONTEXT_FRAMES, IMAGE_FRAMES, MAX_SEED, Bounds
from .config import EngineConfig, Limits
from .control import JobControl
from .errors import InputRefused, InvalidRequest, invalid_request
from .inputs import MAX_PATH_CHARS, InputPolicy
from .plan import (
    BasePlan,
    Checked,
    CheckedPlan,
    Margins,
    MediaInput,
    Plan,
    Shapes,
    check_params,
    check_plan,
    check_roles,
    plan_from_params,
    shapes_of,
)
from .request import Request, parse_request
from .results import AutoResult, GenerateResult, LoraChoice, Sampling, UnderstandResult
from .source import Source, close_all
from .tasks import GENERATION_TASKS, ROLES_IN_REQUESTS, TASKS
from .vocab import CONTROL_KINDS, ControlKind, MediaKind, Role, Task

#: Most reference images (the task table's image_reference / video_reference rows).
MAX_REFERENCES = max(r.max for s in TASKS.values() for r in s.roles if r.role is Role.REFERENCE)

#: What each role means, for schemas and CLI help. Words for the calling model: what the field is,
#: never a bound the schema states already (the CLI's help adds those).
ROLE_HELP: dict[Role, str] = {
    Role.SOURCE: "the image/video to edit, outpaint or extend",
    Role.MASK: "white = regenerate, black = keep",
    Role.REFERENCE: "subject/face images",
    Role.CONTROL: "pose/depth/edges image or video, or a plain one to extract it from",
    Role.FIRST_FRAME: "image the video starts on",
    Role.LAST_FRAME: "image the video ends on",
}


def size_help(limits: Limits, side: Literal["width", "height"]) -> str:
    """What width or height means, with the configured default."""
    default = limits.default_width if side == "width" else limits.default_height
    return f"pixels, a multiple of 16 (unset: the source's aspect, else {default})"


InputFile = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_PATH_CHARS,
        description="absolute path under the allowed roots, or unison://outputs/<name>",
    ),
]


class _Strict(BaseModel):
    # Strict on the model and on each field: a schema derived from these fields (an MCP tool's
    # arguments) is as strict as the model itself.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _optional(kind: Any, description: str, **bounds: Any) -> tuple[Any, Any]:
    """An optional request field (``None``: the configured default), strict, with its bounds."""
    return (kind | None, Field(None, strict=True, description=description, **bounds))


def sampling_fields(limits: Limits) -> dict[str, Any]:
    """The per-request sampling overrides every generating tool takes (``None``: the default)."""
    bounds = Bounds.of(limits)
    count = bounds.count
    return {
        "steps": _optional(int, "denoising steps", **bounds.steps.schema()),
        "guidance": _optional(float, "guidance scale (default 5)", ge=0, le=30),
        "seed": _optional(int, "same seed, same result", ge=0, le=MAX_SEED),
        "negative_prompt": _optional(str, "what to avoid", **bounds.prompt.lengths()),
        "count": _optional(int, "candidates, from consecutive seeds", **count.schema()),
        "preserve": _optional(bool, "paste the source back where the task keeps it (default true)"),
        "turbo": _optional(bool, "fast mode: the step-distillation LoRA (default: the server's)"),
        "loras": _optional(list[LoraChoice], "configured LoRAs to apply", max_length=8),
    }


def _prompt(limits: Limits, description: str) -> Any:
    # Never empty; at most the bound's length.
    lengths = Bounds.of(limits).prompt.lengths()
    return (str, Field(strict=True, min_length=1, **lengths, description=description))


def _media(limits: Limits) -> Any:
    return (
        list[InputFile],
        Field(
            strict=True,
            default_factory=list,
            **Bounds.of(limits).inputs.lengths(),
            description="input files, in order",
        ),
    )


class UnderstandRequest(_Strict):
    """An ``understand`` call."""

    prompt: str
    media: list[str] = []
    max_new_tokens: int | None = None


class AutoRequest(_Strict):
    """An ``auto`` call."""

    prompt: str
    media: list[str] = []
    dry_run: bool = False
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    count: int | None = None
    preserve: bool | None = None
    turbo: bool | None = None
    loras: list[LoraChoice] | None = None

    def sampling(self) -> Sampling:
        return Sampling(
            steps=self.steps,
            guidance=self.guidance,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
            count=self.count,
            preserve=self.preserve,
            turbo=self.turbo,
            loras=self.loras,
        )


class GenerateRequest(_Strict):
    """A ``generate`` call: one typed task."""

    task: Task
    prompt: str
    source: str | None = None
    mask: str | None = None
    reference: list[str] = []
    control: str | None = None
    first_frame: str | None = None
    last_frame: str | None = None
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    duration_s: float | None = None
    fps: float | None = None
    margins: Margins | None = None
    context_frames: int | None = None
    control_kind: ControlKind | None = None
    target: str | None = None
    steps: int | None = None
    guidance: float | None = None
    seed: int | None = None
    negative_prompt: str | None = None
    count: int | None = None
    preserve: bool | None = None
    conditioning_scale: float | None = None
    turbo: bool | None = None
    loras: list[LoraChoice] | None = None

    def inputs(self) -> list[tuple[str, Role]]:
        """The input files with their roles, in the order of the fields (references last)."""
        out: list[tuple[str, Role]] = []
        for role in ROLES_IN_REQUESTS:
            value = getattr(self, role.value)
            for path in value if isinstance(value, list) else [value] if value is not None else []:
                out.append((path, role))
        return out

    def sampling(self) -> Sampling:
        return Sampling(
            steps=self.steps,
            guidance=self.guidance,
            seed=self.seed,
            negative_prompt=self.negative_prompt,
            conditioning_scale=self.conditioning_scale,
            count=self.count,
            preserve=self.preserve,
            turbo=self.turbo,
            loras=self.loras,
        )

    def to_plan(self, limits: Limits, shapes: Shapes | None = None) -> Checked:
        """The checked plan; ``shapes`` (the inputs' headers by path) give source-aware defaults."""
        return check_plan(self.unchecked_plan(limits), limits, shapes)

    def unchecked_plan(self, limits: Limits) -> Plan:
        """The plan the arguments say, its inputs by the paths as given, with the checks that need
        no file (parameters and roles); :func:`admit` checks it once the inputs are probed.

        A parameter the task does not take (margins on image_edit, fps on an image, a mask on
        text_to_image...) is refused with the task's list of parameters instead of being dropped.
        """
        given = {k: getattr(self, k) for k in self.model_fields_set if getattr(self, k) not in (None, [])}
        given.pop("task", None)
        check_params(TASKS[self.task], given)
        plan = plan_from_params(
            self.task,
            self.prompt,
            self.inputs(),
            width=self.width,
            height=self.height,
            num_frames=self.num_frames,
            duration_s=self.duration_s,
            fps=self.fps,
            margins=self.margins,
            context_frames=self.context_frames,
            control_kind=self.control_kind,
            target=self.target,
            limits=limits,
        )
        check_roles(plan)
        return plan


def _generate_fields(limits: Limits) -> dict[str, Any]:
    gen_tasks = tuple(t.value for t in Task if t in GENERATION_TASKS)
    roles: dict[str, Any] = {}
    for role in ROLES_IN_REQUESTS:
        if role is Role.REFERENCE:
            roles[role.value] = (
                list[InputFile],
                Field(
                    strict=True, default_factory=list, max_length=MAX_REFERENCES, description=ROLE_HELP[role]
                ),
            )
        else:
            roles[role.value] = _optional(InputFile, ROLE_HELP[role])
    # Larger sizes ("1080p", "4K") are scaled down into the limits by check_plan, not refused;
    # absurd ones are refused here.
    bounds = Bounds.of(limits)
    side = bounds.side.schema()
    fps = bounds.default_fps
    return {
        # Declared as the Literal of the generation tasks, so the schema lists them; the value
        # is then the Task enum (strict mode would refuse the plain string otherwise).
        "task": (Literal[gen_tasks], Field()),  # type: ignore[valid-type]
        "prompt": _prompt(limits, "what the result shows"),
        **roles,
        "width": _optional(int, size_help(limits, "width"), **side),
        "height": _optional(int, size_help(limits, "height"), **side),
        "num_frames": _optional(
            int,
            f"video: 4k+1 (17, 33, 49, 81…; others rounded); image: {IMAGE_FRAMES}",
            **bounds.num_frames.schema(),
        ),
        "duration_s": _optional(float, "video seconds, instead of num_frames", **bounds.duration_s.schema()),
        "fps": _optional(float, f"video frame rate (default {fps:g})", **bounds.fps.schema()),
        "margins": _optional(Margins, "outpaint: pixels added on each side"),
        "context_frames": _optional(
            int,
            f"video_extend: source frames kept as context (default {DEFAULT_CONTEXT_FRAMES})",
            **bounds.context_frames.schema(),
        ),
        # A Literal takes no "strict" (its values are exact already).
        "control_kind": (
            Literal[CONTROL_KINDS] | None,  # type: ignore[valid-type]
            Field(None, description="what to follow (raw: the input is a control signal already)"),
        ),
        "target": _optional(
            str,
            "edit without a mask: the object to repaint (default: from the prompt)",
            min_length=1,
            max_length=bounds.target.high,
        ),
        **sampling_fields(limits),
        "conditioning_scale": _optional(float, "strength of the source/control (default 1)", ge=0, le=2),
    }


@lru_cache(maxsize=16)
def _models(limits_json: str) -> dict[str, type[_Strict]]:
    limits = Limits.model_validate_json(limits_json)
    gen = _generate_fields(limits)

    understand = create_model(
        "UnderstandArguments",
        __base__=UnderstandRequest,
        prompt=_prompt(limits, "the question"),
        media=_media(limits),
        max_new_tokens=_optional(int, "longest answer in tokens", ge=1, le=4096),
    )
    auto = create_model(
        "AutoArguments",
        __base__=AutoRequest,
        prompt=_prompt(limits, "the request; files inline as ###path###"),
        media=_media(limits),
        dry_run=(bool, Field(False, strict=True, description="only plan; run nothing")),
        **sampling_fields(limits),
    )
    generate = create_model("GenerateArguments", __base__=GenerateRequest, **gen)
    return {"understand": understand, "generate": generate, "auto": auto}


def request_model(tool: Literal["understand", "generate", "auto"], limits: Limits) -> type[_Strict]:
    """The request model of ``tool`` with bounds from ``limits`` (the schema MCP and the CLI show)."""
    return _models(limits.model_dump_json())[tool]


def parse_arguments(
    tool: Literal["understand", "generate", "auto"], limits: Limits, arguments: Mapping[str, Any]
):
    """Validate a call's raw arguments (JSON-like) into its request model, or :class:`InvalidRequest`.

    JSON has no enums: ``task`` arrives as a string and is taken as the task it names.
    """
    model = request_model(tool, limits)
    try:
        return model.model_validate(dict(arguments))
    except ValidationError as exc:
        raise invalid_request(exc, model.model_fields) from None


# ---------------------------------------------------------------------------------------------
# Admission: a request checked before it waits for the GPU, and the engine's protocol.

AnyRequest = UnderstandRequest | GenerateRequest | AutoRequest
AnyResult = UnderstandResult | GenerateResult | AutoResult


@dataclass(eq=False)
class Admitted:
    """A request that passed every check that needs no model, with its input files opened once
    and their headers probed: what waits in the job queue.

    ``generate``: ``plan`` is the checked plan. ``understand`` / ``auto``: ``parsed`` is the request
    as the planners read it, its ``###path###`` markers read once (here) and every file by its real
    path. :meth:`EngineAPI.run` decodes from ``sources`` (by the paths the plan or ``parsed``
    names) and closes them when it ends. ``request`` is the call's arguments; ``None`` for a plan
    given to the Python API (:func:`admit_plan`). ``queued`` is False for work that uses no model
    (a dry run of the rules planner): it may run at once.
    """

    tool: Literal["understand", "generate", "auto"]
    request: AnyRequest | None
    plan: CheckedPlan | None = None
    parsed: Request | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    queued: bool = True

    def sampling(self) -> Sampling | None:
        """The call's sampling overrides (``generate`` / ``auto``), else ``None``."""
        return self.request.sampling() if isinstance(self.request, (GenerateRequest, AutoRequest)) else None

    def close(self) -> None:
        close_all(list(self.sources.values()))

    def __enter__(self) -> Admitted:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@runtime_checkable
class EngineAPI(Protocol):
    """What the MCP layer (and any other front end) needs of an engine.

    :class:`engine.engine.Engine` implements it; the tests' fake engine does too, and a test
    checks both against this protocol so the fake cannot drift.
    """

    config: EngineConfig
    #: The input path policy (the server narrows it to its allowed roots).
    inputs: InputPolicy

    def status(self) -> dict[str, Any]:
        """What is configured and loaded."""
        ...

    def preload(self) -> None:
        """Load every configured model now."""
        ...

    def unload(self) -> bool:
        """Free the models it loaded (keep-alive ran out); True when something was freed."""
        ...

    def admit(self, request: AnyRequest) -> Admitted:
        """Check a request and open its inputs (no model work); raises the engine's errors."""
        ...

    def run(self, admitted: Admitted, *, control: JobControl | None = None) -> AnyResult:
        """Do the work of an admitted request (model work, serialised); closes its sources."""
        ...


def admit(request: AnyRequest, config: EngineConfig, inputs: InputPolicy) -> Admitted:
    """Check a request and open its inputs once (no model work): what waits in the job queue.

    The checks run in order of cost: the arguments and (``generate``) the plan first, then
    the input count, then each file: path policy, one open, header probe with the limits.
    """
    if isinstance(request, GenerateRequest):
        return _admit_generate(request, config.limits, inputs)
    if not isinstance(request, (UnderstandRequest, AutoRequest)):
        raise InvalidRequest.for_field("request", type(request).__name__, "is not a request model")
    # The one reading of the ###path### markers: counted, opened and planned from this.
    parsed = parse_request(request.prompt, request.media)
    files = Bounds.of(config.limits).inputs
    if not files.holds(len(parsed.media)):
        # Counted before any file is opened.
        raise InvalidRequest.for_field(
            "media", len(parsed.media), f"{files.rule}, ###path### markers and media together"
        )
    marked = len(parsed.media) - len(request.media)
    fields = ["prompt marker"] * marked + [f"media[{i}]" for i in range(len(request.media))]
    opened: list[Source] = []
    try:
        for (path, kind), name in zip(parsed.media, fields, strict=True):
            opened.append(_open_as(inputs, path, kind, name))
        for source in opened:
            inputs.probe(source)
    except BaseException:
        close_all(opened)
        raise
    tool = "understand" if isinstance(request, UnderstandRequest) else "auto"
    # A dry run of the rules planner uses no model: it need not wait behind GPU jobs.
    queued = not (tool == "auto" and request.dry_run and config.backend == "rules")
    real = tuple((str(s.path), s.kind) for s in opened)
    return Admitted(
        tool,
        request,
        parsed=Request(text=parsed.text, prompt=parsed.prompt, media=real),
        sources={str(s.path): s for s in opened},
        queued=queued,
    )


def _admit_generate(request: GenerateRequest, limits: Limits, inputs: InputPolicy) -> Admitted:
    """A ``generate`` call: its plan from the arguments, each input opened (its real path in the
    plan), then the plan checked once with the inputs' headers."""
    plan = request.unchecked_plan(limits)  # paths as given; the real ones replace them below
    sources: dict[str, Source] = {}
    try:
        opened: list[MediaInput] = []
        for m in plan.inputs:
            name = m.role.value
            if m.role is Role.REFERENCE:
                name += f"[{sum(o.role is Role.REFERENCE for o in opened)}]"
            source = _open_as(inputs, m.path, m.kind, name)
            sources[str(source.path)] = source
            inputs.probe(source)
            opened.append(m.model_copy(update={"path": str(source.path)}))
        # Checked once, now that the inputs' headers give the source-aware defaults.
        checked = check_plan(plan.model_copy(update={"inputs": opened}), limits, shapes_of(sources))
    except BaseException:
        close_all(list(sources.values()))
        raise
    return Admitted("generate", request, plan=checked, sources=sources)


def _open_as(inputs: InputPolicy, path: str, kind: MediaKind, name: str) -> Source:
    """``path`` opened through the policy; refused (and closed) when its real file is of another
    kind than its name says (a link ``a.png`` to a video), as every reader would disagree."""
    source = inputs.open(path, field=name)
    if source.kind is not kind:
        source.close()
        raise InputRefused(
            f"{name}={source.name}: its real file is {_a(source.kind)}, not {_a(kind)}",
            path=source.name,
        )
    return source


def _a(kind: MediaKind) -> str:
    return f"an {kind.value}" if kind is MediaKind.IMAGE else f"a {kind.value}"


def admit_plan(plan: BasePlan, config: EngineConfig, inputs: InputPolicy) -> Admitted:
    """A plan given to the Python API (``Engine.generate``), admitted as a ``generate`` call is:
    each input opened once through ``inputs`` and probed, then the plan checked once with their
    headers (a :class:`CheckedPlan` is taken as it is). Its inputs keep the paths as given."""
    if plan.spec.understanding:
        raise InvalidRequest.for_field("task", plan.task.value, "is an understanding task: use understand")
    sources: dict[str, Source] = {}
    try:
        for m in plan.inputs:
            if m.path not in sources:
                sources[m.path] = inputs.open_probed(m.path)
        checked = check_plan(plan, config.limits, shapes_of(sources))
    except BaseException:
        close_all(list(sources.values()))
        raise
    if not isinstance(checked, CheckedPlan):  # pragma: no cover - a generation task checks to one
        raise InvalidRequest.for_field("task", plan.task.value, "is not a generation task")
    return Admitted("generate", None, plan=checked, sources=sources)

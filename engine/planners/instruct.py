"""The ``instruct`` backend: the plain Qwen2.5-VL-Instruct model answers a small JSON plan.

It plans with the base model even when the Unison adapter is loaded (the adapter disabled, the
base tokenizer: :meth:`~engine.planners.qwen_model.QwenModel.using`), while the projector's features
for the same request come from the Unison planner. Only under ``planner_backend='unison'``, where
the adapter is merged and the plain model is not in memory, does it plan on the merged model, and
the plan's notes say so.

:func:`instruct_prompt` asks for one JSON object (task, size, frames, a role per numbered file),
listing the tasks from the task table; :func:`plan_from_json` turns the answer into a plan (pure,
lenient where the meaning is clear); :func:`plan_with_retry` asks once more with the error when
the first answer cannot be used. :class:`InstructBackend` runs them on the loaded model, decoding
under :func:`plan_schema`, the JSON schema of the plans this request can have (every task of the
table whose roles its files can fill, each file by index), so the answer is one object that parses.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from ..bounds import IMAGE_FRAMES, round_frames
from ..errors import InvalidRequest, PlannerError, shown
from ..plan import MediaInput, Plan, check_roles
from ..tasks import TASKS, understanding_task
from ..vocab import IMGPAD, VIDPAD, MediaKind, Role, Task
from . import PlanOutput
from .choices import Assignment, frame_counts, side_range, tasks_for
from .constrain import Grammar

if TYPE_CHECKING:
    from ..config import Limits
    from ..request import Request
    from .qwen_model import QwenModel

log = logging.getLogger(__name__)


class _JsonInput(BaseModel):
    index: int
    role: Role


class _JsonPlan(BaseModel):
    task: Task
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    inputs: list[_JsonInput] = []


def json_values(text: str) -> list[Any]:
    """Every JSON value that starts at a ``{`` or ``[`` in ``text`` (code fences tolerated)."""
    decoder = json.JSONDecoder()
    found = []
    i = 0
    while True:
        starts = [j for j in (text.find("{", i), text.find("[", i)) if j >= 0]
        if not starts:
            return found
        j = min(starts)
        try:
            value, end = decoder.raw_decode(text, j)
        except json.JSONDecodeError:
            i = j + 1
            continue
        found.append(value)
        i = end


def _parse_json_plan(text: str) -> _JsonPlan:
    """The answer's plan object, schema-checked; errors worded to be fed back to the model."""
    objects = [v for v in json_values(text) if isinstance(v, dict)]
    if not objects:
        raise PlannerError(f"no JSON object in the reply: {shown(text)}")
    data = next((o for o in objects if "task" in o), objects[0])
    try:
        return _JsonPlan.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}={shown(err.get('input'))}: {err['msg']}"
            for err in exc.errors()
        )
        if any(err["loc"][:1] == ("task",) for err in exc.errors()):
            problems += "; task must be one of " + ", ".join(t.value for t in Task)
        raise PlannerError(f"the JSON plan does not fit the schema: {problems}") from None


def _json_inputs(parsed: _JsonPlan, files: list[tuple[str, MediaKind]]) -> list[MediaInput]:
    """The plan's inputs: each ``inputs[].index`` a file of the request, each file one role."""
    inputs = []
    seen: set[int] = set()
    for n, item in enumerate(parsed.inputs):
        if not 0 <= item.index < len(files):
            rule = f"the request has {len(files)} file(s)" + (
                f", numbered 0 to {len(files) - 1}" if files else ""
            )
            raise PlannerError(f"inputs[{n}].index={item.index}: {rule}")
        if item.index in seen:
            raise PlannerError(f"inputs[{n}].index={item.index}: each file may have one role only")
        seen.add(item.index)
        path, kind = files[item.index]
        inputs.append(MediaInput(path=path, kind=kind, role=item.role))
    return inputs


def plan_from_json(text: str, media: Sequence[tuple[str, MediaKind | str]], *, prompt: str) -> Plan:
    """Turn the instruct backend's JSON answer into a :class:`Plan` (not yet ``check_plan``-ed).

    ``media`` are the request's files in order; ``inputs[].index`` refers to them. Lenient where
    the meaning is clear (code fences, text around the object, an understanding task named for
    the wrong kind of file, a frame count on an image task); anything else raises
    :class:`PlannerError` naming the field, the value and the rule, worded so it can be fed back
    to the model.
    """
    files = [(str(p), MediaKind(k)) for p, k in media]
    parsed = _parse_json_plan(text)
    spec = TASKS[parsed.task]
    if spec.understanding:
        # Understanding reads every file; which kind of understanding follows from the files.
        task = understanding_task([k for _, k in files])
        inputs = [MediaInput(path=p, kind=k, role=Role.QUERY) for p, k in files]
        return Plan(task=task, prompt=prompt, inputs=inputs, raw=text)

    # Any count on an image: ignored.
    num_frames = IMAGE_FRAMES if spec.output == "image" else parsed.num_frames
    # Values only a model would get wrong are its error (retried), not the user's: check them here.
    for name, value in (("width", parsed.width), ("height", parsed.height), ("num_frames", num_frames)):
        if value is not None and value <= 0:
            raise PlannerError(f"{name}={value}: must be a positive whole number or null")
    notes: list[str] = []
    if num_frames is not None:
        # The meaning is clear (diffusers rounds such counts too): onto the 4k+1 grid, noted.
        num_frames = round_frames(num_frames, notes)
    plan = Plan(
        task=parsed.task,
        prompt=prompt,
        inputs=_json_inputs(parsed, files),
        width=parsed.width,
        height=parsed.height,
        num_frames=num_frames,
        raw=text,
        notes=notes,
    )
    try:
        check_roles(plan)
    except InvalidRequest as exc:
        raise PlannerError(f"the JSON plan's inputs do not fit task {parsed.task.value}: {exc}") from None
    return plan


def plan_schema(request: Request, limits: Limits, tasks: frozenset[Task] | None = None) -> dict[str, Any]:
    """The JSON schema of the plans this request can have: one branch per task (``tasks``: among
    those) whose roles its files can fill, with every key of :func:`instruct_prompt`'s form.

    Sizes are whole numbers within the side bound or null; a video's frame count is 4k+1 within the
    task's bounds or null (an image's is null); ``inputs`` is one of the ways the files fill the
    task's roles (:func:`~engine.planners.choices.role_choices`), each file by its index, so an
    answer that fits the schema always parses (:func:`plan_from_json`) and checks. Raises
    :class:`PlannerError` when no task of ``tasks`` fits the files.
    """
    files = [(p, MediaKind(k)) for p, k in request.media]
    low, high = side_range(limits)
    null = {"type": "null"}
    branches = []
    for task, choices in tasks_for(files, request.prompt, tasks).items():
        spec = TASKS[task]
        side = (
            null
            if spec.understanding
            else {"anyOf": [{"type": "integer", "minimum": low, "maximum": high}, null]}
        )
        counts = frame_counts(spec, limits)
        frames = {"anyOf": [{"enum": counts}, null]} if counts else null
        properties = {
            "task": {"const": task.value},
            "width": side,
            "height": side,
            "num_frames": frames,
            # Understanding reads every file whatever the answer lists (plan_from_json): none.
            "inputs": _inputs_schema(())
            if spec.understanding
            else {"anyOf": [_inputs_schema(a) for a in choices]},
        }
        branches.append(
            {
                "type": "object",
                "properties": properties,
                "required": list(properties),
                "additionalProperties": False,
            }
        )
    if not branches:
        wanted = ", ".join(sorted(t.value for t in tasks or ()))
        raise PlannerError(f"no task among {wanted} fits the request's files ({len(files)})")
    return {"anyOf": branches}


def _inputs_schema(assignment: Assignment) -> dict[str, Any]:
    items = [
        {
            "type": "object",
            "properties": {"index": {"const": i}, "role": {"const": role.value}},
            "required": ["index", "role"],
            "additionalProperties": False,
        }
        for i, role in assignment
    ]
    n = len(items)
    return {"type": "array", "prefixItems": items, "items": False, "minItems": n, "maxItems": n}


def instruct_prompt(request: Request, tasks: frozenset[Task] | None = None) -> str:
    """The instruct backend's question: the schema, the tasks (``tasks``: only those), the numbered
    files, the request."""
    kinds = [k for _, k in request.media]
    counter = iter(range(len(kinds)))

    def label(match: re.Match) -> str:
        i = next(counter, None)
        return match.group(0) if i is None else f"[file {i}: {kinds[i].value}]"

    text = re.sub(f"{re.escape(IMGPAD)}|{re.escape(VIDPAD)}", label, request.text)
    lines = []
    for spec in TASKS.values():
        if tasks is not None and spec.task not in tasks:
            continue
        roles = ", ".join(f"{r.role.value} ({'/'.join(k.value for k in r.kinds)})" for r in spec.roles)
        lines.append(f"- {spec.task.value}: {spec.summary}" + (f"; inputs: {roles}" if roles else ""))
    files = "\n".join(f"- file {i}: {k.value}" for i, k in enumerate(kinds)) or "- none"
    return (
        "You plan requests for an image and video generator. Choose the task, the output size and "
        "the role of each input file. Reply with only one JSON object of this form:\n"
        '{"task": "<task>", "width": <pixels or null>, "height": <pixels or null>, '
        '"num_frames": <4k+1 frames for video, or null>, "inputs": [{"index": <file number>, "role": "<role>"}]}\n'
        "Tasks:\n" + "\n".join(lines) + "\n"
        f"Input files:\n{files}\n"
        f"Request: {text}"
    )


def plan_with_retry(
    ask: Callable[[list[dict]], str], request: Request, tasks: frozenset[Task] | None = None
) -> Plan:
    """Ask for a JSON plan; on a bad answer ask once more with the error, then give up.

    ``ask(messages)`` returns the model's reply to a chat (under the schema, an answer is
    usable unless ``check_plan`` refuses it later). Raises :class:`PlannerError` naming what was
    wrong with both answers.
    """
    messages: list[dict] = [{"role": "user", "content": instruct_prompt(request, tasks)}]
    first = ask(messages)
    try:
        return plan_from_json(first, request.media, prompt=request.prompt)
    except PlannerError as exc:
        first_error = exc
    log.info("instruct planner answer rejected (%s); asking again", first_error)
    messages += [
        {"role": "assistant", "content": first},
        {
            "role": "user",
            "content": f"That answer cannot be used: {first_error}. Reply again with only the JSON object.",
        },
    ]
    second = ask(messages)
    try:
        return plan_from_json(second, request.media, prompt=request.prompt)
    except PlannerError as exc:
        raise PlannerError(
            f"the instruct planner gave no usable plan in 2 attempts: first answer: {first_error}; "
            f"second answer: {exc}"
        ) from None


class InstructBackend:
    """Plans with ``qwen``'s plain instruct model (a :class:`~engine.planners.Planner`)."""

    name = "instruct"

    def __init__(self, qwen: QwenModel, *, constrained: bool = True):
        self.qwen = qwen
        #: Decode under the request's schema (off only to measure what it costs: benchmarks).
        self.constrained = constrained

    def __call__(
        self, request: Request, *, want_features: bool = False, tasks: frozenset[Task] | None = None
    ) -> PlanOutput:
        """Plan ``request``; ``tasks`` narrows the schema (and the prompt's list) to those tasks."""
        q = self.qwen
        q.load()
        grammar = Grammar(schema=plan_schema(request, q.config.limits, tasks)) if self.constrained else None

        def ask(messages: list[dict]) -> str:
            return q.reply(messages, q.instruct_max_new_tokens, grammar=grammar)

        if q.base_available:
            with q.using(adapter=False):
                plan = plan_with_retry(ask, request, tasks)
        else:
            log.warning("instruct plan on the Unison-merged model: the plain model is not loaded")
            plan = plan_with_retry(ask, request, tasks)
            plan.notes.append(
                "the instruct planner ran on Qwen2.5-VL with the Unison adapter merged "
                "(planner_backend 'unison' merges it): set planner_backend 'instruct' to plan with "
                "the plain model"
            )
        # The JSON answer is not the request: features need their own forward, on the Unison
        # planner (the projector's model), over the request as it reads it.
        features = q.features(request) if want_features and q.can_project else None
        return PlanOutput(plan=plan, features=features)

"""What a model planner may write for one request: the choices its constrained decoding offers.

Both model backends decode under a grammar built per request: the Unison token language
(:func:`engine.grammar.unison_grammar`) and the JSON plan's schema
(:func:`engine.planners.instruct.plan_schema`). They offer the same choices, read here from the
task table and the limits, so that a plan either grammar lets through parses and passes
:func:`~engine.plan.check_plan`:

- **sizes**: whole numbers of pixels within the side bound ``check_plan`` takes (it rounds them to
  16 and scales sizes above the limits down, with a note);
- **frame counts**: 4k+1 counts within the task's bounds (a task made as a chain of windows: up to
  the longest chain at the default rate);
- **inputs**: each way the request's files can fill the task's roles, judged by
  :func:`~engine.plan.check_roles`.

Every choice is a plan the engine runs: besides parsing and checking, a generation plan of a request
with files names at least one of them (:func:`runs`; :func:`engine.planners.route.route` never runs
one that names none, so offering it would only hand the request to the rules planner after the
model's work).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations, product

from ..bounds import Bounds, ceil_4k1, floor_4k1, round16
from ..config import Limits
from ..errors import InvalidRequest
from ..plan import MediaInput, Plan, check_roles
from ..tasks import TASKS, TaskSpec, understanding_task
from ..vocab import MediaKind, Role, Task

#: One way to fill a task's roles: (file index, role) pairs, roles in the row's order.
Assignment = tuple[tuple[int, Role], ...]
Files = Sequence[tuple[str, MediaKind]]


def side_range(limits: Limits) -> tuple[int, int]:
    """The widths and heights a planner may write: ``check_plan``'s side bound (the smallest value
    that still rounds to at least the smallest side, up to the largest it scales down)."""
    bound = Bounds.of(limits).side
    low = int(bound.low or 1)
    while round16(low) < low:  # a value rounded down below the smallest side is refused
        low += 1
    return low, int(bound.high or low)


def frame_counts(spec: TaskSpec, limits: Limits) -> list[int]:
    """The 4k+1 frame counts ``check_plan`` takes for ``spec``'s output (none for an image)."""
    if spec.output != "video":
        return []
    bounds = Bounds.of(limits)
    longest = bounds.longest(bounds.default_fps) if spec.chain else limits.max_frames
    return list(range(ceil_4k1(limits.min_frames), floor_4k1(longest) + 1, 4))


def role_choices(spec: TaskSpec, files: Files) -> list[Assignment]:
    """Each way ``files`` (the request's, in order) fill ``spec``'s roles that ``check_roles`` takes.

    Within a role the indices rise (a set of references has one spelling); an understanding task
    reads every file as a ``query``, and only the understanding task the files' kinds name is
    offered (:func:`engine.tasks.understanding_task`).
    """
    kinds = [k for _, k in files]
    if spec.understanding:
        if spec.task is not understanding_task(kinds):
            return []
        return [tuple((i, Role.QUERY) for i in range(len(files)))]
    per_role = []
    for rule in spec.roles:
        fits = [i for i, k in enumerate(kinds) if k in rule.kinds]
        per_role.append(
            [(c, rule.role) for n in range(rule.min, rule.max + 1) for c in combinations(fits, n)]
        )
    found = []
    for picks in product(*per_role):
        used = [i for chosen, _ in picks for i in chosen]
        if len(used) != len(set(used)):
            continue
        assignment = tuple((i, role) for chosen, role in picks for i in chosen)
        if _roles_check(spec.task, assignment, files):
            found.append(assignment)
    return found


def _roles_check(task: Task, assignment: Assignment, files: Files) -> bool:
    inputs = [MediaInput(path=files[i][0], kind=files[i][1], role=role) for i, role in assignment]
    try:
        check_roles(Plan(task=task, prompt="-", inputs=inputs))
    except InvalidRequest:
        return False
    return True


def runs(spec: TaskSpec, n_inputs: int, n_files: int) -> bool:
    """Whether a plan of ``spec`` naming ``n_inputs`` of the request's ``n_files`` files is one the
    route runs: a generation plan of a request with files names at least one of them."""
    return spec.understanding or n_files == 0 or n_inputs > 0


def offered(spec: TaskSpec, prompt: str) -> bool:
    """Whether a plan of ``spec`` can check for a request with this ``prompt``: a generation task
    needs words saying what to make (``check_plan`` refuses an empty prompt)."""
    return spec.understanding or bool(prompt.strip())


def tasks_for(files: Files, prompt: str, only: frozenset[Task] | None = None) -> dict[Task, list[Assignment]]:
    """The tasks a plan of this request may name (``only``: among these), each with its inputs."""
    found = {}
    for task, spec in TASKS.items():
        if only is not None and task not in only or not offered(spec, prompt):
            continue
        choices = [a for a in role_choices(spec, files) if runs(spec, len(a), len(files))]
        if choices:
            found[task] = choices
    return found


__all__ = ["Assignment", "frame_counts", "offered", "role_choices", "runs", "side_range", "tasks_for"]

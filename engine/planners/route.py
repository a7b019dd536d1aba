"""Routing a request to a checked plan: the chosen planner, the rules planner behind it, the files check.

:func:`route` is the one place that decides which planner's plan runs:

0. Tasks beyond the Unison grammar. Its tokens cannot write image or video outpainting, video
   extension or a first-and-last-frame video, so under ``backend`` ``unison`` the request is first
   read by the rules planner (no model, about a millisecond): when that reading is one of those
   tasks (:data:`BEYOND_GRAMMAR`, from the wording or the files: "widen", "keep it going", two
   images as a clip's ends), the model plan comes from ``reach``, the instruct backend decoding
   the JSON plan's schema narrowed to those tasks, instead of the Unison planner (which could only
   write another task). Its notes say so; the projector's input still comes from the Unison
   planner. Any other reading, or none, leaves the request to the Unison planner.
1. ``backend`` ``rules``: the rules planner plans. Otherwise the primary (model) planner does; when
   its output does not parse (:class:`~engine.errors.PlannerError`) or its plan does not check
   (:class:`~engine.errors.InvalidRequest` from ``check``), the rules planner plans instead if
   ``fallback`` is on, and the plan's notes say which planner made it and why; with ``fallback``
   off the original error is raised.
2. The files check. A plan that uses fewer of the request's files than were given carries a note
   naming the unused ones. A *generation* plan that uses none of the files of a request that has
   files is not run: the rules planner plans the request instead (``fallback`` on), and when its
   plan ignores them too, or it cannot plan the request, or ``fallback`` is off, the request is
   refused with a message saying how to call ``generate`` with the files by their roles. An
   understanding plan reads every file as a ``query``; one that leaves a file out does not check.
3. Features (the projector's input) come back only from the primary's planning pass; the rules
   planner has none. They depend on the request alone (the Unison planner over its text), so when
   none come back the engine computes them with one forward over the same request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..errors import InvalidRequest, ModelError, PlannerError, shown
from ..plan import BasePlan, Checked, MediaInput, Plan, check_roles
from ..tasks import TASKS
from ..vocab import Role, Task

if TYPE_CHECKING:
    import torch

    from ..request import Request
    from . import PlanOutput
    from .rules import RulesPlanner

log = logging.getLogger(__name__)

#: How much of a planner's raw output a note quotes.
_RAW_CHARS = 80

#: The generation tasks the Unison grammar has no tokens for (their rows name none).
BEYOND_GRAMMAR: frozenset[Task] = frozenset(
    t for t, s in TASKS.items() if s.grammar is None and not s.understanding
)

#: A model planner: the request and whether the projector's input is wanted.
ModelPlanner = Callable[["Request", bool], "PlanOutput"]


@dataclass(frozen=True)
class Routed:
    """The plan to run, the projector's input when it belongs to that plan, and who planned it."""

    plan: Checked
    features: torch.Tensor | None  # (1, L-1, hidden), only when ``planner`` is the primary
    planner: str  # the backend whose plan this is: "rules", "unison" or "instruct"
    fallback_reason: str | None  # why the rules planner replaced the primary's plan, else None


def route(
    request: Request,
    backend: str,
    *,
    primary: ModelPlanner | None,
    rules: RulesPlanner,
    check: Callable[[Plan], Checked],
    fallback: bool,
    want_features: bool,
    reach: Callable[[Request, bool, frozenset[Task]], PlanOutput] | None = None,
) -> Routed:
    """Plan ``request`` with ``backend``, check the plan, and make sure it uses the request's files.

    ``primary(request, want_features)`` runs the model backend (``unison`` or ``instruct``); it is
    not called for ``backend == "rules"`` and must be given otherwise. ``reach(request,
    want_features, tasks)`` runs the instruct backend narrowed to ``tasks``, for the requests the
    Unison grammar cannot plan (step 0; without it they stay with the Unison planner). ``check`` is
    :func:`~engine.plan.check_plan` with the engine's limits. See the module docstring for the
    order of things; raises :class:`InvalidRequest`, :class:`PlannerError` (fallback off) or
    :class:`ModelError` (no primary for a model backend).
    """
    if backend == "rules":
        plan = check(rules(request).plan)
        _check_files(plan, request, "rules")
        return Routed(plan=_note_unused(plan, request), features=None, planner="rules", fallback_reason=None)
    if primary is None:
        raise ModelError(f"the {backend} planner is not available: no planner model is configured")
    # 0. A task the Unison grammar cannot write: the instruct backend, narrowed to those tasks.
    beyond = _beyond_grammar(request, rules) if backend == "unison" and reach is not None else None
    if beyond is not None and reach is not None:
        why = (
            f"planned by the instruct planner: the request reads as {beyond.value}, which the Unison "
            "grammar has no tokens for"
        )
        log.info("%s", why)
        return _model_route(
            request,
            "instruct",
            lambda r, w: reach(r, w, BEYOND_GRAMMAR),
            rules,
            check,
            fallback,
            want_features,
            why,
        )
    return _model_route(request, backend, primary, rules, check, fallback, want_features, None)


def _beyond_grammar(request: Request, rules: RulesPlanner) -> Task | None:
    """The rules planner's reading of ``request`` when it is a task the Unison grammar cannot write."""
    try:
        task = rules(request).plan.task
    except InvalidRequest:  # no reading fits the files: the Unison planner may still find one
        return None
    return task if task in BEYOND_GRAMMAR else None


def _model_route(
    request: Request,
    backend: str,
    planner: ModelPlanner,
    rules: RulesPlanner,
    check: Callable[[Plan], Checked],
    fallback: bool,
    want_features: bool,
    note: str | None,
) -> Routed:
    """Steps 1-3 for the model planner ``backend``: its checked plan (with ``note``), or the rules'."""
    # 1. The model planner; on an output that does not parse or check, the rules planner.
    try:
        out = planner(request, want_features)
    except PlannerError as e:
        if not fallback:
            raise
        return _by_rules(request, rules, check, f"the {backend} planner's output did not parse: {e}", e)
    try:
        plan = check(out.plan)
        _check_understanding(plan, request)
    except InvalidRequest as e:
        if not fallback:
            raise
        why = f"the {backend} planner's plan {_quote(out.plan)} did not check: {e}"
        return _by_rules(request, rules, check, why, e)

    # 2. The files check: a generation plan that ignores every file is not run.
    if _ignores_files(plan, request):
        if not fallback:
            raise _ignored_files_error(plan, request, backend)
        why = f"the {backend} planner's plan {_quote(plan)} used none of the request's files ({_paths(request)})"
        try:
            return _by_rules(request, rules, check, why, None)
        except InvalidRequest as e:
            # The rules planner failed too (or also dropped the files): say how to call generate.
            raise _ignored_files_error(plan, request, backend, rules_failed=str(e)) from e
    if note is not None:
        plan = plan.model_copy(update={"notes": [note, *plan.notes]})
    # 3. Features belong to the plan that runs: here, the model planner's.
    features = out.features if want_features else None
    return Routed(plan=_note_unused(plan, request), features=features, planner=backend, fallback_reason=None)


def _by_rules(
    request: Request,
    rules: RulesPlanner,
    check: Callable[[Plan], Checked],
    why: str,
    cause: Exception | None,
) -> Routed:
    """The rules planner's checked plan, noted as a fallback; its failure says both reasons."""
    log.warning("planning with the rules planner instead: %s", why)
    try:
        plan = rules(request).plan
        plan = check(plan.model_copy(update={"notes": [f"planned by the rules planner: {why}", *plan.notes]}))
    except InvalidRequest as e:
        raise InvalidRequest(
            f"{e} (the rules planner was planning it because {why})",
            field=e.field,
            value=e.value,
            rule=e.rule,
        ) from cause or e
    _check_files(plan, request, "rules")
    return Routed(plan=_note_unused(plan, request), features=None, planner="rules", fallback_reason=why)


# ---------------------------------------------------------------------------------------------
# The files check.


def _used(plan: BasePlan) -> set[str]:
    return {m.path for m in plan.inputs}


def _unused(plan: BasePlan, request: Request) -> list[str]:
    used = _used(plan)
    return list(dict.fromkeys(p for p, _ in request.media if p not in used))


def _paths(request: Request) -> str:
    return ", ".join(shown(p, quoted=False) for p in dict.fromkeys(p for p, _ in request.media))


def _quote(plan: BasePlan) -> str:
    raw = plan.raw if plan.raw is not None else plan.task.value
    return f"{shown(raw, _RAW_CHARS)} ({plan.task.value})"


def _ignores_files(plan: BasePlan, request: Request) -> bool:
    return (
        bool(request.media)
        and not plan.spec.understanding
        and not _used(plan) & {p for p, _ in request.media}
    )


def _check_files(plan: Checked, request: Request, planner: str) -> None:
    """Refuse a generation plan that uses none of the request's files (it would lose them)."""
    if _ignores_files(plan, request):
        raise _ignored_files_error(plan, request, planner)


def _check_understanding(plan: Checked, request: Request) -> None:
    """An understanding plan reads every file of the request, each as a ``query``."""
    if not plan.spec.understanding:
        return
    missing = _unused(plan, request)
    if missing:
        raise InvalidRequest.for_field(
            "inputs", missing, f"{plan.task.value} reads every file of the request as a query"
        )


def _note_unused(plan: Checked, request: Request) -> Checked:
    """Name the request's files the plan does not use (the plan still runs)."""
    unused = _unused(plan, request)
    if not unused:
        return plan
    files = ", ".join(shown(p, quoted=False) for p in unused)
    note = (
        f"not used by the {plan.task.value} plan: {files} (to use them, call generate with the task and "
        "each file by its role)"
    )
    log.warning("%s", note)
    return plan.model_copy(update={"notes": [*plan.notes, note]})


def _ignored_files_error(
    plan: BasePlan, request: Request, planner: str, *, rules_failed: str | None = None
) -> InvalidRequest:
    """The refusal of a plan that drops every file, with calls of ``generate`` that would use them."""
    also = f", and the rules planner could not plan it either ({rules_failed})" if rules_failed else ""
    hints = _generate_hints(plan, request)
    how = "; or ".join(hints) if hints else "generate(task=..., prompt=..., <role>=<file>)"
    return InvalidRequest.for_field(
        "inputs",
        [p for p, _ in request.media],
        f"the {planner} planner's {plan.task.value} plan ignored every file of the request, so it was not "
        f"run{also}; call generate with the task and each file by its role (source, mask, reference, "
        f"control, first_frame, last_frame) instead, e.g. {how}",
    )


def _generate_hints(plan: BasePlan, request: Request, most: int = 3) -> list[str]:
    """Example ``generate`` calls, read from the task table: tasks of the plan's output kind whose
    roles take these files (each file the first role of its kind, in the row's order)."""
    hints = []
    for spec in TASKS.values():
        if spec.output != plan.spec.output or not spec.roles:
            continue
        inputs = []
        free = {r.role: r.max for r in spec.roles}
        for path, kind in request.media:
            rule = next((r for r in spec.roles if kind in r.kinds and free[r.role] > 0), None)
            if rule is None:
                break
            free[rule.role] -= 1
            inputs.append(MediaInput(path=path, kind=kind, role=rule.role))
        else:
            try:
                check_roles(Plan(task=spec.task, prompt=plan.prompt, inputs=inputs))
            except InvalidRequest:
                continue
            hints.append(_call_text(spec.task.value, inputs))
        if len(hints) == most:
            break
    return hints


def _call_text(task: str, inputs: list[MediaInput]) -> str:
    args = [f"task={task!r}", "prompt=..."]
    for role in dict.fromkeys(m.role for m in inputs):
        paths = [m.path for m in inputs if m.role is role]
        # Paths as written (a real one is short); a very long one is cut like any shown value.
        value = f"[{', '.join(map(shown, paths))}]" if role is Role.REFERENCE else shown(paths[0])
        args.append(f"{role.value}={value}")
    return f"generate({', '.join(args)})"


__all__ = ["BEYOND_GRAMMAR", "Routed", "route"]

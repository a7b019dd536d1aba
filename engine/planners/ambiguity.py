"""Ask when it cannot know: the ambiguities of a planned request, and the plan once settled.

A plan can be valid and still rest on a guess the wording does not support, one that changes
the result. Each finder below looks at the checked plan and the request's wording (the rules
planner's reading, :mod:`engine.planners.reading`) and says such a guess as an
:class:`~engine.asking.Ambiguity`:

* **which file is the mask** — an edit with two files or more and no word (near a file, of it by
  position, or in its name) saying which one is the mask;
* **what to change** — an edit with no mask, no ``target``, and no object named after an edit
  verb ("Edit ###a.png###", "Add a hat ###a.png###");
* **how long** — a clip whose frame count and duration, both said, disagree ("a 3 second
  video, 81 frames").

:func:`settle` asks them all at once through the job's ``ask`` (see :mod:`engine.asking`), applies
the answers and checks the plan again; whatever is not answered stays the best guess, and the
plan's notes say which, and why.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import PurePath

from ..asking import Ambiguity, Ask
from ..bounds import MAX_TARGET_CHARS, frames_for_seconds, nearest_4k1
from ..errors import InvalidRequest, shown
from ..lexicon import LEXICON as LEX
from ..plan import Checked, CheckedPlan, MediaInput, Plan, check_roles
from ..region import object_phrase
from ..request import Request
from ..vocab import Role, Task
from . import measures
from .reading import Reading, read

log = logging.getLogger(__name__)

_EDITS = (Task.IMAGE_EDIT, Task.VIDEO_EDIT)
#: An edit verb (any language) with something after it: the request names what to change.
_VERB_AND_OBJECT = re.compile("(?:" + LEX.regex("edit_repaint") + r")\s*[^\s,.;:!?]")


def _label(m: MediaInput, plan: CheckedPlan) -> str:
    """A file as an answer shows it: its name, or its path when two files share a name."""
    name = PurePath(m.path).name
    same = sum(PurePath(x.path).name == name for x in plan.inputs)
    return shown(name if same == 1 else m.path, 80, quoted=False)


def which_mask(plan: CheckedPlan, r: Reading) -> Ambiguity | None:
    """An edit whose mask is a guess: two files or more, none said to be the mask."""
    if plan.task not in _EDITS or not plan.by_role(Role.MASK) or r.mask is not None:
        return None
    choices = {}
    for m in plan.inputs:
        inputs = [x.model_copy(update={"role": Role.MASK if x is m else Role.SOURCE}) for x in plan.inputs]
        try:
            check_roles(Plan(task=plan.task, prompt=plan.prompt, inputs=inputs))
        except InvalidRequest:
            continue  # this file cannot be the mask (video_edit's source must be a video)
        choices[_label(m, plan)] = {"inputs": inputs}
    if len(choices) < 2:
        return None
    return Ambiguity(
        key="mask",
        question="Which file is the mask (white where the picture changes)?",
        guess=_label(plan.one(Role.MASK), plan),
        choices=choices,
    )


def what_region(plan: CheckedPlan, r: Reading) -> Ambiguity | None:
    """An edit with neither a mask nor a named object: what to change is a guess."""
    if plan.task not in _EDITS or plan.by_role(Role.MASK) or plan.target:
        return None
    if object_phrase(plan.prompt) is not None or _VERB_AND_OBJECT.search(plan.prompt.lower()):
        return None
    return Ambiguity(
        key="region",
        question="What should change? Name the object or the region to repaint.",
        guess=f"the region the prompt describes ({shown(plan.prompt, 80)})",
        free_field="target",
        max_chars=MAX_TARGET_CHARS,
    )


def how_long(plan: CheckedPlan, r: Reading) -> Ambiguity | None:
    """A clip whose frame count and duration are both said and disagree."""
    if plan.fps is None:
        return None
    frames, seconds = measures.said_frames(r.low), measures.said_seconds(r.low)
    if frames is None or seconds is None:
        return None
    by_seconds = frames_for_seconds(seconds, plan.fps)
    if nearest_4k1(frames) == nearest_4k1(by_seconds):
        return None
    by_count = f"{frames} frames"
    by_time = f"{seconds:g} seconds ({nearest_4k1(by_seconds)} frames at {plan.fps:g} fps)"
    return Ambiguity(
        key="length",
        question=f"The request says {frames} frames and {seconds:g} seconds: which length?",
        guess=by_count if plan.num_frames == nearest_4k1(frames) else by_time,
        choices={by_count: {"num_frames": frames}, by_time: {"num_frames": by_seconds}},
    )


#: The ambiguities looked for, in the order they are asked.
FINDERS: tuple[Callable[[CheckedPlan, Reading], Ambiguity | None], ...] = (which_mask, what_region, how_long)


def ambiguities(plan: Checked, request: Request) -> list[Ambiguity]:
    """What ``plan`` guesses that the wording of ``request`` leaves open (none for a question)."""
    if not isinstance(plan, CheckedPlan):
        return []
    r = read(request)
    return [found for finder in FINDERS if (found := finder(plan, r)) is not None]


def settle(plan: Checked, request: Request, *, ask: Ask | None, check: Callable[[Plan], Checked]) -> Checked:
    """``plan`` with its ambiguities asked through ``ask`` (``None``: nobody can be asked) and the
    answers applied, checked again; every ambiguity leaves a note: its answer, or the guess kept."""
    found = ambiguities(plan, request)
    if not found:
        return plan
    answers = ask(found) if ask is not None else None
    update: dict = {}
    notes = []
    for question in found:
        answer = (answers or {}).get(question.key)
        fields = question.update(answer) if answer is not None else None
        if fields is not None:
            update.update(fields)
            notes.append(f"asked: {question.question} Answer: {shown(answer, 80)}")
            continue
        if answers is None:
            why = "Not asked (no client to answer: it has no elicitation, or the call had returned)"
        elif answer is None:
            why = "Not answered"
        else:
            why = f"The answer {shown(answer, 80)} is not one offered"
        notes.append(f"ambiguous: {question.question} {why}; planned the best guess: {question.guess}")
    log.info("ambiguities: %s", "; ".join(notes))
    if not update:
        return plan.model_copy(update={"notes": [*plan.notes, *notes]})
    return check(Plan(**{**dict(plan), **update, "notes": [*plan.notes, *notes]}))


__all__ = ["FINDERS", "ambiguities", "settle"]

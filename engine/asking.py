"""Asking the user when a request leaves open something that changes the result: the seam.

The engine finds the ambiguity (:mod:`engine.planners.ambiguity`: two files and no word for which
is the mask, an edit that names no region, a duration and a frame count that disagree) and says
it as data, an :class:`Ambiguity`: the question, the answers it offers and the plan fields each
sets, and the best guess planned when nobody answers. Whoever runs the job may give it an
:data:`Ask` (``JobControl.ask``): the MCP layer asks through the client's elicitation form when the
client supports it (``unison_mcp/asking.py``). Without one, or when the user declines, the engine
plans its best guess and says so in the plan's notes. Nothing here knows MCP.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .errors import Cancelled


@dataclass(frozen=True)
class Ambiguity:
    """One question a request leaves open.

    ``choices`` maps each answer offered (a short label) to the plan fields it sets; when it is
    empty the answer is free text, set as the plan field ``free_field``. ``guess`` is what is
    planned when nobody answers (one of the labels, or the text the engine will use).
    """

    key: str  # the form's field for it: "mask", "region", "length"
    question: str
    guess: str
    choices: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    free_field: str | None = None
    max_chars: int = 200  # the longest free-text answer

    def update(self, answer: str) -> dict[str, Any] | None:
        """The plan fields ``answer`` sets, or ``None`` when it answers nothing offered."""
        if self.choices:
            chosen = self.choices.get(answer)
            return dict(chosen) if chosen is not None else None
        text = answer.strip()
        if self.free_field is None or not text or len(text) > self.max_chars:
            return None
        return {self.free_field: text}


#: Answers by :attr:`Ambiguity.key` (a key left out: not answered).
Answers = Mapping[str, str]
#: Asks the user the questions; returns the answers given (empty when the user declined), or
#: ``None`` when nobody can be asked. It may raise :class:`AnswersNeeded` instead (below).
Ask = Callable[[Sequence[Ambiguity]], Answers | None]


class AnswersNeeded(Cancelled):
    """The job stops so that its questions go to the client, which calls again with the answers
    (MCP's multi-round-trip requests): nothing was generated or written."""

    code = "answers_needed"

    def __init__(self, questions: Sequence[Ambiguity]):
        self.questions = tuple(questions)
        keys = ", ".join(q.key for q in self.questions)
        super().__init__(f"the job stopped to ask the user ({keys}); the call is made again with the answers")


__all__ = ["Ambiguity", "Answers", "AnswersNeeded", "Ask"]

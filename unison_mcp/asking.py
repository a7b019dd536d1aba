"""Asking the user over MCP: the engine's ``ask`` seam answered with the client's elicitation form.

A job may meet a question its request leaves open (:mod:`engine.asking`: which file is the mask,
what to change, which length). For one tool call, :class:`Asker` gives the job its
``JobControl.ask``, chosen by what the client declared and the protocol it speaks:

* **mid-call** — a client that declared form elicitation on a connection that can send requests
  mid-call (the handshake era, up to 2025-11-25): the job's worker thread waits while the event
  loop sends ``elicitation/create`` through ``ctx.elicit`` (at most :data:`ASK_TIMEOUT_S`; the call
  keeps waiting for the job while a question is open);
* **input required** — on a 2026-07-28 connection the server sends nothing mid-call: the job stops
  at its questions (:class:`~engine.asking.AnswersNeeded`, nothing generated or written) and the
  call returns an ``InputRequiredResult`` holding the form; the client asks its user and makes
  the same call again with the answers (the SDK's ``Client`` does this by itself), where the new
  job finds them waiting (:attr:`Asker.answered`);
* **nobody** — a client without elicitation: ``ask`` is ``None`` and the job plans its best guess,
  saying so in the plan's notes.

The form has one field per question: a choice among the answers offered, or a short text.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Sequence
from typing import Any, Literal

import anyio
import anyio.from_thread
import anyio.lowlevel
from mcp.server.elicitation import render_elicitation_schema
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequest, ElicitRequestFormParams, ElicitResult, InputRequiredResult
from mcp_types.version import is_version_at_least
from pydantic import BaseModel, Field, ValidationError, create_model

from engine.asking import Ambiguity, Answers, AnswersNeeded, Ask

log = logging.getLogger(__name__)

#: How long a job waits for its user's answer mid-call (the queue waits with it).
ASK_TIMEOUT_S = 300.0
#: The first protocol revision whose calls ask through ``InputRequiredResult``.
INPUT_REQUIRED_VERSION = "2026-07-28"
Mode = Literal["mid_call", "input_required"]


def form_model(questions: Sequence[Ambiguity]) -> type[BaseModel]:
    """The elicitation form: one optional field per question (a choice, or a short text)."""
    fields: dict[str, Any] = {}
    for q in questions:
        if q.choices:
            kind: Any = Literal[tuple(q.choices)]  # type: ignore[valid-type]
            fields[q.key] = (kind | None, Field(None, title=q.key, description=q.question))
        else:
            fields[q.key] = (
                str | None,
                Field(None, title=q.key, description=q.question, max_length=q.max_chars),
            )
    return create_model("UnisonAnswers", **fields)


def form_message(questions: Sequence[Ambiguity]) -> str:
    lines = [f"- {q.question} (unanswered: {q.guess})" for q in questions]
    return "The request leaves this open; your answer decides it:\n" + "\n".join(lines)


def form_key(questions: Sequence[Ambiguity]) -> str:
    """The input request's key: the same questions give the same key on the call made again."""
    text = json.dumps([[q.key, q.question, list(q.choices)] for q in questions], ensure_ascii=False)
    return "unison.ask." + hashlib.sha256(text.encode()).hexdigest()[:16]


def _answers(result: Any, questions: Sequence[Ambiguity]) -> Answers:
    """What an elicitation result answers (declined or cancelled: nothing)."""
    if not isinstance(result, ElicitResult) or result.action != "accept" or not result.content:
        return {}
    keys = {q.key for q in questions}
    return {k: str(v) for k, v in result.content.items() if k in keys and v is not None and str(v).strip()}


def mode_of(ctx: Context) -> Mode | None:
    """How this call can ask its user, if at all (see the module docstring)."""
    caps = ctx.client_capabilities
    elicitation = caps.elicitation if caps is not None else None
    # A bare `elicitation: {}` (before modes existed) is form support; URL-only is not.
    if elicitation is None or (elicitation.form is None and elicitation.url is not None):
        return None
    version = ctx.protocol_version
    if version is not None and is_version_at_least(version, INPUT_REQUIRED_VERSION):
        return "input_required"
    return "mid_call" if ctx.session.can_send_request else None


class Asker:
    """One tool call's way to ask its user: ``ask`` is the job's ``JobControl.ask``."""

    def __init__(self, ctx: Context, mode: Mode | None, answered: dict[str, Any] | None = None):
        self.ctx = ctx
        self.mode = mode
        #: Answers the client sent with this call (input required: the call made again), by key.
        self.answered = answered or {}
        #: The questions this call returns to the client (input required), once the job asked.
        self.needed: tuple[Ambiguity, ...] = ()
        self._token = anyio.lowlevel.current_token()
        self._lock = threading.Lock()  # the job's thread asks while the loop may close
        self._scopes: set[anyio.CancelScope] = set()
        self._open = True
        self._asking = 0

    @classmethod
    def for_call(cls, ctx: Context) -> Asker:
        try:
            responses = dict(ctx.input_responses or {})
        except ValueError:  # a Context outside a request
            return cls(ctx, None)
        try:
            mode = mode_of(ctx)
        except ValueError:
            mode = None
        return cls(ctx, mode, responses)

    @property
    def ask(self) -> Ask | None:
        """The job's seam; ``None`` when this client cannot be asked."""
        return self._ask if self.mode is not None else None

    @property
    def asking(self) -> bool:
        """A question is open with the user (mid-call): the call keeps waiting for the job."""
        return self._asking > 0

    def _ask(self, questions: Sequence[Ambiguity]) -> Answers | None:  # the job's worker thread
        key = form_key(questions)
        if key in self.answered:
            return _answers(self.answered[key], questions)
        with self._lock:
            if not self._open:
                return None  # the call has returned: nobody is waiting to pass the question on
            if self.mode == "input_required":
                self.needed = tuple(questions)
                raise AnswersNeeded(questions)
        try:
            return anyio.from_thread.run(self._elicit, list(questions), token=self._token)
        except anyio.RunFinishedError:
            return None

    async def _elicit(self, questions: list[Ambiguity]) -> Answers | None:  # the event loop
        if not self._open:
            return None
        self._asking += 1
        scope = anyio.move_on_after(ASK_TIMEOUT_S)
        self._scopes.add(scope)
        try:
            with scope:
                result = await self.ctx.elicit(form_message(questions), form_model(questions))
            if scope.cancelled_caught:
                log.info("no answer to the question before the call ended or %ss passed", ASK_TIMEOUT_S)
                return {}
        except (MCPError, ValueError, ValidationError) as exc:
            log.warning("asking the user failed: %s", exc)
            return {}
        finally:
            self._asking -= 1
            self._scopes.discard(scope)
        if result.action != "accept":
            return {}
        data = result.data.model_dump()
        return {k: str(v) for k, v in data.items() if v is not None and str(v).strip()}

    def input_required(self) -> InputRequiredResult:
        """The call's result while its questions wait for the client (input required)."""
        schema = render_elicitation_schema(form_model(self.needed))
        request = ElicitRequest(
            params=ElicitRequestFormParams(message=form_message(self.needed), requested_schema=schema)
        )
        return InputRequiredResult(input_requests={form_key(self.needed): request})

    def close(self) -> None:
        """The call stops waiting: an open question is dropped (the job keeps its best guess)."""
        with self._lock:
            self._open = False
        for scope in list(self._scopes):
            scope.cancel()


__all__ = ["ASK_TIMEOUT_S", "Asker", "form_key", "form_model", "mode_of"]

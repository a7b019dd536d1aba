"""A tool call's job: run on the one queue, followed while the client waits, and the ``job`` tool.

:func:`run_admitted` runs admitted work (at once when it needs no model, else on the queue) and
follows it: progress notifications from the first second (:class:`ProgressPump`, always
increasing, each with a message: the job's place in the queue as it moves, each stage as it
begins, a model loading named with its size, each step), a client cancel cancels the job, and
after ``wait_s`` a job handle (:func:`pending_result`) that the ``job`` tool (:func:`job_action`)
follows to the same result. For a client that negotiated the tasks extension the job becomes a
task instead (:class:`TaskOffer`, :mod:`unison_mcp.tasks`). The result's timings cover the whole
call (``queue_s``: waiting in the queue, ``call_s``: from the call's start to its result), and a
job that wrote files tells the listening clients that the resources changed.
:func:`present_result` turns the engine's result into the tool's; :func:`as_tool_errors` sends
every error through :func:`unison_mcp.errors.tool_error`.
"""

from __future__ import annotations

import logging
import math
import queue as _queue
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, InputRequiredResult, TextContent

from engine.api import Admitted, AnyRequest, AnyResult
from engine.asking import AnswersNeeded
from engine.control import JobControl
from engine.errors import InvalidRequest
from engine.jobs import FINISHED, JobAPI, JobQueueAPI
from engine.results import AutoResult, GenerateResult, UnderstandResult

from .asking import Asker
from .errors import describe_error, tool_error
from .http import gallery_url
from .models import AutoOutput, GenerateOutput, JobOutput, JobState, Progress, UnderstandOutput
from .present import auto_result, generate_result, understand_result
from .progress import stage_label
from .state import ServerState

log = logging.getLogger(__name__)

#: How often a waiting call looks at its job (progress is queued in between, never dropped).
POLL_S = 0.02
#: How often a call waiting in the queue asks for its place (the pool asks its job book).
POSITION_POLL_S = 0.25
#: How long `job cancel` waits for a running job to stop before answering.
CANCEL_WAIT_S = 10.0
ToolName = Literal["understand", "generate", "auto"]
R = TypeVar("R")
#: The tools whose arguments are an engine request (and the job kinds holding a tool result).
TOOL_KINDS: tuple[ToolName, ...] = ("understand", "generate", "auto")
#: Each engine tool's structured output.
OUTPUTS: dict[str, type[JobState]] = {
    "understand": UnderstandOutput,
    "generate": GenerateOutput,
    "auto": AutoOutput,
}


def queue_words(ahead: int) -> str:
    """A queued job's place, as a progress message says it."""
    return f"queued: {ahead} job{'s' if ahead != 1 else ''} ahead" if ahead else "queued: next"


def progress_words(stage: str, done: int, total: int, label: str | None = None) -> str:
    """What a job is doing, in words: its stage (``label``: the stage's own words, a loading stage
    with its size), and the step within it when the stage counts steps."""
    words = label or stage
    return f"{words} {done}/{total}" if total > 0 and done > 0 else words


@dataclass(frozen=True)
class _Event:
    done: int
    total: int
    stage: str
    label: str | None


class ProgressPump:
    """A job's events from the worker thread, queued, then sent as progress notifications whose
    value always increases, each with a message.

    An event is a stage beginning (``done`` 0: a model loading, an annotator, decoding…), a step
    of a stage (``done`` from 1), or a note of the call's own (:meth:`note`: its place in the
    queue). A beginning or a note counts one, each step one more; a stage that counts steps gives
    a total, so a client can show how far it is. The same beginning twice in a row is said once.
    ``labels`` words a stage as it begins (:func:`unison_mcp.progress.stage_label`: a loading stage
    with the size of what it loads, read from disk then, on the job's thread).
    """

    def __init__(self, labels: Callable[[str], str | None] | None = None) -> None:
        self._events: _queue.SimpleQueue[_Event] = _queue.SimpleQueue()
        self._labels = labels
        self._closed = False
        self._words: str | None = None  # the current stage's words
        self._stage: str | None = None
        self._done = 0
        self._base = 0  # the value before the current stage's first step
        self._last = 0

    def push(self, done: int, total: int, stage: str) -> None:  # worker thread
        if self._closed:
            return
        label = self._label(stage) if done == 0 else None
        self._events.put(_Event(done, total, stage, label))

    def note(self, words: str) -> None:
        """A message of the call's own (its place in the queue), in order with the job's events."""
        if not self._closed:
            self._events.put(_Event(0, 0, words, words))

    def close(self) -> None:
        """Stop queueing: the call no longer follows the job (a handle or a task was returned)."""
        self._closed = True

    def _label(self, stage: str) -> str | None:
        try:
            return self._labels(stage) if self._labels is not None else None
        except Exception:  # words are a nicety: never fail the job for them
            log.debug("no words for stage %r", stage, exc_info=True)
            return None

    def _advance(self, e: _Event) -> tuple[float, float | None, str] | None:
        """The notification for one event, or ``None`` when it says nothing new."""
        if e.done == 0 or e.stage != self._stage or e.done < self._done:
            words = e.label or e.stage
            if e.done == 0 and e.stage == self._stage and words == self._words and self._done == 0:
                return None  # the same beginning again (a pool relays its replica's)
            self._stage, self._words, self._done = e.stage, words, 0
            self._base = self._last + (1 if e.done == 0 else 0)
        value = self._base + e.done
        if value <= self._last:
            return None
        self._done, self._last = e.done, value
        total = self._base + e.total if e.total > 0 else None
        return value, total, progress_words(e.stage, e.done, e.total, self._words)

    async def flush(self, ctx: Context) -> None:
        while True:
            try:
                event = self._events.get_nowait()
            except _queue.Empty:
                return
            sent = self._advance(event)
            if sent is not None:
                await ctx.report_progress(*sent)


async def follow(
    job: JobAPI,
    ctx: Context,
    pump: ProgressPump,
    timeout: float,
    *,
    cancel_on_abort: bool,
    queue: JobQueueAPI | None = None,
) -> None:
    """Relay ``job``'s progress until it finishes or ``timeout`` passes; a client cancel can cancel it.

    While the job waits in ``queue``, its place is said at once and again each time it moves.
    """
    asked, ahead = -math.inf, None
    try:
        with anyio.move_on_after(timeout):
            while job.status not in FINISHED:
                now = time.monotonic()
                if queue is not None and job.status == "queued" and now - asked >= POSITION_POLL_S:
                    asked = now
                    # Off the event loop: the pool reads its job book.
                    place = await anyio.to_thread.run_sync(queue.position, job)
                    if place != ahead and job.status == "queued":
                        ahead = place
                        pump.note(queue_words(place))
                await pump.flush(ctx)
                # Wake as soon as the job ends (a plain sleep added up to POLL_S to every call).
                await anyio.to_thread.run_sync(job.wait, POLL_S, abandon_on_cancel=True)
        await pump.flush(ctx)
    except anyio.get_cancelled_exc_class():
        if cancel_on_abort:
            # The client cancelled the call (or went away): stop the job at its next step.
            job.cancel()
            log.info("call cancelled by the client: cancelled %s", job)
        raise


async def as_tool_errors(tool: str, call: Awaitable[R]) -> R:
    """Await a tool's work; every error crosses the boundary in :func:`tool_error` (for every tool)."""
    try:
        return await call
    except (ToolError, MCPError):
        raise
    except Exception as exc:
        raise tool_error(exc, tool=tool) from exc


def present_result(
    result: UnderstandResult | GenerateResult | AutoResult,
    request: AnyRequest,
    preview_side: int,
    gallery: str | None = None,
) -> CallToolResult:
    """The engine's result as the tool's result (files as links, previews, structured content;
    ``gallery``: the gallery page's address in HTTP mode, for each output's link)."""
    if isinstance(result, UnderstandResult):
        return understand_result(result)
    if isinstance(result, GenerateResult):
        return generate_result(result, preview_side=preview_side, gallery=gallery)
    # A job presented without its request (pool mode: another ingress took it) was a dry run
    # when it neither answered nor generated.
    dry_run = getattr(request, "dry_run", result.generation is None and result.answer is None)
    return auto_result(result, dry_run=dry_run, preview_side=preview_side, gallery=gallery)


@dataclass
class TaskOffer:
    """A call from a client that negotiated the tasks extension (:mod:`unison_mcp.tasks`): its job,
    when still running after ``after_s``, becomes a task (``job`` is set) instead of being
    followed; the extension then answers the call with the task."""

    after_s: float
    job: JobAPI | None = None


#: The task offer of the call being handled (set by :mod:`unison_mcp.tasks` around the call).
TASK_OFFER: ContextVar[TaskOffer | None] = ContextVar("unison_task_offer", default=None)


async def run_admitted(
    state: ServerState,
    tool: ToolName,
    admitted: Admitted,
    ctx: Context,
    *,
    since: float | None = None,
    wait_s: float | None = None,
) -> CallToolResult | InputRequiredResult:
    """Run admitted work (at once when it needs no model, else on the queue) and follow it.

    ``since``: when the call began (``time.perf_counter``; default now), for the result's
    ``call_s``. ``wait_s`` (default: the server's) is how long the call follows the job before
    returning its handle; the job is noted under its call (``ServerState.calls``), where the
    call's viewer finds it. ``EngineAPI.run`` closes the admitted inputs; the job closes them too
    when it ends without running (cancelled while queued), and a busy queue leaves them to be
    closed here. A question the job asks its user goes through the call's
    :class:`~unison_mcp.asking.Asker`: answered mid-call (the call waits while it is open), or
    returned as an ``InputRequiredResult``. A call from a client that negotiated tasks
    (:data:`TASK_OFFER`) hands its job over as a task once it runs past the offer's time.
    """
    engine, preview_side, gallery = state.engine, state.config.preview_side, gallery_url(state.config)
    since = time.perf_counter() if since is None else since
    announce = _announcer(ctx)
    asker = Asker.for_call(ctx)
    queued_at = since

    def work(control: JobControl) -> CallToolResult:
        control.ask = asker.ask
        started = time.perf_counter()
        result = engine.run(admitted, control=control)
        # Timings for the whole call: what the engine measured, plus the wait and the total.
        _add_timings(result, queue_s=started - queued_at, call_s=time.perf_counter() - since)
        if _files_of(result):
            announce()
        return present_result(result, admitted.request, preview_side, gallery)

    offer = TASK_OFFER.get()
    wait = state.config.wait_s if wait_s is None else wait_s
    if offer is not None:
        wait = min(offer.after_s, wait)
    try:
        try:
            if not admitted.queued:
                # No model work (a rules dry run): answer now instead of queueing behind GPU jobs.
                return await anyio.to_thread.run_sync(work, JobControl())
            pump = ProgressPump(partial(stage_label, engine.config))
            queued_at = time.perf_counter()
            job = state.queue.submit(tool, work, on_progress=pump.push, on_finish=admitted.close)
        except AnswersNeeded:
            return asker.input_required()
        except BaseException:
            admitted.close()
            raise
        state.calls.add(job.id, state.calls.digest(tool, admitted.request))
        try:
            await follow(job, ctx, pump, wait, cancel_on_abort=True, queue=state.queue)
            while asker.asking and job.status not in FINISHED:  # the user is answering: keep waiting
                await follow(job, ctx, pump, state.config.wait_s, cancel_on_abort=True, queue=state.queue)
        finally:
            pump.close()  # a handle or a task from here on: the client follows the job itself
    finally:
        asker.close()
    if asker.needed:  # the job stopped at its questions (or is stopping): they go to the client
        await anyio.to_thread.run_sync(job.wait, CANCEL_WAIT_S, abandon_on_cancel=True)
        return asker.input_required()
    if offer is not None and job.status not in FINISHED:
        offer.job = job
    return pending_result(job, OUTPUTS[tool], state.queue, tool)


def _add_timings(result: AnyResult, **seconds: float) -> None:
    """Add the call's own timings to the engine's (an auto call's: its answer's or generation's)."""
    inner = result
    if isinstance(result, AutoResult):
        inner = result.generation or result.answer  # type: ignore[assignment]
    if isinstance(inner, (GenerateResult, UnderstandResult)):
        inner.timings.update(seconds)


def _files_of(result: AnyResult) -> list[Any]:
    """The files a result wrote (none for an answer or a plan)."""
    generation = result.generation if isinstance(result, AutoResult) else result
    return list(generation.outputs) if isinstance(generation, GenerateResult) else []


def _announcer(ctx: Context) -> Callable[[], None]:
    """From the job's thread: tell the clients listening for changes that the resources changed
    (new outputs), through the server's subscription bus, on the event loop of this call."""
    token = anyio.lowlevel.current_token()

    def announce() -> None:
        try:
            anyio.from_thread.run(ctx.notify_resources_changed, token=token)
        except Exception:  # the loop is gone (the server stopping): nobody is listening
            log.debug("could not announce new outputs", exc_info=True)

    return announce


def _progress(job: JobAPI) -> Progress:
    return Progress(**job.progress())


def pending_result(job: JobAPI, model: type[JobState], queue: JobQueueAPI, tool: str) -> CallToolResult:
    """The job handle returned when a job outlives the call's wait (its result if it just finished)."""
    p = _progress(job)
    status = job.status
    if status in FINISHED:  # it finished since the caller looked
        return _outcome(job, tool)
    where = f"{p.stage} {p.done}/{p.total}" if p.total else p.stage
    extra: dict[str, Any] = {}
    if status == "queued":
        ahead = queue.position(job)
        where = f"queued, {ahead} job(s) ahead"
        if model is JobOutput:
            extra["ahead"] = ahead
    text = (
        f"Job {job.id} is {status} ({where}); it continues on the server. Call the `job` tool with "
        f"action='wait' and job_id='{job.id}' to get the result (or 'status' / 'cancel')."
    )
    out = model(status=status, job_id=job.id, progress=p, **extra)
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=out.model_dump(mode="json")
    )


def _outcome(job: JobAPI, tool: str) -> CallToolResult:
    """What the call returns for a finished job: its result, or its error as a tool error."""
    result = job.outcome()  # a failed job's error is raised again, mapped like any other
    if not isinstance(result, CallToolResult):  # a job no tool started (preload)
        raise InvalidRequest.for_field(
            "job_id", job.id, f"is a {job.kind} job, which has no result to return"
        )
    return result


def status_result(job: JobAPI, queue: JobQueueAPI) -> CallToolResult:
    info = job.info()
    # The same words the call itself would have returned: an unexpected error's own message may
    # carry internal details, which stay in the server's log.
    error = describe_error(job.error, tool=job.kind) if job.error is not None else None
    out = JobOutput(
        status=job.status,
        job_id=job.id,
        progress=_progress(job),
        kind=job.kind,
        error=error,
        ahead=queue.position(job) if job.status == "queued" else None,
        # Pool mode: the replica running (or that ran) the job.
        replica=info.get("replica"),
        created_at=info["created_at"],
        started_at=info["started_at"],
        finished_at=info["finished_at"],
    )
    text = f"Job {job.id} ({job.kind}) is {job.status}."
    if out.error:
        text += f" {out.error}"
    elif job.status in ("queued", "running") and job.cancel_requested:
        # A running job stops at its next step, which can be seconds away on a large video.
        text += (
            " A cancel was requested: it stops at its next step and nothing is written. Call `job` "
            "with action='status' to confirm it ended."
        )
    elif job.status in ("queued", "running"):
        text += " Call `job` with action='wait' to wait for its result."
    elif job.status == "done":
        text += " Call `job` with action='result' to get it."
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content=out.model_dump(mode="json")
    )


async def job_action(state: ServerState, action: str, job_id: str, ctx: Context) -> CallToolResult:
    """The ``job`` tool: status, wait, cancel or result of a job a call returned."""
    queue, config = state.queue, state.config
    found = queue.get(job_id)
    if found is None:
        raise InvalidRequest.for_field(
            "job_id",
            job_id,
            f"no such job: ids come from results with status 'queued' or 'running'; the last "
            f"{config.keep_jobs} finished jobs are kept",
        )
    if action == "status":
        return status_result(found, queue)
    if action == "cancel":
        found.cancel()
        with anyio.move_on_after(min(config.wait_s, CANCEL_WAIT_S)):
            while found.status not in FINISHED:
                await anyio.sleep(POLL_S)
        return status_result(found, queue)
    if action == "wait":
        pump = ProgressPump(partial(stage_label, state.engine.config))
        remove = found.add_listener(pump.push)
        try:
            # Cancelling a wait stops waiting, not the job: `cancel` is explicit.
            await follow(found, ctx, pump, config.wait_s, cancel_on_abort=False, queue=queue)
        finally:
            pump.close()
            remove()
    if found.kind not in TOOL_KINDS:  # the preload job: nothing to return but its state
        return status_result(found, queue)
    return pending_result(found, JobOutput, queue, found.kind)

"""A tool call's job: run on the one queue, followed while the client waits, and the ``job`` tool.

:func:`run_admitted` runs admitted work (at once when it needs no model, else on the queue) and
follows it: progress notifications per step (:class:`ProgressPump`, always increasing), a client
cancel cancels the job, and after ``wait_s`` a job handle (:func:`pending_result`) that the
``job`` tool (:func:`job_action`) follows to the same result. :func:`present_result` turns the engine's
result into the tool's; :func:`as_tool_errors` sends every error through
:func:`unison_mcp.errors.tool_error`.
"""

from __future__ import annotations

import logging
import queue as _queue
from collections.abc import Awaitable
from typing import Any, Literal

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent

from engine.api import Admitted, AnyRequest
from engine.control import JobControl
from engine.errors import InvalidRequest
from engine.jobs import FINISHED, JobAPI, JobQueueAPI
from engine.results import AutoResult, GenerateResult, UnderstandResult

from .errors import describe_error, tool_error
from .http import gallery_url
from .models import AutoOutput, GenerateOutput, JobOutput, JobState, Progress, UnderstandOutput
from .present import auto_result, generate_result, understand_result
from .state import ServerState

log = logging.getLogger(__name__)

#: How often a waiting call looks at its job (progress is queued in between, never dropped).
POLL_S = 0.02
#: How long `job cancel` waits for a running job to stop before answering.
CANCEL_WAIT_S = 10.0
ToolName = Literal["understand", "generate", "auto"]
#: The tools whose arguments are an engine request (and the job kinds holding a tool result).
TOOL_KINDS: tuple[ToolName, ...] = ("understand", "generate", "auto")
#: Each engine tool's structured output.
OUTPUTS: dict[str, type[JobState]] = {
    "understand": UnderstandOutput,
    "generate": GenerateOutput,
    "auto": AutoOutput,
}


class ProgressPump:
    """Steps from the worker thread, queued, then sent as strictly increasing progress notifications.

    A job may run several stages whose step counts restart at 1; the reported value adds the
    totals of the stages before, so it never goes back.
    """

    def __init__(self) -> None:
        self._steps: _queue.SimpleQueue[tuple[int, int, str]] = _queue.SimpleQueue()
        self._offset = 0
        self._stage_done = 0
        self._stage_total = 0
        self._last = 0

    def push(self, done: int, total: int, stage: str) -> None:  # worker thread
        self._steps.put((done, total, stage))

    async def flush(self, ctx: Context) -> None:
        while True:
            try:
                done, total, stage = self._steps.get_nowait()
            except _queue.Empty:
                return
            if done <= self._stage_done:  # a new stage restarted its count
                self._offset += max(self._stage_total, self._stage_done)
            self._stage_done, self._stage_total = done, total
            value = self._offset + done
            if value <= self._last:
                continue
            self._last = value
            total_value = self._offset + total if total > 0 else None
            message = f"{stage} {done}/{total}" if total > 0 else stage
            await ctx.report_progress(value, total_value, message)


async def follow(
    job: JobAPI, ctx: Context, pump: ProgressPump, timeout: float, *, cancel_on_abort: bool
) -> None:
    """Relay ``job``'s progress until it finishes or ``timeout`` passes; a client cancel can cancel it."""
    try:
        with anyio.move_on_after(timeout):
            while job.status not in FINISHED:
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


async def as_tool_errors(tool: str, call: Awaitable[CallToolResult]) -> CallToolResult:
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


async def run_admitted(
    state: ServerState, tool: ToolName, admitted: Admitted, ctx: Context, *, wait_s: float | None = None
) -> CallToolResult:
    """Run admitted work (at once when it needs no model, else on the queue) and follow it.

    ``EngineAPI.run`` closes the admitted inputs; the job closes them too when it ends without
    running (cancelled while queued), and a busy queue leaves them to be closed here. ``wait_s``
    (default: the server's) is how long the call follows the job before returning its handle;
    the job is noted under its call (``ServerState.calls``), where the call's viewer finds it.
    """
    engine, preview_side, gallery = state.engine, state.config.preview_side, gallery_url(state.config)

    def work(control: JobControl) -> CallToolResult:
        return present_result(engine.run(admitted, control=control), admitted.request, preview_side, gallery)

    try:
        if not admitted.queued:
            # No model work (a rules dry run): answer now instead of queueing behind GPU jobs.
            return await anyio.to_thread.run_sync(work, JobControl())
        pump = ProgressPump()
        job = state.queue.submit(tool, work, on_progress=pump.push, on_finish=admitted.close)
    except BaseException:
        admitted.close()
        raise
    state.calls.add(job.id, state.calls.digest(tool, admitted.request))
    await follow(job, ctx, pump, state.config.wait_s if wait_s is None else wait_s, cancel_on_abort=True)
    return pending_result(job, OUTPUTS[tool], state.queue, tool)


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
        pump = ProgressPump()
        remove = found.add_listener(pump.push)
        try:
            # Cancelling a wait stops waiting, not the job: `cancel` is explicit.
            await follow(found, ctx, pump, config.wait_s, cancel_on_abort=False)
        finally:
            remove()
    if found.kind not in TOOL_KINDS:  # the preload job: nothing to return but its state
        return status_result(found, queue)
    return pending_result(found, JobOutput, queue, found.kind)

"""Background tasks: the ``io.modelcontextprotocol/tasks`` extension (SEP-2663, protocol 2026-07-28).

A thin layer on the SDK's extension framework (``mcp.server.extension``) over the one job queue:
a task is a job, its ``taskId`` the job's id (so the ``job`` tool follows it too, and in pool mode
any ingress finds it in the cluster's job book).

1. **Offer.** A ``tools/call`` of an engine tool whose request declares the extension in its
   client capabilities (2026-07-28 connections only) runs with a :class:`~unison_mcp.follow.TaskOffer`:
   the call is parsed and admitted as any other (a bad argument is a tool error at once), and its
   progress notified while the client waits.
2. **Decide.** The server decides: a job still running after :data:`TASK_AFTER_S` seconds (or the
   server's ``wait_s``, if shorter) becomes a task, and the call answers with a
   ``CreateTaskResult`` (``resultType: "task"``); a job done by then answers as usual. A client
   that did not declare the extension never gets a task: it gets the ``job`` tool's handle.
3. **Follow.** ``tasks/get`` says the task's state: ``working`` with what the job is doing in
   ``statusMessage`` (its place in the queue, the stage, the step), then ``completed`` with the
   very result the call would have returned (a tool error included, ``isError``), or
   ``cancelled``. ``tasks/cancel`` cancels the job (queued: never run; running: stopped at its
   next step, nothing written). ``tasks/update`` is acknowledged: these tasks never ask for input.

Without the extension on the request, the three methods answer ``-32021`` (missing required
client capability), as the extension requires.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

import anyio.to_thread
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolRequestParams, CallToolResult, RequestParams, TextContent
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from engine.jobs import JobAPI

from .errors import describe_error
from .follow import TASK_OFFER, TOOL_KINDS, TaskOffer, progress_words, queue_words
from .progress import stage_label
from .state import ServerState

log = logging.getLogger(__name__)

EXTENSION_ID = "io.modelcontextprotocol/tasks"
#: A call still running after this long becomes a task (a quick answer comes back as itself).
TASK_AFTER_S = 2.0
#: How often a client should poll ``tasks/get``: a step of a video takes about this long.
POLL_INTERVAL_MS = 1000
#: Job states as task states (``failed`` is for JSON-RPC errors, which a job never ends with:
#: its errors are tool errors, a completed task's ``isError`` result).
TASK_STATUS = {
    "queued": "working",
    "running": "working",
    "done": "completed",
    "failed": "completed",
    "cancelled": "cancelled",
}


class TaskParams(RequestParams):
    """``tasks/get`` and ``tasks/cancel``: the task's id (a job id: 22 characters)."""

    task_id: str = Field(min_length=1, max_length=64)


class UpdateTaskParams(TaskParams):
    """``tasks/update``: answers to a task's input requests (these tasks make none)."""

    input_responses: dict[str, Any] = Field(default_factory=dict)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def declared(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request declares the extension (only a 2026-07-28 request can)."""
    if ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(
        capabilities is not None and capabilities.extensions and EXTENSION_ID in capabilities.extensions
    )


def task_fields(state: ServerState, job: JobAPI) -> dict[str, Any]:
    """A job as a task (``DetailedTask``): its state, what it is doing, and a finished one's result.

    Reads the queue's place and the job book (pool mode): call it off the event loop.
    """
    status = job.status
    stamps = [t for t in (job.created_at, job.started_at, job.finished_at) if t is not None]
    fields: dict[str, Any] = {
        "taskId": job.id,
        "status": TASK_STATUS[status],
        "createdAt": _iso(job.created_at),
        "lastUpdatedAt": _iso(max(stamps)),
        # Finished tasks are kept while among the server's last `keep_jobs`: no time promised.
        "ttlMs": None,
        "pollIntervalMs": POLL_INTERVAL_MS,
    }
    if status == "queued":
        fields["statusMessage"] = queue_words(state.queue.position(job))
    elif status == "running":
        p = job.progress()
        label = stage_label(state.engine.config, p["stage"])
        fields["statusMessage"] = progress_words(p["stage"], p["done"], p["total"], label)
    elif status in ("done", "failed"):
        # Exactly what the call would have returned: its result, or its error as a tool error.
        try:
            result, words = job.outcome(), "done"
        except Exception as exc:  # a failed job's error (or a pool job whose result is lost)
            words = describe_error(exc, tool=job.kind)
            result = CallToolResult(content=[TextContent(type="text", text=words)], is_error=True)
        fields["statusMessage"] = words
        fields["result"] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    else:
        fields["statusMessage"] = describe_error(job.error, tool=job.kind) if job.error else "cancelled"
    return fields


class TasksExtension(Extension):
    """The tasks extension over the server's job queue (advertised in ``capabilities.extensions``)."""

    identifier = EXTENSION_ID

    def __init__(self, state: ServerState, *, after_s: float = TASK_AFTER_S):
        self.state = state
        self.after_s = after_s

    def methods(self) -> list[MethodBinding]:
        modern = frozenset(MODERN_PROTOCOL_VERSIONS)
        return [
            MethodBinding("tasks/get", TaskParams, self._get, protocol_versions=modern),
            MethodBinding("tasks/update", UpdateTaskParams, self._update, protocol_versions=modern),
            MethodBinding("tasks/cancel", TaskParams, self._cancel, protocol_versions=modern),
        ]

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """An engine tool's call from a client that declared the extension may become a task."""
        if params.name not in TOOL_KINDS or not declared(ctx):
            return await call_next(ctx)
        offer = TaskOffer(after_s=self.after_s)
        token = TASK_OFFER.set(offer)
        try:
            result = await call_next(ctx)
        finally:
            TASK_OFFER.reset(token)
        if offer.job is None:
            return result
        # The job is in the queue's keeper (or the pool's book) already: a tasks/get resolves.
        fields = await anyio.to_thread.run_sync(task_fields, self.state, offer.job)
        log.info("%s call runs as task %s…", params.name, offer.job.id[:8])
        return {"resultType": "task", **fields}

    def _job(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> JobAPI:
        require_client_extension(ctx, EXTENSION_ID)
        job = self.state.queue.get(task_id)
        if job is None or job.kind not in TOOL_KINDS:
            # The last `keep_jobs` finished jobs are kept; older ones are forgotten.
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")
        return job

    async def _get(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        job = self._job(ctx, params.task_id)
        return await anyio.to_thread.run_sync(task_fields, self.state, job)

    async def _update(self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams) -> dict[str, Any]:
        self._job(ctx, params.task_id)  # a known task; its (never issued) input requests are ignored
        return {}

    async def _cancel(self, ctx: ServerRequestContext[Any, Any], params: TaskParams) -> dict[str, Any]:
        job = self._job(ctx, params.task_id)
        # A finished task is acknowledged alike; a pool job's cancel is written in its book.
        if await anyio.to_thread.run_sync(job.cancel):
            log.info("task %s… cancelled by the client", job.id[:8])
        return {}


__all__ = ["EXTENSION_ID", "TasksExtension", "declared", "task_fields"]

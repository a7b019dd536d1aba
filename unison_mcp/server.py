"""The MCP server: ``understand``, ``generate``, ``auto`` and ``job`` over the engine, plus outputs as resources.

A thin adapter over :class:`engine.api.EngineAPI`; it holds no validation or media probing of its
own. A call to an engine tool reads, in :meth:`UnisonServer.call_tool`:

1. the raw arguments through the engine's request model (:func:`engine.api.parse_arguments`), so
   an unknown name, a wrong type or a bound is refused in the engine's words;
2. :meth:`~engine.api.EngineAPI.admit`, off the event loop: the plan, the path policy, each input
   opened once and its header probed; nothing queued yet;
3. the admitted work on the one job queue (:class:`~engine.jobs.JobQueueAPI`: busy at once when
   it is full; work that needs no model, a rules dry run, runs at once), followed while the
   client waits: progress notifications per step, a client cancel cancels the job, and after
   ``wait_s`` a job handle that the ``job`` tool follows to the same result;
4. the result as files (:mod:`unison_mcp.present`); every error crosses the boundary in
   :func:`unison_mcp.errors.tool_error`.

The tools' signatures, and so their schemas, are built from the engine's request models
(:func:`engine.api.request_model`) with the configured limits; that is also why this module does
not use ``from __future__ import annotations`` (the SDK evaluates the annotations).
"""

import inspect
import logging
import queue as _queue
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import anyio
import anyio.to_thread
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from mcp_types import Resource as MCPResource
from mcp_types import ResourceTemplate as MCPResourceTemplate
from pydantic import Field, ValidationError

from engine.api import Admitted, AnyRequest, EngineAPI, parse_arguments, request_model
from engine.bounds import IMAGE_FRAMES, Bounds, number
from engine.control import JobControl
from engine.errors import InputRefused, InvalidRequest, UnisonError, invalid_request
from engine.inputs import OUTPUT_URI_PREFIX, InputPolicy, output_uri
from engine.jobs import FINISHED, JobAPI, JobQueue, JobQueueAPI
from engine.results import AutoResult, GenerateResult, UnderstandResult
from engine.tasks import tasks_text

from . import __version__
from .config import ServerConfig
from .errors import describe_error, short_rpc_errors, shorten_sdk_logs, tool_error
from .models import AutoOutput, GenerateOutput, JobOutput, JobState, Progress, UnderstandOutput
from .present import auto_result, generate_result, mime_type, understand_result

log = logging.getLogger(__name__)

#: How often a waiting call looks at its job (progress is queued in between, never dropped).
POLL_S = 0.02
#: Outputs listed by resources/list (newest first); older ones stay readable by URI.
MAX_LISTED_OUTPUTS = 500
#: How long `job cancel` waits for a running job to stop before answering.
CANCEL_WAIT_S = 10.0
_TEXT_MIMES = ("application/json",)
ToolName = Literal["understand", "generate", "auto"]
#: The tools whose arguments are an engine request (and the job kinds holding a tool result).
TOOL_KINDS: tuple[ToolName, ...] = ("understand", "generate", "auto")
#: Longest argument string read as JSON text (a list or object some clients send as a string):
#: longer than any valid one (8 paths of 4096 characters, each \u-escaped), so a 10 MB string is
#: left to validation, which refuses it, instead of being parsed first.
_PRE_PARSE_CHARS = 1 << 18
#: Each engine tool's structured output.
_OUTPUTS: dict[str, type[JobState]] = {
    "understand": UnderstandOutput,
    "generate": GenerateOutput,
    "auto": AutoOutput,
}


# ---------------------------------------------------------------------------------------------
# State and the server class


@dataclass
class ServerState:
    """What the tools share: configuration, the engine (with its input policy) and the one job queue."""

    config: ServerConfig
    engine: EngineAPI
    #: The one job queue, or in pool mode the pool (``engine.pool.client.Pool``).
    queue: JobQueueAPI
    #: Take SIGINT/SIGTERM while serving (``run_server``; never for an in-process server).
    handle_signals: bool = False
    #: Engine tool calls in progress: a stop lets their answers out before the process exits.
    active_calls: int = field(default=0, init=False)
    _preloading: bool = field(default=False, init=False, repr=False)

    @property
    def inputs(self) -> InputPolicy:
        """The input policy (narrowed to the server's roots), also used to read outputs back."""
        return self.engine.inputs

    def start_preload(self) -> None:
        """Load the models on the job queue's thread (once), so start-up never waits for them."""
        if self._preloading:
            return
        self._preloading = True
        engine = self.engine

        def preload(control: JobControl) -> None:
            try:
                engine.preload()
            except UnisonError as exc:
                # The engine logged the failure once and remembers it: each call reports it at
                # once, and it is tried again after a while or when the weights appear.
                log.warning("preloading the models stopped (%s); the calls will say why", exc.code)
                raise
            except Exception:
                log.exception("preloading the models failed; each call will try to load them again")
                raise

        self.queue.submit("preload", preload)


class UnisonServer(MCPServer):
    """``MCPServer`` whose resources are the output directory's files, read with their own mime type."""

    def __init__(self, state: ServerState, **kwargs: Any):
        super().__init__(**kwargs)
        self.state = state

    async def call_tool(self, name: str, arguments: dict[str, Any], context: Context | None = None) -> Any:
        """An engine tool's call, from its raw arguments; other tools as the SDK dispatches them.

        The SDK's own argument model ignores names it does not know, so the engine's request
        model validates the raw arguments here: an unknown name (``num_frame``) is refused with
        the closest known one, in the same words as the CLI and the Python API. The refusal, and
        any error after it, is a tool error (``isError``) made by :func:`tool_error`. An unknown
        tool and the ``job`` tool's bad arguments are refused in the same words (and cut alike:
        the SDK's refusals repeat the value whole or cut it without saying its length).
        """
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            known = ", ".join(t.name for t in self._tool_manager.list_tools())
            raise tool_error(InvalidRequest.for_field("name", name, f"no such tool; the tools are {known}"))
        # As the SDK does: a list or object sent as a JSON string (some clients do) is parsed first;
        # a string too long to be a valid one is left to validation, which refuses it.
        short = {k: v for k, v in arguments.items() if not (isinstance(v, str) and len(v) > _PRE_PARSE_CHARS)}
        parsed = {**arguments, **tool.fn_metadata.pre_parse_json(short)}
        if name not in TOOL_KINDS:
            model = tool.fn_metadata.arg_model
            try:
                model.model_validate(parsed)
            except ValidationError as exc:
                raise tool_error(invalid_request(exc, model.model_fields)) from None
            return await super().call_tool(name, arguments, context)
        if context is None:
            context = Context(mcp_server=self, subscriptions=self._subscriptions)
        result = await self.run_tool(name, parsed, context)
        # The SDK's conversion checks the structured content against the output schema.
        return tool.fn_metadata.convert_result(result)

    async def run_tool(self, name: ToolName, arguments: Mapping[str, Any], ctx: Context) -> CallToolResult:
        """Parse, admit, queue, follow, present: one engine tool call (errors as tool errors)."""
        state = self.state

        async def call() -> CallToolResult:
            request = parse_arguments(name, state.engine.config.limits, arguments)
            # Opening and probing the inputs reads files: off the event loop.
            admitted = await anyio.to_thread.run_sync(state.engine.admit, request)
            return await _run_admitted(state, name, admitted, ctx)

        state.active_calls += 1  # on the event loop's thread only
        try:
            return await _as_tool_errors(name, call())
        finally:
            state.active_calls -= 1

    async def list_resources(self) -> list[MCPResource]:
        listed = await super().list_resources()
        policy = self.state.inputs

        def scan() -> list[MCPResource]:
            found = []
            for path in policy.list_outputs()[:MAX_LISTED_OUTPUTS]:
                try:
                    size = path.stat().st_size
                except OSError:  # removed between listing and stat
                    continue
                found.append(
                    MCPResource(
                        uri=output_uri(path.name),
                        name=path.name,
                        mime_type=mime_type(path),
                        size=size,
                        description=f"generated file on disk at {path}",
                    )
                )
            return found

        return listed + await anyio.to_thread.run_sync(scan)

    async def list_resource_templates(self) -> list[MCPResourceTemplate]:
        listed = await super().list_resource_templates()
        listed.append(
            MCPResourceTemplate(
                uri_template=OUTPUT_URI_PREFIX + "{name}",
                name="output",
                title="A generated file",
                description="Any file this server generated, by the name in its unison://outputs/ URI. "
                "The same URI is accepted as an input by generate, understand and auto.",
            )
        )
        return listed

    async def read_resource(self, uri: Any, context: Any = None) -> Iterable[ReadResourceContents] | Any:
        text = str(uri)
        if not text.startswith(OUTPUT_URI_PREFIX):
            return await super().read_resource(uri, context)
        name = unquote(text[len(OUTPUT_URI_PREFIX) :])
        try:
            # Checked and read through one descriptor, off the event loop.
            path, data = await anyio.to_thread.run_sync(self.state.inputs.read_output, name)
        except InputRefused as exc:
            raise ResourceNotFoundError(str(exc)) from None
        mime = mime_type(path)
        if mime.startswith("text/") or mime in _TEXT_MIMES:
            return [ReadResourceContents(content=data.decode("utf-8", errors="replace"), mime_type=mime)]
        return [ReadResourceContents(content=data, mime_type=mime)]


# ---------------------------------------------------------------------------------------------
# Following a job from a tool call


class _ProgressPump:
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


async def _follow(
    job: JobAPI, ctx: Context, pump: _ProgressPump, timeout: float, *, cancel_on_abort: bool
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


async def _as_tool_errors(tool: str, call: Awaitable[CallToolResult]) -> CallToolResult:
    """Await a tool's work; every error crosses the boundary in :func:`tool_error` (for every tool)."""
    try:
        return await call
    except (ToolError, MCPError):
        raise
    except Exception as exc:
        raise tool_error(exc, tool=tool) from exc


def _present(
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


async def _run_admitted(
    state: ServerState, tool: ToolName, admitted: Admitted, ctx: Context
) -> CallToolResult:
    """Run admitted work (at once when it needs no model, else on the queue) and follow it.

    ``EngineAPI.run`` closes the admitted inputs; the job closes them too when it ends without
    running (cancelled while queued), and a busy queue leaves them to be closed here.
    """
    from .http import gallery_url

    engine, preview_side, gallery = state.engine, state.config.preview_side, gallery_url(state.config)

    def work(control: JobControl) -> CallToolResult:
        return _present(engine.run(admitted, control=control), admitted.request, preview_side, gallery)

    try:
        if not admitted.queued:
            # No model work (a rules dry run): answer now instead of queueing behind GPU jobs.
            return await anyio.to_thread.run_sync(work, JobControl())
        pump = _ProgressPump()
        job = state.queue.submit(tool, work, on_progress=pump.push, on_finish=admitted.close)
    except BaseException:
        admitted.close()
        raise
    await _follow(job, ctx, pump, state.config.wait_s, cancel_on_abort=True)
    return _pending_result(job, _OUTPUTS[tool], state.queue, tool)


def _progress(job: JobAPI) -> Progress:
    return Progress(**job.progress())


def _pending_result(job: JobAPI, model: type[JobState], queue: JobQueueAPI, tool: str) -> CallToolResult:
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


def _status_result(job: JobAPI, queue: JobQueueAPI) -> CallToolResult:
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


# ---------------------------------------------------------------------------------------------
# Descriptions, written for the calling model


def _inputs_text(policy: InputPolicy) -> str:
    return (
        f"Input files: absolute paths under the allowed roots ({policy.roots_text()}), or the "
        f"{OUTPUT_URI_PREFIX}<name> URI of an earlier result (that is how calls chain: generate an image, "
        "edit it, animate it)."
    )


def _generate_description(state: ServerState) -> str:
    lim = state.engine.config.limits
    bounds = Bounds.of(lim)
    count = bounds.count
    return f"""Create an image or a video with Wan2.1-VACE (conditioned by the Unison planner's projector tokens).
Pick `task`, describe the result in `prompt`, and give each input file by its role.

Tasks (output: what it does; inputs by role):
{tasks_text()}
A parameter the task does not take is refused, naming the ones it takes; so is an unknown argument.

{_inputs_text(state.engine.inputs)}
Size: width/height in pixels, rounded to multiples of 16. Unset, tasks on a source keep the source's aspect
at about {lim.default_width}×{lim.default_height}'s area (a portrait photo stays portrait); other tasks make
{lim.default_width}×{lim.default_height}. Larger sizes (1080p, 4K) are scaled down to at most {lim.max_side} a side and
{lim.max_pixels} pixels, keeping the aspect (said in the notes).
Frames: images have {IMAGE_FRAMES}. Videos have 4k+1 frames (17, 33, 49, 81...; other counts are rounded), or give
duration_s instead (at `fps`, default {bounds.default_fps:g}). Unset: a source video's length (edit,
outpaint, control; its audio is kept), else {lim.default_frames}. One run makes up to {lim.max_frames} frames;
text_to_video, image_to_video and video_extend make up to {lim.max_duration_s:g} s as a chain of windows.
video_extend: num_frames/duration_s is the new part; the result is the whole clip, plus the new part alone.
Kept: the source is pasted back wherever the task keeps it (outside the mask, the given first/last frame,
the outpainted source, the extended clip); preserve=false returns the generator's raw output.
Candidates: count ({number(count.low)}-{number(count.high)}) makes that many results from consecutive seeds, each its own file.
Sampling: steps (default {state.engine.config.sampling.steps}), guidance, seed (fixed seed = same result),
negative_prompt (default: Wan2.1's), conditioning_scale (strength of the input video/mask conditioning).

Returns: each file as a resource link (unison://outputs/<name>, mime type, size; its seed) with its absolute
path in the structured result, a small JPEG preview (a video's first frame; frames, fps and duration in the
text), the settings used and notes on what was adjusted. A job still running after {state.config.wait_s:g} s returns
{{job_id, status: 'running', progress}} instead: follow it with the `job` tool (action 'wait')."""


def _understand_description(state: ServerState) -> str:
    und = state.engine.config.understanding
    return f"""Answer a question about text, images or a video with Qwen2.5-VL (the Unison planner's model).
Give the question in `prompt` and the files in `media` (or inline as ###path### markers in the prompt).
Images and videos both work; a video is sampled at {und.video_fps:g} fps, up to {und.video_max_frames} frames.
{_inputs_text(state.engine.inputs)}
Returns the answer as text, and {{answer, model, timings}} as structured content. Reads files only."""


def _auto_description(state: ServerState) -> str:
    return f"""Let the Unison planner decide: it reads a free-form request, picks the task, the size and the frame count,
then answers the question or generates the file(s). Mark input files inline as ###/path/to/file.png### (or list
them in `media`; they are numbered in order). Use `generate` instead to choose the task yourself.

Tasks it can choose:
{tasks_text(include_understanding=True)}

{_inputs_text(state.engine.inputs)}
Every file given is used or named in the plan's notes; a generation plan that would ignore every file is
planned again by the rules planner, or refused with the `generate` call to make instead. A model plan that
does not parse falls back to the rules planner (the plan's `planner` and notes say so). Sizes, lengths,
what is kept of the sources, long videos and `count` work as in `generate`.
dry_run=true only plans: it returns the plan (task, size, frames, inputs with roles) without running it.
Returns the plan, then the answer (understanding) or the files as `generate` returns them. A job still
running after {state.config.wait_s:g} s returns a job handle for the `job` tool."""


JOB_DESCRIPTION = """Follow a job handle returned by generate/understand/auto when a call outlived its wait.
- status: where the job is (queued with how many ahead, running with progress, done, failed, cancelled).
- wait: wait again (same limit as a call); returns the job's result when it finishes in time, else its status.
- result: the result now if finished (exactly what the original call would have returned), else its status.
- cancel: stop the job (a running job stops at its next step; nothing is written).
Finished jobs are kept for a while, then forgotten."""

INSTRUCTIONS = """unison-mcp runs Unison on this machine: `understand` answers questions about text, images and
videos; `generate` creates or edits images and videos (you choose the task); `auto` lets the Unison planner
choose. Inputs are local files under the allowed roots or unison://outputs/<name> URIs of earlier results;
outputs are files, returned as resource links with a small preview. Long jobs return a job id for `job`."""


# ---------------------------------------------------------------------------------------------
# Building the server


def build_server(
    config: ServerConfig, engine: EngineAPI | None = None, *, queue: JobQueueAPI | None = None
) -> MCPServer:
    """The MCP server for ``config``; ``engine`` defaults to one built from ``config.engine``.

    ``queue`` defaults to a :class:`JobQueue` in front of the engine; in pool mode it is the
    pool itself (``engine.pool.client.Pool``), which is the engine and the queue at once.

    The engine's input policy is narrowed to the server's roots (an injected engine's too): the
    same policy admits inputs and reads outputs back. Nothing loads here: models load on the
    first call, or in the background when the server starts with ``config.preload``.
    """
    if engine is None:
        from engine.engine import Engine

        engine = Engine(config.engine)
    engine.inputs = InputPolicy(
        config.roots(),
        engine.config.output_dir,
        config.max_input_bytes,
        engine.config.limits.max_input_pixels,
    )
    if engine.inputs.output_dir != config.output_dir:
        log.warning(
            "the engine writes to %s, not the configured %s", engine.inputs.output_dir, config.output_dir
        )
    state = ServerState(
        config=config,
        engine=engine,
        # Keep-alive: after that long without a job the models are unloaded (EngineAPI.unload).
        queue=queue
        if queue is not None
        else JobQueue(
            capacity=config.queue_size,
            keep_jobs=config.keep_jobs,
            idle_s=config.keep_alive_s,
            on_idle=engine.unload,
        ),
    )

    @asynccontextmanager
    async def lifespan(_server: MCPServer):
        from .service import Stopper

        # Here, not before the transport starts: uvicorn takes the signals while it serves.
        stopper = Stopper(state) if state.handle_signals else None
        if stopper is not None:
            stopper.install()
        if config.preload:
            state.start_preload()
        try:
            yield state
        finally:
            if stopper is not None:
                stopper.restore()

    server = UnisonServer(
        state,
        name="unison-mcp",
        title="Unison: multimodal understanding and generation",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
        # The SDK's own errors and log lines repeat what a client sent: cut like ours.
        middleware=[short_rpc_errors],
    )
    shorten_sdk_logs()
    _add_tools(server, state)
    return server


def _engine_tool(server: "UnisonServer", name: ToolName, description: str) -> Callable[..., Any]:
    """The typed function of an engine tool: its docstring is ``description``, its signature the
    engine's request model for ``name`` (so the schema's bounds are the engine's own).

    The SDK reads ``inspect.signature(fn, eval_str=True)``: each parameter is a request field with
    its constraints (``strict``, bounds, lengths) and description; its default sits on the
    parameter, where the SDK expects it (pydantic refuses a default inside ``Annotated``).
    """
    model = request_model(name, server.state.engine.config.limits)

    async def tool(ctx: Context, **arguments: Any) -> CallToolResult:
        # UnisonServer.call_tool calls run_tool with the raw arguments; this path only serves a
        # caller that dispatches through the SDK's tool manager itself.
        return await server.run_tool(name, arguments, ctx)

    params = [inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context)]
    for field_name, info in model.model_fields.items():
        annotation = Annotated[(info.annotation, *info.metadata, Field(description=info.description))]
        default = (
            inspect.Parameter.empty if info.is_required() else info.get_default(call_default_factory=True)
        )
        params.append(
            inspect.Parameter(
                field_name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default
            )
        )
    returns = Annotated[CallToolResult, _OUTPUTS[name]]
    tool.__signature__ = inspect.Signature(params, return_annotation=returns)  # type: ignore[attr-defined]
    tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": returns}
    tool.__name__ = tool.__qualname__ = name
    tool.__doc__ = description
    return tool


def _add_tools(server: "UnisonServer", state: ServerState) -> None:
    async def job(
        ctx: Context,
        action: Annotated[Literal["status", "wait", "cancel", "result"], Field(description="what to do")],
        job_id: Annotated[str, Field(min_length=1, max_length=64, description="the job_id a call returned")],
    ) -> Annotated[CallToolResult, JobOutput]:
        return await _as_tool_errors("job", _job_action(state, action, job_id, ctx))

    job.__doc__ = JOB_DESCRIPTION
    server.add_tool(
        _engine_tool(server, "understand", _understand_description(state)),
        annotations=ToolAnnotations(
            title="Understand text, images, video", readOnlyHint=True, openWorldHint=False
        ),
    )
    server.add_tool(
        _engine_tool(server, "generate", _generate_description(state)),
        annotations=ToolAnnotations(
            title="Generate or edit an image or video",
            readOnlyHint=False,
            destructiveHint=False,  # only ever adds new files to the output directory
            idempotentHint=False,
            openWorldHint=False,
        ),
    )
    server.add_tool(
        _engine_tool(server, "auto", _auto_description(state)),
        annotations=ToolAnnotations(
            title="Plan and run a request (Unison)",
            readOnlyHint=False,
            destructiveHint=False,
            idempotentHint=False,
            openWorldHint=False,
        ),
    )
    server.add_tool(
        job,
        annotations=ToolAnnotations(
            title="Follow a long job",
            readOnlyHint=False,  # `cancel` changes the job
            destructiveHint=False,
            idempotentHint=True,
            openWorldHint=False,
        ),
    )


async def _job_action(state: ServerState, action: str, job_id: str, ctx: Context) -> CallToolResult:
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
        return _status_result(found, queue)
    if action == "cancel":
        found.cancel()
        with anyio.move_on_after(min(config.wait_s, CANCEL_WAIT_S)):
            while found.status not in FINISHED:
                await anyio.sleep(POLL_S)
        return _status_result(found, queue)
    if action == "wait":
        pump = _ProgressPump()
        remove = found.add_listener(pump.push)
        try:
            # Cancelling a wait stops waiting, not the job: `cancel` is explicit.
            await _follow(found, ctx, pump, config.wait_s, cancel_on_abort=False)
        finally:
            remove()
    if found.kind not in TOOL_KINDS:  # the preload job: nothing to return but its state
        return _status_result(found, queue)
    return _pending_result(found, JobOutput, queue, found.kind)


def state_of(server: MCPServer) -> ServerState:
    """The shared state behind a server from :func:`build_server` (tests, the CLI)."""
    if not isinstance(server, UnisonServer):
        raise TypeError("not a server built by unison_mcp.server.build_server")
    return server.state


# ---------------------------------------------------------------------------------------------
# Running


def _ensure_stderr_logging() -> None:
    """Logs go to stderr (stdout carries the protocol in stdio mode); the CLI may configure more."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)


def run_server(config: ServerConfig) -> int:
    """Serve until the client goes away (stdio) or the process is stopped; returns the exit status.

    SIGINT and SIGTERM stop it within :data:`unison_mcp.service.STOP_S` on either transport: the
    running job cancelled, the queued ones answered "shutting down", and the process exits with
    128 + the signal's number (:class:`unison_mcp.service.Stopper`).
    """
    from .service import log_ready

    _ensure_stderr_logging()
    pool = _start_pool(config) if config.pool.enabled else None
    try:
        server = build_server(config, pool, queue=pool)
    except BaseException:
        if pool is not None:  # never leave a cluster running behind a server that did not start
            pool.close(cancel=True, timeout=5.0)
        raise
    state = state_of(server)
    state.handle_signals = True
    from engine.outputs import remove_stale_temps  # what a writer killed mid-file left behind

    remove_stale_temps(state.inputs.output_dir)
    try:
        log_ready(config, output_dir=state.inputs.output_dir, roots=config.roots(), background=True)
        if config.transport == "stdio":
            from .stdio import serve_stdio  # the SDK's stdio, answering the lines it would drop

            anyio.run(serve_stdio, server)
        else:
            from .http import serve_http

            anyio.run(serve_http, server, config)
    finally:
        # Stop the accelerator work of clients that are gone; the worker is a daemon either way.
        state.queue.close(cancel=True, timeout=5.0, reason="the server is shutting down")
    return 0


def _start_pool(config: ServerConfig) -> Any:
    """The Ray Serve pool behind ``--pool ray`` (on the main thread: Ray's driver needs it)."""
    from engine.pool import require_ray

    require_ray()
    from engine.pool.client import Pool

    from .http import gallery_url

    preview_side, gallery = config.preview_side, gallery_url(config)

    def present(_tool: str, result: UnderstandResult | GenerateResult | AutoResult) -> CallToolResult:
        # A job another ingress took is returned here as its own call would have returned it.
        return _present(result, None, preview_side, gallery)

    if config.keep_alive_s is not None:
        log.warning("--keep-alive does not apply with --pool ray: each replica keeps its models loaded")
    return Pool.start(
        config.engine,
        config.pool,
        roots=config.roots(),
        capacity=config.queue_size,
        keep_jobs=config.keep_jobs,
        preload=config.preload,
        present=present,
    )


__all__ = ["ServerState", "UnisonServer", "build_server", "run_server", "state_of"]

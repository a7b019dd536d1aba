"""The MCP server: ``understand``, ``generate``, ``auto`` and ``job`` over the engine, plus outputs as resources.

A thin adapter. Each tool checks its inputs (schema bounds, path policy, ``build_plan``) off the
event loop, puts the model work on the one :class:`~engine.jobs.JobQueue` (busy at once when it
is full), then follows the job: progress notifications per step while the client waits, a
client cancel cancels the job, and after ``wait_s`` the call returns a job handle that the
``job`` tool follows to the same result. Finished work comes back as files
(:mod:`unison_mcp.present`); errors cross the boundary in :func:`unison_mcp.errors.tool_error`.

Tool signatures are built inside :func:`build_server` so their schema bounds come from the
configured limits; that is also why this module does not use ``from __future__ import
annotations`` (the SDK evaluates the annotations, and closures' names must already be values).
"""

import logging
import queue as _queue
import sys
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import unquote

import anyio
import anyio.to_thread
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp_types import CallToolResult, TextContent, ToolAnnotations
from mcp_types import Resource as MCPResource
from mcp_types import ResourceTemplate as MCPResourceTemplate
from pydantic import Field

from engine.control import JobControl
from engine.errors import InputRefused, InvalidRequest
from engine.jobs import FINISHED, Job, JobQueue
from engine.plan import TASKS, Margins, Role, Task, build_plan
from engine.results import Sampling

from . import __version__
from .config import ServerConfig
from .errors import describe_error, tool_error
from .models import AutoOutput, GenerateOutput, JobOutput, JobState, Progress, UnderstandOutput
from .paths import OUTPUT_URI_PREFIX, PathPolicy, output_uri, probe_media
from .present import auto_result, generate_result, mime_type, understand_result

if TYPE_CHECKING:
    from engine.engine import Engine

log = logging.getLogger(__name__)

#: How often a waiting call looks at its job (progress is queued in between, never dropped).
POLL_S = 0.02
#: Outputs listed by resources/list (newest first); older ones stay readable by URI.
MAX_LISTED_OUTPUTS = 500
#: How long `job cancel` waits for a running job to stop before answering.
CANCEL_WAIT_S = 10.0
_TEXT_MIMES = ("application/json",)
#: Job kinds started by tools (and so holding a tool result).
TOOL_KINDS = ("understand", "generate", "auto")


# ---------------------------------------------------------------------------------------------
# State and the server class


@dataclass
class ServerState:
    """What the tools share: configuration, the engine, the one job queue and the path policy."""

    config: ServerConfig
    engine: "Engine"
    queue: JobQueue
    policy: PathPolicy
    _preloading: bool = field(default=False, init=False, repr=False)

    def start_preload(self) -> None:
        """Load the models on the job queue's thread (once), so start-up never waits for them."""
        if self._preloading:
            return
        self._preloading = True
        engine = self.engine

        def preload(control: JobControl) -> None:
            try:
                engine.preload()
            except Exception:
                log.exception("preloading the models failed; each call will try to load them again")
                raise

        self.queue.submit("preload", preload)


class UnisonServer(MCPServer):
    """``MCPServer`` whose resources are the output directory's files, read with their own mime type."""

    def __init__(self, state: ServerState, **kwargs: Any):
        super().__init__(**kwargs)
        self.state = state

    async def list_resources(self) -> list[MCPResource]:
        listed = await super().list_resources()
        policy = self.state.policy

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
            path, data = await anyio.to_thread.run_sync(self.state.policy.read_output, name)
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
    job: Job, ctx: Context, pump: _ProgressPump, timeout: float, *, cancel_on_abort: bool
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


def _checked_request(
    policy: PathPolicy, prompt: str, media: list[str], max_inputs: int
) -> tuple[str, list[str]]:
    """A request's ``###path###`` markers and ``media`` through the path policy and the media probe."""
    text, marked = policy.resolve_markers(prompt)
    files = policy.resolve_all(media, field="media")
    count = len(marked) + len(files)
    if count > max_inputs:
        # Counted before probing: each probe opens a file (a video decodes its first frame).
        raise InvalidRequest.for_field(
            "media", count, f"at most {max_inputs} input files, ###path### markers and media together"
        )
    for path in (*marked, *files):
        probe_media(path)
    return text, files


def _progress(job: Job) -> Progress:
    return Progress(**job.progress())


def _pending_result(job: Job, model: type[JobState], queue: JobQueue, tool: str) -> CallToolResult:
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


def _outcome(job: Job, tool: str) -> CallToolResult:
    """What the call returns for a finished job: its result, or its error as a tool error."""
    try:
        result = job.outcome()
    except Exception as exc:
        raise tool_error(exc, tool=tool) from exc
    if not isinstance(result, CallToolResult):  # a job no tool started (preload)
        raise InvalidRequest.for_field(
            "job_id", job.id, f"is a {job.kind} job, which has no result to return"
        )
    return result


def _status_result(job: Job, queue: JobQueue) -> CallToolResult:
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
        created_at=info["created_at"],
        started_at=info["started_at"],
        finished_at=info["finished_at"],
    )
    text = f"Job {job.id} ({job.kind}) is {job.status}."
    if out.error:
        text += f" {out.error}"
    elif job.status in ("queued", "running") and job.control.cancelled:
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


def _count(rule: Any) -> str:
    if rule.min == rule.max == 1:
        return ""
    if rule.min == 0 and rule.max == 1:
        return ", optional"
    return f", {rule.min}-{rule.max}"


def _tasks_text(include_understanding: bool = False) -> str:
    lines = []
    for task in Task:
        spec = TASKS[task]
        if spec.understanding and not include_understanding:
            continue
        roles = ", ".join(
            f"{r.role.value} ({'/'.join(k.value for k in r.kinds)}{_count(r)})" for r in spec.roles
        )
        lines.append(f"- {task.value} → {spec.output}: {spec.summary}. Inputs: {roles or 'none'}.")
    return "\n".join(lines)


def _inputs_text(policy: PathPolicy) -> str:
    return (
        f"Input files: absolute paths under the allowed roots ({policy.roots_text()}), or the "
        f"{OUTPUT_URI_PREFIX}<name> URI of an earlier result (that is how calls chain: generate an image, "
        "edit it, animate it)."
    )


def _generate_description(state: ServerState) -> str:
    lim = state.engine.config.limits
    return f"""Create an image or a video with Wan2.1-VACE (conditioned by the Unison planner's projector tokens).
Pick `task`, describe the result in `prompt`, and give each input file by its role.

Tasks (output: what it does; inputs by role):
{_tasks_text()}
image_to_video takes exactly one of first_frame / last_frame (both: first_last_to_video).
Outpainting takes `margins` (pixels added left/top/right/bottom) or a larger width/height;
video_extend keeps `context_frames` frames of the source (default 9).

{_inputs_text(state.policy)}
Size: width/height in pixels, rounded to multiples of 16, each {lim.min_side}-{lim.max_side}, at most
{lim.max_pixels} pixels per frame; default {lim.default_width}×{lim.default_height}.
Frames: images have 1. Videos have 4k+1 frames ({lim.min_frames}-{lim.max_frames}: 17, 33, 49, 81...),
default {lim.default_frames}; or give duration_s instead (at `fps`, default {state.engine.config.sampling.fps:g}).
Sampling: steps (default {state.engine.config.sampling.steps}), guidance, seed (fixed seed = same result),
negative_prompt, conditioning_scale (strength of the input video/mask conditioning).

Returns: each file as a resource link (unison://outputs/<name>, mime type, size) with its absolute path in
the structured result, a small JPEG preview (a video's first frame; frames, fps and duration in the text),
and the settings used. A job still running after {state.config.wait_s:g} s returns
{{job_id, status: 'running', progress}} instead: follow it with the `job` tool (action 'wait')."""


def _understand_description(state: ServerState) -> str:
    und = state.engine.config.understanding
    return f"""Answer a question about text, images or a video with Qwen2.5-VL (the Unison planner's model).
Give the question in `prompt` and the files in `media` (or inline as ###path### markers in the prompt).
Images and videos both work; a video is sampled at {und.video_fps:g} fps, up to {und.video_max_frames} frames.
{_inputs_text(state.policy)}
Returns the answer as text, and {{answer, model, timings}} as structured content. Reads files only."""


def _auto_description(state: ServerState) -> str:
    return f"""Let the Unison planner decide: it reads a free-form request, picks the task, the size and the frame count,
then answers the question or generates the file(s). Mark input files inline as ###/path/to/file.png### (or list
them in `media`; they are numbered in order). Use `generate` instead to choose the task yourself.

Tasks it can choose:
{_tasks_text(include_understanding=True)}

{_inputs_text(state.policy)}
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


def build_server(config: ServerConfig, engine: "Engine | None" = None) -> MCPServer:
    """The MCP server for ``config``; ``engine`` defaults to one built from ``config.engine``.

    Nothing loads here: models load on the first call, or in the background when the server
    starts with ``config.preload``.
    """
    if engine is None:
        from engine.engine import Engine

        engine = Engine(config.engine)
    output_dir = engine.config.output_dir
    policy = PathPolicy(config.roots(), output_dir, config.max_input_bytes)
    if policy.output_dir != config.output_dir:
        log.warning("the engine writes to %s, not the configured %s", policy.output_dir, config.output_dir)
    state = ServerState(
        config=config,
        engine=engine,
        queue=JobQueue(capacity=config.queue_size, keep_jobs=config.keep_jobs),
        policy=policy,
    )

    @asynccontextmanager
    async def lifespan(_server: MCPServer):
        if config.preload:
            state.start_preload()
        yield state

    server = UnisonServer(
        state,
        name="unison-mcp",
        title="Unison: multimodal understanding and generation",
        version=__version__,
        instructions=INSTRUCTIONS,
        lifespan=lifespan,
    )
    _add_tools(server, state)
    return server


def _add_tools(server: MCPServer, state: ServerState) -> None:
    engine, queue, policy, config = state.engine, state.queue, state.policy, state.config
    lim = engine.config.limits
    gen_tasks = tuple(t.value for t in Task if not TASKS[t].understanding)
    GenTask = Literal[gen_tasks]  # type: ignore[valid-type]  # built from the engine's task table
    preview_side = config.preview_side
    fps_default = engine.config.sampling.fps

    Prompt = Annotated[str, Field(min_length=1, max_length=lim.max_prompt_chars)]
    InputFile = Annotated[
        str | None, Field(description="absolute path under the allowed roots, or unison://outputs/<name>")
    ]
    Media = Annotated[
        list[str],
        Field(
            max_length=lim.max_inputs,
            description="input files in order: paths or unison://outputs/<name> URIs",
        ),
    ]
    Steps = Annotated[int | None, Field(ge=1, le=lim.max_steps, description="denoising steps")]
    Seed = Annotated[
        int | None, Field(ge=0, le=2**63 - 1, description="random seed (same seed, same result)")
    ]
    Guidance = Annotated[float | None, Field(ge=0, le=30, description="classifier-free guidance scale")]
    Negative = Annotated[str | None, Field(max_length=lim.max_prompt_chars, description="what to avoid")]

    async def run_job(
        kind: str, work: Callable[[JobControl], CallToolResult], ctx: Context, model: type[JobState]
    ) -> CallToolResult:
        pump = _ProgressPump()
        job = queue.submit(kind, work, on_progress=pump.push)
        await _follow(job, ctx, pump, config.wait_s, cancel_on_abort=True)
        return _pending_result(job, model, queue, kind)

    # -------------------------------------------------------------------------------- understand

    async def understand(
        ctx: Context,
        prompt: Annotated[
            str, Field(min_length=1, max_length=lim.max_prompt_chars, description="the question")
        ],
        media: Media = [],  # noqa: B006  (the SDK validates a fresh copy per call; this default is never mutated)
        max_new_tokens: Annotated[
            int | None, Field(ge=1, le=4096, description="longest answer in tokens")
        ] = None,
    ) -> Annotated[CallToolResult, UnderstandOutput]:
        try:

            def prepare() -> tuple[str, list[str]]:
                return _checked_request(policy, prompt, media, lim.max_inputs)

            text, files = await anyio.to_thread.run_sync(prepare)

            def work(control: JobControl) -> CallToolResult:
                res = engine.understand(text, files, max_new_tokens=max_new_tokens, control=control)
                return understand_result(res)

            return await run_job("understand", work, ctx, UnderstandOutput)
        except ToolError:
            raise
        except Exception as exc:
            raise tool_error(exc, tool="understand") from exc

    # -------------------------------------------------------------------------------- generate

    async def generate(
        ctx: Context,
        task: Annotated[GenTask, Field(description="what to make; see the task list")],
        prompt: Annotated[Prompt, Field(description="what the result should show")],
        source: Annotated[InputFile, Field(description="the image/video to edit, outpaint or extend")] = None,
        mask: Annotated[InputFile, Field(description="white = regenerate, black = keep")] = None,
        reference: Annotated[
            list[str],
            Field(max_length=3, description="1-3 subject/face reference images (image/video_reference)"),
        ] = [],  # noqa: B006  (validated copy per call)
        control: Annotated[InputFile, Field(description="control image/video (pose, depth, edges)")] = None,
        first_frame: Annotated[InputFile, Field(description="image the video starts from")] = None,
        last_frame: Annotated[InputFile, Field(description="image the video ends on")] = None,
        width: Annotated[
            int | None,
            Field(ge=lim.min_side, le=lim.max_side, description="pixels, rounded to a multiple of 16"),
        ] = None,
        height: Annotated[
            int | None,
            Field(ge=lim.min_side, le=lim.max_side, description="pixels, rounded to a multiple of 16"),
        ] = None,
        num_frames: Annotated[
            int | None,
            Field(ge=1, le=lim.max_frames, description="video: 4k+1 frames (17, 33, 49, 81); image: 1"),
        ] = None,
        duration_s: Annotated[
            float | None, Field(gt=0, le=600, description="video length in seconds, instead of num_frames")
        ] = None,
        fps: Annotated[
            float | None,
            Field(gt=0, le=lim.max_fps, description=f"video frame rate (default {fps_default:g})"),
        ] = None,
        steps: Steps = None,
        guidance: Guidance = None,
        seed: Seed = None,
        negative_prompt: Negative = None,
        conditioning_scale: Annotated[
            float | None,
            Field(ge=0, le=2, description="strength of the source/control conditioning (default 1)"),
        ] = None,
        margins: Annotated[
            Margins | None, Field(description="outpainting: pixels to add on each side")
        ] = None,
        context_frames: Annotated[
            int | None, Field(ge=1, description="video_extend: source frames kept as context (default 9)")
        ] = None,
    ) -> Annotated[CallToolResult, GenerateOutput]:
        try:
            given: list[tuple[str, Role]] = []
            for value, role in (
                (source, Role.SOURCE),
                (mask, Role.MASK),
                (control, Role.CONTROL),
                (first_frame, Role.FIRST_FRAME),
                (last_frame, Role.LAST_FRAME),
            ):
                if value is not None:
                    given.append((value, role))
            given += [(r, Role.REFERENCE) for r in reference]

            def prepare():
                inputs = []
                counts: dict[Role, int] = {}
                for value, role in given:
                    i = counts.get(role, 0)
                    counts[role] = i + 1
                    name = f"{role.value}[{i}]" if role is Role.REFERENCE else role.value
                    path = policy.resolve(value, field=name)
                    probe_media(path)
                    inputs.append((str(path), role))
                plan = build_plan(
                    task,
                    prompt,
                    inputs,
                    width=width,
                    height=height,
                    num_frames=num_frames,
                    duration_s=duration_s,
                    fps=fps,
                    margins=margins,
                    context_frames=context_frames,
                    limits=lim,
                )
                sampling = Sampling(
                    steps=steps,
                    guidance=guidance,
                    seed=seed,
                    negative_prompt=negative_prompt,
                    conditioning_scale=conditioning_scale,
                )
                return plan, sampling

            plan, sampling = await anyio.to_thread.run_sync(prepare)

            def work(job_control: JobControl) -> CallToolResult:
                res = engine.generate(plan, sampling, control=job_control)
                return generate_result(res, preview_side=preview_side)

            return await run_job("generate", work, ctx, GenerateOutput)
        except ToolError:
            raise
        except Exception as exc:
            raise tool_error(exc, tool="generate") from exc

    # -------------------------------------------------------------------------------- auto

    async def auto(
        ctx: Context,
        prompt: Annotated[Prompt, Field(description="the request; input files inline as ###path###")],
        media: Media = [],  # noqa: B006  (validated copy per call)
        dry_run: Annotated[bool, Field(description="only plan: return the plan, run nothing")] = False,
        steps: Steps = None,
        guidance: Guidance = None,
        seed: Seed = None,
        negative_prompt: Negative = None,
    ) -> Annotated[CallToolResult, AutoOutput]:
        try:

            def prepare() -> tuple[str, list[str]]:
                return _checked_request(policy, prompt, media, lim.max_inputs)

            text, files = await anyio.to_thread.run_sync(prepare)
            sampling = Sampling(steps=steps, guidance=guidance, seed=seed, negative_prompt=negative_prompt)

            def work(control: JobControl) -> CallToolResult:
                res = engine.auto(text, files, sampling=sampling, dry_run=dry_run, control=control)
                return auto_result(res, dry_run=dry_run, preview_side=preview_side)

            if dry_run and engine.config.backend == "rules":
                # The rules planner uses no model: answer at once instead of queueing behind GPU jobs.
                return await anyio.to_thread.run_sync(work, JobControl())
            return await run_job("auto", work, ctx, AutoOutput)
        except ToolError:
            raise
        except Exception as exc:
            raise tool_error(exc, tool="auto") from exc

    # -------------------------------------------------------------------------------- job

    async def job(
        ctx: Context,
        action: Annotated[Literal["status", "wait", "cancel", "result"], Field(description="what to do")],
        job_id: Annotated[str, Field(min_length=1, max_length=64, description="the job_id a call returned")],
    ) -> Annotated[CallToolResult, JobOutput]:
        try:
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
        except ToolError:
            raise
        except Exception as exc:
            raise tool_error(exc, tool="job") from exc

    server.add_tool(
        understand,
        description=_understand_description(state),
        annotations=ToolAnnotations(
            title="Understand text, images, video", readOnlyHint=True, openWorldHint=False
        ),
    )
    server.add_tool(
        generate,
        description=_generate_description(state),
        annotations=ToolAnnotations(
            title="Generate or edit an image or video",
            readOnlyHint=False,
            destructiveHint=False,  # only ever adds new files to the output directory
            idempotentHint=False,
            openWorldHint=False,
        ),
    )
    server.add_tool(
        auto,
        description=_auto_description(state),
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
        description=JOB_DESCRIPTION,
        annotations=ToolAnnotations(
            title="Follow a long job",
            readOnlyHint=False,  # `cancel` changes the job
            destructiveHint=False,
            idempotentHint=True,
            openWorldHint=False,
        ),
    )


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


def run_server(config: ServerConfig) -> None:
    """Serve until the client goes away (stdio) or the process is stopped (HTTP)."""
    _ensure_stderr_logging()
    server = build_server(config)
    state = state_of(server)
    try:
        if config.transport == "stdio":
            log.info("unison-mcp %s serving on stdio (outputs in %s)", __version__, state.policy.output_dir)
            anyio.run(server.run_stdio_async)
        else:
            from .http import serve_http

            anyio.run(serve_http, server, config)
    finally:
        # Stop the accelerator work of clients that are gone; the worker is a daemon either way.
        state.queue.close(cancel=True, timeout=5.0)


__all__ = ["ServerState", "UnisonServer", "build_server", "run_server", "state_of"]

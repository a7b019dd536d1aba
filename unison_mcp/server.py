"""The MCP server: ``understand``, ``generate``, ``auto`` and ``job`` over the engine, plus outputs as resources.

A thin adapter over :class:`engine.api.EngineAPI`; it holds no validation or media probing of its
own. A call to an engine tool reads, in :meth:`UnisonServer.call_tool`:

1. the raw arguments through the engine's request model (:func:`engine.api.parse_arguments`), so
   an unknown name, a wrong type or a bound is refused in the engine's words;
2. :meth:`~engine.api.EngineAPI.admit`, off the event loop: the plan, the path policy, each input
   opened once and its header probed; nothing queued yet;
3. the admitted work on the one job queue (:class:`~engine.jobs.JobQueueAPI`: busy at once when
   it is full; work that needs no model, a rules dry run, runs at once), followed while the
   client waits (:mod:`unison_mcp.follow`): progress notifications per step, a client cancel
   cancels the job, and after ``wait_s`` a job handle that the ``job`` tool follows to the same
   result;
4. the result as files (:mod:`unison_mcp.present`); every error crosses the boundary in
   :func:`unison_mcp.errors.tool_error`.

The tools' signatures, and so their schemas, are built from the engine's request models
(:func:`engine.api.request_model`) with the configured limits, and published in the shape every
client's converter accepts (:func:`unison_mcp.schema.portable`, with the options the server is
not configured for left out); their descriptions are :mod:`unison_mcp.descriptions`, and the guide
they name is a resource. That is also why this module does not use ``from __future__ import
annotations`` (the SDK evaluates the annotations). What the tools share is
:class:`unison_mcp.state.ServerState`.
"""

import base64
import inspect
import logging
import sys
import time
from collections.abc import Callable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal
from urllib.parse import unquote

import anyio
import anyio.to_thread
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.resources import TextResource
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INVALID_PARAMS,
    BlobResourceContents,
    CallToolResult,
    InputRequiredResult,
    ReadResourceRequestParams,
    ReadResourceResult,
    TextResourceContents,
    ToolAnnotations,
)
from mcp_types import Resource as MCPResource
from mcp_types import ResourceTemplate as MCPResourceTemplate
from pydantic import Field, ValidationError

from engine.api import EngineAPI, parse_arguments, request_model
from engine.config import EngineConfig
from engine.engine import Engine
from engine.errors import InputRefused, InvalidRequest, invalid_request, shown
from engine.inputs import OUTPUT_URI_PREFIX, InputPolicy, output_uri
from engine.jobs import JobQueue, JobQueueAPI
from engine.outdir import output_type, remove_stale_temps
from engine.pool import require_ray
from engine.pool.client import Pool
from engine.results import AutoResult, GenerateResult, UnderstandResult

from . import __version__
from .config import ServerConfig
from .descriptions import (
    GUIDE_URI,
    INSTRUCTIONS,
    JOB_DESCRIPTION,
    auto_description,
    generate_description,
    guide_text,
    understand_description,
)
from .errors import short_rpc_errors, shorten_sdk_logs, tool_error
from .follow import OUTPUTS, TOOL_KINDS, ToolName, as_tool_errors, job_action, present_result, run_admitted
from .http import gallery_url, serve_http
from .models import JobOutput
from .present import gallery_link
from .schema import portable
from .service import Stopper, log_ready
from .state import ServerState, state_of
from .stdio import serve_stdio
from .tasks import TasksExtension
from .viewer import LINK, add_app_tools, callable_by, for_client
from .viewer import extension as viewer_extension

log = logging.getLogger(__name__)

#: Outputs listed by resources/list (newest first); older ones stay readable by URI.
MAX_LISTED_OUTPUTS = 500
_TEXT_MIMES = ("application/json",)
#: What resources/read answers for an output: its contents, or why not (a refusal to raise).
_Read = TextResourceContents | BlobResourceContents | MCPError
#: Longest argument string read as JSON text (a list or object some clients send as a string):
#: longer than any valid one (8 paths of 4096 characters, each \u-escaped), so a 10 MB string is
#: left to validation, which refuses it, instead of being parsed first.
_PRE_PARSE_CHARS = 1 << 18


# ---------------------------------------------------------------------------------------------
# The server class


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
        # The viewer's own tools exist only for hosts that render it (unison_mcp.viewer).
        if tool is None or not callable_by(tool.meta, context):
            known = ", ".join(t.name for t in self._tool_manager.list_tools() if callable_by(t.meta, context))
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
        if isinstance(result, InputRequiredResult):  # questions for the user (unison_mcp/asking.py)
            return result
        # The SDK's conversion checks the structured content against the output schema.
        return tool.fn_metadata.convert_result(result)

    async def run_tool(
        self,
        name: ToolName,
        arguments: Mapping[str, Any],
        ctx: Context,
        *,
        wait_s: float | None = None,
    ) -> CallToolResult | InputRequiredResult:
        """Parse, admit, queue, follow, present: one engine tool call (errors as tool errors).

        ``wait_s``: how long to follow the job before returning its handle (default: the server's;
        the viewer's ``viewer_run`` asks for 0, to follow it with ``job``)."""
        state = self.state
        since = time.perf_counter()  # the result's call_s counts from here

        async def call() -> CallToolResult | InputRequiredResult:
            request = parse_arguments(name, state.engine.config.limits, arguments)
            # Opening and probing the inputs reads files: off the event loop.
            admitted = await anyio.to_thread.run_sync(state.engine.admit, request)
            return await run_admitted(state, name, admitted, ctx, since=since, wait_s=wait_s)

        state.active_calls += 1  # on the event loop's thread only
        try:
            return await as_tool_errors(name, call())
        finally:
            state.active_calls -= 1

    async def list_resources(self) -> list[MCPResource]:
        listed = await super().list_resources()
        policy = self.state.inputs

        def scan() -> list[MCPResource]:
            # Listed with their sizes at once: a file removed meanwhile is simply not there.
            return [
                MCPResource(
                    uri=output_uri(e.name),
                    name=e.name,
                    mime_type=output_type(e.name),
                    size=e.size,
                    description=f"generated file on disk at {e.path}",
                )
                for e in policy.outputs.listing()[:MAX_LISTED_OUTPUTS]
            ]

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

    async def _handle_read_resource(
        self, ctx: ServerRequestContext[Any], params: ReadResourceRequestParams
    ) -> Any:
        """An output's ``resources/read``: read and base64-encoded on a worker thread, never on the
        event loop (other sessions keep being answered), and refused over
        ``ServerConfig.max_read_bytes``. The SDK's own handler (this method, which its
        ``__init__`` registers) would encode on the loop; other URIs still go to it."""
        uri = str(params.uri)
        if not uri.startswith(OUTPUT_URI_PREFIX):
            return await super()._handle_read_resource(ctx, params)
        read = await anyio.to_thread.run_sync(self._read_output, uri)
        if isinstance(read, MCPError):
            log.info("resources/read %s refused: %s", shown(uri, quoted=False), read.error.message)
            raise read
        return ReadResourceResult(contents=[read])

    def _read_output(self, uri: str) -> _Read:
        """One output's contents for ``resources/read`` (a worker thread's work), or its refusal."""
        name = unquote(uri[len(OUTPUT_URI_PREFIX) :])
        limit = self.state.config.max_read_bytes
        outputs = self.state.inputs.outputs
        try:
            data, st = outputs.read(name, limit)
        except InputRefused as exc:
            return MCPError(code=INVALID_PARAMS, message=str(exc), data={"uri": uri})
        if data is None:
            gallery = gallery_url(self.state.config)
            where = f" or open {gallery_link(gallery, name)}" if gallery else ""
            return MCPError(
                code=INVALID_PARAMS,
                message=f"output {name} is {st.st_size:,} bytes, over the {limit:,}-byte limit of "
                f"resources/read (max_read_bytes): read the file at {outputs.path / name} on the "
                f"server's machine{where}",
                data={"uri": uri, "size": st.st_size, "limit": limit},
            )
        mime = output_type(name)
        if mime in _TEXT_MIMES:
            return TextResourceContents(uri=uri, text=data.decode("utf-8", errors="replace"), mime_type=mime)
        return BlobResourceContents(uri=uri, blob=base64.b64encode(data).decode("ascii"), mime_type=mime)


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
        engine = Engine(config.engine)
    engine.inputs = InputPolicy(
        config.roots(),
        engine.config.output_dir,
        config.max_input_bytes,
        engine.config.limits.max_input_pixels,
    )
    # Outputs are read back through a handle on the directory, taken now where it exists (else
    # at its first use): a link swapped in for it later is never followed.
    engine.inputs.outputs.open()
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
        # Background tasks for the clients that negotiate them (the `job` tool for the others),
        # and the result viewer (MCP Apps), offered to the hosts that render it.
        extensions=[TasksExtension(state), viewer_extension(state)],
        # The SDK's own errors and log lines repeat what a client sent: cut like ours. A client
        # without MCP Apps lists the tools and resources as if the viewer did not exist.
        middleware=[short_rpc_errors, for_client],
    )
    shorten_sdk_logs()
    _add_tools(server, state)
    add_app_tools(server)
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
    returns = Annotated[CallToolResult, OUTPUTS[name]]
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
        return await as_tool_errors("job", job_action(state, action, job_id, ctx))

    job.__doc__ = JOB_DESCRIPTION
    server.add_resource(
        TextResource(
            uri=GUIDE_URI,
            name="guide",
            title="How to use the tools",
            description="Each task's rules, the limits, the allowed folders and examples",
            mime_type="text/markdown",
            text=guide_text(state),
        )
    )
    server.add_tool(
        _engine_tool(server, "understand", understand_description(state)),
        annotations=ToolAnnotations(
            title="Understand text, images, video", readOnlyHint=True, openWorldHint=False
        ),
    )
    server.add_tool(
        _engine_tool(server, "generate", generate_description(state)),
        meta=LINK,  # the result viewer (unison_mcp.viewer), for hosts that render MCP Apps
        annotations=ToolAnnotations(
            title="Generate or edit an image or video",
            readOnlyHint=False,
            destructiveHint=False,  # only ever adds new files to the output directory
            idempotentHint=False,
            openWorldHint=False,
        ),
    )
    server.add_tool(
        _engine_tool(server, "auto", auto_description(state)),
        meta=LINK,
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
        meta=LINK,
        annotations=ToolAnnotations(
            title="Follow a long job",
            readOnlyHint=False,  # `cancel` changes the job
            destructiveHint=False,
            idempotentHint=True,
            openWorldHint=False,
        ),
    )
    omit = unconfigured_options(state.engine.config)
    for name in TOOL_KINDS:
        _publish(server, name, request_model(name, state.engine.config.limits).model_json_schema(), omit)
    _publish(server, "job", server._tool_manager.get_tool("job").parameters, ())


def unconfigured_options(config: EngineConfig) -> tuple[str, ...]:
    """The options a call cannot use with this configuration, left out of the schemas: ``turbo``
    without a turbo LoRA, ``loras`` without user LoRAs (the request models still take them, and
    the engine refuses them by name)."""
    return (
        *(("turbo",) if config.loras.turbo_lora is None else ()),
        *(() if config.loras.adapters else ("loras",)),
    )


def _publish(server: "UnisonServer", name: str, arguments: dict[str, Any], omit: tuple[str, ...]) -> None:
    """Publish the tool's input and output schemas in the shape every client accepts
    (:func:`unison_mcp.schema.portable`); the SDK reads both fields at each tools/list."""
    tool = server._tool_manager.get_tool(name)
    tool.parameters = portable(arguments, omit=omit)
    output = tool.fn_metadata.output_model
    tool.fn_metadata.output_schema = portable(output.model_json_schema(), nulls=False)
    tool.__dict__.pop("output_schema", None)  # the Tool's cached copy, should it have been read


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
    _open_output_dir(state)
    try:
        log_ready(config, output_dir=state.inputs.output_dir, roots=config.roots(), background=True)
        if config.transport == "stdio":
            anyio.run(serve_stdio, server)  # the SDK's stdio, answering the lines it would drop
        else:
            anyio.run(serve_http, server, config)
    finally:
        # Stop the accelerator work of clients that are gone; the worker is a daemon either way.
        state.queue.close(cancel=True, timeout=5.0, reason="the server is shutting down")
    return 0


def _open_output_dir(state: ServerState) -> None:
    """At start: the output directory made if missing, its handle taken (what is served is read
    through it: a link swapped in later is not followed), and what a killed write left removed.
    A directory that cannot be made is said now; each call that writes says it again."""
    outputs = state.inputs.outputs
    try:
        outputs.path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.warning(
            "the output directory %s cannot be created (%s): calls that write will fail until it can",
            outputs.path,
            exc.strerror or exc,
        )
        return
    outputs.open()
    remove_stale_temps(outputs.path)


def _start_pool(config: ServerConfig) -> Pool:
    """The Ray Serve pool behind ``--pool ray`` (on the main thread: Ray's driver needs it)."""
    require_ray()
    preview_side, gallery = config.preview_side, gallery_url(config)

    def present(_tool: str, result: UnderstandResult | GenerateResult | AutoResult) -> CallToolResult:
        # A job another ingress took is returned here as its own call would have returned it.
        return present_result(result, None, preview_side, gallery)

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


__all__ = ["UnisonServer", "build_server", "run_server"]

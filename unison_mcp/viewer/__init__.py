"""The result viewer: one MCP Apps view (``io.modelcontextprotocol/ui``) for generate, auto and job.

A host that renders MCP Apps (Claude, ChatGPT, VS Code, Goose, Cursor) shows the view beside the
call: the image at its size with zoom, the video in a player (loop, scrub, frame by frame), the
candidates side by side, the mask or control signal found as a layer, the plan, seed and timings,
the job's progress with a cancel button, and buttons for the next step (again with a new seed,
more steps, a follow-up on this result, a brush to paint the region to change). The view is one
self-contained HTML file (``app.html``, no build step, no other origin: its files come through the
host as ``resources/read`` of ``unison://outputs/…``); its protocol is the extension's postMessage
JSON-RPC, written out in the file.

What a server gets from here (:func:`extension`, :func:`add_app_tools`, :func:`for_client`):

- the ``ui://`` resource, served as ``text/html;profile=mcp-app`` with a CSP that allows no
  other origin, and the extension advertised in the server's capabilities;
- :data:`LINK`, the ``_meta`` that links a tool to the view (generate, auto, job);
- the view's own tools (:mod:`unison_mcp.viewer.tools`), ``visibility: ["app"]``;
- for a client that did not negotiate the extension, exactly what it saw before: tools/list
  without the links and the app-only tools, resources/list without the view, and the app-only
  tools refused as unknown (:func:`callable_by`). The tools' results are the same for every
  client: a view that gets no ``structuredContent`` reads the result's text (one line a file, in
  the form :mod:`unison_mcp.present` writes: URI, media type, size, role, seed) and the outputs'
  sidecars instead.
"""

import json
from functools import cache
from importlib import resources
from typing import Any

from mcp.server.apps import Apps, ResourceCsp, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations
from pydantic import BaseModel

from engine.bounds import MAX_COUNT
from engine.config import Limits

from ..state import ServerState
from .tools import ToolRunner, app_tools

#: The view's address: the one ``ui://`` resource every linked tool names.
VIEWER_URI = "ui://unison/viewer.html"
#: The ``_meta`` that links a tool's results to the view (generate, auto and job carry it).
LINK: dict[str, Any] = {"ui": {"resourceUri": VIEWER_URI}}
_APP_ONLY: dict[str, Any] = {"ui": {"resourceUri": VIEWER_URI, "visibility": ["app"]}}
#: Where ``app.html`` takes the server's limits (the bounds of its "more steps" and candidates).
_LIMITS_MARK = '{"limits": "from the server"}'


@cache
def _template() -> str:
    return resources.files(__package__).joinpath("app.html").read_text(encoding="utf-8")


def viewer_html(limits: Limits) -> str:
    """The view's HTML with this server's limits in it."""
    facts = {"max_steps": limits.max_steps, "max_count": MAX_COUNT}
    # In a <script type="application/json">: "</" could close the element, so it never appears.
    return _template().replace(_LIMITS_MARK, json.dumps(facts).replace("</", "<\\/"), 1)


def extension(state: ServerState) -> Apps:
    """The MCP Apps extension with the view registered (its tools come from :func:`add_app_tools`)."""
    apps = Apps()
    apps.add_html_resource(
        VIEWER_URI,
        viewer_html(state.engine.config.limits),
        name="unison-viewer",
        title="Unison result viewer",
        description="Shows a generate, auto or job result: image with zoom, video player, candidates, "
        "masks found, plan and timings, progress; runs the next step through the host.",
        # No origin at all: files come through the host bridge, nothing from the network.
        csp=ResourceCsp(connect_domains=[], resource_domains=[], frame_domains=[], base_uri_domains=[]),
        prefers_border=True,
    )
    return apps


def add_app_tools(server: ToolRunner) -> None:
    """Register the view's own tools on ``server`` (the Unison server)."""
    titles = {
        "viewer_mask": "Store a mask painted in the viewer",
        "viewer_run": "Start a call from the viewer",
        "viewer_jobs": "The running jobs of a call",
    }
    for fn in app_tools(server):
        # Only viewer_run changes anything beyond adding a file; none reaches outside the server.
        read_only = fn.__name__ == "viewer_jobs"
        server.add_tool(
            fn,
            title=titles[fn.__name__],
            meta=_APP_ONLY,
            annotations=ToolAnnotations(
                title=titles[fn.__name__],
                readOnlyHint=read_only,
                destructiveHint=False,
                idempotentHint=read_only,
                openWorldHint=False,
            ),
        )


# ---------------------------------------------------------------------------------------------
# Clients without the extension


def app_only(meta: dict[str, Any] | None) -> bool:
    """Whether a tool with this ``_meta`` is for views only (its visibility lacks "model")."""
    ui = (meta or {}).get("ui")
    visibility = ui.get("visibility") if isinstance(ui, dict) else None
    return isinstance(visibility, list) and "model" not in visibility


def callable_by(meta: dict[str, Any] | None, ctx: Context | None) -> bool:
    """Whether the client of ``ctx`` may call a tool with this ``_meta``: an app-only tool only
    through a host that negotiated the extension (to any other client it does not exist)."""
    if not app_only(meta):
        return True
    try:
        return ctx is not None and client_supports_apps(ctx)
    except ValueError:  # a context made outside a request
        return False


def _listed(ctx: ServerRequestContext[Any, Any], result: Any) -> Any:
    """What a client without MCP Apps lists: the tools without ``_meta.ui`` and without the app-only
    ones, the resources without ``ui://`` ones (``result``: the handler's result, a model or the
    JSON the SDK already made of it)."""
    if isinstance(result, BaseModel):
        return type(result).model_validate(_listed(ctx, result.model_dump(by_alias=True, exclude_none=True)))
    if not isinstance(result, dict):
        return result
    if ctx.method == "tools/list" and isinstance(result.get("tools"), list):
        tools = [_without_link(t) for t in result["tools"] if not app_only(t.get("_meta"))]
        return {**result, "tools": tools}
    if ctx.method == "resources/list" and isinstance(result.get("resources"), list):
        listed = [r for r in result["resources"] if not str(r.get("uri", "")).startswith("ui://")]
        return {**result, "resources": listed}
    return result


def _without_link(tool: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (tool.get("_meta") or {}).items() if k != "ui"}
    plain = {k: v for k, v in tool.items() if k != "_meta"}
    return {**plain, "_meta": meta} if meta else plain


async def for_client(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: a client that did not negotiate MCP Apps lists the tools and resources it
    listed before the view existed (no ``_meta.ui`` link, no app-only tool, no ``ui://`` resource)."""
    result = await call_next(ctx)
    if ctx.method not in ("tools/list", "resources/list") or client_supports_apps(ctx):
        return result
    return _listed(ctx, result)


__all__ = [
    "LINK",
    "VIEWER_URI",
    "add_app_tools",
    "app_only",
    "callable_by",
    "extension",
    "for_client",
    "viewer_html",
]

"""Streamable HTTP: the SDK's app, DNS-rebinding protection for the bound port, a bearer token, the gallery.

Before anything is served, :func:`check_exposure`: a non-loopback host without a token is refused
unless ``--no-auth`` says so on purpose (then a loud warning).

Layers, outside in:

1. :class:`PathRoutes`: ``/gallery`` and below go to the gallery (:mod:`unison_mcp.gallery`,
   which checks the same Host/Origin rules and the same token, also as a cookie a browser keeps);
   ``/favicon.ico`` is answered 404 (nothing of the user's, no token asked); everything else to
   the MCP app.
2. :class:`BearerTokenMiddleware` (when ``config.auth_token`` is set): every HTTP request needs
   ``Authorization: Bearer <token>``, compared in constant time; anything else is answered 401
   before the MCP layer sees it.
3. :class:`MessageRules`: a POST body to ``/mcp`` is read with a size cap and checked by the
   rules stdio applies too (:mod:`unison_mcp.wire`: size, strict UTF-8, nesting depth, each key
   once, the SDK's own validation) before the SDK parses it; a refused body is answered 413 or
   400 with a JSON-RPC error, in the shape of the SDK's own parse errors.
4. The SDK's transport security: only ``Host`` headers naming the bound port on localhost
   (``127.0.0.1``, ``localhost``, ``[::1]``, and the configured host), or a name given with
   ``--allowed-host`` (what a reverse proxy sends), pass, and only the matching origins, so a web
   page that rebinds a DNS name to 127.0.0.1 is refused. :class:`MessageRules` runs the same
   check before it reads a body.
5. The SDK's streamable HTTP app at ``/mcp``, its sessions bounded by ``--http-max-sessions`` and
   ``--http-session-idle`` (an abandoned session frees its slot after that long without a request).

No token is ever written to the log, at any level (:func:`redact_tokens`): the access log shows
``/gallery?token=***``.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from typing import TYPE_CHECKING

import mcp_types as types
from mcp.server.transport_security import TransportSecurityMiddleware, TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from engine.inputs import InputPolicy

from .config import ConfigError
from .events import RETRY_MS, BoundedEventStore, SessionScope
from .gallery import GALLERY_PATH, Gallery
from .state import state_of
from .wire import MAX_MESSAGE_BYTES, refusal, too_large

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from .config import ServerConfig

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"
#: A credential in a URL's query (the gallery's ``?token=``): its value is never logged.
_QUERY_SECRET = re.compile(r"((?:^|[?&;])(?:token|access_token|auth_token)=)[^&;#\s\"']*", re.IGNORECASE)
#: A Host header's name, with an optional port: no scheme, no path, no user.
_HOST_NAME = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::\d{1,5})?")


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` reaches only this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServerConfig) -> None:
    """Refuse to serve HTTP on a non-loopback host without a token unless ``--no-auth`` says so
    (then warn, loudly); refuse ``--allowed-host`` values that are not a Host header's name."""
    for name in config.allowed_hosts:
        if not _HOST_NAME.fullmatch(name):
            raise ConfigError.for_field(
                "--allowed-host",
                name,
                "give the name a reverse proxy sends in the Host header (gpu.example.com or "
                "gpu.example.com:8443), without scheme or path",
            )
    if config.auth_token and not config.auth:
        raise ConfigError.for_field(
            "--no-auth", True, "contradicts the auth token that is set: drop one of the two"
        )
    if config.auth_token or is_loopback(config.host):
        return
    if config.auth:
        raise ConfigError.for_field(
            "--host",
            config.host,
            "serving beyond this machine needs a token: set UNISON_AUTH_TOKEN (e.g. to the output of "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'), or pass --no-auth to "
            "serve without authentication on purpose",
        )
    log.warning(
        "NO AUTHENTICATION (--no-auth): serving on %s:%d without a token; anyone who can reach this "
        "port can run jobs, read the allowed roots and see the outputs",
        config.host,
        config.port,
    )


class BearerTokenMiddleware:
    """Refuse every HTTP request without ``Authorization: Bearer <token>`` (401)."""

    def __init__(self, app: ASGIApp, token: str):
        if not token:
            raise ValueError("auth token: must not be empty")
        self.app = app
        self._token = token.encode("utf-8")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):  # lifespan events carry no credentials
            await self.app(scope, receive, send)
            return
        header = Headers(scope=scope).get("authorization", "")
        scheme, _, given = header.partition(" ")
        # compare_digest: the time taken must not reveal how much of the token matched.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode("utf-8"), self._token):
            log.warning("refused an HTTP request without a valid bearer token")
            response = JSONResponse(
                {
                    "error": "unauthorized",
                    "message": "send 'Authorization: Bearer <token>' (the server's --auth-token)",
                },
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="unison-mcp"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class MessageRules:
    """Every POST body to ``/mcp`` checked by :func:`unison_mcp.wire.refusal` before the SDK
    parses it; the SDK's app gets the body that passed, unchanged."""

    def __init__(self, app: ASGIApp, security: TransportSecuritySettings):
        self.app = app
        self._security = TransportSecurityMiddleware(security)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != MCP_PATH:
            await self.app(scope, receive, send)
            return
        # 1. Who may post, as the SDK decides it (its app checks again): a page from a foreign
        #    origin never has its body read.
        refused = await self._security.validate_request(Request(scope, receive), is_post=True)
        if refused is not None:
            await refused(scope, receive, send)
            return
        # 2. Size: a declared length over the bound is refused unread, any other body is read
        #    up to the bound and no further.
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > MAX_MESSAGE_BYTES:
            await _answer(too_large(b"", int(declared), complete=True), 413, scope, receive, send)
            return
        body = await _read_body(receive, MAX_MESSAGE_BYTES)
        if body is None:  # the client went away
            return
        if len(body) > MAX_MESSAGE_BYTES:
            await _answer(too_large(body, MAX_MESSAGE_BYTES, complete=False), 413, scope, receive, send)
            return
        # 3. The message's rules.
        error = refusal(body)
        if error is not None:
            log.info("answered a malformed POST body with %d: %s", error.error.code, error.error.message)
            await _answer(error, 400, scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or its first ``limit + 1`` bytes when it is longer (the rest unread);
    ``None`` when the client disconnects first."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > limit:
            return b"".join(chunks)[: limit + 1]
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """``receive`` for the app behind: the body read already, then the client's own events
    (a disconnect, which the SDK's event stream listens for)."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replayed


async def _answer(error: types.JSONRPCError, status: int, scope: Scope, receive: Receive, send: Send) -> None:
    # The shape of the SDK's own parse errors: the JSON-RPC error as the body, application/json.
    body = error.model_dump_json(by_alias=True, exclude_unset=True)
    await Response(body, status_code=status, media_type="application/json")(scope, receive, send)


def transport_security(
    host: str, port: int, extra_hosts: list[str] | None = None
) -> TransportSecuritySettings:
    """DNS-rebinding protection: the localhost forms of the bound port (plus the bound host), and
    each of ``extra_hosts`` as a reverse proxy sends it (``NAME``: any port or none, since a
    proxy on 443 sends the bare name; ``NAME:PORT``: that port), over http or https."""
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if bound not in hosts and bound not in ("0.0.0.0", "[::]"):
        hosts.append(bound)
    allowed = [f"{h}:{port}" for h in hosts]
    origins = [f"http://{h}:{port}" for h in hosts]
    for name in extra_hosts or ():
        has_port = bool(re.search(r":\d+$", name))
        forms = [name] if has_port else [name, f"{name}:*"]
        allowed += forms
        origins += [f"{scheme}://{form}" for scheme in ("https", "http") for form in forms]
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=allowed, allowed_origins=origins
    )


#: What a browser asks for by itself (the gallery's pages name their own icon; older pages and
#: some browsers ask anyway): answered "not found" here, not refused by the token check, which
#: would log a warning for every page view.
BROWSER_PATHS = frozenset({"/favicon.ico"})


class PathRoutes:
    """``/gallery`` (and below) to the gallery app, :data:`BROWSER_PATHS` answered 404 at once,
    everything else (and lifespan) to ``app``."""

    def __init__(self, app: ASGIApp, gallery: ASGIApp):
        self.app = app
        self.gallery = gallery

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == GALLERY_PATH or path.startswith(GALLERY_PATH + "/"):
            await self.gallery(scope, receive, send)
        elif path in BROWSER_PATHS:
            await Response(status_code=404)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def gallery_url(config: ServerConfig) -> str | None:
    """The gallery page's address as users reach it (``None`` on stdio: no gallery is served)."""
    if config.transport != "http":
        return None
    if config.public_url:
        return config.public_url.rstrip("/") + GALLERY_PATH
    host = config.host if config.host not in ("0.0.0.0", "::", "[::]") else "127.0.0.1"
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"http://{host}:{config.port}{GALLERY_PATH}"


def http_app(server: MCPServer, config: ServerConfig) -> ASGIApp:
    """The ASGI app serving ``server`` at ``/mcp`` and the gallery at ``/gallery``, with the
    checks above (:func:`check_exposure` first: a refused configuration serves nothing)."""
    check_exposure(config)
    security = transport_security(config.host, config.port, config.allowed_hosts)
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=security,
        host=config.host,
        max_request_body_size=MAX_MESSAGE_BYTES,  # never reached: MessageRules refuses first
        session_idle_timeout=config.http_session_idle_s,
        max_sessions=config.http_max_sessions,
        # Streams that resume: a stream dropped during a long call is replayed from its last event.
        event_store=BoundedEventStore(),
        retry_interval=RETRY_MS,
    )
    app = SessionScope(app)  # whose each stored event is
    app = MessageRules(app, security)
    if config.auth_token:
        app = BearerTokenMiddleware(app, config.auth_token)
    state = state_of(server)
    gallery = Gallery(
        state.inputs, queue=state.queue, token=config.auth_token, security=security, port=config.port
    )
    return PathRoutes(app, gallery.app())


def gallery_app(config: ServerConfig) -> ASGIApp:
    """``unison-mcp gallery``: the gallery alone over ``config.output_dir`` (no job queue to show).

    Without a token it serves loopback only, ``--no-auth`` or not: it has no login then, so
    anyone who reaches the port sees every prompt and output.
    """
    if not config.auth_token and not is_loopback(config.host):
        raise ConfigError.for_field(
            "--host",
            config.host,
            "the gallery without a token serves this machine only (127.0.0.1): set UNISON_AUTH_TOKEN "
            "to serve it beyond, with a sign-in",
        )
    check_exposure(config)
    policy = InputPolicy(
        [config.output_dir], config.output_dir, config.max_input_bytes, config.engine.limits.max_input_pixels
    )
    policy.outputs.open()  # the directory's handle, taken now: a link swapped in later is not followed
    security = transport_security(config.host, config.port, config.allowed_hosts)
    return Gallery(policy, token=config.auth_token, security=security, port=config.port).app()


def _redact(text: str, secrets: tuple[str, ...]) -> str:
    text = _QUERY_SECRET.sub(r"\1***", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


class RedactTokens(logging.Filter):
    """Writes ``***`` for a ``token=`` value in a URL and for each of ``secrets`` (the configured
    token) in a log record's message and arguments, so no credential reaches a log at any level."""

    def __init__(self, secrets: tuple[str, ...] = ()):
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = _redact(record.msg, self.secrets)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact(a, self.secrets) if isinstance(a, str) else a for a in record.args)
        return True


def redact_tokens(token: str | None) -> None:
    """Put :class:`RedactTokens` where every record passes: the handlers of the root logger (our
    stderr) and uvicorn's loggers (its access log records ``GET /gallery?token=…`` at ``-vv``)."""
    redactor = RedactTokens((token,) if token else ())
    targets = [
        *logging.getLogger().handlers,
        *(logging.getLogger(n) for n in ("uvicorn.access", "uvicorn.error")),
    ]
    for target in targets:
        for old in [f for f in target.filters if isinstance(f, RedactTokens)]:
            target.removeFilter(old)
        target.addFilter(redactor)


async def serve_http(server: MCPServer, config: ServerConfig) -> None:
    import uvicorn

    app = http_app(server, config)
    redact_tokens(config.auth_token)
    log.info(
        "unison-mcp serving streamable HTTP on http://%s:%d%s%s",
        config.host,
        config.port,
        MCP_PATH,
        " (bearer token required)" if config.auth_token else "",
    )
    # log_config=None: uvicorn's loggers propagate to ours (stderr) instead of its stdout access log.
    uv = uvicorn.Server(
        uvicorn.Config(app, host=config.host, port=config.port, log_config=None, lifespan="on")
    )
    await uv.serve()


def serve_gallery(config: ServerConfig) -> None:
    """Serve :func:`gallery_app` until stopped (Ctrl-C)."""
    import uvicorn

    app = gallery_app(config)
    redact_tokens(config.auth_token)
    host = f"[{config.host}]" if ":" in config.host else config.host
    log.warning(
        "gallery of %s at http://%s:%d%s%s",
        config.output_dir,
        host,
        config.port,
        GALLERY_PATH,
        " (sign in with the token)"
        if config.auth_token
        else ", without a token: no sign-in, anyone on this machine can open it (loopback only; "
        "set UNISON_AUTH_TOKEN to ask for one)",
    )
    uvicorn.run(app, host=config.host, port=config.port, log_config=None)

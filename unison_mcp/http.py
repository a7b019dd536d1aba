"""Streamable HTTP: the SDK's app, DNS-rebinding protection for the bound port, an optional bearer token.

Layers, outside in:

1. :class:`BearerTokenMiddleware` (when ``config.auth_token`` is set): every HTTP request needs
   ``Authorization: Bearer <token>``, compared in constant time; anything else is answered 401
   before the MCP layer sees it.
2. The SDK's transport security: only ``Host`` headers naming the bound port on localhost
   (``127.0.0.1``, ``localhost``, ``[::1]``, and the configured host) pass, and only the
   matching ``http://`` origins, so a web page that rebinds a DNS name to 127.0.0.1 is refused.
3. The SDK's streamable HTTP app at ``/mcp``.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

from mcp.server.transport_security import TransportSecuritySettings
from starlette.datastructures import Headers
from starlette.responses import JSONResponse

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer
    from starlette.types import ASGIApp, Receive, Scope, Send

    from .config import ServerConfig

log = logging.getLogger(__name__)

MCP_PATH = "/mcp"


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


def transport_security(host: str, port: int) -> TransportSecuritySettings:
    """DNS-rebinding protection: the localhost forms of the bound port (plus the bound host)."""
    hosts = ["127.0.0.1", "localhost", "[::1]"]
    bound = f"[{host}]" if ":" in host and not host.startswith("[") else host
    if bound not in hosts and bound not in ("0.0.0.0", "[::]"):
        hosts.append(bound)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=[f"{h}:{port}" for h in hosts],
        allowed_origins=[f"http://{h}:{port}" for h in hosts],
    )


def http_app(server: MCPServer, config: ServerConfig) -> ASGIApp:
    """The ASGI app serving ``server`` at ``/mcp`` with the checks above."""
    app: ASGIApp = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        transport_security=transport_security(config.host, config.port),
        host=config.host,
    )
    if config.auth_token:
        app = BearerTokenMiddleware(app, config.auth_token)
    elif config.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s without --auth-token: anyone who can reach this port can use it", config.host
        )
    return app


async def serve_http(server: MCPServer, config: ServerConfig) -> None:
    import uvicorn

    app = http_app(server, config)
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

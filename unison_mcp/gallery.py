"""The gallery: a small read-only web page over the output directory and the job queue.

Served at ``/gallery`` in HTTP mode (beside ``/mcp``, behind the same token) and by
``unison-mcp gallery`` for stdio users. Routes, all ``GET`` but the login:

- ``/gallery``: the page (its script renders everything from the JSON below), or a login form.
  ``/gallery?token=…`` signs in: the answer sets an HttpOnly, SameSite=Strict cookie and
  moves on to ``/gallery`` without the token in the URL.
- ``POST /gallery/login``: the login form (``token=…``), the same cookie, then ``/gallery``.
- ``/gallery/api/outputs``: the outputs, newest first, each with its sidecar's prompt, task,
  seed, plan and notes, and the extra outputs of the same generation (a video_extend's new part;
  masks and controls as they come) under the result they belong to.
- ``/gallery/api/jobs``: the running and queued jobs with their progress (the page polls it),
  and the output directory's version so the page knows when to fetch the outputs again.
- ``/gallery/files/<name>``: one output, read-only, with its content type and byte ranges (video
  seeking), opened once without following links (names checked by ``check_output_name``).
- ``/gallery/static/gallery.js|gallery.css``: the page's script and style.

What the sidecars hold is user text (prompts): it only ever reaches the page as JSON that the
script puts in the DOM as text (``textContent``), and a strict Content-Security-Policy allows no
inline script, so a prompt cannot become markup.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import stat
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.errors import InputRefused, shown
from engine.inputs import check_output_name

from . import gallery_assets
from .present import mime_type

if TYPE_CHECKING:
    from mcp.server.transport_security import TransportSecuritySettings

    from engine.inputs import InputPolicy
    from engine.jobs import JobAPI, JobQueueAPI

log = logging.getLogger(__name__)

GALLERY_PATH = "/gallery"
COOKIE_NAME = "unison_gallery"
#: Outputs listed (newest first); older files stay on disk and readable by name.
MAX_LISTED = 200
#: A sidecar larger than this is not read (the engine's are a few kB).
MAX_SIDECAR_BYTES = 1024 * 1024
#: Finished jobs shown under the running and queued ones.
RECENT_JOBS = 5
CHUNK_BYTES = 256 * 1024
_OPEN_FLAGS = (
    os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
)
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")

#: On every answer: no inline script or style, nothing from elsewhere, never framed.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}
_NO_STORE = {"Cache-Control": "no-store"}


# ---------------------------------------------------------------------------------------------
# What the page shows


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _read_sidecar(policy: InputPolicy, name: str) -> dict[str, Any] | None:
    """The sidecar ``<name>.json`` as a dict, or ``None`` when absent, too large or not JSON."""
    try:
        path = policy.output_file(name + ".json")
        if path.lstat().st_size > MAX_SIDECAR_BYTES:
            return None
        _, data = policy.read_output(name + ".json")
        value = json.loads(data)
    except (InputRefused, OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _entry(path: Path, sidecar: dict[str, Any] | None) -> dict[str, Any]:
    """One output as the page shows it: the file's facts and the sidecar's fields, typed."""
    side = sidecar or {}
    facts = side.get("file") if isinstance(side.get("file"), dict) else {}
    mime = mime_type(path)
    try:
        mtime = path.lstat().st_mtime
        size = path.lstat().st_size
    except OSError:
        mtime, size = 0.0, 0
    seed = side.get("seed")
    notes = side.get("notes")
    return {
        "name": path.name,
        "url": "gallery/files/" + quote(path.name),
        "kind": mime.split("/")[0] if mime.startswith(("image/", "video/")) else "file",
        "mime_type": mime,
        "size_bytes": size,
        "created": _text(side.get("created")) or _iso(mtime),
        "output": _text(side.get("output")) or "result",
        "task": _text(side.get("task")),
        "prompt": _text(side.get("prompt")),
        "seed": seed if isinstance(seed, int) else None,
        "steps": side.get("steps") if isinstance(side.get("steps"), int) else None,
        "candidate": side.get("candidate") if isinstance(side.get("candidate"), int) else None,
        "width": facts.get("width"),
        "height": facts.get("height"),
        "num_frames": facts.get("num_frames"),
        "fps": facts.get("fps"),
        "duration_s": facts.get("duration_s"),
        "plan": side.get("plan"),
        "notes": [str(n) for n in notes] if isinstance(notes, list) else [],
        "sidecar": sidecar is not None,
        "extras": [],
        "_group": _group_key(side),
        "_mtime": mtime,
    }


def _group_key(side: dict[str, Any]) -> str | None:
    """What ties the files of one generation together (a ``run`` id when the sidecar has one)."""
    if side.get("run") is not None:
        return json.dumps(["run", side["run"]])
    if not side:
        return None
    # The files of one generation share their plan, seed and candidate; their write times differ.
    keys = ("task", "prompt", "seed", "candidate", "plan")
    return json.dumps([side.get(k) for k in keys], sort_keys=True, default=str)


def list_entries(policy: InputPolicy, limit: int = MAX_LISTED) -> list[dict[str, Any]]:
    """The outputs, newest first; each extra output (``output`` other than ``result``) sits in its
    result's ``extras`` (the closest in time of the same generation), else on its own."""
    files = [p for p in policy.list_outputs() if not p.name.endswith(".json")]
    entries = [_entry(p, _read_sidecar(policy, p.name)) for p in files[: limit * 2]]
    results = [e for e in entries if e["output"] == "result"]
    shown: list[dict[str, Any]] = []
    for e in entries:
        if e["output"] == "result" or e["_group"] is None:
            shown.append(e)
            continue
        same = [r for r in results if r["_group"] == e["_group"]]
        if not same:
            shown.append(e)
            continue
        owner = min(same, key=lambda r: abs(r["_mtime"] - e["_mtime"]))
        owner["extras"].append(e)
    for e in shown:
        for x in (e, *e["extras"]):
            x.pop("_group", None)
            x.pop("_mtime", None)
    return shown[:limit]


def job_entries(queue: JobQueueAPI | None) -> list[dict[str, Any]]:
    """Running, then queued (in order), then the last few finished jobs; ids shortened (a full id
    can cancel the job through the ``job`` tool)."""
    if queue is None:
        return []
    jobs = queue.jobs()

    def row(job: JobAPI) -> dict[str, Any]:
        progress = job.progress()
        return {
            "id": job.id[:8],
            "kind": job.kind,
            "status": job.status,
            "stage": progress.get("stage"),
            "done": progress.get("done"),
            "total": progress.get("total"),
            "ahead": queue.position(job) if job.status == "queued" else None,
            "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at) if job.started_at else None,
            "finished_at": _iso(job.finished_at) if job.finished_at else None,
        }

    running = [j for j in jobs if j.status == "running"]
    queued = sorted((j for j in jobs if j.status == "queued"), key=queue.position)
    finished = sorted(
        (j for j in jobs if j.status not in ("queued", "running")),
        key=lambda j: j.finished_at or 0.0,
        reverse=True,
    )
    return [row(j) for j in (*running, *queued, *finished[:RECENT_JOBS])]


def _version(policy: InputPolicy) -> int:
    # The directory's mtime changes whenever an output is renamed into place (or removed).
    try:
        return policy.output_dir.stat().st_mtime_ns
    except OSError:
        return 0


# ---------------------------------------------------------------------------------------------
# Serving one file, with byte ranges


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``(first, last)`` of a single ``bytes=`` range, ``None`` for the whole file; ``ValueError``
    when the range cannot be satisfied. Malformed or multiple ranges are ignored (RFC 9110)."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:
        return None
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        n = int(last)
        if n == 0:
            raise ValueError("empty suffix range")
        return max(0, size - n), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise ValueError("range outside the file")
    return start, end


def _open_output(policy: InputPolicy, name: str) -> tuple[Any, int]:
    """The output ``name`` opened for reading (checked on the descriptor itself) and its size."""
    path = policy.output_file(check_output_name(name))
    try:
        fd = os.open(path, _OPEN_FLAGS)
    except OSError:  # removed, or swapped for a link since the check
        raise InputRefused(f"no output named {shown(name)}", path=name) from None
    f = os.fdopen(fd, "rb")
    st = os.fstat(f.fileno())
    if not stat.S_ISREG(st.st_mode):
        f.close()
        raise InputRefused(f"output {shown(name)} is not a regular file", path=name)
    return f, st.st_size


async def _chunks(f: Any, start: int, length: int) -> AsyncIterator[bytes]:
    try:
        await anyio.to_thread.run_sync(f.seek, start)
        left = length
        while left > 0:
            data = await anyio.to_thread.run_sync(f.read, min(CHUNK_BYTES, left))
            if not data:
                break
            left -= len(data)
            yield data
    finally:
        f.close()


# ---------------------------------------------------------------------------------------------
# The app


def cookie_value(token: str) -> str:
    """What the cookie holds: derived from the token, so a leaked cookie is not the bearer token."""
    return hmac.new(token.encode("utf-8"), b"unison-mcp gallery", hashlib.sha256).hexdigest()


class Gallery:
    """The gallery's routes over ``outputs`` (the server's input policy: it reads the outputs
    back) and ``queue``; ``token`` guards them as it guards ``/mcp`` (``None``: open)."""

    def __init__(
        self,
        outputs: InputPolicy,
        *,
        queue: JobQueueAPI | None = None,
        token: str | None = None,
        security: TransportSecuritySettings | None = None,
        title: str = "unison-mcp gallery",
    ):
        self.outputs = outputs
        self.queue = queue
        self._token = token
        self._cookie = cookie_value(token) if token else None
        # The SDK's Host/Origin check, with the settings /mcp uses (None: no check).
        self._security = TransportSecurityMiddleware(security) if security is not None else None
        self.title = title

    def app(self) -> Starlette:
        g = GALLERY_PATH
        routes = [
            Route(g, self._guarded(self.page, login=True), methods=["GET"]),
            Route(g + "/login", self._guarded(self.login, login=True), methods=["POST"]),
            Route(g + "/api/outputs", self._guarded(self.api_outputs), methods=["GET"]),
            Route(g + "/api/jobs", self._guarded(self.api_jobs), methods=["GET"]),
            Route(g + "/files/{name}", self._guarded(self.file), methods=["GET"]),
            Route(g + "/static/{asset}", self._guarded(self.asset, open_=True), methods=["GET"]),
        ]
        return Starlette(routes=routes)

    # ------------------------------------------------------------------ access

    def _valid_token(self, given: str) -> bool:
        return self._token is not None and hmac.compare_digest(
            given.encode("utf-8"), self._token.encode("utf-8")
        )

    def authorized(self, request: Request) -> bool:
        """No token configured, the bearer header, or the cookie a sign-in set."""
        if self._token is None:
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and self._valid_token(given.strip()):
            return True
        cookie = request.cookies.get(COOKIE_NAME, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), (self._cookie or "").encode())

    def _guarded(
        self, handler: Callable[[Request], Any], *, login: bool = False, open_: bool = False
    ) -> Callable[[Request], Any]:
        """``handler`` behind the Host/Origin check, then the token (``login``: the handler signs
        in itself; ``open_``: the static script and style, which hold nothing of the user's)."""

        async def endpoint(request: Request) -> Response:
            if self._security is not None:
                refused = await self._security.validate_request(request)
                if refused is not None:
                    return refused
            if not (login or open_ or self.authorized(request)):
                log.warning("refused a gallery request without the token")
                response: Response = JSONResponse(
                    {"error": "unauthorized", "message": "sign in at /gallery with the server's token"},
                    status_code=401,
                    headers=_NO_STORE,
                )
            else:
                response = await handler(request)
            response.headers.update(SECURITY_HEADERS)
            return response

        return endpoint

    def _signed_in(self, request: Request) -> Response:
        # A 200 page that moves on by itself rather than a 302: a SameSite=Strict cookie is not
        # sent on a redirect that a link from another site (a chat client) started, but it is on
        # the navigation this page starts.
        response = HTMLResponse(gallery_assets.signed_in_page(self.title), headers=_NO_STORE)
        response.set_cookie(
            COOKIE_NAME,
            self._cookie or "",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    # ------------------------------------------------------------------ routes

    async def page(self, request: Request) -> Response:
        given = request.query_params.get("token")
        if given is not None and self._token is not None:
            if self._valid_token(given):
                return self._signed_in(request)
            log.warning("refused a gallery sign-in with a wrong token")
            return self._login_page("That token is not this server's.")
        if not self.authorized(request):
            return self._login_page(None)
        return HTMLResponse(gallery_assets.page(self.title), headers=_NO_STORE)

    def _login_page(self, error: str | None) -> Response:
        return HTMLResponse(gallery_assets.login_page(self.title, error), status_code=401, headers=_NO_STORE)

    async def login(self, request: Request) -> Response:
        body = await request.body()
        if len(body) > 4096:
            return self._login_page("That is not a token.")
        given = parse_qs(body.decode("utf-8", errors="replace")).get("token", [""])[0]
        if self._token is None or self._valid_token(given.strip()):
            # Our own form posted it: the redirect stays same-site and the cookie goes with it.
            response = RedirectResponse("../gallery", status_code=303, headers=_NO_STORE)
            if self._token is not None:
                response.set_cookie(
                    COOKIE_NAME,
                    self._cookie or "",
                    httponly=True,
                    samesite="strict",
                    secure=request.url.scheme == "https",
                    path="/",
                )
            return response
        log.warning("refused a gallery sign-in with a wrong token")
        return self._login_page("That token is not this server's.")

    async def api_outputs(self, request: Request) -> Response:
        entries = await anyio.to_thread.run_sync(list_entries, self.outputs)
        body = {"outputs": entries, "version": _version(self.outputs)}
        return JSONResponse(body, headers=_NO_STORE)

    async def api_jobs(self, request: Request) -> Response:
        body = {
            "jobs": job_entries(self.queue),
            "queue": self.queue is not None,
            "version": await anyio.to_thread.run_sync(_version, self.outputs),
        }
        return JSONResponse(body, headers=_NO_STORE)

    async def file(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            f, size = await anyio.to_thread.run_sync(_open_output, self.outputs, name)
        except InputRefused:
            return JSONResponse({"error": "not_found", "message": "no such output"}, status_code=404)
        headers = {
            "Accept-Ranges": "bytes",
            # Names are never reused (time and a random part), so a file never changes.
            "Cache-Control": "private, max-age=86400, immutable",
        }
        try:
            span = _byte_range(request.headers.get("range"), size)
        except ValueError:
            f.close()
            return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
        start, end = span if span is not None else (0, size - 1)
        length = max(0, end - start + 1)
        headers["Content-Length"] = str(length)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        if request.method == "HEAD":
            f.close()
            return Response(status_code=status, headers=headers, media_type=mime_type(name))
        return StreamingResponse(
            _chunks(f, start, length), status_code=status, headers=headers, media_type=mime_type(name)
        )

    async def asset(self, request: Request) -> Response:
        found = gallery_assets.ASSETS.get(request.path_params["asset"])
        if found is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        text, media = found
        return Response(text, media_type=media, headers={"Cache-Control": "no-cache"})


__all__ = ["COOKIE_NAME", "GALLERY_PATH", "Gallery", "cookie_value", "job_entries", "list_entries"]

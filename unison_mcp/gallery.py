"""The gallery: a small read-only web page over the output directory and the job queue.

Served at ``/gallery`` in HTTP mode (beside ``/mcp``, behind the same token) and by
``unison-mcp gallery`` for stdio users. Routes, all ``GET`` but the login:

- ``/gallery``: the page (its script renders everything from the JSON below), or a login form.
  ``/gallery?token=…`` signs in: the answer sets an HttpOnly, SameSite=Strict cookie and
  moves on to ``/gallery`` without the token in the URL (and the access log never shows the
  token: :func:`unison_mcp.http.redact_tokens`).
- ``POST /gallery/login``: the login form (``token=…``), the same cookie, then ``/gallery``.
- ``POST /gallery/logout``: signs out (the cookie cleared, and refused from then on).
- ``/gallery/api/outputs``: the outputs, newest first, each with its sidecar's prompt, task,
  seed, plan and notes, and the extra outputs of the same generation (a video_extend's new part;
  masks and controls as they come) under the result they belong to.
- ``/gallery/api/jobs``: the running and queued jobs with their progress (the page polls it),
  and the output directory's version so the page knows when to fetch the outputs again.
- ``/gallery/files/<name>``: one output, read-only, with its content type and byte ranges (video
  seeking). Only what the server wrote (:mod:`engine.outdir`: its names and media types, a regular
  file with one link, opened through the directory's handle without following links); anything
  else is 404. Each answer says ``Content-Disposition`` (inline for PNG and MP4, a download for
  the JSON sidecar) and a ``sandbox`` Content-Security-Policy, so nothing served runs as a page.
- ``/gallery/static/gallery.js|gallery.css``: the page's script and style.

What the sidecars hold is user text (prompts): it only ever reaches the page as JSON that the
script puts in the DOM as text (``textContent``), and a strict Content-Security-Policy allows no
inline script, so a prompt cannot become markup.

The cookie (:class:`Sessions`) is this server's: named after its port (a browser sends cookies
to every port of a host), signed with a secret made when the process starts (a restart signs
everyone out), expiring after :data:`COOKIE_MAX_AGE_S`, refused once signed out.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote

import anyio.to_thread
from mcp.server.transport_security import TransportSecurityMiddleware
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route

from engine.errors import InputRefused
from engine.outdir import Listed, output_type

from . import gallery_assets

if TYPE_CHECKING:
    from mcp.server.transport_security import TransportSecuritySettings

    from engine.inputs import InputPolicy
    from engine.jobs import JobAPI, JobQueueAPI

log = logging.getLogger(__name__)

GALLERY_PATH = "/gallery"
#: The sign-in cookie's name; a server adds its port (:func:`cookie_name`).
COOKIE_NAME = "unison_gallery"
#: How long a sign-in lasts (the cookie's Max-Age, and checked here too).
COOKIE_MAX_AGE_S = 12 * 3600
#: Outputs listed (newest first); older files stay on disk and readable by name.
MAX_LISTED = 200
#: A sidecar larger than this is not read (the engine's are a few kB).
MAX_SIDECAR_BYTES = 1024 * 1024
#: Finished jobs shown under the running and queued ones.
RECENT_JOBS = 5
CHUNK_BYTES = 256 * 1024
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
#: On a served file: a document of its own that runs nothing, whatever a browser makes of it.
FILE_CSP = "sandbox; default-src 'none'; img-src 'self'; media-src 'self'; frame-ancestors 'none'"
_NO_STORE = {"Cache-Control": "no-store"}


# ---------------------------------------------------------------------------------------------
# What the page shows


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat().replace("+00:00", "Z")


def _read_sidecar(policy: InputPolicy, name: str) -> dict[str, Any] | None:
    """The sidecar ``<name>.json`` as a dict, or ``None`` when absent, too large or not JSON."""
    try:
        data, _ = policy.outputs.read(name + ".json", MAX_SIDECAR_BYTES)
        value = json.loads(data) if data is not None else None
    except (InputRefused, OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def _entry(listed: Listed, sidecar: dict[str, Any] | None) -> dict[str, Any]:
    """One output as the page shows it: the file's facts and the sidecar's fields, typed."""
    side = sidecar or {}
    facts = side.get("file") if isinstance(side.get("file"), dict) else {}
    mime = output_type(listed.name)
    mtime = listed.mtime
    seed = side.get("seed")
    notes = side.get("notes")
    return {
        "name": listed.name,
        "url": "gallery/files/" + quote(listed.name),
        "kind": mime.split("/")[0] if mime.startswith(("image/", "video/")) else "file",
        "mime_type": mime,
        "size_bytes": listed.size,
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
    # Listed with their sizes and times at once: a file removed meanwhile is simply not there.
    files = [e for e in policy.outputs.listing() if not e.name.endswith(".json")]
    entries = [_entry(e, _read_sidecar(policy, e.name)) for e in files[: limit * 2]]
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
        return policy.outputs.version()
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
    """The output ``name`` opened for reading (only what the server wrote; see
    :meth:`engine.outdir.OutputDir.open_file`) and its size."""
    f, st = policy.outputs.open_file(name)
    return f, st.st_size


def _disposition(name: str) -> str:
    # Shown in place only as the media the writer makes; the sidecar (JSON) is a download.
    kind = "inline" if name.endswith((".png", ".mp4")) else "attachment"
    return f'{kind}; filename="{name}"'  # a generated name: nothing to escape


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


def cookie_name(port: int | None = None) -> str:
    """The sign-in cookie's name for the server on ``port``: cookies do not keep to a port, so
    two servers on one host (or a gallery beside a server) each keep their own."""
    return COOKIE_NAME if port is None else f"{COOKIE_NAME}_{port}"


class Sessions:
    """Gallery sign-ins: ``<issued>.<id>.<signature>`` values, signed with a secret this process
    makes (a restart signs everyone out), valid for ``max_age_s``, refused once signed out.

    Nothing in them is the token, so a leaked cookie never gives ``/mcp``; the ids signed out are
    remembered until they would have expired anyway.
    """

    def __init__(self, max_age_s: float = COOKIE_MAX_AGE_S):
        self.max_age_s = max_age_s
        self._secret = secrets.token_bytes(32)
        self._signed_out: dict[str, float] = {}

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode("ascii"), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        payload = f"{int(time.time())}.{secrets.token_hex(12)}"
        return f"{payload}.{self._sign(payload)}"

    def _parse(self, value: str) -> tuple[float, str] | None:
        """``(issued, id)`` of a valid, unexpired value this process signed, else ``None``."""
        issued, _, rest = value.partition(".")
        ident, _, signature = rest.partition(".")
        if not (issued.isdigit() and ident and signature):
            return None
        expected = self._sign(f"{issued}.{ident}")
        if not hmac.compare_digest(signature.encode("ascii", "replace"), expected.encode("ascii")):
            return None
        if time.time() - int(issued) >= self.max_age_s:
            return None
        return float(issued), ident

    def valid(self, value: str) -> bool:
        parsed = self._parse(value)
        return parsed is not None and parsed[1] not in self._signed_out

    def sign_out(self, value: str) -> None:
        parsed = self._parse(value)
        if parsed is None:
            return
        now = time.time()
        self._signed_out = {k: t for k, t in self._signed_out.items() if t > now}
        self._signed_out[parsed[1]] = parsed[0] + self.max_age_s


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
        port: int | None = None,
    ):
        self.outputs = outputs
        self.queue = queue
        self._token = token
        self.sessions = Sessions()
        #: The sign-in cookie's name: this server's own (:func:`cookie_name`).
        self.cookie = cookie_name(port)
        # The SDK's Host/Origin check, with the settings /mcp uses (None: no check).
        self._security = TransportSecurityMiddleware(security) if security is not None else None
        self.title = title

    def app(self) -> Starlette:
        g = GALLERY_PATH
        routes = [
            Route(g, self._guarded(self.page, login=True), methods=["GET"]),
            Route(g + "/login", self._guarded(self.login, login=True), methods=["POST"]),
            Route(g + "/logout", self._guarded(self.logout, login=True), methods=["POST"]),
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
        cookie = request.cookies.get(self.cookie, "")
        return bool(cookie) and self.sessions.valid(cookie)

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
            for name, value in SECURITY_HEADERS.items():  # a served file keeps its stricter policy
                response.headers.setdefault(name, value)
            return response

        return endpoint

    def _signed_in(self, request: Request) -> Response:
        # A 200 page that moves on by itself rather than a 302: a SameSite=Strict cookie is not
        # sent on a redirect that a link from another site (a chat client) started, but it is on
        # the navigation this page starts.
        response = HTMLResponse(gallery_assets.signed_in_page(self.title), headers=_NO_STORE)
        self._set_cookie(request, response)
        return response

    def _set_cookie(self, request: Request, response: Response) -> None:
        response.set_cookie(
            self.cookie,
            self.sessions.issue(),
            max_age=int(self.sessions.max_age_s),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )

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
        page = gallery_assets.page(self.title, sign_out=self._token is not None)
        return HTMLResponse(page, headers=_NO_STORE)

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
                self._set_cookie(request, response)
            return response
        log.warning("refused a gallery sign-in with a wrong token")
        return self._login_page("That token is not this server's.")

    async def logout(self, request: Request) -> Response:
        """Sign out: this cookie is refused from now on (even if a copy of it is kept) and cleared."""
        self.sessions.sign_out(request.cookies.get(self.cookie, ""))
        response = RedirectResponse("../gallery", status_code=303, headers=_NO_STORE)
        response.delete_cookie(
            self.cookie, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response

    async def api_outputs(self, request: Request) -> Response:
        version = await anyio.to_thread.run_sync(_version, self.outputs)
        entries = await anyio.to_thread.run_sync(list_entries, self.outputs)
        body = {"outputs": entries, "version": version}
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
            "Content-Disposition": _disposition(name),
            "Content-Security-Policy": FILE_CSP,
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
            return Response(status_code=status, headers=headers, media_type=output_type(name))
        return StreamingResponse(
            _chunks(f, start, length), status_code=status, headers=headers, media_type=output_type(name)
        )

    async def asset(self, request: Request) -> Response:
        found = gallery_assets.ASSETS.get(request.path_params["asset"])
        if found is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        text, media = found
        return Response(text, media_type=media, headers={"Cache-Control": "no-cache"})


__all__ = [
    "COOKIE_MAX_AGE_S",
    "COOKIE_NAME",
    "GALLERY_PATH",
    "Gallery",
    "Sessions",
    "cookie_name",
    "job_entries",
    "list_entries",
]

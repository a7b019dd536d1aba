"""The real transports, as a client starts them: ``unison-mcp serve`` over stdio and over HTTP.

The server runs as a subprocess on the tiny preset (models built once by the ``tiny_paths``
fixture and found through ``UNISON_TINY_DIR``). Over stdio every byte on stdout must be JSON-RPC,
even while models load and generate; over HTTP the bearer token and the Host/Origin checks guard
the endpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60  # generous: other test runs share these CPUs


def _env(tiny_paths, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(UNISON_TINY_DIR=str(tiny_paths.root), PYTHONUNBUFFERED="1", **extra)
    return env


def _serve(tmp_path: Path, *flags: str) -> list[str]:
    out, root = tmp_path / "outputs", tmp_path / "inputs"
    root.mkdir(exist_ok=True)
    return [
        sys.executable,
        "-m",
        "unison_mcp",
        "serve",
        "--preset",
        "tiny",
        "--output-dir",
        str(out),
        "--allow-root",
        str(root),
        "--wait-s",
        "120",
        *flags,
    ]


# ---------------------------------------------------------------------------------------------
# stdio


class _StdioPeer:
    """Raw JSON-RPC over a subprocess's pipes: every stdout line is kept and must parse."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []

    def send(self, message: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def until_response(self, request_id: int) -> tuple[dict, list[dict]]:
        """Read lines until the response to ``request_id``; returns it and the notifications before it."""
        assert self.proc.stdout is not None
        notes = []
        while True:
            raw = self.proc.stdout.readline()
            assert raw, f"server closed stdout; stdout so far: {self.lines}"
            line = raw.decode()
            self.lines.append(line)
            message = json.loads(line)  # anything but JSON-RPC on stdout fails here
            assert message.get("jsonrpc") == "2.0", line
            if message.get("id") == request_id and "method" not in message:
                return message, notes
            notes.append(message)


def test_over_stdio_stdout_carries_only_json_rpc_while_models_load_and_generate(tiny_paths, tmp_path):
    stderr = (tmp_path / "stderr.txt").open("wb")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        _serve(tmp_path, "-v"),  # info logs on: they must all land on stderr
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=_env(tiny_paths),
        cwd=REPO,
    )
    peer = _StdioPeer(proc)
    try:
        peer.send(
            {
                "jsonrpc": "2.0",
                "id": 1,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "t", "version": "0"},
                },
            }
        )
        init, _ = peer.until_response(1)
        assert init["result"]["serverInfo"]["name"] == "unison-mcp"
        peer.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        peer.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        tools, _ = peer.until_response(2)
        assert time.perf_counter() - t0 < START_TIMEOUT_S
        assert {t["name"] for t in tools["result"]["tools"]} == {"understand", "generate", "auto", "job"}

        peer.send(
            {
                "jsonrpc": "2.0",
                "id": 3,
                "method": "tools/call",
                "params": {
                    "name": "generate",
                    "arguments": {"task": "text_to_image", "prompt": "a red square", "steps": 2, "seed": 1},
                    "_meta": {"progressToken": "p3"},
                },
            }
        )
        response, notes = peer.until_response(3)
        result = response["result"]
        assert not result.get("isError"), result
        (out,) = result["structuredContent"]["outputs"]
        assert Path(out["path"]).is_file() and out["kind"] == "image" and out["path"].endswith(".png")
        progress = [n["params"] for n in notes if n.get("method") == "notifications/progress"]
        # From the first second (starting, each model loading), each step, decoding, writing;
        # always increasing, all under the call's token.
        steps = [p["message"] for p in progress if p["message"].startswith("generating ")]
        assert steps == ["generating 1/2", "generating 2/2"] and progress[-1]["message"] == "writing"
        values = [p["progress"] for p in progress]
        assert values == sorted(set(values)) and {p["progressToken"] for p in progress} == {"p3"}
    finally:
        assert proc.stdin is not None
        proc.stdin.close()  # EOF: the server exits
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr.close()
    rest = proc.stdout.read().decode() if proc.stdout else ""
    for line in rest.splitlines():
        assert json.loads(line)["jsonrpc"] == "2.0"
    log = (tmp_path / "stderr.txt").read_text(errors="replace")
    assert "serving on stdio" in log  # the logs went to stderr
    assert proc.returncode == 0, log[-2000:]


# ---------------------------------------------------------------------------------------------
# HTTP


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: The name a reverse proxy in front of the server sends (admitted with --allowed-host).
PROXY_HOST = "gpu.example.com"


@pytest.fixture(scope="module")
def http_server(tiny_paths, tmp_path_factory):
    # One server for the HTTP tests: starting one costs seconds of interpreter and import time.
    tmp_path = tmp_path_factory.mktemp("http")
    port = _free_port()
    token = "s3cret-token"
    stderr = (tmp_path / "stderr.txt").open("wb")
    proc = subprocess.Popen(
        _serve(
            tmp_path,
            *("--transport", "http", "--host", "127.0.0.1", "--port", str(port)),
            *("--allowed-host", PROXY_HOST),
        ),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=_env(tiny_paths, UNISON_AUTH_TOKEN=token),
        cwd=REPO,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text(errors="replace")[-2000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", token, port
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr.close()


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}
JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def test_over_http_a_request_without_the_bearer_token_is_401(http_server):
    url, token, _ = http_server
    missing = httpx.post(url, json=INIT, headers=JSON_HEADERS)
    wrong = httpx.post(url, json=INIT, headers={**JSON_HEADERS, "Authorization": "Bearer nope"})
    basic = httpx.post(url, json=INIT, headers={**JSON_HEADERS, "Authorization": f"Basic {token}"})
    assert [r.status_code for r in (missing, wrong, basic)] == [401, 401, 401]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    ok = httpx.post(url, json=INIT, headers={**JSON_HEADERS, "Authorization": f"Bearer {token}"})
    assert ok.status_code == 200


def test_over_http_a_foreign_host_or_origin_is_refused_even_with_the_token(http_server):
    url, token, port = http_server
    auth = {**JSON_HEADERS, "Authorization": f"Bearer {token}"}
    rebound = httpx.post(url, json=INIT, headers={**auth, "Host": f"evil.example:{port}"})
    other_port = httpx.post(url, json=INIT, headers={**auth, "Host": f"localhost:{port + 1}"})
    origin = httpx.post(url, json=INIT, headers={**auth, "Origin": "http://evil.example"})
    assert rebound.status_code == 421 and other_port.status_code == 421
    assert origin.status_code == 403
    local = httpx.post(
        url, json=INIT, headers={**auth, "Host": f"localhost:{port}", "Origin": f"http://localhost:{port}"}
    )
    assert local.status_code == 200


async def test_over_http_with_the_token_the_tools_work_end_to_end(http_server):
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    url, token, _ = http_server
    seen: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append(progress)

    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {"understand", "generate", "auto", "job"}
        with anyio.fail_after(120):
            # understand loads only the planner: the cheapest real model call, with per-token progress.
            result = await client.call_tool(
                "understand", {"prompt": "what is 2+2?"}, progress_callback=on_progress
            )
        assert not result.is_error, result.content
        assert isinstance(result.structured_content["answer"], str)
        listed = [str(r.uri) for r in (await client.list_resources()).resources]
        assert listed == ["unison://guide"]  # no output yet, and listing works over HTTP
    assert seen and seen == sorted(set(seen))  # progress reached the client, strictly increasing


def test_over_http_the_name_a_reverse_proxy_sends_is_admitted_with_allowed_host(http_server):
    url, token, _ = http_server
    auth = {**JSON_HEADERS, "Authorization": f"Bearer {token}"}
    proxied = httpx.post(
        url, json=INIT, headers={**auth, "Host": PROXY_HOST, "Origin": f"https://{PROXY_HOST}"}
    )
    assert proxied.status_code == 200
    # Only that name: a look-alike is still a rebinding attempt.
    assert httpx.post(url, json=INIT, headers={**auth, "Host": f"x{PROXY_HOST}"}).status_code == 421


async def test_over_http_a_generated_output_comes_with_its_gallery_link_and_the_gallery_shows_it(http_server):
    # Runs after the end-to-end test above, which expects no outputs yet on the shared server.
    import httpx2
    from mcp import Client
    from mcp.client.streamable_http import streamable_http_client

    url, token, port = http_server
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    async with http, Client(streamable_http_client(url, http_client=http)) as client:
        with anyio.fail_after(120):
            result = await client.call_tool(
                "generate", {"task": "text_to_image", "prompt": "a <b>red</b> square", "steps": 2, "seed": 3}
            )
    assert not result.is_error, result.content
    (out,) = result.structured_content["outputs"]
    name = Path(out["path"]).name
    link = f"http://127.0.0.1:{port}/gallery#{name}"
    assert f"view in the gallery: {link}" in result.content[0].text

    base = f"http://127.0.0.1:{port}"
    with httpx.Client(base_url=base) as browser:
        assert browser.get("/gallery/api/outputs").status_code == 401
        assert browser.get("/gallery", params={"token": token}).status_code == 200  # sets the cookie
        listed = browser.get("/gallery/api/outputs").json()["outputs"]
        assert listed[0]["name"] == name and listed[0]["prompt"] == "a <b>red</b> square"
        image = browser.get(f"/gallery/files/{name}")
        assert image.headers["content-type"] == "image/png"
        assert image.content == Path(out["path"]).read_bytes()
        jobs = browser.get("/gallery/api/jobs").json()["jobs"]
        assert jobs and jobs[0]["kind"] == "generate" and jobs[0]["status"] == "done"


def _wait_for(proc: subprocess.Popen, stderr: Path, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        assert proc.poll() is None, stderr.read_text(errors="replace")[-2000:]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, "the HTTP server did not start"
            time.sleep(0.1)


def test_over_http_a_non_loopback_host_without_a_token_refuses_to_start_unless_no_auth(tiny_paths, tmp_path):
    port = _free_port()
    flags = ("--transport", "http", "--host", "0.0.0.0", "--port", str(port))
    refused = subprocess.run(
        _serve(tmp_path, *flags), capture_output=True, text=True, env=_env(tiny_paths), cwd=REPO, timeout=60
    )
    assert refused.returncode == 2, refused.stderr[-2000:]
    assert "--host='0.0.0.0'" in refused.stderr and "--no-auth" in refused.stderr
    assert "UNISON_AUTH_TOKEN" in refused.stderr

    stderr = tmp_path / "no-auth.txt"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            _serve(tmp_path, *flags, "--no-auth"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(tiny_paths),
            cwd=REPO,
        )
        try:
            _wait_for(proc, stderr, port)
            response = httpx.post(f"http://127.0.0.1:{port}/mcp", json=INIT, headers=JSON_HEADERS)
            assert response.status_code == 200  # no token asked for: on purpose
        finally:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
    assert "NO AUTHENTICATION (--no-auth)" in stderr.read_text(errors="replace")


def test_over_http_an_abandoned_session_frees_its_slot_after_the_idle_time(tmp_path):
    # In process: the SDK's session manager with the configured bounds (one session, 1 s idle).
    from starlette.testclient import TestClient

    from engine.config import EngineConfig
    from unison_mcp.config import ServerConfig
    from unison_mcp.http import http_app
    from unison_mcp.server import build_server

    config = ServerConfig(
        engine=EngineConfig(planner_model=None, output_dir=tmp_path),
        transport="http",
        http_max_sessions=1,
        http_session_idle="1s",
    )
    with TestClient(http_app(build_server(config), config), base_url="http://127.0.0.1:8765") as client:
        first = client.post("/mcp", json=INIT, headers=JSON_HEADERS)
        assert first.status_code == 200
        session = first.headers["mcp-session-id"]
        assert client.post("/mcp", json=INIT, headers=JSON_HEADERS).status_code == 503  # the one slot
        time.sleep(2.0)  # the first client went away without closing its session
        again = client.post("/mcp", json=INIT, headers=JSON_HEADERS)
        assert again.status_code == 200
        stale = client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={**JSON_HEADERS, "mcp-session-id": session, "mcp-protocol-version": "2025-11-25"},
        )
        assert stale.status_code == 404


def test_the_session_bounds_default_to_minutes_not_the_sdks_half_hour():
    from unison_mcp.config import ServerConfig

    config = ServerConfig()
    assert config.http_session_idle_s == 600 and config.http_max_sessions == 100

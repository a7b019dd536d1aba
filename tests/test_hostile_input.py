"""No message stops the server: each hostile line or body gets one JSON-RPC answer and the next call works.

The rules live in ``unison_mcp.wire`` (size, strict UTF-8, nesting depth, each key once, the
SDK's own validation) and both transports apply them: a real ``unison-mcp serve`` subprocess on
the tiny preset is fed every case over stdio (while a long generation keeps the job worker busy)
and over HTTP, each followed by a ``ping`` that must be answered.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import anyio
import httpx
import pytest
from mcp.shared.message import SessionMessage

from engine.api import MAX_PATH_CHARS
from engine.config import Limits
from unison_mcp.stdio import AnsweringStdin
from unison_mcp.wire import MAX_DEPTH, MAX_MESSAGE_BYTES, outline, refusal, too_large

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 60  # generous: other test runs share these CPUs
DEEP = 50_000  # the depth of the report: Python's reader died of it


def _call(request_id: object, arguments_json: str, *, tail: str = "") -> str:
    return (
        f'{{"jsonrpc":"2.0","id":{json.dumps(request_id)},"method":"tools/call","params":'
        f'{{"name":"generate","arguments":{arguments_json}}}{tail}}}'
    )


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@dataclass(frozen=True)
class Case:
    name: str
    body: bytes
    code: int
    request_id: object
    #: The HTTP status it gets (its JSON-RPC error as the body).
    status: int = 400


CASES: list[Case] = [
    Case("nesting at the top level", _deep(DEEP).encode(), -32600, None),
    Case(
        "nesting inside params.arguments.margins",
        _call(3, f'{{"task":"outpaint","prompt":"x","margins":{_deep(DEEP)}}}').encode(),
        -32600,
        3,
    ),
    Case(
        "nesting before the id",
        (
            '{"jsonrpc":"2.0","method":"tools/call","params":{"name":"generate","arguments":{"margins":'
            + _deep(DEEP)
            + '}},"id":"late"}'
        ).encode(),
        -32600,
        "late",
    ),
    Case(
        "a deep notification",
        ('{"jsonrpc":"2.0","method":"x","params":{"a":' + _deep(DEEP) + "}}").encode(),
        -32600,
        None,
    ),
    Case("invalid UTF-8", _call(4, '{"task":"text_to_image","prompt":"\xff"}').encode("latin-1"), -32700, 4),
    Case(
        "a key twice at the top", b'{"jsonrpc":"2.0","id":5,"method":"tools/list","method":"ping"}', -32600, 5
    ),
    Case("a key twice in the arguments", _call(6, '{"prompt":"a","prompt":"b"}').encode(), -32600, 6),
    Case("a huge number", _call(7, '{"seed":' + "9" * 100_000 + "}").encode(), -32600, 7),
    Case(
        "a huge message",
        _call(8, json.dumps({"prompt": "x" * (MAX_MESSAGE_BYTES + 1)})).encode(),
        -32600,
        8,
        413,
    ),
    Case("not JSON", b"this is not json", -32700, None),
    Case("an id that is not one", b'{"jsonrpc":"2.0","id":true,"method":"tools/list"}', -32600, None),
]


# ---------------------------------------------------------------------------------------------
# The scan and the rules


def test_the_scan_counts_nesting_outside_strings_only():
    assert outline('{"a":"[[[{{{","b":"\\"[["}').depth == 1
    assert outline('{"a":[{"b":[]}]}').depth == 4
    assert outline("").depth == 0 and outline("nonsense [ ]]] [").depth == 1


def test_the_scan_of_a_million_levels_needs_no_recursion():
    assert outline(_deep(1_000_000)).depth == 1_000_000
    assert outline('{"id":1,"a":"' + "[" * 1_000_000).depth == 1  # an unclosed string runs to the end


@pytest.mark.parametrize(
    ("text", "request_id"),
    [
        ('{"jsonrpc":"2.0","id":12,"method":"x"}', 12),
        ('{"method":"x","params":{"a":[[[]]]}, "id" : "abc"}', "abc"),
        ('{"id":"\\u0041b"}', "Ab"),
        ('{"params":{"id":3}}', None),  # not the message's id
        ('{"method":"id","x":1}', None),  # "id" as a value
        ('[{"id":1}]', None),
        ('{"id":1,"id":2}', None),  # given twice: no id
        ('{"id":1.5}', None),
        ('{"id":true}', None),
        ('{"id":"\\ud800"}', None),  # could not be written back
        ('{"id":' + "1" * 200 + "}", None),
        ('{"id":7,"a":' + _deep(DEEP), 7),  # a cut-off prefix
    ],
)
def test_the_scan_reads_the_top_level_id_when_it_is_a_string_or_a_whole_number_given_once(text, request_id):
    assert outline(text).request_id == request_id


@pytest.mark.parametrize("case", [c for c in CASES if c.status == 400], ids=lambda c: c.name)
def test_each_hostile_message_is_refused_with_its_code_and_id(case):
    error = refusal(case.body)
    assert error is not None and (error.error.code, error.id) == (case.code, case.request_id)
    assert len(error.error.message) < 200


def test_the_refusals_name_the_problem():
    assert "nested 50,003 deep; at most 64" in refusal(CASES[1].body).error.message
    at = CASES[4].body.index(b"\xff")
    assert f"invalid UTF-8 at byte {at} (0xff)" in refusal(CASES[4].body).error.message
    assert 'the key "method" appears twice' in refusal(CASES[5].body).error.message
    assert 'the key "prompt" appears twice' in refusal(CASES[6].body).error.message
    too = too_large(CASES[8].body[: MAX_MESSAGE_BYTES + 1], len(CASES[8].body), complete=True)
    assert (too.id, too.error.code) == (8, -32600)
    assert f"is {len(CASES[8].body):,} bytes; at most {MAX_MESSAGE_BYTES:,}" in too.error.message


def test_the_depth_limit_is_exact():
    def message(depth: int) -> str:  # the message object and params are two levels
        return '{"jsonrpc":"2.0","id":1,"method":"ping","params":{"a":' + _deep(depth - 2) + "}}"

    assert outline(message(MAX_DEPTH)).depth == MAX_DEPTH and refusal(message(MAX_DEPTH)) is None
    assert refusal(message(MAX_DEPTH + 1)).error.code == -32600


def test_the_largest_request_the_default_limits_allow_fits_in_one_message():
    limits = Limits()
    wide = "\U0001f98a"  # escaped as a surrogate pair: 12 bytes a character
    arguments = {
        "task": "reference_to_video",
        "prompt": wide * limits.max_prompt_chars,
        "negative_prompt": wide * limits.max_prompt_chars,
        "references": ["/" + wide * (MAX_PATH_CHARS - 1)] * limits.max_inputs,
    }
    line = _call(1, json.dumps(arguments))
    assert len(line) < MAX_MESSAGE_BYTES // 4 and refusal(line) is None


# ---------------------------------------------------------------------------------------------
# The stdio reader holds no more than the bound


class _EndlessLine(io.RawIOBase):
    """``size`` bytes of one line made on the fly, then a newline and a ping."""

    def __init__(self, size: int):
        self.left = size
        self.tail = b'\n{"jsonrpc":"2.0","id":2,"method":"ping"}\n'

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.left:
            n = min(len(buffer), self.left)
            buffer[:n] = b"x" * n
            self.left -= n
            return n
        n = min(len(buffer), len(self.tail))
        buffer[:n], self.tail = self.tail[:n], self.tail[n:]
        return n


async def test_an_over_long_stdio_line_is_read_in_bounded_memory_answered_once_and_the_next_line_read():
    size = 16 * MAX_MESSAGE_BYTES  # 64 MiB
    stdin = AnsweringStdin(io.BufferedReader(_EndlessLine(size)))
    send, receive = anyio.create_memory_object_stream[SessionMessage](10)
    stdin.answer_through(send)
    tracemalloc.start()
    try:
        lines = [line async for line in stdin]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    (answer,) = [receive.receive_nowait().message]
    assert answer.error.code == -32600 and f"is {size:,} bytes" in answer.error.message
    assert [json.loads(line)["id"] for line in lines] == [2]
    assert peak < 3 * MAX_MESSAGE_BYTES, peak


# ---------------------------------------------------------------------------------------------
# Over the real transports


def _env(tiny_paths) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(UNISON_TINY_DIR=str(tiny_paths.root), PYTHONUNBUFFERED="1", HF_ENDPOINT="http://127.0.0.1:9")
    return env


def _serve(tmp_path: Path, *flags: str) -> list[str]:
    out = tmp_path / "outputs"
    return [sys.executable, "-m", "unison_mcp", "serve", "--preset", "tiny", "--output-dir", str(out), *flags]


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
#: 200 steps: the job is surely still generating when the last case has been answered.
LONG_JOB = {"task": "text_to_image", "prompt": "a cat", "steps": 200, "width": 64, "height": 64}


class _Stdio:
    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.seen: list[dict] = []

    def send(self, line: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + b"\n")
        self.proc.stdin.flush()

    def next(self) -> dict:
        assert self.proc.stdout is not None
        raw = self.proc.stdout.readline()
        assert raw, f"the server closed stdout; seen: {self.seen[-5:]}"
        message = json.loads(raw)  # stdout stays JSON-RPC
        self.seen.append(message)
        return message

    def answer(self, request_id: object) -> dict:
        while True:
            message = self.next()
            if "method" not in message and message.get("id") == request_id:
                return message


def test_over_stdio_every_case_is_answered_and_a_ping_after_it_works_while_a_job_runs(tiny_paths, tmp_path):
    stderr = (tmp_path / "stderr.txt").open("wb")
    proc = subprocess.Popen(
        _serve(tmp_path),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        env=_env(tiny_paths),
        cwd=REPO,
    )
    peer = _Stdio(proc)
    try:
        peer.send(json.dumps(INIT).encode())
        assert "result" in peer.answer(1)
        peer.send(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
        job = {"name": "generate", "arguments": LONG_JOB, "_meta": {"progressToken": "job"}}
        peer.send(json.dumps({"jsonrpc": "2.0", "id": "job", "method": "tools/call", "params": job}).encode())
        while "generating" not in json.dumps(peer.next()):  # the worker is busy from here on
            pass

        answers = []
        for n, case in enumerate(CASES):
            peer.send(case.body)
            peer.send(json.dumps({"jsonrpc": "2.0", "id": f"ping{n}", "method": "ping"}).encode())
            errors = []
            while (message := peer.next()).get("id") != f"ping{n}":
                if "error" in message:
                    errors.append(message)
            assert message["result"] == {}, case.name
            answers.append(errors)
        assert not any(m.get("id") == "job" and "method" not in m for m in peer.seen)  # still running
    finally:
        proc.send_signal(signal.SIGINT)  # cancels the job and exits
        try:
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
            stderr.close()
    for case, errors in zip(CASES, answers, strict=True):
        assert [(e["error"]["code"], e["id"]) for e in errors] == [(case.code, case.request_id)], case.name
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def http_url(tiny_paths, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hostile-http")
    port = _free_port()
    stderr = (tmp_path / "stderr.txt").open("wb")
    proc = subprocess.Popen(
        _serve(tmp_path, "--transport", "http", "--port", str(port)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        env=_env(tiny_paths),
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
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        stderr.close()
    assert "Traceback" not in (tmp_path / "stderr.txt").read_text(errors="replace")


HEADERS = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}


def _result(response: httpx.Response) -> dict:
    """The JSON-RPC message of a response, whether sent as JSON or as one SSE event."""
    if response.headers["content-type"].startswith("text/event-stream"):
        data = [
            line[5:] for line in response.text.splitlines() if line.startswith("data:") and line[5:].strip()
        ]
        return json.loads(data[-1])
    return response.json()


async def _chunks(body: bytes, size: int = 1 << 16):
    # A generator body goes out chunked, without Content-Length: the server reads it with a cap.
    for start in range(0, len(body), size):
        yield body[start : start + size]


async def test_over_http_every_case_is_answered_with_a_json_rpc_error_and_a_ping_after_it_works_while_a_job_runs(
    http_url,
):
    async with httpx.AsyncClient(timeout=120) as client:
        init = await client.post(http_url, json=INIT, headers=HEADERS)
        session = {
            **HEADERS,
            "mcp-session-id": init.headers["mcp-session-id"],
            "mcp-protocol-version": "2025-11-25",
        }
        await client.post(
            http_url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=session
        )

        async with anyio.create_task_group() as tg:
            job = {"name": "generate", "arguments": LONG_JOB, "_meta": {"progressToken": "job"}}
            generating = anyio.Event()
            finished = False

            async def long_job() -> None:
                nonlocal finished
                message = {"jsonrpc": "2.0", "id": "job", "method": "tools/call", "params": job}
                async with client.stream("POST", http_url, json=message, headers=session) as response:
                    async for line in response.aiter_lines():
                        if "generating" in line:
                            generating.set()  # the worker is busy from here on
                        finished = finished or '"id":"job"' in line

            tg.start_soon(long_job)
            with anyio.fail_after(START_TIMEOUT_S):
                await generating.wait()
            answers = []
            for n, case in enumerate(CASES):
                refused = await client.post(http_url, content=_chunks(case.body), headers=session)
                ping = await client.post(
                    http_url, json={"jsonrpc": "2.0", "id": n, "method": "ping"}, headers=session
                )
                answers.append((refused.status_code, refused.json(), ping.status_code, _result(ping)))
            # The same huge body with its length declared: refused unread, so no id.
            declared = await client.post(http_url, content=CASES[8].body, headers=session)
            assert not finished  # the job was running all along
            tg.cancel_scope.cancel()  # drop the job's stream (the server stops the job at exit)

    for n, (case, (status, error, ping_status, pong)) in enumerate(zip(CASES, answers, strict=True)):
        assert (status, error["error"]["code"], error["id"]) == (case.status, case.code, case.request_id), (
            case.name
        )
        assert error["jsonrpc"] == "2.0" and error["error"]["message"]
        assert (ping_status, pong) == (200, {"jsonrpc": "2.0", "id": n, "result": {}}), case.name
    assert declared.status_code == 413 and declared.json()["id"] is None
    assert f"{len(CASES[8].body):,} bytes" in declared.json()["error"]["message"]

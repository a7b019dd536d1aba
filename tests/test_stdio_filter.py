"""Every stdio line gets an answer: what the SDK's reader would drop is answered with a JSON-RPC error.

One real ``unison-mcp serve`` subprocess (tiny preset, no model loaded: only protocol messages)
is sent each hostile line and then a valid request; stdout must stay JSON-RPC throughout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from unison_mcp.wire import refusal

REPO = Path(__file__).resolve().parents[1]

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-11-25",
        "capabilities": {},
        "clientInfo": {"name": "t", "version": "0"},
    },
}

#: (line, expected code, expected id): the id comes back when it can be read.
HOSTILE: list[tuple[str, int, object]] = [
    ("this is not json", -32700, None),
    ("[]", -32600, None),
    (
        '{"jsonrpc":"2.0","id":11,"method":"tools/call","params":{"name":"understand","arguments":'
        '{"prompt":"\\ud800"}}}',
        -32600,
        11,
    ),
    ('{"jsonrpc":"2.0","id":{"a":1},"method":"tools/list"}', -32600, None),
    ('{"jsonrpc":"2.0","id":12,"method":"tools/list","params":{"cursor":' + "9" * 5000 + "}}", -32600, 12),
    ('{"jsonrpc":"2.0","id":13,"method":"tools/list","params":[1,2]}', -32600, 13),
    ('{"jsonrpc":"2.0","id":true,"method":"tools/list"}', -32600, None),
    ("42", -32600, None),
]


@pytest.mark.parametrize(("line", "code", "request_id"), HOSTILE)
def test_a_line_the_sdk_would_drop_is_refused_with_the_right_code_and_id(line, code, request_id):
    error = refusal(line)
    assert error is not None and error.error.code == code and error.id == request_id


@pytest.mark.parametrize(
    "line",
    [
        json.dumps(INITIALIZE),
        '{"jsonrpc":"2.0","method":"notifications/initialized"}',
        '{"jsonrpc":"2.0","id":"abc","method":"tools/list","params":{}}',
        '{"jsonrpc":"2.0","id":5,"result":{}}',
    ],
)
def test_a_message_the_sdk_takes_passes_the_filter_untouched(line):
    assert refusal(line) is None


def test_over_stdio_every_malformed_line_is_answered_and_the_server_keeps_serving(tiny_paths, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(UNISON_TINY_DIR=str(tiny_paths.root), PYTHONUNBUFFERED="1", HF_ENDPOINT="http://127.0.0.1:9")
    command = [sys.executable, "-m", "unison_mcp", "serve", "--preset", "tiny", "--output-dir", str(tmp_path)]
    stderr = (tmp_path / "stderr.txt").open("wb")
    proc = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, env=env, cwd=REPO
    )
    assert proc.stdin is not None and proc.stdout is not None
    lines = [json.dumps(INITIALIZE), '{"jsonrpc":"2.0","method":"notifications/initialized"}', "\n"]
    lines += [line for line, _, _ in HOSTILE]
    lines.append(json.dumps({"jsonrpc": "2.0", "id": 99, "method": "tools/list"}))
    try:
        proc.stdin.write(("\n".join(lines) + "\n").encode())
        proc.stdin.flush()
        answers = []
        while not answers or answers[-1].get("id") != 99:
            raw = proc.stdout.readline()
            assert raw, f"stdout closed after {answers}; stderr: {(tmp_path / 'stderr.txt').read_text()}"
            answers.append(json.loads(raw))  # stdout stays JSON-RPC
    finally:
        proc.stdin.close()
        proc.wait(timeout=30)
        stderr.close()
    assert answers[0]["id"] == 1 and "result" in answers[0]
    errors = [a for a in answers[1:-1]]
    assert [(e["error"]["code"], e["id"]) for e in errors] == [(code, rid) for _, code, rid in HOSTILE]
    assert all(e["jsonrpc"] == "2.0" and e["error"]["message"] for e in errors)
    tools = {t["name"] for t in answers[-1]["result"]["tools"]}
    assert {"understand", "generate", "auto", "job"} <= tools
    assert proc.returncode == 0

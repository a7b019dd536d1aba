"""The server as a service: the ready line, a first run without weights, signals, keep-alive, CLI errors.

The first run and the signals are tested on real ``unison-mcp serve`` subprocesses whose stdin
stays open, as an MCP client holds it. The hub is a closed loopback port
(``HF_ENDPOINT=http://127.0.0.1:9``) and the hub cache an empty temporary folder: nothing leaves
this machine.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
from mcp import Client

from engine.config import EngineConfig
from engine.engine import Engine
from engine.errors import ServerConfigError
from engine.hub import LoadFailures, Weights
from unison_mcp import __version__
from unison_mcp.cli import main
from unison_mcp.config import ConfigError, ServerConfig, load_config
from unison_mcp.server import build_server
from unison_mcp.service import log_ready, ready_line

REPO = Path(__file__).resolve().parents[1]
CLOSED_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens, connects are refused at once
START_TIMEOUT_S = 60  # generous: other test runs share these CPUs


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNISON_", "HF_"))}
    env.update(
        HF_ENDPOINT=CLOSED_HUB,
        HF_HOME=str(tmp_path / "hf"),  # an empty hub cache
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        **extra,
    )
    return env


class _Peer:
    """JSON-RPC over a ``serve`` subprocess's pipes (stdin stays open until the test closes it)."""

    def __init__(self, args: list[str], env: dict[str, str], stderr: Path):
        self._stderr = stderr.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "unison_mcp", "serve", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=REPO,
        )
        self.messages: list[dict] = []

    def send(self, message: dict) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(message) + "\n").encode())
        self.proc.stdin.flush()

    def read(self) -> dict | None:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            return None
        message = json.loads(line)
        self.messages.append(message)
        return message

    def until(self, wanted) -> dict:
        while True:
            message = self.read()
            assert message is not None, f"the server closed stdout; seen: {self.messages}"
            if wanted(message):
                return message

    def start(self) -> None:
        self.send(
            {
                "jsonrpc": "2.0",
                "id": 0,
                "method": "initialize",
                "params": {
                    "protocolVersion": "2025-11-25",
                    "capabilities": {},
                    "clientInfo": {"name": "test", "version": "0"},
                },
            }
        )
        self.until(lambda m: m.get("id") == 0)
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def call(self, request_id: int, tool: str, arguments: dict, progress: bool = False) -> None:
        params: dict = {"name": tool, "arguments": arguments}
        if progress:
            params["_meta"] = {"progressToken": f"p{request_id}"}
        self.send({"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params})

    def answer(self, request_id: int) -> dict:
        return self.until(lambda m: m.get("id") == request_id and "method" not in m)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._stderr.close()


def _text(answer: dict) -> str:
    return " ".join(c.get("text", "") for c in answer["result"]["content"])


# ---------------------------------------------------------------------------------------------
# First run: no weights, no hub


def test_without_weights_or_hub_the_first_call_fails_within_5_s_and_the_next_at_once(tmp_path: Path):
    stderr = tmp_path / "stderr.txt"
    missing_root = tmp_path / "no-such-folder"
    peer = _Peer(
        ["--output-dir", str(tmp_path / "out"), "--allow-root", str(missing_root), "--wait-s", "30"],
        _env(tmp_path),
        stderr,
    )
    try:
        peer.start()
        t0 = time.perf_counter()
        peer.call(1, "understand", {"prompt": "What is a cat?"})
        first = peer.answer(1)
        first_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        peer.call(2, "understand", {"prompt": "And a dog?"})
        second = peer.answer(2)
        second_s = time.perf_counter() - t1
        peer.call(3, "generate", {"task": "text_to_image", "prompt": "a cat"})
        third = peer.answer(3)
        deadline = time.monotonic() + START_TIMEOUT_S
        while " ready, serving on stdio; " not in stderr.read_text():  # logged while serving
            assert time.monotonic() < deadline, stderr.read_text()
            time.sleep(0.1)
    finally:
        peer.close()
    log = stderr.read_text()

    assert first["result"]["isError"] and second["result"]["isError"] and third["result"]["isError"]
    assert first_s < 5.0, first_s
    assert second_s < 1.0, second_s
    text = _text(first)
    assert text.startswith("hub_unreachable: planner_model='Qwen/Qwen2.5-VL-3B-Instruct': not on this")
    for advice in ("unison-mcp download", "local path", "--preset tiny", "unison-mcp doctor"):
        assert advice in text, advice
    assert "Fix that argument" not in text  # the server's setup, not the caller's
    assert "remembered" in _text(second)
    assert "generator_model=" in _text(third)

    # One line per failed model, none of the hub's retry warnings.
    assert log.count("cannot be loaded") == 2, log
    assert "Retrying" not in log and "thrown while requesting" not in log
    lines = log.splitlines()
    start = next(i for i, line in enumerate(lines) if " ready, serving on stdio; " in line)
    first, *more = [
        lines[start],
        *itertools.takewhile(lambda line: line.startswith("  "), lines[start + 1 :]),
    ]
    assert str(tmp_path / "out") in first and first.endswith("; 0 of 10 models found locally")
    assert f"  inputs from {missing_root} (missing)" in more
    assert (
        "  planner Qwen/Qwen2.5-VL-3B-Instruct: missing (not downloaded; the hub cannot be reached)" in more
    )
    assert "  for the missing: run `unison-mcp download`, give local paths, or try --preset tiny" in more
    # Short lines, each about one thing (it was one line of 1,232 characters): besides the one
    # path or hub id a line names, at most 100 characters.
    message = first[first.index("unison-mcp ") :]  # after the log record's time, level and name
    for line in (message, *more):
        assert len(line) - max(len(word) for word in line.split()) <= 100, line
    assert f"allowed root {missing_root} does not exist" in log


def test_a_remembered_failure_is_retried_after_a_while_or_as_soon_as_the_weights_appear(tmp_path: Path):
    now = [0.0]
    failures = LoadFailures(retry_after_s=300.0, clock=lambda: now[0])
    weights = Weights(
        role="planner", setting="planner_model", ref=str(tmp_path / "qwen"), probe_file="config.json"
    )
    loads: list[int] = []

    def load() -> None:
        with failures.guard(weights):
            loads.append(1)

    with pytest.raises(ServerConfigError, match="no such directory"):
        load()
    now[0] = 299.0
    with pytest.raises(ServerConfigError, match=r"remembered: tried again in 1 s"):
        load()
    assert failures.failed() == {"planner": failures.failed()["planner"]}

    now[0] = 300.0  # the retry time: tried again (and failing again, remembered again)
    with pytest.raises(ServerConfigError, match="no such directory") as again:
        load()
    assert "this failure is remembered" not in str(again.value)

    (tmp_path / "qwen").mkdir()  # the weights appear (a download, a copy): no need to wait
    load()
    assert loads == [1] and failures.failed() == {}


def test_an_engine_remembers_a_hub_model_it_cannot_fetch_and_reports_it_in_its_status(tmp_path: Path):
    config = EngineConfig(
        planner_model="someone/not-downloaded",
        cache_dir=tmp_path / "cache",
        local_files_only=True,  # as without a hub: nothing may be fetched
        output_dir=tmp_path / "out",
    )
    engine = Engine(config)
    with pytest.raises(ServerConfigError, match="not downloaded, and local_files_only is set"):
        engine.understand("What is a cat?")
    t0 = time.perf_counter()
    with pytest.raises(ServerConfigError, match="remembered"):
        engine.understand("And a dog?")
    assert time.perf_counter() - t0 < 0.5
    assert "someone/not-downloaded" in engine.status()["load_failures"]["planner"]


# ---------------------------------------------------------------------------------------------
# The ready line


def test_the_ready_message_is_one_short_line_then_one_line_per_thing_to_look_at(
    tiny_paths, tmp_path: Path, caplog
):
    root, gone = tmp_path / "in", tmp_path / "gone"
    root.mkdir()
    config = ServerConfig(
        engine=EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path / "out"),
        allowed_roots=[root, gone],
        keep_alive="10m",
    )
    out = config.output_dir
    first, *more = ready_line(config, output_dir=out, roots=config.roots()).splitlines()
    assert (
        first
        == f"unison-mcp {__version__} ready, serving on stdio; outputs in {out}; 10 of 10 models found locally"
    )
    assert more == [
        f"  inputs from {root.resolve()}, {gone.resolve()} (missing)",
        "  models unloaded after 600 s without a job",
    ]
    # -v: the found models are listed too, one line each.
    detailed = ready_line(config, output_dir=out, roots=config.roots(), detail=True).splitlines()
    assert f"  planner {tiny_paths.qwen}: found locally" in detailed
    assert f"  generator {tiny_paths.wan}: found locally" in detailed
    assert len(detailed) == 3 + 10
    with caplog.at_level(logging.INFO, logger="unison_mcp.service"):
        log_ready(config, output_dir=out, roots=config.roots())
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        f"allowed root {gone.resolve()} does not exist: inputs under it are refused until it does"
    ]


def test_before_its_first_use_the_tiny_presets_models_are_said_to_be_built_on_first_use(tmp_path: Path):
    config = ServerConfig(engine=EngineConfig.tiny(tmp_path / "tiny", output_dir=tmp_path / "out"))
    first, *more = ready_line(config, output_dir=config.output_dir, roots=config.roots()).splitlines()
    assert first.endswith("; 0 of 10 models found locally")
    assert f"  planner {tmp_path / 'tiny' / 'qwen-2'}: tiny, built on first use" in more
    assert not any("missing" in line for line in more)  # nothing to fix: the first call builds them
    assert not (tmp_path / "tiny").exists()


# ---------------------------------------------------------------------------------------------
# Stopping


def _tiny_serve(tmp_path: Path, *flags: str) -> list[str]:
    # Only the generator loads: the signal tests are about the stop, not the models.
    return [
        "--preset",
        "tiny",
        "--output-dir",
        str(tmp_path / "out"),
        "--wait-s",
        "120",
        "--planner-model",
        "none",
        "--projector",
        "none",
        *flags,
    ]


def _outputs(tmp_path: Path) -> list[str]:
    out = tmp_path / "out"
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


def test_sigint_on_stdio_cancels_the_running_job_drains_the_queue_and_exits_130_within_2_s(
    tiny_paths, tmp_path: Path
):
    peer = _Peer(
        _tiny_serve(tmp_path), _env(tmp_path, UNISON_TINY_DIR=str(tiny_paths.root)), tmp_path / "err"
    )
    try:
        peer.start()
        # 200 steps: the job is surely still generating when the signal comes.
        args = {"task": "text_to_image", "prompt": "a cat", "steps": 200, "width": 64, "height": 64}
        peer.call(1, "generate", args, progress=True)
        peer.until(lambda m: m.get("method") == "notifications/progress" and "generating" in json.dumps(m))
        peer.call(2, "generate", {"task": "text_to_image", "prompt": "a dog"})
        time.sleep(0.3)  # the second call is queued by then
        t0 = time.perf_counter()
        peer.proc.send_signal(signal.SIGINT)
        code = peer.proc.wait(5)
        took = time.perf_counter() - t0
        rest = []
        while (message := peer.read()) is not None:
            rest.append(message)
    finally:
        peer.close()
    assert code == 128 + signal.SIGINT
    assert took < 2.0, took
    answers = {m["id"]: m for m in rest if "id" in m}
    assert set(answers) == {1, 2}
    assert _text(answers[1]).startswith("shutting_down: the server is shutting down: the job was stopped")
    assert _text(answers[2]).startswith("shutting_down: the server is shutting down: the job was not started")
    assert _outputs(tmp_path) == []  # nothing written, nothing half-written


def test_sigterm_stops_an_idle_stdio_server_with_exit_status_143(tiny_paths, tmp_path: Path):
    peer = _Peer(
        _tiny_serve(tmp_path), _env(tmp_path, UNISON_TINY_DIR=str(tiny_paths.root)), tmp_path / "err"
    )
    try:
        peer.start()
        t0 = time.perf_counter()
        peer.proc.send_signal(signal.SIGTERM)
        code = peer.proc.wait(5)
        took = time.perf_counter() - t0
    finally:
        peer.close()
    assert (code, took < 2.0) == (128 + signal.SIGTERM, True), took
    assert "SIGTERM: stopped" in (tmp_path / "err").read_text()


#: A disk that stops answering, for a real server: ``os.write`` on an output's temporary file
#: blocks for good (sleeping, as a write blocked in the kernel waits, without the interpreter lock),
#: after touching the flag file named by UNISON_TEST_STUCK_FLAG.
_STUCK_DISK = """
import os, time
_write = os.write
def _stuck(fd, data):
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        name = ""
    if os.path.basename(name).startswith(".tmp-"):
        open(os.environ["UNISON_TEST_STUCK_FLAG"], "w").close()
        while True:
            time.sleep(3600)
    return _write(fd, data)
os.write = _stuck
"""


def test_with_a_write_stuck_on_the_disk_the_server_answers_and_sigterm_still_stops_it_within_2_s(
    tiny_paths, tmp_path: Path
):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(_STUCK_DISK)
    flag = tmp_path / "stuck"
    env = _env(
        tmp_path,
        UNISON_TINY_DIR=str(tiny_paths.root),
        UNISON_TEST_STUCK_FLAG=str(flag),
        PYTHONPATH=os.pathsep.join([str(hook), str(REPO)]),
    )
    peer = _Peer(_tiny_serve(tmp_path), env, tmp_path / "err")
    try:
        peer.start()
        args = {
            "task": "text_to_video",
            "prompt": "a cat",
            "steps": 1,
            "width": 64,
            "height": 64,
            "num_frames": 5,
        }
        peer.call(1, "generate", args)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not flag.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert flag.exists(), (tmp_path / "err").read_text()[-2000:]
        # The writer is stuck: the server still answers at once.
        t0 = time.perf_counter()
        peer.send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
        listed = peer.answer(2)
        answered = time.perf_counter() - t0
        assert listed["result"]["tools"] and answered < 2.0, answered
        t0 = time.perf_counter()
        peer.proc.send_signal(signal.SIGTERM)
        code = peer.proc.wait(10)
        took = time.perf_counter() - t0
    finally:
        peer.close()
    assert (code, took < 2.0) == (128 + signal.SIGTERM, True), took
    assert [p for p in _outputs(tmp_path) if not p.startswith(".tmp-")] == []


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_the_http_server_within_2_s_with_exit_status_128_plus_the_signal(
    tiny_paths, tmp_path: Path, sig: signal.Signals
):
    port = _free_port()
    flags = _tiny_serve(tmp_path, "--transport", "http", "--port", str(port))
    peer = _Peer(flags, _env(tmp_path, UNISON_TINY_DIR=str(tiny_paths.root)), tmp_path / "err")
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:  # listening?
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert peer.proc.poll() is None, (tmp_path / "err").read_text()
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        t0 = time.perf_counter()
        peer.proc.send_signal(sig)
        code = peer.proc.wait(5)
        took = time.perf_counter() - t0
    finally:
        peer.close()
    assert code == 128 + sig
    assert took < 2.0, took


# ---------------------------------------------------------------------------------------------
# Keep-alive


async def test_with_a_short_keep_alive_the_models_are_unloaded_when_idle_and_loaded_again_on_the_next_call(
    tiny_paths, tmp_path: Path, caplog
):
    caplog.set_level(logging.INFO, logger="engine")
    engine_config = EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path / "out").model_copy(
        update={"planner_model": None, "projector": None}  # the generator alone: quick
    )
    engine = Engine(engine_config)
    server = build_server(ServerConfig(engine=engine_config, keep_alive="0.5s"), engine=engine)
    async with Client(server) as client:
        args = {"task": "text_to_image", "prompt": "a cat", "width": 32, "height": 32}
        first = await client.call_tool("generate", args)
        assert not first.is_error
        assert engine.status()["loaded"]["generator"]
        with anyio.fail_after(10):
            while engine.status()["loaded"]["generator"]:
                await anyio.sleep(0.05)  # unloaded by the keep-alive
        second = await client.call_tool("generate", args)
        assert not second.is_error
        assert engine.status()["loaded"]["generator"]  # loaded again for the call
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith("loading WanVACEPipeline") for m in messages) == 2
    assert any(m.startswith("unloaded generator") for m in messages)


def test_keep_alive_takes_durations_from_the_flag_the_variable_and_the_file(tmp_path: Path):
    from unison_mcp.cli import build_parser

    assert (
        load_config(build_parser().parse_args(["serve", "--keep-alive", "10m"]), env={}).keep_alive_s == 600
    )
    assert load_config(None, env={"UNISON_KEEP_ALIVE": "90s"}).keep_alive_s == 90
    toml = tmp_path / "c.toml"
    toml.write_text('keep_alive = "1h30m"\n')
    assert load_config(None, env={}, toml_path=toml).keep_alive_s == 5400
    assert load_config(None, env={}).keep_alive_s is None  # forever by default
    assert load_config(None, env={"UNISON_KEEP_ALIVE": "forever"}).keep_alive_s is None
    with pytest.raises(ConfigError, match=r"UNISON_KEEP_ALIVE='10 parsecs'.*is not a duration"):
        load_config(None, env={"UNISON_KEEP_ALIVE": "10 parsecs"})


# ---------------------------------------------------------------------------------------------
# The command line: inputs first, the same hints, the server's errors as the server's


@pytest.mark.parametrize(
    "argv",
    [
        ["understand", "What is this?", "--media"],
        ["run", "Animate this image", "--media"],
        ["generate", "--task", "image_to_video", "--prompt", "it moves", "--image"],
        ["plan", "Animate this image", "--media"],
    ],
    ids=lambda a: a[0],
)
def test_every_command_checks_its_input_files_before_loading_a_model(
    argv: list[str], tmp_path: Path, capsys, monkeypatch
):
    # Models that cannot load: a missing file must be reported first, without trying them.
    for name in ("UNISON_PLANNER_MODEL", "UNISON_GENERATOR_MODEL"):
        monkeypatch.setenv(name, str(tmp_path / "no-such-model"))
    missing = tmp_path / "missing.png"
    code = main([*argv, str(missing), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert "input_refused:" in err and str(missing) in err, err
    assert "no-such-model" not in err


def test_a_model_error_on_the_command_line_carries_the_same_hint_as_over_mcp(tmp_path: Path, capsys):
    code = main(["understand", "What is a cat?", "--planner-model", str(tmp_path / "no-qwen")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2
    assert err.startswith(
        f"unison-mcp understand: server_config_error: planner_model='{tmp_path / 'no-qwen'}'"
    )
    assert "`unison-mcp doctor`" in err and "--preset tiny" in err


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
async def test_a_device_this_machine_lacks_is_reported_as_the_servers_configuration(
    tiny_paths, tmp_path: Path
):
    engine_config = EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path / "out").model_copy(
        update={"device": "cuda", "planner_model": None, "projector": None}
    )
    server = build_server(ServerConfig(engine=engine_config))
    async with Client(server) as client:
        result = await client.call_tool("generate", {"task": "text_to_image", "prompt": "a cat"})
        again = await client.call_tool("generate", {"task": "text_to_image", "prompt": "a cat"})
    text = result.content[0].text
    assert result.is_error and text.startswith("server_config_error: device='cuda': CUDA is not available")
    assert "the server's setup, not the call" in text and "Fix that argument" not in text
    assert again.is_error and "remembered" in again.content[0].text

"""The pool's logic without a cluster: its settings, the job book, errors crossing processes,
refusals before anything starts, and that nothing of Ray is imported without ``--pool ray``.

The end-to-end tests with a real local cluster are in tests/test_pool.py.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from engine.api import admit, parse_arguments
from engine.config import EngineConfig
from engine.control import JobControl
from engine.errors import (
    Busy,
    Cancelled,
    InputRefused,
    InvalidRequest,
    OutOfSpace,
    ServerConfigError,
    ShuttingDown,
    WorkerLost,
)
from engine.inputs import InputPolicy
from engine.pool.book import JobBook
from engine.pool.client import Pool
from engine.pool.settings import PoolSettings
from engine.pool.watchdog import MARKER_ENV

REPO = Path(__file__).resolve().parents[1]


def _run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120, check=True
    )
    return done.stdout.strip()


def test_help_and_the_plain_server_never_import_ray():
    # The whole CLI help, then a single server built as `serve` builds it: Ray stays out.
    out = _run_python(
        "import sys, contextlib, io\n"
        "from unison_mcp.cli import main\n"
        "for argv in (['--help'], ['serve', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "from unison_mcp.config import ServerConfig\n"
        "from unison_mcp.server import build_server\n"
        "build_server(ServerConfig())\n"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))\n"
    )
    assert out == "[]"


def test_the_pool_flags_are_settings_like_any_other():
    from unison_mcp.config import load_config

    config = load_config(
        {"pool": "ray", "replicas": 3, "max_replicas": 5, "ray_address": "10.0.0.5:6380"}, env={}
    )
    assert config.pool.enabled and config.pool.replicas == 3 and config.pool.max_replicas == 5
    assert config.pool.ray_address == "10.0.0.5:6380"
    assert not load_config(None, env={}).pool.enabled  # the default: this process's engine
    assert load_config(None, env={"UNISON_POOL": "ray", "UNISON_REPLICAS": "2"}).pool.replicas == 2


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"ray_port": 12000}, "worker port range 10002-19999"),
        ({"replicas": 4, "max_replicas": 2}, "max_replicas=2 is below replicas=4"),
        ({"replicas": 0}, "greater than or equal to 1"),
    ],
)
def test_pool_settings_that_cannot_work_are_refused_by_name(fields, words):
    with pytest.raises(ValueError, match=words):
        PoolSettings(backend="ray", **fields)


def test_joining_an_address_where_nothing_listens_fails_at_once_naming_it():
    from engine.pool.cluster import _probe

    with socket.socket() as s:  # a loopback port that was free a moment ago: closed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.monotonic()
    with pytest.raises(
        ServerConfigError, match=f"nothing answers at the Ray cluster address 127.0.0.1:{port}"
    ):
        _probe(f"127.0.0.1:{port}", 30.0)
    assert time.monotonic() - t0 < 5
    with pytest.raises(ServerConfigError, match="HOST:PORT"):
        _probe("no-port-here", 30.0)


def test_without_ray_installed_the_pool_says_how_to_install_it():
    out = _run_python(
        "import sys\n"
        "sys.modules['ray'] = None  # as if not installed\n"
        "from engine.pool import require_ray\n"
        "try:\n"
        "    require_ray()\n"
        "except Exception as exc:\n"
        "    print(type(exc).__name__, exc)\n"
    )
    assert out.startswith("ServerConfigError") and "pip install 'unison-mcp[serve]'" in out


def test_a_free_port_for_the_local_cluster_lies_outside_rays_worker_ports():
    from engine.pool.cluster import free_port
    from engine.pool.settings import RAY_WORKER_PORTS

    assert all(free_port() not in RAY_WORKER_PORTS for _ in range(20))


@pytest.mark.parametrize(
    "error",
    [
        Busy(3, 8),
        InvalidRequest.for_field("num_frames", 7, "must be 4k+1"),
        InputRefused("mask=x.png: outside the allowed roots", path="x.png"),
        Cancelled(),
        ShuttingDown("the server is shutting down; nothing was written"),
        OutOfSpace("no room in the output directory /o: 1.0 MB free", path="/o"),
        WorkerLost(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_the_engines_errors_cross_processes_with_their_message_and_fields(error):
    # A replica's error reaches the ingress pickled, and is answered there in the same words.
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is type(error) and str(again) == str(error)
    assert again.__dict__ == error.__dict__ and again.code == error.code


def test_a_replicas_unexpected_error_crosses_by_name_only():
    from engine.pool.replica import portable

    class Weird(Exception):
        def __init__(self, a, b):  # does not pickle back: two arguments, one message
            super().__init__(f"{a}/{b}")

    crossed = pickle.loads(pickle.dumps(portable(Weird(1, 2))))
    assert isinstance(crossed, RuntimeError) and "Weird" in str(crossed)
    busy = Busy(1, 2)
    assert portable(busy) is busy


# ---------------------------------------------------------------------------------------------
# The job book (a plain class; the pool makes it a named Ray actor)


def test_the_book_follows_a_job_from_queued_to_done_with_the_replicas_name():
    book = JobBook(keep=4)
    book.add("j1", "generate", "host:1")
    assert book.get("j1")["status"] == "queued"
    assert book.started("j1", "EngineReplica#a")
    book.progress("j1", 3, 10, "generating")
    record = book.get("j1")
    assert record["status"] == "running" and record["replica"] == "EngineReplica#a"
    assert record["progress"] == {"stage": "generating", "done": 3, "total": 10}
    book.finished("j1", "done", engine_result={"outputs": ["a.mp4"]})
    book.finished("j1", "failed", result="the tool's result")  # the ingress adds; the status stays
    book.finished("j1", "cancelled", error=Cancelled())  # a stream closed after its last event
    record = book.get("j1")
    assert record["status"] == "done" and record["result"] == "the tool's result"
    assert record["engine_result"] == {"outputs": ["a.mp4"]} and record["finished_at"] is not None
    assert record["error"] is None


def test_the_book_counts_the_jobs_ahead_of_every_ingress_and_keeps_a_bounded_history():
    book = JobBook(keep=2)
    for i in range(4):
        book.add(f"j{i}", "generate", f"ingress-{i % 2}")
        time.sleep(0.001)  # distinct creation times
    book.started("j0", "r0")
    assert [book.position(f"j{i}") for i in (1, 2, 3)] == [0, 1, 2]
    for i in range(4):
        book.finished(f"j{i}", "done")
    assert [j["id"] for j in book.jobs()] == ["j2", "j3"]  # the two newest finished kept
    assert all("result" not in j for j in book.jobs())


def test_a_cancel_written_in_the_book_stops_a_running_job_and_a_queued_one_from_starting():
    book = JobBook()
    book.add("run", "generate", "i")
    book.add("wait", "generate", "i")
    book.started("run", "r0")
    assert book.cancel("run") and book.cancel("wait")
    assert book.cancelled(["run", "wait", "other"]) == ["run", "wait"]
    assert not book.started("wait", "r1")  # the replica that reaches it later does not run it
    book.finished("run", "cancelled", error=Cancelled())
    assert not book.cancel("run")  # ended: nothing to cancel
    assert not book.cancel("unknown")


# ---------------------------------------------------------------------------------------------
# The pool's own jobs, kept as the single server's queue keeps them (engine.jobs.JobKeeper)


def test_the_pool_keeps_its_jobs_as_the_queue_does_cancels_by_id_and_says_why_once_closing(tmp_path):
    # No cluster: "preload" jobs never touch the job book, so the pool's own keeping runs alone.
    config = EngineConfig(planner_model=None, output_dir=tmp_path)
    pool = Pool(
        config,
        handle=None,
        book=None,
        settings=PoolSettings(backend="ray"),
        capacity=1,
        keep_jobs=2,
        owned=False,
    )
    started = threading.Event()

    def held(control: JobControl) -> str:
        started.set()
        control.wait_cancelled(10)
        control.check()
        return "never"

    first = pool.submit("preload", held)
    assert started.wait(5)
    assert pool.jobs() == [first] and pool.get(first.id) is first and not pool.idle()
    assert pool.cancel(first.id) and first.wait(5) and first.status == "cancelled"
    assert not pool.cancel(first.id) and not pool.cancel("unknown")
    done = [pool.submit("preload", lambda control, i=i: i) for i in range(3)]
    assert all(j.wait(5) for j in done) and [j.outcome() for j in done] == [0, 1, 2]
    # Two finished jobs are kept (keep_jobs=2), the oldest finished forgotten first.
    assert pool.get(first.id) is None and pool.get(done[0].id) is None
    assert pool.jobs() == done[1:] and pool.get(done[2].id) is done[2]
    assert pool.idle() and pool.running is None
    # Once closing, a running job stops with the single server's words, and nothing is taken.
    started.clear()
    last = pool.submit("preload", held)
    assert started.wait(5)
    pool.close(cancel=True, timeout=5, reason="the server is shutting down")
    assert last.status == "cancelled" and isinstance(last.error, ShuttingDown)
    assert str(last.error) == "the server is shutting down: the job was stopped; nothing was written"
    with pytest.raises(ShuttingDown, match="the server is shutting down: the job was not queued"):
        pool.submit("preload", lambda control: None)


# ---------------------------------------------------------------------------------------------
# A replica that dies, an ingress that dies


class _DyingStream:
    """A replica's stream that breaks as a killed replica's does."""

    def __init__(self, error: BaseException | None):
        self.error = error
        self.cancelled = False

    def __iter__(self) -> Any:
        if self.error is not None:
            raise self.error
        return iter([])  # or ends with neither a result nor a failure

    def cancel(self) -> None:
        self.cancelled = True


class _Handle:
    def __init__(self, stream: _DyingStream):
        self.stream = stream

    def options(self, **_: Any) -> _Handle:
        return self

    @property
    def run(self) -> _Handle:
        return self

    def remote(self, *_: Any) -> _DyingStream:
        return self.stream


class _Book:
    class _Add:
        @staticmethod
        def remote(*_: Any) -> None:
            return None

    add = _Add()


@pytest.mark.parametrize("death", ["actor", "crash", "ended"])
def test_a_replica_that_dies_mid_job_is_worker_lost_telling_the_caller_to_retry(tmp_path, monkeypatch, death):
    from ray.exceptions import ActorDiedError, WorkerCrashedError

    from unison_mcp.errors import describe_error

    error = {"actor": ActorDiedError(), "crash": WorkerCrashedError(), "ended": None}[death]
    config = EngineConfig(planner_model=None, output_dir=tmp_path)
    stream = _DyingStream(error)
    pool = Pool(
        config,
        handle=_Handle(stream),
        book=_Book(),
        settings=PoolSettings(backend="ray"),
        capacity=1,
        keep_jobs=2,
    )
    monkeypatch.setattr(pool, "_get", lambda ref: ref)
    policy = InputPolicy(None, tmp_path, 10**6, 10**6)
    admitted = admit(
        parse_arguments("generate", config.limits, {"task": "text_to_image", "prompt": "x"}), config, policy
    )
    with pytest.raises(WorkerLost) as caught:
        pool.run(admitted)
    said = describe_error(caught.value)
    assert said.startswith("worker_lost: the worker running this job stopped; retry")
    assert "call again" in said and "doctor" not in said
    assert stream.cancelled  # nothing left running alone


WATCHED = """
import os, shlex, signal, subprocess, sys, tempfile, time
from pathlib import Path
from engine.pool.cluster import _start_watchdog
from engine.pool.watchdog import MARKER_ENV

watchdog = _start_watchdog("c0ffee")
marked = {**os.environ, MARKER_ENV: "c0ffee"}
# Not the owner's children (a shell starts each in the background and ends), as the raylet's agents
# are not. The first loses its mark from /proc/<pid>/environ after 2 s (it execs itself without
# it), as Ray's agents do once they set their process title.
# The second starts a child without the mark, as the raylet starts Ray's agents.
SLEEP = "import time; time.sleep(120)"
CLEAN = "env = {k: v for k, v in os.environ.items() if k != %r}" % MARKER_ENV
UNMARK = "import os, sys, time; time.sleep(2); %s; os.execve(sys.executable, [sys.executable, '-c', %r], env)" % (
    CLEAN, SLEEP)
UNDER = Path(tempfile.mkdtemp()) / "under"
PARENT = ("import os, subprocess, sys, time; %s; child = subprocess.Popen([sys.executable, '-c', %r], env=env); "
          "open(%r, 'w').write(str(child.pid)); time.sleep(120)" % (CLEAN, SLEEP, str(UNDER)))
pids = [
    subprocess.run(["sh", "-c", f"{sys.executable} -c {shlex.quote(code)} >/dev/null 2>&1 & echo $!"],
                   env=env, capture_output=True, text=True, timeout=30).stdout.strip()
    for code, env in ((UNMARK, marked), (PARENT, marked), (SLEEP, os.environ))
]
while not UNDER.exists() or not UNDER.read_text():
    time.sleep(0.05)
print(" ".join([*pids, UNDER.read_text()]), flush=True)
time.sleep(4)  # the watchdog has seen them all; the first has lost its mark since
print("ready", flush=True)
if sys.argv[1:] == ["kill-children"]:
    # What Ray's core worker does when it exits on its own: every child of this process killed.
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid():
                os.kill(int(entry.name), signal.SIGKILL)
        except OSError:
            pass
    os._exit(1)
time.sleep(120)
"""


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="the watchdog reads /proc")
@pytest.mark.parametrize("end", ["kill -9", "kill-children"])
def test_the_processes_of_a_cluster_end_when_its_owner_is_killed_and_only_those(end: str):
    """``kill -9`` of the owner; or the owner killing every child of its own and exiting, as Ray's
    core worker does when it ends the process inside ``ray.shutdown`` (the watchdog is no child)."""
    owner = subprocess.Popen(
        [sys.executable, "-c", WATCHED, *([end] if end == "kill-children" else [])],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert owner.stdout is not None
    first, second, unmarked, under = (int(p) for p in owner.stdout.readline().split())
    try:
        assert owner.stdout.readline().strip() == "ready"
        assert not any(_gone(p) for p in (first, second, unmarked, under))
        assert MARKER_ENV.encode() not in Path(f"/proc/{first}/environ").read_bytes()  # unmarked since
        assert MARKER_ENV.encode() not in Path(f"/proc/{under}/environ").read_bytes()  # never marked
        if end == "kill -9":
            owner.send_signal(signal.SIGKILL)  # no stop, no cleanup of its own
        owner.wait(10)
        deadline = time.monotonic() + 15
        while not (_gone(first) and _gone(second) and _gone(under)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _gone(first) and _gone(second) and _gone(under)
        assert not _gone(unmarked)
    finally:
        for pid in (first, second, unmarked, under):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)

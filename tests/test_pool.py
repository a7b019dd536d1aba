"""The pool of engine replicas (``--pool ray``), end to end: a real server process, a local Ray
cluster on loopback, two CPU replicas on the tiny models, and real MCP clients over HTTP.

One server for the module (starting Ray and two replicas costs seconds). The jobs are tiny
text-to-video runs with many steps, so that two overlap and a cancel lands mid-way.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

ray = pytest.importorskip("ray", reason="the pool needs the serve extra: pip install -e '.[serve]'")

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 120  # Ray (about 10 s here) and two replicas, on CPUs other tests share
TOKEN = "pool-test-token"
#: Long enough on the tiny models for two jobs to overlap and outlive a call's wait (1 s here).
LONG = {"task": "text_to_video", "prompt": "rain on a window", "steps": 100, "num_frames": 17}
#: Several seconds: cancelled mid-way, or followed from another client to its end.
SLOW = {"task": "text_to_video", "prompt": "snow on a roof", "steps": 200, "num_frames": 33}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _descendants(pid: int) -> set[int]:
    """Every process under ``pid``: a local cluster's GCS and raylet are the server's children,
    its workers (the replicas among them) the raylet's."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # "pid (comm) state ppid ...": comm may hold spaces, so split after its ")".
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _cmdlines(pids: set[int]) -> dict[int, bytes]:
    """What each of ``pids`` still alive runs (for a failure's message); one gone meanwhile is left out."""
    found = {}
    for pid in _alive(pids):
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes()[:80]
        except OSError:
            continue
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _start_server(tiny_paths: Any, tmp_path: Path, *options: str) -> dict[str, Any]:
    """A pool server process on the tiny models (``options``: its pool flags), started and
    listening, with the paths a test looks at."""
    out, root = tmp_path / "outputs", tmp_path / "inputs"
    root.mkdir()
    # Ray's socket paths must fit 107 bytes: a short directory of its own.
    ray_dir = Path(tempfile.mkdtemp(prefix="ur-", dir="/tmp"))
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UNISON_", "RAY_"))}
    env.update(
        UNISON_TINY_DIR=str(tiny_paths.root),
        UNISON_AUTH_TOKEN=TOKEN,
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
    )
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "unison_mcp",
                "serve",
                "--preset",
                "tiny",
                *("--pool", "ray", "--ray-temp-dir", str(ray_dir), *options),
                *("--transport", "http", "--host", "127.0.0.1", "--port", str(port)),
                *("--output-dir", str(out), "--allow-root", str(root)),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
            cwd=REPO,
        )
    started = {
        "pids": set(),
        "url": f"http://127.0.0.1:{port}/mcp",
        "proc": proc,
        "out": out,
        "ray_dir": ray_dir,
        "stderr": stderr_path,
    }
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            return started  # the caller's assertion shows its stderr
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                return started
            time.sleep(0.2)
    started["pids"] |= _descendants(proc.pid)
    return started


def _stop_server(server: dict[str, Any]) -> None:
    """Stop the server (SIGTERM, then SIGKILL) and kill whatever of its processes is left."""
    proc, pids = server["proc"], server["pids"]
    if proc.poll() is None:
        pids |= _descendants(proc.pid)
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for pid in _alive(pids):  # never left behind, whatever a test did
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def pool_server(tiny_paths, tmp_path_factory):
    # One job may wait behind the two running; a call hands back its job after 1 s.
    options = ("--replicas", "2", "--queue-size", "1", "--wait-s", "1", "--preload")
    server = _start_server(tiny_paths, tmp_path_factory.mktemp("pool"), *options)
    try:
        proc = server["proc"]
        assert proc.poll() is None, server["stderr"].read_text(errors="replace")[-3000:]
        assert server["pids"], "the pool server did not start"
        yield server
    finally:
        _stop_server(server)


class _Client:
    """One MCP client session over HTTP (its own connection: another client of the same server)."""

    def __init__(self, url: str):
        self.url = url

    async def __aenter__(self) -> Any:
        import httpx2
        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client

        self._http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
        self._client = Client(streamable_http_client(self.url, http_client=self._http))
        await self._http.__aenter__()
        return await self._client.__aenter__()

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(*exc)
        await self._http.__aexit__(*exc)


def _data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    return result.structured_content


async def _until_done(
    client: Any, first: Any, on_progress: Any = None, timeout: float = 120
) -> dict[str, Any]:
    """A call's result (or structured content), following its job handle with `job wait` when it
    outlived the call's wait."""
    data = first if isinstance(first, dict) else _data(first)
    with anyio.fail_after(timeout):
        while data["status"] in ("queued", "running"):
            data = _data(
                await client.call_tool(
                    "job", {"action": "wait", "job_id": data["job_id"]}, progress_callback=on_progress
                )
            )
    return data


def _outputs(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()} if out.is_dir() else set()


async def test_two_concurrent_jobs_run_on_two_replicas_and_a_third_waits_then_runs(pool_server):
    url = pool_server["url"]
    results: dict[str, dict[str, Any]] = {}
    steps: dict[str, list[int]] = {"a": [], "b": [], "c": []}

    async def run(name: str, delay: float) -> None:
        await anyio.sleep(delay)

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            # "generating 3/40" (or "generating, window 1/2 3/40"): the denoising step reached.
            last = (message or "").rsplit(" ", 1)[-1]
            if (message or "").startswith("generating") and "/" in last:
                steps[name].append(int(last.split("/")[0]))

        async with _Client(url) as client:
            first = await client.call_tool(
                "generate", {**LONG, "prompt": f"rain {name}"}, progress_callback=on_progress
            )
            results[name + "_first"] = _data(first)
            results[name] = await _until_done(client, first, on_progress)
            job_id = results[name + "_first"]["job_id"]
            results[name + "_times"] = _data(
                await client.call_tool("job", {"action": "status", "job_id": job_id})
            )

    async with anyio.create_task_group() as tg:
        tg.start_soon(run, "a", 0.0)
        tg.start_soon(run, "b", 0.3)
        tg.start_soon(run, "c", 0.8)
    a, b, c = results["a"], results["b"], results["c"]
    assert a["status"] == b["status"] == c["status"] == "done"
    for name in ("a", "b", "c"):  # the replica the job book saw start it is the one its result names
        assert results[name]["replica"] == results[name + "_times"]["replica"], results
    # Serve's router does not keep arrival order when it retries, so whichever job found both
    # replicas busy is the one that waited: order the three by when they started.
    first, second, third = sorted(("a", "b", "c"), key=lambda n: results[n + "_times"]["started_at"])
    t1, t2, t3 = (results[n + "_times"] for n in (first, second, third))
    assert results[first]["replica"] != results[second]["replica"], results  # two replicas at once
    assert t2["started_at"] < min(t1["finished_at"], t2["finished_at"])  # ... and they overlapped
    # The third waited for a free replica (its call came back "queued") and ran once one was free.
    assert results[third + "_first"]["status"] == "queued", results
    assert min(t1["finished_at"], t2["finished_at"]) <= t3["started_at"] + 0.5, results
    assert results[third]["replica"] in (results[first]["replica"], results[second]["replica"])
    for r in (a, b, c):
        (video,) = r["outputs"]
        assert Path(video["path"]).is_file() and video["kind"] == "video" and video["path"].endswith(".mp4")
    # Progress came from the replicas, in order, to the call and then to `job wait`.
    for name in ("a", "b", "c"):
        assert steps[name], name
        assert steps[name] == sorted(steps[name])


async def test_a_cancelled_job_writes_nothing_and_frees_its_replica(pool_server):
    url, out = pool_server["url"], pool_server["out"]
    before = _outputs(out)
    async with _Client(url) as client:
        handle = _data(await client.call_tool("generate", SLOW))
        assert handle["status"] == "running"
        stopped = _data(await client.call_tool("job", {"action": "cancel", "job_id": handle["job_id"]}))
        assert stopped["status"] == "cancelled", stopped
        assert stopped["progress"]["done"] < 200
    assert _outputs(out) == before
    # Both replicas take work again: the cancelled job let go of its slot.
    seen = set()
    async with _Client(url) as one, _Client(url) as two:
        short = {**LONG, "steps": 20}
        async with anyio.create_task_group() as tg:

            async def run(client: Any) -> None:
                seen.add((await _until_done(client, await client.call_tool("generate", short)))["replica"])

            tg.start_soon(run, one)
            tg.start_soon(run, two)
    assert len(seen) == 2


async def test_a_client_that_cancels_its_call_cancels_the_pool_job(pool_server):
    url, out = pool_server["url"], pool_server["out"]
    before = _outputs(out)
    started = anyio.Event()

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        started.set()

    async with _Client(url) as client, anyio.create_task_group() as tg:

        async def call() -> None:
            await client.call_tool("generate", SLOW, progress_callback=on_progress)

        tg.start_soon(call)
        with anyio.fail_after(60):
            await started.wait()
        tg.cancel_scope.cancel()
    with anyio.fail_after(30):
        # A dropped stream alone would let the job run on and write its video.
        async with _Client(url) as client:
            listing = await client.call_tool("generate", {**LONG, "steps": 2})
            await _until_done(client, listing)
    await anyio.sleep(2.0)
    made = _outputs(out) - before
    assert len([n for n in made if n.endswith(".mp4")]) == 1, made  # only the short job's


async def test_job_follows_a_job_another_client_started(pool_server):
    url = pool_server["url"]
    async with _Client(url) as starter:
        handle = _data(await starter.call_tool("generate", SLOW))
    assert handle["status"] in ("queued", "running")
    async with _Client(url) as other:
        status = _data(await other.call_tool("job", {"action": "status", "job_id": handle["job_id"]}))
        assert status["kind"] == "generate" and status["status"] in ("queued", "running")
        done = await _until_done(other, status)
        result = _data(await other.call_tool("job", {"action": "result", "job_id": handle["job_id"]}))
    assert done["status"] == "done" and result["replica"] == done["replica"]
    (video,) = result["outputs"]
    assert Path(video["path"]).is_file()


async def test_a_full_pool_answers_busy_at_once(pool_server):
    url = pool_server["url"]
    handles: list[dict[str, Any]] = []
    async with _Client(url) as client:

        async def start(i: int) -> None:
            handles.append(_data(await client.call_tool("generate", {**SLOW, "prompt": f"busy {i}"})))

        async with anyio.create_task_group() as tg:  # two running, one waiting: the pool is full
            for i in range(3):
                tg.start_soon(start, i)
        t0 = time.monotonic()
        refused = await client.call_tool("generate", {**SLOW, "prompt": "one too many"})
        answered_in = time.monotonic() - t0
        assert [h["status"] for h in handles].count("running") == 2, handles
        assert refused.is_error and "busy: 1 jobs ahead" in refused.content[0].text, refused.content
        assert answered_in < 2.0
        for h in handles:
            await client.call_tool("job", {"action": "cancel", "job_id": h["job_id"]})


def _replicas(pid: int) -> list[int]:
    """The replica processes under the server ``pid`` (Ray names them in their command line)."""
    found = []
    for child in _descendants(pid):
        with contextlib.suppress(OSError):
            if b"ServeReplica" in Path(f"/proc/{child}/cmdline").read_bytes():
                found.append(child)
    return found


async def test_a_replica_killed_mid_job_is_worker_lost_and_the_same_call_again_runs(pool_server):
    url = pool_server["url"]
    async with _Client(url) as client:
        handle = _data(await client.call_tool("generate", SLOW))
        assert handle["status"] == "running", handle
        replicas = _replicas(pool_server["proc"].pid)
        assert len(replicas) == 2, replicas
        pool_server["pids"].update(replicas)
        for pid in replicas:  # the one running the job among them
            os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(60):
            while True:
                ended = await client.call_tool("job", {"action": "wait", "job_id": handle["job_id"]})
                if ended.is_error or ended.structured_content["status"] not in ("queued", "running"):
                    break
        said = ended.content[0].text
        assert ended.is_error and "worker_lost: the worker running this job stopped; retry" in said, said
        assert "doctor" not in said
        # As the message says: the same call again runs (Serve replaces the lost replicas).
        with anyio.fail_after(180):
            while True:
                again = await client.call_tool("generate", {**LONG, "steps": 5})
                if not (again.is_error and again.content[0].text.startswith("worker_lost")):
                    break
                await anyio.sleep(1.0)
            done = await _until_done(client, again, timeout=180)
    assert done["status"] == "done" and Path(done["outputs"][0]["path"]).is_file()


def _listening(pids: set[int]) -> list[tuple[str, int]]:
    """``(address, port)`` of each TCP socket ``pids`` listen on (from /proc, IPv4 and IPv6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].rsplit(":", 1)
                found.append((address, int(port, 16)))
    return found


#: 127.0.0.1 as /proc/net/tcp writes it (little-endian hex), and its IPv6-mapped form.
LOOPBACK_HEX = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}


def test_the_server_and_its_local_cluster_listen_on_loopback_only(pool_server):
    pids = {pool_server["proc"].pid} | _descendants(pool_server["proc"].pid)
    sockets = _listening(pids)
    assert len(sockets) >= 5  # the MCP port, the GCS, the raylet, the object manager, a replica...
    assert {address for address, _ in sockets} <= LOOPBACK_HEX, sockets
    assert all(port not in range(10002, 20000) for _, port in sockets if port != 0)


def test_sigterm_stops_the_ingress_the_replicas_and_the_local_cluster(pool_server):
    proc = pool_server["proc"]
    pids = _descendants(proc.pid)
    pool_server["pids"].update(pids)
    assert len(pids) >= 4  # the GCS, the raylet, the two replicas and Serve's controller at least
    proc.send_signal(signal.SIGTERM)
    # Generous limits: on a loaded 2-core CI machine Ray's own shutdown takes tens of seconds.
    proc.wait(90)
    deadline = time.monotonic() + 45
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    stderr = pool_server["stderr"].read_text(errors="replace")
    left = _cmdlines(pids)
    assert left == {}, (left, stderr[-3000:])
    assert "local Ray cluster stopped" in stderr, stderr[-3000:]


def test_kill_9_of_the_ingress_takes_every_process_of_its_local_cluster_with_it(tiny_paths, tmp_path):
    server = _start_server(tiny_paths, tmp_path, "--replicas", "1", "--wait-s", "1")
    try:
        proc = server["proc"]
        assert proc.poll() is None, server["stderr"].read_text(errors="replace")[-3000:]
        # Up to the replica: Ray's agents, Serve's controller and the replica start after the port.
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _replicas(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        pids = _descendants(proc.pid)
        server["pids"].update(pids)
        assert len(pids) >= 4, pids  # the GCS, the raylet, its agents, the controller, the replica
        proc.send_signal(signal.SIGKILL)  # no stop of its own: only what watches it can clean up
        proc.wait(10)
        deadline = time.monotonic() + 20
        while _alive(pids) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = _cmdlines(pids)
        assert left == {}, left
    finally:
        _stop_server(server)

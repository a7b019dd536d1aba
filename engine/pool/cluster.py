"""The Ray cluster under the pool: a local one kept on loopback, or a running one joined.

A local cluster (no ``--ray-address``) is this process's: it listens on 127.0.0.1 only, its
ports lie outside Ray's worker range, its session files live under the server's own state
directory, token authentication is on with a token only this process and its children know, and
:meth:`Cluster.stop` ends its processes by process id (``ray stop`` kills by name, which would
take any other Ray on the machine with it): a watchdog (:mod:`engine.pool.watchdog`, detached)
holding a pipe from this process ends every process of the cluster once the pipe closes, so they
also end when this process ends any other way, ``kill -9`` included. Joining a cluster
first checks that something listens at the address: ``ray.init`` to an address where nothing does
hangs for minutes. Both must run on the main thread (Ray's driver connection breaks when made
from another).
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from ..errors import ServerConfigError
from . import NAMESPACE, RAY_VERSION, require_ray
from .settings import RAY_WORKER_PORTS, PoolSettings
from .watchdog import GRACE_S, MARKER_ENV

log = logging.getLogger(__name__)

#: The local cluster's object store: jobs pass paths and metadata, never file bytes.
OBJECT_STORE_BYTES = 256 << 20
LOOPBACK = "127.0.0.1"
#: Seconds a stop waits for the driver to disconnect from its ended local cluster.
DISCONNECT_S = 2.0


def default_temp_dir() -> Path:
    """``$XDG_CACHE_HOME/unison-mcp/ray`` (``~/.cache/...``): short, for Ray's socket paths."""
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "unison-mcp" / "ray"


def free_port() -> int:
    """A free loopback port outside Ray's worker range (the kernel's ephemeral ports usually are)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in RAY_WORKER_PORTS:
            return port
    raise ServerConfigError(
        "no free port outside Ray's worker range 10002-19999 on 127.0.0.1: set --ray-port"
    )


@dataclass
class Cluster:
    """The connected cluster: its address, whether this process started it, its GPUs."""

    address: str
    local: bool
    gpus: float
    temp_dir: Path | None = None
    #: Process ids of the local cluster's processes, read when it started.
    pids: list[int] = field(default_factory=list)
    #: The local cluster's watchdog (ends the cluster when this process ends, however it ends).
    watchdog: Watchdog | None = None
    #: The mark every process of the local cluster carries (:mod:`engine.pool.watchdog`).
    marker: str | None = None
    stopped: bool = False

    def stop(self) -> None:
        """End a local cluster's processes, then disconnect (a joined cluster: disconnect only).

        A local cluster's processes are ended first: by its watchdog, told through its pipe and
        waited for (it has remembered every process of the cluster since it started, which one
        look at ``/proc`` from here no longer finds: see :class:`engine.pool.watchdog.Watch`), or
        by the ids read at its start where there is no watchdog. Only then the driver
        disconnects: ``ray.shutdown`` called first let Ray's own threads (Serve's router) touch
        the closed driver, and Ray then ended the whole process on the spot (seen in CI), before
        anything was ended. Disconnecting from a cluster that is gone waits on Ray's timeouts
        (5-30 s here), so it gets :data:`DISCONNECT_S` on a thread of its own; the process is
        ending anyway.
        """
        if self.stopped:
            return
        self.stopped = True
        if not self.local:
            _disconnect()
            return
        t0 = time.perf_counter()
        if self.watchdog is not None:
            _release(self.watchdog)
        else:
            self._end_processes()
        log.info("local Ray cluster stopped (%.1f s)", time.perf_counter() - t0)
        thread = threading.Thread(target=_disconnect, name="unison-ray-disconnect", daemon=True)
        thread.start()
        thread.join(DISCONNECT_S)

    def _end_processes(self) -> None:
        """Without a watchdog: the ids read at the cluster's start, SIGTERM then SIGKILL."""
        left = [pid for pid in self.pids if _alive(pid)]
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, 15)
        deadline = time.monotonic() + GRACE_S
        while left and time.monotonic() < deadline:
            left = [pid for pid in left if _alive(pid)]
            time.sleep(0.05)
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)


@dataclass
class Watchdog:
    """A running watchdog: its process id (no child of this process) and the pipe it watches."""

    pid: int
    pipe: IO[bytes]


def _start_watchdog(marker: str) -> Watchdog | None:
    """The watchdog of the cluster ``marker`` (:mod:`engine.pool.watchdog`), detached from this
    process, or ``None`` where it cannot run (no ``/proc``): then a killed server leaves the
    cluster to Ray's own timeouts."""
    if not Path("/proc/self/environ").exists():
        log.warning("no /proc here: a killed server's local Ray cluster ends only by Ray's own timeouts")
        return None
    # Its own session: a Ctrl-C meant for the server must not stop the one that cleans up after it.
    launcher = subprocess.Popen(
        [sys.executable, "-I", str(Path(__file__).with_name("watchdog.py")), marker],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert launcher.stdin is not None and launcher.stdout is not None
    with launcher.stdout:
        said = launcher.stdout.readline()
    launcher.wait()  # it forks the watchdog, says its id and ends at once
    if not said.strip().isdigit():
        launcher.stdin.close()
        log.warning(
            "the local Ray cluster's watchdog did not start: a killed server leaves the cluster running"
        )
        return None
    return Watchdog(pid=int(said), pipe=launcher.stdin)


def _release(watchdog: Watchdog | None) -> None:
    """Close the watchdog's pipe (it ends every process of the cluster) and wait for it to end."""
    if watchdog is None:
        return
    with contextlib.suppress(OSError):
        watchdog.pipe.close()
    deadline = time.monotonic() + GRACE_S + 5.0  # its last look, the grace, a loaded machine
    while _running(watchdog.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _running(watchdog.pid):
        with contextlib.suppress(OSError):
            os.kill(watchdog.pid, 9)


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (not ended, not a zombie): for a process that is not our child."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _disconnect() -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.shutdown()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    # A zombie child answers kill(0); reap it so it stops counting as alive.
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def _node_pids() -> list[int]:
    """The local node's process ids, from the node object Ray keeps for the cluster it started."""
    import ray._private.worker as worker

    node = getattr(worker, "_global_node", None)
    pids: list[int] = []
    for infos in getattr(node, "all_processes", {}).values():
        for info in infos:
            process = getattr(info, "process", None)
            if process is not None and getattr(process, "pid", None):
                pids.append(int(process.pid))
    return pids


def connect(settings: PoolSettings, *, gpus: int | None = None) -> Cluster:
    """Start the local cluster, or join ``settings.ray_address``, within ``start_timeout_s``."""
    require_ray()  # sets Ray's environment first (engine.pool.RAY_ENV)
    import ray

    if ray.__version__ != RAY_VERSION:
        log.warning("Ray %s is installed; unison-mcp[serve] is tested with %s", ray.__version__, RAY_VERSION)
    if ray.is_initialized():  # an embedding program connected already (tests, notebooks)
        return Cluster(address=_address(), local=False, gpus=_gpus())
    if settings.ray_address:
        return _join(settings)
    return _start_local(settings, gpus)


def _address() -> str:
    import ray

    return str(ray.get_runtime_context().gcs_address)


def _gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0.0))


def _probe(address: str, timeout: float) -> None:
    """Fail at once when nothing listens at ``address`` (``ray.init`` would wait minutes)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ServerConfigError(f"--ray-address {address!r}: give HOST:PORT of the cluster's head (GCS) node")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=min(timeout, 10.0)):
            pass
    except OSError as exc:
        raise ServerConfigError(
            f"nothing answers at the Ray cluster address {address} ({exc.strerror or exc}): is the "
            "cluster up (`ray status` on its head node) and the address right?"
        ) from None


def _join(settings: PoolSettings) -> Cluster:
    import ray

    address = settings.ray_address
    assert address is not None

    _probe(address, settings.start_timeout_s)
    try:
        # On the main thread: Ray's driver connection breaks when made from another one.
        ray.init(
            address=address,
            namespace=NAMESPACE,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
    except Exception as exc:  # Ray's own words: wrong address, auth mode, version mismatch
        raise ServerConfigError(
            f"could not join the Ray cluster at {address}: {exc}. Every process needs the same "
            "RAY_AUTH_MODE (and token) as the cluster, and the same Ray and Python versions"
        ) from None
    cluster = Cluster(address=address, local=False, gpus=_gpus())
    log.info("joined the Ray cluster at %s (%g GPU(s))", address, cluster.gpus)
    return cluster


def _start_local(settings: PoolSettings, gpus: int | None) -> Cluster:
    import ray

    temp_dir = (settings.ray_temp_dir or default_temp_dir()).expanduser().resolve()
    temp_dir.mkdir(parents=True, exist_ok=True)
    port = settings.ray_port or free_port()
    # Read by the GCS it starts (ray.init has no port argument for a new cluster).
    os.environ["RAY_GCS_SERVER_PORT"] = str(port)
    # Token auth for every process of this cluster, the token known only to them (inherited).
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ["RAY_AUTH_MODE"] == "token":
        os.environ.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(32))
    # Ray caches its configuration (the auth mode among it) when it loads: read it again.
    from ray._raylet import Config

    Config.initialize("")
    if gpus is None:
        gpus = _count_cuda_gpus()

    t0 = time.perf_counter()
    # Every process the cluster starts inherits the marker its watchdog looks for; this one does
    # not keep it (it is set only while the cluster starts).
    marker = secrets.token_hex(16)
    watchdog = _start_watchdog(marker)
    os.environ[MARKER_ENV] = marker
    try:
        # On the main thread: Ray's driver connection breaks when made from another one.
        ray.init(
            namespace=NAMESPACE,
            num_gpus=gpus,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
            logging_level=logging.WARNING,
            _node_ip_address=LOOPBACK,
            _temp_dir=str(temp_dir),
        )
    except Exception as exc:
        _release(watchdog)
        raise ServerConfigError(f"could not start a local Ray cluster in {temp_dir}: {exc}") from None
    finally:
        os.environ.pop(MARKER_ENV, None)
    cluster = Cluster(
        address=_address(),
        local=True,
        gpus=float(gpus),
        temp_dir=temp_dir,
        pids=_node_pids(),
        watchdog=watchdog,
        marker=marker,
    )
    log.info(
        "local Ray cluster on %s (%d GPU(s), %d processes, %.1f s; files in %s)",
        cluster.address,
        gpus,
        len(cluster.pids),
        time.perf_counter() - t0,
        temp_dir,
    )
    return cluster


def _count_cuda_gpus() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # no usable CUDA: CPU replicas
        return 0


__all__ = ["LOOPBACK", "OBJECT_STORE_BYTES", "Cluster", "connect", "default_temp_dir", "free_port"]

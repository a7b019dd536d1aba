"""The local Ray cluster's watchdog: when the ingress that started the cluster ends, however it
ends (``kill -9`` included), every process of that cluster ends too.

Ray's own processes of a cluster started by ``ray.init`` outlive a killed driver for a while
(its dashboard and runtime-env agents, about 100 s, ~220 MB and three loopback ports). Each
process of the cluster carries a marker in its environment (:data:`MARKER_ENV`, set while the
cluster starts, inherited by the GCS, the raylet and everything they start); the ingress starts
this script with a pipe on its stdin and keeps the other end. The pipe reaches end-of-file when
the ingress closes it (a normal stop) or dies; then every process carrying the marker is sent
SIGTERM, and SIGKILL after :data:`GRACE_S`. Processes without the marker are never touched.

Run as a script (``python -I watchdog.py MARKER``: the standard library only, nothing of the
project imported) in a session of its own, so a Ctrl-C to the ingress's terminal reaches the
ingress, not the watchdog that has to clean up after it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

#: The environment variable that marks a process as the cluster's (its value: the cluster's id).
MARKER_ENV = "UNISONMCP_RAY_CLUSTER"
#: Seconds between SIGTERM and SIGKILL.
GRACE_S = 3.0


def marked(marker: str) -> list[int]:
    """The processes whose environment carries ``MARKER_ENV=marker`` (this one excluded)."""
    needle = f"{MARKER_ENV}={marker}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:  # gone, or not ours to read
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def end_marked(marker: str, grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM every process of the cluster ``marker``, SIGKILL what is left after ``grace_s``;
    returns the process ids it signalled."""
    pids = marked(marker)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    left = pids
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [pid for pid in left if _alive(pid)]
    for pid in [*left, *(p for p in marked(marker) if p not in pids)]:  # and any started meanwhile
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return pids


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1]:
        sys.stderr.write("usage: watchdog.py MARKER (stdin: a pipe the cluster's owner holds)\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end says when
    while sys.stdin.buffer.read(4096):
        pass
    end_marked(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

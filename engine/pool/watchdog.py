"""The local Ray cluster's watchdog: when the ingress that started the cluster ends, however it
ends (``kill -9`` included), every process of that cluster ends too.

Ray's own processes of a cluster started by ``ray.init`` outlive a killed driver for a while
(its dashboard and runtime-env agents, about 100 s, ~220 MB and three loopback ports). Each
process of the cluster carries a marker in its environment (:data:`MARKER_ENV`, set while the
cluster starts, inherited by the GCS, the raylet and everything they start); the ingress starts
this script with a pipe on its stdin and keeps the other end. The pipe reaches end-of-file when
the ingress closes it (a normal stop) or dies; then every process seen carrying the marker is
sent SIGTERM, and SIGKILL after :data:`GRACE_S`, with every process under one of them. It looks
every :data:`RESCAN_S` while the ingress lives and remembers what it saw (:class:`Watch`: not every
process of the cluster shows the mark). Processes neither marked nor under a marked one are never
touched.

Run as a script (``python -I watchdog.py MARKER``: the standard library only, nothing of the
project imported) in a session of its own, so a Ctrl-C to the ingress's terminal reaches the
ingress, not the watchdog that has to clean up after it. It detaches at once (a fork whose parent
writes the watchdog's process id on stdout and exits): the watchdog is then no child of the
ingress, because Ray's core worker kills its process's children when it exits on its own (seen in
CI: the ingress ended inside ``ray.shutdown`` and took a watchdog that was its child with it,
leaving the cluster's agents running).
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import sys
import time
from pathlib import Path

#: The environment variable that marks a process as the cluster's (its value: the cluster's id).
MARKER_ENV = "UNISONMCP_RAY_CLUSTER"
#: Seconds between SIGTERM and SIGKILL (Ray's agents do not end on SIGTERM in any useful time).
GRACE_S = 1.0
#: Seconds between two looks for the cluster's processes while the owner lives.
RESCAN_S = 1.0


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


def _stat(pid: int) -> list[str] | None:
    """``/proc/<pid>/stat``'s fields after the command name (state first), or ``None``."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def started(pid: int) -> str | None:
    """When ``pid`` started (clock ticks since boot): with the id, one process, never a reused id."""
    fields = _stat(pid)
    return fields[19] if fields is not None and len(fields) > 19 else None


def _alive(pid: int) -> bool:
    fields = _stat(pid)
    return fields is not None and fields[0] != "Z"


def _table() -> dict[int, list[str]]:
    """Every process's ``/proc/<pid>/stat`` fields after its command name."""
    table = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = fields
    return table


class Watch:
    """The processes of the cluster ``marker``: every process seen with the mark, and every
    descendant of one, remembered from the moment it is first seen.

    The mark alone does not find them all: Ray's dashboard and runtime-env agents, started by
    the raylet, do not show it in ``/proc/<pid>/environ`` (seen here, from their first second,
    in some starts and not others), so a process under a marked one counts too. Remembered,
    because a process whose parent ended is no one's descendant any more. Each is kept with its
    start time, so a process id the system reuses later is never taken for one of them.
    """

    def __init__(self, marker: str):
        self.marker = marker
        self.known: dict[int, str] = {}

    def look(self) -> None:
        """Remember the processes marked now and everything under them or under known ones."""
        table = _table()
        family = {pid for pid in marked(self.marker) if pid in table}
        family |= {pid for pid, start in self.known.items() if pid in table and table[pid][19] == start}
        children: dict[int, list[int]] = {}
        for pid, fields in table.items():
            children.setdefault(int(fields[1]), []).append(pid)
        stack = list(family)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child not in family:
                    family.add(child)
                    stack.append(child)
        family.discard(os.getpid())
        for pid in family:
            self.known.setdefault(pid, table[pid][19])

    def ours(self) -> list[int]:
        """Every process of the cluster still running (after one more look)."""
        self.look()
        return [pid for pid, start in self.known.items() if started(pid) == start and _alive(pid)]

    def end(self, grace_s: float = GRACE_S) -> list[int]:
        """SIGTERM every process of the cluster, SIGKILL what is left after ``grace_s`` (and any
        found meanwhile); returns the process ids it signalled."""
        pids = self.ours()
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        left = pids
        while left and time.monotonic() < deadline:
            time.sleep(0.05)
            left = [pid for pid in left if _alive(pid)]
        for pid in {*left, *self.ours()}:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return pids


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1]:
        sys.stderr.write("usage: watchdog.py MARKER (stdin: a pipe the cluster's owner holds)\n")
        return 2
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only the pipe's end says when
    watchdog = os.fork()
    if watchdog:  # the launcher: says who watches, then ends (the watchdog is nobody's child then)
        os.write(1, f"{watchdog}\n".encode())
        os._exit(0)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the owner stops reading after the id: nothing more goes to that pipe
    os.close(devnull)
    watch = Watch(argv[1])
    pipe = sys.stdin.fileno()
    while True:
        watch.look()
        ready, _, _ = select.select([pipe], [], [], RESCAN_S)
        if ready and not os.read(pipe, 4096):
            break  # the owner closed the pipe or ended
    watch.end()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

#!/usr/bin/env python
"""What the Ray Serve pool adds to a job (tiny preset, CPU): start-up, per-job overhead, memory.

The same request - a text_to_image at the tiny preset's default size, 2 steps - is timed, run by
run interleaved, through a direct :class:`engine.engine.Engine` in this process and through
:class:`engine.pool.client.Pool` on a local cluster (loopback) of two CPU replicas, one job at a
time (the job's admission here, the stream from a replica, the job book). One cluster per
process: Ray does not start again in a process where it stopped. Also: how long
the local cluster and the replicas take to start, the resident memory of the cluster's
processes idle and with the replicas, and two jobs at once on two replicas against one after
the other.

    python benchmarks/bench_pool.py [--runs 10] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, describe_machine, fmt, median, write_report  # noqa: E402

log = logging.getLogger("bench_pool")
REQUEST = {"task": "text_to_image", "prompt": "a red fox sitting in the snow", "steps": 2, "seed": 0}


def _rss_mb(pids: set[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _descendants(pid: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {c for c, p in parents.items() if p in frontier} - found
        found |= frontier
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="timed jobs per path")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    from engine.api import parse_arguments
    from engine.config import EngineConfig, default_tiny_dir
    from engine.control import JobControl
    from engine.engine import Engine
    from engine.pool.client import Pool
    from engine.pool.settings import PoolSettings

    work = Path(tempfile.mkdtemp(prefix="bench-pool-"))
    config = EngineConfig.tiny(default_tiny_dir(), output_dir=work / "outputs")
    request = parse_arguments("generate", config.limits, REQUEST)
    direct = Engine(config)
    direct.preload()

    def direct_job() -> None:
        direct.run(direct.admit(request), control=JobControl())

    rows: dict[str, list[float]] = {"direct Engine.run": []}
    starts: list[tuple[str, float]] = []
    memory: list[tuple[str, float]] = []
    together: dict[str, float] = {}
    ray_dir = Path(tempfile.mkdtemp(prefix="ur-", dir="/tmp"))
    replicas = 2
    t0 = time.perf_counter()
    pool = Pool.start(
        config,
        PoolSettings(backend="ray", replicas=replicas, ray_temp_dir=ray_dir),
        roots=None,
        capacity=4,
        keep_jobs=64,
        preload=True,
    )
    starts.append((f"local cluster + {replicas} replicas, models loaded", time.perf_counter() - t0))
    memory.append((f"cluster with {replicas} replicas (all processes)", _rss_mb(_descendants(os.getpid()))))

    def pool_job() -> None:
        job = pool.submit("generate", lambda c: pool.run(pool.admit(request), control=c))
        job.wait()
        job.outcome()

    name = f"pool of {replicas} replicas, one job at a time"
    rows[name] = []
    for fn in (direct_job, pool_job, pool_job):  # warm-up (each replica once)
        fn()
    for _ in range(args.runs):
        for label, fn in (("direct Engine.run", direct_job), (name, pool_job)):
            t = time.perf_counter()
            fn()
            rows[label].append(time.perf_counter() - t)
    t = time.perf_counter()
    pool_job()
    pool_job()
    together["one after the other"] = time.perf_counter() - t
    threads = [threading.Thread(target=pool_job) for _ in range(2)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    together["at once, on the two replicas"] = time.perf_counter() - t
    t = time.perf_counter()
    pool.close(timeout=10)
    starts.append(("stop (replicas and the local cluster)", time.perf_counter() - t))

    base = median(rows["direct Engine.run"])
    jobs = Table("path", "median ms", "min ms", "added ms (median)")
    for label, times in rows.items():
        added = "–" if label.startswith("direct") else fmt((median(times) - base) * 1000)
        jobs.add(label, median(times) * 1000, min(times) * 1000, added)
    start_table = Table("step", "seconds")
    for label, seconds in starts:
        start_table.add(label, seconds)
    mem_table = Table("what", "resident MB")
    for label, mb in memory:
        mem_table.add(label, mb)
    both = Table("two jobs", "seconds")
    for label, seconds in together.items():
        both.add(label, seconds)
    head = [
        "# bench_pool: what the Ray Serve pool adds (tiny preset, CPU)",
        "",
        *[f"- {line}" for line in describe_machine()],
        f"- request: text_to_image at the tiny preset's default size, 2 steps; {args.runs} timed runs per "
        "path after one warm-up, interleaved; medians",
        "- command: `python benchmarks/bench_pool.py --out benchmarks/results/pool_cpu.md`",
        "",
        "## One job",
        "",
        jobs.markdown(),
        "",
        "## Start and stop",
        "",
        start_table.markdown(),
        "",
        "## Memory (this process and the cluster it started; the direct engine's models included)",
        "",
        mem_table.markdown(),
        "",
        "## Two jobs on two replicas",
        "",
        both.markdown(),
    ]
    write_report("\n".join(head), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

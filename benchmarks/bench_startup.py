#!/usr/bin/env python
"""How long the command line takes to start: a tiny generation end to end, and the server's first answer.

Two timings, each the median of ``--runs`` fresh processes (after one untimed run that warms the
file cache), on the tiny preset (random tiny models, already built):

1. ``unison-mcp generate --task text_to_image --prompt "a red fox" --preset tiny``: from launching
   the process to its exit, split into the job itself (the sidecar's ``total_s``: loading the
   models, the planner's features, generating, writing) and everything outside it (the
   interpreter, the command line, the exit); the child's CPU time beside the wall time, since on a
   shared machine the CPU time moves less.
2. ``unison-mcp serve --preset tiny`` over stdio: from launching the process to the answer of
   ``tools/list`` (sent right after ``initialize``), and its CPU time until then.

Then where the import time of one ``generate`` goes (``python -X importtime``): by package, and the
heaviest imports the project itself makes, each with the module (or function) that makes it.

With ``--baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/before <commit>``) the
same commands run from that checkout too, interleaved run by run with this one, and the table
gives both.

    python benchmarks/bench_startup.py [--runs 5] [--baseline DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, Table, describe_machine, median, write_report  # noqa: E402

log = logging.getLogger("bench_startup")

PROMPT = "a red fox"
#: The goals of issue 20 (item 4) on the 2-core development machine.
GOAL_GENERATE_S = 6.0
GOAL_SERVE_S = 1.5
#: What the project's own modules are called in ``-X importtime``'s output.
PROJECT = ("engine", "unison_mcp")

_INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "bench", "version": "0"},
    },
}
_INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
_TOOLS_LIST = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}


@dataclass
class Samples:
    """One checkout's timings, run by run."""

    generate_wall: list[float] = field(default_factory=list)
    generate_cpu: list[float] = field(default_factory=list)
    generate_job: list[float] = field(default_factory=list)
    generate_load: list[float] = field(default_factory=list)
    serve_wall: list[float] = field(default_factory=list)
    serve_cpu: list[float] = field(default_factory=list)
    help_wall: list[float] = field(default_factory=list)

    @property
    def generate_outside(self) -> list[float]:
        """Each ``generate``'s time outside its job: the interpreter, the command line, the exit."""
        return [wall - job for wall, job in zip(self.generate_wall, self.generate_job, strict=True)]


def _env(tree: Path, tiny_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(PYTHONPATH=str(tree), UNISON_TINY_DIR=str(tiny_dir), PYTHONUNBUFFERED="1")
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "unison_mcp", *args]


def _run_to_exit(cmd: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, str]:
    """Launch ``cmd``, wait for its exit: wall seconds, its CPU seconds (user + system), stdout."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise RuntimeError(
                f"{cmd[3:5]} failed ({proc.returncode}): {err.read().decode(errors='replace')[-2000:]}"
            )
        return wall, usage.ru_utime + usage.ru_stime, out.read().decode()


def time_generate(tree: Path, tiny_dir: Path, out_dir: Path, into: Samples | None) -> None:
    """One ``generate`` process, launch to exit; its sidecar gives the job's own time."""
    cmd = _cli("generate", "--task", "text_to_image", "--prompt", PROMPT, "--preset", "tiny")
    wall, cpu, stdout = _run_to_exit([*cmd, "--output-dir", str(out_dir)], _env(tree, tiny_dir), tree)
    written = Path(stdout.strip().splitlines()[-1])
    timings = json.loads(Path(f"{written}.json").read_text())["timings"]
    if into is not None:
        into.generate_wall.append(wall)
        into.generate_cpu.append(cpu)
        into.generate_job.append(float(timings["total_s"]))
        into.generate_load.append(float(timings.get("load_s", 0.0)))


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) a running process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def time_serve(tree: Path, tiny_dir: Path, out_dir: Path, into: Samples | None) -> None:
    """One ``serve`` process over stdio, launch to its ``tools/list`` answer."""
    cmd = _cli("serve", "--preset", "tiny", "--output-dir", str(out_dir))
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        env=_env(tree, tiny_dir),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=tree,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        # All three at once, as a client that does not wait would: the answer to tools/list is
        # the moment the server is of use.
        lines = "".join(json.dumps(m) + "\n" for m in (_INITIALIZE, _INITIALIZED, _TOOLS_LIST))
        proc.stdin.write(lines.encode())
        proc.stdin.flush()
        while True:
            line = proc.stdout.readline()
            if not line:
                raise RuntimeError("the server closed its stdout before answering tools/list")
            message = json.loads(line)
            if message.get("id") == 2:
                break
        wall = time.perf_counter() - t0
        cpu = _proc_cpu(proc.pid)
        if "result" not in message or not message["result"].get("tools"):
            raise RuntimeError(f"tools/list answered without tools: {message}")
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    if into is not None:
        into.serve_wall.append(wall)
        into.serve_cpu.append(cpu)


def time_help(tree: Path, tiny_dir: Path, into: Samples) -> None:
    into.help_wall.append(_run_to_exit(_cli("--help"), _env(tree, tiny_dir), tree)[0])


# ---------------------------------------------------------------------------------------------
# Where the import time goes


@dataclass(frozen=True)
class ImportEntry:
    name: str
    self_us: int
    cumulative_us: int
    importer: str  # the module whose import ran it, or "(a function)" for one made inside a call


def parse_importtime(text: str) -> list[ImportEntry]:
    """``-X importtime``'s lines as entries, each with the module that imported it.

    Python prints a module after everything it imported, one indentation step deeper per level,
    so an entry's importer is the next entry printed one level up; an entry at the outermost
    level was imported by the running code (inside a function, or the main script).
    """
    rows: list[tuple[int, str, int, int]] = []
    for line in text.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        parts = line.removeprefix("import time:").split("|")
        self_us, cumulative, name = parts[0].strip(), parts[1].strip(), parts[2]
        depth = (len(name) - len(name.lstrip(" "))) // 2
        rows.append((depth, name.strip(), int(self_us), int(cumulative)))
    entries = []
    for i, (depth, name, self_us, cumulative) in enumerate(rows):
        importer = "(a function)"
        for up_depth, up_name, _, _ in rows[i + 1 :]:
            if up_depth < depth:
                importer = up_name
                break
        entries.append(ImportEntry(name, self_us, cumulative, importer))
    return entries


def _is_project(name: str) -> bool:
    return name.split(".")[0] in PROJECT


def import_tables(entries: list[ImportEntry], top: int) -> tuple[Table, Table, float]:
    """By package (self time summed), and the heaviest imports of other packages that the project's
    modules, or calls at run time, make."""
    total = sum(e.self_us for e in entries) / 1e6
    by_package: Counter[str] = Counter()
    modules: Counter[str] = Counter()
    for e in entries:
        by_package[e.name.split(".")[0]] += e.self_us
        modules[e.name.split(".")[0]] += 1
    packages = Table("package", "self s", "share", "modules")
    for name, us in by_package.most_common(top):
        packages.add(name, us / 1e6, f"{us / 1e6 / total * 100:.0f} %", modules[name])
    entry_points = [
        e
        for e in entries
        if not _is_project(e.name) and (_is_project(e.importer) or e.importer == "(a function)")
    ]
    entry_points.sort(key=lambda e: e.cumulative_us, reverse=True)
    heaviest = Table("import", "made by", "cumulative s")
    for e in entry_points[:top]:
        heaviest.add(e.name, e.importer, e.cumulative_us / 1e6)
    return packages, heaviest, total


def measure_imports(tree: Path, tiny_dir: Path, out_dir: Path) -> str:
    cmd = [sys.executable, "-X", "importtime", "-m", "unison_mcp", "generate", "--task", "text_to_image"]
    cmd += ["--prompt", PROMPT, "--preset", "tiny", "--output-dir", str(out_dir)]
    done = subprocess.run(
        cmd, env=_env(tree, tiny_dir), capture_output=True, text=True, cwd=tree, timeout=600
    )
    if done.returncode:
        raise RuntimeError(f"generate -X importtime failed: {done.stderr[-2000:]}")
    return done.stderr


# ---------------------------------------------------------------------------------------------


def _cell(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{median(values):.2f} (min {min(values):.2f})"


def report(trees: dict[str, Samples], runs: int, imports: str | None, top: int) -> str:
    timing = Table("what", *(f"{label}: median s (min)" for label in trees), "goal")
    rows = [
        ("`generate` text_to_image, launch to exit (wall)", "generate_wall", f"≤ {GOAL_GENERATE_S:.1f} s"),
        ("  the same, the process's CPU time", "generate_cpu", ""),
        ("  of which the job (sidecar `total_s`)", "generate_job", ""),
        ("  of which loading the models (sidecar `load_s`, imports included)", "generate_load", ""),
        ("  outside the job (interpreter, command line, exit)", "generate_outside", ""),
        ("`serve`, launch to the `tools/list` answer (wall)", "serve_wall", f"≤ {GOAL_SERVE_S:.1f} s"),
        ("  the same, the server's CPU time until then", "serve_cpu", ""),
        ("`unison-mcp --help` (wall)", "help_wall", ""),
    ]
    for label, key, goal in rows:
        timing.add(label, *(_cell(getattr(s, key)) for s in trees.values()), goal)
    lines = [
        "# bench_startup: the command line's start-up (tiny preset, CPU)",
        "",
        *[f"- {line}" for line in describe_machine()],
        f"- {runs} timed runs of each command per checkout, interleaved, after one untimed run each",
        f"- command: `python {' '.join(sys.argv)}`",
        "",
        "## Timings",
        "",
        timing.markdown(),
        "",
        "On a machine shared with other work the wall times move by seconds between runs; the CPU "
        "time moves less.",
    ]
    if imports is not None:
        packages, heaviest, total = import_tables(parse_importtime(imports), top)
        lines += [
            "",
            f"## Where the import time goes (one `generate`, `-X importtime`: {total:.2f} s of imports)",
            "",
            "By package (each module's own time, summed):",
            "",
            packages.markdown(),
            "",
            "The heaviest imports of other packages made by the project's modules or at run time "
            "(`(a function)`: an import inside a function, run when first needed), with everything "
            "they import in turn:",
            "",
            heaviest.markdown(),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs of each command per checkout")
    parser.add_argument("--baseline", type=Path, help="another checkout to time beside this one")
    parser.add_argument("--tiny-dir", type=Path, help="where the tiny models are (default: the usual cache)")
    parser.add_argument("--top", type=int, default=12, help="rows of the import tables")
    parser.add_argument("--no-imports", action="store_true", help="leave out the -X importtime run")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)

    from engine.config import default_tiny_dir
    from engine.tiny import ensure_tiny

    tiny_dir = ensure_tiny(args.tiny_dir or default_tiny_dir()).root  # built once, not timed
    trees = {"this checkout": REPO}
    if args.baseline is not None:
        trees = {"baseline": args.baseline.resolve(), **trees}
    samples = {label: Samples() for label in trees}
    with tempfile.TemporaryDirectory(prefix="unison-startup-") as tmp:
        out_dir = Path(tmp)
        for tree in trees.values():  # warm the file cache; not timed
            time_generate(tree, tiny_dir, out_dir, None)
            time_serve(tree, tiny_dir, out_dir, None)
        for i in range(args.runs):
            for label, tree in trees.items():
                log.info("run %d/%d: %s", i + 1, args.runs, label)
                time_generate(tree, tiny_dir, out_dir, samples[label])
                time_serve(tree, tiny_dir, out_dir, samples[label])
                time_help(tree, tiny_dir, samples[label])
        imports = None if args.no_imports else measure_imports(REPO, tiny_dir, out_dir)
    write_report(report(samples, args.runs, imports, args.top), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""bench_job run as its users run it (one case, one run; the report's shape, never its times):
the benchmark went stale once after a refactor with no test noticing."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _bench(tiny_paths, tmp_path: Path, *flags: str, **env: str) -> str:
    """bench_job's report for the image_edit case, one run, as a user runs it."""
    out = tmp_path / "job.md"
    env = {**os.environ, "UNISON_TINY_DIR": str(tiny_paths.root), "HF_ENDPOINT": "http://127.0.0.1:9", **env}
    command = [sys.executable, "benchmarks/bench_job.py", "--runs", "1", "--threads", "1", *flags]
    done = subprocess.run(
        [*command, "--cases", "image_edit", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out.read_text()


def test_bench_job_measures_both_ways_and_writes_its_tables(tiny_paths, tmp_path: Path):
    report = _bench(tiny_paths, tmp_path)
    lines = [line for line in report.splitlines() if line.startswith("|")]
    summary = _cells(lines[0])
    (case,) = [_cells(line) for line in lines if line.startswith("| image_edit")]
    assert len(case) == len(summary)  # every cell under its column
    ours, mcp, stock = (float(re.fullmatch(r"([\d.]+) s", cell).group(1)) for cell in case[1:4])
    assert ours > 0 and mcp > 0 and stock > 0
    stages = {_cells(line)[0]: _cells(line) for line in lines}
    for stage in ("prepare", "write", "total (the job's own clock)"):
        assert float(stages[stage][1]) >= 0, stage
    assert float(stages["write"][1]) > 0 and float(stages["write"][4]) > 0  # both ways wrote a file


def test_bench_job_without_the_mcp_column_imports_no_mcp(tiny_paths, tmp_path: Path):
    """``--no-mcp`` (the lent GPU machine has no MCP SDK): the MCP column is "–" and the SDK is
    never imported (stub packages named ``mcp`` and ``mcp_types`` that raise on import sit first
    on the path)."""
    blocker = tmp_path / "block"
    for sdk in ("mcp", "mcp_types"):  # the SDK's two packages
        (blocker / sdk).mkdir(parents=True)
        (blocker / sdk / "__init__.py").write_text(f"raise ImportError('{sdk} was imported')\n")
    path = os.pathsep.join([str(blocker), str(ROOT)])
    report = _bench(tiny_paths, tmp_path, "--no-mcp", "--device", "cpu", PYTHONPATH=path)
    lines = [line for line in report.splitlines() if line.startswith("| image_edit")]
    (case,) = [_cells(line) for line in lines]
    assert case[2] == "–" and case[1].endswith(" s") and case[3].endswith(" s")

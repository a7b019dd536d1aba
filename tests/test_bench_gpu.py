"""The GPU benchmark's machinery, checked without a GPU: what it needs on the lent machine, the
wheels' size check, its one budget, its cost model and the report that survives a stop (issue 20,
item 6). The benchmark itself runs end to end with ``--toy`` (benchmarks/results/toy_cpu.md)."""

from __future__ import annotations

import ast
import math
import sys
import time
from pathlib import Path

from benchmarks import bench_gpu, gpu_wheels
from benchmarks.gpu_models import TOY
from tests.test_imports import import_graph, outside_imports

ROOT = Path(__file__).resolve().parents[1]
BENCH_FILES = ("bench_gpu.py", "gpu_models.py", "metrics.py", "_common.py")

#: Imported somewhere in the engine modules the benchmark reaches, but on a path no row runs.
NOT_RUN = {
    "kornia": "the edges annotator (engine.annotators.edges): no benchmark row extracts edges",
    "tomli": "tomllib's backport, imported on Python < 3.11 only (the GPU machine has 3.12)",
}


def _imports_of(path: Path) -> set[str]:
    """Every dotted name ``path`` imports, in any block."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def test_what_the_gpu_benchmark_imports_is_on_the_gpu_machine_or_among_the_wheels_and_never_mcp():
    graph, outside = import_graph(), outside_imports()
    named = set().union(*(_imports_of(ROOT / "benchmarks" / f) for f in BENCH_FILES))
    todo = [n for n in graph if any(n == i or i.startswith(n + ".") for i in named if i.startswith("engine"))]
    reached: set[str] = set()
    while todo:  # every engine module reachable from the benchmark, through imports in any block
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += [i.target for i in graph[module]]
    assert {"engine.engine", "engine.generator", "engine.perf", "engine.hooks", "engine.quantize"} <= reached
    packages = {i.target for m in reached for i in outside[m]}
    packages |= {n.split(".")[0] for n in named if not n.startswith("engine")}
    packages -= set(sys.stdlib_module_names) | {"_common", "gpu_models", "metrics", "benchmarks"}
    assert not packages & {"mcp", "mcp_types", "starlette", "uvicorn", "ray"}, sorted(packages)
    travels = gpu_wheels.ON_THE_MACHINE | {w.import_name for w in gpu_wheels.WHEELS} | set(NOT_RUN)
    assert packages - travels == set(), "add these to benchmarks/gpu_wheels.py's WHEELS"
    unused = {w.import_name for w in gpu_wheels.WHEELS} - packages
    # The wheels nothing in the project imports by name are dependencies of those it does.
    assert unused <= {
        "pydantic_core",
        "annotated_types",
        "typing_inspection",
        "typing_extensions",
        "ftfy",
        "wcwidth",
    }


def _fake_wheels(dest: Path, sizes: dict[str, int] | None = None) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for wheel in gpu_wheels.WHEELS:
        path = dest / f"{wheel.name.replace('-', '_')}-{wheel.version}-py3-none-any.whl"
        with path.open("wb") as f:
            f.truncate((sizes or {}).get(wheel.name, 1000))


def test_the_wheels_and_the_tree_must_fit_in_what_one_call_carries(tmp_path: Path):
    _fake_wheels(tmp_path)
    table, mib, problems = gpu_wheels.check(tmp_path, tree=2 * 2**20)
    assert problems == [] and math.isclose(mib, 2 + len(gpu_wheels.WHEELS) * 1000 / 2**20)
    assert "the working tree" in table.markdown()
    _fake_wheels(tmp_path, {"av": 63 * 2**20})
    _, mib, problems = gpu_wheels.check(tmp_path, tree=2 * 2**20)
    assert mib > 64 and problems == [f"{mib:.1f} MiB would travel, over the 64 MiB a call may carry"]


def test_a_missing_wheel_and_a_second_version_are_refused(tmp_path: Path):
    _fake_wheels(tmp_path)
    (tmp_path / "ftfy-6.3.1-py3-none-any.whl").unlink()
    (tmp_path / "mcp-2.3.0-py3-none-any.whl").write_bytes(b"x")
    _, _, problems = gpu_wheels.check(tmp_path, tree=0)
    assert problems == [
        "missing: ftfy==6.3.1",
        "not in the list (remove it: two versions stop the install): mcp-2.3.0-py3-none-any.whl",
    ]


def test_the_working_tree_counted_is_what_git_does_not_ignore(tmp_path: Path):
    import subprocess

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("/.whl/\n")
    (tmp_path / "a.py").write_bytes(b"x" * 100)
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "big.whl").write_bytes(b"x" * 10_000)
    assert gpu_wheels.tree_bytes(tmp_path) == 100 + len("/.whl/\n")


def test_one_budget_counts_from_the_start_and_records_what_did_not_fit():
    budget = bench_gpu.Budget(10.0, start=time.perf_counter() - 9.0)
    assert budget.allows("a cheap part", 0.5)
    assert not budget.allows("stock diffusers 81", 30.0)
    assert budget.skipped == [("stock diffusers 81", 30.0)]
    # The benchmark's budget starts with the process (its module's import), not with set-up.
    assert bench_gpu.Budget(1.0).start == bench_gpu.START


def test_the_cost_model_expects_what_it_measured_and_scales_by_the_dit_flops():
    cost = bench_gpu.CostModel(TOY)
    w, h = TOY.video
    run = bench_gpu.GenRun("17 frames", "baseline", 3, num_frames=17, width=w, height=h)
    run.step_s, run.pre_s, run.post_s = 0.2, 0.5, 0.3
    cost.observe(run)
    assert math.isclose(cost.generation((w, h), 17, 3, warm=False), 0.8 + 3 * 0.2)
    assert math.isclose(cost.generation((w, h), 17, 3), 0.8 + 3 * 0.2 + 0.8 + 0.2)  # with its warm-up
    ratio = cost.step_flops(w, h, 81) / cost.step_flops(w, h, 17)
    big = cost.generation((w, h), 81, 1, warm=False) - 0.8 * 81 / 17
    assert ratio > 2 and math.isclose(big, 0.2 * ratio)  # by the FLOPs, fixed seconds by the frames
    turbo = cost.generation((w, h), 17, 1, forwards=1, warm=False) - 0.8
    assert math.isclose(turbo, 0.1)  # one forward per step instead of two


def test_a_time_from_fewer_steps_says_it_is_extrapolated():
    run = bench_gpu.GenRun("81 frames", "baseline", 4, num_frames=81)
    run.step_s, run.pre_s, run.post_s = 2.0, 5.0, 3.0
    assert bench_gpu.at_steps(run, 50) == "≈108 (from 4 steps)"
    run.steps = 50
    assert bench_gpu.at_steps(run, 50) == "108"


def test_the_report_is_replaced_whole_so_a_stopped_run_leaves_the_last_one(tmp_path: Path):
    out = tmp_path / "results" / "gpu.md"
    bench_gpu.write_atomically(out, "| row 1 |\n")
    bench_gpu.write_atomically(out, "| row 1 |\n| row 2 |\n")
    assert out.read_text() == "| row 1 |\n| row 2 |\n"
    assert [p.name for p in out.parent.iterdir()] == ["gpu.md"]

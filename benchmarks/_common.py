"""Helpers shared by the benchmark scripts: timing statistics, the machine, markdown tables.

The scripts print their tables to stdout (they are not MCP servers) and log progress to stderr.
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt(value: float | int | str | None, digits: int = 3) -> str:
    """A table cell: ``–`` for missing, a few significant digits for floats."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if value != value:  # NaN
        return "–"
    if value == float("inf"):
        return "∞"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}g}"


def ratio(value: float | None, base: float | None) -> str:
    if value is None or base is None or base == 0 or value != value or base != base:
        return "–"
    return f"{value / base:.2f}×"


class Table:
    """A markdown table built row by row."""

    def __init__(self, *headers: str):
        self.headers = list(headers)
        self.rows: list[list[str]] = []

    def add(self, *cells: object) -> None:
        if len(cells) > len(self.headers):  # a cell without its column shifts the whole row
            raise ValueError(f"{len(cells)} cells for {len(self.headers)} columns: {cells!r}")
        row = [c if isinstance(c, str) else fmt(c) for c in cells]  # type: ignore[arg-type]
        row += [""] * (len(self.headers) - len(row))
        self.rows.append(row)

    def markdown(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "|".join(" --- " for _ in self.headers) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        return "\n".join(lines)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> list[str]:
    """Lines describing where the numbers come from (CPU, cores, GPU, library versions)."""
    import torch

    lines = [
        f"CPU: {cpu_model()}, {os.cpu_count()} logical cores visible, torch threads {torch.get_num_threads()}",
        f"Python {platform.python_version()}, torch {torch.__version__}",
    ]
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        lines.append(
            f"GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, CUDA {torch.version.cuda}, "
            f"driver-visible devices {torch.cuda.device_count()}"
        )
    else:
        lines.append("GPU: none (CPU run)")
    versions = []
    for name in ("transformers", "diffusers", "peft", "mcp", "accelerate", "flash_attn", "sageattention"):
        try:
            from importlib.metadata import version

            versions.append(f"{name} {version(name)}")
        except Exception:  # not installed: say so rather than fail
            versions.append(f"{name} –")
    lines.append(", ".join(versions))
    try:
        commit = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True, timeout=5
        ).stdout.strip()
        lines.append(f"unison-mcp commit {commit or '?'}{' (with local changes)' if dirty else ''}")
    except (OSError, subprocess.SubprocessError):
        pass
    return lines


def write_report(text: str, out: Path | None) -> None:
    """Print the report (stdout) and, with ``out``, write it to that file too."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", encoding="utf-8")

"""``unison-mcp doctor``: what this machine has, and what the configuration still needs.

Runs offline: devices and dtype from torch, package versions from their metadata, and each
configured weight looked up locally (a directory/file, or the hub cache through
``huggingface_hub``'s own offline lookups), with the command that fetches what is missing.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import ServerConfig
from .download import WeightSource, weight_sources

Status = Literal["ok", "info", "warn", "fail"]

#: Distributions the server needs at run time (their import names differ for some).
REQUIRED = (
    "torch",
    "torchvision",
    "transformers",
    "diffusers",
    "peft",
    "accelerate",
    "mcp",
    "av",
    "huggingface_hub",
)
OPTIONAL = (
    ("flash-attn", "flash_attn", "faster attention for the planner: pip install 'unison-mcp[flash]'"),
)


@dataclass
class Check:
    section: str
    name: str
    status: Status
    detail: str
    hint: str | None = None


@dataclass
class DoctorReport:
    checks: list[Check] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No check failed (warnings allowed)."""
        return not any(c.status == "fail" for c in self.checks)

    def add(self, section: str, name: str, status: Status, detail: str, hint: str | None = None) -> None:
        self.checks.append(Check(section, name, status, detail, hint))

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(c) for c in self.checks]}


def run_doctor(config: ServerConfig) -> DoctorReport:
    """Check devices, packages, weights and folders for ``config``; never touches the network."""
    report = DoctorReport()
    _check_packages(report)
    _check_device(report, config)
    _check_weights(report, config)
    _check_folders(report, config)
    return report


def format_report(report: DoctorReport) -> str:
    marks = {"ok": "ok  ", "info": "    ", "warn": "WARN", "fail": "FAIL"}
    lines: list[str] = []
    section = None
    for c in report.checks:
        if c.section != section:
            if lines:
                lines.append("")
            section = c.section
            lines.append(f"[{section}]")
        lines.append(f"  {marks[c.status]} {c.name}: {c.detail}")
        if c.hint:
            lines.append(f"       -> {c.hint}")
    failed = sum(c.status == "fail" for c in report.checks)
    lines.append("")
    lines.append("all good" if report.ok else f"{failed} problem(s) found")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _check_packages(report: DoctorReport) -> None:
    report.add("packages", "python", "ok", f"{platform.python_version()} ({sys.executable})")
    for dist in REQUIRED:
        v = _version(dist)
        if v is None:
            report.add("packages", dist, "fail", "not installed", f"pip install {dist}")
        else:
            report.add("packages", dist, "ok", v)
    for dist, module, why in OPTIONAL:
        v = _version(dist)
        present = v is not None and importlib.util.find_spec(module) is not None
        report.add(
            "packages",
            dist,
            "ok" if present else "info",
            f"{v} (used for the planner's attention)" if present else "not installed: SDPA attention is used",
            None if present else why,
        )
    try:
        import av

        av.codec.Codec("libx264", "w")
        report.add("packages", "H.264 encoder", "ok", "libx264 available in PyAV (video outputs)")
    except Exception as exc:  # any failure here means no mp4 output; say why
        report.add(
            "packages",
            "H.264 encoder",
            "fail",
            f"libx264 not usable through PyAV ({exc})",
            "install the PyAV wheel from PyPI (it bundles FFmpeg with libx264)",
        )


def _check_device(report: DoctorReport, config: ServerConfig) -> None:
    cfg = config.engine
    try:
        import torch
    except ImportError:
        report.add("device", "torch", "fail", "torch cannot be imported", "pip install torch")
        return
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    report.add("device", "torch", "ok", f"{torch.__version__} (CUDA build {torch.version.cuda or 'none'})")
    if cuda:
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            report.add(
                "device",
                f"cuda:{i}",
                "ok",
                f"{p.name}, {p.total_memory / 1024**3:.1f} GiB, compute capability {p.major}.{p.minor}",
            )
    else:
        report.add("device", "GPU", "info", "no CUDA GPU visible" + (" (MPS available)" if mps else ""))

    requested = cfg.device
    from engine.accelerator import resolve_device
    from engine.errors import UnisonError

    try:
        # The engine's own rule (auto = cuda, else mps, else cpu), so the report says what a load does.
        device = str(resolve_device(requested))
    except UnisonError as exc:
        report.add(
            "device", "device", "fail", str(exc), "use --device auto or cpu, or install a CUDA build of torch"
        )
        device = "cpu"
    if device == "cpu" and cfg.preset != "tiny":
        report.add(
            "device",
            "device",
            "warn",
            f"cpu ({'auto' if requested == 'auto' else 'configured'}): the real models are very slow on a CPU",
            "use a CUDA GPU, or try everything with --preset tiny",
        )
    else:
        report.add("device", "device", "ok", f"{device}" + (" (auto)" if requested == "auto" else ""))

    dtype = cfg.dtype
    if dtype == "auto":
        if device.startswith("cuda") and cuda:
            dtype = "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
        else:
            dtype = "float32"
        report.add("device", "dtype", "ok", f"{dtype} (auto)")
    elif dtype == "bfloat16" and device.startswith("cuda") and cuda and not torch.cuda.is_bf16_supported():
        report.add(
            "device", "dtype", "warn", "bfloat16 configured but this GPU lacks it", "use --dtype float16"
        )
    else:
        report.add("device", "dtype", "ok", dtype)


def _check_weights(report: DoctorReport, config: ServerConfig) -> None:
    cfg = config.engine
    report.add(
        "weights", "planner backend", "info", cfg.backend + (f" (preset {cfg.preset})" if cfg.preset else "")
    )
    if cfg.planner_model is None:
        report.add("weights", "planner", "info", "none configured: rules planner, no understanding")
    for source in weight_sources(cfg):
        status, detail = _locate(source, cfg.cache_dir)
        hint = None
        if status == "fail":
            if source.kind == "missing":
                hint = f"fix the path given to {_flag(source)} (or its UNISON_* variable / TOML key), or give a hub id"
            else:
                hint = (
                    f"run `unison-mcp download` (only this one: `unison-mcp download --only {source.role}`)"
                )
                if cfg.local_files_only:
                    hint += "; local_files_only is set, so nothing will be fetched at run time"
        report.add("weights", source.role, status, detail, hint)


def _flag(source: WeightSource) -> str:
    return {
        "planner": "--planner-model",
        "adapter": "--adapter",
        "projector": "--projector",
        "generator": "--generator-model",
        "transformer": "--generator-single-file",
    }[source.role]


def _locate(source: WeightSource, cache_dir: Path | None) -> tuple[Status, str]:
    """Where ``source`` is on this machine, looked up without the network."""
    if source.kind == "local":
        path = Path(source.spec).expanduser()
        return "ok", f"local {'directory' if path.is_dir() else 'file'} {path} ({_size(path)})"
    if source.kind == "missing":
        return "fail", f"{source.spec!r}: no such local path, and not a hub id"

    from huggingface_hub import snapshot_download, try_to_load_from_cache
    from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

    repo_id = source.repo_id or ""
    if source.kind == "file":
        found = try_to_load_from_cache(repo_id, source.filename or "", cache_dir=cache_dir)
        if isinstance(found, str):
            return "ok", f"{repo_id}: {source.filename} in the hub cache ({_size(Path(found))})"
        return "fail", f"{repo_id}: {source.filename} is not in the hub cache"
    try:
        folder = Path(
            snapshot_download(
                repo_id, cache_dir=cache_dir, allow_patterns=source.allow_patterns, local_files_only=True
            )
        )
    except IncompleteSnapshotError as exc:
        return "fail", f"{repo_id}: partly downloaded ({' '.join(str(exc).split())[:200]})"
    except LocalEntryNotFoundError:
        return "fail", f"{repo_id} is not in the hub cache"
    if source.filename and not (folder / source.filename).exists():
        return "fail", f"{repo_id}: in the hub cache but without {source.filename} (partial download?)"
    return "ok", f"{repo_id} in the hub cache at {folder} ({_size(folder)})"


def _size(path: Path) -> str:
    """Disk size of a file or directory (hub-cache symlinks followed to their blobs)."""
    try:
        if path.is_file():
            total = path.stat().st_size
        else:
            total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return "size unknown"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if total < 1024 or unit == "GiB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GiB"


def _check_folders(report: DoctorReport, config: ServerConfig) -> None:
    out = config.output_dir
    if out.is_dir():
        writable = os.access(out, os.W_OK | os.X_OK)
        report.add(
            "folders",
            "output_dir",
            "ok" if writable else "fail",
            f"{out}" + ("" if writable else " is not writable"),
            None if writable else "choose another --output-dir",
        )
    else:
        parent = next((p for p in out.parents if p.exists()), None)
        creatable = parent is not None and os.access(parent, os.W_OK | os.X_OK)
        report.add(
            "folders",
            "output_dir",
            "ok" if creatable else "fail",
            f"{out} (will be created)" if creatable else f"{out} cannot be created",
            None if creatable else "choose another --output-dir",
        )
    for root in config.engine.allowed_roots or ():
        path = Path(root).expanduser()
        if path.is_dir():
            report.add("folders", "allowed root", "ok", str(path.resolve()))
        else:
            report.add("folders", "allowed root", "warn", f"{path} is not a directory", "fix --allow-root")

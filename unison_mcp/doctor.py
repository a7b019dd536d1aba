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

from engine.accelerator import resolve_device
from engine.errors import UnisonError
from engine.hub import raft_cache_file
from engine.media import video_encoder
from engine.planners.constrain import version as llguidance_version
from engine.quantize import TORCHAO_HINT, fp8_unavailable

from .config import ServerConfig
from .download import ANNOTATOR_ROLES, WeightSource, weight_sources

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
    "kornia",
    "scipy",
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
    _check_memory(report, config)
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
    # A dependency the server runs without: the model planners then decode freely (the rules
    # planner replaces what does not parse), so it warns rather than fails.
    constrained = llguidance_version()
    if constrained is None:
        report.add(
            "packages",
            "llguidance",
            "warn",
            "not installed: the model planners' output is not constrained to their grammar (what does "
            "not parse is planned by the rules planner)",
            "pip install llguidance",
        )
    else:
        report.add("packages", "llguidance", "ok", f"{constrained} (the planners decode under their grammar)")
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
        encoder = video_encoder()
        report.add(
            "packages",
            "H.264 encoder",
            "ok",
            f"{encoder.summary}: video outputs (chosen once, the first that opens)",
        )
    except Exception as exc:  # any failure here means no mp4 output; say why
        report.add(
            "packages",
            "H.264 encoder",
            "fail",
            f"no H.264 encoder usable through PyAV ({exc})",
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
    _check_fp8(report, config, device)


def _check_fp8(report: DoctorReport, config: ServerConfig, device: str) -> None:
    """Whether ``--quantize fp8`` can run on the resolved device: a failure only when it is set."""
    import torch

    reason = fp8_unavailable(torch.device(device))
    if reason is None:
        report.add("device", "fp8", "ok", f"float8 DiT matmuls available on {device} (--quantize fp8)")
    elif config.engine.performance.quantize == "fp8":
        fix = TORCHAO_HINT if "torchao" in reason else "use --quantize none on this machine"
        report.add("device", "fp8", "fail", f"quantize='fp8' is set, but not possible here: {reason}", fix)
    else:
        report.add("device", "fp8", "info", f"--quantize fp8 not available here: {reason}")


def _check_weights(report: DoctorReport, config: ServerConfig) -> None:
    cfg = config.engine
    report.add(
        "weights", "planner backend", "info", cfg.backend + (f" (preset {cfg.preset})" if cfg.preset else "")
    )
    if cfg.planner_model is None:
        report.add("weights", "planner", "info", "none configured: rules planner, no understanding")
    sources = weight_sources(cfg)
    if cfg.tiny_dir is not None and any(s.kind == "tiny" for s in sources):
        report.add(
            "weights",
            "tiny models",
            "info",
            f"not built yet: the first command or call that needs them builds them into {cfg.tiny_dir} "
            "(a few seconds, with progress)",
            "or build them now: `unison-mcp make-tiny`",
        )
    for source in sources:
        status, detail = locate(source, cfg.cache_dir)
        hint = None
        if status == "fail" and source.role in ANNOTATOR_ROLES:
            # Only control extraction and masks from words need them; generation works without.
            status = "warn"
            detail += f" (needed for {_ANNOTATOR_USE[source.role]})"
        elif status == "fail" and source.role == "turbo" and not cfg.loras.turbo:
            # Fetched on the first turbo call; only a server that is turbo by default needs it now.
            status = "warn"
            detail += " (needed for turbo calls)"
        if status in ("fail", "warn"):
            hint = _weights_hint(source, cfg.local_files_only)
        report.add("weights", source.role, status, detail, hint)


def _weights_hint(source: WeightSource, local_files_only: bool) -> str:
    """What fixes weights that are not here: the setting that names them, or the download."""
    if source.kind == "missing":
        return (
            f"fix the path given to {_flag(source)} (or its UNISON_* variable / TOML key), or give a hub id"
        )
    if local_files_only:
        # `download` refuses while local_files_only is set: the command must unset it for itself.
        return (
            f"run `unison-mcp download --no-local-files-only --only {source.role}` (local_files_only is "
            "set, so nothing is fetched at run time)"
        )
    return f"run `unison-mcp download` (only this one: `unison-mcp download --only {source.role}`)"


def _flag(source: WeightSource) -> str:
    return {
        "planner": "--planner-model",
        "adapter": "--adapter",
        "projector": "--projector",
        "generator": "--generator-model",
        "transformer": "--generator-single-file",
        "turbo": "--turbo-lora",
        "lora": "--lora",
        "segment": "--segment-model",
        "depth": "--depth-model",
        "pose": "--pose-model",
        "person_detector": "--person-detector",
        "flow": "--flow-model",
    }[source.role]


#: What each annotator is needed for, in doctor's words.
_ANNOTATOR_USE = {
    "segment": "masks from words in image_edit/video_edit",
    "depth": "control_kind=depth",
    "pose": "control_kind=pose",
    "person_detector": "control_kind=pose",
    "flow": "control_kind=flow",
}

#: About how many parameters the default annotators have (their model cards), for the memory
#: estimate before they are downloaded; a model found on disk is sized from its files instead.
_KNOWN_PARAMS = {
    "facebook/sam3": 850_000_000,
    "depth-anything/Depth-Anything-V2-Small-hf": 25_000_000,
    "usyd-community/vitpose-base-simple": 90_000_000,
    "PekingU/rtdetr_r50vd_coco_o365": 43_000_000,
    "raft_small": 1_000_000,
    "raft_large": 5_300_000,
}


def locate(source: WeightSource, cache_dir: Path | None) -> tuple[Status, str]:
    """Where ``source`` is on this machine, looked up without the network."""
    if source.kind == "torchvision":
        file = raft_cache_file(source.spec)
        if file.is_file():
            return "ok", f"torchvision {source.spec} weights at {file} ({_size(file)})"
        return "fail", f"torchvision {source.spec} weights are not in {file.parent}"
    if source.kind == "local":
        path = Path(source.spec).expanduser()
        return "ok", f"local {'directory' if path.is_dir() else 'file'} {path} ({_size(path)})"
    if source.kind == "missing":
        return "fail", f"{source.spec!r}: no such local path, and not a hub id"
    if source.kind == "tiny":
        return "info", f"{source.spec} (tiny, built on first use)"

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


def _check_memory(report: DoctorReport, config: ServerConfig) -> None:
    """About how much accelerator memory the annotators take while one of them runs."""
    cfg = config.engine
    dtype = cfg.annotators.annotator_dtype if cfg.annotators.annotator_dtype != "auto" else cfg.dtype
    if dtype == "auto":  # the engine's rule: bfloat16 on CUDA, float32 elsewhere
        import torch

        on_cuda = (
            torch.cuda.is_available() and cfg.device != "cpu" and cfg.annotators.annotator_device != "cpu"
        )
        dtype = "bfloat16" if on_cuda else "float32"
    itemsize = 4 if dtype == "float32" else 2
    sizes: dict[str, int] = {}
    for source in weight_sources(cfg):
        if source.role not in ANNOTATOR_ROLES:
            continue
        on_disk = _weights_bytes(source, cfg.cache_dir)
        # RAFT stays in float32 (engine/annotators/flow.py); the others take the configured dtype.
        scale = 1.0 if source.role == "flow" else itemsize / 4
        if on_disk is not None:
            sizes[source.role] = int(on_disk * scale)  # the weights are stored in float32
        elif source.spec in _KNOWN_PARAMS:
            sizes[source.role] = int(_KNOWN_PARAMS[source.spec] * 4 * scale)
    if not sizes:
        return
    # pose = the person detector and the keypoint model, held together.
    held = {role: size for role, size in sizes.items() if role != "person_detector"}
    if "pose" in held:
        held["pose"] += sizes.get("person_detector", 0)
    largest = max(held, key=held.__getitem__)
    parts = ", ".join(f"{role} {_bytes(size)}" for role, size in held.items())
    report.add(
        "memory",
        "annotators",
        "info",
        f"weights about {_bytes(held[largest])} on the device while the largest ({largest}) runs; "
        f"each is held only while it runs ({parts})",
    )


def _weights_bytes(source: WeightSource, cache_dir: Path | None) -> int | None:
    """Bytes of the weight files of ``source`` found on this machine (None: not found)."""
    if source.kind == "torchvision":
        file = raft_cache_file(source.spec)
        return file.stat().st_size if file.is_file() else None
    if source.kind == "local":
        path = Path(source.spec).expanduser()
    elif source.kind == "repo":
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import IncompleteSnapshotError, LocalEntryNotFoundError

        try:
            path = Path(snapshot_download(source.repo_id or "", cache_dir=cache_dir, local_files_only=True))
        except (IncompleteSnapshotError, LocalEntryNotFoundError):
            return None
    else:
        return None
    files = [path] if path.is_file() else list(path.rglob("*"))
    weights = [f for f in files if f.is_file() and f.suffix in (".safetensors", ".bin", ".pth", ".pt")]
    return sum(f.stat().st_size for f in weights) if weights else None


def _bytes(total: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if total < 1024 or unit == "GiB":
            return f"{total:.0f} {unit}" if unit == "B" else f"{total:.1f} {unit}"
        total /= 1024
    return f"{total:.1f} GiB"


def _size(path: Path) -> str:
    """Disk size of a file or directory (hub-cache symlinks followed to their blobs)."""
    try:
        if path.is_file():
            total = path.stat().st_size
        else:
            total = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    except OSError:
        return "size unknown"
    return _bytes(total)


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

"""Tiny random-initialised models in the real on-disk formats, for CPU runs and tests.

``ensure_tiny(dir)`` builds (once, deterministically) and returns the paths of:

- ``qwen/``: a Qwen2.5-VL checkpoint directory (config, safetensors, tokenizer, processors,
  chat template), loadable with ``from_pretrained`` exactly like ``Qwen/Qwen2.5-VL-3B-Instruct``;
- ``adapter/``: a Unison-style PEFT LoRA directory with the tokenizer that has the 14 tokens;
- ``wan/``: a diffusers ``WanVACEPipeline`` directory;
- ``projector.pth``: a projector state dict in the released layout (``module.`` prefix).

Each part is written into a temporary folder and renamed into place, so a crash or a concurrent
builder never leaves a half-written model behind.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SEED = 0


@dataclass(frozen=True)
class TinyPaths:
    root: Path
    qwen: Path
    adapter: Path
    wan: Path
    projector: Path


def default_tiny_dir() -> Path:
    env = os.environ.get("UNISON_TINY_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "unison-mcp" / "tiny"


def _atomic_build(target: Path, build) -> None:
    """Run ``build(tmpdir_or_file)`` then rename the result to ``target``."""
    if target.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        out = tmp / target.name
        build(out)
        try:
            os.replace(out, target)
        except OSError:
            if not target.exists():  # someone else won the race: theirs is as good as ours
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_paths(root: Path | str | None = None) -> TinyPaths:
    """Where the tiny models live under ``root`` (nothing is built)."""
    root = Path(root) if root is not None else default_tiny_dir()
    return TinyPaths(
        root=root,
        qwen=root / "qwen",
        adapter=root / "adapter",
        wan=root / "wan",
        projector=root / "projector.pth",
    )


def ensure_tiny(root: Path | str | None = None) -> TinyPaths:
    """Build whatever tiny model is missing under ``root`` and return all their paths."""
    paths = tiny_paths(root)
    root = paths.root
    if all(p.exists() for p in (paths.qwen, paths.adapter, paths.wan, paths.projector)):
        return paths  # the builders import torch: skip them when there is nothing to build
    from . import tiny_qwen, tiny_wan

    log.info("building tiny models in %s", root)
    _atomic_build(paths.qwen, lambda d: tiny_qwen.build_qwen(d, seed=SEED))
    _atomic_build(paths.adapter, lambda d: tiny_qwen.build_adapter(d, base=paths.qwen, seed=SEED))
    _atomic_build(paths.wan, lambda d: tiny_wan.build_wan(d, seed=SEED))
    _atomic_build(
        paths.projector,
        lambda f: tiny_wan.build_projector(
            f,
            hidden_size=tiny_qwen.text_hidden_size(paths.qwen),
            text_dim=tiny_wan.text_dim(paths.wan),
            seed=SEED,
        ),
    )
    return paths

"""Where the tiny models live: a leaf module (no torch, no engine imports).

:mod:`engine.config` reads it for ``EngineConfig.tiny()`` and the ``tiny`` preset, so pointing a
configuration at the tiny models never imports the builders in :mod:`engine.tiny.qwen` and
:mod:`engine.tiny.wan` (which import torch and, through the planner, the configuration itself).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TinyPaths:
    root: Path
    qwen: Path
    adapter: Path
    wan: Path
    projector: Path

    def all_exist(self) -> bool:
        return all(p.exists() for p in (self.qwen, self.adapter, self.wan, self.projector))


def default_tiny_dir() -> Path:
    """``$UNISON_TINY_DIR``, else ``$XDG_CACHE_HOME/unison-mcp/tiny`` (``~/.cache/...``)."""
    env = os.environ.get("UNISON_TINY_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "unison-mcp" / "tiny"


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

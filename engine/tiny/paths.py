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
    # The annotators (engine/annotators/): transformers directories, and RAFT as a state dict.
    depth: Path
    pose: Path
    person_detector: Path
    flow: Path
    segment: Path
    #: A Wan LoRA (safetensors, original-Wan layout) for the tiny DiT: turbo and user LoRAs.
    lora: Path

    def all_exist(self) -> bool:
        parts = (self.qwen, self.adapter, self.wan, self.projector)
        annotators = (self.depth, self.pose, self.person_detector, self.flow, self.segment, self.lora)
        return all(p.exists() for p in (*parts, *annotators))


#: The stage of a job while the tiny models are built (their first use on this machine).
BUILD_STAGE = "building tiny models"

#: Bumped when the tiny Qwen's build changes in a way earlier builds lack (2: taught answers).
QWEN_VERSION = 2


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
        # Versioned: a tiny Qwen built by an older release (before it was taught its answers) is
        # not reused; the adapter is trained on it, so it goes with it.
        qwen=root / f"qwen-{QWEN_VERSION}",
        adapter=root / f"adapter-{QWEN_VERSION}",
        wan=root / "wan",
        projector=root / "projector.pth",
        depth=root / "depth",
        pose=root / "pose",
        person_detector=root / "person_detector",
        flow=root / "raft_small.pth",
        segment=root / "segment",
        lora=root / "wan_lora.safetensors",
    )

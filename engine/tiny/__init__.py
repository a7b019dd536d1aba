"""Tiny random-initialised models in the real on-disk formats, for CPU runs and tests.

``ensure_tiny(dir)`` builds (once, deterministically) and returns the paths of:

- ``qwen/``: a Qwen2.5-VL checkpoint directory (config, safetensors, tokenizer, processors,
  chat template), loadable with ``from_pretrained`` exactly like ``Qwen/Qwen2.5-VL-3B-Instruct``;
- ``adapter/``: a Unison-style PEFT LoRA directory with the tokenizer that has the 14 tokens;
- ``wan/``: a diffusers ``WanVACEPipeline`` directory;
- ``projector.pth``: a projector state dict in the released layout (``module.`` prefix);
- ``wan_lora.safetensors``: a Wan LoRA in the original-Wan layout (:mod:`engine.tiny.lora`);
- the annotators: ``depth/`` (Depth Anything), ``person_detector/`` (RT-DETR), ``pose/``
  (ViTPose), ``raft_small.pth`` (a torchvision RAFT state dict) and ``segment/`` (the segmenter),
  each in the layout its real weights have (:mod:`engine.tiny.annotators`, :mod:`engine.tiny.segment`).

Each part is written into a temporary folder and renamed into place, so a crash or a concurrent
builder never leaves a half-written model behind.

The builders import torch and the model libraries only when something has to be built: by
``Engine`` on first load with the tiny preset, by ``unison-mcp make-tiny`` and by tests. Where the
models live is :func:`engine.config.tiny_paths`: configuring the tiny preset imports nothing of
this package.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..config import TinyPaths, tiny_paths
from . import annotators as tiny_annotators
from . import wan as tiny_wan
from .segment import build_segmenter

__all__ = ["SEED", "ensure_tiny"]

log = logging.getLogger(__name__)

SEED = 0


def _atomic_build(target: Path, build: Callable[[Path], object]) -> None:
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


def ensure_tiny(
    root: Path | str | None = None, *, on_step: Callable[[int, int], object] | None = None
) -> TinyPaths:
    """Build whatever tiny model is missing under ``root`` and return all their paths.

    ``on_step(done, total)`` is told after each part (a few seconds in all): the engine shows it as
    the progress of its "building tiny models" stage, and may stop there (a cancel raised by it
    leaves only whole parts behind).
    """
    paths = tiny_paths(root)
    root = paths.root
    if paths.all_exist():
        return paths
    # These two builders import torch at their top: only when there is something to build (the
    # others import their libraries inside the builder functions).
    from . import qwen as tiny_qwen
    from .lora import build_lora

    # In build order: the adapter is trained on the Qwen, the projector and LoRA sized by both.
    parts: list[tuple[Path, Callable[[Path], object]]] = [
        (paths.qwen, lambda d: tiny_qwen.build_qwen(d, seed=SEED)),
        (paths.adapter, lambda d: tiny_qwen.build_adapter(d, base=paths.qwen, seed=SEED)),
        (paths.wan, lambda d: tiny_wan.build_wan(d, seed=SEED)),
        (
            paths.projector,
            lambda f: tiny_wan.build_projector(
                f,
                hidden_size=tiny_qwen.text_hidden_size(paths.qwen),
                text_dim=tiny_wan.text_dim(paths.wan),
                seed=SEED,
            ),
        ),
        (paths.depth, lambda d: tiny_annotators.build_depth(d, seed=SEED)),
        (paths.person_detector, lambda d: tiny_annotators.build_person_detector(d, seed=SEED)),
        (paths.pose, lambda d: tiny_annotators.build_pose(d, seed=SEED)),
        (paths.flow, lambda f: tiny_annotators.build_flow(f, seed=SEED)),
        (paths.segment, lambda d: build_segmenter(d, seed=SEED)),
        (paths.lora, lambda f: build_lora(f, wan_dir=paths.wan, seed=SEED)),
    ]
    log.info("building tiny models in %s", root)
    for done, (target, build) in enumerate(parts, start=1):
        _atomic_build(target, build)
        if on_step is not None:
            on_step(done, len(parts))
    return paths

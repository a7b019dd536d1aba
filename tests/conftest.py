"""Shared fixtures: tiny real-format models built once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tiny models on a 2-core machine: thread start-up costs more than it saves (10x slower measured).
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny models live for this session (also exported for subprocesses)."""
    env = os.environ.get("UNISON_TINY_DIR")
    root = Path(env) if env else tmp_path_factory.mktemp("tiny")
    os.environ["UNISON_TINY_DIR"] = str(root)
    return root


@pytest.fixture(scope="session")
def tiny_paths(tiny_dir: Path):
    from engine.tiny import ensure_tiny

    return ensure_tiny(tiny_dir)


@pytest.fixture()
def tiny_config(tiny_paths, tmp_path: Path):
    from engine.config import EngineConfig

    return EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path / "outputs")

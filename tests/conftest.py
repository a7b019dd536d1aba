"""Shared fixtures: tiny real-format models built once per test session, and the files a test
made opened as inputs (``opened``)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from engine.config import EngineConfig, Limits
from engine.inputs import InputPolicy
from engine.source import Source, close_all

if TYPE_CHECKING:
    from engine.plan import MediaInput

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


class Opener:
    """Opens files a test made the way a request's inputs are opened: through an
    :class:`~engine.inputs.InputPolicy` whose root is pytest's temporary folder (every ``tmp_path``
    lies under it) with the engine's default limits. Decoding in :mod:`engine.media` takes nothing
    else. What it opened is closed when the test ends."""

    def __init__(self, root: Path):
        max_bytes = EngineConfig.model_fields["max_input_bytes"].default
        self.policy = InputPolicy([root], root, max_bytes=max_bytes, max_pixels=Limits().max_input_pixels)
        self._opened: list[Source] = []

    def __call__(self, path: str | os.PathLike[str]) -> Source:
        source = self.policy.open(path)
        self._opened.append(source)
        return source

    def sources(self, inputs: Iterable[MediaInput]) -> dict[str, Source]:
        """Each of a plan's ``inputs`` opened, by the path it names (what admission hands on)."""
        return {m.path: self(m.path) for m in inputs}

    def close(self) -> None:
        close_all(self._opened)


@pytest.fixture()
def opened(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Opener]:
    """``opened(path)``: a file under a pytest temporary folder as an opened input (a
    :class:`~engine.source.Source`); ``opened.sources(plan.inputs)``: a plan's inputs by path, for ``PrepContext``."""
    opener = Opener(tmp_path_factory.getbasetemp())
    yield opener
    opener.close()


@pytest.fixture()
def vanish_before_stat(monkeypatch: pytest.MonkeyPatch):
    """``vanish_before_stat(directory, name)``: from then on, the output directory's listing
    (``engine.outdir``'s ``os.scandir``) finds ``name`` and it is removed just before its stat,
    as another cleanup racing the listing would."""
    import contextlib

    import engine.outdir as outdir

    real_scandir = os.scandir

    def arrange(directory: Path, name: str) -> None:
        class Vanishing:
            def __init__(self, entry: os.DirEntry[str]):
                self.entry, self.name = entry, entry.name

            def stat(self, **kw: object) -> os.stat_result:
                if self.name == name:
                    os.unlink(directory / name)
                return self.entry.stat(**kw)  # type: ignore[arg-type]

        @contextlib.contextmanager
        def racing(fd: int) -> Iterator[list[Vanishing]]:
            with real_scandir(fd) as entries:
                yield [Vanishing(e) for e in entries]

        monkeypatch.setattr(outdir.os, "scandir", racing)

    return arrange

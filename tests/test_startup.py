"""Start-up: what importing a module or answering ``tools/list`` pulls in, and the collector around
the model libraries' first import (issue 20, item 4). Timings are benchmarks/bench_startup.py's;
these tests check which modules a fresh interpreter has loaded, which is what the timings follow."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine import imports
from engine.imports import heavy_imports
from unison_mcp import cli

ROOT = Path(__file__).resolve().parents[1]

#: Slow to import and needed only by some runs: diffusers' hooks import peft, which imports
#: transformers' modelling code; torch's compiler is only for --compile (diffusers' model modules
#: import it too, so a generation still loads it).
MODEL_LIBRARIES = ("diffusers", "peft", "transformers", "torch._dynamo", "torchao", "kornia")


def loaded_after(code: str, tmp_path: Path) -> set[str]:
    """The modules among :data:`MODEL_LIBRARIES` and ``torch`` that a fresh interpreter has
    loaded after running ``code``."""
    probe = (
        f"{code}\nimport sys\n"
        f"print(' '.join(m for m in {(*MODEL_LIBRARIES, 'torch')!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNISON_TINY_DIR": str(tmp_path / "tiny")}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return set(done.stdout.split())


def test_importing_the_speed_switches_imports_torch_but_no_model_library(tmp_path: Path):
    # engine.perf used to import diffusers' hooks at its top, and with them peft and transformers.
    assert loaded_after("import engine.perf", tmp_path) == {"torch"}


def test_the_diffusers_hooks_come_with_the_first_switch_that_installs_one(tmp_path: Path):
    code = (
        "import torch\n"
        "from engine import perf\n"
        "with perf.batched_cfg(torch.nn.Linear(1, 1), torch.zeros(1), None) as hook:\n"
        "    assert hook is None  # no guidance: nothing to install, nothing imported\n"
        "import sys\nassert 'diffusers' not in sys.modules\n"
        "with perf.batched_cfg(torch.nn.Linear(1, 1), torch.zeros(1), torch.zeros(1)) as hook:\n"
        "    assert type(hook).__name__ == 'BatchedCFGHook'\n"
    )
    assert {"torch", "diffusers", "peft"} <= loaded_after(code, tmp_path)


def test_building_the_server_and_answering_tools_list_loads_no_model_library(tmp_path: Path):
    code = (
        "import anyio\n"
        "from mcp import Client\n"
        "from engine.config import EngineConfig\n"
        "from unison_mcp.config import ServerConfig\n"
        "from unison_mcp.server import build_server\n"
        "config = ServerConfig(engine=EngineConfig.tiny(output_dir='out'))\n"
        "async def tools():\n"
        "    async with Client(build_server(config)) as client:\n"
        "        return (await client.list_tools()).tools\n"
        "assert {t.name for t in anyio.run(tools)} >= {'generate', 'understand', 'auto'}\n"
    )
    assert loaded_after(code, tmp_path) == set()


def test_the_collector_is_off_during_a_heavy_import_and_as_it_was_after():
    assert gc.isenabled()
    with heavy_imports():
        assert not gc.isenabled()
        with heavy_imports():  # nested: the inner block leaves it off
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with heavy_imports():
            pass
        assert not gc.isenabled(), "a collector that was off stays off"
    finally:
        gc.enable()


def test_the_collector_comes_back_when_the_import_fails():
    with pytest.raises(ModuleNotFoundError), heavy_imports():
        import unison_no_such_module  # noqa: F401
    assert gc.isenabled()


def test_a_heavy_import_ends_with_one_full_collection_only_when_it_brought_many_modules(monkeypatch):
    collections: list[int] = []
    monkeypatch.setattr(imports.gc, "collect", lambda *a: collections.append(1) or 0)
    with heavy_imports():
        pass  # nothing imported: no collection
    assert collections == []
    with heavy_imports():
        for i in range(imports.COLLECT_AFTER_MODULES):
            monkeypatch.setitem(sys.modules, f"unison_fake_module_{i}", type(sys)("fake"))
    assert collections == [1]


def test_the_command_freezes_the_objects_only_as_the_process_ends(monkeypatch):
    # main() runs in-process too (tests/test_cli.py): only the entry point freezes, then exits.
    monkeypatch.setattr(cli, "main", lambda: 3)
    before = gc.get_freeze_count()
    try:
        with pytest.raises(SystemExit) as exited:
            cli.entry()
        assert exited.value.code == 3
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()

"""Progress from the first second, timings of the whole call, and resources that say they changed.

Through the SDK's in-memory client with a progress callback: on the tiny models a cold call says
what it does from its first second (loading named with its size, each denoising step, decoding,
writing), and the scripted engine of ``test_server_tools.py`` holds jobs so a call waits in the
queue and hears its place as it moves.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from test_server_tools import _data, _make

from unison_mcp.config import ServerConfig
from unison_mcp.server import build_server
from unison_mcp.state import state_of


class Heard:
    """Every progress notification of one call, with the seconds since the call began."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.seen: list[tuple[float, float, float | None, str | None]] = []

    async def __call__(self, progress: float, total: float | None, message: str | None) -> None:
        self.seen.append((time.perf_counter() - self.t0, progress, total, message))

    @property
    def messages(self) -> list[str]:
        return [m or "" for _, _, _, m in self.seen]

    def always_increasing(self) -> bool:
        values = [p for _, p, _, _ in self.seen]
        return all(b > a for a, b in zip(values, values[1:], strict=False))


@pytest.fixture()
def dirs(tmp_path: Path) -> dict[str, Path]:
    found = {name: tmp_path / name for name in ("root", "out", "outside")}
    for d in found.values():
        d.mkdir()
    return found


async def test_a_cold_call_on_the_tiny_models_says_what_it_does_from_its_first_second(tiny_paths, tmp_path):
    from engine.config import EngineConfig
    from engine.engine import Engine

    config = EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path / "outputs")
    server = build_server(ServerConfig(engine=config, allowed_roots=[tmp_path]), engine=Engine(config))
    heard = Heard()
    async with Client(server) as client:
        heard.t0 = time.perf_counter()
        result = await client.call_tool(
            "generate",
            {"task": "text_to_image", "prompt": "a red fox", "steps": 3, "seed": 1},
            progress_callback=heard,
        )
        took = time.perf_counter() - heard.t0
    data = _data(result)
    assert heard.seen[0][0] < 1.0, heard.seen[:3]
    assert heard.always_increasing()
    messages = heard.messages
    # Each model is named as it loads, with the size of what it loads (cold: nothing loaded yet).
    assert any(re.fullmatch(r"loading the generator, [\d.]+ [kMG]?B", m) for m in messages), messages
    assert any(re.fullmatch(r"loading the planner, [\d.]+ [kMG]?B", m) for m in messages), messages
    steps = [m for m in messages if m.startswith("generating ")]
    assert steps == ["generating 1/3", "generating 2/3", "generating 3/3"]
    assert messages.index("decoding") > messages.index("generating 3/3")
    assert messages[-1] == "writing"
    # The timings cover the whole call: the queue and the load included.
    timings = data["timings"]
    assert {"queue_s", "call_s", "load_s", "denoise_s"} <= set(timings)
    assert timings["call_s"] >= timings["queue_s"] + timings["load_s"] + timings["denoise_s"]
    assert timings["call_s"] <= took


async def _until(check: Any, timeout: float = 10.0) -> None:
    with anyio.fail_after(timeout):
        while not check():
            await anyio.sleep(0.01)


async def test_a_call_waiting_in_the_queue_hears_its_place_at_once_and_as_it_moves(dirs):
    # Each job takes 0.4 s once released: longer than the queue is looked at (POSITION_POLL_S).
    server, fake = _make(dirs, step_delay=0.2)
    fake.hold = threading.Event()
    heard = Heard()
    results: dict[str, Any] = {}
    async with Client(server) as client:
        queue = state_of(server).queue

        async def call(prompt: str, progress: Heard | None = None) -> None:
            args = {"task": "text_to_image", "prompt": prompt, "steps": 2}
            results[prompt] = await client.call_tool("generate", args, progress_callback=progress)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call, "first")  # runs, held before its first step
            await _until(lambda: queue.running is not None)
            tg.start_soon(call, "second")
            await _until(lambda: queue.waiting == 1)
            heard.t0 = time.perf_counter()
            tg.start_soon(call, "third", heard)
            await _until(lambda: "queued: 2 jobs ahead" in heard.messages)
            fake.hold.set()
    messages = heard.messages
    assert heard.seen[0][0] < 1.0 and messages[0] == "queued: 2 jobs ahead", heard.seen
    assert messages.index("queued: 1 job ahead") < messages.index("starting")
    assert [m for m in messages if m.startswith("denoising ")] == ["denoising 1/2", "denoising 2/2"]
    assert heard.always_increasing()
    timings = _data(results["third"])["timings"]
    assert timings["queue_s"] > 0.5 and timings["call_s"] > timings["queue_s"]


async def test_clients_listening_hear_that_the_resources_changed_when_a_generation_writes_files(dirs):
    server, _ = _make(dirs)
    async with Client(server) as client, client.listen(resources_list_changed=True) as changes:
        events = aiter(changes)
        _data(await client.call_tool("understand", {"prompt": "nothing is written"}))
        with anyio.move_on_after(0.5):
            event = await anext(events)
            raise AssertionError(f"an answer changed no resource, yet {event!r} came")
        data = _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "x"}))
        with anyio.fail_after(5):
            event = await anext(events)
        listed = await client.list_resources()
    assert type(event).__name__ == "ResourcesListChanged"
    assert data["outputs"][0]["uri"] in {str(r.uri) for r in listed.resources}

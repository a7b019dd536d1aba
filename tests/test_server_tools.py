"""The MCP tools through the SDK's in-memory client, over a scripted fake engine.

The fake sits at the ``build_server(config, engine=...)`` seam: it admits with the real
``admit`` (the real ``check_plan``), reports one step per denoising step through the real
``JobControl``, and writes real PNG/MP4 files with the real ``write_output``, so everything the
server does with files (links, previews, resources, chaining) is exercised for every task. An
``auto`` call is the real engine's own routing (its dry runs need no model); the real tiny
engine runs the same tools, ``auto`` generating and answering included, in
``test_server_real.py``.
"""

from __future__ import annotations

import base64
import inspect
import io
import json
import logging
import os
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from PIL import Image
from protocols import members, mismatch

from engine.api import Admitted, AnyRequest, AnyResult, EngineAPI, admit
from engine.config import EngineConfig, Limits, SamplingDefaults
from engine.control import JobControl
from engine.engine import Engine
from engine.errors import ModelError, OutOfMemory
from engine.inputs import InputPolicy
from engine.plan import CheckedPlan
from engine.request import Request
from engine.results import GenerateResult, Sampling, UnderstandResult
from engine.tasks import TASKS
from engine.vocab import MediaKind, Role, Task
from unison_mcp.config import ServerConfig
from unison_mcp.server import build_server
from unison_mcp.state import state_of

# ---------------------------------------------------------------------------------------------
# The fake engine


class FakeEngine:
    """A scripted :class:`~engine.api.EngineAPI`: real admission, real progress, real files; no models.

    ``admit`` is the engine's own (plan check, path policy, each input opened once and its header
    probed); ``run`` scripts the model work of ``understand`` and ``generate``: one progress step
    per denoising step, and real PNG/MP4 files written by ``write_output``. ``auto`` is run by a
    real :class:`~engine.engine.Engine` on the same config, so its routing is the engine's own;
    with no model configured, only its dry runs can run here. ``step_delay`` slows each step;
    ``hold`` (an Event) parks a job before its first step until set; a prompt containing
    ``raise:oom`` / ``raise:model`` / ``raise:bug`` fails that way.
    """

    def __init__(self, config: EngineConfig, *, step_delay: float = 0.0):
        self.config = config
        self.inputs = InputPolicy(
            config.allowed_roots, config.output_dir, config.max_input_bytes, config.limits.max_input_pixels
        )
        self.step_delay = step_delay
        self.hold: threading.Event | None = None
        self.calls: list[tuple[str, Any]] = []
        self.preloaded = threading.Event()
        self.preload_delay = 0.0
        self._engine = Engine(config)

    # ------------------------------------------------------------------ EngineAPI

    def status(self) -> dict[str, Any]:
        return {"planner": None, "loaded": {"planner": False, "generator": self.preloaded.is_set()}}

    def preload(self) -> None:
        time.sleep(self.preload_delay)
        self.preloaded.set()

    def unload(self) -> bool:
        return False  # nothing loaded: no models

    def admit(self, request: AnyRequest) -> Admitted:
        return admit(request, self.config, self.inputs)

    def run(self, admitted: Admitted, *, control: JobControl | None = None) -> AnyResult:
        if admitted.tool == "auto":
            self.calls.append(("auto", admitted.request))
            return self._engine.run(admitted, control=control)
        control = control or JobControl()
        with admitted:
            # The work decodes from what admission opened: every source is still open here.
            assert all(not s.closed for s in admitted.sources.values())
            if admitted.tool == "generate":
                assert admitted.plan is not None
                return self._generate(admitted.plan, admitted.request.sampling(), control)
            assert admitted.parsed is not None
            return self._understand(admitted.parsed, control)

    # ------------------------------------------------------------------ the script

    def _script(self, prompt: str) -> None:
        if "raise:oom" in prompt:
            raise OutOfMemory("the accelerator ran out of memory; caches were freed")
        if "raise:model" in prompt:
            raise ModelError("adapter not found at /nowhere")
        if "raise:bug" in prompt:
            raise RuntimeError("secret internal detail")

    def _wait_for_release(self) -> None:
        if self.hold is not None:
            assert self.hold.wait(10), "test never released the fake engine"

    def _steps(self, control: JobControl, n: int) -> None:
        control.set_stage("denoising", total=n)
        for i in range(1, n + 1):
            time.sleep(self.step_delay)
            control.step(i, n)

    def _understand(self, req: Request, control: JobControl) -> UnderstandResult:
        self.calls.append(("understand", req))
        self._wait_for_release()
        self._script(req.prompt)
        for path, _ in req.media:
            assert Path(path).is_file(), path
        self._steps(control, 3)
        return UnderstandResult(answer=f"I see {len(req.media)} file(s). {req.prompt}", model="fake-vl")

    def _generate(self, plan: CheckedPlan, sampling: Sampling | None, control: JobControl) -> GenerateResult:
        from engine.outputs import write_output

        self.calls.append(("generate", plan))
        self._wait_for_release()
        self._script(plan.prompt)
        for m in plan.inputs:
            assert Path(m.path).is_file(), m.path
        steps = (sampling.steps if sampling and sampling.steps else None) or self.config.sampling.steps
        self._steps(control, steps)
        control.check()
        frames = np.zeros((plan.num_frames, plan.height, plan.width, 3), dtype=np.uint8)
        frames[..., 0] = np.arange(plan.width, dtype=np.uint8)[None, None, :]
        out = write_output(
            frames, output_dir=self.config.output_dir, task=plan.task.value, fps=plan.fps, metadata={}
        )
        seed = sampling.seed if sampling and sampling.seed is not None else 0
        return GenerateResult(
            plan=plan, outputs=[out], seed=seed, steps=steps, guidance=5.0, projector=True, notes=plan.notes
        )


# ---------------------------------------------------------------------------------------------
# Fixtures and helpers


@pytest.fixture()
def dirs(tmp_path: Path) -> dict[str, Path]:
    root, out, outside = tmp_path / "inputs", tmp_path / "outputs", tmp_path / "outside"
    for d in (root, out, outside):
        d.mkdir()
    Image.new("RGB", (40, 32), (200, 30, 30)).save(root / "photo.png")
    Image.new("L", (40, 32), 255).save(root / "mask.png")
    Image.new("RGB", (40, 32), (0, 0, 0)).save(outside / "secret.png")
    _write_mp4(root / "clip.mp4")
    return {"root": root, "out": out, "outside": outside}


def _write_mp4(path: Path, frames: int = 9) -> None:
    from engine.media import encode_mp4

    encode_mp4(path, np.full((frames, 32, 48, 3), 90, dtype=np.uint8), 16.0)


def _make(dirs, *, step_delay: float = 0.0, **server_kw) -> tuple[Any, FakeEngine]:
    econf = EngineConfig(
        planner_model=None,
        output_dir=dirs["out"],
        sampling=SamplingDefaults(steps=3),
        limits=Limits(default_width=64, default_height=48, default_frames=9),
    )
    cfg = ServerConfig(engine=econf, allowed_roots=[dirs["root"]], **server_kw)
    fake = FakeEngine(econf, step_delay=step_delay)
    return build_server(cfg, engine=fake), fake


def _data(result) -> dict:
    assert not result.is_error, _text(result)
    return result.structured_content


def _text(result) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def _outputs_on_disk(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.endswith(".json"))


# Inputs that make each generation task valid (files are created by the `dirs` fixture).
TASK_INPUTS: dict[str, dict[str, Any]] = {
    "text_to_image": {},
    "text_to_video": {},
    "image_edit": {"source": "photo.png", "mask": "mask.png"},
    "image_control": {"control": "photo.png"},
    "image_reference": {"reference": ["photo.png"]},
    "image_to_video": {"first_frame": "photo.png"},
    "video_reference": {"reference": ["photo.png", "mask.png"]},
    "video_edit": {"source": "clip.mp4"},
    "video_control": {"control": "clip.mp4"},
    "first_last_to_video": {"first_frame": "photo.png", "last_frame": "mask.png"},
    "image_outpaint": {"source": "photo.png", "margins": {"left": 16}},
    "video_outpaint": {"source": "clip.mp4", "margins": {"top": 16}},
    "video_extend": {"source": "clip.mp4", "context_frames": 5},
}


def _args(task: str, root: Path) -> dict[str, Any]:
    args: dict[str, Any] = {"task": task, "prompt": f"a test of {task}"}
    for key, value in TASK_INPUTS[task].items():
        if key in ("margins", "context_frames"):
            args[key] = value
        elif isinstance(value, list):
            args[key] = [str(root / v) for v in value]
        else:
            args[key] = str(root / value)
    return args


# ---------------------------------------------------------------------------------------------
# tools/list


async def test_tools_list_publishes_the_four_tools_with_input_and_output_schemas(dirs):
    server, _ = _make(dirs)
    async with Client(server) as client:
        tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == {"understand", "generate", "auto", "job"}
    for tool in tools.values():
        assert tool.input_schema["type"] == "object"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object"
        assert "status" in tool.output_schema["properties"]
    gen = tools["generate"].input_schema["properties"]
    assert set(gen["task"]["enum"]) == {t.value for t in Task if not TASKS[t].understanding}
    # Up to 4× the largest side is taken (and scaled down into the limits); beyond, refused.
    assert gen["width"]["minimum"] == 16 and gen["width"]["maximum"] == 4 * 1920
    assert gen["width"]["type"] == ["integer", "null"]  # optional: absent or null
    assert gen["steps"]["maximum"] == 200
    assert gen["reference"]["maxItems"] == 3
    assert tools["generate"].input_schema["required"] == ["task", "prompt"]
    assert "outputs" in tools["generate"].output_schema["properties"]
    assert "answer" in tools["understand"].output_schema["properties"]
    assert tools["job"].input_schema["properties"]["action"]["enum"] == ["status", "wait", "cancel", "result"]
    assert tools["understand"].annotations.read_only_hint is True
    assert tools["generate"].annotations.read_only_hint is False
    assert tools["generate"].annotations.destructive_hint is False
    # Descriptions are written for the calling model: every task with its inputs, what comes back,
    # and the guide for the rest; no machine path, no CLI flag.
    desc = tools["generate"].description
    for task in TASK_INPUTS:
        assert f"- {task}: " in desc
    assert "4k+1" in gen["num_frames"]["description"] and "multiple of 16" in gen["width"]["description"]
    for tool in tools.values():
        assert str(dirs["root"]) not in tool.description and "--" not in tool.description
    assert "unison://guide" in desc and "unison://guide" in tools["auto"].description


async def test_tools_list_answers_at_once_while_the_models_preload_in_the_background(dirs):
    server, fake = _make(dirs, preload=True)
    fake.preload_delay = 3.0
    t0 = time.perf_counter()
    async with Client(server) as client:
        await client.list_tools()
        assert time.perf_counter() - t0 < 2.0
        assert not fake.preloaded.is_set()
    assert await anyio.to_thread.run_sync(fake.preloaded.wait, 10)


# ---------------------------------------------------------------------------------------------
# Every task reachable; results as files


@pytest.mark.parametrize("task", list(TASK_INPUTS))
async def test_every_generation_task_is_reachable_and_returns_a_linked_file(dirs, task):
    server, fake = _make(dirs)
    async with Client(server) as client:
        result = await client.call_tool("generate", _args(task, dirs["root"]))
    data = _data(result)
    assert data["status"] == "done" and data["plan"]["task"] == task
    (out,) = data["outputs"]
    assert Path(out["path"]).is_file() and Path(out["path"]).parent == dirs["out"].resolve()
    assert out["uri"] == f"unison://outputs/{Path(out['path']).name}"
    assert out["size_bytes"] == Path(out["path"]).stat().st_size
    # The file is named by URI and path in the text, never as a link block (see test_clients.py).
    assert [c.type for c in result.content] == ["text", "image"]
    assert f"{out['uri']} → {out['path']}" in _text(result)
    (preview,) = [c for c in result.content if c.type == "image"]
    assert preview.mime_type == "image/jpeg" and len(preview.data) < 1_000_000
    if TASKS[Task(task)].output == "video":
        assert out["kind"] == "video" and out["path"].endswith(".mp4")
        assert out["num_frames"] == 9 and out["fps"] == 16.0
        assert "9 frames at 16 fps" in _text(result)
    else:
        assert out["kind"] == "image" and out["path"].endswith(".png") and out["num_frames"] == 1
        assert "fps" not in out and "duration_s" not in out  # unset fields are left out
    # Inputs reached the engine as checked real paths.
    (plan,) = [p for kind, p in fake.calls if kind == "generate"]
    assert all(Path(m.path).is_absolute() for m in plan.inputs)


async def test_an_image_preview_is_downscaled_to_the_preview_side(dirs):
    server, _ = _make(dirs, preview_side=32)
    async with Client(server) as client:
        result = await client.call_tool(
            "generate", {"task": "text_to_image", "prompt": "x", "width": 256, "height": 128}
        )
    (preview,) = [c for c in result.content if c.type == "image"]
    img = Image.open(io.BytesIO(base64.b64decode(preview.data)))
    assert img.size == (32, 16)
    assert _data(result)["outputs"][0]["width"] == 256


async def test_understand_answers_about_media_given_as_a_list_or_inline_markers(dirs):
    server, fake = _make(dirs)
    photo, clip = dirs["root"] / "photo.png", dirs["root"] / "clip.mp4"
    async with Client(server) as client:
        listed = await client.call_tool(
            "understand", {"prompt": "what is this?", "media": [str(photo), str(clip)]}
        )
        inline = await client.call_tool("understand", {"prompt": f"describe ###{photo}### please"})
        text_only = await client.call_tool("understand", {"prompt": "what is a haiku?"})
    assert _data(listed)["answer"].startswith("I see 2 file(s)") and _data(listed)["model"] == "fake-vl"
    assert _text(listed) == _data(listed)["answer"]
    assert _data(inline)["answer"].startswith("I see 1 file(s)")
    assert _data(text_only)["answer"].startswith("I see 0 file(s)")
    # The marker read once at admission: a placeholder in the text, its real path in the files.
    assert fake.calls[1][1].text == "describe <IMGPAD> please"
    assert fake.calls[1][1].media == ((str(photo.resolve()), MediaKind.IMAGE),)


# ---------------------------------------------------------------------------------------------
# Progress, cancel, job handles, the queue


async def test_progress_notifications_count_equals_steps_and_always_increase(dirs):
    server, _ = _make(dirs)
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(server) as client:
        result = await client.call_tool(
            "generate", {"task": "text_to_image", "prompt": "x", "steps": 5}, progress_callback=on_progress
        )
    assert _data(result)["steps"] == 5
    values = [p for p, _, _ in seen]
    assert values == sorted(set(values)) and all(message for _, _, message in seen)
    steps = [(p, t, m) for p, t, m in seen if m is not None and m.startswith("denoising ")]
    # One notification per step, counted against the stage's total; the job's start before them.
    assert [m for _, _, m in steps] == [f"denoising {k}/5" for k in range(1, 6)]
    assert len({t for _, t, _ in steps}) == 1 and steps[-1][0] == steps[-1][1]
    assert seen[0][2] == "starting" and ("denoising" in [m for _, _, m in seen])


async def test_a_client_cancel_stops_the_job_mid_way_and_nothing_is_written(dirs):
    server, _ = _make(dirs, step_delay=0.05)
    first_step = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        first_step.set()

    async with Client(server) as client:
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool(
                    "generate",
                    {"task": "text_to_image", "prompt": "x", "steps": 50},
                    progress_callback=on_progress,
                )

            tg.start_soon(call)
            with anyio.fail_after(10):
                await first_step.wait()
            tg.cancel_scope.cancel()
        (job,) = state_of(server).queue.jobs()
        assert await anyio.to_thread.run_sync(job.wait, 10)
        assert job.status == "cancelled" and job.progress()["done"] < 50
        assert list(dirs["out"].iterdir()) == []
        # The server keeps serving.
        assert _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "y", "steps": 1}))


async def test_a_job_outliving_wait_s_returns_a_handle_that_the_job_tool_follows_to_the_result(dirs):
    server, fake = _make(dirs, wait_s=0.5, step_delay=0.02)
    fake.hold = threading.Event()
    async with Client(server) as client:
        first = await client.call_tool("generate", {"task": "text_to_video", "prompt": "waves", "steps": 4})
        handle = _data(first)
        assert handle["status"] in ("queued", "running") and "outputs" not in handle
        job_id = handle["job_id"]
        assert job_id and "job" in _text(first) and job_id in _text(first)

        status = _data(await client.call_tool("job", {"action": "status", "job_id": job_id}))
        assert status["status"] == "running" and status["kind"] == "generate"
        early = _data(await client.call_tool("job", {"action": "result", "job_id": job_id}))
        assert early["status"] == "running" and early["job_id"] == job_id

        seen: list[tuple[float, str | None]] = []

        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            seen.append((progress, message))

        async def release_soon() -> None:
            await anyio.sleep(0.2)  # the wait below is listening by then
            fake.hold.set()

        final = None
        async with anyio.create_task_group() as tg:
            tg.start_soon(release_soon)
            with anyio.fail_after(10):
                while final is None or final.structured_content["status"] != "done":
                    final = await client.call_tool(
                        "job", {"action": "wait", "job_id": job_id}, progress_callback=on_progress
                    )
        data = _data(final)
        assert data["plan"]["task"] == "text_to_video" and data["outputs"][0]["kind"] == "video"
        assert any(c.type == "image" for c in final.content)
        # The wait relays the job's steps too, always increasing.
        assert [m for _, m in seen if m and "/" in m] == [f"denoising {k}/4" for k in range(1, 5)]
        assert [p for p, _ in seen] == sorted({p for p, _ in seen})
        again = await client.call_tool("job", {"action": "result", "job_id": job_id})
        assert again.structured_content == data
        done = _data(await client.call_tool("job", {"action": "status", "job_id": job_id}))
        assert done["status"] == "done" and done["finished_at"] >= done["started_at"]


async def test_with_wait_s_zero_every_call_returns_a_handle_at_once(dirs):
    server, fake = _make(dirs, wait_s=0)
    # Held before its first step, the job cannot finish before the call returns: the handle is
    # then always a handle (a job that had already finished would return its result instead).
    fake.hold = threading.Event()
    async with Client(server) as client:
        t0 = time.perf_counter()
        handle = _data(await client.call_tool("understand", {"prompt": "hi"}))
        assert time.perf_counter() - t0 < 1.0
        assert handle["status"] in ("queued", "running") and handle["job_id"]
        job = state_of(server).queue.get(handle["job_id"])
        fake.hold.set()
        assert await anyio.to_thread.run_sync(job.wait, 10)
        result = await client.call_tool("job", {"action": "result", "job_id": handle["job_id"]})
    assert _data(result)["answer"] == "I see 0 file(s). hi"


async def test_the_job_tool_cancels_a_queued_job_without_running_it(dirs):
    server, fake = _make(dirs, wait_s=0)
    fake.hold = threading.Event()
    async with Client(server) as client:
        running = _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "a"}))
        queued = _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "b"}))
        status = _data(await client.call_tool("job", {"action": "status", "job_id": queued["job_id"]}))
        assert status["status"] == "queued" and status["ahead"] == 1
        cancelled = _data(await client.call_tool("job", {"action": "cancel", "job_id": queued["job_id"]}))
        assert cancelled["status"] == "cancelled"
        result = await client.call_tool("job", {"action": "result", "job_id": queued["job_id"]})
        assert result.is_error and "cancelled" in _text(result)
        fake.hold.set()
        job = state_of(server).queue.get(running["job_id"])
        assert await anyio.to_thread.run_sync(job.wait, 10)
    assert len(_outputs_on_disk(dirs["out"])) == 1
    assert [p.prompt for kind, p in fake.calls if kind == "generate"] == ["a"]


async def test_the_job_tool_cancels_a_running_job_at_its_next_step_and_nothing_is_written(dirs):
    server, _ = _make(dirs, wait_s=0.2, step_delay=0.02)
    async with Client(server) as client:
        handle = _data(
            await client.call_tool("generate", {"task": "text_to_video", "prompt": "x", "steps": 200})
        )
        assert handle["status"] == "running" and handle["progress"]["done"] > 0
        cancelled = _data(await client.call_tool("job", {"action": "cancel", "job_id": handle["job_id"]}))
    assert cancelled["status"] == "cancelled" and cancelled["progress"]["done"] < 200
    assert "cancelled" in cancelled["error"]
    assert list(dirs["out"].iterdir()) == []


async def test_a_full_queue_answers_busy_with_the_jobs_ahead_then_serves_again(dirs):
    server, fake = _make(dirs, wait_s=0, queue_size=1)
    fake.hold = threading.Event()
    async with Client(server) as client:
        await client.call_tool("understand", {"prompt": "one"})
        await client.call_tool("understand", {"prompt": "two"})
        busy = await client.call_tool("understand", {"prompt": "three"})
        assert busy.is_error
        assert _text(busy).endswith("busy: 2 jobs ahead (queue holds 1); try again when a job has finished")
        fake.hold.set()
        queue = state_of(server).queue
        with anyio.fail_after(10):
            while not queue.idle():
                await anyio.sleep(0.02)
        accepted = _data(await client.call_tool("understand", {"prompt": "four"}))
        assert accepted["job_id"] and accepted["status"] in ("queued", "running", "done")


async def test_a_rules_dry_run_answers_while_the_gpu_queue_is_full(dirs):
    server, fake = _make(dirs, wait_s=0, queue_size=0)
    fake.hold = threading.Event()
    async with Client(server) as client:
        await client.call_tool("understand", {"prompt": "one"})  # holds the only place
        assert (await client.call_tool("understand", {"prompt": "two"})).is_error  # busy
        with anyio.fail_after(5):
            dry = await client.call_tool("auto", {"prompt": "a video of rain", "dry_run": True})
        fake.hold.set()
    assert _data(dry)["plan"]["task"] == "text_to_video"


async def test_an_unknown_job_id_is_a_tool_error_naming_it(dirs):
    server, _ = _make(dirs)
    async with Client(server) as client:
        result = await client.call_tool("job", {"action": "status", "job_id": "nope"})
    assert result.is_error and "job_id='nope'" in _text(result) and "no such job" in _text(result)


# ---------------------------------------------------------------------------------------------
# Resources and chaining


async def test_outputs_are_listed_as_resources_and_readable_through_resources_read(dirs):
    server, _ = _make(dirs)
    async with Client(server) as client:
        data = _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "x"}))
        (out,) = data["outputs"]
        listed = {str(r.uri): r for r in (await client.list_resources()).resources}
        assert out["uri"] in listed and listed[out["uri"]].mime_type == "image/png"
        assert listed[out["uri"]].size == out["size_bytes"]
        assert out["uri"] + ".json" in listed  # the sidecar with the settings
        templates = (await client.list_resource_templates()).resource_templates
        assert [t.uri_template for t in templates] == ["unison://outputs/{name}"]
        read = await client.read_resource(out["uri"])
        (content,) = read.contents
        assert content.mime_type == "image/png"
        assert base64.b64decode(content.blob) == Path(out["path"]).read_bytes()
        sidecar = (await client.read_resource(out["uri"] + ".json")).contents[0]
        assert sidecar.mime_type == "application/json" and '"task": "text_to_image"' in sidecar.text


@pytest.mark.parametrize("name", ["nope.png", "..%2Fsecret.png", ".hidden"])
async def test_reading_an_unknown_or_escaping_output_name_fails_cleanly(dirs, name):
    from mcp.shared.exceptions import MCPError

    server, _ = _make(dirs)
    async with Client(server) as client:
        with pytest.raises(MCPError):
            await client.read_resource(f"unison://outputs/{name}")
        assert (await client.list_tools()).tools  # still serving


async def test_calls_chain_through_unison_uris_generate_then_edit_then_animate(dirs):
    server, fake = _make(dirs)
    async with Client(server) as client:
        first = _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "a cat"}))
        uri1 = first["outputs"][0]["uri"]
        edited = _data(
            await client.call_tool(
                "generate",
                {
                    "task": "image_edit",
                    "prompt": "a cat in a hat",
                    "source": uri1,
                    "mask": str(dirs["root"] / "mask.png"),
                },
            )
        )
        uri2 = edited["outputs"][0]["uri"]
        video = _data(
            await client.call_tool(
                "generate", {"task": "image_to_video", "prompt": "the cat waves", "first_frame": uri2}
            )
        )
    plans = [p for kind, p in fake.calls if kind == "generate"]
    assert plans[1].one(Role.SOURCE).path == first["outputs"][0]["path"]
    assert plans[2].one(Role.FIRST_FRAME).path == edited["outputs"][0]["path"]
    assert video["outputs"][0]["kind"] == "video"
    assert video["plan"]["inputs"] == [
        {"path": edited["outputs"][0]["path"], "kind": "image", "role": "first_frame"}
    ]


# ---------------------------------------------------------------------------------------------
# Refusals and errors: clear tool errors, and the server keeps serving


def _refused_paths(dirs) -> dict[str, tuple[str, str]]:
    root = dirs["root"]
    (root / "album.png").mkdir()
    os.mkfifo(root / "pipe.png")
    (root / "escape.png").symlink_to(dirs["outside"] / "secret.png")
    return {
        "outside": (str(dirs["outside"] / "secret.png"), "outside the allowed roots"),
        "dotdot": (f"{root}/../outside/secret.png", "outside the allowed roots"),
        "symlink": (str(root / "escape.png"), "resolves to"),
        # With an image extension, so the path policy answers (an extensionless path is refused
        # earlier, by the plan: "unsupported file type").
        "proc": ("/proc/self/environ.png", "/proc is never readable"),
        "missing": (str(root / "missing.png"), "no such file"),
        "directory": (str(root / "album.png"), "is a directory"),
        "fifo": (str(root / "pipe.png"), "FIFO"),
        "relative": ("photo.png", "absolute path"),
    }


@pytest.mark.parametrize(
    "case", ["outside", "dotdot", "symlink", "proc", "missing", "directory", "fifo", "relative"]
)
async def test_a_refused_input_path_is_a_clear_tool_error_and_the_next_call_succeeds(dirs, case):
    server, fake = _make(dirs)
    path, expected = _refused_paths(dirs)[case]
    async with Client(server) as client:
        refused = await client.call_tool(
            "generate",
            {"task": "image_edit", "prompt": "x", "source": path, "mask": str(dirs["root"] / "mask.png")},
        )
        assert refused.is_error
        msg = _text(refused)
        assert "input_refused" in msg and "source=" in msg and expected in msg
        if case in ("outside", "dotdot", "symlink", "proc"):
            assert str(dirs["root"].resolve()) in msg  # names the allowed roots
        assert not fake.calls  # refused before any engine work
        ok = await client.call_tool("generate", _args("image_edit", dirs["root"]))
        assert _data(ok)["status"] == "done"


async def test_a_refused_path_in_understand_media_or_an_auto_marker_is_a_tool_error(dirs):
    server, fake = _make(dirs)
    secret = dirs["outside"] / "secret.png"
    async with Client(server) as client:
        listed = await client.call_tool("understand", {"prompt": "what?", "media": [str(secret)]})
        marker = await client.call_tool("auto", {"prompt": f"describe ###{secret}###"})
        assert listed.is_error and "media[0]=" in _text(listed)
        assert marker.is_error and "prompt marker=" in _text(marker)
        assert not fake.calls
        assert _data(await client.call_tool("understand", {"prompt": "still there?"}))["answer"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"task": "text_to_image", "prompt": "x", "width": 8}, "greater than or equal to 16"),
        ({"task": "text_to_image", "prompt": "x", "steps": 0}, "greater than or equal to 1"),
        ({"task": "text_to_video", "prompt": "x", "num_frames": 2}, "num_frames=2: text_to_video makes 5 to"),
        ({"task": "text_to_video", "prompt": "x", "num_frames": 9, "duration_s": 2}, "not both"),
        (
            {"task": "text_to_image", "prompt": "x", "width": 8000, "height": 480},
            "less than or equal to 7680",
        ),
        ({"task": "image_edit", "prompt": "x", "mask": "SRC"}, "image_edit needs 1 source input(s)"),
        ({"task": "text_to_image", "prompt": "x", "source": "SRC"}, "text_to_image does not take source"),
        ({"task": "image_to_video", "prompt": "x", "first_frame": "CLIP"}, "must be an image"),
        ({"task": "make_coffee", "prompt": "x"}, "Input should be"),
        ({"task": "text_to_image", "prompt": ""}, "at least 1 character"),
    ],
)
async def test_bad_parameters_are_tool_errors_naming_the_field_and_the_rule(dirs, args, expected):
    server, fake = _make(dirs)
    args = {k: str(dirs["root"] / "photo.png") if v == "SRC" else v for k, v in args.items()}
    args = {k: str(dirs["root"] / "clip.mp4") if v == "CLIP" else v for k, v in args.items()}
    async with Client(server) as client:
        bad = await client.call_tool("generate", args)
        assert bad.is_error and expected in _text(bad), _text(bad)
        assert not fake.calls
        assert _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "ok"}))


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        (
            "raise:oom",
            "out_of_memory: the accelerator ran out of memory; caches were freed. Retry with a smaller",
        ),
        ("raise:model", "model_error: adapter not found at /nowhere"),
    ],
)
async def test_an_engine_failure_inside_a_job_is_an_actionable_tool_error(dirs, trigger, expected):
    server, _ = _make(dirs)
    async with Client(server) as client:
        failed = await client.call_tool("generate", {"task": "text_to_image", "prompt": trigger})
        assert failed.is_error and expected in _text(failed)
        assert _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "fine"}))


async def test_an_unexpected_exception_is_a_generic_tool_error_with_the_traceback_logged(dirs, caplog):
    server, _ = _make(dirs)
    async with Client(server) as client:
        failed = await client.call_tool("understand", {"prompt": "raise:bug"})
        assert failed.is_error
        assert "internal_error" in _text(failed) and "RuntimeError" in _text(failed)
        assert "secret internal detail" not in _text(failed)
        assert _data(await client.call_tool("understand", {"prompt": "fine"}))["answer"]
    logged = [r for r in caplog.records if r.name == "unison_mcp.errors"]
    assert logged and logged[0].exc_info is not None


async def test_a_corrupt_or_oversized_input_is_refused_before_any_job_is_queued(dirs):
    server, fake = _make(dirs)
    (dirs["root"] / "broken.png").write_bytes(b"not a png at all")
    Image.new("1", (9000, 8000)).save(dirs["root"] / "bomb.png")  # 72 MP declared, a few kB on disk
    (dirs["root"] / "broken.mp4").write_bytes(b"\x00" * 64)
    async with Client(server) as client:
        broken = await client.call_tool(
            "generate", {"task": "image_control", "prompt": "x", "control": str(dirs["root"] / "broken.png")}
        )
        bomb = await client.call_tool(
            "understand", {"prompt": "what?", "media": [str(dirs["root"] / "bomb.png")]}
        )
        clip = await client.call_tool(
            "generate",
            {
                "task": "video_extend",
                "prompt": "x",
                "source": str(dirs["root"] / "broken.mp4"),
                "num_frames": 17,
            },
        )
    assert broken.is_error and "not a readable image" in _text(broken)
    assert bomb.is_error and "72000000 pixels; the limit is" in _text(bomb)
    assert clip.is_error and "input_refused" in _text(clip)
    assert not fake.calls and state_of(server).queue.jobs() == []


# ---------------------------------------------------------------------------------------------
# Review fixes: each test failed before its fix


async def test_the_status_of_a_job_that_failed_unexpectedly_keeps_internal_details_on_the_server(dirs):
    server, fake = _make(dirs, wait_s=0)
    fake.hold = threading.Event()  # the job fails only after the call has returned its handle
    async with Client(server) as client:
        handle = _data(await client.call_tool("understand", {"prompt": "raise:bug"}))
        job = state_of(server).queue.get(handle["job_id"])
        fake.hold.set()
        assert await anyio.to_thread.run_sync(job.wait, 10)
        status = await client.call_tool("job", {"action": "status", "job_id": handle["job_id"]})
    data = _data(status)
    assert data["status"] == "failed"
    assert "secret internal detail" not in data["error"] and "secret internal detail" not in _text(status)
    assert data["error"].startswith("internal_error: understand failed unexpectedly (RuntimeError)")


async def test_a_cancel_that_has_not_landed_yet_says_so_instead_of_inviting_a_wait(dirs):
    server, fake = _make(dirs, wait_s=0)
    fake.hold = threading.Event()  # the job is running but has not reached its next step
    async with Client(server) as client:
        handle = _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "x"}))
        job = state_of(server).queue.get(handle["job_id"])
        with anyio.fail_after(10):
            while job.status != "running":
                await anyio.sleep(0.01)
        cancelling = await client.call_tool("job", {"action": "cancel", "job_id": handle["job_id"]})
        assert _data(cancelling)["status"] == "running"
        text = _text(cancelling)
        assert "cancel was requested" in text and "nothing is written" in text
        assert "to wait for its result" not in text
        fake.hold.set()
        assert await anyio.to_thread.run_sync(job.wait, 10)
        done = _data(await client.call_tool("job", {"action": "status", "job_id": handle["job_id"]}))
    assert done["status"] == "cancelled"
    assert list(dirs["out"].iterdir()) == []


async def test_reading_an_output_name_too_long_for_the_file_system_is_not_found_not_an_internal_error(dirs):
    from mcp.shared.exceptions import MCPError

    server, _ = _make(dirs)
    async with Client(server) as client:
        with pytest.raises(MCPError) as err:
            await client.read_resource("unison://outputs/" + "a" * 300 + ".png")
    assert "no output named" in str(err.value)


async def test_an_output_swapped_for_a_symlink_is_not_read(dirs):
    from mcp.shared.exceptions import MCPError

    server, _ = _make(dirs)
    secret = dirs["outside"] / "secret.png"
    async with Client(server) as client:
        data = _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "x"}))
        path = Path(data["outputs"][0]["path"])
        path.unlink()  # another process replaces the output by a link to a secret
        path.symlink_to(secret)
        with pytest.raises(MCPError) as err:
            await client.read_resource(data["outputs"][0]["uri"])
    assert "no output named" in str(err.value) and "secret" not in str(err.value.error.data)


async def test_the_descriptions_state_the_configured_video_frame_rate(dirs):
    econf = EngineConfig(planner_model=None, output_dir=dirs["out"], sampling=SamplingDefaults(fps=24.0))
    server = build_server(ServerConfig(engine=econf), engine=FakeEngine(econf))
    async with Client(server) as client:
        (gen,) = [t for t in (await client.list_tools()).tools if t.name == "generate"]
    assert gen.input_schema["properties"]["fps"]["description"] == "video frame rate (default 24)"
    async with Client(server) as client:
        (guide,) = (await client.read_resource("unison://guide")).contents
    assert "(at `fps`, default 24)" in guide.text and "default 16" not in guide.text


async def test_more_input_files_than_the_limit_are_refused_before_any_is_probed(dirs, monkeypatch):
    probed: list[str] = []
    opened = InputPolicy.open
    monkeypatch.setattr(InputPolicy, "probe", lambda self, source: probed.append(str(source)))
    monkeypatch.setattr(
        InputPolicy, "open", lambda self, *a, **kw: probed.append("open") or opened(self, *a, **kw)
    )
    server, fake = _make(dirs)
    photo = dirs["root"] / "photo.png"
    inline = " ".join(f"###{photo}###" for _ in range(5))
    async with Client(server) as client:
        # 5 markers + 4 listed files = 9 inputs; the limit is 8, counted over both.
        too_many = await client.call_tool("understand", {"prompt": inline, "media": [str(photo)] * 4})
        auto = await client.call_tool("auto", {"prompt": inline + " " + inline})
    assert too_many.is_error and "media=9: at most 8 input files" in _text(too_many), _text(too_many)
    assert auto.is_error and "media=10: at most 8 input files" in _text(auto), _text(auto)
    assert probed == [] and not fake.calls


# ---------------------------------------------------------------------------------------------
# One fake, one protocol; the engine's request models are the tools' schemas (issue 8)


@pytest.mark.parametrize("member", members(EngineAPI))
@pytest.mark.parametrize("cls", [Engine, FakeEngine], ids=lambda c: c.__name__)
def test_the_real_engine_and_the_fake_satisfy_the_engine_protocol_with_the_same_signatures(
    cls, member, tmp_path
):
    # Every member the protocol declares (a new one included), with the same signature.
    declared = inspect.getattr_static(EngineAPI, member, None)
    if inspect.isfunction(declared):
        assert inspect.signature(getattr(cls, member)) == inspect.signature(declared), (cls.__name__, member)
    assert mismatch(EngineAPI, cls, member) is None
    engine = cls(EngineConfig(planner_model=None, output_dir=tmp_path))
    assert isinstance(engine, EngineAPI)
    assert isinstance(engine.inputs, InputPolicy) and isinstance(engine.config, EngineConfig)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ({"task": "text_to_video", "prompt": "x", "num_frame": 17}, "num_frame: unknown; did you mean num_frames?"),
        ({"task": "text_to_image", "prompt": "x", "bogus_field": 1}, "bogus_field"),
        ({"task": "text_to_image", "prompt": "x", "steps": True}, "steps"),
        ({"task": "text_to_image", "prompt": "   "}, "prompt"),
        ({"task": "image_edit", "prompt": "x", "source": "SRC", "mask": "SRC", "margins": {"left": 16}},
         "image_edit does not take margins; it takes"),
        ({"task": "text_to_video", "prompt": "x", "context_frames": 5}, "text_to_video does not take context_frames"),
        ({"task": "text_to_image", "prompt": "x", "fps": 24.0}, "text_to_image does not take fps; it takes"),
    ],
)  # fmt: skip
async def test_unknown_or_inapplicable_generate_arguments_are_refused_by_name_before_any_work(
    dirs, args, expected
):
    server, fake = _make(dirs)
    args = {k: str(dirs["root"] / "photo.png") if v == "SRC" else v for k, v in args.items()}
    async with Client(server) as client:
        bad = await client.call_tool("generate", args)
        assert bad.is_error and "invalid_request" in _text(bad) and expected in _text(bad), _text(bad)
        assert not fake.calls and state_of(server).queue.jobs() == []
        assert _data(await client.call_tool("generate", {"task": "text_to_image", "prompt": "ok"}))


async def test_an_unknown_argument_to_understand_or_auto_is_refused_too(dirs):
    server, fake = _make(dirs)
    async with Client(server) as client:
        und = await client.call_tool("understand", {"prompt": "x", "medias": []})
        auto = await client.call_tool("auto", {"prompt": "x", "dryrun": True})
    assert und.is_error and "medias: unknown; did you mean media?" in _text(und)
    assert auto.is_error and "dryrun: unknown; did you mean dry_run?" in _text(auto)
    assert not fake.calls


async def test_the_tool_schemas_carry_the_engine_models_bounds(dirs):
    from engine.api import MAX_PATH_CHARS, request_model

    server, fake = _make(dirs)
    limits = fake.config.limits
    async with Client(server) as client:
        tools = {t.name: t.input_schema for t in (await client.list_tools()).tools}
    gen = tools["generate"]["properties"]
    engine_gen = request_model("generate", limits).model_json_schema()["properties"]
    assert gen["guidance"]["maximum"] == engine_gen["guidance"]["anyOf"][0]["maximum"]
    assert gen["duration_s"]["maximum"] == limits.max_duration_s
    assert gen["source"]["maxLength"] == MAX_PATH_CHARS
    assert gen["reference"]["items"]["maxLength"] == MAX_PATH_CHARS
    assert tools["understand"]["properties"]["media"]["items"]["maxLength"] == MAX_PATH_CHARS
    # Every field of the request model, but the options this server is not configured for: no
    # user LoRAs here, so no `loras` (a turbo LoRA is configured by default).
    for name in ("understand", "generate", "auto"):
        fields = set(request_model(name, limits).model_fields)
        assert set(tools[name]["properties"]) == fields - {"loras"}, name


@pytest.mark.parametrize(("declared", "limit", "refused"), [((2000, 1000), 1_000_000, True), ((10000, 7000), 100_000_000, False)])  # fmt: skip
async def test_the_configured_input_pixel_limit_applies_through_mcp(dirs, declared, limit, refused):
    econf = EngineConfig(
        planner_model=None,
        output_dir=dirs["out"],
        sampling=SamplingDefaults(steps=3),
        limits=Limits(max_input_pixels=limit),
    )
    fake = FakeEngine(econf)
    server = build_server(ServerConfig(engine=econf, allowed_roots=[dirs["root"]]), engine=fake)
    big = dirs["root"] / "big.png"
    Image.new("1", declared).save(big)  # the header declares the size; a few kB on disk
    async with Client(server) as client:
        result = await client.call_tool("understand", {"prompt": "what?", "media": [str(big)]})
    if refused:
        assert result.is_error and f"{declared[0] * declared[1]} pixels; the limit is" in _text(result)
        assert not fake.calls and state_of(server).queue.jobs() == []
    else:
        assert _data(result)["answer"].startswith("I see 1 file(s)")


async def test_a_path_outside_the_roots_gets_the_same_refusal_whether_or_not_it_exists(dirs):
    server, _ = _make(dirs)
    present, absent = dirs["outside"] / "secret.png", dirs["outside"] / "nothing.png"
    async with Client(server) as client:
        texts = [
            _text(await client.call_tool("understand", {"prompt": "x", "media": [str(p)]}))
            for p in (present, absent)
        ]
    assert "outside the allowed roots" in texts[0]
    assert texts[0].replace(str(present), "PATH") == texts[1].replace(str(absent), "PATH")


def _replay(plan: dict[str, Any]) -> dict[str, Any]:
    """A dry run's plan as `generate` arguments: its fields, inputs by their role."""
    args = {
        k: plan.get(k)  # a field the plan leaves unset is left out
        for k in ("task", "prompt", "width", "height", "num_frames", "fps", "margins", "context_frames")
    }
    args = {k: v for k, v in args.items() if v is not None}
    for m in plan["inputs"]:
        if m["role"] == "reference":
            args.setdefault("reference", []).append(m["path"])
        else:
            args[m["role"]] = m["path"]
    return args


@pytest.mark.parametrize(
    ("request_text", "task", "field", "value"),
    [
        ("outpaint ###{root}/photo.png### by 16 pixels on the left", "image_outpaint", "margins",
         {"left": 16, "top": 0, "right": 0, "bottom": 0}),
        ("continue ###{root}/clip.mp4### for 2 seconds", "video_extend", "context_frames", 9),
    ],
)  # fmt: skip
async def test_a_dry_run_plan_keeps_margins_and_context_frames_and_replays_through_generate(
    dirs, request_text, task, field, value
):
    server, _ = _make(dirs)
    async with Client(server) as client:
        dry = _data(
            await client.call_tool(
                "auto", {"prompt": request_text.format(root=dirs["root"]), "dry_run": True}
            )
        )
        assert dry["plan"]["task"] == task and dry["plan"][field] == value
        replayed = _data(await client.call_tool("generate", _replay(dry["plan"])))
    assert replayed["plan"]["task"] == task and replayed["plan"][field] == value
    same = ("width", "height", "num_frames", "fps", "margins", "context_frames", "inputs")
    assert {k: replayed["plan"].get(k) for k in same} == {k: dry["plan"].get(k) for k in same}


async def test_admitted_inputs_are_closed_when_the_queue_is_busy_or_a_queued_job_is_cancelled(
    dirs, monkeypatch
):
    opened: list[Any] = []
    real_open = InputPolicy.open

    def recording_open(self, *args, **kwargs):
        opened.append(real_open(self, *args, **kwargs))
        return opened[-1]

    monkeypatch.setattr(InputPolicy, "open", recording_open)
    server, fake = _make(dirs, wait_s=0, queue_size=1)
    fake.hold = threading.Event()
    media = [str(dirs["root"] / "photo.png")]
    async with Client(server) as client:
        await client.call_tool("understand", {"prompt": "one"})  # runs (held)
        queued = _data(await client.call_tool("understand", {"prompt": "two", "media": media}))
        busy = await client.call_tool("understand", {"prompt": "three", "media": media})
        assert busy.is_error and "busy" in _text(busy)
        assert len(opened) == 2 and not opened[0].closed and opened[1].closed  # the busy call's input
        await client.call_tool("job", {"action": "cancel", "job_id": queued["job_id"]})
        assert opened[0].closed  # never ran, closed all the same
        fake.hold.set()


# ---------------------------------------------------------------------------------------------
# Errors stay short: no answer and no log line grows with what the client sent

_HUGE_LIST_TEXT = "[" + '"/a.png",' * 1_000_000 + '"/b.png"]'  # a list sent as a 9 MB string


@pytest.mark.parametrize(
    ("tool", "args", "starts", "size"),
    [
        ("generate", {"task": "text_to_image", "prompt": "x" * 10_000_000}, "prompt='xx", "(10,000,000 characters)"),
        ("understand", {"prompt": "x" * 10_000_000}, "prompt='xx", "(10,000,000 characters)"),
        ("auto", {"prompt": "x" * 1_000_000}, "prompt='xx", "(1,000,000 characters)"),
        ("generate", {"task": "image_edit", "prompt": "x", "source": "/" + "a" * 100_000 + ".png"}, "source='/aa", "(100,005 characters)"),
        ("generate", {"task": "text_to_image", "prompt": "x", "negative_prompt": "n" * 1_000_000}, "negative_prompt='nn", "(1,000,000 characters)"),
        ("generate", {"task": "image_edit", "prompt": "x", "target": "t" * 1_000_000}, "target='tt", "(1,000,000 characters)"),
        ("generate", {"task": "image_reference", "prompt": "x", "reference": ["/" + "r" * 100_000]}, "reference.0='/rr", "(100,001 characters)"),
        ("understand", {"prompt": "x", "media": ["unison://outputs/" + "m" * 100_000]}, "media.0='unison://outputs/mm", "(100,017 characters)"),
        ("understand", {"prompt": "x", "media": _HUGE_LIST_TEXT}, "media='[", "(9,000,010 characters)"),
        ("generate", {"task": "t" * 1_000_000, "prompt": "x"}, "task='tt", "(1,000,000 characters)"),
        ("generate", {"task": "text_to_image", "prompt": ["x" * 1_000] * 10_000}, "prompt=['xx", "(10,000 items)"),
        ("job", {"action": "status", "job_id": "j" * 1_000_000}, "job_id='jj", "(1,000,000 characters)"),
        ("t" * 1_000_000, {}, "name='tt", "(1,000,000 characters)"),
    ],
    ids=["prompt", "understand", "auto", "path", "negative", "target", "reference", "uri", "json-text", "task", "list", "job_id", "tool"],
)  # fmt: skip
async def test_a_huge_argument_is_refused_in_a_short_error_naming_it_and_its_length_and_logged_short(
    dirs, caplog, tool, args, starts, size
):
    caplog.set_level(logging.DEBUG)
    server, fake = _make(dirs)
    async with Client(server) as client:
        tracemalloc.start()
        try:
            refused = await client.call_tool(tool, args)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        text = _text(refused)
        assert refused.is_error and text.startswith(f"invalid_request: {starts}"), text[:300]
        assert size in text and len(text) < 1_000, text
        # Reading and refusing it, no more: no copy, echo or parse of the value (the in-memory
        # client's own handling included, which takes 2 MB for a 1 MB tool name).
        assert peak < 3_000_000, f"{peak:,} bytes"
        assert not fake.calls
        assert _data(await client.call_tool("understand", {"prompt": "still there?"}))["answer"]
    logged = [r.getMessage() for r in caplog.records]
    field = starts.split("=")[0]
    assert any(f"invalid_request: {field}=" in line for line in logged), logged  # the SDK logs the refusal
    assert all(len(line) < 1_000 for line in logged), max(logged, key=len)[:300]


@pytest.mark.parametrize("uri", ["unison://outputs/" + "a" * 1_000_000, "file:///" + "a" * 1_000_000])
async def test_a_huge_resource_uri_is_refused_in_a_short_json_rpc_error_and_log_line(dirs, caplog, uri):
    caplog.set_level(logging.DEBUG)
    server, _ = _make(dirs)
    async with Client(server) as client:
        with pytest.raises(MCPError) as err:
            await client.read_resource(uri)
    error = err.value.error
    assert len(error.message) < 1_000 and "characters)" in error.message, error.message[:300]
    assert len(json.dumps(error.data)) < 1_000
    assert all(len(r.getMessage()) < 1_000 for r in caplog.records)


async def test_a_huge_unknown_method_is_answered_with_a_short_json_rpc_error(dirs, caplog):
    import mcp_types
    from pydantic import TypeAdapter

    caplog.set_level(logging.DEBUG)
    server, _ = _make(dirs)
    async with Client(server) as client:
        with pytest.raises(MCPError) as err:
            request = mcp_types.Request(method="m" * 1_000_000, params={})
            await client.session.send_request(request, TypeAdapter(dict[str, Any]))
        assert _data(await client.call_tool("understand", {"prompt": "still there?"}))["answer"]
    error = err.value.error
    assert error.message == "Method not found" and error.data.endswith("(1,000,000 characters)")
    assert len(json.dumps(error.data)) < 1_000
    assert all(len(r.getMessage()) < 1_000 for r in caplog.records)


async def test_each_free_text_argument_has_a_max_length_declared_once(dirs):
    from engine.api import MAX_PATH_CHARS
    from engine.plan import MAX_TARGET_CHARS, Plan

    limits = Limits(default_width=64, default_height=48, default_frames=9, max_prompt_chars=50)
    econf = EngineConfig(planner_model=None, output_dir=dirs["out"], limits=limits)
    server = build_server(ServerConfig(engine=econf, allowed_roots=[dirs["root"]]), engine=FakeEngine(econf))
    async with Client(server) as client:
        tools = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        too_long = await client.call_tool("generate", {"task": "text_to_image", "prompt": "p" * 51})

    def strings(schema: dict[str, Any], defs: dict[str, Any], where: str):
        """Every string in ``schema`` with where it is: (path, its schema)."""
        if "$ref" in schema:
            yield from strings(defs[schema["$ref"].rsplit("/", 1)[-1]], defs, where)
        if "string" in (kinds := schema.get("type", ())) and (kinds == "string" or isinstance(kinds, list)):
            yield where, schema
        for key, sub in schema.get("properties", {}).items():
            yield from strings(sub, defs, f"{where}.{key}")
        for sub in [*([schema["items"]] if "items" in schema else []), *schema.get("anyOf", [])]:
            yield from strings(sub, defs, where)

    bounds: dict[str, Any] = {}
    for name, schema in tools.items():
        for where, s in strings(schema, schema.get("$defs", {}), name):
            assert "maxLength" in s or "enum" in s or "const" in s, f"{where} has no maxLength"
            bounds[where] = s.get("maxLength")
    assert bounds["generate.prompt"] == bounds["generate.negative_prompt"] == bounds["auto.prompt"] == 50
    assert bounds["understand.prompt"] == 50
    for where in ("generate.source", "generate.reference", "understand.media", "auto.media"):
        assert bounds[where] == MAX_PATH_CHARS, where
    # The plan the `auto` tool returns (and `generate` replays) takes the same target bound.
    assert (
        bounds["generate.target"] == Plan.model_json_schema()["properties"]["target"]["anyOf"][0]["maxLength"]
    )
    assert bounds["generate.target"] == MAX_TARGET_CHARS
    assert too_long.is_error and "at most 50 characters" in _text(too_long)

"""The tools against the REAL engine on the tiny models (random weights, real formats, CPU).

One engine is shared by the module (loading even tiny models takes seconds); each test builds
its own server around it, as ``build_server(config, engine)`` allows. The answers and pictures
are noise, but every layer is real: path policy, plan, planner, projector, Wan-VACE sampling with
per-step progress and cancel, the PNG/MP4 writer, previews and resources.
"""

from __future__ import annotations

import base64
import re
from pathlib import Path

import anyio
import numpy as np
import pytest
from mcp import Client
from PIL import Image

from engine.tiny.qwen import EXAMPLES
from unison_mcp.config import ServerConfig
from unison_mcp.server import build_server
from unison_mcp.state import state_of


@pytest.fixture(scope="module")
def real(tiny_paths, tmp_path_factory):
    from engine.config import EngineConfig
    from engine.engine import Engine
    from engine.media import encode_mp4

    base = tmp_path_factory.mktemp("real")
    root = base / "inputs"
    root.mkdir()
    Image.new("RGB", (64, 48), (220, 40, 40)).save(root / "photo.png")
    for name in ("start.png", "end.png", "face.jpg", "cat.png", "depth.png"):  # files the examples name
        Image.new("RGB", (64, 48), (40, 40, 220)).save(root / name)
    for name in ("clip.mp4", "pose.mp4"):
        encode_mp4(root / name, np.full((9, 48, 64, 3), 90, dtype=np.uint8), 16.0)
    # A plain, colourful video (not a control signal already): what a user films.
    y, x = np.mgrid[0:48, 0:64]
    scene = np.stack([(x * 4 + 8 * t, y * 5, 255 - x * 3) for t in range(9)], axis=0)
    encode_mp4(root / "dance.mp4", np.moveaxis(scene, 1, -1).clip(0, 255).astype(np.uint8), 16.0)
    mask = Image.new("L", (64, 48), 0)
    mask.paste(255, (16, 12, 48, 36))
    mask.save(root / "mask.png")
    config = EngineConfig.tiny(tiny_paths.root, output_dir=base / "outputs")
    engine = Engine(config)
    return {"engine": engine, "root": root, "out": Path(config.output_dir)}


def _server(real, **kw):
    cfg = ServerConfig(engine=real["engine"].config, allowed_roots=[real["root"]], **kw)
    return build_server(cfg, engine=real["engine"])


def _data(result) -> dict:
    assert not result.is_error, [c.text for c in result.content if c.type == "text"]
    return result.structured_content


def _files(out: Path) -> set[str]:
    return {p.name for p in out.iterdir()} if out.exists() else set()


async def test_understand_answers_about_an_image_with_the_real_planner(real):
    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "understand", {"prompt": "What colour is this?", "media": [str(real["root"] / "photo.png")]}
        )
        text_only = await client.call_tool("understand", {"prompt": "Say hello."})
    data = _data(result)
    assert isinstance(data["answer"], str) and data["model"]
    assert data["timings"]["total_s"] > 0
    assert isinstance(_data(text_only)["answer"], str)


async def test_text_to_image_reports_one_progress_notification_per_step_and_returns_a_png(real):
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "generate",
            {"task": "text_to_image", "prompt": "a red fox", "steps": 3, "seed": 7},
            progress_callback=on_progress,
        )
    data = _data(result)
    (out,) = data["outputs"]
    assert data["steps"] == 3 and data["seed"] == 7 and data["projector"] is True
    steps = [(p, t) for p, t, m in seen if m and m.startswith("generating ")]
    assert [m for _, _, m in seen if m and m.startswith("generating ")] == [
        f"generating {k}/3" for k in (1, 2, 3)
    ]
    assert len({t for _, t in steps}) == 1 and steps[-1][0] == steps[-1][1]  # counted to its total
    assert [p for p, _, _ in seen] == sorted({p for p, _, _ in seen})
    with Image.open(out["path"]) as img:
        assert img.format == "PNG" and img.size == (64, 48)
    assert any(c.type == "image" for c in result.content)


async def test_chaining_generate_edit_animate_through_unison_uris_on_the_real_engine(real):
    async with Client(_server(real)) as client:
        image = _data(
            await client.call_tool("generate", {"task": "text_to_image", "prompt": "a cat", "steps": 1})
        )
        edited = _data(
            await client.call_tool(
                "generate",
                {
                    "task": "image_edit",
                    "prompt": "a cat with a hat",
                    "source": image["outputs"][0]["uri"],
                    "mask": str(real["root"] / "mask.png"),
                    "steps": 1,
                },
            )
        )
        video_result = await client.call_tool(
            "generate",
            {
                "task": "image_to_video",
                "prompt": "the cat waves",
                "first_frame": edited["outputs"][0]["uri"],
                "steps": 1,
            },
        )
        video = _data(video_result)
        (clip,) = video["outputs"]
        read = await client.read_resource(clip["uri"])
    assert edited["plan"]["inputs"][0]["path"] == image["outputs"][0]["path"]
    assert video["plan"]["inputs"] == [
        {"path": edited["outputs"][0]["path"], "kind": "image", "role": "first_frame"}
    ]
    assert clip["kind"] == "video" and clip["num_frames"] == 9 and clip["fps"] == 16.0
    assert clip["duration_s"] == pytest.approx(9 / 16)
    assert read.contents[0].mime_type == "video/mp4"
    assert base64.b64decode(read.contents[0].blob) == Path(clip["path"]).read_bytes()
    assert any(c.type == "image" for c in video_result.content)  # the contact sheet


def _example_request(request: str, root: Path) -> str:
    """A training request of the tiny planner with its ###name### markers pointing at real files."""
    return re.sub(r"###(.+?)###", lambda m: f"###{root / m.group(1)}###", request)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.task.value)
async def test_auto_dry_run_reaches_every_task_of_the_grammar_with_the_real_planner(real, example):
    async with Client(_server(real)) as client:
        before = _files(real["out"])
        result = await client.call_tool(
            "auto", {"prompt": _example_request(example.request, real["root"]), "dry_run": True}
        )
        assert _files(real["out"]) == before  # a dry run writes nothing
    data = _data(result)
    assert data["dry_run"] is True and data["plan"]["task"] == example.task.value
    assert "outputs" not in data and "answer" not in data  # unset fields are left out
    assert all(Path(i["path"]).parent == real["root"].resolve() for i in data["plan"]["inputs"])


async def test_auto_generates_a_video_or_answers_as_the_real_planner_decides(real):
    async with Client(_server(real)) as client:
        video = _data(
            await client.call_tool(
                "auto", {"prompt": "Make a video of waves crashing on a beach.", "steps": 1}
            )
        )
        answer = _data(await client.call_tool("auto", {"prompt": "What is the capital of France?"}))
    assert video["plan"]["task"] == "text_to_video"
    (clip,) = video["outputs"]
    assert clip["kind"] == "video" and (clip["width"], clip["height"], clip["num_frames"]) == (
        64,
        48,
        9,
    )
    assert Path(clip["path"]).is_file()
    assert answer["plan"]["task"] == "text_understanding"
    assert isinstance(answer["answer"], str) and "outputs" not in answer


async def test_auto_plans_then_generates_or_answers_and_a_dry_run_only_plans(real):
    """The engine's own routing (issue 19: this ran on the fake's copy of it before)."""
    photo = real["root"] / "photo.png"
    async with Client(_server(real)) as client:
        before = _files(real["out"])
        image = await client.call_tool("auto", {"prompt": "a red fox in snow"})
        video = await client.call_tool("auto", {"prompt": "a video of waves"})
        answer = await client.call_tool("auto", {"prompt": "what is shown?", "media": [str(photo)]})
        dry = await client.call_tool("auto", {"prompt": "a video of rain", "dry_run": True})
        # The same question on the same file through `understand`: what auto routed to answers it.
        asked = await client.call_tool("understand", {"prompt": "what is shown?", "media": [str(photo)]})
    assert _data(image)["plan"]["task"] == "text_to_image" and len(_data(image)["outputs"]) == 1
    assert _data(video)["outputs"][0]["kind"] == "video"
    answered = _data(answer)
    assert answered["plan"]["task"] == "image_understanding" and "outputs" not in answered
    assert [i["path"] for i in answered["plan"]["inputs"]] == [str(photo.resolve())]
    assert answered["answer"] and answered["answer"] == _data(asked)["answer"]
    dry_data = _data(dry)
    assert dry_data["dry_run"] is True and dry_data["plan"]["task"] == "text_to_video"
    assert "outputs" not in dry_data and dry_data["plan"]["num_frames"] == 9
    assert len([n for n in _files(real["out"]) - before if not n.endswith(".json")]) == 2


async def test_cancelling_a_real_generation_mid_way_writes_nothing(real):
    server = _server(real)
    first = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        first.set()

    async with Client(server) as client:
        before = _files(real["out"])
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                await client.call_tool(
                    "generate",
                    {"task": "text_to_video", "prompt": "rain", "steps": 60},
                    progress_callback=on_progress,
                )

            tg.start_soon(call)
            with anyio.fail_after(60):
                await first.wait()
            tg.cancel_scope.cancel()
        (job,) = state_of(server).queue.jobs()
        assert await anyio.to_thread.run_sync(job.wait, 60)
    assert job.status == "cancelled" and job.progress()["done"] < 60
    assert _files(real["out"]) == before


# ---------------------------------------------------------------------------------------------
# What a user keeps (issue 9), through MCP


async def test_candidates_come_back_each_with_its_uri_seed_and_preview(real):
    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "generate", {"task": "text_to_image", "prompt": "a fox", "count": 2, "seed": 40, "steps": 1}
        )
    data = _data(result)
    assert [o["seed"] for o in data["outputs"]] == [40, 41]
    (text,) = [c.text for c in result.content if c.type == "text"]
    for out in data["outputs"]:
        assert f"{out['uri']} → {out['path']}" in text and f"seed {out['seed']}" in text
    assert [c.type for c in result.content] == ["text", "image", "image"]  # one preview per candidate


async def test_an_edit_through_mcp_keeps_the_unmasked_pixels_of_the_source(real):
    root = real["root"]
    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "generate",
            {
                "task": "image_edit",
                "prompt": "a hat",
                "source": str(root / "photo.png"),
                "mask": str(root / "mask.png"),
                "steps": 1,
            },
        )
    out = _data(result)["outputs"][0]
    got = np.asarray(Image.open(out["path"]).convert("RGB"))
    # photo.png is flat red; the mask's box is (16, 12)-(48, 36): far from it, the source is exact.
    assert (got[:6] == (220, 40, 40)).all() and (got[:, :8] == (220, 40, 40)).all()
    assert any("preserved" in n for n in _data(result)["notes"])


async def test_video_extend_through_mcp_returns_the_whole_clip_and_the_new_part(real):
    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "generate",
            {
                "task": "video_extend",
                "prompt": "on",
                "source": str(real["root"] / "clip.mp4"),
                "num_frames": 5,
                "steps": 1,
            },
        )
    whole, new = _data(result)["outputs"]
    assert (whole["role"], new["role"]) == ("result", "new_part")
    assert (whole["num_frames"], new["num_frames"]) == (9 + 5, 5)


async def test_auto_never_runs_a_plan_that_dropped_the_users_files(real):
    """The tiny Unison LoRA answers an unseen request with a plan of its own; with files given,
    a generation plan that ignores them is re-planned by the rules planner (or refused)."""
    engine = real["engine"]
    config = engine.config.model_copy(update={"planner_backend": "unison"})
    from engine.engine import Engine

    eng = Engine(config, planner=engine.planner, generator=engine.generator, projector=engine.projector())
    cfg = ServerConfig(engine=config, allowed_roots=[real["root"]])
    async with Client(build_server(cfg, engine=eng)) as client:
        result = await client.call_tool(
            "auto", {"prompt": f"animate ###{real['root'] / 'photo.png'}### for one second", "dry_run": True}
        )
    data = _data(result)
    # Whatever the tiny LoRA answers, the plan that would run uses the user's file (a plan that
    # ignored it would have been planned again by the rules: see test_route.py for each case).
    used = [m["path"] for m in data["plan"]["inputs"]]
    assert used == [str(real["root"] / "photo.png")]
    assert data["plan"]["task"] not in ("text_to_image", "text_to_video")


# ---------------------------------------------------------------------------------------------
# Masks and control signals from plain media (issue 10), through MCP on the tiny annotators


@pytest.mark.parametrize("kind", ["pose", "depth", "edges", "flow", "gray"])
async def test_video_control_extracts_each_kind_from_a_plain_video_and_returns_it(real, kind):
    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "generate",
            {
                "task": "video_control",
                "prompt": "an astronaut",
                "control": str(real["root"] / "dance.mp4"),
                "control_kind": kind,
                "steps": 1,
            },
        )
    outputs = _data(result)["outputs"]
    assert [o["role"] for o in outputs] == ["result", "control"]
    assert outputs[0]["num_frames"] == outputs[1]["num_frames"] == 9
    assert any(f"{kind} extracted" in n for n in _data(result)["notes"])


async def test_an_image_edit_without_a_mask_returns_the_result_and_the_mask_it_found(real):
    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "generate",
            {"task": "image_edit", "prompt": "make the ball blue", "source": str(real["root"] / "photo.png"),
             "target": "ball", "steps": 1},
        )  # fmt: skip
    outputs = _data(result)["outputs"]
    assert [o["role"] for o in outputs] == ["result", "mask"]
    mask = np.asarray(Image.open(outputs[1]["path"]).convert("L"))
    assert set(np.unique(mask)) <= {0, 255} and mask.max() == 255


async def test_a_video_edit_whose_target_is_not_found_is_a_clear_error(real, tmp_path_factory):
    import shutil

    from engine.engine import Engine

    # A copy of the tiny segmenter that never finds anything (its detection threshold at 1).
    base = real["engine"].config
    blind = tmp_path_factory.mktemp("blind") / "segment"
    shutil.copytree(base.annotators.segment_model, blind)
    cfg_file = blind / "config.json"
    import json

    cfg = json.loads(cfg_file.read_text())
    cfg["score_threshold_detection"] = 1.0
    cfg_file.write_text(json.dumps(cfg))
    config = base.model_copy(
        update={"annotators": base.annotators.model_copy(update={"segment_model": str(blind)})}
    )
    eng = Engine(config, planner=real["engine"].planner, generator=real["engine"].generator)
    server = build_server(ServerConfig(engine=config, allowed_roots=[real["root"]]), engine=eng)
    async with Client(server) as client:
        result = await client.call_tool(
            "generate",
            {"task": "video_edit", "prompt": "remove the car", "source": str(real["root"] / "clip.mp4"),
             "target": "car", "steps": 1},
        )  # fmt: skip
    assert result.is_error
    text = " ".join(c.text for c in result.content if c.type == "text")
    assert "no region matching 'car' was found" in text and "give a mask" in text


async def test_auto_routes_following_the_moves_of_a_dance_to_pose_control(real):
    async with Client(_server(real)) as client:
        result = await client.call_tool(
            "auto",
            {
                "prompt": f"make an astronaut follow the moves in ###{real['root'] / 'clip.mp4'}###",
                "dry_run": True,
            },
        )
    plan = _data(result)["plan"]
    assert (plan["task"], plan["control_kind"]) == ("video_control", "pose")

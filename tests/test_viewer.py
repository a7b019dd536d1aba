"""The result viewer's server side, through the SDK's in-memory client (the view itself runs in a
real browser in test_viewer_browser.py).

A client that negotiated MCP Apps (``io.modelcontextprotocol/ui`` with the app MIME type) sees the
``ui://`` resource, the ``_meta.ui`` links on generate, auto and job, and the viewer's app-only
tools; any other client sees the server as it was before the viewer (tools/list, resources/list
and the tools' results). The engine is the scripted fake of test_server_tools.py (real admission,
real files).
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from pathlib import Path
from typing import Any

import anyio
import numpy as np
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID, Apps
from PIL import Image
from test_server_tools import FakeEngine

from engine.config import EngineConfig, Limits, SamplingDefaults
from unison_mcp import server as server_module
from unison_mcp.config import ServerConfig
from unison_mcp.server import build_server
from unison_mcp.state import JobCalls
from unison_mcp.viewer import VIEWER_URI
from unison_mcp.viewer.tools import MAX_MASK_CHARS

APPS = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
APP_TOOLS = {"viewer_mask", "viewer_run", "viewer_jobs"}
#: A name write_output gives: time, task, short id.
OUTPUT_NAME = re.compile(r"\d{8}T\d{6}Z-mask-[0-9a-f]{8}\.png")


@pytest.fixture()
def made(tmp_path: Path) -> dict[str, Any]:
    root, out = tmp_path / "inputs", tmp_path / "outputs"
    root.mkdir()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(root / "photo.png")
    econf = EngineConfig(
        planner_model=None,
        output_dir=out,
        sampling=SamplingDefaults(steps=3),
        limits=Limits(default_width=64, default_height=48, default_frames=9, max_input_pixels=64 * 64),
    )
    fake = FakeEngine(econf)
    server = build_server(ServerConfig(engine=econf, allowed_roots=[root]), engine=fake)
    return {"server": server, "fake": fake, "root": root, "out": out}


def _wire(listing: Any) -> list[dict]:
    """tools/list or resources/list as the JSON a client reads."""
    items = getattr(listing, "tools", None) or getattr(listing, "resources", None) or []
    return [item.model_dump(mode="json", by_alias=True, exclude_none=True) for item in items]


def _text(result: Any) -> str:
    return "\n".join(c.text for c in result.content if c.type == "text")


def _png(array: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _name(output: dict) -> str:
    """An output's file name: the last part of its ``unison://outputs/`` URI."""
    return output["uri"].rpartition("/")[2]


def _files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir()) if out.exists() else []


# ---------------------------------------------------------------------------------------------
# Clients with and without MCP Apps


def _without_viewer(monkeypatch: pytest.MonkeyPatch, made: dict[str, Any]) -> Any:
    """The same server built as it was before the viewer: no MCP Apps resource, no ``_meta.ui``
    links, no app-only tools, no listing middleware."""

    async def unchanged(ctx: Any, call_next: Any) -> Any:
        return await call_next(ctx)

    monkeypatch.setattr(server_module, "viewer_extension", lambda state: Apps())
    monkeypatch.setattr(server_module, "add_app_tools", lambda server: None)
    monkeypatch.setattr(server_module, "for_client", unchanged)
    monkeypatch.setattr(server_module, "LINK", None)
    config = made["server"].state.config
    return build_server(config, engine=FakeEngine(config.engine))


async def test_a_client_without_apps_lists_what_it_listed_before_the_viewer(made, monkeypatch):
    before = _without_viewer(monkeypatch, made)
    async with (
        Client(made["server"]) as plain,
        Client(made["server"], extensions=[APPS]) as host,
        Client(before) as old,
    ):
        plain_tools, host_tools = _wire(await plain.list_tools()), _wire(await host.list_tools())
        plain_resources = _wire(await plain.list_resources())
        host_resources = _wire(await host.list_resources())
        old_tools, old_resources = _wire(await old.list_tools()), _wire(await old.list_resources())
    # Exactly what the server listed without the viewer (the guide resource included).
    assert json.dumps(plain_tools) == json.dumps(old_tools)
    assert json.dumps(plain_resources) == json.dumps(old_resources)
    assert [t["name"] for t in plain_tools] == ["understand", "generate", "auto", "job"]
    assert all("ui" not in t.get("_meta", {}) for t in plain_tools)
    # The only differences a host sees: the links, the app-only tools after the others, the view.
    unlinked = [_without_link(t) for t in host_tools if t["name"] not in APP_TOOLS]
    assert json.dumps(unlinked) == json.dumps(plain_tools)
    assert [t["name"] for t in host_tools[4:]] == ["viewer_mask", "viewer_run", "viewer_jobs"]
    assert [r for r in host_resources if r["uri"] != VIEWER_URI] == plain_resources
    assert [r["uri"] for r in host_resources].count(VIEWER_URI) == 1


def _without_link(tool: dict) -> dict:
    meta = {k: v for k, v in tool.get("_meta", {}).items() if k != "ui"}
    return {k: v for k, v in tool.items() if k != "_meta"} | ({"_meta": meta} if meta else {})


async def test_a_host_with_apps_sees_the_links_and_the_app_only_tools(made):
    async with Client(made["server"], extensions=[APPS]) as host:
        tools = {t.name: t for t in (await host.list_tools()).tools}
        resources = {str(r.uri): r for r in (await host.list_resources()).resources}
    for name in ("generate", "auto", "job"):
        assert tools[name].meta == {"ui": {"resourceUri": VIEWER_URI}}
    assert tools["understand"].meta is None  # an answer is text: no view
    for name in APP_TOOLS:
        assert tools[name].meta == {"ui": {"resourceUri": VIEWER_URI, "visibility": ["app"]}}
    assert resources[VIEWER_URI].mime_type == APP_MIME_TYPE


async def test_the_results_are_the_same_for_a_client_with_or_without_apps(made):
    args = {"task": "text_to_image", "prompt": "a red square", "seed": 3, "steps": 2}
    async with Client(made["server"]) as plain, Client(made["server"], extensions=[APPS]) as host:
        results = [await client.call_tool("generate", args) for client in (plain, host)]
    names = [_name(r.structured_content["outputs"][0]) for r in results]
    first, second = (_timeless(r).replace(name, "NAME") for r, name in zip(results, names, strict=True))
    assert first == second
    # The same blocks for both (the SDK's own result stamp aside, nothing of the viewer's): the
    # text naming the file's URI, and its preview.
    data = json.loads(first)
    assert "ui" not in (data.get("_meta") or {})
    assert [b["type"] for b in data["content"]] == ["text", "image"]
    assert "unison://outputs/NAME " in data["content"][0]["text"]


def _timeless(result: Any) -> str:
    """A result's JSON with its timings' values left out (two calls take their own time)."""
    data = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    timings = data["structuredContent"].get("timings") or {}
    data["structuredContent"]["timings"] = sorted(timings)
    return json.dumps(data)


async def test_an_app_only_tool_does_not_exist_for_a_client_without_apps(made):
    async with Client(made["server"]) as plain:
        result = await plain.call_tool("viewer_mask", {"png": _png(np.full((4, 4), 255, np.uint8))})
    assert result.is_error
    assert "no such tool; the tools are understand, generate, auto, job" in _text(result)
    assert _files(made["out"]) == []


# ---------------------------------------------------------------------------------------------
# The view's resource


async def test_the_view_is_one_html_file_that_allows_no_other_origin(made):
    async with Client(made["server"], extensions=[APPS]) as host:
        (contents,) = (await host.read_resource(VIEWER_URI)).contents
    assert contents.mime_type == APP_MIME_TYPE
    csp = contents.meta["ui"]["csp"]
    assert csp == {"connectDomains": [], "resourceDomains": [], "frameDomains": [], "baseUriDomains": []}
    html = contents.text
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    # Its own policy too: nothing but inline code and data: media.
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    assert "default-src 'none'" in policy and "connect-src 'none'" in policy
    assert "img-src data:" in policy and "media-src data:" in policy
    assert not re.search(r"https?://|<link|@import|url\(|src=\"[^\"d]", html)
    limits = json.loads(re.search(r'id="unison-limits" type="application/json">([^<]+)<', html).group(1))
    assert limits == {"max_steps": 200, "max_count": 4}


# ---------------------------------------------------------------------------------------------
# viewer_mask


async def test_a_painted_mask_is_stored_as_a_two_level_png_output_with_its_sidecar(made):
    async with Client(made["server"], extensions=[APPS]) as host:
        made_image = await host.call_tool("generate", {"task": "text_to_image", "prompt": "x", "seed": 1})
        image = made_image.structured_content["outputs"][0]
        y, x = np.mgrid[0:48, 0:64]
        painted = np.clip(255 - 40 * np.hypot(x - 20, y - 24) + 200, 0, 255).astype(np.uint8)  # soft edge
        result = await host.call_tool("viewer_mask", {"png": _png(painted), "painted_on": image["uri"]})
        stored = result.structured_content
        read = (await host.read_resource(stored["uri"])).contents[0]
    assert not result.is_error, _text(result)
    assert OUTPUT_NAME.fullmatch(stored["name"]) and stored["uri"] == "unison://outputs/" + stored["name"]
    assert (stored["width"], stored["height"]) == (64, 48)
    mask = np.asarray(Image.open(made["out"] / stored["name"]).convert("L"))
    assert set(np.unique(mask)) == {0, 255}  # two levels, white = regenerate
    assert mask[24, 20] == 255 and mask[0, 63] == 0
    assert stored["painted"] == pytest.approx((mask == 255).mean())
    sidecar = json.loads((made["out"] / f"{stored['name']}.json").read_text())
    assert sidecar["painted_on"] == image["uri"] and sidecar["made_by"] == "viewer"
    assert base64.b64decode(read.blob) == (made["out"] / stored["name"]).read_bytes()


@pytest.mark.parametrize(
    ("png", "painted_on", "says"),
    [
        ("not base64 at all!", None, "must be a PNG in base64"),
        (base64.b64encode(b"GIF89a....").decode(), None, "is not a PNG image"),
        (_png(np.full((80, 80), 255, np.uint8)), None, "at most 4,096 pixels"),
        (_png(np.zeros((8, 8), np.uint8)), None, "paints nothing"),
        (base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 40).decode(), None, "cannot be read as an image"),
        (
            _png(np.full((8, 8), 255, np.uint8)),
            "/etc/passwd",
            "painted_on='/etc/passwd': must be a unison://outputs/",
        ),
        (_png(np.full((8, 8), 255, np.uint8)), "unison://outputs/../inputs/photo.png", "is not valid"),
        (_png(np.full((8, 8), 255, np.uint8)), "unison://outputs/missing.png", "no output named"),
        (
            _png(np.full((8, 8), 255, np.uint8)),
            "unison://outputs/20260101T000000Z-text_to_image-0123abcd.png.json",
            "must name an image or video output",
        ),
    ],
    ids=[
        "not-base64",
        "not-png",
        "too-many-pixels",
        "all-black",
        "corrupt",
        "a-path",
        "escape",
        "missing",
        "a-sidecar",
    ],
)
async def test_a_mask_that_is_not_a_usable_png_is_refused_and_nothing_is_written(made, png, painted_on, says):
    args = {"png": png} | ({"painted_on": painted_on} if painted_on else {})
    async with Client(made["server"], extensions=[APPS]) as host:
        result = await host.call_tool("viewer_mask", args)
    assert result.is_error and says in _text(result), _text(result)
    assert _files(made["out"]) == []


async def test_a_mask_of_another_size_than_the_image_it_was_painted_on_is_refused(made):
    async with Client(made["server"], extensions=[APPS]) as host:
        made_image = await host.call_tool("generate", {"task": "text_to_image", "prompt": "x", "seed": 1})
        image = made_image.structured_content["outputs"][0]
        before = _files(made["out"])
        result = await host.call_tool(
            "viewer_mask", {"png": _png(np.full((10, 10), 255, np.uint8)), "painted_on": image["uri"]}
        )
        too_long = await host.call_tool("viewer_mask", {"png": "A" * (MAX_MASK_CHARS + 1)})
    assert result.is_error and "must be the size of the image it was painted on (64×48)" in _text(result)
    assert too_long.is_error and "png" in _text(too_long)
    assert _files(made["out"]) == before


# ---------------------------------------------------------------------------------------------
# viewer_run and viewer_jobs


async def test_viewer_run_returns_the_job_at_once_and_the_job_tool_follows_it_to_the_result(made):
    made["fake"].hold = threading.Event()  # the job cannot finish before the call returns
    args = {"task": "text_to_image", "prompt": "again", "seed": 5}
    async with Client(made["server"], extensions=[APPS]) as host:
        with anyio.fail_after(5):
            handle = await host.call_tool("viewer_run", {"tool": "generate", "arguments": args})
        data = handle.structured_content
        assert data["status"] in ("queued", "running") and data["job_id"]
        made["fake"].hold.set()
        with anyio.fail_after(10):
            done = await host.call_tool("job", {"action": "wait", "job_id": data["job_id"]})
        refused = await host.call_tool(
            "viewer_run", {"tool": "generate", "arguments": {"task": "x", "prompt": "y"}}
        )
    assert done.structured_content["status"] == "done"
    assert done.structured_content["seed"] == 5 and done.structured_content["outputs"]
    assert refused.is_error and "task" in _text(refused)


async def test_viewer_jobs_finds_a_running_call_by_its_arguments_and_nothing_else(made):
    fake = made["fake"]
    fake.hold = threading.Event()
    args = {"task": "text_to_image", "prompt": "slow", "seed": 9}
    async with Client(made["server"], extensions=[APPS]) as host, anyio.create_task_group() as tg:
        tg.start_soon(host.call_tool, "generate", args)
        with anyio.fail_after(10):
            while not (
                found := (
                    await host.call_tool("viewer_jobs", {"tool": "generate", "arguments": args})
                ).structured_content["jobs"]
            ):
                await anyio.sleep(0.02)
        other = await host.call_tool("viewer_jobs", {"tool": "generate", "arguments": {**args, "seed": 10}})
        invalid = await host.call_tool("viewer_jobs", {"tool": "generate", "arguments": {"task": "nope"}})
        fake.hold.set()
    (job,) = found
    assert job["kind"] == "generate" and job["status"] in ("queued", "running") and job["job_id"]
    assert set(job["progress"]) == {"stage", "done", "total"}
    assert other.structured_content["jobs"] == [] and invalid.structured_content["jobs"] == []
    async with Client(made["server"], extensions=[APPS]) as host:
        after = await host.call_tool("viewer_jobs", {"tool": "generate", "arguments": args})
    assert after.structured_content["jobs"] == []  # finished: nothing to show or cancel


def test_job_calls_remember_the_last_jobs_by_their_call():
    calls = JobCalls(keep=2)
    for n in range(3):
        calls.add(f"job{n}", "same" if n else "other")
    assert calls.matching("same") == ["job1", "job2"] and calls.matching("other") == []  # job0 forgotten

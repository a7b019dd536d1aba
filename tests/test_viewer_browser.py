"""The result viewer in a real browser, on a real server.

``unison-mcp serve --transport http --preset tiny`` runs on a loopback port. The test is the host:
its MCP client is the SDK's (over HTTP, MCP Apps advertised), and its page is
``tests/viewer_host.html`` in headless Chromium (:mod:`browser`), a minimal host written from the
extension's spec: it reads the view's HTML from the server (``resources/read`` of the ``ui://``
resource), renders it in a sandboxed frame under the CSP the resource declares, and passes the
view's ``tools/call`` and ``resources/read`` to the client, as a desktop host's own client would.
The tool calls "the model" makes are the client's; the ones the view makes go through the page.
Once, the page speaks through the official host side instead (``AppBridge`` from
``@modelcontextprotocol/ext-apps``, bundled from ``tests/apps_host`` when npm installed it there),
since the view's side of the protocol is written by hand.

Each state is shown and checked, and saved as a screenshot in ``$UNISON_TEST_ARTIFACTS/viewer``
(default ``test-artifacts/viewer``; the README's pictures in docs/images are copies of these): an
image at its size, a video that plays and steps frame by frame, two candidates side by side, the
progress of a call in flight and its cancel, "again with a new seed" making a new output, a painted
mask making an ``image_edit`` whose untouched pixels are the source's, an extracted control signal
as a layer (toggled, or laid over the result), and a result whose host lost ``structuredContent``. Through all of it no frame asks anything of the network: every request the
page and the view make is listed (DevTools' network log) and only the host page itself comes from
an address; the view's files are ``data:`` URLs.
"""

from __future__ import annotations

import http.server
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import httpx2
import numpy as np
import pytest
from browser import Browser, Page, find_chromium
from mcp import Client
from mcp.client.extension import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.server.apps import APP_MIME_TYPE, EXTENSION_ID
from mcp.shared.exceptions import MCPError
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("UNISON_TEST_ARTIFACTS") or REPO / "test-artifacts") / "viewer"
HOST_PAGE = Path(__file__).with_name("viewer_host.html")
#: The official host side (@modelcontextprotocol/ext-apps' AppBridge), when npm installed it here.
APPS_HOST = Path(__file__).with_name("apps_host")
ESBUILD = APPS_HOST / "node_modules" / ".bin" / "esbuild"
TOKEN = "viewer-test-token"
VIEWER_URI = "ui://unison/viewer.html"
START_TIMEOUT_S = 90

pytestmark = pytest.mark.skipif(
    find_chromium() is None,
    reason="no chromium found: install Debian's (apt-get install -y chromium); .ci/run does",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _name(output: dict) -> str:
    """An output's file name: the last part of its ``unison://outputs/`` URI."""
    return output["uri"].rpartition("/")[2]


def _dump(result: Any) -> dict:
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


class _HostPage(http.server.BaseHTTPRequestHandler):
    """Serves the host page at /host.html, the official bridge's bundle at /app-bridge.js (when
    built), and nothing else."""

    bridge: Path | None = None

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        path = self.path.split("?", 1)[0]
        files = {"/host.html": (HOST_PAGE, "text/html"), "/app-bridge.js": (self.bridge, "text/javascript")}
        found, kind = files.get(path, (None, ""))
        if found is None:
            self.send_error(404)
            return
        body = found.read_bytes()
        self.send_response(200)
        self.send_header("Content-Type", f"{kind}; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class Host:
    """The test's MCP Apps host: the MCP client (in a blocking portal) and the page in Chromium."""

    def __init__(self, page: Page, portal: anyio.from_thread.BlockingPortal, client: Any, out: Path):
        self.page, self.portal, self.client, self.out = page, portal, client, out
        self.view: str | None = None
        self.scene = ""
        self.page_url = ""
        tools = portal.call(client.list_tools).tools
        self.tools = {t.name: _dump(t) for t in tools}
        self.visibility = {
            t.name: ((t.meta or {}).get("ui") or {}).get("visibility", ["model", "app"]) for t in tools
        }
        contents = portal.call(client.read_resource, VIEWER_URI).contents[0]
        self.html, self.csp = contents.text, ((contents.meta or {}).get("ui") or {}).get("csp", {})
        page.bind("unisonHost", self._forward)

    # ------------------------------------------------------------------ the bridge

    def _forward(self, payload: str) -> None:
        self.portal.start_task_soon(self._answer, json.loads(payload))

    async def _answer(self, message: dict) -> None:
        params, result, error = message.get("params") or {}, None, None
        try:
            if message["method"] == "tools/call":
                result = _dump(await self.client.call_tool(params["name"], params.get("arguments") or {}))
            else:
                result = _dump(await self.client.read_resource(params["uri"]))
        except MCPError as exc:
            error = {"code": exc.error.code, "message": exc.error.message}
        reply = f"hostReply({json.dumps(message['id'])}, {json.dumps(result)}, {json.dumps(error)})"
        await anyio.to_thread.run_sync(self.page.evaluate, reply)

    # ------------------------------------------------------------------ what a test does

    def use_bridge(self, which: str) -> None:
        """Reload the host page speaking through ``which`` host side: "spec" (the page's own) or
        "official" (@modelcontextprotocol/ext-apps' AppBridge)."""
        self.page.navigate(self.page_url + ("?bridge=official" if which == "official" else ""))
        self.page.wait_for(f"document.documentElement.dataset.ready === {json.dumps(which)}")

    def call(self, tool: str, arguments: dict) -> Any:
        """A call the model makes."""
        result = self.portal.call(self.client.call_tool, tool, arguments)
        assert not result.is_error, [c.text for c in result.content if c.type == "text"]
        return result

    def open(self, tool: str, arguments: dict, result: Any = None, *, drop_structured: bool = False) -> str:
        """Render the view for a call (its result now, or later with :meth:`deliver`)."""
        before = len(self.page.frames)
        config = {
            "html": self.html,
            "csp": self.csp,
            "tool": self.tools[tool],
            "arguments": arguments,
            "tools": self.visibility,
        }
        self.page.evaluate(f"openView({json.dumps(config)})")
        self.view = self.page.next_frame(before)
        if result is not None:
            self.deliver(result, drop_structured=drop_structured)
        return self.view

    def deliver(self, result: Any, *, drop_structured: bool = False) -> None:
        data = _dump(result)
        if drop_structured:
            data.pop("structuredContent", None)
        self.page.evaluate(f"deliverResult({json.dumps(data)})")

    def read_both(self, result: Any) -> tuple[dict, dict]:
        """What the view reads of ``result`` (its ``readResult``): with its structured content,
        and from its content alone (as behind a host that drops the former). The text says a
        file's size and duration rounded: those are left out."""
        data = _dump(result)
        dropped = {k: v for k, v in data.items() if k != "structuredContent"}
        keep = "{outputs, seed, steps, guidance, status, jobId}"
        read = [self.js(f"(({keep}) => ({keep}))(readResult({json.dumps(d)}))") for d in (data, dropped)]
        for facts in read:
            for out in facts["outputs"]:
                del out["size"], out["duration"]
        return read[0], read[1]

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression, self.view)

    def wait(self, expression: str, timeout: float = 60) -> Any:
        return self.page.wait_for(expression, self.view, timeout=timeout)

    def click(self, selector: str) -> None:
        self.js(f"document.querySelector({json.dumps(selector)}).click()")

    def done(self, run: int, timeout: float = 90) -> None:
        """Wait until the view's run number ``run`` is done (and fail with its error if it failed)."""
        state = self.wait(
            f"(() => {{ const a = document.getElementById('app'); return a.dataset.run === '{run}' && "
            "['done', 'failed', 'cancelled'].includes(a.dataset.state) && a.dataset.state; })()",
            timeout,
        )
        assert state == "done", self.js("document.getElementById('error').textContent")

    def main_media(self, kind: str) -> str:
        """Wait for the stage's main image or video to be ready; its output name."""
        ready = "m.complete && m.naturalWidth > 0" if kind == "img" else "m.readyState >= 2"
        return self.wait(
            f"(() => {{ const m = document.querySelector('#frame {kind}.main'); return m && {ready} && m.dataset.name; }})()"
        )

    def settle(self) -> None:
        """Wait until the frame has the view's height (the host follows size-changed)."""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            wanted = self.js("Math.ceil(document.getElementById('app').getBoundingClientRect().height)")
            if abs(self.page.evaluate("host.frame.clientHeight") - wanted) <= 1:
                return
            time.sleep(0.1)

    def shot(self, name: str) -> Path:
        """A screenshot of the chat with the view."""
        self.settle()
        box = self.page.evaluate(
            "(() => { const r = document.getElementById('chat').getBoundingClientRect(); "
            "return {x: r.x, y: r.y + scrollY, width: r.width, height: r.height}; })()"
        )
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path, clip=box)
        return path

    def frame_origin(self) -> tuple[float, float]:
        """Where the view's frame content starts in the page's viewport."""
        return tuple(
            self.page.evaluate(
                "(() => { const f = host.frame, r = f.getBoundingClientRect(); "
                "return [r.x + f.clientLeft, r.y + f.clientTop]; })()"
            )
        )


@pytest.fixture(scope="module")
def host(tiny_paths, tmp_path_factory):
    base = tmp_path_factory.mktemp("viewer")
    out, root = base / "outputs", base / "inputs"
    root.mkdir()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(UNISON_TINY_DIR=str(tiny_paths.root), UNISON_AUTH_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    server_log = (base / "server.log").open("wb")
    serve = [sys.executable, "-m", "unison_mcp", "serve", "--preset", "tiny", "--output-dir", str(out)]
    serve += ["--allow-root", str(root), "--wait-s", "120", "--transport", "http"]
    serve += ["--host", "127.0.0.1", "--port", str(port)]
    proc = subprocess.Popen(
        serve, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=server_log, env=env, cwd=REPO
    )
    if ESBUILD.exists():  # the official host bridge, bundled for the browser
        bundle = [str(ESBUILD), "entry.js", "--bundle", "--format=esm", "--platform=browser"]
        bundle += [f"--outfile={base / 'app-bridge.js'}", "--log-level=warning"]
        subprocess.run(bundle, cwd=APPS_HOST, check=True, timeout=120)
        _HostPage.bridge = base / "app-bridge.js"
    pages = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HostPage)
    threading.Thread(target=pages.serve_forever, daemon=True).start()
    browser = None
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert proc.poll() is None, (base / "server.log").read_text(errors="replace")[-3000:]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        browser = Browser(find_chromium(), base / "profile", base / "chromium.log")
        page = Page(browser, width=1000, height=1400)
        http_client = httpx2.AsyncClient(headers={"Authorization": f"Bearer {TOKEN}"}, timeout=180)
        apps = advertise(EXTENSION_ID, {"mimeTypes": [APP_MIME_TYPE]})
        transport = streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http_client)
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(http_client),
            portal.wrap_async_context_manager(Client(transport, extensions=[apps])) as client,
        ):
            test_host = Host(page, portal, client, out)
            test_host.scene = str(root / "scene.png")
            _scene(root / "scene.png")
            test_host.page_url = f"http://127.0.0.1:{pages.server_address[1]}/host.html"
            test_host.use_bridge("spec")
            yield test_host
    finally:
        if browser is not None:
            browser.close()
        pages.shutdown()
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        server_log.close()


def _scene(path: Path) -> None:
    """A 128×128 picture with something to see: sky, sun, hills and a kite (the tiny models'
    own pixels are noise; what a task keeps of a source is this)."""
    y, x = np.mgrid[0:128, 0:128]
    image = np.zeros((128, 128, 3), np.float32)
    image[...] = np.stack([90 + y * 0.8, 150 + y * 0.6, 235 - y * 0.2], axis=-1)  # sky
    image[(x - 92) ** 2 + (y - 30) ** 2 < 14**2] = (255, 214, 90)  # sun
    hills = y > 88 + 10 * np.sin(x / 14.0)
    image[hills] = np.stack([40 + 0 * x, 120 + 40 * np.sin(x / 9.0), 60 + 0 * x], axis=-1)[hills]
    image[(y > 40) & (y < 70) & (abs(x - 40) < (y - 40) * 0.6)] = (220, 40, 50)  # kite
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(path)


@pytest.fixture(scope="module")
def picture(host):
    """The scene outpainted to 192×128 (the middle kept, the sides made): the source of several views."""
    args = {"task": "image_outpaint", "prompt": "a red kite over green hills, wider", "source": host.scene}
    args |= {"width": 192, "height": 128, "margins": {"left": 32, "top": 0, "right": 32, "bottom": 0}}
    args |= {"steps": 2, "seed": 11}
    return args, host.call("generate", args)


# ---------------------------------------------------------------------------------------------
# What the view shows


def test_an_image_is_shown_at_its_size_and_zooms(host, picture):
    args, result = picture
    host.open("generate", args, result)
    name = host.main_media("img")
    assert name == _name(result.structured_content["outputs"][0])
    size = host.js(
        "(() => { const m = document.querySelector('#frame img.main'); const r = m.getBoundingClientRect(); "
        "return [m.naturalWidth, m.naturalHeight, r.width, r.height]; })()"
    )
    assert size == [192, 128, 192, 128]  # one image pixel per CSS pixel
    assert host.js("document.getElementById('zoom-label').textContent") == "100 %"
    assert "seed 11" in host.js("document.getElementById('facts').textContent")
    host.click("#details summary")
    assert "2 steps" in host.js("document.getElementById('facts').textContent")
    host.shot("image")
    host.click("#zoom-in")
    assert host.js("document.querySelector('#frame img.main').getBoundingClientRect().width") == 384
    assert host.js("document.getElementById('frame').classList.contains('pixelated')")
    host.shot("image-zoomed")
    host.click("#zoom-one")


def test_a_video_plays_in_the_player_and_steps_frame_by_frame(host):
    args = {"task": "image_to_video", "prompt": "the kite flies off", "first_frame": host.scene}
    args |= {"width": 128, "height": 128, "num_frames": 17, "steps": 2, "seed": 5}
    result = host.call("generate", args)
    host.open("generate", args, result)
    host.main_media("video")
    first = host.js("document.querySelector('#frame video.main').currentTime")
    # It plays: its time moves on by itself (looping 17 frames at 16 fps).
    host.wait(
        f"(() => {{ const v = document.querySelector('#frame video.main'); return !v.paused && v.currentTime !== {first}; }})()"
    )
    assert host.js("document.getElementById('frame-label').textContent").endswith("/ 17")
    full, from_text = host.read_both(result)
    assert from_text == full and full["outputs"][0]["frames"] == 17 and full["outputs"][0]["kind"] == "video"
    host.shot("video")
    host.click("#play")  # pause
    host.js(
        "document.getElementById('scrub').value = '4'; document.getElementById('scrub').dispatchEvent(new Event('input'))"
    )
    host.wait("document.getElementById('frame-label').textContent === 'frame 5 / 17'")
    host.click("#next")
    host.wait("document.getElementById('frame-label').textContent === 'frame 6 / 17'")
    assert host.js("document.querySelector('#frame video.main').paused")
    time_label = host.js("document.getElementById('time-label').textContent")
    assert time_label.startswith("0.34 s") and time_label.endswith(
        "/ 1.06 s"
    )  # (5 + 0.5) / 16 s into 17 frames
    host.click("#prev")
    host.wait("document.getElementById('frame-label').textContent === 'frame 5 / 17'")


def test_two_candidates_are_side_by_side_and_one_is_enlarged_by_a_click(host):
    args = {"task": "image_outpaint", "prompt": "two ways to widen it", "source": host.scene, "steps": 2}
    args |= {"width": 192, "height": 128, "margins": {"left": 32, "top": 0, "right": 32, "bottom": 0}}
    args |= {"seed": 21, "count": 2}
    result = host.call("generate", args)
    names = [_name(o) for o in result.structured_content["outputs"]]
    host.open("generate", args, result)
    host.wait(
        "document.querySelectorAll('#candidates .tile img').length === 2 && "
        "[...document.querySelectorAll('#candidates .tile img')].every((i) => i.complete && i.naturalWidth)"
    )
    boxes = host.js(
        "[...document.querySelectorAll('#candidates .tile')].map((t) => { const r = t.getBoundingClientRect(); "
        "return [r.left, r.right, r.top, t.dataset.name]; })"
    )
    (left1, right1, top1, name1), (left2, _, top2, name2) = boxes
    assert [name1, name2] == names
    assert top1 == top2 and left2 >= right1  # side by side, in their order
    assert host.main_media("img") == names[0]
    host.click(f'#candidates .tile[data-name="{names[1]}"]')
    host.wait(f"document.querySelector('#frame img.main')?.dataset.name === {json.dumps(names[1])}")
    assert "seed 22" in host.js("document.getElementById('facts').textContent")
    host.shot("candidates")


def test_an_extracted_control_signal_is_a_layer_to_toggle_or_lay_over_the_result(host):
    args = {"task": "image_control", "prompt": "the same hills at dusk", "control": host.scene}
    args |= {"control_kind": "edges", "width": 128, "height": 128, "steps": 2, "seed": 4}
    result = host.call("generate", args)
    roles = {o["role"]: _name(o) for o in result.structured_content["outputs"]}
    assert set(roles) == {"result", "control"}
    host.open("generate", args, result)
    assert host.main_media("img") == roles["result"]
    layers = host.js("[...document.querySelectorAll('#layers button')].map((b) => b.textContent)")
    assert layers == ["Result", "Control signal"]
    host.click('#layers button[data-layer="control"]')
    host.wait(f"document.querySelector('#frame img.main')?.dataset.name === {json.dumps(roles['control'])}")
    host.shot("control")
    host.click("#overlay")
    host.wait(
        f"document.querySelector('#frame img.main')?.dataset.name === {json.dumps(roles['result'])} && "
        f"document.querySelector('#frame img.overlay')?.dataset.name === {json.dumps(roles['control'])}"
    )
    host.main_media("img")
    host.shot("control-overlay")


def test_a_call_in_flight_shows_its_progress_and_is_cancelled_from_the_view(host):
    args = {"task": "text_to_video", "prompt": "a long slow pan", "width": 256, "height": 192}
    args |= {"num_frames": 33, "steps": 150, "seed": 9}
    call = host.portal.start_task_soon(host.client.call_tool, "generate", args)
    host.open("generate", args)  # the model's call has not returned: only its arguments are known
    host.wait(
        "(() => { const p = document.getElementById('bar'); return !document.getElementById('progress').hidden && "
        "p.max === 150 && p.value >= 1 && document.getElementById('stage-name').textContent.includes('/150'); })()"
    )
    host.shot("progress")
    host.wait("!document.getElementById('cancel').disabled")
    host.click("#cancel")
    result = call.result(timeout=120)
    assert result.is_error and "cancel" in result.content[0].text.lower()
    host.deliver(result)
    state = host.wait(
        "['cancelled', 'failed'].includes(document.getElementById('app').dataset.state) && "
        "document.getElementById('app').dataset.state"
    )
    assert state in ("cancelled", "failed")
    assert "cancel" in host.js("document.getElementById('error').textContent").lower()


# ---------------------------------------------------------------------------------------------
# The next step, through the server


def test_again_more_steps_and_animate_make_new_outputs_through_the_server(host, picture):
    args, result = picture
    first = result.structured_content["outputs"][0]
    host.open("generate", args, result)
    host.main_media("img")
    host.click("#again")
    host.done(2)
    name = host.main_media("img")
    assert name != _name(first) and (host.out / name).is_file()
    sidecar = json.loads((host.out / f"{name}.json").read_text())
    assert sidecar["seed"] != first["seed"] and sidecar["prompt"] == args["prompt"]
    assert (
        sidecar["plan"]["width"] == 192
        and sidecar["plan"]["task"] == "image_outpaint"
        and sidecar["steps"] == 2
    )
    assert host.js("document.querySelectorAll('#runs button').length") == 2
    host.shot("again")
    # More steps: the same seed, twice the steps.
    host.click("#more-steps")
    host.done(3)
    longer = json.loads((host.out / f"{host.main_media('img')}.json").read_text())
    assert longer["steps"] == 4 and longer["seed"] == sidecar["seed"]
    # Use as input: this image animated.
    shown = host.main_media("img")
    host.click('#follow-ups button[data-follow-up="animate"]')
    host.done(4)
    video = json.loads((host.out / f"{host.main_media('video')}.json").read_text())
    assert video["task"] == "image_to_video" and video["width"] == 192 and video["height"] == 128
    assert [i["role"] for i in video["plan"]["inputs"]] == ["first_frame"]
    assert Path(video["plan"]["inputs"][0]["path"]).name == shown


def _dilated(mask: np.ndarray, radius: int) -> np.ndarray:
    grown = mask.copy()
    padded = np.pad(mask, radius)
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            grown |= padded[radius + dy : radius + dy + h, radius + dx : radius + dx + w]
    return grown


def test_a_painted_mask_makes_an_image_edit_that_keeps_every_untouched_pixel(host, picture):
    args, result = picture
    source = result.structured_content["outputs"][0]
    host.open("generate", args, result)
    host.main_media("img")
    host.click("#paint")
    host.wait("!!document.querySelector('#frame canvas.paint')")
    host.js("document.getElementById('brush-size').value = '14'")
    host.settle()
    fx, fy = host.frame_origin()
    cx, cy = host.js(
        "(() => { const r = document.querySelector('#frame canvas.paint').getBoundingClientRect(); return [r.x, r.y]; })()"
    )
    stroke = [(60, 50), (80, 56), (100, 62), (120, 66)]  # image pixels (the canvas is at 1:1)
    host.page.mouse("mousePressed", fx + cx + stroke[0][0], fy + cy + stroke[0][1], buttons=1)
    for x, y in stroke[1:]:
        host.page.mouse("mouseMoved", fx + cx + x, fy + cy + y, buttons=1)
    host.page.mouse("mouseReleased", fx + cx + stroke[-1][0], fy + cy + stroke[-1][1])
    host.wait("!document.getElementById('brush-run').disabled")
    host.js("document.getElementById('next-prompt').value = 'a yellow kite'")
    host.shot("brush")
    host.click("#brush-run")
    host.done(2)
    edited = host.main_media("img")
    side = json.loads((host.out / f"{edited}.json").read_text())
    assert side["task"] == "image_edit" and side["prompt"] == "a yellow kite"
    masks = [i for i in side["plan"]["inputs"] if i["role"] == "mask"]
    mask_name = Path(masks[0]["path"]).name
    mask_side = json.loads((host.out / f"{mask_name}.json").read_text())
    assert mask_side["painted_on"] == source["uri"] and mask_side["made_by"] == "viewer"
    mask = np.asarray(Image.open(host.out / mask_name).convert("L")) >= 128  # (H, W)
    assert mask.shape == (128, 192)
    assert all(mask[y, x] for x, y in stroke) and not mask[5, 5] and not mask[120, 185]
    before = np.asarray(Image.open(host.out / _name(source)).convert("RGB"))
    after = np.asarray(Image.open(host.out / edited).convert("RGB"))
    kept = ~_dilated(mask, 8)  # beyond the feathered band (4 px by default)
    assert kept.mean() > 0.6
    np.testing.assert_array_equal(after[kept], before[kept])
    assert (after[mask] != before[mask]).any()  # and the painted region was made anew
    host.shot("edit")


def test_a_host_that_drops_structured_content_still_gets_the_result(host, picture):
    args, result = picture
    out = result.structured_content["outputs"][0]
    host.open("generate", args, result, drop_structured=True)
    assert host.main_media("img") == _name(out)
    # The seed, steps and plan come from the output's sidecar, read through the host.
    host.wait(f"document.getElementById('facts').textContent.includes('seed {out['seed']}')")
    host.wait("document.getElementById('plan').textContent.includes('image_outpaint')")
    assert host.js("document.querySelector('#frame img.main').naturalWidth") == 192
    # Before any sidecar: the text alone names each file, its kind, size, role and seed.
    full, from_text = host.read_both(result)
    assert from_text == full and full["seed"] == 11 and full["steps"] == 2
    candidates = {"task": "image_control", "prompt": "two dusks", "control": host.scene, "count": 2}
    candidates |= {"control_kind": "edges", "width": 128, "height": 128, "steps": 2, "seed": 30}
    full, from_text = host.read_both(host.call("generate", candidates))
    assert from_text == full
    made = [(o["role"], o["seed"]) for o in full["outputs"]]
    assert made == [("result", 30), ("result", 31), ("control", None)]


@pytest.mark.skipif(
    not ESBUILD.exists(),
    reason="the official MCP Apps host bridge is not installed: npm ci --prefix tests/apps_host (.ci/run does)",
)
def test_the_view_works_behind_the_official_apps_host_bridge_too(host, picture):
    # The view's side of the protocol is written out by hand: the reference host side must take it.
    args, result = picture
    first = result.structured_content["outputs"][0]
    host.use_bridge("official")
    try:
        host.open("generate", args, result)
        assert host.main_media("img") == _name(first)
        assert "seed 11" in host.js("document.getElementById('facts').textContent")
        host.click("#again")  # tools/call and resources/read through AppBridge
        host.done(2)
        name = host.main_media("img")
        assert name != _name(first) and (host.out / name).is_file()
        host.shot("official-bridge")
    finally:
        host.use_bridge("spec")


def test_no_frame_asked_anything_of_another_origin(host):
    page = host.page
    origin = page.evaluate("location.origin")
    views = set(page.frames)
    assert views, "no view was rendered"
    for session, url in page.requests:
        if session in views:
            assert url.startswith(("data:", "about:")), url  # the view loads nothing from any address
        else:
            assert url.startswith((origin + "/", "data:", "about:")), url
    assert [e for e in page.errors if e[0] in views] == []
    assert page.evaluate("host.refused") == []

"""The gallery: the page, its sign-in, its JSON, its files, its jobs, and HTTP for real deployments.

The outputs are written by the engine's own writer (:func:`engine.outputs.write_output`: real
PNG/MP4 files with their sidecars); the app is driven through Starlette's test client, the
exposure checks through :func:`unison_mcp.http.check_exposure`, and the page once in a real
headless Chromium (Debian's ``chromium``, which ``.ci/run`` installs) against a real
``unison-mcp gallery`` process.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from starlette.testclient import TestClient

from engine.config import EngineConfig
from engine.inputs import InputPolicy
from engine.jobs import JobQueue
from engine.outputs import write_output
from unison_mcp.config import ConfigError, ServerConfig
from unison_mcp.gallery import COOKIE_MAX_AGE_S, COOKIE_NAME, Gallery, Sessions, cookie_name
from unison_mcp.http import (
    RedactTokens,
    check_exposure,
    gallery_app,
    gallery_url,
    http_app,
    is_loopback,
    transport_security,
)
from unison_mcp.server import build_server

REPO = Path(__file__).resolve().parents[1]
TOKEN = "gallery-test-token"
HOSTILE = 'a cat <img src=x onerror="document.title=1"><script>document.title=2</script>'


def _write(out: Path, frames: int, **meta: Any) -> str:
    side = {"prompt": "a red square", "seed": 1, "candidate": 0, "plan": {"task": "x"}, "output": "result"}
    side.update(meta)
    pixels = np.full((frames, 32, 32, 3), 90, np.uint8)
    pixels[:, :16] = 200  # not a flat frame, so the encoder writes real content
    written = write_output(pixels, output_dir=out, task=side["plan"]["task"], fps=8.0, metadata=side)
    return written.name


@pytest.fixture()
def outputs(tmp_path: Path) -> dict[str, Any]:
    """An image, then a video_extend result with its new part (written in that order)."""
    out = tmp_path / "outputs"
    image = _write(out, 1, prompt=HOSTILE, seed=7, plan={"task": "text_to_image", "width": 32})
    past = time.time() - 60
    os.utime(out / image, (past, past))  # older than the video: listed after it
    plan = {"task": "video_extend", "num_frames": 9}
    video = _write(out, 9, prompt="waves", seed=11, plan=plan)
    part = _write(out, 5, prompt="waves", seed=11, plan=plan, output="new_part")
    policy = InputPolicy([out], out, 10**9, 10**9)
    return {"dir": out, "image": image, "video": video, "part": part, "policy": policy}


def _client(outputs: dict[str, Any], **kw: Any) -> TestClient:
    return TestClient(Gallery(outputs["policy"], token=TOKEN, **kw).app(), base_url="http://127.0.0.1:8765")


def _signed_in(outputs: dict[str, Any], **kw: Any) -> TestClient:
    client = _client(outputs, **kw)
    assert client.get("/gallery", params={"token": TOKEN}).status_code == 200
    return client


# ---------------------------------------------------------------------------------------------
# What it lists


def test_the_gallery_lists_outputs_newest_first_with_prompt_task_seed_and_plan(outputs):
    listed = _signed_in(outputs).get("/gallery/api/outputs").json()["outputs"]
    assert [e["name"] for e in listed] == [outputs["video"], outputs["image"]]
    video, image = listed
    assert (video["kind"], video["mime_type"], video["task"], video["seed"]) == (
        "video",
        "video/mp4",
        "video_extend",
        11,
    )
    assert video["plan"] == {"task": "video_extend", "num_frames": 9}
    assert (video["num_frames"], video["fps"], video["duration_s"]) == (9, 8.0, 9 / 8)
    assert (image["kind"], image["prompt"], image["width"]) == ("image", HOSTILE, 32)
    assert video["url"] == f"gallery/files/{outputs['video']}"


def test_an_extra_output_is_listed_under_the_result_of_its_generation(outputs):
    video = _signed_in(outputs).get("/gallery/api/outputs").json()["outputs"][0]
    (extra,) = video["extras"]
    assert (extra["name"], extra["output"], extra["num_frames"]) == (outputs["part"], "new_part", 5)


def test_an_output_without_a_readable_sidecar_is_still_listed(outputs):
    (outputs["dir"] / f"{outputs['image']}.json").write_text("{not json", encoding="utf-8")
    listed = _signed_in(outputs).get("/gallery/api/outputs").json()["outputs"]
    image = next(e for e in listed if e["name"] == outputs["image"])
    assert (image["sidecar"], image["prompt"], image["kind"]) == (False, None, "image")


def test_running_and_queued_jobs_are_listed_with_their_progress(outputs):
    queue = JobQueue(capacity=2)
    started, release = threading.Event(), threading.Event()

    def work(control):
        control.set_stage("denoising", 10)
        control.step(3, 10)
        started.set()
        release.wait(10)

    running = queue.submit("generate", work)
    waiting = queue.submit("auto", lambda control: None)
    try:
        assert started.wait(10)
        body = _signed_in(outputs, queue=queue).get("/gallery/api/jobs").json()
        assert body["queue"] is True
        first, second = body["jobs"]
        assert (first["kind"], first["status"], first["stage"], first["done"], first["total"]) == (
            "generate",
            "running",
            "denoising",
            3,
            10,
        )
        assert (second["kind"], second["status"], second["ahead"]) == ("auto", "queued", 1)
        # A full job id can cancel the job through the `job` tool: the page shows a prefix only.
        assert first["id"] == running.id[:8] and waiting.id not in str(body)
    finally:
        release.set()
        queue.close(timeout=5)


# ---------------------------------------------------------------------------------------------
# Access


def test_without_the_token_the_page_is_a_login_form_and_the_data_is_401(outputs):
    client = _client(outputs)
    page = client.get("/gallery")
    assert page.status_code == 401 and "<form" in page.text and 'name="token"' not in page.text
    assert "name='token'" in page.text and outputs["video"] not in page.text
    for path in ("/gallery/api/outputs", "/gallery/api/jobs", f"/gallery/files/{outputs['video']}"):
        assert client.get(path).status_code == 401, path
    wrong = client.get("/gallery", params={"token": "nope"})
    assert wrong.status_code == 401 and COOKIE_NAME not in wrong.headers.get("set-cookie", "")
    assert client.get("/gallery/api/outputs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_signing_in_once_sets_an_httponly_strict_cookie_and_moves_on_without_the_token(outputs):
    client = _client(outputs)
    signed = client.get("/gallery", params={"token": TOKEN})
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower()
    assert f"Max-Age={COOKIE_MAX_AGE_S}" in cookie  # it expires
    assert TOKEN not in cookie  # signed by the server, not the token itself
    assert '<meta http-equiv="refresh" content="0; url=gallery">' in signed.text
    assert signed.headers["cache-control"] == "no-store"
    assert client.get("/gallery").status_code == 200
    assert client.get("/gallery/api/outputs").status_code == 200


def test_the_login_form_signs_in_with_the_same_cookie_and_refuses_a_wrong_token(outputs):
    client = _client(outputs)
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = client.post("/gallery/login", content="token=nope", headers=form, follow_redirects=False)
    assert wrong.status_code == 401 and "not this server" in wrong.text
    ok = client.post("/gallery/login", content=f"token={TOKEN}", headers=form, follow_redirects=False)
    assert ok.status_code == 303 and ok.headers["location"] == "../gallery"
    assert "HttpOnly" in ok.headers["set-cookie"]
    assert client.get("/gallery/api/outputs").status_code == 200


def test_the_cookie_is_named_after_the_servers_port_and_refused_by_another_or_a_restarted_one(outputs):
    assert cookie_name(8765) == f"{COOKIE_NAME}_8765" != cookie_name(8766)
    first = _signed_in(outputs, port=8765)
    cookie = first.cookies[cookie_name(8765)]
    assert first.get("/gallery/api/outputs").status_code == 200
    # The same token, another process (a restart) or another port: its own secret, its own name.
    for other in (_client(outputs, port=8765), _client(outputs, port=8766)):
        other.cookies.set(cookie_name(8765), cookie)
        other.cookies.set(cookie_name(8766), cookie)
        assert other.get("/gallery/api/outputs").status_code == 401


def test_a_sign_in_expires(outputs, monkeypatch):
    import unison_mcp.gallery as gallery

    sessions = Sessions()
    value = sessions.issue()
    assert sessions.valid(value)
    later = time.time() + COOKIE_MAX_AGE_S + 1
    monkeypatch.setattr(gallery.time, "time", lambda: later)
    assert not sessions.valid(value)
    assert not sessions.valid(value[:-1] + ("0" if value[-1] != "0" else "1"))  # a forged signature


def test_signing_out_clears_the_cookie_and_a_kept_copy_is_refused(outputs):
    app = Gallery(outputs["policy"], token=TOKEN).app()
    client = TestClient(app, base_url="http://127.0.0.1:8765")
    assert client.get("/gallery", params={"token": TOKEN}).status_code == 200
    kept = client.cookies[COOKIE_NAME]
    page = client.get("/gallery")
    assert "action='gallery/logout'" in page.text  # the page's sign-out button
    out = client.post("/gallery/logout", follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "../gallery"
    cleared = out.headers["set-cookie"]
    assert cleared.startswith(f'{COOKIE_NAME}="";') and "Max-Age=0" in cleared
    assert client.get("/gallery/api/outputs").status_code == 401
    again = TestClient(app, base_url="http://127.0.0.1:8765")  # a copy of the cookie kept elsewhere
    again.cookies.set(COOKIE_NAME, kept)
    assert again.get("/gallery/api/outputs").status_code == 401
    assert "gallery/logout" not in TestClient(Gallery(outputs["policy"]).app()).get("/gallery").text


def test_user_text_reaches_the_page_only_as_json_under_a_policy_without_inline_script(outputs):
    client = _signed_in(outputs)
    page = client.get("/gallery")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "cat" not in page.text and "<script>" not in page.text  # the only script is the file
    api = client.get("/gallery/api/outputs")
    assert api.headers["content-type"] == "application/json"
    script = client.get("/gallery/static/gallery.js").text
    assert "innerHTML" not in script and "textContent" in script


def test_files_are_served_with_their_content_type_and_byte_ranges(outputs):
    client = _signed_in(outputs)
    whole = client.get(f"/gallery/files/{outputs['video']}")
    data = (outputs["dir"] / outputs["video"]).read_bytes()
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "video/mp4" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/gallery/files/{outputs['video']}", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = client.get(f"/gallery/files/{outputs['video']}", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    beyond = client.get(f"/gallery/files/{outputs['video']}", headers={"Range": f"bytes={len(data)}-"})
    assert beyond.status_code == 416 and beyond.headers["content-range"] == f"bytes */{len(data)}"
    image = client.get(f"/gallery/files/{outputs['image']}")
    assert image.headers["content-type"] == "image/png" and image.content.startswith(b"\x89PNG")


@pytest.mark.parametrize(
    "name",
    [
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "%2Fetc%2Fpasswd",
        ".tmp-abc.mp4",
        "nope.png",
        "a%00b.png",
        "link.png",
    ],
)
def test_a_name_outside_the_output_directory_hidden_missing_or_a_link_is_not_found(outputs, tmp_path, name):
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    (outputs["dir"] / ".tmp-abc.mp4").write_bytes(b"half")
    (outputs["dir"] / "link.png").symlink_to(secret)
    response = _signed_in(outputs).get(f"/gallery/files/{name}")
    assert (
        response.status_code == 404 and b"secret" not in response.content and b"half" not in response.content
    )


@pytest.mark.parametrize("dropped", ["evil.html", "evil.js", "evil.svg"])
def test_a_file_dropped_into_the_output_directory_is_never_served_or_listed(outputs, dropped):
    # The attack of issue 22: evil.html loading evil.js, which reads the outputs with the cookie.
    (outputs["dir"] / dropped).write_text(
        "<script src='/gallery/files/evil.js'></script>fetch('api/outputs')"
    )
    client = _signed_in(outputs)
    assert client.get(f"/gallery/files/{dropped}").status_code == 404
    assert dropped not in {e["name"] for e in client.get("/gallery/api/outputs").json()["outputs"]}


def test_a_hard_link_to_a_file_elsewhere_named_like_an_output_is_not_found(outputs, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    linked = "20260101T000000Z-text_to_image-0123abcd.png"
    os.link(secret, outputs["dir"] / linked)
    response = _signed_in(outputs).get(f"/gallery/files/{linked}")
    assert response.status_code == 404 and b"secret" not in response.content


def test_a_file_is_answered_as_a_download_or_inline_media_under_a_sandbox_policy(outputs):
    client = _signed_in(outputs)
    video = client.get(f"/gallery/files/{outputs['video']}")
    sidecar = client.get(f"/gallery/files/{outputs['video']}.json")
    assert video.headers["content-disposition"] == f'inline; filename="{outputs["video"]}"'
    assert sidecar.headers["content-disposition"].startswith("attachment;")
    assert sidecar.headers["content-type"] == "application/json"
    for answer in (video, sidecar):
        csp = answer.headers["content-security-policy"]
        assert csp.startswith("sandbox;") and "script-src" not in csp
        assert answer.headers["x-content-type-options"] == "nosniff"


def test_the_output_directory_swapped_for_a_link_while_serving_serves_nothing_from_there(outputs, tmp_path):
    client = _signed_in(outputs)
    assert client.get(f"/gallery/files/{outputs['video']}").status_code == 200  # the handle is taken
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    planted = "20260101T000000Z-text_to_image-0123abcd.png"
    (elsewhere / planted).write_bytes(b"not the server's")
    outputs["dir"].rename(tmp_path / "moved")
    outputs["dir"].symlink_to(elsewhere)
    assert client.get(f"/gallery/files/{planted}").status_code == 404
    assert planted not in {e["name"] for e in client.get("/gallery/api/outputs").json()["outputs"]}


def test_a_file_removed_while_the_outputs_are_listed_is_left_out_not_a_500(outputs, vanish_before_stat):
    client = _signed_in(outputs)
    vanish_before_stat(outputs["dir"], outputs["part"])  # another cleanup, between the scan and the stat
    answer = client.get("/gallery/api/outputs")
    assert answer.status_code == 200
    listed = answer.json()["outputs"]
    assert [e["name"] for e in listed] == [outputs["video"], outputs["image"]] and listed[0]["extras"] == []


def test_a_foreign_host_is_refused_by_the_gallery_too_and_an_allowed_one_admitted(outputs):
    security = transport_security("127.0.0.1", 8765, ["gpu.example.com"])
    client = _client(outputs, security=security)
    assert client.get("/gallery", headers={"Host": "evil.example:8765"}).status_code == 421
    assert client.get("/gallery", headers={"Host": "gpu.example.com"}).status_code == 401  # the login
    origin = {"Host": "gpu.example.com", "Origin": "https://evil.example"}
    assert client.get("/gallery", headers=origin).status_code == 403


# ---------------------------------------------------------------------------------------------
# HTTP for real deployments


def test_only_loopback_hosts_count_as_local():
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.3.4.5", "localhost", "::1", "[::1]"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "192.168.1.2", "gpu.example.com"))


def test_a_non_loopback_host_without_a_token_is_refused_unless_no_auth_is_explicit(caplog):
    open_to_all = ServerConfig(transport="http", host="0.0.0.0")
    with pytest.raises(ConfigError, match=r"--host='0\.0\.0\.0': .*UNISON_AUTH_TOKEN.*--no-auth"):
        check_exposure(open_to_all)
    check_exposure(ServerConfig(transport="http", host="0.0.0.0", auth_token="t"))
    check_exposure(ServerConfig(transport="http", host="127.0.0.1"))
    with caplog.at_level(logging.WARNING, logger="unison_mcp.http"):
        check_exposure(ServerConfig(transport="http", host="0.0.0.0", auth=False))
    assert "NO AUTHENTICATION" in caplog.text
    with pytest.raises(ConfigError, match="contradicts"):
        check_exposure(ServerConfig(transport="http", host="0.0.0.0", auth=False, auth_token="t"))


@pytest.mark.parametrize("bad", ["https://gpu.example.com", "gpu.example.com/mcp", "a b", "user@host"])
def test_an_allowed_host_that_is_not_a_host_name_is_refused(bad):
    with pytest.raises(ConfigError, match="--allowed-host"):
        check_exposure(ServerConfig(allowed_hosts=[bad]))


def test_an_allowed_host_admits_the_name_a_reverse_proxy_sends_with_or_without_a_port():
    settings = transport_security("0.0.0.0", 8765, ["gpu.example.com", "edge.example:8443"])
    assert {"gpu.example.com", "gpu.example.com:*", "edge.example:8443"} <= set(settings.allowed_hosts)
    assert "edge.example:*" not in settings.allowed_hosts
    assert {"https://gpu.example.com", "https://edge.example:8443"} <= set(settings.allowed_origins)


def test_the_gallery_link_uses_the_public_url_or_the_bound_address():
    assert gallery_url(ServerConfig()) is None  # stdio: no gallery served
    assert gallery_url(ServerConfig(transport="http", port=9000)) == "http://127.0.0.1:9000/gallery"
    behind = ServerConfig(transport="http", public_url="https://gpu.example.com/")
    assert gallery_url(behind) == "https://gpu.example.com/gallery"


def test_the_http_app_serves_the_gallery_beside_mcp_behind_the_same_token(outputs):
    config = ServerConfig(
        engine=EngineConfig(output_dir=outputs["dir"]),
        transport="http",
        auth_token=TOKEN,
        allowed_hosts=["gpu.example.com"],
    )
    app = http_app(build_server(config), config)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert client.post("/mcp", json={}).status_code == 401
        assert client.get("/gallery/api/outputs").status_code == 401
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        listed = client.get("/gallery/api/outputs", headers=bearer).json()["outputs"]
        assert [e["name"] for e in listed] == [outputs["video"], outputs["image"]]
        assert client.get("/gallery/api/jobs", headers=bearer).json() == {
            "jobs": [],
            "queue": True,
            "version": outputs["dir"].stat().st_mtime_ns,
        }
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "0"},
            },
        }
        accept = {**bearer, "Accept": "application/json, text/event-stream"}
        proxied = client.post("/mcp", json=init, headers={**accept, "Host": "gpu.example.com"})
        foreign = client.post("/mcp", json=init, headers={**accept, "Host": "evil.example"})
        assert proxied.status_code == 200 and foreign.status_code == 421


def test_a_page_view_with_everything_the_page_asks_for_logs_no_warning(outputs, caplog):
    config = ServerConfig(engine=EngineConfig(output_dir=outputs["dir"]), transport="http", auth_token=TOKEN)
    app = http_app(build_server(config), config)
    with TestClient(app, base_url="http://127.0.0.1:8765") as client:
        assert client.get("/gallery", params={"token": TOKEN}).status_code == 200  # signed in: the cookie
        with caplog.at_level(logging.INFO):
            page = client.get("/gallery")
            # What a browser fetches for the page: what it links (script, style, icon), and the
            # icon at the site's root, which some browsers ask for anyway.
            linked = re.findall(r'(?:href|src)="(gallery/[^"]+)"', page.text)
            answers = {url: client.get("/" + url) for url in linked}
            favicon = client.get("/favicon.ico")
        warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        # Elsewhere the token is still asked, and refusing it is still worth a warning.
        with caplog.at_level(logging.WARNING):
            assert client.get("/mcp").status_code == 401
    assert "refused an HTTP request without a valid bearer token" in caplog.text
    assert warned == []
    assert page.status_code == 200
    assert {f"gallery/static/{name}" for name in ("gallery.js", "gallery.css", "icon.svg")} <= set(answers)
    assert all(r.status_code == 200 for r in answers.values()), {u: r.status_code for u, r in answers.items()}
    assert answers["gallery/static/icon.svg"].headers["content-type"].startswith("image/svg+xml")
    assert favicon.status_code == 404  # not a 401: nothing of the user's, no token asked


def test_the_gallery_command_without_a_token_serves_loopback_only_even_with_no_auth(tmp_path):
    engine = EngineConfig(output_dir=tmp_path)
    with pytest.raises(ConfigError, match="without a token serves this machine only"):
        gallery_app(ServerConfig(engine=engine, host="0.0.0.0", auth=False))
    assert gallery_app(ServerConfig(engine=engine, host="127.0.0.1")) is not None
    assert gallery_app(ServerConfig(engine=engine, host="0.0.0.0", auth_token=TOKEN)) is not None


def test_a_token_in_a_url_or_the_configured_token_never_reaches_a_log_record():
    redact = RedactTokens((TOKEN,))
    # uvicorn's access record, as it makes it at -vv.
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5", "GET", f"/gallery?x=1&token={TOKEN}&y=2", "1.1", 200),
        None,
    )
    assert redact.filter(record)
    assert record.getMessage() == '127.0.0.1:5 - "GET /gallery?x=1&token=***&y=2 HTTP/1.1" 200'
    said = logging.LogRecord("x", logging.DEBUG, __file__, 1, f"header Bearer {TOKEN}", None, None)
    redact.filter(said)
    assert TOKEN not in said.getMessage()


def _serve(cmd: list[str], env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env, cwd=REPO
    )
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, log.read_text(errors="replace")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            assert time.monotonic() < deadline, "the gallery did not start"
            time.sleep(0.1)


def test_at_vv_the_access_log_shows_the_sign_in_without_its_token(outputs, tmp_path):
    import httpx2

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(UNISON_AUTH_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "unison_mcp", "-vv", "gallery", "--output-dir", str(outputs["dir"])]
    log = tmp_path / "gallery.log"
    proc = _serve([*cmd, "--port", str(port)], env, port, log)
    try:
        base = f"http://127.0.0.1:{port}"
        assert httpx2.get(f"{base}/gallery", params={"token": TOKEN}).status_code == 200
        assert httpx2.get(f"{base}/gallery", params={"token": TOKEN[:-1]}).status_code == 401
        assert httpx2.get(f"{base}/gallery/api/jobs", headers={"Authorization": f"Bearer {TOKEN}"}).is_success
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text(errors="replace")
    assert "GET /gallery?token=*** HTTP/1.1" in text, text[-2000:]
    assert TOKEN[:-1] not in text


def test_the_gallery_command_without_a_token_says_so_when_it_starts(outputs, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    cmd = [sys.executable, "-m", "unison_mcp", "gallery", "--output-dir", str(outputs["dir"])]
    log = tmp_path / "gallery.log"
    proc = _serve([*cmd, "--port", str(port)], env, port, log)
    proc.terminate()
    proc.wait(10)
    assert "without a token: no sign-in, anyone on this machine can open it (loopback only" in log.read_text()


# ---------------------------------------------------------------------------------------------
# In a real browser


def _chromium() -> str | None:
    for name in (os.environ.get("UNISON_TEST_CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(
    _chromium() is None,
    reason="no chromium found: install Debian's (apt-get install -y chromium); .ci/run does",
)
def test_in_a_headless_browser_the_page_signs_in_lists_the_outputs_and_loads_the_video(outputs, tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("UNISON_")}
    env.update(UNISON_AUTH_TOKEN=TOKEN, PYTHONUNBUFFERED="1")
    log = (tmp_path / "gallery.log").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "unison_mcp",
        "gallery",
        "--output-dir",
        str(outputs["dir"]),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env, cwd=REPO
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "gallery.log").read_text(errors="replace")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                assert time.monotonic() < deadline, "the gallery did not start"
                time.sleep(0.1)
        browser = [
            _chromium(),
            "--headless",
            "--no-sandbox",  # CI containers run as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            # The token once: the answer sets the cookie and moves on to /gallery without it.
            f"http://127.0.0.1:{port}/gallery?token={TOKEN}",
        ]
        dom = subprocess.run(browser, capture_output=True, text=True, timeout=60).stdout
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    assert 'data-outputs="2"' in dom, dom[-3000:]
    cards = re.findall(r'<article id="([^"]+)"', dom)
    assert cards == [outputs["video"], outputs["image"]]
    video = re.search(rf'<video src="gallery/files/{re.escape(outputs["video"])}"[^>]*>', dom)
    assert video is not None, dom[-3000:]
    state = re.search(r'data-ready-state="(\d)"', video.group(0))
    duration = re.search(r'data-duration="([\d.]+)"', video.group(0))
    assert state is not None and int(state.group(1)) >= 1, video.group(0)  # HAVE_METADATA or more
    assert duration is not None and float(duration.group(1)) == pytest.approx(9 / 8, abs=0.01)
    assert f'data-name="{outputs["part"]}" data-output="new_part"' in dom  # the extra, under its result
    # The hostile prompt is text: escaped in the DOM, no element made from it, no script run.
    assert "a cat &lt;img src=x onerror=" in dom and "&lt;script&gt;" in dom
    assert "<title>unison-mcp gallery</title>" in dom

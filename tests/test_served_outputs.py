"""Outputs over MCP under attack and under stress (issue 22), through the SDK's in-memory client:
``resources/read`` and ``resources/list`` serve only what the server wrote, a swapped output
directory redirects nothing, a large output is refused at once with where to read it instead,
reading never holds the event loop, a listing survives files that vanish, and a full disk is the
server's own error (code and hint) with nothing left behind by a generation that failed midway.
"""

from __future__ import annotations

import base64
import errno
import os
import threading
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

import engine.outdir as outdir
from engine import writes
from engine.config import EngineConfig
from unison_mcp.config import ServerConfig
from unison_mcp.server import build_server

WRITTEN = "20260101T000000Z-text_to_video-0123abcd.mp4"


def _server(out: Path, **server: Any) -> Any:
    return build_server(ServerConfig(engine=EngineConfig(planner_model=None, output_dir=out), **server))


@pytest.fixture()
def out(tmp_path: Path) -> Path:
    d = tmp_path / "outputs"
    d.mkdir()
    (d / WRITTEN).write_bytes(b"\x00\x00\x00\x18ftypisom the server's video")
    return d


async def _refused(server: Any, name: str, words: str) -> None:
    async with Client(server) as client:
        with pytest.raises(MCPError, match=words):
            await client.read_resource(f"unison://outputs/{name}")


@pytest.mark.parametrize("dropped", ["evil.html", "evil.js", "evil.svg"])
async def test_a_file_dropped_into_the_output_directory_is_neither_listed_nor_read(out: Path, dropped: str):
    (out / dropped).write_text("<script>alert(1)</script>")
    server = _server(out)
    async with Client(server) as client:
        listed = {
            r.name
            for r in (await client.list_resources()).resources
            if str(r.uri).startswith("unison://outputs/")
        }
        with pytest.raises(MCPError, match="only the files this server wrote"):
            await client.read_resource(f"unison://outputs/{dropped}")
    assert listed == {WRITTEN}


async def test_a_hard_link_to_a_file_outside_is_not_read_though_named_like_an_output(
    out: Path, tmp_path: Path
):
    secret = tmp_path / "secret.txt"
    secret.write_text("the secret")
    linked = "20260101T000001Z-text_to_image-89abcdef.png"
    os.link(secret, out / linked)
    await _refused(_server(out), linked, "no output named")


async def test_the_output_directory_replaced_by_a_link_to_etc_does_not_serve_etc_passwd(
    out: Path, tmp_path: Path
):
    server = _server(out)  # the handle on the directory is taken as the server is built
    out.rename(tmp_path / "moved")
    out.symlink_to("/etc")
    async with Client(server) as client:
        with pytest.raises(MCPError) as refused:
            await client.read_resource("unison://outputs/passwd")
        kept = (await client.read_resource(f"unison://outputs/{WRITTEN}")).contents[0]
        listed = {
            r.name
            for r in (await client.list_resources()).resources
            if str(r.uri).startswith("unison://outputs/")
        }
    assert "root:" not in str(refused.value)
    assert base64.b64decode(kept.blob).endswith(b"the server's video")  # still its own directory
    assert listed == {WRITTEN}


async def test_an_output_over_the_read_limit_is_refused_unread_saying_where_to_read_it(
    out: Path, monkeypatch
):
    big = "20260101T000002Z-text_to_video-fedcba98.mp4"
    with (out / big).open("wb") as f:
        f.truncate(200 * 1024 * 1024)  # 200 MB, sparse: what the issue planted
    reads: list[int] = []
    real_read = outdir.OutputDir.read

    def counted(self: Any, name: str, max_bytes: int) -> Any:
        found = real_read(self, name, max_bytes)
        reads.append(0 if found[0] is None else len(found[0]))
        return found

    monkeypatch.setattr(outdir.OutputDir, "read", counted)
    server = _server(out, transport="http", port=8765)
    async with Client(server) as client:
        listed = {
            r.name: r.size
            for r in (await client.list_resources()).resources
            if str(r.uri).startswith("unison://outputs/")
        }
        with pytest.raises(MCPError) as refused:
            await client.read_resource(f"unison://outputs/{big}")
        small = await client.read_resource(f"unison://outputs/{WRITTEN}")
    message = refused.value.error.message
    assert f"{200 * 1024 * 1024:,} bytes, over the {16 * 1024 * 1024:,}-byte limit" in message
    assert str(out / big) in message and f"http://127.0.0.1:8765/gallery#{big}" in message
    assert reads == [0, len((out / WRITTEN).read_bytes())]  # the large one was never read
    assert listed[big] == 200 * 1024 * 1024 and small.contents[0].mime_type == "video/mp4"


async def test_the_read_limit_is_a_setting(out: Path):
    await _refused(_server(out, max_read_bytes=10), WRITTEN, "over the 10-byte limit")


async def test_while_an_output_is_read_and_encoded_another_request_is_answered(out: Path, monkeypatch):
    pinged = threading.Event()
    order: list[str] = []
    real_b64 = base64.b64encode

    def slow_encoding(data: bytes, *args: Any) -> bytes:
        # Encoding a large output takes a while: here, until the ping is answered (at most 5 s).
        # Done on the event loop, it would hold the ping's answer until it ends.
        pinged.wait(5)
        return real_b64(data, *args)

    monkeypatch.setattr(base64, "b64encode", slow_encoding)
    server = _server(out)
    async with Client(server) as client, anyio.create_task_group() as tg:

        async def read() -> None:
            await client.read_resource(f"unison://outputs/{WRITTEN}")
            order.append("read")

        tg.start_soon(read)
        await anyio.sleep(0.05)
        await client.list_tools()  # (ping itself is gone from the protocol's current version)
        order.append("ping")
        pinged.set()
    assert order == ["ping", "read"]


async def test_a_file_removed_while_resources_are_listed_is_left_out_not_an_error(
    out: Path, vanish_before_stat
):
    gone = "20260101T000003Z-text_to_image-00112233.png"
    (out / gone).write_bytes(b"png")
    vanish_before_stat(out, gone)  # another cleanup, between the scan and the stat
    async with Client(_server(out)) as client:
        listed = [
            r.name
            for r in (await client.list_resources()).resources
            if str(r.uri).startswith("unison://outputs/")
        ]
    assert listed == [WRITTEN]


# ---------------------------------------------------------------------------------------------
# A full disk, through the tools, on the tiny models


def _tiny_server(tiny_paths: Any, out: Path) -> Any:
    return build_server(ServerConfig(engine=EngineConfig.tiny(tiny_paths.root, output_dir=out)))


async def test_no_room_for_a_job_is_the_servers_out_of_space_before_any_model_work(
    tiny_paths, tmp_path, monkeypatch
):
    real = os.fstatvfs

    def nearly_full(fd: int) -> os.statvfs_result:
        st = real(fd)
        return os.statvfs_result((st.f_bsize, 4096, st.f_blocks, 10, 10, *tuple(st)[5:]))

    monkeypatch.setattr(outdir.os, "fstatvfs", nearly_full)
    decoded: list[Any] = []
    monkeypatch.setattr("engine.job.Job.prepare", lambda *a: decoded.append(a))  # never reached
    async with Client(_tiny_server(tiny_paths, tmp_path / "outputs")) as client:
        result = await client.call_tool(
            "generate", {"task": "text_to_video", "prompt": "rain", "num_frames": 9}
        )
    text = result.content[0].text
    assert result.is_error and text.startswith("out_of_space: no room in the output directory")
    assert str(tmp_path / "outputs") in text and "This is the server's disk, not the call" in text
    assert "internal_error" not in text and decoded == []


async def test_a_generation_of_three_failing_midway_leaves_no_file_to_list(tiny_paths, tmp_path, monkeypatch):
    real = writes._write_all
    calls: list[Path] = []

    def third_fails(path: Path, data: bytes) -> None:
        calls.append(path)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    monkeypatch.setattr(writes, "_write_all", third_fails)
    arguments = {
        "task": "text_to_image",
        "prompt": "a cube",
        "width": 32,
        "height": 32,
        "count": 3,
        "steps": 1,
    }
    async with Client(_tiny_server(tiny_paths, tmp_path / "outputs")) as client:
        result = await client.call_tool("generate", arguments)
        listed = [
            r for r in (await client.list_resources()).resources if str(r.uri).startswith("unison://outputs/")
        ]
    assert result.is_error and result.content[0].text.startswith(
        "out_of_space: writing into the output directory"
    )
    assert len(calls) == 3 and listed == []

"""Writing outputs (issue 20 item 2, issue 22 item 2): encoded in memory with the index first,
written off the interpreter lock with a time limit, previews made from the frames in memory.

A stalled disk is played by ``os.write`` blocking on the output's temporary files (it waits as a
write blocked in the kernel does, without the interpreter lock); the real-server version of this
test, with SIGTERM, is in tests/test_service.py.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from engine import media, preview
from engine.errors import OutputStalled
from engine.media import H264_ENCODERS, moov_first, mp4_bytes, video_encoder
from engine.outputs import write_output
from engine.writes import limited


def _frames(n: int, h: int = 48, w: int = 64) -> np.ndarray:
    """Frame k is flat grey 20·k (k < 12), so each frame is recognisable in a preview."""
    return np.stack([np.full((h, w, 3), (20 * k) % 256, np.uint8) for k in range(n)])


def _top_boxes(data: bytes) -> list[bytes]:
    kinds, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at : at + 4], "big")
        kinds.append(data[at + 4 : at + 8])
        at += size
    return kinds


def _decoded(data: bytes) -> np.ndarray:
    with av.open(io.BytesIO(data)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


# ---------------------------------------------------------------------------------------------
# Encoding in memory


def test_a_video_is_encoded_in_memory_with_its_index_before_its_frames():
    frames = _frames(9)
    data = mp4_bytes(frames, 16)
    kinds = _top_boxes(data)
    assert kinds.index(b"moov") < kinds.index(b"mdat")
    decoded = _decoded(data)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).max() <= 2  # flat greys survive H.264 within ±2


def test_moving_the_index_first_keeps_every_frame_where_it_was():
    frames = np.random.default_rng(0).integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    media._encode_video(frames, media.Fraction(16), video_encoder(), buffer)  # index at the end
    at_end = buffer.getvalue()
    assert _top_boxes(at_end)[-1] == b"moov"
    first = moov_first(at_end)
    assert _top_boxes(first).index(b"moov") < _top_boxes(first).index(b"mdat")
    assert len(first) == len(at_end)
    assert np.array_equal(_decoded(first), _decoded(at_end))
    assert moov_first(first) == first


def test_the_encoder_is_chosen_once_and_is_libx264_without_an_nvidia_driver():
    chosen = video_encoder()
    assert chosen is video_encoder()
    assert chosen.codec in {e.codec for e in H264_ENCODERS}
    if not Path("/dev/nvidia0").exists():
        assert chosen.codec == "libx264"
        assert chosen.options["preset"] == "veryfast" and chosen.options["crf"] == "14"


def test_a_png_is_written_at_the_chosen_compression_level_and_reads_back_exactly(tmp_path: Path):
    frame = np.random.default_rng(1).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    out = write_output(frame[None], output_dir=tmp_path, task="text_to_image", fps=None, metadata={})
    assert np.array_equal(np.asarray(Image.open(out.path)), frame)
    assert media.PNG_COMPRESS_LEVEL == 1


# ---------------------------------------------------------------------------------------------
# Previews from the frames in memory


def test_a_videos_preview_is_a_contact_sheet_of_six_evenly_spaced_frames(tmp_path: Path):
    frames = _frames(11, h=480, w=832)
    out = write_output(frames, output_dir=tmp_path, task="text_to_video", fps=16.0, metadata={})
    made = out.preview
    assert made is not None and made.mime_type == "image/jpeg"
    assert made.frames == [0, 2, 4, 6, 8, 10]
    assert made.width <= preview.SHEET_WIDTH and len(made.data) <= preview.PREVIEW_MAX_BYTES
    sheet = np.asarray(Image.open(io.BytesIO(made.data)).convert("RGB")).astype(int)
    assert sheet.shape[1] == made.width and sheet.shape[0] == made.height
    tile_w = (made.width - 2 * preview.SHEET_GAP) // 3
    tile_h = (made.height - preview.SHEET_GAP) // 2
    for k, index in enumerate(made.frames):
        row, column = divmod(k, 3)
        centre = sheet[
            row * (tile_h + preview.SHEET_GAP) + tile_h // 2,
            column * (tile_w + preview.SHEET_GAP) + tile_w // 2,
        ]
        assert np.abs(centre - 20 * index).max() <= 3, (index, centre)
    # Made from memory, not read back, and never in the sidecar.
    assert "preview" not in json.loads(Path(out.sidecar).read_text())["file"]


def test_a_pictures_preview_is_the_picture_scaled_down(tmp_path: Path):
    frame = np.zeros((1080, 1920, 3), np.uint8)
    frame[:, 960:] = 255
    out = write_output(frame[None], output_dir=tmp_path, task="text_to_image", fps=None, metadata={})
    made = out.preview
    assert made is not None and (made.width, made.height) == (1024, 576) and made.frames == [0]
    small = np.asarray(Image.open(io.BytesIO(made.data)).convert("L")).astype(int)
    assert small[:, :500].max() <= 8 and small[:, 524:].min() >= 247


# ---------------------------------------------------------------------------------------------
# A stalled disk


@pytest.fixture()
def stalled_disk(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """``os.write`` on an output's temporary file blocks until the test ends (then goes on, as a
    disk that comes back would); returns the event that is set when a write got stuck."""
    real = os.write
    stuck, release = threading.Event(), threading.Event()

    def write(fd: int, data) -> int:
        try:
            name = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            name = ""
        if name.startswith(str(tmp_path)) and Path(name).name.startswith(".tmp-"):
            stuck.set()
            release.wait()  # blocked as in the kernel: no interpreter lock held
        return real(fd, data)

    monkeypatch.setattr(os, "write", write)
    yield stuck
    release.set()


def test_a_stalled_write_fails_with_output_stalled_after_the_limit_and_leaves_nothing(
    tmp_path: Path, stalled_disk: threading.Event
):
    t0 = time.perf_counter()
    with pytest.raises(OutputStalled, match=r"did not answer within 0.5 s .*nothing was written"):
        write_output(
            _frames(9), output_dir=tmp_path, task="text_to_video", fps=16.0, metadata={}, timeout_s=0.5
        )
    took = time.perf_counter() - t0
    assert stalled_disk.is_set() and took < 3.0, took
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".tmp-")] == []


def test_the_event_loop_keeps_ticking_while_a_write_is_stalled(tmp_path: Path, stalled_disk: threading.Event):
    async def run() -> tuple[int, float, BaseException | None]:
        work = asyncio.create_task(
            asyncio.to_thread(
                write_output,
                _frames(9),
                output_dir=tmp_path,
                task="text_to_video",
                fps=16.0,
                metadata={},
                timeout_s=1.5,
            )
        )
        while not stalled_disk.is_set():
            await asyncio.sleep(0.005)
        ticks, t0 = 0, time.perf_counter()
        while not work.done():
            await asyncio.sleep(0.01)
            ticks += 1
        error = work.exception()
        return ticks, time.perf_counter() - t0, error

    ticks, seconds, error = asyncio.run(run())
    assert isinstance(error, OutputStalled)
    # ~1 s stuck: a loop that kept running ticked most of its 10 ms sleeps (a frozen one: ~none).
    assert ticks >= 0.5 * seconds / 0.01, (ticks, seconds)


def test_a_write_that_returns_after_its_limit_removes_its_temporary_file(tmp_path: Path):
    release = threading.Event()
    temp = tmp_path / ".tmp-late"

    def slow() -> None:
        temp.write_bytes(b"x")
        release.wait()

    with pytest.raises(OutputStalled):
        limited(slow, timeout_s=0.2, what="writing .tmp-late", cleanup=temp.unlink)
    assert temp.exists()
    release.set()
    deadline = time.monotonic() + 5
    while temp.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not temp.exists()


def test_a_limited_call_gives_back_its_result_or_its_own_error():
    assert limited(lambda: 42, timeout_s=5, what="x") == 42
    with pytest.raises(ZeroDivisionError):
        limited(lambda: 1 / 0, timeout_s=5, what="x")

"""Previews a model can judge (issue 21): a video's evenly spaced frames tiled on one sheet, in
reading order and labelled with their time, within its width and byte budget; every preview of one
result within what a client takes."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.media import encode_mp4
from engine.preview import (
    PREVIEW_MAX_BYTES,
    SHEET_GAP,
    SHEET_WIDTH,
    contact_sheet,
    frame_labels,
    image_preview,
    sheet_indices,
    video_sheet,
)
from engine.results import OutputFile
from unison_mcp.present import _previews, preview

#: Distinct colours, one per frame, far apart so that JPEG's error cannot confuse them.
COLOURS = [(230, 20, 20), (20, 230, 20), (20, 20, 230), (230, 230, 20), (20, 230, 230), (230, 20, 230)]


def _solid(colour: tuple[int, int, int], h: int = 480, w: int = 832) -> np.ndarray:
    return np.broadcast_to(np.array(colour, np.uint8), (h, w, 3)).copy()


def _tile_size(sheet: Image.Image, cols: int, rows: int) -> tuple[int, int]:
    return (sheet.width + SHEET_GAP) // cols - SHEET_GAP, (sheet.height + SHEET_GAP) // rows - SHEET_GAP


def _tiles(sheet: Image.Image, cols: int, rows: int) -> list[tuple[int, ...]]:
    """The colour at each tile's centre, in reading order."""
    tw, th = _tile_size(sheet, cols, rows)
    rgb = sheet.convert("RGB")
    return [
        rgb.getpixel((c * (tw + SHEET_GAP) + tw // 2, r * (th + SHEET_GAP) + th // 2))
        for r in range(rows)
        for c in range(cols)
    ]


def _close(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    return max(abs(x - y) for x, y in zip(a, b, strict=True)) < 40


@pytest.mark.parametrize(
    ("num_frames", "expected"),
    [(81, [0, 16, 32, 48, 64, 80]), (9, [0, 2, 3, 5, 6, 8]), (3, [0, 1, 2]), (1, [0])],
)
def test_the_sheet_shows_frames_evenly_spaced_from_the_first_to_the_last(num_frames, expected):
    assert sheet_indices(num_frames) == expected
    assert sheet_indices(81, 4) == [0, 27, 53, 80]


@pytest.mark.parametrize(("n", "cols", "rows"), [(6, 3, 2), (5, 3, 2), (4, 2, 2), (3, 3, 1)])
def test_frames_are_tiled_in_reading_order_within_the_width(n, cols, rows):
    data = contact_sheet([_solid(c) for c in COLOURS[:n]], labels=[f"{i} s" for i in range(n)])
    sheet = Image.open(io.BytesIO(data))
    assert sheet.format == "JPEG" and sheet.width <= SHEET_WIDTH and len(data) <= PREVIEW_MAX_BYTES
    tile_w = (SHEET_WIDTH - (cols - 1) * SHEET_GAP) // cols
    assert _tile_size(sheet, cols, rows) == (tile_w, round(480 * tile_w / 832))
    for got, want in zip(_tiles(sheet, cols, rows), COLOURS[:n], strict=False):
        assert _close(got, want), (got, want)
    # Each label sits on a dark box in its tile's corner: white text pixels there.
    corner = np.asarray(sheet.convert("L").crop((0, 0, 40, 14)))
    assert corner.max() > 200 and corner.min() < 60


def test_a_small_video_is_never_enlarged():
    sheet = Image.open(io.BytesIO(contact_sheet([_solid(c, 48, 64) for c in COLOURS])))
    assert sheet.size == (3 * 64 + 2 * SHEET_GAP, 2 * 48 + SHEET_GAP)


def test_noise_too_detailed_for_the_budget_is_made_smaller_until_it_fits():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(6)]
    for budget in (PREVIEW_MAX_BYTES, 40_000):
        data = contact_sheet(frames, max_bytes=budget)
        assert len(data) <= budget and Image.open(io.BytesIO(data)).width <= SHEET_WIDTH


def test_a_video_sheet_picks_its_frames_and_labels_them_with_their_time():
    frames = np.stack([_solid(COLOURS[i // 4 % 6], 32, 48) for i in range(21)])  # 21 frames
    sheet = Image.open(io.BytesIO(video_sheet(frames, 10.0)))
    picked = sheet_indices(21)  # [0, 4, 8, 12, 16, 20]
    assert picked == [0, 4, 8, 12, 16, 20]
    for got, i in zip(_tiles(sheet, 3, 2), picked, strict=True):
        assert _close(got, COLOURS[i // 4 % 6])
    assert frame_labels(picked, 10.0) == ["0.0 s", "0.4 s", "0.8 s", "1.2 s", "1.6 s", "2.0 s"]
    assert frame_labels([0, 5], None) == ["frame 0", "frame 5"]


def test_an_image_preview_keeps_its_aspect_within_the_side():
    img = Image.open(io.BytesIO(image_preview(_solid(COLOURS[0], 200, 400), 100)))
    assert img.size == (100, 50)


def _video(path: Path, frames: np.ndarray, fps: float = 16.0) -> OutputFile:
    encode_mp4(path, frames, fps)
    t, h, w = frames.shape[:3]
    return OutputFile(
        path=str(path),
        name=path.name,
        mime_type="video/mp4",
        size_bytes=path.stat().st_size,
        width=w,
        height=h,
        num_frames=t,
        fps=fps,
        duration_s=t / fps,
    )


def test_a_written_videos_preview_is_its_contact_sheet(tmp_path: Path):
    # 33 frames, a new colour every 6: the sheet's frames 0, 6, 13, 19, 26, 32 show them in turn.
    frames = np.stack([_solid(COLOURS[min(i // 6, 5)], 64, 96) for i in range(33)])
    image = preview(_video(tmp_path / "clip.mp4", frames), side=384)
    assert image is not None and image.mime_type == "image/jpeg"
    sheet = Image.open(io.BytesIO(base64.b64decode(image.data)))
    assert sheet.size == (3 * 96 + 2 * SHEET_GAP, 2 * 64 + SHEET_GAP)
    for got, i in zip(_tiles(sheet, 3, 2), sheet_indices(33), strict=True):
        assert _close(got, COLOURS[min(i // 6, 5)]), (i, got)


def test_every_preview_of_a_large_result_together_stays_far_below_a_clients_megabyte(tmp_path: Path):
    rng = np.random.default_rng(1)
    outputs = [
        _video(tmp_path / f"c{k}.mp4", rng.integers(0, 256, (9, 256, 384, 3), dtype=np.uint8))
        for k in range(5)
    ]
    blocks = _previews(outputs, 1024)
    assert len(blocks) == 5
    total = sum(len(b.data) for b in blocks)  # base64 characters
    assert total < 1_000_000 and len(json.dumps([b.model_dump(mode="json") for b in blocks])) < 1_048_576

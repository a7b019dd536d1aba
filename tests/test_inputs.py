"""engine.inputs: each input checked, opened once, and decoded from what was opened.

Covers the policy's refusals (the same for missing and existing files outside the roots, paths cut
in messages), the descriptor checks against files swapped after the check, the header-only probe
with the configured pixel limit and the container list, and how often one input is opened.
"""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine import video
from engine.api import admit, parse_arguments
from engine.config import EngineConfig, Limits
from engine.errors import InputRefused
from engine.inputs import MAX_PATH_CHARS, InputPolicy
from engine.media import encode_mp4, encode_png, open_image
from engine.source import ImageHeader, Source, VideoHeader
from engine.video import probe_video, read_video
from engine.vocab import MediaKind

MB = 1_000_000


def write_video(path: Path, n: int = 5, fps: float = 16, size: tuple[int, int] = (64, 48)) -> Path:
    w, h = size
    encode_mp4(path, np.stack([np.full((h, w, 3), 4 * i, np.uint8) for i in range(n)]), fps)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width×height but which holds almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


@pytest.fixture()
def tree(tmp_path: Path) -> dict[str, Path]:
    root, out, outside = tmp_path / "root", tmp_path / "outputs", tmp_path / "outside"
    for d in (root, out, outside, root / "album", outside / "album"):
        d.mkdir()
    encode_png(root / "album" / "cat.png", np.full((8, 8, 3), (0, 200, 0), np.uint8))
    encode_png(outside / "album" / "cat.png", np.full((8, 8, 3), (255, 0, 0), np.uint8))  # the "secret"
    return {"root": root, "out": out, "outside": outside}


@pytest.fixture()
def policy(tree: dict[str, Path]) -> InputPolicy:
    return InputPolicy([tree["root"]], tree["out"], max_bytes=10 * MB, max_pixels=64 * MB)


# ---------------------------------------------------------------------------------------------
# Opening once


def test_an_opened_source_holds_the_real_path_kind_size_and_a_descriptor(policy: InputPolicy, tree):
    path = tree["root"] / "album" / "cat.png"
    with policy.open(f"{tree['root']}/album/../album/cat.png", field="source") as source:
        assert source.path == path.resolve() and source.kind.value == "image"
        assert source.size == path.stat().st_size and source.field == "source"
        assert os.fstat(source.fd).st_ino == path.stat().st_ino
    assert source.closed
    with pytest.raises(OSError):
        os.fstat(source.fd)


def test_a_folder_swapped_for_a_symlink_while_the_job_waits_is_not_followed(policy: InputPolicy, tree):
    source = policy.open(str(tree["root"] / "album" / "cat.png"), field="source")
    # While the job waits in the queue, the folder inside the root becomes a link to elsewhere.
    shutil.rmtree(tree["root"] / "album")
    (tree["root"] / "album").symlink_to(tree["outside"] / "album")
    with source:
        img = open_image(source)
    assert img.getpixel((0, 0)) == (0, 200, 0)  # the checked file, not the "secret" one


def test_a_folder_swapped_for_a_symlink_between_check_and_open_is_refused(
    policy: InputPolicy, tree, monkeypatch: pytest.MonkeyPatch
):
    checked = InputPolicy._check

    def check_then_swap(self: InputPolicy, value: str, field: str):
        result = checked(self, value, field)
        shutil.rmtree(tree["root"] / "album")
        (tree["root"] / "album").symlink_to(tree["outside"] / "album")
        return result

    monkeypatch.setattr(InputPolicy, "_check", check_then_swap)
    with pytest.raises(InputRefused, match="changed"):
        policy.open(str(tree["root"] / "album" / "cat.png"), field="source")


def test_a_file_swapped_for_a_symlink_between_check_and_open_is_refused(
    policy: InputPolicy, tree, monkeypatch: pytest.MonkeyPatch
):
    checked = InputPolicy._check
    target = tree["root"] / "album" / "cat.png"

    def check_then_swap(self: InputPolicy, value: str, field: str):
        result = checked(self, value, field)
        target.unlink()
        target.symlink_to(tree["outside"] / "album" / "cat.png")
        return result

    monkeypatch.setattr(InputPolicy, "_check", check_then_swap)
    with pytest.raises(InputRefused, match="cannot be opened"):
        policy.open(str(target), field="source")


def test_a_fifo_swapped_in_between_check_and_open_is_refused_without_blocking(
    policy: InputPolicy, tree, monkeypatch: pytest.MonkeyPatch
):
    checked = InputPolicy._check
    target = tree["root"] / "album" / "cat.png"

    def check_then_swap(self: InputPolicy, value: str, field: str):
        result = checked(self, value, field)
        target.unlink()
        os.mkfifo(target)
        return result

    monkeypatch.setattr(InputPolicy, "_check", check_then_swap)
    with pytest.raises(InputRefused, match="FIFO"):
        policy.open(str(target), field="source")


def test_two_readers_of_one_source_keep_their_own_positions(policy: InputPolicy, tree):
    with policy.open(str(tree["root"] / "album" / "cat.png")) as source:
        a, b = source.reader(), source.reader()
        assert a.read(4) == b"\x89PNG"
        assert b.read(8) == b"\x89PNG\r\n\x1a\n" and a.read(4) == b"\r\n\x1a\n"


def test_a_closed_source_cannot_be_read(policy: InputPolicy, tree):
    source = policy.open(str(tree["root"] / "album" / "cat.png"))
    source.close()
    source.close()  # closing twice is harmless
    with pytest.raises(InputRefused, match="closed"):
        open_image(source)


def test_opening_several_closes_the_opened_ones_when_one_is_refused(policy: InputPolicy, tree):
    opened: list[Source] = []
    original = InputPolicy.open

    def keep(self: InputPolicy, value: str, *, field: str = "path") -> Source:
        opened.append(original(self, value, field=field))
        return opened[-1]

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(InputPolicy, "open", keep)
        with pytest.raises(InputRefused, match=r"media\[1\]"):
            policy.open_all([str(tree["root"] / "album" / "cat.png"), "/nope/x.png"], field="media")
    assert len(opened) == 1 and opened[0].closed


def test_markers_are_opened_at_admission_and_replaced_by_real_paths(policy: InputPolicy, tree):
    request = parse_arguments(
        "auto", Limits(), {"prompt": f"what is in ###{tree['root']}/album/../album/cat.png### ?"}
    )
    real = (tree["root"] / "album" / "cat.png").resolve()
    with admit(request, EngineConfig(), policy) as admitted:
        assert admitted.parsed is not None and admitted.parsed.media == ((str(real), MediaKind.IMAGE),)
        assert [s.path for s in admitted.sources.values()] == [real]
        sources = list(admitted.sources.values())
    assert all(s.closed for s in sources)


def test_without_roots_any_local_file_is_allowed_but_proc_is_not(tree):
    anywhere = InputPolicy(None, tree["out"], max_bytes=10 * MB, max_pixels=64 * MB)
    with anywhere.open(str(tree["outside"] / "album" / "cat.png")) as source:
        assert source.path.name == "cat.png"
    with pytest.raises(InputRefused, match="/proc is never readable"):
        anywhere.open("/proc/self/environ")
    assert anywhere.roots_text() == "any local file"


def test_the_output_directory_is_always_allowed(policy: InputPolicy, tree):
    encode_png(tree["out"] / "text_to_image-0001.png", np.zeros((4, 4, 3), np.uint8))
    with policy.open("unison://outputs/text_to_image-0001.png") as source:
        assert source.path == (tree["out"] / "text_to_image-0001.png").resolve()


# ---------------------------------------------------------------------------------------------
# Refusals that tell nothing and stay short


def test_outside_the_roots_a_missing_file_is_refused_like_an_existing_one(policy: InputPolicy, tree):
    def refusal(path: Path) -> str:
        with pytest.raises(InputRefused) as err:
            policy.open(str(path), field="source")
        return str(err.value).replace(str(path), "<PATH>")

    existing = refusal(tree["outside"] / "album" / "cat.png")
    assert "outside the allowed roots" in existing
    assert refusal(tree["outside"] / "album" / "dog.png") == existing
    assert refusal(tree["outside"] / "no-such-folder" / "cat.png") == existing
    assert refusal(Path("/no/such/place/cat.png")) == existing


def test_a_very_long_path_is_refused_by_its_length_alone_and_cut_in_the_message(
    policy: InputPolicy, tree, monkeypatch
):
    def no_file_system(*args, **kwargs):
        raise AssertionError("a path over the length limit reached the file system")

    for name in ("stat", "lstat", "open", "readlink"):
        monkeypatch.setattr(os, name, no_file_system)
    monkeypatch.setattr(Path, "resolve", no_file_system)
    long_path = "/" + "a" * 100_000 + "/cat.png"
    with pytest.raises(InputRefused) as err:
        policy.open(long_path, field="source")
    message = str(err.value)
    assert len(message) < 400 and "…" in message and "cat.png" in message, message
    assert "(100,009 characters)" in message and f"longer than {MAX_PATH_CHARS} characters" in message
    assert err.value.path is not None and len(err.value.path) < 300 and "100,009" in err.value.path


def test_a_long_missing_path_inside_a_root_is_cut_too(policy: InputPolicy, tree):
    with pytest.raises(InputRefused, match="no such file") as err:
        policy.open(str(tree["root"] / ("b" * 200) / ("c" * 200) / "cat.png"), field="source")
    assert len(str(err.value)) < 400


def test_an_empty_file_is_refused_before_it_is_opened(policy: InputPolicy, tree):
    (tree["root"] / "empty.png").write_bytes(b"")
    with pytest.raises(InputRefused, match="empty"):
        policy.open(str(tree["root"] / "empty.png"))


# ---------------------------------------------------------------------------------------------
# Header-only probes with the configured limits


def test_the_configured_pixel_limit_refuses_a_2_mp_image_under_a_1_mp_limit(tree):
    small = InputPolicy([tree["root"]], tree["out"], max_bytes=10 * MB, max_pixels=1 * MB)
    path = png_header_only(tree["root"] / "two.png", 2000, 1000)
    with pytest.raises(InputRefused, match="2000×1000 = 2000000 pixels; the limit is 1000000"):
        small.open_probed(str(path), field="source")


def test_the_configured_pixel_limit_accepts_a_70_mp_image_under_a_100_mp_limit(tree):
    large = InputPolicy([tree["root"]], tree["out"], max_bytes=10 * MB, max_pixels=100 * MB)
    path = png_header_only(tree["root"] / "seventy.png", 10_000, 7_000)
    with large.open_probed(str(path), field="source") as source:  # the header only: nothing decoded
        assert source.header == ImageHeader(format="PNG", width=10_000, height=7_000)


def test_the_configured_pixel_limit_applies_to_video_frames(tree):
    small = InputPolicy([tree["root"]], tree["out"], max_bytes=10 * MB, max_pixels=1000)
    path = write_video(tree["root"] / "v.mp4")
    with pytest.raises(InputRefused, match="64×48 = 3072 pixels; the limit is 1000"):
        small.open_probed(str(path))


def test_a_video_probe_reads_the_header_without_decoding_a_frame(
    policy: InputPolicy, tree, monkeypatch: pytest.MonkeyPatch
):
    import av.container

    path = write_video(tree["root"] / "v.mp4", n=9, fps=16)

    def no_decoding(*args, **kwargs):
        raise AssertionError("the pre-check decoded a frame")

    monkeypatch.setattr(av.container.InputContainer, "decode", no_decoding)
    with policy.open_probed(str(path)) as source:
        header = source.header
    assert isinstance(header, VideoHeader)
    assert (header.width, header.height, header.num_frames) == (64, 48, 9)
    assert header.fps == pytest.approx(16) and header.format.startswith("mov")


def test_a_gif_named_mp4_is_refused_naming_the_file_and_the_formats(policy: InputPolicy, tree):
    path = tree["root"] / "anim.mp4"
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InputRefused) as err:
        policy.open_probed(str(path), field="source")
    assert err.value.code == "input_refused"
    assert "anim.mp4" in str(err.value) and "MP4/MOV" in str(err.value) and "Matroska" in str(err.value)


def test_an_mpeg_ts_named_mp4_is_refused(policy: InputPolicy, tree):
    import av

    ts = tree["root"] / "stream.ts"
    with av.open(str(ts), "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(4):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 30, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    disguised = tree["root"] / "stream.mp4"
    ts.rename(disguised)
    with pytest.raises(InputRefused, match=r"stream\.mp4.*accepted: MP4/MOV"):
        policy.open_probed(str(disguised), field="source")


@pytest.mark.parametrize(
    ("suffix", "fmt", "codec"), [(".mkv", "matroska", "libx264"), (".avi", "avi", "mpeg4")]
)
def test_matroska_and_avi_files_are_accepted(policy: InputPolicy, tree, suffix: str, fmt: str, codec: str):
    import av

    path = tree["root"] / f"clip{suffix}"
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), i * 30, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with policy.open_probed(str(path)) as source:
        clip = read_video(source, num_frames=5)
    assert clip.frames.shape == (5, 48, 64, 3)


def test_frame_counting_stops_at_its_byte_bound(policy: InputPolicy, tree, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(video, "COUNT_MAX_BYTES", 10)
    with (
        policy.open(str(write_video(tree["root"] / "v.mp4", n=30))) as source,
        pytest.raises(InputRefused, match="counting its frames stopped"),
    ):
        video._count_frames(source)


# ---------------------------------------------------------------------------------------------
# Decoding from the source, and how often a file is opened


@pytest.fixture()
def opens(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts of ``os.open`` on input files, ``av.open`` and ``PIL.Image.open`` calls."""
    import av

    counts: Counter[str] = Counter()
    real_os_open, real_av_open, real_image_open = os.open, av.open, Image.open

    def os_open(path, flags, *args, **kwargs):
        if str(path).endswith((".png", ".jpg", ".mp4")):
            counts["os.open"] += 1
        return real_os_open(path, flags, *args, **kwargs)

    def av_open(*args, **kwargs):
        if (args[1] if len(args) > 1 else kwargs.get("mode", "r")) == "r":  # not the test's own writes
            counts["av.open"] += 1
        return real_av_open(*args, **kwargs)

    def image_open(*args, **kwargs):
        counts["Image.open"] += 1
        return real_image_open(*args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(av, "open", av_open)
    monkeypatch.setattr(Image, "open", image_open)
    return counts


def test_an_image_is_opened_once_parsed_once_to_check_and_once_to_decode(policy: InputPolicy, tree, opens):
    path = tree["root"] / "album" / "cat.png"
    with policy.open_probed(str(path), field="source") as source:
        assert opens == {"os.open": 1, "Image.open": 1}
        open_image(source, max_pixels=policy.max_pixels)
    assert opens == {"os.open": 1, "Image.open": 2}


def test_a_video_is_opened_once_parsed_once_to_check_and_once_to_probe_and_decode(
    policy: InputPolicy, tree, opens
):
    path = write_video(tree["root"] / "v.mp4", n=9)
    with policy.open_probed(str(path), field="source") as source:
        assert opens == {"os.open": 1, "av.open": 1}
        # What a task does in the job: the upright size first, then the frames.
        info = probe_video(source, max_pixels=policy.max_pixels)
        assert probe_video(source, max_pixels=policy.max_pixels) is info  # kept on the source
        clip = read_video(source, fps=16, num_frames=9, max_pixels=policy.max_pixels)
    assert (info.width, info.height, info.num_frames) == (64, 48, 9)
    assert clip.frames.shape == (9, 48, 64, 3) and round(float(clip.frames[8].mean()) / 4) == 8
    assert opens == {"os.open": 1, "av.open": 2}


def test_reading_a_video_without_probing_first_opens_its_container_once(policy: InputPolicy, tree, opens):
    with policy.open(str(write_video(tree["root"] / "v.mp4", n=9))) as source:
        clip = read_video(source, max_frames=4)
    assert len(clip.frames) == 4 and opens == {"os.open": 1, "av.open": 1}


def test_a_video_source_can_be_read_twice(policy: InputPolicy, tree):
    with policy.open(str(write_video(tree["root"] / "v.mp4", n=9))) as source:
        first = read_video(source, num_frames=9)
        second = read_video(source, num_frames=3, from_end=True)
    assert np.array_equal(first.frames[-3:], second.frames)


def test_a_large_jpeg_is_decoded_reduced_to_the_pixels_asked_for(policy: InputPolicy, tree):
    path = tree["root"] / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 250)).save(path, quality=90)
    with policy.open_probed(str(path)) as source:
        img = open_image(source, reduce_to_pixels=300_000)
    assert img.width * img.height <= 300_000 and img.width * img.height > 150_000
    assert abs(img.width / img.height - 4 / 3) < 0.01
    r, g, b = img.getpixel((10, 10))
    assert abs(r - 10) < 6 and abs(g - 120) < 6 and abs(b - 250) < 6


def test_a_jpeg_reduction_decodes_at_a_smaller_scale(
    policy: InputPolicy, tree, monkeypatch: pytest.MonkeyPatch
):
    path = tree["root"] / "big.jpg"
    Image.new("RGB", (4000, 3000), (10, 120, 250)).save(path, quality=90)
    loaded: list[tuple[int, int]] = []
    real_load = Image.Image.load

    def load(self: Image.Image):
        result = real_load(self)
        loaded.append(self.size)
        return result

    monkeypatch.setattr(Image.Image, "load", load)
    with policy.open(str(path)) as source:
        open_image(source, max_side=500)
    assert loaded and max(loaded[0]) <= 1000  # decoded at 1/4 or 1/8 scale, never at 4000×3000


def test_a_png_is_shrunk_to_the_longest_side_asked_for(policy: InputPolicy, tree):
    path = tree["root"] / "wide.png"
    encode_png(path, np.full((300, 600, 3), 77, np.uint8))
    with policy.open(str(path)) as source:
        img = open_image(source, max_side=100, mode="L")
    assert img.size == (100, 50) and img.mode == "L" and img.getpixel((5, 5)) == 77


def test_a_small_image_is_not_enlarged_by_a_reduction(policy: InputPolicy, tree):
    with policy.open(str(tree["root"] / "album" / "cat.png")) as source:
        assert open_image(source, reduce_to_pixels=10_000, max_side=1000).size == (8, 8)

"""engine.media and engine.video: safe image/video reading, time resampling, geometry and the encoders.

Fixtures are written with the project's own encoders into tmp dirs and opened as inputs are (the
``opened`` fixture: through an InputPolicy, the only way to a Source). Video frames are flat greys
whose level codes the frame index (4 levels per frame: H.264 keeps a flat grey within ±1), so a
test can tell which source frame a resampled frame came from.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from engine.errors import InputRefused, InvalidRequest
from engine.geometry import even_indices, fit_box, letterbox, resampled_count, resize_cover, resize_fit
from engine.media import encode_mp4, encode_png, open_image
from engine.video import probe_video, read_video

STEP = 4  # grey levels per frame index in coded videos


def coded_frames(n: int, size: tuple[int, int] = (64, 48)) -> np.ndarray:
    w, h = size
    return np.stack([np.full((h, w, 3), STEP * i, np.uint8) for i in range(n)])


def frame_codes(frames: np.ndarray) -> list[int]:
    return [round(float(f.mean()) / STEP) for f in frames]


def write_video(path: Path, n: int, fps: float, size: tuple[int, int] = (64, 48)) -> Path:
    encode_mp4(path, coded_frames(n, size), fps)
    return path


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose IHDR declares width×height but which holds almost no data (a cheap bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 16)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


# ---------------------------------------------------------------------------------------------
# Images


def test_an_image_opens_as_rgb_at_its_own_size(tmp_path: Path, opened):
    path = tmp_path / "a.png"
    encode_png(path, np.full((20, 30, 3), (10, 200, 30), np.uint8))
    img = open_image(opened(path))
    assert img.mode == "RGB" and img.size == (30, 20)
    assert img.getpixel((5, 5)) == (10, 200, 30)


def test_an_image_opens_as_grey_when_asked(tmp_path: Path, opened):
    path = tmp_path / "m.png"
    encode_png(path, np.full((8, 8, 3), 255, np.uint8))
    img = open_image(opened(path), mode="L")
    assert img.mode == "L" and img.getpixel((0, 0)) == 255


def test_exif_orientation_is_applied(tmp_path: Path, opened):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (40, 20), (0, 0, 255)).save(path, exif=exif)
    assert open_image(opened(path)).size == (20, 40)


def test_transparent_areas_become_white(tmp_path: Path, opened):
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (4, 4), (0, 0, 0, 0)).save(path)
    assert open_image(opened(path)).getpixel((1, 1)) == (255, 255, 255)


@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_a_16_bit_grey_png_keeps_its_tones(tmp_path: Path, mode: str, opened):
    # Depth maps and masks are often 16-bit grey; clipping at 255 would turn them almost white.
    path = tmp_path / "depth16.png"
    ramp = np.linspace(0, 65535, 64, dtype=np.float64).round().astype(np.uint16)
    Image.fromarray(np.tile(ramp, (8, 1))).save(path)
    with Image.open(path) as raw:
        assert raw.mode.startswith("I")
    img = open_image(opened(path), mode=mode)
    assert img.mode == mode
    row = np.asarray(img.convert("L"))[0].astype(int)
    assert row[0] == 0 and row[-1] == 255 and abs(row[32] - 130) <= 2
    assert (np.diff(row) >= 0).all()


def test_a_missing_image_is_refused_naming_the_file(tmp_path: Path, opened):
    with pytest.raises(InputRefused, match=r"nope\.png': no such file") as e:
        open_image(opened(tmp_path / "nope.png"))
    assert e.value.path == str(tmp_path / "nope.png")


def test_a_directory_is_refused_as_an_image(tmp_path: Path, opened):
    folder = tmp_path / "dir.png"
    folder.mkdir()
    with pytest.raises(InputRefused, match="is a directory"):
        open_image(opened(folder))


def test_an_empty_file_is_refused(tmp_path: Path, opened):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(InputRefused, match="empty"):
        open_image(opened(path))


def test_bytes_that_are_not_an_image_are_refused(tmp_path: Path, opened):
    path = tmp_path / "junk.png"
    path.write_bytes(b"this is not a picture at all" * 10)
    with pytest.raises(InputRefused, match="not a readable image"):
        open_image(opened(path))


def test_a_truncated_image_is_refused_as_corrupt(tmp_path: Path, opened):
    path = tmp_path / "cut.png"
    rng = np.random.default_rng(0)
    encode_png(path, rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputRefused, match="corrupt or truncated"):
        open_image(opened(path))


def test_a_png_declaring_a_huge_size_is_refused_before_decoding(tmp_path: Path, opened):
    path = png_header_only(tmp_path / "bomb.png", 10_000, 10_000)
    with pytest.raises(InputRefused) as e:
        open_image(opened(path))
    message = str(e.value)
    assert "bomb.png" in message and "10000×10000" in message and "64000000" in message


def test_a_png_beyond_pillows_own_bomb_limit_is_refused(tmp_path: Path, opened):
    path = png_header_only(tmp_path / "bigger.png", 30_000, 30_000)
    with pytest.raises(InputRefused, match="bigger.png"):
        open_image(opened(path))


def test_the_pixel_limit_is_configurable(tmp_path: Path, opened):
    path = tmp_path / "a.png"
    encode_png(path, np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(InputRefused, match="64×48 = 3072 pixels; the limit is 1000"):
        open_image(opened(path), max_pixels=1000)


def test_encode_png_refuses_a_frame_of_the_wrong_shape(tmp_path: Path):
    with pytest.raises(InvalidRequest, match="shape"):
        encode_png(tmp_path / "x.png", np.zeros((4, 4, 4), np.uint8))
    with pytest.raises(InvalidRequest, match="uint8"):
        encode_png(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))


# ---------------------------------------------------------------------------------------------
# Geometry


def test_resize_cover_fills_the_size_and_crops_the_centre():
    img = Image.new("RGB", (90, 30), (255, 0, 0))
    img.paste((0, 255, 0), (30, 0, 60, 30))  # green middle third
    out = resize_cover(img, (30, 30))
    assert out.size == (30, 30)
    assert out.getpixel((2, 15)) == (0, 255, 0) and out.getpixel((27, 15)) == (0, 255, 0)


def test_resize_fit_keeps_the_aspect_inside_the_size():
    assert resize_fit(Image.new("RGB", (20, 40)), (64, 48)).size == (24, 48)
    assert fit_box((20, 40), (64, 48)) == (20, 0, 24, 48)


def test_letterbox_centres_the_image_on_white():
    out = letterbox(Image.new("RGB", (20, 40), (255, 0, 0)), (64, 48))
    assert out.size == (64, 48)
    assert out.getpixel((2, 24)) == (255, 255, 255) and out.getpixel((61, 24)) == (255, 255, 255)
    assert out.getpixel((32, 24)) == (255, 0, 0)


def test_even_indices_include_both_ends():
    assert even_indices(10, 4) == [0, 3, 6, 9]
    assert even_indices(3, 5) == [0, 1, 2]


def test_resampling_to_the_same_rate_keeps_the_frame_count():
    assert resampled_count(20, 16, 16) == 20
    assert resampled_count(60, 30, 16) == 32  # 2 s: frames at 0 … 31/16 s


# ---------------------------------------------------------------------------------------------
# Video


def test_encode_mp4_then_probe_gives_back_size_frames_and_rate(tmp_path: Path, opened):
    path = write_video(tmp_path / "v.mp4", 60, 30)
    info = probe_video(opened(path))
    assert (info.width, info.height, info.num_frames) == (64, 48, 60)
    assert info.fps == pytest.approx(30) and info.duration_s == pytest.approx(2.0)


def test_a_fractional_rate_survives_the_round_trip(tmp_path: Path, opened):
    info = probe_video(opened(write_video(tmp_path / "v.mp4", 20, 12.5)))
    assert info.fps == pytest.approx(12.5) and info.num_frames == 20


def test_encode_mp4_refuses_odd_sizes(tmp_path: Path):
    with pytest.raises(InvalidRequest, match="even"):
        encode_mp4(tmp_path / "odd.mp4", np.zeros((3, 47, 64, 3), np.uint8), 16)


def test_a_30_fps_two_second_clip_becomes_33_frames_at_16_fps(tmp_path: Path, opened):
    path = write_video(tmp_path / "v.mp4", 60, 30)
    clip = read_video(opened(path), fps=16, num_frames=33)
    assert clip.frames.shape == (33, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.fps == 16
    # Each frame is the source frame nearest k/16 s: round(k·30/16), ties to the earlier one.
    expected = [int(np.ceil(k * 30 / 16 - 0.5)) for k in range(32)]
    assert frame_codes(clip.frames[:32]) == expected
    # 2 s hold 32 frames at 16 fps; the 33rd repeats the last and says so.
    assert clip.padded == 1 and clip.source_frames == 32
    assert np.array_equal(clip.frames[32], clip.frames[31])
    assert "padded to 33" in clip.notes[0]


def test_a_long_enough_clip_is_not_padded_and_stops_at_the_frame_count(tmp_path: Path, opened):
    clip = read_video(opened(write_video(tmp_path / "v.mp4", 45, 30)), fps=16, num_frames=9)
    assert len(clip.frames) == 9 and clip.padded == 0 and clip.notes == []
    assert frame_codes(clip.frames) == [0, 2, 4, 6, 7, 9, 11, 13, 15]


def test_a_higher_target_rate_repeats_frames(tmp_path: Path, opened):
    clip = read_video(opened(write_video(tmp_path / "v.mp4", 10, 8)), fps=16, num_frames=5)
    codes = frame_codes(clip.frames)
    assert codes[0] == 0 and codes[-1] == 2 and codes == sorted(codes)


def test_frames_are_resized_to_cover_the_size(tmp_path: Path, opened):
    clip = read_video(opened(write_video(tmp_path / "v.mp4", 5, 16)), num_frames=5, size=(32, 32))
    assert clip.frames.shape == (5, 32, 32, 3)


def test_max_frames_spreads_frames_evenly_over_the_clip(tmp_path: Path, opened):
    clip = read_video(opened(write_video(tmp_path / "v.mp4", 40, 16)), max_frames=4)
    assert frame_codes(clip.frames) == [0, 13, 26, 39]
    assert clip.fps == pytest.approx(3 / (39 / 16))
    assert "spread down to 4" in clip.notes[0]


def test_without_a_rate_all_frames_are_read(tmp_path: Path, opened):
    clip = read_video(opened(write_video(tmp_path / "v.mp4", 12, 24)))
    assert frame_codes(clip.frames) == list(range(12)) and clip.fps == pytest.approx(24)


def test_from_end_keeps_the_last_frames(tmp_path: Path, opened):
    clip = read_video(opened(write_video(tmp_path / "v.mp4", 20, 16)), fps=16, num_frames=5, from_end=True)
    assert frame_codes(clip.frames) == [15, 16, 17, 18, 19]


def test_a_clip_too_long_to_read_whole_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened):
    import engine.video

    monkeypatch.setattr(engine.video, "HARD_MAX_FRAMES", 8)
    with pytest.raises(InputRefused, match="give num_frames or max_frames"):
        read_video(opened(write_video(tmp_path / "v.mp4", 12, 16)))


def test_a_count_one_above_the_hard_cap_is_not_mistaken_for_the_cap(tmp_path: Path, monkeypatch, opened):
    import engine.video

    # HARD_MAX_FRAMES + 1 asked for by the caller is a count like any other, not the marker the
    # uncounted read uses to notice a container that understates its length.
    monkeypatch.setattr(engine.video, "HARD_MAX_FRAMES", 8)
    clip = read_video(opened(write_video(tmp_path / "v.mp4", 12, 16)), num_frames=9)
    assert len(clip.frames) == 9
    clip = read_video(opened(write_video(tmp_path / "w.mp4", 9, 16)), max_frames=9)
    assert len(clip.frames) == 9


def test_a_video_stored_sideways_is_read_upright(tmp_path: Path, opened):
    frames = np.zeros((3, 48, 64, 3), np.uint8)
    frames[:, :, :32] = 255  # left half white
    path = tmp_path / "phone.mp4"
    encode_mp4(path, frames, 16)
    # Give the track the display matrix a phone writes for portrait video: turn 90° clockwise.
    data = bytearray(path.read_bytes())
    matrix_at = data.index(b"tkhd") + 4 + 4 + 20 + 16  # version-0 tkhd: the matrix follows these
    data[matrix_at : matrix_at + 36] = struct.pack(">9i", 0, 0x10000, 0, -0x10000, 0, 0, 0, 0, 0x40000000)
    path.write_bytes(bytes(data))
    info = probe_video(opened(path))
    assert (info.width, info.height) == (48, 64)
    clip = read_video(opened(path), num_frames=3)
    assert clip.frames.shape == (3, 64, 48, 3)
    # The left edge, turned clockwise, is now the top.
    assert clip.frames[0, :30].mean() > 240 and clip.frames[0, 34:].mean() < 15


def test_a_cancelled_read_stops_decoding(tmp_path: Path, opened):
    from engine.control import JobControl
    from engine.errors import Cancelled

    control = JobControl()
    control.cancel()
    with pytest.raises(Cancelled):
        read_video(opened(write_video(tmp_path / "v.mp4", 5, 16)), num_frames=5, check=control.check)


def test_bytes_that_are_not_a_video_are_refused(tmp_path: Path, opened):
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(InputRefused, match="junk.mp4: not a readable video"):
        probe_video(opened(path))


def test_a_truncated_video_is_refused(tmp_path: Path, opened):
    path = write_video(tmp_path / "v.mp4", 30, 16)
    data = path.read_bytes()
    # Cut in the middle of the frames' data (the index is at the start, ~1.2 kB of this 2.4 kB file).
    mdat = data.index(b"mdat") - 4
    path.write_bytes(data[: (mdat + len(data)) // 2])
    with pytest.raises(InputRefused, match="v.mp4: corrupt"):
        read_video(opened(path), num_frames=29)


def test_a_video_without_frames_is_refused(tmp_path: Path, opened):
    import av

    path = tmp_path / "zero.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=16)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    with pytest.raises(InputRefused, match="zero.mp4: has no (video stream|frames)"):
        read_video(opened(path), num_frames=5)


def test_a_video_file_with_only_audio_is_refused(tmp_path: Path, opened):
    import av

    path = tmp_path / "audio.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)
    with pytest.raises(InputRefused, match="has no video stream"):
        probe_video(opened(path))


def test_a_missing_video_is_refused(tmp_path: Path, opened):
    with pytest.raises(InputRefused, match=r"gone\.mp4': no such file"):
        read_video(opened(tmp_path / "gone.mp4"), num_frames=5)


def test_video_frames_over_the_pixel_limit_are_refused(tmp_path: Path, opened):
    with pytest.raises(InputRefused, match="the limit is 1000 pixels"):
        read_video(opened(write_video(tmp_path / "v.mp4", 5, 16)), num_frames=5, max_pixels=1000)


def test_a_gif_named_mp4_is_refused_as_a_video_naming_the_accepted_containers(tmp_path: Path, opened):
    path = tmp_path / "anim.mp4"
    frames = [Image.new("RGB", (16, 16), (i * 40, 0, 0)) for i in range(3)]
    frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(InputRefused, match=r"anim\.mp4.*accepted: MP4/MOV \(ISO BMFF\), MKV/WebM"):
        probe_video(opened(path))
    with pytest.raises(InputRefused, match=r"anim\.mp4.*accepted"):
        read_video(opened(path), num_frames=3)


def test_reading_an_opened_video_opens_its_container_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, opened
):
    import av

    path = write_video(tmp_path / "v.mp4", 9, 16)
    real_open, calls = av.open, []

    def counting_open(*args, **kwargs):
        calls.append(args[0])
        return real_open(*args, **kwargs)

    monkeypatch.setattr(av, "open", counting_open)
    clip = read_video(opened(path), fps=16, num_frames=9)
    assert len(clip.frames) == 9 and len(calls) == 1  # no separate probe pass


def test_a_large_image_can_be_decoded_reduced(tmp_path: Path, opened):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (3000, 2000), (200, 30, 30)).save(path)
    img = open_image(opened(path), reduce_to_pixels=60_000)
    assert img.width * img.height <= 60_000 and abs(img.width / img.height - 1.5) < 0.02


def test_a_reduced_image_is_still_turned_upright(tmp_path: Path, opened):
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    Image.new("RGB", (4000, 2000), (0, 0, 255)).save(path, exif=exif)
    assert open_image(opened(path), max_side=400).size == (200, 400)


# ---------------------------------------------------------------------------------------------
# Audio: the header says whether a video has sound; mux_audio carries a span of it


def write_video_with_audio(
    path: Path, seconds: float, fps: float = 16, *, codec: str = "aac", rate: int = 48000
) -> Path:
    """A coded-grey video with a 440 Hz mono tone of the same length, in ``path``'s container."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(codec, rate=rate)
        audio.layout = "mono"
        for arr in coded_frames(round(seconds * fps)):
            for packet in video.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        total, chunk = round(seconds * rate), 1024
        for start in range(0, total, chunk):
            t = np.arange(start, min(start + chunk, total)) / rate
            tone = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
            frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            frame.sample_rate, frame.pts = rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in [*video.encode(), *audio.encode()]:
            container.mux(packet)
    return path


def _streams(path: Path) -> dict[str, tuple[str, float]]:
    """Each stream type of a file: its codec and its duration in seconds."""
    import av

    with av.open(str(path)) as container:
        return {
            s.type: (s.codec_context.codec.canonical_name, float(s.duration * s.time_base))
            for s in container.streams
        }


def test_the_header_probe_records_the_audio_codec(tmp_path: Path, opened):
    from engine.source import probe

    with opened(write_video_with_audio(tmp_path / "talk.mp4", 1.0)) as source:
        assert probe(source).header.audio == "aac"


def test_the_header_probe_of_a_silent_video_records_no_audio(tmp_path: Path, opened):
    from engine.source import probe

    with opened(write_video(tmp_path / "quiet.mp4", 9, 16)) as source:
        assert probe(source).header.audio is None


def test_a_span_of_aac_audio_is_copied_without_re_encoding(tmp_path: Path, opened):
    from engine.media import AudioSpan, mux_audio

    picture = write_video(tmp_path / "out.mp4", 16, 16)  # 1 s
    with opened(write_video_with_audio(tmp_path / "src.mp4", 3.0)) as source:
        done = mux_audio(picture, AudioSpan(source, start_s=1.0, duration_s=1.0), tmp_path / "with.mp4")
    assert done is not None and done.copied and done.codec == "aac"
    streams = _streams(tmp_path / "with.mp4")
    assert streams["video"][0] == "h264" and streams["audio"][0] == "aac"
    assert streams["audio"][1] == pytest.approx(1.0, abs=0.03)  # whole packets of 1024 samples
    assert "copied (aac)" in done.note


def test_the_copied_span_starts_at_the_requested_time(tmp_path: Path, opened):
    import av

    from engine.media import AudioSpan, mux_audio

    picture = write_video(tmp_path / "out.mp4", 8, 16)
    # A silent first second, then the tone: a span from 1 s must start loud.
    src = tmp_path / "src.mov"
    with av.open(str(src), "w") as container:
        video = container.add_stream("libx264", rate=16)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream("aac", rate=16000)
        audio.layout = "mono"
        for arr in coded_frames(32):
            for packet in video.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        t = np.arange(32000) / 16000
        signal = np.where(t >= 1.0, 0.5 * np.sin(2 * np.pi * 300 * t), 0.0).astype(np.float32)
        for start in range(0, 32000, 1024):
            frame = av.AudioFrame.from_ndarray(
                signal[None, start : start + 1024], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in [*video.encode(), *audio.encode()]:
            container.mux(packet)
    with opened(src) as source:
        mux_audio(picture, AudioSpan(source, start_s=1.0, duration_s=0.5), tmp_path / "with.mp4")
    with av.open(str(tmp_path / "with.mp4")) as container:
        samples = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)])
    loud = np.abs(samples[2048:4096]).mean()  # past the encoder's priming samples
    assert loud > 0.1


def test_audio_that_mp4_cannot_hold_is_re_encoded_as_aac(tmp_path: Path, opened):
    from engine.media import AudioSpan, mux_audio

    picture = write_video(tmp_path / "out.mp4", 16, 16)
    with opened(write_video_with_audio(tmp_path / "src.mov", 2.0, codec="pcm_s16le")) as source:
        done = mux_audio(picture, AudioSpan(source, start_s=0.0, duration_s=1.0), tmp_path / "with.mp4")
    assert done is not None and not done.copied and done.codec == "aac" and done.source_codec == "pcm_s16le"
    assert _streams(tmp_path / "with.mp4")["audio"] == ("aac", pytest.approx(1.0, abs=0.05))


def test_a_source_without_audio_writes_nothing(tmp_path: Path, opened):
    from engine.media import AudioSpan, mux_audio

    picture = write_video(tmp_path / "out.mp4", 16, 16)
    span = AudioSpan(opened(write_video(tmp_path / "quiet.mp4", 16, 16)), start_s=0.0, duration_s=1.0)
    assert mux_audio(picture, span, tmp_path / "with.mp4") is None
    assert not (tmp_path / "with.mp4").exists()


@pytest.mark.parametrize(("start", "duration"), [(-1.0, 1.0), (0.0, 0.0), (float("nan"), 1.0)])
def test_a_bad_audio_span_is_refused(tmp_path: Path, start: float, duration: float, opened):
    from engine.media import AudioSpan, mux_audio

    picture = write_video(tmp_path / "out.mp4", 16, 16)
    with pytest.raises(InvalidRequest, match="audio"):
        mux_audio(
            picture, AudioSpan(opened(picture), start_s=start, duration_s=duration), tmp_path / "with.mp4"
        )


def _encoded_plainly(frames: np.ndarray, fps: float) -> bytes:
    """The MP4 as the encoder makes it when handed each RGB frame to convert itself."""
    import io
    from fractions import Fraction

    import av

    from engine.media import moov_first, video_encoder

    encoder, buffer = video_encoder(), io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream(encoder.codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = dict(encoder.options)
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return moov_first(buffer.getvalue())


@pytest.mark.parametrize("shape", [(9, 48, 64), (17, 64, 96)])
def test_frames_converted_ahead_of_the_encoder_give_the_same_file_byte_for_byte(shape):
    from engine.media import mp4_bytes

    rng = np.random.default_rng(shape[0])
    base = rng.integers(0, 256, (*shape[1:], 3), dtype=np.uint8)
    frames = np.stack([np.roll(base, 3 * i, axis=1) for i in range(shape[0])])  # content that moves
    assert mp4_bytes(frames, 16.0) == _encoded_plainly(frames, 16.0)


def test_the_conversion_thread_stops_with_its_reader_and_hands_over_its_errors():
    import threading
    from types import SimpleNamespace

    from engine import media

    stream = SimpleNamespace(
        width=16, height=16, pix_fmt="yuv420p", codec_context=SimpleNamespace(thread_count=0)
    )

    def converting() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "unison-encode-convert"]

    frames = np.zeros((40, 16, 16, 3), np.uint8)
    ahead = media._converted(frames, stream)
    first = next(ahead)
    assert (first.width, first.height, first.format.name) == (16, 16, "yuv420p")
    ahead.close()  # the encoder stopped after one frame (it failed): the thread ends with it
    assert not converting()
    broken = np.zeros((3, 16, 16, 4), np.uint8)  # not RGB: the conversion itself fails
    with pytest.raises(ValueError):
        list(media._converted(broken, stream))
    assert not converting()

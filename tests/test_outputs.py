"""engine.outputs: a source's audio carried into a written MP4, and never at the cost of the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.inputs import InputPolicy
from engine.media import AudioSpan, encode_mp4
from engine.outputs import write_output


def _frames(n: int) -> np.ndarray:
    return np.stack([np.full((48, 64, 3), (8 * i) % 256, np.uint8) for i in range(n)])


def _with_audio(path: Path, seconds: float, *, codec: str = "aac", fps: float = 16) -> Path:
    """A small video with a mono tone of the same length (``codec``) in ``path``'s container."""
    import av

    rate = 48000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        audio = container.add_stream(codec, rate=rate)
        audio.layout = "mono"
        for arr in _frames(round(seconds * fps)):
            for packet in video.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        total = round(seconds * rate)
        for start in range(0, total, 1152):
            t = np.arange(start, min(start + 1152, total)) / rate
            frame = av.AudioFrame.from_ndarray(
                (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None], format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in [*video.encode(), *audio.encode()]:
            container.mux(packet)
    return path


def _garbled_audio(src: Path, out: Path) -> Path:
    """``src`` with every audio packet replaced by random bytes (the headers stay valid)."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        video = dst.add_stream_from_template(inp.streams.video[0])
        audio = dst.add_stream_from_template(inp.streams.audio[0])
        for packet in inp.demux():
            if packet.dts is None:
                continue
            if packet.stream.type == "audio":
                junk = av.Packet(rng.integers(0, 256, packet.size, dtype=np.uint8).tobytes())
                junk.pts, junk.dts, junk.time_base = packet.pts, packet.dts, packet.time_base
                junk.stream = audio
                dst.mux(junk)
            else:
                packet.stream = video
                dst.mux(packet)
    return out


def _streams(path: str | Path) -> dict[str, tuple[str, float, int]]:
    import av

    with av.open(str(path)) as container:
        return {
            s.type: (
                s.codec_context.codec.canonical_name,
                float(s.duration * s.time_base),
                sum(1 for _ in container.decode(s)) if s.type == "video" else 0,
            )
            for s in container.streams
        }


@pytest.fixture
def policy(tmp_path: Path) -> InputPolicy:
    return InputPolicy([tmp_path / "in"], tmp_path / "out", max_bytes=1 << 30, max_pixels=1 << 24)


def _write(tmp_path: Path, n: int, audio: AudioSpan | None, notes: list[str] | None = None):
    return write_output(
        _frames(n),
        output_dir=tmp_path / "out",
        task="video_edit",
        fps=16.0,
        metadata={"notes": ["from the plan"]},
        audio=audio,
        notes=notes,
    )


def _left_in(out_dir: Path) -> list[str]:
    return sorted(p.name for p in out_dir.iterdir())


def test_a_video_output_carries_the_span_of_the_source_audio(tmp_path: Path, policy: InputPolicy):
    (tmp_path / "in").mkdir()
    src = _with_audio(tmp_path / "in" / "talk.mp4", 3.0)
    notes: list[str] = []
    with policy.open_probed(str(src), field="video") as source:
        result = _write(tmp_path, 17, AudioSpan(source, start_s=0.5, duration_s=17 / 16), notes)
    streams = _streams(result.path)
    assert streams["video"][2] == 17
    assert streams["audio"][0] == "aac"
    assert streams["audio"][1] == pytest.approx(17 / 16, abs=0.03)
    sidecar = json.loads(Path(result.sidecar).read_text())
    assert sidecar["audio"]["codec"] == "aac" and sidecar["audio"]["copied"] is True
    assert sidecar["audio"]["source"] == "talk.mp4" and sidecar["audio"]["start_s"] == 0.5
    assert sidecar["notes"][0] == "from the plan" and "copied (aac)" in sidecar["notes"][-1]
    assert notes == [sidecar["notes"][-1]]
    assert result.size_bytes == Path(result.path).stat().st_size
    assert _left_in(tmp_path / "out") == sorted([result.name, f"{result.name}.json"])


def test_the_audio_is_read_from_the_opened_source_not_its_path_again(tmp_path: Path, policy: InputPolicy):
    (tmp_path / "in").mkdir()
    src = _with_audio(tmp_path / "in" / "talk.mp4", 2.0)
    with policy.open_probed(str(src), field="video") as source:
        # The name now holds a silent clip: the opened file is still the one with sound.
        src.unlink()
        encode_mp4(src, _frames(32), 16)
        result = _write(tmp_path, 9, AudioSpan(source, start_s=0.0, duration_s=9 / 16))
    assert "audio" in _streams(result.path)


def test_a_source_without_audio_gives_a_video_alone(tmp_path: Path, policy: InputPolicy):
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "quiet.mp4"
    encode_mp4(src, _frames(32), 16)
    notes: list[str] = []
    with policy.open_probed(str(src), field="video") as source:
        result = _write(tmp_path, 9, AudioSpan(source, start_s=0.0, duration_s=9 / 16), notes)
    assert set(_streams(result.path)) == {"video"}
    assert notes == ["quiet.mp4 has no audio: the video is silent"]
    assert json.loads(Path(result.sidecar).read_text())["audio"]["codec"] is None


def test_corrupt_source_audio_leaves_a_valid_silent_video_and_a_note(tmp_path: Path, policy: InputPolicy):
    (tmp_path / "in").mkdir()
    # MP2 is not copied into MP4 but decoded and re-encoded: its garbled packets fail to decode.
    clean = _with_audio(tmp_path / "clean.mkv", 2.0, codec="mp2")
    bad = _garbled_audio(clean, tmp_path / "in" / "garbled.mkv")
    notes: list[str] = []
    with policy.open_probed(str(bad), field="video") as source:
        result = _write(tmp_path, 9, AudioSpan(source, start_s=0.0, duration_s=9 / 16), notes)
    streams = _streams(result.path)
    assert set(streams) == {"video"} and streams["video"][2] == 9
    assert len(notes) == 1 and notes[0].startswith("garbled.mkv: audio not copied (")
    assert notes[0].endswith("the video is silent")
    sidecar = json.loads(Path(result.sidecar).read_text())
    assert sidecar["audio"]["codec"] is None and sidecar["audio"]["error"]
    assert _left_in(tmp_path / "out") == sorted([result.name, f"{result.name}.json"])  # no temp file


def test_a_closed_source_leaves_a_silent_video_and_a_note(tmp_path: Path, policy: InputPolicy):
    (tmp_path / "in").mkdir()
    src = _with_audio(tmp_path / "in" / "talk.mp4", 1.0)
    source = policy.open_probed(str(src), field="video")
    source.close()
    notes: list[str] = []
    result = _write(tmp_path, 9, AudioSpan(source, start_s=0.0, duration_s=0.5), notes)
    assert set(_streams(result.path)) == {"video"}
    assert "already closed" in notes[0]


def test_audio_is_ignored_for_a_picture(tmp_path: Path, policy: InputPolicy):
    (tmp_path / "in").mkdir()
    src = _with_audio(tmp_path / "in" / "talk.mp4", 1.0)
    with policy.open_probed(str(src), field="video") as source:
        result = _write(tmp_path, 1, AudioSpan(source, start_s=0.0, duration_s=1.0))
    assert result.mime_type == "image/png"
    assert "audio" not in json.loads(Path(result.sidecar).read_text())

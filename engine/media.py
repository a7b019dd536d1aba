"""Media I/O: decoding opened images safely, the project's encoders, and a source's audio in an output.

The image reader takes only an opened :class:`~engine.source.Source` (made by
:meth:`engine.inputs.InputPolicy.open`, the one way in) and reads from its descriptor, never from a
path; so do the video readers, in :mod:`engine.video`. PyAV is the only video library and Pillow
the only image library. Every reader refuses a bad file with :class:`~engine.errors.InputRefused`
whose message names the file, what is wrong and the rule, before spending memory on it: image
sizes are read from the header before any pixel is decoded.

Heavy imports (PyAV, Pillow, numpy) happen inside functions so ``import engine`` stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import heapq
import io
import logging
import math
import queue
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest
from .geometry import Size
from .source import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    Source,
    check_pixels,
    codec_name,
    open_container,
    pillow_errors,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------------
# Images


def open_image(
    source: Source,
    *,
    max_pixels: int | None = None,
    mode: str = "RGB",
    max_side: int | None = None,
    reduce_to_pixels: int | None = None,
) -> Image.Image:
    """Open an image safely and return it decoded, upright, in ``mode`` ("RGB" or "L").

    Args:
        source: the opened input (:meth:`engine.inputs.InputPolicy.open`), read from its
            descriptor: a PNG, JPEG or WebP file.
        max_pixels: refuse images with more pixels than this (default :data:`DEFAULT_MAX_PIXELS`).
            The size is read from the header before any pixel is decoded.
        mode: "RGB" (transparent areas are composited on white) or "L" (masks).
        max_side: return the image scaled down (aspect kept) so that neither side exceeds this.
        reduce_to_pixels: return the image scaled down (aspect kept) to at most this many pixels.
            With either, a JPEG is decoded at a reduced scale (``draft``) and other formats are
            shrunk right after decoding, so a caller needing a small image never holds many large
            ones.

    Raises:
        InputRefused: not an image, corrupt or truncated, or over the pixel limit (decompression
            bombs included); a closed source.
    """
    from PIL import Image, ImageOps

    if mode not in ("RGB", "L"):
        raise InvalidRequest.for_field("mode", mode, 'must be "RGB" or "L"')
    for name, value in (("max_side", max_side), ("reduce_to_pixels", reduce_to_pixels)):
        if value is not None and value < 1:
            raise InvalidRequest.for_field(name, value, "must be at least 1")
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    with (
        pillow_errors(source),
        source.reader() as f,
        Image.open(f, formats=IMAGE_FORMATS) as im,
    ):
        # Image.open is lazy: only the header has been read so far.
        check_pixels(source, "image", im.width, im.height, limit)
        target = _reduced_size(im.size, max_side, reduce_to_pixels)
        if target is not None and im.format == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 scale, never below the target (DCT scaling).
            im.draft(mode, target)
        im.load()
        if target is not None and (im.width > target[0] or im.height > target[1]):
            # Shrink right after decoding: reduce() by whole factors, then Lanczos.
            im.thumbnail(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
        upright = ImageOps.exif_transpose(im)
    return _to_mode(upright, mode)


def _reduced_size(size: Size, max_side: int | None, max_pixels: int | None) -> Size | None:
    """The largest size within ``max_side`` and ``max_pixels`` with the aspect of ``size``, or
    ``None`` when ``size`` already fits."""
    w, h = size
    scale = 1.0
    if max_side is not None:
        scale = min(scale, max_side / max(w, h))
    if max_pixels is not None:
        scale = min(scale, math.sqrt(max_pixels / (w * h)))
    if scale >= 1.0:
        return None
    return max(1, math.floor(w * scale)), max(1, math.floor(h * scale))


def _to_mode(im: Image.Image, mode: str) -> Image.Image:
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode in ("I", "F"):
        # 16-bit grey PNGs (depth maps, masks) open as "I;16"; Pillow's own conversion to "L" or
        # "RGB" clips at 255 instead of scaling, turning nearly every pixel white.
        im = _grey16_to_l(im)
    if mode == "RGB" and (im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info):
        # Transparent areas become white, like the reference's canvas, not whatever colour the
        # encoder left under them.
        rgba = im.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return im.convert(mode) if im.mode != mode else im.copy()


def _grey16_to_l(im: Image.Image) -> Image.Image:
    """A high-bit-depth grey image as 8-bit "L": the 16-bit range 0..65535 scaled to 0..255.

    ("I" and "F" images carry no declared range: values within 0..255 are taken as 8-bit ones.)
    """
    import numpy as np
    from PIL import Image

    values = np.asarray(im, dtype=np.float64)
    if im.mode.startswith("I;16") or (values.size and float(values.max()) > 255.0):
        values = values / 257.0  # 65535 -> 255
    return Image.fromarray(np.clip(values.round(), 0, 255).astype(np.uint8))  # 2-D uint8: "L"


# ---------------------------------------------------------------------------------------------
# Encoders (the project's only ones: engine.outputs and the tests use them)


def _check_frames(name: str, arr: np.ndarray, shapes: tuple[str, ...]) -> None:
    """``arr`` must be a non-empty uint8 array of one of ``shapes`` ("FHW3", "HW3", "HW")."""
    import numpy as np

    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        raise InvalidRequest.for_field(
            name, getattr(arr, "dtype", type(arr).__name__), "must be a uint8 array"
        )
    ok = (
        any(arr.ndim == len(s) and (not s.endswith("3") or arr.shape[-1] == 3) for s in shapes)
        and 0 not in arr.shape
    )
    if not ok:
        wanted = " or ".join("(" + ", ".join(s) + ")" for s in shapes)
        raise InvalidRequest.for_field(name, tuple(arr.shape), f"must have the shape {wanted}")


#: PNG's zlib level, chosen by measurement (docs/performance.md): level 1 wrote an 832×480 frame
#: in ~75 ms against ~115 ms at Pillow's default 6, and no larger.
PNG_COMPRESS_LEVEL = 1


def png_bytes(frame: np.ndarray) -> bytes:
    """One (H, W, 3) uint8 RGB frame (or an (H, W) uint8 grey one) as PNG, in memory."""
    from PIL import Image

    _check_frames("frame", frame, ("HW3", "HW"))
    buffer = io.BytesIO()
    image = Image.fromarray(frame, mode="L" if frame.ndim == 2 else "RGB")
    image.save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buffer.getvalue()


def encode_png(path: Path, frame: np.ndarray) -> None:
    """Write one (H, W, 3) uint8 RGB frame (or an (H, W) uint8 grey one) as PNG (not atomic:
    for test media and examples; outputs go through :mod:`engine.outputs`)."""
    Path(path).write_bytes(png_bytes(frame))


@dataclass(frozen=True)
class VideoEncoder:
    """One H.264 encoder PyAV may have, with the settings the project uses it with."""

    codec: str
    options: dict[str, str]
    summary: str


#: The H.264 encoders, tried in this order once per process (:func:`video_encoder`). libx264's
#: settings were chosen by measurement (benchmarks/bench_encode.py, docs/performance.md):
#: veryfast at CRF 14 gives at least the PSNR of the old medium at CRF 18 (+0.05 to +0.09 dB) in
#: 0.43-0.54 of the time, for a larger file (+17 % to +51 %); x264 picks its own thread count
#: (``threads`` 0: one thread was up to 1.2× as slow on 2 quiet cores, 2.4× on loaded ones). NVENC's settings are its constant-quality mode at a middle preset (not measured here:
#: no GPU), which PyAV's wheel has compiled in and which opens only where the NVIDIA driver is.
H264_ENCODERS: tuple[VideoEncoder, ...] = (
    VideoEncoder(
        "h264_nvenc",
        {"preset": "p4", "tune": "hq", "rc": "vbr", "cq": "19", "b": "0"},
        "NVIDIA's hardware H.264 encoder (constant quality 19, preset p4)",
    ),
    VideoEncoder(
        "libx264",
        {"preset": "veryfast", "crf": "14", "threads": "0"},
        "libx264 (CRF 14, preset veryfast, threads auto)",
    ),
)


def _opens(encoder: VideoEncoder) -> bool:
    """Whether ``encoder`` encodes two small frames here (a hardware encoder compiled into the
    wheel fails to open without its driver)."""
    import numpy as np

    try:
        _encode_video(np.zeros((2, 256, 256, 3), np.uint8), Fraction(16), encoder, io.BytesIO())
    except Exception as exc:  # any failure means "not this one": the next is tried
        log.debug("video encoder %s does not open here: %s", encoder.codec, exc)
        return False
    return True


@functools.cache
def video_encoder() -> VideoEncoder:
    """The H.264 encoder outputs use: the first of :data:`H264_ENCODERS` that opens, chosen once
    (``unison-mcp doctor`` reports it)."""
    for encoder in H264_ENCODERS:
        if _opens(encoder):
            log.info("video encoder: %s", encoder.summary)
            return encoder
    raise RuntimeError("no H.264 encoder opens in PyAV (libx264 is in the PyPI wheel: reinstall av)")


#: The boxes on the way from ``moov`` to the chunk offset tables (ISO/IEC 14496-12).
_INDEX_PATH = frozenset({b"moov", b"trak", b"mdia", b"minf", b"stbl"})


def _boxes(data: bytes | bytearray, start: int, end: int) -> Iterator[tuple[bytes, int, int, int]]:
    """The boxes in ``data[start:end]``: (type, box start, payload start, box end)."""
    at = start
    while at + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, at)
        head = 8
        if size == 1:  # a 64-bit size follows the type
            (size,) = struct.unpack_from(">Q", data, at + 8)
            head = 16
        elif size == 0:  # to the end
            size = end - at
        if size < head or at + size > end:
            raise ValueError(f"MP4 box {kind!r} at {at}: size {size} out of bounds")
        yield kind, at, at + head, at + size
        at += size


def _shift_offsets(moov: bytearray, start: int, end: int, shift: int) -> None:
    """Add ``shift`` to every chunk offset (``stco``, ``co64``) under ``moov[start:end]``."""
    for kind, _, payload, box_end in _boxes(moov, start, end):
        if kind in _INDEX_PATH:
            _shift_offsets(moov, payload, box_end, shift)
        elif kind in (b"stco", b"co64"):
            (count,) = struct.unpack_from(">I", moov, payload + 4)  # after version and flags
            width, fmt = (4, ">I") if kind == b"stco" else (8, ">Q")
            for k in range(count):
                at = payload + 8 + k * width
                (offset,) = struct.unpack_from(fmt, moov, at)
                if kind == b"stco" and offset + shift >= 1 << 32:
                    raise ValueError("chunk offset past 4 GiB in a 32-bit table")
                struct.pack_into(fmt, moov, at, offset + shift)


def moov_first(data: bytes) -> bytes:
    """``data`` (an MP4 written with its index, ``moov``, after its media, ``mdat``) with the index
    moved before the media and every chunk offset moved with it: what FFmpeg's ``+faststart``
    does by reopening the file, done in memory, so players can start before the download ends.
    A file already in that order is returned as it is."""
    boxes = list(_boxes(data, 0, len(data)))
    kinds = [kind for kind, *_ in boxes]
    if b"moov" not in kinds or b"mdat" not in kinds or kinds.index(b"moov") < kinds.index(b"mdat"):
        return data
    _, m_start, _, m_end = boxes[kinds.index(b"moov")]
    moov = bytearray(data[m_start:m_end])
    _shift_offsets(moov, 0, len(moov), len(moov))
    parts: list[bytes | bytearray] = []
    for kind, start, _, end in boxes:
        if kind == b"mdat" and moov is not None:
            parts.append(moov)
            moov = None  # type: ignore[assignment]
        if kind != b"moov":
            parts.append(data[start:end])
    return b"".join(parts)


def mp4_bytes(frames: np.ndarray, fps: float, *, encoder: VideoEncoder | None = None) -> bytes:
    """(F, H, W, 3) uint8 RGB frames as an H.264 (yuv420p) MP4 at ``fps``, encoded in memory.

    Width and height must be even (yuv420p halves the colour planes). The index is placed at the
    start of the file (room reserved there: ``+faststart`` needs a file it can reopen) so players
    can start before the download ends. ``encoder``: default :func:`video_encoder`.
    """
    _check_frames("frames", frames, ("FHW3",))
    _, h, w, _ = frames.shape
    if w % 2 or h % 2:
        raise InvalidRequest.for_field(
            "frames", f"{w}×{h}", "width and height must be even for H.264 yuv420p"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidRequest.for_field("fps", fps, "must be a finite number above 0")
    buffer = io.BytesIO()
    rate = Fraction(fps).limit_denominator(1001)
    _encode_video(frames, rate, encoder or video_encoder(), buffer)
    return moov_first(buffer.getvalue())


def encode_mp4(path: Path, frames: np.ndarray, fps: float, *, encoder: VideoEncoder | None = None) -> None:
    """Write :func:`mp4_bytes` to ``path`` (not atomic: for test media and examples; outputs go
    through :mod:`engine.outputs`)."""
    Path(path).write_bytes(mp4_bytes(frames, fps, encoder=encoder))


def _encode_video(frames: np.ndarray, rate: Fraction, encoder: VideoEncoder, out: Any) -> None:
    import av

    with av.open(out, "w", format="mp4") as container:
        stream = container.add_stream(encoder.codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = dict(encoder.options)
        stream.codec_context.open()  # its thread count is known from here on
        for frame in _converted(frames, stream):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


#: Frames converted ahead of the encoder (each 0.6 MB at 832×480 in yuv420p).
CONVERTED_AHEAD = 4
_END = object()


def _converted(frames: np.ndarray, stream: Any) -> Iterator[Any]:
    """Each RGB frame as the encoder's picture (its pixel format and size), converted on a thread
    of its own a few frames ahead: swscale's RGB→YUV conversion, a third of an 832×480 frame's
    encoding time on 2 cores, then runs beside the encoder instead of before it (both release the
    GIL). It is the conversion the encoder makes itself when handed RGB (the same reformat, size,
    format and thread count, ``av.video.codeccontext``), so the file is the same, byte for byte
    (tests/test_media.py). Stopping early (the encoder failed) stops the thread too."""
    import av

    ahead: queue.Queue[Any] = queue.Queue(maxsize=CONVERTED_AHEAD)
    stop = threading.Event()
    width, height, pix_fmt = stream.width, stream.height, stream.pix_fmt
    threads = stream.codec_context.thread_count

    def put(item: Any) -> None:
        while not stop.is_set():
            with contextlib.suppress(queue.Full):
                ahead.put(item, timeout=0.1)
                return

    def convert() -> None:
        try:
            for arr in frames:
                if stop.is_set():
                    return
                rgb = av.VideoFrame.from_ndarray(arr, format="rgb24")
                put(rgb.reformat(width, height, pix_fmt, threads=threads))
            put(_END)
        except BaseException as exc:  # handed to the encoding thread, which raises it
            put(exc)

    worker = threading.Thread(target=convert, name="unison-encode-convert", daemon=True)
    worker.start()
    try:
        while (item := ahead.get()) is not _END:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


# ---------------------------------------------------------------------------------------------
# Audio: a source's sound carried into an output that spans its time

#: Audio codecs an MP4 holds as they are: their packets are copied, never re-encoded.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "opus", "flac", "alac", "ac3", "eac3"})
#: Sample rates the AAC encoder takes; a source at another rate is resampled to 48 kHz.
_AAC_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000})


@dataclass(frozen=True)
class AudioSpan:
    """The part of a source video's audio an output spans.

    ``start_s`` and ``duration_s`` are seconds on the source's own clock, counted from its video
    stream's first frame (the time :func:`read_video` calls 0), so audio and picture stay in step
    even when the container starts its streams at different times.
    """

    source: Source  # read from its descriptor, never its path
    start_s: float
    duration_s: float


@dataclass(frozen=True)
class AudioMuxed:
    """What :func:`mux_audio` put into the output."""

    source_codec: str
    codec: str  # the output's audio codec
    copied: bool  # packets copied as they were (False: decoded and re-encoded as AAC)
    duration_s: float

    @property
    def note(self) -> str:
        how = f"copied ({self.codec})" if self.copied else f"re-encoded from {self.source_codec} to AAC"
        return f"source audio {how}: {self.duration_s:.2f} s"


def mux_audio(video: Path, span: AudioSpan, out: Path) -> AudioMuxed | None:
    """Write ``out``: the MP4 ``video`` with ``span`` of a source's audio (:func:`muxed_audio`,
    from a file to a file; outputs use :func:`muxed_audio` in memory)."""
    done = muxed_audio(Path(video).read_bytes(), span)
    if done is None:
        return None
    data, muxed = done
    Path(out).write_bytes(data)
    return muxed


def muxed_audio(video: bytes, span: AudioSpan) -> tuple[bytes, AudioMuxed] | None:
    """The MP4 ``video`` (bytes) with its stream copied as it is, plus ``span`` of a source's
    audio, muxed in memory: the new file's bytes and what was put in.

    The audio packets in ``[start_s, start_s + duration_s)`` are copied with their timestamps
    rebased to 0 when the codec fits MP4 (:data:`MP4_AUDIO_CODECS`), else decoded and encoded as
    AAC. Packets are whole (AAC: 1024 samples), so the audio spans the request to within one
    packet. Returns ``None`` when the source has no audio stream.

    Raises:
        InputRefused: the source cannot be read as a video.
        InvalidRequest: ``start_s`` below 0 or ``duration_s`` not above 0.
        av.error.FFmpegError, OSError, ValueError: the audio cannot be copied or encoded.
    """
    import av

    if not (math.isfinite(span.start_s) and span.start_s >= 0):
        raise InvalidRequest.for_field("audio.start_s", span.start_s, "must be a number ≥ 0")
    if not (math.isfinite(span.duration_s) and span.duration_s > 0):
        raise InvalidRequest.for_field("audio.duration_s", span.duration_s, "must be a number above 0")
    source = span.source
    container = open_container(source)
    try:
        if not container.streams.audio:
            return None
        codec = codec_name(container.streams.audio[0])
        if codec in MP4_AUDIO_CODECS:
            try:
                return _write_with_audio(video, container, span, copy=True)
            except (av.error.FFmpegError, ValueError) as e:
                # The MP4 muxer refused this stream's parameters: encode it instead.
                log.info("copying %s audio from %s failed (%s); re-encoding as AAC", codec, source.name, e)
        return _write_with_audio(video, container, span, copy=False)
    finally:
        container.close()


def _write_with_audio(video: bytes, source: Any, span: AudioSpan, *, copy: bool) -> tuple[bytes, AudioMuxed]:
    """One attempt of :func:`muxed_audio`: video and audio packets interleaved by time, in memory."""
    import av

    audio_in = source.streams.audio[0]
    tb = audio_in.time_base
    # The source's own clock starts at its first video frame (as read_video counts time).
    origin = 0.0
    if source.streams.video and source.streams.video[0].start_time is not None:
        v = source.streams.video[0]
        origin = float(v.start_time * v.time_base)
    start, end = origin + span.start_s, origin + span.start_s + span.duration_s
    source_codec = codec_name(audio_in)
    out = io.BytesIO()
    with av.open(io.BytesIO(video), "r") as picture:
        video_in = picture.streams.video[0]
        with av.open(out, "w", format="mp4") as output:
            video_out = output.add_stream_from_template(video_in)
            if copy:
                audio_out = output.add_stream_from_template(audio_in)
            else:
                rate = audio_in.codec_context.sample_rate or 48000
                audio_out = output.add_stream("aac", rate=rate if rate in _AAC_RATES else 48000)
                audio_out.layout = "mono" if (audio_in.codec_context.channels or 2) == 1 else "stereo"
            with contextlib.suppress(av.error.FFmpegError):
                # To the packet at or before the start (also rewinding after a failed first
                # attempt); the filter below drops the packets before it. A file that cannot
                # seek is read on.
                source.seek(max(0, int(start / tb)), stream=audio_in, backward=True, any_frame=False)
            packets = (_audio_copied if copy else _audio_encoded)(source, audio_in, audio_out, start, end)
            pictures = _video_packets(picture, video_in, video_out)
            for _, packet in heapq.merge(pictures, packets, key=lambda item: item[0]):
                output.mux(packet)
            if not copy:
                for packet in audio_out.encode(None):
                    output.mux(packet)
    codec = source_codec if copy else "aac"
    data = moov_first(out.getvalue())
    muxed = AudioMuxed(source_codec=source_codec, codec=codec, copied=copy, duration_s=_audio_seconds(data))
    return data, muxed


def _audio_seconds(data: bytes) -> float:
    """The audio length of a written file, as a reader sees it (the muxer's own count)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        if stream.duration is not None and stream.time_base is not None:
            return float(stream.duration * stream.time_base)
        return 0.0


def _video_packets(container: Any, stream_in: Any, stream_out: Any) -> Iterator[tuple[float, Any]]:
    for packet in container.demux(stream_in):
        if packet.dts is None:  # the demuxer's end-of-stream marker
            continue
        when = float(packet.dts * stream_in.time_base)
        packet.stream = stream_out
        yield when, packet


def _audio_copied(
    source: Any, stream_in: Any, stream_out: Any, start: float, end: float
) -> Iterator[tuple[float, Any]]:
    """The source's audio packets starting in ``[start, end)``, rebased so the first is at 0."""
    tb = stream_in.time_base
    base: int | None = None
    for packet in source.demux(stream_in):
        if packet.pts is None:
            continue
        t = float(packet.pts * tb)
        if t < start - 1e-6:
            continue
        if t >= end - 1e-6:
            break
        if base is None:
            base = min(packet.pts, packet.dts if packet.dts is not None else packet.pts)
        packet.pts -= base
        if packet.dts is not None:
            packet.dts -= base
        packet.stream = stream_out
        yield float(packet.pts * tb), packet


def _audio_encoded(
    source: Any, stream_in: Any, stream_out: Any, start: float, end: float
) -> Iterator[tuple[float, Any]]:
    """The source's audio frames starting in ``[start, end)``, encoded for ``stream_out``."""
    samples = 0
    for frame in source.decode(stream_in):
        if frame.time is None:
            continue
        if frame.time < start - 1e-6:
            continue
        if frame.time >= end - 1e-6:
            break
        # Timestamps counted in samples from the span's start; the encoder resamples the rest.
        frame.pts = samples
        frame.time_base = Fraction(1, frame.sample_rate)
        at = samples / frame.sample_rate
        samples += frame.samples
        for packet in stream_out.encode(frame):
            yield at, packet

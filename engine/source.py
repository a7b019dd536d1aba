"""One opened input: :class:`Source`, what its header says, and the header-only :func:`probe`.

A :class:`Source` is made only by :meth:`engine.inputs.InputPolicy.open` (the path policy: roots,
URIs, the checks before the open) and read only through its descriptor, never by its path again:
:mod:`engine.media` decodes from it, the probe here reads its header. This module is what both
sides share, so the policy and the decoders need not import each other:

- :class:`Source`, :func:`close_all`, :func:`source_for`: the descriptor, the real path, the
  kind, the size; a job's sources are looked up by path, never opened again.
- :class:`ImageHeader`, :class:`VideoHeader`: what :func:`probe` learns without decoding a pixel;
  :class:`VideoInfo`: what decoding the first frame adds (:func:`engine.video.probe_video`).
- :func:`probe` and the pieces :mod:`engine.media` reuses to decode from the same file:
  :func:`open_container` (the demuxer its extension names, :data:`CONTAINERS`),
  :func:`video_header`, :func:`pillow_errors`, :func:`check_pixels`, :func:`refuse`.

Heavy imports (PyAV, Pillow) happen inside functions so ``import engine`` stays cheap.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputRefused, shown
from .vocab import MediaKind

if TYPE_CHECKING:
    from types import TracebackType

#: Default pixel limit for one input image or video frame (64 MP: above any camera's output,
#: far below what would exhaust memory when decoded as RGB).
DEFAULT_MAX_PIXELS = 64_000_000
#: Pillow decoders accepted for input images (the extensions engine.plan accepts); restricting the
#: list keeps rarely used, less hardened decoders away from untrusted files.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
#: Video containers accepted, by extension: the FFmpeg demuxer forced for it, and the name FFmpeg
#: must then report. Forcing the demuxer keeps every other one (HLS, concat, image2, ...) out of
#: reach of a file merely named ".mp4".
CONTAINERS: dict[str, tuple[str, tuple[str, ...]]] = {
    ".mp4": ("mov", ("mov", "mov,mp4,m4a,3gp,3g2,mj2")),
    ".mov": ("mov", ("mov", "mov,mp4,m4a,3gp,3g2,mj2")),
    ".mkv": ("matroska", ("matroska", "matroska,webm")),
    ".webm": ("matroska", ("matroska", "matroska,webm")),
    ".avi": ("avi", ("avi",)),
}
_ACCEPTED = "MP4/MOV (ISO BMFF), MKV/WebM (Matroska), AVI"


# ---------------------------------------------------------------------------------------------
# What an input's header says, and what its first decoded frame adds


@dataclass(frozen=True)
class ImageHeader:
    format: str  # Pillow's name: "PNG", "JPEG", "WEBP"
    width: int
    height: int


@dataclass(frozen=True)
class VideoHeader:
    """A video's container and stream header, read without decoding a frame.

    ``width``/``height`` are the coded size (a phone's portrait clip is stored sideways; the
    upright size is known once a frame is decoded). ``num_frames`` is ``None`` when the container
    says neither its frame count nor its duration: it is counted, bounded, while decoding.
    ``audio`` is the codec of the first audio stream (FFmpeg's name: "aac", "mp3", "opus"...), or
    ``None`` for a silent video.
    """

    format: str  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm", "avi"
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    num_frames: int | None
    audio: str | None = None


@dataclass(frozen=True)
class VideoInfo:
    """A video as decoding sees it (:func:`engine.video.probe_video`): the upright size, and a
    frame count and rate that are always known (counted when the container does not say them)."""

    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float


# ---------------------------------------------------------------------------------------------
# Source: one opened input


class _Reader(io.RawIOBase):
    """A read-only file object over a shared descriptor with its own position (``os.pread``), so
    several readers of one :class:`Source` never move each other's offset."""

    def __init__(self, fd: int, size: int):
        super().__init__()
        self._fd = fd
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = os.pread(self._fd, len(buffer), self._pos)
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos


@dataclass(eq=False)
class Source:
    """An input file opened once: read it through :meth:`reader`, never by its path again.

    Made by :meth:`engine.inputs.InputPolicy.open` after its checks. ``path`` is the real path
    (for messages and sidecar names), ``value`` what the caller gave, ``field`` the argument it
    came from. ``header`` is filled by the header-only :func:`probe`, ``video`` by
    :func:`engine.video.probe_video` when decoding starts. Close it (or use it as a context
    manager) when the job is done.
    """

    fd: int
    path: Path
    kind: MediaKind
    size: int
    field: str = "path"
    value: str = ""
    header: ImageHeader | VideoHeader | None = None
    video: VideoInfo | None = None
    #: An opened container with its first frame decoded, left by probe_video for read_video to
    #: continue from (engine.media owns it; closed with the source).
    primed: Any = dataclasses.field(default=None, repr=False)
    closed: bool = False

    def reader(self) -> io.BufferedReader:
        """A fresh read-only file object at offset 0 (each has its own position)."""
        if self.closed:
            raise InputRefused(
                f"{self.field}={shown(self.path)}: the input was already closed", path=self.name
            )
        if hasattr(os, "pread"):
            return io.BufferedReader(_Reader(self.fd, self.size), buffer_size=1 << 16)
        f = os.fdopen(os.dup(self.fd), "rb")  # no pread (Windows): a duplicate shares the offset
        f.seek(0)
        return f  # type: ignore[return-value]

    @property
    def name(self) -> str:
        """The real path, cut to a readable length (for messages and ``InputRefused.path``)."""
        return shown(self.path, quoted=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        primed, self.primed = self.primed, None
        if primed is not None:
            primed.close()
        os.close(self.fd)

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __del__(self) -> None:
        # A safety net only: jobs close their sources; a leaked one should not hold the fd forever.
        if not self.closed:
            with contextlib.suppress(Exception):  # interpreter shutdown, or an fd already gone
                self.close()

    def __str__(self) -> str:
        return str(self.path)


def close_all(sources: Sequence[Source]) -> None:
    """Close every source (those already closed are skipped)."""
    for s in sources:
        s.close()


def source_for(sources: Mapping[str, Source], path: str) -> Source:
    """The input opened for ``path`` when its request was admitted; a path without one is refused,
    never opened here (decoding reads only what the policy opened)."""
    source = sources.get(path)
    if source is None:
        raise InputRefused(f"input {shown(path)} was not admitted with the request", path=path)
    return source


# ---------------------------------------------------------------------------------------------
# Refusals naming the file


def refuse(source: Source, what: str, why: str) -> InputRefused:
    """The refusal of ``source`` read as ``what`` ("image", "video"), saying ``why``."""
    return InputRefused(f"{what} {source.name}: {why}", path=source.name)


def check_pixels(source: Source, what: str, width: int, height: int, max_pixels: int) -> None:
    """Refuse a declared or decoded size that is empty or over ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise refuse(source, what, f"declares an empty size {width}×{height}")
    if width * height > max_pixels:
        raise refuse(
            source, what, f"is {width}×{height} = {width * height} pixels; the limit is {max_pixels} pixels"
        )


@contextmanager
def pillow_errors(source: Source, *, header: bool = False) -> Iterator[None]:
    """Pillow's failures as :class:`InputRefused` naming the file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (89 MP warning, 179 MP error) runs inside Image.open; ours
            # is stricter by default, so its warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except InputRefused:
        raise
    except Image.DecompressionBombError as e:
        raise refuse(source, "image", f"refused as a decompression bomb ({e})") from None
    except UnidentifiedImageError:
        raise refuse(
            source, "image", f"not a readable image (accepted formats: {', '.join(IMAGE_FORMATS)})"
        ) from None
    except (OSError, ValueError, SyntaxError) as e:
        # Truncated or corrupt data surface here while decoding (SyntaxError is what some Pillow
        # plugins raise for broken headers).
        what = "corrupt image header" if header else "corrupt or truncated image data"
        raise refuse(source, "image", f"{what} ({e})") from None


# ---------------------------------------------------------------------------------------------
# The header-only probe


def probe(source: Source, *, max_pixels: int | None = None) -> Source:
    """Read ``source``'s header only and apply the pixel limit; the header is kept on the source.

    Images: Pillow's lazy open (PNG, JPEG, WebP) gives the size without decoding a pixel. Videos:
    the container's demuxer is the one its extension names (:data:`CONTAINERS`), and the stream
    header gives size, rate and, where the container says it, the length; no frame is decoded
    and frames are never counted here (that happens, bounded, when the job decodes).

    Raises:
        InputRefused: not a readable image/video of an accepted format, or over ``max_pixels``
            (default :data:`DEFAULT_MAX_PIXELS`).
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if source.kind is MediaKind.IMAGE:
        from PIL import Image

        with (
            source.reader() as f,
            pillow_errors(source, header=True),
            Image.open(f, formats=IMAGE_FORMATS) as im,
        ):
            check_pixels(source, "image", im.width, im.height, limit)  # lazy: header only
            source.header = ImageHeader(format=str(im.format), width=im.width, height=im.height)
        return source
    container = open_container(source)
    try:
        header = video_header(container, source)
    finally:
        container.close()
    check_pixels(source, "video", header.width, header.height, limit)
    source.header = header
    return source


def open_container(source: Source) -> Any:
    """The container opened from the source's descriptor with the demuxer its extension names."""
    import av

    demuxer, expected = CONTAINERS.get(source.path.suffix.lower(), (None, ()))
    if demuxer is None:
        raise refuse(source, "video", f"unsupported container extension; accepted: {_ACCEPTED}")
    f = source.reader()
    try:
        container = av.open(f, format=demuxer)
    except (av.error.FFmpegError, OSError, ValueError) as e:
        f.close()
        raise refuse(
            source,
            "video",
            f"not a readable video of the {source.path.suffix} container ({e}); accepted: {_ACCEPTED}",
        ) from None
    name = container.format.name
    if name not in expected:
        container.close()
        f.close()
        raise refuse(
            source, "video", f"FFmpeg reads it as {name!r}, not {expected[0]!r}; accepted: {_ACCEPTED}"
        )
    return container


def video_stream(container: Any, source: Source) -> Any:
    """The container's first video stream, or the refusal of a file that has none."""
    if not container.streams.video:
        raise refuse(source, "video", "has no video stream")
    return container.streams.video[0]


def video_header(container: Any, source: Source) -> VideoHeader:
    """Size, rate, duration and (when the container says it) length, from headers only."""
    import av

    stream = video_stream(container, source)
    cc = stream.codec_context
    fps = _stream_fps(stream)
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = container.duration / av.time_base
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        duration = None
    count: int | None = stream.frames or None
    if count is None and duration and fps:
        count = round(duration * fps) or None
    return VideoHeader(
        format=container.format.name,
        width=cc.width or 0,
        height=cc.height or 0,
        fps=fps,
        duration_s=duration,
        num_frames=count,
        audio=_audio_codec(container),
    )


def codec_name(stream: Any) -> str:
    """A stream's codec by its own name ("mp3"), not its decoder's ("mp3float")."""
    codec = stream.codec_context.codec
    return codec.canonical_name or codec.name or "unknown"


def _stream_fps(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and value > 0:
                return value
    return None


def _audio_codec(container: Any) -> str | None:
    """The codec name of the container's first audio stream (header only), or ``None``."""
    if not container.streams.audio:
        return None
    return codec_name(container.streams.audio[0])

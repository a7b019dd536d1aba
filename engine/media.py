"""Media I/O: decoding opened inputs safely, resampling video in time, and the project's encoders.

The readers take only an opened :class:`~engine.source.Source` (made by
:meth:`engine.inputs.InputPolicy.open`, the one way in) and read from its descriptor, never from a
path. PyAV is the only video library and Pillow the only image library. Every reader refuses a bad
file with :class:`~engine.errors.InputRefused` whose message names the file, what is wrong and the
rule, before spending memory on it: image sizes are read from the header before any pixel is
decoded, video frames are decoded one at a time and only the frames that will be returned are kept.

Heavy imports (PyAV, Pillow, numpy) happen inside functions so ``import engine`` stays cheap.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest
from .geometry import Size, even_indices, resampled_count, resize_cover
from .source import (
    DEFAULT_MAX_PIXELS,
    IMAGE_FORMATS,
    Source,
    VideoHeader,
    VideoInfo,
    check_pixels,
    codec_name,
    open_container,
    pillow_errors,
    refuse,
    video_header,
    video_stream,
)

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)

#: Without ``num_frames`` or ``max_frames``, reading more than this many frames is refused
#: (at 832×480 this is already ~1.2 GB of RGB).
HARD_MAX_FRAMES = 1024

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
# Video


@dataclass
class VideoClip:
    """Decoded frames with their rate.

    ``fps`` is the rate of the returned frames (the requested rate; when frames were spread with
    ``max_frames``, the effective rate of that spacing). ``timestamps`` are the frames' times in
    seconds from the clip's start. ``padded`` counts frames added by repeating the last one.
    """

    frames: np.ndarray  # (F, H, W, 3) uint8
    fps: float
    timestamps: list[float] = field(default_factory=list)
    source_fps: float = 0.0
    source_frames: int = 0  # frames the source yielded before padding
    padded: int = 0
    notes: list[str] = field(default_factory=list)

    def images(self) -> list[Image.Image]:
        """The frames as RGB PIL images."""
        from PIL import Image

        return [Image.fromarray(f) for f in self.frames]


#: Counting frames of a container that does not say its length stops past these (the count runs
#: inside the job, while decoding; a whole 2 GiB file is never demuxed just to count).
COUNT_MAX_BYTES = 512 * 1024**2
COUNT_MAX_SECONDS = 10.0


class _Primed:
    """An open container whose first frame is already decoded: probe_video leaves it on the
    source so read_video continues from it instead of opening the file again."""

    def __init__(self, container: Any, stream: Any, first: Any, frames: Iterator[Any]):
        self.container = container
        self.stream = stream
        self.first = first
        self.frames = frames

    def close(self) -> None:
        self.container.close()


def _prime(source: Source) -> tuple[VideoHeader, _Primed]:
    """Open the container once, read its header and decode its first frame."""
    import av

    container = open_container(source)
    try:
        header = video_header(container, source)
        stream = video_stream(container, source)
        stream.thread_type = "AUTO"
        frames = container.decode(stream)
        try:
            first = next(frames, None)
        except (av.error.FFmpegError, ValueError) as e:
            raise refuse(source, "video", f"corrupt video data ({e})") from None
        if first is None:
            raise refuse(source, "video", "has no frames")
    except BaseException:
        container.close()
        raise
    return header, _Primed(container, stream, first, frames)


def _count_frames(source: Source, check: Callable[[], None] | None = None) -> int:
    """Frames of a video whose container does not say its length, by counting packets (no
    decoding), bounded by :data:`COUNT_MAX_BYTES` and :data:`COUNT_MAX_SECONDS`."""
    import av

    container = open_container(source)
    try:
        stream = video_stream(container, source)
        count = read = 0
        deadline = time.monotonic() + COUNT_MAX_SECONDS
        for pkt in container.demux(stream):
            if not pkt.size:
                continue
            count += 1
            read += pkt.size
            if read > COUNT_MAX_BYTES or time.monotonic() > deadline:
                raise refuse(
                    source,
                    "video",
                    f"the container does not say its length and counting its frames stopped after {count} "
                    f"frames ({read} bytes, limits {COUNT_MAX_BYTES} bytes and {COUNT_MAX_SECONDS:g} s); "
                    "give num_frames, or re-encode it as MP4",
                )
            if check is not None and count % 256 == 0:
                check()
        return count
    except av.error.FFmpegError as e:
        raise refuse(source, "video", f"corrupt container ({e})") from None
    finally:
        container.close()


def probe_video(
    source: Source, *, max_pixels: int | None = None, check: Callable[[], None] | None = None
) -> VideoInfo:
    """Size (upright), frame count, rate and duration of a video, as decoding sees them.

    Opens the container once and decodes the first frame (its rotation gives the upright size);
    the result is kept on ``source`` and the opened container is left for :func:`read_video` to
    continue from, so probe + read open the file once. The frame count comes from the container,
    else from its duration, else from counting packets (bounded, see :func:`_count_frames`).

    Raises:
        InputRefused: a corrupt file, a container other than the extension's, no video stream, no
            frames, or frames over ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`).
    """
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if source.video is not None:
        check_pixels(source, "video", source.video.width, source.video.height, limit)
        return source.video
    header = source.header if isinstance(source.header, VideoHeader) else None
    if header is not None and header.width and header.height:
        check_pixels(source, "video", header.width, header.height, limit)
    fresh, primed = _prime(source)
    try:
        header = header or fresh
        if header.width and header.height:
            # The declared size, checked before anything else is decoded.
            check_pixels(source, "video", header.width, header.height, limit)
        info = _info(source, header, primed.first, check)
        check_pixels(source, "video", info.width, info.height, limit)
    except BaseException:
        primed.close()
        raise
    source.video = info
    if source.primed is not None:
        source.primed.close()
    source.primed = primed
    return info


def _info(source: Source, header: VideoHeader, first: Any, check: Callable[[], None] | None) -> VideoInfo:
    width, height = first.width, first.height
    if _quarter_turns(first) % 2:
        width, height = height, width  # shown upright, as read_video returns it
    fps, duration, count = header.fps, header.duration_s, header.num_frames or 0
    if count <= 0:
        count = _count_frames(source, check)
    if fps is None:
        fps = count / duration if duration else 0.0
    if count <= 0 or fps <= 0:
        raise refuse(source, "video", "has no frames or no frame rate")
    if not duration:
        duration = count / fps
    return VideoInfo(width=width, height=height, num_frames=int(count), fps=fps, duration_s=duration)


def _decoder(
    source: Source, max_pixels: int | None, check: Callable[[], None] | None
) -> tuple[VideoInfo, _Primed]:
    """The video's info and an opened container positioned after its first frame (the one left
    by probe_video when there is one, else a fresh open)."""
    info = probe_video(source, max_pixels=max_pixels, check=check)
    primed, source.primed = source.primed, None
    if primed is None:  # already consumed by an earlier read: open again, from the descriptor
        _, primed = _prime(source)
    return info, primed


def read_video(
    source: Source,
    *,
    fps: float | None = None,
    num_frames: int | None = None,
    size: Size | None = None,
    max_frames: int | None = None,
    from_end: bool = False,
    pad: bool = True,
    max_pixels: int | None = None,
    check: Callable[[], None] | None = None,
) -> VideoClip:
    """Decode a video into RGB frames, resampled in time and optionally resized.

    Args:
        source: the opened input (:meth:`engine.inputs.InputPolicy.open`), decoded from its
            descriptor, continuing from :func:`probe_video` when that ran.
        fps: target rate; each output frame is the source frame nearest its timestamp (frames are
            dropped or repeated). ``None`` keeps the source's frames.
        num_frames: exactly this many frames: the first ones (or the last ones with ``from_end``);
            a shorter clip is padded by repeating its last frame (unless ``pad=False``) and the
            padding is recorded in ``notes``.
        size: (width, height): each kept frame is scaled to cover it and centre-cropped.
        max_frames: without ``num_frames``, at most this many frames spread evenly over the clip.
        from_end: with ``num_frames``, keep the clip's last frames instead of its first.
        pad: whether a clip shorter than ``num_frames`` is padded.
        max_pixels: refuse frames larger than this (default :data:`DEFAULT_MAX_PIXELS`).
        check: called between frames (e.g. ``JobControl.check``) so a cancel stops decoding.

    Memory stays bounded: only the frames to be returned (already resized) and the previous
    decoded frame are held, and decoding stops once the requested frames are known.

    Raises:
        InputRefused: a corrupt file, no frames, frames over the pixel limit, or a clip too
            long to read whole (more than :data:`HARD_MAX_FRAMES` without ``num_frames``/``max_frames``).
        InvalidRequest: a bad argument (``fps`` ≤ 0, ``num_frames`` < 1, ...).
    """
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise InvalidRequest.for_field("fps", fps, "must be a finite number above 0")
    if num_frames is not None and num_frames < 1:
        raise InvalidRequest.for_field("num_frames", num_frames, "must be at least 1")
    if max_frames is not None and max_frames < 1:
        raise InvalidRequest.for_field("max_frames", max_frames, "must be at least 1")
    if num_frames is not None and max_frames is not None and num_frames > max_frames:
        raise InvalidRequest.for_field("num_frames", num_frames, f"must be at most max_frames ({max_frames})")
    if from_end and num_frames is None:
        raise InvalidRequest.for_field("from_end", from_end, "needs num_frames")
    if size is not None and (size[0] < 1 or size[1] < 1):
        raise InvalidRequest.for_field("size", size, "width and height must be at least 1")

    info, primed = _decoder(source, max_pixels, check)
    try:
        schedule = _schedule(source, info, fps, num_frames, max_frames, from_end)
        frames, stamps = _nearest_frames(source, primed, schedule, size, check)
        return _finish(source, schedule, frames, stamps, pad)
    finally:
        primed.close()


@dataclass(frozen=True)
class _Schedule:
    """Which times a read keeps: target k sits at ``times[k]`` when frames are spread evenly
    (``max_frames`` below the clip's length), else at k/``rate`` while k < ``limit``."""

    src_fps: float
    rate: float  # the requested rate (the source's without ``fps``)
    out_fps: float  # the rate of the returned frames (the spread's effective rate with ``times``)
    expected: int  # frames the whole clip yields at ``rate``
    times: tuple[float, ...] | None
    limit: int | None  # None: until the stream ends
    num_frames: int | None
    from_end: bool
    #: Bounded only by HARD_MAX_FRAMES (the caller gave no count): one frame over it is read to
    #: notice a container that understates its length. A flag, not ``limit == HARD_MAX_FRAMES + 1``,
    #: which a caller's own num_frames=1025 would match.
    hard_capped: bool = False

    def target(self, k: int) -> float | None:
        """The time of target ``k`` in seconds from the first frame; ``None`` past the last."""
        if self.times is not None:
            return self.times[k] if k < len(self.times) else None
        if self.limit is not None and k >= self.limit:
            return None
        return k / self.rate


def _schedule(
    source: Source,
    info: VideoInfo,
    fps: float | None,
    num_frames: int | None,
    max_frames: int | None,
    from_end: bool,
) -> _Schedule:
    """The target times of a read; a clip too long to read whole is refused here, before decoding."""
    rate = info.fps if fps is None else fps
    expected = resampled_count(info.num_frames, info.fps, rate)
    times: tuple[float, ...] | None = None
    limit: int | None = None
    out_fps = rate
    hard_capped = False
    if num_frames is not None:
        # The last frames are only known at the stream's end.
        limit = None if from_end else num_frames
    elif max_frames is not None and expected > max_frames:
        times = tuple(i / rate for i in even_indices(expected, max_frames))
        if len(times) > 1:
            out_fps = (len(times) - 1) / (times[-1] - times[0])
    elif max_frames is not None:
        limit = max_frames
    else:
        if expected > HARD_MAX_FRAMES:
            raise refuse(source, "video", _too_long(expected, rate))
        limit, hard_capped = HARD_MAX_FRAMES + 1, True
    return _Schedule(
        src_fps=info.fps,
        rate=rate,
        out_fps=out_fps,
        expected=expected,
        times=times,
        limit=limit,
        num_frames=num_frames,
        from_end=from_end,
        hard_capped=hard_capped,
    )


def _nearest_frames(
    source: Source,
    primed: _Primed,
    schedule: _Schedule,
    size: Size | None,
    check: Callable[[], None] | None,
) -> tuple[list[np.ndarray], list[float]]:
    """Decode from the primed container, keeping for each target time the nearest decoded frame
    (upright RGB, covering ``size``) and the target time; stops once no target is left.

    Only the kept frames (the last ``num_frames`` with ``from_end``) and the previous decoded
    frame are held; a frame is converted once, when it is first kept.
    """
    import av

    keep = schedule.num_frames if schedule.from_end else None
    kept: deque[np.ndarray] = deque(maxlen=keep)
    stamps: deque[float] = deque(maxlen=keep)

    def emit(entry: tuple[float, Any, np.ndarray | None], when: float) -> tuple[float, Any, np.ndarray]:
        arr = entry[2] if entry[2] is not None else _to_array(entry[1], size)
        kept.append(arr)
        stamps.append(when)
        return entry[0], entry[1], arr

    k = decoded = 0
    t0: float | None = None
    prev: tuple[float, Any, np.ndarray | None] | None = None  # (time, frame, converted)
    try:
        for frame in _all_frames(primed):
            if check is not None:
                check()
            t = frame.time if frame.time is not None else decoded / schedule.src_fps
            decoded += 1
            if t0 is None:
                t0 = t
            t -= t0
            cur: tuple[float, Any, np.ndarray | None] = (t, frame, None)
            while (tk := schedule.target(k)) is not None and tk <= t:
                # The nearest of the previous and the current frame (ties go to the earlier).
                if prev is not None and tk - prev[0] <= t - tk:
                    prev = emit(prev, tk)
                else:
                    cur = emit(cur, tk)
                k += 1
            prev = cur
            if schedule.target(k) is None:
                break
    except (av.error.FFmpegError, ValueError) as e:
        raise refuse(source, "video", f"corrupt video data after {decoded} decoded frames ({e})") from None
    # Targets past the last decoded frame but within half a source interval of it.
    tolerance = 0.5 / schedule.src_fps
    while prev is not None and (tk := schedule.target(k)) is not None and tk <= prev[0] + tolerance:
        prev = emit(prev, tk)
        k += 1
    return list(kept), list(stamps)


def _all_frames(primed: _Primed) -> Iterator[Any]:
    """The primed first frame, then the rest of the stream."""
    yield primed.first
    primed.first = None  # the caller holds it now; the primed state keeps no frame
    yield from primed.frames


def _to_array(frame: Any, size: Size | None) -> np.ndarray:
    """A decoded frame as an upright (H, W, 3) uint8 RGB array, scaled to cover ``size``."""
    import numpy as np

    img = _upright(frame.to_image(), _quarter_turns(frame))
    if size is not None:
        img = resize_cover(img, size)
    return np.asarray(img, dtype=np.uint8)


def _finish(
    source: Source, schedule: _Schedule, frames: list[np.ndarray], stamps: list[float], pad: bool
) -> VideoClip:
    """The clip from the kept frames: refusals for an empty or too long read, padding to
    ``num_frames``, the notes, and timestamps from the clip's first frame."""
    import numpy as np

    if not frames:
        raise refuse(source, "video", "has no decodable frames")
    rate, num_frames = schedule.rate, schedule.num_frames
    if schedule.hard_capped and len(frames) > HARD_MAX_FRAMES:
        raise refuse(source, "video", _too_long(len(frames), rate, more=True))

    name = source.path.name
    got = len(frames)
    notes: list[str] = []
    padded = 0
    if num_frames is not None and got < num_frames:
        if pad:
            padded = num_frames - got
            frames = frames + [frames[-1]] * padded
            stamps = stamps + [stamps[-1] + (i + 1) / rate for i in range(padded)]
            notes.append(
                f"{name}: source gave {got} frames at {rate:g} fps; padded to {num_frames} "
                "by repeating the last frame"
            )
        else:
            notes.append(f"{name}: source gave only {got} of {num_frames} frames at {rate:g} fps")
    if schedule.times is not None:
        notes.append(f"{name}: {schedule.expected} frames at {rate:g} fps spread down to {got}")
    for n in notes:
        log.info("%s", n)
    if schedule.from_end:
        # The last frames keep their spacing but start at 0, like any clip.
        stamps = [s - stamps[0] for s in stamps]
    return VideoClip(
        frames=np.stack(frames),
        fps=schedule.out_fps,
        timestamps=stamps,
        source_fps=schedule.src_fps,
        source_frames=got,
        padded=padded,
        notes=notes,
    )


def _quarter_turns(frame: Any) -> int:
    """Counter-clockwise quarter turns that show a frame upright (phones store portrait video
    sideways with a display matrix; FFmpeg's player applies it, the decoder does not)."""
    rotation = getattr(frame, "rotation", 0) or 0
    return round(rotation / 90) % 4


def _upright(img: Image.Image, turns: int) -> Image.Image:
    from PIL import Image

    ops = {1: Image.Transpose.ROTATE_90, 2: Image.Transpose.ROTATE_180, 3: Image.Transpose.ROTATE_270}
    return img.transpose(ops[turns]) if turns else img


def _too_long(count: int, rate: float, *, more: bool = False) -> str:
    return (
        f"{'more than ' if more else ''}{count} frames at {rate:g} fps; reading more than "
        f"{HARD_MAX_FRAMES} frames at once is refused (give num_frames or max_frames)"
    )


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


def encode_png(path: Path, frame: np.ndarray) -> None:
    """Write one (H, W, 3) uint8 RGB frame (or an (H, W) uint8 grey one) as PNG."""
    from PIL import Image

    _check_frames("frame", frame, ("HW3", "HW"))
    Image.fromarray(frame, mode="L" if frame.ndim == 2 else "RGB").save(path, format="PNG")


def encode_mp4(path: Path, frames: np.ndarray, fps: float, *, crf: int = 18) -> None:
    """Write (F, H, W, 3) uint8 RGB frames as an H.264 (libx264, yuv420p) MP4 at ``fps``.

    Width and height must be even (yuv420p halves the colour planes). The index is placed at the
    start of the file so players can start before the download ends.
    """
    import av

    _check_frames("frames", frames, ("FHW3",))
    _, h, w, _ = frames.shape
    if w % 2 or h % 2:
        raise InvalidRequest.for_field(
            "frames", f"{w}×{h}", "width and height must be even for H.264 yuv420p"
        )
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidRequest.for_field("fps", fps, "must be a finite number above 0")
    if not 0 <= crf <= 51:
        raise InvalidRequest.for_field("crf", crf, "must be between 0 and 51")
    rate = Fraction(fps).limit_denominator(1001)
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in _iter_frames(frames):
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _iter_frames(frames: np.ndarray) -> Iterator[Any]:
    import av

    for arr in frames:
        yield av.VideoFrame.from_ndarray(arr, format="rgb24")


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
    """Write ``out``: the MP4 ``video``'s stream copied as it is, plus ``span`` of a source's audio.

    The audio packets in ``[start_s, start_s + duration_s)`` are copied with their timestamps
    rebased to 0 when the codec fits MP4 (:data:`MP4_AUDIO_CODECS`), else decoded and encoded as
    AAC. Packets are whole (AAC: 1024 samples), so the audio spans the request to within one
    packet. Returns ``None``, writing nothing, when the source has no audio stream.

    Raises:
        InputRefused: the source cannot be read as a video.
        InvalidRequest: ``start_s`` below 0 or ``duration_s`` not above 0.
        av.error.FFmpegError, OSError, ValueError: the audio cannot be copied or encoded; ``out``
            may then hold a partial file, which the caller removes.
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
                return _write_with_audio(video, container, span, out, copy=True)
            except (av.error.FFmpegError, ValueError) as e:
                # The MP4 muxer refused this stream's parameters: encode it instead.
                log.info("copying %s audio from %s failed (%s); re-encoding as AAC", codec, source.name, e)
        return _write_with_audio(video, container, span, out, copy=False)
    finally:
        container.close()


def _write_with_audio(video: Path, source: Any, span: AudioSpan, out: Path, *, copy: bool) -> AudioMuxed:
    """One attempt of :func:`mux_audio`: video and audio packets interleaved by time into ``out``."""
    import heapq

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
    with (
        av.open(str(video), "r") as picture,
        av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"}) as output,
    ):
        video_in = picture.streams.video[0]
        video_out = output.add_stream_from_template(video_in)
        if copy:
            audio_out = output.add_stream_from_template(audio_in)
        else:
            rate = audio_in.codec_context.sample_rate or 48000
            audio_out = output.add_stream("aac", rate=rate if rate in _AAC_RATES else 48000)
            audio_out.layout = "mono" if (audio_in.codec_context.channels or 2) == 1 else "stereo"
        with contextlib.suppress(av.error.FFmpegError):
            # To the packet at or before the start (also rewinding after a failed first attempt);
            # the filter below drops the packets before it. A file that cannot seek is read on.
            source.seek(max(0, int(start / tb)), stream=audio_in, backward=True, any_frame=False)
        packets = (_audio_copied if copy else _audio_encoded)(source, audio_in, audio_out, start, end)
        pictures = _video_packets(picture, video_in, video_out)
        for _, packet in heapq.merge(pictures, packets, key=lambda item: item[0]):
            output.mux(packet)
        if not copy:
            for packet in audio_out.encode(None):
                output.mux(packet)
        codec = source_codec if copy else "aac"
    return AudioMuxed(source_codec=source_codec, codec=codec, copied=copy, duration_s=_audio_seconds(out))


def _audio_seconds(path: Path) -> float:
    """The audio length of a written file, as a reader sees it (the muxer's own count)."""
    import av

    with av.open(str(path)) as container:
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

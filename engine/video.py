"""Video decoding from an opened input: probing, reading resampled in time, frame by frame.

The readers take only an opened :class:`~engine.source.Source` (made by
:meth:`engine.inputs.InputPolicy.open`, the one way in) and read from its descriptor, never from a
path, with PyAV. A bad file is refused with :class:`~engine.errors.InputRefused` naming the file,
what is wrong and the rule, before memory is spent on it: frames are decoded one at a time and only
those that will be returned are kept. One container serves the probe and the decode
(:func:`probe_video` leaves it primed for :func:`read_video`).

Heavy imports (PyAV, Pillow, numpy) happen inside functions so ``import engine`` stays cheap.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import InvalidRequest
from .geometry import Size, even_indices, resampled_count, resize_cover
from .source import (
    DEFAULT_MAX_PIXELS,
    Source,
    VideoHeader,
    VideoInfo,
    check_pixels,
    open_container,
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

    turns = _quarter_turns(frame)
    if turns == 0 and (size is None or (frame.width, frame.height) == tuple(size)):
        # Straight to numpy (the same conversion to_image makes, without the image between).
        return frame.to_ndarray(format="rgb24")
    img = _upright(frame.to_image(), turns)
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

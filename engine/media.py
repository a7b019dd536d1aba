"""Media I/O: reading inputs safely, resampling video in time, geometry, and the project's encoders.

PyAV is the only video library and Pillow the only image library. Every reader refuses a bad file
with :class:`~engine.errors.InputRefused` whose message names the file, what is wrong and the rule,
before spending memory on it: image sizes are read from the header before any pixel is decoded,
video frames are decoded one at a time and only the frames that will be returned are kept.

Heavy imports (PyAV, Pillow, numpy) happen inside functions so ``import engine`` stays cheap.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import InputRefused, InvalidRequest

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

log = logging.getLogger(__name__)

#: Default pixel limit for one input image or video frame (64 MP: above any camera's output,
#: far below what would exhaust memory when decoded as RGB).
DEFAULT_MAX_PIXELS = 64_000_000
#: Without ``num_frames`` or ``max_frames``, reading more than this many frames is refused
#: (at 832×480 this is already ~1.2 GB of RGB).
HARD_MAX_FRAMES = 1024
#: Pillow decoders accepted for input images (the extensions engine.plan accepts); restricting the
#: list keeps rarely used, less hardened decoders away from untrusted files.
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")
#: Grey used for "unknown" pixels: 128 is VACE's mask colour and ≈ 0 in the pipeline's [-1, 1].
GREY = 128

Size = tuple[int, int]  # (width, height)


# ---------------------------------------------------------------------------------------------
# Files


def _regular_file(path: str | Path, what: str) -> Path:
    """The path if it names a readable, non-empty regular file; otherwise :class:`InputRefused`."""
    p = Path(path)
    if not p.exists():
        raise InputRefused(f"{what} {p}: no such file", path=str(p))
    if p.is_dir():
        raise InputRefused(f"{what} {p}: is a directory, not a file", path=str(p))
    if not p.is_file():
        # A FIFO or device would block or never end when read.
        raise InputRefused(f"{what} {p}: is not a regular file (device, FIFO or socket)", path=str(p))
    if not os.access(p, os.R_OK):
        raise InputRefused(f"{what} {p}: is not readable (permission denied)", path=str(p))
    if p.stat().st_size == 0:
        raise InputRefused(f"{what} {p}: is empty (0 bytes)", path=str(p))
    return p


def _check_pixels(p: Path, what: str, width: int, height: int, max_pixels: int) -> None:
    if width <= 0 or height <= 0:
        raise InputRefused(f"{what} {p}: declares an empty size {width}×{height}", path=str(p))
    if width * height > max_pixels:
        raise InputRefused(
            f"{what} {p}: is {width}×{height} = {width * height} pixels; the limit is {max_pixels} pixels",
            path=str(p),
        )


# ---------------------------------------------------------------------------------------------
# Images


def open_image(path: str | Path, *, max_pixels: int | None = None, mode: str = "RGB") -> Image.Image:
    """Open an image safely and return it decoded, upright, in ``mode`` ("RGB" or "L").

    Args:
        path: PNG, JPEG or WebP file.
        max_pixels: refuse images with more pixels than this (default :data:`DEFAULT_MAX_PIXELS`).
            The size is read from the header before any pixel is decoded.
        mode: "RGB" (transparent areas are composited on white) or "L" (masks).

    Raises:
        InputRefused: missing, directory, unreadable, not an image, corrupt or truncated, or over
            the pixel limit (decompression bombs included).
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    if mode not in ("RGB", "L"):
        raise InvalidRequest.for_field("mode", mode, 'must be "RGB" or "L"')
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    p = _regular_file(path, "image")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb check (89 MP warning, 179 MP error) runs inside Image.open; ours
            # below is stricter by default, so its warning would only be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(p, formats=IMAGE_FORMATS) as im:
                # Image.open is lazy: only the header has been read so far.
                _check_pixels(p, "image", im.width, im.height, limit)
                im.load()
                upright = ImageOps.exif_transpose(im)
    except InputRefused:
        raise
    except Image.DecompressionBombError as e:
        raise InputRefused(f"image {p}: refused as a decompression bomb ({e})", path=str(p)) from None
    except UnidentifiedImageError:
        raise InputRefused(
            f"image {p}: not a readable image (accepted formats: {', '.join(IMAGE_FORMATS)})", path=str(p)
        ) from None
    except (OSError, ValueError, SyntaxError) as e:
        # Truncated or corrupt data surface here while decoding (SyntaxError is what some Pillow
        # plugins raise for broken headers).
        raise InputRefused(f"image {p}: corrupt or truncated image data ({e})", path=str(p)) from None
    return _to_mode(upright, mode)


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
# Geometry (PIL images; sizes are (width, height))


def fit_box(src: Size, size: Size) -> tuple[int, int, int, int]:
    """Where ``src`` lands when fitted inside ``size`` keeping its aspect: (left, top, width, height)."""
    sw, sh = src
    w, h = size
    scale = min(w / sw, h / sh)
    fw, fh = max(1, min(w, round(sw * scale))), max(1, min(h, round(sh * scale)))
    return (w - fw) // 2, (h - fh) // 2, fw, fh


def _resample(img: Image.Image) -> int:
    from PIL import Image

    # Bilinear for masks (then binarised by the caller), Lanczos for pictures.
    return Image.Resampling.BILINEAR if img.mode == "L" else Image.Resampling.LANCZOS


def resize_cover(img: Image.Image, size: Size) -> Image.Image:
    """Scale ``img`` to cover ``size`` keeping its aspect, then crop the centre to exactly ``size``."""
    w, h = size
    sw, sh = img.size
    if (sw, sh) == (w, h):
        return img.copy()
    scale = max(w / sw, h / sh)
    # The crop box in source pixels: the centred region with the output's aspect.
    cw, ch = w / scale, h / scale
    left, top = (sw - cw) / 2, (sh - ch) / 2
    return img.resize((w, h), _resample(img), box=(left, top, left + cw, top + ch))


def resize_fit(img: Image.Image, size: Size) -> Image.Image:
    """Scale ``img`` to fit inside ``size`` keeping its aspect (the result may be smaller than ``size``)."""
    _, _, fw, fh = fit_box(img.size, size)
    if img.size == (fw, fh):
        return img.copy()
    return img.resize((fw, fh), _resample(img))


def letterbox(
    img: Image.Image, size: Size, fill: tuple[int, int, int] | int = (255, 255, 255)
) -> Image.Image:
    """Fit ``img`` inside ``size`` and centre it on a ``fill`` canvas (the reference-image treatment)."""
    from PIL import Image

    left, top, fw, fh = fit_box(img.size, size)
    if img.mode == "L" and not isinstance(fill, int):
        fill = fill[0]  # a grey canvas for a grey image
    canvas = Image.new(img.mode, size, fill)
    canvas.paste(resize_fit(img, size), (left, top))
    return canvas


def binarize(mask: Image.Image, threshold: int = 128) -> Image.Image:
    """An "L" mask with only 0 and 255: pixels at or above ``threshold`` become 255."""
    return mask.convert("L").point(lambda v: 255 if v >= threshold else 0)


# ---------------------------------------------------------------------------------------------
# Frame counts


def even_indices(total: int, count: int) -> list[int]:
    """``count`` indices spread evenly over ``range(total)``, first and last included."""
    if count <= 0 or total <= 0:
        return []
    if count >= total:
        return list(range(total))
    if count == 1:
        return [0]
    return [round(i * (total - 1) / (count - 1)) for i in range(count)]


def resampled_count(num_frames: int, src_fps: float, fps: float) -> int:
    """How many frames a clip of ``num_frames`` at ``src_fps`` yields at ``fps``.

    Target frame k sits at k/fps seconds; it exists while some source frame lies within half a
    source frame interval of it, so resampling to the same rate is the identity.
    """
    if num_frames <= 0:
        return 0
    last = (num_frames - 1) / src_fps + 0.5 / src_fps
    return math.floor(last * fps + 1e-9) + 1


# ---------------------------------------------------------------------------------------------
# Video


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    num_frames: int
    fps: float
    duration_s: float


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


def _open_container(p: Path) -> Any:
    import av

    try:
        return av.open(str(p))
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise InputRefused(f"video {p}: not a readable video ({e})", path=str(p)) from None


def _video_stream(container: Any, p: Path) -> Any:
    if not container.streams.video:
        raise InputRefused(f"video {p}: has no video stream", path=str(p))
    return container.streams.video[0]


def _stream_fps(stream: Any) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate:
            value = float(rate)
            if math.isfinite(value) and value > 0:
                return value
    return None


def probe_video(path: str | Path, *, max_pixels: int | None = None) -> VideoInfo:
    """Size, frame count, rate and duration of a video, from the container where it says them.

    Only the first frame is decoded (to prove the stream decodes); the frame count comes from the
    container, else from its duration, else from counting packets (no decoding).

    Raises:
        InputRefused: missing/corrupt file, no video stream, no frames, or frames over
            ``max_pixels`` (default :data:`DEFAULT_MAX_PIXELS`).
    """
    import av

    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    p = _regular_file(path, "video")
    container = _open_container(p)
    try:
        stream = _video_stream(container, p)
        cc = stream.codec_context
        if cc.width and cc.height:
            # The declared size, checked before the first frame is decoded.
            _check_pixels(p, "video", cc.width, cc.height, limit)
        try:
            first = next(container.decode(stream), None)
        except (av.error.FFmpegError, ValueError) as e:
            raise InputRefused(f"video {p}: corrupt video data ({e})", path=str(p)) from None
        if first is None:
            raise InputRefused(f"video {p}: has no frames", path=str(p))
        width, height = first.width, first.height
        if _quarter_turns(first) % 2:
            width, height = height, width  # shown upright, as read_video returns it
        _check_pixels(p, "video", width, height, limit)
        fps = _stream_fps(stream)
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        count = stream.frames or 0
        if count <= 0 and duration and fps:
            count = round(duration * fps)
        if count <= 0:
            count = _count_packets(p)
        if fps is None:
            fps = count / duration if duration else 0.0
        if count <= 0 or fps <= 0:
            raise InputRefused(f"video {p}: has no frames or no frame rate", path=str(p))
        if not duration:
            duration = count / fps
        return VideoInfo(width=width, height=height, num_frames=int(count), fps=fps, duration_s=duration)
    finally:
        container.close()


def _count_packets(p: Path) -> int:
    import av

    container = _open_container(p)
    try:
        stream = _video_stream(container, p)
        return sum(1 for pkt in container.demux(stream) if pkt.size)
    except av.error.FFmpegError as e:
        raise InputRefused(f"video {p}: corrupt container ({e})", path=str(p)) from None
    finally:
        container.close()


def read_video(
    path: str | Path,
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
        path: the video file.
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
        InputRefused: missing/corrupt file, no frames, frames over the pixel limit, or a clip too
            long to read whole (more than :data:`HARD_MAX_FRAMES` without ``num_frames``/``max_frames``).
        InvalidRequest: a bad argument (``fps`` ≤ 0, ``num_frames`` < 1, ...).
    """
    import av
    import numpy as np

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

    info = probe_video(path, max_pixels=max_pixels)
    p = Path(path)
    src_fps = info.fps
    rate = src_fps if fps is None else fps
    expected = resampled_count(info.num_frames, src_fps, rate)

    # The target timestamps: regular k/rate steps, or an even spread when capped by max_frames.
    times: Sequence[float] | None = None
    limit: int | None = None  # None: until the stream ends
    out_fps = rate
    if num_frames is not None:
        limit = None if from_end else num_frames
    elif max_frames is not None and expected > max_frames:
        idx = even_indices(expected, max_frames)
        times = [i / rate for i in idx]
        if len(times) > 1:
            out_fps = (len(times) - 1) / (times[-1] - times[0])
    elif max_frames is not None:
        limit = max_frames
    else:
        if expected > HARD_MAX_FRAMES:
            raise InputRefused(_too_long(p, expected, rate), path=str(p))
        # One more than allowed, to notice a container that understates its length.
        limit = HARD_MAX_FRAMES + 1

    def target(k: int) -> float | None:
        if times is not None:
            return times[k] if k < len(times) else None
        if limit is not None and k >= limit:
            return None
        return k / rate

    def convert(frame: Any) -> np.ndarray:
        img = _upright(frame.to_image(), _quarter_turns(frame))  # RGB PIL image
        if size is not None:
            img = resize_cover(img, size)
        return np.asarray(img, dtype=np.uint8)

    kept: deque[np.ndarray] | list[np.ndarray] = deque(maxlen=num_frames) if from_end else []
    stamps: deque[float] | list[float] = deque(maxlen=num_frames) if from_end else []
    tolerance = 0.5 / src_fps
    container = _open_container(p)
    try:
        stream = _video_stream(container, p)
        stream.thread_type = "AUTO"
        k = 0
        t0: float | None = None
        prev: tuple[float, Any, np.ndarray | None] | None = None  # (time, frame, converted)
        decoded = 0

        def emit(entry: tuple[float, Any, np.ndarray | None], when: float) -> tuple[float, Any, np.ndarray]:
            arr = entry[2] if entry[2] is not None else convert(entry[1])
            kept.append(arr)
            stamps.append(when)
            return entry[0], entry[1], arr

        try:
            for frame in container.decode(stream):
                if check is not None:
                    check()
                t = frame.time if frame.time is not None else decoded / src_fps
                decoded += 1
                if t0 is None:
                    t0 = t
                t -= t0
                cur: tuple[float, Any, np.ndarray | None] = (t, frame, None)
                while (tk := target(k)) is not None and tk <= t:
                    # The nearest of the previous and the current frame (ties go to the earlier).
                    if prev is not None and tk - prev[0] <= t - tk:
                        prev = emit(prev, tk)
                    else:
                        cur = emit(cur, tk)
                    k += 1
                prev = cur
                if target(k) is None:
                    break
        except (av.error.FFmpegError, ValueError) as e:
            raise InputRefused(
                f"video {p}: corrupt video data after {decoded} decoded frames ({e})", path=str(p)
            ) from None
        # Targets past the last decoded frame but within half a source interval of it.
        while prev is not None and (tk := target(k)) is not None and tk <= prev[0] + tolerance:
            prev = emit(prev, tk)
            k += 1
    finally:
        container.close()

    if not kept:
        raise InputRefused(f"video {p}: has no decodable frames", path=str(p))
    if limit == HARD_MAX_FRAMES + 1 and len(kept) > HARD_MAX_FRAMES:
        raise InputRefused(_too_long(p, len(kept), rate, more=True), path=str(p))

    frames = list(kept)
    stamps_out = list(stamps)
    got = len(frames)
    notes: list[str] = []
    padded = 0
    if num_frames is not None and got < num_frames:
        if pad:
            padded = num_frames - got
            frames.extend([frames[-1]] * padded)
            stamps_out.extend(stamps_out[-1] + (i + 1) / rate for i in range(padded))
            notes.append(
                f"{p.name}: source gave {got} frames at {rate:g} fps; padded to {num_frames} "
                "by repeating the last frame"
            )
        else:
            notes.append(f"{p.name}: source gave only {got} of {num_frames} frames at {rate:g} fps")
    if times is not None:
        notes.append(f"{p.name}: {expected} frames at {rate:g} fps spread down to {got}")
    for n in notes:
        log.info("%s", n)
    if from_end and stamps_out:
        base = stamps_out[0]
        stamps_out = [s - base for s in stamps_out]
    return VideoClip(
        frames=np.stack(frames),
        fps=out_fps,
        timestamps=stamps_out,
        source_fps=src_fps,
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


def _too_long(p: Path, count: int, rate: float, *, more: bool = False) -> str:
    return (
        f"video {p}: {'more than ' if more else ''}{count} frames at {rate:g} fps; reading more than "
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

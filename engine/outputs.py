"""Writing generated frames: one PNG or one H.264 MP4, plus a JSON sidecar, atomically.

Each file is encoded under a hidden temporary name in the output directory, flushed to disk, then
renamed into place, so a reader never sees a half-written file and a failure leaves nothing
behind. Final names are generated here (``<UTC time>-<task>-<short id>.png|mp4``), never taken
from the request. :func:`write_generation` writes what one generation made (every candidate, a
video_extend's new part, what was extracted), each file with the sidecar :func:`sidecar` says.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import uuid
from collections.abc import Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from . import media
from .config import EngineConfig
from .errors import InvalidRequest
from .media import AudioSpan
from .outdir import TEMP_PREFIX, new_output_name, output_error, ready_to_write
from .plan import CheckedPlan
from .results import OutputFile
from .sampling import ResolvedSampling
from .source import Source
from .windows import Made

log = logging.getLogger(__name__)


def _json_default(value: Any) -> Any:
    """JSON for the values metadata tends to hold (pydantic models, enums, paths, numpy scalars)."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"metadata value of type {type(value).__name__} is not JSON-serialisable")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    # Makes the renames durable; not every platform/filesystem allows opening a directory.
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temp_name(output_dir: Path, ext: str) -> Path:
    """A fresh temporary name in ``output_dir``, as :data:`engine.outdir.TEMP_NAME` matches it."""
    return output_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}.{ext}"


def _check_frames(frames: Any, fps: float | None) -> tuple[int, int, int]:
    if (
        not isinstance(frames, np.ndarray)
        or frames.dtype != np.uint8
        or frames.ndim != 4
        or frames.shape[-1] != 3
    ):
        shape = getattr(frames, "shape", None)
        raise InvalidRequest.for_field("frames", shape, "must be a uint8 array of shape (F, H, W, 3)")
    num_frames, height, width = (int(s) for s in frames.shape[:3])
    if num_frames < 1 or height < 1 or width < 1:
        raise InvalidRequest.for_field("frames", frames.shape, "must hold at least one non-empty frame")
    if num_frames > 1:
        if height % 2 or width % 2:
            raise InvalidRequest.for_field(
                "size", f"{width}x{height}", "video width and height must be even (H.264 yuv420p)"
            )
        if fps is None or not fps > 0:
            raise InvalidRequest.for_field("fps", fps, "must be greater than 0 for a video")
    return num_frames, height, width


def write_output(
    frames: Any,
    *,
    output_dir: Path,
    task: str,
    fps: float | None,
    metadata: dict,
    audio: AudioSpan | None = None,
    notes: list[str] | None = None,
) -> OutputFile:
    """Write ``frames`` ``(F, H, W, 3)`` uint8 as a PNG (one frame) or an MP4, plus ``<name>.json``.

    The sidecar holds ``metadata`` (task, prompt, plan, seed, steps, timings...) and the file's
    facts. Returns the :class:`OutputFile`; on any failure no file (temporary or final) remains.

    Args:
        fps: a video's frame rate; a picture has none (``None``, as an image plan's ``fps``).
        audio: for a video, the span of a source's audio to carry into the MP4 (copied where the
            codec fits MP4, else re-encoded as AAC; see :func:`engine.media.mux_audio`). A source
            without audio gives the video alone. Audio never fails the output: if it cannot be
            added, the video is written without sound and a note says why. Ignored for a picture.
        notes: when given, what happened to the audio is appended here (as it is to the
            sidecar's ``notes``) for the caller's result.
    """
    num_frames, height, width = _check_frames(frames, fps)
    is_video = num_frames > 1
    ext, mime = ("mp4", "video/mp4") if is_video else ("png", "image/png")

    output_dir = ready_to_write(output_dir)  # made if missing, held: another's start keeps our temporaries
    now = datetime.now(timezone.utc)
    name = new_output_name(task, ext, now)
    final = output_dir / name
    final_sidecar = output_dir / f"{name}.json"
    tmp, tmp_sidecar, tmp_audio = (_temp_name(output_dir, e) for e in (ext, "json", ext))

    placed: list[Path] = []
    try:
        sound = _encode(tmp, tmp_audio, frames, fps, audio)
        result = OutputFile(
            path=str(final),
            name=name,
            mime_type=mime,
            size_bytes=tmp.stat().st_size,
            width=width,
            height=height,
            num_frames=num_frames,
            fps=float(fps) if is_video else None,
            duration_s=num_frames / float(fps) if is_video else None,
            sidecar=str(final_sidecar),
        )
        facts = result.model_dump(mode="json", exclude={"path", "sidecar"})
        meta = {
            "task": str(task),
            **metadata,
            "file": facts,
            "created": now.isoformat().replace("+00:00", "Z"),
        }
        if sound is not None:
            meta["audio"], note = sound
            meta["notes"] = [*(meta.get("notes") or []), note]
            if notes is not None:
                notes.append(note)
        tmp_sidecar.write_text(json.dumps(meta, indent=2, default=_json_default), encoding="utf-8")
        _fsync_file(tmp_sidecar)

        os.replace(tmp, final)
        placed.append(final)
        os.replace(tmp_sidecar, final_sidecar)
        placed.append(final_sidecar)
        _fsync_dir(output_dir)
    except BaseException as exc:
        # A media file without its sidecar is a half-output too: take back whatever was placed.
        for path in (tmp, tmp_sidecar, tmp_audio, *placed):
            with contextlib.suppress(OSError):
                path.unlink()
        if (disk := output_error(exc, output_dir)) is not None:
            raise disk from exc  # disk full, read-only...: the server's own problem, named
        raise
    log.info("wrote %s (%d bytes, %d frame(s) %dx%d)", final, result.size_bytes, num_frames, width, height)
    return result


def _encode(
    tmp: Path, scratch: Path, frames: np.ndarray, fps: float | None, audio: AudioSpan | None
) -> tuple[dict[str, Any], str] | None:
    """``frames`` encoded into ``tmp`` (a video with ``audio``'s span muxed in through ``scratch``)
    and flushed to disk; returns what :func:`_add_audio` says, ``None`` without audio."""
    sound = None
    if len(frames) > 1:
        media.encode_mp4(tmp, frames, fps)
        if audio is not None:
            sound = _add_audio(tmp, scratch, audio)
    else:
        media.encode_png(tmp, frames[0])
    _fsync_file(tmp)
    return sound


def _add_audio(video: Path, scratch: Path, span: AudioSpan) -> tuple[dict[str, Any], str]:
    """Put ``span``'s audio into the encoded MP4 ``video`` (through ``scratch``, then renamed over
    it). Returns the sidecar's ``audio`` facts and a note; on any failure ``video`` stays as it
    was, silent."""
    name = span.source.path.name
    facts: dict[str, Any] = {"source": name, "start_s": span.start_s, "duration_s": span.duration_s}
    try:
        muxed = media.mux_audio(video, span, scratch)
    except Exception as e:
        # The picture is the result; sound must never cost the user a file, so any failure
        # (FFmpeg, a refused or closed source, a bad span) degrades to a silent video.
        with contextlib.suppress(FileNotFoundError):
            scratch.unlink()
        log.warning("audio of %s not added: %s", name, e)
        return {
            **facts,
            "codec": None,
            "error": str(e),
        }, f"{name}: audio not copied ({e}); the video is silent"
    if muxed is None:
        return {**facts, "codec": None}, f"{name} has no audio: the video is silent"
    os.replace(scratch, video)
    facts.update(codec=muxed.codec, copied=muxed.copied, written_s=round(muxed.duration_s, 3))
    return facts, f"{name}: {muxed.note}"


# ---------------------------------------------------------------------------------------------
# One generation's files


def write_generation(
    made: Made, plan: CheckedPlan, sampling: ResolvedSampling, **kw: Any
) -> list[OutputFile]:
    """:func:`_write_generation`, all or nothing: when a file fails (a full disk at the third
    candidate), the files written before it are removed too, so none is left that no result names."""
    written: list[OutputFile] = []
    try:
        return _write_generation(made, plan, sampling, written=written, **kw)
    except BaseException:
        for output in written:
            for path in filter(None, (output.path, output.sidecar)):
                with contextlib.suppress(OSError):
                    os.unlink(path)
        if written:
            log.warning("removed the %d file(s) this generation wrote before it failed", len(written))
        raise


def _write_generation(
    made: Made,
    plan: CheckedPlan,
    sampling: ResolvedSampling,
    *,
    config: EngineConfig,
    sources: Mapping[str, Source],
    projected: bool,
    notes: list[str],
    timings: dict[str, float],
    written: list[OutputFile],
) -> list[OutputFile]:
    """Each candidate's file (and, for video_extend, its new part alone), with its sidecar; then
    what was extracted to make the inputs (a mask found from words, a control signal), once for all
    candidates, so a user can check it and give it to a later call.

    Every file of the generation shares one ``run`` id in its sidecar, so a viewer can group them.
    What happened to the source's audio is added to ``notes`` (the job's), and so to the sidecars
    written after it.
    """
    audio = audio_span(plan, sources) if config.results.audio else None
    run = uuid.uuid4().hex

    def meta(**fields: Any) -> dict[str, Any]:
        return {**sidecar(plan, sampling, config, projected, notes, timings), "run": run, **fields}

    outputs = written  # what the caller takes back on a failure
    for k, (seed, frames) in enumerate(zip(sampling.seeds, made.frames, strict=True)):
        parts = [("result", frames, audio)]
        if made.new_from is not None:
            parts.append(("new_part", frames[made.new_from :], None))
        for role, part, sound in parts:
            data = meta(seed=seed, candidate=k, output=role, preserved=made.preserved[k])
            if role == "new_part":
                data["notes"] = [*notes, "the new frames only, without the source clip"]
            out_notes: list[str] = []
            output = write_output(
                part,
                output_dir=config.output_dir,
                task=plan.task.value,
                fps=plan.fps,
                metadata=data,
                audio=sound,
                notes=out_notes,
            )
            outputs.append(output.model_copy(update={"seed": seed, "role": role}))
            notes.extend(n for n in out_notes if n not in notes)
    results = [o.name for o in outputs if o.role == "result"]
    for role, frames in made.extras:
        output = write_output(
            frames,
            output_dir=config.output_dir,
            task=f"{plan.task.value}-{role}",
            fps=plan.fps,
            metadata=meta(output=role, of=results),
        )
        outputs.append(output.model_copy(update={"role": role}))
    return outputs


def audio_span(plan: CheckedPlan, sources: Mapping[str, Source]) -> AudioSpan | None:
    """The source audio an output spans (edit, outpaint, control of a video with sound)."""
    role = plan.spec.length_from
    if role is None:
        return None
    source = sources.get(plan.one(role).path)
    header = getattr(source, "header", None)
    if source is None or not getattr(header, "audio", None):
        return None
    # A source video's span: the plan is a video, with a rate.
    return AudioSpan(source=source, start_s=0.0, duration_s=plan.num_frames / plan.fps)


def sidecar(
    plan: CheckedPlan,
    sampling: ResolvedSampling,
    config: EngineConfig,
    projected: bool,
    notes: list[str],
    timings: dict[str, float],
) -> dict[str, Any]:
    """The JSON written beside a generated file: the plan, the settings used, the models, the notes
    and timings so far."""
    return {
        "task": plan.task.value,
        "prompt": plan.prompt,
        "negative_prompt": sampling.negative_prompt,
        "plan": plan.model_dump(mode="json"),
        "seed": sampling.seed,
        "steps": sampling.steps,
        "guidance": sampling.guidance,
        "flow_shift": sampling.flow_shift,
        "conditioning_scale": sampling.conditioning_scale,
        "turbo": sampling.turbo,
        "loras": [list(x) for x in sampling.loras] if sampling.loras else [],
        "width": plan.width,
        "height": plan.height,
        "num_frames": plan.num_frames,
        "fps": plan.fps,
        "projector": projected,
        "umt5_prompt": {
            "mode": config.sampling.umt5_prompt if projected else "plain",
            "text": sampling.umt5_prompt,
        },
        "text_context": sampling.text_len if projected else sampling.max_sequence_length,
        "models": {
            "planner": config.planner_model,
            "adapter": config.adapter,
            "projector": config.projector if projected else None,
            "generator": config.generator_model,
        },
        "notes": list(notes),
        "timings": timings,
    }

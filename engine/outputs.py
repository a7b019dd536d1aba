"""Writing generated frames: one PNG or one H.264 MP4, plus a JSON sidecar, atomically.

Each file is encoded in memory (:mod:`engine.media`), its preview made from the frames
(:mod:`engine.preview`), then written under a hidden temporary name in the output directory and
flushed to disk (:mod:`engine.writes`: off the interpreter lock, with a time limit), and only
then renamed into place, so a reader never sees a half-written file and a failure leaves nothing
behind. Final names come from :func:`engine.outdir.new_output_name` (``<UTC time>-<task>-<short
id>.png|mp4``), never from the request; a disk error is the server's own, named
(:func:`engine.outdir.output_error`). :func:`write_generation` writes what one generation made (every candidate, a
video_extend's new part, what was extracted): every media file first, then the sidecars
(:func:`sidecar`) with the job's final timings, the write and the total included, then all are
placed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from . import media, writes
from .config import EngineConfig, ResultDefaults
from .errors import InvalidRequest
from .media import AudioSpan
from .outdir import TEMP_PREFIX, hold_writer_lease, new_output_name, output_error
from .plan import CheckedPlan
from .preview import make_preview
from .results import OutputFile
from .sampling import ResolvedSampling
from .source import Source
from .timings import GENERATION, Timings
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


def _temp_name(output_dir: Path, ext: str) -> Path:
    """A fresh temporary name in ``output_dir``, as :data:`engine.outdir.TEMP_NAME` matches it
    (what :func:`engine.outdir.remove_stale_temps` removes after a killed write)."""
    return output_dir / f"{TEMP_PREFIX}{uuid.uuid4().hex}.{ext}"


@contextlib.contextmanager
def _disk_errors(output_dir: Path | str) -> Iterator[None]:
    """A disk error while writing (full, read-only, gone) as the server's own named error
    (``out_of_space`` / ``output_unavailable``, naming the cause and the directory)."""
    try:
        yield
    except OSError as exc:
        if (disk := output_error(exc, output_dir)) is not None:
            raise disk from exc
        raise


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


#: How long one write may take unless the configuration says (``results.write_timeout_s``).
DEFAULT_WRITE_TIMEOUT_S: float = ResultDefaults.model_fields["write_timeout_s"].default


@dataclass
class Staged:
    """One output encoded and written under a temporary name; its sidecar not written yet.

    :func:`stage_output` makes it; :func:`place_outputs` writes the sidecars (with the final
    timings) and renames everything into place; :func:`discard` takes it all back.
    """

    output: OutputFile
    meta: dict[str, Any]
    temp: Path
    temp_sidecar: Path

    @property
    def final(self) -> Path:
        return Path(self.output.path)

    @property
    def final_sidecar(self) -> Path:
        return Path(str(self.output.sidecar))


def stage_output(
    frames: Any,
    *,
    output_dir: Path,
    task: str,
    fps: float | None,
    metadata: dict,
    audio: AudioSpan | None = None,
    notes: list[str] | None = None,
    timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
) -> Staged:
    """Encode ``frames`` in memory (PNG for one frame, else MP4 with ``audio``'s span), make its
    preview from the frames, and write the file under a temporary name, flushed to disk within
    ``timeout_s`` (:mod:`engine.writes`). Arguments as :func:`write_output`'s."""
    num_frames, height, width = _check_frames(frames, fps)
    is_video = num_frames > 1
    ext, mime = ("mp4", "video/mp4") if is_video else ("png", "image/png")
    with _disk_errors(output_dir):
        output_dir = writes.make_dir(Path(output_dir), timeout_s=timeout_s)
        hold_writer_lease(output_dir)  # another server's start now leaves our temporaries alone
        now = datetime.now(timezone.utc)
        name = new_output_name(task, ext, now)
        data, sound = _encoded(frames, fps, audio)
        temp = _temp_name(output_dir, ext)
        writes.write_new(temp, data, timeout_s=timeout_s)
    output = OutputFile(
        path=str(output_dir / name),
        name=name,
        mime_type=mime,
        size_bytes=len(data),
        width=width,
        height=height,
        num_frames=num_frames,
        fps=float(fps) if is_video and fps is not None else None,
        duration_s=num_frames / float(fps) if is_video and fps is not None else None,
        sidecar=str(output_dir / f"{name}.json"),
        preview=make_preview(frames, fps if is_video else None),
    )
    facts = output.model_dump(mode="json", exclude={"path", "sidecar"})
    meta = {"task": str(task), **metadata, "file": facts, "created": now.isoformat().replace("+00:00", "Z")}
    if sound is not None:
        meta["audio"], note = sound
        meta["notes"] = [*(meta.get("notes") or []), note]
        if notes is not None:
            notes.append(note)
    return Staged(output=output, meta=meta, temp=temp, temp_sidecar=_temp_name(output_dir, "json"))


def place_outputs(
    staged: list[Staged],
    *,
    timings: dict[str, float] | None = None,
    timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
) -> list[OutputFile]:
    """Write each staged output's sidecar (with ``timings`` when given), then rename every file
    into place, each media file before its sidecar, and flush the directory. On failure nothing
    of ``staged`` remains, temporary or placed."""
    try:
        for item in staged:
            if timings is not None:
                item.meta["timings"] = timings
            text = json.dumps(item.meta, indent=2, default=_json_default).encode("utf-8")
            writes.write_new(item.temp_sidecar, text, timeout_s=timeout_s)
        moves = [(i.temp, i.final) for i in staged] + [(i.temp_sidecar, i.final_sidecar) for i in staged]
        if staged:
            writes.place(moves, staged[0].final.parent, timeout_s=timeout_s)
    except BaseException as exc:
        discard(staged, timeout_s=timeout_s)
        if staged and isinstance(exc, OSError) and (disk := output_error(exc, staged[0].final.parent)):
            raise disk from exc
        raise
    for item in staged:
        log.info("wrote %s (%d bytes)", item.final, item.output.size_bytes)
    return [item.output for item in staged]


def discard(staged: list[Staged], *, timeout_s: float = DEFAULT_WRITE_TIMEOUT_S) -> None:
    """Remove whatever of ``staged`` exists: temporary files and files already placed."""
    paths = [p for i in staged for p in (i.temp, i.temp_sidecar, i.final, i.final_sidecar)]
    writes.remove(paths, timeout_s=timeout_s)


def write_output(
    frames: Any,
    *,
    output_dir: Path,
    task: str,
    fps: float | None,
    metadata: dict,
    audio: AudioSpan | None = None,
    notes: list[str] | None = None,
    timeout_s: float = DEFAULT_WRITE_TIMEOUT_S,
) -> OutputFile:
    """Write ``frames`` ``(F, H, W, 3)`` uint8 as a PNG (one frame) or an MP4, plus ``<name>.json``.

    The sidecar holds ``metadata`` (task, prompt, plan, seed, steps, timings...) and the file's
    facts. Returns the :class:`OutputFile` (with its :attr:`~OutputFile.preview`, made from the
    frames); on any failure no file (temporary or final) remains.

    Args:
        fps: a video's frame rate; a picture has none (``None``, as an image plan's ``fps``).
        audio: for a video, the span of a source's audio to carry into the MP4 (copied where the
            codec fits MP4, else re-encoded as AAC; see :func:`engine.media.muxed_audio`). A
            source without audio gives the video alone. Audio never fails the output: if it
            cannot be added, the video is written without sound and a note says why. Ignored for
            a picture.
        notes: when given, what happened to the audio is appended here (as it is to the
            sidecar's ``notes``) for the caller's result.
        timeout_s: the longest one write may take (:class:`~engine.errors.OutputStalled` after).
    """
    staged = stage_output(
        frames,
        output_dir=output_dir,
        task=task,
        fps=fps,
        metadata=metadata,
        audio=audio,
        notes=notes,
        timeout_s=timeout_s,
    )
    return place_outputs([staged], timeout_s=timeout_s)[0]


def _encoded(
    frames: np.ndarray, fps: float | None, audio: AudioSpan | None
) -> tuple[bytes, tuple[dict[str, Any], str] | None]:
    """``frames`` encoded in memory (a video with ``audio``'s span muxed in), and what
    :func:`_add_audio` says (``None`` without audio). Nothing here touches the output disk."""
    if len(frames) == 1 or fps is None:
        return media.png_bytes(frames[0]), None
    data = media.mp4_bytes(frames, fps)
    if audio is None:
        return data, None
    return _add_audio(data, audio)


def _add_audio(video: bytes, span: AudioSpan) -> tuple[bytes, tuple[dict[str, Any], str]]:
    """``video`` (an MP4's bytes) with ``span``'s audio, the sidecar's ``audio`` facts and a note;
    on any failure ``video`` as it was, silent."""
    name = span.source.path.name
    facts: dict[str, Any] = {"source": name, "start_s": span.start_s, "duration_s": span.duration_s}
    try:
        done = media.muxed_audio(video, span)
    except Exception as e:
        # The picture is the result; sound must never cost the user a file, so any failure
        # (FFmpeg, a refused or closed source, a bad span) degrades to a silent video.
        log.warning("audio of %s not added: %s", name, e)
        note = f"{name}: audio not copied ({e}); the video is silent"
        return video, ({**facts, "codec": None, "error": str(e)}, note)
    if done is None:
        return video, ({**facts, "codec": None}, f"{name} has no audio: the video is silent")
    data, muxed = done
    facts.update(codec=muxed.codec, copied=muxed.copied, written_s=round(muxed.duration_s, 3))
    return data, (facts, f"{name}: {muxed.note}")


# ---------------------------------------------------------------------------------------------
# One generation's files


def write_generation(
    made: Made,
    plan: CheckedPlan,
    sampling: ResolvedSampling,
    *,
    config: EngineConfig,
    sources: Mapping[str, Source],
    projected: bool,
    notes: list[str],
    timings: Timings,
) -> list[OutputFile]:
    """Each candidate's file (and, for video_extend, its new part alone), then what was extracted
    to make the inputs (a mask found from words, a control signal), once for all candidates, so a
    user can check it and give it to a later call; then every sidecar, with the job's timings
    finished (``write``: the media files encoded and written; ``total``: up to the sidecars).

    Every file of the generation shares one ``run`` id in its sidecar, so a viewer can group them.
    What happened to the source's audio is added to ``notes`` (the job's), and so to the sidecars
    of the files staged after it. On any failure nothing of the generation remains.
    """
    audio = audio_span(plan, sources) if config.results.audio else None
    run = uuid.uuid4().hex
    timeout_s = config.results.write_timeout_s
    common = sidecar(plan, sampling, config, projected, notes)
    staged: list[Staged] = []

    def stage(frames: np.ndarray, task: str, sound: AudioSpan | None, **fields: Any) -> Staged:
        data = {**common, "notes": list(notes), "run": run, **fields}
        out_notes: list[str] = []
        item = stage_output(
            frames,
            output_dir=config.output_dir,
            task=task,
            fps=plan.fps,
            metadata=data,
            audio=sound,
            notes=out_notes,
            timeout_s=timeout_s,
        )
        notes.extend(n for n in out_notes if n not in notes)
        staged.append(item)
        return item

    try:
        with timings.measure("write"):
            for k, (seed, frames) in enumerate(zip(sampling.seeds, made.frames, strict=True)):
                kept = made.preserved[k]
                item = stage(
                    frames, plan.task.value, audio, seed=seed, candidate=k, output="result", preserved=kept
                )
                item.output = item.output.model_copy(update={"seed": seed, "role": "result"})
                if made.new_from is not None:
                    item = stage(
                        frames[made.new_from :],
                        plan.task.value,
                        None,
                        seed=seed,
                        candidate=k,
                        output="new_part",
                        preserved=kept,
                    )
                    item.meta["notes"] = [*item.meta["notes"], "the new frames only, without the source clip"]
                    item.output = item.output.model_copy(update={"seed": seed, "role": "new_part"})
            results = [i.output.name for i in staged if i.output.role == "result"]
            for role, frames in made.extras:
                item = stage(frames, f"{plan.task.value}-{role}", None, output=role, of=results)
                item.output = item.output.model_copy(update={"role": role})
        timings.finish()
    except BaseException:
        discard(staged, timeout_s=timeout_s)
        raise
    return place_outputs(staged, timings=timings.as_dict(GENERATION), timeout_s=timeout_s)


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
) -> dict[str, Any]:
    """The JSON written beside a generated file: the plan, the settings used, the models, the notes
    and (put in by :func:`place_outputs`) the job's final timings."""
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
    }

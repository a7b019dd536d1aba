#!/usr/bin/env python
"""A whole job at full size, everything but the model: this project's path against the stock way.

Each row is one task's real code path - ``Engine.generate`` (admission, the queue's job, the
sources decoded, the generator's text context, VACE's inputs, the pipeline, the frames back, the
source pasted back, the files encoded and written with their previews and sidecars) - and the
same through the MCP ``generate`` tool (in-memory ``Client``). The model is a **stand-in whose
forward costs nothing** (``benchmarks/standin.py``: a real ``WanVACEPipeline`` whose DiT answers
zeros and whose VAE decodes to frames made before the run): it measures everything but the DiT's
and the VAE's own compute, which is excluded.

Beside it, in the same run and interleaved, **the stock way**: the same job with diffusers' own
conversions (PIL lists in through ``VideoProcessor.preprocess_video``, float frames out through
``postprocess_video(output_type="np")`` and made uint8 on the host, as this project did before),
the previous composite (into a copy), ``diffusers.utils.export_to_video`` for the file (imageio's
ffmpeg; without imageio, the previous PyAV encoder at preset medium, CRF 18) and the preview read
back from the written file. Per stage: the median time of the interleaved runs and the peak
resident memory above the job's start (Linux ``VmHWM``, reset at each stage's end).

    python benchmarks/bench_job.py [--runs 5] [--threads 1] [--cases t2v81,edit81,...] [--out FILE]
                                   [--device cuda] [--no-mcp]

``--device cuda`` runs the same on a GPU (the stand-in's frames and latents on it, float32): what
a video job costs around the model there (the goal: ≤ 0.5 s). ``--no-mcp`` leaves out the MCP
column (and the MCP SDK, which the lent GPU machine lacks).

Cases (``--cases``): t2v81, t2v161 (text_to_video), i2v81 (image_to_video from an 832×480
picture), edit81 and edit161 (video_edit of a 5 s / 10 s 832×480 source with an AAC track and a
moving mask video), image_edit (an 832×480 output from a 1920×1080 photo and mask). 8 steps,
guidance 1 (turbo's shape), one candidate.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, describe_machine, fmt, write_report  # noqa: E402

from engine.timings import GENERATION  # noqa: E402

log = logging.getLogger("bench_job")

W, H, FPS = 832, 480, 16.0
STEPS = 8
#: The job's own stages, as every result carries them (no queue here; the total has its own row).
STAGES_SHOWN = tuple(stage for stage in GENERATION if stage not in ("queue", "total"))


@dataclass(frozen=True)
class Case:
    name: str
    task: str
    frames: int
    roles: tuple[tuple[str, str], ...] = ()  # (input file key, role)
    label: str = ""


CASES = {
    c.name: c
    for c in (
        Case("t2v81", "text_to_video", 81, label="text_to_video, 81 frames"),
        Case("t2v161", "text_to_video", 161, label="text_to_video, 161 frames"),
        Case("i2v81", "image_to_video", 81, (("first", "first_frame"),), "image_to_video, 81 frames"),
        Case(
            "edit81",
            "video_edit",
            81,
            (("clip5", "source"), ("mask5", "mask")),
            "video_edit, 81 frames (5 s source, AAC)",
        ),
        Case(
            "edit161",
            "video_edit",
            161,
            (("clip10", "source"), ("mask10", "mask")),
            "video_edit, 161 frames (10 s source, AAC)",
        ),
        Case(
            "image_edit",
            "image_edit",
            1,
            (("photo", "source"), ("photo_mask", "mask")),
            "image_edit, 832×480 from a 1080p photo",
        ),
    )
}


# ---------------------------------------------------------------------------------------------
# Inputs: a synthetic scene (a panned multi-scale texture, a moving disc), sources with sound


def scene(frames: int, height: int = H, width: int = W, *, seed: int = 0, tint: int = 0) -> Any:
    """``(F, H, W, 3)`` uint8 frames of a scene with texture at several scales, panned, and a red
    disc moving across: content an encoder has to work for, unlike noise or a flat grey."""
    import numpy as np

    rng = np.random.default_rng(seed)
    big_h, big_w = height + frames + 64, width + 2 * frames + 64
    texture = np.zeros((big_h, big_w), np.float32)
    for cell, weight in ((64, 0.5), (16, 0.25), (4, 0.15), (1, 0.1)):
        small = rng.random((big_h // cell + 2, big_w // cell + 2), dtype=np.float32)
        texture += weight * np.kron(small, np.ones((cell, cell), np.float32))[:big_h, :big_w]
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    colour = np.stack([texture, texture**1.3, 0.6 * texture + 0.2], -1)
    yy, xx = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), np.uint8)
    for f in range(frames):
        img = colour[f : f + height, 2 * f : 2 * f + width].copy()
        cx, cy = width * (0.2 + 0.6 * f / max(1, frames - 1)), height * (0.5 + 0.1 * np.sin(f / 10))
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < (height / 7) ** 2
        img[disc] = img[disc] * 0.3 + np.array([0.9, 0.2, 0.1], np.float32) * 0.7
        out[f] = np.clip(img * 255 + tint, 0, 255).astype(np.uint8)
    return out


def disc_masks(frames: int, height: int = H, width: int = W) -> Any:
    """The moving disc of :func:`scene`, grown a little: white = regenerate."""
    import numpy as np

    yy, xx = np.mgrid[0:height, 0:width]
    out = np.zeros((frames, height, width, 3), np.uint8)
    for f in range(frames):
        cx, cy = width * (0.2 + 0.6 * f / max(1, frames - 1)), height * (0.5 + 0.1 * np.sin(f / 10))
        out[f][(xx - cx) ** 2 + (yy - cy) ** 2 < (height / 6) ** 2] = 255
    return out


def write_with_audio(path: Path, frames: Any, fps: float) -> Path:
    """An MP4 of ``frames`` with a stereo AAC tone as long as the picture."""
    from fractions import Fraction

    import av
    import numpy as np

    rate = 48000
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        video.options = {"crf": "18", "preset": "veryfast"}
        audio = container.add_stream("aac", rate=rate)
        audio.layout = "stereo"
        for arr in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
        total = round(len(frames) / fps * rate)
        for start in range(0, total, 1024):
            t = np.arange(start, min(start + 1024, total)) / rate
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
            frame = av.AudioFrame.from_ndarray(np.stack([tone, tone]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = rate, start
            for packet in audio.encode(frame):
                container.mux(packet)
        for packet in [*video.encode(), *audio.encode()]:
            container.mux(packet)
    return path


def make_inputs(root: Path) -> dict[str, str]:
    from engine.media import encode_mp4, encode_png

    files = {}
    for seconds, frames in ((5, 81), (10, 161)):
        files[f"clip{seconds}"] = write_with_audio(root / f"clip{seconds}.mp4", scene(frames, seed=1), FPS)
        files[f"mask{seconds}"] = root / f"mask{seconds}.mp4"
        encode_mp4(files[f"mask{seconds}"], disc_masks(frames), FPS)
    encode_png(root / "first.png", scene(1, seed=2)[0])
    files["first"] = root / "first.png"
    photo = scene(1, 1080, 1920, seed=3)[0]
    from PIL import Image

    Image.fromarray(photo).save(root / "photo.jpg", quality=92)
    files["photo"] = root / "photo.jpg"
    encode_png(root / "photo_mask.png", disc_masks(1, 1080, 1920)[0])
    files["photo_mask"] = root / "photo_mask.png"
    return {k: str(v) for k, v in files.items()}


# ---------------------------------------------------------------------------------------------
# Memory: the peak resident set, per stage


def _rss_kb(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: VmHWM back to the current RSS


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (x264's threads, imageio's ffmpeg)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


class StageMemory:
    """Per stage, the peak RSS above the job's start and the CPU seconds: ``Timings.add`` reads
    ``VmHWM`` (then resets it) and the CPU clock at each stage's end. CPU time is less disturbed
    than wall time by other processes on a loaded machine."""

    def __init__(self) -> None:
        self.base = 0
        self.peaks: dict[str, float] = {}
        self.cpu: dict[str, float] = {}
        self.last_cpu = 0.0

    def start(self) -> None:
        self.base, self.peaks, self.cpu = _rss_kb("VmRSS"), {}, {}
        self.last_cpu = cpu_seconds()
        _reset_peak()

    def end(self, stage: str) -> None:
        mb = max(0, _rss_kb("VmHWM") - self.base) / 1024
        self.peaks[stage] = max(self.peaks.get(stage, 0.0), mb)
        now = cpu_seconds()
        self.cpu[stage] = self.cpu.get(stage, 0.0) + now - self.last_cpu
        self.last_cpu = now
        _reset_peak()


@contextmanager
def watched(memory: StageMemory):
    """``Timings.add`` also records each stage's peak memory (the bench's hook, not the engine's)."""
    from engine.timings import Timings

    add = Timings.add

    def add_and_watch(self: Timings, stage: str, seconds: float) -> None:
        add(self, stage, seconds)
        memory.end(stage)

    Timings.add = add_and_watch  # type: ignore[method-assign]
    try:
        yield
    finally:
        Timings.add = add  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# The stock way


def stock_run(generator: Any) -> Callable[..., Any]:
    """The generator's run as it was: PIL lists into the pipeline (diffusers' ``VideoProcessor``
    converts them), float frames out (``output_type="np"``), made uint8 on the host."""
    import numpy as np

    from engine.generator import _StepReport, flow_scheduler
    from engine.timings import Laps, Timings

    def run(prepared: Any, prompt: str, *, extra_tokens: Any, sampling: Any, control: Any, **kw: Any) -> Any:
        pipe = generator._ready(sampling)
        laps = Laps(kw.get("timings") or Timings())
        generators, latents = generator._noise(pipe, prepared, [sampling.seed])
        positive, negative = generator._text_context(pipe, prompt, extra_tokens, sampling)
        laps.lap("encode_prompt")
        pipe.scheduler = flow_scheduler(pipe.scheduler, sampling.flow_shift)
        steps = _StepReport(control, "generating", sampling.steps, kw.get("progress"), laps)
        pipe.video_processor.laps = laps  # times the end of VACE's encode (prepare_masks)
        # The stock pipeline takes PIL lists: a preparer that kept its frames as one array
        # (engine.geometry.ArrayFrames) has them made here, in the stock way's vace_encode.
        video = None if prepared.video is None else list(prepared.video)
        mask = None if prepared.mask is None else list(prepared.mask)
        try:
            out = pipe(
                prompt_embeds=positive,
                negative_prompt_embeds=negative,
                video=video,
                mask=mask,
                reference_images=prepared.reference_images,
                conditioning_scale=sampling.conditioning_scale,
                height=prepared.height,
                width=prepared.width,
                num_frames=prepared.num_frames,
                num_inference_steps=sampling.steps,
                guidance_scale=sampling.guidance,
                generator=generators[0],
                output_type="np",
                callback_on_step_end=steps.on_step_end,
            )
        finally:
            pipe.video_processor.laps = None
        laps.lap("vae_decode")  # the decode and diffusers' float postprocessing
        frames = (np.clip(np.asarray(out.frames), 0.0, 1.0) * 255.0).round().astype(np.uint8)
        laps.lap("postprocess")
        return frames  # (1, F, H, W, 3)

    return run


def stock_write(made: Any, plan: Any, sampling: Any, *, config: Any, timings: Any, **_: Any) -> list[Any]:
    """Each result written the stock way: ``export_to_video`` (or the old PyAV medium/CRF 18), a
    sidecar, then the preview read back from the file as the MCP layer did."""
    import json

    from PIL import Image

    from engine.results import OutputFile

    outputs = []
    with timings.measure("write"):
        for frames in made.frames:
            path = (
                Path(config.output_dir) / f"stock-{time.monotonic_ns()}.{'mp4' if len(frames) > 1 else 'png'}"
            )
            if len(frames) > 1:
                _stock_video(frames, path)
            else:
                Image.fromarray(frames[0]).save(path)
            Path(f"{path}.json").write_text(json.dumps({"task": plan.task.value, "seed": sampling.seed}))
            written = OutputFile(
                path=str(path),
                name=path.name,
                mime_type="video/mp4" if len(frames) > 1 else "image/png",
                size_bytes=path.stat().st_size,
                width=int(frames.shape[2]),
                height=int(frames.shape[1]),
                num_frames=len(frames),
                fps=FPS if len(frames) > 1 else None,
            )
            _read_back_preview(written, 384)  # the old preview: no frames kept, the file opened again
            outputs.append(written)
    timings.finish()
    return outputs


def _read_back_preview(out: Any, side: int) -> bytes:
    """The preview as the MCP layer made it before frames were kept (engine.preview's pieces,
    without the MCP SDK): the written file decoded again, a contact sheet of a video's frames at
    the sheet's indices, or the image reopened."""
    from PIL import Image

    from engine.preview import SHEET_WIDTH, file_sheet, image_preview

    if out.num_frames == 1:
        with Image.open(out.path) as img:
            img.load()
            return image_preview(img, side)
    return file_sheet(out.path, out.num_frames, out.fps, width=min(SHEET_WIDTH, 3 * side))


def _stock_video(frames: Any, path: Path) -> None:
    try:
        from diffusers.utils import export_to_video
        from diffusers.utils.import_utils import is_imageio_available

        if not is_imageio_available():
            raise ImportError("imageio")
    except ImportError:
        from engine.media import VideoEncoder, encode_mp4

        old = VideoEncoder("libx264", {"preset": "medium", "crf": "18"}, "the old encoder")
        encode_mp4(path, frames, FPS, encoder=old)
        return
    export_to_video(list(frames), str(path), fps=int(FPS))


def stock_encoder_name() -> str:
    try:
        from diffusers.utils.import_utils import is_imageio_available

        if is_imageio_available():
            return "diffusers export_to_video (imageio-ffmpeg, libx264, quality 5)"
    except ImportError:
        pass
    return "PyAV libx264 preset medium, CRF 18 (the previous encoder; imageio not installed)"


#: engine.frames' wrappers on the pipeline instance that the stock way goes without.
CONDITIONING = ("preprocess_conditions", "prepare_video_latents")


@contextmanager
def the_stock_way(engine: Any):
    """Run ``engine``'s jobs the stock way (see :func:`stock_run`, :func:`stock_write`)."""
    import engine.job as job_module
    from engine.composite import composite

    generator = engine.models.generator
    saved = (generator.run, job_module.write_generation, job_module.composite)
    generator.run = stock_run(generator)
    # diffusers' own conditioning: without engine.frames' (uint8 inputs, blank clips encoded once).
    pipe = generator.pipeline
    ours = {name: pipe.__dict__.pop(name) for name in CONDITIONING if name in pipe.__dict__}

    def copying(*args: Any, in_place: bool = False, **kwargs: Any) -> Any:
        return composite(*args, in_place=False, **kwargs)

    job_module.write_generation = stock_write
    job_module.composite = copying
    try:
        yield
    finally:
        generator.run, job_module.write_generation, job_module.composite = saved
        pipe.__dict__.update(ours)


# ---------------------------------------------------------------------------------------------
# Running


@dataclass
class Measured:
    timings: list[dict[str, float]] = field(default_factory=list)
    peaks: list[dict[str, float]] = field(default_factory=list)
    cpu: list[dict[str, float]] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def cpu_s(self, stage: str) -> float:
        return statistics.median([c.get(stage, 0.0) for c in self.cpu]) if self.cpu else float("nan")

    def stage(self, stage: str) -> float:
        return (
            statistics.median([t.get(f"{stage}_s", 0.0) for t in self.timings])
            if self.timings
            else float("nan")
        )

    def peak(self, stage: str) -> float:
        return max((p.get(stage, 0.0) for p in self.peaks), default=float("nan"))

    def total(self) -> float:
        return statistics.median(self.wall) if self.wall else float("nan")


def build_engine(tiny_wan: Path, output_dir: Path, inputs_root: Path, device: str = "cpu") -> Any:
    from standin import as_decoded, standin_pipeline

    from engine.config import EngineConfig
    from engine.engine import Engine
    from engine.generator import Generator

    config = EngineConfig(
        planner_model=None,
        adapter=None,
        projector=None,
        generator_model=str(tiny_wan),
        device=device,
        dtype="float32",
        local_files_only=True,
        output_dir=output_dir,
        allowed_roots=[inputs_root],
    )
    generator = Generator(config)
    pipe = standin_pipeline(tiny_wan).to(device)
    generator._install(pipe)
    for frames, seed in ((1, 4), (81, 5), (161, 6)):
        pipe.vae.outputs[frames] = as_decoded(scene(frames, seed=seed, tint=3)).to(device)
    return Engine(config, generator=generator)


def _plan(engine: Any, case: Case, files: dict[str, str]) -> Any:
    from engine.plan import build_plan

    extra: dict[str, Any] = {"width": W, "height": H}
    if case.frames > 1:
        extra.update(num_frames=case.frames, fps=FPS)
    return build_plan(
        case.task,
        "a red ball rolls over a mossy stone",
        [(files[k], r) for k, r in case.roles],
        limits=engine.config.limits,
        **extra,
    )


def run_direct(
    engine: Any, case: Case, files: dict[str, str], memory: StageMemory
) -> tuple[dict, dict, float]:
    from engine.results import Sampling

    plan = _plan(engine, case, files)
    memory.start()
    t0 = time.perf_counter()
    with watched(memory):
        result = engine.generate(plan, Sampling(steps=STEPS, guidance=1.0, seed=0))
    wall = time.perf_counter() - t0
    for out in result.outputs:
        for p in (out.path, out.sidecar or f"{out.path}.json"):
            Path(p).unlink(missing_ok=True)
    memory.cpu["total"] = sum(memory.cpu.values())
    return dict(result.timings), dict(memory.peaks), dict(memory.cpu), wall


async def run_mcp(client: Any, case: Case, files: dict[str, str]) -> tuple[dict, float]:
    args: dict[str, Any] = {
        "task": case.task,
        "prompt": "a red ball rolls over a mossy stone",
        "width": W,
        "height": H,
        "steps": STEPS,
        "guidance": 1.0,
        "seed": 0,
    }
    if case.frames > 1:
        args.update(num_frames=case.frames, fps=FPS)
    for key, role in case.roles:
        args[role] = files[key]
    t0 = time.perf_counter()
    result = await client.call_tool("generate", args)
    wall = time.perf_counter() - t0
    if result.is_error:
        raise RuntimeError(f"generate {case.name} failed: {result.content}")
    data = result.structured_content or {}
    for out in data.get("outputs", []):
        Path(out["path"]).unlink(missing_ok=True)
        Path(out["path"] + ".json").unlink(missing_ok=True)
    return data.get("timings", {}), wall


async def measure(args: argparse.Namespace, tmp: Path) -> dict[str, dict[str, Measured]]:
    from engine.tiny import ensure_tiny

    inputs = tmp / "inputs"
    inputs.mkdir()
    files = make_inputs(inputs)
    engine = build_engine(ensure_tiny().wan, tmp / "out", inputs, args.device)
    cases = [CASES[name] for name in args.cases.split(",")]
    results = {c.name: {"ours": Measured(), "stock": Measured(), "mcp": Measured()} for c in cases}
    memory = StageMemory()
    async with _mcp_client(engine, inputs, enabled=not args.no_mcp) as client:
        for run in range(args.runs + 1):  # run 0 warms every path
            for case in cases:
                log.info("run %d: %s", run, case.name)
                ours = run_direct(engine, case, files, memory)
                with the_stock_way(engine):
                    stock = run_direct(engine, case, files, memory)
                mcp = None if client is None else await run_mcp(client, case, files)
                if run == 0:
                    continue
                for key, (t, p, c, w) in (("ours", ours), ("stock", stock)):
                    results[case.name][key].timings.append(t)
                    results[case.name][key].peaks.append(p)
                    results[case.name][key].cpu.append(c)
                    results[case.name][key].wall.append(w)
                if mcp is not None:
                    results[case.name]["mcp"].timings.append(mcp[0])
                    results[case.name]["mcp"].wall.append(mcp[1])
    return results


@asynccontextmanager
async def _mcp_client(engine: Any, inputs: Path, *, enabled: bool) -> AsyncIterator[Any]:
    """An in-memory MCP client of a server on ``engine`` (``None`` with ``--no-mcp``: the SDK is
    not imported)."""
    if not enabled:
        yield None
        return
    from mcp import Client

    from unison_mcp.config import ServerConfig
    from unison_mcp.server import build_server

    server = build_server(ServerConfig(engine=engine.config, allowed_roots=[inputs], wait_s=600), engine)
    async with Client(server) as client:
        yield client


# ---------------------------------------------------------------------------------------------
# The report


def report(args: argparse.Namespace, results: dict[str, dict[str, Measured]], started: float) -> str:
    summary = Table(
        "job (everything but the model)",
        "this project",
        "via MCP",
        "stock way",
        "stock ÷ ours",
        "CPU s, ours / stock",
        "target",
    )
    targets = {
        "t2v81": "≤ 2.0 s, ≥ 3×",
        "i2v81": "≤ 2.0 s, ≥ 3×",
        "edit81": "≤ 3.0 s, ≥ 3×",
        "image_edit": "≤ 0.2 s",
    }
    sections = []
    for name, got in results.items():
        case = CASES[name]
        ours, stock, mcp = got["ours"], got["stock"], got["mcp"]
        summary.add(
            case.label,
            f"{fmt(ours.total())} s",
            f"{fmt(mcp.total())} s" if mcp.wall else "–",
            f"{fmt(stock.total())} s",
            f"{stock.total() / ours.total():.2f}×",
            f"{fmt(ours.cpu_s('total'))} / {fmt(stock.cpu_s('total'))}",
            targets.get(name, "–"),
        )
        table = Table(
            "stage",
            "ours s",
            "ours CPU s",
            "ours peak MB",
            "stock s",
            "stock CPU s",
            "stock peak MB",
            "stock ÷ ours",
        )
        for stage in STAGES_SHOWN:
            a, b = ours.stage(stage), stock.stage(stage)
            table.add(
                stage,
                a,
                ours.cpu_s(stage),
                ours.peak(stage),
                b,
                stock.cpu_s(stage),
                stock.peak(stage),
                f"{b / a:.2f}×" if a > 0.0005 and b == b else "–",
            )
        table.add(
            "total (the job's own clock)",
            ours.stage("total"),
            ours.cpu_s("total"),
            "",
            stock.stage("total"),
            stock.cpu_s("total"),
            "",
            f"{stock.stage('total') / ours.stage('total'):.2f}×",
        )
        sections.append(f"### {case.label}\n\n{table.markdown()}")
    head = [
        f"# bench_job: a whole job at full size, everything but the model ({'CPU' if args.device == 'cpu' else 'GPU: ' + args.device})",
        "",
        f"The model is a stand-in whose forward costs nothing (benchmarks/standin.py); {args.runs} runs per path "
        f"after one warm-up, interleaved (ours, stock{'' if args.no_mcp else ', MCP'} per case), medians; torch threads {args.threads}; "
        f"{STEPS} steps, guidance 1. Stock encoder: {stock_encoder_name()}.",
        f"Load average at the start: {os.getloadavg()[0]:.1f} (1 min); the run took {time.perf_counter() - started:.0f} s.",
        "",
        *[f"- {line}" for line in describe_machine()],
        "",
        summary.markdown(),
        "",
        *sections,
    ]
    return "\n\n".join(p for p in "\n".join(head).split("\n\n"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="timed runs per path (after one warm-up)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (OpenMP spins on a loaded machine)"
    )
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--device", default="cpu", help="where the stand-in model runs: cpu, cuda, cuda:1")
    parser.add_argument("--no-mcp", action="store_true", help="leave out the MCP column (no MCP SDK needed)")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # imageio's ffmpeg is started with a Python preexec_fn by default: a fork of this threaded
    # process then runs Python and can hang on a lock another thread held (imageio-ffmpeg #58).
    os.environ.setdefault("IMAGEIO_FFMPEG_NO_PREVENT_SIGINT", "1")
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="unison-bench-job-") as tmp:
        results = asyncio.run(measure(args, Path(tmp)))
    write_report(report(args, results, started), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

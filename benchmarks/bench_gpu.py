#!/usr/bin/env python
"""What every request costs on one GPU, with each speed/memory switch off and on, in one bounded run.

The models are full size with RANDOM weights (``benchmarks/gpu_models.py``): Qwen2.5-VL-3B-Instruct
+ a Unison-style LoRA, Wan2.1-VACE-1.3B with umT5-XXL and the Wan VAE, and the projector, each
constructed from its published configuration with the libraries' own classes, saved in its real
on-disk layout and loaded through the product's own path (``engine.Engine``). No hub, no download:
the lent GPU machine reaches no network. Random weights time the compute and measure the memory
exactly; they say nothing about what depends on the values (a random planner never ends its plan,
so each plan runs to a fixed token count; what a step cache skips; picture quality).

The rows run most telling first, under ONE time budget that counts from the start of the process
(imports, building and saving the models, loading them, every section): first stock diffusers
against this project at 17 frames (stock, this project with everything off, its best exact 50-step
settings), then turbo at 81 frames (the "well under 10 s" goal), then the same comparison at 81
frames, planning and understanding, the image and 33-frame rows, and then the rest (batched CFG and
attention backends alone, cached prompt encodings, user LoRAs, fp8, the low-VRAM modes, step
caches, the planner's static KV cache, regional compile, VAE tiling). Each part is run only when
the cost model (the DiT's FLOPs at the throughput measured so far, a prior before the first row)
says it fits in what is left; what did not fit is listed. The report file (``--out``) is written
again, whole and atomically, after every measured row, so a run stopped at any moment leaves the
table of everything measured until then.

Numbers not measured as such are labelled: a row that ran fewer steps than it reports gives
``≈`` fixed s + steps x s/step "from N steps"; a row of the speed table skipped for time is shown
extrapolated from the same row at another size (by the DiT's FLOPs and the pixel-frames), marked
"extrapolated, not measured".

The speed table (issue 12): at each size, stock diffusers (``WanVACEPipeline.from_pretrained`` on
the same weights, called plainly with its defaults: 50 steps, guidance 5, 512-position prompt
embeddings; only the step count lowered where stated) beside this project with everything off, its
best exact 50-step settings (batched CFG + the first available fast attention backend), turbo (the
step-distillation LoRA's preset: 8 steps, guidance 1), and the same with ``quantize="fp8"``, each
with its ratio to stock and to the compute floor, and fp8's output difference (PSNR/SSIM) against
bfloat16 at the same seed. fp8 rows are marked unavailable where float8 matmuls cannot run.

User LoRAs switched per call (``run_loras``) need a real file, ``--user-lora PATH`` (on ``--toy`` a
random toy one); without it their rows say "not run".

    python benchmarks/bench_gpu.py --out gpu_h100.md           # on a CUDA GPU (docs/performance.md: the one command)
    python benchmarks/bench_gpu.py --toy --out /tmp/toy.md     # scaled-down configs on a CPU, ~2 min
"""

from __future__ import annotations

import time

#: The budget counts from here: the imports, building the models and every section after.
START = time.perf_counter()

import argparse  # noqa: E402
import contextlib  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, describe_machine, fmt, median, ratio, write_report  # noqa: E402
from gpu_models import REAL, TOY, Specs, build_models, free  # noqa: E402
from metrics import DitShape, dit_flops, psnr, ssim  # noqa: E402

log = logging.getLogger("bench_gpu")

PROMPT = "a red fox runs through fresh snow at sunrise, cinematic, detailed fur"
PLAN_REQUEST = "Make a video of waves crashing on a rocky beach at sunset."
UNDERSTAND_PROMPT = "Describe this picture in detail."

#: The attention throughput the compute floor assumes (bf16, FlashAttention-3 class on an H100;
#: docs/performance.md, "The compute floor").
FLOOR_FLOPS = 750e12
#: The adapter name the user-LoRA rows load their file under (what ``--lora user=PATH`` would).
USER_LORA = "user"
#: What the user-LoRA rows say on a run with real configurations and no ``--user-lora``.
NO_USER_LORA = "not run: give --user-lora PATH (a Wan2.1 1.3B LoRA)"
#: The goals of issue 12 on one H100/H200, for the speed table.
GOALS = {
    "81": "≤ 0.6× stock at 50 steps; turbo ≤ 10 s end to end",
    "image": "≤ 1.5 s at 50 steps; ≤ 0.3 s in turbo",
}
#: The speed table's rows, in order: key -> what the table calls it (``best``'s name is filled in).
HEADLINE_ROWS = ("stock", "baseline", "best", "best + fp8", "turbo", "turbo + fp8")


# ---------------------------------------------------------------------------------------------
# Timing, the budget and what is expected to fit in it


class Clock:
    """Wall time with the GPU drained first, so a timestamp means the work before it is done."""

    def __init__(self, cuda: bool):
        self.cuda = cuda

    def now(self) -> float:
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        return time.perf_counter()


class Budget:
    """One budget for the whole run, counted from the process's start (:data:`START`)."""

    def __init__(self, seconds: float, start: float = START):
        self.seconds = seconds
        self.start = start
        #: What did not fit: (name, seconds it was expected to take).
        self.skipped: list[tuple[str, float]] = []

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def allows(self, what: str, need_s: float = 0.0) -> bool:
        """Whether ``what``, expected to take ``need_s``, still fits in the budget."""
        if self.elapsed + need_s <= self.seconds:
            return True
        log.warning(
            "time budget: %.0f s used of %.0f, %s needs ~%.0f s: skipped",
            self.elapsed,
            self.seconds,
            what,
            need_s,
        )
        self.skipped.append((what, need_s))
        return False


class CostModel:
    """How long a generation is expected to take before it runs, for the budget.

    Per step: the DiT's FLOPs (``benchmarks.metrics.dit_flops``, times the forwards per step: two
    with classifier-free guidance, one in turbo) at the throughput measured on the rows so far (the
    median), or the specs' prior before the first. Around the steps: seconds per million output
    pixel-frames (VAE encode and decode, prompt encoding, writing), measured likewise. A warm-up
    (one step, the same fixed work) comes first where the row has one.
    """

    def __init__(self, specs: Specs):
        self.shape = DitShape.from_config(specs.dit)
        self.prior_flops = specs.prior_flops
        self.prior_fixed = specs.prior_fixed_s_per_mpf
        self.flops: list[float] = []
        self.fixed: list[float] = []

    def step_flops(self, width: int, height: int, frames: int, forwards: int = 2) -> float:
        return dit_flops(
            self.shape,
            width=width,
            height=height,
            num_frames=frames,
            text_len=2048,
            steps=1,
            cfg=forwards == 2,
        )

    def observe(self, run: GenRun, forwards: int = 2) -> None:
        if run.error or not math.isfinite(run.step_s) or run.step_s <= 0:
            return
        self.flops.append(self.step_flops(run.width, run.height, run.num_frames, forwards) / run.step_s)
        mpf = run.width * run.height * run.num_frames / 1e6
        self.fixed.append(max(run.pre_s + run.post_s, 0.0) / mpf)

    def generation(
        self, size: tuple[int, int], frames: int, steps: int, *, forwards: int = 2, warm: bool = True
    ) -> float:
        flops = median(self.flops) if self.flops else self.prior_flops
        per_mpf = median(self.fixed) if self.fixed else self.prior_fixed
        step = self.step_flops(size[0], size[1], frames, forwards) / flops
        fixed = per_mpf * size[0] * size[1] * frames / 1e6
        return fixed + steps * step + ((fixed + step) if warm else 0.0)


@dataclass
class GenRun:
    """One timed generation."""

    scenario: str
    switch: str
    steps: int
    num_frames: int = 1
    width: int = 0
    height: int = 0
    wall_s: float = math.nan
    load_s: float = 0.0
    step_s: float = math.nan
    pre_s: float = math.nan
    post_s: float = math.nan
    peak_gb: float | None = None
    resident_gb: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    frames: Any = None
    error: str | None = None
    #: Not measured: estimated from this row at another size (the speed table's skipped rows).
    extrapolated_from: str | None = None

    def estimate(self, steps: int) -> float:
        """Wall time at ``steps`` steps: fixed costs plus per-step time (load excluded)."""
        return self.pre_s + steps * self.step_s + self.post_s


@dataclass
class LoraRow:
    """One call of the user-LoRA rows: its timed runs and switch times, or why it did not run."""

    call: str
    runs: list[GenRun] = field(default_factory=list)
    switch_s: list[float] = field(default_factory=list)
    why_not: str | None = None


@dataclass(frozen=True)
class Job:
    """One part of the run: its name, what it is expected to cost (asked just before it would
    run, so it uses everything measured until then) and what it does."""

    name: str
    need: Callable[[], float]
    run: Callable[[], None]
    #: ``--skip`` names that leave it out.
    tags: frozenset[str] = frozenset()


def _step_times(run: GenRun, t0: float, stamps: list[float], t_end: float) -> None:
    """s/step (median interval between step ends), the fixed time before and after the steps."""
    if len(stamps) >= 2:
        run.step_s = median([b - a for a, b in zip(stamps, stamps[1:], strict=False)])
        run.pre_s = stamps[0] - t0 - run.step_s - run.load_s
        run.post_s = t_end - stamps[-1]


def write_atomically(path: Path, text: str) -> None:
    """``text`` in ``path``, whole or not at all: a run killed mid-write leaves the previous version."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(text, encoding="utf-8")
    os.replace(temp, path)


# ---------------------------------------------------------------------------------------------
# The benchmark


#: The rows the cost model learns the DiT's throughput and the fixed seconds from.
_TEACHES = ("baseline", "best", "turbo", "batch_cfg", "attention_backend", "uncached")


class Bench:
    def __init__(self, args: argparse.Namespace):
        import torch

        self.args = args
        self.specs = TOY if args.toy else REAL
        self.cuda = torch.cuda.is_available() and not args.cpu
        self.device = torch.device("cuda" if self.cuda else "cpu")
        self.dtype = torch.bfloat16 if self.cuda else torch.float32
        self.clock = Clock(self.cuda)
        self.budget = Budget(args.budget_s)
        self.cost = CostModel(self.specs)
        self.notes: list[str] = []
        self.sections: list[str] = []
        self.engine: Any = None
        self.captured: dict[str, Any] = {}
        self.runs: list[GenRun] = []
        self.cache_runs: list[GenRun] = []
        self.offload_runs: list[GenRun] = []
        #: The user-LoRA rows, in call order.
        self.lora_rows: list[LoraRow] = []
        self.baselines: dict[str, GenRun] = {}
        #: The speed table's rows: (scenario key, row name) -> run.
        self.headline: dict[tuple[str, str], GenRun] = {}
        #: One figure per line of the summary: plan latency, tokens/s (filled by each section).
        self.summary: dict[str, float] = {}
        self.best_name = "best 50-step"
        self.best: Any = None
        self.backends: list[str] = []
        #: Stock diffusers' pipeline, loaded by its first row and kept for the others, and the GPU
        #: memory it holds meanwhile (left out of the engine rows' peaks).
        self.stock_pipe: Any = None
        self.stock_gb = 0.0
        self.stock_base_gb = 0.0
        self.stock_failed = False
        self.build_s = math.nan
        self.load_s = math.nan
        #: What the report's first lines say about the run: running, complete, or why it stopped.
        self.status = "running"
        self.current = "set-up"
        self.machine = describe_machine()

    # -- the report, written after every row --

    def flush(self) -> None:
        """Write the report as it stands now (``--out``), whole and atomically."""
        if self.args.out is not None:
            write_atomically(self.args.out, self.report())

    def keep(
        self, run: GenRun, *, into: list[GenRun] | None = None, key: tuple[str, str] | None = None
    ) -> GenRun:
        """Record a measured row where its table reads it, learn its speed, and write the report."""
        if into is not None:
            into.append(run)
        if key is not None:
            self.headline[key] = run
        # Rows whose steps all compute in bf16 teach the cost model (not a cache's skips, not fp8,
        # not an offload's transfers, not stock diffusers' 512-position context).
        if run.switch.startswith(_TEACHES) and "fp8" not in run.switch:
            self.cost.observe(run, 1 if run.switch.startswith("turbo") else 2)
        self.flush()
        return run

    # -- setup --

    def setup(self, root: Path) -> None:
        from engine.config import EngineConfig, Limits, LoraSettings, SamplingDefaults
        from engine.engine import Engine

        t0 = time.perf_counter()
        paths = build_models(self.specs, root / "models", self.device, self.dtype)
        self.paths = paths
        self.build_s = time.perf_counter() - t0
        config = EngineConfig(
            planner_model=str(paths.qwen),
            adapter=str(paths.adapter),
            projector=str(paths.projector),
            generator_model=str(paths.wan),
            device=str(self.device),
            dtype="bfloat16" if self.cuda else "float32",
            local_files_only=True,
            output_dir=root / "outputs",
            limits=Limits(max_frames=161),
            sampling=SamplingDefaults(),
            # The turbo preset as configured by default (8 steps, guidance 1, shift 8).
            loras=LoraSettings(turbo_lora=str(paths.turbo_lora)),
        )
        self.engine = Engine(config)
        t0 = time.perf_counter()
        self.engine.preload()
        self.load_s = time.perf_counter() - t0
        self._capture_frames(self.engine.generator)
        self.flush()

    def use_options(self, options: Any) -> None:
        """Switch the engine to other performance options on the weights already loaded.

        The options are applied when a generator loads, so other options mean another generator:
        ``Generator.with_options`` hands it the loaded pipeline, hooked once for the new options
        (a different offload loads it again). The engine is rebuilt around it through its
        injection seams, sharing the loaded planner and projector.
        """
        from engine.engine import Engine

        eng = self.engine
        generator = eng.generator.with_options(options)
        if generator is eng.generator:
            return
        self._capture_frames(generator)
        self.engine = Engine(
            eng.config.model_copy(update={"performance": generator.performance}),
            planner=eng.planner,
            generator=generator,
            projector=eng.projector(),
        )

    def _capture_frames(self, gen: Any) -> None:
        """Keep the frames of the last generation (for PSNR/SSIM) as the generator returns them."""
        real_run = gen.run

        def run_and_keep(*args: Any, **kwargs: Any) -> Any:
            frames = real_run(*args, **kwargs)
            # The engine runs a batch of candidates, (B, F, H, W, 3): the benchmark makes one.
            self.captured["frames"] = frames[0] if frames.ndim == 5 and len(frames) == 1 else frames
            return frames

        gen.run = run_and_keep

    # -- memory --

    def _reset_peak(self) -> float | None:
        if not self.cuda:
            return None
        import torch

        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated() / 2**30

    def _peak(self) -> float | None:
        """The peak since the last reset, less stock diffusers' weights while they are resident
        beside the engine's (its own rows count their peak above the engine's models instead)."""
        if not self.cuda:
            return None
        import torch

        return torch.cuda.max_memory_allocated() / 2**30 - self.stock_gb

    # -- planning --

    def bench_plan(self) -> None:
        from engine.errors import PlannerError
        from engine.request import parse_request

        eng = self.engine
        planner = eng.planner
        # Random weights never write the end token: every plan runs to this many tokens (a real
        # Unison plan is 5-14 tokens, e.g. <CFV><BORES>832,480<EORES><BONF>80<EONF>).
        planner.unison_max_new_tokens = self.specs.plan_tokens
        req = parse_request(PLAN_REQUEST)
        n = self.args.repeat

        def timed(fn: Callable[[], Any]) -> float:
            t0 = self.clock.now()
            # A random planner writes no valid plan: the time is what counts.
            with contextlib.suppress(PlannerError):
                fn()
            return self.clock.now() - t0

        timed(lambda: planner.plan(req, backend="unison", want_features=True))  # warm-up
        rules = [timed(lambda: eng.plan(PLAN_REQUEST, backend="rules")) for _ in range(n)]
        one = [timed(lambda: planner.plan(req, backend="unison", want_features=True)) for _ in range(n)]
        plan_only = [
            timed(lambda: planner.plan(req, backend="unison", want_features=False)) for _ in range(n)
        ]
        second = [timed(lambda: planner.features(req)) for _ in range(n)]
        two = [a + b for a, b in zip(plan_only, second, strict=True)]

        self.summary["plan_ms"] = median(one) * 1e3
        table = Table("what", "median ms", "vs one pass", "note")
        table.add("rules planner", median(rules) * 1e3, "–", "no model")
        table.add(
            "unison plan + features, one pass (the engine's way)",
            median(one) * 1e3,
            "1.00×",
            f"{self.specs.plan_tokens} generated tokens",
        )
        table.add("unison plan alone", median(plan_only) * 1e3, ratio(median(plan_only), median(one)), "")
        table.add("features by a second forward", median(second) * 1e3, "–", "what the reference does")
        table.add(
            "unison plan + features, two passes",
            median(two) * 1e3,
            ratio(median(two), median(one)),
            "saved per auto request: " + fmt((median(two) - median(one)) * 1e3) + " ms",
        )
        self.sections.append(f"## Planning ({n} runs each, median)\n\n{table.markdown()}")

    # -- understanding --

    def bench_understand(self, root: Path) -> None:
        import numpy as np
        from PIL import Image

        from engine.control import JobControl

        w, h = self.specs.image
        image = root / "inputs" / "photo.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(image)
        n = self.specs.answer_tokens

        def once(media: list[str]) -> tuple[float, float, int]:
            stamps: list[float] = []

            def on_progress(done: int, total: int, stage: str) -> None:
                if stage == "understanding":
                    stamps.append(self.clock.now())

            t0 = self.clock.now()
            self.engine.understand(
                UNDERSTAND_PROMPT, media, max_new_tokens=n, control=JobControl(on_progress)
            )
            ttft = stamps[0] - t0 if stamps else math.nan
            rate = (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else math.nan
            return ttft, rate, len(stamps)

        table = Table("input", "time to first token ms", "tokens/s", "tokens")
        for label, media in (("text only", []), (f"one {w}x{h} image", [str(image)])):
            once(media)  # warm-up
            runs = [once(media) for _ in range(self.args.repeat)]
            self.summary[f"tokens_per_s {label}"] = median([r[1] for r in runs])
            table.add(label, median([r[0] for r in runs]) * 1e3, median([r[1] for r in runs]), runs[-1][2])
        self.sections.append(
            f"## Understanding (greedy, {n} new tokens, median of {self.args.repeat})\n\n{table.markdown()}"
        )

    # -- prompt encodings, planner KV cache --

    def bench_text_cache(self) -> None:
        """umT5 text contexts with and without the encoding cache (``text_cache_size``)."""
        import torch

        from engine import textcache
        from engine.config import SamplingDefaults
        from engine.generator import build_text_context

        pipe = self.engine.generator.pipeline
        negative = SamplingDefaults().negative_prompt
        cache = textcache.cache_for(pipe.text_encoder)
        n, windows = self.args.repeat, 4

        def timed(prompt: str, *, use_cache: bool = True) -> float:
            t0 = self.clock.now()
            with torch.inference_mode():
                build_text_context(
                    pipe,
                    prompt,
                    negative_prompt=negative,
                    extra_tokens=None,
                    text_len=2048,
                    max_sequence_length=512,
                    use_cache=use_cache,
                )
            return self.clock.now() - t0

        timed(PROMPT, use_cache=False)  # warm-up
        uncached = [timed(PROMPT, use_cache=False) for _ in range(n)]
        cache.clear()
        timed(PROMPT)  # the negative prompt is now cached, as after any first request
        new_prompt = [timed(f"{PROMPT}, take {k}") for k in range(n)]
        repeated = [timed(PROMPT) for _ in range(n)]
        chain_uncached = sum(timed(PROMPT, use_cache=False) for _ in range(windows))
        chain_cached = sum(timed(PROMPT) for _ in range(windows))

        table = Table("what", "median ms", "vs uncached", "umT5 forwards")
        table.add("prompt + negative, no cache", median(uncached) * 1e3, "1.00×", 2)
        table.add(
            "a new prompt, negative cached",
            median(new_prompt) * 1e3,
            ratio(median(new_prompt), median(uncached)),
            1,
        )
        table.add("a repeated request", median(repeated) * 1e3, ratio(median(repeated), median(uncached)), 0)
        table.add(
            f"a chain of {windows} windows, no cache",
            chain_uncached * 1e3,
            ratio(chain_uncached, median(uncached)),
            2 * windows,
        )
        table.add(
            f"a chain of {windows} windows, cached",
            chain_cached * 1e3,
            ratio(chain_cached, median(uncached)),
            0,
        )
        self.sections.append(
            f"## Prompt encodings (umT5, cache of {cache.size}; median of {n})\n\n{table.markdown()}"
        )

    def bench_planner_cache(self) -> None:
        """Plan latency and understanding tokens/s with the default and the static KV cache."""
        from engine.control import JobControl
        from engine.errors import PlannerError
        from engine.request import parse_request

        planner = self.engine.planner
        planner.unison_max_new_tokens = self.specs.plan_tokens
        req = parse_request(PLAN_REQUEST)
        n, tokens = self.args.repeat, self.specs.answer_tokens
        base = planner.config

        def plan_s() -> float:
            t0 = self.clock.now()
            with contextlib.suppress(PlannerError):  # a random planner writes no valid plan
                planner.plan(req, backend="unison", want_features=True)
            return self.clock.now() - t0

        def tokens_per_s() -> float:
            stamps: list[float] = []

            def on_progress(done: int, total: int, stage: str) -> None:
                if stage == "understanding":
                    stamps.append(self.clock.now())

            self.engine.understand(
                UNDERSTAND_PROMPT, [], max_new_tokens=tokens, control=JobControl(on_progress)
            )
            return (len(stamps) - 1) / (stamps[-1] - stamps[0]) if len(stamps) > 1 else math.nan

        table = Table("KV cache", "first plan ms", "plan median ms", "understanding tokens/s", "note")
        try:
            for static in (False, True):
                options = base.performance.model_copy(update={"planner_static_cache": static})
                planner.config = base.model_copy(update={"performance": options})
                first = plan_s()  # on CUDA the static cache's first call compiles the decode step
                plans = [plan_s() for _ in range(n)]
                tokens_per_s()  # warm-up
                rates = [tokens_per_s() for _ in range(n)]
                compiled = static and self.cuda
                if static:
                    self.summary["plan_ms static"] = median(plans) * 1e3
                    self.summary["tokens_per_s static"] = median(rates)
                note = "decode step compiled" if compiled else ("not compiled on a CPU" if static else "")
                table.add(
                    "static" if static else "default (dynamic)",
                    first * 1e3,
                    median(plans) * 1e3,
                    median(rates),
                    note,
                )
        finally:
            planner.config = base
        self.sections.append(
            f"## Planner KV cache ({self.specs.plan_tokens}-token plans, {tokens}-token answers; "
            f"median of {n})\n\n{table.markdown()}"
        )

    # -- generation --

    def _plan(self, frames: int) -> Any:
        from engine.plan import build_plan

        w, h = self.specs.image if frames == 1 else self.specs.video
        task = "text_to_image" if frames == 1 else "text_to_video"
        return build_plan(
            task, PROMPT, width=w, height=h, num_frames=frames, limits=self.engine.config.limits
        )

    def _features(self, plan: Any) -> Any:
        from engine.request import request_for_plan

        return self.engine.planner.features(request_for_plan(plan))

    def generate(
        self,
        scenario: str,
        frames: int,
        steps: int | None,
        switch: str,
        options: Any,
        *,
        turbo: bool = False,
        loras: list[Any] | None = None,
    ) -> GenRun:
        """One timed generation; ``turbo``: the turbo preset, whose steps ``steps=None`` keeps;
        ``loras``: the call's user LoRAs (``LoraChoice``), as a ``generate`` request names them."""
        from engine.control import JobControl
        from engine.results import Sampling

        plan = self._plan(frames)
        run_steps = steps if steps is not None else self.engine.config.loras.turbo_steps
        run = GenRun(scenario, switch, run_steps, num_frames=frames, width=plan.width, height=plan.height)
        features = self._features(plan)
        stamps: list[float] = []

        def on_progress(done: int, total: int, stage: str) -> None:
            if stage == "generating":
                stamps.append(self.clock.now())

        try:
            self.use_options(options)
            run.resident_gb = self._reset_peak()
            self.captured.pop("frames", None)
            t0 = self.clock.now()
            sampling = Sampling(steps=steps, seed=0, turbo=True if turbo else None, loras=loras)
            result = self.engine.generate(plan, sampling, control=JobControl(on_progress), features=features)
            t_end = self.clock.now()
        except Exception as exc:  # a switch this machine lacks: report it in its row
            log.warning("%s / %s failed: %s", scenario, switch, exc)
            run.error = f"{type(exc).__name__}: {exc}"[:160]
            return run
        run.peak_gb = self._peak()
        run.load_s = float(result.timings.get("load_s", 0.0))
        run.wall_s = t_end - t0
        run.stats = dict(self.engine.generator.last_run)
        run.frames = self.captured.get("frames")
        _step_times(run, t0, stamps, t_end)
        return run

    def warm_up(self, frames: int, options: Any = None, *, turbo: bool = False) -> None:
        """One short run at this size first: one-time costs (kernel loads, allocator growth, a
        compile, loading the turbo LoRA) must not land in the measured run."""
        from engine.config import PerformanceOptions

        self.generate("warm-up", frames, 1, "warm-up", options or PerformanceOptions(), turbo=turbo)

    def attention_backends(self) -> list[str]:
        """The non-default backends worth timing here: PyTorch's own, and any installed package."""
        from engine import perf
        from engine.errors import UnisonError

        wanted = ["_flash_3", "flash", "sage", "_native_cudnn"] if self.cuda else ["_native_math"]
        usable = []
        for name in wanted:
            try:
                perf.check_attention_backend(name, self.device)
                usable.append(name)
            except UnisonError as exc:
                self.notes.append(f"attention backend `{name}`: not measured ({exc})")
        return usable

    def _label(self, frames: int) -> str:
        w, h = self.specs.image if frames == 1 else self.specs.video
        return f"{w}x{h} image" if frames == 1 else f"{w}x{h}, {frames} frames"

    # -- the run: every part in order, most telling first --

    def jobs(self, root: Path) -> list[Job]:
        """Every part of the run after set-up, most telling first (docstring of this module)."""
        from engine import quantize
        from engine.config import PerformanceOptions as P

        specs, steps, turbo_steps = self.specs, self.specs.steps, self.engine.config.loras.turbo_steps
        small, mid, big = (str(f) for f in specs.frames)
        frames = {"image": 1, **{str(f): f for f in specs.frames}}
        self.backends = self.attention_backends()
        self.best = P(batch_cfg=True, attention_backend=self.backends[0] if self.backends else None)
        self.best_name = "best 50-step: batch_cfg" + (
            f" + {self.backends[0]}" if self.backends else " (SDPA)"
        )
        section = specs.section_s
        fp8_runs = quantize.fp8_unavailable(self.device) is None
        loras_run = self.args.toy or self.args.user_lora is not None

        def size(key: str) -> tuple[int, int]:
            return specs.image if key == "image" else specs.video

        def gen(
            key: str, *, forwards: int = 2, n_steps: int | None = None, warm: bool = True
        ) -> Callable[[], float]:
            run_steps = n_steps if n_steps is not None else steps[key]
            return lambda: self.cost.generation(
                size(key), frames[key], run_steps, forwards=forwards, warm=warm
            )

        def stock(key: str) -> Job:
            need = gen(key)
            return Job(
                f"stock diffusers {key}",
                lambda: need() + (section["stock_load"] if self.stock_pipe is None else 0.0),
                lambda: self.stock_row(key, frames[key]),
                frozenset({"generate", "stock"}),
            )

        def baseline(key: str) -> Job:
            return Job(
                f"baseline {key}",
                gen(key),
                lambda: self.baseline_row(key, frames[key]),
                frozenset({"generate"}),
            )

        def best(key: str) -> Job:
            return Job(
                f"best {key}",
                gen(key),
                lambda: self.headline_row(key, frames[key], "best", self.best),
                frozenset({"generate"}),
            )

        def turbo(key: str) -> Job:
            return Job(
                f"turbo {key}",
                gen(key, forwards=1, n_steps=turbo_steps),
                lambda: self.headline_row(key, frames[key], "turbo", self.best, turbo=True),
                frozenset({"generate", "turbo"}),
            )

        def row(
            key: str,
            name: str,
            options: Any,
            tags: set[str],
            *,
            n_steps: int | None = None,
            into: list[GenRun] | None = None,
            extra: float = 0.0,
        ) -> Job:
            """A row of the generation table (or ``into`` another): ``options`` at size ``key``."""
            run_steps = n_steps if n_steps is not None else steps[key]
            need = gen(key, n_steps=run_steps, warm=False)
            label, n_frames = self._label(frames[key]), frames[key]
            return Job(
                f"{name} {key}",
                lambda: need() + extra,
                lambda: self.keep(
                    self.generate(label, n_frames, run_steps, name, options),
                    into=self.runs if into is None else into,
                ),
                frozenset(tags),
            )

        def fixed(name: str, seconds: float, run: Callable[[], None], tags: set[str]) -> Job:
            return Job(name, lambda: seconds, run, frozenset(tags))

        jobs = [
            # 1. The comparison that matters most, at the smallest video: stock diffusers against
            # this project with everything off and with its best exact settings.
            stock(small),
            baseline(small),
            best(small),
            # 2. Turbo at 81 frames: the "well under 10 s" goal.
            turbo(big),
            # 3. The same comparison at 81 frames; the peak memory of everything resident.
            stock(big),
            baseline(big),
            best(big),
            # 4. Planning and understanding: cheap, and two of the goals.
            fixed("planning", section["plan"], self.bench_plan, {"plan"}),
            fixed(
                "understanding", section["understand"], lambda: self.bench_understand(root), {"understand"}
            ),
            # 5. The image and the 33-frame video; turbo at the other sizes.
            stock("image"),
            baseline("image"),
            best("image"),
            turbo("image"),
            turbo(small),
            stock(mid),
            baseline(mid),
            best(mid),
            turbo(mid),
            Job("stock diffusers: free its weights", lambda: 0.0, self.free_stock),
        ]
        # 6. Each part of the best settings alone (where they differ from it).
        if self.backends:
            jobs += [row(key, "batch_cfg", P(batch_cfg=True), {"generate"}) for key in (small, big)]
            jobs += [
                row(big, f"attention_backend={b}", P(attention_backend=b), {"generate"})
                for b in self.backends
            ]
        # 7. Cached prompt encodings, user LoRAs (before fp8: an adapter cannot go onto a float8 layer).
        lora_share = steps["lora"] / steps[small]
        jobs += [
            fixed("prompt encodings", section["text_cache"], self.bench_text_cache, {"text_cache"}),
            Job(
                "user LoRAs",
                # 13 generations (a warm-up, then 4 calls x 3) of a few steps; without a file: nothing.
                lambda: (
                    (13 * max(lora_share, 0.5) * gen(small, warm=False)() + section["user_lora_load"])
                    if loras_run
                    else 0.0
                ),
                lambda: self.run_loras(small, frames[small]),
                frozenset({"loras"}),
            ),
            # 8. fp8: the DiT converted in place (float8 cannot go back: later rows load again).
            Job(
                "fp8",
                lambda: (
                    (section["fp8_convert"] + 2 * gen(small)() + gen(big, forwards=1, n_steps=turbo_steps)())
                    if fp8_runs
                    else 0.0
                ),  # its rows only say why not
                lambda: self.run_fp8(),
                frozenset({"generate", "fp8"}),
            ),
        ]
        # 9. The low-VRAM modes at the largest video (each loads the pipeline again).
        jobs += [
            row(
                big,
                f"offload={mode}",
                P(offload=mode),
                {"offload"},
                n_steps=steps["offload"],
                into=self.offload_runs,
                extra=section["reload"],
            )
            for mode in ("model", "group", "text_encoder_cpu")
        ]
        # 10. Step caches and their quality, the planner's static KV cache, compile, VAE tiling.
        cache_runs = 5 * steps["cache"] / steps[small]
        jobs += [
            Job(
                "step caches",
                lambda: section["reload"] + cache_runs * gen(small, warm=False)(),
                self.run_caches,
                frozenset({"cache"}),
            ),
            fixed("planner KV cache", section["planner_cache"], self.bench_planner_cache, {"planner_cache"}),
        ]
        if self.cuda or self.args.compile_on_cpu:
            jobs.append(
                Job(
                    "regional compile",
                    lambda: section["compile"] + 3 * gen(big)(),
                    lambda: self.run_compile(big, frames[big]),
                    frozenset({"generate"}),
                )
            )
        else:
            self.notes.append(
                "regional compile: not run on the CPU by default (inductor builds C++ for each block shape, "
                "tens of seconds to minutes here); pass --compile-on-cpu to include it"
            )
        jobs.append(row(big, "vae_tiling", P(vae_tiling=True), {"generate"}))
        return jobs

    def run_jobs(self, jobs: list[Job]) -> None:
        """Each job that is not skipped and fits in the budget; one that fails is noted and the run
        goes on (a one-off GPU slot must not end at the first surprise)."""
        skip = set(self.args.skip)
        for job in jobs:
            if job.tags & skip:
                continue
            if not self.budget.allows(job.name, job.need()):
                self.flush()
                continue
            self.current = job.name
            log.info("[%.0f s] %s", self.budget.elapsed, job.name)
            try:
                job.run()
            except Exception as exc:  # reported in the notes; the next part runs
                log.exception("%s failed", job.name)
                self.notes.append(f"{job.name}: failed: {type(exc).__name__}: {str(exc)[:300]}")
            self.flush()

    # -- the speed table's rows --

    def baseline_row(self, key: str, frames: int) -> None:
        from engine.config import PerformanceOptions as P

        self.warm_up(frames)
        run = self.generate(
            self._label(frames), frames, self.specs.steps[key], "baseline (SDPA, all off)", P()
        )
        self.baselines[key] = run
        self.keep(run, into=self.runs)

    def headline_row(
        self, key: str, frames: int, name: str, options: Any, *, turbo: bool = False, warm: bool = True
    ) -> GenRun:
        """One row of the speed table (after a warm-up at this size with the same options)."""
        if warm:
            self.warm_up(frames, options, turbo=turbo)
        steps = None if turbo else self.specs.steps[key]
        run = self.generate(self._label(frames), frames, steps, name, options, turbo=turbo)
        return self.keep(run, key=(key, name))

    def stock_row(self, key: str, frames: int) -> None:
        """Stock diffusers at one size: its pipeline loaded by the first such row and kept."""
        pipe = self.load_stock()
        if pipe is None:
            return  # the load failed: every stock row says why
        self._stock_once(pipe, frames, 1)  # warm-up, as every other row has
        self.keep(self._stock_once(pipe, frames, self.specs.steps[key]), key=(key, "stock"))

    def load_stock(self) -> Any:
        """Stock diffusers on the same weights: ``WanVACEPipeline.from_pretrained`` and a plain call
        (its defaults: 50 steps, guidance 5, negative prompt "", 512-position prompt embeddings, its
        own scheduler config); only the size, the frame count, a seed, a step-end timestamp and
        (where the table says so) fewer steps are passed. No project code runs in the timed path.
        Its attention is pinned to diffusers' default (PyTorch SDPA, "native"): diffusers keeps the
        last backend set anywhere as the process-wide one, and the project's best rows set another."""
        if self.stock_pipe is not None or self.stock_failed:
            return self.stock_pipe
        import torch
        from diffusers import AutoencoderKLWan, WanVACEPipeline

        before = torch.cuda.memory_allocated() if self.cuda else 0
        t0 = time.perf_counter()
        try:
            # As diffusers' Wan documentation loads it: the VAE in float32, the rest in bf16 (the
            # project's precision too).
            vae = AutoencoderKLWan.from_pretrained(self.paths.wan, subfolder="vae", torch_dtype=torch.float32)
            pipe = WanVACEPipeline.from_pretrained(self.paths.wan, vae=vae, torch_dtype=self.dtype)
            pipe = pipe.to(self.device)
            pipe.transformer.set_attention_backend("native")
        except Exception as exc:  # out of memory, most likely: its rows say so
            log.warning("stock diffusers failed to load: %s", exc)
            self.stock_failed = True  # not again
            for key, frames in (("image", 1), *((str(f), f) for f in self.specs.frames)):
                run = GenRun(self._label(frames), "stock diffusers", 0, num_frames=frames)
                run.error = f"{type(exc).__name__}: {exc}"[:160]
                self.headline[(key, "stock")] = run
            free()
            return None
        pipe.set_progress_bar_config(disable=True)  # tqdm on stderr only; not part of the work
        self.stock_pipe = pipe
        if self.cuda:
            self.stock_gb = (torch.cuda.memory_allocated() - before) / 2**30
            self.stock_base_gb = before / 2**30
        self.notes.append(
            f"stock diffusers: `WanVACEPipeline.from_pretrained` of the same weights in {time.perf_counter() - t0:.1f} s "
            f"({self.stock_gb:.1f} GiB), kept beside the engine's models while its rows ran; its rows write no file "
            "(the project's include writing the PNG/MP4), its peak is its own above the engine's models, and the "
            "engine rows' peaks meanwhile leave its weights out"
        )
        return pipe

    def free_stock(self) -> None:
        if self.stock_pipe is not None:
            self.stock_pipe = None
            free()
        self.stock_gb = 0.0

    def _stock_once(self, pipe: Any, frames: int, steps: int) -> GenRun:
        import torch

        w, h = self.specs.image if frames == 1 else self.specs.video
        run = GenRun(self._label(frames), "stock diffusers", steps, num_frames=frames, width=w, height=h)
        stamps: list[float] = []

        def on_step_end(_pipe: Any, _i: int, _t: Any, callback_kwargs: dict) -> dict:
            stamps.append(self.clock.now())  # the same clock as the project's progress stamps
            return callback_kwargs

        call: dict[str, Any] = dict(
            prompt=PROMPT,
            width=w,
            height=h,
            num_frames=frames,
            generator=torch.Generator(self.device).manual_seed(0),
            callback_on_step_end=on_step_end,
        )
        if steps != 50:  # its default is 50: fewer only where the table extrapolates
            call["num_inference_steps"] = steps
        try:
            self._reset_peak()
            t0 = self.clock.now()
            pipe(**call)
            t_end = self.clock.now()
        except Exception as exc:  # report it in its row
            log.warning("stock diffusers %s failed: %s", run.scenario, exc)
            run.error = f"{type(exc).__name__}: {exc}"[:160]
            return run
        if self.cuda:  # its own: its weights and activations, above the engine's models
            run.peak_gb = torch.cuda.max_memory_allocated() / 2**30 - self.stock_base_gb
        run.wall_s = t_end - t0
        _step_times(run, t0, stamps, t_end)
        return run

    def run_fp8(self) -> None:
        """The best 50-step settings and turbo with the DiT's linears in float8, and their output
        difference against the bfloat16 rows at the same seed, most telling first, each row only if
        it still fits; "unavailable" rows where float8 cannot run."""
        from engine import quantize

        specs = self.specs
        keys = [str(specs.frames[0]), str(specs.frames[-1]), "image", str(specs.frames[1])]
        frames = {"image": 1, **{str(f): f for f in specs.frames}}
        order = [("best + fp8", keys[0]), ("turbo + fp8", keys[1]), ("best + fp8", keys[1])]
        order += [(name, key) for key in keys[2:] + keys[:1] for name in ("best + fp8", "turbo + fp8")]
        order = list(dict.fromkeys(order))
        if "turbo" in self.args.skip:
            order = [(name, key) for name, key in order if not name.startswith("turbo")]

        def unavailable(why: str) -> None:
            for name, key in order:
                run = GenRun(self._label(frames[key]), name, 0, num_frames=frames[key])
                run.error = why
                self.headline[(key, name)] = run
            self.flush()

        reason = quantize.fp8_unavailable(self.device)
        if reason is not None:
            unavailable(
                "unavailable (torchao missing)" if "torchao" in reason else "unavailable (needs CUDA sm89+)"
            )
            self.notes.append(f"fp8: not measured here: {reason}")
            return
        fp8 = self.best.model_copy(update={"quantize": "fp8"})
        t0 = time.perf_counter()
        try:
            self.use_options(fp8)  # the loaded DiT converted in place, once
        except Exception as exc:  # the rows say why; the rest of the benchmark goes on
            log.warning("fp8 failed: %s", exc)
            unavailable(f"{type(exc).__name__}: {exc}"[:160])
            return
        import importlib.metadata

        self.notes.append(
            f"fp8: {self.engine.generator.pipeline.transformer._unison_quantized} DiT linear layers converted "
            f"to float8 in {time.perf_counter() - t0:.1f} s (torchao {importlib.metadata.version('torchao')}, "
            "per-row dynamic activation + weight)"
        )
        turbo_steps = self.engine.config.loras.turbo_steps
        for name, key in order:
            turbo = name.startswith("turbo")
            size = specs.image if key == "image" else specs.video
            need = self.cost.generation(
                size, frames[key], turbo_steps if turbo else specs.steps[key], forwards=1 if turbo else 2
            )
            if not self.budget.allows(f"{name} {key}", need):
                continue
            run = self.headline_row(key, frames[key], name, fp8, turbo=turbo)
            base = self.headline.get((key, name.removesuffix(" + fp8")))
            if base is not None and base.frames is not None and run.frames is not None:
                run.stats["psnr"] = psnr(run.frames, base.frames)
                run.stats["ssim"] = ssim(run.frames, base.frames)
                self.flush()

    def run_compile(self, key: str, frames: int) -> None:
        from engine.config import PerformanceOptions as P

        options = P(compile=True)
        t0 = time.perf_counter()
        self.warm_up(frames, options)
        self.notes.append(
            f"regional compile: the first {self._label(frames)} run (1 step, compiling the blocks) took "
            f"{time.perf_counter() - t0:.0f} s"
        )
        self.keep(
            self.generate(self._label(frames), frames, self.specs.steps[key], "compile", options),
            into=self.runs,
        )
        backends = self.backends
        best = P(compile=True, batch_cfg=True, attention_backend=backends[0] if backends else None)
        need = self.specs.section_s["compile"] / 2 + self.cost.generation(
            self.specs.video, frames, self.specs.steps[key]
        )
        if self.budget.allows("compile + batch_cfg + best attention", need):
            self.warm_up(frames, best)  # a batch of two is a new shape: compiled again
            name = "compile + batch_cfg" + (f" + {backends[0]}" if backends else "")
            self.keep(
                self.generate(self._label(frames), frames, self.specs.steps[key], name, best), into=self.runs
            )

    def _user_lora_file(self) -> Path | None:
        """The LoRA the user-LoRA rows load: ``--user-lora``; on ``--toy`` without it a random one
        for the toy DiT in the original-Wan layout (``engine.tiny.lora``), built beside the other
        models; ``None`` on real configurations without ``--user-lora`` (no random stand-in: a real
        file's load and conversion is what those rows are for)."""
        if self.args.user_lora is not None:
            return self.args.user_lora
        if not self.args.toy:
            return None
        from engine.tiny.lora import build_lora

        path = self.paths.wan.parent / "user_lora.safetensors"
        if not path.exists():
            # Smaller than the tiny factory's default scale: four toy blocks stay finite.
            build_lora(path, wan_dir=self.paths.wan, seed=3, scale=0.1)
        return path

    def run_loras(self, key: str, frames: int) -> None:
        """User LoRAs switched per call on the loaded generator: no LoRA, the LoRA at 1.0, at 0.5,
        no LoRA again (same seed, ``steps["lora"]`` steps, median of ``--repeat``), the switch
        itself (``engine.loras.activate``: ``set_adapters``/``disable_lora``) timed on its own, and
        each call's frames against the first no-LoRA call's.

        The file is loaded here, not with the pipeline (``--lora`` would load it at preload): the
        rows before this one then time the pipeline as a server without user LoRAs has it. It goes
        in through the product's loader (``engine.loras.load_adapter``) and is registered in the
        generator's table of loaded LoRAs, shared by every generator on this pipeline, which is
        what ``load_all`` does with a ``--lora`` at load; it is deleted again afterwards."""
        from engine import loras
        from engine.config import PerformanceOptions as P

        calls: list[tuple[str, float | None]] = [
            ("no LoRA", None),
            ("user LoRA at strength 1.0", 1.0),
            ("user LoRA at strength 0.5", 0.5),
            ("no LoRA again, after the switches", None),
        ]
        file = self._user_lora_file()
        if file is None:
            self.lora_rows = [LoraRow(name, why_not=NO_USER_LORA) for name, _ in calls]
            return
        self.use_options(P())
        gen = self.engine.generator
        pipe = gen.pipeline
        t0 = time.perf_counter()
        try:
            loras.load_adapter(
                pipe, loras.LoraSpec(USER_LORA, str(file)), what="--user-lora", config=self.engine.config
            )
        except Exception as exc:  # a file of another base, unreadable: the rows say why
            log.warning("user LoRA %s failed to load: %s", file, exc)
            why = f"{type(exc).__name__}: {exc}"[:160]
            self.lora_rows = [LoraRow(name, why_not=why) for name, _ in calls]
            return
        pipe.disable_lora()
        gen._user_loras[USER_LORA] = loras.LoraSpec(USER_LORA, str(file))
        self.notes.append(
            f"user LoRAs: `{file.name}` loaded as adapter `{USER_LORA}` in {time.perf_counter() - t0:.2f} s "
            "(once; every call after only switches it)"
        )
        label = self._label(frames)
        steps, n = self.specs.steps["lora"], self.args.repeat
        try:
            # One-time costs of the first active adapter (kernels, allocator) outside the rows.
            self.generate("warm-up", frames, 1, "warm-up", P(), loras=self._choices(1.0))
            previous: list[tuple[str, float]] = []
            for name, strength in calls:
                target = [] if strength is None else [(USER_LORA, strength)]
                first = self.generate(label, frames, steps, name, P(), loras=self._choices(strength))
                if not self.budget.allows(f"user LoRAs: {name}", (n - 1) * first.wall_s):
                    self.lora_rows.append(LoraRow(name, [first]))
                    self.flush()
                    previous = target
                    continue
                runs = [first] + [
                    self.generate(label, frames, steps, name, P(), loras=self._choices(strength))
                    for _ in range(n - 1)
                ]
                switches = []
                for _ in range(n):  # from the previous call's adapters to this call's, alone
                    loras.activate(pipe, previous)
                    t0 = self.clock.now()
                    loras.activate(pipe, target)
                    switches.append(self.clock.now() - t0)
                self.lora_rows.append(LoraRow(name, runs, switches))
                self.flush()
                previous = target
        finally:
            gen._user_loras.pop(USER_LORA, None)
            with contextlib.suppress(ValueError, KeyError, AttributeError):
                pipe.delete_adapters(USER_LORA)
            # Whatever adapter is left (turbo) off, as the next call without it expects.
            with contextlib.suppress(ValueError, AttributeError):
                pipe.disable_lora()

    @staticmethod
    def _choices(strength: float | None) -> list[Any] | None:
        from engine.results import LoraChoice

        return None if strength is None else [LoraChoice(name=USER_LORA, strength=strength)]

    def run_caches(self) -> None:
        from engine.config import PerformanceOptions as P

        frames = self.specs.frames[0]
        steps = self.specs.steps["cache"]
        label = self._label(frames)
        self.keep(self.generate(label, frames, steps, "uncached", P()), into=self.cache_runs)
        for name, options in (
            ("first_block 0.05", P(cache="first_block", cache_threshold=0.05)),
            ("first_block 0.10", P(cache="first_block", cache_threshold=0.10)),
            ("mag 0.06: calibration run", P(cache="mag", cache_threshold=0.06)),
            ("mag 0.06", P(cache="mag", cache_threshold=0.06)),
        ):
            if self.budget.allows(f"cache {name}", self.cache_runs[0].wall_s):
                self.keep(self.generate(label, frames, steps, name, options), into=self.cache_runs)
        self.use_options(P())

    # -- tables --

    def generation_table(self) -> str:
        target = 50
        base_by_label = {b.scenario: b for b in self.baselines.values()}
        shape = DitShape.from_config(self.specs.dit)
        table = Table(
            "output",
            "switch",
            "steps run",
            "s/step",
            "fixed s",
            f"est. {target} steps s",
            "vs baseline",
            "DiT TFLOP/s",
            "peak GiB",
            "notes",
        )
        order = {b.scenario: i for i, b in enumerate(self.baselines.values())}
        for run in sorted(self.runs, key=lambda r: order.get(r.scenario, 99)):
            if run.error:
                table.add(run.scenario, run.switch, run.steps, "–", "–", "–", "–", "–", "–", run.error)
                continue
            base = base_by_label.get(run.scenario)
            est = run.estimate(target)
            flops_step = dit_flops(
                shape, width=run.width, height=run.height, num_frames=run.num_frames, text_len=2048, steps=1
            )
            notes = []
            if run.stats.get("batched_passes"):
                notes.append(f"{run.stats['batched_passes']} batched passes")
            table.add(
                run.scenario,
                run.switch,
                run.steps,
                run.step_s,
                run.pre_s + run.post_s,
                at_steps(run, target),
                ratio(est, base.estimate(target) if base else None),
                flops_step / run.step_s / 1e12,
                run.peak_gb,
                "; ".join(notes),
            )
        return (
            f"## Generation (seed 0, guidance 5, the Unison context of 2048 positions)\n\n"
            f"`est. {target} steps s`: measured where the row ran {target} steps; `≈` extrapolated where it ran fewer "
            f"(fixed s + {target} × s/step). "
            "`fixed s`: everything but the denoising steps (prompt encoding, VACE's VAE encode, VAE decode, "
            "writing the file). `DiT TFLOP/s`: the DiT's FLOPs per step (`benchmarks.metrics.dit_flops`) "
            "over the measured s/step.\n\n" + table.markdown()
        )

    def headline_table(self) -> str:
        """The speed table: stock diffusers, this project (all off, best, turbo) and fp8, with the
        rows skipped for time extrapolated from the same row at another size (labelled)."""
        if not self.headline and not self.baselines:
            return ""
        turbo_steps = self.engine.config.loras.turbo_steps
        names = {
            "stock": "stock diffusers (defaults: 50 steps, guidance 5, 512-position embeddings)",
            "baseline": "this project, all switches off (SDPA)",
            "best": self.best_name,
            "best + fp8": self.best_name + " + fp8",
            "turbo": f"turbo ({turbo_steps} steps, guidance 1; the best settings' attention)",
            "turbo + fp8": "turbo + fp8",
        }
        table = Table(
            "output",
            "row",
            "steps run",
            "s/step",
            "s",
            "vs stock",
            "vs floor",
            "peak GiB",
            "PSNR dB vs bf16",
            "SSIM vs bf16",
            "notes",
        )
        for key in ("image", *(str(f) for f in self.specs.frames)):
            stock = self.headline_run(key, "stock")
            stock_s = stock.estimate(50) if stock is not None and not stock.error else None
            for name in HEADLINE_ROWS:
                run = self.headline_run(key, name)
                if run is None:
                    continue
                if run.error:
                    table.add(run.scenario, names[name], "–", "–", "–", "–", "–", "–", "–", "–", run.error)
                    continue
                target = turbo_steps if name.startswith("turbo") else 50
                est = run.estimate(target)
                floor = self._floor_s(run)
                if run.extrapolated_from:
                    cell = f"≈{fmt(est)}"
                    note = f"extrapolated from the {run.extrapolated_from} row (FLOPs, pixel-frames); not measured"
                else:
                    cell, note = at_steps(run, target), ""
                table.add(
                    run.scenario,
                    names[name],
                    "–" if run.extrapolated_from else run.steps,
                    run.step_s,
                    cell,
                    "1.00×" if name == "stock" else ratio(est, stock_s),
                    ratio(est, floor),
                    "–" if run.extrapolated_from else run.peak_gb,
                    run.stats.get("psnr", "–"),
                    run.stats.get("ssim", "–"),
                    note,
                )
        return (
            "## The speed table (seed 0, same weights; s = fixed s + s/step × the row's steps)\n\n"
            f"`≈`: not measured at that step count: extrapolated from the steps run (fixed s + steps × s/step), "
            "or, where the row says so, from the same row at another size because the time budget ran out. "
            "`vs floor`: against the 50-step compute floor of that size (the DiT's FLOPs with classifier-free "
            f"guidance and the 2048-position context at {FLOOR_FLOPS / 1e12:.0f} TFLOP/s; docs/performance.md), "
            "so a turbo row below 1.00× is under what 50 steps could ever cost. `PSNR/SSIM vs bf16`: "
            "the fp8 row's frames against the same row in bfloat16, same seed. Peak: with the planner "
            "resident (stock: its own, above the engine's models). Goals (one H100/H200): "
            + "; ".join(f"{k}: {v}" for k, v in GOALS.items())
            + ".\n\n"
            + table.markdown()
        )

    def headline_run(self, key: str, name: str) -> GenRun | None:
        """The speed table's row: measured, or (stock, baseline, best, turbo) extrapolated from the
        same row at the nearest measured size; ``None`` when there is nothing to go on."""
        run = self.baselines.get(key) if name == "baseline" else self.headline.get((key, name))
        if run is not None or name.endswith("fp8"):
            return run
        sizes = {"image": 1, **{str(f): f for f in self.specs.frames}}
        known = [
            (k, r)
            for k in sizes
            if (r := (self.baselines.get(k) if name == "baseline" else self.headline.get((k, name))))
            is not None
            and not r.error
            and not r.extrapolated_from
            and math.isfinite(r.step_s)
        ]
        if not known:
            return None
        # The nearest size by ratio of frames (an image is far from every video).
        _, source = min(known, key=lambda kr: abs(math.log(sizes[kr[0]] / sizes[key])))
        w, h = self.specs.image if key == "image" else self.specs.video
        flops = self.cost.step_flops(w, h, sizes[key]) / self.cost.step_flops(
            source.width, source.height, source.num_frames
        )
        pixels = (w * h * sizes[key]) / (source.width * source.height * source.num_frames)
        return GenRun(
            self._label(sizes[key]),
            name,
            0,
            num_frames=sizes[key],
            width=w,
            height=h,
            step_s=source.step_s * flops,
            pre_s=source.pre_s * pixels,
            post_s=source.post_s * pixels,
            extrapolated_from=self._label(source.num_frames),
        )

    def _floor_s(self, run: GenRun) -> float:
        shape = DitShape.from_config(self.specs.dit)
        flops = dit_flops(
            shape, width=run.width, height=run.height, num_frames=run.num_frames, text_len=2048, steps=50
        )
        return flops / FLOOR_FLOPS

    def summary_table(self) -> str:
        """Plan latency, understanding tokens/s and peak memory per mode, in one place."""
        table = Table("what", "measured", "goal")
        s = self.summary
        table.add("plan: unison plan + features, one pass (ms)", s.get("plan_ms"), "≤ 500")
        table.add("plan with the static KV cache (ms)", s.get("plan_ms static"), "≤ 500")
        for key, value in s.items():
            if key.startswith("tokens_per_s "):
                label = key.removeprefix("tokens_per_s ")
                table.add(f"understanding tokens/s, {label}", value, "≥ 60")
        big = self.baselines.get(str(self.specs.frames[-1]))
        if big is not None and not big.error:
            table.add(f"peak GiB, everything resident ({big.scenario})", big.peak_gb, "≤ 24")
        for run in self.offload_runs:
            table.add(
                f"peak GiB, {run.switch} ({run.scenario})",
                run.peak_gb if not run.error else run.error,
                "≤ 12",
            )
        if not table.rows:
            return ""
        return "## Summary: planning, understanding, memory\n\n" + table.markdown()

    def cache_table(self) -> str:
        runs = self.cache_runs
        if not runs:
            return ""
        base = runs[0]
        table = Table("cache", "wall s", "vs uncached", "DiT passes skipped", "PSNR dB", "SSIM", "notes")
        for run in runs:
            if run.error:
                table.add(run.switch, "–", "–", "–", "–", "–", run.error)
                continue
            wall = run.wall_s - run.load_s
            if run is base:
                table.add(run.switch, wall, "1.00×", "–", "reference", "reference", "")
                continue
            quality = (math.nan, math.nan)
            if run.frames is not None and base.frames is not None:
                quality = (psnr(run.frames, base.frames), ssim(run.frames, base.frames))
            calibrating = run.stats.get("calibrated")
            skipped = (
                "–"
                if calibrating
                else f"{run.stats.get('cache_skipped', 0)}/{run.stats.get('cache_passes', 0)}"
            )
            table.add(
                run.switch,
                wall,
                ratio(wall, base.wall_s - base.load_s),
                skipped,
                quality[0],
                quality[1],
                "every step computed; ratios measured" if calibrating else "",
            )
        return (
            f"## Step caches ({base.scenario}, {base.steps} steps, same seed; quality against the uncached "
            "frames)\n\n" + table.markdown() + "\n\nRandom weights: what a cache skips depends on how the "
            "trained model's activations change between steps, so these skip counts, speed-ups and PSNR/SSIM "
            "are not the real model's."
        )

    def lora_table(self) -> str:
        import numpy as np

        rows = self.lora_rows
        if not rows:
            return ""
        measured = [r for r in rows if r.runs and not r.runs[0].error]
        reference = measured[0].runs[0].frames if measured else None
        table = Table(
            "call",
            "median ms",
            "switch ms (set_adapters / disable_lora)",
            "max abs pixel diff vs the first no-LoRA call",
            "notes",
        )
        for row in rows:
            error = row.why_not or next((r.error for r in row.runs if r.error), None)
            if error:
                table.add(row.call, "–", "–", "–", error)
                continue
            frames = row.runs[-1].frames
            diff: float | str = "–"
            if frames is not None and reference is not None:
                diff = float(np.abs(frames.astype(np.int16) - reference.astype(np.int16)).max())
            notes = []
            if len(row.runs) < self.args.repeat:
                notes.append(f"{len(row.runs)} run (time budget)")
            if row.call.startswith("no LoRA again") and diff == 0:
                notes.append("identical to the first no-LoRA call")
            table.add(
                row.call,
                median([r.wall_s - r.load_s for r in row.runs]) * 1e3,
                median(row.switch_s) * 1e3 if row.switch_s else "–",
                diff,
                "; ".join(notes),
            )
        where = ""
        if measured:
            first = measured[0].runs[0]
            where = (
                f" ({first.scenario}, {first.steps} steps, seed 0, guidance 5; median of {self.args.repeat})"
            )
        return (
            f"## User LoRAs (switched per call){where}\n\n"
            "One LoRA loaded once as a named adapter; each call names it or not (`loras: [{name, strength}]`). "
            "`median ms`: the whole call, its own switch included. `switch ms`: "
            "`engine.loras.activate` from the previous call's adapters to this call's, timed alone. "
            "Pixel differences in 0-255 levels: each call's last run against the first no-LoRA run.\n\n"
            + table.markdown()
        )

    def offload_table(self) -> str:
        runs = self.offload_runs
        if not runs:
            return ""
        base = self.baselines.get(str(self.specs.frames[-1]))
        table = Table(
            "mode", "reload s", "s/step", "fixed s", "est. 50 steps s", "vs none", "peak GiB", "notes"
        )
        if base is not None and not base.error:
            table.add(
                "none (the baseline row)",
                "–",
                base.step_s,
                base.pre_s + base.post_s,
                base.estimate(50),
                "1.00×",
                base.peak_gb,
                "",
            )
        for run in runs:
            if run.error:
                table.add(run.switch, "–", "–", "–", "–", "–", "–", run.error)
                continue
            table.add(
                run.switch,
                run.load_s,
                run.step_s,
                run.pre_s + run.post_s,
                run.estimate(50),
                ratio(run.estimate(50), base.estimate(50) if base and not base.error else None),
                run.peak_gb,
                "no-op without CUDA" if not self.cuda else "",
            )
        return (
            f"## Low-VRAM modes ({runs[0].scenario}, {runs[0].steps} steps)\n\n"
            "The planner stays resident on the GPU in these rows (7.5 GB in bf16 for the 3B model); run it "
            "with `--planner-device cpu` for the smallest cards.\n\n" + table.markdown()
        )

    # -- report --

    def report(self) -> str:
        specs = self.specs
        if self.status == "running":
            status = (
                f"**partial**: running `{self.current}` at {self.budget.elapsed:.0f} s of the {self.budget.seconds:.0f} s "
                "budget when this was written (the file is rewritten after every row; a run stopped here leaves this)"
            )
        else:
            status = f"{self.status}: {self.budget.elapsed:.0f} s in all (budget {self.budget.seconds:.0f} s)"
        skipped = ", ".join(f"{name} (~{need:.0f} s)" for name, need in self.budget.skipped)
        head = [
            f"# bench_gpu ({'toy configs on ' + str(self.device) if self.args.toy else 'real configurations'})",
            "",
            f"- status: {status}",
            *[f"- {line}" for line in self.machine],
            f"- models: RANDOM weights, {specs.name} configurations built in code (benchmarks/gpu_models.py): "
            + (
                "the real architectures scaled down, a check that the script runs, no performance figure; "
                if self.args.toy
                else "the real architectures at full size, so speed and memory are real and picture quality "
                "is not; "
            )
            + f"built and saved in {self.build_s:.1f} s, loaded through engine.Engine.preload in {self.load_s:.1f} s",
            f"- the budget counts from the process's start (imports, set-up, every section): {self.budget.seconds:.0f} s"
            + (f"; skipped for time: {skipped}" if skipped else ""),
            f"- command: `python {' '.join(sys.argv)}`",
        ]
        sections = [
            self.headline_table(),
            self.summary_table(),
            *self.sections,
            self.generation_table() if self.runs else "",
            self.lora_table(),
            self.cache_table(),
            self.offload_table(),
        ]
        notes = ["## Notes", "", *[f"- {n}" for n in self.notes]] if self.notes else []
        body = "\n\n".join(x for x in sections if x)
        return "\n".join(head) + "\n\n" + body + ("\n\n" + "\n".join(notes) if notes else "") + "\n"


def at_steps(run: GenRun, steps: int) -> str:
    """A row's seconds at ``steps`` steps: as measured where it ran them all, else ``≈``
    extrapolated from the steps it ran (fixed s + steps × s/step), saying from how many."""
    value = run.estimate(steps)
    return fmt(value) if run.steps >= steps else f"≈{fmt(value)} (from {run.steps} steps)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="scaled-down configs and sizes (runs on a CPU)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    parser.add_argument("--out", type=Path, help="the markdown report, rewritten after every measured row")
    parser.add_argument("--workdir", type=Path, help="where models and outputs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="seconds for the whole run from the process's start (imports, set-up, every section): "
        "parts expected to overrun it are skipped",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per planning/understanding measurement")
    parser.add_argument("--compile-on-cpu", action="store_true", help="time torch.compile on a CPU too")
    parser.add_argument(
        "--user-lora",
        type=Path,
        metavar="PATH",
        help="a local Wan2.1 1.3B LoRA (safetensors) for the user-LoRA rows (with --toy: a random toy one)",
    )
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=[
            "plan",
            "understand",
            "planner_cache",
            "text_cache",
            "generate",
            "stock",
            "turbo",
            "fp8",
            "cache",
            "offload",
            "loras",
        ],
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("bench_gpu").setLevel(logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # Everything is built here: the hub is never needed (and the GPU machine cannot reach it).
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    if args.toy and "OMP_NUM_THREADS" not in os.environ:
        import torch

        # Toy sizes on a CPU: a second thread costs more than it saves, and on a machine shared
        # with other work two threads ran the toy rows 10-40x slower (waiting on each other).
        torch.set_num_threads(1)
    bench = Bench(args)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="unison-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        bench.setup(root)
        bench.run_jobs(bench.jobs(root))
        bench.status = "complete"
    except BaseException as exc:  # the report says why it stopped, then the error goes on
        bench.status = f"stopped by {type(exc).__name__}: {str(exc)[:300]}"
        raise
    finally:
        bench.flush()
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    write_report(bench.report(), None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

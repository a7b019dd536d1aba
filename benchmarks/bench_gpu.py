#!/usr/bin/env python
"""What every request costs on one GPU, with each speed/memory switch off and on.

Builds the full-size models with RANDOM weights from the real configurations (Qwen2.5-VL-3B-Instruct
+ a Unison-style LoRA, Wan2.1-VACE-1.3B with umT5-XXL and the Wan VAE, the projector), saves them
in their real on-disk layouts and loads them through the product's own path (``engine.Engine``), so
no download is needed and the numbers are the product's. Tokenizers come from the tiny models
(``engine.tiny.ensure_tiny``), with the configs' token ids aligned to them.

Measured: plan latency (rules; the Unison planning pass with the projector's features from the same
pass vs a second pass), understanding time to first token and tokens/s, an 832x480 image and 480p
videos of 17, 33 and 81 frames (fewer steps than 50 where time is short: per-step times are
extrapolated to 50 steps and the table says so), peak GPU memory, every switch of
``EngineConfig.performance`` against the baseline in the same run, and the quality a step cache
costs (PSNR/SSIM against the uncached output, same seed).

The speed table of issue 12 (``headline_table``): at each size, stock diffusers
(``WanVACEPipeline.from_pretrained`` on the same weights, called plainly with its defaults: 50
steps, guidance 5, 512-position prompt embeddings; only the step count lowered where stated) beside
this project's best 50-step settings (batched CFG + the first available fast attention backend),
the same with ``quantize="fp8"``, turbo (the step-distillation LoRA's preset: 8 steps, guidance 1)
and turbo + fp8, each with its ratio to stock and to the compute floor, and fp8's output
difference (PSNR/SSIM) against bfloat16 at the same seed. fp8 rows are marked unavailable where
float8 matmuls cannot run (no CUDA GPU of compute capability 8.9+, or no torchao).

User LoRAs switched per call (``run_loras``): on the loaded generator, at the smallest video, a few
steps and one seed, calls with no LoRA, a user LoRA at strength 1.0, at 0.5 and none again (median of
``--repeat`` each), the switch (``set_adapters``/``disable_lora``) timed alone, and each call's
frames against the first no-LoRA call's (the last must equal it). The LoRA is ``--user-lora PATH``
(a Wan2.1 1.3B LoRA; without it a GPU run's rows say "not run"), on ``--toy`` a random toy one.

Random weights time the compute exactly, but not what depends on what the weights say: a random
planner never ends its plan (each plan runs to a fixed token count), and step caches decide what to
skip from how the trained model's activations change, so their speed and quality here are not the
real ones.

    python benchmarks/bench_gpu.py --out docs/bench_gpu_h100.md        # on a CUDA GPU, ~8 min on an H100
    python benchmarks/bench_gpu.py --toy --out /tmp/bench_toy.md       # scaled-down configs on a CPU, ~1.5 min idle
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, describe_machine, fmt, median, ratio, write_report  # noqa: E402
from metrics import DitShape, dit_flops, psnr, ssim  # noqa: E402

log = logging.getLogger("bench_gpu")

PROMPT = "a red fox runs through fresh snow at sunrise, cinematic, detailed fur"
PLAN_REQUEST = "Make a video of waves crashing on a rocky beach at sunset."
UNDERSTAND_PROMPT = "Describe this picture in detail."


# ---------------------------------------------------------------------------------------------
# Model configurations


@dataclass(frozen=True)
class Specs:
    """Model sizes and the benchmark's scenarios: the real ones, or a toy scaled down for CPUs."""

    name: str
    qwen_text: dict[str, Any]
    qwen_vision: dict[str, Any]
    umt5: dict[str, Any]
    dit: dict[str, Any]
    vae: dict[str, Any]
    lora_rank: int
    image: tuple[int, int]  # width, height
    video: tuple[int, int]
    frames: tuple[int, ...]
    steps: dict[str, int]  # scenario -> steps actually run
    plan_tokens: int  # tokens each (random) plan generates
    answer_tokens: int
    turbo_lora_rank: int  # the CausVid 1.3B LoRA is rank 32


#: Qwen2.5-VL-3B-Instruct, Wan2.1-VACE-1.3B (umT5-XXL, Wan VAE): the published configurations.
REAL = Specs(
    name="real",
    qwen_text=dict(
        hidden_size=2048,
        intermediate_size=11008,
        num_hidden_layers=36,
        num_attention_heads=16,
        num_key_value_heads=2,
        vocab_size=151936,
        max_position_embeddings=128000,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    qwen_vision=dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        out_hidden_size=2048,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        in_channels=3,
        tokens_per_second=2,
    ),
    umt5=dict(
        vocab_size=256384,
        d_model=4096,
        d_kv=64,
        d_ff=10240,
        num_layers=24,
        num_heads=64,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
    ),
    dit=dict(
        patch_size=(1, 2, 2),
        num_attention_heads=12,
        attention_head_dim=128,
        in_channels=16,
        out_channels=16,
        text_dim=4096,
        freq_dim=256,
        ffn_dim=8960,
        num_layers=30,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
        # Every other layer: what diffusers' converter and the original VACE code give the 1.3B
        # model (the 14B uses every fifth).
        vace_layers=list(range(0, 30, 2)),
        vace_in_channels=96,
    ),
    vae=dict(
        base_dim=96,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=2,
        temperal_downsample=[False, True, True],
    ),
    lora_rank=16,
    image=(832, 480),
    video=(832, 480),
    frames=(17, 33, 81),
    steps={"image": 50, "17": 10, "33": 8, "81": 4, "cache": 20, "offload": 2, "lora": 4},
    plan_tokens=16,
    answer_tokens=64,
    turbo_lora_rank=32,
)

#: The same architectures scaled down so the whole script runs on a CPU in a minute or two.
TOY = Specs(
    name="toy",
    qwen_text=dict(
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1024,
        max_position_embeddings=128000,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [4, 6, 6]},
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
    ),
    qwen_vision=dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        out_hidden_size=128,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[1],
        in_channels=3,
        tokens_per_second=2,
    ),
    umt5=dict(
        vocab_size=512,
        d_model=64,
        d_kv=16,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        feed_forward_proj="gated-gelu",
    ),
    dit=dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=32,
        in_channels=16,
        out_channels=16,
        text_dim=64,
        freq_dim=256,
        ffn_dim=128,
        num_layers=4,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
        rope_max_seq_len=1024,
        vace_layers=[0, 2],
        vace_in_channels=96,
    ),
    vae=dict(
        base_dim=8,
        z_dim=16,
        dim_mult=[1, 2, 4, 4],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    ),
    lora_rank=4,
    image=(64, 48),
    video=(64, 48),
    frames=(17, 33, 81),
    steps={"image": 4, "17": 3, "33": 3, "81": 3, "cache": 8, "offload": 2, "lora": 2},
    plan_tokens=16,
    answer_tokens=16,
    turbo_lora_rank=4,
)


#: The attention throughput the compute floor assumes (bf16, FlashAttention-3 class on an H100;
#: docs/performance.md, "The compute floor").
FLOOR_FLOPS = 750e12

#: The goals of issue 12 on one H100/H200, for the summary.
#: The adapter name the user-LoRA rows load their file under (what ``--lora user=PATH`` would).
USER_LORA = "user"
#: What the user-LoRA rows say on a run with real configurations and no ``--user-lora``.
NO_USER_LORA = "not run: give --user-lora PATH (a Wan2.1 1.3B LoRA)"

GOALS = {
    "81": "≤ 0.6× stock at 50 steps; turbo ≤ 10 s end to end",
    "image": "≤ 1.5 s at 50 steps; ≤ 0.3 s in turbo",
}


# ---------------------------------------------------------------------------------------------
# Building the models (random weights, real layouts)


@dataclass(frozen=True)
class ModelPaths:
    qwen: Path
    adapter: Path
    wan: Path
    projector: Path
    turbo_lora: Path


@contextmanager
def _default_dtype(dtype: Any):
    import torch

    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


def _free() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_models(specs: Specs, root: Path, device: Any, dtype: Any) -> ModelPaths:
    """Random-weight models from ``specs`` in the layouts ``Engine`` loads (built on ``device``)."""
    from engine.tiny import ensure_tiny
    from engine.tiny import wan as tiny_wan

    tiny = ensure_tiny()
    paths = ModelPaths(
        root / "qwen", root / "adapter", root / "wan", root / "projector.pth", root / "turbo_lora.safetensors"
    )
    t0 = time.perf_counter()
    _build_qwen(specs, tiny.qwen, tiny.adapter, paths, device, dtype)
    log.info("planner + adapter built in %.0f s", time.perf_counter() - t0)
    t0 = time.perf_counter()
    _build_wan(specs, tiny.wan, paths.wan, device, dtype)
    log.info("generator built in %.0f s", time.perf_counter() - t0)
    tiny_wan.build_projector(
        paths.projector,
        hidden_size=specs.qwen_text["hidden_size"],
        text_dim=specs.umt5["d_model"],
    )
    _build_turbo_lora(specs, paths.turbo_lora)
    return paths


def _build_turbo_lora(specs: Specs, path: Path) -> None:
    """A random step-distillation-sized LoRA for the DiT, in the original-Wan layout the CausVid
    LoRA ships in (``diffusion_model.blocks.N.{self_attn,cross_attn}.{q,k,v,o}``, ``ffn.{0,2}``),
    so it goes through diffusers' conversion. Small values: the outputs stay finite."""
    import torch
    from safetensors.torch import save_file

    dim = specs.dit["num_attention_heads"] * specs.dit["attention_head_dim"]
    ffn, rank = specs.dit["ffn_dim"], specs.turbo_lora_rank
    g = torch.Generator().manual_seed(2)
    state: dict[str, Any] = {}

    def pair(prefix: str, fan_in: int, fan_out: int) -> None:
        state[f"{prefix}.lora_A.weight"] = torch.randn(rank, fan_in, generator=g) * 1e-3
        state[f"{prefix}.lora_B.weight"] = torch.randn(fan_out, rank, generator=g) * 1e-3

    for i in range(specs.dit["num_layers"]):
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                pair(f"diffusion_model.blocks.{i}.{attn}.{proj}", dim, dim)
        pair(f"diffusion_model.blocks.{i}.ffn.0", dim, ffn)
        pair(f"diffusion_model.blocks.{i}.ffn.2", ffn, dim)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(path))


def _build_qwen(
    specs: Specs, tiny_qwen: Path, tiny_adapter: Path, paths: ModelPaths, device: Any, dtype: Any
):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoTokenizer,
        GenerationConfig,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
    )

    from engine.planners.adapter import untie_word_embeddings
    from engine.tiny.qwen import LORA_TARGETS

    tiny_cfg = json.loads((tiny_qwen / "config.json").read_text())
    ids = {
        k: tiny_cfg[k]
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    text = dict(specs.qwen_text, bos_token_id=tiny_cfg["bos_token_id"], eos_token_id=tiny_cfg["eos_token_id"])
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(specs.qwen_vision),
        tie_word_embeddings=specs.qwen_text["tie_word_embeddings"],
        architectures=["Qwen2_5_VLForConditionalGeneration"],
        **ids,
    )
    torch.manual_seed(0)
    with torch.device(device), _default_dtype(dtype):
        model = Qwen2_5_VLForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_pretrained(tiny_qwen)
    model.save_pretrained(paths.qwen)
    for name in (
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.json",
        "chat_template.jinja",
        "preprocessor_config.json",
    ):
        if (tiny_qwen / name).exists():
            shutil.copy(tiny_qwen / name, paths.qwen / name)

    # The Unison adapter: a LoRA on the text attention, embed_tokens and lm_head saved whole, the
    # tokenizer with the 14 added tokens (from the tiny adapter: same base tokenizer).
    tok = AutoTokenizer.from_pretrained(tiny_adapter)
    untie_word_embeddings(model)
    lora = LoraConfig(
        r=specs.lora_rank,
        lora_alpha=2 * specs.lora_rank,
        target_modules=LORA_TARGETS,
        modules_to_save=["embed_tokens", "lm_head"],
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(paths.adapter)
    tok.save_pretrained(paths.adapter)
    del model, peft_model
    _free()


def _build_wan(specs: Specs, tiny_wan_dir: Path, out: Path, device: Any, dtype: Any) -> None:
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanVACEPipeline,
        WanVACETransformer3DModel,
    )
    from transformers import AutoTokenizer, UMT5Config, UMT5EncoderModel

    tokenizer = AutoTokenizer.from_pretrained(tiny_wan_dir / "tokenizer")
    torch.manual_seed(1)
    with torch.device(device), _default_dtype(dtype):
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                **specs.umt5, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0
            )
        ).eval()
        transformer = WanVACETransformer3DModel(**specs.dit)
    with torch.device(device):
        vae = AutoencoderKLWan(**specs.vae)  # the VAE runs in float32
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=5.0
    )
    pipe = WanVACEPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )
    pipe.save_pretrained(out, safe_serialization=True)
    del pipe, text_encoder, transformer, vae
    _free()


# ---------------------------------------------------------------------------------------------
# Timing


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
    def __init__(self, seconds: float):
        self.seconds = seconds
        self.start = time.perf_counter()
        self.skipped: list[str] = []

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
        self.skipped.append(what)
        return False


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


def _step_times(run: GenRun, t0: float, stamps: list[float], t_end: float) -> None:
    """s/step (median interval between step ends), the fixed time before and after the steps."""
    if len(stamps) >= 2:
        run.step_s = median([b - a for a, b in zip(stamps, stamps[1:], strict=False)])
        run.pre_s = stamps[0] - t0 - run.step_s - run.load_s
        run.post_s = t_end - stamps[-1]


# ---------------------------------------------------------------------------------------------
# The benchmark


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
        if not self.cuda:
            return None
        import torch

        return torch.cuda.max_memory_allocated() / 2**30

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

    def run_all(self, skip: set[str]) -> None:
        """Every generation row, most important first, so a spent budget drops the least useful."""
        from engine.config import PerformanceOptions as P

        specs = self.specs
        scenarios = [("image", 1)] + [(str(f), f) for f in specs.frames]
        big_key, big = scenarios[-1]
        backends = self.attention_backends() if "generate" not in skip else []
        jobs: list[tuple[str, Callable[[], float], Callable[[], None]]] = []

        def cost(key: str, factor: float = 1.0, extra: float = 0.0) -> Callable[[], float]:
            """Expected seconds: a multiple of that size's measured baseline (0 before it exists)."""

            def estimate() -> float:
                base = self.baselines.get(key)
                wall = base.wall_s if base is not None and not base.error else 0.0
                return factor * wall + extra

            return estimate

        nothing = cost("", 0.0)

        def cost_all(factor: float, extra: float = 0.0) -> Callable[[], float]:
            """Expected seconds: a multiple of every size's baseline together."""
            return lambda: sum(cost(k, factor)() for k, _ in scenarios) + extra

        best = P(batch_cfg=True, attention_backend=backends[0] if backends else None)
        self.best_name = "best 50-step: batch_cfg" + (f" + {backends[0]}" if backends else " (SDPA)")

        def row(key: str, frames: int, name: str, options: Any, into: list[GenRun] | None = None) -> None:
            run = self.generate(self._label(frames), frames, specs.steps[key], name, options)
            (self.runs if into is None else into).append(run)
            if name.startswith("baseline"):
                self.baselines[key] = run

        if "generate" not in skip:
            for key, frames in scenarios:  # 1. everything off, every size
                jobs.append((f"warm-up {key}", nothing, lambda f=frames: self.warm_up(f)))
                jobs.append(
                    (
                        f"baseline {key}",
                        nothing,
                        lambda k=key, f=frames: row(k, f, "baseline (SDPA, all off)", P()),
                    )
                )
            # The speed table: stock diffusers (while diffusers' active attention is still SDPA, as a
            # fresh process has it), the best exact 50-step settings and turbo at every size.
            if "stock" not in skip:
                jobs.append(("stock diffusers", cost_all(1.3, 30.0), lambda: self.run_stock(scenarios)))
            for key, frames in scenarios:
                jobs.append(
                    (
                        f"best {key}",
                        cost(key, 1.3),
                        lambda k=key, f=frames: self.headline_row(k, f, "best", best),
                    )
                )
            for key, frames in scenarios if "turbo" not in skip else []:
                jobs.append(
                    (
                        f"turbo {key}",
                        cost(key, 0.8),
                        lambda k=key, f=frames: self.headline_row(k, f, "turbo", best, turbo=True),
                    )
                )
            for key, frames in scenarios:  # 2. batched CFG, every size
                jobs.append(
                    (
                        f"batch_cfg {key}",
                        cost(key),
                        lambda k=key, f=frames: row(k, f, "batch_cfg", P(batch_cfg=True)),
                    )
                )
            for b in backends:  # 3. attention backends at the largest video
                jobs.append(
                    (
                        f"attention {b}",
                        cost(big_key),
                        lambda b=b: row(big_key, big, f"attention_backend={b}", P(attention_backend=b)),
                    )
                )
        if "loras" not in skip:
            # Before fp8: an adapter cannot be added to a float8 layer (engine/loras.py).
            lora_key, lora_frames = scenarios[1]  # the smallest video
            share = specs.steps["lora"] / specs.steps[lora_key]
            # 13 generations (a warm-up, then 4 calls x 3) of a few steps, the file read once.
            jobs.append(
                (
                    "user LoRAs",
                    cost(lora_key, 13 * max(share, 0.5), 5.0),
                    lambda k=lora_key, f=lora_frames: self.run_loras(k, f),
                )
            )
        if "generate" not in skip and "fp8" not in skip:
            # fp8 last before the low-VRAM modes: float8 weights cannot go back, and those reload anyway.
            jobs.append(("fp8", cost_all(2.5, 20.0), lambda: self.run_fp8(scenarios, best)))
        if "offload" not in skip:  # 4. low-VRAM modes at the largest video
            for mode in ("model", "group", "text_encoder_cpu"):
                jobs.append(
                    (
                        f"offload {mode}",
                        cost(big_key, 1.0, 30.0),  # + reloading the pipeline
                        lambda m=mode: row("offload", big, f"offload={m}", P(offload=m), self.offload_runs),
                    )
                )
        if "cache" not in skip:  # 5. step caches and their quality
            first = str(specs.frames[0])
            ratio_steps = specs.steps["cache"] / specs.steps[first]
            jobs.append(("caches", cost(first, 5 * ratio_steps, 10.0), self.run_caches))
        if "generate" not in skip:
            if self.cuda or self.args.compile_on_cpu:  # 6. regional compile (compiles in its warm-up)
                # Two compiles (batch 1, then 2) plus four runs at the largest size.
                jobs.append(
                    ("compile", cost(big_key, 4.0, 90.0), lambda: self.run_compile(big_key, big, backends))
                )
            else:
                self.notes.append(
                    "regional compile: not run on the CPU by default (inductor builds C++ for each block shape, "
                    "tens of seconds to minutes here); pass --compile-on-cpu to include it"
                )
            jobs.append(
                (
                    "vae_tiling",
                    cost(big_key, 1.2),
                    lambda: row(big_key, big, "vae_tiling", P(vae_tiling=True)),
                )
            )
        for name, need, job in jobs:
            if self.budget.allows(name, need()):
                job()
        self.use_options(P())

    def headline_row(
        self, key: str, frames: int, name: str, options: Any, *, turbo: bool = False, warm: bool = True
    ) -> GenRun:
        """One row of the speed table (after a warm-up at this size with the same options)."""
        if warm:
            self.warm_up(frames, options, turbo=turbo)
        steps = None if turbo else self.specs.steps[key]
        run = self.generate(self._label(frames), frames, steps, name, options, turbo=turbo)
        self.headline[(key, name)] = run
        return run

    def run_stock(self, scenarios: list[tuple[str, int]]) -> None:
        """Stock diffusers on the same weights: ``WanVACEPipeline.from_pretrained`` and a plain call
        (its defaults: 50 steps, guidance 5, negative prompt "", 512-position prompt embeddings, its
        own scheduler config); only the size, the frame count, a seed, a step-end timestamp and
        (where the table says so) fewer steps are passed. No project code runs in the timed path."""
        import torch
        from diffusers import AutoencoderKLWan, WanVACEPipeline

        resident = self._reset_peak() or 0.0
        t0 = time.perf_counter()
        try:
            # As diffusers' Wan documentation loads it: the VAE in float32, the rest in bf16 (the
            # project's precision too).
            vae = AutoencoderKLWan.from_pretrained(self.paths.wan, subfolder="vae", torch_dtype=torch.float32)
            pipe = WanVACEPipeline.from_pretrained(self.paths.wan, vae=vae, torch_dtype=self.dtype)
            pipe = pipe.to(self.device)
        except Exception as exc:  # out of memory, most likely: its rows say so
            log.warning("stock diffusers failed to load: %s", exc)
            for key, frames in scenarios:
                run = GenRun(self._label(frames), "stock diffusers", 0, num_frames=frames)
                run.error = f"{type(exc).__name__}: {exc}"[:160]
                self.headline[(key, "stock")] = run
            _free()
            return
        pipe.set_progress_bar_config(disable=True)  # tqdm on stderr only; not part of the work
        load_s = time.perf_counter() - t0
        try:
            for key, frames in scenarios:
                base = self.baselines.get(key)
                if not self.budget.allows(
                    f"stock {key}", 1.3 * base.wall_s if base and not base.error else 0.0
                ):
                    continue
                self._stock_once(pipe, frames, 1)  # warm-up, as every other row has
                run = self._stock_once(pipe, frames, self.specs.steps[key])
                if run.peak_gb is not None:
                    run.peak_gb -= resident  # its own: above the engine's models, resident meanwhile
                self.headline[(key, "stock")] = run
        finally:
            del pipe, vae
            _free()
        self.notes.append(
            f"stock diffusers: `WanVACEPipeline.from_pretrained` of the same weights in {load_s:.1f} s; its rows "
            "write no file (the project's include writing the PNG/MP4) and its peak is its own, above "
            "the engine's models resident beside it"
        )

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
        run.peak_gb = self._peak()
        run.wall_s = t_end - t0
        _step_times(run, t0, stamps, t_end)
        return run

    def run_fp8(self, scenarios: list[tuple[str, int]], best: Any) -> None:
        """The best 50-step settings and turbo with the DiT's linears in float8, and their output
        difference against the bfloat16 rows at the same seed; "unavailable" rows where float8
        cannot run."""
        from engine import quantize

        def unavailable(why: str) -> None:
            for key, frames in scenarios:
                for name in ("best + fp8", "turbo + fp8"):
                    run = GenRun(self._label(frames), name, 0, num_frames=frames)
                    run.error = why
                    self.headline[(key, name)] = run

        reason = quantize.fp8_unavailable(self.device)
        if reason is not None:
            unavailable(
                "unavailable (torchao missing)" if "torchao" in reason else "unavailable (needs CUDA sm89+)"
            )
            self.notes.append(f"fp8: not measured here: {reason}")
            return
        fp8 = best.model_copy(update={"quantize": "fp8"})
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
        families = [("best + fp8", False)] + (
            [("turbo + fp8", True)] if "turbo" not in self.args.skip else []
        )
        for name, turbo in families:
            for key, frames in scenarios:
                base = self.headline.get((key, name.removesuffix(" + fp8")))
                if not self.budget.allows(
                    f"{name} {key}", 2.0 * base.wall_s if base and not base.error else 0.0
                ):
                    continue
                run = self.headline_row(key, frames, name, fp8, turbo=turbo)
                if base is not None and base.frames is not None and run.frames is not None:
                    run.stats["psnr"] = psnr(run.frames, base.frames)
                    run.stats["ssim"] = ssim(run.frames, base.frames)

    def run_compile(self, key: str, frames: int, backends: list[str]) -> None:
        from engine.config import PerformanceOptions as P

        options = P(compile=True)
        t0 = time.perf_counter()
        self.warm_up(frames, options)
        self.notes.append(
            f"regional compile: the first {self._label(frames)} run (1 step, compiling the blocks) took "
            f"{time.perf_counter() - t0:.0f} s"
        )
        self.runs.append(
            self.generate(self._label(frames), frames, self.specs.steps[key], "compile", options)
        )
        best = P(compile=True, batch_cfg=True, attention_backend=backends[0] if backends else None)
        base = self.baselines.get(key)
        if self.budget.allows(
            "compile + batch_cfg + best attention", 2 * (base.wall_s if base else 0.0) + 45
        ):
            self.warm_up(frames, best)  # a batch of two is a new shape: compiled again
            name = "compile + batch_cfg" + (f" + {backends[0]}" if backends else "")
            self.runs.append(self.generate(self._label(frames), frames, self.specs.steps[key], name, best))

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
        self.cache_runs.append(self.generate(label, frames, steps, "uncached", P()))
        for name, options in (
            ("first_block 0.05", P(cache="first_block", cache_threshold=0.05)),
            ("first_block 0.10", P(cache="first_block", cache_threshold=0.10)),
            ("mag 0.06: calibration run", P(cache="mag", cache_threshold=0.06)),
            ("mag 0.06", P(cache="mag", cache_threshold=0.06)),
        ):
            if self.budget.allows(f"cache {name}", self.cache_runs[0].wall_s):
                self.cache_runs.append(self.generate(label, frames, steps, name, options))
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
            if run.steps < target:
                notes.append(f"s/step x {target}")
            table.add(
                run.scenario,
                run.switch,
                run.steps,
                run.step_s,
                run.pre_s + run.post_s,
                est,
                ratio(est, base.estimate(target) if base else None),
                flops_step / run.step_s / 1e12,
                run.peak_gb,
                "; ".join(notes),
            )
        return (
            f"## Generation (seed 0, guidance 5, the Unison context of 2048 positions; est. {target} steps = "
            "fixed s + s/step x 50)\n\n"
            "`fixed s`: everything but the denoising steps (prompt encoding, VACE's VAE encode, VAE decode, "
            "writing the file). `DiT TFLOP/s`: the DiT's FLOPs per step (`benchmarks.metrics.dit_flops`) "
            "over the measured s/step.\n\n" + table.markdown()
        )

    def headline_table(self) -> str:
        """The speed table: stock diffusers, this project's best 50-step settings, fp8, turbo."""
        if not self.headline and not self.baselines:
            return ""
        shape = DitShape.from_config(self.specs.dit)
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
            "est. s",
            "vs stock",
            "vs floor",
            "peak GiB",
            "PSNR dB vs bf16",
            "SSIM vs bf16",
            "notes",
        )
        keys = [k for k in ["image", *(str(f) for f in self.specs.frames)]]
        for key in keys:
            stock = self.headline.get((key, "stock"))
            stock_s = stock.estimate(50) if stock is not None and not stock.error else None
            for name, label in names.items():
                run = self.baselines.get(key) if name == "baseline" else self.headline.get((key, name))
                if run is None:
                    continue
                if run.error:
                    table.add(run.scenario, label, "–", "–", "–", "–", "–", "–", "–", "–", run.error)
                    continue
                target = turbo_steps if name.startswith("turbo") else 50
                est = run.estimate(target)
                floor = (
                    dit_flops(
                        shape,
                        width=run.width,
                        height=run.height,
                        num_frames=run.num_frames,
                        text_len=2048,
                        steps=50,
                    )
                    / FLOOR_FLOPS
                )
                notes = [f"s/step x {target}"] if run.steps < target else []
                table.add(
                    run.scenario,
                    label,
                    run.steps,
                    run.step_s,
                    est,
                    "1.00×" if run is stock else ratio(est, stock_s),
                    ratio(est, floor),
                    run.peak_gb,
                    run.stats.get("psnr", "–"),
                    run.stats.get("ssim", "–"),
                    "; ".join(notes),
                )
        return (
            "## The speed table (seed 0, same weights; est. s = fixed s + s/step × the row's steps)\n\n"
            f"`vs floor`: against the 50-step compute floor of that size (the DiT's FLOPs with classifier-free "
            f"guidance and the 2048-position context at {FLOOR_FLOPS / 1e12:.0f} TFLOP/s; docs/performance.md), "
            "so a turbo row below 1.00× is under what 50 steps could ever cost. `PSNR/SSIM vs bf16`: "
            "the fp8 row's frames against the same row in bfloat16, same seed. Peak: with the planner "
            "resident (stock: its own). Goals (one H100/H200): "
            + "; ".join(f"{k}: {v}" for k, v in GOALS.items())
            + ".\n\n"
            + table.markdown()
        )

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
        head = [
            f"# bench_gpu ({'toy configs on ' + str(self.device) if self.args.toy else 'real configurations'})",
            "",
            *[f"- {line}" for line in describe_machine()],
            f"- models: random weights, {specs.name} configurations; built and saved in {self.build_s:.1f} s, "
            f"loaded through engine.Engine.preload in {self.load_s:.1f} s",
            f"- total benchmark time {self.budget.elapsed:.0f} s (budget {self.args.budget_s:.0f} s)"
            + (f"; skipped for time: {', '.join(self.budget.skipped)}" if self.budget.skipped else ""),
            f"- command: `python {' '.join(sys.argv)}`",
        ]
        sections = [
            self.headline_table(),
            self.summary_table(),
            *self.sections,
            self.generation_table() if self.runs else "",
            self.lora_table(),
            self.cache_table(),
        ]
        sections.append(self.offload_table())
        notes = ["## Notes", "", *[f"- {n}" for n in self.notes]] if self.notes else []
        body = "\n\n".join(x for x in sections if x)
        return "\n".join(head) + "\n\n" + body + ("\n\n" + "\n".join(notes) if notes else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--toy", action="store_true", help="scaled-down configs and sizes (runs on a CPU)")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU even when CUDA is available")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    parser.add_argument("--workdir", type=Path, help="where models and outputs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--budget-s",
        type=float,
        default=450.0,
        help="seconds for the whole run, models included: rows expected to overrun it are skipped",
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

    bench = Bench(args)
    root = args.workdir or Path(tempfile.mkdtemp(prefix="unison-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        bench.setup(root)
        if "plan" not in args.skip:
            bench.bench_plan()
        if "understand" not in args.skip:
            bench.bench_understand(root)
        if "planner_cache" not in args.skip:
            bench.bench_planner_cache()
        if "text_cache" not in args.skip:
            bench.bench_text_cache()
        bench.run_all(set(args.skip))
        write_report(bench.report(), args.out)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The full-size models of ``bench_gpu.py``, built in code with RANDOM weights: no hub, no download.

The lent GPU machine reaches no network, so the real Wan2.1-VACE-1.3B and Qwen2.5-VL-3B weights
cannot get there. Instead each model is constructed from its published configuration (written
out below, ``REAL``) with the library's own class (``Qwen2_5_VLForConditionalGeneration(config)``,
``UMT5EncoderModel``, ``WanVACETransformer3DModel``, ``AutoencoderKLWan``: the real
architectures, full size, randomly initialised directly on the GPU), saved in the on-disk layouts
the engine loads and loaded back through ``engine.Engine``. Speed and memory depend on the shapes,
not on the values, so they are measured honestly at full size; what depends on the values (a plan
that ends, what a step cache skips, picture quality) is not, and the report says so. ``TOY`` is
the same architectures scaled down, for a CPU. Tokenizers come from the tiny models
(``engine.tiny.ensure_tiny``), with the configs' token ids aligned to them.
"""

from __future__ import annotations

import gc
import json
import logging
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_gpu")


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
    #: What the budget expects before anything is measured (``bench_gpu.CostModel``): the DiT's
    #: throughput, the seconds outside the denoising steps per million output pixel-frames (VAE
    #: encode and decode, prompt encoding, writing), and each section that is no generation row.
    prior_flops: float
    prior_fixed_s_per_mpf: float
    section_s: dict[str, float]


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
    # SDPA in bf16 on an H100 runs the DiT at a few hundred TFLOP/s; the VAE at 832x480 costs
    # roughly 0.1-0.2 s per frame. Set-up-like sections: reading 16 GB of generator weights back
    # (stock diffusers, a reload), compiling the planner's decode step or the DiT's blocks.
    prior_flops=300e12,
    prior_fixed_s_per_mpf=0.4,
    section_s=dict(
        plan=15,
        understand=30,
        text_cache=10,
        planner_cache=90,
        stock_load=40,
        reload=40,
        fp8_convert=20,
        compile=150,
        user_lora_load=5,
    ),
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
    prior_flops=5e9,
    prior_fixed_s_per_mpf=30.0,
    section_s=dict(
        plan=5,
        understand=5,
        text_cache=2,
        planner_cache=10,
        stock_load=2,
        reload=2,
        fp8_convert=1,
        compile=60,
        user_lora_load=1,
    ),
)


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


def free() -> None:
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
    free()


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
    free()

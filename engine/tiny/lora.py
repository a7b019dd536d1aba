"""A tiny Wan LoRA in the original-Wan (non-diffusers) layout the published Wan LoRAs use.

Keys ``diffusion_model.blocks.N.{self_attn,cross_attn}.{q,k,v,o}.lora_A.weight`` /
``.lora_B.weight`` and ``diffusion_model.blocks.N.ffn.{0,2}.lora_*``, one safetensors file, as
in the CausVid and Lightx2v LoRAs for Wan2.1: diffusers' ``WanLoraLoaderMixin.lora_state_dict``
converts it to the diffusers names, so the tiny one goes through the same conversion as a real one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

log = logging.getLogger(__name__)

#: Rank of the tiny LoRA (published Wan LoRAs use 32-128).
RANK = 4


def build_lora(path: Path, *, wan_dir: Path, seed: int = 0, scale: float = 0.5) -> None:
    """Write a random LoRA for the tiny Wan DiT under ``wan_dir`` to ``path`` (safetensors).

    ``lora_B`` is random too (a trained LoRA's is, a fresh one's is zero), so it changes outputs.
    """
    from safetensors.torch import save_file

    config = json.loads((wan_dir / "transformer" / "config.json").read_text(encoding="utf-8"))
    dim = int(config["num_attention_heads"]) * int(config["attention_head_dim"])
    ffn = int(config["ffn_dim"])
    g = torch.Generator().manual_seed(seed)

    def pair(prefix: str, fan_in: int, fan_out: int) -> dict[str, torch.Tensor]:
        return {
            f"{prefix}.lora_A.weight": torch.randn(RANK, fan_in, generator=g) * scale,
            f"{prefix}.lora_B.weight": torch.randn(fan_out, RANK, generator=g) * scale,
        }

    state: dict[str, torch.Tensor] = {}
    for i in range(int(config["num_layers"])):
        for attn in ("self_attn", "cross_attn"):
            for proj in ("q", "k", "v", "o"):
                state |= pair(f"diffusion_model.blocks.{i}.{attn}.{proj}", dim, dim)
        state |= pair(f"diffusion_model.blocks.{i}.ffn.0", dim, ffn)
        state |= pair(f"diffusion_model.blocks.{i}.ffn.2", ffn, dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    log.info("tiny Wan LoRA (rank %d, %d tensors) written to %s", RANK, len(state), path)

"""Tiny random-initialised stage-two models in the real on-disk formats.

- :func:`build_wan` writes a diffusers ``WanVACEPipeline`` directory (``model_index.json``,
  ``text_encoder/``, ``tokenizer/``, ``vae/``, ``transformer/``, ``scheduler/``) that loads back
  through ``WanVACEPipeline.from_pretrained`` exactly like ``Wan-AI/Wan2.1-VACE-1.3B-diffusers``;
- :func:`build_projector` writes a ``projector.pth`` state dict in the released layout (``module.``
  prefix on every key);
- :func:`text_dim` reads the umT5 width back from a saved pipeline directory.

Sizes are the ones diffusers' own Wan-VACE tests use, so everything runs on a CPU in well under a
second per step. Every builder is seeded: the same seed gives byte-identical weights.
"""

from __future__ import annotations

import json
import logging
import string
from pathlib import Path

log = logging.getLogger(__name__)

#: umT5 width of the tiny text encoder; the DiT's ``text_dim`` must equal it.
TINY_TEXT_DIM = 32


def _tokenizer_vocab() -> list[tuple[str, float]]:
    """A small Unigram vocabulary that covers any ASCII text without falling back to ``<unk>``.

    T5's layout: ``<pad>`` = 0, ``</s>`` = 1, ``<unk>`` = 2. Word-initial pieces (``▁a``) score a
    little higher than bare characters so a word splits as ``▁w`` + ``o`` + ``r`` + ``d``.
    """
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    chars = string.ascii_lowercase + string.ascii_uppercase + string.digits + string.punctuation
    vocab += [(f"\u2581{c}", -3.0) for c in chars]
    vocab += [(c, -4.0) for c in chars]
    return vocab


def _build_tokenizer():
    from transformers import T5Tokenizer

    # extra_ids=0: the sentinel tokens are only used for T5's span-corruption training.
    return T5Tokenizer(vocab=_tokenizer_vocab(), extra_ids=0, model_max_length=512)


def tiny_transformer(*, seed: int = 0):
    """The tiny ``WanVACETransformer3DModel`` (diffusers' own test sizes), seeded."""
    import torch
    from diffusers import WanVACETransformer3DModel

    torch.manual_seed(seed)
    return WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=TINY_TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=3,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        # 32 rotary positions per axis bound what this model runs: engine.config.TINY_LIMITS.
        rope_max_seq_len=32,
        vace_layers=[0, 2],
        vace_in_channels=96,
    )


def build_wan(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny ``WanVACEPipeline`` directory to ``out_dir`` (created; must not hold a model)."""
    import torch
    from diffusers import (
        AutoencoderKLWan,
        UniPCMultistepScheduler,
        WanVACEPipeline,
    )
    from transformers import UMT5Config, UMT5EncoderModel

    out_dir = Path(out_dir)
    tokenizer = _build_tokenizer()

    torch.manual_seed(seed)
    text_config = UMT5Config(
        vocab_size=len(tokenizer),
        d_model=TINY_TEXT_DIM,
        d_kv=8,
        d_ff=64,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        relative_attention_max_distance=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )
    text_encoder = UMT5EncoderModel(text_config).eval()

    torch.manual_seed(seed + 1)
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )

    transformer = tiny_transformer(seed=seed + 2)

    # The real Wan2.1-VACE diffusers repo ships UniPC configured for flow matching.
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=5.0,
    )

    pipe = WanVACEPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(out_dir, safe_serialization=True)
    log.info("tiny Wan-VACE pipeline written to %s", out_dir)


def build_projector(path: Path, *, hidden_size: int, text_dim: int, seed: int = 0) -> None:
    """``torch.save`` a projector state dict in the released layout (``module.`` prefix)."""
    import torch

    from ..projector import Projector  # torch at its top, as this function

    generator = torch.Generator().manual_seed(seed)
    model = Projector(hidden_size, text_dim=text_dim)
    state = {}
    for key, value in model.state_dict().items():
        # Not the default init: LayerNorms at exactly 1/0 would hide a load that silently did nothing.
        if key.startswith(("ln_in.", "ln_out.")):
            base = 1.0 if key.endswith(".weight") else 0.0
            value = base + 0.1 * torch.randn(value.shape, generator=generator)
        else:
            value = 0.05 * torch.randn(value.shape, generator=generator)
        state[f"module.{key}"] = value.contiguous()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    log.info("tiny projector (hidden %d -> text %d) written to %s", hidden_size, text_dim, path)


def text_dim(wan_dir: Path) -> int:
    """The umT5 width (``d_model``) of a saved ``WanVACEPipeline`` directory."""
    config = json.loads((Path(wan_dir) / "text_encoder" / "config.json").read_text(encoding="utf-8"))
    return int(config["d_model"])

"""FP8 on Ada/Hopper: the DiT's linear layers in float8 (``performance.quantize = "fp8"``).

torchao's float8 dynamic quantization (``Float8DynamicActivationFloat8WeightConfig``, per-row
scales): each selected ``nn.Linear`` keeps its weight as float8 e4m3 with one scale per output
row, and scales each input row to float8 as it arrives, so the matmul runs on the float8 tensor
cores (``torch._scaled_mm``) and returns bfloat16. Everything else of the pipeline (umT5, the VAE,
norms, attention itself, the embedders) stays in the configured dtype.

Applied once, when the generator loads, after every LoRA is in: LoRA layers (peft) wrap the linear
as ``base_layer``; only that base layer goes to float8, the adapters' own small ``lora_A`` /
``lora_B`` stay in bfloat16 and are added unmerged, so turbo and user LoRAs still switch per call.
An adapter cannot be added to a float8 layer afterwards, so with fp8 the generator loads the turbo
LoRA at load time rather than on the first turbo call (``Generator._install``).

:func:`check_quantize` refuses the setting before any weight is read where it cannot run: a device
that is not CUDA with compute capability 8.9 or newer, a dtype other than bfloat16, an offload mode
that moves the DiT's weights, torchao missing. This module imports torch lazily; torchao is
imported only when fp8 is asked for (it is the optional extra ``unison-mcp[fp8]``).
"""

from __future__ import annotations

import importlib.util
import logging
from typing import TYPE_CHECKING, Any

from .config import PerformanceOptions
from .errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: Float8 tensor cores: Ada (8.9: L4, L40S, RTX 40xx) and Hopper (9.0: H100, H200) or newer.
FP8_MIN_CAPABILITY = (8, 9)
#: ``torch._scaled_mm`` needs both matrix sides to be multiples of 16.
FP8_ALIGN = 16
#: The DiT's repeated blocks (30 main, 15 VACE): where all but a fraction of a percent of its
#: matmul FLOPs are.
QUANTIZED_PARTS = ("blocks", "vace_blocks")
#: What to install for fp8.
TORCHAO_HINT = "pip install 'unison-mcp[fp8]' (torchao>=0.12)"
#: Offload modes that leave the DiT's weights on the GPU (the others move them, and torchao's
#: float8 weights are not made to be moved by offload hooks).
FP8_OFFLOADS = ("none", "text_encoder_cpu")
#: Marks a DiT already quantized (a pipeline handed over by ``Generator.with_options``).
_MARK = "_unison_quantized"


def fp8_unavailable(device: torch.device) -> str | None:
    """Why float8 matmuls cannot run on ``device`` here (``None``: they can).

    Checks the device and its compute capability, then torchao; the reason says what was found
    (for :func:`check_quantize`'s errors and ``unison-mcp doctor``).
    """
    import torch

    if device.type != "cuda":
        return f"needs a CUDA GPU of compute capability 8.9+ (Ada or Hopper); the device here is {device}"
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_MIN_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        return (
            f"needs a CUDA GPU of compute capability 8.9+ (Ada or Hopper); {device} is {name}, "
            f"compute capability {capability[0]}.{capability[1]}"
        )
    return torchao_missing()


def torchao_missing() -> str | None:
    """Why torchao's float8 API cannot be used (``None``: it can), without importing it if absent."""
    if importlib.util.find_spec("torchao") is None:
        return f"torchao is not installed ({TORCHAO_HINT})"
    try:
        from torchao.quantization import (  # noqa: F401
            Float8DynamicActivationFloat8WeightConfig,
            PerRow,
            quantize_,
        )
    except ImportError as exc:  # too old (no per-row float8), or built for another torch
        return f"torchao cannot provide float8 quantization here ({exc}); {TORCHAO_HINT}"
    return None


def check_quantize(options: PerformanceOptions, device: torch.device, dtype: torch.dtype) -> None:
    """Refuse ``options.quantize`` before any weight loads where it cannot run.

    The device, its dtype and the offload mode are :class:`InvalidRequest` (another setting fixes
    it); torchao missing is a :class:`ModelError` saying what to install.
    """
    import torch

    if options.quantize == "none":
        return
    setting = f"quantize={options.quantize!r}"
    if device.type != "cuda" or torch.cuda.get_device_capability(device) < FP8_MIN_CAPABILITY:
        reason = fp8_unavailable(device)
        raise InvalidRequest(
            f"{setting}: {reason}; use --quantize none on this machine",
            field="quantize",
            value=options.quantize,
            rule="needs CUDA compute capability 8.9+",
        )
    if dtype != torch.bfloat16:
        raise InvalidRequest(
            f"{setting}: needs dtype bfloat16 (per-row float8 matmuls return bfloat16); dtype is "
            f"{str(dtype).removeprefix('torch.')}: use --dtype auto or bfloat16",
            field="quantize",
            value=options.quantize,
            rule="needs dtype bfloat16",
        )
    if options.offload not in FP8_OFFLOADS:
        raise InvalidRequest(
            f"{setting}: does not combine with offload={options.offload!r}, which moves the DiT's "
            f"weights; use offload {' or '.join(repr(o) for o in FP8_OFFLOADS)}",
            field="quantize",
            value=options.quantize,
            rule="needs the DiT resident on the GPU",
        )
    missing = torchao_missing()
    if missing is not None:
        raise ModelError(f"{setting}: {missing}")


def fp8_linear_names(transformer: Any) -> list[str]:
    """The names (as ``transformer.named_modules`` gives them) of the linear layers fp8 converts.

    Every ``nn.Linear`` inside the repeated blocks (:data:`QUANTIZED_PARTS`: attention projections,
    feed-forward, the VACE blocks' hint projections) whose in and out features are both multiples
    of :data:`FP8_ALIGN` (the float8 matmul's rule; a layer off that grid stays as it is). Left out
    on purpose: the time and text embedders and the time projection (one small row per step or
    once per prompt, so nothing to gain, and the timestep modulation is the most precision-
    sensitive input of the model) and the output head ``proj_out`` (64 outputs straight into the
    latents). Under a LoRA the selected layer is peft's ``base_layer``; the adapters' own
    ``lora_A`` / ``lora_B`` are never selected (they stay in bfloat16 and switch per call).
    """
    import torch

    names = []
    for name, module in transformer.named_modules():
        parts = name.split(".")
        if parts[0] not in QUANTIZED_PARTS or not isinstance(module, torch.nn.Linear):
            continue
        if any(p.startswith("lora_") for p in parts):
            continue
        if module.in_features % FP8_ALIGN or module.out_features % FP8_ALIGN:
            continue
        names.append(name)
    return names


def quantize_dit(transformer: Any, mode: str) -> int:
    """Convert ``transformer``'s :func:`fp8_linear_names` layers for ``mode`` in place, once.

    ``"none"`` does nothing; a DiT already quantized (handed over between generators) is left as
    it is. Returns how many layers are in float8. Call :func:`check_quantize` first.
    """
    if mode == "none":
        return 0
    done = getattr(transformer, _MARK, None)
    if done is not None:
        return int(done)
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, PerRow, quantize_

    names = set(fp8_linear_names(transformer))
    # One scale per row of activations and weights: finer than per tensor (an outlier row does not
    # flatten the others) at the same kernel speed on Hopper. set_inductor_config=False: torchao
    # would otherwise change torch.compile's global settings for the whole process.
    config = Float8DynamicActivationFloat8WeightConfig(granularity=PerRow(), set_inductor_config=False)
    quantize_(transformer, config, filter_fn=lambda _module, fqn: fqn in names)
    setattr(transformer, _MARK, len(names))
    log.info("fp8: %d DiT linear layers in float8 (per-row dynamic activation + weight)", len(names))
    return len(names)


def can_hand_over(current: str, wanted: str) -> bool:
    """Whether a pipeline loaded with quantize ``current`` can serve ``wanted`` without reloading:
    the same mode, or plain weights quantized now (float8 weights cannot go back)."""
    return current == wanted or current == "none"

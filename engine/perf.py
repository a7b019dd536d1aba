"""Speed and memory switches for the Wan-VACE pipeline (``EngineConfig.performance``).

Each switch of :class:`~engine.config.PerformanceOptions` is applied here to a loaded
``WanVACEPipeline`` once, when the generator loads (:func:`apply_options`); other options mean
another generator (``Generator.with_options``), never an undo. Only ``offload`` decides where the
weights live, so changing it means loading the pipeline again.

- ``attention_backend``: diffusers' ``set_attention_backend`` on the DiT (``None``: PyTorch SDPA).
- ``compile``: regional ``torch.compile`` of the repeated DiT blocks.
- ``batch_cfg``: the conditional and unconditional DiT passes of a step as one batch of two
  (:class:`engine.hooks.BatchedCFGHook`).
- ``cache``: diffusers' First-Block cache or MagCache on the DiT blocks, with a fix for VACE (see
  :class:`engine.hooks.PinHook`); MagCache calibrates its ratios on the first run (:class:`MagProbe`).
- ``vae_tiling``: ``vae.enable_tiling()``.
- ``offload``: model CPU offload, group offload, or umT5 kept on the CPU (:func:`place_pipeline`);
  on a machine without CUDA there is nothing to offload to and the mode is a logged no-op.

What a switch costs in quality (PSNR/SSIM) and the compute floor (FLOP counts) are the
benchmarks' business: ``benchmarks/metrics.py``. This module imports torch at the top (import it
lazily: the generator does); diffusers' hooks, whose package imports peft (over a second), only
when a switch that installs one is used: :mod:`engine.hooks` (batched CFG, a step cache, group
offload). A test checks that importing this module imports neither diffusers nor peft.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from .config import PerformanceOptions
from .errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    from .hooks import CacheStats

log = logging.getLogger(__name__)

# --- attention ----------------------------------------------------------------------------------

#: Backends that run on a CPU (PyTorch's own kernels); every other one needs CUDA.
CPU_ATTENTION_BACKENDS = frozenset({"native", "_native_math", "_native_flash", "flex"})

#: What to install for backends that need a package (diffusers' own message says it too).
_INSTALL_HINTS = {
    "flash": "pip install flash-attn",
    "flash_varlen": "pip install flash-attn",
    "_flash_3": "build FlashAttention 3 from flash-attn's hopper/ directory (H100/H200 only)",
    "_flash_varlen_3": "build FlashAttention 3 from flash-attn's hopper/ directory (H100/H200 only)",
    "sage": "pip install sageattention",
    "sage_varlen": "pip install sageattention",
    "xformers": "pip install xformers",
}


def _install_hint(name: str) -> str:
    if name.endswith("_hub"):
        return "pip install kernels; the kernel is fetched from the Hugging Face hub on first use"
    if name.startswith("_sage"):
        return "pip install sageattention"
    return _INSTALL_HINTS.get(name, "see diffusers' attention backends documentation")


def check_attention_backend(name: str | None, device: torch.device) -> str | None:
    """Validate ``attention_backend`` before any weights load; returns the normalised name.

    An unknown name is an ``InvalidRequest`` listing the valid ones; a backend whose package is
    missing is a ``ModelError`` saying what to install; a CUDA-only backend on another device is an
    ``InvalidRequest``.
    """
    if name is None:
        return None
    from diffusers.models.attention_dispatch import AttentionBackendName

    key = name.lower()
    valid = sorted(b.value for b in AttentionBackendName)
    if key not in valid:
        raise InvalidRequest.for_field(
            "attention_backend", name, f"must be one of {', '.join(valid)}, or unset for PyTorch SDPA"
        )
    try:  # private in diffusers: without it the same check runs in set_attention_backend
        from diffusers.models.attention_dispatch import _check_attention_backend_requirements
    except ImportError:  # pragma: no cover - depends on the diffusers version
        _check_attention_backend_requirements = None
    if _check_attention_backend_requirements is not None:
        try:
            _check_attention_backend_requirements(AttentionBackendName(key))
        except RuntimeError as exc:
            raise ModelError(
                f"attention_backend={name!r} is not usable here: {exc} (to install: {_install_hint(key)})"
            ) from exc
    if device.type != "cuda" and key not in CPU_ATTENTION_BACKENDS:
        raise InvalidRequest.for_field(
            "attention_backend",
            name,
            f"needs a CUDA device; on {device.type} use one of {', '.join(sorted(CPU_ATTENTION_BACKENDS))}",
        )
    return key


def set_attention_backend(transformer: Any, name: str | None) -> None:
    """Route the DiT's attention through ``name`` (``None``: PyTorch SDPA, diffusers' "native").

    diffusers also makes the backend the process-wide active one, which a pipeline loaded later
    would inherit, so "unset" names SDPA explicitly rather than only clearing the module's choice.
    """
    try:
        transformer.set_attention_backend(name or "native")
    except (RuntimeError, ValueError) as exc:
        raise ModelError(
            f"attention_backend={name!r}: {exc} (to install: {_install_hint(name or '')})"
        ) from exc
    log.info("attention backend of the DiT: %s", name or "native (PyTorch SDPA)")


# --- regional compilation -----------------------------------------------------------------------


def compile_blocks(transformer: Any, *, backend: str = "inductor", mode: str | None = None) -> int:
    """Regional ``torch.compile``: each repeated DiT block (main and VACE) is compiled on its own.

    One compiled graph per block class serves all 45 blocks of Wan2.1-VACE-1.3B, so compiling
    takes seconds rather than minutes, with the speed of a whole-model compile. ``fullgraph`` stays
    off because cache hooks on the blocks call code dynamo must not trace. Returns how many
    modules were compiled.
    """
    names = set(getattr(transformer, "_repeated_blocks", None) or ())
    modules = [m for m in transformer.modules() if type(m).__name__ in names]
    if not modules:  # an architecture without _repeated_blocks: compile its block lists
        modules = [b for attr in ("blocks", "vace_blocks") for b in getattr(transformer, attr, ())]
    for module in modules:
        module.compile(backend=backend, mode=mode)
    log.info("compiled %d DiT blocks (backend %s)", len(modules), backend)
    return len(modules)


def uncompile_blocks(transformer: Any) -> None:
    """Back to eager blocks (weights hooked for ``compile`` before, now without it):
    ``nn.Module.compile`` only sets ``_compiled_call_impl``."""
    for module in transformer.modules():
        if getattr(module, "_compiled_call_impl", None) is not None:
            module._compiled_call_impl = None


def compiled_blocks(transformer: Any) -> int:
    return sum(getattr(m, "_compiled_call_impl", None) is not None for m in transformer.modules())


# --- batched classifier-free guidance -----------------------------------------------------------

BATCH_CFG_HOOK = "unison_batch_cfg"


@contextmanager
def batched_cfg(transformer: Any, positive: torch.Tensor, negative: torch.Tensor | None) -> Iterator[Any]:
    """Install the batched-CFG hook on ``transformer`` for one pipeline call (yields it, or None).

    Installed per run and removed afterwards, so that nothing outlives the call even when an
    offload mode re-wraps ``forward`` between runs.
    """
    if negative is None:  # no classifier-free guidance: one pass per step already
        yield None
        return
    from . import hooks  # lazy: diffusers' hooks (their package imports peft)

    hook = hooks.BatchedCFGHook(positive, negative)
    registry = hooks.register(transformer, hook, BATCH_CFG_HOOK)
    installed = transformer.forward
    try:
        yield hook
    finally:
        current = transformer.forward
        registry.remove_hook(BATCH_CFG_HOOK, recurse=False)
        if current is not installed:
            # Someone (accelerate's offload hooks) re-wrapped forward during the run: keep theirs.
            transformer.forward = current
    if hook.batched == 0:
        log.warning("batch_cfg: the pipeline's calls were not recognised; the run was not batched")


# --- caches -------------------------------------------------------------------------------------

PIN_HOOK = "unison_cache_pin"


def _blocks(transformer: Any) -> list[torch.nn.Module]:
    return list(transformer.blocks)


def enable_cache(
    transformer: Any,
    mode: str,
    *,
    threshold: float,
    steps: int | None = None,
    mag_ratios: list[float] | None = None,
) -> CacheStats:
    """Apply diffusers' ``first_block`` cache or ``mag`` cache to the DiT (plus the VACE pin,
    :class:`engine.hooks.PinHook`)."""
    if mode not in ("first_block", "mag"):
        raise InvalidRequest.for_field("cache", mode, "must be none, first_block or mag")
    if mode == "mag" and (not mag_ratios or not steps):
        raise ModelError("cache='mag' needs calibrated ratios and the step count")
    from . import hooks  # lazy: diffusers' hooks (their package imports peft)

    transformer.enable_cache(hooks.cache_config(mode, threshold, steps=steps, mag_ratios=mag_ratios))
    stats = hooks.CacheStats()
    blocks = _blocks(transformer)
    for i, block in enumerate(blocks):
        hooks.register(block, hooks.PinHook(stats, head=i == 0, tail=i == len(blocks) - 1), PIN_HOOK)
    hooks.invalidate(transformer)
    return stats


def disable_cache(transformer: Any) -> None:
    """Remove every cache hook (and the pins); the DiT computes every pass again."""
    from . import hooks  # lazy: diffusers' hooks (their package imports peft)

    for block in _blocks(transformer):
        registry = getattr(block, "_diffusers_hook", None)
        if registry is not None and registry.get_hook(PIN_HOOK) is not None:
            registry.remove_hook(PIN_HOOK, recurse=False)
    if getattr(transformer, "is_cache_enabled", False):
        transformer.disable_cache()
    hooks.invalidate(transformer)


def cache_hook_count(transformer: Any) -> int:
    """How many cache-related hooks sit on the DiT's blocks (0 once the cache is off)."""
    count = 0
    for module in transformer.modules():
        registry = getattr(module, "_diffusers_hook", None)
        if registry is None:
            continue
        count += sum(
            ("cache" in name or name.startswith("fbc") or name == PIN_HOOK) for name in registry.hooks
        )
    return count


class MagProbe:
    """Measures MagCache's ratios on one uncached run: ``mean_tokens(|r_t| / |r_t-1|)`` per step.

    ``r_t`` is the residual the DiT's blocks add in step ``t`` (last block's output minus first
    block's input), in the conditional pass. diffusers' own calibration mode prints its result to
    stdout, which belongs to the MCP protocol here, hence this probe (same formula).
    """

    def __init__(self, transformer: Any, calls_per_step: int):
        blocks = _blocks(transformer)
        self.calls_per_step = max(1, calls_per_step)
        self._input: torch.Tensor | None = None
        self._norms: list[torch.Tensor] = []
        self._handles = [
            blocks[0].register_forward_pre_hook(self._pre, with_kwargs=True),
            blocks[-1].register_forward_hook(self._post),
        ]

    def _pre(self, module: Any, args: tuple, kwargs: dict) -> None:
        self._input = args[0] if args else kwargs["hidden_states"]

    def _post(self, module: Any, args: tuple, output: Any) -> None:
        out = output[0] if isinstance(output, tuple) else output
        if self._input is None or out.shape != self._input.shape:
            return
        residual = (out - self._input).float()
        self._norms.append(torch.linalg.norm(residual, dim=-1).cpu())  # (B, tokens)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()

    def ratios(self) -> list[float]:
        norms = self._norms[:: self.calls_per_step]  # the conditional pass of each step
        ratios = [1.0]
        for prev, cur in zip(norms, norms[1:], strict=False):
            ratios.append(float((cur / (prev + 1e-8)).mean()))
        return ratios


# --- VAE tiling ---------------------------------------------------------------------------------


def set_vae_tiling(vae: Any, enabled: bool) -> None:
    if enabled:
        vae.enable_tiling()
    else:
        vae.disable_tiling()


# --- placement and offload ----------------------------------------------------------------------


def place_pipeline(pipe: Any, offload: str, device: torch.device) -> str:
    """Put the pipeline's weights where ``offload`` says; returns what was done, for the logs.

    ``none``: everything on ``device``. ``model``: each model moves to the device only while it
    runs (accelerate's model CPU offload). ``group``: the DiT streams its blocks one at a time and
    umT5 its layers, overlapped with compute on a CUDA stream; the VAE stays resident.
    ``text_encoder_cpu``: umT5-XXL (11 GB in bf16) stays on the CPU, its embeddings are moved to
    the device. Without CUDA there is nothing to offload to: the mode is logged and ignored.
    """
    if offload != "none" and device.type != "cuda":
        log.info(
            "offload=%r has no effect on %s (no accelerator memory to save): all on %s",
            offload,
            device,
            device,
        )
        offload = "none"
    if offload == "none":
        pipe.to(device)
        return f"all on {device}"
    if offload == "model":
        if importlib.util.find_spec("accelerate") is None:
            raise ModelError("offload='model' needs the accelerate package: pip install accelerate")
        pipe.enable_model_cpu_offload(device=device)
        return "model CPU offload"
    if offload == "group":
        group_offload(pipe, onload=device, offload=torch.device("cpu"))
        return "group offload (DiT per block, umT5 per layer)"
    if offload == "text_encoder_cpu":
        pipe.text_encoder.to("cpu")
        for name in ("transformer", "vae"):
            getattr(pipe, name).to(device)
        return "umT5 on the CPU"
    raise InvalidRequest.for_field("offload", offload, "must be none, model, group or text_encoder_cpu")


def group_offload(pipe: Any, *, onload: torch.device, offload: torch.device) -> None:
    """diffusers group offloading: DiT at block level, umT5 at leaf level, VAE resident."""
    stream = onload.type == "cuda"  # prefetch the next group while this one computes
    pipe.transformer.enable_group_offload(
        onload_device=onload,
        offload_device=offload,
        offload_type="block_level",
        num_blocks_per_group=1,
        use_stream=stream,
    )
    from diffusers.hooks import apply_group_offloading  # lazy: the package imports peft

    # umT5's layers sit below encoder.block, which block level does not look into: leaf level.
    apply_group_offloading(
        pipe.text_encoder,
        onload_device=onload,
        offload_device=offload,
        offload_type="leaf_level",
        use_stream=stream,
    )
    pipe.vae.to(onload)


def text_encoder_device(pipe: Any, offload: str, device: torch.device) -> torch.device:
    """Where prompts are encoded: the CPU for ``text_encoder_cpu`` on CUDA, else the execution device."""
    if offload == "text_encoder_cpu" and device.type == "cuda":
        return torch.device("cpu")
    return pipe._execution_device


# --- applying the options -----------------------------------------------------------------------


@dataclass
class RunStats:
    """What the switches did in one run (reported by the benchmarks)."""

    batched_passes: int = 0
    cache: str = "none"
    cache_passes: int = 0
    cache_skipped: int = 0
    calibrated: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_options(options: PerformanceOptions, device: torch.device) -> None:
    """Validate every switch before anything loads."""
    check_attention_backend(options.attention_backend, device)
    if options.cache != "none" and not options.cache_threshold > 0:
        raise InvalidRequest.for_field(
            "cache_threshold", options.cache_threshold, "must be above 0 (larger skips more)"
        )


def apply_options(
    pipe: Any, options: PerformanceOptions, device: torch.device, *, compile_backend: str = "inductor"
) -> Applied:
    """Set every switch but ``offload`` on a placed pipeline to what ``options`` say, once.

    Each switch is set outright rather than changed from a remembered previous state, so the
    same call serves freshly loaded weights and weights a previous generator hooked for other
    options (see ``Generator.with_options``): the attention backend is always named, VAE tiling
    set either way, any earlier cache hooks removed before the wanted one goes on, and blocks are
    compiled or restored to match. ``offload`` was decided when the weights were placed
    (:func:`place_pipeline`).
    """
    check_options(options, device)
    transformer = pipe.transformer
    set_attention_backend(transformer, options.attention_backend)
    set_vae_tiling(pipe.vae, options.vae_tiling)
    if cache_hook_count(transformer) or getattr(transformer, "is_cache_enabled", False):
        disable_cache(transformer)  # hooks a previous generator of these weights installed
    cache = None
    if options.cache == "first_block":
        cache = enable_cache(transformer, "first_block", threshold=options.cache_threshold)
    # MagCache goes on after its calibration run (see Applied.running): its ratios are measured.
    if options.cache != "none":
        log.info("DiT cache: %s (threshold %.3g)", options.cache, options.cache_threshold)
    if options.compile and not compiled_blocks(transformer):
        compile_blocks(transformer, backend=compile_backend)
    elif not options.compile and compiled_blocks(transformer):
        uncompile_blocks(transformer)
    return Applied(pipe, options, cache)


class Applied:
    """The options as applied to one loaded pipeline, and the per-run work they need.

    Built by :func:`apply_options` and never re-applied: different options mean a new generator.
    The only state that changes is MagCache's, which calibrates on its first run and then sets
    itself for each run's step count.
    """

    def __init__(self, pipe: Any, options: PerformanceOptions, cache: CacheStats | None):
        self.pipe = pipe
        self.options = options
        self.mag_ratios: list[float] | None = None
        self._cache_stats = cache
        self._cache_steps: int | None = None

    @property
    def transformer(self) -> Any:
        return self.pipe.transformer

    def _enable_mag(self, steps: int) -> None:
        disable_cache(self.transformer)
        self._cache_stats = enable_cache(
            self.transformer,
            "mag",
            threshold=self.options.cache_threshold,
            steps=steps,
            mag_ratios=self.mag_ratios,  # set by the calibration run before this is called
        )
        self._cache_steps = steps

    @contextmanager
    def running(
        self, *, steps: int, positive: torch.Tensor, negative: torch.Tensor | None
    ) -> Iterator[RunStats]:
        """Per-run work around one pipeline call: batched CFG, MagCache steps or calibration."""
        opts = self.options
        stats = RunStats(cache=opts.cache)
        probe: MagProbe | None = None
        if opts.cache == "mag":
            if self.mag_ratios is None:
                calls = 2 if (negative is not None and not opts.batch_cfg) else 1
                probe = MagProbe(self.transformer, calls_per_step=calls)
                stats.calibrated = True
                log.info("MagCache: calibrating on this run (every step computed)")
            elif self._cache_steps != steps:
                # MagCache counts steps to know where it is in the schedule: set for this count.
                self._enable_mag(steps)
        cache = self._cache_stats
        if cache is not None:
            cache.passes = cache.skipped = 0
            cache.head_output = None
        cfg = batched_cfg(self.transformer, positive, negative if opts.batch_cfg else None)
        try:
            with cfg as hook:
                yield stats
            if hook is not None:
                stats.batched_passes = hook.batched
        finally:
            if probe is not None:
                probe.remove()
                ratios = probe.ratios()
                if len(ratios) >= 2:
                    self.mag_ratios = ratios
                    self._enable_mag(steps)
                    log.info(
                        "MagCache calibrated over %d steps: %s", len(ratios), [round(r, 3) for r in ratios]
                    )
            if cache is not None:
                stats.cache_passes, stats.cache_skipped = cache.passes, cache.skipped
                cache.head_output = None  # do not keep a DiT activation alive between runs

"""The two hooks :mod:`engine.perf` puts on the DiT, on diffusers' hook machinery.

Importing ``diffusers.hooks`` runs its package's ``__init__``, which imports peft and, through it,
transformers' modelling code (over a second on a small CPU), so this module is imported only when
a switch that installs a hook is used: batched classifier-free guidance (:class:`BatchedCFGHook`)
or a step cache (:class:`PinHook` beside diffusers' own cache hooks). ``engine.perf`` holds the
switches themselves and imports this module inside the functions that need it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import FirstBlockCacheConfig, HookRegistry, MagCacheConfig, ModelHook


def register(module: torch.nn.Module, hook: ModelHook, name: str) -> HookRegistry:
    """``hook`` registered on ``module`` under ``name``; returns the module's registry."""
    registry = HookRegistry.check_if_exists_or_initialize(module)
    registry.register_hook(hook, name)
    return registry


def invalidate(transformer: torch.nn.Module) -> None:
    """Make the DiT's registry see hooks added to or removed from its blocks."""
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()


def cache_config(
    mode: str, threshold: float, *, steps: int | None = None, mag_ratios: list[float] | None = None
) -> Any:
    """diffusers' configuration of the ``first_block`` or ``mag`` cache (the mode checked by the caller)."""
    if mode == "first_block":
        return FirstBlockCacheConfig(threshold=threshold)
    return MagCacheConfig(threshold=threshold, num_inference_steps=steps, mag_ratios=list(mag_ratios or ()))


# --- batched classifier-free guidance -----------------------------------------------------------


@dataclass
class _Pending:
    hidden_states: torch.Tensor
    timestep: torch.Tensor
    output: Any


class BatchedCFGHook(ModelHook):
    """One forward of batch 2B instead of two of batch B for each denoising step.

    ``WanVACEPipeline`` calls the DiT twice per step with the same ``hidden_states`` and
    ``timestep`` tensors: first with ``prompt_embeds`` (under ``cache_context("cond")``), then with
    ``negative_prompt_embeds`` (``"uncond"``); see the loop in ``pipeline_wan_vace.py``. On the
    conditional call this hook runs both contexts as one batch, returns the conditional half and
    keeps the unconditional half; the unconditional call that follows, recognised by the very same
    latents and timestep objects and the negative context, gets the kept half without running the
    model. Any other call (no CFG, a different caller) runs unchanged, so the hook is exact: the
    result equals the unbatched one up to floating-point summation order.
    """

    def __init__(self, positive: torch.Tensor, negative: torch.Tensor):
        super().__init__()
        self.positive = positive
        self.negative = negative
        self.pending: _Pending | None = None
        self.batched = 0  # batched forwards run
        self.served = 0  # unconditional calls answered from the batch

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        forward = self.fn_ref.original_forward
        pending, self.pending = self.pending, None
        context = kwargs.get("encoder_hidden_states")
        x = kwargs.get("hidden_states")
        t = kwargs.get("timestep")
        if args or context is None or x is None or t is None:
            return forward(*args, **kwargs)
        if (
            pending is not None
            and _same(context, self.negative)
            and x is pending.hidden_states
            and t is pending.timestep
        ):
            self.served += 1
            return pending.output
        if not _same(context, self.positive) or self.negative.shape[1:] != context.shape[1:]:
            return forward(*args, **kwargs)
        n = x.shape[0]
        batched = dict(kwargs)
        batched["hidden_states"] = torch.cat([x, x])  # (2B, C, F, H, W)
        batched["timestep"] = torch.cat([t, t])  # (2B,)
        batched["encoder_hidden_states"] = torch.cat(
            [context, self.negative.expand_as(context)]
        )  # (2B, L, D)
        control = kwargs.get("control_hidden_states")
        if control is not None:
            batched["control_hidden_states"] = torch.cat([control, control])  # (2B, 96, F, H, W)
        out = forward(**batched)
        self.batched += 1
        cond, uncond = _split_output(out, n)
        self.pending = _Pending(hidden_states=x, timestep=t, output=uncond)
        return cond


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    # The pipeline only casts the contexts (a no-op when the dtype already matches), so identity,
    # or at worst the same storage, recognises them without comparing values.
    return a is b or (a.shape == b.shape and a.data_ptr() == b.data_ptr() and a.dtype == b.dtype)


def _split_output(out: Any, n: int) -> tuple[Any, Any]:
    if isinstance(out, tuple):
        first, second = out[0][:n], out[0][n:]
        return (first, *out[1:]), (second, *out[1:])
    sample = out.sample
    return type(out)(sample=sample[:n]), type(out)(sample=sample[n:])


# --- the step caches' VACE pin ------------------------------------------------------------------


@dataclass
class CacheStats:
    """What a cache did during one run: DiT passes through the blocks, and how many it skipped."""

    passes: int = 0
    skipped: int = 0
    head_output: torch.Tensor | None = field(default=None, repr=False)


class PinHook(ModelHook):
    """Keep a skipped pass equal to what the cache meant: ``head output + cached residual``.

    diffusers' First-Block cache and MagCache skip a pass by returning the cached result from the
    first block and letting every later block hand its input through. In Wan-VACE the transformer
    adds a VACE hint after each block listed in ``vace_layers``, outside the blocks; those hints
    are already inside the cached residual, so handing inputs through adds them a second time (with
    identical inputs a skipped pass then differs from the computed one by the sum of the hints).
    This hook, outermost on each block, records the first block's output and, when a later block
    hands its input back unchanged (the cache's "skip"), returns that recorded output instead, so
    the hints added in between are dropped. Passes that compute are untouched.
    """

    def __init__(self, stats: CacheStats, *, head: bool, tail: bool):
        super().__init__()
        self.stats = stats
        self.head = head
        self.tail = tail

    def new_forward(self, module: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        out = self.fn_ref.original_forward(*args, **kwargs)
        stats = self.stats
        if self.head:
            stats.head_output = out
            return out
        x = args[0] if args else kwargs.get("hidden_states")
        skipped = out is x
        if self.tail:
            stats.passes += 1
            stats.skipped += int(skipped)
        if skipped and stats.head_output is not None:
            return stats.head_output
        return out

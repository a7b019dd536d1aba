"""Sampling settings resolved: a request's overrides filled from the configured defaults.

What a generation actually used (steps, guidance, seed, shift, LoRAs...), decided once before
the job's first model call and written into every sidecar. No torch here: the engine resolves a
request's sampling before it loads anything.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from .bounds import Bounds
from .config import Limits, LoraSettings, SamplingDefaults
from .errors import InvalidRequest
from .results import Sampling

#: Upper bound (exclusive) of a seed drawn when the request gives none: short enough to retype.
RANDOM_SEED_RANGE = 2**32


@dataclass(frozen=True)
class ResolvedSampling:
    """Sampling settings with every default filled in; what a run actually used."""

    steps: int
    guidance: float
    seed: int
    negative_prompt: str
    conditioning_scale: float
    flow_shift: float
    text_len: int
    max_sequence_length: int
    seed_was_random: bool = False
    #: Candidates from consecutive seeds: ``seed``, ``seed + 1``, ...
    count: int = 1
    #: The text umT5 encoded (set by the engine: the prompt, or the request with placeholders).
    umt5_prompt: str = ""
    #: Sampled with the step-distillation LoRA (its preset filled the unset steps/guidance/shift).
    turbo: bool = False
    #: User LoRAs active in this run: ``(name, strength)`` (checked against the loaded ones at run).
    loras: tuple[tuple[str, float | None], ...] = ()

    @property
    def seeds(self) -> list[int]:
        return [(self.seed + k) % RANDOM_SEED_RANGE for k in range(self.count)]


def resolve_sampling(
    sampling: Sampling | None,
    defaults: SamplingDefaults,
    *,
    limits: Limits | None = None,
    loras: LoraSettings | None = None,
) -> ResolvedSampling:
    """Fill per-request overrides from the configured defaults; draw (and report) a random seed
    when none is given. With ``limits``, ``steps`` above ``limits.max_steps`` is refused.

    Turbo (``sampling.turbo``, else ``loras.turbo``) takes its steps, guidance and flow shift from
    ``loras``' turbo preset instead of ``defaults`` (a request's own values still win).
    """
    sampling = sampling or Sampling()
    loras = loras or LoraSettings()
    turbo = bool(loras.turbo if sampling.turbo is None else sampling.turbo)
    if turbo:
        if loras.turbo_lora is None:
            raise InvalidRequest.for_field("turbo", True, "needs a turbo LoRA (turbo_lora is 'none')")
        defaults = defaults.model_copy(
            update={
                "steps": loras.turbo_steps,
                "guidance": loras.turbo_guidance,
                "flow_shift": loras.turbo_flow_shift,
            }
        )

    def pick(value: Any, default: Any) -> Any:
        return default if value is None else value

    steps = int(pick(sampling.steps, defaults.steps))
    if limits is not None:
        Bounds.of(limits).steps.check("steps", steps)
    seed_was_random = sampling.seed is None
    seed = random.SystemRandom().randrange(RANDOM_SEED_RANGE) if seed_was_random else int(sampling.seed)
    return ResolvedSampling(
        steps=steps,
        guidance=float(pick(sampling.guidance, defaults.guidance)),
        seed=seed,
        negative_prompt=str(pick(sampling.negative_prompt, defaults.negative_prompt)),
        conditioning_scale=float(pick(sampling.conditioning_scale, defaults.conditioning_scale)),
        flow_shift=float(pick(sampling.flow_shift, defaults.flow_shift)),
        text_len=defaults.text_len,
        max_sequence_length=defaults.max_sequence_length,
        seed_was_random=seed_was_random,
        count=int(pick(sampling.count, 1)),
        turbo=turbo,
        loras=tuple((c.name, c.strength) for c in sampling.loras or ()),
    )

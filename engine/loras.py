"""LoRAs on the generator's DiT: the turbo step distillation and the user's style LoRAs.

Each file is loaded once, when the pipeline loads, as a named diffusers adapter
(``load_lora_weights(..., adapter_name=NAME)``); a call then only switches which adapters are
active and at what strength (``set_adapters`` / ``disable_lora``), so nothing is read again. With
no adapter active every LoRA layer returns its base layer's output alone: the call gives exactly
what the pipeline gave before any LoRA was loaded.

This module imports torch lazily; parsing the settings needs nothing heavy.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import EngineConfig
from .errors import InvalidRequest, ModelError
from .hub import resolve_weights_file

log = logging.getLogger(__name__)

#: The adapter name of the step-distillation LoRA (not a name a user LoRA may take).
TURBO = "turbo"
#: Strengths a user LoRA may have (in the settings and per call); beyond them outputs saturate.
MIN_STRENGTH, MAX_STRENGTH = -4.0, 4.0
#: Adapter names: what diffusers and peft accept as module attribute keys, and short to type.
NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


@dataclass(frozen=True)
class LoraSpec:
    """One configured LoRA: its adapter name, its file (local path or ``owner/repo/file``)."""

    name: str
    path: str
    strength: float = 1.0


def check_strength(field: str, value: float) -> float:
    """``value`` as a float when it lies in ``[MIN_STRENGTH, MAX_STRENGTH]``, else InvalidRequest."""
    if not MIN_STRENGTH <= value <= MAX_STRENGTH:
        raise InvalidRequest.for_field(field, value, f"must be between {MIN_STRENGTH:g} and {MAX_STRENGTH:g}")
    return float(value)


def parse_lora(text: str) -> LoraSpec:
    """``NAME=PATH[:STRENGTH]`` -> :class:`LoraSpec` (a trailing ``:number`` is the strength, so a
    Windows drive letter or a path with colons still reads as a path)."""
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep or not rest.strip():
        raise InvalidRequest.for_field("lora", text, "must be NAME=PATH[:STRENGTH]")
    if not NAME_PATTERN.fullmatch(name) or name == TURBO:
        raise InvalidRequest.for_field(
            "lora", text, f"NAME must be a letter then letters, digits, _ or - (and not {TURBO!r})"
        )
    path, strength = rest.strip(), 1.0
    head, colon, tail = path.rpartition(":")
    if colon and head:
        try:
            strength = float(tail)
        except ValueError:
            pass  # no strength: the colon belongs to the path
        else:
            path = head
    if not MIN_STRENGTH <= strength <= MAX_STRENGTH:
        raise InvalidRequest.for_field(
            "lora", text, f"STRENGTH must be between {MIN_STRENGTH:g} and {MAX_STRENGTH:g}"
        )
    return LoraSpec(name=name, path=path, strength=strength)


def configured(config: EngineConfig) -> dict[str, LoraSpec]:
    """The user LoRAs of ``config`` by name (``--lora``), checked; a repeated name is an error."""
    out: dict[str, LoraSpec] = {}
    for text in config.loras.adapters:
        spec = parse_lora(text)
        if spec.name in out:
            raise InvalidRequest.for_field("lora", text, f"the name {spec.name!r} is given twice")
        out[spec.name] = spec
    return out


def resolve_choices(
    choices: Sequence[tuple[str, float | None]], available: dict[str, LoraSpec]
) -> tuple[tuple[str, float], ...]:
    """A request's ``loras`` as ``(name, strength or None)`` -> ``((name, strength), ...)`` among
    ``available``; a missing strength is the configured one."""
    out: dict[str, float] = {}
    for k, (name, strength) in enumerate(choices):
        field = f"loras[{k}]"
        spec = available.get(name)
        if spec is None:
            known = ", ".join(sorted(available)) or "none (configure them with --lora NAME=PATH)"
            raise InvalidRequest.for_field(
                f"{field}.name", name, f"is not a configured LoRA; configured: {known}"
            )
        if name in out:
            raise InvalidRequest.for_field(f"{field}.name", name, "is given twice")
        out[name] = check_strength(f"{field}.strength", spec.strength if strength is None else strength)
    return tuple(out.items())


def _adapter_layers(transformer: Any, name: str) -> int:
    """How many of the DiT's layers carry adapter ``name`` (0: the file matched nothing)."""
    return sum(1 for m in transformer.modules() if name in getattr(m, "lora_A", {}))


def load_adapter(pipe: Any, spec: LoraSpec, *, what: str, config: EngineConfig) -> None:
    """Load ``spec``'s file into ``pipe``'s DiT as adapter ``spec.name`` (once, at load).

    A file that is not a LoRA of this base (its keys match no layer, or their shapes differ: a
    14B LoRA on the 1.3B) is a :class:`ModelError` naming the setting ``what``.
    """
    file = resolve_weights_file(
        spec.path, local_files_only=config.local_files_only, cache_dir=config.cache_dir, what=what
    )
    log.info("loading LoRA %r from %s", spec.name, file)
    try:
        from safetensors.torch import load_file

        state = load_file(str(file))
    except Exception as exc:  # not safetensors, truncated: the file is wrong, whatever the cause
        raise ModelError(f"{what}={spec.path!r}: cannot read {file} as a safetensors LoRA: {exc}") from exc
    try:
        pipe.load_lora_weights(state, adapter_name=spec.name)
    except (ValueError, KeyError, RuntimeError, IndexError, AttributeError) as exc:
        _unload(pipe, spec.name)
        raise ModelError(
            f"{what}={spec.path!r}: not a LoRA for this generator's DiT ({type(pipe.transformer).__name__}, "
            f"Wan2.1 1.3B layout expected): {exc}"
        ) from exc
    if _adapter_layers(pipe.transformer, spec.name) == 0:
        _unload(pipe, spec.name)
        raise ModelError(
            f"{what}={spec.path!r}: none of its keys match a layer of this generator's DiT "
            "(a LoRA of another base model?)"
        )


def _unload(pipe: Any, name: str) -> None:
    # A half-loaded adapter would stay active in every later call.
    with contextlib.suppress(ValueError, KeyError, AttributeError):
        pipe.delete_adapters(name)


def load_turbo(pipe: Any, config: EngineConfig) -> None:
    """Load the step-distillation LoRA (``turbo_lora``) into ``pipe`` as adapter ``turbo``."""
    if config.loras.turbo_lora is None:
        raise InvalidRequest.for_field("turbo", True, "needs a turbo LoRA (turbo_lora is 'none')")
    spec = LoraSpec(TURBO, config.loras.turbo_lora, config.loras.turbo_strength)
    load_adapter(pipe, spec, what="turbo_lora", config=config)
    pipe.disable_lora()  # on only for the calls that ask for it


def load_all(pipe: Any, config: EngineConfig) -> tuple[bool, dict[str, LoraSpec]]:
    """Load every user LoRA into ``pipe``, and the turbo LoRA when turbo is the configured
    default (otherwise the first turbo call loads it: no download for a server that never uses
    it); then switch them all off until a call asks for them.
    Returns ``(turbo loaded, user LoRAs by name)``."""
    users = configured(config)
    turbo = config.loras.turbo
    if turbo:
        load_turbo(pipe, config)
    for spec in users.values():
        load_adapter(pipe, spec, what=f"lora {spec.name}", config=config)
    if users:
        pipe.disable_lora()
    return turbo, users


def activate(pipe: Any, active: Sequence[tuple[str, float]]) -> None:
    """Make exactly ``active`` (``(name, strength)`` pairs) the DiT's adapters for the next call;
    none: every LoRA layer off (the base model's output exactly)."""
    if not active:
        pipe.disable_lora()
        return
    names = [n for n, _ in active]
    pipe.set_adapters(names, adapter_weights=[s for _, s in active])
    pipe.enable_lora()

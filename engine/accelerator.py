"""Device, dtype and out-of-memory: the one place the engine decides where and how models run.

The planner, the generator and the engine all resolve their settings here, so one configuration
gives one answer: ``auto`` is CUDA when it is available, else MPS, else the CPU; an explicit device
that this machine lacks is a :class:`~engine.errors.ModelError` naming the setting and what is
available. :func:`oom_guard` turns an accelerator out-of-memory failure into
:class:`~engine.errors.OutOfMemory` after freeing what can be freed, so the server keeps serving.

torch is imported inside the functions: importing this module stays cheap (the CLI's light
commands and the MCP layer never load torch).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from .errors import InvalidRequest, ModelError, OutOfMemory, UnisonError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

#: What a device setting may say.
DEVICE_RULE = "must be auto, cpu, cuda, cuda:N or mps"

#: ``dtype`` names the configuration accepts, besides ``auto``.
DTYPES = ("bfloat16", "float16", "float32")

#: What the user can do about an out-of-memory failure (the same advice wherever it happens).
OOM_ADVICE = "try a smaller size or fewer frames, or a low-VRAM offload mode"


def _mps_available() -> bool:
    import torch

    mps = getattr(torch.backends, "mps", None)
    return mps is not None and bool(mps.is_available())


def available_devices() -> list[str]:
    """The device names usable here, best first: e.g. ``["cuda:0", "cuda:1", "cpu"]``."""
    import torch

    found = [f"cuda:{i}" for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    if _mps_available():
        found.append("mps")
    return [*found, "cpu"]


def resolve_device(name: str, *, setting: str = "device") -> torch.device:
    """The torch device a ``device`` setting means on this machine.

    ``auto``: cuda if available, else mps, else cpu. ``setting`` is the configuration key being
    resolved (``device`` or ``planner_device``), named in the errors: a name torch does not know
    is an ``InvalidRequest``; a device this machine lacks is a ``ModelError`` listing what it has.
    """
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InvalidRequest.for_field(setting, name, DEVICE_RULE) from exc
    if device.type not in ("cpu", "cuda", "mps"):
        raise InvalidRequest.for_field(setting, name, DEVICE_RULE)
    missing = None
    if device.type == "cuda" and not torch.cuda.is_available():
        missing = "CUDA is not available on this machine"
    elif device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        missing = f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif device.type == "mps" and not _mps_available():
        missing = "MPS is not available on this machine"
    if missing is not None:
        have = ", ".join(available_devices())
        raise ModelError(
            f"{setting}={name!r}: {missing} (available here: {have}); use 'auto' or one of those"
        )
    return device


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on CUDA, float32 elsewhere (MPS and CPU kernels are surest in float32)."""
    import torch

    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in DTYPES:
        raise InvalidRequest.for_field("dtype", name, f"must be auto or one of {', '.join(DTYPES)}")
    return getattr(torch, name)


def free_memory() -> None:
    """Collect garbage and return the accelerator's cached blocks (best effort)."""
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if _mps_available():
            torch.mps.empty_cache()
    except Exception:  # freeing is best effort; the caller's report matters more
        log.debug("could not empty the accelerator cache", exc_info=True)


def is_oom(exc: BaseException) -> bool:
    """Whether ``exc`` is an accelerator out-of-memory failure (not yet translated)."""
    if isinstance(exc, UnisonError):  # already named (an inner guard's OutOfMemory included)
        return False
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    # MPS and some CUDA paths (cuDNN, NCCL) raise a plain RuntimeError.
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


@contextmanager
def oom_guard(doing: str) -> Iterator[None]:
    """Turn an out-of-memory failure inside into ``OutOfMemory`` after freeing caches.

    ``doing`` says what ran out, for the message: ``"generating 832x480, 81 frames"``. An
    ``OutOfMemory`` raised by an inner guard passes through unchanged, so the innermost (most
    precise) message wins.
    """
    try:
        yield
    except Exception as exc:
        if not is_oom(exc):
            raise
        free_memory()
        raise OutOfMemory(
            f"out of accelerator memory while {doing} (caches were freed): {OOM_ADVICE}"
        ) from exc

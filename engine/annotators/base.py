"""What every annotator shares: where it runs, how it loads, how frames are checked and batched.

:class:`Placement` is resolved once from :class:`~engine.config.EngineConfig` (the annotator's
device and dtype, falling back to the engine's, and the hub settings). :class:`ModelAnnotator` is
the lazy-loading base: a subclass says how to read its weights (:meth:`ModelAnnotator._read`) and
uses ``self.models`` while it runs; the base moves them onto the device on :meth:`load`, off it on
:meth:`unload`, and reports their size for doctor's estimate.

torch is imported inside the functions, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..accelerator import free_memory, is_oom, oom_guard, resolve_device, resolve_dtype
from ..errors import InvalidRequest, ModelError

if TYPE_CHECKING:
    import torch

    from ..config import EngineConfig
    from ..control import JobControl

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where and how an annotator's weights live, and how the hub is reached."""

    device: torch.device
    dtype: torch.dtype
    local_files_only: bool = False
    cache_dir: Path | None = None

    @classmethod
    def from_config(cls, config: EngineConfig) -> Placement:
        """``annotator_device`` / ``annotator_dtype``, else the engine's ``device`` / ``dtype``."""
        settings = config.annotators
        if settings.annotator_device is not None:
            device = resolve_device(settings.annotator_device, setting="annotator_device")
        else:
            device = resolve_device(config.device)
        dtype_name = config.dtype if settings.annotator_dtype == "auto" else settings.annotator_dtype
        return cls(
            device=device,
            dtype=resolve_dtype(dtype_name, device),
            local_files_only=config.local_files_only,
            cache_dir=config.cache_dir,
        )

    @classmethod
    def cpu(cls) -> Placement:
        """float32 on the CPU (tests, and the annotators that hold no model)."""
        import torch

        return cls(device=torch.device("cpu"), dtype=torch.float32)

    def hub_kwargs(self) -> dict[str, Any]:
        """The ``from_pretrained`` arguments that say how the hub is reached."""
        kwargs: dict[str, Any] = {"local_files_only": self.local_files_only}
        if self.cache_dir is not None:
            kwargs["cache_dir"] = str(self.cache_dir)
        return kwargs


def check_frames(frames: np.ndarray) -> np.ndarray:
    """``frames`` as ``(F, H, W, 3)`` uint8 RGB, or :class:`InvalidRequest` saying what it is."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or 0 in frames.shape:
        raise InvalidRequest.for_field(
            "frames", f"{frames.dtype}{list(frames.shape)}", "must be (F, H, W, 3) uint8 RGB with F, H, W > 0"
        )
    return frames


def batches(count: int, size: int, control: JobControl | None) -> Iterator[slice]:
    """Slices of ``size`` over ``count`` frames, honouring a cancel before each one."""
    for start in range(0, count, size):
        if control is not None:
            control.check()
        yield slice(start, min(start + size, count))


def to_tensor(frames: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(F, H, W, 3)`` uint8 → ``(F, 3, H, W)`` float32 in [0, 1] on ``device``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2).float() / 255.0


def grey_to_rgb(values: np.ndarray) -> np.ndarray:
    """``(F, H, W)`` uint8 → ``(F, H, W, 3)`` uint8, the same value in every channel."""
    return np.repeat(values[..., None], 3, axis=-1)


def module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers, as they are stored now."""
    tensors = [*module.parameters(), *module.buffers()]
    return int(sum(t.numel() * t.element_size() for t in tensors))


class ModelAnnotator:
    """Lazy loading and offloading for an annotator built from one or more torch modules.

    Subclasses set :attr:`kind` and implement :meth:`_read` (read the weights, on the CPU, into
    a dict of modules and anything else they need, such as image processors). ``loaded`` is True
    while the modules are on the configured device; :meth:`unload` moves them to the CPU and keeps
    them there, so loading again is a copy rather than a read from disk.
    """

    #: The ``control_kind`` (or ``segment``) this annotator serves: the first word of its name.
    kind: str = ""
    #: Modules kept in float32 whatever the configured dtype (see the subclass for why).
    float32_modules: frozenset[str] = frozenset()

    def __init__(self, spec: str, placement: Placement, *, setting: str):
        #: The hub id, local directory or file the weights come from, as configured.
        self.spec = spec
        self.placement = placement
        #: The configuration key ``spec`` came from, named in errors (``depth_model``).
        self.setting = setting
        self.name = f"{self.kind} ({spec})"
        self.models: dict[str, Any] = {}
        self.extras: dict[str, Any] = {}
        self._on_device = False

    @property
    def loaded(self) -> bool:
        return bool(self.models) and self._on_device

    def load(self) -> None:
        """Read the weights (first time) and move them onto the device in the configured dtype."""
        if self.loaded:
            return
        with oom_guard(f"loading the {self.kind} annotator"):
            if not self.models:
                log.info("loading the %s annotator from %s", self.kind, self.spec)
                try:
                    self.models, self.extras = self._read()
                except (OSError, ValueError, KeyError, RuntimeError, TypeError) as exc:
                    if is_oom(exc):
                        raise
                    hint = " (local_files_only is set: only local files were searched)"
                    raise ModelError(
                        f"{self.setting}={self.spec!r}: cannot load the {self.kind} annotator"
                        f"{hint if self.placement.local_files_only else ''}: {exc}"
                    ) from exc
            for key, module in self.models.items():
                dtype = None if key in self.float32_modules else self.placement.dtype
                module.to(device=self.placement.device, dtype=dtype).eval()
        self._on_device = True
        log.info("%s annotator on %s (%s)", self.kind, self.placement.device, self.placement.dtype)

    def unload(self) -> None:
        """Move the weights to the CPU (kept for a fast reload) and free the accelerator's cache."""
        if not self.models or not self._on_device:
            return
        for module in self.models.values():
            module.to("cpu")
        self._on_device = False
        free_memory()

    def memory_bytes(self) -> int:
        """Bytes of the weights in the configured dtype (0 before they were read)."""
        if not self.models:
            return 0
        size = self.placement.dtype.itemsize
        total = 0
        for key, module in self.models.items():
            count = sum(t.numel() for t in [*module.parameters(), *module.buffers()])
            total += count * (4 if key in self.float32_modules else size)
        return int(total)

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Read the weights on the CPU: ``(modules by name, other things such as processors)``."""
        raise NotImplementedError

    def _ready(self) -> None:
        """Load on first use (the lazy part of the protocol)."""
        if not self.loaded:
            self.load()

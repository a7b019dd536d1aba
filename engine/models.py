"""The engine's models: each loaded once, on first use or by :meth:`Models.preload`, behind one lock.

``Models`` owns what outlives a request: the planner, the generator and the projector (each
injectable, for tests and benchmarks), the annotators (built once per kind), the rules planner,
the failed loads remembered per model, the tiny preset's first build, and the keep-alive
:meth:`~Models.unload`. What one request carries (its sources, control, notes, timings) is the
:class:`~engine.job.Job`'s.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Literal

from . import annotators
from .accelerator import free_memory
from .config import TINY_BUILD_STAGE, EngineConfig, tiny_paths
from .control import JobControl
from .errors import ModelError
from .hub import LoadFailures, generator_weights, planner_weights
from .imports import heavy_imports
from .planners.qwen import QwenPlanner
from .planners.rules import RulesPlanner

if TYPE_CHECKING:
    from .generator import Generator
    from .projector import Projector

log = logging.getLogger(__name__)

#: A component not built yet (``None`` means "none": no planner weights configured).
UNSET: Any = object()

#: The tools a call can name (as engine.api.Admitted.tool).
Tool = Literal["understand", "generate", "auto"]


class Models:
    """Planner + projector + generator + annotators, lazily loaded, serialised behind one lock.

    ``planner``, ``generator`` and ``projector`` are injectable seams (tests, benchmarks); by
    default each is built from ``config`` on first use, or all at once by :meth:`preload`.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        planner: QwenPlanner | None = UNSET,
        generator: Generator | None = UNSET,
        projector: Projector | None = UNSET,
    ):
        self.config = config
        self._planner = planner
        self._generator = generator
        self._projector = projector
        #: The components given to the constructor: :meth:`unload` leaves them to their owner.
        self._injected = frozenset(
            name
            for name, given in (("planner", planner), ("generator", generator), ("projector", projector))
            if given is not UNSET
        )
        #: Failed loads, remembered per model so the next call fails at once (engine.hub).
        self.load_failures = LoadFailures()
        #: The one lock: model work and building models, one at a time (the job queue's single
        #: worker already serialises jobs; this keeps direct Python callers just as safe).
        #: Re-entrant: projector() builds the planner and the generator it is sized by.
        self.lock = threading.RLock()
        self._tiny_ready = False
        #: Annotators by kind ("segment", "pose", "depth", ...), built on first use.
        self._annotators: dict[str, Any] = {}
        #: The rules planner: no model, built once.
        self.rules = RulesPlanner(config.limits)

    # ------------------------------------------------------------------ building

    def ensure_tiny(self, control: JobControl | None = None) -> None:
        """With the tiny preset, build any missing tiny model before the first load.

        The build is a stage of ``control``'s job ("building tiny models", one step per model), so
        a first run on a new machine shows what the seconds go to. The loads' own calls (no
        control) build silently: by then a job has usually built them already.
        """
        if self.config.tiny_dir is None or self._tiny_ready:
            return
        with self.lock:
            if self._tiny_ready:
                return
            if not tiny_paths(self.config.tiny_dir).all_exist():
                # Lazy: engine.tiny is imported only when a model must be built (its builders
                # import torch and transformers; tests/test_config.py checks nothing else does).
                from .tiny import ensure_tiny

                if control is not None:
                    control.set_stage(TINY_BUILD_STAGE)
                ensure_tiny(self.config.tiny_dir, on_step=control.step if control is not None else None)
            self._tiny_ready = True

    @property
    def planner(self) -> QwenPlanner | None:
        """The Qwen2.5-VL planner, or ``None`` when no planner weights are configured."""
        if self._planner is UNSET:
            with self.lock:
                if self._planner is UNSET:
                    self.ensure_tiny()
                    if self.config.planner_model is None:
                        self._planner = None
                    else:
                        # Cheap (nothing loads): its load() checks the weights and remembers a failure.
                        self._planner = QwenPlanner(self.config, failures=self.load_failures)
        return self._planner

    @property
    def generator(self) -> Generator:
        """The Wan2.1-VACE generator (built on first use; its weights load with ``load()``)."""
        if self._generator is UNSET or self._generator is None:
            with self.lock:
                if self._generator is UNSET or self._generator is None:
                    self.ensure_tiny()
                    # Before importing torch (seconds): a remembered failure, or weights that are
                    # neither here nor fetchable, fail at once; so does a device this machine lacks.
                    with self.load_failures.guard(generator_weights(self.config)):
                        with heavy_imports():
                            from .generator import Generator  # lazy: torch and diffusers

                        self._generator = Generator(self.config, failures=self.load_failures)
        return self._generator

    def require_planner(self, what: str) -> QwenPlanner:
        """The planner, or a :class:`ModelError` saying ``what`` needs it."""
        planner = self.planner
        if planner is None:
            raise ModelError(
                f"{what} needs the Qwen2.5-VL planner, but no planner weights are configured "
                "(set planner_model / --planner-model / UNISON_PLANNER_MODEL)"
            )
        return planner

    def projector(self) -> Projector | None:
        """The projector, loaded on first use; ``None`` when it does not apply
        (:attr:`EngineConfig.projector_off <engine.config.EngineConfig.projector_off>`) or none was given."""
        if self.config.projector_off is not None:
            return None
        if self._projector is UNSET:
            with self.lock:
                if self._projector is UNSET:
                    self._projector = self._load_projector()
        return self._projector

    def _load_projector(self) -> Projector:
        from .projector import load_projector  # lazy: torch

        planner = self.require_planner("the projector")
        planner.load()
        generator = self.generator
        generator.load()
        return load_projector(
            self.config.projector,
            hidden_size=planner.hidden_size,
            text_dim=generator.text_dim,
            local_files_only=self.config.local_files_only,
            cache_dir=self.config.cache_dir,
        )

    def annotator(self, kind: str) -> Any:
        """The annotator for ``kind`` (``"segment"`` or a control kind), built once, loaded on use."""
        found = self._annotators.get(kind)
        if found is None:
            with self.lock:
                found = self._annotators.get(kind)
                if found is None:
                    self.ensure_tiny()
                    if kind == "segment":
                        found = annotators.build_segmenter(self.config)
                    else:
                        found = annotators.build_control(kind, self.config)
                    self._annotators[kind] = found
        return found

    def offload(self, annotator: Any) -> None:
        """Free the accelerator for the generator: annotators stay loaded only on a CPU."""
        device = getattr(self.generator, "device", None)
        if getattr(device, "type", "cpu") != "cpu":
            annotator.unload()

    # ------------------------------------------------------------------ the lifecycle

    def preload(self) -> None:
        """Load every configured model now instead of on first use."""
        t0 = time.perf_counter()
        with self.lock:
            if self.planner is not None:
                self.planner.load()
            self.generator.load()
            self.projector()
        log.info("models loaded in %.1f s", time.perf_counter() - t0)

    def check(self, tool: Tool, *, backend: str | None = None, control: JobControl | None = None) -> None:
        """Fail at once, before any import or decode, when a model a ``tool`` call needs cannot load.

        A remembered failure, or weights that are neither here nor fetchable, raise the
        :class:`~engine.errors.ServerConfigError` the load would raise seconds later. Only the
        models the call surely needs are checked (an ``auto`` call's plan may not generate; its
        planner is ``backend``'s, by default the configured one). The tiny preset builds its
        missing models first, as a stage of ``control``'s job.
        """
        backend = backend or self.config.backend
        roles: list[str] = []
        if tool == "generate":
            roles.append("generator")
            if self.config.projector_off is None:
                roles.append("planner")  # the projector's input
        elif self.config.planner_model is not None and (tool == "understand" or backend != "rules"):
            roles.append("planner")
        for role in roles:
            component = getattr(self, f"_{role}")
            if role in self._injected or bool(getattr(component, "loaded", False)):
                continue
            weights = planner_weights(self.config) if role == "planner" else generator_weights(self.config)
            self.ensure_tiny(control)
            with self.load_failures.guard(weights):
                pass  # the checks alone: remembered failure, then the weights' whereabouts

    def unload(self) -> bool:
        """Drop the loaded models (the GPU memory is freed); the next use loads them again.

        Components given to the constructor stay (their owner decides). Returns whether
        anything was unloaded. Waits for the model work in progress (the one lock).
        """
        with self.lock:
            dropped = [
                name
                for name in ("planner", "generator", "projector")
                if name not in self._injected and getattr(self, f"_{name}") not in (UNSET, None)
            ]
            for name in dropped:
                setattr(self, f"_{name}", UNSET)
            if self._annotators:
                dropped.append("annotators")
                self._annotators = {}
            if not dropped:
                return False
            free_memory()
        log.info("unloaded %s (the next call loads them again)", ", ".join(dropped))
        return True

    def loaded(self, role: Literal["planner", "generator"]) -> bool:
        """Whether ``role``'s weights are loaded now (nothing is built or imported to find out)."""
        component = getattr(self, f"_{role}")
        return component not in (UNSET, None) and bool(getattr(component, "loaded", False))

    def status(self) -> dict[str, Any]:
        """What is configured and loaded, and the loads that failed."""
        config = self.config
        return {
            "planner": config.planner_model,
            "planner_backend": config.backend,
            "adapter": config.adapter,
            "adapter_merged": bool(config.adapter) and config.backend == "unison",
            "projector": config.projector,
            "generator": config.generator_model,
            "device": config.device,
            "dtype": config.dtype,
            "loaded": {
                "planner": self.loaded("planner"),
                "generator": self.loaded("generator"),
                "projector": self._projector not in (UNSET, None),
            },
            "preset": config.preset,
            "performance": config.performance.model_dump(),
            "load_failures": self.load_failures.failed(),
        }

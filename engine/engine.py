"""The engine: the configuration, the models, the input policy, and one way to run a request.

``Engine`` knows nothing about MCP. :meth:`Engine.admit` checks a request and opens its inputs
(no model work); :meth:`Engine.run` makes one :class:`~engine.job.Job` of it and runs it on the
:class:`~engine.models.Models`, loaded once and shared, whose one lock keeps two jobs off the
accelerator at once (the MCP layer's ``JobQueue`` puts one bounded queue in front of it). The
Python API (:meth:`~Engine.understand`, :meth:`~Engine.generate`, :meth:`~Engine.auto`) is the same
path: build the request, admit it, run it. :meth:`~Engine.plan` plans without opening any file.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .api import Admitted, AnyRequest, AnyResult, admit, admit_plan, parse_arguments
from .config import EngineConfig
from .control import JobControl
from .inputs import InputPolicy
from .job import Job, plan_request
from .models import UNSET, Models
from .plan import BasePlan, Checked
from .request import Request, parse_request
from .results import AutoResult, GenerateResult, Sampling, UnderstandResult

if TYPE_CHECKING:
    import torch

    from .generator import Generator
    from .planners.qwen import QwenPlanner
    from .projector import Projector


class Engine:
    """What the MCP layer, the CLI and Python callers use: an :class:`~engine.api.EngineAPI`.

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
        self.models = Models(config, planner=planner, generator=generator, projector=projector)
        #: Which input files may be read; the MCP server narrows it to its allowed roots.
        self.inputs = InputPolicy(
            config.allowed_roots, config.output_dir, config.max_input_bytes, config.limits.max_input_pixels
        )

    # ------------------------------------------------------------------ the models

    @property
    def planner(self) -> QwenPlanner | None:
        """The Qwen2.5-VL planner (``None``: no planner weights configured); for another engine's seam."""
        return self.models.planner

    @property
    def generator(self) -> Generator:
        """The Wan2.1-VACE generator; for another engine's seam."""
        return self.models.generator

    def projector(self) -> Projector | None:
        """The projector, loaded on first use; ``None`` where it does not apply."""
        return self.models.projector()

    def status(self) -> dict[str, Any]:
        """What is configured and loaded."""
        return self.models.status()

    def preload(self) -> None:
        """Load every configured model now instead of on first use."""
        self.models.preload()

    def unload(self) -> bool:
        """Drop the loaded models (keep-alive ran out); True when something was freed."""
        return self.models.unload()

    # ------------------------------------------------------------------ one request

    def admit(self, request: AnyRequest) -> Admitted:
        """Check a request and open its inputs once (no model work): what waits in the job queue."""
        return admit(request, self.config, self.inputs)

    def run(self, admitted: Admitted, *, control: JobControl | None = None) -> AnyResult:
        """Do an admitted request's work, decoding from its opened sources; closes them."""
        return self._run(admitted, control)

    def _run(self, admitted: Admitted, control: JobControl | None, **options: Any) -> AnyResult:
        # ``options``: what the Python API sets beyond a tool's arguments (see Job).
        with admitted:
            return Job(self.models, admitted, control, outputs=self.inputs.outputs, **options).run()

    # ------------------------------------------------------------------ the Python API

    def plan(self, request: str, media: Sequence[str] = (), *, backend: str | None = None) -> Checked:
        """The checked plan for a free-form request, as written: no file is opened (the rules
        planner loads nothing either). :meth:`auto` with ``dry_run`` plans from the opened files."""
        return plan_request(self.models, parse_request(request, media), backend=backend).plan

    def understand(
        self,
        prompt: str,
        media: Sequence[str] = (),
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        control: JobControl | None = None,
    ) -> UnderstandResult:
        """Answer a question about text, images and/or a video: admitted exactly as the
        ``understand`` tool's call is, then run."""
        arguments: dict[str, Any] = {"prompt": prompt, "media": list(media)}
        if max_new_tokens is not None:
            arguments["max_new_tokens"] = max_new_tokens
        admitted = self.admit(parse_arguments("understand", self.config.limits, arguments))
        return self._run(admitted, control, temperature=temperature)

    def generate(
        self,
        plan: BasePlan,
        sampling: Sampling | None = None,
        *,
        control: JobControl | None = None,
        features: torch.Tensor | None = None,
        request: Request | None = None,
    ) -> GenerateResult:
        """Run a generation plan and write its files (PNG or MP4, plus a JSON sidecar).

        The plan is admitted here (:func:`~engine.api.admit_plan`): its inputs opened and probed
        once, a plain :class:`~engine.plan.Plan` checked once (a :class:`~engine.plan.CheckedPlan`
        is taken as it is). ``features`` are the planner's hidden states from a planning pass over
        ``request`` (the request as the Unison planner read it); when they are missing and the
        projector applies, they are computed with one planner forward over ``request`` (or, for a
        typed plan, its prompt with one placeholder per input).
        """
        admitted = admit_plan(plan, self.config, self.inputs)
        return self._run(admitted, control, sampling=sampling, features=features, seen=request)

    def auto(
        self,
        request: str,
        media: Sequence[str] = (),
        *,
        sampling: Sampling | None = None,
        dry_run: bool = False,
        control: JobControl | None = None,
        backend: str | None = None,
    ) -> AutoResult:
        """Unison's full automation: plan the request, then answer it or generate for it, admitted
        exactly as the ``auto`` tool's call is (``sampling`` and ``backend`` beside it)."""
        arguments = {"prompt": request, "media": list(media), "dry_run": dry_run}
        admitted = self.admit(parse_arguments("auto", self.config.limits, arguments))
        return self._run(admitted, control, sampling=sampling, backend=backend)

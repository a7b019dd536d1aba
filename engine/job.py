"""One request's work: a :class:`Job`, made once by ``Engine.run`` from an admitted request.

The job holds what belongs to this request alone: the admitted request (its checked plan or its
parsed text, its opened sources), its :class:`~engine.control.JobControl`, and what it records on
the way (notes, timings). :meth:`Job.run` reads top to bottom in the order of the paper's figure:
answer, plan, then a generation's sources, projection, denoising and files, each step a method
below. The models it runs on, loaded once and shared by every job, are :class:`~engine.models.Models`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from .accelerator import oom_guard
from .annotators import looks_like_control
from .api import Admitted, AnyResult, AutoRequest, UnderstandRequest
from .composite import AnalysisAhead, composite
from .control import JobControl
from .errors import InvalidRequest, ModelError
from .models import Models
from .outdir import OutputDir, expected_bytes
from .outputs import write_generation
from .plan import Checked, CheckedPlan, CheckedQuestion, MediaInput, Plan, check_plan, shapes_of
from .planners import BACKENDS, PlanOutput
from .planners.ambiguity import settle
from .planners.route import route
from .prepare import Prepared, PrepContext, prepare
from .request import Request, request_for_plan
from .results import AutoResult, GenerateResult, Sampling, UnderstandResult
from .sampling import ResolvedSampling, resolve_sampling
from .source import Source, source_for
from .timings import GENERATION, Timings
from .vocab import Role, Task
from .windows import Chain, Made

if TYPE_CHECKING:
    import torch

    from .generator import Generator
    from .projector import Projector


@dataclass(frozen=True)
class Planned:
    """A request planned: the checked plan, the planning pass's hidden states (when asked for and
    the planner gave them), and the seconds it took."""

    plan: Checked
    features: torch.Tensor | None
    seconds: float


def checked_backend(backend: str) -> str:
    """``backend`` when it names a planner backend, else :class:`InvalidRequest`."""
    if backend not in BACKENDS:
        raise InvalidRequest.for_field("planner", backend, "one of " + ", ".join(BACKENDS))
    return backend


def plan_request(
    models: Models,
    request: Request,
    *,
    backend: str | None = None,
    sources: Mapping[str, Source] | None = None,
    want_features: bool = False,
    control: JobControl | None = None,
) -> Planned:
    """Plan a parsed request with ``backend`` (default: the configured one) and check the plan once.

    ``sources`` are the request's opened inputs (their headers give the source-aware defaults);
    without them the paths are planned as written and nothing is read. A model plan that does not
    parse or check is planned by the rules planner instead (``engine.planners.route``). What the
    plan guesses that the request leaves open is asked through ``control.ask`` when there is one,
    else kept as the best guess with a note (``engine.planners.ambiguity``).
    """
    config = models.config
    backend = checked_backend(backend or config.backend)
    t0 = time.perf_counter()
    primary = reach = None
    if backend != "rules":
        if backend == "unison" and not config.adapter:
            raise ModelError("the unison planner needs the Unison adapter (set adapter / --adapter)")
        models.ensure_tiny(control)
        planner = models.require_planner(f"the {backend} planner")
        if control is not None and not planner.loaded:
            # Its own stage, named with its size: a cold planner takes most of a first call.
            control.set_stage("loading planner")
            with models.lock, oom_guard("loading the planner"):
                planner.load()
            control.set_stage("planning")

        def primary(request: Request, want: bool) -> PlanOutput:
            with models.lock, oom_guard("planning"):
                return planner.plan(request, backend=backend, want_features=want)

        def reach(request: Request, want: bool, tasks: frozenset[Task]) -> PlanOutput:
            # The tasks the Unison grammar cannot write: the instruct backend, narrowed to them.
            with models.lock, oom_guard("planning"):
                return planner.plan(request, backend="instruct", want_features=want, tasks=tasks)

    shapes = shapes_of(sources or {})

    def check(p: Plan) -> Checked:
        return check_plan(p, config.limits, shapes)

    routed = route(
        request,
        backend,
        primary=primary,
        rules=models.rules,
        check=check,
        fallback=config.planner_fallback,
        want_features=want_features,
        reach=reach,
    )
    # What the plan guesses and the request leaves open is asked (or noted as a guess).
    plan = settle(routed.plan, request, ask=control.ask if control is not None else None, check=check)
    plan = plan.model_copy(update={"planner": routed.planner})
    return Planned(plan, routed.features, time.perf_counter() - t0)


class Job:
    """One admitted request's work on the shared ``models``.

    ``control`` gets the progress and may cancel (a fresh one when ``None``). The rest is what the
    Python API may set beyond a tool's arguments: ``sampling`` (instead of the request's own
    overrides), ``backend`` (the planner backend of an ``auto`` call), ``temperature`` (an answer's),
    and for a plan planned earlier, ``features`` (its planning pass's hidden states) and ``seen``
    (the request as the Unison planner read it), so the projector needs no second planner pass.
    ``outputs``: the output directory as the engine reads it back (its room is checked before a
    generation's model work).
    """

    def __init__(
        self,
        models: Models,
        admitted: Admitted,
        control: JobControl | None = None,
        *,
        sampling: Sampling | None = None,
        backend: str | None = None,
        temperature: float | None = None,
        features: torch.Tensor | None = None,
        seen: Request | None = None,
        outputs: OutputDir | None = None,
    ):
        self.models = models
        self.config = models.config
        self.admitted = admitted
        self.sources = admitted.sources
        self.control = control or JobControl()
        self.sampling = sampling if sampling is not None else admitted.sampling()
        self.backend = checked_backend(backend or self.config.backend)
        self.temperature = temperature
        self.features = features
        self.seen = seen
        self.outputs = outputs if outputs is not None else OutputDir(self.config.output_dir)
        #: What happened on the way (adjustments, fallbacks, what was extracted), for the result.
        self.notes: list[str] = []
        #: Seconds per stage (engine.timings), counted from the job's submission to the queue.
        self.timings = Timings(started=self.control.created)

    @property
    def parsed(self) -> Request:
        """The request as the planners read it (``understand`` / ``auto``), files by real path."""
        if self.admitted.parsed is None:
            raise TypeError(f"a {self.admitted.tool} job has no parsed request")
        return self.admitted.parsed

    @property
    def checked_plan(self) -> CheckedPlan:
        """A ``generate`` call's plan, checked at admission."""
        if self.admitted.plan is None:
            raise TypeError(f"a {self.admitted.tool} job has no checked plan")
        return self.admitted.plan

    @property
    def dry_run(self) -> bool:
        request = self.admitted.request
        return isinstance(request, AutoRequest) and request.dry_run

    def run(self) -> AnyResult:
        """The request's work, in the order it happens."""
        tool = self.admitted.tool
        self.timings.waited()
        # 1. Models: missing weights fail now, not after the inputs are decoded (the tiny preset
        #    builds its models now, as a stage of this job).
        with self.timings.measure("load"):
            self.models.check(tool, backend=self.backend, control=self.control)

        # 2. Answer: an understand call is a question about its files.
        if tool == "understand":
            queries = [MediaInput(path=p, kind=k, role=Role.QUERY) for p, k in self.parsed.media]
            return self.answer(self.parsed.prompt, queries)

        # 3. Plan: a generate call's plan was checked at admission; an auto call is planned now,
        #    and its plan checked once. A dry run stops here; an understanding plan is answered.
        if tool == "generate":
            return self.generate(self.checked_plan)
        plan = self.plan()
        if self.dry_run:
            return AutoResult(plan=plan)
        for m in plan.inputs:
            source_for(self.sources, m.path)  # a planner names only files admitted with the request
        if isinstance(plan, CheckedQuestion):
            return AutoResult(plan=plan, answer=self.answer(plan.prompt, list(plan.inputs)))

        # 4-8. Generate: sources, models, projection, the windows of every candidate, files.
        return AutoResult(plan=plan, generation=self.generate(plan))

    # ------------------------------------------------------------------ answer and plan

    def answer(self, prompt: str, inputs: list[MediaInput]) -> UnderstandResult:
        """The planner model's answer about ``inputs``, decoded from the opened sources."""
        self.models.ensure_tiny(self.control)
        planner = self.models.require_planner("understanding")
        request = self.admitted.request
        max_new_tokens = request.max_new_tokens if isinstance(request, UnderstandRequest) else None
        with self.models.lock, oom_guard("understanding"):
            if not planner.loaded:  # a warm call does not say it loads
                self.control.set_stage("loading planner")
            with self.timings.measure("load"):
                planner.load()
            self.control.set_stage("understanding")
            with self.timings.measure("answer"):
                answer = planner.understand(
                    prompt,
                    inputs,
                    max_new_tokens=max_new_tokens,
                    temperature=self.temperature,
                    control=self.control,
                    sources=self.sources,
                )
        self.timings.finish()
        timings = self.timings.as_dict(("queue", "load", "answer", "total"))
        return UnderstandResult(answer=answer, model=planner.name, timings=timings)

    def plan(self) -> Checked:
        """An ``auto`` call's plan, checked once with its inputs' headers. The planning pass's
        hidden states are kept for the projector (unless it is a dry run or none applies)."""
        self.control.set_stage("planning")
        want = not self.dry_run and self.config.projector_off is None
        planned = plan_request(
            self.models,
            self.parsed,
            backend=self.backend,
            sources=self.sources,
            want_features=want,
            control=self.control,
        )
        self.features, self.seen = planned.features, self.parsed
        self.timings.add("plan", planned.seconds)
        return planned.plan

    # ------------------------------------------------------------------ generation

    def generate(self, plan: CheckedPlan) -> GenerateResult:
        """A checked plan's generation, in the order of the paper's figure, under the one lock."""
        with self.models.lock, oom_guard("generating"):
            sampling = resolve_sampling(
                self.sampling, self.config.sampling, limits=self.config.limits, loras=self.config.loras
            )
            self.notes = list(plan.notes)
            # Room for the files first: a full, read-only or missing disk fails now, not after
            # the model work (a write that fails later still says why: engine.outdir.output_error).
            self.outputs.check_room(
                expected_bytes(plan.width, plan.height, plan.num_frames, len(sampling.seeds))
            )
            # 4. Sources: the opened inputs decoded into the generator's video, mask and references
            #    (for a chain: its first window).
            chain, prepared = self.prepare(plan)
            # 5. Models, loaded on first use.
            generator, projector = self.load()
            # 6. Project: the planner's hidden states over the request become 4 extra tokens.
            tokens = self.project(plan, projector)
            # 7. Generate every candidate, window after window; paste the kept source back.
            sampling = dataclasses.replace(sampling, umt5_prompt=self.umt5_prompt(plan, tokens))
            made = self.make(chain, prepared, generator, tokens, sampling)
            # 8. Write, unless a cancel landed after the last step (then nothing is written):
            #    every file, then the sidecars with the finished timings.
            self.control.set_stage("writing")
            self.control.check()
            outputs = write_generation(
                made,
                plan,
                sampling,
                config=self.config,
                sources=self.sources,
                projected=tokens is not None,
                notes=self.notes,
                timings=self.timings,
            )
            return GenerateResult(
                plan=plan,
                outputs=outputs,
                seed=sampling.seed,
                steps=sampling.steps,
                guidance=sampling.guidance,
                projector=tokens is not None,
                timings=self.timings.as_dict(GENERATION),
                notes=self.notes,
            )

    def prepare(self, plan: CheckedPlan) -> tuple[Chain, Prepared]:
        """The plan's windows and its first window's inputs. The tiny preset builds its models
        first (on first use); masks and control signals are extracted here (``annotate``)."""
        with self.timings.measure("load"):
            self.models.ensure_tiny(self.control)
        t, annotated = time.perf_counter(), self.timings.get("annotate")
        self.control.set_stage("preparing inputs")
        chain = Chain.of(plan, self.config)
        prepared = prepare(chain.first_plan(plan), self.prep_context())
        prepared.arrays()  # the uint8 arrays the generator and the composite read: made once, here
        chain.start(prepared)
        self.notes.extend(prepared.notes)
        if len(chain.windows) > 1:
            self.notes.append(chain.note())
        # The annotators ran inside: their time is theirs (annotate), not the decoding's.
        self.timings.add("prepare", time.perf_counter() - t - (self.timings.get("annotate") - annotated))
        return chain, prepared

    def load(self) -> tuple[Generator, Projector | None]:
        """The generator, loaded, and the projector where it applies."""
        if not self.models.loaded("generator"):  # a warm call does not say it loads
            self.control.set_stage("loading models")
        with self.timings.measure("load"):
            generator = self.models.generator
            generator.load()
            if self.config.projector_off is None and not self.models.loaded("planner"):
                self.control.set_stage("loading planner")  # the projector's input: the planner's states
            projector = self.models.projector()
        return generator, projector

    def project(self, plan: CheckedPlan, projector: Projector | None) -> torch.Tensor | None:
        """The projector's 4 conditioning tokens ``(1, 4, text_dim)`` from the Unison planner's
        hidden states over the request (the LoRA active, whichever backend planned it): the planning
        pass's, else one planner forward. ``None`` where no projector applies."""
        if projector is None:
            off = self.config.projector_off or "no projector given"
            self.notes.append(f"{off}; ran as plain Wan-VACE (512-position text context)")
            return None
        import torch  # lazy: torch loads with the models, not with the engine

        with self.timings.measure("project"):
            features = self.features
            if features is None:
                self.control.set_stage("planner features")
                features = self.models.require_planner("the projector").features(self.seen_request(plan))
            with torch.no_grad():
                tokens = projector(features.float().to(_module_device(projector)))  # (1, 4, text_dim)
        return tokens

    def seen_request(self, plan: CheckedPlan) -> Request:
        """The request as the Unison planner sees it: the one planned, else (a typed plan) its
        prompt with one placeholder per input."""
        return self.seen or request_for_plan(plan)

    def umt5_prompt(self, plan: CheckedPlan, tokens: torch.Tensor | None) -> str:
        """What umT5 reads: beside the projector's tokens, the request with its placeholders (as
        the reference does, ``sampling.umt5_prompt``), else the prompt alone."""
        if tokens is not None and self.config.sampling.umt5_prompt == "request":
            return self.seen_request(plan).text
        return plan.prompt

    def make(
        self,
        chain: Chain,
        prepared: Prepared,
        generator: Generator,
        tokens: torch.Tensor | None,
        sampling: ResolvedSampling,
    ) -> Made:
        """Every candidate through every window of the chain (one batch where it fits), the kept
        source pasted back unless ``preserve`` is off."""
        preserve = self.config.results.preserve
        if self.sampling is not None and self.sampling.preserve is not None:
            preserve = self.sampling.preserve

        results = self.config.results
        ahead = None
        if preserve and prepared.video is not None and prepared.mask is not None:
            # The masks analysed while the model runs (the arrays made in prepare, once, are the
            # ones the generator and the composite are given).
            ahead = AnalysisAhead(
                prepared.arrays()[1], feather_px=results.feather_px, color_match=results.color_match
            )
        run = partial(
            generator.run,
            prompt=sampling.umt5_prompt,
            extra_tokens=tokens,
            sampling=sampling,
            control=self.control,
            timings=self.timings,
            # On a GPU a one-window paste happens there, before the one copy to the host.
            on_device=ahead is not None and len(chain.windows) == 1 and generator.device.type != "cpu",
        )

        def paste(frames: Any, video: Any, mask: Any) -> Any:
            with self.timings.measure("composite"):
                # In place: the generator's output is this job's alone.
                return composite(
                    frames,
                    video,
                    mask,
                    feather_px=results.feather_px,
                    color_match=results.color_match,
                    in_place=True,
                    analysed=None if ahead is None else ahead.result(),
                )

        made = chain.make(
            run,
            sampling.seeds,
            batch=len(chain.windows) == 1 and generator.can_batch(prepared, sampling.count),
            composite=paste if preserve else None,
            steps=sampling.steps,
        )
        if not preserve:
            self.notes.append("preserve is off: the generator's raw output, nothing pasted back")
        self.notes.extend(made.notes)
        return made

    # ------------------------------------------------------------------ what preparing calls on

    def prep_context(self) -> PrepContext:
        """What preparing sources may call on: the annotators, the segmenter, the planner."""
        planner = self.models.planner
        return PrepContext(
            limits=self.config.limits,
            ground=self.ground if planner is not None else None,
            control=self.control,
            sources=self.sources,
            annotate=self.annotate,
            looks_like=looks_like_control,
            segment=self.segment if self.config.annotators.segment_model is not None else None,
            phrase=self.phrase if planner is not None else None,
            dilate_px=self.config.annotators.mask_dilate_px,
        )

    def annotate(self, kind: str, frames: Any) -> Any:
        """A control signal from plain frames, as its own stage of the job (cancel between frames)."""
        annotator = self.models.annotator(kind)
        self.control.set_stage(f"extracting {kind}", total=1)
        with self.timings.measure("annotate"), oom_guard(f"extracting {kind}"):
            annotator.load()
            try:
                out = annotator(frames, control=self.control)
            finally:
                self.models.offload(annotator)
        self.control.step(1, 1)
        return out

    def segment(self, frames: Any, phrase: str) -> Any:
        """The masks of what ``phrase`` names, tracked through the frames (an edit without a mask)."""
        segmenter = self.models.annotator("segment")
        self.control.set_stage("finding the edit region", total=1)
        with self.timings.measure("annotate"), oom_guard("segmenting"):
            segmenter.load()
            try:
                masks = segmenter(frames, phrase, control=self.control)
            finally:
                self.models.offload(segmenter)
        self.control.step(1, 1)
        return masks

    def phrase(self, prompt: str) -> str | None:
        """The object an edit prompt names, read by the planner model (any language it reads)."""
        planner = self.models.require_planner("reading the edit target")
        planner.load()
        return planner.edit_target(prompt)

    def ground(self, image: Any, phrase: str) -> list[tuple[float, float, float, float]]:
        """The boxes of what ``phrase`` names in ``image``, by the planner model."""
        self.control.check()
        planner = self.models.require_planner("grounding")
        planner.load()
        return planner.ground(image, phrase)


def _module_device(module: Any) -> Any:
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"

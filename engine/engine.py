"""The engine facade: planner, projector and generator, each loaded once, behind one GPU lock.

``Engine`` knows nothing about MCP. It turns requests into validated plans, answers
understanding questions, and runs generation plans into files. Every model call happens under
``self._lock`` so two jobs never share the accelerator; the MCP layer's ``JobQueue`` puts one
bounded queue in front of it.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from .accelerator import oom_guard
from .api import Admitted, AnyRequest, AnyResult, GenerateRequest, UnderstandRequest, admit, parse_arguments
from .config import TINY_BUILD_STAGE, EngineConfig, tiny_paths
from .control import JobControl
from .errors import InputRefused, InvalidRequest, ModelError, shown
from .hub import LoadFailures, generator_weights, planner_weights
from .inputs import InputPolicy
from .plan import BasePlan, Checked, CheckedPlan, CheckedQuestion, MediaInput, check_plan, shapes_of
from .planners import BACKENDS, PlanOutput
from .planners.route import route
from .request import Request, parse_request, request_for_plan
from .results import AutoResult, GenerateResult, OutputFile, Sampling, UnderstandResult
from .source import Source, close_all
from .vocab import Role
from .windows import Chain, Made

if TYPE_CHECKING:
    import torch

    from .generator import Generator
    from .planners.qwen import QwenPlanner
    from .prepare import PrepContext
    from .projector import Projector

log = logging.getLogger(__name__)

_UNSET: Any = object()


class Engine:
    """Planner + projector + generator, lazily loaded, serialised behind one lock.

    ``planner``, ``generator`` and ``projector`` are injectable seams (tests, benchmarks);
    by default each is built from ``config`` on first use, or all at once by :meth:`preload`.
    """

    def __init__(
        self,
        config: EngineConfig,
        *,
        planner: QwenPlanner | None = _UNSET,
        generator: Generator | None = _UNSET,
        projector: Projector | None = _UNSET,
    ):
        self.config = config
        self._planner = planner
        self._generator = generator
        self._projector = projector
        #: The components given to the constructor: :meth:`unload` leaves them to their owner.
        self._injected = frozenset(
            name
            for name, given in (("planner", planner), ("generator", generator), ("projector", projector))
            if given is not _UNSET
        )
        #: Failed loads, remembered per model so the next call fails at once (engine.hub).
        self.load_failures = LoadFailures()
        # The one lock: model work and building models, one at a time (the job queue's single
        # worker already serialises jobs; this keeps direct Python callers just as safe).
        # Re-entrant: projector() builds the planner and the generator it is sized by.
        self._lock = threading.RLock()
        self._tiny_ready = False
        #: Annotators by kind ("segment", "pose", "depth", ...), built on first use.
        self._annotators: dict[str, Any] = {}
        #: Which input files may be read; the MCP server narrows it to its allowed roots.
        self.inputs = InputPolicy(
            config.allowed_roots, config.output_dir, config.max_input_bytes, config.limits.max_input_pixels
        )
        from .planners.rules import RulesPlanner

        self._rules = RulesPlanner(config.limits)

    # ------------------------------------------------------------------ components

    def _ensure_tiny(self, control: JobControl | None = None) -> None:
        """With the tiny preset, build any missing tiny model before the first load.

        The build is a stage of ``control``'s job ("building tiny models", one step per model), so
        a first run on a new machine shows what the seconds go to. The loads' own calls (no
        control) build silently: by then a job has usually built them already.
        """
        if self.config.tiny_dir is None or self._tiny_ready:
            return
        with self._lock:
            if self._tiny_ready:
                return
            if not tiny_paths(self.config.tiny_dir).all_exist():
                from .tiny import ensure_tiny  # lazy: the builders import torch and transformers

                if control is not None:
                    control.set_stage(TINY_BUILD_STAGE)
                ensure_tiny(self.config.tiny_dir, on_step=control.step if control is not None else None)
            self._tiny_ready = True

    @property
    def planner(self) -> QwenPlanner | None:
        """The Qwen2.5-VL planner, or ``None`` when no planner weights are configured."""
        if self._planner is _UNSET:
            with self._lock:
                if self._planner is _UNSET:
                    self._ensure_tiny()
                    if self.config.planner_model is None:
                        self._planner = None
                    else:
                        from .planners.qwen import QwenPlanner

                        # Cheap (nothing loads): its load() checks the weights and remembers a failure.
                        self._planner = QwenPlanner(self.config, failures=self.load_failures)
        return self._planner

    @property
    def generator(self) -> Generator:
        if self._generator is _UNSET or self._generator is None:
            with self._lock:
                if self._generator is _UNSET or self._generator is None:
                    self._ensure_tiny()
                    # Before importing torch (seconds): a remembered failure, or weights that are
                    # neither here nor fetchable, fail at once; so does a device this machine lacks.
                    with self.load_failures.guard(generator_weights(self.config)):
                        from .generator import Generator

                        self._generator = Generator(self.config, failures=self.load_failures)
        return self._generator

    def _require_planner(self, what: str) -> QwenPlanner:
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
        if self._projector is _UNSET:
            with self._lock:
                if self._projector is _UNSET:
                    self._projector = self._load_projector()
        return self._projector

    def _load_projector(self) -> Projector:
        from .projector import load_projector

        planner = self._require_planner("the projector")
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

    def preload(self) -> None:
        """Load every configured model now instead of on first use."""
        t0 = time.perf_counter()
        with self._lock:
            if self.planner is not None:
                self.planner.load()
            self.generator.load()
            self.projector()
        log.info("models loaded in %.1f s", time.perf_counter() - t0)

    def check_models(self, request: AnyRequest, *, control: JobControl | None = None) -> None:
        """Fail at once, before any import or decode, when a model ``request`` needs cannot load.

        A remembered failure, or weights that are neither here nor fetchable, raise the
        :class:`~engine.errors.ServerConfigError` the load would raise seconds later. Only the
        models the request surely needs are checked (an ``auto`` request's plan may not generate).
        The tiny preset builds its missing models first, as a stage of ``control``'s job.
        """
        roles: list[str] = []
        if isinstance(request, GenerateRequest):
            roles.append("generator")
            if self.config.projector_off is None:
                roles.append("planner")  # the projector's input
        elif self.config.planner_model is not None and (
            isinstance(request, UnderstandRequest) or self.config.backend != "rules"
        ):
            roles.append("planner")
        for role in roles:
            component = getattr(self, f"_{role}")
            if role in self._injected or bool(getattr(component, "loaded", False)):
                continue
            weights = planner_weights(self.config) if role == "planner" else generator_weights(self.config)
            self._ensure_tiny(control)
            with self.load_failures.guard(weights):
                pass  # the checks alone: remembered failure, then the weights' whereabouts

    def unload(self) -> bool:
        """Drop the loaded models (the GPU memory is freed); the next use loads them again.

        Components given to the constructor stay (their owner decides). Returns whether
        anything was unloaded. Waits for the model work in progress (the one lock).
        """
        with self._lock:
            dropped = [
                name
                for name in ("planner", "generator", "projector")
                if name not in self._injected and getattr(self, f"_{name}") not in (_UNSET, None)
            ]
            for name in dropped:
                setattr(self, f"_{name}", _UNSET)
            if self._annotators:
                dropped.append("annotators")
                self._annotators = {}
            if not dropped:
                return False
            from .accelerator import free_memory

            free_memory()
        log.info("unloaded %s (the next call loads them again)", ", ".join(dropped))
        return True

    def status(self) -> dict[str, Any]:
        def loaded(obj: Any) -> bool:
            return obj not in (_UNSET, None) and bool(getattr(obj, "loaded", False))

        return {
            "planner": self.config.planner_model,
            "planner_backend": self.config.backend,
            "adapter": self.config.adapter,
            "adapter_merged": bool(self.config.adapter) and self.config.backend == "unison",
            "projector": self.config.projector,
            "generator": self.config.generator_model,
            "device": self.config.device,
            "dtype": self.config.dtype,
            "loaded": {
                "planner": loaded(self._planner),
                "generator": loaded(self._generator),
                "projector": self._projector not in (_UNSET, None),
            },
            "preset": self.config.preset,
            "performance": self.config.performance.model_dump(),
            "load_failures": self.load_failures.failed(),
        }

    # ------------------------------------------------------------------ admission

    def admit(self, request: AnyRequest) -> Admitted:
        """Check a request and open its inputs once (no model work): what waits in the job queue."""
        return admit(request, self.config, self.inputs)

    def run(self, admitted: Admitted, *, control: JobControl | None = None) -> AnyResult:
        """Do an admitted request's work, decoding from its opened sources; closes them."""
        with admitted:
            req, sources = admitted.request, admitted.sources
            # Missing weights fail now, not after the inputs are decoded (tiny ones are built now).
            self.check_models(req, control=control)
            if isinstance(req, GenerateRequest):
                # admit() checked the plan: it runs as it is.
                return self._generation(admitted.plan, req.sampling(), control, None, None, sources)
            if isinstance(req, UnderstandRequest):
                return self.understand(
                    admitted.text,
                    admitted.media,
                    max_new_tokens=req.max_new_tokens,
                    control=control,
                    sources=sources,
                )
            return self.auto(
                admitted.text,
                admitted.media,
                sampling=req.sampling(),
                dry_run=req.dry_run,
                control=control,
                sources=sources,
            )

    def _open(
        self, paths: Sequence[str], sources: dict[str, Source] | None
    ) -> tuple[dict[str, Source], bool]:
        """The sources for ``paths``: the given ones, or each opened now (then the caller closes them)."""
        if sources is not None:
            missing = [p for p in paths if p not in sources]
            if missing:
                raise InputRefused(
                    f"input {shown(missing[0])} was not admitted with the request", path=missing[0]
                )
            return sources, False
        opened: dict[str, Source] = {}
        try:
            for p in paths:
                if p not in opened:
                    opened[p] = self.inputs.open_probed(p)
        except BaseException:
            close_all(list(opened.values()))
            raise
        return opened, True

    # ------------------------------------------------------------------ planning

    def plan(self, request: str, media: Sequence[str] = (), *, backend: str | None = None) -> Checked:
        """The checked plan for a free-form request (the dry run of :meth:`auto`)."""
        plan, _, _ = self._plan(parse_request(request, media), backend=backend, want_features=False)
        return plan

    def _plan(
        self,
        req: Request,
        *,
        backend: str | None,
        want_features: bool,
        sources: dict[str, Source] | None = None,
        control: JobControl | None = None,
    ) -> tuple[Checked, torch.Tensor | None, float]:
        backend = backend or self.config.backend
        if backend not in BACKENDS:
            raise InvalidRequest.for_field("planner", backend, "one of " + ", ".join(BACKENDS))
        t0 = time.perf_counter()
        primary = None
        if backend != "rules":
            if backend == "unison" and not self.config.adapter:
                raise ModelError("the unison planner needs the Unison adapter (set adapter / --adapter)")
            self._ensure_tiny(control)
            planner = self._require_planner(f"the {backend} planner")

            def primary(request: Request, want: bool) -> PlanOutput:
                with self._lock, oom_guard("planning"):
                    return planner.plan(request, backend=backend, want_features=want)

        shapes = shapes_of(sources or {})
        routed = route(
            req,
            backend,
            primary=primary,
            rules=self._rules,
            check=lambda p: check_plan(p, self.config.limits, shapes),
            fallback=self.config.planner_fallback,
            want_features=want_features,
        )
        plan = routed.plan.model_copy(update={"planner": routed.planner})
        return plan, routed.features, time.perf_counter() - t0

    # ------------------------------------------------------------------ understanding

    def understand(
        self,
        prompt: str,
        media: Sequence[str] = (),
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        control: JobControl | None = None,
        sources: dict[str, Source] | None = None,
    ) -> UnderstandResult:
        """Answer a question about text, images and/or a video.

        ``sources`` are the inputs already opened (:meth:`admit`); a direct call without them
        is admitted first, exactly as the ``understand`` tool's call is.
        """
        if sources is None:
            arguments: dict[str, Any] = {"prompt": prompt, "media": list(media)}
            if max_new_tokens is not None:
                arguments["max_new_tokens"] = max_new_tokens
            with self.admit(parse_arguments("understand", self.config.limits, arguments)) as admitted:
                return self.understand(
                    admitted.text,
                    admitted.media,
                    max_new_tokens=max_new_tokens,
                    temperature=temperature,
                    control=control,
                    sources=admitted.sources,
                )
        req = parse_request(prompt, media)
        inputs = [MediaInput(path=p, kind=k, role=Role.QUERY) for p, k in req.media]
        opened, _ = self._open([m.path for m in inputs], sources)
        return self._understand(req.prompt, inputs, max_new_tokens, temperature, control, opened)

    def _understand(
        self,
        prompt: str,
        inputs: list[MediaInput],
        max_new_tokens: int | None,
        temperature: float | None,
        control: JobControl | None,
        sources: dict[str, Source],
    ) -> UnderstandResult:
        self._ensure_tiny(control)
        planner = self._require_planner("understanding")
        control = control or JobControl()
        t0 = time.perf_counter()
        with self._lock, oom_guard("understanding"):
            control.set_stage("loading planner")
            planner.load()
            t1 = time.perf_counter()
            control.set_stage("understanding")
            answer = planner.understand(
                prompt,
                inputs,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                control=control,
                sources=sources,
            )
        t2 = time.perf_counter()
        return UnderstandResult(
            answer=answer,
            model=planner.name,
            timings={"load_s": t1 - t0, "answer_s": t2 - t1, "total_s": t2 - t0},
        )

    # ------------------------------------------------------------------ generation

    def generate(
        self,
        plan: BasePlan,
        sampling: Sampling | None = None,
        *,
        control: JobControl | None = None,
        features: torch.Tensor | None = None,
        request: Request | None = None,
        sources: dict[str, Source] | None = None,
    ) -> GenerateResult:
        """Run a generation plan and write its file (PNG or MP4, plus a JSON sidecar): the Python
        API's entrance, where a plain :class:`Plan` is admitted (its inputs opened and probed, the
        plan checked once); a :class:`CheckedPlan` is taken as it is.

        ``features`` are the planner's hidden states from the planning pass (``auto``); when they
        are missing and a projector is configured they are computed with one planner forward
        over ``request`` (or, for a typed plan, its prompt with one placeholder per input).
        ``sources`` are the inputs already opened (:meth:`admit`); without them each input is
        opened here, once, through :attr:`inputs`.
        """
        if plan.spec.understanding:
            raise InvalidRequest.for_field(
                "task", plan.task.value, "is an understanding task: use understand"
            )
        opened, owned = self._open([m.path for m in plan.inputs], sources)
        try:
            # A generation task: checked to a CheckedPlan (as it is when it already is one).
            checked = check_plan(plan, self.config.limits, shapes_of(opened))
            return self._generation(checked, sampling, control, features, request, opened)
        finally:
            if owned:
                close_all(list(opened.values()))

    def _generation(
        self,
        plan: CheckedPlan,
        sampling: Sampling | None,
        control: JobControl | None,
        features: torch.Tensor | None,
        request: Request | None,
        sources: dict[str, Source],
    ) -> GenerateResult:
        """An admitted plan's generation, under the lock (its inputs opened in ``sources``)."""
        with self._lock, oom_guard("generating"):
            return self._generate(plan, sampling, control or JobControl(), features, request, sources)

    def _generate(
        self,
        plan: CheckedPlan,
        sampling: Sampling | None,
        control: JobControl,
        features: torch.Tensor | None,
        request: Request | None,
        sources: dict[str, Source],
    ) -> GenerateResult:
        """The generation of one checked plan, in the order of the paper's figure (under the lock)."""
        from .generator import resolve_sampling
        from .prepare import prepare

        resolved = resolve_sampling(
            sampling, self.config.sampling, limits=self.config.limits, loras=self.config.loras
        )
        preserve = (
            self.config.results.preserve
            if sampling is None or sampling.preserve is None
            else sampling.preserve
        )
        timings: dict[str, float] = {}
        notes = list(plan.notes)
        t_start = t = time.perf_counter()

        # 1. Sources: decode the opened inputs into the generator's video, mask and references
        #    (for a chain: its first window). The tiny preset builds its models first (first use).
        self._ensure_tiny(control)
        control.set_stage("preparing inputs")
        planner = self.planner
        ctx = self._prep_context(planner, control, sources)
        chain = Chain.of(plan, self.config)
        prepared = prepare(chain.first_plan(plan), ctx)
        chain.start(prepared)
        notes.extend(prepared.notes)
        if len(chain.windows) > 1:
            notes.append(chain.note())
        timings["prepare_s"] = time.perf_counter() - t

        # 2. Models, loaded on first use.
        t = time.perf_counter()
        control.set_stage("loading models")
        generator = self.generator
        generator.load()
        projector = self.projector()
        timings["load_s"] = time.perf_counter() - t

        # 3. Project: the Unison planner's hidden states over the request (the LoRA active,
        #    whichever backend planned it) become 4 extra conditioning tokens.
        extra_tokens = None
        seen = request or request_for_plan(plan)  # the request as the Unison planner sees it
        if projector is None:
            off = self.config.projector_off or "no projector given"
            notes.append(f"{off}; ran as plain Wan-VACE (512-position text context)")
        else:
            t = time.perf_counter()
            if features is None:
                control.set_stage("planner features")
                features = planner.features(seen)
            import torch

            with torch.no_grad():
                extra_tokens = projector(features.float().to(_module_device(projector)))  # (1, 4, text_dim)
            timings["projector_s"] = time.perf_counter() - t

        # 4. Generate every candidate, window after window; paste the kept source back. umT5
        #    reads the request with its placeholders beside the projector tokens, as the
        #    reference does (sampling.umt5_prompt), else the prompt alone.
        t = time.perf_counter()
        umt5 = plan.prompt
        if extra_tokens is not None and self.config.sampling.umt5_prompt == "request":
            umt5 = seen.text
        resolved = dataclasses.replace(resolved, umt5_prompt=umt5)
        run = partial(
            generator.run, prompt=umt5, extra_tokens=extra_tokens, sampling=resolved, control=control
        )
        made = chain.make(
            run,
            resolved.seeds,
            batch=len(chain.windows) == 1 and generator.can_batch(prepared, resolved.count),
            composite=self._compositor() if preserve else None,
            steps=resolved.steps,
        )
        timings["generate_s"] = time.perf_counter() - t
        if not preserve:
            notes.append("preserve is off: the generator's raw output, nothing pasted back")
        notes.extend(made.notes)

        # 5. Write, unless a cancel landed after the last step (then nothing is written).
        control.set_stage("writing")
        control.check()
        timings["total_s"] = time.perf_counter() - t_start
        outputs = self._write(plan, resolved, made, sources, projector is not None, notes, timings)
        return GenerateResult(
            plan=plan,
            outputs=outputs,
            seed=resolved.seed,
            steps=resolved.steps,
            guidance=resolved.guidance,
            projector=projector is not None,
            timings=timings,
            notes=notes,
        )

    def _prep_context(
        self, planner: QwenPlanner | None, control: JobControl, sources: dict[str, Source]
    ) -> PrepContext:
        """What preparing sources may call on: the annotators, the segmenter, the planner."""
        from .annotators import looks_like_control
        from .prepare import PrepContext

        return PrepContext(
            limits=self.config.limits,
            ground=self._grounder(planner, control) if planner is not None else None,
            control=control,
            sources=sources,
            annotate=partial(self._annotate, control=control),
            looks_like=looks_like_control,
            segment=self._segment_fn(control),
            phrase=self._phrase_fn(planner),
            dilate_px=self.config.annotators.mask_dilate_px,
        )

    def _annotator(self, kind: str) -> Any:
        """The annotator for ``kind`` (``"segment"`` or a control kind), built once, loaded on use."""
        found = self._annotators.get(kind)
        if found is None:
            with self._lock:
                found = self._annotators.get(kind)
                if found is None:
                    self._ensure_tiny()
                    from . import annotators

                    if kind == "segment":
                        found = annotators.build_segmenter(self.config)
                    else:
                        found = annotators.build_control(kind, self.config)
                    self._annotators[kind] = found
        return found

    def _annotate(self, kind: str, frames: Any, *, control: JobControl) -> Any:
        """A control signal from plain frames, as its own stage of the job (cancel between frames)."""
        annotator = self._annotator(kind)
        control.set_stage(f"extracting {kind}", total=1)
        with oom_guard(f"extracting {kind}"):
            annotator.load()
            try:
                out = annotator(frames, control=control)
            finally:
                self._offload(annotator)
        control.step(1, 1)
        return out

    def _segment_fn(self, control: JobControl) -> Callable[[Any, str], Any] | None:
        if self.config.annotators.segment_model is None:
            return None

        def segment(frames: Any, phrase: str) -> Any:
            segmenter = self._annotator("segment")
            control.set_stage("finding the edit region", total=1)
            with oom_guard("segmenting"):
                segmenter.load()
                try:
                    masks = segmenter(frames, phrase, control=control)
                finally:
                    self._offload(segmenter)
            control.step(1, 1)
            return masks

        return segment

    def _offload(self, annotator: Any) -> None:
        """Free the accelerator for the generator: annotators stay loaded only on a CPU."""
        device = getattr(self.generator, "device", None)
        if getattr(device, "type", "cpu") != "cpu":
            annotator.unload()

    def _phrase_fn(self, planner: QwenPlanner | None) -> Callable[[str], str | None] | None:
        """The object an edit prompt names, read by the planner model (any language it reads)."""
        if planner is None:
            return None

        def phrase(prompt: str) -> str | None:
            planner.load()
            return planner.edit_target(prompt)

        return phrase

    def _compositor(self) -> Callable[..., Any]:
        from .composite import composite

        results = self.config.results
        return partial(composite, feather_px=results.feather_px, color_match=results.color_match)

    def _write(
        self,
        plan: CheckedPlan,
        resolved: Any,
        made: Made,
        sources: dict[str, Source],
        projected: bool,
        notes: list[str],
        timings: dict[str, float],
    ) -> list[OutputFile]:
        """Each candidate's file (and, for video_extend, its new part alone), with its sidecar."""
        from .outputs import write_output

        audio = self._audio_span(plan, sources)
        # One id for every file of this generation (candidates, new part, mask, control), so a
        # viewer can group them.
        run = uuid.uuid4().hex
        outputs: list[OutputFile] = []
        for k, (seed, frames) in enumerate(zip(resolved.seeds, made.frames, strict=True)):
            parts = [("result", frames, audio)]
            if made.new_from is not None:
                parts.append(("new_part", frames[made.new_from :], None))
            for role, part, sound in parts:
                meta = self._sidecar(plan, resolved, projected, notes, timings)
                meta.update(run=run, seed=seed, candidate=k, output=role, preserved=made.preserved[k])
                if role == "new_part":
                    meta["notes"] = [*notes, "the new frames only, without the source clip"]
                out_notes: list[str] = []
                output = write_output(
                    part,
                    output_dir=self.config.output_dir,
                    task=plan.task.value,
                    fps=plan.fps,
                    metadata=meta,
                    audio=sound,
                    notes=out_notes,
                )
                outputs.append(output.model_copy(update={"seed": seed, "role": role}))
                notes.extend(n for n in out_notes if n not in notes)
        # What was extracted (a mask found from words, a control signal), once for all candidates,
        # so a user can check it and give it to a later call.
        for role, frames in made.extras:
            meta = self._sidecar(plan, resolved, projected, notes, timings)
            meta.update(run=run, output=role, of=[o.name for o in outputs if o.role == "result"])
            output = write_output(
                frames,
                output_dir=self.config.output_dir,
                task=f"{plan.task.value}-{role}",
                fps=plan.fps,
                metadata=meta,
            )
            outputs.append(output.model_copy(update={"role": role}))
        return outputs

    def _audio_span(self, plan: CheckedPlan, sources: dict[str, Source]) -> Any:
        """The source audio an output spans (edit, outpaint, control of a video with sound)."""
        role = plan.spec.length_from
        if role is None or not self.config.results.audio:
            return None
        source = sources.get(plan.one(role).path)
        header = getattr(source, "header", None)
        if source is None or not getattr(header, "audio", None):
            return None
        from .media import AudioSpan

        # A source video's span: the plan is a video, with a rate.
        return AudioSpan(source=source, start_s=0.0, duration_s=plan.num_frames / plan.fps)

    def _sidecar(
        self, plan: CheckedPlan, resolved: Any, projected: bool, notes: list[str], timings: dict[str, float]
    ) -> dict[str, Any]:
        """The JSON written beside an output: the plan, the settings used, the models, the timings."""
        return {
            "task": plan.task.value,
            "prompt": plan.prompt,
            "negative_prompt": resolved.negative_prompt,
            "plan": plan.model_dump(mode="json"),
            "seed": resolved.seed,
            "steps": resolved.steps,
            "guidance": resolved.guidance,
            "flow_shift": resolved.flow_shift,
            "conditioning_scale": resolved.conditioning_scale,
            "turbo": resolved.turbo,
            "loras": [list(x) for x in resolved.loras] if resolved.loras else [],
            "width": plan.width,
            "height": plan.height,
            "num_frames": plan.num_frames,
            "fps": plan.fps,
            "projector": projected,
            "umt5_prompt": {
                "mode": self.config.sampling.umt5_prompt if projected else "plain",
                "text": resolved.umt5_prompt,
            },
            "text_context": resolved.text_len if projected else resolved.max_sequence_length,
            "models": {
                "planner": self.config.planner_model,
                "adapter": self.config.adapter,
                "projector": self.config.projector if projected else None,
                "generator": self.config.generator_model,
            },
            "notes": list(notes),
            "timings": timings,
        }

    def _grounder(
        self, planner: QwenPlanner, control: JobControl
    ) -> Callable[[Any, str], list[tuple[float, float, float, float]]]:
        def ground(image: Any, phrase: str) -> list[tuple[float, float, float, float]]:
            control.check()
            planner.load()
            return planner.ground(image, phrase)

        return ground

    # ------------------------------------------------------------------ automation

    def auto(
        self,
        request: str,
        media: Sequence[str] = (),
        *,
        sampling: Sampling | None = None,
        dry_run: bool = False,
        control: JobControl | None = None,
        backend: str | None = None,
        sources: dict[str, Source] | None = None,
    ) -> AutoResult:
        """Unison's full automation: plan the request, then answer it or generate for it.

        The plan is checked once (here). ``sources`` are the inputs already opened
        (:meth:`admit`); a direct call without them is admitted first, as the ``auto`` tool's is.
        """
        if sources is None:
            arguments = {"prompt": request, "media": list(media), "dry_run": dry_run}
            with self.admit(parse_arguments("auto", self.config.limits, arguments)) as admitted:
                return self.auto(
                    admitted.text,
                    admitted.media,
                    sampling=sampling,
                    dry_run=dry_run,
                    control=control,
                    backend=backend,
                    sources=admitted.sources,
                )
        control = control or JobControl()
        req = parse_request(request, media)
        control.set_stage("planning")
        want = not dry_run and self.config.projector_off is None
        plan, features, plan_s = self._plan(
            req, backend=backend, want_features=want, sources=sources, control=control
        )
        if dry_run:
            return AutoResult(plan=plan)
        opened, _ = self._open([m.path for m in plan.inputs], sources)
        if isinstance(plan, CheckedQuestion):
            answer = self._understand(plan.prompt, list(plan.inputs), None, None, control, opened)
            answer.timings["plan_s"] = plan_s
            return AutoResult(plan=plan, answer=answer)
        generation = self._generation(plan, sampling, control, features, req, opened)
        generation.timings["plan_s"] = plan_s
        return AutoResult(plan=plan, generation=generation)


def _module_device(module: Any) -> Any:
    try:
        return next(module.parameters()).device
    except (StopIteration, AttributeError):
        return "cpu"

"""Stage two: Wan2.1-VACE through diffusers' ``WanVACEPipeline``, conditioned the Unison way.

Conditioning follows UNISON.md ("Text context length"): the prompt and the negative prompt are
encoded with the pipeline's own umT5 over their real tokens (the tokenizer stops at
``max_sequence_length``, 512); the positive context gains the projector's 4 tokens; both are
zero-padded to ``text_len`` (2048, the reference's DiT text length). The DiT attends to every
context position, padding included, so the padded length is part of the conditioning. Without
projector tokens the generator runs as plain Wan-VACE with a 512-position context.

This module imports torch at the top: import it lazily (the engine does).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor
from huggingface_hub import hf_hub_download

from . import frames, loras, perf, quantize, textcache
from .accelerator import free_memory, is_oom, oom_guard, resolve_device, resolve_dtype
from .config import EngineConfig, PerformanceOptions
from .control import JobControl
from .errors import InvalidRequest, ModelError
from .hub import LoadFailures, generator_weights
from .imports import heavy_imports
from .loras import LoraSpec
from .perf import Applied
from .projector import resolve_weights_file
from .sampling import ResolvedSampling
from .textcache import EncodingKey, TextCache
from .timings import Laps, Timings

if TYPE_CHECKING:
    from .prepare import Prepared

log = logging.getLogger(__name__)


# --- conditioning -------------------------------------------------------------------------------


def encode_text(
    tokenizer: Any,
    text_encoder: torch.nn.Module,
    text: str,
    *,
    max_sequence_length: int,
    device: torch.device | str,
    pad_to_max: bool = True,
    cache: TextCache | None = None,
) -> torch.Tensor:
    """umT5 output over the real tokens of ``text`` only: ``(n, text_dim)``, n <= max_sequence_length.

    ``pad_to_max`` pads to ``max_sequence_length`` like the reference. The attention mask keeps
    the padding out of the real tokens' outputs, so without it the result is the same up to
    floating-point summation order, for a fraction of the work (a 20-token prompt instead of 512
    positions): used when umT5-XXL runs on the CPU (``offload="text_encoder_cpu"``).

    ``cache``: an LRU of earlier results (:mod:`engine.textcache`), keyed by the text, the cap,
    the padding, the device and the encoder's dtype; a hit returns a clone of exactly what the
    encoder gave, without running it.
    """
    # Lazy: diffusers' pipeline modules import transformers (seconds).
    from diffusers.pipelines.wan.pipeline_wan_vace import prompt_clean

    key = None
    if cache is not None:
        dtype = getattr(text_encoder, "dtype", None) or next(text_encoder.parameters()).dtype
        key = EncodingKey(text, max_sequence_length, pad_to_max, str(torch.device(device)), str(dtype))
        hit = cache.get(key)
        if hit is not None:
            return hit
    inputs = tokenizer(
        [prompt_clean(text)],
        padding="max_length" if pad_to_max else "do_not_pad",
        max_length=max_sequence_length,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    n = int(inputs.attention_mask[0].sum())
    with torch.inference_mode():
        hidden = text_encoder(
            inputs.input_ids.to(device), attention_mask=inputs.attention_mask.to(device)
        ).last_hidden_state  # (1, max_sequence_length, text_dim)
    encoding = hidden[0, :n]  # (n, text_dim)
    if cache is not None and key is not None:
        cache.put(key, encoding)
    return encoding


def pad_context(parts: list[torch.Tensor], length: int) -> torch.Tensor:
    """Concatenate ``(n_i, D)`` pieces and zero-pad to ``(1, length, D)``.

    If they do not fit, the first piece (the text tokens) is cut so that later pieces (the
    projector's tokens) survive whole.
    """
    fixed = sum(p.shape[0] for p in parts[1:])
    if fixed > length:
        raise InvalidRequest.for_field("text_len", length, f"must leave room for {fixed} projector tokens")
    if parts[0].shape[0] + fixed > length:
        log.warning(
            "text context of %d tokens cut to %d to fit text_len=%d",
            parts[0].shape[0],
            length - fixed,
            length,
        )
        parts = [parts[0][: length - fixed], *parts[1:]]
    context = torch.cat(parts, dim=0)  # (n, D)
    padding = context.new_zeros(length - context.shape[0], context.shape[1])
    return torch.cat([context, padding], dim=0).unsqueeze(0)  # (1, length, D)


def build_text_context(
    pipe: Any,
    prompt: str,
    *,
    negative_prompt: str | None,
    extra_tokens: torch.Tensor | None,
    text_len: int,
    max_sequence_length: int,
    encoder_device: torch.device | str | None = None,
    use_cache: bool = True,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(prompt_embeds, negative_prompt_embeds)`` for ``WanVACEPipeline``, as UNISON.md says.

    With ``extra_tokens`` ``(1, 4, text_dim)``: positive = real tokens + the 4 tokens + zeros up to
    ``text_len``; negative = real tokens + zeros up to ``text_len``. Without: both padded to
    ``max_sequence_length`` (plain Wan-VACE). ``negative_prompt=None`` skips the negative (no
    classifier-free guidance). Both come back in the transformer's dtype on the execution device.
    ``encoder_device``: where umT5 runs when that is not the execution device (umT5 kept on the
    CPU); its prompts are then encoded without padding (see :func:`encode_text`).
    ``use_cache``: look the texts up in the text encoder's LRU (:func:`engine.textcache.cache_for`,
    sized by ``textcache.attach``) first, so a repeated prompt and the negative prompt are
    encoded once; the result is the same tensor either way.
    """
    device = pipe._execution_device
    dtype = pipe.transformer.dtype
    encode_on = torch.device(encoder_device) if encoder_device is not None else torch.device(device)
    pad_to_max = encode_on.type == torch.device(device).type
    cache = textcache.cache_for(pipe.text_encoder) if use_cache else None

    def encode(text: str) -> torch.Tensor:
        return encode_text(
            pipe.tokenizer,
            pipe.text_encoder,
            text,
            max_sequence_length=max_sequence_length,
            device=encode_on,
            pad_to_max=pad_to_max,
            cache=cache,
        ).to(device=device, dtype=dtype)

    positive = [encode(prompt)]
    length = max_sequence_length
    if extra_tokens is not None:
        width = pipe.text_encoder.config.d_model
        if extra_tokens.ndim != 3 or extra_tokens.shape[0] != 1 or extra_tokens.shape[2] != width:
            raise ModelError(
                f"extra_tokens shape={tuple(extra_tokens.shape)}: must be (1, n, {width}) "
                "(the projector's text_dim must equal the generator's umT5 width)"
            )
        positive.append(extra_tokens[0].to(device=device, dtype=dtype))
        length = text_len
    prompt_embeds = pad_context(positive, length)
    negative_embeds = None
    if negative_prompt is not None:
        negative_embeds = pad_context([encode(negative_prompt)], length)
    return prompt_embeds, negative_embeds


# --- the generator ------------------------------------------------------------------------------


@contextlib.contextmanager
def broadcast_conditions(transformer: torch.nn.Module) -> Iterator[None]:
    """For one pipeline call: the DiT takes a batch of latents with one text context and one
    VACE context, each expanded to the batch (diffusers 0.42 conditions a single video)."""

    def expand(_module: Any, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        x = kwargs.get("hidden_states", args[0] if args else None)
        if x is None:
            return args, kwargs
        for name in ("encoder_hidden_states", "control_hidden_states"):
            value = kwargs.get(name)
            if isinstance(value, torch.Tensor) and value.shape[0] == 1 < x.shape[0]:
                kwargs[name] = value.expand(x.shape[0], *value.shape[1:])
        return args, kwargs

    handle = transformer.register_forward_pre_hook(expand, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


def initial_noise(
    pipe: Any, prepared: Prepared, generators: list[torch.Generator], device: Any
) -> torch.Tensor:
    """The initial latents of a batch, ``(B, C, F', h, w)`` float32: row ``k`` is what
    ``WanVACEPipeline.prepare_latents`` draws for one video with ``generators[k]``."""
    refs = len(prepared.reference_images or ())
    frames = prepared.num_frames + refs * pipe.vae_scale_factor_temporal
    shape = (
        1,
        pipe.transformer.config.in_channels,
        (frames - 1) // pipe.vae_scale_factor_temporal + 1,
        prepared.height // pipe.vae_scale_factor_spatial,
        prepared.width // pipe.vae_scale_factor_spatial,
    )
    rows = [
        randn_tensor(shape, generator=g, device=torch.device(device), dtype=torch.float32) for g in generators
    ]
    return torch.cat(rows)


def flow_scheduler(current: Any, flow_shift: float) -> Any:
    """UniPC configured for flow matching with ``flow_shift`` (as the reference samples);
    ``current`` itself when it already is."""
    from diffusers import UniPCMultistepScheduler  # lazy: diffusers' schedulers, loaded with the pipeline

    config = current.config
    if (
        isinstance(current, UniPCMultistepScheduler)
        and config.get("prediction_type") == "flow_prediction"
        and config.get("use_flow_sigmas")
        and config.get("flow_shift") == flow_shift
    ):
        return current
    return UniPCMultistepScheduler.from_config(
        config, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=flow_shift
    )


def pad_reference_masks(pipe: Any) -> None:
    """Work around diffusers 0.42's ``WanVACEPipeline.prepare_masks`` for outputs with more
    reference images than latent frames (an image with two references).

    It pads the mask with one zero frame per reference image using
    ``zeros_like(mask[:, :num_refs])``, which has only ``min(num_refs, latent_frames)`` frames; the
    VACE context then has more frames than its mask and ``torch.cat`` fails. The wrapper, on this
    pipeline instance only, adds the missing zero frames at the front, where the padding belongs;
    every other case is left exactly as diffusers computes it.
    """
    original = pipe.prepare_masks
    stride = int(pipe.vae_scale_factor_temporal)

    def prepare_masks(
        mask: torch.Tensor, reference_images: Any = None, generator: Any = None
    ) -> torch.Tensor:
        masks = original(mask, reference_images, generator)  # (B, 64, F', h, w)
        if not reference_images:
            return masks
        wanted = (mask.shape[2] + stride - 1) // stride + len(reference_images[0])
        missing = wanted - masks.shape[2]
        if missing <= 0:
            return masks
        pad = masks.new_zeros(masks.shape[0], masks.shape[1], missing, *masks.shape[3:])
        return torch.cat([pad, masks], dim=2)

    pipe.prepare_masks = prepare_masks


class Generator:
    """Wan2.1-VACE, loaded lazily once, run with Unison's conditioning, progress and cancel.

    The speed/memory switches of ``config.performance`` (see :mod:`engine.perf` and
    docs/performance.md) are applied once, when the pipeline loads; other options mean another
    generator (:meth:`with_options`). No lock of its own: the engine serialises all model work.
    """

    def __init__(self, config: EngineConfig, *, failures: LoadFailures | None = None):
        self.config = config
        self.name = config.generator_model
        #: Where a failed load is remembered (the engine's, shared by its models), and what loads.
        self.failures = failures if failures is not None else LoadFailures()
        self.weights = generator_weights(config)
        if config.generator_single_file:
            self.name += f" (transformer: {Path(config.generator_single_file).name})"
        self.device = resolve_device(config.device, setting="device")
        self.dtype = resolve_dtype(config.dtype, self.device)
        #: What the switches did in the last run (batched passes, cache skips), for benchmarks.
        self.last_run: dict[str, Any] = {}
        self._pipe: Any = None
        self._applied: Applied | None = None
        self._text_dim: int | None = None
        #: What :func:`engine.loras.load_all` loaded: whether turbo is there, the user LoRAs by name.
        self._turbo_loaded = False
        self._user_loras: dict[str, LoraSpec] = {}

    @property
    def performance(self) -> PerformanceOptions:
        """The speed/memory switches this generator applies (``config.performance``)."""
        return self.config.performance

    # -- loading --

    @property
    def loaded(self) -> bool:
        return self._pipe is not None

    @property
    def pipeline(self) -> Any:
        """The loaded ``WanVACEPipeline`` (loads it first)."""
        self.load()
        return self._pipe

    @property
    def text_dim(self) -> int:
        """umT5 width: from the loaded model, or before loading from ``text_encoder/config.json``."""
        if self._text_dim is None:
            self._text_dim = self._read_text_dim()
        return self._text_dim

    def _read_text_dim(self) -> int:
        model = self.config.generator_model
        local = Path(model).expanduser()
        if local.is_dir():
            file = local / "text_encoder" / "config.json"
        else:
            try:
                file = Path(
                    hf_hub_download(
                        repo_id=model,
                        filename="text_encoder/config.json",
                        local_files_only=self.config.local_files_only,
                        cache_dir=str(self.config.cache_dir) if self.config.cache_dir else None,
                    )
                )
            except Exception as exc:  # offline, 404, cache miss: all mean "config not available"
                raise ModelError(
                    f"generator_model={model!r}: cannot read text_encoder/config.json: {exc}"
                ) from exc
        try:
            return int(json.loads(file.read_text(encoding="utf-8"))["d_model"])
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"generator_model={model!r}: no d_model in {file}: {exc}") from exc

    def load(self) -> None:
        """Load the pipeline now (once), with ``config.performance`` applied."""
        if self._pipe is not None:
            return
        # A failure is remembered (the next call fails at once); weights that are neither here
        # nor fetchable fail before anything is read.
        with self.failures.guard(self.weights):
            # Every switch is checked before gigabytes of weights are read.
            perf.check_options(self.performance, self.device)
            quantize.check_quantize(self.performance, self.device, self.dtype)
            with oom_guard("loading the generator"):
                self._install(self._load_pipeline())

    def _install(self, pipe: Any) -> None:
        # Frames in and out as uint8 on the device (engine.frames), whoever built the pipeline.
        frames.install(pipe)
        # LoRAs go in before the speed switches: compiled or hooked blocks then already hold them.
        if not getattr(pipe, "_unison_loras_loaded", False):
            self._turbo_loaded, self._user_loras = loras.load_all(pipe, self.config)
            pipe._unison_loras_loaded = (self._turbo_loaded, self._user_loras)
        else:  # a pipeline handed over by with_options keeps its adapters
            self._turbo_loaded, self._user_loras = pipe._unison_loras_loaded
        if self.performance.quantize != "none":
            # float8 after every LoRA is in: an adapter cannot be added to a float8 layer later,
            # so the turbo LoRA loads now instead of on the first turbo call.
            if not self._turbo_loaded and self.config.loras.turbo_lora is not None:
                loras.load_turbo(pipe, self.config)
                self._turbo_loaded = True
                pipe._unison_loras_loaded = (True, self._user_loras)
            quantize.quantize_dit(pipe.transformer, self.performance.quantize)
        self._applied = perf.apply_options(pipe, self.performance, self.device)
        self._text_dim = int(pipe.text_encoder.config.d_model)
        # umT5 encodings kept by exact text: a repeated prompt and the negative run once.
        textcache.attach(pipe.text_encoder, self.performance.text_cache_size)
        self._pipe = pipe

    def active_adapters(self, sampling: ResolvedSampling) -> tuple[tuple[str, float], ...]:
        """The adapters (name, strength) a run with ``sampling`` switches on, checked against what
        is loaded: unknown user LoRA names and bad strengths are :class:`InvalidRequest`."""
        active: list[tuple[str, float]] = []
        if sampling.turbo:
            if not self._turbo_loaded:
                # Once per pipeline: the base weights stay, only the adapter is added.
                loras.load_turbo(self.pipeline, self.config)
                self._turbo_loaded = True
                self.pipeline._unison_loras_loaded = (True, self._user_loras)
            active.append((loras.TURBO, self.config.loras.turbo_strength))
        active += loras.resolve_choices(sampling.loras, self._user_loras)
        return tuple(active)

    def with_options(self, options: PerformanceOptions) -> Generator:
        """A generator for other speed/memory ``options`` on this one's weights (for benchmarks
        that compare options without loading the weights again).

        The loaded pipeline moves to the new generator and is hooked once for ``options``; this
        generator gives it up (it would load again if used). A different ``offload`` puts the
        weights elsewhere (and float8 weights cannot become bfloat16 again: ``quantize`` fp8 -> none), so
        the pipeline is dropped and the new generator loads on first use.
        The same options give this generator back, MagCache calibration and all.
        """
        if options == self.performance:
            return self
        new = Generator(self.config.model_copy(update={"performance": options.model_copy()}))
        perf.check_options(options, new.device)
        quantize.check_quantize(options, new.device, new.dtype)
        pipe, self._pipe, self._applied = self._pipe, None, None
        if pipe is None:
            return new
        # float8 weights cannot go back to bfloat16: fp8 -> none loads again, none -> fp8 converts.
        same_weights = quantize.can_hand_over(self.performance.quantize, options.quantize)
        if options.offload == self.performance.offload and same_weights:
            new._install(pipe)
        else:
            log.info("offload/quantize changed: the generator loads again (%s)", options)
            del pipe
            free_memory()
        return new

    def _load_pipeline(self) -> Any:
        with heavy_imports():  # lazy: diffusers' pipelines import transformers and peft (seconds)
            from diffusers import WanVACEPipeline, WanVACETransformer3DModel

        cfg = self.config
        common: dict[str, Any] = {"local_files_only": cfg.local_files_only}
        if cfg.cache_dir is not None:
            common["cache_dir"] = str(cfg.cache_dir)
        # The Wan VAE is run in float32 (as Wan does); everything else in the configured dtype.
        dtypes = {"default": self.dtype, "vae": torch.float32}
        extra: dict[str, Any] = {}
        if cfg.generator_single_file:
            file = resolve_weights_file(
                cfg.generator_single_file,
                local_files_only=cfg.local_files_only,
                cache_dir=cfg.cache_dir,
                what="generator_single_file",
            )
            log.info("loading the VACE transformer from single file %s", file)
            try:
                extra["transformer"] = WanVACETransformer3DModel.from_single_file(
                    str(file), config=cfg.generator_model, subfolder="transformer", dtype=self.dtype, **common
                )
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                if is_oom(exc):
                    raise
                raise ModelError(
                    f"generator_single_file={cfg.generator_single_file!r}: cannot load as a Wan-VACE "
                    f"transformer with the config of {cfg.generator_model!r}: {exc}"
                ) from exc
        log.info("loading WanVACEPipeline %s on %s (%s)", cfg.generator_model, self.device, self.dtype)
        try:
            pipe = WanVACEPipeline.from_pretrained(cfg.generator_model, dtype=dtypes, **common, **extra)
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            if is_oom(exc):
                raise
            hint = (
                " (local_files_only is set: only local files were searched)" if cfg.local_files_only else ""
            )
            raise ModelError(
                f"generator_model={cfg.generator_model!r}: cannot load a WanVACEPipeline{hint}: {exc}"
            ) from exc
        where = perf.place_pipeline(pipe, self.performance.offload, self.device)
        log.info("generator placement: %s", where)
        # tqdm bars would only add noise to the server's stderr; progress goes through JobControl.
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = flow_scheduler(pipe.scheduler, cfg.sampling.flow_shift)
        pad_reference_masks(pipe)
        return pipe

    # -- running --

    #: GPU memory one candidate's batch share takes per output pixel-frame (latents, DiT
    #: activations, the VAE decode), a rough upper figure for Wan2.1-VACE-1.3B in bfloat16.
    BATCH_BYTES_PER_PIXEL_FRAME = 300

    def can_batch(self, prepared: Prepared, count: int) -> bool:
        """Whether ``count`` candidates fit in one batch: on CUDA, when the free memory holds
        ``count`` times a rough per-candidate estimate; elsewhere never (one after another)."""
        opts = self.performance
        # The batched-CFG and step-cache hooks expect one video per pass.
        if count <= 1 or self.device.type != "cuda" or opts.offload != "none" or opts.batch_cfg:
            return False
        if opts.cache != "none":
            return False
        free, _ = torch.cuda.mem_get_info(self.device)
        need = (
            count * prepared.width * prepared.height * prepared.num_frames * self.BATCH_BYTES_PER_PIXEL_FRAME
        )
        return need < free

    def run(
        self,
        prepared: Prepared,
        prompt: str,
        *,
        extra_tokens: torch.Tensor | None,
        sampling: ResolvedSampling,
        control: JobControl | None,
        seeds: Sequence[int] | None = None,
        progress: tuple[int, int] | None = None,
        stage: str = "generating",
        timings: Timings | None = None,
        on_device: bool = False,
    ) -> np.ndarray | torch.Tensor:
        """Generate ``prepared.num_frames`` frames: ``(F, H, W, 3)`` uint8, or with ``seeds``
        one batch of candidates ``(B, F, H, W, 3)``, one per seed (one pass over the batch).

        Args:
            prepared: size, frame count and the VACE inputs (source video, mask, reference images).
            prompt: the text prompt, encoded by the pipeline's umT5.
            extra_tokens: ``(1, 4, text_dim)``, the projector's tokens; ``None`` runs plain Wan-VACE
                (512-position context).
            sampling: every sampling setting resolved (:func:`~engine.sampling.resolve_sampling`).
            control: progress goes to ``control.step`` once per step; a cancel raises
                :class:`~engine.errors.Cancelled` from inside the step loop, before any VAE decode.
            seeds: a batch of candidates, one per seed (``sampling.seed`` alone when ``None``);
                each gets the noise its seed alone would give.
            progress: ``(steps done before this run, steps in all runs)`` when this run is one
                of several (windows of a chain, candidates one after another), so progress
                counts across all of them.
            stage: the progress stage's name.
            timings: where this run's stages are added (``encode_prompt``, ``vace_encode``,
                ``denoise``, ``vae_decode``, ``postprocess``; see :mod:`engine.timings`).
            on_device: give the frames as the uint8 tensor on the execution device, not copied to
                the host, for the composite to paste there (:func:`engine.composite.composite`).
        """
        pipe = self._ready(sampling)
        laps = Laps(timings if timings is not None else Timings())
        size = f"{prepared.width}x{prepared.height}, {prepared.num_frames} frames"
        self.last_run = {}
        try:
            with oom_guard(f"generating {size}"):
                # 1. Seed: one noise generator per candidate (see _noise).
                batch = [sampling.seed] if seeds is None else list(seeds)
                generators, latents = self._noise(pipe, prepared, batch)
                # 2. Text context: umT5 over the prompt's real tokens, the projector's 4 tokens,
                #    zeros up to text_len (the negative without the 4 tokens).
                embeds = self._text_context(pipe, prompt, extra_tokens, sampling)
                laps.lap("encode_prompt")
                # 3. Scheduler: flow-matching UniPC with this request's shift.
                pipe.scheduler = flow_scheduler(pipe.scheduler, sampling.flow_shift)
                # 4. VACE's inputs scaled on the device, denoise with progress and cancel in the
                #    step callback, VAE-decode, frames made uint8 on the device (engine.frames).
                steps = _StepReport(control, stage, sampling.steps, progress, laps)
                output = self._denoise(pipe, prepared, embeds, generators, latents, sampling, steps)
                # 5. Frames: (B, F, H, W, 3) uint8, one copy to the host (after the paste, when
                #    the composite works on the device).
                video = output.frames if on_device else output.frames.cpu().numpy()
                laps.lap("postprocess")
        except BaseException:
            # The pipeline only releases offload hooks (and resets cache state) at its normal end.
            pipe.maybe_free_model_hooks()
            raise
        finally:
            # A run left by an exception (cancel, OOM) must not leak into the next one.
            pipe._current_timestep = None
            pipe._interrupt = False
            pipe.video_processor.laps = None
        return video[0] if seeds is None else video

    def _ready(self, sampling: ResolvedSampling) -> Any:
        """The loaded pipeline (loads on first use) with this run's adapters, and only those, on."""
        pipe = self.pipeline
        adapters = self.active_adapters(sampling)
        if self._turbo_loaded or self._user_loras:
            # Only this call's adapters: none active gives the base model's output exactly.
            loras.activate(pipe, adapters)
        return pipe

    def _noise(
        self, pipe: Any, prepared: Prepared, seeds: list[int]
    ) -> tuple[list[torch.Generator], torch.Tensor | None]:
        """One seeded generator per candidate, on the device the noise is drawn on (CUDA, else the
        CPU), and for a batch its initial latents: diffusers 0.42 takes one generator only, so a
        batch gets its noise drawn here, each candidate exactly as the pipeline would for its seed
        alone (``None``: one candidate, the pipeline draws it)."""
        device = self.device if self.device.type == "cuda" else "cpu"
        generators = [torch.Generator(device=device).manual_seed(s) for s in seeds]
        latents = None if len(seeds) == 1 else initial_noise(pipe, prepared, generators, device)
        return generators, latents

    def _text_context(
        self, pipe: Any, prompt: str, extra_tokens: torch.Tensor | None, sampling: ResolvedSampling
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(prompt_embeds, negative_embeds)``, ``(1, L, text_dim)`` each (L = text_len with the
        projector's tokens, else 512). The pipeline skips the unconditional pass at guidance <= 1,
        so the negative is not encoded then. A batch keeps one text context and one VACE context
        (diffusers 0.42 conditions a single video); the DiT broadcasts them over the latents."""
        with torch.inference_mode():
            return build_text_context(
                pipe,
                prompt,
                negative_prompt=sampling.negative_prompt if sampling.guidance > 1.0 else None,
                extra_tokens=extra_tokens,
                text_len=sampling.text_len,
                max_sequence_length=sampling.max_sequence_length,
                encoder_device=perf.text_encoder_device(pipe, self.performance.offload, self.device),
            )

    def _denoise(
        self,
        pipe: Any,
        prepared: Prepared,
        embeds: tuple[torch.Tensor, torch.Tensor | None],
        generators: list[torch.Generator],
        latents: torch.Tensor | None,
        sampling: ResolvedSampling,
        steps: _StepReport,
    ) -> Any:
        """The pipeline's denoising loop and VAE decode, with the per-run switches (batched CFG,
        cache counters, MagCache calibration) around it. ``steps`` reports each step; a cancel
        raised there stops at once: no further step, no decode."""
        applied = self._applied
        if applied is None:  # pragma: no cover - set together with the pipeline
            raise ModelError("the generator's pipeline is loaded without its options applied")
        positive, negative = embeds
        batched = len(generators) > 1
        broadcast = broadcast_conditions(pipe.transformer) if batched else contextlib.nullcontext()
        steps.start()
        device = pipe._execution_device
        video_u8, mask_u8 = prepared.arrays()  # converted once, shared with the composite
        video = frames.device_frames(video_u8, device)  # (1, F, 3, H, W) uint8
        mask = frames.device_frames(mask_u8, device)  # (1, F, 1, H, W) uint8
        pipe.video_processor.laps = steps.laps
        with broadcast, applied.running(steps=sampling.steps, positive=positive, negative=negative) as stats:
            output = pipe(
                prompt_embeds=positive,
                negative_prompt_embeds=negative,
                video=video,
                mask=mask,
                reference_images=prepared.reference_images,
                conditioning_scale=sampling.conditioning_scale,
                height=prepared.height,
                width=prepared.width,
                num_frames=prepared.num_frames,
                num_inference_steps=sampling.steps,
                guidance_scale=sampling.guidance,
                generator=generators[0],
                latents=latents,
                output_type=frames.UINT8,
                callback_on_step_end=steps.on_step_end,
                max_sequence_length=sampling.max_sequence_length,
            )
        self.last_run = stats.as_dict()
        return output


class _StepReport:
    """A run's denoising steps as progress: ``progress`` is ``(steps done before this run, steps
    in all runs)`` when the run is one of several (windows of a chain, candidates one after
    another), so the count goes on across them."""

    def __init__(
        self,
        control: JobControl | None,
        stage: str,
        steps: int,
        progress: tuple[int, int] | None,
        laps: Laps,
    ):
        self.control = control
        self.stage = stage
        self.steps = steps
        self.laps = laps
        self.before, self.overall = progress if progress is not None else (0, steps)

    def start(self) -> None:
        if self.control is not None:
            self.control.set_stage(self.stage, total=self.overall)

    def on_step_end(self, _pipe: Any, i: int, _t: Any, callback_kwargs: dict) -> dict:
        """diffusers' ``callback_on_step_end``: one report per step (a cancel raises here)."""
        self.laps.lap("denoise")
        if self.control is not None:
            self.control.step(self.before + i + 1, self.overall)
            if i + 1 == self.steps:  # the VAE decode follows the run's last step: its own stage
                self.control.set_stage("decoding")
        return callback_kwargs

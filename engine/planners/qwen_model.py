"""Qwen2.5-VL, loaded once: the model the ``unison`` and ``instruct`` backends (and understanding,
and grounding) run on.

:class:`QwenModel` loads Qwen2.5-VL on first use and, whenever an adapter is configured, the
Unison LoRA with it, whatever the backend (:mod:`~engine.planners.adapter`). Those weights hold
two models, each with its own tokenizer:

- **the Unison planner**: base + LoRA, with the adapter's tokenizer (``<IMGPAD>`` and the other
  13 added tokens are one id each). The ``unison`` backend plans with it, and the projector's
  input always comes from it (:meth:`QwenModel.features`), whichever backend routed the
  request: it is the model the projector was trained beside.
- **the plain base model**, with the base tokenizer. The ``instruct`` backend plans with it.

How they are held follows the configured ``planner_backend``:

- ``unison``: the LoRA is merged in memory (:func:`~engine.planners.adapter.merge_adapter`), as the
  reference merges it offline: no per-step LoRA cost, and the saved-whole embeddings are held
  once. The plain model is then not in memory: an ``instruct`` plan asked for per request runs
  on the merged model, and the plan says so in its notes.
- ``instruct`` or ``rules`` with an adapter: the LoRA stays unmerged as a PEFT model
  (:func:`~engine.planners.adapter.attach_adapter`) and :meth:`QwenModel.using` switches
  between the two: with the adapter disabled the weights are exactly the base model's (the
  adapter's vocabulary resize is undone on that path). The price: the LoRA's two thin matmuls per
  adapted layer while it is active (the features pass, ``unison`` plans), and the base's
  ``embed_tokens``/``lm_head`` kept beside the adapter's copies (about 1.2 GB in bfloat16 on the
  3B model).
- no adapter: the plain model alone; there are no features (:attr:`QwenModel.can_project`).

Understanding and grounding run on the model they ran on before the adapter was loaded
everywhere: the Unison planner under ``planner_backend='unison'`` (the reference answers with its
merged planner), the plain model otherwise.

:class:`QwenModel` holds the loading and the steps every use shares: the chat text,
tokenization, decoding settings, generation with progress and cancellation, and the features pass
the projector reads. What runs on it takes a ``QwenModel``: the planning backends
(:mod:`~engine.planners.unison`, :mod:`~engine.planners.instruct`) and understanding and grounding
(:mod:`engine.understand`); :class:`engine.planners.qwen.QwenPlanner` is this model with them, so
none of them imports the module that calls it.

torch, transformers and peft are imported inside the methods: importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..accelerator import resolve_device, resolve_dtype
from ..errors import ModelError
from ..hub import LoadFailures, planner_weights
from ..imports import heavy_imports
from .adapter import attach_adapter, looks_local, merge_adapter
from .constrain import Constrainer, Grammar, version

if TYPE_CHECKING:
    import torch

    from ..config import EngineConfig
    from ..control import JobControl
    from ..request import Request

log = logging.getLogger(__name__)

#: Longest answer each job may write. A Unison plan is a dozen tokens; the JSON plan a few dozen.
UNISON_MAX_NEW_TOKENS = 128
INSTRUCT_MAX_NEW_TOKENS = 256
GROUND_MAX_NEW_TOKENS = 256

_CHAT_END = ("<|im_end|>", "<|endoftext|>")


def _strip_chat_end(text: str) -> str:
    text = text.rstrip()
    stripped = True
    while stripped:
        stripped = False
        for end in _CHAT_END:
            if text.endswith(end):
                text, stripped = text[: -len(end)].rstrip(), True
    return text


class QwenModel:
    """Qwen2.5-VL (+ the Unison LoRA), loaded once, and the steps every use of it shares.

    Nothing loads in ``__init__``; :meth:`load` loads once (thread-safe) and every other method
    calls it. Calls are not meant to run concurrently: the Engine serialises model work (and
    :meth:`using` switches shared state).
    """

    def __init__(self, config: EngineConfig, *, failures: LoadFailures | None = None):
        if not config.planner_model:
            raise ModelError("planner_model is not set: the Qwen planner needs Qwen2.5-VL weights")
        self.config = config
        self.model_id = config.planner_model
        #: Where a failed load is remembered (the engine's, shared by its models), and what loads.
        self.failures = failures if failures is not None else LoadFailures()
        self.weights = planner_weights(config)
        #: The adapter is loaded whenever one is configured: the projector's input needs it.
        self.with_adapter = bool(config.adapter)
        #: Merged when the configured routing is the Unison planner; unmerged otherwise, so that
        #: the plain model stays one switch away (see the module docstring).
        self.merged = self.with_adapter and config.backend == "unison"
        #: Understanding and grounding run with the adapter only under ``planner_backend='unison'``.
        self.understand_with_adapter = self.merged
        #: The model id shown to users: the model understanding answers with.
        self.name = f"{self.model_id} + {config.adapter}" if self.understand_with_adapter else self.model_id
        self.unison_max_new_tokens = UNISON_MAX_NEW_TOKENS
        self.instruct_max_new_tokens = INSTRUCT_MAX_NEW_TOKENS
        self.ground_max_new_tokens = GROUND_MAX_NEW_TOKENS
        self.model: Any = None
        self.processor: Any = None
        self.tokenizer: Any = None
        self.chat_template: str | None = None
        self._hidden_size: int | None = None
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.adapter_loaded = False
        self.load_seconds: float | None = None
        #: The PEFT model when the adapter is loaded unmerged (its LoRA layers live in ``model``).
        self.peft_model: Any = None
        #: (processor, tokenizer) of the plain model (False) and of the Unison planner (True).
        self._tokenizers: dict[bool, tuple[Any, Any]] = {}
        self._adapter_active = False
        #: llguidance's view of each tokenizer (by id: the plain model's and the Unison planner's).
        self._constrainers: dict[int, Constrainer] = {}
        self._warned_unconstrained = False

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self.model is not None

    @property
    def can_project(self) -> bool:
        """Whether :meth:`features` can run: the projector's input needs the Unison adapter."""
        return self.with_adapter

    @property
    def base_available(self) -> bool:
        """Whether the plain base model can run (not when the adapter is merged into it)."""
        return not self.merged

    @property
    def hidden_size(self) -> int:
        """The text hidden size (2048 for the 3B model); reads only the config when not loaded."""
        if self._hidden_size is None:
            if self.model is not None:
                self._hidden_size = int(self.model.config.get_text_config().hidden_size)
            else:
                from transformers import AutoConfig

                cfg = self._call_hub(AutoConfig.from_pretrained, self.model_id, what="planner config")
                self._hidden_size = int(cfg.get_text_config().hidden_size)
        return self._hidden_size

    def _call_hub(self, fn: Callable[..., Any], ref: str, *, what: str, **kwargs: Any) -> Any:
        """``fn(ref, ...)`` with the hub settings; a missing or unreadable source is a ModelError."""
        source = ref
        if looks_local(ref):
            source = str(Path(ref).expanduser())
            if not Path(source).exists():
                raise ModelError(
                    f"planner_model={ref!r}: no such directory; give a local Qwen2.5-VL directory or a "
                    "hub id such as 'Qwen/Qwen2.5-VL-3B-Instruct'"
                )
        hub = {
            "cache_dir": str(self.config.cache_dir) if self.config.cache_dir else None,
            "local_files_only": self.config.local_files_only,
        }
        try:
            return fn(source, **hub, **kwargs)
        except (OSError, ValueError) as exc:  # not found, offline, invalid id, unreadable files
            offline = " (local_files_only is set: download it first)" if self.config.local_files_only else ""
            raise ModelError(f"planner_model={ref!r}: cannot load the {what}{offline}: {exc}") from exc

    def load(self) -> None:
        """Load the model, processor and (when one is configured) the adapter, once."""
        if self.model is not None:
            return
        # No lock of its own: the Engine's one lock serialises loads and all model work.
        started = time.perf_counter()
        # Weights that are neither here nor fetchable fail at once, before torch is imported;
        # a failure is remembered so the next call does not pay for it again.
        with self.failures.guard(self.weights):
            self._load()
        self.load_seconds = time.perf_counter() - started
        log.info(
            "planner %s loaded in %.1f s on %s (%s)",
            self.name,
            self.load_seconds,
            self.device,
            self.dtype,
        )

    def _load(self) -> None:
        with heavy_imports():  # lazy: torch and transformers (seconds)
            import torch
            from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

        if self.config.planner_device is not None:
            device = resolve_device(self.config.planner_device, setting="planner_device")
        else:
            device = resolve_device(self.config.device, setting="device")
        dtype = resolve_dtype(self.config.dtype, device)
        cfg = self._call_hub(AutoConfig.from_pretrained, self.model_id, what="config")
        if cfg.model_type != "qwen2_5_vl":
            raise ModelError(
                f"planner_model={self.model_id!r} is a {cfg.model_type!r} model; the planner needs "
                "Qwen2.5-VL (model_type 'qwen2_5_vl'), e.g. 'Qwen/Qwen2.5-VL-3B-Instruct'"
            )
        attn = "sdpa"
        if device.type == "cuda" and dtype != torch.float32 and importlib.util.find_spec("flash_attn"):
            attn = "flash_attention_2"
        processor = self._call_hub(AutoProcessor.from_pretrained, self.model_id, what="processor")
        model = self._call_hub(
            Qwen2_5_VLForConditionalGeneration.from_pretrained,
            self.model_id,
            what="weights",
            dtype=dtype,
            attn_implementation=attn,
            device_map=str(device),
        )
        tokenizer = processor.tokenizer
        self._tokenizers = {False: (processor, tokenizer)}
        if self.with_adapter:
            if self.merged:
                model, tokenizer = merge_adapter(model, self.config, self.model_id)
            else:
                self.peft_model, tokenizer = attach_adapter(model, self.config, self.model_id)
                model = self.peft_model.get_base_model()  # the same model, LoRA layers injected
            self.adapter_loaded = True
            # Same image/video processors, the adapter's tokenizer (it knows the 14 Unison tokens).
            processor = type(processor)(
                image_processor=processor.image_processor,
                tokenizer=tokenizer,
                video_processor=processor.video_processor,
                chat_template=processor.chat_template,
            )
            self._tokenizers[True] = (processor, tokenizer)
        # PEFT's LoRA starts active; a merged one is always.
        self._adapter_active = self.adapter_loaded
        template = processor.chat_template or getattr(tokenizer, "chat_template", None)
        if not template:
            raise ModelError(
                f"planner_model={self.model_id!r} has no chat template (chat_template.json or "
                "chat_template.jinja): it is not an Instruct checkpoint"
            )
        model.eval()
        self.processor, self.tokenizer, self.chat_template = processor, tokenizer, template
        self.device, self.dtype = device, dtype
        self._hidden_size = int(model.config.get_text_config().hidden_size)
        self.model = model

    @contextmanager
    def using(self, *, adapter: bool) -> Iterator[None]:
        """Run the block on the Unison planner (``adapter=True``) or the plain base model.

        Switches the weights (PEFT's adapter layers on or off) and the tokenizer and processor
        with them, and puts back what was active before on leaving, so blocks nest. Raises
        :class:`ModelError` when the model asked for is not in memory.
        """
        self.load()
        if adapter and not self.adapter_loaded:
            raise ModelError(
                f"the Unison planner needs the Unison adapter, but none is configured "
                f"(adapter={self.config.adapter!r}): set adapter, e.g. 'ali-vilab/Unison'"
            )
        if not adapter and not self.base_available:
            raise ModelError(
                "the plain Qwen2.5-VL model is not in memory: planner_backend 'unison' merges the "
                "adapter into it; set planner_backend 'instruct' or 'rules' to keep both"
            )
        previous = (self.processor, self.tokenizer, self._adapter_active)
        switch = self.peft_model is not None and adapter != self._adapter_active
        if switch:
            self._set_adapter_layers(adapter)
        self.processor, self.tokenizer = self._tokenizers[adapter]
        self._adapter_active = adapter
        try:
            yield
        finally:
            if switch:
                self._set_adapter_layers(previous[2])
            self.processor, self.tokenizer, self._adapter_active = previous

    def _set_adapter_layers(self, enabled: bool) -> None:
        # LoRA layers and the saved-whole embeddings' wrappers alike (PeftModel.disable_adapter
        # does the same, but cannot nest an enabled block inside a disabled one).
        tuner = self.peft_model.base_model
        if enabled:
            tuner.enable_adapter_layers()
        else:
            tuner.disable_adapter_layers()

    # ------------------------------------------------------------------ shared steps

    def chat_text(self, messages: list[dict], *, generation_prompt: bool) -> str:
        """The chat rendered with the model's template, by the active tokenizer."""
        return self.tokenizer.apply_chat_template(
            messages,
            chat_template=self.chat_template,
            add_generation_prompt=generation_prompt,
            tokenize=False,
        )

    def token_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_inputs(self, ids: list[int]) -> dict[str, Any]:
        import torch

        input_ids = torch.tensor([ids], device=self.device)  # (1, L)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def generation_config(
        self, max_new_tokens: int, temperature: float, *, plain_greedy: bool, **flags: Any
    ) -> Any:
        """Decoding settings with every sampling field set, so the checkpoint's never leak in.

        (``generate`` fills unset fields from the shipped generation_config, whose top_k=1 and
        top_p=0.001 would also turn any sampling into greedy decoding.)

        With ``performance.planner_static_cache`` the KV cache is transformers' static one
        (preallocated, fixed shapes), and on CUDA ``generate`` compiles the decode step for it;
        elsewhere compiling is turned off (it would only cost time on a CPU). The tokens are the
        default cache's: the same greedy plan and answer.
        """
        from transformers import GenerationConfig

        shipped = self.model.generation_config
        eos = shipped.eos_token_id or self.tokenizer.convert_tokens_to_ids("<|im_end|>")
        pad = shipped.pad_token_id if shipped.pad_token_id is not None else self.tokenizer.pad_token_id
        kwargs: dict[str, Any] = {
            "max_new_tokens": max_new_tokens,
            "eos_token_id": eos,
            "pad_token_id": pad,
            # Plans are read token by token: pure greedy. Answers keep Qwen's mild penalty
            # against loops (1.05 in the released generation_config).
            "repetition_penalty": 1.0 if plain_greedy else (shipped.repetition_penalty or 1.0),
            **flags,
        }
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
        else:
            # Neutral values: ignored by greedy decoding, and they keep the shipped ones out.
            kwargs.update(do_sample=False, temperature=1.0, top_k=50, top_p=1.0)
        if self.config.performance.planner_static_cache:
            on_cuda = self.device is not None and self.device.type == "cuda"
            kwargs.update(cache_implementation="static", disable_compile=not on_cuda)
        return GenerationConfig(**kwargs)

    def constrainer(self) -> Constrainer | None:
        """llguidance's view of the active tokenizer (built once per tokenizer), or ``None``
        without llguidance: the planners then decode freely and parse after the fact."""
        if version() is None:
            if not self._warned_unconstrained:
                log.warning(
                    "llguidance is not installed: planner output is not constrained (pip install llguidance)"
                )
                self._warned_unconstrained = True
            return None
        key = id(self.tokenizer)
        if key not in self._constrainers:
            eos = self.model.generation_config.eos_token_id or self.tokenizer.convert_tokens_to_ids(
                "<|im_end|>"
            )
            width = int(self.model.get_output_embeddings().weight.shape[0])  # the logits' (padded) width
            self._constrainers[key] = Constrainer(self.tokenizer, width, eos)
        return self._constrainers[key]

    def generate(
        self,
        inputs: dict[str, Any],
        gen: Any,
        control: JobControl | None = None,
        grammar: Grammar | None = None,
    ) -> Any:
        """``model.generate``; with ``control``, progress after each token and a cancel check; with
        ``grammar``, only what it allows (:mod:`~engine.planners.constrain`)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

        processors = LogitsProcessorList()
        constrainer = self.constrainer() if grammar is not None else None
        if constrainer is not None and grammar is not None:
            processors.append(constrainer.processor(grammar))
        criteria = StoppingCriteriaList()
        if control is not None:
            start = inputs["input_ids"].shape[1]

            class _Progress(StoppingCriteria):
                # Called after each new token: reports progress and raises Cancelled on a cancel.
                def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
                    control.step(input_ids.shape[1] - start, gen.max_new_tokens)
                    return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

            criteria.append(_Progress())
        with torch.inference_mode():
            return self.model.generate(
                **inputs, generation_config=gen, stopping_criteria=criteria, logits_processor=processors
            )

    def decode(self, ids: Any) -> str:
        """Decoded answer with special tokens kept (Unison's are the plan) and the chat end stripped."""
        return _strip_chat_end(self.tokenizer.decode(ids, skip_special_tokens=False)).strip()

    def reply(self, messages: list[dict], max_new_tokens: int, grammar: Grammar | None = None) -> str:
        """The model's greedy answer to a text-only chat (only what ``grammar`` allows, when given)."""
        ids = self.token_ids(self.chat_text(messages, generation_prompt=True))
        out = self.generate(
            self.text_inputs(ids),
            self.generation_config(max_new_tokens, 0.0, plain_greedy=True),
            grammar=grammar,
        )
        return self.decode(out[0, len(ids) :])

    def unison_ids(self, request: Request, *, generation_prompt: bool) -> list[int]:
        """The request as the Unison planner reads it, tokenized by the active tokenizer.

        The chat template's default system message and one user turn holding ``request.text``
        (its ``<IMGPAD>``/``<VIDPAD>`` placeholders one added token each with the adapter's
        tokenizer), with or without the generation prompt.
        """
        return self.token_ids(
            self.chat_text([{"role": "user", "content": request.text}], generation_prompt=generation_prompt)
        )

    def features(self, request: Request) -> torch.Tensor:
        """The projector's input: the Unison planner's last-layer states (after the final norm).

        Always on the base model with the LoRA active and the adapter's tokenizer, whatever
        backend planned the request: that is the input the projector was trained on. The request
        is rendered as :meth:`unison_ids` without the generation prompt; the first position is
        dropped. Returns (1, L-1, hidden) float32 on the CPU. Raises :class:`ModelError` when no
        adapter is configured (:attr:`can_project`).
        """
        import torch

        if not self.can_project:
            raise ModelError(
                "the projector's input comes from the Unison planner (Qwen2.5-VL with the Unison "
                "adapter), but no adapter is configured: set adapter (e.g. 'ali-vilab/Unison'), or "
                "projector 'none' for plain Wan-VACE conditioning"
            )
        with self.using(adapter=True):
            ids = self.unison_ids(request, generation_prompt=False)
            with torch.inference_mode():
                hidden = self.model.model(**self.text_inputs(ids)).last_hidden_state  # (1, L, hidden)
        return hidden[:, 1:].float().cpu()

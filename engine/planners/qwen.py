"""Qwen2.5-VL, loaded once: the model the ``unison`` and ``instruct`` backends (and understanding,
and grounding) run on.

:class:`QwenPlanner` loads Qwen2.5-VL on first use, with the Unison adapter merged in memory when
the ``unison`` backend is configured (:func:`~engine.planners.adapter.merge_adapter`). It holds
the steps every use shares: the chat text, tokenization, decoding settings, generation with
progress and cancellation, and the features pass the projector reads. Planning is done by the
backends (:mod:`~engine.planners.unison`, :mod:`~engine.planners.instruct`), understanding and
grounding by :mod:`engine.understand`; the methods here of those names call them.

torch, transformers and peft are imported inside the methods: importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import understand as _understand
from ..errors import InvalidRequest, ModelError
from . import Planner, PlanOutput
from .adapter import looks_local, merge_adapter
from .instruct import InstructBackend
from .unison import UnisonBackend

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ..config import EngineConfig
    from ..control import JobControl
    from ..inputs import Source
    from ..plan import MediaInput
    from ..request import Request
    from ..understand import Box

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


class QwenPlanner:
    """Qwen2.5-VL (+ the Unison LoRA merged in memory): planning, understanding, grounding.

    Nothing loads in ``__init__``; :meth:`load` loads once (thread-safe) and every other method
    calls it. Calls are not meant to run concurrently: the Engine serialises model work.
    """

    def __init__(self, config: EngineConfig):
        if not config.planner_model:
            raise ModelError("planner_model is not set: the Qwen planner needs Qwen2.5-VL weights")
        self.config = config
        self.model_id = config.planner_model
        self.with_adapter = config.backend == "unison" and bool(config.adapter)
        #: The model id shown to users (with the adapter when it is merged in).
        self.name = f"{self.model_id} + {config.adapter}" if self.with_adapter else self.model_id
        self.unison_max_new_tokens = UNISON_MAX_NEW_TOKENS
        self.instruct_max_new_tokens = INSTRUCT_MAX_NEW_TOKENS
        self.ground_max_new_tokens = GROUND_MAX_NEW_TOKENS
        #: The planning backends that run on this model, by name.
        self.backends: dict[str, Planner] = {"unison": UnisonBackend(self), "instruct": InstructBackend(self)}
        self.model: Any = None
        self.processor: Any = None
        self.tokenizer: Any = None
        self.chat_template: str | None = None
        self._hidden_size: int | None = None
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.adapter_loaded = False
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self.model is not None

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
        """Load the model, processor and (for the unison backend) the adapter, once."""
        if self.model is not None:
            return
        # No lock of its own: the Engine's one lock serialises loads and all model work.
        started = time.perf_counter()
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
        import torch
        from transformers import AutoConfig, AutoProcessor, Qwen2_5_VLForConditionalGeneration

        from ..accelerator import resolve_device, resolve_dtype

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
        if self.with_adapter:
            model, tokenizer = merge_adapter(model, self.config, self.model_id)
            self.adapter_loaded = True
            # Same image/video processors, the adapter's tokenizer (it knows the 14 Unison tokens).
            processor = type(processor)(
                image_processor=processor.image_processor,
                tokenizer=tokenizer,
                video_processor=processor.video_processor,
                chat_template=processor.chat_template,
            )
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

    # ------------------------------------------------------------------ shared steps

    def chat_text(self, messages: list[dict], *, generation_prompt: bool) -> str:
        """The chat rendered with the model's template (the adapter's, when merged)."""
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
        return GenerationConfig(**kwargs)

    def generate(self, inputs: dict[str, Any], gen: Any, control: JobControl | None = None) -> Any:
        """``model.generate``; with ``control``, progress after each token and a cancel check."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

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
            return self.model.generate(**inputs, generation_config=gen, stopping_criteria=criteria)

    def decode(self, ids: Any) -> str:
        """Decoded answer with special tokens kept (Unison's are the plan) and the chat end stripped."""
        return _strip_chat_end(self.tokenizer.decode(ids, skip_special_tokens=False)).strip()

    def reply(self, messages: list[dict], max_new_tokens: int) -> str:
        """The model's greedy answer to a text-only chat."""
        ids = self.token_ids(self.chat_text(messages, generation_prompt=True))
        out = self.generate(
            self.text_inputs(ids), self.generation_config(max_new_tokens, 0.0, plain_greedy=True)
        )
        return self.decode(out[0, len(ids) :])

    # ------------------------------------------------------------------ planning

    def plan(self, request: Request, *, backend: str, want_features: bool) -> PlanOutput:
        """Plan a request with the ``unison`` (LoRA grammar) or ``instruct`` (JSON) backend.

        With ``want_features`` the projector's input comes back too: from the same forward pass
        for ``unison``, from one extra forward for ``instruct``.
        """
        run = self.backends.get(backend)
        if run is None:
            raise InvalidRequest.for_field("backend", backend, "the Qwen planner runs 'unison' or 'instruct'")
        self.load()
        started = time.perf_counter()
        out = run(request, want_features=want_features)
        out.timings["plan_s"] = time.perf_counter() - started
        return out

    def features(self, request: Request) -> torch.Tensor:
        """The projector's input: last-layer states (after the final norm) over the request.

        The chat-templated request (default system message, user turn with ``<IMGPAD>``/``<VIDPAD>``
        placeholders) is rendered without the generation prompt; the first position is dropped.
        Returns (1, L-1, hidden) float32 on the CPU.
        """
        import torch

        self.load()
        ids = self.token_ids(
            self.chat_text([{"role": "user", "content": request.text}], generation_prompt=False)
        )
        with torch.inference_mode():
            hidden = self.model.model(**self.text_inputs(ids)).last_hidden_state  # (1, L, hidden)
        return hidden[:, 1:].float().cpu()

    # ------------------------------------------------------------------ understanding, grounding

    def understand(
        self,
        prompt: str,
        media: Sequence[MediaInput],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        control: JobControl | None = None,
        sources: Mapping[str, Source] | None = None,
    ) -> str:
        """Answer ``prompt`` about the images and videos in ``media``: :func:`engine.understand.understand`."""
        return _understand.understand(
            self,
            prompt,
            media,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            control=control,
            sources=sources,
        )

    def ground(self, image: Image.Image, phrase: str) -> list[Box]:
        """Boxes of ``phrase`` in ``image``, in its pixels: :func:`engine.understand.ground`."""
        return _understand.ground(self, image, phrase)

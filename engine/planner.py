"""Stage one: Qwen2.5-VL as planner (Unison LoRA or plain instruct), answerer, and grounder.

:class:`QwenPlanner` loads Qwen2.5-VL once, on first use, optionally with the Unison adapter merged
in memory. It turns a :class:`~engine.plan.Request` into a :class:`~engine.plan.Plan` with one of
two backends:

- ``unison``: the LoRA writes the Unison token grammar (``../shared/UNISON.md``), parsed by
  :func:`~engine.plan.parse_unison`. The same forward pass yields the hidden states the projector
  needs (the request rendered without the generation prompt is a prefix of the one with it).
- ``instruct``: the base model is asked for a small JSON plan, converted by the pure function
  :func:`plan_from_json`; a bad answer is retried once with the error fed back.

It also answers questions about text, images and videos (:meth:`QwenPlanner.understand`) and
finds objects in an image (:meth:`QwenPlanner.ground`, used to mask video edits).

torch, transformers and peft are imported inside the methods: importing this module is cheap.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ValidationError

from .config import EngineConfig
from .control import JobControl
from .errors import InputRefused, InvalidRequest, ModelError, PlannerError
from .plan import (
    IMGPAD,
    TASKS,
    VIDPAD,
    MediaInput,
    MediaKind,
    Plan,
    Request,
    Role,
    Task,
    check_roles,
    nearest_4k1,
    parse_unison,
)

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from .inputs import Source

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

#: Longest answer each job may write. A Unison plan is a dozen tokens; the JSON plan a few dozen.
UNISON_MAX_NEW_TOKENS = 128
INSTRUCT_MAX_NEW_TOKENS = 256
GROUND_MAX_NEW_TOKENS = 256

#: Pixel floors handed to the processors (Qwen's own: 4 patches of 28 px for images; 128 for
#: video frames, as qwen-vl-utils does), lowered to the configured ceiling when that is smaller.
IMAGE_MIN_PIXELS = 4 * 28 * 28
VIDEO_MIN_PIXELS = 128 * 28 * 28

_CHAT_END = ("<|im_end|>", "<|endoftext|>")

#: Files of an adapter repository worth fetching (the repository may hold much more).
_ADAPTER_FILES = (
    "adapter_config.json",
    "adapter_model.safetensors",
    "adapter_model.bin",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)

#: Adapters saved with transformers < 4.52 name Qwen2.5-VL's text model ``model.*`` and its vision
#: tower ``visual.*``; transformers 5 nests them as ``model.language_model.*`` / ``model.visual.*``
#: and renames base checkpoints itself, but PEFT 0.21 does not rename adapters of this model. Keys
#: already in the new layout match neither pattern (PEFT strips ``base_model.model.`` first).
LEGACY_ADAPTER_KEYS = {
    r"^visual": "model.visual",
    r"^model(?!\.(language_model|visual))": "model.language_model",
}


@dataclass
class PlanOutput:
    plan: Plan  # parsed, not yet check_plan()-ed (the Engine does that)
    features: torch.Tensor | None  # (1, L-1, hidden) float32 on the CPU, or None
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Weights: where they are, how they combine.


def untie_word_embeddings(model: Any) -> bool:
    """Give ``lm_head`` its own copy of the input embeddings and mark the config untied.

    Qwen2.5-VL-3B ties them; the Unison LoRA trains ``embed_tokens`` and ``lm_head`` separately
    (``modules_to_save``), so loading it onto a tied model would make one overwrite the other.
    Returns whether they were tied.
    """
    import torch

    configs = [model.config, model.config.get_text_config()]
    tied = any(getattr(c, "tie_word_embeddings", False) for c in configs)
    for c in configs:
        c.tie_word_embeddings = False
    # transformers re-ties from this mapping (e.g. after a resize); recompute it from the config.
    model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)
    inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    if out.weight is inp.weight or out.weight.data_ptr() == inp.weight.data_ptr():
        out.weight = torch.nn.Parameter(inp.weight.detach().clone(), requires_grad=inp.weight.requires_grad)
        tied = True
    return tied


def _looks_local(ref: str) -> bool:
    """Whether a model reference is meant as a path (a hub id is exactly ``owner/name``)."""
    return (
        Path(ref).expanduser().exists()
        or ref.startswith(("/", "./", "../", "~", "."))
        or ref.count("/") > 1
        or "\\" in ref
    )


def _resolve_adapter_dir(ref: str, subfolder: str | None, config: EngineConfig) -> Path:
    """A local directory holding the adapter's files: ``ref`` itself, or its hub snapshot."""
    where = f"adapter={ref!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    if _looks_local(ref):
        path = Path(ref).expanduser()
        if subfolder:
            path = path / subfolder
        if not path.is_dir():
            raise ModelError(
                f"{where}: no such directory ({path}); expected a PEFT adapter directory with "
                "adapter_config.json, adapter_model.safetensors and the tokenizer files, or a hub "
                "repository id such as 'ali-vilab/Unison'"
            )
        return path
    from huggingface_hub import snapshot_download

    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    try:
        root = snapshot_download(
            ref,
            allow_patterns=[prefix + name for name in _ADAPTER_FILES],
            cache_dir=str(config.cache_dir) if config.cache_dir else None,
            local_files_only=config.local_files_only,
        )
    except Exception as exc:  # hub errors have many types; all mean "not available here"
        hint = str(exc)
        if config.local_files_only:
            hint = "it is not in the local cache (local_files_only is set: download it first)"
        raise ModelError(f"{where}: cannot fetch the adapter: {hint}") from exc
    return Path(root) / prefix


def _adapter_tensor_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the saved adapter tensors, read from the safetensors header only."""
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        return {}  # a .bin adapter: PEFT's own load still checks shapes
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)


def _adapter_vocab_rows(
    shapes: dict[str, tuple[int, ...]], *, tokens: int, hidden: int, where: str
) -> int | None:
    """Rows of the adapter's saved embeddings, checked against its tokenizer and the base model."""
    rows: dict[str, int] = {}
    for key, shape in shapes.items():
        for name in ("embed_tokens", "lm_head"):
            if key.endswith(f"{name}.weight") and len(shape) == 2:
                if shape[1] != hidden:
                    raise ModelError(
                        f"{where}: its {name} has width {shape[1]} but the planner model's hidden size is "
                        f"{hidden}: this adapter was made for another model; use the base model it was "
                        "trained on (Qwen/Qwen2.5-VL-3B-Instruct for Unison)"
                    )
                rows[name] = shape[0]
    if not rows:
        return None
    if len(set(rows.values())) > 1:
        raise ModelError(
            f"{where}: embed_tokens and lm_head disagree on the vocabulary size ({rows}); the file is damaged"
        )
    n = next(iter(rows.values()))
    if n < tokens:
        raise ModelError(
            f"{where}: its embeddings have {n} rows but its tokenizer has {tokens} tokens, so the "
            "tokenizer and the weights come from different adapters; fetch the tokenizer files and "
            "adapter_model.safetensors from the same release"
        )
    return n


# ---------------------------------------------------------------------------------------------
# The instruct backend's JSON plan (pure functions).


class _JsonInput(BaseModel):
    index: int
    role: Role


class _JsonPlan(BaseModel):
    task: Task
    width: int | None = None
    height: int | None = None
    num_frames: int | None = None
    inputs: list[_JsonInput] = []


def _json_candidates(text: str) -> list[Any]:
    """Every JSON value that starts at a ``{`` or ``[`` in ``text`` (code fences tolerated)."""
    decoder = json.JSONDecoder()
    found = []
    i = 0
    while True:
        starts = [j for j in (text.find("{", i), text.find("[", i)) if j >= 0]
        if not starts:
            return found
        j = min(starts)
        try:
            value, end = decoder.raw_decode(text, j)
        except json.JSONDecodeError:
            i = j + 1
            continue
        found.append(value)
        i = end


def _understanding_task(media: Sequence[tuple[str, MediaKind]]) -> Task:
    kinds = {k for _, k in media}
    if MediaKind.VIDEO in kinds:
        return Task.VIDEO_UNDERSTANDING
    return Task.IMAGE_UNDERSTANDING if kinds else Task.TEXT_UNDERSTANDING


def plan_from_json(text: str, media: Sequence[tuple[str, MediaKind | str]], *, prompt: str) -> Plan:
    """Turn the instruct backend's JSON answer into a :class:`Plan` (not yet ``check_plan``-ed).

    ``media`` are the request's files in order; ``inputs[].index`` refers to them. Lenient where
    the meaning is clear (code fences, text around the object, an understanding task named for
    the wrong kind of file, a frame count on an image task); anything else raises
    :class:`PlannerError` naming the field, the value and the rule, worded so it can be fed back
    to the model.
    """
    files = [(str(p), MediaKind(k)) for p, k in media]
    objects = [v for v in _json_candidates(text) if isinstance(v, dict)]
    if not objects:
        raise PlannerError(f"no JSON object in the reply: {text[:200]!r}")
    data = next((o for o in objects if "task" in o), objects[0])
    try:
        parsed = _JsonPlan.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(x) for x in err['loc'])}={err.get('input')!r}: {err['msg']}"
            for err in exc.errors()
        )
        if any(err["loc"][:1] == ("task",) for err in exc.errors()):
            problems += "; task must be one of " + ", ".join(t.value for t in Task)
        raise PlannerError(f"the JSON plan does not fit the schema: {problems}") from None

    if TASKS[parsed.task].understanding:
        # Understanding reads every file; which kind of understanding follows from the files.
        task = _understanding_task(files)
        inputs = [MediaInput(path=p, kind=k, role=Role.QUERY) for p, k in files]
        return Plan(task=task, prompt=prompt, inputs=inputs, raw=text)

    output = TASKS[parsed.task].output
    num_frames = 1 if output == "image" else parsed.num_frames  # any count on an image: ignored
    # Values only a model would get wrong are its error (retried), not the user's: check them here.
    for name, value in (("width", parsed.width), ("height", parsed.height), ("num_frames", num_frames)):
        if value is not None and value <= 0:
            raise PlannerError(f"{name}={value}: must be a positive whole number or null")
    notes = []
    if num_frames is not None and num_frames % 4 != 1:
        # The meaning is clear (diffusers rounds such counts too): onto the 4k+1 grid, noted.
        rounded = nearest_4k1(num_frames)
        notes.append(f"num_frames {num_frames} from the planner rounded to {rounded} (4k+1)")
        num_frames = rounded

    inputs = []
    seen: set[int] = set()
    for n, item in enumerate(parsed.inputs):
        if not 0 <= item.index < len(files):
            rule = f"the request has {len(files)} file(s)" + (
                f", numbered 0 to {len(files) - 1}" if files else ""
            )
            raise PlannerError(f"inputs[{n}].index={item.index}: {rule}")
        if item.index in seen:
            raise PlannerError(f"inputs[{n}].index={item.index}: each file may have one role only")
        seen.add(item.index)
        path, kind = files[item.index]
        inputs.append(MediaInput(path=path, kind=kind, role=item.role))
    plan = Plan(
        task=parsed.task,
        prompt=prompt,
        inputs=inputs,
        width=parsed.width,
        height=parsed.height,
        num_frames=num_frames,
        raw=text,
        notes=notes,
    )
    try:
        check_roles(plan)
    except InvalidRequest as exc:
        raise PlannerError(f"the JSON plan's inputs do not fit task {parsed.task.value}: {exc}") from None
    return plan


def instruct_prompt(request: Request) -> str:
    """The instruct backend's question: the schema, the tasks, the numbered files, the request."""
    kinds = [k for _, k in request.media]
    counter = iter(range(len(kinds)))

    def label(match: re.Match) -> str:
        i = next(counter, None)
        return match.group(0) if i is None else f"[file {i}: {kinds[i].value}]"

    text = re.sub(f"{re.escape(IMGPAD)}|{re.escape(VIDPAD)}", label, request.text)
    tasks = []
    for spec in TASKS.values():
        roles = ", ".join(f"{r.role.value} ({'/'.join(k.value for k in r.kinds)})" for r in spec.roles)
        tasks.append(f"- {spec.task.value}: {spec.summary}" + (f"; inputs: {roles}" if roles else ""))
    files = "\n".join(f"- file {i}: {k.value}" for i, k in enumerate(kinds)) or "- none"
    return (
        "You plan requests for an image and video generator. Choose the task, the output size and "
        "the role of each input file. Reply with only one JSON object of this form:\n"
        '{"task": "<task>", "width": <pixels or null>, "height": <pixels or null>, '
        '"num_frames": <4k+1 frames for video, or null>, "inputs": [{"index": <file number>, "role": "<role>"}]}\n'
        "Tasks:\n" + "\n".join(tasks) + "\n"
        f"Input files:\n{files}\n"
        f"Request: {text}"
    )


def plan_with_retry(ask: Callable[[list[dict]], str], request: Request) -> Plan:
    """Ask for a JSON plan; on a bad answer ask once more with the error, then give up.

    ``ask(messages)`` returns the model's reply to a chat. Raises :class:`PlannerError` naming
    what was wrong with both answers.
    """
    messages: list[dict] = [{"role": "user", "content": instruct_prompt(request)}]
    first = ask(messages)
    try:
        return plan_from_json(first, request.media, prompt=request.prompt)
    except PlannerError as exc:
        first_error = exc
    log.info("instruct planner answer rejected (%s); asking again", first_error)
    messages += [
        {"role": "assistant", "content": first},
        {
            "role": "user",
            "content": f"That answer cannot be used: {first_error}. Reply again with only the JSON object.",
        },
    ]
    second = ask(messages)
    try:
        return plan_from_json(second, request.media, prompt=request.prompt)
    except PlannerError as exc:
        raise PlannerError(
            f"the instruct planner gave no usable plan in 2 attempts: first answer: {first_error}; "
            f"second answer: {exc}"
        ) from None


# ---------------------------------------------------------------------------------------------
# Grounding (pure functions).

_NUM = r"(-?\d+(?:\.\d+)?)"
_BOX_RE = re.compile(r"[\[(]\s*" + r"\s*,\s*".join([_NUM] * 4) + r"\s*[\])]")


def _boxes_in(value: Any) -> list[list[Any]]:
    if isinstance(value, dict):
        for key in ("bbox_2d", "bbox", "box", "box_2d"):
            if key in value:
                return [value[key]]
        return [b for v in value.values() for b in _boxes_in(v)]
    if isinstance(value, list):
        if len(value) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            return [value]
        return [b for v in value for b in _boxes_in(v)]
    return []


def parse_boxes(text: str) -> list[Box]:
    """Boxes ``(x0, y0, x1, y1)`` in a grounding answer, in the answer's own coordinates.

    Reads Qwen2.5-VL's JSON (``[{"bbox_2d": [x0, y0, x1, y1], "label": ...}]``, fenced or not)
    and, failing that, any bracketed group of four numbers. Corners are put in order; empty and
    repeated boxes are dropped. Nothing usable gives ``[]``.
    """
    raw: list[list[Any]] = [b for v in _json_candidates(text) for b in _boxes_in(v)]
    if not raw:
        raw = [list(m.groups()) for m in _BOX_RE.finditer(text)]
    boxes: list[Box] = []
    for b in raw:
        if not isinstance(b, (list, tuple)) or len(b) != 4:
            continue
        try:
            x0, y0, x1, y1 = (float(v) for v in b)
        except (TypeError, ValueError):
            continue
        box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        if box[2] > box[0] and box[3] > box[1] and box not in boxes:
            boxes.append(box)
    return boxes


def scale_boxes(boxes: Sequence[Box], src: tuple[int, int], dst: tuple[int, int]) -> list[Box]:
    """Map boxes from an image of size ``src`` (w, h) to one of size ``dst``, clipped to it."""
    sx, sy = dst[0] / src[0], dst[1] / src[1]
    out: list[Box] = []
    for x0, y0, x1, y1 in boxes:
        box = (
            min(max(x0 * sx, 0.0), dst[0]),
            min(max(y0 * sy, 0.0), dst[1]),
            min(max(x1 * sx, 0.0), dst[0]),
            min(max(y1 * sy, 0.0), dst[1]),
        )
        if box[2] > box[0] and box[3] > box[1]:
            out.append(box)
    return out


def _strip_chat_end(text: str) -> str:
    text = text.rstrip()
    stripped = True
    while stripped:
        stripped = False
        for end in _CHAT_END:
            if text.endswith(end):
                text, stripped = text[: -len(end)].rstrip(), True
    return text


# ---------------------------------------------------------------------------------------------
# The planner.


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
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None
        self._tokenizer: Any = None
        self._chat_template: str | None = None
        self._hidden_size: int | None = None
        self.device: torch.device | None = None
        self.dtype: torch.dtype | None = None
        self.adapter_loaded = False
        self.load_seconds: float | None = None

    # ------------------------------------------------------------------ loading

    @property
    def loaded(self) -> bool:
        return self._model is not None

    @property
    def hidden_size(self) -> int:
        """The text hidden size (2048 for the 3B model); reads only the config when not loaded."""
        if self._hidden_size is None:
            if self._model is not None:
                self._hidden_size = int(self._model.config.get_text_config().hidden_size)
            else:
                from transformers import AutoConfig

                cfg = self._call_hub(AutoConfig.from_pretrained, self.model_id, what="planner config")
                self._hidden_size = int(cfg.get_text_config().hidden_size)
        return self._hidden_size

    def _hub_kwargs(self) -> dict[str, Any]:
        return {
            "cache_dir": str(self.config.cache_dir) if self.config.cache_dir else None,
            "local_files_only": self.config.local_files_only,
        }

    def _call_hub(self, fn: Callable[..., Any], ref: str, *, what: str, **kwargs: Any) -> Any:
        """``fn(ref, ...)`` with the hub settings; a missing or unreadable source is a ModelError."""
        source = ref
        if _looks_local(ref):
            source = str(Path(ref).expanduser())
            if not Path(source).exists():
                raise ModelError(
                    f"planner_model={ref!r}: no such directory; give a local Qwen2.5-VL directory or a "
                    "hub id such as 'Qwen/Qwen2.5-VL-3B-Instruct'"
                )
        try:
            return fn(source, **self._hub_kwargs(), **kwargs)
        except (OSError, ValueError) as exc:  # not found, offline, invalid id, unreadable files
            offline = " (local_files_only is set: download it first)" if self.config.local_files_only else ""
            raise ModelError(f"planner_model={ref!r}: cannot load the {what}{offline}: {exc}") from exc

    def load(self) -> None:
        """Load the model, processor and (for the unison backend) the adapter, once."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
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

        from .accelerator import resolve_device, resolve_dtype

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
            model, tokenizer = self._merge_adapter(model)
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
        self._processor, self._tokenizer, self._chat_template = processor, tokenizer, template
        self.device, self.dtype = device, dtype
        self._hidden_size = int(model.config.get_text_config().hidden_size)
        self._model = model

    def _merge_adapter(self, model: Any) -> tuple[Any, Any]:
        """Resize, untie, load the LoRA with PEFT and merge it: (merged model, adapter tokenizer)."""
        from peft import PeftConfig, PeftModel
        from transformers import AutoTokenizer

        ref = str(self.config.adapter)
        where = f"adapter={ref!r}"
        adapter_dir = _resolve_adapter_dir(ref, self.config.adapter_subfolder, self.config)
        if not (adapter_dir / "adapter_config.json").is_file():
            raise ModelError(
                f"{where}: {adapter_dir} has no adapter_config.json; expected a PEFT adapter directory "
                "(adapter_config.json, adapter_model.safetensors, tokenizer files)"
            )
        try:
            tokenizer = AutoTokenizer.from_pretrained(adapter_dir)
        except (OSError, ValueError) as exc:
            raise ModelError(
                f"{where}: cannot load the tokenizer that ships with the adapter from {adapter_dir}: {exc}"
            ) from exc
        hidden = int(model.config.get_text_config().hidden_size)
        rows = _adapter_vocab_rows(
            _adapter_tensor_shapes(adapter_dir), tokens=len(tokenizer), hidden=hidden, where=where
        )
        current = model.get_input_embeddings().weight.shape[0]
        # The adapter's saved embeddings decide the size (it may pad past its tokenizer); without
        # saved embeddings, grow only as far as the tokenizer needs.
        target = rows if rows is not None else max(current, len(tokenizer))
        if target != current:
            model.resize_token_embeddings(target, mean_resizing=False)
        untie_word_embeddings(model)

        try:
            peft_config = PeftConfig.from_pretrained(str(adapter_dir))
            peft_config.inference_mode = True
            with warnings.catch_warnings():
                # peft calls a transformers property that transformers has deprecated; not ours to fix.
                warnings.filterwarnings(
                    "ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning
                )
                peft_model = PeftModel(model, peft_config)
            result = peft_model.load_adapter(
                str(adapter_dir),
                adapter_name="default",
                is_trainable=False,
                key_mapping=LEGACY_ADAPTER_KEYS,
            )
        except (ValueError, RuntimeError, KeyError, OSError) as exc:
            raise ModelError(
                f"{where}: cannot be applied to {self.model_id}: {exc}; use the base model the adapter "
                "was trained on (Qwen/Qwen2.5-VL-3B-Instruct for Unison)"
            ) from exc
        missing = [k for k in result.missing_keys if "lora_" in k]
        unexpected = list(result.unexpected_keys)
        if missing or unexpected:
            raise ModelError(
                f"{where}: its weights do not match {self.model_id}'s layers "
                f"({len(missing)} LoRA weights missing, e.g. {missing[:2]}; {len(unexpected)} unknown, "
                f"e.g. {unexpected[:2]}): it was made for another model"
            )
        merged = peft_model.merge_and_unload()
        self.adapter_loaded = True
        log.info("Unison adapter merged: %d tokens, %d embedding rows", len(tokenizer), target)
        return merged, tokenizer

    # ------------------------------------------------------------------ shared steps

    def _chat_text(self, messages: list[dict], *, generation_prompt: bool) -> str:
        return self._tokenizer.apply_chat_template(
            messages,
            chat_template=self._chat_template,
            add_generation_prompt=generation_prompt,
            tokenize=False,
        )

    def _ids(self, text: str) -> list[int]:
        return self._tokenizer(text, add_special_tokens=False)["input_ids"]

    def _generation_config(
        self, max_new_tokens: int, temperature: float, *, plain_greedy: bool, **flags: Any
    ) -> Any:
        """Decoding settings with every sampling field set, so the checkpoint's never leak in.

        (``generate`` fills unset fields from the shipped generation_config, whose top_k=1 and
        top_p=0.001 would also turn any sampling into greedy decoding.)
        """
        from transformers import GenerationConfig

        shipped = self._model.generation_config
        eos = shipped.eos_token_id or self._tokenizer.convert_tokens_to_ids("<|im_end|>")
        pad = shipped.pad_token_id if shipped.pad_token_id is not None else self._tokenizer.pad_token_id
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

    def _generate(self, inputs: dict[str, Any], gen: Any, control: JobControl | None = None) -> Any:
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
            return self._model.generate(**inputs, generation_config=gen, stopping_criteria=criteria)

    def _decode(self, ids: Any) -> str:
        """Decoded answer with special tokens kept (Unison's are the plan) and the chat end stripped."""
        return _strip_chat_end(self._tokenizer.decode(ids, skip_special_tokens=False)).strip()

    def _text_inputs(self, ids: list[int]) -> dict[str, Any]:
        import torch

        input_ids = torch.tensor([ids], device=self.device)  # (1, L)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}

    def _reply(self, messages: list[dict], max_new_tokens: int) -> str:
        ids = self._ids(self._chat_text(messages, generation_prompt=True))
        out = self._generate(
            self._text_inputs(ids), self._generation_config(max_new_tokens, 0.0, plain_greedy=True)
        )
        return self._decode(out[0, len(ids) :])

    # ------------------------------------------------------------------ planning

    def plan(
        self, request: Request, *, backend: Literal["unison", "instruct"], want_features: bool
    ) -> PlanOutput:
        """Plan a request with the ``unison`` (LoRA grammar) or ``instruct`` (JSON) backend.

        With ``want_features`` the projector's input comes back too: from the same forward pass
        for ``unison``, from one extra forward for ``instruct``.
        """
        if backend not in ("unison", "instruct"):
            raise InvalidRequest.for_field("backend", backend, "the Qwen planner runs 'unison' or 'instruct'")
        self.load()
        started = time.perf_counter()
        if backend == "unison":
            plan, features = self._plan_unison(request, want_features)
        else:
            plan = plan_with_retry(lambda msgs: self._reply(msgs, self.instruct_max_new_tokens), request)
            features = self.features(request) if want_features else None
        return PlanOutput(plan=plan, features=features, timings={"plan_s": time.perf_counter() - started})

    def _plan_unison(self, request: Request, want_features: bool) -> tuple[Plan, torch.Tensor | None]:
        if not self.adapter_loaded:
            raise ModelError(
                f"the unison backend needs the Unison adapter, but the planner was loaded without it "
                f"(adapter={self.config.adapter!r}, planner_backend={self.config.backend!r}): set adapter "
                "(e.g. 'ali-vilab/Unison') with planner_backend 'unison', or plan with 'instruct'"
            )
        messages = [{"role": "user", "content": request.text}]
        prefix = self._ids(self._chat_text(messages, generation_prompt=False))
        ids = self._ids(self._chat_text(messages, generation_prompt=True))
        shared = want_features and ids[: len(prefix)] == prefix
        gen = self._generation_config(
            self.unison_max_new_tokens,
            0.0,
            plain_greedy=True,
            output_hidden_states=shared,
            return_dict_in_generate=True,
        )
        out = self._generate(self._text_inputs(ids), gen)
        text = self._decode(out.sequences[0, len(ids) :])
        log.info("unison plan for %r: %r", request.text[:80], text)
        features = None
        if shared:
            # Prefill hidden states: the last entry is after the final norm. The request rendered
            # without the generation prompt is their first len(prefix) positions.
            last = out.hidden_states[0][-1]  # (1, L_with_prompt, hidden)
            features = last[:, 1 : len(prefix)].float().cpu()  # (1, L-1, hidden)
        elif want_features:
            log.warning(
                "chat template is not prefix-stable for this tokenizer: features need a second forward"
            )
            features = self.features(request)
        return parse_unison(text, request.media, prompt=request.prompt), features

    def features(self, request: Request) -> torch.Tensor:
        """The projector's input: last-layer states (after the final norm) over the request.

        The chat-templated request (default system message, user turn with ``<IMGPAD>``/``<VIDPAD>``
        placeholders) is rendered without the generation prompt; the first position is dropped.
        Returns (1, L-1, hidden) float32 on the CPU.
        """
        import torch

        self.load()
        ids = self._ids(self._chat_text([{"role": "user", "content": request.text}], generation_prompt=False))
        with torch.inference_mode():
            hidden = self._model.model(**self._text_inputs(ids)).last_hidden_state  # (1, L, hidden)
        return hidden[:, 1:].float().cpu()

    # ------------------------------------------------------------------ understanding

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
        """Answer ``prompt`` about the images and videos in ``media`` (text alone works too).

        Images are passed as images and videos as real video input (frames sampled at
        ``understanding.video_fps``, at most ``video_max_frames``), each frame at most
        ``understanding.max_pixels``: images are decoded reduced to that budget, so eight large
        inputs never sit in memory at full size. ``sources`` are the opened inputs by path
        (decoded from, never reopened by path). ``temperature`` 0 is greedy.
        """
        from .media import open_image

        defaults = self.config.understanding
        max_new_tokens = defaults.max_new_tokens if max_new_tokens is None else max_new_tokens
        temperature = defaults.temperature if temperature is None else temperature
        if max_new_tokens < 1:
            raise InvalidRequest.for_field("max_new_tokens", max_new_tokens, "must be at least 1")
        if temperature < 0:
            raise InvalidRequest.for_field("temperature", temperature, "must be 0 (greedy) or more")
        self.load()
        check = control.check if control is not None else None

        images: list[Image.Image] = []
        videos: list[Any] = []
        metadata: list[dict[str, Any]] = []
        content: list[dict[str, Any]] = []
        for m in media:
            if check:
                check()
            source = (sources or {}).get(m.path, m.path)
            if m.kind is MediaKind.IMAGE:
                images.append(
                    open_image(
                        source,
                        max_pixels=self.config.limits.max_input_pixels,
                        reduce_to_pixels=self.config.understanding.max_pixels,
                    )
                )
                content.append({"type": "image"})
            else:
                clip = self._read_video(source, check)
                n = len(clip.frames)
                videos.append(clip.frames)  # (F, H, W, 3) uint8
                metadata.append({"total_num_frames": n, "fps": clip.fps, "frames_indices": list(range(n))})
                content.append({"type": "video"})
        content.append({"type": "text", "text": prompt})
        text = self._chat_text([{"role": "user", "content": content}], generation_prompt=True)
        inputs = self._vision_inputs(text, images, videos, metadata)
        if check:
            check()
        gen = self._generation_config(max_new_tokens, temperature, plain_greedy=False)
        out = self._generate(inputs, gen, control)
        return self._decode(out[0, inputs["input_ids"].shape[1] :])

    def _read_video(self, path: Source | str, check: Callable[[], None] | None) -> Any:
        from .media import probe_video, read_video

        u = self.config.understanding
        limit = self.config.limits.max_input_pixels  # the same input limit generation applies
        info = probe_video(path, max_pixels=limit)
        size = None
        if info.width * info.height > u.max_pixels:
            # Decode straight to the pixel budget (aspect kept) instead of holding full frames.
            s = math.sqrt(u.max_pixels / (info.width * info.height))
            size = (max(2, round(info.width * s / 2) * 2), max(2, round(info.height * s / 2) * 2))
        return read_video(
            path,
            fps=u.video_fps,
            max_frames=u.video_max_frames,
            size=size,
            max_pixels=limit,
            check=check,
        )

    def _vision_inputs(
        self,
        text: str,
        images: list[Image.Image],
        videos: list[Any],
        metadata: list[dict[str, Any]],
    ) -> dict[str, Any]:
        """The processor's whole output (ids, pixels, grids, mm_token_type_ids, second_per_grid_ts)."""
        max_px = self.config.understanding.max_pixels
        try:
            inputs = self._processor(
                text=[text],
                images=images or None,
                videos=videos or None,
                images_kwargs={
                    "size": {"shortest_edge": min(IMAGE_MIN_PIXELS, max_px), "longest_edge": max_px}
                },
                videos_kwargs={
                    "size": {"shortest_edge": min(VIDEO_MIN_PIXELS, max_px), "longest_edge": max_px},
                    # Frames were sampled by read_video at video_fps; the metadata tells the processor
                    # their real rate so the temporal positions (second_per_grid_ts) are right.
                    "do_sample_frames": False,
                    "video_metadata": metadata or None,
                    # qwen-vl-utils' bound on a whole video's pixels (on top of max_pixels per frame).
                    "cap_pixels_per_frame": True,
                },
                return_tensors="pt",
            )
        except ValueError as exc:  # e.g. an aspect ratio over 200:1, which Qwen's resizer refuses
            raise InputRefused(f"an input image or video cannot be prepared for Qwen2.5-VL: {exc}") from None
        inputs = inputs.to(self.device)
        for key in ("pixel_values", "pixel_values_videos"):
            # Only the pixels take the model's dtype: second_per_grid_ts stays exact in float32.
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return inputs

    # ------------------------------------------------------------------ grounding

    def ground(self, image: Image.Image, phrase: str) -> list[Box]:
        """Boxes ``(x0, y0, x1, y1)`` of ``phrase`` in ``image``, in that image's pixels.

        Qwen2.5-VL answers in absolute coordinates of the image it was shown (resized by the
        processor); they are scaled back. An answer with no readable box gives ``[]``.
        """
        self.load()
        image = image.convert("RGB")
        content = [
            {"type": "image"},
            {
                "type": "text",
                "text": f"Locate every {phrase} in the image and output the bbox coordinates in JSON format.",
            },
        ]
        text = self._chat_text([{"role": "user", "content": content}], generation_prompt=True)
        inputs = self._vision_inputs(text, [image], [], [])
        _, grid_h, grid_w = (int(v) for v in inputs["image_grid_thw"][0])
        patch = self._processor.image_processor.patch_size
        shown = (grid_w * patch, grid_h * patch)  # (w, h) the model saw
        out = self._generate(
            inputs, self._generation_config(self.ground_max_new_tokens, 0.0, plain_greedy=True)
        )
        answer = self._tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        boxes = scale_boxes(parse_boxes(answer), shown, image.size)
        log.info("grounded %r: %d box(es) from %r", phrase, len(boxes), answer[:120])
        return boxes

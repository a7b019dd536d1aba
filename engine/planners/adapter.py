"""The Unison LoRA on Qwen2.5-VL: finding its files, checking them, and merging it in memory.

The released adapter adds the 14 Unison tokens, so its saved ``embed_tokens``/``lm_head`` have
more rows than the base model's, and it trains them separately while the 3B base ties them.
:func:`attach_adapter` therefore runs, in order: resize the base model to the adapter's rows, untie
the embeddings, load the LoRA with PEFT (mapping the pre-4.52 key layout), and keeps it unmerged,
with the base model one ``disable_adapter()`` away; :func:`merge_adapter` merges it after that.
The checks before each step turn a mismatched adapter into a :class:`~engine.errors.ModelError`
that names the adapter and says which base model it needs, instead of a shape error deep inside
PEFT.

Kept apart from :mod:`engine.planners.qwen_model` so that module reads as the model alone; the tiny
model factory (:mod:`engine.tiny.qwen`) uses :func:`untie_word_embeddings` to build its adapter
the same way.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModelError
from ..imports import heavy_imports

if TYPE_CHECKING:
    from ..config import EngineConfig

log = logging.getLogger(__name__)

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


def looks_local(ref: str) -> bool:
    """Whether a model reference is meant as a path (a hub id is exactly ``owner/name``)."""
    return (
        Path(ref).expanduser().exists()
        or ref.startswith(("/", "./", "../", "~", "."))
        or ref.count("/") > 1
        or "\\" in ref
    )


def resolve_adapter_dir(ref: str, subfolder: str | None, config: EngineConfig) -> Path:
    """A local directory holding the adapter's files: ``ref`` itself, or its hub snapshot."""
    where = f"adapter={ref!r}" + (f" (subfolder {subfolder!r})" if subfolder else "")
    if looks_local(ref):
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


def adapter_tensor_shapes(adapter_dir: Path) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the saved adapter tensors, read from the safetensors header only."""
    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        return {}  # a .bin adapter: PEFT's own load still checks shapes
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118 (not a dict)


def adapter_vocab_rows(
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


def merge_adapter(model: Any, config: EngineConfig, model_id: str) -> tuple[Any, Any]:
    """Merge ``config.adapter`` into ``model``: (merged model, the adapter's tokenizer).

    Resize to the adapter's rows, untie, load the LoRA with PEFT, merge. Raises
    :class:`ModelError` naming the adapter when its files are missing or made for another model.
    """
    peft_model, tokenizer = attach_adapter(model, config, model_id, keep_base=False)
    return peft_model.merge_and_unload(), tokenizer


def attach_adapter(
    model: Any, config: EngineConfig, model_id: str, *, keep_base: bool = True
) -> tuple[Any, Any]:
    """Load ``config.adapter`` onto ``model`` unmerged: (the PEFT model, the adapter's tokenizer).

    The same steps as :func:`merge_adapter` without the merge: the LoRA layers are injected into
    ``model`` in place, active until ``peft_model.disable_adapter()``. With ``keep_base``, inside
    that context the model is exactly the base model: when the adapter's vocabulary size differs
    from the base's, the resize would otherwise leave the base path with rows added (whose random
    logits it could pick) or cut, so the base's own embeddings are kept for it (one copy of them,
    and only when a resize happens).
    """
    import torch
    from transformers import AutoTokenizer

    ref = str(config.adapter)
    where = f"adapter={ref!r}"
    adapter_dir = resolve_adapter_dir(ref, config.adapter_subfolder, config)
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
    rows = adapter_vocab_rows(
        adapter_tensor_shapes(adapter_dir), tokens=len(tokenizer), hidden=hidden, where=where
    )
    current = model.get_input_embeddings().weight.shape[0]
    # The adapter's saved embeddings decide the size (it may pad past its tokenizer); without
    # saved embeddings, grow only as far as the tokenizer needs.
    target = rows if rows is not None else max(current, len(tokenizer))
    base_embeddings = None
    if target != current:
        if keep_base:
            # resize_token_embeddings rewrites the modules in place. One deepcopy of both keeps a
            # tied pair tied (one tensor), as in the base checkpoint.
            pair = torch.nn.ModuleDict(
                {"embed_tokens": model.get_input_embeddings(), "lm_head": model.get_output_embeddings()}
            )
            base_embeddings = copy.deepcopy(pair)
        model.resize_token_embeddings(target, mean_resizing=False)
    untie_word_embeddings(model)
    peft_model = _load_lora(model, adapter_dir, where=where, model_id=model_id)
    if base_embeddings is not None:
        _restore_base_embeddings(peft_model, base_embeddings)
    log.info("Unison adapter loaded: %d tokens, %d embedding rows", len(tokenizer), target)
    return peft_model, tokenizer


def _restore_base_embeddings(peft_model: Any, base: Any) -> None:
    """Make the base path of the saved-whole ``embed_tokens``/``lm_head`` the base's own modules.

    PEFT wraps each module of ``modules_to_save`` in a ``ModulesToSaveWrapper`` that runs its
    ``original_module`` while the adapter is disabled; that module is the resized one.
    """
    from peft.utils.other import ModulesToSaveWrapper

    swapped = set()
    for name, module in peft_model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            last = name.rsplit(".", 1)[-1]
            if last in base:
                module.original_module = base[last]
                swapped.add(last)
    if swapped != set(base.keys()):
        # An adapter that does not save them whole shares the resized module with the base path.
        log.warning("the base model keeps the adapter's vocabulary size for %s", sorted(set(base) - swapped))


def _load_lora(model: Any, adapter_dir: Path, *, where: str, model_id: str) -> Any:
    """The PEFT model with the adapter's weights loaded, every LoRA weight matched to a layer."""
    with heavy_imports():  # lazy: peft (imported by diffusers too, when the generator loaded first)
        from peft import PeftConfig, PeftModel

    try:
        peft_config = PeftConfig.from_pretrained(str(adapter_dir))
        peft_config.inference_mode = True
        with warnings.catch_warnings():
            # peft calls a transformers property that transformers has deprecated; not ours to fix.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            peft_model = PeftModel(model, peft_config)
        result = peft_model.load_adapter(
            str(adapter_dir),
            adapter_name="default",
            is_trainable=False,
            key_mapping=LEGACY_ADAPTER_KEYS,
        )
    except (ValueError, RuntimeError, KeyError, OSError) as exc:
        raise ModelError(
            f"{where}: cannot be applied to {model_id}: {exc}; use the base model the adapter "
            "was trained on (Qwen/Qwen2.5-VL-3B-Instruct for Unison)"
        ) from exc
    missing = [k for k in result.missing_keys if "lora_" in k]
    unexpected = list(result.unexpected_keys)
    if missing or unexpected:
        raise ModelError(
            f"{where}: its weights do not match {model_id}'s layers "
            f"({len(missing)} LoRA weights missing, e.g. {missing[:2]}; {len(unexpected)} unknown, "
            f"e.g. {unexpected[:2]}): it was made for another model"
        )
    return peft_model

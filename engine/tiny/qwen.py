"""A tiny Qwen2.5-VL checkpoint and a tiny Unison adapter, built in code, in the real on-disk formats.

:func:`build_qwen` writes what ``Qwen/Qwen2.5-VL-3B-Instruct`` ships (config, safetensors weights,
generation config, a byte-level BPE tokenizer with Qwen's chat special tokens, image and video
processors, the chat template) at a size that runs on a CPU in milliseconds. :func:`build_adapter`
writes what the Unison LoRA ships: the tokenizer with the 14 added tokens and a PEFT LoRA on the
text attention with ``embed_tokens`` and ``lm_head`` saved whole. The adapter is trained for a few
seconds on :data:`EXAMPLES` so that greedy decoding of those requests writes their Unison plans:
the whole planning path (tokenizer → LoRA merge → generation → parsing) is then exercised for real.

Everything is deterministic for a given seed. This module imports torch and transformers at import
time; only :func:`engine.tiny.ensure_tiny` (imported lazily) and tests import it.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..planners.adapter import untie_word_embeddings
from ..request import parse_request
from ..vocab import UNISON_TOKENS, Task

log = logging.getLogger(__name__)

#: Qwen2's added tokens in their real order (ids follow the BPE vocabulary, as 151643... do in Qwen).
#: ``True`` marks the special ones (the tool-call tags are added but not special in Qwen).
QWEN_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

DEFAULT_SYSTEM_MESSAGE = "You are a helpful assistant."

#: Qwen2.5-VL's chat format: a default system turn unless the caller gives one, ``<|im_start|>role``
#: turns closed by ``<|im_end|>``, and each image/video part rendered as its vision placeholder.
CHAT_TEMPLATE = (
    "{%- set seen = namespace(images=0, videos=0) -%}"
    "{%- for message in messages -%}"
    "{%- if loop.first and message['role'] != 'system' -%}"
    "{{- '<|im_start|>system\\n" + DEFAULT_SYSTEM_MESSAGE + "<|im_end|>\\n' -}}"
    "{%- endif -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- else -%}"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' or 'image' in part or 'image_url' in part -%}"
    "{%- set seen.images = seen.images + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Picture ' ~ seen.images ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' or 'video' in part -%}"
    "{%- set seen.videos = seen.videos + 1 -%}"
    "{%- if add_vision_id -%}{{- 'Video ' ~ seen.videos ~ ': ' -}}{%- endif -%}"
    "{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif 'text' in part -%}"
    "{{- part['text'] -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


@dataclass(frozen=True)
class Example:
    """One request the tiny adapter is trained to plan, with the plan it must write."""

    request: str  # as a user writes it, with ###path### markers
    plan: str  # the Unison text the planner answers
    task: Task  # what parse_unison makes of it


#: The tiny adapter's training set: one or two requests per task type of the released grammar.
EXAMPLES: tuple[Example, ...] = (
    # Sizes the tiny generator renders in a blink (the real planner writes 832,480 and 80).
    Example("Draw a red fox sitting in the snow.", "<CFI><BORES>64,48<EORES>", Task.TEXT_TO_IMAGE),
    Example("A watercolor painting of a lighthouse.", "<CFI>", Task.TEXT_TO_IMAGE),
    Example(
        "Make a video of waves crashing on a beach.",
        "<CFV><BORES>64,48<EORES><BONF>8<EONF>",
        Task.TEXT_TO_VIDEO,
    ),
    Example(
        "Edit ###photo.png### using the mask ###mask.png###: put a hat on the dog.",
        "<CFI><BOEDIT>1,0<EOEDIT>",
        Task.IMAGE_EDIT,
    ),
    Example(
        "Animate ###start.png### as the first frame: the girl starts walking.",
        "<CFV><BOFIDX>first<EOFIDX>",
        Task.IMAGE_TO_VIDEO,
    ),
    Example(
        "Make a video that ends on ###end.png###: the car arrives home.",
        "<CFV><BOFIDX>last<EOFIDX>",
        Task.IMAGE_TO_VIDEO,
    ),
    Example(
        "Create a picture of the person in ###face.jpg### riding a horse.",
        "<CFI><REF>",
        Task.IMAGE_REFERENCE,
    ),
    Example(
        "Make a video of the cat in ###cat.png### playing with yarn.", "<CFV><REF>", Task.VIDEO_REFERENCE
    ),
    Example("Use the depth map ###depth.png### to draw a castle.", "<CFI><CTRL>", Task.IMAGE_CONTROL),
    Example(
        "Follow the pose video ###pose.mp4### to show a robot dancing.", "<CFV><CTRL>", Task.VIDEO_CONTROL
    ),
    Example("In ###clip.mp4###, replace the dog with a cat.", "<CFV><BOEDIT><EOEDIT>", Task.VIDEO_EDIT),
    Example("What is in this picture? ###cat.png###", "A cat on a sofa.", Task.IMAGE_UNDERSTANDING),
    Example("Describe what happens in ###clip.mp4###", "A man runs.", Task.VIDEO_UNDERSTANDING),
    Example("What is the capital of France?", "Paris.", Task.TEXT_UNDERSTANDING),
)


@dataclass(frozen=True)
class Answer:
    """One question the tiny base model is taught to answer, as ``understand`` asks it."""

    question: str
    answer: str
    media: str | None = None  # "image" or "video": one such input is shown with the question
    size: tuple[int, int] = (56, 56)  # its width and height (the processor's grid follows them)
    frames: int = 4  # a video's frames


#: What the tiny Qwen itself (no adapter: the tiny preset's understanding model) is taught, so
#: that ``understand`` on the tiny preset shows a short real answer instead of an empty string.
#: Each answer fits the tiny preset's 8 new tokens; other questions get one of them. They are
#: not in the tokenizer's corpus: its vocabulary (and every size tests know) stays as it was.
ANSWERS: tuple[Answer, ...] = (
    Answer("What is the capital of France?", "Paris."),
    Answer("Say hello.", "Hello!"),
    Answer("How many people?", "Two."),
    Answer("What is in this picture?", "A cat sits.", "image"),
    Answer("what is in this picture?", "A cat sits.", "image", (96, 64)),
    Answer("What do you see?", "A cat sits.", "image", (64, 96)),
    Answer("Describe the picture.", "A cat sits.", "image", (80, 48)),
    Answer("What is happening in this video?", "A man runs.", "video"),
    Answer("What is happening in this video?", "A man runs.", "video", (48, 32), 2),
    Answer("Describe what happens.", "A man runs.", "video", (64, 48), 4),
    Answer("What happens in this clip?", "A man runs.", "video", (72, 44), 2),  # examples/media/ball.mp4
)
#: Pixels of the pictures and frames shown while teaching: the tiny preset's understanding budget.
TEACH_PIXELS = 56 * 56
TEACH_MAX_STEPS = 200  # it converges in about 40
TEACH_STOP_LOSS = 0.1  # worst row's mean loss per answer token: greedy decoding is right well before

#: Text the tokenizer is trained on: the examples, the chat format, and requests like them.
_CORPUS_EXTRA = (
    DEFAULT_SYSTEM_MESSAGE,
    "system user assistant",
    "Draw a cat. Draw a dog. Paint a horse. Make an image of a house. Make a picture of a tree.",
    "Make a video of a dog running on the grass. Create a video of a bird flying over the sea.",
    "Generate an image of a city at night. Generate a short clip of rain falling on a window.",
    "Replace the sky with a sunset. Remove the person on the left. Change the color of the car to blue.",
    "Animate this photo. Turn the picture into a video. Use this image as the first frame or the last frame.",
    "Follow the pose. Use the depth map. Use the edge map. Keep the same face and the same person.",
    "What is in this image? What is happening in this video? Describe the picture. How many people?",
    "Answer with a JSON object: task, width, height, num_frames, inputs, index, role.",
    '{"task": "text_to_image", "width": 832, "height": 480, "num_frames": 1, "inputs": []}',
    '{"index": 0, "role": "source"} {"index": 1, "role": "mask"} reference control first_frame last_frame',
    'Locate the dog and output its bbox coordinates in JSON: [{"bbox_2d": [12, 34, 56, 78], "label": "dog"}]',
    "0 1 2 3 4 5 6 7 8 9 10 16 24 32 48 64 80 81 100 480 720 832 1280",
)

TEXT_HIDDEN_SIZE = 64
TOKENIZER_VOCAB_SIZE = 640  # at most this many byte-level BPE pieces (the corpus yields ~570)
PAD_VOCAB_TO = 64  # Qwen pads the embedding rows beyond the tokenizer (151936 for 151665 tokens)


def _corpus() -> list[str]:
    lines = list(_CORPUS_EXTRA)
    for ex in EXAMPLES:
        lines.append(ex.request)
        lines.append(parse_request(ex.request).text)
        lines.append(ex.plan)
    return lines


# ---------------------------------------------------------------------------------------------
# Base model.


def _train_tokenizer():
    """A Qwen2 tokenizer (same normaliser, pre-tokeniser and decoder) with a small trained vocab."""
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer

    # Train with Qwen2's own pre-tokenisation so the merges fit the tokenizer that will use them.
    reference = Qwen2Tokenizer()
    bpe = Tokenizer(models.BPE())
    bpe.normalizer = reference.backend_tokenizer.normalizer
    bpe.pre_tokenizer = reference.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(
        vocab_size=TOKENIZER_VOCAB_SIZE,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_corpus(), trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    vocab: dict[str, int] = model["vocab"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]

    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
    )
    # Added in Qwen's order, so their ids follow the vocabulary the way 151643... do in Qwen.
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in QWEN_ADDED_TOKENS])
    specials = [t for t, s in QWEN_ADDED_TOKENS if s and t != "<|endoftext|>"]
    tok.add_special_tokens({"extra_special_tokens": specials}, replace_extra_special_tokens=True)
    # Qwen2.5-VL-Instruct ends a turn with <|im_end|>: that is its eos token.
    tok.eos_token = "<|im_end|>"
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_qwen(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny random-initialised Qwen2.5-VL checkpoint directory in the hub's layout.

    ``AutoProcessor.from_pretrained(out_dir)`` and
    ``Qwen2_5_VLForConditionalGeneration.from_pretrained(out_dir)`` load it. Like the 3B model it
    ties ``lm_head`` to ``embed_tokens`` and has more embedding rows than tokenizer entries.
    """
    from transformers import GenerationConfig, Qwen2_5_VLForConditionalGeneration

    started = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok = _train_tokenizer()
    ids = {t: tok.convert_tokens_to_ids(t) for t, _ in QWEN_ADDED_TOKENS}
    vocab_rows = -(-len(tok) // PAD_VOCAB_TO) * PAD_VOCAB_TO

    config = _tiny_config(ids, vocab_rows)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    # Qwen's shipped sampling defaults; the planner must override them for greedy planning.
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]],
        do_sample=True,
        repetition_penalty=1.05,
        temperature=0.1,
        top_p=0.001,
        top_k=1,
    )
    model.save_pretrained(out_dir)
    _write_hub_config(out_dir, ids["<|vision_pad|>"])

    # The processor files as the hub repo has them: one preprocessor_config.json (the video
    # processor reads it too), the chat template in chat_template.json, the tokenizer files.
    tok.save_pretrained(out_dir)
    (out_dir / "preprocessor_config.json").write_text(json.dumps(_PREPROCESSOR_CONFIG, indent=2) + "\n")
    (out_dir / "chat_template.json").write_text(json.dumps({"chat_template": CHAT_TEMPLATE}, indent=2) + "\n")

    # Taught through the saved processor, exactly as understanding will feed it, then saved again.
    _teach_answers(model, out_dir)
    model.save_pretrained(out_dir)
    _write_hub_config(out_dir, ids["<|vision_pad|>"])
    log.info("tiny Qwen2.5-VL written to %s in %.1f s", out_dir, time.perf_counter() - started)


def _tiny_config(ids: dict[str, int], vocab_rows: int) -> Any:
    """The tiny model's ``Qwen2_5_VLConfig``: the 3B model's layout (mrope, windowed vision, tied
    embeddings) at a size a CPU builds in seconds; ``ids`` are the tokenizer's special tokens."""
    from transformers import Qwen2_5_VLConfig

    heads = 4  # head_dim 16: its 8 rotary frequencies split 2/3/3 over time, height, width (mrope)
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_rows,
            hidden_size=TEXT_HIDDEN_SIZE,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=128000,
            max_window_layers=2,
            rms_norm_eps=1e-6,
            use_sliding_window=False,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [2, 3, 3]},
            bos_token_id=ids["<|endoftext|>"],
            eos_token_id=ids["<|im_end|>"],
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            out_hidden_size=TEXT_HIDDEN_SIZE,
            fullatt_block_indexes=[1],
            tokens_per_second=2,
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=True,
        architectures=["Qwen2_5_VLForConditionalGeneration"],
    )


def _answer_rows(processor, tok) -> list[dict[str, torch.Tensor]]:
    """One training row per :data:`ANSWERS` entry: the processor's inputs plus the answer, and labels
    on the answer only (the chat and the media are context)."""
    import numpy as np
    from PIL import Image

    end = tok.convert_tokens_to_ids("<|im_end|>")
    size = {"shortest_edge": TEACH_PIXELS, "longest_edge": TEACH_PIXELS}
    rows = []
    for i, a in enumerate(ANSWERS):
        content: list[dict] = [{"type": a.media}] if a.media else []
        content.append({"type": "text", "text": a.question})
        text = tok.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        colour = (40 * i % 256, 200, 90)
        (width, height), n = a.size, a.frames
        kwargs: dict = {}
        if a.media == "image":
            kwargs = {"images": [Image.new("RGB", (width, height), colour)], "images_kwargs": {"size": size}}
        elif a.media == "video":
            frames = np.zeros((n, height, width, 3), dtype=np.uint8)  # (F, H, W, 3)
            frames[..., 0] = np.arange(n, dtype=np.uint8)[:, None, None] * 60
            meta = {"total_num_frames": n, "fps": 2.0, "frames_indices": list(range(n))}
            kwargs = {
                "videos": [frames],
                "videos_kwargs": {
                    "size": size,
                    "do_sample_frames": False,
                    "video_metadata": [meta],
                    "cap_pixels_per_frame": True,  # as understanding decides it
                },
            }
        inputs = dict(processor(text=[text], return_tensors="pt", **kwargs))
        answer = torch.tensor([tok(a.answer, add_special_tokens=False)["input_ids"] + [end]])  # (1, A)
        prompt_len = inputs["input_ids"].shape[1]
        inputs["input_ids"] = torch.cat([inputs["input_ids"], answer], dim=1)  # (1, L + A)
        inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
        if "mm_token_type_ids" in inputs:  # the answer is text: type 0
            inputs["mm_token_type_ids"] = torch.cat(
                [inputs["mm_token_type_ids"], torch.zeros_like(answer)], dim=1
            )
        labels = inputs["input_ids"].clone()
        labels[:, :prompt_len] = -100
        inputs["labels"] = labels
        rows.append(inputs)
    return rows


def _one_batch(rows: list[dict[str, torch.Tensor]], pad: int) -> dict[str, torch.Tensor]:
    """The rows as one right-padded batch: one forward per step instead of one per row.

    Token tensors are padded (labels with -100, the mask with 0); the pixels and grids of all
    images (and of all videos) are concatenated in row order, which is how Qwen2.5-VL batches
    them (each placeholder run takes the next grid).
    """
    width = max(r["input_ids"].shape[1] for r in rows)
    fill = {"input_ids": pad, "attention_mask": 0, "mm_token_type_ids": 0, "labels": -100}
    batch: dict[str, torch.Tensor] = {}
    for key, value in fill.items():
        if key in rows[0]:
            batch[key] = torch.cat(
                [torch.nn.functional.pad(r[key], (0, width - r[key].shape[1]), value=value) for r in rows]
            )  # (N, L)
    for key in (
        "pixel_values",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
        "second_per_grid_ts",
    ):
        parts = [r[key] for r in rows if key in r]
        if parts:
            batch[key] = torch.cat(parts)
    return batch


def _teach_answers(model, out_dir: Path) -> None:
    """Train the whole tiny model a few seconds on :data:`ANSWERS` (loss on the answers only)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(out_dir)
    batch = _one_batch(_answer_rows(processor, processor.tokenizer), processor.tokenizer.pad_token_id)
    # The language model learns the answers; the vision tower stays as built (and the backward
    # pass through it, the slow part at this size, is skipped).
    params = [p for name, p in model.named_parameters() if ".visual." not in f".{name}"]
    optim = torch.optim.Adam(params, lr=TRAIN_LR)
    frozen = [p for name, p in model.named_parameters() if ".visual." in f".{name}"]
    for p in frozen:
        p.requires_grad_(False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in _train: faster for matrices this small, and deterministic
    model.train()
    labels = batch.pop("labels")  # (N, L)
    answer_tokens = (labels != -100).sum(dim=1)  # (N,)
    steps, worst = 0, float("inf")
    try:
        while steps < TEACH_MAX_STEPS and worst > TEACH_STOP_LOSS:
            steps += 1
            logits = model(**batch).logits[:, :-1].float()  # (N, L-1, V)
            per_token = torch.nn.functional.cross_entropy(
                logits.transpose(1, 2), labels[:, 1:], ignore_index=-100, reduction="none"
            )  # (N, L-1)
            per_row = per_token.sum(dim=1) / answer_tokens  # (N,): each answer's mean loss
            optim.zero_grad()
            per_row.mean().backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            worst = per_row.max().item()
    finally:
        torch.set_num_threads(threads)
        for p in frozen:
            p.requires_grad_(True)
        model.eval()
    log.info("tiny Qwen taught %d answers: %d steps, worst loss %.3f", len(ANSWERS), steps, worst)


_PREPROCESSOR_CONFIG = {
    "min_pixels": 56 * 56,
    "max_pixels": 28 * 28 * 16384,
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "image_processor_type": "Qwen2VLImageProcessor",
    "processor_class": "Qwen2_5_VLProcessor",
}


def _write_hub_config(out_dir: Path, vision_pad_id: int) -> None:
    """Rewrite config.json in the flat form the published Qwen2.5-VL checkpoints use.

    transformers 5 saves a nested ``text_config``; the hub files keep the text fields at the top
    level with ``rope_scaling: {type: mrope}``. Loading the flat form exercises the same
    compatibility path a real user's download takes.
    """
    path = out_dir / "config.json"
    nested = json.loads(path.read_text())
    text = nested.pop("text_config")
    for key in ("model_type", "layer_types", "pad_token_id", "sliding_window", "dtype"):
        text.pop(key, None)
    rope = text.pop("rope_parameters")
    text["rope_theta"] = rope["rope_theta"]
    text["rope_scaling"] = {"type": "mrope", "mrope_section": rope["mrope_section"]}
    text["sliding_window"] = 32768
    nested["vision_config"].pop("rope_parameters", None)
    flat = {**text, **nested, "vision_token_id": vision_pad_id}
    flat["torch_dtype"] = flat.pop("dtype", "float32")
    path.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")


def text_hidden_size(qwen_dir: Path) -> int:
    """The text hidden size of a saved Qwen2.5-VL checkpoint (what the projector takes)."""
    data = json.loads((Path(qwen_dir) / "config.json").read_text())
    text = data.get("text_config") or data  # older checkpoints keep text fields at the top level
    return int(text["hidden_size"])


# ---------------------------------------------------------------------------------------------
# The Unison adapter.

LORA_RANK = 8
TRAIN_MAX_STEPS = 300  # it converges in about 30 (1-2 s on one core)
TRAIN_LR = 1e-2
TRAIN_STOP_LOSS = 0.02  # mean loss per answer token: every greedy answer is right well before this
#: The text layers' attention projections only: the vision tower's attention is ``qkv``/``proj``,
#: but the pattern names the language model anyway so it can never reach the vision tower.
LORA_TARGETS = r".*language_model\.layers\.\d+\.self_attn\.(q_proj|k_proj|v_proj|o_proj)"


def build_adapter(out_dir: Path, *, base: Path, seed: int = 0) -> None:
    """Write a Unison-style PEFT adapter for the tiny Qwen at ``base``, trained on :data:`EXAMPLES`.

    Same steps as the released adapter: the tokenizer gains the 14 Unison tokens, the embeddings
    are resized to it and untied, and a LoRA on the text attention is trained together with whole
    copies of ``embed_tokens`` and ``lm_head`` (``modules_to_save``).
    """
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    started = time.perf_counter()
    out_dir = Path(out_dir)
    tok = AutoTokenizer.from_pretrained(base)
    tok.add_special_tokens({"extra_special_tokens": list(UNISON_TOKENS)}, replace_extra_special_tokens=False)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(base, dtype=torch.float32)
    model.resize_token_embeddings(len(tok), mean_resizing=False)
    untie_word_embeddings(model)

    torch.manual_seed(seed)
    lora = LoraConfig(
        r=LORA_RANK,
        lora_alpha=2 * LORA_RANK,
        lora_dropout=0.0,
        target_modules=LORA_TARGETS,
        modules_to_save=["embed_tokens", "lm_head"],
        task_type="CAUSAL_LM",
    )
    with warnings.catch_warnings():
        # peft calls a transformers property that transformers has deprecated; not ours to fix.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, lora)
    _train(peft_model, tok)
    peft_model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    log.info("tiny Unison adapter written to %s in %.1f s", out_dir, time.perf_counter() - started)


def _chat_ids(tok, text: str) -> list[int]:
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
    )
    return tok(rendered, add_special_tokens=False)["input_ids"]


def _train(model, tok) -> None:
    """Teach the LoRA to answer each example's request with its plan (loss on the answer only)."""
    end = tok.convert_tokens_to_ids("<|im_end|>")
    pad = tok.pad_token_id
    rows, labels = [], []
    for ex in EXAMPLES:
        prompt = _chat_ids(tok, parse_request(ex.request).text)
        answer = tok(ex.plan, add_special_tokens=False)["input_ids"] + [end]
        rows.append(prompt + answer)
        labels.append([-100] * len(prompt) + answer)
    width = max(len(r) for r in rows)
    input_ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows])  # (N, L)
    target = torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels])  # (N, L)
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])  # (N, L)

    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.Adam(params, lr=TRAIN_LR)
    threads = torch.get_num_threads()
    # Matrices this small train faster on one thread, and far faster on a machine shared with
    # other test runs, where threads wait on each other.
    torch.set_num_threads(1)
    model.train()
    steps = 0
    try:
        while steps < TRAIN_MAX_STEPS:
            steps += 1
            loss = model(input_ids=input_ids, attention_mask=mask, labels=target).loss
            optim.zero_grad()
            loss.backward()
            # Clipping lets the high learning rate converge in a few dozen steps without diverging.
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            if loss.item() < TRAIN_STOP_LOSS:
                break
    finally:
        torch.set_num_threads(threads)
        model.eval()
    log.info("tiny adapter trained: %d steps, loss %.3f", steps, loss.item())

"""The tiny Qwen2.5-VL and Unison adapter: real on-disk formats, loadable like the released weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from engine.tiny.qwen import (
    CHAT_TEMPLATE,
    DEFAULT_SYSTEM_MESSAGE,
    QWEN_ADDED_TOKENS,
    build_qwen,
    text_hidden_size,
)
from engine.vocab import UNISON_TOKENS


@pytest.fixture(scope="module")
def processor(tiny_paths):
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(tiny_paths.qwen)


@pytest.fixture(scope="module")
def model(tiny_paths):
    from transformers import Qwen2_5_VLForConditionalGeneration

    return Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_paths.qwen).eval()


def test_the_qwen_directory_has_the_files_of_the_hub_repository(tiny_paths):
    names = {p.name for p in tiny_paths.qwen.iterdir()}
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "chat_template.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= names
    config = json.loads((tiny_paths.qwen / "config.json").read_text())
    # The published checkpoints keep text fields at the top level, mrope in rope_scaling, and tie.
    assert config["model_type"] == "qwen2_5_vl"
    assert config["rope_scaling"]["type"] == "mrope"
    assert config["tie_word_embeddings"] is True
    assert config["vision_config"]["out_hidden_size"] == config["hidden_size"]
    assert "text_config" not in config


def test_the_processor_and_model_load_with_the_auto_classes(processor, model):
    assert type(processor).__name__ == "Qwen2_5_VLProcessor"
    assert type(processor.image_processor).__name__ == "Qwen2VLImageProcessor"
    assert type(processor.video_processor).__name__ == "Qwen2VLVideoProcessor"
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert model.lm_head.weight is model.get_input_embeddings().weight  # tied, like the 3B model


def test_the_vision_token_ids_in_the_config_are_the_tokenizers(processor, model):
    tok = processor.tokenizer
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert model.config.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert model.config.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert model.config.vision_end_token_id == tok.convert_tokens_to_ids("<|vision_end|>")


def test_qwens_added_tokens_follow_the_vocabulary_in_order_and_stay_whole(processor, model):
    tok = processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t, _ in QWEN_ADDED_TOKENS]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    encoded = tok("<|im_start|>user\nDraw a cat.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert encoded[0] == tok.convert_tokens_to_ids("<|im_start|>")
    assert encoded[-1] == tok.convert_tokens_to_ids("<|im_end|>")
    # Qwen pads the embedding matrix past the tokenizer (151936 rows for 151665 tokens).
    assert model.get_input_embeddings().weight.shape[0] > len(tok)


def test_the_tokenizer_round_trips_english_and_bytes(processor):
    tok = processor.tokenizer
    for text in ("Make a video of waves crashing on a beach.", "naïve café ✓ 832,480"):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # Trained merges: a common request word is far fewer pieces than bytes.
    assert len(tok("video", add_special_tokens=False)["input_ids"]) < len("video")


def test_the_chat_template_renders_qwen25_vl_turns(processor):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == (
        f"<|im_start|>system\n{DEFAULT_SYSTEM_MESSAGE}<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    own_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    text = processor.tokenizer.apply_chat_template(own_system, tokenize=False, chat_template=CHAT_TEMPLATE)
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
    video = [{"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "?"}]}]
    assert "<|vision_start|><|video_pad|><|vision_end|>" in processor.apply_chat_template(
        video, tokenize=False
    )


def test_an_image_goes_through_the_processor_and_the_model(processor, model):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 90, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[image], return_tensors="pt")
    grid = inputs["image_grid_thw"][0]
    image_pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((inputs["input_ids"] == image_pad).sum()) == int(grid.prod()) // 4  # 2×2 merge
    with torch.inference_mode():
        logits = model(**inputs).logits
    assert logits.shape == (1, inputs["input_ids"].shape[1], model.config.text_config.vocab_size)


def test_the_adapter_is_a_peft_lora_on_the_text_attention_with_whole_embeddings(tiny_paths):
    from transformers import AutoTokenizer

    config = json.loads((tiny_paths.adapter / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA"
    assert sorted(config["modules_to_save"]) == ["embed_tokens", "lm_head"]
    with safe_open(str(tiny_paths.adapter / "adapter_model.safetensors"), framework="pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}  # noqa: SIM118
    lora = [k for k in shapes if ".lora_" in k]
    assert lora and all(".language_model.layers." in k for k in lora)
    assert not any(".visual." in k for k in shapes)
    assert {k.split(".self_attn.")[1].split(".")[0] for k in lora} == {"q_proj", "k_proj", "v_proj", "o_proj"}

    base_tok = AutoTokenizer.from_pretrained(tiny_paths.qwen)
    tok = AutoTokenizer.from_pretrained(tiny_paths.adapter)
    assert len(tok) == len(base_tok) + len(UNISON_TOKENS)
    for token in UNISON_TOKENS:
        assert tok.convert_tokens_to_ids(token) >= len(base_tok)
        assert tok(token, add_special_tokens=False)["input_ids"] == [tok.convert_tokens_to_ids(token)]
    embed = next(v for k, v in shapes.items() if k.endswith("embed_tokens.weight"))
    head = next(v for k, v in shapes.items() if k.endswith("lm_head.weight"))
    assert embed == head == (len(tok), text_hidden_size(tiny_paths.qwen))


def test_text_hidden_size_reads_the_saved_config(tiny_paths, model):
    assert text_hidden_size(tiny_paths.qwen) == model.config.text_config.hidden_size == 64


def test_the_build_is_deterministic_for_a_seed(tiny_paths, tmp_path: Path):
    from safetensors.torch import load_file

    build_qwen(tmp_path / "same", seed=0)
    build_qwen(tmp_path / "other", seed=1)
    ref = load_file(tiny_paths.qwen / "model.safetensors")
    same = load_file(tmp_path / "same" / "model.safetensors")
    other = load_file(tmp_path / "other" / "model.safetensors")
    assert ref.keys() == same.keys()
    assert all(torch.equal(ref[k], same[k]) for k in ref)
    assert not all(torch.equal(ref[k], other[k]) for k in ref)
    assert (tmp_path / "same" / "tokenizer.json").read_text() == (
        tiny_paths.qwen / "tokenizer.json"
    ).read_text()

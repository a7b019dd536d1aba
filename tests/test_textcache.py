"""The umT5 encoding LRU (engine/textcache.py) on the tiny Wan pipeline's real umT5."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from engine import textcache
from engine.config import SamplingDefaults
from engine.generator import build_text_context, encode_text
from engine.textcache import EncodingKey, TextCache

PROMPT = "a red fox running through fresh snow"
NEGATIVE = SamplingDefaults().negative_prompt


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread() -> Iterator[None]:
    # Tiny models on a shared 2-core machine: threads only add spin-waiting.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipe(tiny_paths) -> Any:
    """The tiny Wan2.1-VACE pipeline, loaded from its on-disk layout as the generator loads it."""
    from diffusers import WanVACEPipeline

    loaded = WanVACEPipeline.from_pretrained(str(Path(tiny_paths.wan)), local_files_only=True)
    loaded.set_progress_bar_config(disable=True)
    return loaded


@pytest.fixture()
def forwards(pipe: Any) -> Iterator[list[int]]:
    """Counts umT5 forwards during a test, which starts with an empty cache."""
    textcache.cache_for(pipe.text_encoder).clear()
    calls: list[int] = []
    handle = pipe.text_encoder.register_forward_hook(lambda *_: calls.append(1))
    yield calls
    handle.remove()


def _context(pipe: Any, prompt: str = PROMPT, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    options: dict[str, Any] = dict(
        negative_prompt=NEGATIVE, extra_tokens=None, text_len=2048, max_sequence_length=512
    )
    options.update(kwargs)
    with torch.inference_mode():
        return build_text_context(pipe, prompt, **options)


def test_a_cached_encoding_is_bit_for_bit_the_uncached_one(pipe: Any, forwards: list[int]) -> None:
    uncached = _context(pipe, use_cache=False)
    first = _context(pipe)
    second = _context(pipe)
    for a, b, c in zip(uncached, first, second, strict=True):
        assert a is not None and b is not None and c is not None
        assert torch.equal(a, b) and torch.equal(a, c)
    # Uncached: prompt + negative; the first cached call encodes both again, the second none.
    assert len(forwards) == 4


def test_two_identical_requests_run_the_text_encoder_once_per_text(pipe: Any, forwards: list[int]) -> None:
    _context(pipe)
    assert len(forwards) == 2  # the prompt and the negative prompt
    _context(pipe)
    assert len(forwards) == 2
    _context(pipe, "another prompt entirely")
    assert len(forwards) == 3  # only the new prompt: the default negative prompt is encoded once
    cache = textcache.cache_for(pipe.text_encoder)
    assert (cache.hits, cache.misses) == (3, 3)


def test_what_changes_the_result_is_part_of_the_key(pipe: Any, forwards: list[int]) -> None:
    _context(pipe, negative_prompt=None)
    _context(pipe, negative_prompt=None, max_sequence_length=4)  # the tokenizer cap cuts the text
    assert len(forwards) == 2
    short, _ = _context(pipe, negative_prompt=None, max_sequence_length=4)
    full, _ = _context(pipe, negative_prompt=None)
    assert not torch.equal(short, full)


def test_the_dtype_and_padding_are_in_the_key() -> None:
    base = EncodingKey(PROMPT, 512, True, "cpu", "torch.float32")
    variants = [
        EncodingKey(PROMPT, 512, False, "cpu", "torch.float32"),
        EncodingKey(PROMPT, 512, True, "cuda:0", "torch.float32"),
        EncodingKey(PROMPT, 512, True, "cpu", "torch.bfloat16"),
        EncodingKey(PROMPT, 256, True, "cpu", "torch.float32"),
        EncodingKey(PROMPT + " ", 512, True, "cpu", "torch.float32"),
    ]
    assert len({base, *variants}) == 1 + len(variants)


def test_the_lru_evicts_the_least_recently_used_beyond_its_size() -> None:
    cache = TextCache(2)
    keys = [EncodingKey(f"text {i}", 512, True, "cpu", "torch.float32") for i in range(3)]
    cache.put(keys[0], torch.zeros(1, 4))
    cache.put(keys[1], torch.ones(1, 4))
    assert cache.get(keys[0]) is not None  # now the most recent
    cache.put(keys[2], torch.full((1, 4), 2.0))
    assert len(cache) == 2
    assert keys[1] not in cache and keys[0] in cache and keys[2] in cache
    cache.resize(1)
    assert len(cache) == 1 and keys[2] in cache


def test_a_cache_of_size_zero_keeps_nothing_and_the_encoder_runs_every_time(
    pipe: Any, forwards: list[int]
) -> None:
    textcache.attach(pipe.text_encoder, 0)
    try:
        _context(pipe, negative_prompt=None)
        _context(pipe, negative_prompt=None)
        assert len(forwards) == 2
        assert len(textcache.cache_for(pipe.text_encoder)) == 0
    finally:
        textcache.attach(pipe.text_encoder, textcache.DEFAULT_SIZE)


def test_callers_cannot_change_a_cached_encoding(pipe: Any, forwards: list[int]) -> None:
    cache = TextCache(4)

    def encode() -> torch.Tensor:
        return encode_text(
            pipe.tokenizer, pipe.text_encoder, PROMPT, max_sequence_length=512, device="cpu", cache=cache
        )

    # The generator encodes under inference mode, where its results can be written in place.
    with torch.inference_mode():
        first = encode()
        reference = first.clone()
        first.zero_()  # a caller writing into what it got back
        second = encode()
        assert torch.equal(second, reference)
        second.add_(1.0)
        assert torch.equal(encode(), reference)
    assert len(forwards) == 1


def test_a_sized_cache_is_attached_to_its_encoder_and_shared_by_later_lookups(pipe: Any) -> None:
    cache = textcache.attach(pipe.text_encoder, 5)
    try:
        assert textcache.cache_for(pipe.text_encoder) is cache and cache.size == 5
        assert textcache.cache_for(torch.nn.Linear(1, 1)) is not cache  # another encoder, another cache
    finally:
        textcache.attach(pipe.text_encoder, textcache.DEFAULT_SIZE)


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(ValueError, match="size=-1"):
        TextCache(-1)

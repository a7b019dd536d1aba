"""A small LRU of umT5 prompt encodings, one per text encoder.

umT5-XXL is 5.7 B parameters: encoding a prompt costs a forward of its own, and most requests
repeat text — the default negative prompt on every call with guidance, the same prompt across the
windows of a chain, a prompt retried with another seed. :func:`engine.generator.encode_text`
keeps its results here, keyed by everything that changes them (:class:`EncodingKey`), so a
repeated text is encoded once and the result is bit for bit the one an uncached encode gives.

The cache hangs off the text encoder module (a weak reference: it goes when the pipeline goes),
so two pipelines never share entries. Callers get clones: nothing they do to a returned tensor
reaches the stored one.

This module imports torch at the top: import it lazily (the generator does).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import torch

log = logging.getLogger(__name__)

#: Entries kept when no size is set for an encoder (``PerformanceOptions.text_cache_size``).
DEFAULT_SIZE = 32


@dataclass(frozen=True)
class EncodingKey:
    """Everything an umT5 encoding depends on besides the encoder's weights."""

    text: str
    #: The tokenizer cap: a longer text is cut there.
    max_sequence_length: int
    #: Whether the tokens were padded to the cap (the same result up to summation order only).
    padded: bool
    #: Where the encoder ran and in which dtype (``str`` of the torch objects).
    device: str
    dtype: str


class TextCache:
    """Least-recently-used map from :class:`EncodingKey` to ``(n, text_dim)`` encodings.

    ``size=0`` keeps nothing (every lookup misses). ``hits``/``misses`` count lookups, for
    benchmarks and logs.
    """

    def __init__(self, size: int = DEFAULT_SIZE):
        if size < 0:
            raise ValueError(f"size={size}: must be >= 0")
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[EncodingKey, torch.Tensor] = OrderedDict()
        # The engine serialises model work; the lock only keeps a benchmark thread honest.
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: EncodingKey) -> bool:
        return key in self._entries

    def get(self, key: EncodingKey) -> torch.Tensor | None:
        """A clone of the stored encoding (now the most recent), or ``None``."""
        with self._lock:
            stored = self._entries.get(key)
            if stored is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
        return stored.clone()

    def put(self, key: EncodingKey, value: torch.Tensor) -> None:
        """Keep a copy of ``value`` (the caller keeps its own), evicting the least recent."""
        if self.size == 0:
            return
        stored = value.detach().clone()
        with self._lock:
            self._entries[key] = stored
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def resize(self, size: int) -> None:
        """Keep at most ``size`` entries from now on (the least recent go first)."""
        if size < 0:
            raise ValueError(f"size={size}: must be >= 0")
        with self._lock:
            self.size = size
            while len(self._entries) > size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self.hits = self.misses = 0


_caches: weakref.WeakKeyDictionary[torch.nn.Module, TextCache] = weakref.WeakKeyDictionary()
_caches_lock = threading.Lock()


def attach(encoder: torch.nn.Module, size: int) -> TextCache:
    """The cache of ``encoder``, created or resized to ``size`` entries (0 turns it off)."""
    with _caches_lock:
        cache = _caches.get(encoder)
        if cache is None:
            cache = _caches[encoder] = TextCache(size)
        elif cache.size != size:
            cache.resize(size)
    return cache


def cache_for(encoder: torch.nn.Module) -> TextCache:
    """The cache of ``encoder``; one of :data:`DEFAULT_SIZE` entries when none was attached."""
    with _caches_lock:
        cache = _caches.get(encoder)
        if cache is None:
            cache = _caches[encoder] = TextCache(DEFAULT_SIZE)
    return cache

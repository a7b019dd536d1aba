"""The first import of the model libraries, made cheaper: no cyclic garbage collection while they load.

torch, transformers, diffusers and peft create about half a million Python objects as they import,
nearly all of them alive until the process ends. Python's cyclic collector runs every 700 new
objects and rescans the younger generations each time, so on this project's 2-core development
machine about a quarter of a 4.6 s import of the Wan pipeline's libraries was collections that
freed nothing. :func:`heavy_imports` switches the collector off for the duration of such an
import, then runs one full collection so the survivors reach the oldest generation in one pass
(otherwise three younger-generation passes over all of them follow at once). Nothing is frozen
(``gc.freeze``): frozen objects are never collected again, and a model loaded by then (a pipeline's
hooks hold reference cycles) would leak when it is unloaded; only a process that is about to end
freezes everything (:func:`settle_before_exit`, the command line's last step).

A leaf module: it imports nothing of the project and nothing heavy.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: New modules an import must bring for the full collection afterwards to be worth its time (a
#: library already imported brings none, and the block then costs two function calls).
COLLECT_AFTER_MODULES = 200

_lock = threading.Lock()
_depth = 0
_was_enabled = True


@contextmanager
def heavy_imports() -> Iterator[None]:
    """Around an import of heavy libraries: the cyclic collector off, then one collection if the
    import brought many modules. Nests, and is safe from several threads (the outermost block
    restores the collector as it found it)."""
    global _depth, _was_enabled
    with _lock:
        if _depth == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _depth += 1
    modules = len(sys.modules)
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            outermost = _depth == 0
            if outermost and _was_enabled:
                gc.enable()
        if outermost and len(sys.modules) - modules >= COLLECT_AFTER_MODULES:
            gc.collect()


def settle_before_exit() -> None:
    """For a process about to end: every object moved out of the collector's sight, so that the
    interpreter's collections at exit do not rescan what the model libraries made (about 1 s of a
    command's exit here). Nothing of the process outlives it, so nothing can leak."""
    gc.freeze()

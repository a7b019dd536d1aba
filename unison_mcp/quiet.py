"""Known third-party noise kept off stderr, so a command shows its own progress and little else.

Without ``-v`` the command line calls :func:`quiet_libraries` once, at its start:

- each message of :data:`KNOWN_NOISE` (a library's warning about itself that the user can do
  nothing about) is dropped by a filter on the logger that emits it, and each of
  :data:`KNOWN_WARNINGS` (Python warnings about what this program does on purpose) by a
  warnings filter; any other warning of those libraries still shows;
- transformers' and diffusers' own loading bars ("Loading weights", "Loading pipeline
  components", "Writing model shards") are turned off: the engine names each load as a stage of
  its progress, with its size. The hub's download bars stay.

Nothing here imports those libraries (``--help`` stays instant): the filters sit on loggers
before they are used, and the bars are turned off right after the library's logging module is
first imported (:class:`_AfterImport`). With ``-v`` nothing is hidden.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import re
import sys
import warnings
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

#: ``(logger, words of the message)``: warnings about the libraries themselves, seen on every run.
KNOWN_NOISE: tuple[tuple[str, str], ...] = (
    # torchao registers enums that torch now supports natively (twice per process).
    ("torch.utils._pytree", "is an Enum subclass and is now natively supported"),
    # diffusers probes torchao's tensor types, which torchao's newer releases moved.
    ("diffusers.quantizers.torchao.torchao_quantizer", "Unable to import `torchao` Tensor objects"),
    # diffusers says so whenever an attention backend is chosen (engine/perf.py chooses one).
    ("diffusers.models.modeling_utils", "Attention backends are an experimental feature"),
)


#: ``(category, module, start of the message)`` of Python warnings (``warnings.filterwarnings``).
KNOWN_WARNINGS: tuple[tuple[type[Warning], str, str], ...] = (
    # peft, when the turbo LoRA and a user's LoRA are loaded side by side (engine/loras.py does so
    # on purpose, and switches them per call).
    (UserWarning, r"peft\.", "Already found a `peft_config` attribute in the model"),
)


class _DropKnown(logging.Filter):
    """Drops the records of one logger whose message holds one of ``known``."""

    def __init__(self, known: Sequence[str]):
        super().__init__()
        self.known = tuple(known)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(words in message for words in self.known)


def _no_bar(factory: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """transformers' tqdm hook: its bars are made, but never drawn."""
    return factory(*args, **{**kwargs, "disable": True})


def _transformers_bars_off(module: ModuleType) -> None:
    set_hook = getattr(module, "set_tqdm_hook", None)  # transformers 5; older releases keep their bars
    if set_hook is not None:
        set_hook(_no_bar)


def _diffusers_bars_off(module: ModuleType) -> None:
    module.disable_progress_bar()  # diffusers' own bars only; the hub's download bars are the hub's


#: The logging modules whose bars go, and how.
BARS_OFF: dict[str, Callable[[ModuleType], None]] = {
    "transformers.utils.logging": _transformers_bars_off,
    "diffusers.utils.logging": _diffusers_bars_off,
}


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs ``then(module)`` right after module ``name`` is first imported, then leaves ``sys.meta_path``.

    It finds nothing itself: it asks the other finders for the module's spec and wraps the
    loader's ``exec_module``, so the module loads exactly as it would have.
    """

    def __init__(self, name: str, then: Callable[[ModuleType], None]):
        self.name = name
        self.then = then

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> ModuleSpec | None:
        if fullname != self.name:
            return None
        sys.meta_path.remove(self)  # once, and the lookup below must not come back here
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader, then = spec.loader, self.then

        def exec_module(module: ModuleType, run: Callable[[ModuleType], None] = loader.exec_module) -> None:
            run(module)
            then(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader
        return spec


def after_import(name: str, then: Callable[[ModuleType], None]) -> None:
    """``then(module)`` now if ``name`` is imported, else right after its first import."""
    module = sys.modules.get(name)
    if module is not None:
        then(module)
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, then))


def quiet_libraries() -> None:
    """Hide :data:`KNOWN_NOISE` and the libraries' loading bars for the rest of this process."""
    by_logger: dict[str, list[str]] = {}
    for name, words in KNOWN_NOISE:
        by_logger.setdefault(name, []).append(words)
    for name, known in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropKnown) for f in logger.filters):
            logger.addFilter(_DropKnown(known))
    for category, module, start in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=re.escape(start), category=category, module=module)
    for name, then in BARS_OFF.items():
        after_import(name, then)


__all__ = ["BARS_OFF", "KNOWN_NOISE", "KNOWN_WARNINGS", "after_import", "quiet_libraries"]

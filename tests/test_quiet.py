"""Known third-party noise kept off stderr: the filters drop only what they name, the bars go
once their library is imported, and nothing is hidden before quiet_libraries() is called.

The command line's real output is counted in tests/test_readme.py (every README command, as a
new user runs it, prints at most a couple of lines that are not this project's, and `-v` shows the
libraries' own output again).
"""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path
from types import ModuleType

import pytest

from unison_mcp import quiet


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.parametrize(("name", "words"), quiet.KNOWN_NOISE)
def test_a_known_message_is_dropped_and_any_other_of_the_same_logger_still_shows(name, words):
    logger = logging.getLogger(name)
    records = _Records()
    logger.addHandler(records)
    try:
        quiet.quiet_libraries()
        quiet.quiet_libraries()  # once is enough; twice changes nothing
        logger.warning("%s: %s", "before", words)
        logger.warning("a warning nobody has seen before")
    finally:
        logger.removeHandler(records)
    assert records.messages == ["a warning nobody has seen before"]
    assert sum(isinstance(f, quiet._DropKnown) for f in logger.filters) == 1


@pytest.mark.parametrize(("category", "module", "start"), quiet.KNOWN_WARNINGS)
def test_a_known_python_warning_is_ignored_and_others_from_the_same_module_are_not(category, module, start):
    where = module.replace("\\", "").rstrip(".") + ".somewhere"  # a module the filter names
    with warnings.catch_warnings(record=True) as caught:  # the filters are restored afterwards
        warnings.simplefilter("always")
        quiet.quiet_libraries()
        warnings.warn_explicit(f"{start}: details", category, "lib.py", 1, module=where, registry={})
        warnings.warn_explicit("something new", category, "lib.py", 2, module=where, registry={})
    assert [str(w.message) for w in caught] == ["something new"]


def test_after_import_runs_once_right_after_the_module_is_first_imported(tmp_path: Path, monkeypatch):
    package = tmp_path / "noisylib"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "logging.py").write_text("bars = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[ModuleType] = []

    def bars_off(module: ModuleType) -> None:
        seen.append(module)
        module.bars = False

    quiet.after_import("noisylib.logging", bars_off)
    try:
        assert seen == []  # nothing imported yet
        import noisylib.logging  # type: ignore[import-not-found]

        assert seen == [noisylib.logging] and noisylib.logging.bars is False
        assert not any(
            isinstance(f, quiet._AfterImport) and f.name == "noisylib.logging" for f in sys.meta_path
        )
        quiet.after_import("noisylib.logging", bars_off)  # already imported: at once
        assert len(seen) == 2
    finally:
        sys.modules.pop("noisylib.logging", None)
        sys.modules.pop("noisylib", None)


def test_transformers_bars_are_made_but_never_drawn_once_quiet():
    from transformers.utils import logging as hf_logging

    quiet.quiet_libraries()  # transformers is imported: its bars go at once
    try:
        bar = hf_logging.tqdm(range(3), desc="Loading weights")
        assert bar.disable
    finally:
        hf_logging.set_tqdm_hook(None)

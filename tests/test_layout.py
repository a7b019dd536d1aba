"""Sizes a reader can hold: no function over 80 lines and no module over 700 in engine/ and
unison_mcp/ (issue 19, item 6), read with ``ast``.

A function's lines run from its ``def`` to its last line (docstring and nested functions
included); a module's are all its lines. A module that is mostly a data table may be longer when
:data:`DATA_TABLES` says so, with why; none needs to today (the rules planner's words, the longest
table, are data files now: engine/lexicon/*.toml).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "unison_mcp")

MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 700

#: Modules allowed over MAX_MODULE_LINES because they are mostly a data table: path → why.
DATA_TABLES: dict[str, str] = {}

#: Files not held to the limits yet: being split in branch i19-engine (issue 19 item 3: the engine
#: as Models + Job, writing in outputs.py, Generator.run shortened). Temporary: an entry goes once
#: that lands (test_the_files_being_split_are_still_over_a_limit says when).
BEING_SPLIT: tuple[str, ...] = ()


def too_long(path: Path, *, module_limit: int | None = MAX_MODULE_LINES) -> list[str]:
    """What in ``path`` is over the limits: the module (unless ``module_limit`` is ``None``), and
    each function (methods and nested functions too), as ``'<where>: N lines'``."""
    text = path.read_text(encoding="utf-8")
    found = []
    lines = len(text.splitlines())
    if module_limit is not None and lines > module_limit:
        found.append(f"{path.name}: {lines} lines")
    for node in ast.walk(ast.parse(text, filename=str(path))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    return found


def python_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Each module's path relative to ``root`` (``engine/media.py``) and its file."""
    return {
        path.relative_to(root).as_posix(): path
        for package in packages
        for path in sorted((root / package).rglob("*.py"))
    }


def test_a_long_function_and_a_long_module_are_found(tmp_path: Path):
    short = "def f():\n" + "    x = 1\n" * (MAX_FUNCTION_LINES - 1)
    (tmp_path / "ok.py").write_text(short)
    assert too_long(tmp_path / "ok.py") == []
    nested = "class C:\n    def g(self):\n" + "        x = 1\n" * MAX_FUNCTION_LINES
    (tmp_path / "long.py").write_text(nested + "\n" * MAX_MODULE_LINES)
    assert too_long(tmp_path / "long.py") == [
        f"long.py: {MAX_MODULE_LINES + MAX_FUNCTION_LINES + 2} lines",
        f"long.py:2 g: {MAX_FUNCTION_LINES + 1} lines",
    ]


def test_no_function_is_over_80_lines_and_no_module_over_700():
    over = [
        found
        for name, path in python_files().items()
        if name not in BEING_SPLIT
        for found in too_long(path, module_limit=None if name in DATA_TABLES else MAX_MODULE_LINES)
    ]
    assert over == [], "\n".join(over)


def test_the_files_being_split_are_still_over_a_limit():
    files = python_files()
    kept = [name for name in BEING_SPLIT if name in files and not too_long(files[name])]
    assert kept == [], f"within the limits now: drop them from BEING_SPLIT: {kept}"


def test_every_data_table_exception_is_a_module_still_over_the_limit():
    files = python_files()
    for name in DATA_TABLES:
        assert name in files and len(files[name].read_text().splitlines()) > MAX_MODULE_LINES, name

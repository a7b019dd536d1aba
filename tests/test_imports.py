"""The project's own modules import each other without circles, counting every import: those at
the top, those inside functions and the type-only ones under ``if TYPE_CHECKING:`` (habit 13: when
two modules need each other, the shared part moves to a third). And an import inside a function is
only there to keep something slow or optional to import lazy: a heavy third-party library
(:data:`HEAVY`), or one of the few project modules in :data:`LAZY_MODULES`, each with its reason.

:func:`import_graph` reads engine/ and unison_mcp/ with ``ast`` (nothing is imported, so nothing
lazy is missed) and :func:`import_cycles` gives each circle as the group of modules that all reach
each other (a strongly connected component); :func:`outside_imports` gives the imports of other
packages and :func:`imported_at_top` what importing a module runs. All take any root and packages,
so other checks can reuse them.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "unison_mcp")


@dataclass(frozen=True)
class Import:
    """One import of a project module by another: where it is written and in which block."""

    target: str
    line: int
    block: str  # "module" (runs on import), "function" (runs when called), "type-checking" (never runs)


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Each module's dotted name (a package is its ``__init__``) and its file."""
    files: dict[str, Path] = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


class _Imports(ast.NodeVisitor):
    """The imports of one module resolved to project modules, with the block each sits in."""

    def __init__(self, name: str, is_package: bool, modules: Mapping[str, Path]):
        self.package = name if is_package else name.rpartition(".")[0]
        self.modules = modules
        self.found: list[Import] = []
        #: Imports of other packages (``numpy``, ``torch.nn``): their top-level name.
        self.outside: list[Import] = []
        self.blocks = ["module"]

    def _resolve(self, dotted: str) -> str | None:
        """The project module a dotted name imports: itself, else its longest module prefix (an
        attribute of a module: ``engine.errors.shown``)."""
        parts = dotted.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in self.modules:
                return candidate
        return None

    def _add(self, dotted: str, line: int, *, relative: bool = False) -> None:
        target = self._resolve(dotted)
        if target is not None:
            self.found.append(Import(target, line, self.blocks[-1]))
        elif not relative and dotted.split(".")[0] not in {m.split(".")[0] for m in self.modules}:
            self.outside.append(Import(dotted.split(".")[0], line, self.blocks[-1]))

    def _inside(self, block: str, node: ast.AST) -> None:
        # The innermost block decides, except that a type-only import stays type-only anywhere.
        self.blocks.append("type-checking" if self.blocks[-1] == "type-checking" else block)
        self.generic_visit(node)
        self.blocks.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._inside("function", node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._inside("function", node)

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name != "TYPE_CHECKING":
            self.generic_visit(node)
            return
        self.blocks.append("type-checking")
        for child in node.body:
            self.visit(child)
        self.blocks.pop()
        for child in node.orelse:  # the ``else:`` of TYPE_CHECKING runs
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base_parts = self.package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join([*base_parts, node.module] if node.module else base_parts)
        else:
            base = node.module or ""
        if not node.level and self._resolve(base) is None:  # another package: one import
            self._add(base, node.lineno)
            return
        for alias in node.names:
            # ``from . import media`` names a module; ``from .errors import shown`` an attribute.
            name = f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.modules else base
            self._add(name, node.lineno, relative=bool(node.level))


def _visited(root: Path, packages: Iterable[str]) -> dict[str, _Imports]:
    modules = module_files(root, packages)
    visited: dict[str, _Imports] = {}
    for name, path in modules.items():
        visitor = _Imports(name, path.name == "__init__.py", modules)
        visitor.visit(ast.parse(path.read_text(encoding="utf-8"), filename=str(path)))
        visited[name] = visitor
    return visited


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, list[Import]]:
    """Each module's imports of the project's own modules (every block; self-imports left out).

    An import of ``a.b.c`` is an edge to ``a.b.c`` only: the parent packages Python also runs
    first are left out, or every package's ``__init__`` would sit in every circle.
    """
    # One edge per import statement and target (``from .x import a, b`` is one).
    return {
        name: [i for i in dict.fromkeys(v.found) if i.target != name]
        for name, v in _visited(root, packages).items()
    }


def outside_imports(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, list[Import]]:
    """Each module's imports of other packages (the standard library's too), by top-level name."""
    return {name: list(dict.fromkeys(v.outside)) for name, v in _visited(root, packages).items()}


def imported_at_top(
    module: str, graph: Mapping[str, list[Import]], outside: Mapping[str, list[Import]]
) -> set[str]:
    """The other packages importing ``module`` imports: its own imports at the top (not inside a
    function, not type-only) and, the same way, those of every project module it imports there."""
    seen, todo, found = {module}, [module], set()
    while todo:
        name = todo.pop()
        found |= {i.target for i in outside.get(name, []) if i.block == "module"}
        for edge in graph.get(name, []):
            if edge.block == "module" and edge.target not in seen:
                seen.add(edge.target)
                todo.append(edge.target)
    return found


def import_cycles(graph: Mapping[str, list[Import]]) -> list[list[str]]:
    """The circles: each group of two or more modules that all import each other, directly or
    through the others (Tarjan's strongly connected components), sorted."""
    order: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        order[node] = low[node] = len(order)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, []):
            if edge.target not in order:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], order[edge.target])
        if low[node] == order[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in order:
            visit(node)
    return sorted(groups)


def described(cycles: list[list[str]]) -> str:
    return "\n".join(f"{len(c)} modules: {', '.join(c)}" for c in cycles) or "none"


# ---------------------------------------------------------------------------------------------
# The check itself


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_a_circle_through_a_function_and_a_type_only_import_is_found(tmp_path: Path):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "def f():\n    from . import b\n",
            "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .c import X\n",
            "pkg/c.py": "import pkg.a\nX = 1\n",
            "pkg/d.py": "from .a import f\nfrom pkg.c import X\n",  # imports the circle, not in it
            "pkg/sub/__init__.py": "from .. import d\n",
        },
    )
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.a"] == [Import("pkg.b", 2, "function")]
    assert graph["pkg.b"] == [Import("pkg.c", 3, "type-checking")]
    assert graph["pkg.c"] == [Import("pkg.a", 1, "module")]
    assert [i.target for i in graph["pkg.d"]] == ["pkg.a", "pkg.c"]
    assert graph["pkg.sub"] == [Import("pkg.d", 1, "module")]
    assert import_cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_what_a_module_imports_at_its_top_is_followed_through_the_project_modules_it_imports(
    tmp_path: Path,
):
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/heavy.py": "import torch.nn\nfrom numpy import array\n",
            "pkg/light.py": "from . import heavy\ndef f():\n    import av\n",
            "pkg/lazy.py": "import json\ndef f():\n    from . import heavy\n    import PIL.Image\n",
            "pkg/typed.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import scipy\n",
        },
    )
    graph, outside = import_graph(tmp_path, ["pkg"]), outside_imports(tmp_path, ["pkg"])
    assert outside["pkg.heavy"] == [Import("torch", 1, "module"), Import("numpy", 2, "module")]
    assert outside["pkg.lazy"] == [Import("json", 1, "module"), Import("PIL", 4, "function")]
    assert outside["pkg.typed"] == [Import("typing", 1, "module"), Import("scipy", 3, "type-checking")]
    assert imported_at_top("pkg.light", graph, outside) == {"torch", "numpy"}  # not av: in a function
    assert imported_at_top("pkg.lazy", graph, outside) == {"json"}  # heavy only inside a function
    assert imported_at_top("pkg.typed", graph, outside) == {"typing"}


def test_a_graph_without_circles_has_none(tmp_path: Path):
    _write(tmp_path, {"pkg/__init__.py": "", "pkg/a.py": "from . import b\n", "pkg/b.py": "import os\n"})
    assert import_cycles(import_graph(tmp_path, ["pkg"])) == []


# ---------------------------------------------------------------------------------------------
# The project

#: Opened inputs, the path policy and the decoders: the policy and the decoders share only
#: engine.source (issue 19), and none of the three is in a circle.
INPUT_MODULES = ("engine.source", "engine.inputs", "engine.media")


def test_the_input_policy_the_source_and_the_decoders_are_in_no_import_cycle():
    graph = import_graph()
    targets = {name: {i.target for i in graph[name]} for name in INPUT_MODULES}
    assert "engine.source" in targets["engine.inputs"] and "engine.source" in targets["engine.media"]
    assert "engine.media" not in targets["engine.inputs"] and "engine.inputs" not in targets["engine.media"]
    assert not targets["engine.source"] & {"engine.inputs", "engine.media"}
    touching = [c for c in import_cycles(graph) if set(c) & set(INPUT_MODULES)]
    assert touching == [], described(touching)


def test_no_module_of_engine_or_unison_mcp_is_in_an_import_cycle():
    cycles = import_cycles(import_graph())
    assert cycles == [], described(cycles)


# ---------------------------------------------------------------------------------------------
# Imports inside functions: only to keep something slow or optional to import lazy.

#: Third-party libraries that may be imported inside a function, each slow to import or optional.
HEAVY = frozenset(
    {
        # The model libraries (the `fp8` and `serve` extras' too): seconds to import, and not
        # needed to plan with the rules, to answer `--help` or to check a request.
        *("torch", "torchvision", "torchao", "transformers", "tokenizers", "diffusers", "peft"),
        *("safetensors", "huggingface_hub", "kornia", "scipy"),
        # Media: PyAV, Pillow and numpy stay out of `import engine` and `unison-mcp --help`.
        *("av", "PIL", "numpy"),
        # Ray (the `serve` extra, only for --pool ray), and the MCP SDK with its web stack (~0.4 s,
        # only to serve).
        *("ray", "mcp", "starlette", "uvicorn"),
        # Constrained decoding of the model planners (a compiled library, only with a planner model).
        "llguidance",
    }
)


@dataclass(frozen=True)
class Lazy:
    """Why a project module is imported inside functions: ``heavy``, a library it imports at its
    top (checked), or ``None`` with the rule another test holds (``why`` names it)."""

    heavy: str | None
    why: str


#: The project modules that may be imported inside a function, and why. Any other project module
#: is imported at the top of the module that uses it.
LAZY_MODULES: dict[str, Lazy] = {
    "engine.engine": Lazy(
        "numpy",
        "the engine and every stage it runs: not imported by `import engine` "
        "(its package's __getattr__) nor by `unison-mcp --help` (tests/test_cli.py)",
    ),
    "engine.generator": Lazy("torch", "the Wan pipeline: loaded on the first generation"),
    "engine.hooks": Lazy(
        "diffusers",
        "diffusers' hooks, whose package imports peft and transformers' modelling code (over a "
        "second): only batched CFG and the step caches install one (tests/test_startup.py: "
        "`import engine.perf` imports neither diffusers nor peft)",
    ),
    "engine.projector": Lazy("torch", "a torch module: loaded with the models, built by engine.tiny"),
    "engine.tiny": Lazy(
        None,
        "the tiny-model factory: the runtime imports it only to build a missing tiny "
        "model (tests/test_config.py: no runtime module imports it)",
    ),
    "engine.tiny.qwen": Lazy("torch", "a builder: imported when a tiny model is missing"),
    "engine.tiny.lora": Lazy("torch", "a builder: imported when a tiny model is missing"),
    "unison_mcp.server": Lazy("mcp", "the MCP server: only `unison-mcp serve` imports it"),
    "unison_mcp.http": Lazy("starlette", "the HTTP app: only `unison-mcp gallery` imports it from the CLI"),
}

#: Modules whose imports inside functions are not checked yet: being split in branch i19-engine
#: (issue 19 item 3: the engine as Models + Job, writing in outputs.py, Generator.run shortened).
#: Temporary: the entries go once that lands (test_the_modules_being_split_still_break_an_import_rule
#: says when). What they need: their project imports at the top, but for LAZY_MODULES.
BEING_SPLIT: tuple[str, ...] = ()


def _in_functions(imports: Mapping[str, list[Import]]) -> list[tuple[str, Import]]:
    return [
        (name, i)
        for name, found in imports.items()
        if name not in BEING_SPLIT
        for i in found
        if i.block == "function"
    ]


def test_a_project_module_is_imported_inside_a_function_only_when_it_is_listed_as_lazy():
    found = [f"{name}:{i.line} imports {i.target}" for name, i in _in_functions(import_graph())]
    unlisted = [f for f in found if f.rsplit(" ", 1)[1] not in LAZY_MODULES]
    assert unlisted == [], "import these at the top (or list the module in LAZY_MODULES, with why):\n" + (
        "\n".join(unlisted)
    )


def test_every_module_listed_as_lazy_is_imported_lazily_and_imports_what_it_says_at_its_top():
    graph, outside = import_graph(), outside_imports()
    lazily = {i.target for found in graph.values() for i in found if i.block == "function"}
    assert set(LAZY_MODULES) <= lazily, f"no longer imported lazily: {sorted(set(LAZY_MODULES) - lazily)}"
    for name, lazy in LAZY_MODULES.items():
        if lazy.heavy is not None:
            assert lazy.heavy in imported_at_top(name, graph, outside), f"{name} does not import {lazy.heavy}"


def test_a_library_is_imported_inside_a_function_only_when_it_is_heavy():
    found = [f"{name}:{i.line} imports {i.target}" for name, i in _in_functions(outside_imports())]
    light = [f for f in found if f.rsplit(" ", 1)[1] not in HEAVY]
    assert light == [], "import these at the top:\n" + "\n".join(light)


def test_the_modules_being_split_still_break_an_import_rule():
    # When one stops needing the exemption, it goes (so it cannot outlive the split).
    graph, outside, files = import_graph(), outside_imports(), module_files()
    for name in BEING_SPLIT:
        if name not in files:
            continue
        lazy = [i for i in graph[name] if i.block == "function" and i.target not in LAZY_MODULES]
        light = [i for i in outside[name] if i.block == "function" and i.target not in HEAVY]
        assert lazy or light, f"{name} keeps the import rules: drop it from BEING_SPLIT"

"""The README works when followed literally, by a new user on a clean machine.

Both READMEs (the repository's and ``examples/README.md``) are read. Every line of their ``bash``
blocks is either run or skipped for a reason this file states (:data:`NOT_RUN`), so a new
command cannot go untested by accident.

A command runs as a new user runs it: in ``bash``, from the repository's root, the line as
written (``unison-mcp`` is this checkout's ``python -m unison_mcp``, ``python`` this
interpreter), with ``--preset tiny`` added where the README says so, and an empty home directory:
no tiny models built, no hub cache, no torch cache (``HOME``, ``XDG_CACHE_HOME`` and ``HF_HOME``
all in it, no ``UNISON_*`` variable) and no hub (``HF_ENDPOINT`` is a closed loopback port).

The commands share one home, in README order, so the tiny models are built once: the first
command (the README's first tiny one) runs on the truly empty home, in the module's fixture,
before any other; the tests that follow read its result.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
EXAMPLES_README = (REPO / "examples" / "README.md").read_text(encoding="utf-8")
CLOSED_HUB = "http://127.0.0.1:9"  # the discard port: connects are refused at once

#: The README lines that are not run here, by how they start, and why.
NOT_RUN: dict[str, str] = {
    "python3 -m venv": "makes the environment these tests already run in",
    "pip install": "installs packages (CI runs the README's install and test commands: .ci/run)",
    'python -c "import torch; print(torch.cuda.is_available())"': "the CUDA machine's check",
    "unison-mcp serve": "waits for a client (tests/test_service.py runs `serve` for real)",
    "export UNISON_AUTH_TOKEN=": "sets a variable for the `serve` line after it",
    "npx @modelcontextprotocol/inspector": "needs Node.js and the network",
    "claude mcp add": "needs Claude Code (its config's arguments are `serve`'s, run above)",
}

#: Lines printed to stderr that are this project's own: progress ("unison-mcp: loading…"), a
#: command's error ("unison-mcp run: …"), this project's log records ("12:00:00 WARNING
#: engine.x: …", whose further lines are indented by two spaces, like the server's ready
#: message) and examples/chain.py's progress ("  generating 1/2   ", redrawn with a carriage
#: return). Anything else is a library's, and a command may print at most MAX_FOREIGN_LINES.
OURS = re.compile(r"^(unison-mcp[ :]|\d\d:\d\d:\d\d [A-Z]+ (engine|unison_mcp)[\w.]*: |  \S.*   $)")
MAX_FOREIGN_LINES = 2


def _bash_lines(text: str) -> list[str]:
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")  # a command continued over lines is one command
        lines += [line.strip() for line in joined.splitlines() if line.strip()]
    return lines


ALL_LINES = _bash_lines(README) + _bash_lines(EXAMPLES_README)


def _shell(line: str) -> str | None:
    """The shell command that runs ``line`` as the README means it, or ``None`` (not run here)."""
    python = shlex.quote(sys.executable)
    if line.startswith("unison-mcp "):
        command = line.split(maxsplit=2)[1]
        if command in ("serve", "download"):
            return None  # serve: NOT_RUN; download: test_download_as_written_…
        rest = line[len("unison-mcp ") :]
        if "--preset" not in shlex.split(line, comments=True):
            # "Each of these runs as written with --preset tiny added": right after the command
            # name (a global flag), so that a trailing "# comment" stays a comment.
            rest = rest.replace(command, f"{command} --preset tiny", 1)
        return f"{python} -m unison_mcp {rest}"
    if line.startswith("python examples/"):
        return f"{python} {line[len('python ') :]}"
    return None


COMMANDS = [line for line in ALL_LINES if _shell(line) is not None]
FIRST = COMMANDS[0]


@dataclass
class Ran:
    code: int
    out: str
    err: str
    seconds: float

    def foreign(self) -> list[str]:
        """The stderr lines that are not this project's (each redraw of a bar counts)."""
        lines, ours = [], False
        for line in self.err.splitlines():
            if not line.strip():
                continue
            if OURS.match(line) or (ours and line.startswith("  ")):  # a record of ours, or its next line
                ours = True
            else:
                ours = False
                lines.append(line)
        return lines


class NewUser:
    """A home directory with nothing in it yet, and the environment of someone who just cloned."""

    def __init__(self, home: Path):
        self.home = home
        cache = home / ".cache"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("UNISON_", "HF_", "XDG_", "TORCH"))}
        env.update(
            HOME=str(home),
            XDG_CACHE_HOME=str(cache),
            HF_HOME=str(cache / "huggingface"),
            HF_ENDPOINT=CLOSED_HUB,
            PYTHONPATH=str(REPO),  # this checkout, as `pip install -e .` makes it
        )
        self.env = env
        self.tiny = cache / "unison-mcp" / "tiny"

    def run(self, command: str, timeout: float = 300) -> Ran:
        t0 = time.perf_counter()
        done = subprocess.run(
            ["bash", "-c", command], cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        return Ran(done.returncode, done.stdout, done.stderr, time.perf_counter() - t0)


@pytest.fixture(scope="module")
def new_user(tmp_path_factory: pytest.TempPathFactory) -> tuple[NewUser, Ran]:
    """The new user, after the README's first command ran on the truly empty home."""
    home = tmp_path_factory.mktemp("home")
    assert not any(home.iterdir())
    user = NewUser(home)
    first = user.run(_shell(FIRST) or "")
    return user, first


# ---------------------------------------------------------------------------------------------
# What the README says


def test_every_readme_command_is_run_here_or_skipped_for_a_stated_reason():
    skipped = [line for line in ALL_LINES if _shell(line) is None]
    unexplained = [
        line
        for line in skipped
        if not any(line.startswith(start) for start in NOT_RUN) and not line.startswith("unison-mcp download")
    ]
    assert unexplained == []
    assert FIRST == 'unison-mcp run --preset tiny "Create a picture of a red fox in the snow"'
    assert any(line.startswith("unison-mcp download") for line in ALL_LINES)


def test_the_readmes_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = 'pip install -e ".[dev]" && python -m pytest -q'
    # CI quiets pip (-q); the command is otherwise the same, character for character.
    ci_lines = [line.replace("pip install -q ", "pip install ") for line in ci.splitlines()]
    assert command in _bash_lines(README) and command in ci_lines


def test_the_readme_installs_pytorch_before_the_two_commands_from_the_cpu_index_or_for_cuda():
    install, two = README.index("## Install"), README.index("## The two commands")
    assert install < two
    section = README[install:two]
    lines = _bash_lines(section)
    cpu = "pip install torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cpu"
    assert cpu in lines  # a laptop: the small CPU-only wheels
    assert any("--index-url https://download.pytorch.org/whl/cu" in line for line in lines)  # CUDA
    # CI's own command (PyPI, the index it reaches) is named, and pins the same versions.
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    ci_torch = next(line for line in ci.splitlines() if line.startswith("pip install -q torch"))
    ci_command = ci_torch.replace("pip install -q ", "pip install ")
    assert f"`{ci_command}`" in section
    assert ci_command.split()[2:] == cpu.split()[2:4]


def test_every_example_file_the_readme_names_exists_and_is_small():
    named = set(re.findall(r"examples/media/[\w.-]+", README + EXAMPLES_README))
    assert named, "the README names no example file"
    for name in named:
        assert (REPO / name).is_file(), name
    assert sum(p.stat().st_size for p in (REPO / "examples" / "media").iterdir()) < 300_000


# ---------------------------------------------------------------------------------------------
# Run as a new user runs it


def test_the_readmes_first_command_on_an_empty_home_builds_the_tiny_models_with_progress(new_user):
    user, first = new_user
    assert first.code == 0, first.err[-3000:]
    assert "unison-mcp: building the tiny models (first use)…" in first.err
    assert "building the tiny models (first use): step 10/10 (100%)" in first.err
    assert first.err.index("building the tiny models") < first.err.index("loading the generator")
    assert (user.tiny / "qwen-2" / "config.json").is_file() and (user.tiny / "wan").is_dir()
    image = Path(first.out.strip().splitlines()[-1])
    assert image.parent == user.home / "unison-outputs" and image.suffix == ".png" and image.is_file()
    assert len(first.foreign()) <= MAX_FOREIGN_LINES, first.err


@pytest.mark.parametrize("line", COMMANDS, ids=lambda line: line[:60])
def test_the_readmes_command_runs_as_a_new_user_runs_it(line, new_user):
    user, first = new_user
    ran = first if line == FIRST else user.run(_shell(line) or "")
    assert ran.code == 0, f"{line}\nexited {ran.code}:\n{ran.err[-3000:]}"
    assert ran.out.strip(), "nothing printed"
    # The libraries' noise stays off stderr: this program's own lines, and at most a couple more.
    assert len(ran.foreign()) <= MAX_FOREIGN_LINES, "\n".join(ran.foreign())


def test_with_v_the_libraries_own_output_is_shown_again(new_user):
    user, _ = new_user
    python = shlex.quote(sys.executable)
    ran = user.run(
        f'{python} -m unison_mcp -v understand --preset tiny "What is in this picture?" '
        "--media examples/media/cat.png"
    )
    assert ran.code == 0, ran.err[-3000:]
    assert "Loading weights" in ran.err  # transformers' own bar, hidden without -v


def test_download_as_written_fails_within_seconds_when_the_hub_cannot_be_reached(new_user):
    user, _ = new_user
    line = next(line for line in ALL_LINES if line.startswith("unison-mcp download"))
    ran = user.run(f"{shlex.quote(sys.executable)} -m unison_mcp {line[len('unison-mcp ') :]}")
    assert ran.code == 2
    assert ran.seconds < 15, ran.seconds  # not the hub client's ~26 s of retries
    message = ran.err.strip().splitlines()[-1]
    assert message.startswith("unison-mcp download: hub_unreachable: planner: cannot download ")
    assert f"the hub ({CLOSED_HUB}) could not be reached" in message
    assert "Retrying" not in ran.err


# ---------------------------------------------------------------------------------------------
# The client configs


def _configs() -> list[Path]:
    return sorted((REPO / "examples").glob("*.json"))


@pytest.mark.parametrize("path", _configs(), ids=lambda p: p.name)
def test_every_client_config_names_the_environments_unison_mcp_by_an_absolute_placeholder_path(path):
    import json
    from pathlib import PurePosixPath, PureWindowsPath

    server = json.loads(path.read_text(encoding="utf-8"))["mcpServers"]["unison"]
    windows = "windows" in path.name
    pure = PureWindowsPath if windows else PurePosixPath
    command = pure(server["command"])
    # A client starts the server from elsewhere, without the shell's PATH: a bare name fails.
    assert command.is_absolute()
    # One placeholder form, the one examples/README.md says how to fill in.
    home = {"macos": "/Users/you"}.get(path.stem.split(".")[-1], "/home/you")
    expected = (
        PureWindowsPath(r"C:\Users\you\unison-mcp\.venv\Scripts\unison-mcp.exe")
        if windows
        else PurePosixPath(f"{home}/unison-mcp/.venv/bin/unison-mcp")
    )
    assert command == expected
    assert str(expected.parents[2]) in EXAMPLES_README.replace("\\\\", "\\")
    assert "UNISON_DEVICE" not in server.get("env", {})


@pytest.mark.parametrize("system", ["macos", "linux", "windows"])
def test_the_desktop_config_for_each_system_gives_absolute_folders(system):
    import json
    from pathlib import PurePosixPath, PureWindowsPath

    config = json.loads(
        (REPO / "examples" / f"claude_desktop_config.{system}.json").read_text(encoding="utf-8")
    )
    args = config["mcpServers"]["unison"]["args"]
    pure = PureWindowsPath if system == "windows" else PurePosixPath
    paths = [args[i + 1] for i, a in enumerate(args) if a in ("--output-dir", "--allow-root")]
    assert paths and all(pure(p).is_absolute() for p in paths)


# ---------------------------------------------------------------------------------------------
# The client set-ups: configs that parse, Python that calls what the frameworks have


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_every_json_config_in_the_readme_parses_and_starts_serve_by_an_absolute_path():
    import json

    configs = [json.loads(block) for block in _blocks("json")]
    assert len(configs) >= 2  # VS Code's and Cursor's
    for config in configs:
        (server,) = (config.get("servers") or config["mcpServers"]).values()
        assert server["command"].startswith("/home/you/unison-mcp/") and server["args"][0] == "serve"


def _imported(tree: ast.Module) -> dict[str, object]:
    """The names a snippet imports, as the installed packages define them; a package that is
    absent (or, like langchain-mcp-adapters, cannot be imported beside mcp 2) is left out."""
    import importlib

    found: dict[str, object] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            try:
                module = importlib.import_module(node.module)
            except ImportError:
                continue
            for alias in node.names:
                if not hasattr(module, alias.name):  # a submodule: `from google import genai`
                    importlib.import_module(f"{node.module}.{alias.name}")
                found[alias.asname or alias.name] = getattr(module, alias.name)
    return found


@pytest.mark.parametrize("index", range(len(_blocks("python"))))
def test_every_python_snippet_parses_and_calls_what_the_installed_frameworks_take(index):
    import inspect

    tree = ast.parse(_blocks("python")[index])
    names = _imported(tree)
    checked = 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names):
            continue
        target = names[node.func.id]
        try:
            params = inspect.signature(target).parameters  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        for keyword in node.keywords:
            assert keyword.arg in params, f"{node.func.id}() takes no {keyword.arg}"
        checked += 1
    if not names:
        pytest.skip("its framework cannot be imported here (absent, or langchain-mcp-adapters beside mcp 2)")
    assert checked, "no call of the snippet was checked"

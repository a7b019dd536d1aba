"""The README works when followed literally: its test command is CI's, and its example commands run.

Both READMEs (the repository's and ``examples/README.md``) are read.

Every ``unison-mcp`` line in the README's ``bash`` blocks runs in-process from the repository's
root with ``--preset tiny`` added (the example files are in ``examples/media/``), except ``serve``
(it waits for a client) and ``download`` (it fetches the real weights).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from unison_mcp.cli import main

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
EXAMPLES_README = (REPO / "examples" / "README.md").read_text(encoding="utf-8")
SKIPPED = {"serve", "download"}


def _bash_lines(text: str) -> list[str]:
    lines: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        joined = block.replace("\\\n", " ")  # a command continued over lines is one command
        lines += [line.strip() for line in joined.splitlines() if line.strip()]
    return lines


def _example_commands() -> list[list[str]]:
    commands = []
    for line in _bash_lines(README) + _bash_lines(EXAMPLES_README):
        if not line.startswith("unison-mcp "):
            continue
        words = shlex.split(line, comments=True)  # drops the "# what it does" notes
        if words[1] in SKIPPED:
            continue
        commands.append(words[1:] if "--preset" in words else [*words[1:], "--preset", "tiny"])
    return commands


def test_the_readmes_test_command_is_the_one_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = 'pip install -e ".[dev]" && python -m pytest -q'
    # CI quiets pip (-q); the command is otherwise the same, character for character.
    ci_lines = [line.replace("pip install -q ", "pip install ") for line in ci.splitlines()]
    assert command in _bash_lines(README) and command in ci_lines


def test_the_readme_installs_pytorch_before_the_two_commands_for_cpu_and_cuda():
    install, two = README.index("## Install"), README.index("## The two commands")
    assert install < two
    section = README[install:two]
    assert "pip install torch==2.14.1 torchvision==0.29.1\n" in section  # CPU, as .ci/run
    assert "--index-url https://download.pytorch.org/whl/cu" in section  # CUDA


def test_every_example_file_the_readme_names_exists_and_is_small():
    named = set(re.findall(r"examples/media/[\w.-]+", README + EXAMPLES_README))
    assert named, "the README names no example file"
    for name in named:
        assert (REPO / name).is_file(), name
    assert sum(p.stat().st_size for p in (REPO / "examples" / "media").iterdir()) < 300_000


@pytest.mark.parametrize("argv", _example_commands(), ids=lambda argv: " ".join(argv)[:60])
def test_the_readmes_example_command_runs_with_the_tiny_preset(
    argv, tiny_paths, tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(REPO)
    for name in [n for n in __import__("os").environ if n.startswith("UNISON_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("UNISON_TINY_DIR", str(tiny_paths.root))
    monkeypatch.setenv("UNISON_OUTPUT_DIR", str(tmp_path / "outputs"))
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    status = main(argv)
    out, err = capsys.readouterr()
    assert status == 0, f"unison-mcp {' '.join(argv)} exited {status}: {err[-2000:]}"
    assert out.strip(), "nothing printed"


@pytest.mark.parametrize("system", ["macos", "linux", "windows"])
def test_the_client_config_for_each_system_names_absolute_paths_and_forces_no_device(system):
    import json
    from pathlib import PurePosixPath, PureWindowsPath

    config = json.loads(
        (REPO / "examples" / f"claude_desktop_config.{system}.json").read_text(encoding="utf-8")
    )
    server = config["mcpServers"]["unison"]
    pure = PureWindowsPath if system == "windows" else PurePosixPath
    assert pure(server["command"]).is_absolute() and pure(server["command"]).stem == "unison-mcp"
    args = server["args"]
    paths = [args[i + 1] for i, a in enumerate(args) if a in ("--output-dir", "--allow-root")]
    assert paths and all(pure(p).is_absolute() for p in paths)
    assert "UNISON_DEVICE" not in server.get("env", {})

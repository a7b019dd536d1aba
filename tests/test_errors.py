"""Errors stay short and speak to whoever reads them.

``engine.errors.shown`` cuts every value a message shows (the MCP tools, the command line, the
logs); a refusal of a 10 MB argument costs no more than reading it; the command line's hints speak
to the person who ran the command, and a network that fails is said to be the network.
"""

from __future__ import annotations

import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from engine.api import parse_arguments
from engine.config import Limits
from engine.errors import (
    SHOWN_CHARS,
    Busy,
    Cancelled,
    HubUnreachable,
    InputRefused,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    PlannerError,
    ServerConfigError,
    ServerSettingError,
    ShuttingDown,
    UnisonError,
    shown,
)
from unison_mcp.cli import main
from unison_mcp.errors import describe_error, hint_for

ROOT = Path(__file__).resolve().parents[1]
CLOSED_HUB = "http://127.0.0.1:9"  # the discard port: connects are refused at once

# ---------------------------------------------------------------------------------------------
# shown: one cut for every value a message shows


def test_a_long_string_keeps_its_start_and_end_and_says_its_full_length():
    text = shown("/" + "a" * 100_000 + "/cat.png")
    assert text.startswith("'/aaa") and text.endswith(".png' (100,009 characters)")
    assert "…" in text and len(text) < SHOWN_CHARS + 40


def test_a_short_value_is_shown_as_its_repr_and_unquoted_on_request():
    assert shown("photo.png") == "'photo.png'"
    assert shown("photo.png", quoted=False) == "photo.png"
    assert shown(Path("/in/photo.png")) == "'/in/photo.png'"
    assert shown(17) == "17" and shown(None) == "None" and shown([1, "a"]) == "[1, 'a']"
    assert shown("a" * SHOWN_CHARS) == repr("a" * SHOWN_CHARS)  # at the limit: whole


def test_escapes_cannot_make_a_short_value_long():
    text = shown("\x00" * SHOWN_CHARS)  # repr writes each NUL as four characters
    assert len(text) < SHOWN_CHARS + 40 and text.endswith(f"({SHOWN_CHARS} characters)")


@pytest.mark.parametrize(
    ("value", "size"),
    [
        (["x" * 100_000] * 1_000_000, "(1,000,000 items)"),
        ({f"k{i}": i for i in range(100_000)}, "(100,000 items)"),
        (b"\x00" * 1_000_000, "(1,000,000 bytes)"),
    ],
)
def test_a_huge_container_shows_a_few_items_and_its_size(value, size):
    text = shown(value)
    assert len(text) < SHOWN_CHARS + 40 and text.endswith(size), text


def test_a_number_too_long_to_write_and_a_deep_nesting_are_shown_without_failing():
    assert "digits" in shown(10**10_000)  # Python refuses to write out more than 4300 digits
    deep: list = []
    for _ in range(100_000):
        deep = [deep]
    assert shown(deep).startswith("[[[") and len(shown(deep)) < 50  # no recursion past a few levels


# ---------------------------------------------------------------------------------------------
# Refusals from pydantic's errors


def test_a_huge_argument_is_refused_naming_the_field_and_its_length():
    with pytest.raises(InvalidRequest) as err:
        parse_arguments("generate", Limits(), {"task": "text_to_image", "prompt": "x" * 10_000_000})
    message = str(err.value)
    assert message.startswith("prompt='xxx") and "(10,000,000 characters)" in message
    assert "at most 4000 characters" in message and len(message) < 400


def test_an_unknown_argument_with_a_huge_name_is_cut_too():
    with pytest.raises(InvalidRequest) as err:
        parse_arguments("understand", Limits(), {"prompt": "x", "n" * 1_000_000: 1})
    message = str(err.value)
    assert "(1,000,000 characters): unknown; known: prompt, media" in message and len(message) < 400


def test_a_missing_field_does_not_echo_the_whole_request():
    with pytest.raises(InvalidRequest) as err:
        parse_arguments("generate", Limits(), {"prompt": "p" * 1_000_000})
    assert str(err.value) == "task: Field required"


@pytest.mark.parametrize(
    "arguments",
    [
        {"task": "text_to_image", "prompt": "x" * 10_000_000},
        # A list sent as a string is refused by its type, not parsed first.
        {"prompt": "x", "media": "[" + '"/a.png",' * 1_000_000 + '"/b.png"]'},
    ],
    ids=["prompt", "media"],
)
def test_refusing_a_10_mb_argument_allocates_almost_nothing(arguments):
    tool = "generate" if "task" in arguments else "understand"
    limits = Limits()
    tracemalloc.start()
    try:
        with pytest.raises(InvalidRequest) as err:
            parse_arguments(tool, limits, arguments)
        text = describe_error(err.value, tool=tool)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(text) < 1_000
    assert peak < 1_000_000, f"{peak:,} bytes to refuse a {len(str(arguments)):,}-character argument"


# ---------------------------------------------------------------------------------------------
# Hints: for a calling model over MCP, for a person on the command line

ONE_OF_EACH: list[UnisonError] = [
    HubUnreachable("planner_model='Qwen/Qwen2.5-VL-3B-Instruct': the hub could not be reached"),
    ServerSettingError("device='cuda': CUDA is not available", field="device"),
    ServerConfigError("planner_model='/nowhere': no such directory"),
    ShuttingDown(),
    InvalidRequest("num_frames=2: too few"),
    InputRefused("source='/x.png': no such file"),
    Busy(3, 3),
    Cancelled(),
    OutOfMemory("the accelerator ran out of memory"),
    ModelError("adapter='/nowhere': not found"),
    PlannerError("planner output has <BOEDIT> without <EOEDIT>"),
]


@pytest.mark.parametrize("error", ONE_OF_EACH, ids=lambda e: type(e).__name__)
def test_no_command_line_hint_speaks_of_a_server(error):
    hint = hint_for(error, cli=True)
    assert "server" not in hint and "whoever" not in hint, hint


def test_a_setup_error_on_the_command_line_points_at_doctor_not_at_a_server_operator(tmp_path: Path, capsys):
    code = main(["understand", "What is a cat?", "--planner-model", str(tmp_path / "no-qwen")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert code == 2 and "server_config_error" in err
    assert "`unison-mcp doctor`" in err
    assert "whoever runs the server" not in err and "on the server" not in err


def test_over_mcp_a_setup_error_still_says_it_is_the_servers():
    text = describe_error(ServerConfigError("planner_model='/nowhere': no such directory"))
    assert "whoever runs the server" in text and "Fix that argument" not in text


def test_a_network_failure_is_its_own_error_with_its_own_advice():
    error = HubUnreachable("planner_model='Qwen/x': the hub could not be reached")
    assert isinstance(error, ServerConfigError) and error.code == "hub_unreachable"
    over_mcp = describe_error(error)
    on_the_command_line = describe_error(error, cli=True)
    assert "model configuration" not in over_mcp + on_the_command_line
    assert "could not reach the model hub" in over_mcp
    assert "network" in on_the_command_line and "HF_HUB_OFFLINE=1" in on_the_command_line


def test_download_without_a_network_says_the_hub_could_not_be_reached(tmp_path: Path):
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith(("UNISON_", "HF_"))}
    env.update(PYTHONPATH=str(ROOT), HF_ENDPOINT=CLOSED_HUB, HF_HOME=str(tmp_path / "hf"))
    proc = subprocess.run(
        [sys.executable, "-m", "unison_mcp", "download", "--only", "depth", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("unison-mcp download: hub_unreachable: depth: cannot download "), last
    assert f"the hub ({CLOSED_HUB}) could not be reached" in last
    assert "HF_HUB_OFFLINE=1" in last and "check the connection" in last
    assert "model configuration" not in last and "server" not in last

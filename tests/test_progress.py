"""Progress people can see: a bar on a terminal, a line every tenth in a log, loading named with its size."""

from __future__ import annotations

import io
import re
import time

from engine.config import EngineConfig
from engine.engine import Engine
from unison_mcp.progress import Progress, format_size, stage_labels


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_steps(progress: Progress, stage: str, total: int) -> None:
    control = progress.control()
    control.set_stage(stage, total=total)
    for i in range(1, total + 1):
        control.step(i, total)


def test_in_a_log_a_line_comes_at_every_tenth_of_the_steps_with_step_total_and_elapsed_time():
    out = io.StringIO()
    with Progress(out) as progress:
        _run_steps(progress, "generating", 50)
    steps = [line for line in out.getvalue().splitlines() if "step" in line]
    assert len(steps) == 11  # the first step, then each tenth up to 50/50
    assert steps[1].startswith("unison-mcp: generating: step 5/50 (10%), ")
    assert all(re.search(r"step \d+/50 \(\d+%\), \d+\.\d s elapsed$", line) for line in steps)
    assert steps[-1].startswith("unison-mcp: generating: step 50/50 (100%)")


def test_a_stage_without_steps_is_announced_in_a_log_when_it_begins():
    out = io.StringIO()
    with Progress(out, labels={"loading planner": "loading the planner, 7.5 GB"}) as progress:
        progress.control().set_stage("loading planner")
        deadline = time.monotonic() + 5
        while "loading the planner" not in out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.05)
    assert out.getvalue().splitlines()[0] == "unison-mcp: loading the planner, 7.5 GB…"


def test_on_a_terminal_a_bar_is_redrawn_in_place_and_the_line_ends_with_the_command():
    out = _Terminal()
    with Progress(out) as progress:
        _run_steps(progress, "generating", 4)
    text = out.getvalue()
    assert "\r" in text and "[" + "#" * Progress.WIDTH + "] 4/4" in text
    assert text.endswith("\n") and "unison-mcp:" not in text


def test_sizes_read_as_the_hub_shows_them():
    assert format_size(7_500_000_000) == "7.5 GB"
    assert format_size(50_000_000) == "50 MB"
    assert format_size(812_000) == "812 kB"
    assert format_size(12) == "12 B"


def test_the_planners_loading_stage_is_named_with_its_size_on_disk_through_the_real_engine(
    tiny_paths, tmp_path
):
    config = EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path)
    labels = stage_labels(config)
    on_disk = sum(
        p.stat().st_size for d in (tiny_paths.qwen, tiny_paths.adapter) for p in d.rglob("*") if p.is_file()
    )
    assert labels["loading planner"] == f"loading the planner, {format_size(on_disk)}"
    assert labels["loading models"].startswith("loading the generator, ")
    out = io.StringIO()
    with Progress(out, labels=labels) as progress:
        Engine(config).understand("What is the capital of France?", [], control=progress.control())
    text = out.getvalue()
    assert f"unison-mcp: loading the planner, {format_size(on_disk)}…" in text
    # One line per token up to a tenth of the budget each; the answer may end before the budget.
    assert re.search(r"unison-mcp: understanding: step 1/8 \(12%\), \d+\.\d s elapsed", text)


def test_a_model_not_downloaded_yet_is_named_as_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    config = EngineConfig(planner_model="Qwen/Qwen2.5-VL-3B-Instruct", adapter=None, output_dir=tmp_path)
    assert (
        stage_labels(config)["loading planner"] == "loading the planner (not all on disk: downloading first)"
    )


def test_a_tiny_preset_not_built_yet_is_named_as_built_first_not_looked_up_on_the_hub(tmp_path):
    # Its paths do not exist yet: they were read as hub ids (HFValidationError on a new machine).
    config = EngineConfig.tiny(tmp_path / "tiny", output_dir=tmp_path / "out")
    assert stage_labels(config) == {
        "building tiny models": "building the tiny models (first use)",
        "loading planner": "loading the planner (tiny, built first)",
        "loading models": "loading the generator (tiny, built first)",
    }
    assert not (tmp_path / "tiny").exists()


def test_a_stage_is_named_as_it_begins_so_a_size_known_only_then_is_shown(tmp_path):
    weights = tmp_path / "qwen"
    config = EngineConfig(planner_model=str(weights), adapter=None, output_dir=tmp_path)
    out = io.StringIO()
    with Progress(out, labels=lambda stage: stage_labels(config).get(stage)) as progress:
        control = progress.control()
        control.set_stage("fetching")  # an earlier stage puts the weights on disk
        weights.mkdir()
        (weights / "model.safetensors").write_bytes(b"\0" * 2_000_000)
        control.set_stage("loading planner")
    assert "unison-mcp: loading the planner, 2.0 MB…" in out.getvalue().splitlines()

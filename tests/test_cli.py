"""The ``unison-mcp`` command: fast help, JSON plans, files from the tiny models, clean errors."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine.errors import InvalidRequest
from engine.vocab import MediaKind, Role, Task
from unison_mcp.cli import main, natural_role, parse_margins

ROOT = Path(__file__).resolve().parents[1]

#: Runs the CLI as `python -m unison_mcp` would, then reports which heavy modules got imported.
HELP_PROBE = """
import runpy, sys
sys.argv = ["unison-mcp", *sys.argv[1:]]
try:
    runpy.run_module("unison_mcp", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    code = exc.code
heavy = [m for m in ("torch", "transformers", "diffusers", "peft", "av", "engine.engine") if m in sys.modules]
sys.stderr.write(f"EXIT={code} HEAVY={','.join(heavy)}")
"""


def subprocess_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    return env


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def make_png(path: Path, size: tuple[int, int] = (64, 48), color=(200, 40, 40)) -> Path:
    from PIL import Image

    Image.new("RGB", size, color).save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Start-up cost: help must not pull in torch.


@pytest.mark.parametrize("argv", [["--help"], ["serve", "--help"], ["generate", "--help"]])
def test_help_imports_neither_torch_nor_transformers_and_is_fast(argv: list[str]):
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", HELP_PROBE, *argv],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
    )
    elapsed = time.perf_counter() - t0
    assert "EXIT=0 HEAVY=" in proc.stderr and proc.stderr.endswith("HEAVY="), proc.stderr[-500:]
    assert "usage: unison-mcp" in proc.stdout
    # Interpreter start-up included; torch alone takes longer than this on these machines.
    assert elapsed < 2.0, f"help took {elapsed:.2f} s"


def test_serve_help_lists_the_flags_the_server_is_started_with(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in (
        "--preset",
        "--output-dir",
        "--allow-root",
        "--wait-s",
        "--queue-size",
        "--transport",
        "--auth-token",
    ):
        assert flag in out
    assert "UNISON_AUTH_TOKEN" in out


def _hub_ids() -> set[str]:
    """Every hub id and hub file the default settings name (what the help shows as defaults)."""
    from engine.config import EngineConfig
    from unison_mcp.download import weight_sources

    ids: set[str] = set()
    for source in weight_sources(EngineConfig(planner_backend="unison")):
        if source.kind in ("repo", "file"):
            ids |= {source.spec, source.repo_id or ""}
    return ids


@pytest.mark.parametrize("command", ["serve", "generate", "download", "doctor"])
@pytest.mark.parametrize("columns", [60, 80, 100])
def test_help_never_breaks_a_hub_id_so_it_copies_whole(command, columns, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", str(columns))  # argparse wraps at the terminal's width
    with pytest.raises(SystemExit):
        main([command, "--help"])
    out = capsys.readouterr().out
    # argparse's own wrapping cut "ali-vilab/Unison" after "ali-" at some widths.
    assert not [line for line in out.splitlines() if line.rstrip().endswith(("-", "/"))]
    ids = _hub_ids()
    assert {"ali-vilab/Unison", "Wan-AI/Wan2.1-VACE-1.3B-diffusers", "Qwen/Qwen2.5-VL-3B-Instruct"} <= ids
    shown = [hub_id for hub_id in ids if hub_id.split("/")[0] in out]
    assert shown, "the help names no hub id"
    for hub_id in shown:
        assert hub_id in out, hub_id


# ---------------------------------------------------------------------------------------------
# plan


@pytest.mark.parametrize(
    ("request_text", "task", "size", "frames", "roles"),
    [
        ("Generate an image of a lighthouse at dusk", "text_to_image", (832, 480), 1, []),
        ("Make a 5 second video of waves at 720P", "text_to_video", (1280, 720), 81, []),
        ("Animate ###cat.png### as the first frame", "image_to_video", (832, 480), 81, ["first_frame"]),
        ("What is in ###photo.jpg###?", "image_understanding", (None, None), None, ["query"]),
        (
            "Replace the sky in ###a.png### using the mask ###a_mask.png###",
            "image_edit",
            (832, 480),
            1,
            ["source", "mask"],
        ),
    ],
)
def test_plan_with_the_rules_planner_prints_one_json_plan(capsys, request_text, task, size, frames, roles):
    code, out, err = cli(capsys, "plan", "--planner", "rules", request_text)
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1
    plan = json.loads(lines[0])
    assert set(plan) == {"task", "prompt", "width", "height", "num_frames", "inputs"}
    assert plan["task"] == task
    assert (plan["width"], plan["height"]) == size
    assert plan["num_frames"] == frames
    assert [i["role"] for i in plan["inputs"]] == roles


def test_plan_takes_extra_files_with_media_and_keeps_logs_off_stdout(capsys):
    code, out, err = cli(
        capsys, "-v", "plan", "--planner", "rules", "what happens in this clip?", "--media", "c.mp4"
    )
    assert code == 0, err
    plan = json.loads(out)  # stdout holds the plan and nothing else, even with -v
    assert plan["task"] == "video_understanding"
    assert plan["inputs"] == [{"path": "c.mp4", "kind": "video", "role": "query"}]


# ---------------------------------------------------------------------------------------------
# Errors: one clean line, exit status 2.


def test_an_engine_error_prints_one_clean_line_and_exits_2(capsys):
    code, out, err = cli(capsys, "generate", "--task", "text_to_video", "--prompt", "waves", "--frames", "1")
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("unison-mcp generate: invalid_request: num_frames=1: text_to_video makes 5 to")
    assert "Traceback" not in err


def test_verbose_adds_the_traceback_to_the_error(capsys):
    code, _, err = cli(capsys, "-v", "plan", "--planner", "rules", "look at ###notes.txt###")
    assert code == 2
    assert "Traceback" in err
    assert err.rstrip().splitlines()[-1].startswith("unison-mcp plan: invalid_request: path='notes.txt'")


def test_a_bad_environment_value_is_a_clean_config_error(capsys, monkeypatch):
    monkeypatch.setenv("UNISON_STEPS", "0")
    code, out, err = cli(capsys, "plan", "--planner", "rules", "an image of a cat")
    assert code == 2
    assert out == ""
    assert err.startswith("unison-mcp plan: config_error: UNISON_STEPS='0'")


def test_an_error_in_a_real_subprocess_has_no_traceback():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unison_mcp",
            "generate",
            "--task",
            "text_to_image",
            "--prompt",
            "x",
            "--margins",
            "1,2",
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.strip().splitlines() == [
        "unison-mcp generate: invalid_request: --margins='1,2': must be L,T,R,B (four whole numbers of pixels, "
        "0 or more) or one number"
    ]


def test_an_image_for_a_task_that_takes_none_is_refused_naming_the_flag(capsys):
    code, _, err = cli(capsys, "generate", "--task", "text_to_image", "--prompt", "x", "--image", "a.png")
    assert code == 2
    assert "--image='a.png': text_to_image takes no image here; it takes no input files" in err


# ---------------------------------------------------------------------------------------------
# generate's flags.


@pytest.mark.parametrize(
    ("task", "kind", "role"),
    [
        (Task.IMAGE_EDIT, MediaKind.IMAGE, Role.SOURCE),
        (Task.IMAGE_TO_VIDEO, MediaKind.IMAGE, Role.FIRST_FRAME),
        (Task.IMAGE_REFERENCE, MediaKind.IMAGE, Role.REFERENCE),
        (Task.IMAGE_CONTROL, MediaKind.IMAGE, Role.CONTROL),
        (Task.VIDEO_CONTROL, MediaKind.VIDEO, Role.CONTROL),
        (Task.VIDEO_EDIT, MediaKind.VIDEO, Role.SOURCE),
        (Task.VIDEO_EXTEND, MediaKind.VIDEO, Role.SOURCE),
        (Task.VIDEO_EDIT, MediaKind.IMAGE, None),  # a mask is never implied
        (Task.TEXT_TO_IMAGE, MediaKind.IMAGE, None),
    ],
)
def test_image_and_video_flags_take_the_tasks_natural_role(task, kind, role):
    assert natural_role(task, kind) == role


def test_margins_take_four_sides_or_one_number():
    m = parse_margins("1, 2,3,4")
    assert (m.left, m.top, m.right, m.bottom) == (1, 2, 3, 4)
    m = parse_margins("16")
    assert (m.left, m.top, m.right, m.bottom) == (16, 16, 16, 16)
    for bad in ("1,2,3", "a,b,c,d", "-1,0,0,0"):
        with pytest.raises(InvalidRequest, match="--margins"):
            parse_margins(bad)


# ---------------------------------------------------------------------------------------------
# make-tiny, and the commands that run the tiny models.


def test_make_tiny_builds_what_is_missing_in_the_released_layouts(capsys, tiny_paths, tmp_path: Path):
    import torch

    # Reuse the session's models; the projector is built here.
    for name, built in dataclasses.asdict(tiny_paths).items():
        if name not in ("root", "projector"):
            (tmp_path / built.name).symlink_to(built, target_is_directory=built.is_dir())
    code, out, err = cli(capsys, "make-tiny", str(tmp_path))
    assert code == 0, err
    paths = json.loads(out)
    assert paths["root"] == str(tmp_path)
    projector = Path(paths["projector"])
    assert projector == tmp_path / "projector.pth"
    state = torch.load(projector, weights_only=True)
    assert "module.seq_adjust.weight" in state
    assert state["module.seq_adjust.weight"].shape == (4, 56)


@pytest.fixture()
def tiny_env(tiny_paths, monkeypatch, tmp_path: Path) -> Path:
    """The tiny preset, with outputs in a fresh directory."""
    monkeypatch.setenv("UNISON_TINY_DIR", str(tiny_paths.root))
    out = tmp_path / "outputs"
    monkeypatch.setenv("UNISON_OUTPUT_DIR", str(out))
    return out


def test_generate_with_the_tiny_preset_writes_an_image_and_its_sidecar(capsys, tiny_env: Path):
    from PIL import Image

    code, out, err = cli(
        capsys,
        "generate",
        "--preset",
        "tiny",
        "--task",
        "text_to_image",
        "--prompt",
        "a lighthouse",
        "--seed",
        "3",
    )
    assert code == 0, err
    (path,) = out.splitlines()
    png = Path(path)
    assert png.parent == tiny_env.resolve() and png.suffix == ".png"
    with Image.open(png) as im:
        assert im.size == (64, 48)  # the tiny preset's default size
    sidecar = json.loads(png.with_name(png.name + ".json").read_text())
    assert sidecar["seed"] == 3
    assert sidecar["task"] == "text_to_image"


@pytest.mark.parametrize(
    "argv",
    [
        ["understand", "What is in this picture?", "--media", "examples/media/cat.png"],
        ["generate", "--task", "text_to_image", "--prompt", "a red fox in the snow", "--steps", "1"],
        ["run", "Create a picture of a red fox in the snow"],
    ],
    ids=lambda argv: argv[0],
)
def test_with_no_tiny_models_built_yet_a_command_builds_them_first_with_progress(
    argv, capsys, tiny_paths, tmp_path: Path, monkeypatch
):
    import shutil

    import engine.tiny
    from engine.config import tiny_paths as tiny_paths_of

    # A new machine: nothing under the tiny folder. (The 10 s build is run for real, from an
    # empty home, by tests/test_readme.py; here the session's models are copied in its place.)
    root = tmp_path / "tiny"
    monkeypatch.setenv("UNISON_TINY_DIR", str(root))
    monkeypatch.setenv("UNISON_OUTPUT_DIR", str(tmp_path / "out"))
    monkeypatch.chdir(ROOT)

    def build(where, *, on_step=None):
        shutil.copytree(tiny_paths.root, where, dirs_exist_ok=True)
        on_step(1, 1)
        return tiny_paths_of(where)

    monkeypatch.setattr(engine.tiny, "ensure_tiny", build)
    code, out, err = cli(capsys, *argv, "--preset", "tiny")
    assert code == 0, err
    assert out.strip()
    assert "unison-mcp: building the tiny models (first use): step 1/1 (100%)" in err
    assert (root / "qwen-2").is_dir()


def test_generate_animates_an_image_given_with_image_as_the_first_frame(
    capsys, tiny_env: Path, tmp_path: Path
):
    import av

    still = make_png(tmp_path / "still.png")
    code, out, err = cli(
        capsys,
        "generate",
        "--preset",
        "tiny",
        "--task",
        "image_to_video",
        "--image",
        str(still),
        "--prompt",
        "the light flickers",
        "--frames",
        "5",
        "--width",
        "32",
        "--height",
        "32",
        "--fps",
        "8",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert [i["role"] for i in result["plan"]["inputs"]] == ["first_frame"]
    (output,) = result["outputs"]
    assert (output["width"], output["height"], output["num_frames"], output["fps"]) == (32, 32, 5, 8.0)
    with av.open(output["path"]) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 5
    assert (frames[0].width, frames[0].height) == (32, 32)


def test_run_plans_then_generates_and_prints_the_plan_and_the_path(capsys, tiny_env: Path):
    code, out, err = cli(
        capsys, "run", "--preset", "tiny", "--planner", "rules", "an image of a red boat", "--seed", "1"
    )
    assert code == 0, err
    plan_line, path_line = out.splitlines()
    assert json.loads(plan_line)["task"] == "text_to_image"
    assert Path(path_line).is_file()
    assert Path(path_line).parent == tiny_env.resolve()


def test_run_answers_an_understanding_request_with_the_tiny_planner(capsys, tiny_env: Path, tmp_path: Path):
    photo = make_png(tmp_path / "photo.png")
    code, out, err = cli(
        capsys, "run", "--preset", "tiny", "--planner", "rules", f"what is in ###{photo}###?", "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["plan"]["task"] == "image_understanding"
    assert result["generation"] is None
    assert isinstance(result["answer"]["answer"], str)
    assert not tiny_env.exists() or not any(tiny_env.iterdir())  # nothing written for an answer


def test_understand_prints_the_tiny_models_answer(capsys, tiny_env: Path, tmp_path: Path):
    photo = make_png(tmp_path / "photo.png")
    code, out, err = cli(
        capsys, "understand", "--preset", "tiny", "describe this image", "--media", str(photo), "--json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert set(result) >= {"answer", "model", "timings"}
    assert isinstance(result["answer"], str)
    assert result["model"]


# ---------------------------------------------------------------------------------------------
# doctor and download, offline.


def fake_hub_snapshot(cache: Path, repo_id: str, files: dict[str, str]) -> Path:
    """A hub-cache entry laid out as huggingface_hub writes it (refs/main → snapshots/<commit>)."""
    commit = "0" * 40
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    for name, text in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_text(text)
    return snap


def test_doctor_reports_missing_weights_with_the_download_hint(capsys, tmp_path: Path):
    cache = tmp_path / "hub"
    cache.mkdir()
    fake_hub_snapshot(cache, "Qwen/Qwen2.5-VL-3B-Instruct", {"config.json": "{}"})
    code, out, err = cli(capsys, "doctor", "--cache-dir", str(cache), "--output-dir", str(tmp_path / "out"))
    assert code == 1, err
    assert "ok   planner: Qwen/Qwen2.5-VL-3B-Instruct in the hub cache" in out
    assert "FAIL generator: Wan-AI/Wan2.1-VACE-1.3B-diffusers is not in the hub cache" in out
    assert "FAIL projector: ali-vilab/Unison: projector.pth is not in the hub cache" in out
    assert "unison-mcp download --only generator" in out
    assert "transformers:" in out and "diffusers:" in out and "flash-attn" in out
    assert "llguidance: 1." in out and "the planners decode under their grammar" in out


def test_doctor_warns_when_the_planners_cannot_decode_under_their_grammar(
    capsys, monkeypatch, tmp_path: Path
):
    import unison_mcp.doctor as doctor

    monkeypatch.setattr(doctor, "llguidance_version", lambda: None)
    code, out, err = cli(capsys, "doctor", "--preset", "tiny", "--output-dir", str(tmp_path / "out"))
    assert "llguidance: not installed: the model planners' output is not constrained" in out
    assert "pip install llguidance" in out


def test_doctor_as_json_is_all_good_for_the_tiny_preset(capsys, tiny_paths, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("UNISON_TINY_DIR", str(tiny_paths.root))
    # --planner unison: the tiny preset routes with the rules planner, which needs no adapter.
    code, out, err = cli(
        capsys, "doctor", "--preset", "tiny", "--planner", "unison", "--output-dir", str(tmp_path), "--json"
    )
    report = json.loads(out)
    weights = {c["name"]: c for c in report["checks"] if c["section"] == "weights"}
    assert {weights[r]["status"] for r in ("planner", "adapter", "projector", "generator")} == {"ok"}
    assert weights["planner"]["detail"].startswith(f"local directory {tiny_paths.qwen}")
    assert report["ok"] is (code == 0)
    failed = [c for c in report["checks"] if c["status"] == "fail"]
    assert failed == [] and code == 0, failed
    # The video encoder chosen once for this process: NVENC only where NVIDIA's driver is.
    (encoder,) = [c for c in report["checks"] if c["name"] == "H.264 encoder"]
    assert encoder["status"] == "ok", encoder
    if not Path("/dev/nvidia0").exists():
        assert encoder["detail"].startswith("libx264 (CRF 14, preset veryfast"), encoder


def test_doctor_on_a_new_machine_says_the_tiny_models_will_be_built_on_first_use(
    capsys, monkeypatch, tmp_path: Path
):
    tiny = tmp_path / "cache" / "unison-mcp" / "tiny"
    monkeypatch.setenv("UNISON_TINY_DIR", str(tiny))
    code, out, err = cli(capsys, "doctor", "--preset", "tiny", "--output-dir", str(tmp_path / "out"))
    assert code == 0, out  # nothing to fix: the first command builds them
    assert (
        f"tiny models: not built yet: the first command or call that needs them builds them into {tiny}"
        in out
    )
    assert "-> or build them now: `unison-mcp make-tiny`" in out
    assert f"planner: {tiny / 'qwen-2'} (tiny, built on first use)" in out
    assert "--planner-model" not in out and "FAIL" not in out
    assert not tiny.exists()  # doctor builds nothing


def test_doctors_advice_for_weights_that_are_not_here_is_a_command_that_fetches_them(
    capsys, monkeypatch, tmp_path: Path
):
    monkeypatch.setenv("UNISON_TINY_DIR", str(tmp_path / "tiny"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    # The tiny preset sets local_files_only, and `download` refuses while it is set: the advice
    # unsets it for the one command, and fixes a path where a path is wrong.
    code, out, err = cli(
        capsys,
        "doctor",
        "--preset",
        "tiny",
        "--generator-model",
        "someone/not-downloaded",
        "--planner-model",
        str(tmp_path / "no-such-dir"),
        "--output-dir",
        str(tmp_path / "out"),
    )
    assert code == 1
    assert "FAIL generator: someone/not-downloaded is not in the hub cache" in out
    assert "-> run `unison-mcp download --no-local-files-only --only generator`" in out
    assert f"FAIL planner: '{tmp_path / 'no-such-dir'}': no such local path, and not a hub id" in out
    assert "-> fix the path given to --planner-model" in out


def test_download_with_the_tiny_preset_builds_rather_than_fetches(capsys, monkeypatch, tmp_path: Path):
    monkeypatch.setenv("UNISON_TINY_DIR", str(tmp_path / "tiny"))
    code, out, err = cli(capsys, "download", "--preset", "tiny", "--dry-run", "--only", "planner")
    assert code == 0, err
    assert out.splitlines() == [f"planner\t{tmp_path / 'tiny' / 'qwen-2'}\twould build the tiny model"]


def test_download_dry_run_lists_the_hub_weights_and_skips_local_ones(capsys, tiny_paths):
    code, out, err = cli(capsys, "download", "--dry-run", "--planner-model", str(tiny_paths.qwen))
    assert code == 0, err
    rows = [line.split("\t") for line in out.splitlines()]
    assert rows == [
        ["planner", str(tiny_paths.qwen), str(tiny_paths.qwen)],
        ["adapter", "ali-vilab/Unison", "would download ali-vilab/Unison"],
        ["projector", "ali-vilab/Unison/projector.pth", "would download ali-vilab/Unison: projector.pth"],
        [
            "generator",
            "Wan-AI/Wan2.1-VACE-1.3B-diffusers",
            "would download Wan-AI/Wan2.1-VACE-1.3B-diffusers",
        ],
        [
            "turbo",
            "Kijai/WanVideo_comfy/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors",
            "would download Kijai/WanVideo_comfy: Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors",
        ],
        ["segment", "facebook/sam3", "would download facebook/sam3"],
        [
            "depth",
            "depth-anything/Depth-Anything-V2-Small-hf",
            "would download depth-anything/Depth-Anything-V2-Small-hf",
        ],
        ["pose", "usyd-community/vitpose-base-simple", "would download usyd-community/vitpose-base-simple"],
        [
            "person_detector",
            "PekingU/rtdetr_r50vd_coco_o365",
            "would download PekingU/rtdetr_r50vd_coco_o365",
        ],
        ["flow", "raft_small", "would download torchvision's raft_small weights"],
    ]


def test_download_refuses_when_local_files_only_is_set(capsys):
    code, out, err = cli(capsys, "download", "--local-files-only", "--only", "generator")
    assert code == 2
    assert "local_files_only is set" in err


def test_download_offline_fails_with_a_clear_message(tmp_path: Path):
    proc = subprocess.run(
        [sys.executable, "-m", "unison_mcp", "download", "--only", "projector", "--cache-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        env=subprocess_env(HF_HUB_OFFLINE="1"),
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("unison-mcp download: server_config_error: cannot download ali-vilab/Unison")
    assert "offline mode is on (HF_HUB_OFFLINE)" in last


# ---------------------------------------------------------------------------------------------
# The example client.


async def test_the_chain_example_links_three_calls_through_unison_uris(tiny_paths, tmp_path: Path, capsys):
    import argparse
    import importlib.util

    from mcp import Client

    from unison_mcp.config import load_config
    from unison_mcp.server import build_server

    spec = importlib.util.spec_from_file_location("chain_example", ROOT / "examples" / "chain.py")
    assert spec is not None and spec.loader is not None
    chain_example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(chain_example)

    workdir = tmp_path / "work"
    workdir.mkdir()
    out_dir = tmp_path / "outputs"
    config = load_config(
        {"preset": "tiny", "output_dir": out_dir, "allowed_roots": [workdir]},
        env={"UNISON_TINY_DIR": str(tiny_paths.root)},
    )
    args = argparse.Namespace(steps=None, frames=5, seed=0)
    async with Client(build_server(config)) as client:
        image, edited, video = await chain_example.chain(client, workdir, args)

    assert [o["uri"].split("/")[-1] for o in (image, edited, video)] == [
        Path(o["path"]).name for o in (image, edited, video)
    ]
    assert all(o["uri"].startswith("unison://outputs/") for o in (image, edited, video))
    sidecar = json.loads((out_dir / f"{Path(edited['path']).name}.json").read_text())
    roles = {i["role"]: i["path"] for i in sidecar["plan"]["inputs"]}
    assert roles["source"] == image["path"]  # the URI was resolved to the first call's file
    assert roles["mask"] == str(workdir / "mask.png")
    assert video["num_frames"] == 5 and video["kind"] == "video"
    printed = capsys.readouterr().out
    assert "3. image_to_video -> unison://outputs/" in printed


def test_generate_count_writes_one_file_per_candidate_with_consecutive_seeds(capsys, tiny_env: Path):
    code, out, err = cli(
        capsys, "generate", "--preset", "tiny", "--task", "text_to_image", "--prompt", "a boat",
        "--count", "2", "--seed", "5", "--json",
    )  # fmt: skip
    assert code == 0, err
    outputs = json.loads(out)["outputs"]
    assert [o["seed"] for o in outputs] == [5, 6]
    assert all(Path(o["path"]).exists() for o in outputs)


def test_generate_edit_keeps_the_source_unless_no_preserve_is_given(capsys, tiny_env: Path, tmp_path: Path):
    import numpy as np
    from PIL import Image

    source = tmp_path / "flat.png"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(source)
    mask = tmp_path / "box.png"
    box = Image.new("L", (64, 48), 0)
    box.paste(255, (24, 16, 40, 32))
    box.save(mask)
    args = ["generate", "--preset", "tiny", "--task", "image_edit", "--prompt", "a hat"]
    args += ["--source", str(source), "--mask", str(mask), "--seed", "1"]
    code, out, err = cli(capsys, *args)
    assert code == 0, err
    kept = np.asarray(Image.open(out.strip()).convert("RGB"))
    assert (kept[:8] == (10, 200, 30)).all()  # far from the mask: the source exactly
    code, out, err = cli(capsys, *args, "--no-preserve")
    assert code == 0, err
    raw = np.asarray(Image.open(out.strip()).convert("RGB"))
    assert not (raw[:8] == (10, 200, 30)).all()  # the tiny VAE's own colours


def test_generate_extracts_a_control_signal_and_returns_it_beside_the_result(
    capsys, tiny_env: Path, tmp_path: Path
):
    import numpy as np

    from engine.media import encode_mp4

    y, x = np.mgrid[0:48, 0:64]
    frames = np.stack([np.stack([x * 4 + 9 * t, y * 5, 255 - x * 3], -1) for t in range(5)]).clip(0, 255)
    clip = tmp_path / "walk.mp4"
    encode_mp4(clip, frames.astype(np.uint8), 16)
    code, out, err = cli(
        capsys, "generate", "--preset", "tiny", "--task", "video_control", "--prompt", "a robot",
        "--control", str(clip), "--control-kind", "edges", "--json",
    )  # fmt: skip
    assert code == 0, err
    outputs = json.loads(out)["outputs"]
    assert [o["role"] for o in outputs] == ["result", "control"]
    assert outputs[0]["num_frames"] == outputs[1]["num_frames"] == 5


def test_generate_edits_an_image_without_a_mask_by_its_target(capsys, tiny_env: Path, tmp_path: Path):
    photo = make_png(tmp_path / "room.png")
    code, out, err = cli(
        capsys, "generate", "--preset", "tiny", "--task", "image_edit", "--prompt", "a green sofa",
        "--source", str(photo), "--target", "sofa", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert [o["role"] for o in json.loads(out)["outputs"]] == ["result", "mask"]

"""Configuration loading: defaults < TOML < UNISON_* env < flags, and clear errors naming the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from engine.config import QWEN_ID, EngineConfig
from engine.errors import InvalidRequest
from unison_mcp.cli import build_parser
from unison_mcp.config import BY_PATH, INTERNAL, SETTINGS, ConfigError, ServerConfig, Setting, load_config

ROOT = Path(__file__).resolve().parents[1]


def flags(*argv: str):
    """The namespace the real CLI produces for ``serve`` with these flags."""
    return build_parser().parse_args(["serve", *argv])


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "unison.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_nothing_configured_gives_the_defaults():
    assert load_config(None, env={}) == ServerConfig()


def test_each_layer_overrides_the_one_below(tmp_path: Path):
    toml = write_toml(
        tmp_path,
        """
wait_s = 5
queue_size = 3
device = "cuda"
[sampling]
steps = 10
guidance = 4.0
[engine.limits]
max_frames = 81
""",
    )
    env = {"UNISON_STEPS": "20", "UNISON_QUEUE_SIZE": "4", "UNISON_CONFIG": str(toml)}
    config = load_config(flags("--steps", "30"), env=env)

    assert config.engine.sampling.steps == 30  # flag beats env and TOML
    assert config.queue_size == 4  # env beats TOML
    assert config.wait_s == 5.0  # TOML beats the default
    assert config.engine.device == "cuda"
    assert config.engine.sampling.guidance == 4.0
    assert config.engine.limits.max_frames == 81
    assert config.engine.limits.max_side == 1920  # untouched default in a table TOML only partly set


def test_the_config_flag_beats_the_environment_variable_for_the_file(tmp_path: Path):
    a = write_toml(tmp_path, "wait_s = 1")
    b = tmp_path / "other.toml"
    b.write_text("wait_s = 2", encoding="utf-8")
    assert load_config(flags("--config", str(b)), env={"UNISON_CONFIG": str(a)}).wait_s == 2.0
    assert load_config(flags(), env={"UNISON_CONFIG": str(a)}).wait_s == 1.0
    assert load_config(None, env={}, toml_path=b).wait_s == 2.0


def test_an_unknown_toml_key_is_an_error_naming_it_with_a_suggestion(tmp_path: Path):
    toml = write_toml(tmp_path, "[sampling]\nstepz = 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, env={}, toml_path=toml)
    assert "sampling.stepz" in str(err.value)
    assert "did you mean steps" in str(err.value)
    assert str(toml) in str(err.value)


def test_a_flat_setting_name_in_toml_points_to_its_table(tmp_path: Path):
    toml = write_toml(tmp_path, "max_side = 1024\n")
    with pytest.raises(ConfigError, match=r"did you mean limits\.max_side"):
        load_config(None, env={}, toml_path=toml)


def test_a_bad_toml_value_names_the_file_and_key(tmp_path: Path):
    toml = write_toml(tmp_path, "[sampling]\nsteps = 0\n")
    with pytest.raises(ConfigError) as err:
        load_config(None, env={}, toml_path=toml)
    message = str(err.value)
    assert f"{toml}: sampling.steps=0" in message
    assert "greater than or equal to 1" in message
    assert err.value.code == "config_error"


def test_a_table_key_given_a_plain_value_is_refused(tmp_path: Path):
    toml = write_toml(tmp_path, "limits = 3\n")
    with pytest.raises(ConfigError, match=r"limits=3: must be a table"):
        load_config(None, env={}, toml_path=toml)


def test_broken_toml_and_a_missing_file_are_clear_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(None, env={}, toml_path=write_toml(tmp_path, "wait_s = = 3"))
    with pytest.raises(ConfigError, match="no such file"):
        load_config(None, env={"UNISON_CONFIG": str(tmp_path / "absent.toml")})


def test_a_bad_environment_value_names_the_variable():
    with pytest.raises(ConfigError, match=r"UNISON_PORT='http': .*integer"):
        load_config(None, env={"UNISON_PORT": "http"})
    with pytest.raises(ConfigError, match=r"UNISON_PRELOAD='maybe': must be one of 1/0"):
        load_config(None, env={"UNISON_PRELOAD": "maybe"})
    with pytest.raises(ConfigError, match=r"UNISON_TRANSPORT='ws': must be one of stdio, http"):
        load_config(None, env={"UNISON_TRANSPORT": "ws"})


def test_a_bad_flag_value_names_the_flag():
    with pytest.raises(ConfigError, match=r"--port=70000: .*less than or equal to 65535"):
        load_config(flags("--port", "70000"), env={})


def test_allowed_roots_come_from_the_environment_separated_by_pathsep(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    config = load_config(None, env={"UNISON_ALLOWED_ROOTS": f"{a}{os.pathsep}{b}{os.pathsep}"})
    assert config.engine.allowed_roots == [a, b]
    # The output directory is always readable too.
    assert config.roots()[-1] == config.output_dir


def test_repeated_allow_root_flags_replace_the_environments_roots(tmp_path: Path):
    env = {"UNISON_ALLOWED_ROOTS": str(tmp_path / "env")}
    config = load_config(flags("--allow-root", "/x", "--allow-root", "/y"), env=env)
    assert config.engine.allowed_roots == [Path("/x"), Path("/y")]


def test_paths_in_a_toml_file_are_relative_to_the_file(tmp_path: Path):
    sub = tmp_path / "conf"
    sub.mkdir()
    toml = sub / "u.toml"
    toml.write_text('output_dir = "out"\nallowed_roots = ["media", "/abs"]\nplanner_model = "./qwen"\n')
    config = load_config(None, env={}, toml_path=toml)
    assert config.engine.output_dir == sub / "out"
    assert config.engine.allowed_roots == [sub / "media", Path("/abs")]
    assert config.engine.planner_model == str(sub / "qwen")


def test_hub_ids_are_not_mistaken_for_paths(tmp_path: Path):
    toml = write_toml(tmp_path, 'generator_model = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"\n')
    assert (
        load_config(None, env={}, toml_path=toml).engine.generator_model
        == "Wan-AI/Wan2.1-VACE-1.3B-diffusers"
    )


def test_none_switches_off_an_optional_model_from_any_source(tmp_path: Path):
    config = load_config(flags("--planner-model", "none"), env={"UNISON_PROJECTOR": "none"})
    assert config.engine.planner_model is None
    assert config.engine.projector is None
    assert config.engine.backend == "rules"
    toml = write_toml(tmp_path, 'adapter = "none"\n')
    config = load_config(None, env={}, toml_path=toml)
    assert config.engine.adapter is None
    assert config.engine.planner_model == QWEN_ID
    assert config.engine.backend == "instruct"


def test_the_auth_token_comes_from_its_environment_variable():
    assert load_config(None, env={"UNISON_AUTH_TOKEN": "s3cret"}).auth_token == "s3cret"


def test_performance_switches_and_booleans_from_flags_and_toml(tmp_path: Path):
    toml = write_toml(tmp_path, '[performance]\nvae_tiling = true\noffload = "model"\n')
    config = load_config(flags("--compile", "--no-vae-tiling", "--step-cache", "mag"), env={}, toml_path=toml)
    perf = config.engine.performance
    assert (perf.compile, perf.vae_tiling, perf.offload, perf.cache) == (True, False, "model", "mag")
    assert load_config(None, env={"UNISON_BATCH_CFG": "yes"}).engine.performance.batch_cfg is True


def test_a_mapping_of_setting_names_works_and_refuses_unknown_names():
    config = load_config({"dtype": "float16", "understand_max_pixels": 1024, "planner_backend": None}, env={})
    assert config.engine.dtype == "float16"
    assert config.engine.understanding.max_pixels == 1024
    assert config.engine.planner_backend is None  # None means "not given"
    with pytest.raises(ConfigError, match=r"stepz=3: unknown setting \(did you mean steps\?\)"):
        load_config({"stepz": 3}, env={})


def test_the_planner_alias_sets_the_backend():
    assert (
        load_config(build_parser().parse_args(["plan", "--planner", "rules", "x"]), env={}).engine.backend
        == "rules"
    )


def test_an_unknown_preset_is_refused():
    with pytest.raises(ConfigError, match=r"UNISON_PRESET='huge': must be one of tiny"):
        load_config(None, env={"UNISON_PRESET": "huge"})


def test_every_setting_lands_on_a_real_field():
    """A row of the table pointing at a missing field would silently do nothing."""
    dumped = ServerConfig().model_dump()
    for s in SETTINGS:
        node = dumped
        for key in s.path:
            assert key in node, f"{s.flag} -> {'.'.join(s.path)}"
            node = node[key]
    assert len({s.flag for s in SETTINGS}) == len(SETTINGS)
    assert len({s.env for s in SETTINGS}) == len(SETTINGS)


def test_the_tiny_preset_starts_from_the_tiny_config_and_explicit_settings_win(tiny_paths, tmp_path: Path):
    env = {"UNISON_TINY_DIR": str(tiny_paths.root), "UNISON_GUIDANCE": "2.5"}
    config = load_config(
        flags("--preset", "tiny", "--output-dir", str(tmp_path), "--max-frames", "33"), env=env
    )
    tiny = EngineConfig.tiny(tiny_paths.root)
    assert config.engine.preset == "tiny"
    assert config.engine.planner_model == tiny.planner_model == str(tiny_paths.qwen)
    assert config.engine.generator_model == str(tiny_paths.wan)
    assert config.engine.device == "cpu"
    assert config.engine.sampling.steps == tiny.sampling.steps  # kept from the preset
    assert config.engine.sampling.guidance == 2.5  # env beats the preset
    assert config.engine.limits.max_frames == 33  # a flag beats the preset
    assert config.engine.limits.default_width == tiny.limits.default_width
    assert config.engine.output_dir == tmp_path


def test_a_tilde_in_any_path_setting_means_the_home_directory_from_every_source(tmp_path: Path):
    # Client configs (JSON "args" / "env") reach the server without a shell to expand "~".
    home = Path.home()
    config = load_config(flags("--cache-dir", "~/hf-cache"), env={"UNISON_OUTPUT_DIR": "~/outs"})
    assert config.engine.cache_dir == home / "hf-cache"
    assert config.engine.output_dir == home / "outs"
    toml = write_toml(tmp_path, 'cache_dir = "~/hub"\nallowed_roots = ["~/Pictures"]\n')
    config = load_config(None, env={}, toml_path=toml)
    assert config.engine.cache_dir == home / "hub"
    assert config.engine.allowed_roots == [home / "Pictures"]


@pytest.mark.parametrize("token", [" ", "\t  "])
def test_a_blank_auth_token_is_an_error_not_a_server_without_authentication(token):
    from unison_mcp.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="--auth-token.*blank"):
        load_config({"auth_token": token}, env={})
    with pytest.raises(ConfigError, match="UNISON_AUTH_TOKEN.*blank"):
        load_config(None, env={"UNISON_AUTH_TOKEN": token})


# ---------------------------------------------------------------------------------------------
# Every field is a setting three ways, declared once.

#: Fields the program sets itself, deliberately without a flag, variable or TOML key.
DELIBERATELY_INTERNAL = {
    ("engine", "tiny_dir"),  # set by the tiny preset, from UNISON_TINY_DIR
    ("engine", "limits", "default_fps"),  # kept equal to sampling.fps
}


def leaf_fields(model: type[BaseModel], at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every leaf field path of ``model``, read from pydantic (not from the settings table)."""
    out = []
    for key, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            out += leaf_fields(sub, (*at, key))
        else:
            out.append((*at, key))
    return out


def field_at(config: BaseModel, path: tuple[str, ...]) -> Any:
    node: Any = config
    for key in path:
        node = getattr(node, key)
    return node


def another_value(s: Setting, default: Any, tmp_path: Path) -> Any:
    """A valid value for ``s`` that is not its default."""
    if s.kind == "bool":
        return not default
    # An optional number (None: the program decides) is given a value of its own.
    if s.kind == "int":
        return 2 if default is None else default + 1
    if s.kind == "float":
        return 1.5 if default is None else default + 1.5
    if s.kind == "choice":
        assert s.choices is not None
        return next(c for c in s.choices if c != default)
    if s.kind == "path":
        return tmp_path / s.name
    if s.kind == "paths":
        return [tmp_path / "a", tmp_path / "b"]
    if s.kind == "strs":
        return ["gpu.example.com", "edge.example:8443"]
    return f"x-{s.name}"


def as_flags(s: Setting, flag: str, value: Any) -> list[str]:
    if s.kind == "bool":
        return [flag if value else "--no-" + flag[2:]]
    if s.kind in ("paths", "strs"):
        return [arg for v in value for arg in (flag, str(v))]
    return [flag, str(value)]


def as_env(s: Setting, value: Any) -> str:
    if s.kind == "bool":
        return "yes" if value else "no"
    if s.kind == "paths":
        return os.pathsep.join(str(v) for v in value)
    if s.kind == "strs":
        return ",".join(value)
    return str(value)


def as_toml(s: Setting, value: Any) -> str:
    *tables, key = s.toml_key.split(".")
    if s.kind == "paths":
        value = [str(v) for v in value]
    elif s.kind == "path":
        value = str(value)
    # JSON scalars, strings and lists of strings are valid TOML values.
    return (f"[{'.'.join(tables)}]\n" if tables else "") + f"{key} = {json.dumps(value)}\n"


def test_every_field_is_a_setting_or_listed_as_internal():
    leaves = set(leaf_fields(ServerConfig))
    assert set(INTERNAL) == DELIBERATELY_INTERNAL
    assert leaves - DELIBERATELY_INTERNAL == set(BY_PATH)
    assert all(s.help for s in SETTINGS), [s.name for s in SETTINGS if not s.help]


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_each_setting_is_reachable_by_its_flags_its_variable_and_its_toml_key(
    setting: Setting, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The tiny preset's base reads UNISON_TINY_DIR; it only points there, it builds nothing.
    monkeypatch.setenv("UNISON_TINY_DIR", str(tmp_path / "tiny"))
    default = field_at(ServerConfig(), setting.path)
    value = another_value(setting, default, tmp_path)

    for flag in (setting.flag, *setting.aliases):
        config = load_config(flags(*as_flags(setting, flag, value)), env={})
        assert field_at(config, setting.path) == value, flag
    config = load_config(None, env={setting.env: as_env(setting, value)})
    assert field_at(config, setting.path) == value, setting.env
    config = load_config(None, env={}, toml_path=write_toml(tmp_path, as_toml(setting, value)))
    assert field_at(config, setting.path) == value, setting.toml_key


def test_the_input_pixel_limit_is_a_flag_a_variable_and_a_toml_key(tmp_path: Path):
    config = load_config(flags("--max-input-pixels", "1000000"), env={})
    assert config.engine.limits.max_input_pixels == 1_000_000
    config = load_config(None, env={"UNISON_MAX_INPUT_PIXELS": "2000000"})
    assert config.engine.limits.max_input_pixels == 2_000_000
    toml = write_toml(tmp_path, "[limits]\nmax_input_pixels = 3000000\n")
    assert load_config(None, env={}, toml_path=toml).engine.limits.max_input_pixels == 3_000_000


def test_an_internal_field_in_toml_is_refused_saying_why(tmp_path: Path):
    toml = write_toml(tmp_path, "[limits]\ndefault_fps = 8\n")
    with pytest.raises(
        ConfigError, match=r"limits\.default_fps is not a setting \(kept equal to sampling\.fps"
    ):
        load_config(None, env={}, toml_path=toml)


def test_the_flag_help_is_the_fields_description(capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    field = EngineConfig.model_fields["local_files_only"]
    assert f"--local-files-only, --no-local-files-only {field.description} [UNISON_LOCAL_FILES_ONLY]" in out


# ---------------------------------------------------------------------------------------------
# The input policy is the engine's.


def test_the_input_policy_lives_in_the_engine_config_with_any_local_file_by_default():
    config = EngineConfig()
    assert config.allowed_roots is None  # the CLI and the Python API read any local file
    assert config.max_input_bytes == 2 * 1024**3
    server = ServerConfig()
    assert server.roots() == [server.output_dir]  # the server reads only its outputs unless told
    assert server.max_input_bytes == 2 * 1024**3


def test_the_server_config_still_takes_roots_and_a_byte_limit_and_hands_them_to_the_engine(tmp_path: Path):
    server = ServerConfig(
        engine=EngineConfig(output_dir=tmp_path), allowed_roots=[tmp_path / "in"], max_input_bytes=10
    )
    assert server.engine.allowed_roots == [tmp_path / "in"]
    assert server.engine.max_input_bytes == server.max_input_bytes == 10
    assert server.roots() == [(tmp_path / "in").resolve(), tmp_path.resolve()]
    toml = write_toml(tmp_path, "max_input_bytes = 1000\n[engine]\nallowed_roots = ['/data']\n")
    config = load_config(None, env={}, toml_path=toml)
    assert (config.engine.max_input_bytes, config.engine.allowed_roots) == (1000, [Path("/data")])


def test_an_empty_roots_variable_means_no_roots_configured():
    assert load_config(None, env={"UNISON_ALLOWED_ROOTS": ""}).engine.allowed_roots is None


# ---------------------------------------------------------------------------------------------
# The tiny preset carries the tiny models' limits.


def test_the_tiny_preset_never_plans_a_size_or_window_its_model_cannot_run(tmp_path: Path):
    from engine.plan import build_plan

    config = load_config(flags("--preset", "tiny"), env={"UNISON_TINY_DIR": str(tmp_path / "tiny")})
    limits = config.engine.limits
    # A side above the model's 512 is scaled down into it, never run as asked.
    plan = build_plan("text_to_image", "a cat", width=528, height=16, limits=limits)
    assert plan.width <= 512 and any("scaled down" in n for n in plan.notes)
    with pytest.raises(InvalidRequest) as err:
        build_plan("text_to_image", "a cat", width=4 * 512 + 16, height=16, limits=limits)
    assert err.value.code == "invalid_request" and err.value.field == "width"
    # One run holds at most 125 frames: a task that cannot chain windows refuses more.
    with pytest.raises(InvalidRequest) as err:
        build_plan(
            "first_last_to_video", "a cat", [("/a.png", "first_frame"), ("/b.png", "last_frame")],
            width=16, height=16, num_frames=129, limits=limits,
        )  # fmt: skip
    assert err.value.field == "num_frames"
    # The real models' limits are not narrowed by the preset's.
    assert (
        build_plan("text_to_image", "a cat", width=1920, height=480, limits=EngineConfig().limits).width
        == 1920
    )


def test_the_tiny_preset_generates_at_its_largest_side(tiny_config: EngineConfig):
    from engine.engine import Engine
    from engine.plan import build_plan
    from engine.results import Sampling

    plan = build_plan("text_to_image", "a cat", width=512, height=16, limits=tiny_config.limits)
    result = Engine(tiny_config).generate(plan, Sampling(steps=1))
    assert (result.outputs[0].width, result.outputs[0].height) == (512, 16)
    assert Path(result.outputs[0].path).exists()


# ---------------------------------------------------------------------------------------------
# The tiny-model factory is not part of the runtime import graph.


def _runtime_modules() -> list[str]:
    """Every module of engine/ and unison_mcp/ but the tiny-model factory (engine/tiny) and
    ``unison_mcp.__main__`` (which runs the CLI when imported)."""
    names = []
    for package in ("engine", "unison_mcp"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            if not name.startswith("engine.tiny") and name != "unison_mcp.__main__":
                names.append(name)
    return names


def test_no_runtime_module_and_no_tiny_preset_imports_the_tiny_model_factory(tmp_path: Path):
    modules = _runtime_modules()
    assert {"engine.config", "engine.engine", "unison_mcp.config", "unison_mcp.progress"} <= set(modules)
    code = (
        "import importlib, sys\n"
        "from pathlib import Path\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        "import engine.config, unison_mcp.config\n"
        f"engine.config.EngineConfig.tiny(Path({str(tmp_path)!r}))\n"
        "unison_mcp.config.load_config({'preset': 'tiny'}, env={})\n"
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('engine.tiny'))))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT), "UNISON_TINY_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Importing every runtime module and pointing a configuration at the tiny models loads
    # nothing of engine.tiny: where the models live is engine.config.tiny_paths.
    assert proc.stdout.split() == []

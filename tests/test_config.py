"""Configuration loading: defaults < TOML < UNISON_* env < flags, and clear errors naming the key."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.config import QWEN_ID, EngineConfig
from unison_mcp.cli import build_parser
from unison_mcp.config import SETTINGS, ConfigError, ServerConfig, load_config


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
    assert config.allowed_roots == [a, b]
    # The output directory is always readable too.
    assert config.roots()[-1] == config.output_dir


def test_repeated_allow_root_flags_replace_the_environments_roots(tmp_path: Path):
    env = {"UNISON_ALLOWED_ROOTS": str(tmp_path / "env")}
    config = load_config(flags("--allow-root", "/x", "--allow-root", "/y"), env=env)
    assert config.allowed_roots == [Path("/x"), Path("/y")]


def test_paths_in_a_toml_file_are_relative_to_the_file(tmp_path: Path):
    sub = tmp_path / "conf"
    sub.mkdir()
    toml = sub / "u.toml"
    toml.write_text('output_dir = "out"\nallowed_roots = ["media", "/abs"]\nplanner_model = "./qwen"\n')
    config = load_config(None, env={}, toml_path=toml)
    assert config.engine.output_dir == sub / "out"
    assert config.allowed_roots == [sub / "media", Path("/abs")]
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
    assert config.allowed_roots == [home / "Pictures"]


@pytest.mark.parametrize("token", [" ", "\t  "])
def test_a_blank_auth_token_is_an_error_not_a_server_without_authentication(token):
    from unison_mcp.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="--auth-token.*blank"):
        load_config({"auth_token": token}, env={})
    with pytest.raises(ConfigError, match="UNISON_AUTH_TOKEN.*blank"):
        load_config(None, env={"UNISON_AUTH_TOKEN": token})

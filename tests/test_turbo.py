"""Turbo (a step-distillation LoRA with its preset) and user LoRAs on the tiny Wan-VACE pipeline.

The tiny LoRA (engine/tiny/lora.py) is in the original-Wan layout the published Wan LoRAs use,
so it goes through diffusers' own conversion and ``load_lora_weights`` like a real one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from engine.config import EngineConfig, LoraSettings, SamplingDefaults
from engine.errors import InvalidRequest, ModelError
from engine.generator import Generator
from engine.loras import TURBO, parse_lora
from engine.prepare import Prepared
from engine.results import LoraChoice, Sampling
from engine.sampling import resolve_sampling

PROMPT = "a red fox runs through snow"
PREPARED = Prepared(width=32, height=32, num_frames=1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models gain nothing from threads (see tests/test_generator.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(tiny_paths, **loras: object) -> EngineConfig:
    return EngineConfig(
        planner_model=None,
        adapter=None,
        projector=None,
        generator_model=str(tiny_paths.wan),
        device="cpu",
        dtype="float32",
        local_files_only=True,
        sampling=SamplingDefaults(steps=2),
        loras=LoraSettings(**{"turbo_lora": str(tiny_paths.lora), "turbo_steps": 3, **loras}),
    )


@pytest.fixture(scope="module")
def styled(tiny_paths) -> Generator:
    """A generator with the tiny LoRA as the user LoRA ``style`` (strength 0.5) and as turbo."""
    gen = Generator(_config(tiny_paths, adapters=[f"style={tiny_paths.lora}:0.5"]))
    gen.load()
    return gen


def _run(gen: Generator, **sampling: object) -> np.ndarray:
    resolved = resolve_sampling(Sampling(seed=3, **sampling), gen.config.sampling, loras=gen.config.loras)
    return gen.run(PREPARED, PROMPT, extra_tokens=None, sampling=resolved, control=None)


def _forwards(gen: Generator, **sampling: object) -> int:
    calls = []
    handle = gen.pipeline.transformer.register_forward_hook(lambda *_: calls.append(1))
    try:
        _run(gen, **sampling)
    finally:
        handle.remove()
    return len(calls)


# --- turbo ---------------------------------------------------------------------------------------


def test_turbo_takes_its_preset_and_a_requests_own_values_still_win() -> None:
    settings = LoraSettings(turbo_steps=6, turbo_guidance=1.0, turbo_flow_shift=8.0)
    turbo = resolve_sampling(Sampling(turbo=True, seed=1), SamplingDefaults(), loras=settings)
    assert (turbo.turbo, turbo.steps, turbo.guidance, turbo.flow_shift) == (True, 6, 1.0, 8.0)
    mine = resolve_sampling(Sampling(turbo=True, steps=4, seed=1), SamplingDefaults(), loras=settings)
    assert mine.steps == 4
    off = resolve_sampling(Sampling(seed=1), SamplingDefaults(), loras=settings)
    assert (off.turbo, off.steps, off.guidance) == (False, 50, 5.0)
    configured_on = resolve_sampling(
        Sampling(seed=1), SamplingDefaults(), loras=settings.model_copy(update={"turbo": True})
    )
    assert configured_on.turbo and configured_on.steps == 6


def test_the_tiny_lora_loads_through_diffusers_and_a_non_turbo_call_is_unchanged_bit_for_bit(
    tiny_paths,
) -> None:
    gen = Generator(_config(tiny_paths))
    gen.load()
    before = _run(gen)
    assert not gen._turbo_loaded  # turbo off by default: nothing is read until a turbo call
    turbo = _run(gen, turbo=True, steps=2)
    assert TURBO in gen.pipeline.transformer.peft_config
    after = _run(gen)
    assert np.array_equal(before, after)
    assert not np.array_equal(turbo, _run(gen, steps=2, guidance=1.0))  # the LoRA changes the output


def test_turbo_runs_one_dit_forward_per_step_and_guidance_runs_two(styled: Generator) -> None:
    assert _forwards(styled, turbo=True) == 3  # turbo_steps=3, guidance 1: no unconditional pass
    assert _forwards(styled) == 4  # 2 steps at guidance 5: conditional and unconditional


def test_turbo_configured_on_is_loaded_with_the_pipeline(tiny_paths) -> None:
    gen = Generator(_config(tiny_paths, turbo=True))
    gen.load()
    assert gen._turbo_loaded and TURBO in gen.pipeline.transformer.peft_config


# --- user LoRAs ----------------------------------------------------------------------------------


def test_a_user_lora_switched_per_call_changes_the_output_and_switching_back_restores_it(
    styled: Generator,
) -> None:
    plain = _run(styled)
    with_style = _run(styled, loras=[LoraChoice(name="style")])
    stronger = _run(styled, loras=[LoraChoice(name="style", strength=1.5)])
    assert not np.array_equal(plain, with_style)
    assert not np.array_equal(with_style, stronger)
    assert np.array_equal(_run(styled), plain)
    assert np.array_equal(_run(styled, loras=[LoraChoice(name="style")]), with_style)


def test_an_unknown_lora_name_is_refused_naming_the_field_and_the_configured_names(styled: Generator) -> None:
    with pytest.raises(InvalidRequest, match=r"loras\[0\]\.name='sepia'.*configured: style") as info:
        _run(styled, loras=[LoraChoice(name="sepia")])
    assert info.value.field == "loras[0].name"


def test_a_bad_strength_is_refused_per_call_and_in_the_settings() -> None:
    with pytest.raises(ValueError, match="strength"):
        LoraChoice(name="style", strength=9.0)
    with pytest.raises(InvalidRequest, match=r"lora='style=a\.safetensors:9'.*between"):
        parse_lora("style=a.safetensors:9")


@pytest.mark.parametrize(
    ("text", "name", "path", "strength"),
    [
        ("style=/loras/a.safetensors", "style", "/loras/a.safetensors", 1.0),
        ("style=/loras/a.safetensors:0.7", "style", "/loras/a.safetensors", 0.7),
        ("ink=C:/loras/ink.safetensors", "ink", "C:/loras/ink.safetensors", 1.0),
        ("hub=owner/repo/file.safetensors:-0.5", "hub", "owner/repo/file.safetensors", -0.5),
    ],
)
def test_a_lora_setting_reads_name_path_and_an_optional_strength(text, name, path, strength) -> None:
    spec = parse_lora(text)
    assert (spec.name, spec.path, spec.strength) == (name, path, strength)


@pytest.mark.parametrize("text", ["style", "=a.safetensors", "turbo=a.safetensors", "1x=a.safetensors"])
def test_a_malformed_lora_setting_is_refused(text: str) -> None:
    with pytest.raises(InvalidRequest, match="lora="):
        parse_lora(text)


def test_a_toml_table_of_loras_reads_as_the_flags_do() -> None:
    settings = LoraSettings.model_validate({"adapters": {"style": "/a.safetensors:0.5"}})
    assert settings.adapters == ["style=/a.safetensors:0.5"]


def test_a_lora_of_another_base_is_a_model_error_naming_the_setting(tiny_paths, tmp_path: Path) -> None:
    # The same layout at another width, as a 14B LoRA on the 1.3B: shapes that do not fit.
    wide = {
        k: torch.cat([v, v], dim=1 if k.endswith("lora_A.weight") else 0)
        for k, v in load_file(tiny_paths.lora).items()
    }
    save_file(wide, tmp_path / "wide.safetensors")
    gen = Generator(_config(tiny_paths, adapters=[f"wide={tmp_path / 'wide.safetensors'}"]))
    with pytest.raises(ModelError, match=r"lora wide=.*wide\.safetensors"):
        gen.load()


def test_a_lora_whose_keys_match_no_layer_is_a_model_error(tiny_paths, tmp_path: Path) -> None:
    # An image-model LoRA: nothing in it names a Wan DiT layer.
    other = {
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
        "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4),
    }
    save_file(other, tmp_path / "sd.safetensors")
    gen = Generator(_config(tiny_paths, adapters=[f"sd={tmp_path / 'sd.safetensors'}"]))
    with pytest.raises(ModelError, match=r"lora sd="):
        gen.load()


def test_a_missing_lora_file_is_a_model_error(tiny_paths, tmp_path: Path) -> None:
    gen = Generator(_config(tiny_paths, adapters=[f"gone={tmp_path / 'gone.safetensors'}"]))
    with pytest.raises(ModelError, match="gone"):
        gen.load()


# --- through MCP and the CLI, on the real engine ---------------------------------------------------


async def test_generate_with_turbo_through_mcp_runs_its_steps_at_one_dit_forward_each(
    tiny_paths, tmp_path: Path
):
    from mcp import Client

    from engine.engine import Engine
    from unison_mcp.config import ServerConfig
    from unison_mcp.server import build_server

    config = EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path / "outputs")
    engine = Engine(config)
    engine.generator.load()
    calls: list[int] = []
    engine.generator.pipeline.transformer.register_forward_hook(lambda *_: calls.append(1))
    server = build_server(ServerConfig(engine=config), engine=engine)
    async with Client(server) as client:
        result = await client.call_tool(
            "generate", {"task": "text_to_image", "prompt": "a red fox", "seed": 7, "turbo": True}
        )
    assert not result.is_error, [c.text for c in result.content if c.type == "text"]
    data = result.structured_content
    turbo_steps = config.loras.turbo_steps
    assert (data["steps"], data["guidance"]) == (turbo_steps, 1.0)
    assert len(calls) == turbo_steps


def test_generate_with_turbo_and_a_user_lora_through_the_cli(capsys, tiny_paths, monkeypatch, tmp_path: Path):
    import json

    from unison_mcp.cli import main

    monkeypatch.setenv("UNISON_TINY_DIR", str(tiny_paths.root))
    monkeypatch.setenv("UNISON_OUTPUT_DIR", str(tmp_path / "outputs"))
    argv = [
        "generate",
        "--preset",
        "tiny",
        "--task",
        "text_to_image",
        "--prompt",
        "a lighthouse",
        "--seed",
        "3",
    ]
    argv += ["--turbo", "--lora", f"style={tiny_paths.lora}:0.5", "--use-lora", "style:0.8", "--json"]
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    result = json.loads(out)
    assert (result["steps"], result["guidance"]) == (1, 1.0)  # the tiny preset's turbo_steps
    assert Path(result["outputs"][0]["path"]).is_file()

"""FP8 (``--quantize fp8``): the setting, its refusals on this CPU, and which DiT layers it converts.

torchao's float8 quantization refuses to run without a CUDA GPU of compute capability 8.9+ (its
``_check_hardware_support`` asserts it when a weight is converted), so no numeric float8 test can
run on a CPU: the speed, memory and output difference against bfloat16 are ``bench_gpu.py``'s rows.
What runs here is everything that decides *whether* and *where* fp8 applies, on the real loading
path and the same functions the GPU path uses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from engine.config import EngineConfig, PerformanceOptions, SamplingDefaults
from engine.errors import InvalidRequest
from engine.generator import Generator
from engine.quantize import (
    FP8_ALIGN,
    can_hand_over,
    check_quantize,
    fp8_linear_names,
    fp8_unavailable,
    quantize_dit,
    torchao_missing,
)
from unison_mcp.cli import build_parser
from unison_mcp.config import ConfigError, ServerConfig, load_config
from unison_mcp.doctor import run_doctor

CPU = torch.device("cpu")
FP8 = PerformanceOptions(quantize="fp8")


def _config(tiny_paths, **performance: object) -> EngineConfig:
    return EngineConfig(
        planner_model=None,
        adapter=None,
        projector=None,
        generator_model=str(tiny_paths.wan),
        device="cpu",
        dtype="float32",
        local_files_only=True,
        sampling=SamplingDefaults(steps=1),
        performance=PerformanceOptions(**performance),
    )


# --- the setting --------------------------------------------------------------------------------


def test_quantize_is_none_by_default_and_fp8_from_the_flag_the_variable_or_toml(tmp_path: Path) -> None:
    assert load_config(None, env={}).engine.performance.quantize == "none"
    parsed = build_parser().parse_args(["serve", "--quantize", "fp8"])
    assert load_config(parsed, env={}).engine.performance.quantize == "fp8"
    assert load_config(None, env={"UNISON_QUANTIZE": "fp8"}).engine.performance.quantize == "fp8"
    toml = tmp_path / "unison.toml"
    toml.write_text('[performance]\nquantize = "fp8"\n', encoding="utf-8")
    assert load_config(None, env={"UNISON_CONFIG": str(toml)}).engine.performance.quantize == "fp8"


def test_an_unknown_quantize_mode_is_refused_naming_the_setting() -> None:
    with pytest.raises(ConfigError, match="UNISON_QUANTIZE='int4': must be one of none, fp8"):
        load_config(None, env={"UNISON_QUANTIZE": "int4"})


# --- refusals before any weight loads -----------------------------------------------------------


def test_fp8_on_a_cpu_is_refused_before_any_weight_is_read(tiny_paths, monkeypatch) -> None:
    from diffusers import WanVACEPipeline

    reads: list[object] = []
    original = WanVACEPipeline.from_pretrained.__func__

    def recording(cls, *args, **kwargs):
        reads.append(args)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(WanVACEPipeline, "from_pretrained", classmethod(recording))
    gen = Generator(_config(tiny_paths, quantize="fp8"))
    with pytest.raises(InvalidRequest) as caught:
        gen.load()
    message = str(caught.value)
    assert "quantize='fp8'" in message
    assert "compute capability 8.9" in message and "cpu" in message
    assert "--quantize none" in message
    assert caught.value.field == "quantize"
    assert reads == [] and not gen.loaded


def test_switching_a_loaded_cpu_generator_to_fp8_is_refused_and_it_keeps_its_pipeline(tiny_paths) -> None:
    gen = Generator(_config(tiny_paths))
    gen.load()
    with pytest.raises(InvalidRequest, match="quantize='fp8'"):
        gen.with_options(FP8)
    assert gen.loaded


def test_fp8_without_torchao_says_what_to_install(monkeypatch) -> None:
    # None in sys.modules is how Python spells "this module cannot be imported".
    monkeypatch.setitem(sys.modules, "torchao", None)
    reason = torchao_missing()
    assert reason is not None and "torchao is not installed" in reason
    assert "unison-mcp[fp8]" in reason


def test_the_installed_torchao_offers_per_row_float8_quantization() -> None:
    pytest.importorskip("torchao")
    assert torchao_missing() is None


def test_no_quantization_asks_nothing_of_the_machine() -> None:
    check_quantize(PerformanceOptions(), CPU, torch.float32)
    assert fp8_unavailable(CPU) is not None


def test_plain_weights_can_be_converted_to_fp8_but_float8_ones_cannot_go_back() -> None:
    assert can_hand_over("none", "fp8") and can_hand_over("fp8", "fp8") and can_hand_over("none", "none")
    assert not can_hand_over("fp8", "none")


def test_doctor_says_fp8_is_not_available_on_this_cpu_and_fails_only_when_it_is_set(tiny_config) -> None:
    plain = {c.name: c for c in run_doctor(ServerConfig(engine=tiny_config)).checks}
    assert plain["fp8"].status == "info" and "compute capability 8.9" in plain["fp8"].detail
    wanted = tiny_config.model_copy(update={"performance": FP8})
    check = {c.name: c for c in run_doctor(ServerConfig(engine=wanted)).checks}["fp8"]
    assert check.status == "fail" and check.hint == "use --quantize none on this machine"


# --- which layers -------------------------------------------------------------------------------


def _block_linears(transformer: torch.nn.Module) -> list[str]:
    return [
        n
        for n, m in transformer.named_modules()
        if isinstance(m, torch.nn.Linear) and n.split(".")[0] in ("blocks", "vace_blocks")
    ]


def test_the_tiny_dit_is_24_wide_so_fp8_would_leave_every_layer_as_it_is(tiny_paths) -> None:
    gen = Generator(_config(tiny_paths))
    transformer = gen.pipeline.transformer  # loaded from the tiny model directory
    assert _block_linears(transformer)  # it has block linears, all off the 16 grid
    assert all(
        m.in_features % FP8_ALIGN for n, m in transformer.named_modules() if n == "blocks.0.attn1.to_q"
    )
    assert fp8_linear_names(transformer) == []
    assert quantize_dit(transformer, "none") == 0


def test_fp8_picks_every_block_linear_under_its_lora_and_no_embedder_head_or_adapter() -> None:
    from diffusers import WanVACETransformer3DModel
    from peft import LoraConfig

    torch.manual_seed(0)
    # The tiny DiT's architecture at widths on the float8 grid: 2 heads x 16 = 32, feed-forward 64.
    transformer = WanVACETransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=64,
        num_layers=3,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        vace_layers=[0, 2],
        vace_in_channels=96,
    )
    # A LoRA on the attention projections, as the Wan LoRAs are: peft wraps each as base_layer.
    transformer.add_adapter(
        LoraConfig(r=16, lora_alpha=16, target_modules=["to_q", "to_k", "to_v", "to_out.0"]),
        adapter_name="style",
    )

    expected = []
    for part, count in (("blocks", 3), ("vace_blocks", 2)):
        for i in range(count):
            if part == "vace_blocks" and i == 0:
                expected.append(f"{part}.{i}.proj_in")
            for attn in ("attn1", "attn2"):
                expected += [
                    f"{part}.{i}.{attn}.{p}.base_layer" for p in ("to_q", "to_k", "to_v", "to_out.0")
                ]
            expected += [f"{part}.{i}.ffn.net.0.proj", f"{part}.{i}.ffn.net.2"]
            if part == "vace_blocks":
                expected.append(f"{part}.{i}.proj_out")

    picked = fp8_linear_names(transformer)
    assert sorted(picked) == sorted(expected)
    assert len(picked) == 3 * 10 + 2 * 11 + 1
    assert not any("lora_" in n or n.startswith(("condition_embedder", "proj_out")) for n in picked)

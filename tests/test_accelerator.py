"""Device, dtype and out-of-memory decided in one place, the same for the planner and the generator."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from engine.accelerator import oom_guard, resolve_device, resolve_dtype
from engine.config import EngineConfig, SamplingDefaults
from engine.errors import InvalidRequest, ModelError, OutOfMemory
from engine.generator import Generator
from engine.planners.qwen import QwenPlanner

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


def _config(tiny_paths: Any, **overrides: Any) -> EngineConfig:
    values: dict[str, Any] = dict(
        planner_model=str(tiny_paths.qwen),
        adapter=None,
        projector=None,
        generator_model=str(tiny_paths.wan),
        local_files_only=True,
        sampling=SamplingDefaults(steps=1),
    )
    values.update(overrides)
    return EngineConfig(**values)


def _planner_error(config: EngineConfig) -> ModelError:
    with pytest.raises(ModelError) as caught:
        QwenPlanner(config).load()
    return caught.value


class _Chose(Exception):
    """Raised in place of loading the planner's weights: carries the device it was sent to."""


@pytest.fixture()
def fake_mps(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)


# --- device --------------------------------------------------------------------------------------


@no_cuda
def test_asking_for_cuda_without_cuda_is_the_same_model_error_for_planner_and_generator(tiny_paths) -> None:
    config = _config(tiny_paths, device="cuda")
    with pytest.raises(ModelError) as generator_error:
        Generator(config)
    planner_error = _planner_error(config)
    assert str(planner_error) == str(generator_error.value)
    assert str(planner_error).startswith("device='cuda': CUDA is not available on this machine")
    assert "available here: cpu" in str(planner_error)


@no_cuda
def test_a_missing_planner_device_names_the_planner_device_setting(tiny_paths) -> None:
    error = _planner_error(_config(tiny_paths, device="cpu", planner_device="cuda:1"))
    assert str(error).startswith("planner_device='cuda:1': CUDA is not available")


def test_with_mps_available_and_no_cuda_auto_picks_mps_for_planner_and_generator(
    tiny_paths, fake_mps: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    from transformers import Qwen2_5_VLForConditionalGeneration

    def chose(*args: Any, **kwargs: Any) -> Any:
        raise _Chose(kwargs["device_map"], kwargs["dtype"])

    monkeypatch.setattr(Qwen2_5_VLForConditionalGeneration, "from_pretrained", chose)
    config = _config(tiny_paths, device="auto", dtype="auto")
    generator = Generator(config)
    assert (generator.device.type, generator.dtype) == ("mps", torch.float32)
    with pytest.raises(_Chose) as planner_choice:
        QwenPlanner(config).load()
    assert planner_choice.value.args == ("mps", torch.float32)


def test_auto_is_the_cpu_when_there_is_no_accelerator(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")


def test_mps_asked_for_without_mps_is_a_model_error_listing_what_is_there(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ModelError, match=r"device='mps': MPS is not available .*available here: cpu"):
        resolve_device("mps")


def test_a_device_name_torch_does_not_know_is_refused_naming_the_setting() -> None:
    with pytest.raises(InvalidRequest, match="planner_device='gpu0': must be auto, cpu, cuda"):
        resolve_device("gpu0", setting="planner_device")


# --- dtype ---------------------------------------------------------------------------------------


def test_auto_dtype_is_bfloat16_on_cuda_and_float32_elsewhere() -> None:
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("mps")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("float16", torch.device("cpu")) == torch.float16


# --- out of memory -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [
        torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
        RuntimeError("MPS backend out of memory (MPS allocated: 17.00 GB)"),
    ],
    ids=["cuda", "runtime-error"],
)
def test_an_out_of_memory_failure_becomes_out_of_memory_saying_what_ran_out(failure: Exception) -> None:
    expected = pytest.raises(OutOfMemory, match="out of accelerator memory while generating 64x48, 5 frames")
    with expected, oom_guard("generating 64x48, 5 frames"):
        raise failure


def test_other_errors_and_an_inner_guards_message_pass_through_unchanged() -> None:
    with pytest.raises(RuntimeError, match="shape mismatch"), oom_guard("planning"):
        raise RuntimeError("shape mismatch")
    inner = pytest.raises(OutOfMemory, match="while loading the generator")
    with inner as caught, oom_guard("generating"), oom_guard("loading the generator"):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory")
    assert "generating" not in str(caught.value)


def test_no_other_module_translates_out_of_memory_on_its_own() -> None:
    root = Path(__file__).resolve().parents[1] / "engine"
    translating = [
        p.relative_to(root).as_posix()
        for p in root.rglob("*.py")
        if "OutOfMemory(" in p.read_text(encoding="utf-8") and p.name not in ("accelerator.py", "errors.py")
    ]
    assert translating == []

"""The speed/memory switches on the tiny Wan-VACE pipeline (CPU): each one applied for real.

Numbers (how much faster, how much memory) belong to the benchmarks; these tests check that each
switch does what it says and changes nothing it should not.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from engine import perf
from engine.config import EngineConfig, PerformanceOptions, SamplingDefaults
from engine.errors import InvalidRequest, ModelError
from engine.generator import Generator, encode_text
from engine.prepare import Prepared
from engine.results import Sampling
from engine.sampling import ResolvedSampling, resolve_sampling

TEXT_DIM = 32
PROMPT = "a red fox runs through snow"
PREPARED = Prepared(width=32, height=32, num_frames=1)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models gain nothing from threads on a shared 2-core machine (see test_generator)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _config(wan_dir: Path, **performance) -> EngineConfig:
    return EngineConfig(
        planner_model=None,
        adapter=None,
        projector=None,
        generator_model=str(wan_dir),
        device="cpu",
        dtype="float32",
        local_files_only=True,
        sampling=SamplingDefaults(steps=2),
        performance=PerformanceOptions(**performance),
    )


def _sampling(**overrides) -> ResolvedSampling:
    values = dict(steps=3, seed=7)
    values.update(overrides)
    defaults = SamplingDefaults(steps=values.pop("steps"))
    return resolve_sampling(Sampling(**values), defaults)


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


def _run(gen: Generator, *, extra: torch.Tensor | None = None, **sampling) -> np.ndarray:
    return gen.run(PREPARED, PROMPT, extra_tokens=extra, sampling=_sampling(**sampling), control=None)


def _hooks(module: torch.nn.Module) -> dict:
    registry = getattr(module, "_diffusers_hook", None)
    return registry.hooks if registry is not None else {}


def _max_diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())


@pytest.fixture(scope="module")
def wan_dir(tiny_paths) -> Path:
    return tiny_paths.wan


@pytest.fixture(scope="module")
def baseline(wan_dir: Path) -> Generator:
    """A generator with every switch off; tests never hand its weights to another generator."""
    gen = Generator(_config(wan_dir))
    gen.load()
    return gen


@pytest.fixture()
def fresh(wan_dir: Path) -> Generator:
    gen = Generator(_config(wan_dir))
    gen.load()
    return gen


def _tiny_transformer():
    from engine.tiny.wan import tiny_transformer

    return tiny_transformer(seed=0).eval()


def _dit_inputs() -> dict:
    g = torch.Generator().manual_seed(1)
    return dict(
        hidden_states=torch.randn(1, 16, 1, 8, 8, generator=g),  # (B, C, F, H, W) latents
        timestep=torch.tensor([500.0]),
        encoder_hidden_states=torch.randn(1, 10, TEXT_DIM, generator=g),  # (B, L, text_dim)
        control_hidden_states=torch.randn(1, 96, 1, 8, 8, generator=g),  # VACE context
        return_dict=False,
    )


# --- batched classifier-free guidance ------------------------------------------------------------


@pytest.mark.parametrize("with_projector", [True, False], ids=["unison-2048", "plain-512"])
def test_batched_cfg_gives_the_unbatched_frames_for_the_same_seed(
    baseline: Generator, fresh: Generator, with_projector: bool
) -> None:
    extra = _tokens() if with_projector else None
    unbatched = _run(baseline, extra=extra)
    gen = fresh.with_options(PerformanceOptions(batch_cfg=True))
    batched = _run(gen, extra=extra)
    assert gen.last_run["batched_passes"] == 3  # one batched forward per step instead of two
    # Same seed, same maths; a batch of two may sum in another order, so allow one uint8 step.
    assert batched.shape == unbatched.shape
    assert _max_diff(batched, unbatched) <= 1


def test_the_batched_transformer_output_matches_two_separate_passes() -> None:
    transformer = _tiny_transformer()
    inputs = _dit_inputs()
    negative = torch.randn(1, 10, TEXT_DIM, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        cond = transformer(**inputs)[0]
        uncond = transformer(**{**inputs, "encoder_hidden_states": negative})[0]
        with perf.batched_cfg(transformer, inputs["encoder_hidden_states"], negative) as hook:
            got_cond = transformer(**inputs)[0]
            got_uncond = transformer(**{**inputs, "encoder_hidden_states": negative})[0]
    assert (hook.batched, hook.served) == (1, 1)
    torch.testing.assert_close(got_cond, cond, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_uncond, uncond, rtol=1e-5, atol=1e-5)
    assert "unison_batch_cfg" not in transformer._diffusers_hook.hooks  # removed after the run


def test_batch_cfg_without_guidance_runs_one_plain_pass_per_step(fresh: Generator) -> None:
    gen = fresh.with_options(PerformanceOptions(batch_cfg=True))
    frames = _run(gen, guidance=1.0)
    assert frames.shape == (1, 32, 32, 3)
    assert gen.last_run["batched_passes"] == 0


# --- caches --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["first_block", "mag"])
def test_a_skipped_pass_with_identical_inputs_equals_the_computed_one(mode: str) -> None:
    # diffusers' hooks alone re-add Wan-VACE's hints on a skipped pass (off by the sum of the
    # hints); with the pin hooks a skip of an unchanged input gives the computed output back.
    transformer = _tiny_transformer()
    inputs = _dit_inputs()
    with torch.no_grad():
        computed = transformer(**inputs)[0]
        extra = {"steps": 4, "mag_ratios": [1.0] * 4} if mode == "mag" else {}
        stats = perf.enable_cache(transformer, mode, threshold=1e3, **extra)
        outs = []
        for _ in range(3):
            with transformer.cache_context("cond"):
                outs.append(transformer(**inputs)[0])
    assert (stats.passes, stats.skipped) == (3, 2)
    for out in outs:
        torch.testing.assert_close(out, computed, rtol=1e-5, atol=1e-5)


def test_first_block_cache_keeps_the_shapes_and_its_hooks_go_when_switched_off(
    baseline: Generator, fresh: Generator
) -> None:
    expected = _run(baseline)
    gen = fresh.with_options(PerformanceOptions(cache="first_block", cache_threshold=1e3))
    assert perf.cache_hook_count(gen.pipeline.transformer) > 0
    cached = _run(gen)
    assert cached.shape == expected.shape and cached.dtype == np.uint8
    # Three steps, a conditional and an unconditional pass each; each context computes its first.
    assert gen.last_run["cache_passes"] == 6
    assert gen.last_run["cache_skipped"] == 4

    gen = gen.with_options(PerformanceOptions(cache="none"))
    assert perf.cache_hook_count(gen.pipeline.transformer) == 0
    assert not gen.pipeline.transformer.is_cache_enabled
    assert np.array_equal(_run(gen), expected)


def test_mag_cache_calibrates_on_its_first_run_then_skips(baseline: Generator, fresh: Generator) -> None:
    expected = _run(baseline, steps=6)
    options = PerformanceOptions(cache="mag", cache_threshold=5.0)
    gen = fresh.with_options(options)
    first = _run(gen, steps=6)
    assert gen.last_run["calibrated"] and gen.last_run["cache_skipped"] == 0
    assert np.array_equal(first, expected)  # calibration computes every step

    assert gen.with_options(options) is gen  # the same options keep the calibration
    second = _run(gen, steps=6)
    assert not gen.last_run["calibrated"]
    assert gen.last_run["cache_skipped"] > 0
    assert second.shape == expected.shape
    # Another step count re-targets the schedule instead of failing.
    assert _run(gen, steps=4).shape == expected.shape

    gen = gen.with_options(PerformanceOptions())
    assert perf.cache_hook_count(gen.pipeline.transformer) == 0
    assert np.array_equal(_run(gen, steps=6), expected)


def test_a_cache_threshold_of_zero_is_refused(wan_dir: Path) -> None:
    gen = Generator(_config(wan_dir, cache="first_block", cache_threshold=0.0))
    with pytest.raises(InvalidRequest, match="cache_threshold=0.0"):
        gen.load()
    assert not gen.loaded


# --- VAE tiling, compile, attention --------------------------------------------------------------


def test_the_vae_tiling_switch_sets_the_vae_state(baseline: Generator, wan_dir: Path) -> None:
    gen = Generator(_config(wan_dir, vae_tiling=True))
    assert gen.pipeline.vae.use_tiling
    assert np.array_equal(_run(gen), _run(baseline))  # tiles only start above 256 px
    gen = gen.with_options(PerformanceOptions(vae_tiling=False))
    assert not gen.pipeline.vae.use_tiling


def test_regional_compile_wraps_each_repeated_block_and_can_be_undone() -> None:
    transformer = _tiny_transformer()
    inputs = _dit_inputs()
    with torch.no_grad():
        eager = transformer(**inputs)[0]
        # "eager": dynamo captures the graphs without inductor's C++ build (minutes on a CPU).
        assert perf.compile_blocks(transformer, backend="eager") == 5  # 3 DiT + 2 VACE blocks
        assert perf.compiled_blocks(transformer) == 5
        compiled = transformer(**inputs)[0]
    torch.testing.assert_close(compiled, eager)
    perf.uncompile_blocks(transformer)
    assert perf.compiled_blocks(transformer) == 0


def test_an_unknown_attention_backend_is_refused_before_loading(wan_dir: Path) -> None:
    gen = Generator(_config(wan_dir, attention_backend="flashy"))
    with pytest.raises(InvalidRequest, match="attention_backend='flashy': must be one of .*native"):
        gen.load()
    assert not gen.loaded


def test_a_backend_whose_package_is_missing_says_what_to_install(wan_dir: Path) -> None:
    pytest.importorskip("diffusers")
    from diffusers.models.attention_dispatch import _CAN_USE_FLASH_ATTN

    if _CAN_USE_FLASH_ATTN:
        pytest.skip("flash-attn is installed here")
    gen = Generator(_config(wan_dir, attention_backend="flash"))
    with pytest.raises(ModelError, match="attention_backend='flash'.*pip install flash-attn"):
        gen.load()


def test_a_cuda_only_backend_is_refused_on_the_cpu(wan_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="attention_backend='_native_cudnn': needs a CUDA device"):
        Generator(_config(wan_dir, attention_backend="_native_cudnn")).load()


def test_an_attention_backend_is_applied_and_unset_again(baseline: Generator, fresh: Generator) -> None:
    expected = _run(baseline)
    gen = fresh.with_options(PerformanceOptions(attention_backend="_native_math"))
    processors = [m.processor for m in gen.pipeline.transformer.modules() if hasattr(m, "processor")]
    assert processors and all(p._attention_backend.value == "_native_math" for p in processors)
    assert _max_diff(_run(gen), expected) <= 1
    gen.with_options(PerformanceOptions())
    assert all(p._attention_backend.value == "native" for p in processors)


def test_a_pipeline_loaded_after_a_backend_switch_gets_sdpa_again(wan_dir: Path) -> None:
    # diffusers keeps the last backend as the process-wide default: a new pipeline must not inherit it.
    Generator(_config(wan_dir, attention_backend="_native_math")).load()
    gen = Generator(_config(wan_dir))
    processors = [m.processor for m in gen.pipeline.transformer.modules() if hasattr(m, "processor")]
    assert all(p._attention_backend.value == "native" for p in processors)


# --- offload -------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["model", "group", "text_encoder_cpu"])
def test_offload_modes_are_a_logged_no_op_on_the_cpu(
    baseline: Generator, wan_dir: Path, mode: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="engine.perf"):
        gen = Generator(_config(wan_dir, offload=mode))
        frames = _run(gen)
    assert f"offload='{mode}' has no effect on cpu" in caplog.text
    assert np.array_equal(frames, _run(baseline))


def test_group_offload_hooks_run_the_pipeline_unchanged(baseline: Generator, fresh: Generator) -> None:
    # The CUDA code path with the CPU at both ends: the hooks install and move nothing.
    pipe = fresh.pipeline
    perf.group_offload(pipe, onload=torch.device("cpu"), offload=torch.device("cpu"))
    assert "group_offloading" in pipe.transformer._diffusers_hook.hooks
    leaves = [m for m in pipe.text_encoder.modules() if "group_offloading" in _hooks(m)]
    assert any(isinstance(m, torch.nn.Linear) for m in leaves)  # umT5 offloads layer by layer
    assert np.array_equal(_run(fresh), _run(baseline))


def test_other_offload_options_load_the_pipeline_again_on_next_use(fresh: Generator) -> None:
    first = fresh.pipeline
    gen = fresh.with_options(PerformanceOptions(offload="text_encoder_cpu"))
    assert not gen.loaded and not fresh.loaded
    assert _run(gen).shape == (1, 32, 32, 3)
    assert gen.pipeline is not first


def test_unpadded_prompt_encoding_matches_the_padded_one(baseline: Generator) -> None:
    # What umT5 on the CPU does: the real tokens only, instead of 512 padded positions.
    pipe = baseline.pipeline

    def encode(pad: bool) -> torch.Tensor:
        return encode_text(
            pipe.tokenizer, pipe.text_encoder, PROMPT, max_sequence_length=512, device="cpu", pad_to_max=pad
        )

    padded, unpadded = encode(True), encode(False)
    assert padded.shape == unpadded.shape and padded.shape[1] == TEXT_DIM
    torch.testing.assert_close(unpadded, padded, rtol=1e-5, atol=1e-5)


# --- options applied at load ---------------------------------------------------------------------


def test_options_from_the_config_are_applied_when_the_pipeline_loads(wan_dir: Path) -> None:
    gen = Generator(_config(wan_dir, cache="first_block", cache_threshold=1e3, vae_tiling=True, compile=True))
    assert not gen.loaded
    pipe = gen.pipeline
    assert perf.cache_hook_count(pipe.transformer) > 0
    assert pipe.vae.use_tiling
    assert perf.compiled_blocks(pipe.transformer) == 5  # compiled lazily: nothing is built until a run


def test_weights_handed_to_a_generator_with_other_options_carry_only_the_new_options(wan_dir: Path) -> None:
    old = Generator(_config(wan_dir, cache="first_block", cache_threshold=1e3, vae_tiling=True, compile=True))
    pipe = old.pipeline
    new = old.with_options(PerformanceOptions(batch_cfg=True))
    assert new.pipeline is pipe  # the same weights, not loaded again
    assert not old.loaded  # the old generator gave them up
    assert perf.cache_hook_count(pipe.transformer) == 0
    assert not pipe.vae.use_tiling
    assert perf.compiled_blocks(pipe.transformer) == 0
    assert new.performance.batch_cfg and new.config.performance == new.performance
    _run(new)
    assert new.last_run["batched_passes"] == 3


def test_options_for_another_generator_are_checked_before_the_weights_move(fresh: Generator) -> None:
    pipe = fresh.pipeline
    with pytest.raises(InvalidRequest, match="cache_threshold=0.0"):
        fresh.with_options(PerformanceOptions(cache="first_block", cache_threshold=0.0))
    assert fresh.pipeline is pipe


def test_the_generator_has_no_configure_or_undo_machinery() -> None:
    assert not hasattr(Generator, "configure")
    assert not hasattr(perf, "Switches")

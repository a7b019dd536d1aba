"""Stage two on the tiny Wan-VACE pipeline: loading, Unison conditioning, sampling, output files."""

from __future__ import annotations

import errno
import json
import os
import re
import threading
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import EngineConfig, Limits, SamplingDefaults
from engine.control import JobControl
from engine.errors import Cancelled, InvalidRequest, ModelError, OutOfMemory, OutOfSpace
from engine.generator import Generator, build_text_context
from engine.outputs import write_output
from engine.prepare import Prepared
from engine.results import Sampling
from engine.sampling import ResolvedSampling, resolve_sampling

TEXT_DIM = 32  # the tiny umT5 width
PROMPT = "a red fox runs through snow"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tiny models are too small to gain from threads, and on a shared 2-core machine OpenMP's
    spin-waiting makes them ~10x slower; restored afterwards for other modules."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def wan_dir(tiny_paths) -> Path:
    return tiny_paths.wan


def _config(wan_dir: Path, **overrides) -> EngineConfig:
    base = dict(
        planner_model=None,
        adapter=None,
        projector=None,
        generator_model=str(wan_dir),
        device="cpu",
        dtype="float32",
        local_files_only=True,
        sampling=SamplingDefaults(steps=2),
    )
    base.update(overrides)
    return EngineConfig(**base)


@pytest.fixture(scope="module")
def generator(wan_dir: Path) -> Generator:
    gen = Generator(_config(wan_dir))
    gen.load()
    return gen


def _sampling(**overrides) -> ResolvedSampling:
    values = dict(steps=2, seed=7)
    values.update(overrides)
    defaults = SamplingDefaults(steps=values.pop("steps"))
    return resolve_sampling(Sampling(**values), defaults)


def _tokens(seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 4, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


# --- loading -------------------------------------------------------------------------------------


def test_the_text_width_is_known_before_loading(wan_dir: Path) -> None:
    gen = Generator(_config(wan_dir))
    assert gen.text_dim == TEXT_DIM
    assert not gen.loaded


def test_the_tiny_pipeline_loads_with_flow_matching_unipc_and_a_float32_vae(generator: Generator) -> None:
    pipe = generator.pipeline
    assert type(pipe).__name__ == "WanVACEPipeline"
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    assert pipe.scheduler.config.prediction_type == "flow_prediction"
    assert pipe.scheduler.config.use_flow_sigmas
    assert pipe.scheduler.config.flow_shift == 5.0
    assert pipe.vae.dtype == torch.float32
    assert generator.text_dim == TEXT_DIM


def test_a_missing_generator_model_is_a_model_error(tmp_path: Path) -> None:
    gen = Generator(_config(tmp_path / "no-such-model"))
    with pytest.raises(ModelError, match="generator_model="):
        gen.load()


def test_an_unknown_device_is_refused_naming_it(wan_dir: Path) -> None:
    with pytest.raises(InvalidRequest, match="device='gpu0'"):
        Generator(_config(wan_dir, device="gpu0"))


# --- sampling settings ---------------------------------------------------------------------------


def test_unset_sampling_takes_the_defaults_and_draws_a_reported_seed() -> None:
    resolved = resolve_sampling(None, SamplingDefaults())
    assert (resolved.steps, resolved.guidance, resolved.flow_shift) == (50, 5.0, 5.0)
    assert (resolved.text_len, resolved.max_sequence_length) == (2048, 512)
    assert resolved.seed_was_random and 0 <= resolved.seed < 2**32


def test_given_sampling_values_win_over_the_defaults() -> None:
    resolved = resolve_sampling(
        Sampling(steps=3, guidance=1.0, seed=11, negative_prompt="blur", flow_shift=3.0), SamplingDefaults()
    )
    assert (resolved.steps, resolved.guidance, resolved.seed, resolved.negative_prompt) == (
        3,
        1.0,
        11,
        "blur",
    )
    assert resolved.flow_shift == 3.0 and not resolved.seed_was_random


def test_the_default_negative_prompt_is_wan21s_and_conditions_the_unconditional_pass(
    generator: Generator,
) -> None:
    resolved = resolve_sampling(Sampling(seed=0), SamplingDefaults())
    assert resolved.negative_prompt.startswith("色调艳丽，过曝，静态，细节模糊不清，字幕")
    _, negative = build_text_context(
        generator.pipeline,
        PROMPT,
        negative_prompt=resolved.negative_prompt,
        extra_tokens=_tokens(),
        text_len=2048,
        max_sequence_length=512,
    )
    _, empty = build_text_context(
        generator.pipeline,
        PROMPT,
        negative_prompt="",
        extra_tokens=_tokens(),
        text_len=2048,
        max_sequence_length=512,
    )
    n = len(generator.pipeline.tokenizer(resolved.negative_prompt).input_ids)
    assert n > 1 and negative[0, : n - 1].abs().sum() > 0  # real tokens, not just </s>
    assert not torch.equal(negative, empty)


def test_too_many_steps_are_refused_naming_the_limit() -> None:
    with pytest.raises(InvalidRequest, match="steps=500: must be between 1 and 200"):
        resolve_sampling(Sampling(steps=500), SamplingDefaults(), limits=Limits())


# --- conditioning --------------------------------------------------------------------------------


def test_the_positive_context_gains_exactly_the_four_projector_tokens_and_the_negative_none(
    generator: Generator,
) -> None:
    pipe = generator.pipeline
    extra = _tokens()
    positive, negative = build_text_context(
        pipe, PROMPT, negative_prompt=PROMPT, extra_tokens=extra, text_len=2048, max_sequence_length=512
    )
    n = len(pipe.tokenizer(PROMPT).input_ids)  # real tokens, </s> included
    assert positive.shape == negative.shape == (1, 2048, TEXT_DIM)
    assert positive[0, :n].abs().sum() > 0
    assert torch.equal(positive[0, :n], negative[0, :n])  # same text, same umT5 output
    assert torch.equal(positive[0, n : n + 4], extra[0])
    assert not positive[0, n + 4 :].any()
    assert not negative[0, n:].any()


def test_the_text_tokens_match_the_pipelines_own_umt5_encoding(generator: Generator) -> None:
    pipe = generator.pipeline
    positive, _ = build_text_context(
        pipe, PROMPT, negative_prompt=None, extra_tokens=None, text_len=2048, max_sequence_length=512
    )
    with torch.no_grad():
        reference = pipe._get_t5_prompt_embeds(PROMPT, max_sequence_length=512)  # (1, 512, D)
    assert torch.allclose(positive, reference, atol=1e-6)


def test_without_projector_tokens_both_contexts_are_512_positions(generator: Generator) -> None:
    positive, negative = build_text_context(
        generator.pipeline,
        PROMPT,
        negative_prompt="",
        extra_tokens=None,
        text_len=2048,
        max_sequence_length=512,
    )
    assert positive.shape == negative.shape == (1, 512, TEXT_DIM)
    assert not negative[0, 1:].any()  # "" is just the end-of-sequence token


def test_projector_tokens_of_the_wrong_width_are_refused(generator: Generator) -> None:
    with pytest.raises(ModelError, match="text_dim must equal"):
        build_text_context(
            generator.pipeline,
            PROMPT,
            negative_prompt=None,
            extra_tokens=torch.zeros(1, 4, TEXT_DIM + 1),
            text_len=2048,
            max_sequence_length=512,
        )


# --- running -------------------------------------------------------------------------------------


def test_text_to_image_gives_one_uint8_frame(generator: Generator) -> None:
    frames = generator.run(
        Prepared(width=32, height=32, num_frames=1),
        PROMPT,
        extra_tokens=_tokens(),
        sampling=_sampling(),
        control=None,
    )
    assert frames.shape == (1, 32, 32, 3)
    assert frames.dtype == np.uint8


def test_text_to_video_gives_every_frame_at_the_asked_size(generator: Generator) -> None:
    frames = generator.run(
        Prepared(width=64, height=48, num_frames=5),
        PROMPT,
        extra_tokens=_tokens(),
        sampling=_sampling(),
        control=None,
    )
    assert frames.shape == (5, 48, 64, 3)
    assert frames.dtype == np.uint8


def test_a_source_video_mask_and_reference_image_are_taken_and_the_reference_is_not_in_the_output(
    generator: Generator,
) -> None:
    size = (32, 32)
    video = [Image.new("RGB", size, (200, 30, 30)) for _ in range(5)]
    mask = [Image.new("L", size, 255) for _ in range(5)]
    reference = [Image.new("RGB", size, (255, 255, 255))]
    frames = generator.run(
        Prepared(width=32, height=32, num_frames=5, video=video, mask=mask, reference_images=reference),
        PROMPT,
        extra_tokens=None,
        sampling=_sampling(),
        control=None,
    )
    assert frames.shape == (5, 32, 32, 3)


def test_the_same_seed_gives_identical_frames_and_another_seed_does_not(generator: Generator) -> None:
    def run(seed: int) -> np.ndarray:
        return generator.run(
            Prepared(width=32, height=32, num_frames=1),
            PROMPT,
            extra_tokens=_tokens(),
            sampling=_sampling(seed=seed),
            control=None,
        )

    first = run(1)
    assert np.array_equal(first, run(1))
    assert not np.array_equal(first, run(2))


def test_the_projector_tokens_change_the_result(generator: Generator) -> None:
    def run(extra: torch.Tensor | None) -> np.ndarray:
        return generator.run(
            Prepared(width=32, height=32, num_frames=1),
            PROMPT,
            extra_tokens=extra,
            sampling=_sampling(),
            control=None,
        )

    assert not np.array_equal(run(None), run(_tokens(5)))


def test_progress_fires_once_per_step_in_the_generating_stage(generator: Generator) -> None:
    seen: list[tuple[int, int, str]] = []
    control = JobControl(on_progress=lambda done, total, stage: seen.append((done, total, stage)))
    generator.run(
        Prepared(width=32, height=32, num_frames=1),
        PROMPT,
        extra_tokens=None,
        sampling=_sampling(steps=3),
        control=control,
    )
    # The stage heard as it begins (step 0), one report per step, then the decode's own stage.
    steps = [(k, 3, "generating") for k in range(4)]
    assert seen == [*steps, (0, 0, "decoding")]
    assert control.snapshot() == {"stage": "decoding", "done": 3, "total": 3}  # after the last step


def test_the_tiny_projector_file_feeds_the_generator_its_four_tokens(
    generator: Generator, tiny_paths
) -> None:
    from engine.projector import load_projector
    from engine.tiny.qwen import text_hidden_size

    hidden = text_hidden_size(tiny_paths.qwen)
    projector = load_projector(tiny_paths.projector, hidden, generator.text_dim)
    with torch.no_grad():
        extra = projector(torch.randn(1, 12, hidden))  # planner features: (1, L-1, hidden)
    assert extra.shape == (1, 4, TEXT_DIM)
    frames = generator.run(
        Prepared(width=32, height=32, num_frames=1),
        PROMPT,
        extra_tokens=extra,
        sampling=_sampling(),
        control=None,
    )
    assert frames.shape == (1, 32, 32, 3)


def test_a_cancel_mid_run_stops_before_decoding_and_the_next_run_still_works(
    generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = generator.pipeline
    prepared = Prepared(width=32, height=32, num_frames=1)
    before = generator.run(
        prepared, PROMPT, extra_tokens=_tokens(), sampling=_sampling(steps=3), control=None
    )

    decodes: list[int] = []
    real_decode = pipe.vae.decode
    monkeypatch.setattr(pipe.vae, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))

    seen: list[int] = []

    def cancel_on_first_step(done: int, total: int, stage: str) -> None:
        seen.append(done)
        if done:  # not as the stage begins (step 0): at its first step
            control.cancel()

    control = JobControl(on_progress=cancel_on_first_step)
    with pytest.raises(Cancelled):
        generator.run(prepared, PROMPT, extra_tokens=_tokens(), sampling=_sampling(steps=3), control=control)
    assert seen == [0, 1]
    assert decodes == []

    after = generator.run(
        prepared, PROMPT, extra_tokens=_tokens(), sampling=_sampling(steps=3), control=JobControl()
    )
    assert decodes == [1]
    assert np.array_equal(before, after)


def test_a_different_flow_shift_reconfigures_the_scheduler_for_that_run(generator: Generator) -> None:
    pipe = generator.pipeline
    prepared = Prepared(width=32, height=32, num_frames=1)

    def run(shift: float) -> np.ndarray:
        return generator.run(
            prepared, PROMPT, extra_tokens=None, sampling=_sampling(flow_shift=shift), control=None
        )

    default = run(5.0)
    sigmas_default = pipe.scheduler.sigmas.clone()
    shifted = run(2.0)
    assert type(pipe.scheduler).__name__ == "UniPCMultistepScheduler"
    assert pipe.scheduler.config.flow_shift == 2.0
    assert pipe.scheduler.config.prediction_type == "flow_prediction"
    assert not torch.equal(pipe.scheduler.sigmas, sigmas_default)
    assert not np.array_equal(default, shifted)
    assert np.array_equal(default, run(5.0))


def test_guidance_of_one_runs_without_a_negative_pass(
    generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = generator.pipeline
    contexts: list[int] = []
    real_forward = pipe.transformer.forward

    def counting_forward(*args, **kwargs):
        contexts.append(kwargs["encoder_hidden_states"].shape[1])
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(pipe.transformer, "forward", counting_forward)
    generator.run(
        Prepared(width=32, height=32, num_frames=1),
        PROMPT,
        extra_tokens=_tokens(),
        sampling=_sampling(guidance=1.0),
        control=None,
    )
    assert contexts == [2048, 2048]  # one conditional pass per step, 2048-position context
    contexts.clear()
    generator.run(
        Prepared(width=32, height=32, num_frames=1),
        PROMPT,
        extra_tokens=None,
        sampling=_sampling(),
        control=None,
    )
    assert contexts == [512] * 4  # conditional + unconditional per step, plain Wan context


def test_running_out_of_accelerator_memory_is_reported_and_the_next_run_works(
    generator: Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = generator.pipeline

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(pipe.transformer, "forward", out_of_memory)
    prepared = Prepared(width=32, height=32, num_frames=1)
    with pytest.raises(OutOfMemory, match="32x32, 1 frames"):
        generator.run(prepared, PROMPT, extra_tokens=None, sampling=_sampling(), control=None)
    monkeypatch.undo()
    frames = generator.run(prepared, PROMPT, extra_tokens=None, sampling=_sampling(), control=None)
    assert frames.shape == (1, 32, 32, 3)


def test_running_out_of_memory_while_loading_is_reported_as_such_and_nothing_stays_loaded(
    wan_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffusers import WanVACEPipeline

    def out_of_memory(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 11.00 GiB")

    monkeypatch.setattr(WanVACEPipeline, "from_pretrained", out_of_memory)
    gen = Generator(_config(wan_dir))
    with pytest.raises(OutOfMemory, match="while loading the generator"):
        gen.load()
    assert not gen.loaded


def test_the_generator_holds_no_lock_of_its_own(generator: Generator) -> None:
    # The engine serialises all model work (one job worker drives the GPU): a second lock here
    # could only deadlock or hide a missing one there.
    lock_types = (type(threading.Lock()), type(threading.RLock()))
    assert not [name for name, value in vars(generator).items() if isinstance(value, lock_types)]


def test_a_bfloat16_generator_keeps_the_vae_in_float32(wan_dir: Path) -> None:
    gen = Generator(_config(wan_dir, dtype="bfloat16"))
    pipe = gen.pipeline
    assert pipe.transformer.dtype == pipe.text_encoder.dtype == torch.bfloat16
    assert pipe.vae.dtype == torch.float32
    frames = gen.run(
        Prepared(width=32, height=32, num_frames=1),
        PROMPT,
        extra_tokens=_tokens(),
        sampling=_sampling(),
        control=None,
    )
    assert frames.shape == (1, 32, 32, 3) and frames.dtype == np.uint8


# --- single-file transformer ---------------------------------------------------------------------

# diffusers name -> original Wan/VACE name: the inverse of diffusers' convert_wan_transformer_to_diffusers
# for the parts the tiny VACE model has.
_TO_ORIGINAL = [
    (r"^scale_shift_table$", "head.modulation"),
    (r"^proj_out\.", "head.head."),
    (r"^condition_embedder\.time_embedder\.linear_1\.", "time_embedding.0."),
    (r"^condition_embedder\.time_embedder\.linear_2\.", "time_embedding.2."),
    (r"^condition_embedder\.text_embedder\.linear_1\.", "text_embedding.0."),
    (r"^condition_embedder\.text_embedder\.linear_2\.", "text_embedding.2."),
    (r"^condition_embedder\.time_proj\.", "time_projection.1."),
    (r"\.attn1\.", ".self_attn."),
    (r"\.attn2\.", ".cross_attn."),
    (r"\.to_q\.", ".q."),
    (r"\.to_k\.", ".k."),
    (r"\.to_v\.", ".v."),
    (r"\.to_out\.0\.", ".o."),
    (r"\.ffn\.net\.0\.proj\.", ".ffn.0."),
    (r"\.ffn\.net\.2\.", ".ffn.2."),
    (r"\.norm2\.", ".norm3."),  # Wan's cross-attention norm is norm3
    (r"\.scale_shift_table$", ".modulation"),
    (r"^(vace_blocks\.\d+)\.proj_in\.", r"\1.before_proj."),
    (r"^(vace_blocks\.\d+)\.proj_out\.", r"\1.after_proj."),
]


def _original_name(key: str) -> str:
    for pattern, replacement in _TO_ORIGINAL:
        key = re.sub(pattern, replacement, key)
    return key


def test_an_original_format_vace_checkpoint_loads_as_the_transformer(
    generator: Generator, wan_dir: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    original = {
        k: v.detach().clone().contiguous() for k, v in generator.pipeline.transformer.state_dict().items()
    }
    renamed = {_original_name(k): v for k, v in original.items()}
    assert "vace_blocks.0.after_proj.weight" in renamed and "blocks.0.self_attn.q.weight" in renamed
    file = tmp_path / "wan2.1_vace_tiny.safetensors"
    save_file(renamed, str(file))

    gen = Generator(_config(wan_dir, generator_single_file=str(file)))
    gen.load()
    loaded = gen.pipeline.transformer.state_dict()
    assert set(loaded) == set(original)
    for key, value in original.items():
        assert torch.equal(loaded[key], value), key
    assert "wan2.1_vace_tiny.safetensors" in gen.name


def test_a_missing_single_file_is_a_model_error(wan_dir: Path, tmp_path: Path) -> None:
    gen = Generator(_config(wan_dir, generator_single_file=str(tmp_path / "vace.safetensors")))
    with pytest.raises(ModelError, match="generator_single_file="):
        gen.load()


# --- output files --------------------------------------------------------------------------------

_NAME = re.compile(r"^\d{8}T\d{6}Z-text_to_video-[0-9a-f]{8}\.mp4$")


def _frames(count: int, height: int = 48, width: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(count, height, width, 3), dtype=np.uint8)


def test_one_frame_is_written_as_a_png_with_its_sidecar(tmp_path: Path) -> None:
    out_dir = tmp_path / "new" / "outputs"  # created on demand
    frame = _frames(1)
    result = write_output(
        frame, output_dir=out_dir, task="text_to_image", fps=16.0, metadata={"prompt": PROMPT, "seed": 3}
    )
    path = Path(result.path)
    assert path.parent == out_dir.resolve() and path.suffix == ".png"
    assert (result.mime_type, result.width, result.height, result.num_frames) == ("image/png", 64, 48, 1)
    assert result.fps is None and result.size_bytes == path.stat().st_size
    assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), frame[0])  # PNG is lossless
    sidecar = json.loads(Path(result.sidecar).read_text())
    assert sidecar["task"] == "text_to_image" and sidecar["seed"] == 3 and sidecar["prompt"] == PROMPT
    assert sidecar["file"]["name"] == result.name and sidecar["file"]["size_bytes"] == result.size_bytes
    assert sorted(p.name for p in out_dir.iterdir()) == [result.name, f"{result.name}.json"]


def test_frames_are_written_as_an_h264_mp4_that_decodes_to_the_right_size_and_count(tmp_path: Path) -> None:
    frames = _frames(9)
    result = write_output(
        frames, output_dir=tmp_path, task="text_to_video", fps=24.0, metadata={"timings": {"generate": 1.5}}
    )
    assert _NAME.match(result.name)
    assert (result.mime_type, result.num_frames, result.fps) == ("video/mp4", 9, 24.0)
    assert result.duration_s == pytest.approx(9 / 24)
    with av.open(result.path) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
        assert float(stream.average_rate) == pytest.approx(24.0)
    assert len(decoded) == 9
    assert decoded[0].shape == (48, 64, 3)
    sidecar = json.loads(Path(result.sidecar).read_text())
    assert sidecar["timings"] == {"generate": 1.5} and sidecar["file"]["num_frames"] == 9
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]


def test_a_task_name_never_puts_a_path_in_the_file_name(tmp_path: Path) -> None:
    result = write_output(_frames(1), output_dir=tmp_path, task="../../etc/passwd", fps=16.0, metadata={})
    assert Path(result.path).parent == tmp_path.resolve()
    assert "/" not in result.name and ".." not in result.name


def test_a_failing_write_leaves_no_file_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write

    def half_written(fd: int, data) -> int:
        real_write(fd, bytes(data[:100]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_written)
    # A full disk is the server's own problem, named (issue 22): no longer a bare OSError.
    with pytest.raises(OutOfSpace, match="no space left"):
        write_output(_frames(5), output_dir=tmp_path, task="text_to_video", fps=16.0, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_a_sidecar_that_cannot_be_written_takes_the_encoded_video_back(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="not JSON-serialisable"):
        write_output(
            _frames(5), output_dir=tmp_path, task="text_to_video", fps=16.0, metadata={"x": object()}
        )
    assert list(tmp_path.iterdir()) == []


def test_an_odd_video_size_is_refused_before_encoding(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match="must be even"):
        write_output(_frames(5, height=47), output_dir=tmp_path, task="text_to_video", fps=16.0, metadata={})
    assert list(tmp_path.iterdir()) == []


def test_frames_that_are_not_uint8_rgb_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidRequest, match=r"frames=\(1, 8, 8\)"):
        write_output(np.zeros((1, 8, 8), np.uint8), output_dir=tmp_path, task="x", fps=16.0, metadata={})

"""Engine configuration: which weights, where, in which dtype, with which limits and defaults.

Plain pydantic, importable without torch. ``unison_mcp.config`` fills it from flags, ``UNISON_*``
environment variables and a TOML file; ``EngineConfig.tiny()`` points it at the tiny models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, model_validator


class Limits(BaseModel):
    """Bounds on what may be generated; configurable."""

    min_side: int = Field(16, ge=16)
    max_side: int = Field(1920, ge=16)
    max_pixels: int = Field(1280 * 720, ge=256)
    min_frames: int = Field(5, ge=1)
    max_frames: int = Field(161, ge=1)
    max_fps: float = 60.0
    max_steps: int = 200
    max_prompt_chars: int = 4000
    max_inputs: int = 8
    #: Largest input image / video frame decoded (a decompression bomb is refused from its header).
    max_input_pixels: int = Field(64_000_000, ge=256)
    #: What an unset size or frame count becomes (the reference's 832×480, 81 frames).
    default_width: int = Field(832, ge=16)
    default_height: int = Field(480, ge=16)
    default_frames: int = Field(81, ge=1)
    default_fps: float = Field(16.0, gt=0)


PlannerBackend = Literal["unison", "instruct", "rules"]

#: Hub ids of the real weights (see README for sizes).
QWEN_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
UNISON_REPO = "ali-vilab/Unison"
WAN_VACE_ID = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"


class SamplingDefaults(BaseModel):
    """The reference's sampling defaults; every one overridable per request."""

    steps: int = Field(50, ge=1)
    guidance: float = Field(5.0, ge=0)
    flow_shift: float = Field(5.0, gt=0)
    conditioning_scale: float = Field(1.0, ge=0)
    negative_prompt: str = ""
    fps: float = Field(16.0, gt=0)
    #: DiT text context length: the reference's 2048 (Wan's own default is 512).
    text_len: int = Field(2048, ge=1)
    #: umT5 tokenizer cap (the T5 tokenizer stops at 512 in the reference too).
    max_sequence_length: int = Field(512, ge=1)


class UnderstandingDefaults(BaseModel):
    max_new_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0)
    video_fps: float = Field(2.0, gt=0)
    video_max_frames: int = Field(32, ge=2)
    max_pixels: int = Field(640 * 360, ge=28 * 28)


class PerformanceOptions(BaseModel):
    """Speed/memory switches (see docs/performance.md for their measured effect)."""

    attention_backend: str | None = None  # diffusers set_attention_backend name; None = SDPA
    compile: bool = False  # regional torch.compile of the repeated DiT blocks
    batch_cfg: bool = False  # conditional + unconditional in one forward
    cache: Literal["none", "first_block", "mag"] = "none"
    cache_threshold: float = 0.05
    vae_tiling: bool = False
    offload: Literal["none", "model", "group", "text_encoder_cpu"] = "none"


class EngineConfig(BaseModel):
    """Everything the engine needs to load and run.

    Model fields take a hub id or a local directory. ``projector`` takes a local file path or
    ``owner/repo/path/in/repo`` on the hub. ``planner_model=None`` means no planner weights: the
    ``rules`` planner is used and understanding is unavailable.
    """

    planner_model: str | None = QWEN_ID
    adapter: str | None = UNISON_REPO
    adapter_subfolder: str | None = None
    planner_backend: PlannerBackend | None = None  # None: unison if adapter, instruct if model, else rules
    projector: str | None = f"{UNISON_REPO}/projector.pth"
    generator_model: str = WAN_VACE_ID
    generator_single_file: str | None = None  # original-format VACE checkpoint for the transformer
    device: str = "auto"  # auto | cuda | cuda:N | cpu | mps
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"
    planner_device: str | None = None  # default: same as device
    # Absolute by default: a client may start the server with any working directory (even "/").
    output_dir: Path = Field(default_factory=lambda: Path.home() / "unison-outputs")
    cache_dir: Path | None = None  # hub cache override
    local_files_only: bool = False
    limits: Limits = Field(default_factory=Limits)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    understanding: UnderstandingDefaults = Field(default_factory=UnderstandingDefaults)
    performance: PerformanceOptions = Field(default_factory=PerformanceOptions)
    preset: str | None = None
    #: Set by the tiny preset: the engine builds missing tiny models here before loading any.
    tiny_dir: Path | None = None

    @model_validator(mode="after")
    def _one_fps_default(self) -> EngineConfig:
        # The configured output fps is the default every plan validation uses.
        if self.limits.default_fps != self.sampling.fps:
            self.limits = self.limits.model_copy(update={"default_fps": self.sampling.fps})
        return self

    @property
    def backend(self) -> PlannerBackend:
        if self.planner_backend is not None:
            return self.planner_backend
        if self.planner_model is None:
            return "rules"
        return "unison" if self.adapter else "instruct"

    @classmethod
    def tiny(cls, cache_dir: Path | None = None, *, build: bool = True, **overrides) -> EngineConfig:
        """Tiny random models in ``cache_dir``: the whole system on a CPU.

        ``build=False`` only points at them; the engine builds what is missing when it first loads
        a model (so a server starts answering at once even before the first build).
        """
        from .tiny import ensure_tiny, tiny_paths  # lazy: building needs torch

        paths = ensure_tiny(cache_dir) if build else tiny_paths(cache_dir)
        base = dict(
            tiny_dir=paths.root,
            planner_model=str(paths.qwen),
            adapter=str(paths.adapter),
            projector=str(paths.projector),
            generator_model=str(paths.wan),
            device="cpu",
            dtype="float32",
            local_files_only=True,
            preset="tiny",
            # The tiny Unison adapter only knows the requests it was trained on
            # (engine.tiny_qwen.EXAMPLES): route any request with the rules planner, while the
            # tiny Qwen still provides understanding, grounding and the projector's features.
            # `--planner unison` on the tiny preset exercises the LoRA path.
            planner_backend="rules",
            sampling=SamplingDefaults(steps=2),
            understanding=UnderstandingDefaults(max_new_tokens=8, video_max_frames=4, max_pixels=56 * 56),
            # Real-size plans still validate; unset sizes default small so CPU runs take seconds.
            limits=Limits(default_width=64, default_height=48, default_frames=9),
        )
        base.update(overrides)
        return cls(**base)

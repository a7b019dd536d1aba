"""Engine configuration: which weights, where, in which dtype, with which limits and defaults.

Plain pydantic, importable without torch. Each field is the one declaration of its setting: its
type and bounds, its default and its help text (``description``). ``unison_mcp.config`` derives
the CLI flag (``--max-side``), the ``UNISON_*`` variable (``UNISON_MAX_SIDE``) and the TOML key
(``[limits] max_side``) from the field by walking these models, with :class:`SettingMeta` in the
field's ``Annotated`` metadata for the few names that differ. ``EngineConfig.tiny()`` points it
at the tiny models, whose place is :func:`tiny_paths` (here, so that configuring the tiny preset
never imports their builders in :mod:`engine.tiny`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, field_validator, model_validator


@dataclass(frozen=True)
class SettingMeta:
    """How a field is spelled as a setting where its field name alone does not say it.

    Put it in the field's ``Annotated[...]``. On a field holding a nested model it names the CLI
    help ``section`` of every field inside.
    """

    #: Setting name (argparse dest, ``UNISON_<NAME>``) when the field name collides with another.
    name: str | None = None
    #: The flag when it is not ``--<name>``.
    flag: str | None = None
    #: More flags for the same setting.
    aliases: tuple[str, ...] = ()
    #: CLI help group; fields inherit their model's.
    section: str | None = None
    #: Not a setting: why the program sets it itself (no flag, variable or TOML key).
    internal: str | None = None
    #: Whether ``none``/``off``/``""`` mean "not set" for an optional string (a token never does).
    none_words: bool = True
    #: A hub id or a local path: ``~`` and ``./`` values are paths (TOML: relative to the file).
    hub_or_path: bool = False


_HUB = SettingMeta(hub_or_path=True)

#: The frame rate of a video whose request gives none: ``sampling.fps`` (``--fps``), which
#: ``limits.default_fps`` follows (every plan check reads it there).
DEFAULT_FPS = 16.0


class Limits(BaseModel):
    """Bounds on what may be generated; configurable."""

    min_side: int = Field(16, ge=16, description="smallest output side in pixels")
    max_side: int = Field(1920, ge=16, description="largest output side in pixels")
    max_pixels: int = Field(1280 * 720, ge=256, description="largest output width×height")
    min_frames: int = Field(5, ge=1, description="fewest video frames")
    max_frames: int = Field(161, ge=1, description="most video frames in one window (4k+1)")
    max_duration_s: float = Field(
        30.0, gt=0, le=600, description="longest video, made as a chain of windows, in seconds"
    )
    max_fps: float = Field(60.0, description="highest output fps")
    max_steps: int = Field(200, description="most denoising steps per request")
    max_prompt_chars: int = Field(
        4000, ge=1, description="longest prompt (and negative prompt) in characters"
    )
    max_inputs: int = Field(8, description="most input files per request")
    # A decompression bomb is refused from its header, before anything is decoded.
    max_input_pixels: int = Field(
        64_000_000, ge=256, description="largest input image or video frame (width×height) decoded"
    )
    # What an unset size or frame count becomes (the reference's 832×480, 81 frames).
    default_width: int = Field(832, ge=16, description="output width when a request gives none")
    default_height: int = Field(480, ge=16, description="output height when a request gives none")
    default_frames: int = Field(81, ge=1, description="video frames when a request gives none")
    default_fps: Annotated[float, SettingMeta(internal="kept equal to sampling.fps (--fps)")] = Field(
        DEFAULT_FPS, gt=0, description="fps a plan defaults to"
    )


PlannerBackend = Literal["unison", "instruct", "rules"]
Preset = Literal["tiny"]

#: Hub ids of the real weights (see README for sizes).
QWEN_ID = "Qwen/Qwen2.5-VL-3B-Instruct"
UNISON_REPO = "ali-vilab/Unison"
WAN_VACE_ID = "Wan-AI/Wan2.1-VACE-1.3B-diffusers"

#: Wan2.1's default negative prompt, the one the reference's generator falls back to when it is
#: given none: ``sample_neg_prompt`` in Wan-Video/Wan2.1, wan/configs/shared_config.py (copied
#: from the source, commit 9737cba; a Chinese list of defects: garish colours, overexposure,
#: static, blurred detail, subtitles, ... extra fingers, three legs, walking backwards).
WAN_NEGATIVE_PROMPT = "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"


class SamplingDefaults(BaseModel):
    """The reference's sampling defaults; every one overridable per request."""

    steps: int = Field(50, ge=1, description="denoising steps")
    guidance: float = Field(5.0, ge=0, description="classifier-free guidance scale")
    flow_shift: float = Field(5.0, gt=0, description="flow-matching shift of the UniPC scheduler")
    conditioning_scale: float = Field(1.0, ge=0, description="VACE context scale")
    # The reference passes no negative prompt and its generator then uses Wan2.1's default;
    # an empty one changes every result.
    negative_prompt: str = Field(
        WAN_NEGATIVE_PROMPT, description="negative prompt (default: Wan2.1's own; '' = none)"
    )
    fps: float = Field(DEFAULT_FPS, gt=0, description="frames per second of written videos")
    # Wan's own default is 512.
    text_len: int = Field(2048, ge=1, description="DiT text context length (the reference's 2048)")
    # The T5 tokenizer stops at 512 in the reference too.
    max_sequence_length: int = Field(512, ge=1, description="umT5 tokenizer cap")
    # The reference gives umT5 the user's raw text, placeholders and all, and the projector was
    # trained beside those embeddings (../shared/UNISON.md, "What the reference feeds each stage").
    umt5_prompt: Literal["request", "plain"] = Field(
        "request",
        description="umT5 prompt when the projector is applied: 'request' = the request text with its "
        "<IMGPAD>/<VIDPAD> placeholders (the reference's), 'plain' = the prompt without them",
    )


class ResultDefaults(BaseModel):
    """What a result keeps of its sources and how long videos are made (per call: ``preserve``)."""

    # VACE regenerates the whole frame: without pasting back, kept pixels drift through the VAE.
    preserve: bool = Field(
        True, description="paste the source back where the task keeps it (outside masks, given frames)"
    )
    feather_px: int = Field(
        4, ge=0, le=64, description="width of the blended band along a kept region's edge (0 = hard edge)"
    )
    color_match: bool = Field(
        True, description="shift the generated area's colour to the source's along the blended band"
    )
    window_overlap: int = Field(
        9, ge=1, le=80, description="frames of each window a chained window continues from"
    )
    audio: bool = Field(True, description="copy a source video's audio into outputs that span its time")
    write_timeout_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="seconds a file write may take before the job fails with output_stalled (a stalled disk)",
    )


class AnnotatorSettings(BaseModel):
    """The models that extract masks and control signals from plain media (engine/annotators/)."""

    # Hub ids or local directories, loaded with from_pretrained like the other models.
    segment_model: Annotated[str | None, _HUB] = Field(
        "facebook/sam3",
        description="text-prompted segmentation and video tracking (SAM 3; gated: accept its licence "
        "on the hub); 'none' = box grounding with the planner",
    )
    depth_model: Annotated[str, _HUB] = Field(
        "depth-anything/Depth-Anything-V2-Small-hf", description="depth estimation model"
    )
    pose_model: Annotated[str, _HUB] = Field(
        "usyd-community/vitpose-base-simple", description="human pose (keypoints) model"
    )
    person_detector: Annotated[str, _HUB] = Field(
        "PekingU/rtdetr_r50vd_coco_o365", description="person detector the pose model starts from"
    )
    flow_model: Annotated[str, _HUB] = Field(
        "raft_small",
        description="optical flow: torchvision's 'raft_small'/'raft_large' or a local weights file",
    )
    # None: the engine's device / dtype.
    annotator_device: str | None = Field(None, description="device for the annotators (default: --device)")
    annotator_dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="annotator weights dtype ('auto': the engine's)"
    )
    mask_dilate_px: int = Field(
        8, ge=0, le=128, description="pixels a mask found from words grows by on each side"
    )


class UnderstandingDefaults(BaseModel):
    max_new_tokens: int = Field(512, ge=1, description="longest answer in tokens")
    temperature: float = Field(0.0, ge=0, description="answer sampling temperature (0 = greedy)")
    video_fps: float = Field(2.0, gt=0, description="frames per second sampled from a video to understand")
    video_max_frames: int = Field(32, ge=2, description="most frames sampled from a video to understand")
    # "max_pixels" is also a limit on outputs: the setting carries the section in its name.
    max_pixels: Annotated[int, SettingMeta(name="understand_max_pixels")] = Field(
        640 * 360, ge=28 * 28, description="pixel cap per image/frame given to the planner"
    )


class PerformanceOptions(BaseModel):
    """Speed/memory switches (see docs/performance.md for their measured effect)."""

    attention_backend: str | None = Field(
        None, description="diffusers attention backend name ('none' = SDPA)"
    )
    compile: bool = Field(False, description="regional torch.compile of the DiT blocks")
    batch_cfg: bool = Field(False, description="conditional and unconditional passes in one batch")
    # "cache" alone would read as the hub cache (--cache-dir).
    cache: Annotated[Literal["none", "first_block", "mag"], SettingMeta(name="step_cache")] = Field(
        "none", description="reuse work across denoising steps"
    )
    cache_threshold: float = Field(0.05, description="step-cache reuse threshold")
    vae_tiling: bool = Field(False, description="decode the VAE in tiles (less memory)")
    offload: Literal["none", "model", "group", "text_encoder_cpu"] = Field(
        "none", description="CPU offload mode for small GPUs"
    )
    # A repeated prompt and the default negative prompt then cost one umT5 forward, not one a call.
    text_cache_size: int = Field(
        32, ge=0, description="umT5 prompt encodings kept for reuse, by exact text (0 = none)"
    )
    # transformers' cache_implementation="static"; generate compiles the decode step on CUDA only.
    planner_static_cache: bool = Field(
        False, description="static KV cache for the planner's decoding (compiled decode step on CUDA)"
    )
    # torchao's float8 dynamic activation + weight on the DiT's linears; CUDA sm89+ only (engine/quantize.py).
    quantize: Literal["none", "fp8"] = Field(
        "none", description="the DiT's linear layers in float8 ('fp8': Ada/Hopper GPUs, needs torchao)"
    )


#: The default turbo LoRA: CausVid's bidirectional step distillation of the Wan2.1 T2V 1.3B base,
#: as Kijai publishes it for ComfyUI (original-Wan key layout, rank 32, ~90 MB); diffusers converts
#: it. Its recipe is guidance 1 (one DiT forward per step) at 4-8 UniPC steps with a flow shift of
#: 8; VACE runs it unchanged, the LoRA touches only the shared DiT blocks.
TURBO_LORA = "Kijai/WanVideo_comfy/Wan21_CausVid_bidirect2_T2V_1_3B_lora_rank32.safetensors"


class LoraSettings(BaseModel):
    """LoRAs on the generator's DiT, loaded once with the pipeline (engine/loras.py)."""

    turbo: bool = Field(
        False, description="sample with the step-distillation LoRA by default (per call: turbo)"
    )
    turbo_lora: Annotated[str | None, _HUB] = Field(
        TURBO_LORA,
        description="step-distillation LoRA: local .safetensors or owner/repo/file on the hub; 'none' = no turbo",
    )
    turbo_strength: float = Field(1.0, gt=0, le=4, description="turbo LoRA strength")
    turbo_steps: int = Field(8, ge=1, description="denoising steps in turbo")
    # 1 = no unconditional pass: the distilled model was trained without classifier-free guidance.
    turbo_guidance: float = Field(1.0, ge=0, description="guidance scale in turbo")
    turbo_flow_shift: float = Field(8.0, gt=0, description="flow shift in turbo")
    # "lora" reads better on the command line than "adapters"; --adapter is the planner's.
    adapters: Annotated[list[str], SettingMeta(name="lora", flag="--lora")] = Field(
        default_factory=list,
        description='user LoRA NAME=PATH[:STRENGTH] (repeatable; TOML: a table NAME = "PATH[:STRENGTH]"); '
        "per call: loras",
    )

    @field_validator("adapters", mode="before")
    @classmethod
    def _table(cls, value: object) -> object:
        # A TOML table {name = "path[:strength]"} is the same list as the flags spell.
        if isinstance(value, dict):
            return [f"{name}={spec}" for name, spec in value.items()]
        return value


#: What the tiny models can run, so the tiny preset refuses what would fail inside the DiT. Its
#: rotary table holds 32 positions per axis (``rope_max_seq_len=32`` in engine/tiny/wan.py): 32
#: patches of 16 px = 512 px a side, 32 latent frames = 125 frames (measured: 512 and 125 run, 528
#: and 129 fail with a shape error). Unset sizes default small so CPU runs take seconds.
TINY_LIMITS = Limits(
    max_side=512,
    max_pixels=512 * 512,
    max_frames=125,
    default_width=64,
    default_height=48,
    default_frames=9,
)

# ---------------------------------------------------------------------------------------------
# Where the tiny preset's models live. The builders (engine.tiny: torch, and through the planner
# this module) write there; this part only names the places.

#: The stage of a job while the tiny models are built (their first use on this machine).
TINY_BUILD_STAGE = "building tiny models"
#: Bumped when the tiny Qwen's build changes in a way earlier builds lack (2: taught answers).
TINY_QWEN_VERSION = 2


@dataclass(frozen=True)
class TinyPaths:
    root: Path
    qwen: Path
    adapter: Path
    wan: Path
    projector: Path
    # The annotators (engine/annotators/): transformers directories, and RAFT as a state dict.
    depth: Path
    pose: Path
    person_detector: Path
    flow: Path
    segment: Path
    #: A Wan LoRA (safetensors, original-Wan layout) for the tiny DiT: turbo and user LoRAs.
    lora: Path

    def all_exist(self) -> bool:
        parts = (self.qwen, self.adapter, self.wan, self.projector)
        annotators = (self.depth, self.pose, self.person_detector, self.flow, self.segment, self.lora)
        return all(p.exists() for p in (*parts, *annotators))


def default_tiny_dir() -> Path:
    """``$UNISON_TINY_DIR``, else ``$XDG_CACHE_HOME/unison-mcp/tiny`` (``~/.cache/...``)."""
    env = os.environ.get("UNISON_TINY_DIR")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "unison-mcp" / "tiny"


def tiny_paths(root: Path | str | None = None) -> TinyPaths:
    """Where the tiny models live under ``root`` (nothing is built: :func:`engine.tiny.ensure_tiny`)."""
    root = Path(root) if root is not None else default_tiny_dir()
    return TinyPaths(
        root=root,
        # Versioned: a tiny Qwen built by an older release (before it was taught its answers) is
        # not reused; the adapter is trained on it, so it goes with it.
        qwen=root / f"qwen-{TINY_QWEN_VERSION}",
        adapter=root / f"adapter-{TINY_QWEN_VERSION}",
        wan=root / "wan",
        projector=root / "projector.pth",
        depth=root / "depth",
        pose=root / "pose",
        person_detector=root / "person_detector",
        flow=root / "raft_small.pth",
        segment=root / "segment",
        lora=root / "wan_lora.safetensors",
    )


class EngineConfig(BaseModel):
    """Everything the engine needs to load and run.

    Model fields take a hub id or a local directory. ``projector`` takes a local file path or
    ``owner/repo/path/in/repo`` on the hub. ``planner_model=None`` means no planner weights: the
    ``rules`` planner is used and understanding is unavailable.
    """

    preset: Preset | None = Field(
        None, description="start from a preset: 'tiny' = tiny random models on a CPU"
    )
    planner_model: Annotated[str | None, _HUB] = Field(
        QWEN_ID,
        description="Qwen2.5-VL planner: hub id or local dir; 'none' = no planner (rules planner, no understanding)",
    )
    adapter: Annotated[str | None, _HUB] = Field(
        UNISON_REPO, description="Unison LoRA adapter: hub id or local dir; 'none' = plain instruct planner"
    )
    adapter_subfolder: str | None = Field(None, description="subfolder of the adapter repo holding the LoRA")
    projector: Annotated[str | None, _HUB] = Field(
        f"{UNISON_REPO}/projector.pth",
        description="projector.pth: local file or owner/repo/path/in/repo; 'none' = plain Wan-VACE conditioning",
    )
    generator_model: Annotated[str, _HUB] = Field(
        WAN_VACE_ID, description="Wan2.1-VACE diffusers pipeline: hub id or local dir"
    )
    generator_single_file: Annotated[
        str | None, SettingMeta(aliases=("--transformer-file",), hub_or_path=True)
    ] = Field(
        None,
        description="original-format VACE transformer checkpoint (single file) to use instead of the pipeline's",
    )
    # None: unison with an adapter, instruct with only a planner model, else rules (see `backend`).
    planner_backend: Annotated[PlannerBackend | None, SettingMeta(aliases=("--planner",))] = Field(
        None,
        description="planner backend (default: unison with an adapter, instruct without, rules without a planner)",
    )
    device: str = Field("auto", description="auto | cuda | cuda:N | cpu | mps")
    planner_device: str | None = Field(None, description="device for the planner (default: --device)")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="weights dtype ('auto': bfloat16 on GPU, float32 on CPU)"
    )
    # Absolute by default: a client may start the server with any working directory (even "/").
    output_dir: Path = Field(
        default_factory=lambda: Path.home() / "unison-outputs",
        description="where outputs are written (the only place written)",
    )
    cache_dir: Path | None = Field(None, description="hub cache directory (default: huggingface_hub's)")
    local_files_only: bool = Field(
        False, description="never reach the hub; use local dirs and the hub cache only"
    )
    # The input path policy. None = any local file (the CLI and Python default); the MCP server
    # reads None as "only the output directory" (ServerConfig.roots()).
    allowed_roots: Annotated[list[Path] | None, SettingMeta(flag="--allow-root", section="limits")] = Field(
        None,
        description="directory inputs may be read from (repeatable; env: os.pathsep-separated); "
        "the output dir is always allowed",
    )
    max_input_bytes: Annotated[int, SettingMeta(section="limits")] = Field(
        2 * 1024**3, ge=1, description="largest input file in bytes"
    )
    limits: Annotated[Limits, SettingMeta(section="limits")] = Field(default_factory=Limits)
    sampling: Annotated[SamplingDefaults, SettingMeta(section="sampling defaults")] = Field(
        default_factory=SamplingDefaults
    )
    understanding: Annotated[UnderstandingDefaults, SettingMeta(section="understanding")] = Field(
        default_factory=UnderstandingDefaults
    )
    results: Annotated[ResultDefaults, SettingMeta(section="results")] = Field(default_factory=ResultDefaults)
    annotators: Annotated[AnnotatorSettings, SettingMeta(section="annotators")] = Field(
        default_factory=AnnotatorSettings
    )
    # A model planner's output that does not parse or check is planned again by the rules.
    planner_fallback: bool = Field(
        True, description="re-plan with the rules planner when a model planner's plan fails"
    )
    performance: Annotated[PerformanceOptions, SettingMeta(section="performance")] = Field(
        default_factory=PerformanceOptions
    )
    loras: Annotated[LoraSettings, SettingMeta(section="LoRAs")] = Field(default_factory=LoraSettings)
    # The engine builds missing tiny models here before loading any.
    tiny_dir: Annotated[
        Path | None, SettingMeta(internal="set by the tiny preset (from UNISON_TINY_DIR)")
    ] = Field(None, description="where the tiny preset's models are built")

    @model_validator(mode="after")
    def _one_fps_default(self) -> EngineConfig:
        # The configured output fps is the default every plan validation uses.
        if self.limits.default_fps != self.sampling.fps:
            self.limits = self.limits.model_copy(update={"default_fps": self.sampling.fps})
        return self

    @property
    def projector_off(self) -> str | None:
        """Why generation runs without the projector, or ``None`` when it applies: the one
        statement of that rule. It needs its weights, the planner model and the Unison adapter (its
        input is the Unison planner's hidden states, whichever backend plans)."""
        if self.projector is None:
            return "no projector configured"
        if self.planner_model is None:
            return "a projector is configured but no planner (its input is the planner's hidden states)"
        if not self.adapter:
            return (
                "no Unison adapter configured: the projector was not applied (its input is the Unison "
                "planner's hidden states)"
            )
        return None

    @property
    def backend(self) -> PlannerBackend:
        if self.planner_backend is not None:
            return self.planner_backend
        if self.planner_model is None:
            return "rules"
        return "unison" if self.adapter else "instruct"

    @classmethod
    def tiny(cls, cache_dir: Path | None = None, **overrides: object) -> EngineConfig:
        """Tiny random models in ``cache_dir`` (default :func:`default_tiny_dir`): the whole
        system on a CPU.

        It only points at them and builds nothing: the engine builds what is missing when it
        first loads a model, as a stage of that job (so a server starts answering at once);
        :func:`engine.tiny.ensure_tiny` and ``unison-mcp make-tiny`` build them ahead.
        """
        paths = tiny_paths(cache_dir)
        base: dict[str, object] = dict(
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
            # (engine.tiny.qwen.EXAMPLES): route any request with the rules planner, while the
            # tiny Qwen still provides understanding, grounding and the projector's features.
            # `--planner unison` on the tiny preset exercises the LoRA path.
            planner_backend="rules",
            sampling=SamplingDefaults(steps=2),
            # The tiny LoRA stands in for the turbo LoRA; one step fewer than the tiny default.
            loras=LoraSettings(turbo_lora=str(paths.lora), turbo_steps=1),
            understanding=UnderstandingDefaults(max_new_tokens=8, video_max_frames=4, max_pixels=56 * 56),
            limits=TINY_LIMITS,
            annotators=AnnotatorSettings(
                segment_model=str(paths.segment),
                depth_model=str(paths.depth),
                pose_model=str(paths.pose),
                person_detector=str(paths.person_detector),
                flow_model=str(paths.flow),
            ),
        )
        base.update(overrides)
        return cls.model_validate(base)

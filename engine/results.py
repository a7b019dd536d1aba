"""What the engine returns: plain pydantic models, shared by the CLI and the MCP layer."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .bounds import MAX_COUNT, MAX_SEED
from .plan import BasePlan, Plan


def _shown_plan(value: Any) -> Any:
    """A checked plan is shown as the plain :class:`Plan` with its fields: results carry the plan
    schema MCP clients see, and its JSON replays through ``generate``."""
    return value.model_dump() if isinstance(value, BasePlan) and not isinstance(value, Plan) else value


class Preview(BaseModel):
    """A small JPEG of an output, made from its frames in memory when it was written
    (:mod:`engine.preview`): the picture scaled down, or a video's contact sheet."""

    data: bytes
    mime_type: str = "image/jpeg"
    width: int
    height: int
    #: The output's frames it shows (a contact sheet's tiles, left to right, top to bottom).
    frames: list[int] = Field(default_factory=list)


class OutputFile(BaseModel):
    """One file the engine wrote into the output directory."""

    path: str  # absolute
    name: str  # file name inside the output directory
    mime_type: str
    size_bytes: int
    width: int
    height: int
    num_frames: int
    fps: float | None = None  # video only
    duration_s: float | None = None  # video only
    sidecar: str | None = None  # absolute path of the JSON metadata beside it
    seed: int | None = None  # the seed this candidate was made from
    #: What the file is: "result"; "new_part" (video_extend: the new frames alone); "mask" (an edit
    #: region found from words, white = regenerated) or "control" (the extracted control signal).
    role: str = "result"
    #: Its preview, carried with the result (never in a sidecar or a JSON dump: ``exclude``).
    preview: Preview | None = Field(None, exclude=True)


class GenerateResult(BaseModel):
    plan: Plan
    outputs: list[OutputFile]
    seed: int
    steps: int
    guidance: float
    projector: bool  # whether the projector's 4 tokens conditioned the generator
    timings: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)
    #: The pool replica that ran it (``--pool ray``); ``None`` on a single server.
    replica: str | None = None

    _plan = field_validator("plan", mode="before")(_shown_plan)


class UnderstandResult(BaseModel):
    answer: str
    model: str
    timings: dict[str, float] = Field(default_factory=dict)
    #: The pool replica that ran it (``--pool ray``); ``None`` on a single server.
    replica: str | None = None


class AutoResult(BaseModel):
    plan: Plan
    answer: UnderstandResult | None = None
    generation: GenerateResult | None = None
    #: The pool replica that ran it (``--pool ray``); ``None`` on a single server.
    replica: str | None = None

    _plan = field_validator("plan", mode="before")(_shown_plan)


class LoraChoice(BaseModel):
    """One user LoRA a call applies: a configured name (``--lora NAME=PATH``) and its strength."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str = Field(min_length=1, max_length=64, description="a configured LoRA's name")
    strength: float | None = Field(
        None, ge=-4, le=4, description="its strength (default: the configured one)"
    )


class Sampling(BaseModel):
    """Per-request sampling overrides; ``None`` takes the configured default."""

    steps: int | None = Field(None, ge=1)
    guidance: float | None = Field(None, ge=0)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    negative_prompt: str | None = None
    conditioning_scale: float | None = Field(None, ge=0)
    #: Candidates from consecutive seeds (the seed, seed+1, ...).
    count: int | None = Field(None, ge=1, le=MAX_COUNT)
    #: Paste the source back where the task keeps it (``None``: the configured default).
    preserve: bool | None = None
    flow_shift: float | None = Field(None, gt=0)
    #: Sample with the step-distillation LoRA and its preset (``None``: the configured default).
    turbo: bool | None = None
    #: User LoRAs for this call, among the configured ones (``None``/empty: none).
    loras: list[LoraChoice] | None = None

"""The tools' structured outputs (their ``outputSchema``).

Every output carries ``status``: ``done`` with the result's fields, or ``queued``/``running`` with
only ``job_id`` and ``progress`` when the call's wait ran out (the ``job`` tool then follows the
job to the same result). So every result field has a default.

``plan`` is the engine's own :class:`~engine.plan.Plan` (margins and context frames included), so a
dry run's plan replays through ``generate`` unchanged.

The ``job`` tool returns the structured content of the call it follows, so :class:`JobOutput` is
a superset of the other three: any of their results validates against it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from engine.inputs import output_uri
from engine.plan import Plan
from engine.results import OutputFile

Status = Literal["done", "queued", "running", "failed", "cancelled"]


class Progress(BaseModel):
    stage: str = Field(description="what the job is doing (e.g. 'denoising')")
    done: int = Field(description="steps done in this stage")
    total: int = Field(description="steps in this stage (0 when unknown)")


class JobState(BaseModel):
    status: Status = Field(
        "done", description="'done': the result is here; 'queued'/'running': follow job_id"
    )
    job_id: str | None = Field(None, description="the job's handle for the `job` tool")
    progress: Progress | None = None
    replica: str | None = Field(None, description="the pool replica that ran the job (--pool ray)")


class OutputInfo(BaseModel):
    uri: str = Field(description="unison://outputs/<name>: pass it as an input to chain calls, or read it")
    path: str = Field(description="absolute path on the server's machine")
    name: str
    mime_type: str
    size_bytes: int
    width: int
    height: int
    num_frames: int
    fps: float | None = None
    duration_s: float | None = None
    seed: int | None = Field(None, description="the seed this candidate was made from")
    role: str = Field(
        "result",
        description="'result'; 'new_part' (video_extend: the new frames alone); 'mask' (the edit region "
        "found from words) or 'control' (the extracted control signal): reusable as inputs",
    )

    @classmethod
    def of(cls, out: OutputFile) -> OutputInfo:
        return cls(
            uri=output_uri(out.name),
            path=out.path,
            name=out.name,
            mime_type=out.mime_type,
            size_bytes=out.size_bytes,
            width=out.width,
            height=out.height,
            num_frames=out.num_frames,
            fps=out.fps,
            duration_s=out.duration_s,
            seed=out.seed,
            role=out.role,
        )


class UnderstandOutput(JobState):
    answer: str | None = None
    model: str | None = None
    timings: dict[str, float] = Field(default_factory=dict)


class GenerateOutput(JobState):
    plan: Plan | None = Field(
        None, description="the checked plan; its fields replay through `generate` (inputs by their role)"
    )
    outputs: list[OutputInfo] = Field(default_factory=list)
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    projector: bool | None = Field(
        None, description="whether the planner's 4 projector tokens conditioned it"
    )
    timings: dict[str, float] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list)


class AutoOutput(GenerateOutput):
    """The plan; then the answer (understanding tasks) or the files (generation tasks)."""

    dry_run: bool = False
    answer: str | None = None
    model: str | None = None


class JobOutput(AutoOutput):
    """A job's state, or, once it is done, the result of the call that started it."""

    kind: str | None = Field(None, description="which tool started the job: understand, generate or auto")
    error: str | None = Field(None, description="why a failed or cancelled job ended")
    ahead: int | None = Field(None, description="jobs that run before a queued one")
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

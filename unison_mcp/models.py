"""The tools' structured outputs (their ``outputSchema``).

Some clients give the model only ``structuredContent`` (Claude Code), so it alone carries what the
model needs, compactly: each file's URI, path, kind, size, frames, duration and seed, the notes
(what was adjusted, what was kept of the source), the plan. Fields left unset are left out of the
content (``exclude_none``), and the schemas say little that the names do not (every client sends
them with each conversation; :func:`unison_mcp.schema.portable` shapes them).

Every output carries ``status``: ``done`` with the result's fields, or ``queued``/``running`` with
only ``job_id`` and ``progress`` when the call's wait ran out (the ``job`` tool then follows the
job to the same result). So every result field has a default.

``plan`` is the engine's :class:`~engine.plan.Plan` as JSON (an object in the schema: its fields
are the ``generate`` arguments, so a dry run's plan replays through ``generate``).

The ``job`` tool returns the structured content of the call it follows, so :class:`JobOutput` is
a superset of the other three: any of their results validates against it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer

from engine.inputs import output_uri
from engine.plan import Plan
from engine.results import OutputFile

Status = Literal["done", "queued", "running", "failed", "cancelled"]


class _Compact(BaseModel):
    """Dumped without its unset (``None``) fields, wherever it is dumped: the content stays small,
    and it matches its schema, whose optional fields are plain types (``portable(nulls=False)``)."""

    @model_serializer(mode="wrap")
    def _without_none(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class Progress(_Compact):
    stage: str
    done: int
    total: int = Field(description="0: unknown")


class JobState(_Compact):
    #: queued/running: the job goes on; ``job`` follows ``job_id`` (the descriptions say so).
    status: Status = "done"
    job_id: str | None = None
    progress: Progress | None = None
    replica: str | None = Field(None, description="the pool replica that ran it")


class OutputInfo(_Compact):
    uri: str = Field(description="input for a next call; a readable resource")
    path: str
    kind: Literal["image", "video"]
    role: str = Field("result", description="result, new_part (video_extend), mask or control (found)")
    width: int
    height: int
    num_frames: int
    fps: float | None = None
    duration_s: float | None = None
    size_bytes: int
    seed: int | None = None

    @classmethod
    def of(cls, out: OutputFile) -> OutputInfo:
        return cls(
            uri=output_uri(out.name),
            path=out.path,
            kind="video" if out.mime_type.startswith("video/") else "image",
            role=out.role,
            width=out.width,
            height=out.height,
            num_frames=out.num_frames,
            fps=out.fps,
            duration_s=out.duration_s,
            size_bytes=out.size_bytes,
            seed=out.seed,
        )


def plan_json(plan: Plan) -> dict[str, Any]:
    """A plan as the structured content shows it: its set fields, its notes left to the result's."""
    return plan.model_dump(mode="json", exclude_none=True, exclude={"notes"})


class UnderstandOutput(JobState):
    answer: str | None = None
    model: str | None = None
    timings: dict[str, float] | None = None


class GenerateOutput(JobState):
    plan: dict[str, Any] | None = Field(None, description="replays through `generate`")
    outputs: list[OutputInfo] | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    #: Whether the planner's 4 projector tokens conditioned it.
    projector: bool | None = None
    timings: dict[str, float] | None = None
    notes: list[str] | None = Field(None, description="what was adjusted, and kept of the source")


class AutoOutput(GenerateOutput):
    """The plan; then the answer (understanding tasks) or the files (generation tasks)."""

    dry_run: bool | None = None
    answer: str | None = None
    model: str | None = None


class JobOutput(AutoOutput):
    """A job's state, or, once it is done, the result of the call that started it."""

    kind: str | None = Field(None, description="the tool that started it")
    error: str | None = None
    #: Jobs before a queued one.
    ahead: int | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None

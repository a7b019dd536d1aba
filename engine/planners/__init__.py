"""The planner: the first box of the paper's figure (request → plan), in three backends.

Where things are:

- ``__init__.py`` (here): the contract every backend meets (:class:`Planner`, :class:`PlanOutput`)
  and how the engine picks a backend (below).
- :mod:`~engine.planners.rules`: the rules planner, no model (the default; the tests' oracle).
- :mod:`~engine.planners.unison`: the Unison LoRA writes the 14-token grammar; parsed with
  :func:`engine.grammar.parse_unison`; the same pass gives the projector's features.
- :mod:`~engine.planners.instruct`: the plain instruct model answers a small JSON plan (one retry).
- :mod:`~engine.planners.qwen_model`: :class:`~engine.planners.qwen_model.QwenModel`, the
  Qwen2.5-VL model both model backends run on (loading with the LoRA: merged for ``unison``,
  switchable for the others; chat text, generation with progress and cancel, the features pass);
  :mod:`~engine.planners.adapter` holds the adapter's file checks and the embedding untying, so
  ``qwen_model.py`` reads as the model alone.
- :mod:`~engine.planners.qwen`: :class:`~engine.planners.qwen.QwenPlanner`, that model with the
  backends and understanding it runs (what the engine holds); the backends take the model, so
  nothing imports back.
- :mod:`~engine.planners.route`: which planner's plan runs (the rules planner behind a model
  planner whose output fails), and the check that a plan uses the request's files.

Understanding and grounding run on the same model but are not planning: :mod:`engine.understand`.

How the engine picks a backend: the request's ``planner`` argument, else the configured
``planner_backend`` (by default ``unison`` with an adapter, ``instruct`` with only a planner
model, ``rules`` without one), one of :data:`BACKENDS`.
``rules`` runs :class:`~engine.planners.rules.RulesPlanner`; ``unison`` and ``instruct`` run on the
engine's one :class:`~engine.planners.qwen.QwenPlanner` (``unison`` needs the adapter). Every
backend returns a plan that is *not yet checked*: the engine runs :func:`engine.plan.check_plan`
once on whatever came back. Which understanding task a request is (text, image or video) is
decided by :func:`engine.tasks.understanding_task` alone, whichever backend planned it.

Importing this package is cheap: no torch, no transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, get_args, runtime_checkable

from ..config import PlannerBackend as BackendName

if TYPE_CHECKING:
    import torch

    from ..plan import Plan
    from ..request import Request

#: The planning backends, as ``planner_backend`` names them (declared once, on the setting).
BACKENDS: tuple[BackendName, ...] = get_args(BackendName)


@dataclass
class PlanOutput:
    """What a backend returns: the plan, and the projector's input when it was asked for."""

    plan: Plan  # parsed, not yet check_plan()-ed (the Engine does that)
    features: torch.Tensor | None  # (1, L-1, hidden) float32 on the CPU, or None
    timings: dict[str, float] = field(default_factory=dict)


@runtime_checkable
class Planner(Protocol):
    """A planning backend: a request in, an unchecked plan (and maybe features) out.

    ``name`` is the backend's name in :data:`BACKENDS`. ``want_features`` asks for the projector's
    input too; a backend without a model (``rules``) returns ``features=None``. Raises
    :class:`~engine.errors.InvalidRequest` when no task fits the request's files and
    :class:`~engine.errors.PlannerError` when a model's answer cannot be read.
    """

    name: str

    def __call__(self, request: Request, *, want_features: bool = False) -> PlanOutput: ...


__all__ = ["BACKENDS", "BackendName", "PlanOutput", "Planner"]

"""unison-mcp's engine: the Unison planner (Qwen2.5-VL) and generator (Wan2.1-VACE), without MCP.

Importing this package is cheap: torch, transformers and diffusers load only when a model does.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import EngineConfig
from .control import JobControl
from .errors import (
    Busy,
    Cancelled,
    InputRefused,
    InvalidRequest,
    ModelError,
    OutOfMemory,
    PlannerError,
    UnisonError,
)
from .plan import CheckedPlan, CheckedQuestion, MediaInput, Plan, build_plan, check_plan
from .request import parse_request
from .vocab import MediaKind, Role, Task

if TYPE_CHECKING:
    from .engine import Engine

__all__ = [
    "Busy",
    "Cancelled",
    "CheckedPlan",
    "CheckedQuestion",
    "Engine",
    "EngineConfig",
    "InputRefused",
    "InvalidRequest",
    "JobControl",
    "MediaInput",
    "MediaKind",
    "ModelError",
    "OutOfMemory",
    "Plan",
    "PlannerError",
    "Role",
    "Task",
    "UnisonError",
    "build_plan",
    "check_plan",
    "parse_request",
]


def __getattr__(name: str) -> Any:
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)

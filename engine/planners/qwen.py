"""The planner's Qwen2.5-VL with what runs on it: :class:`QwenPlanner` is the loaded model
(:class:`~engine.planners.qwen_model.QwenModel`, whose docstring says how the Unison LoRA is held)
plus the planning backends (:mod:`~engine.planners.unison`, :mod:`~engine.planners.instruct`) and
understanding and grounding (:mod:`engine.understand`), which the methods here call.

Those modules take a ``QwenModel`` and import nothing of this one: the calls go one way.
torch, transformers and peft are imported inside the model's methods: importing this module is cheap.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .. import understand as _understand
from ..errors import InvalidRequest
from ..hub import LoadFailures
from . import Planner, PlanOutput
from .instruct import InstructBackend
from .qwen_model import QwenModel
from .unison import UnisonBackend

if TYPE_CHECKING:
    from PIL import Image

    from ..config import EngineConfig
    from ..control import JobControl
    from ..plan import MediaInput
    from ..request import Request
    from ..source import Source
    from ..understand import Box
    from ..vocab import Task


class QwenPlanner(QwenModel):
    """Qwen2.5-VL (+ the Unison LoRA): planning, the projector's features, understanding, grounding.

    Nothing loads in ``__init__``; :meth:`load` loads once (thread-safe) and every other method
    calls it. Calls are not meant to run concurrently: the Engine serialises model work (and
    :meth:`using` switches shared state).
    """

    def __init__(self, config: EngineConfig, *, failures: LoadFailures | None = None):
        super().__init__(config, failures=failures)
        #: The planning backends that run on this model, by name.
        self.backends: dict[str, Planner] = {"unison": UnisonBackend(self), "instruct": InstructBackend(self)}

    # ------------------------------------------------------------------ planning

    def plan(
        self, request: Request, *, backend: str, want_features: bool, tasks: frozenset[Task] | None = None
    ) -> PlanOutput:
        """Plan a request with the ``unison`` (LoRA grammar) or ``instruct`` (JSON) backend.

        With ``want_features`` the projector's input comes back too: from the same forward pass
        for ``unison``, from one extra forward for ``instruct``. ``tasks`` narrows the instruct
        backend's schema to those tasks (the route's way to the tasks beyond the Unison grammar).
        """
        run = self.backends.get(backend)
        if run is None:
            raise InvalidRequest.for_field("backend", backend, "the Qwen planner runs 'unison' or 'instruct'")
        if tasks is not None and not isinstance(run, InstructBackend):
            raise InvalidRequest.for_field(
                "tasks", sorted(t.value for t in tasks), "only the instruct backend narrows its tasks"
            )
        self.load()
        started = time.perf_counter()
        out = (
            run(request, want_features=want_features)
            if tasks is None
            else run(request, want_features=want_features, tasks=tasks)
        )
        out.timings["plan_s"] = time.perf_counter() - started
        return out

    # ------------------------------------------------------------------ understanding, grounding

    def understand(
        self,
        prompt: str,
        media: Sequence[MediaInput],
        *,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        control: JobControl | None = None,
        sources: Mapping[str, Source] | None = None,
    ) -> str:
        """Answer ``prompt`` about the images and videos in ``media``: :func:`engine.understand.understand`.

        On the Unison planner under ``planner_backend='unison'``, on the plain model otherwise.
        """
        with self.using(adapter=self.understand_with_adapter):
            return _understand.understand(
                self,
                prompt,
                media,
                max_new_tokens=max_new_tokens,
                temperature=temperature,
                control=control,
                sources=sources,
            )

    def ground(self, image: Image.Image, phrase: str) -> list[Box]:
        """Boxes of ``phrase`` in ``image``, in its pixels: :func:`engine.understand.ground`.

        On the same model as :meth:`understand`.
        """
        with self.using(adapter=self.understand_with_adapter):
            return _understand.ground(self, image, phrase)

    def edit_target(self, prompt: str) -> str | None:
        """The object an edit prompt names: :func:`engine.understand.edit_target` (same model)."""
        with self.using(adapter=self.understand_with_adapter):
            return _understand.edit_target(self, prompt)

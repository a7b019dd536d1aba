"""The ``unison`` backend: the Unison LoRA writes its token grammar, and the same pass gives features.

The Unison planner (base + LoRA, :meth:`~engine.planners.qwen_model.QwenModel.using`) answers a
request with the 14-token grammar (``<CFV><BORES>832,480<EORES>…``, ``../shared/UNISON.md``),
which :func:`engine.grammar.parse_unison` reads into a plan using the task table. When the projector needs features they come from the prefill of this very pass: the
request rendered without the generation prompt is a prefix of the one with it, so its hidden
states are the first positions of the prefill's (a template where that does not hold costs one
extra forward, logged).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ..errors import ModelError
from ..grammar import parse_unison, unison_grammar
from . import PlanOutput
from .constrain import Grammar

if TYPE_CHECKING:
    from ..request import Request
    from .qwen_model import QwenModel

log = logging.getLogger(__name__)


class UnisonBackend:
    """Plans with ``qwen``'s Unison planner, base + LoRA (a :class:`~engine.planners.Planner`)."""

    name = "unison"

    def __init__(self, qwen: QwenModel, *, constrained: bool = True):
        self.qwen = qwen
        #: Decode under the request's grammar (off only to measure what it costs: benchmarks).
        self.constrained = constrained

    def __call__(self, request: Request, *, want_features: bool = False) -> PlanOutput:
        q = self.qwen
        q.load()
        if not q.adapter_loaded:
            raise ModelError(
                f"the unison backend needs the Unison adapter, but the planner was loaded without it "
                f"(adapter={q.config.adapter!r}): set adapter (e.g. 'ali-vilab/Unison'), or plan with "
                "'instruct'"
            )
        with q.using(adapter=True):
            prefix = q.unison_ids(request, generation_prompt=False)
            ids = q.unison_ids(request, generation_prompt=True)
            shared = want_features and ids[: len(prefix)] == prefix
            gen = q.generation_config(
                q.unison_max_new_tokens,
                0.0,
                plain_greedy=True,
                output_hidden_states=shared,
                return_dict_in_generate=True,
            )
            grammar = None
            if self.constrained:
                lark = unison_grammar(request.media, q.config.limits, prompt=request.prompt)
                grammar = Grammar(lark=lark)
            out = q.generate(q.text_inputs(ids), gen, grammar=grammar)
            text = q.decode(out.sequences[0, len(ids) :])
        log.info("unison plan for %r: %r", request.text[:80], text)
        features = None
        if shared:
            # Prefill hidden states: the last entry is after the final norm. The request rendered
            # without the generation prompt is their first len(prefix) positions.
            last = out.hidden_states[0][-1]  # (1, L_with_prompt, hidden)
            features = last[:, 1 : len(prefix)].float().cpu()  # (1, L-1, hidden)
        elif want_features:
            log.warning(
                "chat template is not prefix-stable for this tokenizer: features need a second forward"
            )
            features = q.features(request)
        return PlanOutput(plan=parse_unison(text, request.media, prompt=request.prompt), features=features)

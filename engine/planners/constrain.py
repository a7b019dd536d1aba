"""Constrained decoding: a grammar in, a logits processor for transformers' ``generate()`` out.

The model planners decode under a grammar built per request (the Unison token language:
:func:`engine.grammar.unison_grammar`; the JSON plan's schema:
:func:`engine.planners.instruct.plan_schema`), so a plan that does not parse cannot be written.
The library is llguidance, chosen by measurement (docs/planner.md): it names an added token by
itself (``<CFI>`` in a grammar is token 151665, never the five characters), its grammars compile in
well under a millisecond per request, and its wheel has no dependencies.

:class:`Constrainer` holds llguidance's view of one tokenizer (built once per tokenizer: about a
second for Qwen's 151k tokens); :meth:`Constrainer.processor` makes a fresh
:class:`GrammarProcessor` for each ``generate()`` call. Without llguidance (:func:`version` is
``None``) the planners decode as before and parse after the fact (the rules planner behind them).

llguidance, torch and transformers are imported inside the functions: importing this module is cheap.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import PlannerError, shown

if TYPE_CHECKING:
    import torch

#: The JSON plan's layout: the separators of the instruct prompt's own example, and no free
#: whitespace (a random model would otherwise spend its tokens on blanks).
JSON_OPTIONS = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}


def version() -> str | None:
    """llguidance's version, or ``None`` when it is not installed (planners then decode freely)."""
    if importlib.util.find_spec("llguidance") is None:
        return None
    try:
        return importlib.metadata.version("llguidance")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class Grammar:
    """What a model may write: a Lark grammar (llguidance's dialect) or a JSON schema."""

    lark: str | None = None
    schema: dict[str, Any] | None = None

    def source(self) -> str:
        """The grammar as llguidance reads it."""
        from llguidance import LLMatcher  # lazy: an optional compiled library

        if self.schema is not None:
            return LLMatcher.grammar_from_json_schema(json.dumps(self.schema), overrides=JSON_OPTIONS)
        return LLMatcher.grammar_from_lark(self.lark or "")


class Constrainer:
    """llguidance's view of one tokenizer, for a model whose logits are ``vocab_size`` wide."""

    def __init__(self, tokenizer: Any, vocab_size: int, eos: int | list[int]):
        import llguidance.hf  # lazy: an optional compiled library

        self.vocab_size = vocab_size
        #: The end-of-text token(s) the grammar allows where it may end.
        self.eos = eos
        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=eos)

    def processor(self, grammar: Grammar) -> GrammarProcessor:
        """A fresh logits processor for one ``generate()`` call (it follows one sequence)."""
        from llguidance import LLMatcher

        matcher = LLMatcher(self.tokenizer, grammar.source(), log_level=0)
        if matcher.is_error():
            # The grammar is built here, so this is a bug, not the model's: the rules planner plans.
            raise PlannerError(f"the planner's grammar does not compile: {shown(matcher.get_error())}")
        return GrammarProcessor(matcher, self.vocab_size)


class GrammarProcessor:
    """Masks every token the grammar does not allow next (a ``transformers`` logits processor).

    It follows one sequence: each call first feeds the grammar the token chosen after the previous
    call, then leaves only the allowed tokens' scores. End of text is allowed where the grammar may
    end (and is all that is allowed once it must).
    """

    def __init__(self, matcher: Any, vocab_size: int):
        import torch

        self.matcher = matcher
        self.vocab_size = vocab_size
        self._words = torch.zeros((vocab_size + 31) // 32, dtype=torch.int32)  # the mask, 32 tokens a word
        self._bits = torch.arange(32, dtype=torch.int32)
        self._started = False

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] != 1:
            raise ValueError(
                f"constrained decoding follows one sequence, got a batch of {input_ids.shape[0]}"
            )
        if self._started and not self.matcher.consume_token(int(input_ids[0, -1])):
            raise PlannerError(
                f"the planner wrote a token its grammar does not allow: {self.matcher.get_error()}"
            )
        self._started = True
        words = self._words
        self.matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * words.element_size())
        allowed = ((words.unsqueeze(1) >> self._bits) & 1).flatten()[: scores.shape[-1]].bool()  # (V,)
        return scores.masked_fill(~allowed.to(scores.device), float("-inf"))


__all__ = ["JSON_OPTIONS", "Constrainer", "Grammar", "GrammarProcessor", "version"]

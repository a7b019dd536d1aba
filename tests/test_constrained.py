"""Constrained decoding of the model planners: the grammars built per request (the Unison token
language, the JSON plan's schema) and decoding under them with llguidance.

The grammar tests decode without a model: random scores go through the real
:class:`~engine.planners.constrain.GrammarProcessor` and the best allowed token is taken, so every
path is the grammar's own choice. The last test plans 200 generated requests on the tiny random
Qwen with both backends and no fallback.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from engine.config import TINY_LIMITS, EngineConfig
from engine.errors import InvalidRequest, PlannerError
from engine.grammar import parse_unison, unison_grammar
from engine.plan import check_plan
from engine.planners.choices import tasks_for
from engine.planners.constrain import Constrainer, Grammar
from engine.planners.instruct import plan_from_json, plan_schema
from engine.planners.route import BEYOND_GRAMMAR, route
from engine.planners.rules import RulesPlanner
from engine.request import parse_request
from engine.tasks import TASKS
from engine.tiny.qwen import EXAMPLES
from engine.tiny.requests import generated_requests
from engine.vocab import CFI, CFV, UNISON_TOKENS, Task

REQUESTS = generated_requests(200)


@pytest.fixture(scope="module")
def tokenizers(tiny_paths):
    """The Unison planner's tokenizer (the 14 added tokens) and the plain model's."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_paths.adapter), AutoTokenizer.from_pretrained(tiny_paths.qwen)


def _eos(tok) -> int:
    return tok.convert_tokens_to_ids("<|im_end|>")


def _walk(
    constrainer: Constrainer, grammar: Grammar, seed: int, *, lift: list[int], most: int = 64
) -> list[int]:
    """Decode under ``grammar`` from random scores (no model); ``lift`` raises some tokens' scores so
    that paths through them are taken often."""
    processor = constrainer.processor(grammar)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.zeros((1, 1), dtype=torch.long)  # a one-token prompt: the grammar starts after it
    out: list[int] = []
    for _ in range(most):
        scores = torch.randn(1, constrainer.vocab_size, generator=gen)
        scores[0, lift] += 3.0
        token = int(processor(ids, scores).argmax())
        if token == constrainer.eos:
            break
        out.append(token)
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
    return out


def _uses_files_or_none(plan, request) -> bool:
    return plan.spec.understanding or not request.media or bool(plan.inputs)


def test_every_path_through_the_unison_grammar_parses_checks_and_keeps_a_file(tokenizers):
    tok, _ = tokenizers
    constrainer = Constrainer(tok, len(tok), _eos(tok))
    added = tok.convert_tokens_to_ids(list(UNISON_TOKENS))
    seen: Counter[Task] = Counter()
    for n, text in enumerate(REQUESTS):
        request = parse_request(text)
        grammar = Grammar(lark=unison_grammar(request.media, TINY_LIMITS, prompt=request.prompt))
        for seed in range(3):
            written = tok.decode(_walk(constrainer, grammar, 3 * n + seed, lift=added if seed else []))
            plan = parse_unison(written, request.media, prompt=request.prompt)
            check_plan(plan, TINY_LIMITS)
            assert _uses_files_or_none(plan, request), (text, written)
            seen[plan.task] += 1
    # Every task of the Unison grammar, and understanding, was written at least once.
    assert {t for t, s in TASKS.items() if s.grammar} <= set(seen)
    assert seen.keys() & {Task.TEXT_UNDERSTANDING, Task.IMAGE_UNDERSTANDING, Task.VIDEO_UNDERSTANDING}


def test_every_path_through_the_plan_schema_parses_checks_and_keeps_a_file(tokenizers):
    _, tok = tokenizers
    constrainer = Constrainer(tok, len(tok), _eos(tok))
    seen: Counter[Task] = Counter()
    for n, text in enumerate(REQUESTS[:60]):
        request = parse_request(text)
        # Each task the request's files allow, in turn: the schema narrowed to it.
        for task in tasks_for(request.media, request.prompt):
            grammar = Grammar(schema=plan_schema(request, TINY_LIMITS, frozenset({task})))
            written = tok.decode(_walk(constrainer, grammar, n, lift=[], most=400))
            plan = plan_from_json(written, request.media, prompt=request.prompt)
            check_plan(plan, TINY_LIMITS)
            assert plan.task is task or plan.spec.understanding, (text, written)
            assert _uses_files_or_none(plan, request), (text, written)
            seen[plan.task] += 1
    assert set(seen) == set(TASKS), set(TASKS) - set(seen)  # all 16 tasks


def _accepts(constrainer: Constrainer, grammar: Grammar, ids: list[int]) -> bool:
    from llguidance import LLMatcher

    matcher = LLMatcher(constrainer.tokenizer, grammar.source(), log_level=0)
    return matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.task.value + ":" + e.request[:24])
def test_the_plans_the_tiny_planner_was_trained_on_are_in_their_requests_grammar(tokenizers, example):
    tok, _ = tokenizers
    request = parse_request(example.request)
    grammar = Grammar(lark=unison_grammar(request.media, TINY_LIMITS, prompt=request.prompt))
    ids = tok(example.plan, add_special_tokens=False)["input_ids"]
    assert _accepts(Constrainer(tok, len(tok), _eos(tok)), grammar, ids)


@pytest.mark.parametrize(
    ("text", "written", "why"),
    [
        ("Animate ###a.png###", "<CFI><BOFIDX>first<EOFIDX>", "<BOFIDX> only after <CFV>"),
        ("A clip of rain", "<CFV><BORES>64,48", "<BORES> without <EORES>"),
        ("Edit ###a.png### with ###m.png###", "<CFI><BOEDIT>2,0<EOEDIT>", "an index past the files"),
        ("Edit ###a.png###", "<CFI><BOEDIT>0,0<EOEDIT>", "the same image as mask and source"),
        ("A clip of rain", "<CFV><BONF>7<EONF>", "8 frames: off the 4k+1 grid"),
        ("Dance like ###d.mp4###", "<CFV><BONF>200<EONF><CTRL>", "201 frames: past one window"),
        ("Make a video of ###d.mp4###", "<CFV><REF>", "<REF> without an image"),
        ("Draw ###a.png###", "<CFI>", "a generation plan that drops the file"),
        ("Draw a cat", "<CFI><BORES>9000,64<EORES>", "a side past the bound"),
        ("What is it?", "It is <CFI> a cat", "an answer holding a token"),
        ("###a.png###", "<CFI><REF>", "generation without words saying what to make"),
    ],
)
def test_the_unison_grammar_refuses(tokenizers, text, written, why):
    tok, _ = tokenizers
    request = parse_request(text)
    grammar = Grammar(lark=unison_grammar(request.media, TINY_LIMITS, prompt=request.prompt))
    ids = tok(written, add_special_tokens=False)["input_ids"]
    assert not _accepts(Constrainer(tok, len(tok), _eos(tok)), grammar, ids), why


def test_an_added_token_is_only_ever_written_as_itself(tokenizers):
    tok, _ = tokenizers
    constrainer = Constrainer(tok, len(tok), _eos(tok))
    request = parse_request("Draw a cat")
    processor = constrainer.processor(
        Grammar(lark=unison_grammar(request.media, TINY_LIMITS, prompt="Draw a cat"))
    )
    first = processor(torch.zeros((1, 1), dtype=torch.long), torch.zeros(1, len(tok)))
    allowed = {
        tok.convert_ids_to_tokens(i) for i in torch.nonzero(first[0] > float("-inf")).flatten().tolist()
    }
    assert {CFI, CFV} <= allowed
    # Neither a spelling of a token ("<", "<C"...) nor any other added token may start a plan or an answer.
    assert not {t for t in allowed if t.startswith("<") and t not in (CFI, CFV, "<|im_end|>")}
    # Inside an answer, no added token at all.
    processor(torch.zeros((1, 1), dtype=torch.long), torch.zeros(1, len(tok)))
    word = tok("The", add_special_tokens=False)["input_ids"][0]
    after = processor(torch.tensor([[0, word]]), torch.zeros(1, len(tok)))
    specials = tok.convert_tokens_to_ids(list(UNISON_TOKENS))
    assert torch.isinf(after[0, specials]).all()


def test_the_plan_schema_names_only_the_requests_files_and_the_tasks_asked_for():
    request = parse_request("Widen ###cat.png### and ###dog.png### to 16:9")
    schema = plan_schema(request, TINY_LIMITS, BEYOND_GRAMMAR)
    tasks = {b["properties"]["task"]["const"] for b in schema["anyOf"]}
    assert tasks == {"image_outpaint", "first_last_to_video"}  # the two that two images can serve
    indices = {
        item["properties"]["index"]["const"]
        for b in schema["anyOf"]
        for choice in b["properties"]["inputs"]["anyOf"]
        for item in choice["prefixItems"]
    }
    assert indices == {0, 1}
    with pytest.raises(PlannerError, match="no task among"):
        plan_schema(parse_request("Draw a cat"), TINY_LIMITS, BEYOND_GRAMMAR)


# ---------------------------------------------------------------------------------------------
# The tiny random Qwen, both backends, no fallback


@pytest.fixture(scope="module")
def planner(tiny_paths):
    """One tiny model for both backends: routed with ``instruct``, the adapter stays unmerged, so
    the Unison planner and the plain model are one switch apart."""
    from engine.planners.qwen import QwenPlanner

    p = QwenPlanner(EngineConfig.tiny(tiny_paths.root, planner_backend="instruct"))
    p.unison_max_new_tokens = 48  # the longest plan is about 30 tokens; a free answer stops there
    p.load()
    return p


@pytest.mark.slow  # 200 plans a backend: ~20 s (unison) and ~75 s (instruct) on 2 shared cores at load 7
@pytest.mark.parametrize("backend", ["unison", "instruct"])
def test_200_generated_requests_each_get_a_plan_that_parses_checks_and_runs_without_fallback(
    planner, backend
):
    tasks: Counter[Task] = Counter()
    for text in REQUESTS:
        request = parse_request(text)
        try:
            routed = route(
                request,
                backend,
                primary=lambda r, want: planner.plan(r, backend=backend, want_features=want),
                rules=RulesPlanner(),
                check=lambda p: check_plan(p, TINY_LIMITS),
                fallback=False,
                want_features=False,
            )
        except (PlannerError, InvalidRequest) as e:  # pragma: no cover - the failure says which request
            pytest.fail(f"{backend} planner, request {text!r}: {e}")
        assert routed.planner == backend
        tasks[routed.plan.task] += 1
    assert sum(tasks.values()) == len(REQUESTS) == 200


def test_without_llguidance_the_planners_decode_freely_and_say_so(planner, monkeypatch, caplog):
    monkeypatch.setattr("engine.planners.qwen_model.version", lambda: None)
    monkeypatch.setattr(planner, "_warned_unconstrained", False)
    example = EXAMPLES[2]
    with caplog.at_level("WARNING", logger="engine.planners.qwen_model"):
        out = planner.plan(parse_request(example.request), backend="unison", want_features=False)
    assert out.plan.raw == example.plan  # the trained plan, unconstrained
    assert "llguidance is not installed: planner output is not constrained" in caplog.text

"""The planner's static KV cache (``performance.planner_static_cache``) on the tiny Qwen2.5-VL."""

from __future__ import annotations

import pytest

from engine.config import EngineConfig, PerformanceOptions
from engine.planners.qwen import QwenPlanner
from engine.request import parse_request
from engine.tiny.qwen import EXAMPLES


def _planner(root, *, static: bool) -> QwenPlanner:
    config = EngineConfig.tiny(
        root, planner_backend="unison", performance=PerformanceOptions(planner_static_cache=static)
    )
    planner = QwenPlanner(config)
    planner.load()
    return planner


@pytest.fixture(scope="module")
def dynamic(tiny_paths) -> QwenPlanner:
    return _planner(tiny_paths.root, static=False)


@pytest.fixture(scope="module")
def static(tiny_paths) -> QwenPlanner:
    return _planner(tiny_paths.root, static=True)


def test_the_static_cache_is_asked_for_and_compiling_stays_off_on_a_cpu(static, dynamic) -> None:
    gen = static.generation_config(8, 0.0, plain_greedy=True)
    assert gen.cache_implementation == "static"
    assert gen.disable_compile is True
    assert dynamic.generation_config(8, 0.0, plain_greedy=True).cache_implementation is None
    ids = static.token_ids("hello")
    out = static.generate(
        static.text_inputs(ids),
        static.generation_config(2, 0.0, plain_greedy=True, return_dict_in_generate=True),
    )
    assert type(out.cache).__name__ == "StaticCache"


@pytest.mark.parametrize("example", EXAMPLES[:4], ids=lambda e: e.task.value)
def test_a_unison_plan_with_the_static_cache_is_the_default_caches(static, dynamic, example) -> None:
    request = parse_request(example.request)
    a = static.plan(request, backend="unison", want_features=True)
    b = dynamic.plan(request, backend="unison", want_features=True)
    assert a.plan.raw == b.plan.raw == example.plan
    assert a.features is not None and b.features is not None
    assert (a.features == b.features).all()


def test_a_greedy_answer_with_the_static_cache_is_the_default_caches_token_for_token(static, dynamic) -> None:
    messages = [{"role": "user", "content": "describe a quiet harbour at dawn"}]
    ids = dynamic.token_ids(dynamic.chat_text(messages, generation_prompt=True))
    gens = [p.generation_config(24, 0.0, plain_greedy=False, min_new_tokens=24) for p in (static, dynamic)]
    a = static.generate(static.text_inputs(ids), gens[0])
    b = dynamic.generate(dynamic.text_inputs(ids), gens[1])
    assert a.shape[1] == len(ids) + 24
    assert a.tolist() == b.tolist()

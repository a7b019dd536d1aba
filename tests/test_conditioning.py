"""The reference's conditioning: the projector's input always comes from the Unison planner
(base + LoRA, the adapter's tokenizer) whatever backend routed the request, while the instruct
backend and understanding keep the model they had; and the conditioning defaults.

On the tiny real-format Qwen2.5-VL and Unison adapter (engine/tiny)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import WAN_NEGATIVE_PROMPT, EngineConfig, SamplingDefaults
from engine.errors import ModelError, PlannerError
from engine.plan import MediaInput
from engine.planners.qwen import QwenPlanner
from engine.request import parse_request
from engine.results import Sampling
from engine.sampling import resolve_sampling
from engine.tiny.qwen import EXAMPLES
from engine.vocab import IMGPAD, VIDPAD, MediaKind, Role

#: Two images and a video: each placeholder must be one token for the Unison planner.
EDIT = parse_request(EXAMPLES[3].request)  # "Edit ###photo.png### using the mask ###mask.png###: ..."
CONTROL = parse_request(EXAMPLES[9].request)  # "Follow the pose video ###pose.mp4### ..."
REQUESTS = [EDIT, CONTROL, parse_request("Draw a red fox sitting in the snow.")]


def _planner(root, **overrides) -> QwenPlanner:
    p = QwenPlanner(EngineConfig.tiny(root, **overrides))
    p.instruct_max_new_tokens = 12  # a random model never closes its JSON: keep the two tries short
    p.load()
    return p


@pytest.fixture(scope="module")
def rules(tiny_paths) -> QwenPlanner:
    """The tiny preset as shipped: rules routing, adapter configured (loaded unmerged)."""
    return _planner(tiny_paths.root)


@pytest.fixture(scope="module")
def instruct(tiny_paths) -> QwenPlanner:
    return _planner(tiny_paths.root, planner_backend="instruct")


@pytest.fixture(scope="module")
def unison(tiny_paths) -> QwenPlanner:
    """Unison routing: the adapter merged."""
    return _planner(tiny_paths.root, planner_backend="unison")


@pytest.fixture(scope="module")
def plain(tiny_paths) -> QwenPlanner:
    """No adapter configured: the plain instruct model alone."""
    return _planner(tiny_paths.root, adapter=None, planner_backend="instruct")


def _logits(planner: QwenPlanner, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return planner.model(input_ids=torch.tensor([ids])).logits  # (1, L, vocab rows)


# ---------------------------------------------------------------------------------------------
# The projector's input


def test_the_adapter_is_loaded_whatever_the_backend_and_merged_only_for_unison(
    rules, instruct, unison, plain
):
    for p in (rules, instruct, unison):
        assert p.adapter_loaded and p.can_project
    assert rules.peft_model is not None and instruct.peft_model is not None
    assert not rules.merged and not instruct.merged and rules.base_available
    assert unison.merged and unison.peft_model is None and not unison.base_available
    assert not plain.adapter_loaded and not plain.can_project and plain.base_available


@pytest.mark.parametrize("request_", REQUESTS, ids=["image-edit", "video-control", "text"])
def test_features_under_rules_and_instruct_equal_the_unison_backends(rules, instruct, unison, request_):
    from_rules = rules.features(request_)
    from_instruct = instruct.features(request_)
    # Same weights, same ids, same forward: the very same tensor.
    assert torch.equal(from_rules, from_instruct)
    # The unison backend's come from its planning pass (a longer prefill), on the merged model
    # for unison routing: the same states up to floating-point summation order.
    for p in (rules, unison):
        planned = p.plan(request_, backend="unison", want_features=True).features
        assert planned.shape == from_rules.shape
        assert torch.allclose(planned, from_rules, atol=1e-5)
    assert torch.allclose(unison.features(request_), from_rules, atol=1e-5)


def test_the_instruct_backends_features_are_the_unison_planners(instruct, monkeypatch):
    # The JSON answer itself is irrelevant here: answer with a valid plan, then look at features.
    monkeypatch.setattr(
        instruct,
        "reply",
        lambda messages, n, grammar=None: (
            '{"task": "image_edit", "inputs": [{"index": 0, "role": "source"}, {"index": 1, "role": "mask"}]}'
        ),
    )
    out = instruct.plan(EDIT, backend="instruct", want_features=True)
    assert torch.equal(out.features, instruct.features(EDIT))


def test_placeholders_are_one_token_each_in_the_ids_features_are_computed_over(rules):
    with rules.using(adapter=True):
        ids = rules.unison_ids(EDIT, generation_prompt=False)
        pad = rules.tokenizer.convert_tokens_to_ids(IMGPAD)
    assert ids.count(pad) == EDIT.text.count(IMGPAD) == 2
    assert rules.features(EDIT).shape == (1, len(ids) - 1, rules.hidden_size)
    # What the base tokenizer makes of them: ordinary pieces, so the old features were longer.
    with rules.using(adapter=False):
        base_ids = rules.unison_ids(EDIT, generation_prompt=False)
        assert rules.tokenizer.convert_tokens_to_ids(IMGPAD) not in base_ids
    assert len(base_ids) > len(ids)

    with rules.using(adapter=True):
        video = rules.unison_ids(CONTROL, generation_prompt=False)
        assert video.count(rules.tokenizer.convert_tokens_to_ids(VIDPAD)) == 1


def test_features_use_the_adapter_even_when_asked_inside_a_block_on_the_base_model(rules):
    outside = rules.features(EDIT)
    with rules.using(adapter=False):
        inside = rules.features(EDIT)
        assert rules.tokenizer is rules._tokenizers[False][1]  # the base block is put back
    assert torch.equal(inside, outside)


def test_features_are_not_the_base_models_states(rules, plain):
    # What the projector used to get under rules and instruct routing: more positions (each
    # placeholder split into pieces) and, even over the same ids, other states (no LoRA).
    base_ids = plain.unison_ids(EDIT, generation_prompt=False)
    assert rules.features(EDIT).shape[1] < len(base_ids) - 1
    text = REQUESTS[2]
    ids = plain.unison_ids(text, generation_prompt=False)
    with torch.inference_mode():
        base_states = plain.model.model(input_ids=torch.tensor([ids])).last_hidden_state[:, 1:]
    features = rules.features(text)
    assert features.shape == base_states.shape
    assert not torch.allclose(features, base_states, atol=1e-3)


def test_features_without_an_adapter_are_refused_naming_the_setting(plain):
    with pytest.raises(ModelError, match=r"no adapter is configured: set adapter .*projector 'none'"):
        plain.features(EDIT)


def test_the_unison_backend_under_rules_routing_plans_with_the_adapter(rules):
    for example in EXAMPLES[:11]:
        out = rules.plan(parse_request(example.request), backend="unison", want_features=False)
        assert out.plan.task is example.task


# ---------------------------------------------------------------------------------------------
# The plain model where it was used before


def test_with_the_adapter_disabled_the_model_is_exactly_the_base_model(rules, plain):
    # The tiny adapter's vocabulary (601 rows) is smaller than the base's (640): the base path
    # must still have every base row and the base's values.
    with plain.using(adapter=False):
        ids = plain.unison_ids(EDIT, generation_prompt=True)
    want = _logits(plain, ids)
    with rules.using(adapter=False):
        got = _logits(rules, ids)
    assert got.shape == want.shape == (1, len(ids), 640)
    assert torch.equal(got, want)
    with rules.using(adapter=True):
        assert _logits(rules, ids).shape[-1] == 601  # the adapter's own head


def test_blocks_on_the_two_models_nest_and_put_back_what_was_active(rules, plain):
    with plain.using(adapter=False):
        ids = plain.unison_ids(REQUESTS[2], generation_prompt=True)
    base = _logits(plain, ids)
    with rules.using(adapter=False):
        with rules.using(adapter=True):
            assert _logits(rules, ids).shape[-1] == 601
        assert torch.equal(_logits(rules, ids), base)
    assert _logits(rules, ids).shape[-1] == 601  # the adapter is active again after the blocks


def test_the_merged_planner_has_no_plain_model_to_switch_to(unison):
    with (
        pytest.raises(ModelError, match="not in memory: planner_backend 'unison' merges"),
        unison.using(adapter=False),
    ):
        pass


class _Replies:
    """Records each real answer of ``reply`` and which tokenizer was active for it."""

    def __init__(self, planner: QwenPlanner, monkeypatch: pytest.MonkeyPatch):
        self.answers: list[str] = []
        self.base_tokenizer: list[bool] = []
        real = planner.reply

        def reply(messages: list[dict], max_new_tokens: int, grammar=None) -> str:
            self.base_tokenizer.append(planner.tokenizer is planner._tokenizers[False][1])
            answer = real(messages, max_new_tokens, grammar=grammar)
            self.answers.append(answer)
            return answer

        monkeypatch.setattr(planner, "reply", reply)


@pytest.mark.parametrize("name", ["rules", "instruct"])
def test_the_instruct_backend_plans_with_the_base_model_as_without_an_adapter(
    name, plain, request, monkeypatch
):
    planner: QwenPlanner = request.getfixturevalue(name)
    with_adapter, without = _Replies(planner, monkeypatch), _Replies(plain, monkeypatch)
    req = parse_request("Draw a red fox.")
    outcomes = []
    for p in (planner, plain):
        try:
            outcomes.append(p.plan(req, backend="instruct", want_features=False).plan.model_dump())
        except PlannerError as exc:  # an answer cut short by the token limit
            outcomes.append(str(exc))
    assert outcomes[0] == outcomes[1]
    assert with_adapter.answers == without.answers and len(with_adapter.answers) >= 1
    assert all(with_adapter.base_tokenizer)


def test_an_instruct_plan_on_the_merged_planner_says_which_model_made_it(unison, monkeypatch):
    monkeypatch.setattr(unison, "reply", lambda messages, n, grammar=None: '{"task": "text_to_image"}')
    plan = unison.plan(parse_request("Draw a red fox."), backend="instruct", want_features=False).plan
    assert any("Unison adapter merged" in n for n in plan.notes)


def test_understanding_without_unison_routing_answers_with_the_base_model(
    rules, instruct, plain, tmp_path, opened
):
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)).save(
        tmp_path / "a.png"
    )
    media = [MediaInput(path=str(tmp_path / "a.png"), kind=MediaKind.IMAGE, role=Role.QUERY)]
    sources = opened.sources(media)
    for question, files in (("What is the capital of France?", []), ("What is in this picture?", media)):
        want = plain.understand(question, files, sources=sources)
        assert (
            rules.understand(question, files, sources=sources)
            == instruct.understand(question, files, sources=sources)
            == want
        )
    assert rules.name == instruct.name == plain.model_id  # the model the answer names


def test_understanding_under_unison_routing_answers_with_the_unison_planner(unison, plain):
    assert unison.understand_with_adapter and unison.name.endswith(f"+ {unison.config.adapter}")
    trained = EXAMPLES[-1]  # the tiny adapter answers "Paris." to its trained question
    assert unison.understand(parse_request(trained.request).text, [], max_new_tokens=8) == trained.plan


# ---------------------------------------------------------------------------------------------
# Conditioning defaults


def test_the_default_negative_prompt_is_wan21s_own():
    default = SamplingDefaults().negative_prompt
    assert default == WAN_NEGATIVE_PROMPT
    assert default.startswith("色调艳丽，过曝，静态，细节模糊不清，字幕")
    assert default.endswith("三条腿，背景人很多，倒着走")
    # Wan-Video/Wan2.1 wan/configs/shared_config.py, sample_neg_prompt, byte for byte.
    assert len(default) == 137
    assert hashlib.sha256(default.encode()).hexdigest() == (
        "ce96e0324e4b54ce4b6e867f669ca520952e1a34cc116543516b1897f0d3c47e"
    )


def test_no_negative_prompt_given_means_wan21s_and_an_empty_one_means_none():
    assert resolve_sampling(Sampling(seed=0), SamplingDefaults()).negative_prompt == WAN_NEGATIVE_PROMPT
    assert resolve_sampling(Sampling(seed=0, negative_prompt=""), SamplingDefaults()).negative_prompt == ""
    assert resolve_sampling(Sampling(seed=0), SamplingDefaults(negative_prompt="")).negative_prompt == ""


def test_the_umt5_prompt_defaults_to_the_request_text_as_the_reference_gives_it():
    assert SamplingDefaults().umt5_prompt == "request"
    assert SamplingDefaults(umt5_prompt="plain").umt5_prompt == "plain"
    with pytest.raises(ValueError, match="umt5_prompt"):
        SamplingDefaults(umt5_prompt="raw")  # type: ignore[arg-type]

"""QwenPlanner on the tiny real-format Qwen2.5-VL + Unison adapter: loading, planning, features,
understanding, grounding; and the pure JSON-plan and box parsers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import EngineConfig
from engine.control import JobControl
from engine.errors import Cancelled, InputRefused, InvalidRequest, ModelError, PlannerError
from engine.media import encode_mp4
from engine.plan import MediaInput
from engine.planners.instruct import plan_from_json, plan_with_retry
from engine.planners.qwen import QwenPlanner
from engine.request import parse_request
from engine.tiny.qwen import EXAMPLES
from engine.understand import parse_boxes, scale_boxes
from engine.vocab import MediaKind, Role, Task


def _tiny(root, **overrides) -> EngineConfig:
    """The tiny preset with the Unison backend (the preset itself routes with the rules planner)."""
    overrides.setdefault("planner_backend", "unison" if overrides.get("adapter", "") is not None else None)
    return EngineConfig.tiny(root, **overrides)


@pytest.fixture(scope="module")
def planner(tiny_paths) -> QwenPlanner:
    p = QwenPlanner(_tiny(tiny_paths.root))
    p.load()
    return p


@pytest.fixture(scope="module")
def base_planner(tiny_paths) -> QwenPlanner:
    """The tiny Qwen without the adapter: the instruct backend."""
    p = QwenPlanner(_tiny(tiny_paths.root, adapter=None))
    p.instruct_max_new_tokens = 12  # a JSON answer cut at 12 tokens cannot parse: both tries fail, fast
    p.load()
    return p


@pytest.fixture(scope="module")
def media_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(d / "a.png")
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(d / "b.jpg")
    encode_mp4(d / "v.mp4", rng.integers(0, 255, (12, 64, 96, 3), dtype=np.uint8), fps=8)
    return {"image": d / "a.png", "image2": d / "b.jpg", "video": d / "v.mp4"}


class _Spy:
    """Wraps the real ``generate`` and records what it was given (the model still runs)."""

    def __init__(self, planner: QwenPlanner, monkeypatch: pytest.MonkeyPatch):
        self.calls: list[dict] = []
        real = planner.model.generate

        def generate(**kwargs):
            self.calls.append(kwargs)
            return real(**kwargs)

        monkeypatch.setattr(planner.model, "generate", generate)


def _copy_adapter(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# ---------------------------------------------------------------------------------------------
# Loading


def test_nothing_loads_until_first_use(tiny_paths):
    p = QwenPlanner(_tiny(tiny_paths.root))
    assert not p.loaded
    assert p.hidden_size == 64  # read from config.json alone
    assert not p.loaded
    assert p.name == f"{tiny_paths.qwen} + {tiny_paths.adapter}"


def test_the_adapter_is_merged_with_embeddings_resized_and_untied(planner, tiny_paths):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    base = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_paths.qwen)
    model = planner.model
    tok = AutoTokenizer.from_pretrained(tiny_paths.adapter)
    embed, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    assert base.lm_head.weight is base.get_input_embeddings().weight
    assert embed.shape[0] == head.shape[0] == len(tok) != base.get_input_embeddings().weight.shape[0]
    assert embed.data_ptr() != head.data_ptr() and not torch.equal(embed, head)
    assert model.config.tie_word_embeddings is False
    assert not any("lora_" in name for name, _ in model.named_modules())  # merged, not wrapped
    q = "model.language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[q], base.state_dict()[q])
    vision = "model.visual.blocks.0.attn.qkv.weight"
    assert torch.equal(model.state_dict()[vision], base.state_dict()[vision])
    assert planner.tokenizer.convert_tokens_to_ids("<CFI>") < embed.shape[0]


def test_an_adapter_saved_in_the_pre_4_52_layout_merges_to_the_same_model(planner, tiny_paths, tmp_path):
    # transformers < 4.52 named the text model "model.*" (now "model.language_model.*"); LoRAs
    # trained then keep those names. The planner must map them as transformers maps base weights.
    from safetensors.torch import load_file, save_file

    legacy = _copy_adapter(tiny_paths.adapter, tmp_path / "legacy")
    file = legacy / "adapter_model.safetensors"
    state = load_file(file)
    renamed = {k.replace("model.language_model.", "model."): v for k, v in state.items()}
    assert renamed.keys() != state.keys()
    save_file(renamed, file, metadata={"format": "pt"})

    old = QwenPlanner(_tiny(tiny_paths.root, adapter=str(legacy)))
    old.load()
    want, got = planner.model.state_dict(), old.model.state_dict()
    for key in ("model.language_model.layers.0.self_attn.q_proj.weight", "lm_head.weight"):
        assert torch.equal(got[key], want[key])
    assert torch.equal(old.model.get_input_embeddings().weight, planner.model.get_input_embeddings().weight)


def test_without_an_adapter_the_base_model_keeps_its_tied_embeddings(base_planner):
    model = base_planner.model
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert not base_planner.adapter_loaded
    assert base_planner.name == base_planner.model_id


def test_a_missing_adapter_directory_is_a_model_error(tiny_paths, tmp_path):
    cfg = _tiny(tiny_paths.root, adapter=str(tmp_path / "no-adapter"))
    with pytest.raises(ModelError, match=r"adapter=.*no-adapter.*no such directory.*adapter_config\.json"):
        QwenPlanner(cfg).load()


def test_a_directory_without_adapter_config_is_a_model_error(tiny_paths, tmp_path):
    cfg = _tiny(tiny_paths.root, adapter=str(tmp_path))
    with pytest.raises(ModelError, match="has no adapter_config.json"):
        QwenPlanner(cfg).load()


def test_a_missing_planner_directory_is_a_model_error(tiny_paths, tmp_path):
    cfg = _tiny(tiny_paths.root, planner_model=str(tmp_path / "no-qwen"))
    with pytest.raises(ModelError, match=r"planner_model=.*no-qwen.*no such directory"):
        QwenPlanner(cfg).load()


def test_a_hub_adapter_missing_from_an_offline_cache_is_a_model_error(tiny_paths, tmp_path):
    cfg = _tiny(tiny_paths.root).model_copy(update={"adapter": "someone/unison-lora", "cache_dir": tmp_path})
    with pytest.raises(ModelError, match="adapter='someone/unison-lora'.*not in the local cache"):
        QwenPlanner(cfg).load()


def test_a_hub_model_missing_from_an_offline_cache_is_a_model_error(tiny_paths, tmp_path):
    cfg = _tiny(tiny_paths.root).model_copy(
        update={"planner_model": "Qwen/Qwen2.5-VL-3B-Instruct", "cache_dir": tmp_path}
    )
    planner = QwenPlanner(cfg)
    with pytest.raises(ModelError, match="planner_model='Qwen/Qwen2.5-VL-3B-Instruct'.*local_files_only"):
        planner.hidden_size  # noqa: B018 (the property reads the config)
    with pytest.raises(ModelError, match="planner_model='Qwen/Qwen2.5-VL-3B-Instruct'"):
        planner.load()


def test_an_adapter_whose_embeddings_do_not_match_its_tokenizer_is_refused(tiny_paths, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = _copy_adapter(tiny_paths.adapter, tmp_path / "adapter")
    weights = load_file(adapter / "adapter_model.safetensors")
    for k in list(weights):
        if k.endswith(("embed_tokens.weight", "lm_head.weight")):
            weights[k] = weights[k][:-3].contiguous()  # 3 rows short of the tokenizer
    save_file(weights, adapter / "adapter_model.safetensors")
    cfg = _tiny(tiny_paths.root, adapter=str(adapter))
    with pytest.raises(ModelError, match=r"embeddings have \d+ rows but its tokenizer has \d+ tokens"):
        QwenPlanner(cfg).load()


def test_an_adapter_made_for_a_wider_model_is_refused(tiny_paths, tmp_path):
    from safetensors.torch import load_file, save_file

    adapter = _copy_adapter(tiny_paths.adapter, tmp_path / "adapter")
    weights = load_file(adapter / "adapter_model.safetensors")
    weights = {
        k: torch.zeros(v.shape[0], 128) if k.endswith("embed_tokens.weight") else v
        for k, v in weights.items()
    }
    save_file(weights, adapter / "adapter_model.safetensors")
    cfg = _tiny(tiny_paths.root, adapter=str(adapter))
    with pytest.raises(ModelError, match="width 128 but the planner model's hidden size is 64"):
        QwenPlanner(cfg).load()


def test_an_adapter_for_another_architecture_is_refused(tiny_paths, tmp_path):
    adapter = _copy_adapter(tiny_paths.adapter, tmp_path / "adapter")
    config = json.loads((adapter / "adapter_config.json").read_text())
    config["target_modules"] = ["c_attn", "c_proj"]  # GPT-2's attention: nothing like it in Qwen
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    cfg = _tiny(tiny_paths.root, adapter=str(adapter))
    with pytest.raises(ModelError, match="cannot be applied to"):
        QwenPlanner(cfg).load()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_asking_for_cuda_without_cuda_is_a_model_error(tiny_paths):
    cfg = _tiny(tiny_paths.root, planner_device="cuda")
    with pytest.raises(ModelError, match="CUDA is not available"):
        QwenPlanner(cfg).load()


# ---------------------------------------------------------------------------------------------
# Planning


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda e: e.task.value + ":" + e.request[:24])
def test_the_unison_backend_plans_each_trained_request(planner, example):
    req = parse_request(example.request)
    out = planner.plan(req, backend="unison", want_features=False)
    assert out.plan.raw == example.plan
    assert out.plan.task is example.task
    assert out.features is None
    assert out.timings["plan_s"] > 0


def test_unison_plans_give_inputs_their_roles(planner):
    edit = planner.plan(parse_request(EXAMPLES[3].request), backend="unison", want_features=False).plan
    assert edit.task is Task.IMAGE_EDIT
    assert edit.one(Role.SOURCE).path == "photo.png" and edit.one(Role.MASK).path == "mask.png"
    assert edit.prompt == "Edit using the mask: put a hat on the dog."
    video = planner.plan(parse_request(EXAMPLES[2].request), backend="unison", want_features=False).plan
    assert (video.width, video.height, video.num_frames) == (64, 48, 9)
    last = planner.plan(parse_request(EXAMPLES[5].request), backend="unison", want_features=False).plan
    assert last.one(Role.LAST_FRAME).path == "end.png"


@pytest.mark.parametrize("index", [0, 3, 9])
def test_features_from_the_planning_pass_equal_a_separate_forward(planner, index):
    req = parse_request(EXAMPLES[index].request)
    out = planner.plan(req, backend="unison", want_features=True)
    separate = planner.features(req)
    rendered = planner.chat_text([{"role": "user", "content": req.text}], generation_prompt=False)
    length = len(planner.token_ids(rendered))
    assert out.features.shape == separate.shape == (1, length - 1, planner.hidden_size)
    assert out.features.dtype == torch.float32
    assert torch.allclose(out.features, separate, atol=1e-5)


def test_features_are_the_normed_last_layer_without_the_first_position(planner):
    req = parse_request("Draw a cat.")
    ids = planner.token_ids(
        planner.chat_text([{"role": "user", "content": req.text}], generation_prompt=False)
    )
    with torch.inference_mode():
        out = planner.model(input_ids=torch.tensor([ids]), output_hidden_states=True)
    assert torch.allclose(planner.features(req), out.hidden_states[-1][:, 1:], atol=1e-6)


def test_the_unison_backend_without_the_adapter_is_a_model_error(base_planner):
    with pytest.raises(ModelError, match="needs the Unison adapter"):
        base_planner.plan(parse_request("Draw a cat."), backend="unison", want_features=False)


def test_an_unknown_backend_is_refused(planner):
    with pytest.raises(InvalidRequest, match="backend='rules'"):
        planner.plan(parse_request("Draw a cat."), backend="rules", want_features=False)  # type: ignore[arg-type]


def test_the_instruct_backend_retries_once_with_the_error_then_gives_up(base_planner, monkeypatch):
    spy = _Spy(base_planner, monkeypatch)
    with pytest.raises(PlannerError, match="no usable plan in 2 attempts: first answer: .*second answer: "):
        base_planner.plan(parse_request("Draw a red fox."), backend="instruct", want_features=False)
    assert len(spy.calls) == 2
    second_prompt = base_planner.tokenizer.decode(spy.calls[1]["input_ids"][0])
    assert "That answer cannot be used:" in second_prompt
    assert "<|im_start|>assistant" in second_prompt.split("Request: Draw a red fox.")[1]


def test_plan_with_retry_accepts_a_corrected_second_answer():
    answers = iter(["Sure! Here is the plan.", '```json\n{"task": "text_to_video", "num_frames": 33}\n```'])
    seen: list[list[dict]] = []

    def ask(messages: list[dict]) -> str:
        seen.append([dict(m) for m in messages])
        return next(answers)

    plan = plan_with_retry(ask, parse_request("A clip of rain."))
    assert plan.task is Task.TEXT_TO_VIDEO and plan.num_frames == 33 and plan.prompt == "A clip of rain."
    assert len(seen) == 2
    assert seen[1][1] == {"role": "assistant", "content": "Sure! Here is the plan."}
    assert "no JSON object in the reply" in seen[1][2]["content"]


# ---------------------------------------------------------------------------------------------
# plan_from_json (pure)

FILES = [("photo.png", MediaKind.IMAGE), ("mask.png", MediaKind.IMAGE), ("clip.mp4", MediaKind.VIDEO)]


def test_a_json_plan_becomes_a_plan_with_roles():
    text = (
        'Plan: {"task": "image_edit", "width": 640, "height": 480, '
        '"inputs": [{"index": 0, "role": "source"}, {"index": 1, "role": "mask"}]}'
    )
    plan = plan_from_json(text, FILES[:2], prompt="put a hat on it")
    assert plan.task is Task.IMAGE_EDIT and (plan.width, plan.height, plan.num_frames) == (640, 480, 1)
    assert plan.one(Role.SOURCE).path == "photo.png" and plan.one(Role.MASK).path == "mask.png"
    assert plan.raw == text and plan.prompt == "put a hat on it"


def test_an_understanding_plan_reads_every_file_and_takes_its_kind_from_them():
    plan = plan_from_json('{"task": "image_understanding", "inputs": []}', FILES, prompt="what?")
    assert plan.task is Task.VIDEO_UNDERSTANDING
    assert [m.path for m in plan.by_role(Role.QUERY)] == ["photo.png", "mask.png", "clip.mp4"]
    assert plan_from_json('{"task": "video_understanding"}', [], prompt="hi").task is Task.TEXT_UNDERSTANDING


def test_a_json_frame_count_off_the_4k_plus_1_grid_is_rounded_onto_it_and_noted():
    # An instruct model asked for "4k+1 frames" often answers 80; the meaning is clear (diffusers
    # itself rounds such counts), and the user never typed 80, so it must not fail validation.
    plan = plan_from_json('{"task": "text_to_video", "num_frames": 80}', [], prompt="waves")
    assert plan.num_frames == 81
    assert any("80" in note and "81" in note for note in plan.notes)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("I would draw a cat.", "no JSON object"),
        ('{"task": "paint"}', "task='paint'.*one of text_understanding"),
        ('{"task": "text_to_image", "width": "wide"}', "width='wide'"),
        (
            '{"task": "image_reference", "inputs": [{"index": 5, "role": "reference"}]}',
            r"inputs\[0\]\.index=5",
        ),
        (
            '{"task": "image_edit", "inputs": [{"index": 2, "role": "source"}, {"index": 1, "role": "mask"}]}',
            "do not fit task image_edit.*must be an image",
        ),
        (
            '{"task": "image_reference", "inputs": [{"index": 0, "role": "reference"}, {"index": 0, "role": "reference"}]}',
            "one role only",
        ),
        ('{"task": "text_to_image", "width": 0, "height": 480}', "width=0: must be a positive"),
        ('{"task": "text_to_video", "num_frames": -4}', "num_frames=-4: must be a positive"),
    ],
)
def test_a_bad_json_plan_names_what_is_wrong(text, message):
    with pytest.raises(PlannerError, match=message):
        plan_from_json(text, FILES, prompt="x")


# ---------------------------------------------------------------------------------------------
# The understanding rule, once for every backend

_KINDS_CASES = [
    ("What is the capital of France?", Task.TEXT_UNDERSTANDING),
    ("What is in ###a.png### and ###b.jpg###?", Task.IMAGE_UNDERSTANDING),
    ("What happens in ###v.mp4### after ###a.png###?", Task.VIDEO_UNDERSTANDING),
]


@pytest.mark.parametrize(("text", "task"), _KINDS_CASES, ids=lambda v: getattr(v, "value", "")[:20])
def test_every_backend_types_an_understanding_request_by_its_files_the_same_way(text, task):
    from engine.grammar import parse_unison
    from engine.planners.rules import RulesPlanner
    from engine.tasks import understanding_task

    req = parse_request(text)
    assert understanding_task(req.kinds) is task
    # The Unison grammar: an answer without <CFI>/<CFV> is understanding, typed by the files.
    assert parse_unison("Just answer it.", req.media, prompt=req.prompt).task is task
    # The instruct JSON path, even when the model names the wrong kind of understanding.
    for named in ("text_understanding", "image_understanding", "video_understanding"):
        assert plan_from_json(f'{{"task": "{named}"}}', req.media, prompt=req.prompt).task is task
    assert RulesPlanner().plan(req).task is task


def test_the_model_backends_are_planners(planner):
    from engine.planners import BACKENDS, Planner

    assert set(planner.backends) == {"unison", "instruct"} <= set(BACKENDS)
    for name, backend in planner.backends.items():
        assert isinstance(backend, Planner) and backend.name == name


# ---------------------------------------------------------------------------------------------
# Understanding


def _inputs(*pairs: tuple[Path, MediaKind]) -> list[MediaInput]:
    return [MediaInput(path=str(p), kind=k, role=Role.QUERY) for p, k in pairs]


def test_understanding_answers_text_alone(planner):
    answer = planner.understand("What is the capital of France?", [])
    assert isinstance(answer, str) and "<|im_end|>" not in answer


def test_understanding_answers_about_images(planner, media_files, monkeypatch, opened):
    spy = _Spy(planner, monkeypatch)
    media = _inputs((media_files["image"], MediaKind.IMAGE), (media_files["image2"], MediaKind.IMAGE))
    answer = planner.understand("Compare them.", media, max_new_tokens=3, sources=opened.sources(media))
    assert isinstance(answer, str)
    call = spy.calls[0]
    assert call["image_grid_thw"].shape == (2, 3) and "mm_token_type_ids" in call
    assert call["generation_config"].max_new_tokens == 3


def test_a_video_reaches_the_model_as_video_with_its_frame_timing(planner, media_files, monkeypatch, opened):
    spy = _Spy(planner, monkeypatch)
    media = _inputs((media_files["video"], MediaKind.VIDEO))
    answer = planner.understand("What happens?", media, sources=opened.sources(media))
    assert isinstance(answer, str)
    call = spy.calls[0]
    assert "pixel_values_videos" in call and "pixel_values" not in call
    t, h, w = (int(v) for v in call["video_grid_thw"][0])
    assert t >= 1 and h * w * 14 * 14 <= planner.config.understanding.max_pixels * 1.05
    # 2 frames per temporal patch at the configured 2 fps: one second per grid step.
    assert call["second_per_grid_ts"].tolist() == [pytest.approx(2 / planner.config.understanding.video_fps)]
    video_pad = planner.tokenizer.convert_tokens_to_ids("<|video_pad|>")
    assert int((call["input_ids"] == video_pad).sum()) == t * h * w // 4


def test_understanding_reports_progress_and_stops_when_cancelled(planner):
    steps: list[int] = []
    control = JobControl(on_progress=lambda done, total, stage: steps.append(done))
    planner.understand("Describe a cat.", [], max_new_tokens=4, control=control)
    assert steps and steps == sorted(steps) and steps[-1] <= 4

    cancelling = JobControl(on_progress=lambda done, total, stage: cancelling.cancel())
    with pytest.raises(Cancelled):
        planner.understand("Describe a cat.", [], max_new_tokens=8, control=cancelling)


def test_an_input_that_was_not_opened_is_refused_not_read_by_its_path(planner, media_files):
    with pytest.raises(InputRefused, match=r"a\.png' was not admitted with the request"):
        planner.understand("What is it?", _inputs((media_files["image"], MediaKind.IMAGE)))


def test_an_image_qwen_cannot_resize_is_refused_as_input(planner, tmp_path, opened):
    path = tmp_path / "strip.png"
    Image.new("RGB", (600, 2), "white").save(path)
    media = _inputs((path, MediaKind.IMAGE))
    with pytest.raises(InputRefused, match="aspect ratio"):
        planner.understand("What is it?", media, sources=opened.sources(media))


@pytest.mark.parametrize("kind", [MediaKind.IMAGE, MediaKind.VIDEO])
def test_understanding_honours_the_configured_input_pixel_limit(
    planner, media_files, monkeypatch, kind, opened
):
    # 60×80 image / 64×96 video frames are over a 1000-pixel limit: refused before decoding.
    limits = planner.config.limits.model_copy(update={"max_input_pixels": 1000})
    monkeypatch.setattr(planner, "config", planner.config.model_copy(update={"limits": limits}))
    media = _inputs((media_files["image" if kind is MediaKind.IMAGE else "video"], kind))
    with pytest.raises(InputRefused, match="limit is 1000 pixels"):
        planner.understand("What is it?", media, sources=opened.sources(media))


def test_understanding_refuses_a_negative_temperature(planner):
    with pytest.raises(InvalidRequest, match="temperature=-1"):
        planner.understand("hi", [], temperature=-1)


def test_understanding_can_sample(planner):
    assert isinstance(planner.understand("Tell me a story.", [], max_new_tokens=4, temperature=0.8), str)


# ---------------------------------------------------------------------------------------------
# Grounding


def test_grounding_returns_boxes_inside_the_image(planner, media_files):
    image = Image.open(media_files["image"])
    boxes = planner.ground(image, "the red square")
    assert isinstance(boxes, list)
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height


@pytest.mark.parametrize(
    ("text", "boxes"),
    [
        (
            '```json\n[\n  {"bbox_2d": [10, 20, 110, 220], "label": "dog"},\n'
            '  {"bbox_2d": [5, 6, 7, 8], "label": "dog"}\n]\n```',
            [(10, 20, 110, 220), (5, 6, 7, 8)],
        ),
        ('{"bbox_2d": [30, 40, 10, 20], "label": "cat"}', [(10, 20, 30, 40)]),
        ('The dog is at {"bbox": [1.5, 2, 3.5, 4]}.', [(1.5, 2, 3.5, 4)]),
        ("The box is [12, 34, 56, 78] and again (12, 34, 56, 78).", [(12, 34, 56, 78)]),
        ('[{"bbox_2d": [10, 10, 10, 50]}]', []),
        ('[{"bbox_2d": [1, 2, 3]}]', []),
        ("I cannot see any dog.", []),
        ("", []),
    ],
)
def test_grounding_answers_are_parsed_leniently(text, boxes):
    assert parse_boxes(text) == [tuple(float(v) for v in b) for b in boxes]


def test_boxes_are_scaled_back_to_the_original_image_and_clipped():
    boxes = scale_boxes([(14, 28, 56, 56), (50, 50, 70, 70), (60, 0, 80, 10)], (56, 56), (112, 224))
    assert boxes == [(28.0, 112.0, 112.0, 224.0), (100.0, 200.0, 112.0, 224.0)]


# ---------------------------------------------------------------------------------------------
# The grammar: a video <BOEDIT> with one index or none (the region is found automatically)

_IMG, _VID = MediaKind.IMAGE, MediaKind.VIDEO


@pytest.mark.parametrize(
    ("text", "files", "source"),
    [
        ("<CFV><BOEDIT>0<EOEDIT>", [("clip.mp4", _VID)], "clip.mp4"),
        ("<CFV><BOEDIT><EOEDIT>", [("clip.mp4", _VID)], "clip.mp4"),
        ("<CFV><BOEDIT> 1 <EOEDIT>", [("a.png", _IMG), ("clip.mp4", _VID)], "clip.mp4"),
        ("<CFV><BOEDIT>1<EOEDIT>", [("a.mp4", _VID), ("b.mp4", _VID)], "b.mp4"),
        ("<CFV><BOEDIT><EOEDIT>", [("a.png", _IMG), ("clip.mp4", _VID)], "clip.mp4"),
    ],
)
def test_a_video_edit_with_one_index_or_none_edits_that_video_without_a_mask(text, files, source):
    from engine.grammar import parse_unison
    from engine.plan import check_plan

    plan = parse_unison(text, files, prompt="a tiger instead of the dog")
    assert plan.task is Task.VIDEO_EDIT
    assert [(m.path, m.role) for m in plan.inputs] == [(source, Role.SOURCE)]
    assert check_plan(plan).by_role(Role.MASK) == []


def test_two_indices_in_a_video_edit_still_name_the_mask_and_the_source():
    from engine.grammar import parse_unison

    plan = parse_unison("<CFV><BOEDIT>1,0<EOEDIT>", [("clip.mp4", _VID), ("m.png", _IMG)], prompt="x")
    assert plan.one(Role.SOURCE).path == "clip.mp4" and plan.one(Role.MASK).path == "m.png"


@pytest.mark.parametrize(
    ("text", "files", "says"),
    [
        (
            "<CFV><BOEDIT>0<EOEDIT>",
            [("a.png", _IMG), ("clip.mp4", _VID)],
            "names input 0 (image) as the video",
        ),
        ("<CFV><BOEDIT>3<EOEDIT>", [("clip.mp4", _VID)], "refers to input 3 but the request has 1"),
        ("<CFV><BOEDIT>one<EOEDIT>", [("clip.mp4", _VID)], "expected 1 whole number"),
        (
            "<CFI><BOEDIT>1<EOEDIT>",
            [("a.png", _IMG), ("clip.mp4", _VID)],
            "names input 1 (video) as the image",
        ),
    ],
)
def test_a_single_edit_index_that_cannot_be_the_video_is_a_planner_error(text, files, says):
    from engine.grammar import parse_unison

    with pytest.raises(PlannerError, match=r"<BOEDIT>|refers to input") as info:
        parse_unison(text, files)
    assert says in str(info.value) and repr(text) in str(info.value)


@pytest.mark.parametrize(
    ("text", "files", "written"),
    [
        ("<CFV><BOEDIT>0<EOEDIT>", [("clip.mp4", _VID)], "<CFV><BOEDIT><EOEDIT>"),
        ("<CFV><BOEDIT><EOEDIT>", [("a.png", _IMG), ("clip.mp4", _VID)], "<CFV><BOEDIT><EOEDIT>"),
        ("<CFV><BOEDIT>1<EOEDIT>", [("a.mp4", _VID), ("b.mp4", _VID)], "<CFV><BOEDIT>1<EOEDIT>"),
        ("<CFV><BOEDIT>0,1<EOEDIT>", [("m.mp4", _VID), ("clip.mp4", _VID)], "<CFV><BOEDIT>0,1<EOEDIT>"),
    ],
)
def test_format_writes_a_video_edit_that_parses_back_to_the_same_plan(text, files, written):
    from engine.grammar import format_unison, parse_unison

    plan = parse_unison(text, files, prompt="a tiger")
    out = format_unison(plan, [p for p, _ in files])
    assert out == f"{written} a tiger"
    again = parse_unison(out, files, prompt="a tiger")
    assert (again.task, again.inputs) == (plan.task, plan.inputs)

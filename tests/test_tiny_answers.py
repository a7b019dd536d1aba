"""The tiny preset shows the plumbing: its understanding model answers briefly, through the real engine."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.engine import Engine
from engine.media import encode_mp4


@pytest.fixture(scope="module")
def engine(tiny_paths, tmp_path_factory):
    from engine.config import EngineConfig

    return Engine(EngineConfig.tiny(tiny_paths.root, output_dir=tmp_path_factory.mktemp("outputs")))


def test_a_taught_question_gets_its_answer(engine):
    assert engine.understand("What is the capital of France?", []).answer == "Paris."


def test_a_picture_and_a_video_get_short_non_empty_answers(engine, tmp_path):
    picture, clip = tmp_path / "cat.png", tmp_path / "clip.mp4"
    Image.new("RGB", (96, 64), (200, 120, 40)).save(picture)
    encode_mp4(clip, np.full((9, 32, 48, 3), 90, dtype=np.uint8), 16.0)
    # Taught on other pictures and clips: the answer is the gist, not necessarily word for word.
    for question, media in (
        ("what is in this picture?", picture),
        ("What is happening in this video?", clip),
    ):
        answer = engine.understand(question, [str(media)]).answer
        assert answer.strip() and len(answer) < 40, answer


def test_a_question_it_was_never_taught_still_gets_a_short_answer(engine):
    answer = engine.understand("Tell me a story about the sea.", []).answer
    assert answer.strip() and len(answer) < 80

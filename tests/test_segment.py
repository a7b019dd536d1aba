"""Masks from words: the SAM 3 segmenter on a tiny checkpoint read from disk, and its helpers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.annotators import Segmenter
from engine.annotators.base import Placement
from engine.annotators.segment import Sam3Segmenter, dilate, union_of_tracks
from engine.control import JobControl
from engine.errors import Cancelled, InvalidRequest, ModelError


@pytest.fixture(scope="module")
def sam3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from engine.tiny.segment import build_segmenter

    path = tmp_path_factory.mktemp("segment") / "sam3"
    build_segmenter(path, seed=0)
    return path


@pytest.fixture(scope="module")
def segmenter(sam3_dir: Path) -> Sam3Segmenter:
    return Sam3Segmenter(str(sam3_dir), Placement.cpu())


@pytest.fixture(scope="module")
def blind_dir(sam3_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint with a detection threshold no score reaches: it never finds anything."""
    path = tmp_path_factory.mktemp("segment") / "blind"
    shutil.copytree(sam3_dir, path)
    config = json.loads((path / "config.json").read_text())
    config["score_threshold_detection"] = 1.0
    (path / "config.json").write_text(json.dumps(config))
    return path


def video(frames: int = 3, height: int = 40, width: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (frames, height, width, 3), dtype=np.uint8)


class CancelOnCheck(JobControl):
    """A job that is cancelled while it runs: at its ``n``-th check."""

    def __init__(self, n: int):
        super().__init__()
        self.n, self.checks = n, 0

    def check(self) -> None:
        self.checks += 1
        if self.checks == self.n:
            self.cancel()
        super().check()


# ---------------------------------------------------------------------- the model


def test_the_tiny_checkpoint_is_saved_in_the_released_layout(sam3_dir: Path) -> None:
    config = json.loads((sam3_dir / "config.json").read_text())
    assert config["model_type"] == "sam3_video"
    assert {"model.safetensors", "processor_config.json", "tokenizer.json"} <= {
        p.name for p in sam3_dir.iterdir()
    }


def test_the_segmenter_satisfies_the_segmenter_protocol(segmenter: Sam3Segmenter) -> None:
    assert isinstance(segmenter, Segmenter)
    assert segmenter.name == f"segment ({segmenter.spec})"


def test_an_image_gives_one_bool_mask_at_its_size(segmenter: Sam3Segmenter) -> None:
    masks = segmenter(video(frames=1), "the red car")
    assert masks.shape == (1, 40, 64) and masks.dtype == bool
    assert masks.any()  # the tiny detector sees the phrase everywhere


def test_a_video_gives_one_bool_mask_per_frame_at_its_size(segmenter: Sam3Segmenter) -> None:
    masks = segmenter(video(frames=3, height=48, width=32), "a dog")
    assert masks.shape == (3, 48, 32) and masks.dtype == bool
    assert masks.any(axis=(1, 2)).all()


def test_the_tracker_follows_objects_from_the_first_frame_to_the_last(segmenter: Sam3Segmenter) -> None:
    tracks = segmenter.track(video(frames=4), "a dog")
    assert len(tracks.frames) == len(tracks.tracked) == 4
    found = set(tracks.frames[0])
    # The objects found on the first frame are still held on the last, under the same ids: the
    # tracker carried them forward from its memories (random weights promise no more than that).
    assert found and found <= tracks.tracked[-1]
    assert all(set(shown) <= held for shown, held in zip(tracks.frames, tracks.tracked, strict=True))
    for objects in tracks.frames:
        assert all(mask.shape == (40, 64) and mask.dtype == bool for mask in objects.values())
    np.testing.assert_array_equal(
        tracks.masks(), union_of_tracks(tracks.frames, (40, 64), hidden=tracks.removed)
    )


def test_nothing_found_is_all_false_for_an_image_and_a_video(blind_dir: Path) -> None:
    blind = Sam3Segmenter(str(blind_dir), Placement.cpu())
    for frames in (video(frames=1), video(frames=2)):
        masks = blind(frames, "a unicorn")
        assert masks.shape == frames.shape[:3] and masks.dtype == bool and not masks.any()


def test_a_cancel_between_frames_stops_the_tracking(segmenter: Sam3Segmenter) -> None:
    control = CancelOnCheck(n=2)
    with pytest.raises(Cancelled):
        segmenter(video(frames=4), "a dog", control=control)
    assert control.checks == 2  # the first frame ran; the second never started


def test_unload_moves_the_weights_off_the_device_and_use_loads_them_again(sam3_dir: Path) -> None:
    segmenter = Sam3Segmenter(str(sam3_dir), Placement.cpu())
    assert not segmenter.loaded and segmenter.memory_bytes() == 0
    segmenter.load()
    assert segmenter.loaded and segmenter.memory_bytes() > 0
    segmenter.unload()
    assert not segmenter.loaded
    assert all(p.device.type == "cpu" for p in segmenter.models["model"].parameters())
    segmenter(video(frames=1), "a dog")
    assert segmenter.loaded


def test_the_weights_take_the_configured_dtype(sam3_dir: Path) -> None:
    import torch

    segmenter = Sam3Segmenter(str(sam3_dir), Placement(device=torch.device("cpu"), dtype=torch.bfloat16))
    masks = segmenter(video(frames=1), "a dog")
    assert masks.shape == (1, 40, 64)
    assert {p.dtype for p in segmenter.models["model"].parameters()} == {torch.bfloat16}


def test_from_config_reads_the_segment_model_setting(sam3_dir: Path) -> None:
    from engine.config import AnnotatorSettings, EngineConfig

    config = EngineConfig(
        device="cpu", dtype="float32", annotators=AnnotatorSettings(segment_model=str(sam3_dir))
    )
    segmenter = Sam3Segmenter.from_config(config)
    assert segmenter is not None and segmenter.spec == str(sam3_dir)
    assert segmenter.placement.device.type == "cpu"
    assert Sam3Segmenter.from_config(EngineConfig(annotators=AnnotatorSettings(segment_model=None))) is None


def test_a_missing_directory_is_a_model_error_naming_the_setting(tmp_path: Path) -> None:
    segmenter = Sam3Segmenter(str(tmp_path / "nowhere"), Placement.cpu())
    with pytest.raises(ModelError, match="segment_model="):
        segmenter.load()


def test_an_empty_phrase_or_bad_frames_are_refused(segmenter: Sam3Segmenter) -> None:
    with pytest.raises(InvalidRequest, match="phrase"):
        segmenter(video(frames=1), "  ")
    with pytest.raises(InvalidRequest, match="frames"):
        segmenter(np.zeros((40, 64, 3), dtype=np.uint8), "a dog")


def test_a_phrase_too_long_for_the_text_encoder_is_cut_at_a_word(segmenter: Sam3Segmenter) -> None:
    long = " ".join(["the big red car"] * 20)
    masks = segmenter(video(frames=1), long)
    assert masks.shape == (1, 40, 64)


# ---------------------------------------------------------------------- hand-made masks


def test_the_union_of_tracks_leaves_out_objects_the_tracker_removed_on_every_frame() -> None:
    a = np.zeros((4, 4), dtype=bool)
    a[0, 0] = True
    b = np.zeros((4, 4), dtype=bool)
    b[3, 3] = True
    c = np.zeros((4, 4), dtype=bool)
    c[1, 1] = True
    frames = [{0: a, 1: b}, {0: c, 1: b}, {}]
    out = union_of_tracks(frames, (4, 4), hidden={1})
    assert out.shape == (3, 4, 4) and out.dtype == bool
    np.testing.assert_array_equal(out[0], a)  # object 1 is hidden before its removal too
    np.testing.assert_array_equal(out[1], c)
    assert not out[2].any()
    np.testing.assert_array_equal(union_of_tracks(frames, (4, 4))[0], a | b)


def test_dilation_grows_a_square_by_px_on_each_side() -> None:
    masks = np.zeros((2, 32, 40), dtype=bool)
    masks[0, 10:14, 12:16] = True  # 4×4 square
    grown = dilate(masks, 3)
    expected = np.zeros_like(masks)
    expected[0, 7:17, 9:19] = True  # 10×10: 3 more on every side
    np.testing.assert_array_equal(grown, expected)
    assert grown.dtype == bool and not grown[1].any()


def test_dilation_stops_at_the_frame_edge_and_zero_px_is_a_copy() -> None:
    masks = np.zeros((1, 8, 8), dtype=bool)
    masks[0, 0, 0] = True
    grown = dilate(masks, 2)
    assert grown[0, :3, :3].all() and grown.sum() == 9
    same = dilate(masks, 0)
    np.testing.assert_array_equal(same, masks)
    assert same is not masks
    with pytest.raises(InvalidRequest, match="mask_dilate_px"):
        dilate(masks, -1)

"""The control annotators (engine/annotators/) on tiny weights read from disk, on the CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.annotators import ControlAnnotator, build_control, looks_like_control
from engine.annotators.base import Placement
from engine.annotators.flow import FlowAnnotator, colour_wheel, flow_to_colour, render_flows
from engine.annotators.pose import COLOURS, LIMB_STRENGTH, LIMBS, render_pose
from engine.config import EngineConfig
from engine.control import JobControl
from engine.errors import Cancelled, InvalidRequest, ModelError
from engine.vocab import CONTROL_KINDS

EXTRACTED = [k for k in CONTROL_KINDS if k != "raw"]


@pytest.fixture(scope="module")
def config(tiny_paths) -> EngineConfig:
    return EngineConfig.tiny(tiny_paths.root, build=False)


def clip(count: int = 3, height: int = 48, width: int = 64) -> np.ndarray:
    """A small moving colour clip: a bright square sliding right over a gradient."""
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.zeros((count, height, width, 3), dtype=np.uint8)
    for i in range(count):
        frames[i, ..., 0] = (xs * 255 // width).astype(np.uint8)
        frames[i, ..., 1] = (ys * 255 // height).astype(np.uint8)
        frames[i, ..., 2] = 90
        frames[i, 10:26, 8 + 4 * i : 24 + 4 * i] = (250, 240, 30)
    return frames


def standing_person(cx: float, top: float, size: float) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 keypoints of a person facing the camera (their right on the image's left)."""
    s = size
    points = {
        0: (cx, top), 1: (cx + 0.05 * s, top - 0.03 * s), 2: (cx - 0.05 * s, top - 0.03 * s),
        3: (cx + 0.1 * s, top), 4: (cx - 0.1 * s, top),
        5: (cx + 0.2 * s, top + 0.2 * s), 6: (cx - 0.2 * s, top + 0.2 * s),
        7: (cx + 0.3 * s, top + 0.45 * s), 8: (cx - 0.3 * s, top + 0.45 * s),
        9: (cx + 0.35 * s, top + 0.7 * s), 10: (cx - 0.35 * s, top + 0.7 * s),
        11: (cx + 0.12 * s, top + 0.65 * s), 12: (cx - 0.12 * s, top + 0.65 * s),
        13: (cx + 0.14 * s, top + 1.0 * s), 14: (cx - 0.14 * s, top + 1.0 * s),
        15: (cx + 0.15 * s, top + 1.35 * s), 16: (cx - 0.15 * s, top + 1.35 * s),
    }  # fmt: skip
    keypoints = np.array([points[i] for i in range(17)], dtype=np.float64)
    return keypoints, np.ones(17)


# --- every annotator, through the real loading code --------------------------------------------


@pytest.mark.parametrize("kind", CONTROL_KINDS)
def test_each_control_kind_gives_uint8_rgb_frames_of_the_same_count_and_size(config, kind):
    annotator = build_control(kind, config)
    assert isinstance(annotator, ControlAnnotator)
    frames = clip()
    out = annotator(frames)
    assert out.shape == frames.shape and out.dtype == np.uint8
    annotator.unload()


def test_the_tiny_preset_points_the_annotators_at_the_tiny_weights(config, tiny_paths):
    settings = config.annotators
    assert settings.depth_model == str(tiny_paths.depth)
    assert settings.pose_model == str(tiny_paths.pose)
    assert settings.person_detector == str(tiny_paths.person_detector)
    assert settings.flow_model == str(tiny_paths.flow)
    assert settings.segment_model == str(tiny_paths.segment)
    for path in (tiny_paths.depth, tiny_paths.pose, tiny_paths.person_detector):
        assert (path / "config.json").is_file() and (path / "preprocessor_config.json").is_file()
    assert tiny_paths.flow.is_file()


def test_an_unknown_control_kind_is_refused_naming_the_field(config):
    with pytest.raises(InvalidRequest, match="control_kind='canny': must be one of pose, depth"):
        build_control("canny", config)


def test_frames_that_are_not_uint8_rgb_are_refused(config):
    with pytest.raises(InvalidRequest, match="frames="):
        build_control("gray", config)(np.zeros((2, 8, 8), dtype=np.uint8))


@pytest.mark.parametrize("kind", EXTRACTED)
def test_a_cancel_between_frames_stops_the_annotator(config, kind):
    control = JobControl()
    control.cancel()
    with pytest.raises(Cancelled):
        build_control(kind, config)(clip(), control=control)


def test_unload_takes_the_weights_off_the_device_and_load_brings_them_back(config):
    depth = build_control("depth", config)
    assert not depth.loaded and depth.memory_bytes() == 0
    depth.load()
    assert depth.loaded and depth.memory_bytes() > 0
    depth.unload()
    assert not depth.loaded
    assert all(p.device.type == "cpu" for m in depth.models.values() for p in m.parameters())
    assert depth(clip(2)).shape == (2, 48, 64, 3)  # loads again on use
    assert depth.loaded


# --- depth, edges, gray ------------------------------------------------------------------------


def test_depth_is_grey_and_stretched_over_the_whole_clip(config):
    out = build_control("depth", config)(clip(3))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert out.min() == 0 and out.max() == 255  # one scale for the clip: its extremes reach both ends


def test_edges_of_a_white_square_on_black_lie_on_its_border(config):
    frames = np.zeros((1, 64, 64, 3), dtype=np.uint8)
    frames[0, 16:48, 16:48] = 255
    out = build_control("edges", config)(frames)[0]
    edges = out[..., 0] == 255
    assert set(np.unique(out)) <= {0, 255} and (out[..., 0] == out[..., 2]).all()
    assert edges.any()
    ys, xs = np.nonzero(edges)
    # Every edge pixel is within a pixel or two of the square's outline, none inside or far out.
    near_border = (np.minimum(np.abs(ys - 16), np.abs(ys - 47)) <= 2) | (
        np.minimum(np.abs(xs - 16), np.abs(xs - 47)) <= 2
    )
    assert near_border.all()
    assert not edges[24:40, 24:40].any() and not edges[:8].any()
    for side in (edges[10:22, 32], edges[42:54, 32], edges[32, 10:22], edges[32, 42:54]):
        assert side.any()  # all four sides are found


def test_gray_of_a_colour_frame_is_grey_luminance():
    frames = clip(1)
    out = build_control("gray", EngineConfig(device="cpu"))(frames)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    luma = frames[0].astype(np.float64) @ [0.299, 0.587, 0.114]
    assert np.abs(out[0, ..., 0] - luma).max() <= 0.5 + 1e-9


def test_raw_passes_the_frames_through_unchanged():
    frames = clip(2)
    out = build_control("raw", EngineConfig(device="cpu"))(frames)
    assert (out == frames).all() and out is not frames


# --- flow ----------------------------------------------------------------------------------------


def test_the_colour_wheel_gives_each_direction_its_middlebury_hue():
    wheel = colour_wheel()
    assert wheel.shape == (55, 3) and tuple(wheel[0]) == (255, 0, 0)
    directions = np.array([[[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0], [0.0, 0.0]]])
    right, down, left, up, still = flow_to_colour(directions, max_radius=1.0)[0]
    assert right[0] == 255 and right[1] == 0 and right[2] < 64  # red
    assert down[0] == 255 and down[1] > 200 and down[2] == 0  # yellow
    assert left[0] == 0 and left[1] > 180 and left[2] == 255  # cyan
    assert up[2] == 255 and up[1] == 0 and up[0] < 128  # blue-violet
    assert tuple(still) == (255, 255, 255)  # no motion is white


def test_the_colour_wheel_agrees_with_torchvisions_drawing_of_the_same_coding():
    import torch
    from torchvision.utils import flow_to_image

    flow = np.random.default_rng(0).normal(size=(24, 32, 2)) * 5
    ours = flow_to_colour(flow).astype(int)
    theirs = flow_to_image(torch.from_numpy(flow).permute(2, 0, 1).float()).permute(1, 2, 0).numpy()
    assert np.abs(ours - theirs.astype(int)).max() <= 1


def test_the_flow_of_a_pattern_shifted_right_is_drawn_in_the_colour_for_right():
    # What RAFT returns for a pattern moving 3 px right between frames: u = 3, v = 0 everywhere.
    flows = np.zeros((2, 16, 16, 2), dtype=np.float32)
    flows[..., 0] = 3.0
    drawn = render_flows(flows)
    assert drawn.shape == (3, 16, 16, 3)
    expected = flow_to_colour(np.array([1.0, 0.0]), max_radius=1.0)
    assert (drawn == expected).all()


def test_flow_gives_frame_zero_the_flow_of_frame_one_and_a_single_image_white(config):
    flow = build_control("flow", config)
    assert isinstance(flow, FlowAnnotator)
    out = flow(clip(3))
    assert (out[0] == out[1]).all()
    single = flow(clip(1))
    assert single.shape == (1, 48, 64, 3) and (single == 255).all()


def test_a_flow_weights_file_that_is_not_raft_is_refused(tmp_path: Path):
    import torch

    bad = tmp_path / "bad.pth"
    torch.save({"weight": torch.zeros(2)}, bad)
    with pytest.raises(ModelError, match="not a state dict of torchvision's raft_small"):
        FlowAnnotator(str(bad), Placement.cpu()).load()


def test_torchvision_raft_weights_missing_with_local_files_only_name_the_download(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    placement = Placement(device=torch.device("cpu"), dtype=torch.float32, local_files_only=True)
    with pytest.raises(ModelError, match="download --only flow"):
        FlowAnnotator("raft_small", placement).load()


# --- pose ----------------------------------------------------------------------------------------


def test_the_pose_renderer_draws_limbs_dimmed_and_joints_in_the_openpose_colours():
    keypoints, scores = standing_person(cx=256, top=100, size=250)
    frame = render_pose([(keypoints, scores)], 512, 512)
    assert frame.shape == (512, 512, 3) and frame.dtype == np.uint8
    assert (frame[:20] == 0).all()  # black background
    # The middle of each limb has the limb's colour dimmed to 60 %, give or take resampling.
    openpose = {2: 6, 3: 8, 4: 10, 5: 5, 6: 7, 7: 9, 8: 12, 9: 14, 10: 16, 11: 11, 12: 13, 13: 15}
    for index, (a, b) in enumerate(LIMBS):
        if a not in openpose or b not in openpose:
            continue
        x, y = np.round((keypoints[openpose[a]] + keypoints[openpose[b]]) / 2).astype(int)
        expected = np.array(COLOURS[index]) * LIMB_STRENGTH
        assert np.abs(frame[y, x].astype(int) - expected).max() <= 3, (index, frame[y, x], expected)
    # A joint is a dot in its full colour: the right wrist (OpenPose joint 4).
    x, y = np.round(keypoints[10]).astype(int)
    assert np.abs(frame[y, x].astype(int) - np.array(COLOURS[4])).max() <= 3


def test_keypoints_below_the_threshold_are_not_drawn():
    keypoints, scores = standing_person(cx=256, top=100, size=250)
    assert render_pose([(keypoints, np.zeros(17))], 512, 512).max() == 0
    assert render_pose([], 64, 48).shape == (64, 48, 3)


def test_frames_with_no_person_give_black_frames(config):
    pose = build_control("pose", config)
    pose.person_threshold = 1.01  # no detection scores above 1
    out = pose(clip(2))
    assert out.shape == (2, 48, 64, 3) and out.max() == 0


# --- looks_like_control ----------------------------------------------------------------------------


def test_a_drawn_skeleton_looks_like_pose_and_a_photo_like_frame_like_nothing():
    keypoints, scores = standing_person(cx=160, top=60, size=120)
    skeleton = render_pose([(keypoints, scores)], 320, 320)[None]
    assert looks_like_control(skeleton) == "pose"
    noise = np.random.default_rng(1).integers(0, 40, size=(2, 48, 64, 3))
    photo = np.clip(clip(2).astype(int) + noise, 0, 255).astype(np.uint8)
    assert looks_like_control(photo) is None


def test_grey_maps_look_like_depth_gray_or_edges(config):
    ramp = np.repeat(np.linspace(0, 255, 64).astype(np.uint8)[None, None, :, None], 48, axis=1)
    assert looks_like_control(np.repeat(ramp, 3, axis=-1)) == "depth"
    noise = np.random.default_rng(2).integers(0, 255, size=(1, 48, 64, 1), dtype=np.uint8)
    assert looks_like_control(np.repeat(noise, 3, axis=-1)) == "gray"
    square = np.zeros((1, 64, 64, 3), dtype=np.uint8)
    square[0, 16:48, 16:48] = 255
    assert looks_like_control(build_control("edges", config)(square)) == "edges"


# --- doctor and download ---------------------------------------------------------------------------


def test_download_lists_the_annotator_weights_with_torchvisions_raft():
    from unison_mcp.download import download_weights

    items = download_weights(
        EngineConfig(), only=["segment", "depth", "pose", "person_detector", "flow"], dry_run=True
    )
    assert [(i.role, i.action) for i in items] == [
        ("segment", "would download facebook/sam3"),
        ("depth", "would download depth-anything/Depth-Anything-V2-Small-hf"),
        ("pose", "would download usyd-community/vitpose-base-simple"),
        ("person_detector", "would download PekingU/rtdetr_r50vd_coco_o365"),
        ("flow", "would download torchvision's raft_small weights"),
    ]


def test_doctor_finds_the_tiny_annotators_and_estimates_their_memory(config, tmp_path: Path):
    from unison_mcp.config import ServerConfig
    from unison_mcp.doctor import run_doctor

    report = run_doctor(ServerConfig(engine=config.model_copy(update={"output_dir": tmp_path})))
    checks = {(c.section, c.name): c for c in report.checks}
    for role in ("depth", "pose", "person_detector", "flow"):
        assert checks[("weights", role)].status == "ok", checks[("weights", role)]
    memory = checks[("memory", "annotators")]
    assert "while the largest" in memory.detail and "flow" in memory.detail


def test_doctor_warns_rather_than_fails_without_the_annotator_weights(tmp_path: Path, monkeypatch):
    import torch

    from unison_mcp.config import ServerConfig
    from unison_mcp.doctor import run_doctor

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    report = run_doctor(ServerConfig(engine=EngineConfig(cache_dir=tmp_path / "hub", output_dir=tmp_path)))
    flow = next(c for c in report.checks if c.name == "flow")
    assert flow.status == "warn" and "needed for control_kind=flow" in flow.detail
    assert "unison-mcp download --only flow" in (flow.hint or "")
    memory = next(c for c in report.checks if c.section == "memory")
    assert "segment" in memory.detail  # sized from the model cards before any download

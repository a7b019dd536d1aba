"""Tiny random-initialised annotator models in the real on-disk formats.

- :func:`build_depth` writes a ``DepthAnythingForDepthEstimation`` directory (config, safetensors,
  ``preprocessor_config.json``) like ``depth-anything/Depth-Anything-V2-Small-hf``;
- :func:`build_person_detector` writes an ``RTDetrForObjectDetection`` directory with a ``person``
  label, like ``PekingU/rtdetr_r50vd_coco_o365``;
- :func:`build_pose` writes a ``VitPoseForPoseEstimation`` directory (17 COCO keypoints) like
  ``usyd-community/vitpose-base-simple``;
- :func:`build_flow` ``torch.save``\\ s a state dict of torchvision's ``raft_small``, the "local
  weights file" form of ``flow_model``.

Each loads back through the same code the real weights take (``from_pretrained``; for RAFT
``torch.load`` + ``load_state_dict``). The transformers models are a few tens of thousands of
parameters with processors at small sizes, so a frame takes milliseconds on a CPU; RAFT's
architecture is fixed, so its tiny version is the real small one (1 M parameters, 4 MB) with
random weights. Every builder is seeded: the same seed gives the same weights.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

# ImageNet statistics, which all three real processors use.
_MEAN = [0.485, 0.456, 0.406]
_STD = [0.229, 0.224, 0.225]


def build_depth(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny Depth Anything directory to ``out_dir``."""
    import torch
    from transformers import (
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        Dinov2Config,
        DPTImageProcessor,
    )

    torch.manual_seed(seed)
    backbone = Dinov2Config(
        image_size=28,
        patch_size=14,
        hidden_size=16,
        num_hidden_layers=4,
        num_attention_heads=2,
        intermediate_size=32,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=16,
        neck_hidden_sizes=[8, 8, 16, 16],
        fusion_hidden_size=8,
        head_hidden_size=8,
        depth_estimation_type="relative",
    )
    model = DepthAnythingForDepthEstimation(config).eval()
    # The real processor's settings at 28 px instead of 518: keep the aspect, sides multiples of
    # the 14-px patch, bicubic.
    processor = DPTImageProcessor(
        size={"height": 28, "width": 28},
        keep_aspect_ratio=True,
        ensure_multiple_of=14,
        do_pad=False,
        resample=3,
        image_mean=_MEAN,
        image_std=_STD,
    )
    _save(out_dir, model, processor, "Depth Anything")


def build_person_detector(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny RT-DETR detector directory (labels ``person`` and ``thing``) to ``out_dir``."""
    import torch
    from transformers import RTDetrConfig, RTDetrForObjectDetection, RTDetrImageProcessor, RTDetrResNetConfig

    torch.manual_seed(seed)
    backbone = RTDetrResNetConfig(
        embedding_size=8,
        hidden_sizes=[8, 8, 16, 16],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage2", "stage3", "stage4"],
        downsample_in_bottleneck=False,
    )
    labels = {0: "person", 1: "thing"}
    config = RTDetrConfig(
        backbone_config=backbone,
        use_pretrained_backbone=False,
        encoder_in_channels=[8, 16, 16],
        encoder_hidden_dim=16,
        encoder_layers=1,
        encoder_ffn_dim=16,
        encoder_attention_heads=2,
        hidden_expansion=0.5,
        encode_proj_layers=[2],
        feat_strides=[8, 16, 32],
        d_model=16,
        decoder_in_channels=[16, 16, 16],
        num_feature_levels=3,
        decoder_layers=1,
        decoder_ffn_dim=16,
        decoder_attention_heads=2,
        decoder_n_points=2,
        num_queries=10,
        num_denoising=0,
        anchor_image_size=None,
        num_labels=len(labels),
        id2label=labels,
        label2id={name: i for i, name in labels.items()},
    )
    model = RTDetrForObjectDetection(config).eval()
    # The real one resizes to 640x640; 64x64 here.
    processor = RTDetrImageProcessor(size={"height": 64, "width": 64})
    _save(out_dir, model, processor, "RT-DETR person detector")


def build_pose(out_dir: Path, *, seed: int = 0) -> None:
    """Write a tiny ViTPose directory (17 COCO keypoints, simple decoder) to ``out_dir``."""
    import torch
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessor,
    )

    torch.manual_seed(seed)
    backbone = VitPoseBackboneConfig(
        image_size=[64, 48],
        patch_size=[16, 16],
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        out_indices=[2],
    )
    config = VitPoseConfig(backbone_config=backbone, use_simple_decoder=True, scale_factor=4, num_labels=17)
    model = VitPoseForPoseEstimation(config).eval()
    # The real one crops each person to 256x192; 64x48 here.
    processor = VitPoseImageProcessor(size={"height": 64, "width": 48}, image_mean=_MEAN, image_std=_STD)
    _save(out_dir, model, processor, "ViTPose")


def build_flow(path: Path, *, seed: int = 0) -> None:
    """``torch.save`` a randomly initialised torchvision ``raft_small`` state dict to ``path``."""
    import torch
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(seed)
    model = raft_small(weights=None)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: value.contiguous() for key, value in model.state_dict().items()}, path)
    log.info("tiny RAFT (raft_small, random weights) written to %s", path)


def _save(out_dir: Path, model: object, processor: object, what: str) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)  # type: ignore[attr-defined]
    processor.save_pretrained(out_dir)  # type: ignore[attr-defined]
    log.info("tiny %s written to %s", what, out_dir)

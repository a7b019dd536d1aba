"""Human pose as skeletons: an RT-DETR person detector, ViTPose keypoints, OpenPose-style drawing.

``(F, H, W, 3)`` uint8 RGB in → ``(F, H, W, 3)`` uint8 RGB out: each person found is drawn as a
skeleton on black, in the colours of VACE's pose control; a frame with nobody in it is black.

The detector (transformers ``RTDetrForObjectDetection``) gives person boxes; ViTPose
(``VitPoseForPoseEstimation``) gives the 17 COCO keypoints inside each box; :func:`render_pose`
turns them into the 18-point OpenPose body (the neck is the middle of the shoulders) and draws
it. VACE's pose annotator (DWPose) draws only the body for ``pose``; hands and face need other
keypoint models and are not drawn.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .base import ModelAnnotator, Placement, batches, check_frames

if TYPE_CHECKING:
    from ..control import JobControl

# --- The drawing convention ------------------------------------------------------------------
# OpenPose's 18-point body and the colours ControlNet's and DWPose's ``draw_bodypose`` use (the
# drawing VACE's pose annotator, annotators/dwpose/util.py in ali-vilab/VACE, inherits; VACE's
# pose control was trained on videos drawn this way): limb i is filled with COLOURS[i] and the
# canvas is then dimmed to 60 %, after which joint j is a dot of COLOURS[j] at full strength.
# Limbs are ellipses 2 * STICK_WIDTH wide and dots have radius DOT_RADIUS, in pixels of a canvas
# whose short side is DRAW_SHORT_SIDE (the resolution the annotator detects and draws at); the
# drawing is resized to the frame afterwards.

#: OpenPose body joints, in order.
OPENPOSE_JOINTS: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip

#: The COCO-17 keypoint each OpenPose joint is (``None``: the neck, made from the shoulders).
#: COCO order: nose, l/r eye, l/r ear, l/r shoulder, l/r elbow, l/r wrist, l/r hip, l/r knee, l/r ankle.
COCO_FOR_OPENPOSE: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)

#: Limbs as pairs of OpenPose joint indices, in drawing order (the 17 that are drawn; OpenPose's
#: two ear-shoulder links are not).
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip

#: RGB colour of limb i and of joint i: a hue wheel from red through green and blue to magenta.
COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

#: How much the limbs are dimmed before the joints are drawn over them.
LIMB_STRENGTH = 0.6
STICK_WIDTH = 4
DOT_RADIUS = 4
DRAW_SHORT_SIDE = 1024
#: Keypoints scored below this are not drawn (DWPose's threshold).
KEYPOINT_THRESHOLD = 0.3


def coco_to_openpose(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 ``(17, 2)`` x, y and ``(17,)`` scores → OpenPose-18 ``(18, 2)`` and ``(18,)``."""
    points = np.zeros((len(OPENPOSE_JOINTS), 2), dtype=np.float64)
    conf = np.zeros(len(OPENPOSE_JOINTS), dtype=np.float64)
    for joint, coco in enumerate(COCO_FOR_OPENPOSE):
        if coco is not None:
            points[joint], conf[joint] = keypoints[coco], scores[coco]
    # The neck: between the shoulders, as sure as the less sure of them.
    points[1] = (keypoints[5] + keypoints[6]) / 2
    conf[1] = min(scores[5], scores[6])
    return points, conf


def render_pose(
    people: Sequence[tuple[np.ndarray, np.ndarray]],
    height: int,
    width: int,
    *,
    threshold: float = KEYPOINT_THRESHOLD,
) -> np.ndarray:
    """Draw people's skeletons on black: ``(H, W, 3)`` uint8 RGB.

    ``people``: one ``(keypoints (17, 2) x, y in pixels of the frame, scores (17,))`` per person,
    COCO-17 order. A joint below ``threshold`` is left out with its limbs.
    """
    from PIL import Image, ImageDraw

    scale = DRAW_SHORT_SIDE / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    joints = [coco_to_openpose(np.asarray(k, np.float64), np.asarray(s, np.float64)) for k, s in people]

    limbs = Image.new("RGB", size)
    draw = ImageDraw.Draw(limbs)
    for index, (a, b) in enumerate(LIMBS):
        for points, conf in joints:
            if conf[a] < threshold or conf[b] < threshold:
                continue
            draw.polygon(_limb_polygon(points[a] * scale, points[b] * scale), fill=COLOURS[index])
    canvas = Image.fromarray((np.asarray(limbs, np.float32) * LIMB_STRENGTH).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    for index in range(len(OPENPOSE_JOINTS)):
        for points, conf in joints:
            if conf[index] < threshold:
                continue
            x, y = points[index] * scale
            r = DOT_RADIUS
            draw.ellipse((x - r, y - r, x + r, y + r), fill=COLOURS[index])
    if canvas.size != (width, height):
        # Bilinear (antialiased when shrinking) keeps the colours: no ringing over a thin limb.
        canvas = canvas.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(canvas, dtype=np.uint8).copy()


def _limb_polygon(start: np.ndarray, end: np.ndarray, steps: int = 36) -> list[tuple[float, float]]:
    """An ellipse from ``start`` to ``end`` (x, y), ``2 * STICK_WIDTH`` across, as polygon points."""
    centre = (start + end) / 2
    dx, dy = end - start
    half_length, angle = math.hypot(dx, dy) / 2, math.atan2(dy, dx)
    cos, sin = math.cos(angle), math.sin(angle)
    points = []
    for step in range(steps):
        t = 2 * math.pi * step / steps
        u, v = half_length * math.cos(t), STICK_WIDTH * math.sin(t)
        points.append((centre[0] + u * cos - v * sin, centre[1] + u * sin + v * cos))
    return points


# --- The models --------------------------------------------------------------------------------


class PoseAnnotator(ModelAnnotator):
    """RT-DETR person boxes → ViTPose keypoints → skeletons (models from hub ids or local dirs)."""

    kind = "pose"

    def __init__(
        self,
        spec: str,
        detector_spec: str,
        placement: Placement,
        *,
        person_threshold: float = 0.5,
        batch_size: int = 8,
    ):
        super().__init__(spec, placement, setting="pose_model")
        self.detector_spec = detector_spec
        self.name = f"pose ({spec}, persons by {detector_spec})"
        #: Detections of a person scored below this are ignored.
        self.person_threshold = person_threshold
        self.batch_size = batch_size

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from transformers import (
            AutoImageProcessor,
            RTDetrForObjectDetection,
            VitPoseForPoseEstimation,
        )

        kwargs = self.placement.hub_kwargs()
        detector = RTDetrForObjectDetection.from_pretrained(self.detector_spec, **kwargs)
        detector_processor = AutoImageProcessor.from_pretrained(self.detector_spec, **kwargs)
        pose = VitPoseForPoseEstimation.from_pretrained(self.spec, **kwargs)
        pose_processor = AutoImageProcessor.from_pretrained(self.spec, **kwargs)
        labels = {str(name).lower(): int(i) for i, name in detector.config.id2label.items()}
        if "person" not in labels:
            raise ValueError(f"person_detector={self.detector_spec!r} has no 'person' label")
        extras = {
            "detector_processor": detector_processor,
            "pose_processor": pose_processor,
            "person_label": labels["person"],
        }
        return {"detector": detector, "pose": pose}, extras

    def __call__(self, frames: np.ndarray, *, control: JobControl | None = None) -> np.ndarray:
        frames = check_frames(frames)
        self._ready()
        count, height, width = frames.shape[:3]
        out = np.zeros_like(frames)
        for part in batches(count, self.batch_size, control):
            boxes = self._people(frames[part])
            found = [i for i, b in enumerate(boxes) if len(b)]
            people = self._keypoints([frames[part][i] for i in found], [boxes[i] for i in found])
            for i, persons in zip(found, people, strict=True):
                out[part.start + i] = render_pose(persons, height, width)
        return out

    def _people(self, frames: np.ndarray) -> list[np.ndarray]:
        """Person boxes per frame: ``(N, 4)`` x, y, width, height in pixels (COCO's box format)."""
        import torch

        processor = self.extras["detector_processor"]
        inputs = processor(images=list(frames), return_tensors="pt")
        with torch.inference_mode():
            outputs = self.models["detector"](
                pixel_values=inputs["pixel_values"].to(self.placement.device, self.placement.dtype)
            )
        outputs.logits, outputs.pred_boxes = outputs.logits.float(), outputs.pred_boxes.float()
        sizes = [tuple(frame.shape[:2]) for frame in frames]
        found = processor.post_process_object_detection(
            outputs, target_sizes=sizes, threshold=self.person_threshold
        )
        boxes = []
        for result in found:
            xyxy = result["boxes"][result["labels"] == self.extras["person_label"]].cpu().numpy()
            xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
            boxes.append(xywh[(xywh[:, 2] >= 1) & (xywh[:, 3] >= 1)])
        return boxes

    def _keypoints(
        self, frames: list[np.ndarray], boxes: list[np.ndarray]
    ) -> list[list[tuple[np.ndarray, np.ndarray]]]:
        """Per frame, per person: ``(keypoints (17, 2), scores (17,))``."""
        import torch

        if not frames:
            return []
        processor = self.extras["pose_processor"]
        inputs = processor(images=frames, boxes=boxes, return_tensors="pt")
        with torch.inference_mode():
            outputs = self.models["pose"](
                pixel_values=inputs["pixel_values"].to(self.placement.device, self.placement.dtype)
            )
        outputs.heatmaps = outputs.heatmaps.float().cpu()
        results = processor.post_process_pose_estimation(outputs, boxes=boxes)
        return [
            [(person["keypoints"].numpy(), person["scores"].numpy()) for person in frame] for frame in results
        ]

"""Masks from words: SAM 3 finds what a phrase names and tracks it through a video.

A phrase + ``(F, H, W, 3)`` uint8 RGB frames in → ``(F, H, W)`` bool masks out (True = the
object = regenerate), all False where nothing matches; a caller that needs a region raises
"no region found, give a mask" on an all-False result.

One model does both (transformers ``Sam3VideoModel``: the SAM 3 detector and the SAM 3 tracker
sharing one vision encoder; ``facebook/sam3`` holds them together, gated under the SAM License):

- **an image** (``F == 1``): the detector alone (``Sam3Model``, the video model's
  ``detector_model``) with a ``Sam3Processor`` built from the checkpoint's image processor and
  tokenizer: every instance scoring above the checkpoint's detection threshold, as one mask.
- **a video**: a ``Sam3VideoProcessor`` session over the whole clip with the phrase as its text
  prompt, run one frame at a time (``control.check()`` before each). On each frame the detector
  finds the phrase's instances, the tracker carries the objects it already has forward from its
  memories, and the two are matched, so an object keeps its identity from frame to frame. The
  tracker drops spurious objects up to ``hotstart_delay`` frames after they appeared; those are
  taken out of every frame at the end (:func:`union_of_tracks`), as the model's own
  ``propagate_in_video_iterator`` does by holding frames back.

SAM 3 segments *every* instance of the concept ("the car" → all cars): the mask is their union.

:func:`dilate` grows a mask by a margin (a square neighbourhood, by torch max-pooling), because
segmentation edges are tight and an unmasked rim shows as a halo after inpainting.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import InvalidRequest
from .base import ModelAnnotator, Placement, check_frames

if TYPE_CHECKING:
    from ..config import EngineConfig
    from ..control import JobControl

log = logging.getLogger(__name__)

#: Mask logits above this (after the sigmoid) are the object, as in transformers' post-processing.
MASK_THRESHOLD = 0.5
#: Tokens a phrase may take: SAM 3's processors pad (and its text encoder reads) exactly 32.
PHRASE_TOKENS = 32


@dataclass(frozen=True)
class Tracks:
    """What the tracker saw in one video: on each frame, each visible object's mask."""

    #: One entry per frame: object id → ``(H, W)`` bool mask at the frame's size.
    frames: list[dict[int, np.ndarray]]
    #: One entry per frame: the ids the tracker holds there, shown or not (an object can be
    #: held while hidden: occluded, empty, or covered by another instance).
    tracked: list[frozenset[int]]
    #: Objects the tracker removed as spurious after they had been shown (hidden in every frame).
    removed: frozenset[int]
    #: ``(H, W)`` of the frames.
    size: tuple[int, int]

    def masks(self) -> np.ndarray:
        """``(F, H, W)`` bool: every kept object's mask, united per frame."""
        return union_of_tracks(self.frames, self.size, hidden=self.removed)


def union_of_tracks(
    frames: Sequence[Mapping[int, np.ndarray]], size: tuple[int, int], *, hidden: Collection[int] = ()
) -> np.ndarray:
    """``(F, H, W)`` bool: per frame, the union of the objects' masks, leaving out ``hidden`` ids.

    An id is hidden on every frame, including those before the one where the tracker gave it up:
    an object the tracker rejects was never the object the phrase names.
    """
    out = np.zeros((len(frames), *size), dtype=bool)
    for index, objects in enumerate(frames):
        for obj_id, mask in objects.items():
            if obj_id not in hidden:
                out[index] |= mask
    return out


def dilate(masks: np.ndarray, px: int) -> np.ndarray:
    """``(F, H, W)`` bool grown by ``px`` pixels on every side (a ``(2px+1)²`` square neighbourhood).

    ``px=0`` returns a copy. A square grows into a square ``2px`` wider and taller.
    """
    import torch

    if px < 0:
        raise InvalidRequest.for_field("mask_dilate_px", px, "must be 0 or more")
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise InvalidRequest.for_field("masks", list(masks.shape), "must be (F, H, W)")
    if px == 0:
        return masks.copy()
    grid = torch.from_numpy(masks).to(torch.float32)[:, None]  # (F, 1, H, W)
    pool = torch.nn.functional.max_pool2d
    with torch.inference_mode():
        # A square is the product of two lines: one pass along each axis (k + k, not k² per pixel).
        grid = pool(grid, kernel_size=(1, 2 * px + 1), stride=1, padding=(0, px))
        grid = pool(grid, kernel_size=(2 * px + 1, 1), stride=1, padding=(px, 0))
    return grid[:, 0].numpy() > 0.5


class Sam3Segmenter(ModelAnnotator):
    """SAM 3 from a hub id or a local directory: a ``Sam3VideoModel`` and its ``Sam3VideoProcessor``.

    ``spec`` is a hub id (``facebook/sam3``) or a directory saved with ``save_pretrained`` (such
    as the tiny one, :func:`engine.tiny.segment.build_segmenter`). Loaded on first use onto
    ``placement``'s device and dtype; :meth:`unload` moves it to the CPU.
    """

    kind = "segment"

    def __init__(self, spec: str, placement: Placement):
        super().__init__(spec, placement, setting="segment_model")

    @classmethod
    def from_config(cls, config: EngineConfig) -> Sam3Segmenter | None:
        """The segmenter ``config.annotators.segment_model`` names (None: no segmenter configured)."""
        spec = config.annotators.segment_model
        if spec is None:
            return None
        return cls(spec, Placement.from_config(config))

    def _read(self) -> tuple[dict[str, Any], dict[str, Any]]:
        from transformers import Sam3Processor, Sam3VideoModel, Sam3VideoProcessor

        kwargs = self.placement.hub_kwargs()
        # Read in the configured dtype: the full model is ~3.4 GB in float32 on the host.
        model = Sam3VideoModel.from_pretrained(self.spec, dtype=self.placement.dtype, **kwargs)
        video_processor = Sam3VideoProcessor.from_pretrained(self.spec, **kwargs)
        # The image path needs the same image processor and tokenizer without the video parts.
        image_processor = Sam3Processor(
            image_processor=video_processor.image_processor, tokenizer=video_processor.tokenizer
        )
        return {"model": model}, {"video_processor": video_processor, "image_processor": image_processor}

    # ------------------------------------------------------------------ running

    def __call__(self, frames: np.ndarray, phrase: str, *, control: JobControl | None = None) -> np.ndarray:
        """``(F, H, W, 3)`` uint8 RGB + a phrase → ``(F, H, W)`` bool masks (all False: not found)."""
        frames, phrase = _check(frames, phrase)
        if len(frames) == 1:
            if control is not None:
                control.check()
            return self.segment_image(frames[0], phrase)[None]
        return self.track(frames, phrase, control=control).masks()

    def segment_image(self, image: np.ndarray, phrase: str) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB → ``(H, W)`` bool: every instance of ``phrase`` the detector finds."""
        import torch

        image, phrase = _check(np.asarray(image)[None], phrase)
        image = image[0]
        self._ready()
        phrase = self._fit(phrase)
        detector = self.models["model"].detector_model
        processor = self.extras["image_processor"]
        height, width = image.shape[:2]
        inputs = processor(images=[image], text=phrase, return_tensors="pt")
        with torch.inference_mode():
            outputs = detector(
                pixel_values=inputs["pixel_values"].to(self.placement.device, self.placement.dtype),
                input_ids=inputs["input_ids"].to(self.placement.device),
                attention_mask=inputs["attention_mask"].to(self.placement.device),
            )
            found = processor.post_process_instance_segmentation(
                outputs,
                threshold=self._threshold(),
                mask_threshold=MASK_THRESHOLD,
                target_sizes=[(height, width)],
            )[0]["masks"]  # (N, H, W)
        if len(found) == 0:
            return np.zeros((height, width), dtype=bool)
        return found.bool().any(dim=0).cpu().numpy()

    def track(self, frames: np.ndarray, phrase: str, *, control: JobControl | None = None) -> Tracks:
        """Find ``phrase`` in a video and follow each instance through it (one frame at a time)."""
        import torch

        frames, phrase = _check(frames, phrase)
        self._ready()
        phrase = self._fit(phrase)
        model = self.models["model"]
        processor = self.extras["video_processor"]
        device, dtype = self.placement.device, self.placement.dtype
        height, width = frames.shape[1:3]
        # 1. The session holds the clip at the model's input size; on the CPU, so a long clip
        #    does not take accelerator memory the model needs.
        session = processor.init_video_session(
            video=list(frames),
            inference_device=device,
            processing_device=device,
            video_storage_device="cpu",
            dtype=dtype,
        )
        processor.add_text_prompt(session, phrase)
        # 2. Detect, match and track frame by frame.
        seen: list[dict[int, np.ndarray]] = []
        tracked: list[frozenset[int]] = []
        with torch.inference_mode():
            for index in range(len(frames)):
                if control is not None:
                    control.check()
                outputs = model(inference_session=session, frame_idx=index)
                tracked.append(frozenset(int(i) for i in outputs.object_ids))
                # What propagate_in_video_iterator records: objects the hotstart heuristics removed.
                session.hotstart_removed_obj_ids.update(outputs.removed_obj_ids)
                shown = processor.postprocess_outputs(session, outputs)
                ids = shown["object_ids"].tolist()
                masks = shown["masks"].cpu().numpy()  # (N, H, W) bool
                seen.append({int(obj_id): masks[i] for i, obj_id in enumerate(ids)})
        # 3. Objects removed later are hidden on the frames shown before their removal too.
        removed = frozenset(int(i) for i in session.hotstart_removed_obj_ids)
        log.debug(
            "segment %r: %d frame(s), %d object(s) removed by the tracker", phrase, len(seen), len(removed)
        )
        return Tracks(frames=seen, tracked=tracked, removed=removed, size=(height, width))

    def _fit(self, phrase: str) -> str:
        """``phrase`` cut at a word so that it fits the text encoder (the processors do not cut)."""
        tokenizer = self.extras["video_processor"].tokenizer
        words = phrase.split()
        while len(words) > 1 and len(tokenizer(" ".join(words))["input_ids"]) > PHRASE_TOKENS:
            words.pop()
        fitted = " ".join(words)
        if len(tokenizer(fitted)["input_ids"]) > PHRASE_TOKENS:
            raise InvalidRequest.for_field("phrase", phrase, f"must fit in {PHRASE_TOKENS} tokens")
        if fitted != phrase:
            log.info("segment: phrase %r cut to %r (%d tokens at most)", phrase, fitted, PHRASE_TOKENS)
        return fitted

    def _threshold(self) -> float:
        """The checkpoint's own detection threshold (the video detector's), for images too."""
        return float(self.models["model"].config.score_threshold_detection)


def _check(frames: np.ndarray, phrase: str) -> tuple[np.ndarray, str]:
    frames = check_frames(frames)
    if not isinstance(phrase, str) or not phrase.strip():
        raise InvalidRequest.for_field("phrase", phrase, "must name the object to find (a few words)")
    return frames, phrase.strip()


__all__ = ["MASK_THRESHOLD", "PHRASE_TOKENS", "Sam3Segmenter", "Tracks", "dilate", "union_of_tracks"]

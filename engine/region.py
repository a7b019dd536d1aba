"""The region an edit repaints when no mask is given: the words that name it, and boxes over time.

Pure functions, no models: :func:`object_phrase` reads the object an English edit prompt names
(the fallback when neither ``target`` nor the planner says), :func:`interpolate_boxes` spreads
boxes found on a few key frames over a clip, :func:`box_mask` draws them as a mask (255 =
regenerate). :mod:`engine.prepare` calls them when it finds the region with the planner's
grounding or a segmenter.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from .lexicon import LEXICON

if TYPE_CHECKING:
    from PIL import Image

    from .geometry import Size

#: A box in an image's pixels: (x0, y0, x1, y1).
Box = tuple[float, float, float, float]

#: Auto-found boxes grow by this fraction of their size on each side (at least DILATE_MIN_PX):
#: the grounding box is tight, and edges left unmasked show as seams.
DILATE_FRACTION = 0.08
DILATE_MIN_PX = 4

# ---------------------------------------------------------------------------------------------
# The words: the object an edit prompt names.

#: The English verbs whose object is the region (the rules planner's edit verbs, the lexicon's
#: ``edit_repaint``) and those followed by the object's new state (``state_verb``).
_STATE_VERB = LEXICON.pattern("state_verb", "full", codes=("en",))
_VERB_RE = re.compile(
    r"(?P<verb>"
    + LEXICON.regex(("edit_repaint", "state_verb"), codes=("en",))
    + r")\s+(?:(?:the|a|an|this|that|these|those|his|her|their|its)\s+)?(?P<rest>[^,.;:!?\n]+)",
    re.IGNORECASE,
)
_ATTRIBUTE_OF = re.compile(
    r"^(?:colou?r|texture|style|material|pattern|shape|appearance)s?\s+of\s+(?:(?:the|a|an)\s+)?",
    re.IGNORECASE,
)
_STOP_WORDS = frozenset(
    (
        *("with", "into", "to", "by", "in", "on", "at", "from", "so", "and", "that", "which", "who"),
        *("for", "as", "while", "look", "looks", "appear", "appears", "become", "becomes"),
        *("be", "is", "are", "was", "were"),
    )
)


def object_phrase(prompt: str, *, max_words: int = 4) -> str | None:
    """The object an edit prompt names, for grounding; ``None`` when no edit verb is found.

    Heuristic, in English: the words after the first edit verb whose object is the region
    (replace, remove, change, fix, ...: the lexicon's English ``edit_repaint``) or a state verb (make,
    turn, paint, recolour: ``state_verb``) and an optional article, up to a
    linking word (with, into, to, by, in, ...) or punctuation, at most ``max_words``. "colour of the X" gives X; after make/turn/paint/recolour the last word of a
    longer phrase is the new state and is dropped ("make the red car blue" → "red car").
    """
    found = _VERB_RE.search(prompt)
    if found is None:
        return None
    rest = _ATTRIBUTE_OF.sub("", found.group("rest").strip())
    words: list[str] = []
    for word in rest.split():
        if word.lower() in _STOP_WORDS:
            break
        words.append(word)
    if _STATE_VERB.match(found.group("verb").lower()) and len(words) > 1:
        words = words[:-1]
    words = words[:max_words]
    return " ".join(words) or None


# ---------------------------------------------------------------------------------------------
# The boxes: found on key frames, spread over the clip, drawn as a mask.


def clean_boxes(boxes: Sequence[Box], size: Size) -> list[Box]:
    """Boxes clipped to the image; empty, inverted or non-finite ones dropped."""
    w, h = size
    out: list[Box] = []
    for box in boxes or ():
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            continue
        x0, y0, x1, y1 = (float(v) for v in box)
        x0, x1 = sorted((min(max(x0, 0.0), w), min(max(x1, 0.0), w)))
        y0, y1 = sorted((min(max(y0, 0.0), h), min(max(y1, 0.0), h)))
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            out.append((x0, y0, x1, y1))
    return out


def _union(boxes: Sequence[Box]) -> Box:
    return (
        min(b[0] for b in boxes),
        min(b[1] for b in boxes),
        max(b[2] for b in boxes),
        max(b[3] for b in boxes),
    )


def interpolate_boxes(found: dict[int, list[Box]], num_frames: int) -> list[list[Box]]:
    """Boxes for every frame from boxes on a few key frames, linearly interpolated.

    When every key frame has the same number of boxes they are matched left to right (by centre)
    and each is interpolated; otherwise each key frame's boxes are merged into their union (one
    box that may over-cover: regenerating a little more is safer than leaving part of the object).
    Frames before the first key frame take its boxes, frames after the last take the last's.
    """
    keys = sorted(found)
    counts = {len(found[k]) for k in keys}
    if len(counts) == 1:
        tracks = {k: sorted(found[k], key=lambda b: b[0] + b[2]) for k in keys}
    else:
        tracks = {k: [_union(found[k])] for k in keys}
    out: list[list[Box]] = []
    for f in range(num_frames):
        if f <= keys[0]:
            out.append(tracks[keys[0]])
            continue
        if f >= keys[-1]:
            out.append(tracks[keys[-1]])
            continue
        b = next(k for k in keys if k >= f)
        a = max(k for k in keys if k <= f)
        if a == b:
            out.append(tracks[a])
            continue
        t = (f - a) / (b - a)
        out.append(
            [
                tuple(p + (q - p) * t for p, q in zip(ba, bb, strict=True))  # type: ignore[misc]
                for ba, bb in zip(tracks[a], tracks[b], strict=True)
            ]
        )
    return out


def box_mask(size: Size, boxes: Sequence[Box]) -> Image.Image:
    """An "L" mask, 255 inside the boxes grown by DILATE_FRACTION (at least DILATE_MIN_PX)."""
    from PIL import Image, ImageDraw

    w, h = size
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    for x0, y0, x1, y1 in boxes:
        dx = max(DILATE_MIN_PX, DILATE_FRACTION * (x1 - x0))
        dy = max(DILATE_MIN_PX, DILATE_FRACTION * (y1 - y0))
        left, top = max(0, math.floor(x0 - dx)), max(0, math.floor(y0 - dy))
        right, bottom = min(w, math.ceil(x1 + dx)), min(h, math.ceil(y1 + dy))
        if right > left and bottom > top:
            draw.rectangle((left, top, right - 1, bottom - 1), fill=255)  # corners inclusive
    return mask

"""The project's vocabulary: task names, input roles, media kinds, control kinds and the 14 Unison tokens.

A leaf module (no other engine import) so that the task table (:mod:`engine.tasks`), the grammar
(:mod:`engine.grammar`), requests (:mod:`engine.request`) and plans (:mod:`engine.plan`) can all
name these without importing each other.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Literal, get_args

from .errors import InvalidRequest, shown


class Task(str, Enum):
    TEXT_UNDERSTANDING = "text_understanding"
    IMAGE_UNDERSTANDING = "image_understanding"
    VIDEO_UNDERSTANDING = "video_understanding"
    TEXT_TO_IMAGE = "text_to_image"
    TEXT_TO_VIDEO = "text_to_video"
    IMAGE_EDIT = "image_edit"
    IMAGE_CONTROL = "image_control"
    IMAGE_REFERENCE = "image_reference"
    IMAGE_TO_VIDEO = "image_to_video"
    VIDEO_REFERENCE = "video_reference"
    VIDEO_EDIT = "video_edit"
    VIDEO_CONTROL = "video_control"
    # Beyond the reference release:
    FIRST_LAST_TO_VIDEO = "first_last_to_video"
    IMAGE_OUTPAINT = "image_outpaint"
    VIDEO_OUTPAINT = "video_outpaint"
    VIDEO_EXTEND = "video_extend"

    def __str__(self) -> str:  # so f-strings show "image_edit", not "Task.IMAGE_EDIT"
        return self.value


class Role(str, Enum):
    QUERY = "query"
    SOURCE = "source"
    MASK = "mask"
    REFERENCE = "reference"
    CONTROL = "control"
    FIRST_FRAME = "first_frame"
    LAST_FRAME = "last_frame"

    def __str__(self) -> str:
        return self.value


class MediaKind(str, Enum):
    IMAGE = "image"
    VIDEO = "video"

    def __str__(self) -> str:
        return self.value


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".webm", ".mkv")


def media_kind(path: str | Path, *, field: str = "path") -> MediaKind:
    """The kind of a file from its extension; an unknown extension is an error naming ``field`` and the choices."""
    suffix = Path(str(path)).suffix.lower()
    if suffix in IMAGE_EXTENSIONS:
        return MediaKind.IMAGE
    if suffix in VIDEO_EXTENSIONS:
        return MediaKind.VIDEO
    raise InvalidRequest.for_field(
        field,
        str(path),
        f"unsupported file type {shown(suffix or '(none)')}; images: {', '.join(IMAGE_EXTENSIONS)}; "
        f"videos: {', '.join(VIDEO_EXTENSIONS)}",
    )


#: What ``control_kind`` may say: a signal the annotators (:mod:`engine.annotators`) extract from a
#: plain input, or ``raw`` (the input already is one).
ControlKind = Literal["pose", "depth", "edges", "flow", "gray", "raw"]
CONTROL_KINDS: tuple[str, ...] = get_args(ControlKind)


# The Unison grammar's tokens (../shared/UNISON.md). Which task each selects is in the task table.
CFI, CFV = "<CFI>", "<CFV>"
BORES, EORES = "<BORES>", "<EORES>"
BONF, EONF = "<BONF>", "<EONF>"
BOFIDX, EOFIDX = "<BOFIDX>", "<EOFIDX>"
REF, CTRL = "<REF>", "<CTRL>"
BOEDIT, EOEDIT = "<BOEDIT>", "<EOEDIT>"
IMGPAD, VIDPAD = "<IMGPAD>", "<VIDPAD>"

#: The 14 special tokens the Unison LoRA adds to the tokenizer, in a fixed order.
UNISON_TOKENS: tuple[str, ...] = (
    CFI, CFV, BORES, EORES, BONF, EONF, BOFIDX, EOFIDX, REF, CTRL, BOEDIT, EOEDIT, IMGPAD, VIDPAD,
)  # fmt: skip


def placeholder(kind: MediaKind) -> str:
    """The planner-visible stand-in for an input file of ``kind``."""
    return IMGPAD if kind is MediaKind.IMAGE else VIDPAD

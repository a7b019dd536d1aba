"""Sizes, lengths and margins read from a request's words, for the rules planner.

Numbers as written (digits, or the number words of each language's data file: "five", "cinq",
两, 十五), durations and frame counts (:func:`duration_frames`), output sizes from "W×H", "720p",
"4K", "portrait", "16:9"… (:func:`output_size`) and outpainting margins (:func:`margins`). The
units and side words are the lexicon's (:mod:`engine.lexicon`); the structure of each reading
(a number, then its unit) is the same for every language. What each wording gives is in
:mod:`engine.planners.rules`' docstring.
"""

from __future__ import annotations

import math
import re

from ..bounds import frames_for_seconds, round16
from ..config import Limits
from ..lexicon import LEXICON as LEX
from ..plan import Margins


def _any(*concepts: str) -> str:
    return "(?:" + LEX.regex(concepts) + ")"


_NUM = "(" + LEX.numbers_regex() + ")"
# "4 more seconds", "2 extra seconds", "4 weitere Sekunden": the new part of an extension.
_MORE = r"(?:" + _any("more") + r"\s*)?"
_SECONDS = re.compile(_NUM + r"\s*-?\s*" + _MORE + _any("seconds_unit"))
_MINUTES = re.compile(_NUM + r"\s*-?\s*" + _MORE + _any("minutes_unit"))
# "5s" / "2 s": only small numbers, because "the 80s" and "1990s" are decades, not durations.
_SHORT_SECONDS = re.compile(r"\b([0-9]{1,2}(?:\.[0-9]+)?)\s?s\b")
_SHORT_SECONDS_MAX = 15
# Frame counts are digits: "24 frames", "49帧"; not a rate ("24 frames per second").
_FRAMES = re.compile(
    r"(?<![0-9.])([0-9]+)\s*-?\s*" + _any("frames_unit") + r"(?!\s*" + _any("per_second") + ")"
)

_SIDE = r"([0-9]{2,5})"
_WXH = re.compile(
    r"\b"
    + _SIDE
    + r"\s*"
    + _any("pixel_unit")
    + r"?\s*(?:x|\*|"
    + LEX.regex("size_by")
    + r")\s*"
    + _SIDE
    + r"\b"
)
_WIDTH = re.compile(
    _any("width_word") + r"\s*(?:[=:]|" + _any("size_link") + r")?\s*" + _SIDE + r"\b"
    r"|\b" + _SIDE + r"\s*" + _any("pixel_unit") + r"?\s*" + _any("wide_word")
)
_HEIGHT = re.compile(
    _any("height_word") + r"\s*(?:[=:]|" + _any("size_link") + r")?\s*" + _SIDE + r"\b"
    r"|\b" + _SIDE + r"\s*" + _any("pixel_unit") + r"?\s*" + _any("tall_word")
)
_P_RES = re.compile(r"\b([0-9]{3,4})\s*p\b")
_P_SIZES = {480: (832, 480), 720: (1280, 720), 1080: (1920, 1080), 1440: (2560, 1440), 2160: (3840, 2160)}
# "4K" and "2K" as screens name them (UHD, QHD); check_plan scales sizes above the budget down.
_K_RES = re.compile(r"\b([24])\s*k\b(?!\s*\+)")
_K_SIZES = {2: (2560, 1440), 4: (3840, 2160)}
_ASPECT = re.compile(r"\b([0-9]{1,2})\s*:\s*([0-9]{1,2})\b")
_RATIOS = {(16, 9), (9, 16), (4, 3), (3, 4), (1, 1), (21, 9), (9, 21), (3, 2), (2, 3), (4, 5), (5, 4)}

_MARGIN_PX = re.compile(r"(?<![0-9])([0-9]{1,4})\s*" + _any("pixel_unit"))
_SIDES = ("left", "right", "top", "bottom")
#: Margin given to a side named without an amount: this fraction of the output's side.
_DEFAULT_MARGIN = 1 / 8


# ---------------------------------------------------------------------------------------------
# Frames.


def duration_frames(low: str, fps: float) -> int | None:
    """Frames asked for, as said: "N frames" first, then a duration at ``fps`` (check_plan rounds
    a count off the 4k+1 grid, with a note, as for every planner)."""
    m = _FRAMES.search(low)
    if m:
        return int(m.group(1))
    seconds = said_seconds(low)
    return None if seconds is None else frames_for_seconds(seconds, fps)


def said_frames(low: str) -> int | None:
    """The frame count said ("49 frames"), else ``None``."""
    m = _FRAMES.search(low)
    return int(m.group(1)) if m else None


def says_length(low: str) -> bool:
    """Whether the text asks for a number of frames or seconds."""
    return _FRAMES.search(low) is not None or said_seconds(low) is not None


def said_seconds(low: str) -> float | None:
    """The duration said, in seconds: "N seconds", "N minutes", "5s"."""
    m = _SECONDS.search(low)
    if m:
        return LEX.number(m.group(1))
    m = _MINUTES.search(low)
    if m:
        return 60 * LEX.number(m.group(1))
    for m in _SHORT_SECONDS.finditer(low):
        if float(m.group(1)) <= _SHORT_SECONDS_MAX:
            return float(m.group(1))
    return None


# ---------------------------------------------------------------------------------------------
# Size.


def _first_int(m: re.Match | None) -> int | None:
    if m is None:
        return None
    return int(next(g for g in m.groups() if g is not None))


def output_size(low: str, limits: Limits) -> tuple[int | None, int | None]:
    """Width and height asked for, ``None`` where the configured default applies."""
    dw, dh = limits.default_width, limits.default_height
    portrait = LEX.says("portrait", low)
    m = _WXH.search(low)
    if m:
        return int(m.group(1)), int(m.group(2))
    w, h = _first_int(_WIDTH.search(low)), _first_int(_HEIGHT.search(low))
    if w is not None or h is not None:
        ratio = min(dw, dh) / max(dw, dh) if portrait else dw / dh  # width / height
        if w is None:
            w = round16(h * ratio)
        if h is None:
            h = round16(w / ratio)
        return w, h
    m = _P_RES.search(low)
    if m and 240 <= int(m.group(1)) <= 2160:
        n = int(m.group(1))
        pw, ph = _P_SIZES.get(n, (round16(n * 16 / 9), n))
        return (ph, pw) if portrait else (pw, ph)
    m = _K_RES.search(low)
    if m:
        pw, ph = _K_SIZES[int(m.group(1))]
        return (ph, pw) if portrait else (pw, ph)
    ratio = aspect_said(low)
    if ratio is not None:
        return _size_for_ratio(ratio, dw, dh)
    if LEX.says("square", low):
        return _size_for_ratio(1.0, dw, dh)
    if portrait and dw > dh:
        return dh, dw
    return None, None


def aspect_said(low: str) -> float | None:
    """The width/height ratio said as "W:H" (one of the usual ones), else ``None``."""
    for m in _ASPECT.finditer(low):
        rw, rh = int(m.group(1)), int(m.group(2))
        if (rw, rh) in _RATIOS:
            return rw / rh
    return None


def _size_for_ratio(ratio: float, dw: int, dh: int) -> tuple[int | None, int | None]:
    """A size of this width/height ratio: the default or its upright form when close (16:9 is
    832×480), else the default's pixel count at that ratio, in multiples of 16."""
    if abs(ratio - dw / dh) / ratio < 0.05:
        return None, None
    if abs(ratio - dh / dw) / ratio < 0.05:
        return dh, dw
    h = math.sqrt(dw * dh / ratio)
    return round16(h * ratio), round16(h)


# ---------------------------------------------------------------------------------------------
# Margins.


def reshapes(low: str) -> bool:
    """Whether the text asks for another shape of output: an aspect ratio, "square", "portrait"."""
    return bool(_ASPECT.search(low)) or LEX.says(("aspect_ratio", "reshape", "square", "portrait"), low)


def margins(low: str, width: int, height: int, explicit_size: bool) -> Margins | None:
    """Outpainting margins from "by N pixels" and the sides named.

    ``None`` when no amount is said and a new size or shape is asked for ("to 16:9", "make it
    vertical", "1280x720"): the whole source is then fitted, centred, inside the output, and the
    margins are what it leaves (nothing of the source is cropped). Otherwise "N pixels" go to the
    sides named (every side when none is), and sides named without an amount get 1/8 of the
    output's width or height.
    """
    amount = _MARGIN_PX.search(low)
    if amount is None and (explicit_size or reshapes(low)):
        return None
    if LEX.says("all_sides", low):
        sides = set(_SIDES)
    else:
        sides = {side for side in _SIDES if LEX.says(side, low)}
        if LEX.says("both_sides", low):
            sides |= {"left", "right"}
        if LEX.says("top_and_bottom", low):
            sides |= {"top", "bottom"}
    if not sides:
        sides = set(_SIDES)
    if amount is not None:
        n = int(amount.group(1))
        return Margins(**{side: n for side in sides})
    mx, my = int(width * _DEFAULT_MARGIN), int(height * _DEFAULT_MARGIN)
    return Margins(**{side: (mx if side in ("left", "right") else my) for side in sides})

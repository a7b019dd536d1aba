"""Sizes, lengths and margins read from a request's words, for the rules planner.

Numbers as written (digits, number words one…ten in the planner's languages, Chinese numerals),
durations and frame counts (:func:`duration_frames`), output sizes from "W×H", "720p", "4K",
"portrait", "16:9"… (:func:`output_size`) and outpainting margins (:func:`margins`). What each
wording gives is in :mod:`engine.planners.rules`' docstring.
"""

from __future__ import annotations

import math
import re

from ..bounds import frames_for_seconds, round16
from ..config import Limits
from ..plan import Margins

_NUM_WORDS = {
    **dict.fromkeys(("one", "un", "une", "una", "uno", "um", "uma", "ein", "eine", "einen"), 1),
    **dict.fromkeys(("two", "dos", "deux", "zwei", "dois", "duas", "due"), 2),
    **dict.fromkeys(("three", "tres", "trois", "drei", "três", "tre"), 3),
    **dict.fromkeys(("four", "cuatro", "quatre", "vier", "quatro", "quattro"), 4),
    **dict.fromkeys(("five", "cinco", "cinq", "fünf", "cinque"), 5),
    **dict.fromkeys(("six", "seis", "sechs", "sei"), 6),
    **dict.fromkeys(("seven", "siete", "sept", "sieben", "sete", "sette"), 7),
    **dict.fromkeys(("eight", "ocho", "huit", "acht", "oito", "otto"), 8),
    **dict.fromkeys(("nine", "nueve", "neuf", "neun", "nove"), 9),
    **dict.fromkeys(("ten", "diez", "dix", "zehn", "dez", "dieci"), 10),
}
CJK_DIGITS = {
    "零": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "兩": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_CJK_NUM = r"([0-9]+(?:\.[0-9]+)?|[零一二两兩三四五六七八九十]+)"
_NUM = r"\b([0-9]+(?:\.[0-9]+)?|" + "|".join(sorted(_NUM_WORDS, key=len, reverse=True)) + r")"
# "4 more seconds", "2 extra seconds", "4 weitere Sekunden": the new part of an extension.
_MORE = (
    r"(?:(?:more|extra|additional|further|weitere|weiteren|autres|otros|otras|outros|outras|altri|altre)\s+)?"
)
_SECONDS = re.compile(
    _NUM + r"\s*-?\s*" + _MORE + r"(?:seconds?|secs?|segundos?|secondes?|sekunden?|sek|secondi|secondo)\b"
    r"|(?<![0-9.])" + _CJK_NUM + r"\s*(?:秒钟|秒鐘|秒間|秒)"
)
# "5s" / "2 s": only small numbers, because "the 80s" and "1990s" are decades, not durations.
_SHORT_SECONDS = re.compile(r"\b([0-9]{1,2}(?:\.[0-9]+)?)\s?s\b")
_SHORT_SECONDS_MAX = 15
_MINUTES = re.compile(
    _NUM + r"\s*-?\s*" + _MORE + r"(?:minutes?|mins?|minutos?|minuten?|minuti|minuto)\b"
    r"|(?<![0-9.])" + _CJK_NUM + r"\s*(?:分钟|分鐘|分間)"
)
_FRAMES = re.compile(
    r"\b([0-9]+)\s*-?\s*(?:frames?|fotogramas?|fotogrammi|quadros)\b"
    r"(?!\s*(?:per|a|/|por|par|pro)\s*(?:second|sec|s|segundo|seconde|sekunde|secondo)\b)"
    r"|(?<![0-9])([0-9]+)\s*(?:帧|幀|フレーム)"
)

_WXH = re.compile(r"\b([0-9]{2,5})\s*(?:px|pixels?)?\s*(?:x|\*|by|por|par|mal|per)\s*([0-9]{2,5})\b")
_WIDTH = re.compile(
    r"\bwidth\s*(?:of|=|:|is|to|at)?\s*([0-9]{2,5})\b|\b([0-9]{2,5})\s*(?:px|pixels?)?\s*wide\b"
)
_HEIGHT = re.compile(
    r"\bheight\s*(?:of|=|:|is|to|at)?\s*([0-9]{2,5})\b"
    r"|\b([0-9]{2,5})\s*(?:px|pixels?)?\s*(?:tall|high)\b"
)
_P_RES = re.compile(r"\b([0-9]{3,4})\s*p\b")
_P_SIZES = {480: (832, 480), 720: (1280, 720), 1080: (1920, 1080), 1440: (2560, 1440), 2160: (3840, 2160)}
# "4K" and "2K" as screens name them (UHD, QHD); check_plan scales sizes above the budget down.
_K_RES = re.compile(r"\b([24])\s*k\b(?!\s*\+)")
_K_SIZES = {2: (2560, 1440), 4: (3840, 2160)}
_ASPECT = re.compile(r"\b([0-9]{1,2})\s*:\s*([0-9]{1,2})\b")
_RATIOS = {(16, 9), (9, 16), (4, 3), (3, 4), (1, 1), (21, 9), (9, 21), (3, 2), (2, 3), (4, 5), (5, 4)}
_PORTRAIT = re.compile(
    r"\b(?:portrait|vertical|vertically oriented|verticale?s?|hochformat|hochkant|retrato|ritratto)\b"
    r"|竖屏|竖版|竖向|竖幅|豎屏|豎版|縦長|縦向き|縦型|縦位置"
)
_SQUARE = re.compile(
    r"\bsquare\s+(?:image|picture|photo|video|clip|format|aspect|frame|canvas|crop|output|size|shape)\b"
    r"|\b(?:in|as)\s+(?:a\s+)?square\b"
    r"|\b(?:format|formato|im|in|en|em)\s+(?:carré|cuadrado|quadrado|quadrato|quadrat|quadratisch)\b"
    r"|\bquadratisch\w*|正方形"
)
# Wording that changes the output's shape, after which the source is fitted rather than framed.
_RESHAPE = re.compile(r"\baspect ratio\b|\b\d{1,2}\s*:\s*\d{1,2}\b")

_MARGIN_PX = re.compile(
    r"\b([0-9]{1,4})\s*(?:px|pixels?|píxeles|pixeles)\b|(?<![0-9])([0-9]{1,4})\s*(?:像素|ピクセル)"
)
_ALL_SIDES = re.compile(
    r"\b(?:all (?:four )?sides|each side|every side|all around|around|every direction|all directions"
    r"|evenly|todos los lados|tous les côtés|allen seiten|tutti i lati|todos os lados)\b|四周|四边|四邊|全方向"
)
_LEFT_RIGHT = re.compile(
    r"\b(?:both sides|the sides|sides|horizontally|left and right|right and left|wider|widen\w*"
    r"|lados|côtés|cotés|seiten|lati|ensanch\w*|élargi\w*|verbreiter\w*|allarga\w*|breiter)\b"
    r"|左右|两边|兩邊|两侧|兩側|両側|両サイド"
)
_TOP_BOTTOM = re.compile(r"\b(?:vertically|top and bottom|bottom and top|above and below|taller)\b|上下")
_SIDE_WORDS = {
    "left": re.compile(r"\b(?:left|izquierda|gauche|links|sinistra|esquerda)\b|左(?:侧|側|边|邊)|向左"),
    "right": re.compile(r"\b(?:right|derecha|droite|rechts|destra|direita)\b|右(?:侧|側|边|邊)|向右"),
    "top": re.compile(r"\b(?:top|above|upwards?|arriba|encima|haut|oben|sopra|cima)\b|上方|上面|上部"),
    "bottom": re.compile(
        r"\b(?:bottom|below|downwards?|abajo|debajo|bas|unten|sotto|baixo)\b|下方|下面|下部"
    ),
}
#: Margin given to a side named without an amount: this fraction of the output's side.
_DEFAULT_MARGIN = 1 / 8


# ---------------------------------------------------------------------------------------------
# Size, frames, margins.


def _number(word: str) -> float:
    """A number as written: digits, a number word of _NUM_WORDS, or Chinese numerals (两, 十五)."""
    if word in _NUM_WORDS:
        return float(_NUM_WORDS[word])
    if word and all(c in CJK_DIGITS or c == "十" for c in word):
        tens, _, units = word.partition("十")
        if "十" not in word:
            return (
                float(CJK_DIGITS[word[0]])
                if len(word) == 1
                else float("".join(str(CJK_DIGITS[c]) for c in word))
            )
        return float(
            (CJK_DIGITS.get(tens, 1) if tens else 1) * 10 + (CJK_DIGITS.get(units, 0) if units else 0)
        )
    return float(word)


def _group(m: re.Match) -> str:
    """The one group that matched, in a pattern of alternatives each with its own group."""
    return next(g for g in m.groups() if g is not None)


def duration_frames(low: str, fps: float) -> int | None:
    """Frames asked for, as said: "N frames" first, then a duration at ``fps`` (check_plan rounds
    a count off the 4k+1 grid, with a note, as for every planner)."""
    m = _FRAMES.search(low)
    if m:
        return int(_group(m))
    seconds = _seconds(low)
    return None if seconds is None else frames_for_seconds(seconds, fps)


def says_length(low: str) -> bool:
    """Whether the text asks for a number of frames or seconds."""
    return _FRAMES.search(low) is not None or _seconds(low) is not None


def _seconds(low: str) -> float | None:
    """The duration said, in seconds: "N seconds", "N minutes", "5s"."""
    m = _SECONDS.search(low)
    if m:
        return _number(_group(m))
    m = _MINUTES.search(low)
    if m:
        return 60 * _number(_group(m))
    for m in _SHORT_SECONDS.finditer(low):
        if float(m.group(1)) <= _SHORT_SECONDS_MAX:
            return float(m.group(1))
    return None


def _first_int(m: re.Match | None) -> int | None:
    if m is None:
        return None
    return int(next(g for g in m.groups() if g is not None))


def output_size(low: str, limits: Limits) -> tuple[int | None, int | None]:
    """Width and height asked for, ``None`` where the configured default applies."""
    dw, dh = limits.default_width, limits.default_height
    portrait = bool(_PORTRAIT.search(low))
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
    for m in _ASPECT.finditer(low):
        rw, rh = int(m.group(1)), int(m.group(2))
        if (rw, rh) in _RATIOS:
            return _size_for_ratio(rw / rh, dw, dh)
    if _SQUARE.search(low):
        return _size_for_ratio(1.0, dw, dh)
    if portrait and dw > dh:
        return dh, dw
    return None, None


def _size_for_ratio(ratio: float, dw: int, dh: int) -> tuple[int | None, int | None]:
    """A size of this width/height ratio: the default or its upright form when close (16:9 is
    832×480), else the default's pixel count at that ratio, in multiples of 16."""
    if abs(ratio - dw / dh) / ratio < 0.05:
        return None, None
    if abs(ratio - dh / dw) / ratio < 0.05:
        return dh, dw
    h = math.sqrt(dw * dh / ratio)
    return round16(h * ratio), round16(h)


def margins(low: str, width: int, height: int, explicit_size: bool) -> Margins | None:
    """Outpainting margins from "by N pixels" and the sides named; see the module docstring."""
    amount = _MARGIN_PX.search(low)
    sides: set[str] = set()
    if _ALL_SIDES.search(low):
        sides = {"left", "right", "top", "bottom"}
    else:
        if _LEFT_RIGHT.search(low):
            sides |= {"left", "right"}
        if _TOP_BOTTOM.search(low):
            sides |= {"top", "bottom"}
        sides |= {side for side, pattern in _SIDE_WORDS.items() if pattern.search(low)}
    if amount is None and not sides and (explicit_size or _RESHAPE.search(low)):
        return None  # a new size or aspect: the source is fitted, centred, inside it
    if not sides:
        sides = {"left", "right", "top", "bottom"}
    if amount is not None:
        n = int(_group(amount))
        return Margins(**{side: n for side in sides})
    mx, my = int(width * _DEFAULT_MARGIN), int(height * _DEFAULT_MARGIN)
    return Margins(**{side: (mx if side in ("left", "right") else my) for side in sides})

"""What the wording of a request says, read once: the rules planner's facts about a request.

:func:`read` turns a :class:`~engine.request.Request` into a :class:`Reading`: the text as the
lexicon reads it (lowercased, each file a ``<imgpad>`` / ``<vidpad>`` placeholder, a file named by
its position ``<ref>``), each file with the words near it and the clauses said of it, and the
facts the candidate rows of :mod:`engine.planners.rules` test (:meth:`Reading.facts`). Every word
comes from the lexicon (:mod:`engine.lexicon`, one data file per language); the code here is the
same for every language. Sizes, lengths and margins are :mod:`engine.planners.measures`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import PurePath

from ..lexicon import LEXICON as LEX
from ..lexicon.phrases import ANY_FILE, Piece
from ..request import Request
from ..vocab import MediaKind
from . import measures

PAD = re.compile(r"<(?:img|vid)pad>")
#: How many words on each side of a file's marker are "near" it.
NEAR_WORDS = 8
#: Full-width punctuation and digits (Chinese and Japanese input) as the lexicon spells them.
_FULL_WIDTH = str.maketrans("？！，。；：（）％＃０１２３４５６７８９", "?!,.;:()%#0123456789")
#: Where the words near a file stop, and where a clause said of a file by position ends.
_BOUNDARY = re.compile(r"[.;!?,\n]|" + LEX.regex("clause_joiner"))
_CLAUSE = re.compile(r"[.;!?,:\n]|" + LEX.regex("clause_joiner"))
#: An output noun, and which kind.
_OUTPUT_NOUN = re.compile(f"(?P<img>{LEX.regex('image_noun')})|(?P<vid>{LEX.regex('video_noun')})")
#: The control signals a request may ask to follow, in the order they are tried (optical flow
#: first: its wording speaks of motion too). Each is the lexicon's concept ``control_<kind>``.
CONTROL_ORDER = ("flow", "pose", "depth", "edges", "gray")
#: The edit verbs, and the other edit phrasings: the request edits.
EDIT = ("edit_repaint", "edit_other", "edit")


def _position_forms() -> list[re.Pattern]:
    """Each language's forms of naming a file by position (the ``position`` concept), compiled with
    their groups: ``ord`` (an ordinal word), ``num`` (a 1-based number), ``img``/``vid`` (the kind)."""
    units = LEX.regex(("seconds_unit", "minutes_unit", "frames_unit", "pixel_unit"))
    forms = []
    for code, lang in LEX.languages.items():
        kind = (
            f"(?:(?P<img>{LEX.piece('image_noun', code).regex})|(?P<vid>{LEX.piece('video_noun', code).regex})"
            f"|{LEX.piece('file_noun', code).regex})"
        )
        if lang.spaced:  # "image 2", not "video 2 seconds" or "image 2x"
            num = rf"(?P<num>[1-9])\b(?!\s*(?:{units}|[spkx]\b|:))"
        else:
            num = "(?P<num>[1-9]|" + "|".join(map(re.escape, lang.numbers)) + ")"
        after = LEX.piece("after_position", code).regex
        tokens = {
            "ord": Piece(f"(?P<ord>{LEX.piece('ordinal', code).regex})", True, True),
            "kind": Piece(kind, True, True),
            "num": Piece(num, True, True),
            # The ordinal alone ("the second as the mask"): then punctuation, the end or such a word.
            "end": Piece(rf"(?=\s*(?:[,.;:=]|$)|\s+(?:{after}))", False, False),
        }
        forms += LEX.forms("position", code, tokens=tokens, captures={})
    return forms


_POSITIONS = _position_forms()


@dataclass(frozen=True)
class File:
    """One file of the request as the wording speaks of it."""

    index: int
    path: str
    kind: MediaKind
    name: str  # file name without extension, lowercased, separators as spaces
    before: str  # the words of its clause before its marker
    after: str  # … and after it
    said: str = ""  # the clauses that name it by position ("use the first image as the mask")

    @property
    def near(self) -> str:
        return f"{self.before} | {self.after}"

    def named(self, concept: str) -> bool:
        """Its file name says ``concept`` (``mask.png``, ``start.jpg``)."""
        return LEX.says(concept, self.name, "name")

    @property
    def said_first(self) -> bool:
        """The words next to it (or said of it by position) make it the opening frame."""
        return (
            LEX.says("first_near", self.near)
            or LEX.says("first_verb", self.before, "near_end")
            or LEX.says("said_first", self.said)
        )

    @property
    def said_last(self) -> bool:
        return (
            LEX.says("last_near", self.near)
            or LEX.says("last_verb", self.before, "near_end")
            or LEX.says("said_last", self.said)
        )


@dataclass(frozen=True)
class Reading:
    """What the wording of one request says, computed once."""

    low: str  # planner text, lowercased, "×" as "x", files named by position as "<ref>"
    files: tuple[File, ...]
    wants_video: bool
    frame_cue: bool  # an image is said to be the first or the last frame of a clip
    mask: File | None
    control: File | None

    @property
    def images(self) -> list[File]:
        return [f for f in self.files if f.kind is MediaKind.IMAGE]

    @property
    def videos(self) -> list[File]:
        return [f for f in self.files if f.kind is MediaKind.VIDEO]

    def says(self, concept: str | tuple[str, ...]) -> bool:
        return LEX.says(concept, self.low)

    @cached_property
    def reference(self) -> bool:
        return self.says("reference") or any(f.named("reference_name") for f in self.files)

    @cached_property
    def facts(self) -> dict[str, bool]:
        """The facts the candidate rows test (:data:`engine.planners.rules.CANDIDATES`), by name."""
        # An edit verb outside the reshape wording ("convert it to 1:1" only reshapes).
        edit_verb = LEX.says(("edit_repaint", "edit_other"), LEX.pattern("reshape").sub(" ", self.low))
        images = bool(self.files) and not self.videos
        control = self.control.kind if self.control is not None else None
        return {
            "no_files": not self.files,
            "video": bool(self.videos),
            "images": images,
            "one_file": len(self.files) == 1,
            "several_images": len(self.images) >= 2,
            "mask": self.mask is not None,
            "control_video": control is MediaKind.VIDEO,
            "control_image": control is MediaKind.IMAGE,
            "wants_video": self.wants_video,
            "frame_cue": self.frame_cue,
            # An image said to open or close a clip, or two images a clip goes between.
            "ends_named": self.frame_cue
            or (len(self.images) == 2 and self.wants_video and self.says("transition")),
            "compose": self.says("compose"),
            "outpaint": self.says("outpaint"),
            "extend_image": self.says("extend_image") and not self.wants_video,
            # Another shape of the same picture or clip, and nothing else asked of it.
            "reshape_only": self.says("reshape")
            and not (self.wants_video and images)
            and not (edit_verb or self.says(("create", "animate", "compose")) or self.reference),
            "extend": self.says("extend"),
            "edit": self.says(EDIT),
            "create": self.says("create"),
            "reference": self.reference,
        }


def read(request: Request) -> Reading:
    """The reading of ``request`` (see the module docstring)."""
    low = request.text.lower().replace("×", "x").replace("’", "'").translate(_FULL_WIDTH)
    low = re.sub(r"^[\s¿¡]+", "", low)
    kinds = [k for _, k in request.media]
    low, near_text, said = _positions(low, kinds)
    nears = _near_words(near_text, len(request.media))
    files = tuple(
        File(
            index=i,
            path=path,
            kind=kind,
            name=re.sub(r"[_\-.]+", " ", PurePath(path).stem.lower()),
            before=nears[i][0],
            after=nears[i][1],
            said=said[i],
        )
        for i, (path, kind) in enumerate(request.media)
    )
    mask = _mask(files)
    control = _control(files, low, mask)
    frame_cue = bool(
        LEX.says(("first_frame", "last_frame", "both_ends"), low)
        or any(f.said_first or f.said_last for f in files if f.kind is MediaKind.IMAGE)
    )
    wants_video = frame_cue or _wants_video(low)
    if wants_video and not frame_cue:
        # "###start.png###" and "###end.png###" say which end they are once a clip is wanted.
        frame_cue = any(
            f.named("start_name") or f.named("end_name") for f in files if f.kind is MediaKind.IMAGE
        )
    return Reading(
        low=low, files=files, wants_video=wants_video, frame_cue=frame_cue, mask=mask, control=control
    )


def _mask(files: tuple[File, ...]) -> File | None:
    """The file said to be the mask (two files or more): what is said of a file by position first
    ("use the first image as the mask" outranks a file called mask.png), then the file name, then
    the words near its marker."""
    if len(files) < 2:
        return None
    tests = (
        lambda f: LEX.says(("mask", "region_marker"), f.said),
        lambda f: f.named("mask"),
        lambda f: LEX.says("mask", f.near),
        lambda f: LEX.says("region_marker", f.near),
    )
    return next((f for test in tests for f in files if test(f)), None)


def _control(files: tuple[File, ...], low: str, mask: File | None) -> File | None:
    """The file said to be a control signal: by position, by name, by the words near it; else,
    when the request names a control input or motion to follow, a file of the kind it names."""
    tests = (
        lambda f: LEX.says("control_word", f.said),
        lambda f: f.named("control_name"),
        lambda f: LEX.says("control_word", f.near),
    )
    control = next((f for test in tests for f in files if f is not mask and test(f)), None)
    if control is None and files and LEX.says(("control_phrase", "motion_control"), low):
        # "follow the pose video ###p.mp4###" names the file's kind: prefer a file of that kind.
        wanted = MediaKind.VIDEO if LEX.says("video_noun", low) else None
        control = next((f for f in files if f.kind is wanted), files[0])
    return control


def _positions(low: str, kinds: list[MediaKind]) -> tuple[str, str, list[str]]:
    """Files named by position ("the second image", "image 2", "la última foto", 第二张图片).

    Returns the text with each such name as ``<ref>`` (so "the first image" is no frame wording
    and "the last video" no output noun), the text for :func:`_near_words` with each clause that
    names a file by position blanked (what it says belongs to that file, not to the file whose
    marker happens to be nearest), and for each file the clauses said of it, names as ``<ref>``.
    Only with two files or more: one file needs no position.
    """
    said = [""] * len(kinds)
    if len(kinds) < 2:
        return low, low, said
    found: list[tuple[int, int, int]] = []  # (start, end, file index)
    last_kind: MediaKind | None = None
    for start, end, groups in _position_matches(low):
        if found and start < found[-1][1]:
            continue  # overlaps a longer name found first ("the first image" / "first image")
        if LEX.says("frame_role", low[:start], "end"):
            continue  # "as the first image": the clip's first frame
        kind = MediaKind.IMAGE if groups.get("img") else MediaKind.VIDEO if groups.get("vid") else last_kind
        pool = [i for i, k in enumerate(kinds) if kind is None or k is kind]
        pos = int(LEX.number(groups["num"])) - 1 if groups.get("num") else LEX.ordinals[groups["ord"]]
        if not pool or not -len(pool) <= pos < len(pool):
            continue
        found.append((start, end, pool[pos]))
        last_kind = kind
    if not found:
        return low, low, said
    cuts = sorted(
        {0, len(low)}
        | {i for m in _CLAUSE.finditer(low) for i in m.span()}
        | {i for m in PAD.finditer(low) for i in m.span()}
    )
    clauses: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
    for start, end, index in found:
        a = max(c for c in cuts if c <= start)
        b = min(c for c in cuts if c >= end)
        clauses.setdefault((a, b), []).append((start, end, index))
    near_text = low
    for (a, b), names in sorted(clauses.items(), reverse=True):
        text = low[a:b]
        for start, end, _ in sorted(names, reverse=True):
            text = text[: start - a] + "<ref>" + text[end - a :]
        for _, _, index in names:
            said[index] = f"{said[index]} {text}".strip()
        near_text = near_text[:a] + " . " + near_text[b:]
    for start, end, _ in sorted(found, reverse=True):
        low = low[:start] + "<ref>" + low[end:]
    return low, near_text, said


def _position_matches(low: str) -> list[tuple[int, int, dict[str, str]]]:
    out = [
        (m.start(), m.end(), {k: v for k, v in m.groupdict().items() if v})
        for pattern in _POSITIONS
        for m in pattern.finditer(low)
    ]
    # Longest first among names starting at the same place.
    return sorted(out, key=lambda t: (t[0], -t[1]))


def _near_words(low: str, n: int) -> list[tuple[str, str]]:
    """For each file, the words of its clause before and after its marker (at most 8 each side).

    The text between two markers is split at the first and last clause boundary ("," "." "and"…);
    with no boundary it belongs to the file after it ("the mask ###m.png###") unless it opens like
    a description of the file before it ("###m.png### as the mask").
    """
    segments = PAD.split(low)
    if len(segments) != n + 1:  # a literal placeholder typed by the user: no positions to trust
        return [("", "")] * n
    before = [""] * n
    after = [""] * n
    for k, seg in enumerate(segments):
        prev_file, next_file = k - 1, k
        cuts = list(_BOUNDARY.finditer(seg))
        if 0 < k < n and not cuts:
            if seg.lstrip().startswith("(") or LEX.says("attaches_back", seg.lstrip(), "start"):
                after[prev_file] = seg
            else:
                before[next_file] = seg
            continue
        if k > 0:
            after[prev_file] = seg[: cuts[0].start()] if cuts else seg
        if k < n:
            before[next_file] = seg[cuts[-1].start() :] if cuts else seg
    return [
        (" ".join(before[i].split()[-NEAR_WORDS:]), " ".join(after[i].split()[:NEAR_WORDS])) for i in range(n)
    ]


def _wants_video(low: str) -> bool:
    """Whether the output asked for is a video: animate and durations force it (so does frame
    wording, see :func:`read`), otherwise the first output noun that does not name an input decides."""
    if LEX.says("animate", low) or measures.says_length(low):
        return True
    for m in _OUTPUT_NOUN.finditer(low):
        is_video = m.group("vid") is not None
        before, after = low[: m.start()], low[m.end() :]
        # "the photo ###a.png###" names its file; "a video ###a.png###" cannot, so it is the output.
        pad = "<vidpad>" if is_video else "<imgpad>"
        if re.match(r"\s*(?:" + pad + "|<ref>)", after) or re.search("(?:" + pad + r"|<ref>)\s*$", before):
            continue
        if LEX.says("input_determiner", before, "end"):
            continue
        return is_video
    return False


def is_understanding(r: Reading) -> bool:
    """Whether the request asks for text rather than a picture or a clip.

    It opens with a question word or a reading verb (after courtesies), or asks for a text; or it
    has a question word or "?" and nothing that asks for a picture or a clip; or it has files and
    neither a generation word nor an output noun.
    """
    low = r.low
    # "###m.png### is the mask, …" describes a file: its "is" does not open a question.
    opens_with_file = bool(re.match(r"\s*" + ANY_FILE, low))
    rest = PAD.sub(" ", low).strip()
    while (m := LEX.search("polite", rest, "start")) is not None and m.end() > 0:
        rest = rest[m.end() :].lstrip(" \t\n,!:")
    opens = LEX.says("opens_question", rest, "start")
    if opens and opens_with_file and LEX.says("describing_verb", rest, "start"):
        opens = False
    if opens or r.says("text_output"):
        return True
    facts = r.facts
    strong = (
        facts["mask"]
        or r.says(("create", *EDIT, "animate", "outpaint", "extend", "reshape"))
        or (r.files and facts["compose"])
        or r.frame_cue
    )
    if strong:
        return False
    if r.says("question"):
        return True
    if not r.files:
        return False  # a bare description is a picture (or a clip) to make
    weak = (
        r.control is not None
        or _OUTPUT_NOUN.search(low) is not None
        or r.says(("reference", "control_word", "transition"))
        or measures.says_length(low)
    )
    return not weak


def control_kind(r: Reading) -> str | None:
    """The control signal a request asks to follow ("follow the moves" → pose, "same depth" →
    depth, "keep the outline" → edges, "colourise" → gray), from its words or the control file's
    name; ``None`` when nothing says (the engine then keeps a control-looking input as it is)."""
    said = r.low + " " + (r.control.name if r.control is not None else "")
    return next((kind for kind in CONTROL_ORDER if LEX.says(f"control_{kind}", said)), None)

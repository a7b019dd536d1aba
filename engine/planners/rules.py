"""The rules planner: a plan from the wording of a request and the kinds of its files, no model.

It is the default backend when no planner weights are configured, and the tests' oracle. It reads
a :class:`~engine.request.Request` (``###path###`` markers already numbered, see
:func:`~engine.request.parse_request`) and returns a :class:`~engine.plan.Plan` that
:func:`~engine.plan.check_plan` accepts; the Engine runs ``check_plan``. When no reading of the
request fits its files, :class:`~engine.errors.InvalidRequest` says what the preferred task needs.
The generator's prompt is always ``request.prompt`` (the request without its markers).

Conventions
-----------
Languages: the words (:mod:`engine.planners.wording`; numbers, sizes and lengths:
:mod:`engine.planners.measures`) are read in English, Spanish, French, German, Portuguese, Italian,
Chinese and Japanese (full-width punctuation and digits as ASCII; "¿"/"¡" openings ignored).
Numbers are digits, or number words one…ten in those languages (两/三…十 in Chinese).

Output size (generation tasks only; ``None`` means the configured default, 832×480):

* "480p" → 832×480, "720p" → 1280×720, "1080p" → 1920×1080, "1440p"/"2K" → 2560×1440,
  "2160p"/"4K" → 3840×2160 (another "Np" → N high at 16:9), turned upright when the text says
  portrait. Sizes above the pixel budget are planned as said: ``check_plan`` scales them down
  keeping the aspect, with a note.
* Portrait: "portrait", "vertical(e)", "hochformat", "hochkant", "retrato", "ritratto", 竖屏/竖版,
  縦長/縦向き → the default size upright (480×832); "9:16" likewise; "16:9" is the default;
  "square" (also "format carré", "cuadrado", "quadratisch", 正方形) / "1:1" and other ratios (4:3,
  21:9…) keep the default's pixel count.
* Explicit sizes win over all of that: "W×H", "WxH", "W by H" (por/par/mal/per), "width of W …
  height of H", "W pixels wide", "H pixels tall" (one side alone keeps the default aspect).

Frames (video tasks only; images always have 1):

* "N seconds" (segundos, secondes, Sekunden, secondi, N秒, N秒間, N秒钟; also "N s", "N sec",
  "N-second", "N minutes"/分钟) → fps·N+1 frames at the configured fps, 16·N+1 by default
  (:func:`~engine.bounds.frames_for_seconds`);
  "N frames" (fotogramas, fotogrammi, 帧, フレーム) as given; ``check_plan`` rounds a count off
  the 4k+1 grid with a note, as for every planner. Unsaid: ``None`` (81 by default).
* For video_extend the frames are the *new* part only: "4 more seconds", "2 extra seconds",
  "3 segundos más", "noch 4 Sekunden" → frames for those seconds (65, 33…); the engine outputs
  the source followed by them.

Understanding or generation:

* A request that opens with a question word or a reading verb (what, how, is, describe, explain,
  summarize, count, tell me, translate, write…; qué, cómo, décris, was, wie, quem, cosa…), or
  asks for text ("write a caption", 写一首), is understanding; so is one with "?" (or 什么, 吗,
  ですか…) or such verbs anywhere and no generation word. The task is typed by the files
  (:func:`engine.tasks.understanding_task`: any video → video_understanding, images →
  image_understanding, none → text_understanding). Every file is a ``query`` input.
* Generation words in every language count: create/make/draw (crea, crée, erstelle, genera,
  dibuja, dessine, zeichne, "haz un", "fais une", "mach ein", 生成, 画一, 作って, 描いて…), edit
  verbs (quita, remplace, entferne, rimuovi, 换成, 削除…) and animate (anima, anime cette,
  animiere, 动起来, 動かして…): "Anime cette image ###a.png###" is image_to_video.
* Without files, anything else is text_to_video when a video is asked for (video, clip, vidéo,
  视频, 動画, animation, "N seconds"…) and text_to_image otherwise (a bare description is a picture).
* With files, a request with neither a generation word nor an output noun is understanding.

Files named by position (with two files or more): "the first image", "the second one", "the last
video", "image 2", "la primera imagen", "das zweite Bild", 第二张图片, 2枚目の画像. What the clause
says of it ("use the first image as the mask", "the last image is where the clip ends") is the
file's, and outranks its file name and the words next to its marker. "As the first image" stays
frame wording.

Generation with files, in order of preference (the first one the files make possible wins):

* A file said to be the mask (by position, by name ``*mask*``, called "the mask"/máscara/masque/
  Maske/遮罩/マスク, or described as marking the region: "###b.png### marks the region", "the red
  area in ###b.png### shows where"), with two or more files → image_edit / video_edit.
* A file named or called a pose / depth / edge / canny / sketch / scribble / line-art / control
  map or video (or "following the motion of") → image_control / video_control.
* Images with first/last-frame wording ("as the first frame", "ends on", "starting frame",
  "final shot") → first_last_to_video with two images, image_to_video with one; for two images
  "from ### to ###", "transition/morph between" also count. The image is the ``last_frame``
  when the words near it (or its file name) say so, else the ``first_frame``.
* Several subjects brought together ("put these three characters together at a picnic table",
  "combine ### and ### into one picture", juntos, ensemble, zusammen, insieme, 一起) with two
  images or more → image_reference (video_reference when a video is asked), every image a
  reference, before any edit reading.
* Outpaint wording: "outpaint", "uncrop", "zoom out", "expand", "widen", "show more of", "extend/
  enlarge … canvas / sides / left / by N pixels", "add N pixels of … on the left", "aspect ratio"
  (amplía, élargis, dézoome, erweitere, allarga, 扩图, 向左右两边扩展, ズームアウト…) →
  image_outpaint / video_outpaint. "N pixels" sets margins on the sides named (left, right, top,
  bottom and their words in each language, "sides"/"widen"/左右 = left+right, "vertically"/上下 =
  top+bottom, none named = all four); sides named without an amount get 1/8 of the output's
  width/height; with neither, every side gets 1/8, unless a new size or aspect ratio is asked for
  (no margins: the source is then fitted, centred, inside the output).
* Extension wording with a video: "continue", "extend", "keep (it) going", "N more/extra
  seconds", "make it N seconds longer", "what happens next" (continúa, prolonge, verlängere,
  allunga, 继续, 延长, 続き…) → video_extend.
  "extend"/"expand" with an image and no video wanted → image_outpaint.
* Images when a video is wanted: image_to_video (one image), video_reference (the subjects),
  first_last_to_video (two images).
* Edit verbs (replace, remove, change, edit, add, erase, swap, "turn … into", "make the/it …",
  and their words in each language) → image_edit (two images: the mask is the one so said, else
  the second) or video_edit (the video is the source; another file, if any, is its mask).
* Reference wording ("reference", "face ID", "subject", "the person in ###", "this dog",
  "featuring", "same character") → image_reference / video_reference (every image, 1-3).
* Otherwise images → image_reference; a video with a creation verb ("generate a video of a
  robot … ###dance.mp4###") → video_control; a video otherwise → video_edit.

When the wording asks for a task the files cannot serve (an edit with one image and no mask),
the next possible reading is taken and ``plan.notes`` says why.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath

from ..bounds import IMAGE_FRAMES, Bounds
from ..config import Limits
from ..errors import InvalidRequest
from ..plan import MediaInput, Plan, check_roles
from ..request import Request
from ..tasks import TASKS, understanding_task
from ..vocab import MediaKind, Role, Task
from . import PlanOutput, measures
from . import wording as w

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Reading a request.


@dataclass(frozen=True)
class _File:
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

    def named(self, name_pattern: re.Pattern, near_pattern: re.Pattern | None = None) -> bool:
        return bool(name_pattern.search(self.name) or (near_pattern and near_pattern.search(self.near)))

    @property
    def said_first(self) -> bool:
        """The words next to it (or said of it by position) make it the opening frame."""
        return bool(
            w.FIRST_NEAR.search(self.near)
            or w.FIRST_VERB.search(self.before)
            or w.SAID_FIRST.search(self.said)
        )

    @property
    def said_last(self) -> bool:
        return bool(
            w.LAST_NEAR.search(self.near) or w.LAST_VERB.search(self.before) or w.SAID_LAST.search(self.said)
        )


@dataclass(frozen=True)
class _Reading:
    """What the wording of one request says, computed once."""

    low: str  # planner text, lowercased, "×" as "x", files named by position as "<ref>"
    files: tuple[_File, ...]
    wants_video: bool
    frame_cue: bool  # an image is said to be the first or the last frame of a clip
    mask: _File | None
    control: _File | None

    @property
    def images(self) -> list[_File]:
        return [f for f in self.files if f.kind is MediaKind.IMAGE]

    @property
    def videos(self) -> list[_File]:
        return [f for f in self.files if f.kind is MediaKind.VIDEO]

    def says(self, pattern: re.Pattern) -> bool:
        return bool(pattern.search(self.low))


#: Full-width punctuation and digits (Chinese and Japanese input) as the patterns spell them.
_FULL_WIDTH = str.maketrans("？！，。；：（）％＃０１２３４５６７８９", "?!,.;:()%#0123456789")


def _read(request: Request) -> _Reading:
    low = request.text.lower().replace("×", "x").replace("’", "'").translate(_FULL_WIDTH)
    low = re.sub(r"^[\s¿¡]+", "", low)
    kinds = [k for _, k in request.media]
    low, near_text, said = _positions(low, kinds)
    nears = _near_words(near_text, len(request.media))
    files = tuple(
        _File(
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
    mask = None
    if len(files) >= 2:
        # What is said of a file by position first ("use the first image as the mask" outranks a
        # file called mask.png), then the file name, then the words near its marker.
        mask = next(
            (
                f
                for test in (
                    lambda f: w.NEAR_MASK.search(f.said) or w.NEAR_REGION.search(f.said),
                    lambda f: w.NAME_MASK.search(f.name),
                    lambda f: w.NEAR_MASK.search(f.near),
                    lambda f: w.NEAR_REGION.search(f.near),
                )
                for f in files
                if test(f)
            ),
            None,
        )
    control = next(
        (
            f
            for test in (
                lambda f: w.NEAR_CONTROL.search(f.said),
                lambda f: w.NAME_CONTROL.search(f.name),
                lambda f: w.NEAR_CONTROL.search(f.near),
            )
            for f in files
            if f is not mask and test(f)
        ),
        None,
    )
    if control is None and files and (w.CONTROL_PHRASE.search(low) or w.MOTION_CONTROL.search(low)):
        # "follow the pose video ###p.mp4###" names the file's kind: prefer a file of that kind.
        wanted = MediaKind.VIDEO if re.search(r"\b(?:video|videos|clip|sequence|frames)\b", low) else None
        control = next((f for f in files if f.kind is wanted), files[0])
    frame_cue = bool(
        w.FIRST_FRAME_NOUN.search(low)
        or w.LAST_FRAME_NOUN.search(low)
        or w.BOTH_ENDS.search(low)
        or any(f.said_first or f.said_last for f in files if f.kind is MediaKind.IMAGE)
    )
    wants_video = frame_cue or _wants_video(low)
    if wants_video and not frame_cue:
        # "###start.png###" and "###end.png###" say which end they are once a clip is wanted.
        frame_cue = any(
            f.named(w.NAME_FIRST) or f.named(w.NAME_LAST) for f in files if f.kind is MediaKind.IMAGE
        )
    return _Reading(
        low=low, files=files, wants_video=wants_video, frame_cue=frame_cue, mask=mask, control=control
    )


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
        if w.FRAME_ROLE_BEFORE.search(low[:start]):
            continue  # "as the first image": the clip's first frame
        kind = MediaKind.IMAGE if groups.get("img") else MediaKind.VIDEO if groups.get("vid") else last_kind
        pool = [i for i, k in enumerate(kinds) if kind is None or k is kind]
        if groups.get("num"):
            n = groups["num"]
            pos = (int(n) if n.isdigit() else measures.CJK_DIGITS.get(n, 0)) - 1
        else:
            pos = w.ORDINALS[groups["ord"]]
        if not pool or not -len(pool) <= pos < len(pool):
            continue
        found.append((start, end, pool[pos]))
        last_kind = kind
    if not found:
        return low, low, said
    # Clauses end at punctuation, "and" (in each language) and file markers.
    cuts = sorted(
        {0, len(low)}
        | {m.start() for m in w.POSITION_CLAUSE.finditer(low)}
        | {m.end() for m in w.POSITION_CLAUSE.finditer(low)}
        | {m.start() for m in w.PAD.finditer(low)}
        | {m.end() for m in w.PAD.finditer(low)}
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
    out = []
    for pattern in w.POSITIONS:
        for m in pattern.finditer(low):
            groups = {k: v for k, v in m.groupdict().items() if v}
            cjk = "cls" in pattern.groupindex
            if cjk and not ({"cls", "img", "vid"} & groups.keys()):
                continue
            out.append((m.start(), m.end(), groups))
    # Longest first among names starting at the same place.
    return sorted(out, key=lambda t: (t[0], -t[1]))


def _near_words(low: str, n: int) -> list[tuple[str, str]]:
    """For each file, the words of its clause before and after its marker (at most 8 each side).

    The text between two markers is split at the first and last clause boundary ("," "." "and"…);
    with no boundary it belongs to the file after it ("the mask ###m.png###") unless it opens like
    a description of the file before it ("###m.png### as the mask").
    """
    segments = w.PAD.split(low)
    if len(segments) != n + 1:  # a literal placeholder typed by the user: no positions to trust
        return [("", "")] * n
    before = [""] * n
    after = [""] * n
    for k, seg in enumerate(segments):
        prev_file, next_file = k - 1, k
        cuts = list(w.BOUNDARY.finditer(seg))
        if 0 < k < n and not cuts:
            if w.ATTACHES_BACK.match(seg):
                after[prev_file] = seg
            else:
                before[next_file] = seg
            continue
        if k > 0:
            after[prev_file] = seg[: cuts[0].start()] if cuts else seg
        if k < n:
            before[next_file] = seg[cuts[-1].start() :] if cuts else seg
    return [
        (" ".join(before[i].split()[-w.NEAR_WORDS :]), " ".join(after[i].split()[: w.NEAR_WORDS]))
        for i in range(n)
    ]


def _wants_video(low: str) -> bool:
    """Whether the output asked for is a video: animate and durations force it (so does frame
    wording, see ``_read``), otherwise the first output noun that does not name an input decides."""
    if w.ANIMATE.search(low) or measures.says_length(low):
        return True
    for m in w.OUTPUT_NOUN.finditer(low):
        is_video = m.group(2) is not None or m.group(4) is not None
        before, after = low[: m.start()], low[m.end() :]
        # "the photo ###a.png###" names its file; "a video ###a.png###" cannot, so it is the output.
        pad = "<vidpad>" if is_video else "<imgpad>"
        if re.match(r"\s*(?:" + pad + "|<ref>)", after) or re.search("(?:" + pad + r"|<ref>)\s*$", before):
            continue
        if w.INPUT_DETERMINER.search(before):
            continue
        return is_video
    return False


def _is_understanding(r: _Reading) -> bool:
    """Whether the request asks for text rather than a picture or a clip (module docstring)."""
    low = r.low
    # "###m.png### is the mask, …" describes a file: its "is" does not open a question.
    opens_with_file = bool(re.match(r"\s*" + w.ANY_PAD, low))
    rest = w.PAD.sub(" ", low).strip()
    while True:
        stripped = w.POLITE.sub("", rest, count=1).strip()
        if stripped == rest:
            break
        rest = stripped
    first = re.match(r"[^\W\d_][\w'-]*", rest)
    first_word = first.group(0) if first else ""
    if opens_with_file and first_word in w.DESCRIBING_VERBS:
        first_word = ""
    if first_word in w.UNDERSTAND_FIRST or w.TEXT_OUTPUT.search(low):
        return True
    strong = (
        r.mask is not None
        or w.CREATE.search(low)
        or w.EDIT.search(low)
        or w.ANIMATE.search(low)
        or w.OUTPAINT.search(low)
        or w.EXTEND.search(low)
        or (r.files and w.COMPOSE.search(low))
        or r.frame_cue
    )
    if strong:
        return False
    if w.QUESTION.search(low):
        return True
    if not r.files:
        return False  # a bare description is a picture (or a clip) to make
    weak = (
        r.control is not None
        or w.OUTPUT_NOUN.search(low)
        or w.REFERENCE.search(low)
        or w.NEAR_CONTROL.search(low)
        or w.TRANSITION.search(low)
        or measures.says_length(low)
    )
    return not weak


def _control_kind(r: _Reading) -> str | None:
    """The control signal a request asks to follow ("follow the moves" → pose, "same depth" →
    depth, "keep the outline" → edges, "colourise" → gray), from its words or the control file's
    name; ``None`` when nothing says (the engine then keeps a control-looking input as it is)."""
    said = r.low + " " + (r.control.name.lower() if r.control is not None else "")
    return next((kind for kind, pattern in w.CONTROL_KINDS if pattern.search(said)), None)


# ---------------------------------------------------------------------------------------------
# Roles: for each task, which file plays which part. Every file gets a role, so a reading that
# leaves a file out fails check_roles (naming it) instead of silently dropping the file. By
# default every file takes the first role of the task's row (a task with no roles gets every file
# as a query, so check_roles refuses the files by name); only where the wording decides roles is
# there a function here, in ``_WORDED_ROLES``. A new task needs nothing here unless its roles do.

Assigner = Callable[[_Reading, Task], list[tuple[_File, Role]]]


def _row_roles(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    roles = TASKS[task].roles
    role = roles[0].role if roles else Role.QUERY
    return [(f, role) for f in r.files]


def _assign_edit(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    if task is Task.IMAGE_EDIT:
        # The mask is the file named or called so, else the second one; the rest are sources
        # (more than one source then fails check_roles with the count).
        mask = r.mask or (r.files[1] if len(r.files) >= 2 else None)
        return [(f, Role.MASK if f is mask else Role.SOURCE) for f in r.files]
    # video_edit: the video is the source; any other file is its mask.
    source = next((f for f in r.videos if f is not r.mask), r.files[0])
    return [(f, Role.SOURCE if f is source else Role.MASK) for f in r.files]


def _frame_scores(r: _Reading) -> list[int]:
    """How strongly each file is said to open (+) or close (-) the clip."""
    scores = []
    for f in r.files:
        s = 0
        if f.said_first or w.NAME_FIRST.search(f.name):
            s += 2
        if f.said_last or w.NAME_LAST.search(f.name):
            s -= 2
        if len(r.images) == 2:  # "from ###a### to ###b###" only tells ends apart between two
            s += bool(w.WEAK_FIRST.search(f.near)) - bool(w.WEAK_LAST.search(f.near))
        scores.append(s)
    return scores


def _assign_image_to_video(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    scores = _frame_scores(r)
    out = []
    for f, s in zip(r.files, scores, strict=True):
        if s == 0:  # nothing near the file: a global "last frame" decides
            last = bool(w.LAST_FRAME_NOUN.search(r.low)) and not w.FIRST_FRAME_NOUN.search(r.low)
        else:
            last = s < 0
        out.append((f, Role.LAST_FRAME if last else Role.FIRST_FRAME))
    return out


def _assign_first_last(r: _Reading, task: Task) -> list[tuple[_File, Role]]:
    scores = _frame_scores(r)
    pair = [i for i, f in enumerate(r.files) if f.kind is MediaKind.IMAGE][:2]
    last_i = pair[-1] if pair else None
    if len(pair) == 2 and scores[pair[1]] > scores[pair[0]]:
        last_i = pair[0]
    return [
        (f, Role.LAST_FRAME if i == last_i and len(pair) == 2 else Role.FIRST_FRAME)
        for i, f in enumerate(r.files)
    ]


#: The tasks whose roles the wording decides (mask or source, first or last frame).
_WORDED_ROLES: dict[Task, Assigner] = {
    Task.IMAGE_EDIT: _assign_edit,
    Task.VIDEO_EDIT: _assign_edit,
    Task.IMAGE_TO_VIDEO: _assign_image_to_video,
    Task.FIRST_LAST_TO_VIDEO: _assign_first_last,
}


#: Rows of the task table the rules planner never proposes, each with the reason. None today:
#: every row is reachable from some wording (a test holds each row to one or the other).
NOT_PLANNED: dict[Task, str] = {}


# ---------------------------------------------------------------------------------------------
# Which tasks the wording asks for, most wanted first. ``True`` marks a reading asked for in so
# many words (its failure is reported in the plan's notes); ``False`` a default.


def _candidates(r: _Reading) -> list[tuple[Task, bool]]:
    if not r.files:
        return [(Task.TEXT_TO_VIDEO if r.wants_video else Task.TEXT_TO_IMAGE, True)]
    edit = r.says(w.EDIT)
    reference = r.says(w.REFERENCE) or any(w.NAME_REFERENCE.search(f.name) for f in r.files)
    control = []
    if r.control is not None:
        control = [(Task.VIDEO_CONTROL if r.control.kind is MediaKind.VIDEO else Task.IMAGE_CONTROL, True)]
    if r.videos:
        out = [(Task.VIDEO_EDIT, True)] if r.mask is not None else []
        out += control
        if r.says(w.OUTPAINT):
            out += [(Task.VIDEO_OUTPAINT, True)]
        if r.says(w.EXTEND):
            out += [(Task.VIDEO_EXTEND, True)]
        if edit:
            out += [(Task.VIDEO_EDIT, True)]
        if len(r.files) == 1:
            # A lone video and a creation verb: a new clip shaped by it; anything else: an edit.
            out += [(Task.VIDEO_CONTROL, False)] if r.says(w.CREATE) else []
            out += [(Task.VIDEO_EDIT, False)]
        return out

    out = [(Task.IMAGE_EDIT, True)] if r.mask is not None else []
    out += control
    if r.frame_cue or (len(r.images) == 2 and r.wants_video and r.says(w.TRANSITION)):
        out += [(Task.FIRST_LAST_TO_VIDEO, True)] if len(r.images) >= 2 else []
        out += [(Task.IMAGE_TO_VIDEO, True)]
    if len(r.images) >= 2 and r.says(w.COMPOSE):
        # Several subjects brought together: every image is a reference, before any edit reading.
        out += [(Task.VIDEO_REFERENCE if r.wants_video else Task.IMAGE_REFERENCE, True)]
    if r.says(w.OUTPAINT) or (r.says(w.EXTEND_IMAGE) and not r.wants_video):
        out += [(Task.IMAGE_OUTPAINT, True)]
    if r.wants_video:
        if reference:
            out += [(Task.VIDEO_REFERENCE, True)]
        out += [
            (Task.IMAGE_TO_VIDEO, False),
            (Task.VIDEO_REFERENCE, False),
            (Task.FIRST_LAST_TO_VIDEO, False),
        ]
    if edit:
        out += [(Task.IMAGE_EDIT, True)]
    return out + [(Task.IMAGE_REFERENCE, reference)]


# ---------------------------------------------------------------------------------------------


class RulesPlanner:
    """Plans requests from their wording and file kinds, without a model (see module docstring).

    ``limits`` supplies the default size that "portrait", "square" and aspect ratios turn or
    reshape, and the size default margins are taken from; pass the engine's ``config.limits``.
    """

    name = "rules"

    def __init__(self, limits: Limits | None = None):
        self.limits = limits or Limits()

    def __call__(self, request: Request, *, want_features: bool = False) -> PlanOutput:
        """:meth:`plan` as a :class:`~engine.planners.Planner`: no model, so never features."""
        started = time.perf_counter()
        plan = self.plan(request)
        return PlanOutput(plan=plan, features=None, timings={"plan_s": time.perf_counter() - started})

    def plan(self, request: Request) -> Plan:
        """The plan for ``request``: not yet normalised (``check_plan`` does that), but valid.

        Raises :class:`InvalidRequest` when no task the wording allows fits the files.
        """
        r = _read(request)
        if _is_understanding(r):
            task = understanding_task([f.kind for f in r.files])
            plan = Plan(task=task, prompt=request.prompt, inputs=self._inputs(r, task))
            log.debug("rules plan: %s", plan.summary())
            return plan

        errors: list[InvalidRequest] = []
        skipped: dict[Task, str] = {}  # tasks asked for in so many words that the files cannot serve
        for task, asked in _candidates(r):
            plan = Plan(task=task, prompt=request.prompt, inputs=self._inputs(r, task))
            try:
                check_roles(plan)
            except InvalidRequest as e:
                errors.append(e)
                if asked:
                    skipped.setdefault(task, str(e))
                continue
            plan = self._shape(plan, r)
            if skipped:
                why = "; ".join(f"read as {t.value}, but {e}" for t, e in skipped.items())
                note = f"{why}; planned as {task.value}"
                plan = plan.model_copy(update={"notes": [*plan.notes, note]})
                log.info("rules planner: %s", note)
            log.debug("rules plan: %s", plan.summary())
            return plan
        # No reading fits the files: the most wanted one says what it needs.
        if errors:
            raise errors[0]
        # No reading at all (several videos with no edit, control or extend wording).
        kinds = ", ".join(f"{f.path} ({f.kind.value})" for f in r.files)
        raise InvalidRequest.for_field(
            "inputs",
            [f.path for f in r.files],
            f"no task takes these files ({kinds}) for this request: video tasks take one source or "
            "control video (video_edit also a mask, named so); say what to do with each file",
        )

    @staticmethod
    def _inputs(r: _Reading, task: Task) -> list[MediaInput]:
        assign = _WORDED_ROLES.get(task, _row_roles)
        pairs = sorted(assign(r, task), key=lambda p: p[0].index)
        return [MediaInput(path=f.path, kind=f.kind, role=role) for f, role in pairs]

    def _shape(self, plan: Plan, r: _Reading) -> Plan:
        """Width, height, frames and margins from the wording."""
        width, height = measures.output_size(r.low, self.limits)
        update: dict = {"width": width, "height": height}
        if plan.spec.output == "image":
            update["num_frames"] = IMAGE_FRAMES
        else:
            update["num_frames"] = measures.duration_frames(r.low, Bounds.of(self.limits).default_fps)
        if "control_kind" in plan.spec.params:
            update["control_kind"] = _control_kind(r)
        if "margins" in plan.spec.params:
            update["margins"] = measures.margins(
                r.low,
                width or self.limits.default_width,
                height or self.limits.default_height,
                explicit_size=width is not None,
            )
        return plan.model_copy(update=update)

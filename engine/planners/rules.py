"""The rules planner: a plan from the wording of a request and the kinds of its files, no model.

It is the default backend when no planner weights are configured, and the tests' oracle. It reads
a :class:`~engine.request.Request` (``###path###`` markers already numbered, see
:func:`~engine.request.parse_request`) and returns a :class:`~engine.plan.Plan` that
:func:`~engine.plan.check_plan` accepts; the Engine runs ``check_plan``. When no reading of the
request fits its files, :class:`~engine.errors.InvalidRequest` says what the preferred task needs.
The generator's prompt is always ``request.prompt`` (the request without its markers).

Conventions
-----------
Languages: every word is data, one file per language in ``engine/lexicon/`` (concept → phrases;
today English, Spanish, French, German, Portuguese, Italian, Chinese and Japanese), compiled once
into one pattern per concept across the languages (:mod:`engine.lexicon`). The code reads
concepts, never words, and is the same for every language: :mod:`engine.planners.reading` turns a
request into facts, :data:`CANDIDATES` (rows of facts → task) picks the task, and
:mod:`engine.planners.measures` reads numbers, sizes and lengths. Adding a language is adding its
file. Full-width punctuation and digits are read as ASCII; "¿"/"¡" openings are ignored. Numbers
are digits, or the number words of the language files (one…ten, 两/三…十).

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
  width/height; with neither, every side gets 1/8. A new size, aspect ratio or orientation
  without an amount ("to 16:9", "make it vertical", "square", "1280x720") gives no margins: the
  output takes that size or shape and the whole source is fitted, centred, inside it (nothing of
  it cropped; the margins are what it leaves), whatever sides "widen" names.
* Reshape wording with one picture or clip and nothing else asked of it ("make it vertical",
  "make it square", "9:16 for phone", "reframe to 4:3", hazla vertical, im Hochformat…) →
  image_outpaint / video_outpaint to that shape, the source kept whole.
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
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..bounds import IMAGE_FRAMES, Bounds
from ..config import Limits
from ..errors import InvalidRequest
from ..lexicon import LEXICON as LEX
from ..plan import MediaInput, Plan, check_roles
from ..request import Request
from ..tasks import TASKS, understanding_task
from ..vocab import MediaKind, Role, Task
from . import PlanOutput, measures
from .reading import File, Reading, control_kind, is_understanding, read

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Which tasks the wording asks for: one row per reading, most wanted first. A row is taken when
# all its facts hold (``!fact``: does not hold; the facts are Reading.facts); the first row whose
# task the files can serve wins. ``asked`` marks a reading asked for in so many words: when the
# files cannot serve it, the plan's notes say so. Adding a reading is adding a row.


@dataclass(frozen=True)
class Candidate:
    """A task and the facts of the reading that ask for it."""

    task: Task
    when: tuple[tuple[str, bool], ...]  # (fact, wanted value)
    asked: bool = True

    @classmethod
    def of(cls, task: Task, when: str, asked: bool = True) -> Candidate:
        facts = tuple((f.removeprefix("!"), not f.startswith("!")) for f in when.split())
        return cls(task, facts, asked)

    def fits(self, facts: dict[str, bool]) -> bool:
        return all(facts[name] is wanted for name, wanted in self.when)


T = Task
CANDIDATES: tuple[Candidate, ...] = (
    # No files: a picture, or a clip when one is asked for.
    Candidate.of(T.TEXT_TO_VIDEO, "no_files wants_video"),
    Candidate.of(T.TEXT_TO_IMAGE, "no_files"),
    # A video among the files.
    Candidate.of(T.VIDEO_EDIT, "video mask"),
    Candidate.of(T.VIDEO_CONTROL, "video control_video"),
    Candidate.of(T.IMAGE_CONTROL, "video control_image"),
    Candidate.of(T.VIDEO_OUTPAINT, "video outpaint"),
    Candidate.of(T.VIDEO_OUTPAINT, "video reshape_only"),
    Candidate.of(T.VIDEO_EXTEND, "video extend"),
    Candidate.of(T.VIDEO_EDIT, "video edit"),
    # A lone video and a creation verb: a new clip shaped by it; anything else: an edit.
    Candidate.of(T.VIDEO_CONTROL, "video one_file create", asked=False),
    Candidate.of(T.VIDEO_EDIT, "video one_file", asked=False),
    # Images only.
    Candidate.of(T.IMAGE_EDIT, "images mask"),
    Candidate.of(T.IMAGE_CONTROL, "images control_image"),
    Candidate.of(T.FIRST_LAST_TO_VIDEO, "images ends_named several_images"),
    Candidate.of(T.IMAGE_TO_VIDEO, "images ends_named"),
    # Several subjects brought together: every image is a reference, before any edit reading.
    Candidate.of(T.VIDEO_REFERENCE, "images several_images compose wants_video"),
    Candidate.of(T.IMAGE_REFERENCE, "images several_images compose !wants_video"),
    Candidate.of(T.IMAGE_OUTPAINT, "images outpaint"),
    Candidate.of(T.IMAGE_OUTPAINT, "images extend_image"),
    Candidate.of(T.IMAGE_OUTPAINT, "images reshape_only"),
    Candidate.of(T.VIDEO_REFERENCE, "images wants_video reference"),
    Candidate.of(T.IMAGE_TO_VIDEO, "images wants_video", asked=False),
    Candidate.of(T.VIDEO_REFERENCE, "images wants_video", asked=False),
    Candidate.of(T.FIRST_LAST_TO_VIDEO, "images wants_video", asked=False),
    Candidate.of(T.IMAGE_EDIT, "images edit"),
    Candidate.of(T.IMAGE_REFERENCE, "images reference"),
    Candidate.of(T.IMAGE_REFERENCE, "images", asked=False),
)


def candidates(r: Reading) -> list[tuple[Task, bool]]:
    """The tasks the reading asks for, most wanted first, each with whether it was asked for."""
    facts = r.facts
    return [(c.task, c.asked) for c in CANDIDATES if c.fits(facts)]


#: Rows of the task table the rules planner never proposes, each with the reason. None today:
#: every row is reachable from some wording (a test holds each row to one or the other).
NOT_PLANNED: dict[Task, str] = {}


# ---------------------------------------------------------------------------------------------
# Roles: for each task, which file plays which part. Every file gets a role, so a reading that
# leaves a file out fails check_roles (naming it) instead of silently dropping the file. By
# default every file takes the first role of the task's row (a task with no roles gets every file
# as a query, so check_roles refuses the files by name); only where the wording decides roles is
# there a function here, in ``_WORDED_ROLES``. A new task needs nothing here unless its roles do.

Assigner = Callable[[Reading, Task], list[tuple[File, Role]]]


def _row_roles(r: Reading, task: Task) -> list[tuple[File, Role]]:
    roles = TASKS[task].roles
    role = roles[0].role if roles else Role.QUERY
    return [(f, role) for f in r.files]


def _assign_edit(r: Reading, task: Task) -> list[tuple[File, Role]]:
    if task is Task.IMAGE_EDIT:
        # The mask is the file named or called so, else the second one; the rest are sources
        # (more than one source then fails check_roles with the count).
        mask = r.mask or (r.files[1] if len(r.files) >= 2 else None)
        return [(f, Role.MASK if f is mask else Role.SOURCE) for f in r.files]
    # video_edit: the video is the source; any other file is its mask.
    source = next((f for f in r.videos if f is not r.mask), r.files[0])
    return [(f, Role.SOURCE if f is source else Role.MASK) for f in r.files]


def _frame_scores(r: Reading) -> list[int]:
    """How strongly each file is said to open (+) or close (-) the clip."""
    scores = []
    for f in r.files:
        s = 0
        if f.said_first or f.named("start_name"):
            s += 2
        if f.said_last or f.named("end_name"):
            s -= 2
        if len(r.images) == 2:  # "from ###a### to ###b###" only tells ends apart between two
            s += LEX.says("weak_first", f.near) - LEX.says("weak_last", f.near)
        scores.append(s)
    return scores


def _assign_image_to_video(r: Reading, task: Task) -> list[tuple[File, Role]]:
    scores = _frame_scores(r)
    out = []
    for f, s in zip(r.files, scores, strict=True):
        # Nothing near the file: a global "last frame" decides.
        last = (r.says("last_frame") and not r.says("first_frame")) if s == 0 else s < 0
        out.append((f, Role.LAST_FRAME if last else Role.FIRST_FRAME))
    return out


def _assign_first_last(r: Reading, task: Task) -> list[tuple[File, Role]]:
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
        r = read(request)
        if is_understanding(r):
            task = understanding_task([f.kind for f in r.files])
            plan = Plan(task=task, prompt=request.prompt, inputs=self._inputs(r, task))
            log.debug("rules plan: %s", plan.summary())
            return plan

        errors: list[InvalidRequest] = []
        skipped: dict[Task, str] = {}  # tasks asked for in so many words that the files cannot serve
        for task, asked in candidates(r):
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
    def _inputs(r: Reading, task: Task) -> list[MediaInput]:
        assign = _WORDED_ROLES.get(task, _row_roles)
        pairs = sorted(assign(r, task), key=lambda p: p[0].index)
        return [MediaInput(path=f.path, kind=f.kind, role=role) for f, role in pairs]

    def _shape(self, plan: Plan, r: Reading) -> Plan:
        """Width, height, frames and margins from the wording."""
        width, height = measures.output_size(r.low, self.limits)
        update: dict = {"width": width, "height": height}
        if plan.spec.output == "image":
            update["num_frames"] = IMAGE_FRAMES
        else:
            update["num_frames"] = measures.duration_frames(r.low, Bounds.of(self.limits).default_fps)
        if "control_kind" in plan.spec.params:
            update["control_kind"] = control_kind(r)
        if "margins" in plan.spec.params:
            update["margins"] = measures.margins(
                r.low,
                width or self.limits.default_width,
                height or self.limits.default_height,
                explicit_size=width is not None,
            )
        return plan.model_copy(update=update)

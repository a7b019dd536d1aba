"""The Unison planner's output grammar: parse it into a :class:`~engine.plan.Plan`, write a plan in it.

The 14 tokens are in :mod:`engine.vocab`, and which tokens select which task is in each task's
row (``TaskSpec.grammar``: the output token ``<CFI>``/``<CFV>`` plus at most one marker token).
This module reads the rows: a task is found by looking its tokens up, never by a chain of tests
on which tokens appear (the shape of the reference, which is how its first/last-frame bug hid).
What stands between a marker's tokens (edit indices, the first/last word) is read by one small
function per marker, in :data:`_MARKERS`.

:func:`unison_grammar` is the same language as a grammar the planner decodes under (Lark, as
llguidance reads it): built per request from the rows, the marker readers and the limits, so the
Unison planner can only write what :func:`parse_unison` reads and ``check_plan`` takes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .config import Limits
from .errors import InvalidRequest, PlannerError, shown
from .plan import BasePlan, MediaInput, Plan, check_plan
from .planners.choices import frame_counts, offered, runs, side_range
from .tasks import TASKS, TaskSpec, understanding_task
from .vocab import (
    BOEDIT,
    BOFIDX,
    BONF,
    BORES,
    CFI,
    CFV,
    CTRL,
    EOEDIT,
    EOFIDX,
    EONF,
    EORES,
    REF,
    UNISON_TOKENS,
    MediaKind,
    Role,
    Task,
    media_kind,
)

#: The clip length ``<BOFIDX>`` indices refer to when the output names none (the reference's 81).
DEFAULT_VIDEO_FRAMES = 81

_FIRST_WORDS = {"first", "start", "begin", "beginning", "0", "head"}
_LAST_WORDS = {"last", "end", "final", "-1", "tail"}
_CHAT_END = ("<|im_end|>", "<|endoftext|>")
_PAIRS = ((BORES, EORES), (BONF, EONF), (BOFIDX, EOFIDX), (BOEDIT, EOEDIT))
_END_OF = dict(_PAIRS)

Files = list[tuple[str, MediaKind]]


@dataclass(frozen=True)
class _Marker:
    """How a marker token's content becomes the task's inputs (parse) and back (format), and what
    may stand in it for a request (``contents(files, last_index)``: the candidates the decoding
    grammar tries, each kept only when :func:`parse_unison` reads it; ``None``: no content)."""

    read: Callable[[str | None, Files, bool, int | None, str], list[tuple[int, Role]]]
    write: Callable[[BasePlan, Callable[[MediaInput], int], Files], str]
    contents: Callable[[int, int], list[str | None]]


def _span(text: str, start: str, end: str) -> str | None:
    i = text.find(start)
    if i < 0:
        return None
    j = text.find(end, i + len(start))
    if j < 0:
        raise PlannerError(f"planner output has {start} without {end}: {shown(text)}")
    return text[i + len(start) : j].strip()


def _ints(value: str, n: int, token: str, raw: str) -> list[int]:
    parts = [p for p in re.split(r"[,\sx×]+", value) if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        raise PlannerError(
            f"{token} holds {shown(value)}, expected {n} whole number(s): {shown(raw)}"
        ) from None
    if len(nums) != n:
        raise PlannerError(f"{token} holds {shown(value)}, expected {n} whole number(s): {shown(raw)}")
    return nums


def _strip_tokens(text: str) -> str:
    for a, b in _PAIRS:
        text = re.sub(re.escape(a) + r".*?" + re.escape(b), " ", text, flags=re.DOTALL)
    for tok in (*UNISON_TOKENS, *_CHAT_END):
        text = text.replace(tok, " ")
    return re.sub(r"\s+", " ", text).strip()


def _first_of(files: Files, kind: MediaKind, raw: str) -> int:
    for i, (_, k) in enumerate(files):
        if k is kind:
            return i
    raise PlannerError(f"planner output needs an input {kind.value} but the request has none: {shown(raw)}")


# ---------------------------------------------------------------------------------------------
# One reader and one writer per marker token.


def _read_frame_index(value: str | None, files: Files, image: bool, num_frames: int | None, raw: str):
    """``<BOFIDX>``: which end of the clip the (first) image is.

    Compared by value, unlike the reference (whose comparison with a constant always chose the
    last frame): a word (first/start/0 or last/end/-1) or the last index of the clip.
    """
    word = (value or "").strip().lower()
    n = DEFAULT_VIDEO_FRAMES if num_frames is None else num_frames
    if word in _FIRST_WORDS:
        role = Role.FIRST_FRAME
    elif word in _LAST_WORDS or (word.isdigit() and int(word) == n - 1):
        role = Role.LAST_FRAME
    else:
        raise PlannerError(
            f"<BOFIDX> holds {shown(value)}; expected first/start/0 or last/end/-1 (or {n - 1}, the last "
            f"index of {n} frames): {shown(raw)}"
        )
    return [(_first_of(files, MediaKind.IMAGE, raw), role)]


def _write_frame_index(plan: BasePlan, idx: Callable[[MediaInput], int], files: Files) -> str:
    return "first" if plan.by_role(Role.FIRST_FRAME) else "last"


def _read_reference(value: str | None, files: Files, image: bool, num_frames: int | None, raw: str):
    refs = [(i, Role.REFERENCE) for i, (_, k) in enumerate(files) if k is MediaKind.IMAGE]
    if not refs:
        raise PlannerError(f"<REF> but the request has no image: {shown(raw)}")
    return refs


def _read_control(value: str | None, files: Files, image: bool, num_frames: int | None, raw: str):
    if not files:
        raise PlannerError(f"<CTRL> but the request has no file: {shown(raw)}")
    # The reference takes input 0; with several files the first of the output's kind is the
    # control (the same file whenever the request holds one), so a stray extra image before a
    # control video does not turn into an impossible plan.
    want = MediaKind.IMAGE if image else MediaKind.VIDEO
    return [(next((i for i, (_, k) in enumerate(files) if k is want), 0), Role.CONTROL)]


def _read_edit(value: str | None, files: Files, image: bool, num_frames: int | None, raw: str):
    """``<BOEDIT>mask,source<EOEDIT>``. The region may also be found from the prompt's words (the
    reference does so for video), so what stands between the tokens may be one index (the
    image/video to edit, as the reference's planner writes it for video) or nothing (the first
    input of the output's kind); equal indices mean no mask. For images two indices stay the
    released form."""
    kind = MediaKind.IMAGE if image else MediaKind.VIDEO
    if not value:
        return [(_first_of(files, kind, raw), Role.SOURCE)]
    if len([p for p in re.split(r"[,\s]+", value) if p]) == 1:
        (source_i,) = _ints(value, 1, "<BOEDIT>", raw)
        if 0 <= source_i < len(files) and files[source_i][1] is not kind:
            raise PlannerError(
                f"<BOEDIT> names input {source_i} ({files[source_i][1].value}) as the {kind.value} to "
                f"edit: {shown(raw)}"
            )
        return [(source_i, Role.SOURCE)]
    mask_i, source_i = _ints(value, 2, "<BOEDIT>", raw)
    if image and mask_i == source_i:
        raise PlannerError(f"<BOEDIT> names input {mask_i} as both mask and source: {shown(raw)}")
    return [(source_i, Role.SOURCE)] + ([(mask_i, Role.MASK)] if mask_i != source_i else [])


def _write_edit(plan: BasePlan, idx: Callable[[MediaInput], int], files: Files) -> str:
    masks = plan.by_role(Role.MASK)
    source_input = plan.one(Role.SOURCE)
    source = idx(source_input)
    if masks:
        return f"{idx(masks[0])},{source}"
    # Without a mask: nothing when the source is the first input of its kind (what parse then
    # reads), else its index alone.
    first = next((i for i, (_, k) in enumerate(files) if k is source_input.kind), None)
    return "" if source == first else str(source)


def _no_content(plan: BasePlan, idx: Callable[[MediaInput], int], files: Files) -> str:
    return ""


def _frame_index_contents(n_files: int, last_index: int) -> list[str | None]:
    # Every word the reader takes, and the clip's last index (which depends on its length).
    return [*sorted(_FIRST_WORDS), *sorted(_LAST_WORDS), str(last_index)]


def _edit_contents(n_files: int, last_index: int) -> list[str | None]:
    # Nothing, one index, or mask,source (equal indices would only spell "one index" again).
    singles = [str(i) for i in range(n_files)]
    pairs = [f"{a},{b}" for a in range(n_files) for b in range(n_files) if a != b]
    return ["", *singles, *pairs]


def _none(n_files: int, last_index: int) -> list[str | None]:
    return [None]


#: Marker tokens in the order they are looked for (the first present one selects the task).
_MARKERS: dict[str, _Marker] = {
    BOFIDX: _Marker(_read_frame_index, _write_frame_index, _frame_index_contents),
    REF: _Marker(_read_reference, _no_content, _none),
    CTRL: _Marker(_read_control, _no_content, _none),
    BOEDIT: _Marker(_read_edit, _write_edit, _edit_contents),
}

#: The task each (output token, marker) pair selects, read from the task table.
_BY_TOKENS: dict[tuple[str, str | None], TaskSpec] = {s.grammar: s for s in TASKS.values() if s.grammar}


# ---------------------------------------------------------------------------------------------
# Parsing and formatting.


def parse_unison(
    text: str,
    inputs: Sequence[tuple[str, MediaKind | str]] = (),
    *,
    prompt: str | None = None,
) -> Plan:
    """Turn the Unison planner's output into a :class:`Plan` (not yet checked: see ``check_plan``).

    ``inputs`` are the request's files in order (path, kind); indices in the output refer to them.
    The generator's prompt is ``prompt`` (the user's request without markers) when given, else the
    text the planner wrote around its tokens.
    """
    raw = text
    for end in _CHAT_END:
        text = text.replace(end, "")
    for begin, end in _PAIRS:
        if end in text and (begin not in text or text.find(end) < text.find(begin)):
            raise PlannerError(f"planner output has {end} without {begin} before it: {shown(raw)}")
    files: Files = [(str(p), MediaKind(k)) for p, k in inputs]
    gen_prompt = prompt if prompt is not None else _strip_tokens(text)

    def ref(i: int, role: Role) -> MediaInput:
        if not 0 <= i < len(files):
            raise PlannerError(
                f"planner output refers to input {i} but the request has {len(files)} file(s): {shown(raw)}"
            )
        return MediaInput(path=files[i][0], kind=files[i][1], role=role)

    outputs = [tok for tok in (CFI, CFV) if tok in text]
    if not outputs:  # no <CFI>/<CFV>: an understanding task, typed by the files
        task = understanding_task([k for _, k in files])
        return Plan(
            task=task, prompt=gen_prompt, inputs=[ref(i, Role.QUERY) for i in range(len(files))], raw=raw
        )
    if len(outputs) == 2:
        raise PlannerError(f"planner output asks for both an image and a video: {shown(raw)}")
    out = outputs[0]
    image = out == CFI

    width = height = num_frames = None
    res = _span(text, BORES, EORES)
    if res is not None:
        width, height = _ints(res, 2, "<BORES>", raw)
    nf = _span(text, BONF, EONF)
    if nf is not None:
        num_frames = _ints(nf, 1, "<BONF>", raw)[0] + 1
    if image:
        num_frames = 1

    marker = next((tok for tok in _MARKERS if tok in text), None)
    spec = _BY_TOKENS.get((out, marker))
    if spec is None:
        wants = sorted(o for o, m in _BY_TOKENS if m == marker)
        raise PlannerError(f"{marker} needs {' or '.join(wants)}, but the output has {out}: {shown(raw)}")
    media: list[MediaInput] = []
    if marker is not None:
        content = _span(text, marker, _END_OF[marker]) if marker in _END_OF else None
        media = [ref(i, role) for i, role in _MARKERS[marker].read(content, files, image, num_frames, raw)]
    return Plan(
        task=spec.task,
        prompt=gen_prompt,
        inputs=media,
        width=width,
        height=height,
        num_frames=num_frames,
        raw=raw,
    )


def format_unison(plan: BasePlan, files: Sequence[str] | None = None) -> str:
    """Write a plan in the Unison grammar (the inverse of :func:`parse_unison`).

    ``files`` are the request's paths in order (default: the plan's inputs in order); edit indices
    refer to them. Tasks the released grammar cannot express raise :class:`InvalidRequest`.
    """
    order = list(files) if files is not None else [m.path for m in plan.inputs]

    def idx(m: MediaInput) -> int:
        if m.path not in order:
            raise InvalidRequest.for_field(
                "files", order, f"must include the {m.role.value} input {shown(m.path)}"
            )
        return order.index(m.path)

    spec = TASKS[plan.task]
    if spec.understanding:
        return plan.prompt
    if spec.grammar is None:
        raise InvalidRequest.for_field("task", plan.task.value, "has no form in the Unison planner grammar")
    out, marker = spec.grammar
    parts = [out]
    if plan.width is not None and plan.height is not None:
        parts.append(f"{BORES}{plan.width},{plan.height}{EORES}")
    if spec.output == "video" and plan.num_frames is not None:
        parts.append(f"{BONF}{plan.num_frames - 1}{EONF}")
    if marker is not None:
        kinds = {m.path: m.kind for m in plan.inputs}
        files_kinds: Files = [(p, kinds.get(p) or media_kind(p, field="files")) for p in order]
        content = _MARKERS[marker].write(plan, idx, files_kinds)
        parts.append(f"{marker}{content}{_END_OF[marker]}" if marker in _END_OF else marker)
    return "".join(parts) + (" " + plan.prompt if plan.prompt else "")


# ---------------------------------------------------------------------------------------------
# The grammar the Unison planner decodes under.

#: An understanding answer: free text without "<". The planning pass's answer is not the result
#: (the question is answered again with the real media, engine.understand); "<" is left out so that
#: no token of the grammar spelled out in pieces turns the answer into a plan that does not parse.
#: (The 14 added tokens are special: llguidance never matches them as text.)
_ANSWER = "/[^<]+/"


def unison_grammar(files: Sequence[tuple[str, MediaKind | str]], limits: Limits, *, prompt: str) -> str:
    """The Unison token language for one request, as a Lark grammar in llguidance's dialect (where
    ``<CFI>`` is the added token itself, never its spelling).

    Either an answer (free text: an understanding task) or, for each task whose row has tokens and
    whose plan can check for these files, its output token, an optional size (within
    :func:`~engine.planners.choices.side_range`), for a video an optional frame count n on the 4k+1
    grid (:func:`~engine.planners.choices.frame_counts`, written n-1), and its marker holding each
    content its reader takes for these files: only indices of the request's files, ``<BOFIDX>`` only
    after ``<CFV>`` (the rows say so), the clip's last index only as its length makes it. Each
    content is kept only when :func:`parse_unison` reads it into a plan that ``check_plan`` takes,
    so every string the grammar lets through parses and checks.
    """
    # What the grammar allows depends on the files' kinds, the limits and whether any words say
    # what to make, not on the paths or the words themselves: built once for each such request.
    kinds = tuple(MediaKind(k) for _, k in files)
    return _grammar_for(kinds, limits.model_dump_json(), "-" if prompt.strip() else "")


@lru_cache(maxsize=256)
def _grammar_for(kinds: tuple[MediaKind, ...], limits_json: str, prompt: str) -> str:
    limits = Limits.model_validate_json(limits_json)
    ext = {MediaKind.IMAGE: "png", MediaKind.VIDEO: "mp4"}
    media: Files = [(f"{i}.{ext[k]}", k) for i, k in enumerate(kinds)]
    low, high = side_range(limits)
    rules: dict[str, str] = {}
    for spec in TASKS.values():
        if spec.grammar is not None and offered(spec, prompt):
            rules.update(_task_rules(spec, media, limits, prompt))
    tasks = [name for name in rules if name in {t.value for t in TASKS}]
    lines = [
        "start: " + " | ".join(["answer", *tasks]),
        "answer: ANSWER?",
        f"ANSWER: {_ANSWER}",
        f"SIDE: /{_int_regex(low, high)}/",
        f'size: {BORES} SIDE "," SIDE {EORES}',
        *(f"{name}: {body}" for name, body in rules.items()),
    ]
    return "\n".join(lines) + "\n"


def _task_rules(spec: TaskSpec, files: Files, limits: Limits, prompt: str) -> dict[str, str]:
    """One task's rule (named by the task) with the contents that parse and check, and the rule of
    the contents every length shares; nothing when no content fits these files."""
    out, marker = spec.grammar or (CFI, None)
    name = spec.task.value
    counts = frame_counts(spec, limits)
    lengths: list[int | None] = [None, *counts]  # None: no <BONF> (the parser's default length)
    candidates = {
        n: _MARKERS[marker].contents(len(files), (n or DEFAULT_VIDEO_FRAMES) - 1) if marker else [None]
        for n in lengths
    }
    # Contents that do not depend on the length are read once; the others at their own length.
    shared = set.intersection(*(set(c) for c in candidates.values()))
    common = [c for c in candidates[None] if c in shared and _reads(spec, files, limits, prompt, None, c)]
    own = {
        n: [c for c in cs if c not in shared and _reads(spec, files, limits, prompt, n, c)]
        for n, cs in candidates.items()
    }
    if not common and not any(own.values()):
        return {}
    if not any(own.values()):
        frames = f" ({BONF} {_strings(str(n - 1) for n in counts)} {EONF})?" if counts else ""
        return {name: f"{out} size?{frames}{_marker_part(marker, common)}"}
    # A content that names the clip's length (<BOFIDX>'s last index) follows that length.
    rules = {f"{name}_any": _strings(c or "" for c in common)} if common else {}
    branches = []
    for n in lengths:
        if common or own[n]:
            inner = " | ".join([*([f"{name}_any"] if common else []), *(json.dumps(c) for c in own[n])])
            frames = "" if n is None else f'{BONF} "{n - 1}" {EONF} '
            branches.append(f"{frames}{marker} ({inner}) {_END_OF[marker or '']}")
    return {name: f"{out} size? ({' | '.join(branches)})", **rules}


def _reads(
    spec: TaskSpec, files: Files, limits: Limits, prompt: str, n: int | None, content: str | None
) -> bool:
    """Whether these tokens parse into ``spec``'s task with inputs and a length ``check_plan`` takes,
    as a plan the route runs (:func:`~engine.planners.choices.runs`)."""
    out, marker = spec.grammar or (CFI, None)
    text = out + (f"{BONF}{n - 1}{EONF}" if n is not None else "")
    if marker is not None:
        text += marker + (f"{content or ''}{_END_OF[marker]}" if marker in _END_OF else "")
    try:
        plan = parse_unison(text, files, prompt=prompt)
        check_plan(plan, limits)
    except (PlannerError, InvalidRequest):
        return False
    return plan.task is spec.task and runs(spec, len(plan.inputs), len(files))


def _marker_part(marker: str | None, contents: list[str | None]) -> str:
    if marker is None:
        return ""
    if marker not in _END_OF:
        return f" {marker}"
    words = [c for c in contents if c]
    inner = (_strings(words) + ("?" if "" in contents else "")) if words else ""
    return f" {marker} {inner} {_END_OF[marker]}".replace("  ", " ")


def _strings(values: Iterable[str]) -> str:
    return "(" + " | ".join(json.dumps(v) for v in values) + ")"


def _int_regex(low: int, high: int) -> str:
    """A regular expression of the whole numbers ``low``..``high`` written without leading zeros."""
    parts = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        a = max(low, 10 ** (digits - 1) if digits > 1 else 0)
        b = min(high, 10**digits - 1)
        if a <= b:
            parts += _same_length(str(a), str(b))
    return "(" + "|".join(parts) + ")"


def _same_length(a: str, b: str) -> list[str]:
    """Patterns for the numbers a..b, both of the same number of digits."""
    if not a:
        return [""]
    rest = len(a) - 1
    if a[0] == b[0]:
        return [a[0] + p for p in _same_length(a[1:], b[1:])]
    if a[1:] == "0" * rest and b[1:] == "9" * rest:
        return [f"[{a[0]}-{b[0]}]" + "[0-9]" * rest]
    parts = [a[0] + p for p in _same_length(a[1:], "9" * rest)]
    if int(b[0]) - int(a[0]) > 1:
        parts.append(f"[{int(a[0]) + 1}-{int(b[0]) - 1}]" + "[0-9]" * rest)
    return parts + [b[0] + p for p in _same_length("0" * rest, b[1:])]


__all__ = ["DEFAULT_VIDEO_FRAMES", "Task", "format_unison", "parse_unison", "unison_grammar"]

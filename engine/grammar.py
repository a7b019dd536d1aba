"""The Unison planner's output grammar: parse it into a :class:`~engine.plan.Plan`, write a plan in it.

The 14 tokens are in :mod:`engine.vocab`, and which tokens select which task is in each task's
row (``TaskSpec.grammar``: the output token ``<CFI>``/``<CFV>`` plus at most one marker token).
This module reads the rows: a task is found by looking its tokens up, never by a chain of tests
on which tokens appear (the shape of the reference, which is how its first/last-frame bug hid).
What stands between a marker's tokens (edit indices, the first/last word) is read by one small
function per marker, in :data:`_MARKERS`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .errors import InvalidRequest, PlannerError, shown
from .plan import BasePlan, MediaInput, Plan
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
    """How a marker token's content becomes the task's inputs (parse) and back (format)."""

    read: Callable[[str | None, Files, bool, int | None, str], list[tuple[int, Role]]]
    write: Callable[[BasePlan, Callable[[MediaInput], int], Files], str]


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


#: Marker tokens in the order they are looked for (the first present one selects the task).
_MARKERS: dict[str, _Marker] = {
    BOFIDX: _Marker(_read_frame_index, _write_frame_index),
    REF: _Marker(_read_reference, _no_content),
    CTRL: _Marker(_read_control, _no_content),
    BOEDIT: _Marker(_read_edit, _write_edit),
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


__all__ = ["DEFAULT_VIDEO_FRAMES", "Task", "format_unison", "parse_unison"]

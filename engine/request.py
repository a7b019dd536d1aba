"""Free-form requests: the ``###path###`` convention, before any planner reads them.

A request is one string; each input file appears inline as ``###path###`` (or is given separately
and appended). :func:`parse_request` numbers the files in order of appearance and replaces each
marker by ``<IMGPAD>``/``<VIDPAD>``: planners see placeholders, never pixels
(``../shared/UNISON.md``, "Input convention").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .vocab import MediaKind, media_kind, placeholder

if TYPE_CHECKING:
    from .plan import BasePlan

MARKER = re.compile(r"###(.+?)###", re.DOTALL)


@dataclass(frozen=True)
class Request:
    """A free-form request with its input files, ready for a planner.

    ``text`` is what the planner reads (markers replaced by ``<IMGPAD>``/``<VIDPAD>``), ``prompt``
    is the same text without placeholders (what the generator is conditioned on), ``media`` are
    the files numbered 0, 1, … in order of appearance.
    """

    text: str
    prompt: str
    media: tuple[tuple[str, MediaKind], ...]

    @property
    def kinds(self) -> tuple[MediaKind, ...]:
        return tuple(k for _, k in self.media)


def parse_request(request: str, media: Sequence[str] = ()) -> Request:
    """Split a request into planner text, clean prompt and numbered inputs.

    ``###path###`` markers are numbered in order of appearance; files given separately in
    ``media`` follow them, and their placeholders are appended to the planner text.
    """
    found: list[tuple[str, MediaKind]] = []

    def pad(match: re.Match) -> str:
        path = match.group(1).strip()
        kind = media_kind(path)
        found.append((path, kind))
        return placeholder(kind)

    text = MARKER.sub(pad, request)
    extra = [(str(p), media_kind(p)) for p in media]
    if extra:
        text = text.rstrip() + " " + "".join(placeholder(k) for _, k in extra)
    found.extend(extra)
    prompt = MARKER.sub(" ", request)
    prompt = re.sub(r"\s+", " ", prompt).strip()
    prompt = re.sub(r"\s+([,.;:!?])", r"\1", prompt)
    return Request(text=text.strip(), prompt=prompt, media=tuple(found))


def request_for_plan(plan: BasePlan) -> Request:
    """The planner-visible request for a typed plan: its prompt plus one placeholder per input."""
    pads = "".join(placeholder(m.kind) for m in plan.inputs)
    text = f"{plan.prompt} {pads}".strip()
    return Request(text=text, prompt=plan.prompt, media=tuple((m.path, m.kind) for m in plan.inputs))

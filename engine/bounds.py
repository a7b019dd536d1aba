"""Every bound a request is held to, derived from the configured :class:`~engine.config.Limits` in
one place, and the frame and size grids every stage shares.

:meth:`Bounds.of` is the one function that turns the limits into bounds. The request models
(:mod:`engine.api`, and so the MCP schemas and the CLI's flags) take their ``ge``/``le``/
``max_length`` from it, and :func:`engine.plan.check_plan` checks the plans of planners (which do
not pass through the request models) against the same :class:`Bound`: a value the schema allows is
a value the check allows, with the same rule in the error.

The grids: Wan makes 4k+1 frames (:func:`round_frames` is the one rounding onto that grid, with its
note), an image is :data:`IMAGE_FRAMES` frame, sizes are multiples of 16 (:func:`round16`); a
video longer than one run is laid out as windows on that grid (:func:`layout`, run by
:class:`engine.windows.Chain`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .config import Limits
from .errors import InvalidRequest

#: An image is one frame: what check_plan gives an image task and what planners write for one.
IMAGE_FRAMES = 1

#: Longest edit ``target`` (a short phrase naming an object; the segmenter reads a few words).
MAX_TARGET_CHARS = 200

#: Most candidates one call makes (``count``).
MAX_COUNT = 4

#: Largest seed (a signed 64-bit integer: what torch's generators take).
MAX_SEED = 2**63 - 1

#: Source frames video_extend keeps as context when a request does not say.
DEFAULT_CONTEXT_FRAMES = 9

#: Frames each window of a chain makes at least (a window may keep the rest as context).
MIN_NEW_FRAMES = 4

#: Slowest frame rate and shortest duration a request may ask for. Inclusive lower bounds: a
#: schema's ``exclusiveMinimum`` is refused by some clients' converters (google-genai's typed schema).
MIN_FPS = 1.0
MIN_DURATION_S = 0.1


def number(value: float | None) -> str:
    """A bound as text: ``60`` for 60.0, ``0.5``, ``4000`` (never ``4e+03``)."""
    if value is None:
        return ""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


@dataclass(frozen=True)
class Bound:
    """A number's range, or a text's or a list's greatest length: the schema's constraint and the
    check's rule at once.

    ``low`` and ``high`` are inclusive (``ge``, ``le``: a schema's ``exclusiveMinimum`` is refused by
    some clients); ``None`` leaves that side open. ``unit`` follows the number in the rule (" pixels"), ``why`` follows
    the rule in parentheses.
    """

    low: float | None = None
    high: float | None = None
    unit: str = ""
    why: str = ""

    def schema(self) -> dict[str, Any]:
        """The pydantic ``Field`` keywords of a number within the bound."""
        out: dict[str, Any] = {}
        if self.low is not None:
            out["ge"] = self.low
        if self.high is not None:
            out["le"] = self.high
        return out

    def lengths(self) -> dict[str, Any]:
        """The pydantic ``Field`` keywords of a text or a list whose length is within the bound."""
        out: dict[str, Any] = {"max_length": self.high}
        if self.low is not None:
            out["min_length"] = self.low
        return out

    @property
    def rule(self) -> str:
        """The rule, as an error states it: ``must be between 1 and 157 (a window is 161 frames)``."""
        low, high = number(self.low), number(self.high)
        if self.low is None:
            text = f"at most {high}{self.unit}"
        elif self.high is None:
            text = f"must be at least {low}{self.unit}"
        else:
            text = f"must be between {low} and {high}{self.unit}"
        return f"{text} ({self.why})" if self.why else text

    def holds(self, value: float) -> bool:
        """Whether ``value`` is within the bound (a NaN never is)."""
        low_ok = self.low is None or value >= self.low
        return low_ok and (self.high is None or value <= self.high)

    def check(self, name: str, value: float, *, shown_as: Any = None) -> None:
        """Raise :class:`InvalidRequest` naming ``name`` when ``value`` is outside the bound
        (``shown_as``: what the error shows instead of the value, e.g. ``"4001 characters"``)."""
        if not self.holds(value):
            raise InvalidRequest.for_field(name, value if shown_as is None else shown_as, self.rule)


@dataclass(frozen=True)
class Bounds:
    """The bounds of every request field that depends on the configured limits (:meth:`of`)."""

    limits: Limits
    #: A prompt's (and a negative prompt's) length.
    prompt: Bound
    #: Input files per request, ###path### markers and media together.
    inputs: Bound
    #: A requested width or height: up to 4× the largest side is taken and scaled down into the limits.
    side: Bound
    #: A requested frame count: up to the longest chain at the default rate (check_plan then holds
    #: each task to its own longest, at the plan's rate).
    num_frames: Bound
    duration_s: Bound
    fps: Bound
    #: video_extend's context: every window of the chain still makes MIN_NEW_FRAMES new frames.
    context_frames: Bound
    target: Bound
    steps: Bound
    count: Bound

    @classmethod
    def of(cls, limits: Limits) -> Bounds:
        """The bounds ``limits`` set (built once per distinct limits)."""
        return _bounds(limits.model_dump_json())

    @property
    def default_fps(self) -> float:
        """The frame rate a video gets when a request gives none (``--fps``)."""
        return self.limits.default_fps

    def longest(self, fps: float) -> int:
        """Most frames a chained video may have: ``max_duration_s`` at ``fps``, on the 4k+1 grid
        (never fewer than one window)."""
        return _longest(self.limits, fps)


def _longest(limits: Limits, fps: float) -> int:
    return max(limits.max_frames, floor_4k1(int(limits.max_duration_s * fps) + 1))


@lru_cache(maxsize=16)
def _bounds(limits_json: str) -> Bounds:
    limits = Limits.model_validate_json(limits_json)
    largest = 4 * limits.max_side
    window = limits.max_frames
    return Bounds(
        limits=limits,
        prompt=Bound(high=limits.max_prompt_chars, unit=" characters"),
        inputs=Bound(high=limits.max_inputs, unit=" input files"),
        side=Bound(
            limits.min_side,
            largest,
            unit=" pixels",
            why=f"sizes up to {largest} are scaled down into the {limits.max_side}-pixel limit",
        ),
        num_frames=Bound(1, _longest(limits, limits.default_fps), unit=" frames"),
        duration_s=Bound(MIN_DURATION_S, limits.max_duration_s, unit=" s"),
        fps=Bound(MIN_FPS, limits.max_fps),
        context_frames=Bound(1, window - MIN_NEW_FRAMES, why=f"a window is {window} frames"),
        target=Bound(high=MAX_TARGET_CHARS, unit=" characters"),
        steps=Bound(1, limits.max_steps),
        count=Bound(1, MAX_COUNT),
    )


# ---------------------------------------------------------------------------------------------
# The grids: 4k+1 frames, multiples of 16 pixels.


def nearest_4k1(n: int) -> int:
    """The nearest frame count of the form 4k+1 (ties go up)."""
    # Integer arithmetic: a request may spell out a count far beyond a float (check_plan then
    # refuses it by name); (n - 1) / 4 would overflow or round.
    return max(1, 4 * ((int(n) + 1) // 4) + 1)


def ceil_4k1(n: int) -> int:
    """The smallest frame count of the form 4k+1 that is at least ``n``."""
    return n + (1 - n) % 4


def floor_4k1(n: int) -> int:
    """The largest frame count of the form 4k+1 that is at most ``n``."""
    return n - (n - 1) % 4


def round_frames(n: int, notes: list[str]) -> int:
    """``n`` on Wan's 4k+1 grid (the nearest count, ties up), noted when it moved: the one rounding
    of a requested frame count, for check_plan and every planner."""
    if n % 4 == 1:
        return n
    rounded = nearest_4k1(n)
    notes.append(f"num_frames {n} rounded to {rounded} (Wan makes 4k+1 frames)")
    return rounded


def frames_for_seconds(seconds: float, fps: float) -> int:
    """`seconds` of video at `fps`: 16·N+1 frames for N seconds at 16 fps. Not normalised:
    :func:`round_frames` puts an off-grid count on the 4k+1 grid with a note, as for any other count.

    Raises :class:`InvalidRequest` for a rate or a duration that is not a finite number (``round``
    of an infinity or a NaN would otherwise escape as a bare OverflowError/ValueError).
    """
    if not (math.isfinite(fps) and fps > 0):
        raise InvalidRequest.for_field("fps", fps, "must be a finite number above 0")
    if not math.isfinite(seconds * fps):
        raise InvalidRequest.for_field("duration_s", seconds, "must be a finite number of seconds")
    return int(round(seconds * fps)) + 1


def round16(value: float) -> int:
    """The nearest multiple of 16, ties up (``round`` would send ties to the even multiple: 1000
    to 992 but 1048 to 1056); never below 16."""
    return max(16, (int(value) + 8) // 16 * 16)


# ---------------------------------------------------------------------------------------------
# The windows of a long video (engine.windows runs them; see its docstring).


@dataclass(frozen=True)
class Window:
    """One generator run of a chain.

    ``context`` frames come from what is made so far (0 for a first window that starts from
    nothing), ``new`` frames are kept from this run, ``total`` (4k+1, at least context + new)
    frames are generated; the ``total - context - new`` extra frames are dropped.
    """

    context: int
    new: int
    total: int

    @property
    def extra(self) -> int:
        return self.total - self.context - self.new


def layout(new_frames: int, *, window: int, overlap: int, first_context: int = 0) -> list[Window]:
    """The windows that make ``new_frames`` frames, each at most ``window`` frames (4k+1).

    ``first_context`` frames exist before the first window (``video_extend``: the source's last
    frames); later windows continue from ``overlap`` frames, fewer when less has been made, and
    always leave at least MIN_NEW_FRAMES of each window new (the bound on ``context_frames``).
    """
    if window % 4 != 1 or window < 5:
        raise ValueError(f"a window must be 4k+1 frames, at least 5 (got {window})")
    if new_frames <= 0:
        return []
    out: list[Window] = []
    made, left = first_context, new_frames
    context = min(first_context, window - MIN_NEW_FRAMES)
    while left > 0:
        new = min(left, window - context)
        out.append(Window(context=context, new=new, total=ceil_4k1(context + new)))
        made += new
        left -= new
        context = min(overlap, made, window - MIN_NEW_FRAMES)
    return out

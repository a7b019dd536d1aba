"""The tools' descriptions, the server's instructions and its guide, written for the calling model.

Every client sends the tool list with each conversation, so a description says only what each tool
needs and gives back; the bounds are in the schema, and what a model needs only sometimes (each
task's rules, the configured limits, the allowed folders, examples) is in the guide, the resource
:data:`GUIDE_URI`, which the descriptions name. Every number is read from the configured limits
(:class:`engine.bounds.Bounds`) and every task from the task table (:func:`engine.tasks.tasks_brief`,
:func:`engine.tasks.tasks_text`), so neither can drift from what the tools accept.
"""

from __future__ import annotations

from engine.bounds import IMAGE_FRAMES, Bounds, number
from engine.inputs import OUTPUT_URI_PREFIX
from engine.tasks import tasks_brief, tasks_text

from .state import ServerState

#: The guide: what the descriptions leave out, read when needed.
GUIDE_URI = "unison://guide"

_FILES = f"absolute local paths, or the {OUTPUT_URI_PREFIX}<name> URI of an earlier result"


def generate_description(state: ServerState) -> str:
    lim = state.engine.config.limits
    return f"""Make or edit an image or video (Wan2.1-VACE). Pick `task`, describe the result in `prompt`, give each input file by its role.
Tasks (input role kind, ? optional → output, +own parameters):
{tasks_brief()}
Files: {_FILES} (generate, then edit or animate it).
Unset size: the source's aspect, else {lim.default_width}×{lim.default_height}; larger sizes are scaled down.
Returns each file's URI, path, size, frames and seed, a preview (a video: a sheet of its frames) and notes on what was adjusted and kept. Still running after {state.config.wait_s:g} s: a job_id for `job`.
Each task's rules, the limits, examples: resource {GUIDE_URI}."""


def understand_description(_state: ServerState) -> str:
    return f"""Answer a question about text, images or a video (Qwen2.5-VL). The question in `prompt`; files in `media` or inline as ###path###: {_FILES}. Returns the answer. Reads files only."""


def auto_description(state: ServerState) -> str:
    return f"""Let the Unison planner choose: from a free-form request it picks the task, size and length, then answers or generates. Files inline as ###/abs/path.png### or in `media`. dry_run=true returns only the plan (it replays through `generate`). Returns the plan, then the answer or the files as `generate` does; after {state.config.wait_s:g} s a job_id for `job`. Use `generate` to choose the task yourself; tasks and rules: resource {GUIDE_URI}."""


JOB_DESCRIPTION = """Follow a job_id a call returned when it outlived its wait. status: where it is; wait: wait again (the result if it finishes in time); result: the result if finished; cancel: stop it (nothing is written)."""

INSTRUCTIONS = f"""unison-mcp runs Unison on this machine: `understand` answers about text, images and videos; `generate` makes or edits images and videos (you pick the task); `auto` lets the Unison planner pick. Inputs are local files or {OUTPUT_URI_PREFIX}<name> URIs of earlier results; results are files. Long jobs return a job_id for `job`. Details: resource {GUIDE_URI}."""


def guide_text(state: ServerState) -> str:
    """The guide (Markdown): each task's rules, the configured limits and folders, examples."""
    lim = state.engine.config.limits
    bounds = Bounds.of(lim)
    sampling = state.engine.config.sampling
    und = state.engine.config.understanding
    return f"""# unison-mcp guide

## Input files
Absolute paths under the allowed folders ({state.engine.inputs.roots_text()}), or the
{OUTPUT_URI_PREFIX}<name> URI of an earlier result: that is how calls chain (generate an image,
edit it, animate it). At most {number(bounds.inputs.high)} files per call. `understand` and `auto`
also take files inline in the prompt as ###/abs/path.png###.

## Tasks (generate; auto also answers questions)
{tasks_text(include_understanding=True)}
A parameter the task does not take is refused, naming the ones it takes; so is an unknown argument.

## Sizes and lengths
- Width/height are rounded to multiples of 16. Unset, tasks on a source keep its aspect at about
  {lim.default_width}×{lim.default_height}'s area; other tasks make {lim.default_width}×{lim.default_height}.
  Larger sizes are scaled down to at most {lim.max_side} a side and {lim.max_pixels} pixels, keeping the aspect.
- Images have {IMAGE_FRAMES} frame. Videos have 4k+1 frames (17, 33, 49, 81...; other counts are
  rounded), or give duration_s (at `fps`, default {bounds.default_fps:g}). Unset: a source video's length
  (edit, outpaint, control; its audio is kept), else {lim.default_frames} frames.
- One run makes up to {lim.max_frames} frames; text_to_video, image_to_video and video_extend make up to
  {lim.max_duration_s:g} s as a chain of windows. video_extend: num_frames/duration_s is the new part;
  the result is the whole clip, plus the new part alone.

## auto
Every file given is used or named in the plan's notes. When the request leaves open something that
changes the result (which file is the mask, what to change, a duration and a frame count that
disagree), the user is asked with a small form if the client supports elicitation; otherwise the
best guess is planned and the plan's notes say so.

## What is kept
The source is pasted back wherever the task keeps it (outside the mask, the given first/last frame,
the outpainted source, the extended clip); preserve=false returns the generator's raw output. The
result's notes say what was kept and what was adjusted.

## Sampling
steps (default {sampling.steps}), guidance, seed (the same seed gives the same result), negative_prompt,
conditioning_scale (strength of the input video/mask conditioning), count (candidates from consecutive
seeds, each its own file). Videos to understand are sampled at {und.video_fps:g} fps, up to
{und.video_max_frames} frames.

## Results
Each file: its {OUTPUT_URI_PREFIX}<name> URI (an input to the next call, or read as a resource), its path
on the server's machine, kind, size, frames, fps, duration and seed; a preview (an image downscaled, a
video's evenly spaced frames on one sheet). A call still running after {state.config.wait_s:g} s returns
{{status: 'running', job_id}}: call `job` with action 'wait' (or 'status', 'result', 'cancel').

## Examples
- generate {{"task": "text_to_image", "prompt": "a red fox in fresh snow"}}
- generate {{"task": "image_edit", "prompt": "a grey wolf", "source": "{OUTPUT_URI_PREFIX}<name>.png", "target": "the fox"}}
- generate {{"task": "image_to_video", "prompt": "the wolf runs off", "first_frame": "{OUTPUT_URI_PREFIX}<name>.png", "duration_s": 3}}
- generate {{"task": "video_extend", "prompt": "it keeps running", "source": "/home/me/clip.mp4", "duration_s": 2}}
- understand {{"prompt": "what happens in this clip?", "media": ["/home/me/clip.mp4"]}}
- auto {{"prompt": "make the cat in ###/home/me/cat.jpg### wave", "dry_run": true}}
"""

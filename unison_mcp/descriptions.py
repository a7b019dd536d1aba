"""The tools' descriptions and the server's instructions, written for the calling model.

Each says what a tool needs, the size and frame rules, and what comes back, with every number read
from the configured limits (:class:`engine.bounds.Bounds`) and every task from the task table
(:func:`engine.tasks.tasks_text`): a description cannot drift from what the tool accepts.
"""

from __future__ import annotations

from engine.bounds import IMAGE_FRAMES, Bounds, number
from engine.inputs import OUTPUT_URI_PREFIX, InputPolicy
from engine.tasks import tasks_text

from .state import ServerState


def inputs_text(policy: InputPolicy) -> str:
    return (
        f"Input files: absolute paths under the allowed roots ({policy.roots_text()}), or the "
        f"{OUTPUT_URI_PREFIX}<name> URI of an earlier result (that is how calls chain: generate an image, "
        "edit it, animate it)."
    )


def generate_description(state: ServerState) -> str:
    lim = state.engine.config.limits
    bounds = Bounds.of(lim)
    count = bounds.count
    return f"""Create an image or a video with Wan2.1-VACE (conditioned by the Unison planner's projector tokens).
Pick `task`, describe the result in `prompt`, and give each input file by its role.

Tasks (output: what it does; inputs by role):
{tasks_text()}
A parameter the task does not take is refused, naming the ones it takes; so is an unknown argument.

{inputs_text(state.engine.inputs)}
Size: width/height in pixels, rounded to multiples of 16. Unset, tasks on a source keep the source's aspect
at about {lim.default_width}×{lim.default_height}'s area (a portrait photo stays portrait); other tasks make
{lim.default_width}×{lim.default_height}. Larger sizes (1080p, 4K) are scaled down to at most {lim.max_side} a side and
{lim.max_pixels} pixels, keeping the aspect (said in the notes).
Frames: images have {IMAGE_FRAMES}. Videos have 4k+1 frames (17, 33, 49, 81...; other counts are rounded), or give
duration_s instead (at `fps`, default {bounds.default_fps:g}). Unset: a source video's length (edit,
outpaint, control; its audio is kept), else {lim.default_frames}. One run makes up to {lim.max_frames} frames;
text_to_video, image_to_video and video_extend make up to {lim.max_duration_s:g} s as a chain of windows.
video_extend: num_frames/duration_s is the new part; the result is the whole clip, plus the new part alone.
Kept: the source is pasted back wherever the task keeps it (outside the mask, the given first/last frame,
the outpainted source, the extended clip); preserve=false returns the generator's raw output.
Candidates: count ({number(count.low)}-{number(count.high)}) makes that many results from consecutive seeds, each its own file.
Sampling: steps (default {state.engine.config.sampling.steps}), guidance, seed (fixed seed = same result),
negative_prompt (default: Wan2.1's), conditioning_scale (strength of the input video/mask conditioning).

Returns: each file as a resource link (unison://outputs/<name>, mime type, size; its seed) with its absolute
path in the structured result, a small JPEG preview (a video's first frame; frames, fps and duration in the
text), the settings used and notes on what was adjusted. A job still running after {state.config.wait_s:g} s returns
{{job_id, status: 'running', progress}} instead: follow it with the `job` tool (action 'wait')."""


def understand_description(state: ServerState) -> str:
    und = state.engine.config.understanding
    return f"""Answer a question about text, images or a video with Qwen2.5-VL (the Unison planner's model).
Give the question in `prompt` and the files in `media` (or inline as ###path### markers in the prompt).
Images and videos both work; a video is sampled at {und.video_fps:g} fps, up to {und.video_max_frames} frames.
{inputs_text(state.engine.inputs)}
Returns the answer as text, and {{answer, model, timings}} as structured content. Reads files only."""


def auto_description(state: ServerState) -> str:
    return f"""Let the Unison planner decide: it reads a free-form request, picks the task, the size and the frame count,
then answers the question or generates the file(s). Mark input files inline as ###/path/to/file.png### (or list
them in `media`; they are numbered in order). Use `generate` instead to choose the task yourself.

Tasks it can choose:
{tasks_text(include_understanding=True)}

{inputs_text(state.engine.inputs)}
Every file given is used or named in the plan's notes; a generation plan that would ignore every file is
planned again by the rules planner, or refused with the `generate` call to make instead. A model plan that
does not parse falls back to the rules planner (the plan's `planner` and notes say so). Sizes, lengths,
what is kept of the sources, long videos and `count` work as in `generate`.
When the request leaves open something that changes the result (which file is the mask, what to change,
a duration and a frame count that disagree), the user is asked with a small form if the client supports
elicitation; otherwise the best guess is planned and the plan's notes say so.
dry_run=true only plans: it returns the plan (task, size, frames, inputs with roles) without running it.
Returns the plan, then the answer (understanding) or the files as `generate` returns them. A job still
running after {state.config.wait_s:g} s returns a job handle for the `job` tool."""


JOB_DESCRIPTION = """Follow a job handle returned by generate/understand/auto when a call outlived its wait.
- status: where the job is (queued with how many ahead, running with progress, done, failed, cancelled).
- wait: wait again (same limit as a call); returns the job's result when it finishes in time, else its status.
- result: the result now if finished (exactly what the original call would have returned), else its status.
- cancel: stop the job (a running job stops at its next step; nothing is written).
Finished jobs are kept for a while, then forgotten."""

INSTRUCTIONS = """unison-mcp runs Unison on this machine: `understand` answers questions about text, images and
videos; `generate` creates or edits images and videos (you choose the task); `auto` lets the Unison planner
choose. Inputs are local files under the allowed roots or unison://outputs/<name> URIs of earlier results;
outputs are files, returned as resource links with a small preview. Long jobs return a job id for `job`."""

"""Engine results as tool results that reach the model in every client.

Clients show a model different parts of a result, so each part stands on its own:

- ``structuredContent`` alone carries what the model needs (Claude Code shows it nothing else):
  each file's ``unison://outputs/<name>`` URI, path, kind, size, frames, duration and seed, the
  notes (what was adjusted, what was kept), the plan (:mod:`unison_mcp.models`);
- ``content`` is for the others: one text with the same facts, then one JPEG preview per file
  (an image downscaled to ``preview_side``; a video's evenly spaced frames on one sheet, so a
  model can judge its motion: :mod:`engine.preview`). Files are named by URI in the text, never as
  ``resource_link`` blocks: LangChain's MCP adapter turns a link into an image or file part with
  that URL, which no model provider can fetch (``unison://``), so the call would fail there.

The previews together stay far below the 1 MB a client takes in one result. In HTTP mode each
file also gets its gallery link (``gallery``: the page's address; the page asks for the token, the
link never holds it). These functions run on the job's worker thread, right after the engine
returns, so a finished job holds exactly what the call returns.
"""

from __future__ import annotations

import base64
import io
import logging
import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

from mcp_types import CallToolResult, ContentBlock, ImageContent, TextContent

from engine.preview import (
    PREVIEW_MAX_BYTES,
    SHEET_WIDTH,
    file_sheet,
    frame_labels,
    image_preview,
    jpeg,
    sheet_indices,
)
from engine.results import AutoResult, GenerateResult, OutputFile, Preview, UnderstandResult

from .models import AutoOutput, GenerateOutput, OutputInfo, UnderstandOutput, plan_json

if TYPE_CHECKING:
    pass

log = logging.getLogger(__name__)

#: What all the previews of one result may weigh together (base64 adds a third): one result of
#: four candidates and their masks still fits the 1,048,576 characters Claude Desktop takes.
PREVIEWS_MAX_BYTES = 600_000


def mime_type(path: Path | str) -> str:
    guessed, _ = mimetypes.guess_type(str(path))
    return guessed or "application/octet-stream"


def _human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "kB", "MB"):
        if size < 1000 or unit == "MB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{n} B"


def gallery_link(gallery: str, name: str) -> str:
    """The gallery address of the output ``name`` (``gallery``: the page's address)."""
    return f"{gallery}#{quote(name)}"


def _describe(out: OutputFile) -> str:
    shape = f"{out.width}×{out.height}"
    if out.num_frames > 1 or out.fps is not None:
        duration = f" = {out.duration_s:.2f} s" if out.duration_s is not None else ""
        fps = f" at {out.fps:g} fps" if out.fps is not None else ""
        shape += f", {out.num_frames} frames{fps}{duration}"
    return f"{out.mime_type}, {shape}, {_human_size(out.size_bytes)}"


# ---------------------------------------------------------------------------------------------
# Previews


def _is_video(out: OutputFile) -> bool:
    return out.mime_type.startswith("video/")


def preview(out: OutputFile, side: int, max_bytes: int = PREVIEW_MAX_BYTES) -> ImageContent | None:
    """A JPEG of the output for the model to look at (``None`` if it cannot be made): an image
    with its longest side at most ``side``; a video's contact sheet, each frame at most ``side``
    wide."""
    from PIL import Image

    path = Path(out.path)
    width = min(SHEET_WIDTH, 3 * side)  # a sheet: three frames a row at most, each within ``side``
    try:
        if out.preview is not None:
            data = _fitted(out.preview, side if not _is_video(out) else width, max_bytes)
        elif _is_video(out):
            data = file_sheet(path, out.num_frames, out.fps, width=width, max_bytes=max_bytes)
        else:
            with Image.open(path) as img:
                img.load()
                data = image_preview(img, side, max_bytes)
    except Exception:
        # A preview is a courtesy: the file and its URI are what matter, so never fail over one.
        log.warning("no preview for %s", path, exc_info=True)
        return None
    return ImageContent(type="image", data=base64.b64encode(data).decode("ascii"), mime_type="image/jpeg")


def _previews(outputs: list[OutputFile], side: int) -> list[ContentBlock]:
    budget = min(PREVIEW_MAX_BYTES, PREVIEWS_MAX_BYTES // max(1, len(outputs)))
    return [image for out in outputs if (image := preview(out, side, budget)) is not None]


# ---------------------------------------------------------------------------------------------
# Results


def _fitted(made: Preview, side: int, max_bytes: int) -> bytes:
    """The engine's preview (made from the frames when the file was written) as it is when it fits
    ``side`` and ``max_bytes``, else decoded and made smaller."""
    from PIL import Image

    if max(made.width, made.height) <= side and len(made.data) <= max_bytes:
        return made.data
    with Image.open(io.BytesIO(made.data)) as img:
        img.load()
        img = img.convert("RGB")
    img.thumbnail((side, side))
    return jpeg(img, max_bytes)


#: How a file that is not the result itself is titled.
_ROLE_TITLES = {
    "new_part": "the new part alone",
    "mask": "the edit region found (white = regenerated)",
    "control": "the extracted control signal",
}


def _preview_text(out: OutputFile) -> str:
    if not _is_video(out):
        return "preview below"
    shown = frame_labels(sheet_indices(out.num_frames), out.fps)
    return f"preview below: frames at {', '.join(shown)}"


def _generation_text(gen: GenerateResult, gallery: str | None) -> str:
    lines = [f"{gen.plan.task.value}: wrote {len(gen.outputs)} file(s)."]
    # One line a file, in a fixed form the viewer reads when a host drops structuredContent
    # (unison_mcp/viewer/app.html): "- <uri> → <path> (<mime>, <W>×<H>[, <N> frames at <fps> fps =
    # <s> s], <size>[, <role>: <title>][, seed <n>]; preview below…)".
    for out in gen.outputs:
        title = _ROLE_TITLES.get(out.role, "an extra file")
        extra = "".join(
            (
                f", {out.role}: {title}" if out.role != "result" else "",
                f", seed {out.seed}" if out.seed is not None and len(gen.outputs) > 1 else "",
            )
        )
        lines.append(
            f"- {OutputInfo.of(out).uri} → {out.path} ({_describe(out)}{extra}; {_preview_text(out)})"
        )
        if gallery:
            lines.append(f"  view in the gallery: {gallery_link(gallery, out.name)}")
    lines.append(
        f"seed {gen.seed}, {gen.steps} steps, guidance {gen.guidance:g}"
        + ("" if gen.projector else ", without projector tokens")
        + "."
    )
    if gen.notes:
        lines.append("Notes: " + "; ".join(gen.notes))
    lines.append("Pass a unison://outputs/ URI as an input to edit or animate the result.")
    return "\n".join(lines)


def _generation_fields(gen: GenerateResult) -> dict:
    return dict(
        plan=plan_json(gen.plan),
        outputs=[OutputInfo.of(o) for o in gen.outputs],
        seed=gen.seed,
        steps=gen.steps,
        guidance=gen.guidance,
        projector=gen.projector,
        timings=gen.timings,
        notes=gen.notes,
        replica=gen.replica,
    )


def _ran_on(replica: str | None) -> str:
    return f"\nRan on pool replica {replica}." if replica else ""


def understand_result(res: UnderstandResult) -> CallToolResult:
    out = UnderstandOutput(answer=res.answer, model=res.model, timings=res.timings, replica=res.replica)
    return CallToolResult(
        content=[TextContent(type="text", text=res.answer + _ran_on(res.replica))],
        structured_content=out.model_dump(mode="json"),
    )


def generate_result(gen: GenerateResult, *, preview_side: int, gallery: str | None = None) -> CallToolResult:
    out = GenerateOutput(**_generation_fields(gen))
    blocks: list[ContentBlock] = [
        TextContent(type="text", text=_generation_text(gen, gallery) + _ran_on(gen.replica))
    ]
    blocks += _previews(gen.outputs, preview_side)
    return CallToolResult(content=blocks, structured_content=out.model_dump(mode="json"))


def auto_result(
    res: AutoResult, *, dry_run: bool, preview_side: int, gallery: str | None = None
) -> CallToolResult:
    plan = res.plan
    head = f"Plan: {plan.task.value}" + (
        f" {plan.width}×{plan.height}, {plan.num_frames} frame(s)" if plan.width is not None else ""
    )
    if plan.inputs:
        head += "; inputs: " + ", ".join(f"{i.role.value}={i.path}" for i in plan.inputs)
    blocks: list[ContentBlock] = []
    fields: dict = {"plan": plan_json(plan), "dry_run": dry_run, "notes": plan.notes or None}
    head += _ran_on(res.replica)
    if res.generation is not None:
        fields.update(_generation_fields(res.generation))
        fields["plan"] = plan_json(plan)
        blocks.append(TextContent(type="text", text=head + "\n" + _generation_text(res.generation, gallery)))
        blocks += _previews(res.generation.outputs, preview_side)
    elif res.answer is not None:
        fields.update(answer=res.answer.answer, model=res.answer.model, timings=res.answer.timings)
        blocks.append(TextContent(type="text", text=res.answer.answer))
        blocks.append(TextContent(type="text", text=head))
    else:
        notes = f"\nNotes: {'; '.join(plan.notes)}" if plan.notes else ""
        blocks.append(TextContent(type="text", text=head + notes + "\n(dry run: nothing was generated)"))
    fields["replica"] = res.replica
    out = AutoOutput(**fields)
    return CallToolResult(content=blocks, structured_content=out.model_dump(mode="json"))

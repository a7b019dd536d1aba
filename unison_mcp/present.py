"""Engine results as tool results: text for the model, resource links, small previews, structure.

Files are never inlined: each output is a ``resource_link`` (``unison://outputs/<name>``, mime
type, size) plus its absolute path in the structured content. The model gets a small preview to
look at: the image downscaled (JPEG, longest side ``preview_side``), or a video's first frame
with its frame count, fps and duration. In HTTP mode each output also gets its gallery link
(``gallery``: the page's address; the page asks for the token, the link never holds it). These
functions run on the job's worker thread, right after the engine returns, so a finished job holds
exactly what the call returns.
"""

from __future__ import annotations

import base64
import io
import logging
import mimetypes
from pathlib import Path
from urllib.parse import quote

from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent

from engine.results import AutoResult, GenerateResult, OutputFile, Preview, UnderstandResult

from .models import AutoOutput, GenerateOutput, OutputInfo, UnderstandOutput

log = logging.getLogger(__name__)

#: A preview above this is re-encoded smaller: clients cap whole results near 1 MB.
PREVIEW_MAX_BYTES = 256 * 1024


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


def _first_frame(path: Path):
    """The first frame of an image or video as a PIL image (PyAV for videos)."""
    from PIL import Image

    if mime_type(path).startswith("video/"):
        import av

        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame.to_image()
        raise ValueError(f"{path} has no video frame")
    with Image.open(path) as img:
        img.load()
        return img.copy()


def preview(path: Path, side: int, made: Preview | None = None) -> ImageContent | None:
    """A small JPEG of the output, or ``None`` if it cannot be made.

    ``made``: the preview the engine made from the frames in memory when it wrote the file (a
    picture scaled down, a video's contact sheet): used as it is, a picture's scaled to ``side``
    if it is larger. Without it (a result from elsewhere), the file is read: a video's first frame.
    """
    if made is not None and (made.frames != [0] or max(made.width, made.height) <= side):
        return ImageContent(
            type="image", data=base64.b64encode(made.data).decode("ascii"), mime_type=made.mime_type
        )
    try:
        img = _picture(made) if made is not None else _first_frame(path).convert("RGB")
        img.thumbnail((side, side))
        for quality in (85, 60, 40):
            buf = io.BytesIO()
            img.save(buf, format="JPEG", quality=quality)
            if buf.tell() <= PREVIEW_MAX_BYTES:
                break
        data = base64.b64encode(buf.getvalue()).decode("ascii")
    except Exception:
        # A preview is a courtesy: the file and its link are what matter, so never fail over one.
        log.warning("no preview for %s", path, exc_info=True)
        return None
    return ImageContent(type="image", data=data, mime_type="image/jpeg")


def _picture(made: Preview):
    """The engine's preview of a picture (a JPEG), decoded."""
    from PIL import Image

    img = Image.open(io.BytesIO(made.data))
    img.load()
    return img.convert("RGB")


#: How a file that is not the result itself is titled.
_ROLE_TITLES = {
    "new_part": "the new part alone",
    "mask": "the edit region found (mask: white = regenerated)",
    "control": "the extracted control signal",
}


def _output_blocks(outputs: list[OutputFile], preview_side: int, gallery: str | None) -> list[ContentBlock]:
    blocks: list[ContentBlock] = []
    for out in outputs:
        kind = "video" if out.mime_type.startswith("video/") else "image"
        info = OutputInfo.of(out)
        what = f"{kind} ({out.width}×{out.height})"
        if out.role != "result":
            what = f"{_ROLE_TITLES.get(out.role, out.role)}, {what}"
        if out.seed is not None and len(outputs) > 1:
            what += f", seed {out.seed}"
        blocks.append(
            ResourceLink(
                type="resource_link",
                uri=info.uri,
                name=out.name,
                title=what,
                description=f"{_describe(out)}; on disk: {out.path}"
                + (f"; view: {gallery_link(gallery, out.name)}" if gallery else ""),
                mime_type=out.mime_type,
                size=out.size_bytes,
            )
        )
        image = preview(Path(out.path), preview_side, out.preview)
        if image is not None:
            blocks.append(image)
    return blocks


# ---------------------------------------------------------------------------------------------
# Results


def _generation_text(gen: GenerateResult, gallery: str | None) -> str:
    lines = [f"{gen.plan.task.value}: wrote {len(gen.outputs)} file(s)."]
    for out in gen.outputs:
        extra = "".join(
            (
                f", {_ROLE_TITLES.get(out.role, out.role)}" if out.role != "result" else "",
                f", seed {out.seed}" if out.seed is not None and len(gen.outputs) > 1 else "",
            )
        )
        lines.append(f"- {OutputInfo.of(out).uri} → {out.path} ({_describe(out)}{extra})")
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
        plan=gen.plan,
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
    blocks += _output_blocks(gen.outputs, preview_side, gallery)
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
    fields: dict = {"plan": plan, "dry_run": dry_run}
    head += _ran_on(res.replica)
    if res.generation is not None:
        fields.update(_generation_fields(res.generation))
        fields["plan"] = plan
        blocks.append(TextContent(type="text", text=head + "\n" + _generation_text(res.generation, gallery)))
        blocks += _output_blocks(res.generation.outputs, preview_side, gallery)
    elif res.answer is not None:
        fields.update(answer=res.answer.answer, model=res.answer.model, timings=res.answer.timings)
        blocks.append(TextContent(type="text", text=res.answer.answer))
        blocks.append(TextContent(type="text", text=head))
    else:
        blocks.append(TextContent(type="text", text=head + "\n(dry run: nothing was generated)"))
    fields["replica"] = res.replica
    out = AutoOutput(**fields)
    return CallToolResult(content=blocks, structured_content=out.model_dump(mode="json"))

"""The viewer's own tools: hidden from the model (``_meta.ui.visibility: ["app"]``), called by the
view through its host.

- ``viewer_mask``: a mask the user painted on an image, stored as an output (a PNG and its sidecar,
  written by :func:`engine.outputs.write_output`, so it gets a generated name the output directory
  serves (:mod:`engine.outdir`), an atomic write and a place in the listing) and returned as its ``unison://outputs/`` URI, ready to be ``image_edit``'s ``mask``.
- ``viewer_run``: a ``generate`` or ``auto`` call that returns its job handle at once instead of
  after the server's ``wait_s``, so the view can show the job's progress and cancel it (``job``).
- ``viewer_jobs``: the unfinished jobs of a call, found by the call's tool and arguments (which
  the host gives the view), so the view of a call still running shows its progress and can cancel
  it before the call returns. A job id is a capability: nothing lists jobs without knowing what
  they were asked to do.

No function here takes a file path: a mask comes as bytes, and what it was painted on is an
output's URI, checked by the server's input policy.
"""

import base64
import binascii
import io
from collections.abc import Awaitable, Mapping
from typing import Annotated, Any, Literal, Protocol

import anyio
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp_types import CallToolResult, InputRequiredResult
from pydantic import BaseModel, Field

from engine.api import parse_arguments
from engine.config import Limits
from engine.errors import InvalidRequest
from engine.inputs import MAX_PATH_CHARS, OUTPUT_URI_PREFIX, InputPolicy, check_output_name, output_uri
from engine.jobs import FINISHED
from engine.outdir import output_type
from engine.outputs import write_output

from ..errors import tool_error
from ..models import JobOutput, Progress
from ..state import ServerState

#: The largest painted mask accepted, as PNG bytes: a two-level mask of a 1080p frame is tens of
#: kilobytes, and its base64 (4/3 larger) must fit in one message (4 MiB, unison_mcp.wire).
MAX_MASK_BYTES = 2 * 1024 * 1024
#: ``png``'s longest value: the base64 of MAX_MASK_BYTES, with room for a ``data:`` URL prefix.
MAX_MASK_CHARS = 4 * (MAX_MASK_BYTES // 3 + 1) + 64
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DATA_URL_PREFIX = "data:image/png;base64,"


class ToolRunner(Protocol):
    """What the viewer's tools need of the server: its state, its engine-tool call with a wait of
    its own (``viewer_run``), and the SDK's ``add_tool`` to register them."""

    state: ServerState

    def run_tool(
        self, name: Any, arguments: Mapping[str, Any], ctx: Context, *, wait_s: float | None = None
    ) -> Awaitable[CallToolResult | InputRequiredResult]: ...

    def add_tool(self, fn: Any, *args: Any, **kwargs: Any) -> None: ...


# ---------------------------------------------------------------------------------------------
# viewer_mask


class StoredMask(BaseModel):
    uri: str = Field(description="unison://outputs/<name>: give it as `mask` to image_edit")
    name: str
    width: int
    height: int
    painted: float = Field(description="the fraction of the pixels marked to change (white)")


def _png_bytes(png: str) -> bytes:
    text = png[len(_DATA_URL_PREFIX) :] if png.startswith(_DATA_URL_PREFIX) else png
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest.for_field(
            "png", png, "must be a PNG in base64 (or a data:image/png URL)"
        ) from None
    if len(data) > MAX_MASK_BYTES:
        raise InvalidRequest.for_field("png", f"{len(data):,} bytes", f"at most {MAX_MASK_BYTES:,} bytes")
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidRequest.for_field("png", png[:40], "is not a PNG image")
    return data


def _painted_on_size(policy: InputPolicy, painted_on: str) -> tuple[int, int] | None:
    """The size of the output the mask was painted on (``None`` for a video: any frame size is
    checked when the edit runs). Read through the output directory's handle
    (:class:`engine.outdir.OutputDir`): only a file this server wrote, by its generated name."""
    from PIL import Image  # heavy: Pillow only when a mask is stored

    if not painted_on.startswith(OUTPUT_URI_PREFIX):
        raise InvalidRequest.for_field("painted_on", painted_on, f"must be a {OUTPUT_URI_PREFIX}<name> URI")
    name = check_output_name(painted_on[len(OUTPUT_URI_PREFIX) :])  # InputRefused: not a plain name
    kind = output_type(name)
    if kind not in ("image/png", "video/mp4"):
        raise InvalidRequest.for_field("painted_on", painted_on, "must name an image or video output")
    f, _ = policy.outputs.open_file(name)  # InputRefused when it is no output of this server
    with f:
        if kind != "image/png":
            return None
        with Image.open(f) as image:  # the header alone: nothing is decoded
            return image.size


def store_mask(policy: InputPolicy, limits: Limits, png: str, painted_on: str | None) -> StoredMask:
    """Check a painted mask and write it to the output directory as a two-level PNG (white =
    regenerate, black = keep: grey levels from the brush's soft edge go to the nearer one)."""
    import numpy as np  # heavy: numpy and Pillow only when a mask is stored
    from PIL import Image

    data = _png_bytes(png)
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size
        if width * height > limits.max_input_pixels:
            raise InvalidRequest.for_field(
                "png", f"{width}×{height}", f"at most {limits.max_input_pixels:,} pixels"
            )
        gray = np.asarray(image.convert("L"))  # (H, W)
    except InvalidRequest:
        raise
    except Exception as exc:  # truncated or corrupt data, a decompression bomb
        raise InvalidRequest.for_field("png", png[:40], f"cannot be read as an image ({exc})") from None
    if painted_on is not None:
        expected = _painted_on_size(policy, painted_on)
        if expected is not None and expected != (width, height):
            raise InvalidRequest.for_field(
                "png",
                f"{width}×{height}",
                f"must be the size of the image it was painted on ({expected[0]}×{expected[1]})",
            )
    white = gray >= 128
    painted = float(white.mean())
    if painted == 0.0:
        raise InvalidRequest.for_field(
            "png", "an all-black mask", "paints nothing: white marks what to change"
        )
    frames = np.repeat((white * 255).astype(np.uint8)[None, :, :, None], 3, axis=3)  # (1, H, W, 3)
    out = write_output(
        frames,
        output_dir=policy.output_dir,
        task="mask",
        fps=None,
        metadata={"output": "mask", "painted_on": painted_on, "made_by": "viewer", "painted": painted},
    )
    return StoredMask(uri=output_uri(out.name), name=out.name, width=width, height=height, painted=painted)


# ---------------------------------------------------------------------------------------------
# viewer_jobs


class OwnJob(BaseModel):
    job_id: str
    kind: str = Field(description="the tool that started it")
    status: str
    progress: Progress
    ahead: int | None = Field(None, description="jobs that run before a queued one")
    created_at: float


class OwnJobs(BaseModel):
    jobs: list[OwnJob] = Field(description="the call's unfinished jobs, newest first")


def call_jobs(state: ServerState, tool: str, arguments: Mapping[str, Any]) -> OwnJobs:
    """The unfinished jobs queued by calls of ``tool`` with these arguments (none when they do not
    parse: such a call queued nothing)."""
    try:
        request = parse_arguments(tool, state.engine.config.limits, arguments)
    except InvalidRequest:
        return OwnJobs(jobs=[])
    found = []
    for job_id in reversed(state.calls.matching(state.calls.digest(tool, request))):
        job = state.queue.get(job_id)
        if job is None or job.status in FINISHED:
            continue
        found.append(
            OwnJob(
                job_id=job.id,
                kind=job.kind,
                status=job.status,
                progress=Progress(**job.progress()),
                ahead=state.queue.position(job) if job.status == "queued" else None,
                created_at=job.created_at,
            )
        )
    return OwnJobs(jobs=found)


# ---------------------------------------------------------------------------------------------
# The tools


def app_tools(server: ToolRunner) -> list[Any]:
    """The viewer's tool functions (typed: their signatures are their schemas)."""
    state = server.state

    async def viewer_mask(
        ctx: Context,
        png: Annotated[
            str,
            Field(
                min_length=1,
                max_length=MAX_MASK_CHARS,
                description="the painted mask as a base64 PNG (a data:image/png URL is fine): white = "
                "the region to change, black = keep",
            ),
        ],
        painted_on: Annotated[
            str | None,
            Field(
                max_length=MAX_PATH_CHARS,
                description="the unison://outputs/ URI of the image it was painted on (then its size must match)",
            ),
        ] = None,
    ) -> StoredMask:
        """Store a mask painted in the viewer as an output PNG and return its URI (for image_edit's `mask`)."""
        limits = state.engine.config.limits
        try:
            return await anyio.to_thread.run_sync(store_mask, state.inputs, limits, png, painted_on)
        except Exception as exc:
            raise tool_error(exc, tool="viewer_mask") from exc

    async def viewer_run(
        ctx: Context,
        tool: Annotated[Literal["generate", "auto"], Field(description="the tool to call")],
        arguments: Annotated[
            dict[str, Any], Field(description="its arguments, exactly as the tool takes them")
        ],
    ) -> Annotated[CallToolResult, JobOutput] | InputRequiredResult:
        """Start a generate or auto call and return its job handle at once (follow it with `job`)."""
        # An auto call's questions for the user (unison_mcp.asking) go back as they are: the host's
        # client asks and makes the same call again with the answers.
        return await server.run_tool(tool, arguments, ctx, wait_s=0.0)

    async def viewer_jobs(
        ctx: Context,
        tool: Annotated[Literal["generate", "auto"], Field(description="the tool the call is to")],
        arguments: Annotated[
            dict[str, Any], Field(description="the call's arguments, as the host gave them")
        ],
    ) -> OwnJobs:
        """The queued or running jobs of a call still in progress, with their progress (to show or cancel)."""
        return call_jobs(state, tool, arguments)

    return [viewer_mask, viewer_run, viewer_jobs]


__all__ = ["MAX_MASK_BYTES", "OwnJobs", "StoredMask", "ToolRunner", "app_tools", "call_jobs", "store_mask"]

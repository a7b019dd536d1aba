"""Chain three unison-mcp calls over stdio: make an image, edit part of it, animate the result.

    python examples/chain.py --preset tiny          # tiny random models: runs on a CPU in seconds
    python examples/chain.py --steps 30             # the real models (a GPU, weights downloaded)

Each call's output comes back as a ``unison://outputs/<name>`` URI, which the next call takes as
its input: text_to_image → image_edit (with a mask this script draws) → image_to_video. The server
is started by the MCP client itself (``python -m unison_mcp serve``), reading only the output
directory and the folder holding the mask.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mcp import Client, StdioServerParameters
from PIL import Image, ImageDraw


def server_params(args: argparse.Namespace, workdir: Path) -> StdioServerParameters:
    command = [sys.executable, "-m", "unison_mcp", "serve"]
    command += ["--output-dir", str(args.output_dir.resolve()), "--allow-root", str(workdir)]
    if args.preset:
        command += ["--preset", args.preset]
    # The client starts the server with a minimal environment; pass on this project's settings.
    env = {k: v for k, v in os.environ.items() if k.startswith(("UNISON_", "HF_"))}
    return StdioServerParameters(command=command[0], args=command[1:], env=env)


async def show_progress(progress: float, total: float | None, message: str | None) -> None:
    sys.stderr.write(f"\r  {message or f'{progress:.0f}/{total or 0:.0f}'}   ")
    sys.stderr.flush()


async def call(client: Client, tool: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """Call a tool and return its structured result, following the job handle of a long call."""
    result = await client.call_tool(tool, arguments, progress_callback=show_progress)
    while True:
        sys.stderr.write("\n")
        if result.is_error:
            text = " ".join(c.text for c in result.content if getattr(c, "type", "") == "text")
            raise SystemExit(f"{tool} failed: {text}")
        data = result.structured_content or {}
        if data.get("status") not in ("queued", "running"):
            return data
        # The call's wait ran out: the job keeps running on the server; wait for it again.
        result = await client.call_tool(
            "job", {"action": "wait", "job_id": data["job_id"]}, progress_callback=show_progress
        )


def draw_mask(path: Path, width: int, height: int) -> Path:
    """White = regenerate: the middle third of the image."""
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rectangle((width // 3, height // 3, 2 * width // 3, 2 * height // 3), fill=255)
    mask.save(path)
    return path


def sampling(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": args.seed}
    if args.steps is not None:
        out["steps"] = args.steps
    return out


async def chain(client: Client, workdir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The three calls; ``workdir`` must be readable by the server (an allowed root)."""
    image = await call(
        client,
        "generate",
        {"task": "text_to_image", "prompt": "a red fox sitting in fresh snow, golden hour", **sampling(args)},
    )
    first = image["outputs"][0]
    print(f"1. text_to_image  -> {first['uri']}  ({first['width']}x{first['height']}, {first['path']})")

    mask = draw_mask(workdir / "mask.png", first["width"], first["height"])
    edited = await call(
        client,
        "generate",
        {
            "task": "image_edit",
            "prompt": "a red fox wearing a green knitted scarf, in fresh snow",
            "source": first["uri"],
            "mask": str(mask),
            **sampling(args),
        },
    )
    second = edited["outputs"][0]
    print(f"2. image_edit     -> {second['uri']}  ({second['path']})")

    video_args = {
        "task": "image_to_video",
        "prompt": "the fox turns its head and the scarf flutters in the wind",
        "first_frame": second["uri"],
        **sampling(args),
    }
    if args.frames is not None:
        video_args["num_frames"] = args.frames
    video = await call(client, "generate", video_args)
    third = video["outputs"][0]
    print(
        f"3. image_to_video -> {third['uri']}  ({third['num_frames']} frames at {third['fps']} fps, "
        f"{third['path']})"
    )
    return [first, second, third]


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="unison-chain-") as tmp:
        workdir = Path(tmp)
        async with Client(server_params(args, workdir)) as client:
            await chain(client, workdir, args)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=["tiny"], help="tiny random models (CPU trial)")
    p.add_argument("--output-dir", type=Path, default=Path("unison-outputs"), help="where the files go")
    p.add_argument("--steps", type=int, help="denoising steps (default: the server's)")
    p.add_argument("--frames", type=int, help="video frames, 4k+1 (default: the server's)")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))

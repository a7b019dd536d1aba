#!/usr/bin/env python
"""What extracting a control signal or a mask costs: each annotator's time per frame at 832×480.

Every annotator of ``engine/annotators/`` (pose, depth, edges, flow, gray, and the segmenter) is
loaded through the engine's own code path with the configured weights, warmed up once, then timed
over a clip of ``--frames`` frames at ``--width``×``--height``. The load time is reported apart.

On a CPU the tiny preset's random weights show the plumbing only (``--preset tiny``, the default
without CUDA); on a GPU with the real weights downloaded (``unison-mcp download``) the numbers are
the ones docs/performance.md quotes.

    python benchmarks/bench_annotators.py [--preset tiny] [--frames 16] [--out FILE]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._common import Table, describe_machine, write_report  # noqa: E402

KINDS = ("gray", "edges", "depth", "pose", "flow", "segment")


def clip(frames: int, width: int, height: int) -> np.ndarray:
    """A moving gradient with a bright square: something for every annotator to find."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        out[t, ..., 0] = (x * 255 // width + 4 * t) % 256
        out[t, ..., 1] = y * 255 // height
        out[t, ..., 2] = 128
        left = (width // 4 + 6 * t) % (width - height // 4)
        out[t, height // 3 : height // 3 + height // 4, left : left + height // 4] = 255
    return out


def main(argv: list[str] | None = None) -> int:
    import torch

    from engine import annotators
    from engine.config import EngineConfig
    from engine.tiny import ensure_tiny

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--preset", choices=("tiny", "none"), default=None, help="tiny: the tiny random weights"
    )
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--phrase", default="square", help="what the segmenter looks for")
    parser.add_argument("--out", type=Path, help="also write the markdown report to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    cuda = torch.cuda.is_available()
    tiny = args.preset == "tiny" or (args.preset is None and not cuda)
    # The annotators load their weights themselves (no engine to build the tiny ones first).
    config = EngineConfig.tiny(ensure_tiny().root) if tiny else EngineConfig(device="cuda" if cuda else "cpu")
    frames = clip(args.frames, args.width, args.height)
    table = Table("annotator", "weights", "load s", "per frame ms", "frames/s", "note")
    for kind in KINDS:
        try:
            annotator = (
                annotators.build_segmenter(config)
                if kind == "segment"
                else annotators.build_control(kind, config)
            )
            if annotator is None:
                table.add(kind, "–", "–", "–", "–", "no segment_model configured")
                continue
            extra = (args.phrase,) if kind == "segment" else ()
            t0 = time.perf_counter()
            annotator.load()
            load_s = time.perf_counter() - t0
            annotator(frames[:2], *extra)  # warm-up (kernels, allocator)
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            annotator(frames, *extra)
            if cuda:
                torch.cuda.synchronize()
            per_frame = (time.perf_counter() - t0) / args.frames
            table.add(kind, annotator.name, load_s, per_frame * 1000, 1 / per_frame, "")
            annotator.unload()
        except Exception as exc:  # a missing or gated model is a row, not the end of the report
            table.add(kind, "–", "–", "–", "–", f"{type(exc).__name__}: {str(exc)[:120]}")
    head = [
        f"# bench_annotators ({'tiny random weights' if tiny else 'configured weights'}, "
        f"{args.frames} frames at {args.width}×{args.height})",
        "",
        *[f"- {line}" for line in describe_machine()],
        f"- command: `python {' '.join(sys.argv)}`",
    ]
    write_report("\n".join(head) + "\n\n" + table.markdown(), args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

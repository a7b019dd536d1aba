#!/usr/bin/env python
"""How the encoder settings were chosen: H.264 presets, CRFs and threads, and PNG levels (CPU).

An 81-frame 832×480 scene (``bench_job.scene``: a panned texture at several scales, a moving
disc; and the same with a little sensor noise) is encoded in memory with each setting, interleaved
run by run; the written file is decoded and compared with its frames (PSNR over all frames and
channels). PNG: one 832×480 frame at each zlib level. The rows marked "in use" are
:data:`engine.media.H264_ENCODERS`' libx264 settings and :data:`engine.media.PNG_COMPRESS_LEVEL`.

    python benchmarks/bench_encode.py [--runs 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, describe_machine, write_report  # noqa: E402
from bench_job import scene  # noqa: E402

#: (preset, CRF, threads): the old setting first, then the candidates.
H264 = (
    ("medium", 18, 0),
    ("faster", 16, 0),
    ("veryfast", 14, 0),
    ("veryfast", 15, 0),
    ("veryfast", 16, 0),
    ("superfast", 15, 0),
    ("veryfast", 15, 1),
)
PNG_LEVELS = (1, 3, 6, 9)


def psnr(data: bytes, frames: Any) -> float:
    import av
    import numpy as np

    total, count = 0.0, 0
    with av.open(io.BytesIO(data)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            diff = frame.to_ndarray(format="rgb24").astype(np.float32) - frames[i]
            total += float((diff * diff).mean())
            count += 1
    return 10 * math.log10(255**2 / (total / count))


def encode(frames: Any, preset: str, crf: int, threads: int) -> bytes:
    from engine.media import VideoEncoder, mp4_bytes

    options = {"preset": preset, "crf": str(crf), "threads": str(threads)}
    return mp4_bytes(frames, 16.0, encoder=VideoEncoder("libx264", options, ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    import numpy as np
    from PIL import Image

    from engine.media import H264_ENCODERS, PNG_COMPRESS_LEVEL

    clean = scene(81)
    noisy = np.clip(clean + np.random.default_rng(1).normal(0, 2.5, clean.shape), 0, 255).astype(np.uint8)
    contents = {"scene": clean, "scene + noise σ 2.5": noisy}
    used = next(e for e in H264_ENCODERS if e.codec == "libx264").options
    times: dict[tuple, list[float]] = {}
    facts: dict[tuple, tuple[float, int]] = {}
    for _ in range(args.runs):
        for name, frames in contents.items():
            for setting in H264:
                t0 = time.perf_counter()
                data = encode(frames, *setting)
                times.setdefault((name, *setting), []).append(time.perf_counter() - t0)
                facts[(name, *setting)] = (psnr(data, frames), len(data))
    table = Table(
        "content", "preset", "CRF", "threads", "median s", "PSNR dB", "size kB", "time vs medium 18", ""
    )
    for name in contents:
        base = statistics.median(times[(name, "medium", 18, 0)])
        for preset, crf, threads in H264:
            key = (name, preset, crf, threads)
            seconds = statistics.median(times[key])
            in_use = used == {"preset": preset, "crf": str(crf), "threads": str(threads)}
            table.add(
                name,
                preset,
                crf,
                "auto" if threads == 0 else threads,
                seconds,
                f"{facts[key][0]:.2f}",
                facts[key][1] // 1000,
                f"{seconds / base:.2f}×",
                "in use" if in_use else ("the old setting" if (preset, crf) == ("medium", 18) else ""),
            )
    frame = Image.fromarray(clean[0])
    png = Table("PNG level", "median ms", "size kB", "")
    for level in PNG_LEVELS:
        spent = []
        for _ in range(args.runs):
            buffer = io.BytesIO()
            t0 = time.perf_counter()
            frame.save(buffer, format="PNG", compress_level=level)
            spent.append(time.perf_counter() - t0)
        png.add(
            level,
            statistics.median(spent) * 1e3,
            len(buffer.getvalue()) // 1000,
            "in use" if level == PNG_COMPRESS_LEVEL else "",
        )
    text = "\n".join(
        [
            "# bench_encode: H.264 and PNG settings (CPU, 81 frames at 832×480)",
            "",
            *[f"- {line}" for line in describe_machine()],
            f"- {args.runs} runs per setting, interleaved; medians",
            "",
            table.markdown(),
            "",
            png.markdown(),
        ]
    )
    write_report(text, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

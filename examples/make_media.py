"""Write the small example media the README's commands use (examples/media/, a few kB in all).

    python examples/make_media.py

The files are committed; this script is how they were made (and remakes them, byte for byte
for the PNGs, when changed). Pictures are drawn, not photographed: a cat-shaped figure on a
sofa, a mask over its head, and a short clip of a ball rolling to the left.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from engine.media import encode_mp4

log = logging.getLogger(__name__)

MEDIA = Path(__file__).resolve().parent / "media"
W, H = 160, 96  # even sides: H.264 needs them


def cat() -> Image.Image:
    img = Image.new("RGB", (W, H), (200, 220, 240))
    d = ImageDraw.Draw(img)
    d.rectangle((10, 55, 150, 90), fill=(120, 60, 50))  # the sofa
    d.ellipse((50, 35, 110, 75), fill=(90, 90, 90))  # body
    d.ellipse((95, 20, 125, 50), fill=(90, 90, 90))  # head
    d.polygon([(98, 25), (102, 10), (108, 24)], fill=(90, 90, 90))  # ears
    d.polygon([(112, 24), (118, 10), (122, 26)], fill=(90, 90, 90))
    return img


def mask() -> Image.Image:
    """White = regenerate: the cat's head (where the README's edit puts a hat)."""
    img = Image.new("L", (W, H), 0)
    ImageDraw.Draw(img).rectangle((90, 4, 130, 52), fill=255)
    return img


def clip(frames: int = 17) -> np.ndarray:
    video = np.zeros((frames, H, W, 3), dtype=np.uint8)  # (F, H, W, 3)
    video[:] = (60, 140, 60)
    ys, xs = np.mgrid[0:H, 0:W]
    for i in range(frames):
        cx = W - 20 - i * (W - 40) // (frames - 1)  # from the right edge to the left
        video[i][(xs - cx) ** 2 + (ys - 60) ** 2 < 12**2] = (230, 200, 40)
    return video


def main() -> None:
    MEDIA.mkdir(exist_ok=True)
    cat().save(MEDIA / "cat.png", optimize=True)
    mask().save(MEDIA / "mask.png", optimize=True)
    encode_mp4(MEDIA / "ball.mp4", clip(), 16.0)
    for path in sorted(MEDIA.iterdir()):
        log.warning("wrote %s (%d bytes)", path, path.stat().st_size)


if __name__ == "__main__":
    logging.basicConfig(format="%(message)s")
    main()

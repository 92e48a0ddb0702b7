"""Small generated face-like images (an oval, eyes, brows, a mouth) for sample raw trees."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def face(rng: np.random.Generator, size: tuple[int, int] = (178, 218)) -> Image.Image:
    """A face-like RGB picture of `size` (width, height); features vary with `rng`."""
    w, h = size
    bg = tuple(int(v) for v in rng.integers(40, 220, 3))
    skin = tuple(int(v) for v in rng.choice([[241, 194, 165], [198, 134, 96], [141, 85, 36], [255, 219, 172]]))
    img = Image.new("RGB", size, bg)
    d = ImageDraw.Draw(img)
    cx, cy = w / 2 + rng.uniform(-w, w) * 0.05, h / 2 + rng.uniform(-h, h) * 0.04
    fw, fh = w * rng.uniform(0.28, 0.36), h * rng.uniform(0.32, 0.40)
    hair = tuple(int(v) for v in rng.integers(0, 120, 3))
    d.ellipse([cx - fw * 1.08, cy - fh * 1.15, cx + fw * 1.08, cy + fh * 0.6], fill=hair)
    d.ellipse([cx - fw, cy - fh, cx + fw, cy + fh], fill=skin)
    for side in (-1, 1):
        ex, ey = cx + side * fw * 0.42, cy - fh * 0.18
        d.ellipse([ex - fw * 0.16, ey - fh * 0.07, ex + fw * 0.16, ey + fh * 0.07], fill=(255, 255, 255))
        d.ellipse([ex - fw * 0.07, ey - fh * 0.06, ex + fw * 0.07, ey + fh * 0.06], fill=(40, 30, 20))
        d.line([ex - fw * 0.2, ey - fh * 0.17, ex + fw * 0.2, ey - fh * 0.2], fill=hair, width=max(2, w // 60))
    smile = rng.uniform(-0.1, 0.25)
    d.arc([cx - fw * 0.4, cy + fh * (0.25 - smile), cx + fw * 0.4, cy + fh * (0.55 + smile)],
          10, 170, fill=(150, 40, 50), width=max(2, w // 45))
    d.polygon([(cx, cy - fh * 0.05), (cx - fw * 0.1, cy + fh * 0.2), (cx + fw * 0.1, cy + fh * 0.2)],
              fill=tuple(max(0, c - 30) for c in skin))
    return img


def save_face(path: Path, rng: np.random.Generator, size: tuple[int, int] = (178, 218)) -> Path:
    """Write a face JPEG (or PNG, by suffix) at `path`, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    face(rng, size).save(path, quality=90) if path.suffix.lower() in (".jpg", ".jpeg") else face(rng, size).save(path)
    return path

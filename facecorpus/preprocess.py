"""The one image preprocessing path: tokenization, generation and evaluation all call it.

any PIL mode -> RGB -> (face box given: crop a square around it with a margin) -> resize to 256x256
-> uint8 HWC. `to_model_input` then maps [0,255] -> [0,1] -> 2x-1 for the VQGAN, and nothing else:
the anchor's training path normalized twice (CLIP mean/std and 2x-1), so its training and inference
images differed. There is no second normalization anywhere in facecorpus.

Tokenization ships the uint8 array between Ray stages (4x smaller than float32) and converts on the
encoder; `preprocess()` is the same two steps for one image.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

if TYPE_CHECKING:
    import torch

# torch is imported where it is used: Ray's read workers only decode and resize, and importing torch
# costs each of them seconds of start-up.

SIZE = 256
MARGIN = 0.25  # of the box's longer side, added on every side: keeps hair, chin and ears in view

# Recorded in index.json; change `name` whenever any rule below changes.
POLICY = {
    "name": "facecorpus-preprocess/1",
    "mode": "RGB (PIL convert; palette, alpha, grey and CMYK all go through it; alpha is dropped)",
    "crop": f"with a face box: square of side (1 + 2*{MARGIN}) * max(box w, h) centred on the box, "
            "the part outside the image filled with black; without a box: the whole image",
    "margin": MARGIN,
    "resize": f"to {SIZE}x{SIZE} ignoring aspect ratio (as the anchor; a face-box crop is already square), "
              "PIL bicubic",
    "size": SIZE,
    "scale": "uint8 / 255 -> [0,1] -> 2x-1 -> [-1,1]; no other normalization",
}


def load_image(path: Path) -> Image.Image:
    """Open and fully decode an image (a truncated or corrupt file fails here, not later)."""
    with Image.open(path) as img:
        img.load()
        return img.copy() if img.mode != "P" else img.convert("RGBA")


def _crop_box(bbox, width: int, height: int) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = (int(v) for v in bbox)
    if not (x0 < x1 and y0 < y1):
        raise ValueError(f"face box {list(bbox)} is not x0 < x1, y0 < y1")
    if x1 <= 0 or y1 <= 0 or x0 >= width or y0 >= height:
        raise ValueError(f"face box {list(bbox)} lies outside the {width}x{height} image")
    side = round(max(x1 - x0, y1 - y0) * (1 + 2 * MARGIN))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    return left, top, left + side, top + side


def preprocess_uint8(img: Image.Image, bbox=None) -> np.ndarray:
    """PIL image (+ optional face box x0,y0,x1,y1) -> (256,256,3) uint8 RGB, by POLICY."""
    img = img.convert("RGB")
    if bbox is not None:
        # PIL's crop pads outside the image with zeros (black), which keeps the face centred.
        img = img.crop(_crop_box(bbox, *img.size))
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return np.array(img, dtype=np.uint8)


def as_tensor(arr: np.ndarray) -> torch.Tensor:
    """A numpy array as a tensor without a copy, read-only ones included (Ray hands out read-only views
    of its object store): only for arrays that the caller copies from and never writes into."""
    import torch

    if arr.flags.writeable:
        return torch.from_numpy(arr)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(arr)


def to_model_input(batch) -> torch.Tensor:
    """uint8 (B,256,256,3) or (256,256,3) array/tensor -> float32 (B,3,256,256) or (3,256,256) in [-1,1]."""
    import torch

    if not isinstance(batch, torch.Tensor):
        batch = as_tensor(np.asarray(batch))
    x = batch
    if x.dtype != torch.uint8:
        raise TypeError(f"to_model_input expects uint8 pixels from preprocess_uint8, got {x.dtype}")
    # .float() makes the one new tensor (never writing into `batch`), then in place: the same float32 operations, in the same order, as x / 255 * 2 - 1.
    return x.movedim(-1, -3).float().div_(255.0).mul_(2).sub_(1)


def preprocess(img: Image.Image, bbox=None) -> torch.Tensor:
    """PIL image (+ optional face box) -> float tensor (3,256,256) in [-1,1], the VQGAN's input."""
    return to_model_input(preprocess_uint8(img, bbox))


def to_pil(x: torch.Tensor) -> Image.Image:
    """A decoded image (3,H,W) in [0,1] -> PIL RGB (what generation saves)."""
    import torch

    arr = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).movedim(0, -1).cpu().numpy()
    return Image.fromarray(arr, "RGB")

"""The one image preprocessing path: tokenization, generation and evaluation all call it.

file -> decode (fully; EXIF orientation applied) -> 8-bit RGB as a viewer shows it -> (face box given:
crop a square around it with a margin) -> resize to the VQGAN's input resolution -> uint8 HWC.
`to_model_input` then maps [0,255] -> [0,1] -> 2x-1 for the VQGAN, and nothing else: Talk2Face's
released training code normalized twice (CLIP mean/std and 2x-1), so its training and inference
images differed. There is no second normalization anywhere in facecorpus.

Decoding aims at the picture a person sees, or an `ImageDecodeError` that says why not: Pillow's
own `convert("RGB")` clips 16-bit grey to white, maps float pixels in [0, 1] to black, drops alpha
(showing whatever colour hides under transparent pixels) and ignores EXIF orientation.

Tokenization ships the uint8 array between Ray stages (4x smaller than float32) and converts on the
encoder; `preprocess()` is the same two steps for one image.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image, ImageOps

if TYPE_CHECKING:
    from pathlib import Path

    import torch

# torch is imported where it is used: Ray's read workers only decode and resize, and importing torch
# costs each of them seconds of start-up.

MARGIN = 0.25  # of the box's longer side, added on every side: keeps hair, chin and ears in view
BACKGROUND = (255, 255, 255)  # under transparent pixels: white, as a page shows them (and img2dataset)

# Recorded in the token cache and index.json; change `name` whenever any rule below changes.
POLICY = {
    "name": "facecorpus-preprocess/2",
    "orientation": "EXIF orientation applied first: the picture as a viewer shows it; face boxes are in "
                   "its coordinates",
    "mode": "to 8-bit RGB: 16-bit grey (I;16, I;16B, I;16L) and 32-bit integer grey (I, values 0..65535) "
            "x 255/65535, float grey (F, values in [0, 1]) x 255, both rounded; 1-bit, grey, palette, "
            "CMYK (Pillow's formula; ICC profiles are not applied), YCbCr and HSV through Pillow; "
            "values out of range, NaN and CIELAB are decode failures",
    "alpha": f"composited over {BACKGROUND} (RGBA, RGBa, LA, La, PA, and palette, grey or RGB images "
             "with a transparent colour)",
    "limit": "images over Pillow's MAX_IMAGE_PIXELS (89,478,485 by default) are decode failures "
             "(decompression bombs)",
    "crop": f"with a face box: square of side (1 + 2*{MARGIN}) * max(box w, h) centred on the box, "
            "the part outside the image filled with black; without a box: the whole image",
    "margin": MARGIN,
    "resize": "to the VQGAN's input resolution (its code grid's `resolution`) ignoring aspect ratio, as "
              "Talk2Face did (a face-box crop is already square), PIL bicubic",
    "scale": "uint8 / 255 -> [0,1] -> 2x-1 -> [-1,1]; no other normalization",
}
# Earlier policies, and what codes made with them lack (old caches and indexes name them).
EARLIER = {
    "facecorpus-preprocess/1": "no EXIF orientation, 16-bit and float images clipped, alpha dropped",
}

_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_ALPHA = ("RGBA", "RGBa", "LA", "La", "PA")
_THROUGH_PILLOW = ("1", "L", "P", "CMYK", "YCbCr", "HSV", "RGBX")


class ImageDecodeError(ValueError):
    """A file that is an image but cannot be turned into the picture a viewer sees; says why."""


def policy_problem(stored: dict | None, current: dict = POLICY) -> str | None:
    """Why codes made with the recorded preprocessing `stored` do not match `current` (None if they
    do): names both policies and, for an earlier one of ours, what changed since. For the token
    cache, index.json and checkpoints made before a policy change."""
    if stored == current:
        return None
    name = (stored or {}).get("name") if isinstance(stored, dict) else None
    change = EARLIER.get(name)
    why = f"an earlier policy ({change})" if change else "another policy"
    return f"preprocessing {name!r}, {why}; this version uses {current['name']!r}"


def load_image(source: Path | BinaryIO) -> Image.Image:
    """Open and fully decode an image file (a truncated or corrupt file fails here, not later) and turn
    it upright and into 8-bit RGB by POLICY. ImageDecodeError: a decompression bomb, or pixels with no
    faithful 8-bit RGB picture; OSError and Pillow's errors: not a readable image."""
    with warnings.catch_warnings():
        # Pillow only warns between MAX_IMAGE_PIXELS and twice that; both are refused here.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(source) as img:
                img.load()
                upright = ImageOps.exif_transpose(img)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise ImageDecodeError(f"decompression bomb refused: {exc}") from None
    return to_rgb(upright)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB as a viewer shows it (POLICY "mode" and "alpha")."""
    mode = img.mode
    if mode == "RGB" and not img.has_transparency_data:
        return img
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return Image.fromarray(_grey8(img), "L").convert("RGB")
    if mode in _ALPHA or img.has_transparency_data:
        rgba = (img.convert("LA") if mode == "La" else img).convert("RGBA")  # Pillow: no La -> RGBA
        background = Image.new("RGBA", img.size, (*BACKGROUND, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _THROUGH_PILLOW:
        return img.convert("RGB")
    raise ImageDecodeError(f"image mode {mode} has no faithful conversion to 8-bit RGB")


def _grey8(img: Image.Image) -> np.ndarray:
    """16-bit, 32-bit integer or float grey -> uint8, scaled by POLICY (never clipped)."""
    a = np.asarray(img)
    if img.mode == "F":
        if not np.isfinite(a).all():
            raise ImageDecodeError("float image holds NaN or infinite pixels")
        lo, hi = float(a.min()), float(a.max())
        if lo < 0 or hi > 1:
            raise ImageDecodeError(f"float pixels span {lo:g}..{hi:g}, not [0, 1]: no faithful 8-bit scale")
        return np.rint(a * 255).astype(np.uint8)
    lo, hi = int(a.min()), int(a.max())
    if lo < 0 or hi > 65535:
        raise ImageDecodeError(f"integer pixels span {lo}..{hi}, not 0..65535: no faithful 8-bit scale")
    # round(v * 255 / 65535) in integers: 65535 -> 255, 257 * g -> g exactly
    return ((a.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


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


def preprocess_uint8(img: Image.Image, bbox=None, *, size: int) -> np.ndarray:
    """PIL image (+ optional face box x0,y0,x1,y1) -> (size, size, 3) uint8 RGB, by POLICY. `size` is
    the VQGAN's input resolution (`vqgan.code_grid.resolution`)."""
    img = to_rgb(img)
    if bbox is not None:
        # PIL's crop pads outside the image with zeros (black), which keeps the face centred.
        img = img.crop(_crop_box(bbox, *img.size))
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.BICUBIC)
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
    """uint8 (B,H,W,3) or (H,W,3) array/tensor -> float32 (B,3,H,W) or (3,H,W) in [-1,1]."""
    import torch

    if not isinstance(batch, torch.Tensor):
        batch = as_tensor(np.asarray(batch))
    x = batch
    if x.dtype != torch.uint8:
        raise TypeError(f"to_model_input expects uint8 pixels from preprocess_uint8, got {x.dtype}")
    # .float() makes the one new tensor (never writing into `batch`), then in place: the same float32 operations, in the same order, as x / 255 * 2 - 1.
    return x.movedim(-1, -3).float().div_(255.0).mul_(2).sub_(1)


def preprocess(img: Image.Image, bbox=None, *, size: int) -> torch.Tensor:
    """PIL image (+ optional face box) -> float tensor (3,size,size) in [-1,1], the VQGAN's input."""
    return to_model_input(preprocess_uint8(img, bbox, size=size))


def to_pil(x: torch.Tensor) -> Image.Image:
    """A decoded image (3,H,W) in [0,1] -> PIL RGB (what generation saves)."""
    import torch

    arr = (x.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).movedim(0, -1).cpu().numpy()
    return Image.fromarray(arr, "RGB")

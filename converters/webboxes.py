"""A web set's face box, from the downloaded picture's frame to the pixels of the image img2dataset stored.

A URL list's box (FaceCaption-15M's, LAION-Face's detections) is in the frame of the picture at the
URL: relative `[x0, y0, x1, y1]` in 0-1 (img2dataset's own `bbox_col` convention) or absolute pixels
of it. img2dataset may resize and pad before storing, and records neither `image_size` nor
`resize_mode`, so the mode is an option and each row's sizes are checked against it:
`original_width`/`original_height` (the decoded picture, EXIF orientation not applied, the frame the
box is in) and `width`/`height` (the stored image, the frame tokenize crops in). Both are needed:
the original size scales the box, and the stored size says how far img2dataset scaled and padded
(`border`: longer side to S = width, then centred white padding; `center_crop`: shorter side to S,
then a centred S x S cut). A stored size equal to the original means nothing was resized
(`resize_mode no`, or `--resize_only_if_bigger` with a small picture), whatever the mode.

The rules are img2dataset 1.47.0's `Resizer` (docs/web-datasets.md): each resized side is
`max(1, round(side * scale))`, the padding before is `int((S - side) / 2)`, the crop offset `(side - S) // 2`.
"""

from __future__ import annotations

import math

MODES = ("no", "keep_ratio", "keep_ratio_largest", "center_crop", "border")
FORMATS = ("relative", "absolute")
EPS = 1e-6  # relative boxes written as floats: 1.0000001 is the picture's edge


class BoxFilter(ValueError):
    """A box this row cannot use (missing, degenerate, outside the picture): a counted filter."""


def read_box(value, fmt: str) -> tuple[float, float, float, float] | None:
    """A row's box column as four finite numbers, or None when null. A value of another shape is the
    row's error (ValueError), not a filter: it means the wrong column or format was named."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(f"face box {value!r} is not a list of four numbers ({fmt} x0, y0, x1, y1)")
    if len(value) != 4:
        raise ValueError(f"face box has {len(value)} values, not four ({fmt} x0, y0, x1, y1)")
    try:
        box = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"face box {list(value)!r} holds a value that is not a number") from None
    return box


def _scaled(ow: int, oh: int, scale: float) -> tuple[int, int]:
    return max(1, round(ow * scale)), max(1, round(oh * scale))


def placement(mode: str, ow: int, oh: int, w: int, h: int) -> tuple[float, float, float, float]:
    """(sx, sy, dx, dy): the stored pixel of original pixel (x, y) is (dx + x*sx, dy + y*sy). ValueError
    when `mode` does not turn an ow x oh picture into a w x h image (the wrong --resize-mode)."""
    if (w, h) == (ow, oh):
        return 1.0, 1.0, 0.0, 0.0
    fits, nw, nh, dx, dy = False, w, h, 0, 0
    if mode in ("keep_ratio", "keep_ratio_largest"):  # the shorter (longer) side becomes S
        pick = min if mode == "keep_ratio" else max
        nw, nh = _scaled(ow, oh, pick(w, h) / pick(ow, oh))
        fits = (nw, nh) == (w, h)
    elif mode == "border" and w == h:  # longer side to S, then centred padding
        nw, nh = _scaled(ow, oh, w / max(ow, oh))
        dx, dy, fits = int((w - nw) / 2), int((h - nh) / 2), nw <= w and nh <= h
    elif mode == "center_crop" and w == h:  # shorter side to S, then a centred S x S cut
        nw, nh = _scaled(ow, oh, w / min(ow, oh))
        dx, dy, fits = -((nw - w) // 2), -((nh - h) // 2), nw >= w and nh >= h
    if not fits:
        raise ValueError(f"stored size {w}x{h} is not what resize_mode {mode} makes of a {ow}x{oh} picture "
                         "(is --resize-mode the one img2dataset ran with?)")
    return nw / ow, nh / oh, float(dx), float(dy)


def to_stored(box: tuple[float, float, float, float], fmt: str, mode: str,
              original: tuple[int, int], stored: tuple[int, int]) -> list[int]:
    """`box` (in `fmt`, in the original picture) as whole pixels of the stored image: the smallest pixel
    box holding it. BoxFilter when it is degenerate or not inside the picture (or cut off by a crop)."""
    (ow, oh), (w, h) = original, stored
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box) or not (x0 < x1 and y0 < y1):
        raise BoxFilter("face box degenerate")
    limit_x, limit_y, tol = (1.0, 1.0, EPS) if fmt == "relative" else (ow, oh, EPS * max(ow, oh))
    if x0 < -tol or y0 < -tol or x1 > limit_x + tol or y1 > limit_y + tol:
        raise BoxFilter("face box outside the picture")
    if fmt == "relative":
        x0, x1, y0, y1 = x0 * ow, x1 * ow, y0 * oh, y1 * oh
    sx, sy, dx, dy = placement(mode, ow, oh, w, h)
    px = [dx + x0 * sx, dy + y0 * sy, dx + x1 * sx, dy + y1 * sy]
    if px[0] < -EPS or px[1] < -EPS or px[2] > w + EPS * w or px[3] > h + EPS * h:
        raise BoxFilter("face box cut off by the center crop")
    out = [max(0, math.floor(px[0] + EPS)), max(0, math.floor(px[1] + EPS)),
           min(w, math.ceil(px[2] - EPS)), min(h, math.ceil(px[3] - EPS))]
    if not (out[0] < out[2] and out[1] < out[3]):
        raise BoxFilter("face box degenerate")
    return out

"""Read the drawn attributes back from a generated face's pixels (the test that faces depict their labels).

Independent of the drawer's randomness: the face is found from its skin (the largest skin-coloured
region; its widest rows give the centre and the half-width `fw`), then each feature is read from the
colours in a window placed in `fw` units (the layout in converters/samples/faces.py's docstring).
Every pixel is classified to the nearest colour among the candidates that can appear in that window,
so JPEG noise and resizing do not matter as long as the palettes stay apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from facecorpus.converters.samples import faces

OTHERS = (faces.EYE_WHITE, faces.PUPIL, faces.LIPS, faces.MOUTH_INSIDE, faces.FRAME)


@dataclass(frozen=True)
class Reading:
    hair: str           # a faces.HAIR colour or "none"
    long_hair: bool
    smiling: bool
    eyeglasses: bool
    beard: bool
    mustache: bool
    hat: bool


def _nearest(pixels: np.ndarray, colours: list) -> np.ndarray:
    """Index of the nearest colour (RGB distance) for each pixel of an (..., 3) array."""
    table = np.asarray(colours, dtype=np.float32)
    p = pixels.astype(np.float32)
    # |p - c|^2 without the |p|^2 term, which is the same for every candidate colour.
    return ((table**2).sum(-1) - 2 * p @ table.T).argmin(-1)


def _everything() -> list:
    shades = [faces._shade(s, faces.NOSE_SHADE) for s in faces.SKIN]
    return [*faces.SKIN, *shades, *faces.HAIR.values(), *faces.BACKGROUND, *faces.HAT, *OTHERS]


def _locate(arr: np.ndarray) -> tuple[float, float, float]:
    """(cx, cy, fw) of the skin region with most pixels in the picture's central part (a face box crop
    can show part of a bigger face behind): its widest rows are the face's middle."""
    colour = _nearest(arr, _everything())
    h, w = colour.shape
    middle = (slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))
    tones = np.bincount(colour[middle].ravel(), minlength=len(faces.SKIN))[:len(faces.SKIN)]
    if tones.max() == 0:
        raise AssertionError("no skin in the picture's middle: not a generated face")
    # The middle face's own skin tone (faces of one picture differ in tone, faces.draw).
    labels, n = ndimage.label(colour == int(tones.argmax()))
    central = labels[middle]
    face = labels == 1 + int(np.argmax(np.bincount(central.ravel(), minlength=n + 1)[1:]))
    rows = np.flatnonzero(face.any(1))
    left = face[rows].argmax(1)
    right = face.shape[1] - 1 - face[rows, ::-1].argmax(1)
    width = right - left + 1
    widest = width >= 0.97 * width.max()
    return float(((left + right) / 2)[widest].mean()), float(rows[widest].mean()), float(width.max() / 2)


def _fraction(arr, at, window, colours, wanted) -> float:
    """Share of the window's pixels (x0, y0, x1, y1 in fw units, both sides when x0 > 0) nearest to `wanted`."""
    cx, cy, fw = at
    x0, y0, x1, y1 = window
    spans = [(x0, x1), (-x1, -x0)] if x0 > 0 else [(x0, x1)]
    picks = []
    for a, b in spans:
        r0, r1 = max(0, round(cy + y0 * fw)), min(arr.shape[0], round(cy + y1 * fw))
        c0, c1 = max(0, round(cx + a * fw)), min(arr.shape[1], round(cx + b * fw))
        picks.append(arr[r0:r1, c0:c1].reshape(-1, 3))
    pixels = np.concatenate(picks)
    if len(pixels) == 0:
        raise AssertionError(f"window {window} lies outside the picture")
    wanted_index = [colours.index(c) for c in wanted]
    return float(np.isin(_nearest(pixels, colours), wanted_index).mean())


def _densest_row(arr, at, window, colours, wanted) -> float:
    """The largest share of `wanted` colours in any one row of the window (a thin band anywhere in it)."""
    cx, cy, fw = at
    x0, y0, x1, y1 = window
    rows = range(round(cy + y0 * fw), round(cy + y1 * fw))
    return max(_fraction(arr, (cx, r, fw), (x0, 0, x1, 1 / fw), colours, wanted) for r in rows)


def _hair(arr, at) -> tuple[str, bool]:
    """Hair colour beside the temples (background there: bald), and whether it reaches below the chin line."""
    colours = [*faces.HAIR.values(), *faces.BACKGROUND]
    names = [*faces.HAIR, *[faces.BALD] * len(faces.BACKGROUND)]
    cx, cy, fw = at
    side = np.concatenate([arr[round(cy - 0.4 * fw):round(cy - 0.1 * fw), round(cx + s * fw):round(cx + t * fw)]
                           .reshape(-1, 3) for s, t in ((1.06, 1.22), (-1.22, -1.06))])
    votes = np.bincount(_nearest(side, colours), minlength=len(colours))
    hair = names[int(votes.argmax())]
    if hair == faces.BALD:
        return hair, False
    long_hair = _fraction(arr, at, (1.06, 0.6, 1.22, 0.9), colours, [faces.HAIR[hair]]) > 0.5
    return hair, long_hair


def _smiling(arr, at) -> bool:
    """Lips whose middle sits lower than their corners."""
    cx, cy, fw = at
    r0, c0 = round(cy + 0.25 * fw), round(cx - 0.45 * fw)
    window = arr[r0:round(cy + 0.8 * fw), c0:round(cx + 0.45 * fw)]
    colours = [*faces.SKIN, *faces.HAIR.values(), faces.LIPS, faces.MOUTH_INSIDE, faces.BALD_BEARD]
    lips = _nearest(window, colours) == colours.index(faces.LIPS)
    ys, xs = np.nonzero(lips)
    if len(xs) == 0:
        raise AssertionError("no lips in the mouth window")
    x = (xs - (cx - c0)) / fw
    if not (np.abs(x) > 0.28).any():  # a round open mouth has no corners
        return False
    middle, corners = ys[np.abs(x) < 0.12].mean(), ys[np.abs(x) > 0.28].mean()
    return bool(middle - corners > 0.05 * fw)


def read(arr: np.ndarray) -> Reading:
    """The labelled features a picture (H, W, 3 uint8) of one generated face shows."""
    at = _locate(arr)
    hair, long_hair = _hair(arr, at)
    face_colours = [*faces.SKIN, *[faces._shade(s, faces.NOSE_SHADE) for s in faces.SKIN], *faces.HAIR.values(),
                    faces.LIPS, faces.EYE_WHITE, faces.PUPIL, faces.FRAME]
    beardish = list(faces.HAIR.values())
    return Reading(
        hair=hair, long_hair=long_hair, smiling=_smiling(arr, at),
        eyeglasses=_fraction(arr, at, (-0.7, -0.4, 0.7, 0.16), face_colours, [faces.FRAME]) > 0.06,
        beard=_fraction(arr, at, (-0.3, 0.75, 0.3, 0.9), face_colours, beardish) > 0.5,
        mustache=_densest_row(arr, at, (-0.18, 0.26, 0.18, 0.42), face_colours, beardish) > 0.6,
        hat=_fraction(arr, at, (-0.5, -1.05, 0.5, -0.85), [*face_colours, *faces.HAT], list(faces.HAT)) > 0.5)


def expected(look: faces.Look) -> Reading:
    return Reading(look.hair, look.long_hair, look.smiling, look.eyeglasses, look.beard, look.mustache, look.hat)

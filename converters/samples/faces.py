"""Generated faces that depict their labels, for the sample raw trees (tests and `facecorpus demo`).

`draw(size, [(look, box)], seed)` is a pure function: the `Look` (what the labels say: hair colour,
long hair, mouth, eyeglasses, beard, moustache, hat) fixes every labelled feature, and `seed` fixes
the nuisance a model must see past: background colour, skin tone, face shape, scale and position,
hat colour and lens shape. The same (look, seed, size, box) always gives the same pixels.

Each sample tree maps its own labels to a `Look` (CelebA's attributes directly; ages to grey hair;
expressions to a mouth; genders to long hair; captions through `look_from_captions`), so a model
trained on the demo can learn face <-> text. Colours come from fixed palettes that stay apart from one
another (tests/facereading.py recovers every labelled feature from the pixels); the layout is in
units of the face's half-width `fw` around the face centre, so features keep their places at any
face shape:

    hat crown  cy - fh - 0.55 fw .. cy - 0.72 fw    brim cy - 0.86 .. -0.68 fw (±1.3 fw wide)
    eyes       cy - 0.12 fw, at cx ± 0.4 fw          glasses: rings of radius 0.24 fw on the eyes
    moustache  cy + 0.27 .. 0.43 fw (±0.3 fw)        mouth centre cy + 0.5 fw (±0.34 fw)
    beard      the face below cy + 0.65 fw, and its jaw (|x - cx| >= 0.6 fw) below cy + 0.3 fw
    hair       behind the head (±1.3 fw) from above its top down to cy + 0.05 fw, or to cy + 1.4 fw when long

Trees of datasets that share an image_id (CelebA-Dialog's 000001..000008 with CelebA's; the three
CelebA-HQ caption sets) each draw their own picture from their own labels; `tokenize` encodes one
picture per image_id (the first record's by key), so those few records describe a picture that was
drawn for another dataset's labels, as real annotations of one photo disagree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

RGB = tuple[int, int, int]

HAIR: dict[str, RGB] = {"black": (30, 25, 25), "blond": (228, 196, 108), "brown": (104, 62, 32),
                        "gray": (212, 212, 212), "red": (196, 82, 36)}
BALD = "none"
BALD_BEARD: RGB = HAIR["brown"]  # a bald head's brows and beard
SKIN: tuple[RGB, ...] = ((244, 204, 178), (226, 170, 134), (194, 136, 100), (168, 114, 84))
BACKGROUND: tuple[RGB, ...] = ((120, 170, 228), (120, 212, 168), (44, 138, 150), (84, 96, 176), (150, 162, 56),
                               (236, 236, 150))
BACKGROUND_JITTER = 10  # each channel, on top of a palette colour
HAT: tuple[RGB, ...] = ((206, 30, 44), (28, 110, 58), (112, 40, 150))
FRAME: RGB = (24, 48, 168)  # eyeglass frames: a colour nothing else near the eyes has
LIPS: RGB = (172, 36, 64)
MOUTH_INSIDE: RGB = (70, 14, 24)
EYE_WHITE: RGB = (250, 250, 250)
PUPIL: RGB = (46, 34, 30)
NOSE_SHADE = 26  # the nose is the skin this much darker
MOUTHS = ("smile", "flat", "frown", "open")
# Expression words of the expression datasets (AffectNet, RAF-DB, ExpW) -> the mouth drawn.
EXPRESSION_MOUTH = {"happy": "smile", "sad": "frown", "anger": "frown", "disgust": "frown", "fear": "open",
                    "surprise": "open", "neutral": "flat", "contempt": "flat"}
OLD_AGE = 60  # from this age on, hair is drawn grey: the age cue of the age datasets


@dataclass(frozen=True)
class Look:
    """What a face shows because its labels say so."""
    hair: str = "brown"        # a HAIR colour, or "none" (bald)
    long_hair: bool = False
    mouth: str = "flat"        # one of MOUTHS
    eyeglasses: bool = False
    beard: bool = False
    mustache: bool = False
    hat: bool = False

    def __post_init__(self):
        if self.hair not in HAIR and self.hair != BALD:
            raise ValueError(f"hair {self.hair!r}: expected one of {sorted(HAIR)} or {BALD!r}")
        if self.mouth not in MOUTHS:
            raise ValueError(f"mouth {self.mouth!r}: expected one of {MOUTHS}")
        if self.long_hair and self.hair == BALD:
            raise ValueError("a bald head has no long hair")

    @property
    def smiling(self) -> bool:
        return self.mouth == "smile"

    @property
    def beard_colour(self) -> RGB:
        return BALD_BEARD if self.hair == BALD else HAIR[self.hair]


# ---------------------------------------------------------------- labels -> look

def some_hair(rng: np.random.Generator, age: float | None = None) -> str:
    """A hair colour for a dataset that does not label it: grey from OLD_AGE on, else black, blond or brown."""
    if age is not None and age >= OLD_AGE:
        return "gray"
    return str(rng.choice(["black", "blond", "brown"]))


def look_for_person(rng: np.random.Generator, age: float | None = None, female: bool | None = None,
                    mouth: str = "flat") -> Look:
    """The look of a record that states an age, a gender or an expression and nothing else drawn:
    grey hair when old, long hair when female; the rest of the face is the seed's."""
    long_hair = bool(rng.random() < 0.5) if female is None else female
    return Look(hair=some_hair(rng, age), long_hair=long_hair, mouth=mouth)


_NEGATED = r"(?:no|without|not wearing|not)\s+(?:\w+\s+)?"


def _says(text: str, pattern: str) -> bool:
    """Whether `text` states `pattern` (a regex) other than as `no ...`/`without ...`."""
    hits = list(re.finditer(rf"\b{pattern}", text))
    return any(not re.search(rf"\b{_NEGATED}$", text[:m.start()]) for m in hits)


def look_from_captions(captions: list[str], rng: np.random.Generator) -> Look:
    """The look that an image's captions describe (all of them together); what they leave open is the seed's."""
    text = " ".join(captions).lower()
    hair = next((name for name, pattern in (("black", r"black hair"), ("blond", r"blonde?"), ("brown", r"brown hair"),
                                            ("gray", r"(?:gr[ae]y|white) hair"), ("red", r"red hair"),
                                            (BALD, r"bald")) if _says(text, pattern)), None)
    if hair is None:
        hair = "gray" if _says(text, r"old\b") else some_hair(rng)
    female = _says(text, r"(?:she|her|woman|lady|girl)\b")
    long_hair = hair != BALD and (_says(text, r"long(?: [\w,]+){0,2} hair")
                                   or (female and not _says(text, r"short(?: [\w,]+){0,2} hair")))
    mouth = "smile" if _says(text, r"(?:smil|laugh|grin)") else "open" if _says(text, r"mouth \w* ?open") else "flat"
    return Look(hair=hair, long_hair=long_hair, mouth=mouth, eyeglasses=_says(text, r"(?:eye|sun)?glasses"),
                beard=_says(text, r"(?:beard|goatee)"), mustache=_says(text, r"mou?stache"), hat=_says(text, r"hats?\b"))


# ---------------------------------------------------------------- drawing

@dataclass(frozen=True)
class _Frame:
    """Where one face sits: centre, half-width `fw`, half-height `fh`."""
    cx: float
    cy: float
    fw: float
    fh: float

    def box(self, x0: float, y0: float, x1: float, y1: float) -> list[float]:
        """A rectangle given in face units (x relative to cx, y relative to cy, both times fw)."""
        return [self.cx + x0 * self.fw, self.cy + y0 * self.fw, self.cx + x1 * self.fw, self.cy + y1 * self.fw]


def _place(rng: np.random.Generator, size: tuple[int, int], box) -> _Frame:
    """Scale and position jitter: inside the face box when there is one, else around the picture's centre."""
    w, h = size
    if box is not None:
        x0, y0, x1, y1 = box
        bw = max(x1 - x0, y1 - y0)
        fw = bw * rng.uniform(0.38, 0.44)
        cx = (x0 + x1) / 2 + rng.uniform(-0.03, 0.03) * bw
        cy = (y0 + y1) / 2 + 0.1 * fw + rng.uniform(-0.03, 0.03) * bw
    else:
        # The face spans about 3.3 fw from hat top to long-hair ends; this keeps it in the picture.
        fw = min(w * rng.uniform(0.25, 0.31), h * rng.uniform(0.25, 0.28))
        cx = w / 2 + rng.uniform(-0.05, 0.05) * w
        cy = h / 2 + 0.2 * fw + rng.uniform(-0.04, 0.04) * h
    return _Frame(cx, cy, fw, fw * rng.uniform(1.15, 1.35))


def _shade(colour: RGB, by: int) -> RGB:
    return tuple(max(0, c - by) for c in colour)


def _hair(d: ImageDraw.ImageDraw, f: _Frame, look: Look) -> None:
    if look.hair == BALD:
        return
    bottom = 1.4 if look.long_hair else 0.05
    top = -(f.fh / f.fw) - 0.28
    d.rounded_rectangle(f.box(-1.3, top, 1.3, bottom), radius=0.9 * f.fw, fill=HAIR[look.hair],
                        corners=(True, True, look.long_hair, look.long_hair))


def _beard(img: Image.Image, f: _Frame, look: Look) -> None:
    """The face's lower part (below the mouth) and its jaw, in the beard colour."""
    mask = Image.new("L", img.size, 0)
    m = ImageDraw.Draw(mask)
    m.ellipse([f.cx - f.fw, f.cy - f.fh, f.cx + f.fw, f.cy + f.fh], fill=255)
    m.rectangle([0, 0, img.size[0], f.cy + 0.3 * f.fw], fill=0)
    m.rectangle(f.box(-0.6, 0.3, 0.6, 0.65), fill=0)
    img.paste(look.beard_colour, mask=mask)


def _eyes(d: ImageDraw.ImageDraw, f: _Frame, look: Look, rng: np.random.Generator) -> None:
    brow = look.beard_colour
    width = max(2, round(0.08 * f.fw))
    round_lenses = bool(rng.random() < 0.5)
    for side in (-1, 1):
        ex = side * 0.4
        d.ellipse(f.box(ex - 0.17, -0.2, ex + 0.17, -0.04), fill=EYE_WHITE)
        d.ellipse(f.box(ex - 0.07, -0.19, ex + 0.07, -0.05), fill=PUPIL)
        d.line(f.box(ex - 0.2, -0.3, ex + 0.2, -0.33), fill=brow, width=width)
        if look.eyeglasses:
            lens = f.box(ex - 0.24, -0.36, ex + 0.24, 0.12)
            (d.ellipse if round_lenses else d.rectangle)(lens, outline=FRAME, width=width)
    if look.eyeglasses:
        d.line(f.box(-0.16, -0.14, 0.16, -0.14), fill=FRAME, width=width)


def _mouth(d: ImageDraw.ImageDraw, f: _Frame, look: Look) -> None:
    width = max(2, round(0.09 * f.fw))
    if look.mustache:
        d.polygon([(f.cx + x * f.fw, f.cy + y * f.fw) for x, y in
                   ((-0.34, 0.43), (-0.22, 0.27), (0.22, 0.27), (0.34, 0.43))], fill=look.beard_colour)
    if look.mouth == "smile":  # corners up: the lower half of an ellipse
        d.arc(f.box(-0.34, 0.26, 0.34, 0.66), 0, 180, fill=LIPS, width=width)
    elif look.mouth == "frown":  # corners down: the upper half
        d.arc(f.box(-0.34, 0.5, 0.34, 0.7), 180, 360, fill=LIPS, width=width)
    elif look.mouth == "open":
        d.ellipse(f.box(-0.14, 0.44, 0.14, 0.68), fill=MOUTH_INSIDE, outline=LIPS, width=width)
    else:
        d.line(f.box(-0.34, 0.5, 0.34, 0.5), fill=LIPS, width=width)


def _hat(d: ImageDraw.ImageDraw, f: _Frame, rng: np.random.Generator) -> None:
    colour = HAT[int(rng.integers(len(HAT)))]
    d.rounded_rectangle(f.box(-0.95, -(f.fh / f.fw) - 0.55, 0.95, -0.72), radius=0.3 * f.fw, fill=colour,
                        corners=(True, True, False, False))
    d.rectangle(f.box(-1.3, -0.86, 1.3, -0.68), fill=colour)


def _face(img: Image.Image, look: Look, f: _Frame, skin: RGB, rng: np.random.Generator) -> None:
    d = ImageDraw.Draw(img)
    _hair(d, f, look)
    d.ellipse([f.cx - f.fw, f.cy - f.fh, f.cx + f.fw, f.cy + f.fh], fill=skin)
    if look.beard:
        _beard(img, f, look)
    d.polygon([(f.cx, f.cy - 0.05 * f.fw), (f.cx - 0.1 * f.fw, f.cy + 0.24 * f.fw),
               (f.cx + 0.1 * f.fw, f.cy + 0.24 * f.fw)], fill=_shade(skin, NOSE_SHADE))
    _eyes(d, f, look, rng)
    _mouth(d, f, look)
    if look.hat:
        _hat(d, f, rng)


def draw(size: tuple[int, int], faces: list[tuple[Look, tuple | None]], seed: int) -> Image.Image:
    """An RGB picture of `size` (width, height) with one face per (look, face box or None), over a
    background; a pure function of its arguments."""
    rng = np.random.default_rng(seed)
    base = np.array(BACKGROUND[int(rng.integers(len(BACKGROUND)))])
    bg = tuple(int(v) for v in np.clip(base + rng.integers(-BACKGROUND_JITTER, BACKGROUND_JITTER + 1, 3), 0, 255))
    img = Image.new("RGB", size, bg)
    # Faces of one picture get different skin tones, so two that overlap stay two regions.
    tones = rng.permutation(len(SKIN))
    for k, (look, box) in enumerate(faces):
        _face(img, look, _place(rng, size, box), SKIN[tones[k % len(SKIN)]], rng)
    return img


def face(look: Look, seed: int, size: tuple[int, int] = (178, 218), box=None) -> Image.Image:
    """One face, filling the picture or its face `box` (x0, y0, x1, y1)."""
    return draw(size, [(look, box)], seed)


def save(path: Path, img: Image.Image) -> Path:
    """Write a picture as JPEG (quality 90, full-resolution colour: thin features keep their hue) or PNG, by suffix, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, quality=90, subsampling=0) if path.suffix.lower() in (".jpg", ".jpeg") else img.save(path)
    return path


def save_face(path: Path, look: Look, rng: np.random.Generator, size: tuple[int, int] = (178, 218),
              box=None) -> Path:
    """Draw `look` with the next seed of the tree's `rng` and write it at `path`."""
    return save(path, face(look, int(rng.integers(2**32)), size, box))

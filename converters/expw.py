"""ExpW (Zhang et al., 2016): in-the-wild pictures, several labelled faces each; one record per face row.

Quirks (docs/datasets.md, ExpW):
- `label/label.lst`: `image_name face_id_in_image top left right bottom confidence expression`, single
  spaces, LF, no header. The box order is top, LEFT, RIGHT, bottom: bbox = [left, top, right, bottom].
- One picture can hold several faces (face_id 0, 1, ...). The face crop is what gets tokenized, so each
  face is its own image_id (`expw/<stem>-<face_id>`); photo_id is the picture, so the seeded split keeps
  all faces of one picture together. There is no official split.
- The name's prefix is the search keyword, not the label (`awe_people_262.jpg` is labelled fear).
- Codes (readme): 0 angry, 1 disgust, 2 fear, 3 happy, 4 sad, 5 surprise, 6 neutral.
- The confidence is an unbounded detector score: checked to be a number, kept out of the text.
- Images: `image/origin/<name>`; the raw root may also be the `ExpW/` folder holding `data/`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters.base import BadRow, Context, Failure, Filtered, find, guard, image_path, lines
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes, local_id

NAME = "expw"
DOWNLOAD = "https://mmlab.ie.cuhk.edu.hk/projects/socialrelation/index.html"
LABEL_FILES = ("label/label.lst", "data/label/label.lst")
IMAGES = "image/origin/"  # beside label/, i.e. under the same prefix as the label file's folder
FIELDS = ("image_name", "face_id_in_image", "face_box_top", "face_box_left", "face_box_right", "face_box_bottom",
          "face_box_cofidence", "expression_label")  # "cofidence": the readme's spelling

EXPRESSION = {0: "anger", 1: "disgust", 2: "fear", 3: "happy", 4: "sad", 5: "surprise", 6: "neutral"}


def integer(text: str, field: str) -> int:
    if not text.lstrip("-").isdigit():
        raise BadRow(f"{field} {quote(text)} is not an integer")
    return int(text)


def build(raw: Path, prefix: str, line: str, seen: set[tuple[str, int]]) -> Record:
    parts = line.split()
    if len(parts) != len(FIELDS):
        raise BadRow(f"expected {len(FIELDS)} space-separated fields ({' '.join(FIELDS)}), got {len(parts)} "
                     "(a truncated line?)")
    name, face = parts[0], integer(parts[1], "face_id_in_image")
    top, left, right, bottom = (integer(t, f) for t, f in zip(parts[2:6], FIELDS[2:6]))
    try:
        score = float(parts[6])
    except ValueError:
        raise BadRow(f"face_box_cofidence {quote(parts[6])} is not a number") from None
    code = integer(parts[7], "expression_label")
    if code not in EXPRESSION or math.isnan(score):
        raise BadRow(f"expression_label {code} is not one of the codes 0-6" if code not in EXPRESSION
                     else "face_box_cofidence is NaN")
    if not (0 <= left < right and 0 <= top < bottom):
        raise BadRow(f"box top={top} left={left} right={right} bottom={bottom} is empty or negative")
    if (name, face) in seen:
        raise BadRow(f"face {face} of {name} is listed twice")
    seen.add((name, face))
    stem = local_id(name.rsplit(".", 1)[0])
    return attributes(NAME, f"{stem}-{face}", image_path(raw, prefix + IMAGES + name),
                      {"expression": EXPRESSION[code]}, image_id=f"{NAME}/{stem}-{face}",
                      photo_id=f"{NAME}/{stem}", bbox=[left, top, right, bottom])


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    path = find(raw, LABEL_FILES, DOWNLOAD)
    prefix = path.relative_to(raw).as_posix().removesuffix("label/label.lst")  # "" or "data/"
    seen: set[tuple[str, int]] = set()
    for where, line in lines(path, raw, DOWNLOAD):
        yield guard(where, lambda: build(raw, prefix, line, seen), line)

"""AffectNet (Mollahosseini et al., 2017), manually annotated part: one record per CSV row with a face.

Quirks (docs/datasets.md, AffectNet):
- `Manually_Annotated_file_lists/training.csv` and `validation.csv`, comma-separated, no quoting, header
  `subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal`.
  There is no public test set: validation.csv is the held-out evaluation set, so it maps to `test`.
- The landmark field is 136 numbers joined by `;` inside the comma CSV: lines split on `,` only.
- The box is x, y, width, height in the original image: bbox = [x, y, x + w, y + h].
- Expression codes 0-7 are expressions; 8 none, 9 uncertain and 10 non-face are not, and are dropped by a
  declared filter, counted by reason.
- Valence/arousal lie in [-1, 1]; -2 is the "no value" sentinel (given for uncertain / non-face rows).
  A sentinel on an expression row leaves both out of the text (counted in a note), never `-2`.
- The files hold ~415k rows of ~1 KB: they are streamed line by line, not read whole. An empty file, or
  one with only the header, is refused naming it.
- Images: `Manually_Annotated_Images/<subDirectory_filePath>`, extensions vary (.jpg/.JPG/.png/.jpeg).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters.base import (
    BadRow,
    Context,
    Failure,
    Filtered,
    RawFormatError,
    Where,
    guard,
    image_path,
    table_rows,
)
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes, local_id

NAME = "affectnet"
DOWNLOAD = "http://mohammadmahoor.com/affectnet/"
LISTS = "Manually_Annotated_file_lists/"  # the raw root holds this folder, or its two CSVs directly
SPLIT_FILES = {"training.csv": "train", "validation.csv": "test"}
IMAGES = "Manually_Annotated_Images/"
HEADER = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
FIELDS = HEADER.split(",")
LANDMARKS = 136

EXPRESSION = {0: "neutral", 1: "happy", 2: "sad", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
              7: "contempt"}
NOT_EXPRESSION = {8: "expression none (code 8)", 9: "expression uncertain (code 9)", 10: "non-face (code 10)"}
SENTINEL = -2.0
DECIMAL = re.compile(r"-?\d+\.\d+")


def number(text: str, field: str, kind=int):
    try:
        return kind(text)
    except ValueError:
        raise BadRow(f"{field} {quote(text)} is not {'an integer' if kind is int else 'a number'}") from None


def affect(text: str, field: str) -> str | None:
    """Valence/arousal as written (`-0.65331`), None for the -2 sentinel; out of [-1, 1] is an error."""
    value = number(text, field, float)
    if value == SENTINEL:
        return None
    if not -1.0 <= value <= 1.0:
        raise BadRow(f"{field} {text} is outside [-1, 1] and not the -2 sentinel")
    return text if DECIMAL.fullmatch(text) else f"{value:.6f}"  # `1` would read back as an int


def build(raw: Path, where: Where, line: str, split: str, seen: set[str], sentinels: Counter) -> Record | Filtered:
    parts = line.split(",")
    if len(parts) != len(FIELDS):
        raise BadRow(f"expected {len(FIELDS)} comma-separated fields, got {len(parts)} (a truncated line?)")
    rel, x, y, w, h, marks, code, valence, arousal = parts
    code = number(code, "expression")
    if code in NOT_EXPRESSION:
        return Filtered(where, NOT_EXPRESSION[code])
    if code not in EXPRESSION:
        raise BadRow(f"expression code {code} is not one of 0-10")
    x, y, w, h = (number(v, f) for v, f in zip((x, y, w, h), FIELDS[1:5]))
    if x < 0 or y < 0 or w <= 0 or h <= 0:
        raise BadRow(f"face box x={x} y={y} w={w} h={h} is empty or negative")
    if marks.count(";") != LANDMARKS - 1:
        raise BadRow(f"facial_landmarks has {marks.count(';') + 1} numbers, expected {LANDMARKS}")
    image = image_path(raw, IMAGES + rel)
    labels = {"expression": EXPRESSION[code]}
    v, a = affect(valence, "valence"), affect(arousal, "arousal")
    if v is None or a is None:
        sentinels[EXPRESSION[code]] += 1
    else:
        labels.update(valence=v, arousal=a)
    local = local_id(rel.rsplit(".", 1)[0])
    if local in seen:
        raise BadRow(f"image {rel} is listed twice (or shares its id {local} with an earlier row)")
    seen.add(local)
    return attributes(NAME, local, image, labels, image_id=f"{NAME}/{local}", bbox=[x, y, x + w, y + h],
                      source_split=split)


def label_files(raw: Path, ctx: Context) -> list[tuple[Path, str]]:
    folder = raw / LISTS if (raw / LISTS).is_dir() else raw
    found = [(folder / name, split) for name, split in SPLIT_FILES.items() if (folder / name).is_file()]
    if not found:
        raise RawFormatError(f"{LISTS}training.csv and validation.csv", f"missing under {raw}", DOWNLOAD)
    for name in SPLIT_FILES:
        if not (folder / name).is_file():
            ctx.note(f"{name} is absent: only {', '.join(p.name for p, _ in found)} converted")
    return found


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    seen: set[str] = set()
    for path, split in label_files(raw, ctx):
        sentinels: Counter = Counter()
        for where, line in table_rows(path, raw, DOWNLOAD, HEADER.__eq__, repr(HEADER)):
            yield guard(where, lambda: build(raw, where, line, split, seen, sentinels), line)
        if sentinels:
            ctx.note(f"{path.name}: {sum(sentinels.values()):,} expression rows with the -2 valence/arousal "
                     f"sentinel, written without valence/arousal ({dict(sentinels)})")

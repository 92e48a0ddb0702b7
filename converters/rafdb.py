"""RAF-DB basic (Li et al., 2017): 15,339 faces, one basic expression each; one record per label line.

Quirks (docs/datasets.md, RAF-DB):
- `basic/EmoLabel/list_patition_label.txt` ("patition" is the official spelling): `<name> <label>`, one
  space, LF, no newline after the last line. Names are `train_NNNNN.jpg` (5 digits) and `test_NNNN.jpg`
  (4 digits); the prefix is the official split (no validation split). Names are never rebuilt from ints.
- Labels are 1-based, in RAF-DB's own order: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness,
  6 Anger, 7 Neutral.
- The compound subset ships a file with the SAME name (train names with 4 digits, labels 1-11): it is
  refused as a whole when its first row gives it away, and row by row otherwise.
- Images: the aligned crops `basic/Image/aligned/<stem>_aligned.jpg` (100x100); no box (the
  `Annotation/boundingbox` files are for the original images and were never seen).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters.base import (
    BadRow,
    Context,
    Failure,
    Filtered,
    RawFormatError,
    find,
    guard,
    image_path,
    lines,
)
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes

NAME = "rafdb"
DOWNLOAD = "http://www.whdeng.cn/RAF/model1.html"
# The raw root is the RAF-DB download (holding basic/) or its basic/ folder itself.
LABEL_FILES = ("basic/EmoLabel/list_patition_label.txt", "EmoLabel/list_patition_label.txt")
ALIGNED = "Image/aligned/{stem}_aligned.jpg"  # relative to the folder holding EmoLabel/
NAME_RE = re.compile(r"(?P<train>train)_\d{5}\.jpg|test_\d{4}\.jpg")
COMPOUND_RE = re.compile(r"(train_\d{4}|test_\d{3})\.jpg")

# RAF-DB's label order (1-based) -> the corpus' expression words.
EXPRESSION = {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger", 7: "neutral"}


def build(raw: Path, base: str, line: str, seen: set[str]) -> Record:
    name, sep, label = line.strip().partition(" ")
    if not sep or not label.isdigit():
        raise BadRow(f"expected '<name> <label 1-7>', got {quote(line.strip())} (a truncated line?)")
    m = NAME_RE.fullmatch(name)
    if not m:
        raise BadRow(f"{quote(name)} is not train_NNNNN.jpg or test_NNNN.jpg (a compound-subset name?)")
    if int(label) not in EXPRESSION:
        raise BadRow(f"label {label} is not a basic expression code 1-7 (compound labels go up to 11)")
    stem = name[: -len(".jpg")]
    if stem in seen:
        raise BadRow(f"{name} is listed twice")
    seen.add(stem)
    image = image_path(raw, base + ALIGNED.format(stem=stem))
    return attributes(NAME, stem, image, {"expression": EXPRESSION[int(label)]}, image_id=f"{NAME}/{stem}",
                      source_split="train" if m["train"] else "test")


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    path = find(raw, LABEL_FILES, DOWNLOAD)
    seen: set[str] = set()
    base = path.relative_to(raw).as_posix().removesuffix("EmoLabel/list_patition_label.txt")  # "basic/" or ""
    for n, (where, line) in enumerate(lines(path, raw, DOWNLOAD)):
        if n == 0 and COMPOUND_RE.match(line):
            raise RawFormatError(where, f"first row {quote(line.strip())} names a compound-subset image: this is the "
                                 "compound list_patition_label.txt, not the basic one", DOWNLOAD)
        yield guard(where, lambda: build(raw, base, line, seen), line)

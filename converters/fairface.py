"""FairFace (Kärkkäinen & Joo, 2021): 97,698 face chips with age bin, gender and race; one record per row.

Quirks (docs/datasets.md, FairFace):
- `fairface_label_train.csv` (86,744 rows) and `fairface_label_val.csv` (10,954 rows), comma-separated,
  LF, no quoting, header `file,age,gender,race,service_test`. No test set was released: val is the
  held-out evaluation set, so it maps to `test`.
- Public copies went through Excel: `3-9` became `9-Mar` or `03-Sep`, `10-19` became `19-Oct` or
  `Oct-19`, `True` became `TRUE`, LF became CRLF. A mangled bin is read back as its two numbers (day or
  year, and month number) and repaired to the one bin made of those two numbers (counted in a note); a
  value matching no bin is an error naming file and line, never a guess.
- Age is a bin, kept as the dataset writes it (`10-19`, `more than 70`). `Latino_Hispanic` becomes
  `latino hispanic`, `East Asian` `east asian`.
- `service_test` (undocumented; presumably the subset used to test commercial APIs) is metadata, not a
  face attribute: checked to be a boolean, kept out of the text.
- Some copies rename `file` to `file_name` or prefix paths with `fairface/`; both are accepted. Images
  are `train/<n>.jpg` and `val/<n>.jpg` relative to the unzipped image archive, i.e. the raw root.
- No box: the images are dlib face chips.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters.base import BadRow, Context, Failure, Filtered, guard, image_path, require, table_rows
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes, local_id
from facecorpus.textproto import attribute_name

NAME = "fairface"
DOWNLOAD = "https://github.com/joojs/fairface"
SPLIT_FILES = {"fairface_label_train.csv": "train", "fairface_label_val.csv": "test"}
FOLDERS = {"train": "train", "test": "val"}  # image folder of each file's rows
HEADERS = ("file,age,gender,race,service_test", "file_name,age,gender,race,service_test")
PATH_RE = re.compile(r"(?:fairface/)?(?P<path>(?:train|val)/\d+\.jpg)")

AGES = ("0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70")
GENDERS = {"Male": "male", "Female": "female"}
RACES = {r: attribute_name(r) for r in ("White", "Black", "Latino_Hispanic", "East Asian", "Southeast Asian",
                                        "Indian", "Middle Eastern")}  # Latino_Hispanic -> latino hispanic
SERVICE_TEST = ("true", "false")  # any case: Excel writes TRUE/FALSE

MONTHS = {m: i for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                                      "dec"), start=1)}
EXCEL_DATE = re.compile(r"(?P<a>\d{1,2})-(?P<month>[a-z]{3})|(?P<month2>[a-z]{3})-(?P<b>\d{1,2})", re.I)
RANGE_BINS = {frozenset(int(n) for n in b.split("-")): b for b in AGES if "-" in b}


def age_bin(text: str, repairs: Counter) -> str:
    """A FairFace age bin; an Excel date made of a bin's two numbers (`9-Mar`, `Oct-19`) is repaired."""
    if text in AGES:
        return text
    m = EXCEL_DATE.fullmatch(text)
    if m and (m["month"] or m["month2"]).lower() in MONTHS:
        pair = frozenset((int(m["a"] or m["b"]), MONTHS[(m["month"] or m["month2"]).lower()]))
        if pair in RANGE_BINS:
            repairs[f"{text} -> {RANGE_BINS[pair]}"] += 1
            return RANGE_BINS[pair]
        raise BadRow(f"age {quote(text)} looks like an Excel date but its numbers match no FairFace bin "
                     f"({', '.join(AGES)}); cannot tell which bin it was")
    raise BadRow(f"age {quote(text)} is not a FairFace bin ({', '.join(AGES)})")


def build(raw: Path, line: str, split: str, repairs: Counter, seen: set[str]) -> Record:
    parts = line.split(",")
    if len(parts) != 5:
        raise BadRow(f"expected 5 comma-separated fields (file,age,gender,race,service_test), got {len(parts)}"
                     " (a truncated line?)")
    file, age, gender, race, service = (p.strip() for p in parts)
    m = PATH_RE.fullmatch(image_path(raw, file))
    if not m:
        raise BadRow(f"file {quote(file)} is not train/<n>.jpg or val/<n>.jpg")
    if gender not in GENDERS:
        raise BadRow(f"gender {quote(gender)} is not one of {', '.join(GENDERS)}")
    if race not in RACES:
        raise BadRow(f"race {quote(race)} is not one of {', '.join(RACES)}")
    if service.lower() not in SERVICE_TEST:
        raise BadRow(f"service_test {quote(service)} is not True or False (a truncated line?)")
    path = m["path"]
    if path.split("/")[0] != FOLDERS[split]:
        raise BadRow(f"file {quote(file)} is not under {FOLDERS[split]}/ like the rest of this label file")
    local = local_id(path.removesuffix(".jpg"))
    if local in seen:
        raise BadRow(f"file {quote(file)} is listed twice")
    seen.add(local)
    labels = {"age": age_bin(age, repairs), "gender": GENDERS[gender], "race": RACES[race]}
    return attributes(NAME, local, path, labels, image_id=f"{NAME}/{local}", source_split=split)


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    files = [(require(raw, name, DOWNLOAD), split) for name, split in SPLIT_FILES.items()]
    seen: set[str] = set()
    for path, split in files:
        repairs: Counter = Counter()
        for where, line in table_rows(path, raw, DOWNLOAD, HEADERS.__contains__, repr(HEADERS[0])):
            yield guard(where, lambda: build(raw, line, split, repairs, seen), line)
        if repairs:
            ctx.note(f"{path.name}: repaired {sum(repairs.values()):,} Excel-mangled age bins "
                     f"({', '.join(f'{k}: {n:,}' for k, n in sorted(repairs.items()))})")

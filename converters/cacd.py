"""CACD, the Cross-Age Celebrity Dataset (Chen et al., 2014): 163,446 photos of 2,000 celebrities with age.

Quirks (docs/datasets.md, CACD):
- All labels are in `celebrity2000_meta.mat` (or `celebrity2000.mat`, the same structs with the LBP
  `feature` matrix filled): `celebrityImageData` (one entry per image: age, identity, year, feature,
  rank, lfw, birth, name) and `celebrityData` (one entry per celebrity: name, identity, birth, rank, lfw).
  scipy gives nested cells (an array holding a 1-element string array); matfile.strings unwraps them.
- Images are `CACD2000/<age>_<First>_<Last...>_<NNNN>.jpg`. 2,071 names are non-ASCII
  (`53_Stellan_Skarsgård_0001.jpg`, NFC in the .mat). A macOS tar may have stored them NFD, so when
  CACD2000/ is present names are matched after NFC on both sides and the image path is the name on
  disk; listed images missing there are noted. The counter NNNN restarts per age prefix, so the whole
  file name is the image id (and the key, kept NFC).
- Age is photo year - birth year (may be one off from the age at capture); it is checked against both.
- The person is the celebrity's name (`person/robin williams`), shared with IMDB-WIKI through
  matfile.person_id. No boxes (images are already face crops); no official split.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facecorpus.converters import matfile
from facecorpus.converters.base import BadRow, Context, Failure, Filtered, RawFormatError, Where, find, guard, rel_to
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes, local_id

NAME = "cacd"
DOWNLOAD = "https://bcsiriuschen.github.io/CARC/"
META_FILES = ("celebrity2000_meta.mat", "celebrity2000.mat")  # the meta file, or the one with features
IMAGE_DIR = "CACD2000"
IMAGE_FIELDS = ("age", "identity", "year", "birth", "name")      # of celebrityImageData (also feature, rank, lfw)
CELEBRITY_FIELDS = ("name", "identity")                          # of celebrityData (also birth, rank, lfw)
FILE_NAME = re.compile(r"(?P<age>\d+)_(?P<person>[^/\\]+)_(?P<n>\d{4})\.jpg")  # no folders inside a name


def integers(values: np.ndarray, rel: str, field: str) -> np.ndarray:
    """A numeric .mat field as int64 (a uint8/uint16 column must not wrap around when subtracted)."""
    if values.dtype.kind not in "iuf" or (values.dtype.kind == "f" and not np.all(np.isfinite(values))):
        raise RawFormatError(rel, f"field {quote(field)} is not a column of whole numbers ({values.dtype})", DOWNLOAD)
    return values.astype(np.int64)


def read_meta(path: Path, raw: Path) -> tuple[dict[str, np.ndarray], list[str | None], dict[int, str | None]]:
    """Image columns (numbers), image file names, and identity -> person id from celebrityData."""
    rel = rel_to(path, raw)
    structs = matfile.load_structs(path, raw, ("celebrityImageData", "celebrityData"), DOWNLOAD)
    images = matfile.columns(structs["celebrityImageData"], IMAGE_FIELDS, rel, DOWNLOAD)
    celebs = matfile.columns(structs["celebrityData"], CELEBRITY_FIELDS, rel, DOWNLOAD)
    numbers = {f: integers(images[f], rel, f) for f in ("age", "identity", "year", "birth")}
    people = {int(i): (matfile.person_id(n) if n else None)
              for i, n in zip(integers(celebs["identity"], rel, "identity"), matfile.strings(celebs["name"]))}
    return numbers, matfile.strings(images["name"]), people


def on_disk(raw: Path) -> dict[str, str] | None:
    """NFC file name -> the file name in CACD2000/ (annotations without images: None)."""
    folder = raw / IMAGE_DIR
    if not folder.is_dir():
        return None
    return {unicodedata.normalize("NFC", n): n for n in os.listdir(folder)}


def build(name: str | None, age: int, year: int, birth: int, identity: int, people: dict[int, str | None],
          files: dict[str, str] | None) -> Record:
    if not name:
        raise BadRow("the name cell holds no file name")
    m = FILE_NAME.fullmatch(name)
    if not m:
        raise BadRow(f"file name {quote(name)} is not <age>_<First>_<Last>_<NNNN>.jpg")
    if int(m["age"]) != age or age != year - birth:
        raise BadRow(f"age {age} disagrees with the file name {quote(name)} or year {year} - birth {birth}")
    if people.get(identity) is None:
        raise BadRow(f"identity {identity} has no named celebrity in celebrityData")
    stem = local_id(name[: -len(".jpg")])
    disk = files.get(name, name) if files is not None else name
    # attributes() validates the path (no escaping the raw root) and the key; a RecordError is a Failure
    return attributes(NAME, stem, f"{IMAGE_DIR}/{disk}", {"age": age}, image_id=f"{NAME}/{stem}",
                      subject_id=people[identity])


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    path = find(raw, META_FILES, DOWNLOAD)
    numbers, names, people = read_meta(path, raw)
    names = [unicodedata.normalize("NFC", n) if n and not n.isascii() else n for n in names]
    files = on_disk(raw)
    # tolist() once: numpy scalars per row would cost more than the record itself
    ages, years, births, ids = (numbers[f].tolist() for f in ("age", "year", "birth", "identity"))
    for i, name in enumerate(names):
        yield guard(Where(path.name, i + 1),
                    lambda: build(name, ages[i], years[i], births[i], ids[i], people, files))
    if files is not None and (missing := sum(1 for n in names if n and n not in files)):
        ctx.note(f"{path.name} lists {missing:,} images that are not in {IMAGE_DIR}/ (records kept)")

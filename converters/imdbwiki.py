"""IMDB-WIKI (Rothe et al., 2015/2018): celebrity photos from IMDb and Wikipedia with age and gender.

Quirks (docs/datasets.md, IMDB-WIKI):
- Two parts, each one .mat struct whose fields are 1xN rows: `wiki_crop/wiki.mat` (62,328 entries, 8
  fields) and `imdb_crop/imdb.mat` (460,723, the same 8 plus celeb_names and celeb_id). Fields are read
  by name, never by position. Whichever part is present is converted; an absent one is noted. The
  full-photo archives (`wiki/wiki.mat`, `imdb/imdb.mat`) are accepted too.
- Age is not stored: `dob` is a MATLAB datenum (datenum d = Python ordinal d - 366, clamped to >= 367
  because some dobs fall in year 11) and `photo_taken` a uint16 year (cast before subtracting, or it
  wraps to 65535). age = photo_taken - birth year, one less for a birthday in July or later (the photo
  is assumed taken mid-year; yu4u/age-gender-estimation's rule). Dates in file names are never parsed.
- Declared, counted filters (DEFAULTS, `--set imdbwiki.KEY=VALUE`): face_score = -inf means no face was
  found; impossible ages (1,198 negative and 500 over 100 on wiki.mat); a second face (the label may be
  the other person's); unknown (NaN) gender. With min_face_score=1, max_second_face_score=0 and
  require_gender=true the wiki part gives yu4u's 38,138 rows; Talk2Face's 523k is every entry unfiltered
  (min_face_score=-inf, min_age/max_age wide open).
- gender 1.0 = male, 0.0 = female, NaN = unknown (left out of the labels); an empty name leaves the
  person unknown; otherwise subject_id = `person/<name words>` as in CACD.
- `face_location` (x1 y1 x2 y2, MATLAB 1-based floats) is in the uncropped photo's pixels: on wiki.mat
  the box's left edge is 0.3 to 5 face widths from the origin, where a crop with a fixed margin would
  give one constant. So bbox is filled (minus 1, rounded) only for the full-photo layout, and is null for
  the `*_crop` images and for entries without a face.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from facecorpus.converters import matfile
from facecorpus.converters.base import Context, Failure, Filtered, RawFormatError, Where, guard, rel_to
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes, local_id

NAME = "imdbwiki"
DOWNLOAD = "https://data.vision.ee.ethz.ch/cvl/rrothe/imdb-wiki/"
# part -> accepted folders, first found wins: the face-crop archive, else the full-photo archive
PARTS = {"wiki": ("wiki_crop", "wiki"), "imdb": ("imdb_crop", "imdb")}
FIELDS = ("dob", "photo_taken", "full_path", "gender", "name", "face_location", "face_score", "second_face_score")
GENDER = {1.0: "male", 0.0: "female"}
FULL_PATH = re.compile(r"\d\d/[^/\\]+\.jpg")
DEFAULTS = {
    "min_face_score": 0.0,              # below it: dropped; -inf (no face found) is always below 0.0
    "max_second_face_score": math.inf,  # above it: dropped (yu4u drops any second face: 0.0)
    "min_age": 0,                       # ages outside min_age..max_age are impossible: dropped
    "max_age": 100,
    "require_gender": False,            # true: drop entries with unknown (NaN) gender
}
MATLAB_EPOCH = 719529  # datenum of 1970-01-01 (= Python ordinal 719163 + 366)


def ages(dob: np.ndarray, photo_taken: np.ndarray) -> np.ndarray:
    """Age at photo_taken by the mid-year rule, for every entry at once (int64, may be impossible)."""
    days = np.maximum(dob.astype(np.int64), 367) - MATLAB_EPOCH  # 367: datenum of 0001-01-01
    birth = days.astype("datetime64[D]")
    year = birth.astype("datetime64[Y]").astype(np.int64) + 1970
    month = birth.astype("datetime64[M]").astype(np.int64) % 12 + 1
    return photo_taken.astype(np.int64) - year - (month >= 7)


def reasons(cols: dict[str, np.ndarray], age: np.ndarray, opts: dict) -> list[str | None]:
    """The declared filter that drops each entry (the first that applies), or None to keep it."""
    score, second, gender = (cols[f].astype(np.float64) for f in ("face_score", "second_face_score", "gender"))
    low = score < opts["min_face_score"]
    table = [
        (low & np.isneginf(score), "no face found (face_score -inf)"),
        (low, f"face_score below min_face_score {opts['min_face_score']}"),
        (second > opts["max_second_face_score"],
         f"second face above max_second_face_score {opts['max_second_face_score']}"),
        ((age < opts["min_age"]) | (age > opts["max_age"]), f"age outside {opts['min_age']}..{opts['max_age']}"),
        (np.isnan(gender) & bool(opts["require_gender"]), "gender unknown (NaN)"),
    ]
    labels = np.array([None] + [text for _, text in table], dtype=object)
    first = np.select([mask for mask, _ in table], np.arange(1, len(table) + 1), 0)
    return labels[first].tolist()


def boxes(locations: np.ndarray, score: np.ndarray) -> list[list[int] | None]:
    """face_location (MATLAB 1-based x1 y1 x2 y2) -> [x0, y0, x1, y1] pixels; None without a real box."""
    out: list[list[int] | None] = []
    for loc, s in zip(locations, score.tolist()):
        v = np.asarray(loc, dtype=np.float64).ravel() if isinstance(loc, np.ndarray) else np.empty(0)
        if v.size != 4 or not np.all(np.isfinite(v)) or s == -math.inf:
            out.append(None)
            continue
        x0, y0, x1, y1 = np.maximum(np.rint(v - 1), 0).astype(int).tolist()
        out.append([x0, y0, x1, y1] if x0 < x1 and y0 < y1 else None)
    return out


def build(part: str, folder: str, path: str, age: int, gender: float, subject: str | None,
          bbox: list[int] | None) -> Record:
    local = local_id(f"{part}/{path[: -len('.jpg')]}")
    labels: dict = {"age": age}
    if gender in GENDER:
        labels["gender"] = GENDER[gender]
    return attributes(NAME, local, f"{folder}/{path}", labels, image_id=f"{NAME}/{local}",
                      subject_id=subject, bbox=bbox)


def problem(path: str | None, gender: float) -> str | None:
    """Why an entry is malformed (checked before the filters, so no broken entry is counted as filtered)."""
    if path is None or not FULL_PATH.fullmatch(path):
        return f"full_path {quote(path)} is not <NN>/<name>.jpg"
    if not (gender in GENDER or math.isnan(gender)):
        return f"gender {quote(gender)} is not 1 (male), 0 (female) or NaN (unknown)"
    return None


def part_rows(raw: Path, part: str, folder: str, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    path = raw / folder / f"{part}.mat"
    rel = rel_to(path, raw)
    cols = matfile.columns(matfile.load_structs(path, raw, (part,), DOWNLOAD)[part], FIELDS, rel, DOWNLOAD)
    for field in ("dob", "photo_taken", "gender", "face_score", "second_face_score"):
        if cols[field].dtype.kind not in "iuf":
            raise RawFormatError(rel, f"field {quote(field)} is not numeric ({cols[field].dtype})", DOWNLOAD)
    age = ages(cols["dob"], cols["photo_taken"])
    why = reasons(cols, age, ctx.options)
    full = not folder.endswith("_crop")  # boxes only for the uncropped photos (see the module docstring)
    bbox = boxes(cols["face_location"], cols["face_score"]) if full else [None] * len(age)
    paths, names = matfile.strings(cols["full_path"]), matfile.strings(cols["name"])
    people = {n: matfile.person_id(n) for n in set(names) if n}  # once per celebrity, not per photo
    genders, age = cols["gender"].astype(np.float64).tolist(), age.tolist()
    seen: dict[str, int] = {}
    for i, p in enumerate(paths):
        where = Where(rel, i + 1)
        if bad := problem(p, genders[i]):
            yield Failure(where, bad)
        elif p in seen:
            yield Failure(where, f"full_path {quote(p)} is listed again (first at entry {seen[p]})")
        elif why[i] is not None:
            seen[p] = i + 1
            yield Filtered(where, why[i])
        else:
            seen[p] = i + 1
            yield guard(where, lambda: build(part, folder, p, age[i], genders[i], people.get(names[i]), bbox[i]))


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    found = {part: next((f for f in folders if (raw / f / f"{part}.mat").is_file()), None)
             for part, folders in PARTS.items()}
    if not any(found.values()):
        wanted = " or ".join(f"{folders[0]}/{part}.mat" for part, folders in PARTS.items())
        raise RawFormatError(wanted, f"missing: neither part of IMDB-WIKI is under {raw}", DOWNLOAD)
    for part, folder in found.items():
        if folder is None:
            ctx.note(f"{PARTS[part][0]}/{part}.mat absent: the {part} part is not converted")
            continue
        if folder.endswith("_crop"):
            ctx.note(f"{folder}/: bbox left empty (face_location is in the uncropped photo's pixels)")
        for other in PARTS[part][PARTS[part].index(folder) + 1:]:
            if (raw / other / f"{part}.mat").is_file():
                ctx.note(f"{other}/{part}.mat not converted: {folder}/ holds the same photos")
        yield from part_rows(raw, part, folder, ctx)

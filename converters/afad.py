"""AFAD-Full, the Asian Face Age Dataset (Niu et al., CVPR 2016): face crops labelled by age and gender.

Quirks (docs/datasets.md, AFAD):
- Labels live only in the path: `AFAD-Full/<age>/<gender>/<id>-<k>.jpg`, gender folder 111 = male,
  112 = female. Age folders run 15..70 and 72 (there is no 71).
- Rows come from the listing `AFAD-Full/AFAD-Full.txt` (one `./<age>/<gender>/<id>-<k>.jpg` per line,
  LF; 165,501 images) when it is there, else from a walk of the image folders; the summary notes which.
  The project page says 164,432 photos; the shipped listing has 1,069 more.
- `Thumbs.db` files sit in some image folders and in the listing (14 lines). They are not rows; the
  summary notes how many non-image entries were ignored.
- A numeric id appears under both 111 and 112 (3,343 ids), so the id is no person key: keys and image
  ids are built from the whole path (`afad/15-111-109008-0`) and subject_id stays empty.
- No boxes (the images are face crops), no official split.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters.base import BadRow, Context, Failure, Filtered, Overlong, RawFormatError, Where, guard, lines
from facecorpus.excerpt import quote
from facecorpus.records import Record, attributes

NAME = "afad"
DOWNLOAD = "https://github.com/afad-dataset/tarball"
ROOT = "AFAD-Full"
LISTING = f"{ROOT}/AFAD-Full.txt"
DOCS = {"AFAD-Full.txt", "README.md"}  # the top-level files of the tarball besides the image folders
GENDER = {"111": "male", "112": "female"}
IMAGE = re.compile(r"(?P<age>\d{1,3})/(?P<gender>\d+)/(?P<stem>\d+-\d+)\.(?:jpg|jpeg|png)", re.IGNORECASE)
# Windows / macOS folder litter: not images, so not rows (counted in a note instead).
NOT_IMAGE_NAMES = {"thumbs.db", "desktop.ini", ".ds_store"}
NOT_IMAGE_SUFFIXES = (".db", ".ini", ".txt", ".md")


def not_an_image(rel: str) -> bool:
    if rel.endswith(".jpg"):  # nearly every row: skip the work below
        return False
    name = rel.rsplit("/", 1)[-1].lower()
    return name in NOT_IMAGE_NAMES or name.startswith("._") or name.endswith(NOT_IMAGE_SUFFIXES)


def build(rel: str) -> Record:
    """One image from its path relative to AFAD-Full/ (`15/111/109008-0.jpg`)."""
    m = IMAGE.fullmatch(rel)
    if not m:
        raise BadRow(f"path {quote(rel)} is not <age>/<111|112>/<id>-<k>.jpg")
    if m["gender"] not in GENDER:
        raise BadRow(f"gender folder {quote(m['gender'])} is neither 111 (male) nor 112 (female)")
    age = int(m["age"])
    if not 0 < age < 120:
        raise BadRow(f"age folder {quote(m['age'])} is not an age")
    local = f"{m['age']}-{m['gender']}-{m['stem']}"  # = local_id("<age>/<gender>/<stem>"): digits and '-' only
    return attributes(NAME, local, f"{ROOT}/{rel}", {"age": age, "gender": GENDER[m["gender"]]},
                      image_id=f"{NAME}/{local}")


def listed(raw: Path) -> Iterator[tuple[Where, str]]:
    """(where, path relative to AFAD-Full/) for every line of the listing."""
    for where, line in lines(raw / LISTING, raw, DOWNLOAD):
        yield where, line if isinstance(line, Overlong) else line.strip().replace("\\", "/").removeprefix("./")


def walked(raw: Path) -> list[str]:
    """Every file under the image folders, relative to AFAD-Full/, sorted by age, gender and name."""
    root = raw / ROOT
    found = [p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()]
    found = [rel for rel in found if rel not in DOCS]

    def order(rel: str):
        parts = rel.split("/")
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts]
    return sorted(found, key=order)


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    if (raw / LISTING).is_file():
        source = listed(raw)
        ctx.note(f"rows come from the listing {LISTING}")
    elif (raw / ROOT).is_dir():
        source = ((Where(f"{ROOT}/{rel}"), rel) for rel in walked(raw))
        ctx.note(f"rows come from a walk of {ROOT}/ (no {LISTING})")
    else:
        raise RawFormatError(LISTING, f"missing, and no {ROOT}/ image folders under {raw} to walk", DOWNLOAD)
    ignored: Counter[str] = Counter()
    first: dict[str, Where] = {}
    for where, rel in source:
        if isinstance(rel, Overlong):
            yield Failure(where, rel.problem)
            continue
        if not_an_image(rel):
            ignored[rel.rsplit("/", 1)[-1]] += 1
            continue
        if rel in first:
            yield Failure(where, f"{rel} is listed again (first at {first[rel]})")
            continue
        first[rel] = where
        yield guard(where, lambda: build(rel))
    if not first:
        raise RawFormatError(LISTING if (raw / LISTING).is_file() else ROOT, "holds no images", DOWNLOAD)
    if ignored:
        what = ", ".join(f"{name}: {n:,}" for name, n in sorted(ignored.items()))
        ctx.note(f"{sum(ignored.values()):,} non-image files ignored (not rows): {what}")
    if (raw / LISTING).is_file():
        compare_with_disk(raw, set(first), ctx)


def compare_with_disk(raw: Path, listed_images: set[str], ctx: Context) -> None:
    """Where image folders are present too, note what the listing and the disk disagree on."""
    if not any(p.is_dir() for p in (raw / ROOT).iterdir()):
        return  # the listing alone (annotations without images): nothing to compare
    on_disk = {rel for rel in walked(raw) if not not_an_image(rel)}
    if missing := len(listed_images - on_disk):
        ctx.note(f"{LISTING} lists {missing:,} images that are not on disk")
    if extra := len(on_disk - listed_images):
        ctx.note(f"{extra:,} image files on disk are not in {LISTING} (not converted)")

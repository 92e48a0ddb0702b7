"""CelebA-Dialog (Talk-to-Edit, ICCV 2021): fine-grained 0-5 degrees of five attributes, and captions.

No real file is stored here: the terms forbid redistribution, so this follows the documented layout
(docs/datasets.md, CelebA-Dialog) and the fixtures in samples/celebadialog.py. Files, each at the download
folder's top or one folder down (e.g. `text/captions_hq.json`, as VillanDiffusion unpacks it):
- `combined_annotation.txt` (standard, 202,599 CelebA images): a header row `img_name Bangs Eyeglasses
  No_Beard Smiling Young` (any order), then `000001.jpg 0 3 0 2 2`, space-delimited.
- `captions.json` (standard) and `captions_hq.json` (HQ, keyed `0.jpg`..`29999.jpg`): one object per
  image with `overall_caption` and `attribute_wise_captions` (`Bangs`, `Eyeglasses`, `No_Beard`,
  `Smiling`, `Young`). The HQ file has 29,999 keys: `5380.jpg` is missing (corrupted upstream,
  ziqihuangg/CelebA-Dialog#1). Empty or null captions are no captions (counted as filtered).
- `request*.json` are editing requests, not descriptions of the face: never converted.
- The HQ fine-grained label file's name is unknown, so HQ degrees are not read.

Quirks of the degrees (Talk-to-Edit `configs/attributes_5.json`, caption templates):
- `No_Beard` and `Young` run opposite to CelebA's binary columns of the same name (0 = no beard,
  0 = a child), so they become `beard` and `age` here, never merged with CelebA's `no beard`/`young`.
- Eyeglasses is categorical: 1-3 are eyeglasses by frame, 4-5 sunglasses.
- Each degree becomes words (one-to-one, so lossless), e.g. `bangs: medium; age: young adult`.

Standard images are CelebA's aligned JPEGs (`image_id` celeba/NNNNNN, shared with the CelebA
converter); HQ images are CelebA-HQ (`celebahq/<idx>`, photo via the CelebA-HQ mapping). No split.
Talk2Face's "203k" is the standard set with one overall caption per image, hence the default
attribute_captions=false (the five attribute-wise captions are then counted as filtered rows).
"""

from __future__ import annotations

import json
import re
from collections.abc import Generator, Iterator
from dataclasses import replace
from pathlib import Path

from facecorpus import records
from facecorpus.converters.base import (
    BadRow,
    Context,
    Failure,
    Filtered,
    Overlong,
    RawFormatError,
    Where,
    guard,
    lines,
    read_text,
    rel_to,
)
from facecorpus.excerpt import quote
from facecorpus.records import Record

NAME = "celebadialog"
DOWNLOAD = "https://github.com/ziqihuangg/CelebA-Dialog"
FINE_GRAINED = "combined_annotation.txt"
CAPTIONS = "captions.json"
CAPTIONS_HQ = "captions_hq.json"
STANDARD_IMAGES = "img_align_celeba"
HQ_IMAGES = "image"  # image.zip unpacked: image/<idx>.jpg
HQ_COUNT = 30_000
# Column as the dataset spells it -> (label name, words for degrees 0..5), meaning from the templates.
SCALES = {
    "Bangs": ("bangs", ("none", "very short", "short", "medium", "long", "extremely long")),
    "Eyeglasses": ("eyeglasses", ("none", "rimless eyeglasses", "thin frame eyeglasses", "thick frame eyeglasses",
                                  "thin frame sunglasses", "thick frame sunglasses")),
    "No_Beard": ("beard", ("none", "stubble", "short", "medium", "bushy", "very long")),
    "Smiling": ("smile", ("none", "slight", "broad", "beaming", "big with mouth slightly open", "laughing")),
    "Young": ("age", ("child", "teenager", "young adult", "middle aged", "elderly", "very old")),
}
DEFAULTS = {"attribute_captions": False}  # also emit the five attribute-wise captions per image
STANDARD_RE = re.compile(r"\d{6}\.jpg")
HQ_RE = re.compile(r"(0|[1-9]\d{0,4})\.jpg")


def locate(raw: Path, name: str) -> Path | None:
    """`raw/name`, or the one `raw/<folder>/name`; None when absent, an error when ambiguous."""
    if (raw / name).is_file():
        return raw / name
    found = sorted(p for p in raw.glob(f"*/{name}") if p.is_file())
    if len(found) > 1:
        raise RawFormatError(name, f"found in several folders ({', '.join(rel_to(p, raw) for p in found)}); keep one",
                             DOWNLOAD)
    return found[0] if found else None


def read_fine_grained(path: Path, raw: Path) -> tuple[list[str], list[tuple[Where, str]]]:
    """The checked header of `combined_annotation.txt` (img_name plus the five scales, any order) and its rows."""
    rows_ = list(lines(path, raw, DOWNLOAD))
    header = rows_[0][1].split() if rows_ else []
    if sorted(header) != sorted(["img_name", *SCALES]):
        raise RawFormatError(rows_[0][0] if rows_ else rel_to(path, raw), f"expected the header img_name "
                             f"{' '.join(SCALES)} (any order), found {quote(' '.join(header))}", DOWNLOAD)
    return header, rows_[1:]


def read_captions(path: Path, raw: Path) -> dict:
    """The caption JSON: one object keyed by image file name."""
    try:
        data = json.loads(read_text(path, raw, DOWNLOAD))
    except json.JSONDecodeError as exc:
        raise RawFormatError(Where(rel_to(path, raw), exc.lineno), f"not JSON ({exc.msg})", DOWNLOAD) from None
    if not isinstance(data, dict):
        raise RawFormatError(rel_to(path, raw), f"expected an object keyed by image name, found {type(data).__name__}",
                             DOWNLOAD)
    if not data:
        raise RawFormatError(rel_to(path, raw), "holds no entries: a failed or truncated download?", DOWNLOAD)
    return data


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]:
    found = {name: locate(raw, name) for name in (FINE_GRAINED, CAPTIONS, CAPTIONS_HQ)}
    if not any(found.values()):
        raise RawFormatError(" or ".join(found), f"none found under {raw} or its folders", DOWNLOAD)
    if any(raw.glob("request*.json")) or any(raw.glob("*/request*.json")):
        ctx.note("request*.json files are editing requests, not captions: not converted")
    labelled: set[str] = set()
    if found[FINE_GRAINED]:
        yield from attribute_rows(found[FINE_GRAINED], raw, labelled)
    if found[CAPTIONS]:
        captioned = yield from caption_rows(found[CAPTIONS], raw, ctx, hq=False)
        if found[FINE_GRAINED] and captioned != labelled:
            ctx.note(f"{len(labelled - captioned):,} images of {FINE_GRAINED} have no entry in {CAPTIONS}, "
                     f"{len(captioned - labelled):,} entries of {CAPTIONS} no row in {FINE_GRAINED}")
    if found[CAPTIONS_HQ]:
        yield from caption_rows(found[CAPTIONS_HQ], raw, ctx, hq=True)


def attribute_rows(path: Path, raw: Path, names: set[str]) -> Iterator[Record | Failure]:
    """One attributes record per row; adds each row's image name to `names`."""
    header, data = read_fine_grained(path, raw)
    seen: dict[tuple, Record] = {}
    for where, line in data:
        if isinstance(line, Overlong):
            yield Failure(where, line.problem)
            continue
        name = line.split(None, 1)[0]
        if name in names:  # a repeated image would be a duplicate record key
            yield Failure(where, f"{name} is listed again")
            continue
        names.add(name)
        yield guard(where, lambda: _attributes(line.split(), header, seen))


def _attributes(fields: list[str], header: list[str], seen: dict[tuple, Record]) -> Record:
    if len(fields) != len(header):
        raise BadRow(f"expected {len(header)} fields ({' '.join(header)}), found {len(fields)}")
    row = dict(zip(header, fields))
    name = row.pop("img_name")
    if not STANDARD_RE.fullmatch(name):
        raise BadRow(f"image name {quote(name)} is not a CelebA file name NNNNNN.jpg")
    labels = {}
    for column, (label, words) in SCALES.items():
        degree = row[column]
        if degree not in ("0", "1", "2", "3", "4", "5"):
            raise BadRow(f"{name}: {column} is {quote(degree)}, expected a degree 0..5")
        labels[label] = words[int(degree)]  # e.g. No_Beard 0 -> beard: none (the reverse of CelebA's No_Beard)
    local, degrees = name[:6], tuple(labels.values())
    if degrees not in seen:  # 6^5 = 7,776 label sets: build and validate each once through the factory
        seen[degrees] = records.attributes(NAME, local, f"{STANDARD_IMAGES}/{name}", labels,
                                           image_id=f"celeba/{local}")
        return seen[degrees]
    # The same labels and text, for an image whose key, path and ids come from the checked NNNNNN.jpg name.
    return replace(seen[degrees], key=f"{NAME}/{local}/attributes/0", image=f"{STANDARD_IMAGES}/{name}",
                   image_id=f"celeba/{local}", photo_id=f"celeba/{local}", labels=labels)


def caption_rows(path: Path, raw: Path, ctx: Context, hq: bool) -> Generator[Record | Filtered | Failure, None, set]:
    """Six rows per image: the overall caption (n=0) and the five attribute-wise ones (n=1..5).
    Returns the set of image names the file has."""
    data = read_captions(path, raw)
    rel = rel_to(path, raw)
    wise = ctx.options.get("attribute_captions", False)
    if hq:
        _note_missing_hq(ctx, rel, data)
    for n, (name, entry) in enumerate(data.items(), start=1):
        where = Where(rel, n)
        try:
            image = _image(name, hq, ctx)
            texts = _texts(name, entry)
        except (BadRow, KeyError) as exc:
            yield Failure(where, str(exc))
            continue
        off = Filtered(where, "attribute-wise caption (attribute_captions=false)")  # one object, 5 rows
        for i, (about, text) in enumerate(texts):
            if i and not wise:
                yield off
            elif not isinstance(text, str) or not text.strip():
                yield Filtered(where, "empty or null caption")
            else:
                yield guard(where, lambda: records.caption(NAME, image[0], image[1], text, i, image_id=image[2],
                                                           photo_id=image[3], labels=about))
    return set(data)


def _image(name: str, hq: bool, ctx: Context) -> tuple[str, str, str, str]:
    """(local id, image path, image_id, photo_id) for a caption key."""
    if hq:
        if not HQ_RE.fullmatch(name) or int(name[:-4]) >= HQ_COUNT:
            raise BadRow(f"key {quote(name)} is not a CelebA-HQ image name 0.jpg..29999.jpg")
        idx = name[:-4]
        return f"hq-{idx}", f"{HQ_IMAGES}/{name}", f"celebahq/{idx}", ctx.celeba_photo(f"celebahq/{idx}")
    if not STANDARD_RE.fullmatch(name):
        raise BadRow(f"key {quote(name)} is not a CelebA image name NNNNNN.jpg")
    return name[:6], f"{STANDARD_IMAGES}/{name}", f"celeba/{name[:6]}", f"celeba/{name[:6]}"


def _texts(name: str, entry) -> list[tuple[dict, object]]:
    """[(labels, text)] for n = 0..5; a missing attribute caption reads as None (filtered, not failed)."""
    if not isinstance(entry, dict) or "overall_caption" not in entry:
        raise BadRow(f"{name}: expected an object with overall_caption, found {quote(str(entry))}")
    wise = entry.get("attribute_wise_captions") or {}
    if not isinstance(wise, dict):
        raise BadRow(f"{name}: attribute_wise_captions is {type(wise).__name__}, expected an object")
    return [({}, entry["overall_caption"])] + [({"attribute": label}, wise.get(column))
                                              for column, (label, _) in SCALES.items()]


def _note_missing_hq(ctx: Context, rel: str, data: dict) -> None:
    """HQ indices absent below the highest present one (upstream: 5380.jpg, a corrupted image)."""
    present = {int(k[:-4]) for k in data if HQ_RE.fullmatch(k)}
    missing = sorted(set(range(max(present) + 1)) - present) if present else []
    if missing:
        names = ", ".join(f"{i}.jpg" for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        ctx.note(f"{rel} lacks {len(missing):,} of the CelebA-HQ images 0.jpg..{max(present)}.jpg: {names}")

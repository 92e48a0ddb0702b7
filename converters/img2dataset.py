"""Web sets as img2dataset downloaded them (FaceCaption-15M, HumanCaption-10M, LAION-Face): one
caption record per downloaded sample, under a dataset name the user chooses (`--name`, default `web`).

`facecorpus convert img2dataset DIR --out MANIFEST --licence TERMS [--caption-column COL]
[--bbox-column COL --bbox-format relative|absolute --resize-mode MODE] [--split-by hash|column]`
reads the `webdataset`, `files` and `parquet` output formats (converters/webfolder.py). Every URL
img2dataset was given is one outcome: a record; a URL img2dataset lost (`Unavailable`, by its status and
the reason its error message boils down to, `HTTP Error 404`); a counted filter (no caption, a face box
that is missing, degenerate or outside the picture); or an error naming the shard parquet and row.

Quirks the fields below rely on (docs/web-datasets.md):
- keys are img2dataset's `key` (shard id + index in shard: unique in one output folder, the same on a
  rerun with the same URL list and --number_sample_per_shard), so record keys and image ids are too;
- `txt` is the caption img2dataset saved (`--caption_col`): its `caption` column, which the `parquet`
  format keeps (it has no `txt`) and whose `str()` the `.txt` member is;
- `photo_id` is `sha256/<hash of the downloaded bytes>` where img2dataset computed it, so the same
  picture fetched twice (or in two web sets) lands in one split;
- the face box maps into the stored image's pixels through the resize mode img2dataset ran with
  (converters/webboxes.py); tokenize crops there.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from facecorpus.converters import webboxes, webfolder
from facecorpus.converters.base import (
    BadRow,
    Context,
    Failure,
    Filtered,
    RawFormatError,
    Unavailable,
    Where,
    guard,
    rel_to,
)
from facecorpus.records import Record, caption

NAME = "img2dataset"
DOWNLOAD = webfolder.DOWNLOAD
SPLIT_BY = ("hash", "column")
DEFAULTS = {"caption_column": "txt", "bbox_column": "", "bbox_format": "relative", "resize_mode": "",
            "split_by": "hash", "split_column": "", "licence": ""}
SIZES = ["width", "height", "original_width", "original_height"]
SPLIT_NAMES = {"train": "train", "val": "val", "validation": "val", "valid": "val", "test": "test"}
LOST = ("lost", "no row in img2dataset's parquet (its writer failed for the sample)")


def check_options(o: dict) -> dict:
    """The options, or a ValueError saying which one is wrong and what it may be."""
    if not o["licence"].strip():
        raise ValueError("--licence: say the terms the set's records may be used under "
                         "(e.g. 'CC-BY-4.0, research only'); each record keeps them")
    if o["bbox_format"] not in webboxes.FORMATS:
        raise ValueError(f"--bbox-format {o['bbox_format']}: choose one of {webboxes.FORMATS}")
    if o["bbox_column"] and o["resize_mode"] not in webboxes.MODES:
        raise ValueError(f"--bbox-column needs --resize-mode, the one img2dataset ran with (its output does not "
                         f"record it): one of {webboxes.MODES}")
    if o["split_by"] not in SPLIT_BY:
        raise ValueError(f"--split-by {o['split_by']}: choose one of {SPLIT_BY}")
    if (o["split_by"] == "column") != bool(o["split_column"]):
        raise ValueError("--split-by column takes --split-column COL (a saved column of train/val/test), "
                         "and --split-column only goes with it")
    return o


def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure | Unavailable]:
    o = check_options(ctx.options)
    folder = webfolder.open_folder(raw)
    for shard in folder.shards:
        if shard.parquet is None:
            folder.notes.append(f"shard {shard.id} has no parquet (a killed run?): its URLs cannot be counted")
            continue
        yield from shard_rows(shard, folder, o, ctx)
    for note in folder.notes:
        ctx.note(note)


def columns(o: dict) -> list[str]:
    cols = ["key", "status", "error_message", *SIZES, "caption" if o["caption_column"] == "txt" else o["caption_column"]]
    cols += [c for c in (o["bbox_column"], o["split_column"]) if c]
    return list(dict.fromkeys(cols))


def shard_rows(shard: webfolder.Shard, folder: webfolder.Folder, o: dict, ctx: Context):
    """One outcome per URL of the shard, in key order; then the URLs img2dataset lost from its parquet."""
    table = webfolder.read_rows(shard, folder.raw, columns(o), optional=["sha256"])
    rel = rel_to(shard.parquet, folder.raw)
    count = webfolder.stats_count(shard, folder.raw)
    if count is None:
        folder.notes.append(f"{shard.id}: no stats file; its parquet's {table.num_rows:,} rows are taken as its URLs")
    elif count < table.num_rows:  # checked before any row is counted: no URL of this folder can be trusted
        raise RawFormatError(rel, f"holds {table.num_rows:,} rows but its stats count {count:,} URLs: "
                             "an incremental rerun with another URL list? Convert a folder of one run")
    images = webfolder.images(shard, folder.format, folder.raw, folder.notes)
    seen = set()
    for row in table.to_pylist():
        seen.add(row["key"])
        where = Where(rel, row["row"] + 1)
        yield guard(where, lambda: outcome(where, row, images.get(row["key"]), o, ctx))
    orphans = len(set(images) - seen)
    if orphans:
        folder.notes.append(f"{shard.id}: {orphans:,} image(s) without a row in {rel}, not converted "
                            "(img2dataset's writer failed after storing them)")
    for _ in range((count or 0) - table.num_rows):
        yield Unavailable(Where(rel_to(shard.stats, folder.raw)), *LOST)


def outcome(where: Where, row: dict, image: str | None, o: dict, ctx: Context) -> Record | Filtered | Unavailable:
    """One parquet row's outcome; `image` is where its image is (None: the shard holds none for it)."""
    if row["status"] != "success":
        return Unavailable(where, str(row["status"]), reason(row["error_message"]))
    if image is None:
        raise BadRow(f"img2dataset counts key {row['key']} a success, but its image is not in the shard")
    text = row["caption" if o["caption_column"] == "txt" else o["caption_column"]]
    if text is None or not str(text).strip():
        return Filtered(where, "no caption")
    box = None
    if o["bbox_column"]:
        value = webboxes.read_box(row[o["bbox_column"]], o["bbox_format"])
        if value is None:
            return Filtered(where, "face box missing")
        if None in (row[s] for s in SIZES):
            raise BadRow("no width/height saved (img2dataset run with --disable_all_reencoding?): the box cannot be placed")
        try:
            box = webboxes.to_stored(value, o["bbox_format"], o["resize_mode"],
                                     (row["original_width"], row["original_height"]), (row["width"], row["height"]))
        except webboxes.BoxFilter as exc:
            return Filtered(where, str(exc))
    name, key = ctx.dataset, row["key"]
    sha = row.get("sha256")
    return caption(name, key, image, str(text), 0, image_id=f"{name}/{key}",
                   photo_id=f"sha256/{sha}" if sha else None, source_split=split_of(row, o), bbox=box,
                   licence=o["licence"])


def split_of(row: dict, o: dict) -> str | None:
    """None (harmonization's seeded hash, by photo) or the saved split column's value."""
    if o["split_by"] == "hash":
        return None
    value = row[o["split_column"]]
    if str(value).lower() not in SPLIT_NAMES:
        raise BadRow(f"split column {o['split_column']!r} holds {value!r}, not one of {sorted(SPLIT_NAMES)}")
    return SPLIT_NAMES[str(value).lower()]


def reason(message: str | None) -> str:
    """An img2dataset error message without what varies from server to server or build to build: the
    HTTP code without the reason phrase, OpenCV's error without its version and source path."""
    if not message:
        return "no message"
    if m := re.match(r"HTTP Error (\d+)", message):
        return f"HTTP Error {m[1]}"
    if m := re.match(r"OpenCV\(.*?error: (\(-?\d+:[^)]*\))", message, re.S):
        return f"OpenCV error {m[1]}"
    line = " ".join(message.strip().strip("<>").split())
    return line if len(line) <= 100 else line[:100] + "..."

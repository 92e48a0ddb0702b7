"""An img2dataset output folder: its shards, their output format, stats and where each image is.

Per shard NNNNN (img2dataset 1.47.0; docs/web-datasets.md):
    webdataset   NNNNN.tar (KEY.jpg, KEY.json, KEY.txt per success) + NNNNN.parquet + NNNNN_stats.json
    files        NNNNN/ (the same three files per success)             + NNNNN.parquet + NNNNN_stats.json
    parquet      NNNNN.parquet (the image bytes in a `jpg` column, null for failures) + NNNNN_stats.json
The shard's parquet has one row per input URL, failures included (status, error_message); the stats'
`count` is the URLs img2dataset was given for the shard. img2dataset exits 0 even when a sample or
a whole shard failed inside it, so the gaps are found here: a shard id missing below the highest one,
a parquet with fewer rows than `count` (the writer raised for a sample), image members without a row.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from facecorpus import imageref, rawtar
from facecorpus.converters.base import RawFormatError, rel_to
from facecorpus.excerpt import quote

FORMATS = ("webdataset", "files", "parquet")
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")  # img2dataset's --encode_format choices (jpg by default)
_SHARD = re.compile(r"(\d{5,})(\.parquet|\.tar|_stats\.json|)")
DOWNLOAD = "https://github.com/rom1504/img2dataset (docs/web-datasets.md has the commands)"


@dataclass
class Shard:
    id: str
    parquet: Path | None = None
    stats: Path | None = None
    tar: Path | None = None
    folder: Path | None = None


@dataclass
class Folder:
    raw: Path
    format: str
    shards: list[Shard]
    notes: list[str] = field(default_factory=list)


def open_folder(raw: Path) -> Folder:
    """The shards under `raw` (by id) and their format; a folder with none is a RawFormatError."""
    by_id: dict[str, Shard] = {}
    for entry in sorted(os.scandir(raw), key=lambda e: e.name):
        m = _SHARD.fullmatch(entry.name)
        if not m or (m[2] == "") != entry.is_dir():
            continue
        shard = by_id.setdefault(m[1], Shard(m[1]))
        slot = {".parquet": "parquet", ".tar": "tar", "_stats.json": "stats", "": "folder"}[m[2]]
        setattr(shard, slot, Path(entry.path))
    if not any(s.parquet for s in by_id.values()):
        raise RawFormatError(raw.name, f"no img2dataset output under {raw}: expected NNNNN.parquet files with "
                             "NNNNN_stats.json (and NNNNN.tar or NNNNN/ folders)", DOWNLOAD)
    shards = [by_id[k] for k in sorted(by_id, key=int)]
    folder = Folder(raw, detect_format(raw, shards), shards)
    missing = sorted(set(range(int(shards[-1].id) + 1)) - {int(s.id) for s in shards})
    if missing:
        folder.notes.append(f"{len(missing):,} shard(s) missing below {shards[-1].id}, e.g. "
                            f"{[f'{i:05d}' for i in missing[:5]]}: img2dataset gave them up (no stats, no parquet); "
                            "their URLs cannot be counted here; rerun img2dataset into the same folder")
    if (raw / "_tmp").is_dir():
        folder.notes.append("_tmp/ is present: img2dataset was still running or was killed; its last shards may be cut short")
    return folder


def detect_format(raw: Path, shards: list[Shard]) -> str:
    """webdataset (tars), files (shard folders) or parquet (images in a `jpg`-like column)."""
    if any(s.tar for s in shards):
        return "webdataset"
    if any(s.folder for s in shards):
        return "files"
    first = next(s.parquet for s in shards if s.parquet)
    if image_column(pq.read_schema(first)):
        return "parquet"
    raise RawFormatError(rel_to(first, raw), "holds no image column and there are no NNNNN.tar files or NNNNN/ "
                         "folders: only the tfrecord output format is left, which facecorpus does not read", DOWNLOAD)


def image_column(schema: pa.Schema) -> str | None:
    return next((c for c in IMAGE_EXTS if c in schema.names), None)


def stats_count(shard: Shard, raw: Path) -> int | None:
    """The URLs img2dataset was given for the shard (`count` in NNNNN_stats.json); None without stats."""
    if shard.stats is None:
        return None
    where = rel_to(shard.stats, raw)
    try:
        count = json.loads(shard.stats.read_text(encoding="utf-8"))["count"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as exc:
        raise RawFormatError(where, f"not img2dataset stats with a count ({type(exc).__name__}: {exc})") from None
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise RawFormatError(where, f"count {quote(count)} is not a number of URLs")
    return count


def read_rows(shard: Shard, raw: Path, columns: list[str], optional: list[str] = ()) -> pa.Table:
    """The shard parquet's `columns` (and those of `optional` it has) plus `row` (the physical row),
    sorted by `key` (img2dataset writes in completion order). A missing column is a RawFormatError
    that lists the ones there are."""
    where = rel_to(shard.parquet, raw)
    try:
        schema = pq.read_schema(shard.parquet)
        absent = [c for c in columns if c not in schema.names]
        if absent:
            raise RawFormatError(where, f"has no column {absent}; its columns: {schema.names}")
        table = pq.read_table(shard.parquet, columns=columns + [c for c in optional if c in schema.names])
    except (pa.ArrowInvalid, OSError) as exc:
        raise RawFormatError(where, f"not a readable Parquet file ({exc}); a killed img2dataset run?") from None
    table = table.append_column("row", pa.array(range(table.num_rows), pa.int64()))
    return table.sort_by("key")


def images(shard: Shard, fmt: str, raw: Path, notes: list[str]) -> dict[str, str]:
    """key -> the `image` reference (facecorpus/imageref.py) of every image the shard holds."""
    if fmt == "webdataset":
        return _tar_images(shard, raw, notes) if shard.tar else {}
    if fmt == "files":
        if shard.folder is None:
            return {}
        return {stem: rel_to(Path(e.path), raw) for e in os.scandir(shard.folder)
                for stem, _, ext in [e.name.rpartition(".")] if ext.lower() in IMAGE_EXTS}
    return _parquet_images(shard, raw)


def _tar_images(shard: Shard, raw: Path, notes: list[str]) -> dict[str, str]:
    rel, out = rel_to(shard.tar, raw), {}
    try:
        for m in rawtar.members(shard.tar):
            stem, _, ext = m.name.rpartition(".")
            if ext.lower() in IMAGE_EXTS and m.regular:  # a link member is no image: its success row fails
                out[stem] = imageref.tar_member(rel, m.name, m.offset, m.size)
    except rawtar.RawTarError as exc:
        notes.append(f"{rel}: {exc}; {len(out):,} images read before the damage")
    return out


def _parquet_images(shard: Shard, raw: Path) -> dict[str, str]:
    """Rows whose image cell is set, read in batches: only a flag per row is kept, never the bytes."""
    rel, column = rel_to(shard.parquet, raw), image_column(pq.read_schema(shard.parquet))
    keys_and_flags = pq.ParquetFile(shard.parquet).iter_batches(batch_size=1024, columns=["key", column])
    out, row = {}, 0
    for batch in keys_and_flags:
        valid = batch.column(1).is_valid().to_pylist()
        for key, ok in zip(batch.column(0).to_pylist(), valid):
            if ok:
                out[key] = imageref.parquet_cell(rel, column, row)
            row += 1
    return out

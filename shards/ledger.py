"""The failure ledger: images that could not be tokenized, with the stage that failed and why.

A failure never stops a run; it becomes a ledger row. Every run retries the images that are not in
the cache, ledgered ones included, and records its own failures, so the ledger that counts is the
latest entry per image_id among images still missing from the cache.

Stages: `refused` (the path resolves outside its dataset's raw folder), `read` (missing, not a
regular file, empty), `decode` (not an image, or no faithful 8-bit RGB picture), `preprocess` (a face
box that does not fit the image), `encode` (the VQGAN failed on it).
"""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from facecorpus.shards.cache import cached_among, parts, write_part

STAGES = ("refused", "read", "decode", "preprocess", "encode")
SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("path", pa.string()),
    ("stage", pa.string()),
    ("message", pa.string()),
    ("at", pa.float64()),
])


def ledger_table(rows: list[dict]) -> pa.Table:
    now = time.time()
    return pa.Table.from_pylist([{**r, "at": now} for r in rows], schema=SCHEMA)


def append(cache: Path, rows: list[dict]) -> None:
    if rows:
        write_part(Path(cache) / "ledger", ledger_table(rows))


def read_ledger(cache: Path, cached: set[str] | None = None) -> list[dict]:
    """Current failures: latest row per image_id, leaving out images now in the cache."""
    latest: dict[str, dict] = {}
    for part in parts(Path(cache) / "ledger"):  # parts sort oldest first
        for row in pq.read_table(part, schema=SCHEMA).to_pylist():
            latest[row["image_id"]] = row
    cached = cached or set()
    return sorted((r for i, r in latest.items() if i not in cached), key=lambda r: r["image_id"])


def current(cache: Path) -> list[dict]:
    """The failures that count now: latest row per image_id, leaving out images since cached. Bounded
    by the failures, not the cache: only the ledgered ids are looked up in the cache's parts."""
    rows = read_ledger(cache)
    cached = cached_among(cache, {r["image_id"] for r in rows})
    return [r for r in rows if r["image_id"] not in cached]

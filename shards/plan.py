"""What `tokenize` reads: the unique images of a manifest that the cache lacks, streamed in blocks.

Two passes over the manifest, a record batch at a time, so the driver never holds the corpus:
  scan    the sorted digests of every image_id (16 bytes per image: digests.py) and which of them the
          cache holds (its parts streamed the same way); where the records of one image_id name
          different files or boxes, what its first record by key names (these images only)
  blocks  the same batches again: a record naming its image as its first record by key does, of an
          image not yet cached or planned, becomes a plan row (image_id, absolute path, its
          dataset's resolved raw folder, "x0,y0,x1,y1" or "")
So the plan does not depend on partition or record order, as when the whole manifest was sorted. On Ray, a Feeder actor on the driver's node runs `blocks` and
hands one block to each read task that asks, so nothing is planned ahead of the readers.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from facecorpus import manifest as mf
from facecorpus import storage
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import digests

COLUMNS = ["key", "dataset", "image", "image_id", "bbox"]
BLOCK = ("image_id", "path", "root", "bbox")  # a plan block's columns, what a read task gets
BATCH_ROWS = 65_536  # manifest records read at once: with the digests, what the driver holds


@dataclass
class Index:
    ids: np.ndarray      # sorted digests of the manifest's unique image_ids
    cached: np.ndarray   # bool per ids: the cache holds its codes
    # Images whose records name different files or boxes (an attributes record with a face box, a
    # caption without): digests, sorted, and the target of each one's first record by key.
    split_ids: np.ndarray
    split_target: np.ndarray

    @property
    def todo(self) -> int:
        return int(len(self.ids) - self.cached.sum())


def scan(manifest: Path, cache: Path | None = None) -> Index:
    """The manifest's unique images and, with `cache`, which of them it holds."""
    kind = [("id", digests.DIGEST), ("target", "V8")]
    pairs = []
    for batch in mf.iter_batches(manifest, COLUMNS, BATCH_ROWS):
        pair = np.empty(batch.num_rows, kind)
        pair["id"] = digests.of(batch.column("image_id").to_pylist())
        pair["target"] = _targets(batch)
        pairs.append(np.unique(pair))  # records of one image usually sit together: fewer bytes kept
    pairs = np.concatenate(pairs) if pairs else np.empty(0, kind)
    pairs.sort()
    ids = np.ascontiguousarray(pairs["id"][np.r_[True, pairs[1:] != pairs[:-1]]] if len(pairs) else pairs["id"])
    del pairs
    twice = np.r_[False, ids[1:] == ids[:-1]] if len(ids) else np.zeros(0, bool)
    split_ids = np.unique(ids[twice])
    ids = ids[~twice]
    index = Index(ids, np.zeros(len(ids), bool), split_ids, _first_by_key(manifest, split_ids))
    if cache:
        mark_cached(index, cache)
    return index


def _first_by_key(manifest: Path, split_ids: np.ndarray) -> np.ndarray:
    """For each of `split_ids`, the target of its record with the smallest key (one more pass; memory
    grows with these images only)."""
    best: dict[bytes, tuple[str, bytes]] = {}
    if len(split_ids):
        for batch in mf.iter_batches(manifest, COLUMNS, BATCH_ROWS):
            d = digests.of(batch.column("image_id").to_pylist())
            hit = np.flatnonzero(digests.lookup(split_ids, d) >= 0)
            if not len(hit):
                continue
            sub = batch.take(pa.array(hit))
            for digest, key, target in zip(d[hit], sub.column("key").to_pylist(), _targets(sub)):
                if key < best.get(digest.tobytes(), (key + "\uffff",))[0]:
                    best[digest.tobytes()] = (key, target.tobytes())
    return np.frombuffer(b"".join(best[d.tobytes()][1] for d in split_ids), "V8")


def mark_cached(index: Index, cache: Path) -> int:
    """Flag the images the cache holds (its parts read one at a time); how many of them it holds."""
    for part_ids in cache_mod.iter_ids(cache):
        at = digests.lookup(index.ids, digests.of(part_ids))
        index.cached[at[at >= 0]] = True
    return int(index.cached.sum())


def _targets(batch: pa.RecordBatch) -> np.ndarray:
    """8 bytes per record naming what it asks to encode: dataset, image and face box."""
    boxes = _boxes(batch.column("bbox"))
    return np.frombuffer(b"".join(hashlib.blake2b(f"{d}\0{i}\0{b}".encode(), digest_size=8).digest() for d, i, b in
                                  zip(batch.column("dataset").to_pylist(), batch.column("image").to_pylist(), boxes)),
                         "V8")


def _boxes(column: pa.Array) -> list[str]:
    return ["" if b is None else ",".join(str(int(v)) for v in b) for b in column.to_pylist()]


def blocks(manifest: Path, index: Index, rows: int, raw_root: Path | str | None = None) -> Iterator[dict]:
    """Plan blocks of `rows` images (the last may be short), each image once, none the cache holds."""
    done = index.cached.copy()  # cached, or planned already
    roots: dict[str, tuple[Path, str]] = {}
    buf = {k: np.array([], object) for k in BLOCK}
    for batch in mf.iter_batches(Path(manifest), COLUMNS, BATCH_ROWS):
        d = digests.of(batch.column("image_id").to_pylist())
        at = digests.lookup(index.ids, d)
        fresh = np.flatnonzero(~done[at] & _names_it(index, d, batch))
        _, first = np.unique(at[fresh], return_index=True)
        take = np.sort(fresh[first])
        done[at[take]] = True
        if not len(take):
            continue
        new = _rows(manifest, batch.take(pa.array(take)), roots, raw_root)
        buf = {k: np.concatenate([buf[k], new[k]]) for k in BLOCK}
        whole = len(buf["image_id"]) // rows * rows
        for start in range(0, whole, rows):
            yield {k: v[start:start + rows] for k, v in buf.items()}
        buf = {k: v[whole:] for k, v in buf.items()}
    if len(buf["image_id"]):
        yield buf


def _names_it(index: Index, d: np.ndarray, batch: pa.RecordBatch) -> np.ndarray:
    """Which records may name their image: all, except for an image whose records disagree, where
    only those asking for what its first record by key asks for (the plan then does not depend on
    partition or record order)."""
    ok = np.ones(len(d), bool)
    at = digests.lookup(index.split_ids, d)
    hit = np.flatnonzero(at >= 0)
    if len(hit):
        ok[hit] = _targets(batch.take(pa.array(hit))) == index.split_target[at[hit]]
    return ok


def _rows(manifest: Path, batch: pa.RecordBatch, roots: dict, raw_root: Path | str | None) -> dict:
    for d in pc.unique(batch.column("dataset")).to_pylist():
        if d not in roots:
            root = mf.image_root(manifest, d, raw_root)
            # A raw folder in object storage stays a URI: its images are read in place (reading.py).
            roots[d] = (root, root) if storage.is_remote(root) else (root, os.path.realpath(root))
    datasets = batch.column("dataset").to_pylist()
    return {"image_id": np.array(batch.column("image_id").to_pylist(), object),
            "path": np.array([f"{roots[d][0]}/{i}" if storage.is_remote(roots[d][0]) else str(roots[d][0] / i)
                              for d, i in zip(datasets, batch.column("image").to_pylist())], object),
            "root": np.array([roots[d][1] for d in datasets], object),
            "bbox": np.array(_boxes(batch.column("bbox")), object)}


def plan(manifest: Path, raw_root: Path | str | None = None) -> pd.DataFrame:
    """Every unique image of a manifest as one table (columns BLOCK): for tests and small manifests;
    tokenize streams `blocks` instead."""
    index = scan(manifest)
    parts = list(blocks(manifest, index, 65_536, raw_root))
    return pd.DataFrame({k: np.concatenate([p[k] for p in parts]) if parts else np.array([], object) for k in BLOCK})


class Feeder:
    """Ray actor on the driver's node: hands out the plan one block per call, None when it is done."""

    def __init__(self, manifest: str, index: Index, rows: int, raw_root: Path | str | None):
        self.blocks = blocks(Path(manifest), index, rows, raw_root)  # a URI stays a string

    def next(self) -> dict | None:
        return next(self.blocks, None)


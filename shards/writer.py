"""`facecorpus shard`: records joined with their image codes, shuffled, written as WebDataset tars.

    <out>/<split>/<kind>-NNNNNN.tar   exactly N samples each except the last of a (split, kind)
    <out>/index.json                  written last

What a sample and index.json hold is format.py's; this module decides which samples go where. The
same manifest, cache and seed give byte-identical tars: records are sorted by key before a seeded
global permutation, and format.write_tar writes members in a fixed order with fixed metadata. Each
tar is published atomically, so a killed run never leaves a truncated tar under a shard's name;
index.json is removed first and written last, so a folder with an index.json is always complete.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import format as fmt
from facecorpus.shards import ledger

from facecorpus import manifest as mf
from facecorpus.atomic import sweep
from facecorpus.codes import CodeGrid
from facecorpus.records import KINDS, SPLITS


class ShardError(ValueError):
    """Inputs that cannot be sharded as asked; the message names what is missing."""


def join(manifest: Path, cache: Path, grid: CodeGrid) -> tuple[pa.Table, np.ndarray, dict, np.ndarray]:
    """Records sorted by key, the row of each one's codes (-1: image ledgered), counts, the codes.
    A record whose image is neither cached nor ledgered stops the run: tokenize is unfinished."""
    table = mf.read_table(Path(manifest), columns=["key", "dataset", "split", "kind", "image_id", "text", "labels"])
    table = table.sort_by("key")
    codes = cache_mod.read_codes(cache, ["image_id", "codes"])
    row_of = {iid: i for i, iid in enumerate(codes.column("image_id").to_pylist())}
    failed = {r["image_id"] for r in ledger.read_ledger(cache, set(row_of))}
    ids = table.column("image_id").to_pylist()
    rows = np.array([row_of.get(i, -1) for i in ids], np.int64)
    absent = sorted({i for i, r in zip(ids, rows) if r < 0 and i not in failed})
    if absent:
        raise ShardError(f"{len(absent)} images of {manifest} are neither in the token cache {cache} nor in "
                         f"its ledger (e.g. {absent[:3]}): run `facecorpus tokenize` on this manifest first")
    flat = codes.column("codes").combine_chunks().flatten().to_numpy().reshape(-1, grid.count) if len(codes) \
        else np.zeros((0, grid.count), np.uint16)
    counts = {"records": len(ids), "skipped_ledgered_image": int((rows < 0).sum()),
              "images": len({i for i, r in zip(ids, rows) if r >= 0}),
              "ledgered_images": len({i for i, r in zip(ids, rows) if r < 0})}
    return table, rows, counts, flat


def shard(manifest: Path, cache: Path, out: Path, samples_per_shard: int = 1000, seed: int = 0,
          progress=None) -> dict:
    if samples_per_shard < 1:
        raise ShardError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    identity = cache_mod.read_identity(cache)
    grid = fmt.grid_of(identity["vqgan"], f"{Path(cache) / cache_mod.IDENTITY}: vqgan")
    table, rows, counts, flat = join(manifest, cache, grid)
    recs = table.to_pylist()
    samples = [(recs[i], flat[rows[i]]) for i in np.flatnonzero(rows >= 0)]
    return write(out, samples, identity, grid, counts, samples_per_shard, seed, progress)


def write(out: Path, samples: list[tuple[dict, np.ndarray]], identity: dict, grid: CodeGrid, counts: dict,
          samples_per_shard: int = 1000, seed: int = 0, progress=None) -> dict:
    """Sort (record, codes) pairs by key, shuffle them with `seed`, write them as tars of
    `samples_per_shard` per (split, kind), then index.json; returns index.json's counts.
    `identity` is the token cache's ({vqgan, preprocess}); `counts` the join's."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / fmt.INDEX).unlink(missing_ok=True)  # first: a folder with an index is complete
    for split in SPLITS:
        if (out / split).is_dir():
            sweep(out / split)   # what a killed run left half-written
    samples = sorted(samples, key=lambda s: s[0]["key"])
    groups: dict[tuple[str, str], list[int]] = {(s, k): [] for s in SPLITS for k in KINDS}
    for i in np.random.default_rng(seed).permutation(len(samples)):  # the global shuffle; groups keep its order
        groups[samples[i][0]["split"], samples[i][0]["kind"]].append(i)
    task = progress.add_task("shard", total=len(samples)) if progress else None
    shards = []
    for (split, kind), group in groups.items():
        for n, start in enumerate(range(0, len(group), samples_per_shard)):
            members = group[start:start + samples_per_shard]
            rel = f"{split}/{kind}-{n:06d}.tar"
            (out / split).mkdir(exist_ok=True)
            size, sha = fmt.write_tar(out / rel, [fmt.encode(*samples[i], grid) for i in members])
            shards.append(fmt.ShardEntry(rel, split, kind, len(members), size, sha))
            if progress:
                progress.advance(task, len(members))
    _remove_stale(out, {s.path for s in shards})
    by = {f"{s}/{k}": len(groups[s, k]) for s in SPLITS for k in KINDS}
    counts = {**counts, "samples": len(samples), "shards": len(shards), "by_split_kind": by}
    fmt.write_index(out, fmt.build_index(seed, samples_per_shard, identity["preprocess"], identity["vqgan"], grid,
                                         shards, counts))
    return counts


def _remove_stale(out: Path, planned: set[str]) -> None:
    """Tars of an earlier run with other inputs that this run did not rewrite."""
    for split in SPLITS:
        for kind in KINDS:
            for tar in (out / split).glob(f"{kind}-*.tar"):
                if f"{split}/{tar.name}" not in planned:
                    tar.unlink()

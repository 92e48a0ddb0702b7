"""`facecorpus shard`: records joined with their image codes, shuffled, written as WebDataset tars.

    <out>/<split>/<kind>-NNNNNN.tar   exactly N samples each except the last of a (split, kind)
    <out>/index.json                  written last (index.py)

The same manifest, cache and seed give byte-identical tars: records are sorted by key before a
seeded global permutation, members are written in a fixed order (json, npy, txt) with mtime 0,
owner 0/0 and mode 0444. Each tar is written under `.tmp` and renamed, so a killed run never leaves
a truncated tar under a shard's name; index.json is removed first and written last, so a folder
with an index.json is always complete.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import index as index_mod
from facecorpus.shards import ledger

from facecorpus import manifest as mf
from facecorpus.records import KINDS, SPLITS

GRID = 16
MEMBER_ORDER = ("json", "npy", "txt")


class ShardError(ValueError):
    """Inputs that cannot be sharded as asked; the message names what is missing."""


def sample_key(record_key: str) -> str:
    return record_key.replace("/", "-")


def npy_bytes(codes: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(codes, dtype="<u2").reshape(GRID, GRID), allow_pickle=False)
    return buf.getvalue()


def sample_members(rec: dict, codes: np.ndarray) -> dict[str, bytes]:
    meta = {"key": rec["key"], "dataset": rec["dataset"], "split": rec["split"], "kind": rec["kind"],
            "image_id": rec["image_id"], "labels": json.loads(rec["labels"])}
    return {"json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode(),
            "npy": npy_bytes(codes), "txt": rec["text"].encode()}


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> tuple[int, str]:
    """Write `samples` to `path` atomically; return (bytes, sha256)."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        with tarfile.open(fileobj=f, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, members in samples:
                for ext in MEMBER_ORDER:
                    data = members[ext]
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o444
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(data))
        f.flush()
        os.fsync(f.fileno())
    data = tmp.read_bytes()
    os.replace(tmp, path)
    return len(data), hashlib.sha256(data).hexdigest()


def join(manifest: Path, cache: Path) -> tuple[pa.Table, np.ndarray, dict, np.ndarray]:
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
    flat = codes.column("codes").combine_chunks().flatten().to_numpy().reshape(-1, cache_mod.CODES) if len(codes) \
        else np.zeros((0, cache_mod.CODES), np.uint16)
    counts = {"records": len(ids), "skipped_ledgered_image": int((rows < 0).sum()),
              "images": len({i for i, r in zip(ids, rows) if r >= 0}),
              "ledgered_images": len({i for i, r in zip(ids, rows) if r < 0})}
    return table, rows, counts, flat


def _clean(out: Path) -> None:
    (out / index_mod.INDEX).unlink(missing_ok=True)  # first: a folder with an index is complete
    for split in SPLITS:
        for tmp in (out / split).glob("*.tmp"):
            tmp.unlink()


def shard(manifest: Path, cache: Path, out: Path, samples_per_shard: int = 1000, seed: int = 0,
          progress=None) -> dict:
    if samples_per_shard < 1:
        raise ShardError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    identity = cache_mod.read_identity(cache)
    table, rows, counts, flat = join(manifest, cache)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clean(out)
    keep = np.flatnonzero(rows >= 0)
    order = keep[np.random.default_rng(seed).permutation(len(keep))]  # the global shuffle
    recs = table.to_pylist()
    groups: dict[tuple[str, str], list[int]] = {(s, k): [] for s in SPLITS for k in KINDS}
    for i in order:  # one pass; each group keeps the shuffled order
        groups[recs[i]["split"], recs[i]["kind"]].append(i)
    plan = []
    for (split, kind), group in groups.items():
        for n, start in enumerate(range(0, len(group), samples_per_shard)):
            plan.append((split, kind, n, group[start:start + samples_per_shard]))
    task = progress.add_task("shard", total=len(keep)) if progress else None
    shards = []
    for split, kind, n, members in plan:
        rel = f"{split}/{kind}-{n:06d}.tar"
        (out / split).mkdir(exist_ok=True)
        samples = [(sample_key(recs[i]["key"]), sample_members(recs[i], flat[rows[i]])) for i in members]
        size, sha = write_tar(out / rel, samples)
        shards.append({"path": rel, "split": split, "kind": kind, "count": len(members), "bytes": size, "sha256": sha})
        if progress:
            progress.advance(task, len(members))
    _remove_stale(out, {s["path"] for s in shards})
    by = {f"{s}/{k}": sum(x["count"] for x in shards if x["split"] == s and x["kind"] == k)
          for s in SPLITS for k in KINDS}
    counts = {**counts, "samples": len(keep), "shards": len(shards), "by_split_kind": by}
    index_mod.write(out, index_mod.build(seed, samples_per_shard, identity["preprocess"], identity["vqgan"], shards, counts))
    return counts


def _remove_stale(out: Path, planned: set[str]) -> None:
    """Tars of an earlier run with other inputs that this run did not rewrite."""
    for split in SPLITS:
        for kind in KINDS:
            for tar in (out / split).glob(f"{kind}-*.tar"):
                if f"{split}/{tar.name}" not in planned:
                    tar.unlink()

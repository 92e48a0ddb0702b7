"""`facecorpus shard`: records joined with their image codes, shuffled, written as WebDataset tars.

    <out>/<split>/<kind>-NNNNNN.tar   exactly N samples each except the last of a (split, kind)
    <out>/index.json                  written last

What a sample and index.json hold is format.py's; this module decides which samples go where, with
memory bounded by a shard and a batch, not by the corpus (an external shuffle):
  join    the manifest streamed a batch at a time; each record's codes found by its image's digest
          in a flat copy of the cache's codes (one seek per record; 25 bytes per image held)
  spill   each sample, encoded, goes to one of B bucket files by the top bits of its order: blake2b-64
          of its key keyed with the seed (digests.order), a uniformly random order, so bucket b holds
          the b-th slice of every (split, kind)'s shuffled sequence
  write   bucket by bucket, each (split, kind)'s samples sorted by (order, key) fill its tars in turn
The same manifest, cache and seed give byte-identical tars whatever the input order: the order is a
function of key and seed alone, and format.write_tar writes members in a fixed order with fixed
metadata. Each tar is published atomically, so a killed run never leaves a truncated tar under a
shard's name; index.json is removed first and written last, so a folder with an index.json is
always complete. The spill folder lives under OUT and is removed when the run ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facecorpus import arrowpool
from facecorpus import manifest as mf
from facecorpus.atomic import sweep
from facecorpus.codes import CODE_DTYPE, CodeGrid
from facecorpus.records import KINDS, SPLITS
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import digests, ledger
from facecorpus.shards import format as fmt

GROUPS = [(s, k) for s in SPLITS for k in KINDS]
BUCKET_SAMPLES = 16_384   # samples per spill bucket on average: what phase `write` holds at once, with a shard
MAX_BITS = 9              # at most 512 bucket files open at once (file descriptors); past 8M samples buckets grow
SPILL_BYTES = 32 << 20    # encoded samples buffered before they are appended to their bucket files
SPILL = pa.schema([("order", pa.uint64()), ("name", pa.string()), ("group", pa.int8()),
                   ("json", pa.binary()), ("npy", pa.binary()), ("txt", pa.binary())])
COLUMNS = ["key", "dataset", "split", "kind", "image_id", "text", "labels"]
BATCH_ROWS = 16_384       # manifest records read at once


class ShardError(ValueError):
    """Inputs that cannot be sharded as asked; the message names what is missing."""


class Codes:
    """The cache's codes in one flat temporary file, found by image digest: a record's codes are read
    back with one pread, so the cache is never held in memory (first write wins, as in read_codes)."""

    def __init__(self, cache: Path, grid: CodeGrid, folder: Path):
        self.width = grid.count * 2  # bytes of one image's uint16 codes
        self.path = Path(folder) / "codes.bin"
        found = []
        schema = cache_mod.codes_schema(grid)
        with open(self.path, "wb") as f:
            for part in cache_mod.parts(Path(cache) / "codes"):
                t = pq.read_table(part, columns=["image_id", "codes"], schema=schema)
                f.write(t.column("codes").combine_chunks().flatten().to_numpy().astype("<u2").tobytes())
                found.append(digests.of(t.column("image_id").to_pylist()))
        ids = np.concatenate(found) if found else np.empty(0, digests.DIGEST)
        order = np.argsort(ids, kind="stable")
        ids = ids[order]
        first = np.r_[True, ids[1:] != ids[:-1]] if len(ids) else np.zeros(0, bool)
        self.ids, self.rows = ids[first], order[first]
        self.used = np.zeros(len(self.ids), bool)  # images some record took: the `images` count
        self.fd = os.open(self.path, os.O_RDONLY)

    def find(self, image_ids: list[str]) -> np.ndarray:
        return digests.lookup(self.ids, digests.of(image_ids))

    def read(self, at: int) -> np.ndarray:
        self.used[at] = True
        data = os.pread(self.fd, self.width, int(self.rows[at]) * self.width)
        return np.frombuffer(data, "<u2").astype(CODE_DTYPE)

    def close(self) -> None:
        os.close(self.fd)


def join(manifest: Path, cache: Path, codes: Codes, counts: dict) -> Iterator[tuple[dict, np.ndarray]]:
    """(record, codes) of every record whose image is cached, streamed; fills `counts` as it goes. A
    record whose image is neither cached nor ledgered stops the run once all are seen (nothing is
    written before): tokenize is unfinished."""
    failed = {r["image_id"] for r in ledger.current(cache)}
    ledgered, absent, n_absent = set(), [], 0
    for batch in mf.iter_batches(Path(manifest), COLUMNS, BATCH_ROWS):
        records = batch.to_pylist()
        for rec, at in zip(records, codes.find(batch.column("image_id").to_pylist())):
            counts["records"] += 1
            if at >= 0:
                yield rec, codes.read(at)
            elif rec["image_id"] in failed:
                counts["skipped_ledgered_image"] += 1
                ledgered.add(rec["image_id"])
            else:
                n_absent += 1
                absent = absent if len(absent) >= 3 or rec["image_id"] in absent else absent + [rec["image_id"]]
    if n_absent:
        raise ShardError(f"{n_absent} records' images of {manifest} are neither in the token cache {cache} nor in "
                         f"its ledger (e.g. {absent}): run `facecorpus tokenize` on this manifest first")
    counts.update(images=int(codes.used.sum()), ledgered_images=len(ledgered))


def shard(manifest: Path, cache: Path, out: Path, samples_per_shard: int = 1000, seed: int = 0,
          progress=None) -> dict:
    if samples_per_shard < 1:
        raise ShardError(f"--samples-per-shard must be >= 1, got {samples_per_shard}")
    arrowpool.use_returning_pool()  # streamed manifest, spill and buckets: memory flat as the corpus grows
    identity = cache_mod.read_identity(cache)
    grid = fmt.grid_of(identity["vqgan"], f"{Path(cache) / cache_mod.IDENTITY}: vqgan")
    with _spill_folder(out) as tmp:
        codes = Codes(cache, grid, tmp)
        try:
            counts = {"records": 0, "skipped_ledgered_image": 0}
            expected = mf.count_records(manifest)
            return _write(out, join(manifest, cache, codes, counts), expected, identity, grid, counts,
                          samples_per_shard, seed, progress, tmp)
        finally:
            codes.close()


def write(out: Path, samples: list[tuple[dict, np.ndarray]], identity: dict, grid: CodeGrid, counts: dict,
          samples_per_shard: int = 1000, seed: int = 0, progress=None) -> dict:
    """(record, codes) pairs in any order -> tars of `samples_per_shard` per (split, kind), shuffled
    with `seed`, then index.json; returns index.json's counts. `identity` is the token cache's
    ({vqgan, preprocess}); `counts` the join's."""
    with _spill_folder(out) as tmp:
        return _write(out, samples, len(samples), identity, grid, dict(counts), samples_per_shard, seed, progress, tmp)


@contextlib.contextmanager
def _spill_folder(out: Path) -> Iterator[Path]:
    """OUT/.spill-*: the run's buckets and codes copy, on the shards' disk; removed when the run ends,
    and what a killed run left is removed first."""
    Path(out).mkdir(parents=True, exist_ok=True)
    for old in Path(out).glob(".spill-*"):
        shutil.rmtree(old, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".spill-", dir=out) as tmp:
        yield Path(tmp)


def _write(out: Path, samples: Iterable[tuple[dict, np.ndarray]], expected: int, identity: dict, grid: CodeGrid,
           counts: dict, samples_per_shard: int, seed: int, progress, tmp: Path) -> dict:
    out = Path(out)
    (out / fmt.INDEX).unlink(missing_ok=True)  # first: a folder with an index is complete
    for split in SPLITS:
        if (out / split).is_dir():
            sweep(out / split)   # what a killed run left half-written
    bits = min(MAX_BITS, max(0, int(np.ceil(np.log2(max(1, expected / BUCKET_SAMPLES))))))
    n = _spill(samples, seed, grid, bits, tmp, progress, expected)
    task = progress.add_task("shard", total=n) if progress else None
    shards, sizes = _fill(out, tmp, 1 << bits, samples_per_shard, progress, task)
    _remove_stale(out, {s.path for s in shards})
    counts = {**counts, "samples": n, "shards": len(shards), "by_split_kind": sizes}
    fmt.write_index(out, fmt.build_index(seed, samples_per_shard, identity["preprocess"], identity["vqgan"], grid,
                                         shards, counts))
    return counts


def _spill(samples: Iterable[tuple[dict, np.ndarray]], seed: int, grid: CodeGrid, bits: int, tmp: Path,
           progress, expected: int) -> int:
    """Encode every sample into bucket file `order >> (64 - bits)`; how many samples there were."""
    files = [pa.ipc.new_stream(str(tmp / f"bucket-{b:05d}.arrow"), SPILL) for b in range(1 << bits)]
    rows: list[list] = [[] for _ in files]
    held = n = 0
    task = progress.add_task("join", total=expected) if progress else None
    for rec, codes in samples:
        order = int(digests.order([rec["key"]], seed)[0])
        b = order >> (64 - bits) if bits else 0
        name, members = fmt.encode(rec, codes, grid)
        rows[b].append((order, name, GROUPS.index((rec["split"], rec["kind"])),
                        members["json"], members["npy"], members["txt"]))
        held += len(members["json"]) + len(members["npy"]) + len(members["txt"]) + len(name)
        n += 1
        if held >= SPILL_BYTES:
            held = _flush(files, rows)
        if progress and n % 4096 == 0:
            progress.update(task, completed=n)
    _flush(files, rows)
    for f in files:
        f.close()
    return n


def _flush(files: list, rows: list[list]) -> int:
    for f, r in zip(files, rows):
        if r:
            f.write_table(pa.table(list(zip(*r)), schema=SPILL))
            r.clear()
    return 0


def _fill(out: Path, tmp: Path, buckets: int, per_shard: int, progress, task) -> tuple[list, dict]:
    """Buckets in order; in each, every (split, kind)'s samples by (order, key) fill its next tars."""
    pending: dict[int, list] = {g: [] for g in range(len(GROUPS))}
    made: dict[int, int] = dict.fromkeys(pending, 0)
    sizes: dict[int, int] = dict.fromkeys(pending, 0)
    shards: list[fmt.ShardEntry] = []
    for b in range(buckets):
        path = tmp / f"bucket-{b:05d}.arrow"
        with pa.ipc.open_stream(str(path)) as reader:
            table = reader.read_all().sort_by([("order", "ascending"), ("name", "ascending")])
        path.unlink()
        groups = table.column("group").to_numpy()
        for g in range(len(GROUPS)):
            sub = table.filter(pa.array(groups == g))
            pending[g] += zip(sub.column("name").to_pylist(), sub.column("json").to_pylist(),
                              sub.column("npy").to_pylist(), sub.column("txt").to_pylist())
            sizes[g] += sub.num_rows
            last = b == buckets - 1
            while len(pending[g]) >= per_shard or (last and pending[g]):
                members, pending[g] = pending[g][:per_shard], pending[g][per_shard:]
                shards.append(_tar(out, GROUPS[g], made[g], members))
                made[g] += 1
                if progress:
                    progress.advance(task, len(members))
    return shards, {f"{s}/{k}": sizes[g] for g, (s, k) in enumerate(GROUPS)}


def _tar(out: Path, group: tuple[str, str], n: int, members: list[tuple]) -> fmt.ShardEntry:
    split, kind = group
    rel = f"{split}/{kind}-{n:06d}.tar"
    (out / split).mkdir(exist_ok=True)
    size, sha = fmt.write_tar(out / rel, [(name, {"json": j, "npy": a, "txt": t}) for name, j, a, t in members])
    return fmt.ShardEntry(rel, split, kind, len(members), size, sha)


def _remove_stale(out: Path, planned: set[str]) -> None:
    """Tars of an earlier run with other inputs that this run did not rewrite."""
    for split in SPLITS:
        for kind in KINDS:
            for tar in (out / split).glob(f"{kind}-*.tar"):
                if f"{split}/{tar.name}" not in planned:
                    tar.unlink()

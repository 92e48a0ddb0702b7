"""Memory stays flat as the corpus grows: tokenize's plan and the shard writer hold a batch, a bucket
and a shard, plus a few bytes per image, never the corpus; the external shuffle's buckets do not
change a byte of the shards. Sizes are small and the knobs (batch rows, bucket samples, spill
buffer) are turned down so that a few thousand records span many batches and buckets; the
figures at scale are benchmarks/memory.py's.
"""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from facecorpus import arrowpool, records
from facecorpus import manifest as mf
from facecorpus.codes import FFHQ_F16
from facecorpus.preprocess import POLICY
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import plan as plan_mod
from facecorpus.shards import writer

IDENTITY = {"name": "null-encoder", "config_sha256": "null", "checkpoint_sha256": "null", **FFHQ_F16.as_dict()}


def corpus(root: Path, n: int, captions: bool = True, part_rows: int = 256) -> tuple[Path, Path]:
    """A manifest of `n` images (every other one with a caption too) and a cache holding all their
    codes; no image files: neither the plan nor the writer opens one."""
    recs = []
    for i in range(n):
        rec = records.attributes("celeba", f"i{i:07d}", f"img/i{i:07d}.jpg", {"gender": "female"},
                                 image_id=f"celeba/i{i:07d}")
        rec.split = ("train", "train", "val", "test")[i % 4]
        recs.append(rec)
        if captions and i % 2 == 0:
            cap = records.caption("celeba", f"i{i:07d}", f"img/i{i:07d}.jpg", f"a face number {i}", 0,
                                  image_id=f"celeba/i{i:07d}")
            cap.split = rec.split
            recs.append(cap)
    manifest = root / "manifest"
    mf.write_partition(mf.to_table(recs), manifest, "celeba")
    (manifest / mf.SUMMARY).write_text(json.dumps({"datasets": {"celeba": {"raw_dir": str(root / "raw"),
                                                                          "records": len(recs)}}}))
    cache = cache_mod.open_cache(root / "cache", IDENTITY, POLICY)
    codes = np.random.default_rng(n).integers(0, 1024, (n, FFHQ_F16.count))
    for start in range(0, n, part_rows):  # tokenize --part-rows: what a reader of the cache holds at once
        ids = [f"celeba/i{i:07d}" for i in range(start, min(n, start + part_rows))]
        cache_mod.write_part(cache / "codes", cache_mod.codes_table(ids, codes[start:start + len(ids)], IDENTITY))
    return manifest, cache


def peak(run) -> int:
    """Peak bytes Python allocated while `run()` ran (tracemalloc: NumPy and Arrow's Python-side buffers
    included; Arrow's own pool is not, which is why the knobs keep its batches small too)."""
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture
def small_knobs(monkeypatch):
    monkeypatch.setattr(plan_mod, "BATCH_ROWS", 256)
    monkeypatch.setattr(writer, "BATCH_ROWS", 256)
    monkeypatch.setattr(writer, "BUCKET_SAMPLES", 256)
    monkeypatch.setattr(writer, "SPILL_BYTES", 64 << 10)


def test_the_plan_holds_a_batch_and_a_few_bytes_per_image(tmp_path, small_knobs):
    sizes = {}
    for n in (1000, 4000):
        manifest, cache = corpus(tmp_path / str(n), n)
        index = plan_mod.scan(manifest)

        def drain(manifest=manifest, index=index):
            for _ in plan_mod.blocks(manifest, index, 32):
                pass

        sizes[n] = peak(lambda manifest=manifest, cache=cache: plan_mod.scan(manifest, cache)), peak(drain)
    for step in (0, 1):  # scan, then the blocks
        per_image = (sizes[4000][step] - sizes[1000][step]) / 3000
        assert per_image < 100, (step, sizes)  # main: the plan was a DataFrame of every image (~1 KB each)


def test_shard_memory_is_a_bucket_and_a_shard_not_the_corpus(tmp_path, small_knobs):
    got = {}
    for n in (1000, 4000):
        manifest, cache = corpus(tmp_path / str(n), n)
        got[n] = peak(lambda manifest=manifest, cache=cache, n=n: writer.shard(manifest, cache, tmp_path / f"s{n}",
                                                                             samples_per_shard=50))
    assert (got[4000] - got[1000]) / 3000 < 100, got  # main: every record and its codes as Python objects


@pytest.fixture
def mimalloc_pool(monkeypatch):
    """pyarrow's default pool on Linux, as a process starts: restored afterwards."""
    was = pa.default_memory_pool()
    monkeypatch.delenv(arrowpool.ENV, raising=False)
    pa.set_memory_pool(pa.mimalloc_memory_pool())
    yield
    pa.set_memory_pool(was)


def test_shard_streams_through_arrows_system_pool(tmp_path, mimalloc_pool):
    manifest, cache = corpus(tmp_path, 50)
    writer.shard(manifest, cache, tmp_path / "s")
    # main: mimalloc, which kept ~80 MB of a 600,000-record manifest's freed batches (system: ~18 MB)
    assert pa.default_memory_pool().backend_name == arrowpool.BACKEND == "system"


def test_the_facecorpus_command_names_the_system_pool_before_pyarrow_starts():
    """Arrow's C++ code (Parquet, IPC, Ray Data's conversions) takes its pool from the environment when
    pyarrow starts: set by facecorpus.cli before any command imports pyarrow; a user's choice stays."""
    import os
    import subprocess
    import sys

    probe = "import facecorpus.cli, pyarrow as pa, os; print(os.environ[%r], pa.default_memory_pool().backend_name)"
    env = {k: v for k, v in os.environ.items() if k != arrowpool.ENV}
    got = [subprocess.run([sys.executable, "-c", probe % arrowpool.ENV], env={**env, **extra}, capture_output=True,
                          text=True, check=True).stdout.split() for extra in ({}, {arrowpool.ENV: "jemalloc"})]
    assert got == [["system", "system"], ["jemalloc", "jemalloc"]]  # main: KeyError (mimalloc)


def test_a_pool_the_user_names_is_kept(monkeypatch, mimalloc_pool):
    monkeypatch.setenv(arrowpool.ENV, "mimalloc")
    assert arrowpool.use_returning_pool() == "mimalloc"


def test_spill_buckets_change_no_byte_of_the_shards(tmp_path, monkeypatch):
    manifest, cache = corpus(tmp_path, 600)
    one = writer.shard(manifest, cache, tmp_path / "one", samples_per_shard=40, seed=3)
    monkeypatch.setattr(writer, "BUCKET_SAMPLES", 64)  # 16 buckets, flushed often, batches of 100
    monkeypatch.setattr(writer, "SPILL_BYTES", 16 << 10)
    monkeypatch.setattr(writer, "BATCH_ROWS", 100)
    many = writer.shard(manifest, cache, tmp_path / "many", samples_per_shard=40, seed=3)
    tars = {p.relative_to(tmp_path / "one").as_posix(): p.read_bytes() for p in (tmp_path / "one").rglob("*.tar")}
    assert tars and tars == {p.relative_to(tmp_path / "many").as_posix(): p.read_bytes()
                             for p in (tmp_path / "many").rglob("*.tar")}
    assert one == many and one["samples"] == 900 and one["images"] == 600
    assert not list(tmp_path.glob("*/.spill-*"))  # the spill folder goes with the run


def test_the_shuffle_mixes_the_whole_split_not_neighbours(tmp_path):
    manifest, cache = corpus(tmp_path, 2000, captions=False)
    writer.shard(manifest, cache, tmp_path / "s", samples_per_shard=100, seed=0)
    index = json.loads((tmp_path / "s" / "index.json").read_text())
    first = next(e for e in index["shards"] if e["path"] == "train/attributes-000000.tar")
    import tarfile

    with tarfile.open(tmp_path / "s" / first["path"]) as tar:
        numbers = sorted(int(m.name.split("-")[1][1:]) for m in tar.getmembers() if m.name.endswith(".txt"))
    # 100 of the 1,000 train images, drawn from all of them: spread over the whole range, not a run of keys
    assert numbers[0] < 100 and numbers[-1] > 1900 and len(set(np.diff(numbers))) > 10, numbers

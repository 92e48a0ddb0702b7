"""kill -9 during `tokenize` and during `shard` at random points, rerun: the shards are
byte-identical to an uninterrupted run and no truncated tar or cache part is ever left behind."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from facecorpus.shards.writer import shard
from tokenkit import make_manifest, tokenize_in_process

TOKENIZE_TRIALS, SHARD_TRIALS = 4, 6  # 10 kills in all; a tokenize start costs Ray + torch imports
CLI = [sys.executable, "-c", "from facecorpus.cli import main; main()"]


def _start(args: list[str]) -> subprocess.Popen:
    # Own session, so the kill reaches the embedded Ray processes too (the whole job dies at once).
    return subprocess.Popen(CLI + args, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(proc: subprocess.Popen, ready, delay: float, timeout: float = 120) -> bool:
    """Wait for `ready()` (work under way), then `delay` s more, then SIGKILL the session; False if it ended first."""
    end = time.monotonic() + timeout
    while proc.poll() is None and not ready() and time.monotonic() < end:
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def _written_since(out: Path, t0: float) -> bool:
    for p in out.rglob("*.tar*"):
        try:
            if p.stat().st_mtime > t0:
                return True
        except FileNotFoundError:  # a .tmp renamed under our feet: writing is under way
            return True
    return False


def _tars(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.tar"))}


def _assert_no_truncated_files(cache: Path, out: Path) -> None:
    for part in cache.rglob("*.parquet"):
        pq.read_table(part)  # a truncated part would not parse
    for tar in out.rglob("*.tar"):
        with tarfile.open(tar) as t:
            for m in t:
                assert len(t.extractfile(m).read()) == m.size, f"{tar} truncated"


def _assert_whole_if_indexed(out: Path, ref: Path) -> None:
    """index.json is removed first and written last, so a folder that has one is complete, whatever
    the exit code: a kill that lands after the write (rc -9 with a whole index) is no failure, and an
    index beside missing or different tars always is."""
    if (out / "index.json").exists():
        assert _tars(out) == _tars(ref), f"{out}/index.json beside tars that differ from an uninterrupted run's"
        assert (out / "index.json").read_bytes() == (ref / "index.json").read_bytes()


def test_a_kill_after_index_json_is_no_failure_and_an_index_beside_missing_tars_is(tmp_path):
    manifest = make_manifest(tmp_path, 6, seed=4)
    tokenize_in_process(manifest, tmp_path / "cache")
    shard(manifest, tmp_path / "cache", tmp_path / "ref", samples_per_shard=2, seed=1)
    shutil.copytree(tmp_path / "ref", tmp_path / "out")  # killed after index.json: whole (main's check: rc != 0 fails)
    _assert_whole_if_indexed(tmp_path / "out", tmp_path / "ref")
    next((tmp_path / "out").rglob("*.tar")).unlink()
    with pytest.raises(AssertionError, match="differ"):
        _assert_whole_if_indexed(tmp_path / "out", tmp_path / "ref")
    (tmp_path / "out" / "index.json").unlink()  # killed before index.json: nothing is claimed
    _assert_whole_if_indexed(tmp_path / "out", tmp_path / "ref")


@pytest.mark.slow
def test_kill_9_during_tokenize_and_shard_then_resume(tmp_path):
    rng = random.Random(0)
    manifest = make_manifest(tmp_path, 48, seed=3)
    tokenize_in_process(manifest, tmp_path / "ref-cache")
    shard(manifest, tmp_path / "ref-cache", tmp_path / "ref", samples_per_shard=1, seed=9)
    reference = _tars(tmp_path / "ref")

    cache, out = tmp_path / "cache", tmp_path / "out"
    killed = 0
    for _ in range(TOKENIZE_TRIALS):
        before = len(list((cache / "codes").glob("*.parquet")))
        proc = _start(["tokenize", str(manifest), "--cache", str(cache), "--part-rows", "4", "--batch-size", "4"])
        killed += _kill_when(proc, lambda before=before: len(list((cache / "codes").glob("*.parquet"))) > before,
                             rng.uniform(0, 1.5))
        _assert_no_truncated_files(cache, out)
    assert killed >= 1, "the kills came too late to interrupt tokenize"
    proc = _start(["tokenize", str(manifest), "--cache", str(cache), "--part-rows", "4", "--batch-size", "4"])
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()[-3000:]

    killed = 0
    for _ in range(SHARD_TRIALS):
        t0 = time.time()
        proc = _start(["shard", str(manifest), "--cache", str(cache), "--out", str(out),
                       "--samples-per-shard", "1", "--seed", "9"])
        killed += _kill_when(proc, lambda t0=t0: _written_since(out, t0), rng.uniform(0, 0.05))
        _assert_no_truncated_files(cache, out)
        _assert_whole_if_indexed(out, tmp_path / "ref")
    assert killed >= 1, "the kills came too late to interrupt shard"
    proc = _start(["shard", str(manifest), "--cache", str(cache), "--out", str(out), "--samples-per-shard", "1", "--seed", "9"])
    assert proc.wait(timeout=120) == 0, proc.stderr.read().decode()[-3000:]
    assert _tars(out) == reference
    assert (out / "index.json").read_bytes() == (tmp_path / "ref" / "index.json").read_bytes()
    assert not list(out.rglob("*.tmp"))

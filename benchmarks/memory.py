"""Peak driver memory of `tokenize` and `shard` as the corpus grows: flat, not so many bytes per image.

    .venv/bin/python benchmarks/memory.py [--tokenize-sizes 10000,50000,200000] [--shard-sizes 10000,200000,400000]
                                          [--engine ray] [--no-record]

tokenize, for each size: an img2dataset `webdataset` output of SIZE URLs (converters/samples/
img2dataset.py: images in tars, every one the same 128x128 JPEG, which its face boxes fit), converted
to a manifest, then `tokenize` in a fresh process with a no-op encoder (tests/tokenkit.py's
null_vqgan: the run measures the driver, not a model) into a new cache. shard, for each size: a
manifest of SIZE images (every other one with a caption too) and a cache of their codes written
directly (shard never opens an image), then `shard` in a fresh process. Reported per step: the
process's peak resident memory (VmHWM: the driver alone, Ray's workers are other processes; shared
pages of Ray's object store that the driver touched count too) and its peak heap (RssAnon, sampled),
and from each size to the next the growth per image. Target (issue 11): under 100 bytes per image, the
driver bounded by a part, not by the corpus. shard's fixed buffers (the 32 MiB spill buffer, a bucket
of ~16,384 samples) are not full at 10,000 images (15,000 samples), so its third size, past them, shows
the slope that stays.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

from facecorpus.converters import pipeline
from facecorpus.converters.samples import img2dataset as web_sample


def web_corpus(root: Path, n: int) -> None:
    """An img2dataset output of `n` URLs, converted: ROOT/manifest."""
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (120, 170, 228)).save(buf, "JPEG", quality=90)
    web_sample.write(root / "web", seed=0, n=n, per_shard=10_000, image=buf.getvalue())
    pipeline.convert({"web": root / "web"}, root / "manifest", converters={"web": "img2dataset"},
                     overrides={"web": web_sample.OPTIONS}, jobs=1)


def coded_corpus(root: Path, n: int) -> None:
    """ROOT/manifest of `n` images and ROOT/cache holding codes for all of them (tests/test_scale.py's)."""
    from test_scale import corpus

    corpus(root, n, part_rows=4096)


class Sampler(threading.Thread):
    """Peaks of this process's resident memory by kind (/proc/self/status, every 50 ms): RssAnon is the
    driver's own heap; RssShmem the pages of Ray's object store (shared memory) it has touched reading
    the encoder's output, which grow with the bytes passed until the store's size, not per image held."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak = {"RssAnon": 0, "RssShmem": 0}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.05):
            self.sample()

    def sample(self) -> None:
        for line in Path("/proc/self/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in self.peak:
                self.peak[name] = max(self.peak[name], int(value.split()[0]) * 1024)


def measure(step: str, manifest: str, cache: str, out: str, engine: str) -> None:
    """In this (fresh) process: one step, then its counts and peak memory as JSON on stdout."""
    sampler = Sampler()
    sampler.start()
    t0 = time.perf_counter()
    if step == "tokenize":
        from facecorpus.shards.tokenization import Options, tokenize
        from tokenkit import null_vqgan

        counts = tokenize(Path(manifest), Path(cache), Options(engine=engine, part_rows=4096), load_model=null_vqgan)
        done = {k: counts[k] for k in ("unique_images", "cached", "ledgered", "accounted")}
    else:
        from facecorpus.shards.writer import shard

        counts = shard(Path(manifest), Path(cache), Path(out))
        done = {k: counts[k] for k in ("records", "samples", "shards")}
    sampler.done.set()
    sampler.sample()
    # VmHWM, not ru_maxrss: Linux carries a parent's maxrss into a forked child, so ru_maxrss would
    # report this runner's own peak (it built the corpus) for every step.
    peak = next(int(line.split()[1]) * 1024 for line in Path("/proc/self/status").read_text().splitlines()
                if line.startswith("VmHWM:"))
    print(json.dumps({"peak": peak, "anon": sampler.peak["RssAnon"], "shmem": sampler.peak["RssShmem"],
                      "seconds": time.perf_counter() - t0, **done}))


def run_step(step: str, root: Path, engine: str) -> dict:
    cmd = [sys.executable, __file__, "--measure", step, str(root / "manifest"), str(root / "cache"),
           str(root / "shards"), "--engine", engine]
    # The facecorpus command names Arrow's system pool before pyarrow starts (facecorpus/arrowpool.py):
    # the step runs as it would there.
    env = {**os.environ, "ARROW_DEFAULT_MEMORY_POOL": os.environ.get("ARROW_DEFAULT_MEMORY_POOL", "system")}
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if out.returncode:
        raise SystemExit(f"{step} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _growth(step: str, got: dict[int, dict]) -> list[str]:
    """Bytes more per image from each size to the next (a third size shows whether the curve is flat,
    or whether fixed buffers were still filling to their caps between the first two)."""
    sizes = sorted(got)
    lines = []
    for small, big in zip(sizes, sizes[1:]):
        a, b = got[small], got[big]
        per = {k: (b[k] - a[k]) / (big - small) for k in ("peak", "anon", "shmem")}
        lines.append(f"- {step}, from {small:,} to {big:,} images: **heap {per['anon']:,.1f} bytes more per "
                     f"image** (target: under 100); peak RSS {per['peak']:,.1f}, of which object-store pages "
                     f"{per['shmem']:,.1f}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokenize-sizes", default="10000,50000,200000", help="images (URLs) of tokenize's corpora")
    ap.add_argument("--shard-sizes", default="10000,200000,400000",
                    help="images of shard's corpora (from 10,000 to 200,000 its spill buffer and buckets fill "
                         "to their caps; 200,000 to 400,000 is past them)")
    ap.add_argument("--engine", choices=["ray", "local"], default="ray")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    ap.add_argument("--measure", nargs=4, metavar=("STEP", "MANIFEST", "CACHE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(*args.measure, engine=args.engine)
    load = os.getloadavg()[0]
    lines = ["| step | images | counts | seconds | peak RSS (MiB) | peak heap, RssAnon (MiB) | peak object-store "
             "pages, RssShmem (MiB) |", "|---|---:|---|---:|---:|---:|---:|"]
    growth = []
    with tempfile.TemporaryDirectory() as tmp:
        for step, sizes, make in (("shard", args.shard_sizes, coded_corpus), ("tokenize", args.tokenize_sizes, web_corpus)):
            got = {}
            for n in (int(v) for v in sizes.split(",") if v):
                root = Path(tmp) / f"{step}-{n}"
                make(root, n)
                got[n] = r = run_step(step, root, args.engine)
                print(step, n, r, flush=True)
                counts = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("peak", "anon", "shmem", "seconds"))
                lines.append(f"| {step} | {n:,} | {counts} | {r['seconds']:.1f} | {r['peak'] / 2**20:,.1f} | "
                             f"{r['anon'] / 2**20:,.1f} | {r['shmem'] / 2**20:,.1f} |")
            growth += _growth(step, got)
    lines += ["", *growth, f"- engine {args.engine}, no-op encoder",
              f"- load average when the run started: {load:.1f} on {os.cpu_count()} cores"]
    _results.append("memory: peak driver memory of tokenize and shard as the corpus grows", lines,
                    record=not args.no_record)


if __name__ == "__main__":
    main()

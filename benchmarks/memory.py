"""Peak driver memory of `tokenize` and `shard` as the corpus grows: flat, not so many bytes per image.

    .venv/bin/python benchmarks/memory.py [--sizes 10000,200000] [--engine ray] [--no-record]

For each size, in one run: an img2dataset `webdataset` output of SIZE URLs (converters/samples/
img2dataset.py: images in tars, every one the same small JPEG), converted to a manifest; then, each
in a fresh process, `tokenize` (a no-op encoder, tests/tokenkit.py's null_vqgan, so the run measures
the driver and not a model) into a new cache and `shard` from it. Reported per step: the process's
peak resident memory (ru_maxrss: the driver alone, Ray's workers are other processes; shared pages of
Ray's object store that the driver touched count too), and between the sizes the growth per image.
Target (issue 11): under 100 bytes per image, the driver bounded by a part, not by the corpus.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import io
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from facecorpus.converters import pipeline
from facecorpus.converters.samples import img2dataset as web_sample


def corpus(root: Path, n: int) -> Path:
    """An img2dataset output of `n` URLs, converted: the manifest folder."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 170, 228)).save(buf, "JPEG", quality=90)  # decodes in microseconds
    web_sample.write(root / "web", seed=0, n=n, per_shard=10_000, image=buf.getvalue())
    pipeline.convert({"web": root / "web"}, root / "manifest", converters={"web": "img2dataset"},
                     overrides={"web": web_sample.OPTIONS}, jobs=1)
    return root / "manifest"


def measure(step: str, manifest: str, cache: str, out: str, engine: str) -> None:
    """In this (fresh) process: one step, then its counts and peak memory as JSON on stdout."""
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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps({"peak": peak, "seconds": time.perf_counter() - t0, **done}))


def run_step(step: str, root: Path, engine: str) -> dict:
    cmd = [sys.executable, __file__, "--measure", step, str(root / "manifest"), str(root / "cache"),
           str(root / "shards"), "--engine", engine]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"{step} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,200000", help="URLs of the small and the large corpus")
    ap.add_argument("--engine", choices=["ray", "local"], default="ray")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    ap.add_argument("--measure", nargs=4, metavar=("STEP", "MANIFEST", "CACHE", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:
        return measure(*args.measure, engine=args.engine)
    sizes = [int(s) for s in args.sizes.split(",")]
    load = os.getloadavg()[0]
    got: dict[int, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            root = Path(tmp) / str(n)
            t0 = time.perf_counter()
            corpus(root, n)
            made = time.perf_counter() - t0
            got[n] = {"made": made, **{step: run_step(step, root, args.engine) for step in ("tokenize", "shard")}}
            print(n, got[n], flush=True)
    lines = ["| images (URLs) | step | counts | seconds | peak driver memory (MiB) |", "|---:|---|---|---:|---:|"]
    for n, g in got.items():
        for step in ("tokenize", "shard"):
            r = g[step]
            counts = ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("peak", "seconds"))
            lines.append(f"| {n:,} | {step} | {counts} | {r['seconds']:.1f} | {r['peak'] / 2**20:,.1f} |")
    small, big = sizes[0], sizes[-1]
    lines.append("")
    for step in ("tokenize", "shard"):
        per = (got[big][step]["peak"] - got[small][step]["peak"]) / (big - small)
        lines.append(f"- {step}: **{per:,.1f} bytes more per image** from {small:,} to {big:,} (target: under 100)")
    made = ", ".join(f"{g['made']:.0f} s" for g in got.values())
    lines += [f"- engine {args.engine}, no-op encoder; corpus generation + convert took {made}",
              f"- load average when the run started: {load:.1f} on {os.cpu_count()} cores"]
    _results.append(f"memory: peak driver memory of tokenize and shard at {small:,} and {big:,} images", lines,
                    record=not args.no_record)


if __name__ == "__main__":
    main()

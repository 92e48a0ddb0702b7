"""`convert img2dataset` speed on a generated img2dataset output, against a bare pyarrow read of its parquet files.

    .venv/bin/python benchmarks/convert_img2dataset.py [--samples 100000] [--per-shard 10000] [--no-record]

Writes an img2dataset `webdataset` output of SAMPLES URLs (converters/samples/img2dataset.py: tars,
parquet and stats in img2dataset's layout; every image the same small JPEG, since converting never
decodes one), then measures in the same run: a bare `pyarrow.parquet.read_table` of every shard
parquet (the floor: reading the rows at all), and `convert img2dataset` with a face box column
(folder and tar indexes, every row's outcome, box mapping, records, the manifest written). Reported
as records/s and URLs/s and the ratio of the two times.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import io
import os
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from facecorpus.converters import pipeline
from facecorpus.converters.samples import img2dataset as web_sample


def generate(root: Path, samples: int, per_shard: int) -> float:
    buf = io.BytesIO()
    Image.new("RGB", (128, 128), (120, 170, 228)).save(buf, "JPEG", quality=95)
    t0 = time.perf_counter()
    web_sample.write(root, seed=0, n=samples, per_shard=per_shard, image=buf.getvalue())
    return time.perf_counter() - t0


def bare_read(root: Path) -> tuple[int, float]:
    t0 = time.perf_counter()
    rows = sum(pq.read_table(f).num_rows for f in sorted(root.glob("*.parquet")))
    return rows, time.perf_counter() - t0


def convert(root: Path, out: Path) -> tuple[int, int, float]:
    t0 = time.perf_counter()
    s = pipeline.convert({"web": root}, out, converters={"web": "img2dataset"}, overrides={"web": web_sample.OPTIONS},
                         jobs=1)
    d = s.datasets["web"]
    assert d.rows_read == d.records + sum(d.filtered.values()) + d.errors + d.unavailable_rows
    return d.rows_read, d.records, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--per-shard", type=int, default=10_000, help="img2dataset's --number_sample_per_shard")
    ap.add_argument("--no-record", action="store_true", help="print only; do not append to RESULTS.md")
    args = ap.parse_args()
    load = os.getloadavg()[0]  # a shared machine's other jobs slow the Python-bound convert most
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "web"
        made = generate(root, args.samples, args.per_shard)
        size = sum(f.stat().st_size for f in root.iterdir()) / 2**20
        rows, bare = bare_read(root)
        urls, records, secs = convert(root, Path(tmp) / "manifest")
    assert rows == urls == args.samples
    lines = [f"- generated {args.samples:,} URLs in {args.samples // args.per_shard or 1} shards "
             f"({size:,.0f} MiB of tars, parquet and stats) in {made:.1f} s; every image one 128x128 JPEG",
             "", "| what | seconds | URLs/s | records/s |", "|---|---:|---:|---:|",
             f"| bare `pyarrow.parquet.read_table` of the shard parquets | {bare:.2f} | {rows / bare:,.0f} | - |",
             f"| `convert img2dataset` (box column, border resize), manifest written | {secs:.2f} | "
             f"{urls / secs:,.0f} | {records / secs:,.0f} |",
             "", f"- convert / bare read: **{secs / bare:.1f}x** the time ({records:,} records of {urls:,} URLs)",
             f"- load average when the run started: {load:.1f} on {os.cpu_count()} cores"]
    _results.append("convert img2dataset: generated img2dataset output vs bare pyarrow read", lines,
                    record=not args.no_record)


if __name__ == "__main__":
    main()

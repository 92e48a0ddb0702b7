"""Convert speed on the real raw files, against a bare pandas/scipy/json read of the same files.

    .venv/bin/python benchmarks/convert.py [--raw ../shared/raw]

For every dataset with real files under RAW: records/s of its converter (parsing, validation,
record building) and the time of a bare read of the same annotation files (pandas.read_csv of each
line as one string, json.load, scipy.io.loadmat) measured in the same run; then the whole
`convert --all` (harmonization and Parquet writing included), extrapolated to the 2.3M-record corpus
with each dataset's full row count. Target: the full manifest in <= 60 s on 2 cores.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse
import json
import tempfile
import time
from pathlib import Path

import pandas as pd
import scipy.io

from facecorpus.converters import pipeline, registry
from facecorpus.converters.base import Context

# Rows of each full raw download (docs/datasets.md counts; AffectNet and ExpW as documented there).
FULL_ROWS = {"celeba": 202_599, "fs2k": 2_104, "affectnet": 420_299, "rafdb": 15_339, "expw": 91_793,
             "cacd": 163_446, "afad": 165_501, "imdbwiki": 523_051, "fairface": 97_698, "ffhqtext": 6_840,
             "mmcelebahq": 300_000, "celebatexthq": 150_100, "celebadialog": 232_598}
ANNOTATIONS = (".txt", ".csv", ".json", ".lst", ".mat")


def bare_read(raw: Path) -> float:
    """Seconds to read every annotation file under `raw` with the plainest reader for its kind."""
    t0 = time.perf_counter()
    for f in sorted(raw.rglob("*")):
        if f.suffix not in ANNOTATIONS or f.name in ("SOURCE.md", "README.txt", "readme.txt"):
            continue
        if f.suffix == ".mat":
            scipy.io.loadmat(f)
        elif f.suffix == ".json":
            json.loads(f.read_text(encoding="utf-8"))
        elif f.suffix == ".csv":
            pd.read_csv(f, dtype=str)
        else:
            pd.read_csv(f, header=None, sep="\t", dtype=str, quoting=3, encoding_errors="replace")
    return time.perf_counter() - t0


def time_converter(name: str, raw: Path, partition, mapping) -> tuple[int, float]:
    t0 = time.perf_counter()
    ctx = Context(name, raw, registry.options(name, {}), mapping)
    run = pipeline.run_dataset(name, raw, ctx, "skip")
    return run.rows_read, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--raw", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "raw")
    args = ap.parse_args()
    sources, skipped = pipeline.discover(args.raw)
    partition, mapping = pipeline.support_files(args.raw, None, None)
    rows = ["| dataset | rows | converter s | records/s | bare read s | converter / bare |", "|---|---|---|---|---|---|"]
    usable, rates, real = {}, {}, {}
    for name, raw in sources.items():
        try:
            n, secs = time_converter(name, raw, partition, mapping)
        except Exception as exc:  # a folder without the files its converter needs (SOURCE.md only)
            skipped[name] = f"{type(exc).__name__}: {str(exc)[:80]}"
            continue
        bare = bare_read(raw)
        usable[name], rates[name], real[name] = raw, n / secs, n
        rows.append(f"| {name} | {n:,} | {secs:.2f} | {n / secs:,.0f} | {bare:.3f} | {secs / bare:.1f}x |")
    whole = {}
    for jobs in (1, 2):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            pipeline.convert(usable, Path(out) / "m", raw_root=args.raw, on_error="skip", jobs=jobs)
            whole[jobs] = time.perf_counter() - t0
    n_real = sum(real.values())
    # Rates from excerpts of a few rows measure start-up, not speed: use the median of the big ones there.
    big = sorted(r for d, r in rates.items() if real[d] >= 10_000)
    rate = {d: (rates[d] if real.get(d, 0) >= 10_000 else big[len(big) // 2]) for d in FULL_ROWS}
    sequential = sum(real[d] / rate[d] for d in real)          # converter seconds for the real files
    est = sum(FULL_ROWS[d] / rate[d] for d in FULL_ROWS) * whole[2] / sequential
    rows += ["", f"- whole `convert --all` on the real files ({n_real:,} rows): {whole[1]:.1f} s with 1 job, "
             f"{whole[2]:.1f} s with 2 worker processes ({whole[1] / whole[2]:.2f}x)",
             f"- extrapolated to the full corpus ({sum(FULL_ROWS.values()):,} rows), each dataset at its measured rate "
             f"(median of the >= 10k-row ones where only an excerpt exists), scaled by the whole 2-job run: "
             f"**{est:.0f} s** (target <= 60 s)",
             f"- not measured (no real files): {', '.join(sorted(k for k in skipped if k in FULL_ROWS)) or 'none'}"]
    _results.append("convert: converters on the real files vs a bare read", rows)


if __name__ == "__main__":
    main()

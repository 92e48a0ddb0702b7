"""Convert speed on the real raw files, against a bare pandas/scipy/json read of the same files.

    .venv/bin/python benchmarks/convert.py [--raw ../shared/raw]

For every dataset with real files under RAW: records/s of its converter (parsing, validation,
record building) and the time of a bare read of the same annotation files (pandas.read_csv of each
line as one string, json.load, scipy.io.loadmat) measured in the same run; then the whole
`convert --all` (harmonization and Parquet writing included), extrapolated to the 2.3M-record corpus
with each dataset's full row count. Target: the full manifest in <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import scipy.io

sys.path.insert(0, str(Path(__file__).parent))
from _results import append  # noqa: E402

from facecorpus.converters import pipeline, registry  # noqa: E402
from facecorpus.converters.base import Context  # noqa: E402

# Rows of each full raw download (FORMATS.md counts; AffectNet and ExpW as documented there).
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
    usable, rates = {}, {}
    for name, raw in sources.items():
        try:
            n, secs = time_converter(name, raw, partition, mapping)
        except Exception as exc:  # a folder without the files its converter needs (SOURCE.md only)
            skipped[name] = f"{type(exc).__name__}: {str(exc)[:80]}"
            continue
        bare = bare_read(raw)
        usable[name], rates[name] = raw, n / secs
        rows.append(f"| {name} | {n:,} | {secs:.2f} | {n / secs:,.0f} | {bare:.3f} | {secs / bare:.1f}x |")
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        summary = pipeline.convert(usable, Path(out) / "m", raw_root=args.raw, on_error="skip")
        whole = time.perf_counter() - t0
    n_real = sum(d["rows_read"] for d in summary["datasets"].values())
    overall = n_real / whole
    est = sum(FULL_ROWS[d] / rates.get(d, overall) for d in FULL_ROWS) * (whole / sum(
        summary["datasets"][d]["rows_read"] / rates[d] for d in rates))
    rows += ["", f"- whole `convert --all` on the real files: {n_real:,} rows in {whole:.1f} s ({overall:,.0f} rows/s)",
             f"- extrapolated to the full corpus ({sum(FULL_ROWS.values()):,} rows; datasets without real files at the "
             f"overall rate): **{est:.0f} s** (target <= 60 s)",
             f"- not measured (no real files): {', '.join(sorted(k for k in skipped if k in FULL_ROWS)) or 'none'}"]
    append("convert: converters on the real files vs a bare read", rows)


if __name__ == "__main__":
    main()

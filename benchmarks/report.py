"""`facecorpus report` on a synthetic 2.3M-record manifest, against a bare pyarrow scan of the same files.

    .venv/bin/python benchmarks/report.py [--scale 1.0] [--cores 2] [--keep DIR]

Writes 13 partitions with the real datasets' sizes (docs/datasets.md counts) and realistic label sets
(CelebA's 40 booleans, FS2K colours, expressions, ages in years / FairFace bins / CelebA-Dialog's
0-5 scales, gender, race) and captions of realistic lengths, then times the whole report (statistics,
report.json, plots, report.html) and a bare `pyarrow.parquet.read_table` of every partition, and prints
the ratio. Target: the 2.3M-record manifest in under a minute on 2 cores. The report is CPU work;
`--device` is accepted for the benchmarks' common interface and only recorded.
"""

from __future__ import annotations

import _results  # first: fixes the import path (see there)  # isort: skip

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the full corpus size (1.0 = 2.3M records)")
    p.add_argument("--cores", type=int, default=2, help="threads for pyarrow and the tokenizer")
    p.add_argument("--keep", type=Path, default=None, help="write the manifest here and keep it")
    p.add_argument("--manifest", type=Path, default=None, help="time this existing manifest instead of synthesizing one")
    p.add_argument("--device", default="cpu", help="recorded only: the report runs on the CPU")
    p.add_argument("--no-append", action="store_true", help="print the result without appending to RESULTS.md")
    return p.parse_args()


ARGS = parse_args() if __name__ == "__main__" else None
if ARGS is not None:  # before pyarrow/tokenizers start their thread pools
    os.environ["RAYON_NUM_THREADS"] = str(ARGS.cores)
    os.environ["OMP_NUM_THREADS"] = str(ARGS.cores)

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from facecorpus import summary, textproto  # noqa: E402
from facecorpus.manifest import write_partition  # noqa: E402
from facecorpus.records import SCHEMA  # noqa: E402

SIZES = {"celeba": 202_599, "fs2k": 2_104, "affectnet": 420_299, "rafdb": 15_339, "expw": 91_793,
         "cacd": 163_446, "afad": 165_501, "imdbwiki": 523_051, "fairface": 97_698, "ffhqtext": 6_840,
         "mmcelebahq": 300_000, "celebatexthq": 150_100, "celebadialog": 202_599}
CELEBA = ("5 o clock shadow,arched eyebrows,attractive,bags under eyes,bald,bangs,big lips,big nose,black hair,"
          "blond hair,blurry,brown hair,bushy eyebrows,chubby,double chin,eyeglasses,goatee,gray hair,heavy makeup,"
          "high cheekbones,male,mouth slightly open,mustache,narrow eyes,no beard,oval face,pale skin,pointy nose,"
          "receding hairline,rosy cheeks,sideburns,smiling,straight hair,wavy hair,wearing earrings,wearing hat,"
          "wearing lipstick,wearing necklace,wearing necktie,young").split(",")
EXPRESSIONS = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
FAIRFACE_AGES = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "more than 70"]
RACES = ["white", "black", "latino hispanic", "east asian", "southeast asian", "indian", "middle eastern"]
COLORS = ["black", "dark slate gray", "saddle brown", "sienna", "rosy brown", "tan", "peach puff", "bisque",
          "indian red", "brown", "dim gray", "burlywood", "dark salmon", "gray"]
WORDS = ("the woman man has wavy straight black blond brown gray hair and arched bushy eyebrows big small nose "
         "she he is smiling wears lipstick earrings eyeglasses a slightly open mouth with high cheekbones young "
         "old face oval pointy chin beard mustache of medium length in his her thirties forties looks attractive "
         "pale skin rosy cheeks narrow eyes bags under them bangs sideburns receding hairline").split()


def _labels(dataset: str, rng: np.random.Generator, n: int) -> list[dict]:
    """n realistic label dicts for `dataset` (empty for caption-only datasets)."""
    pick = lambda values, p=None: rng.choice(np.array(values, dtype=object), n, p=p)  # noqa: E731
    gender = pick(["male", "female"])
    if dataset == "celeba":
        bits = rng.random((n, len(CELEBA))) < 0.3
        return [dict(zip(CELEBA, map(bool, row))) for row in bits]
    if dataset == "fs2k":
        return [{"hair": bool(h), "hair color": hc, "gender": g, "earring": bool(e), "smile": bool(s),
                 "frontal face": bool(f), "style": int(st), "skin color": sc, "lip color": lc, "eye color": ec}
                for h, hc, g, e, s, f, st, sc, lc, ec in zip(rng.random(n) < .9, pick(COLORS), gender, rng.random(n) < .2,
                                                             rng.random(n) < .4, rng.random(n) < .8, rng.integers(0, 3, n),
                                                             pick(COLORS), pick(COLORS), pick(COLORS))]
    if dataset in ("affectnet", "rafdb", "expw"):
        return [{"expression": e} for e in pick(EXPRESSIONS, [.25, .35, .08, .05, .03, .02, .07, .15])]
    if dataset == "cacd":
        return [{"age": int(a)} for a in rng.integers(14, 63, n)]
    if dataset in ("afad", "imdbwiki"):
        ages = np.clip(rng.normal(32, 12, n).astype(int), 0 if dataset == "imdbwiki" else 15, 100 if dataset == "imdbwiki" else 72)
        return [{"age": int(a), "gender": g} for a, g in zip(ages, gender)]
    if dataset == "fairface":
        return [{"age": a, "gender": g, "race": r} for a, g, r in zip(pick(FAIRFACE_AGES), gender, pick(RACES))]
    if dataset == "celebadialog":
        scales = rng.integers(0, 6, (n, 5))
        return [dict(zip(("bangs", "eyeglasses", "beard", "smiling", "age"), map(int, row))) for row in scales]
    return [{}] * n


def _captions(rng: np.random.Generator, n: int, mean_words: int) -> list[str]:
    lengths = np.clip(rng.normal(mean_words, mean_words / 3, n).astype(int), 4, 4 * mean_words)
    words = rng.choice(np.array(WORDS, dtype=object), int(lengths.sum()))
    cuts = np.cumsum(lengths)[:-1]
    return [" ".join(w) + "." for w in np.split(words, cuts)]


CAPTION_WORDS = {"mmcelebahq": 22, "celebatexthq": 45, "celebadialog": 30, "ffhqtext": 40}
PER_IMAGE = {"mmcelebahq": 10, "celebatexthq": 10, "ffhqtext": 9, "celebadialog": 1}


def partition(dataset: str, n: int, rng: np.random.Generator) -> pa.Table:
    kind = "caption" if dataset in CAPTION_WORDS else "attributes"
    per = PER_IMAGE.get(dataset, 1)
    img = np.arange(n) // per
    nth = np.arange(n) % per
    labels = _labels(dataset, rng, n)
    if kind == "caption":
        texts = _captions(rng, n, CAPTION_WORDS[dataset])
    else:
        cache: dict[str, str] = {}
        texts = [cache.get(j) or cache.setdefault(j, textproto.to_text(dataset, lab))
                 for lab, j in ((lab, json.dumps(lab)) for lab in labels)]
    if dataset in ("mmcelebahq", "celebatexthq"):
        image_ids = [f"celebahq/{i}" for i in img]
        photo_ids = [f"celeba/{(i * 7) % 202_599 + 1:06d}" for i in img]  # CelebA-HQ photos are CelebA photos
    elif dataset in ("celeba", "celebadialog"):  # the same CelebA photographs
        image_ids = photo_ids = [f"celeba/{i + 1:06d}" for i in img]
    else:
        image_ids = photo_ids = [f"{dataset}/{i}" for i in img]
    split = rng.choice(np.array(["train", "val", "test"], dtype=object), n, p=[.8, .1, .1])
    cols = {
        "key": [f"{dataset}/{i}/{kind}/{k}" for i, k in zip(img, nth)], "dataset": [dataset] * n,
        "image": [f"img/{i}.jpg" for i in img], "image_id": image_ids, "photo_id": photo_ids,
        "subject_id": [None] * n, "bbox": [None] * n, "source_split": [None] * n, "split": split.tolist(),
        "kind": [kind] * n, "text": texts, "labels": [json.dumps(lab) for lab in labels], "licence": [None] * n,
    }
    return pa.table(cols, schema=SCHEMA)


def synthesize(root: Path, scale: float) -> int:
    rng = np.random.default_rng(0)
    total = 0
    for dataset, size in SIZES.items():
        n = max(int(size * scale), 10)
        write_partition(partition(dataset, n, rng), root, dataset)
        total += n
    counts = {d: summary.DatasetSummary(raw_dir=f"../raw/{d}", rows_read=max(int(s * scale), 10),
                                        records=max(int(s * scale), 10), filtered={}, errors=0, notes=[])
              for d, s in SIZES.items()}
    summary.write(root, summary.RunSummary(counts, summary.SplitSummary(), {}, "raise"))
    return total


def cpu_seconds() -> float:
    """CPU time of this process, all threads: robust when other jobs share the cores."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn, *args) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of fn(*args)."""
    t0, c0 = time.perf_counter(), cpu_seconds()
    fn(*args)
    return time.perf_counter() - t0, cpu_seconds() - c0


def bare_scan(root: Path) -> None:
    for f in sorted(root.glob("*.parquet")):
        pq.read_table(f)


def main(args) -> None:
    pa.set_cpu_count(args.cores)
    pa.set_io_thread_count(args.cores)
    from facecorpus.reports.build import write_report

    with tempfile.TemporaryDirectory() as tmp:
        root = args.manifest or args.keep or Path(tmp) / "manifest"
        t0 = time.perf_counter()
        if args.manifest:
            n = sum(pq.read_metadata(f).num_rows for f in root.glob("*.parquet"))
        else:
            n = synthesize(root, args.scale)
            print(f"synthesized {n:,} records in {time.perf_counter() - t0:.1f} s")
        bare_scan(root)  # warm the page cache for both measurements
        scan, scan_cpu = timed(bare_scan, root)
        report, report_cpu = timed(write_report, root, None, Path(tmp) / "report")
    load = os.getloadavg()[0]
    what = f"manifest {args.manifest}" if args.manifest else "13 partitions (synthetic, realistic label sets)"
    lines = [f"- records: {n:,} in {what}, {args.cores} threads, device {args.device}",
             f"- load average during the run: {load:.1f} on {os.cpu_count()} cores (other jobs inflate wall times)",
             f"- bare pyarrow scan: {scan:.2f} s wall, {scan_cpu:.2f} s CPU",
             f"- facecorpus report (statistics + report.json + plots + report.html): {report:.2f} s wall, {report_cpu:.2f} s CPU",
             f"- ratio report / scan: {report / scan:.1f}x wall, {report_cpu / scan_cpu:.1f}x CPU; "
             f"target < 60 s wall: {'met' if report < 60 else 'NOT met'}"]
    _results.append("report: label statistics of the 2.3M-record manifest", lines, record=not args.no_append)


if __name__ == "__main__":
    main(ARGS)

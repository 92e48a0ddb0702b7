"""Demo stage 1: write sample raw trees in each dataset's real layout and a small web set in the layout
img2dataset leaves (tars + parquet + stats, with a few failed URLs), then convert them all together."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from rich.console import Console

from facecorpus.converters import pipeline
from facecorpus.converters.cli import print_link_rot, print_notes, summary_table
from facecorpus.converters.samples import img2dataset as web_sample
from facecorpus.records import DATASETS

# CelebA images the demo draws: enough for its model to learn faces <-> attributes (about 2 s to draw).
CELEBA_IMAGES = 2_000
WEB = "web"  # the web set's dataset name and its folder under OUT/raw


def write_raw(raw: Path, seed: int, celeba_images: int = CELEBA_IMAGES) -> None:
    """OUT/raw/<dataset>/ for all thirteen datasets, plus OUT/raw/celebahq/ (the CelebA-HQ mapping)."""
    if raw.exists():
        shutil.rmtree(raw)  # a rerun starts from the same sample data, never a mix
    for name in DATASETS:
        sample = importlib.import_module(f"facecorpus.converters.samples.{name}")
        sample.write(raw / name, seed, n=celeba_images) if name == "celeba" else sample.write(raw / name, seed)
    # The whole CelebA-HQ index range: the caption-set samples use indices up to 29999 (MM-CelebA-HQ's test part).
    importlib.import_module("facecorpus.converters.samples.celebahq").write(raw / "celebahq", seed, n=30_000)
    web_sample.write(raw / WEB, seed)


def run(out: Path, console: Console, seed: int = 0, celeba_images: int = CELEBA_IMAGES) -> dict:
    raw, manifest_dir = out / "raw", out / "manifest"
    write_raw(raw, seed, celeba_images)
    if manifest_dir.exists():
        shutil.rmtree(manifest_dir)
    sources, not_converted = pipeline.discover(raw)
    del not_converted[WEB]  # discover knows the curated folders only; the web set has a converter of its own
    sources[WEB] = raw / WEB
    summary = pipeline.convert(sources, manifest_dir, raw_root=raw, seed=seed, not_converted=not_converted,
                               console=console, converters={WEB: "img2dataset"}, overrides={WEB: web_sample.OPTIONS})
    console.print(summary_table(summary, list(sources)))
    print_notes(console, summary, list(sources))
    print_link_rot(console, summary, list(sources))
    records = sum(d.records for d in summary.datasets.values())
    return {"datasets": len(summary.datasets), "records": records, **summary.splits.records}

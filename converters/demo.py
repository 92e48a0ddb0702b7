"""Demo stage 1: write sample raw trees in each dataset's real layout, then `convert --all` them."""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from rich.console import Console

from facecorpus.converters import pipeline
from facecorpus.converters.cli import print_notes, summary_table
from facecorpus.records import DATASETS


# CelebA images the demo draws: enough for its model to learn faces <-> attributes (about 2 s to draw).
CELEBA_IMAGES = 2_000


def write_raw(raw: Path, seed: int, celeba_images: int = CELEBA_IMAGES) -> None:
    """OUT/raw/<dataset>/ for all thirteen datasets, plus OUT/raw/celebahq/ (the CelebA-HQ mapping)."""
    if raw.exists():
        shutil.rmtree(raw)  # a rerun starts from the same sample data, never a mix
    for name in DATASETS:
        sample = importlib.import_module(f"facecorpus.converters.samples.{name}")
        sample.write(raw / name, seed, n=celeba_images) if name == "celeba" else sample.write(raw / name, seed)
    # The whole CelebA-HQ index range: the caption-set samples use indices up to 29999 (MM-CelebA-HQ's test part).
    importlib.import_module("facecorpus.converters.samples.celebahq").write(raw / "celebahq", seed, n=30_000)


def run(out: Path, console: Console, seed: int = 0, celeba_images: int = CELEBA_IMAGES) -> dict:
    raw, manifest_dir = out / "raw", out / "manifest"
    write_raw(raw, seed, celeba_images)
    if manifest_dir.exists():
        shutil.rmtree(manifest_dir)
    sources, not_converted = pipeline.discover(raw)
    summary = pipeline.convert(sources, manifest_dir, raw_root=raw, seed=seed, not_converted=not_converted,
                               console=console)
    console.print(summary_table(summary, list(sources)))
    print_notes(console, summary, list(sources))
    records = sum(d.records for d in summary.datasets.values())
    return {"datasets": len(summary.datasets), "records": records, **summary.splits.records}

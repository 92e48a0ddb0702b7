"""What the converter tests share: one dataset converted through the pipeline, records as manifest rows,
a failed download saved under a label file's name, in-place edits."""

from __future__ import annotations

from pathlib import Path

from facecorpus import manifest
from facecorpus.converters import pipeline, registry
from facecorpus.converters.base import Context

# What Google Drive serves instead of a large file; saved under the label file's name it must be refused.
HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>\n"


def convert(name: str, raw: Path, on_error: str = "raise", mapping: dict | None = None,
            **options) -> pipeline.DatasetRun:
    """`name`'s raw folder through the pipeline's per-dataset run (what `convert` does before writing),
    with its options (`--set name.key=value`) and the CelebA-HQ mapping when given."""
    ctx = Context(name, raw, registry.options(name, {k: str(v) for k, v in options.items()}), mapping)
    return pipeline.run_dataset(name, raw, ctx, on_error)


def rows(run: pipeline.DatasetRun) -> list[dict]:
    """A run's records as the manifest stores them."""
    return manifest.to_table(run.records).to_pylist()


def edit(path: Path, change) -> None:
    """Rewrite a text file through `change(text) -> text` (bytes in and out: line endings stay)."""
    path.write_bytes(change(path.read_bytes().decode()).encode())

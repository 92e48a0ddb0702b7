"""`facecorpus convert`: raw downloads -> manifest, with a per-dataset summary table."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from facecorpus.converters import pipeline
from facecorpus.records import DATASETS


def parse_sets(values: tuple[str, ...]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for item in values:
        name, _, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not eq or name not in DATASETS or not key:
            raise click.BadParameter(f"{item!r}: expected DATASET.KEY=VALUE, e.g. imdbwiki.min_face_score=1.0")
        out[name][key] = value
    return dict(out)


def summary_table(summary: dict, names: list[str]) -> Table:
    table = Table(title="convert: rows read == records + filtered + errors")
    for col in ("dataset", "rows read", "records", "filtered (by reason)", "errors", "notes"):
        table.add_column(col, justify="right" if col in ("rows read", "records", "errors") else "left")
    for name in names:
        d = summary["datasets"][name]
        filtered = ", ".join(f"{r}: {n:,}" for r, n in d["filtered"].items()) or "-"
        table.add_row(name, f"{d['rows_read']:,}", f"{d['records']:,}", filtered, f"{d['errors']:,}",
                      "\n".join(d["notes"]) or "-")
    return table


@click.command()
@click.argument("dataset", required=False, type=click.Choice(DATASETS))
@click.argument("raw_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--all", "convert_all", is_flag=True,
              help="RAW_DIR is a root holding one folder per dataset (celeba/, fairface/, ...); convert every one found.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Manifest folder: <dataset>.parquet files, summary.json, ledger.jsonl.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="A malformed row stops the run naming file and line (raise), or is counted and written to ledger.jsonl (skip).")
@click.option("--set", "sets", multiple=True, metavar="DATASET.KEY=VALUE",
              help="Override a converter option, e.g. imdbwiki.min_face_score=1.0 (repeatable).")
@click.option("--celeba-partition", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CelebA's list_eval_partition.txt (found under RAW_ROOT/celeba/ with --all).")
@click.option("--celebahq-mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CelebA-HQ-to-CelebA-mapping.txt from CelebAMask-HQ (found under RAW_ROOT/celebahq/ with --all).")
@click.option("--seed", default=0, show_default=True, help="Seed of the hashed split for photos no dataset splits.")
def convert(dataset, raw_dir, convert_all, out, on_error, sets, celeba_partition, celebahq_mapping, seed):
    """Convert raw dataset downloads into the manifest of face-text records.

    \b
    facecorpus convert DATASET RAW_DIR --out MANIFEST     one dataset
    facecorpus convert --all RAW_ROOT --out MANIFEST      every dataset folder under RAW_ROOT

    Converting into an existing manifest adds or replaces that dataset and re-harmonizes the splits
    of everything in it, so no photo any dataset holds out is trained on.
    """
    console = Console(stderr=True)
    if convert_all == (dataset is not None):
        raise click.UsageError("give either DATASET RAW_DIR or --all RAW_ROOT")
    unusable: dict[str, str] = {}
    if convert_all:
        sources, unusable = pipeline.discover(raw_dir)
    else:
        sources = {dataset: raw_dir}
    try:
        summary = pipeline.convert(
            sources, out, on_error=on_error, overrides=parse_sets(sets), raw_root=raw_dir if convert_all else None,
            celeba_partition=celeba_partition, hq_mapping=celebahq_mapping, seed=seed, unusable=unusable, console=console)
    except (pipeline.ConvertError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(1)
    console.print(summary_table(summary, [n for n in sources if n in summary["datasets"]]))
    for name, why in summary["unusable"].items():
        console.print(f"[yellow]not converted[/yellow] {name}: {why}")
    s = summary["splits"]
    console.print(f"splits: {s['records']}; reassigned records: {sum(m['count'] for m in s['reassigned'] if m['from']):,}")
    console.print(f"manifest: {out} (summary.json, ledger.jsonl)")

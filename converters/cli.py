"""`facecorpus convert`: raw downloads -> manifest, with a per-dataset summary table."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from facecorpus import storage
from facecorpus.converters import img2dataset, pipeline, registry, webboxes
from facecorpus.records import DATASETS
from facecorpus.summary import RunSummary


def parse_sets(values: tuple[str, ...]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = defaultdict(dict)
    for item in values:
        name, _, rest = item.partition(".")
        key, eq, value = rest.partition("=")
        if not eq or name not in DATASETS or not key:
            raise click.BadParameter(f"{item!r}: expected DATASET.KEY=VALUE, e.g. imdbwiki.min_face_score=1.0")
        out[name][key] = value
    return dict(out)


def parse_paths(paths: tuple[str, ...], convert_all: bool) -> tuple[str | None, Path]:
    """`DATASET RAW_DIR`, or `RAW_ROOT` with --all (click cannot express an optional leading argument)."""
    if len(paths) != (1 if convert_all else 2):
        raise click.UsageError("give either DATASET RAW_DIR or --all RAW_ROOT")
    dataset = None if convert_all else paths[0]
    choices = DATASETS + registry.WEB_CONVERTERS
    if dataset is not None and dataset not in choices:
        raise click.BadParameter(f"{dataset!r} is not one of: {', '.join(choices)}", param_hint="DATASET")
    try:
        raw_dir = storage.fetched(paths[-1])   # a remote raw folder is copied to the scratch mirror
    except storage.StorageError as exc:
        raise click.BadParameter(str(exc), param_hint="RAW_DIR") from None
    if not raw_dir.is_dir():
        raise click.BadParameter(f"{raw_dir} is not a folder", param_hint="RAW_DIR")
    return dataset, raw_dir


def web_options(dataset: str | None, given: dict) -> tuple[str | None, dict[str, str]]:
    """(the web set's name, its converter options) for `convert img2dataset`; those options with any
    other DATASET are a usage error, not something silently ignored."""
    if dataset not in registry.WEB_CONVERTERS:
        if any(v is not None for v in given.values()):
            flags = ", ".join(f"--{k.replace('_', '-')}" for k, v in given.items() if v is not None)
            raise click.UsageError(f"{flags}: only for `convert img2dataset DIR` (a web set img2dataset downloaded)")
        return None, {}
    name = given.pop("name") or "web"
    options = {k: v for k, v in given.items() if v is not None}
    try:
        img2dataset.check_options({**img2dataset.DEFAULTS, **options})
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    return name, options


def summary_table(summary: RunSummary, names: list[str]) -> Table:
    web = any(summary.datasets[n].unavailable for n in names)
    table = Table(title="convert: rows read == records + filtered + errors" + (" + unavailable" if web else ""))
    numbers = ("rows read", "records", "errors", "unavailable")
    for col in ("dataset", "rows read", "records", "filtered (by reason)", "errors") + (("unavailable",) if web else ()):
        table.add_column(col, justify="right" if col in numbers else "left")
    for name in names:
        d = summary.datasets[name]
        filtered = ", ".join(f"{r}: {n:,}" for r, n in d.filtered.items()) or "-"
        lost = (f"{d.unavailable_rows:,}",) if web else ()
        table.add_row(name, f"{d.rows_read:,}", f"{d.records:,}", filtered, f"{d.errors:,}", *lost)
    return table


def print_link_rot(console: Console, summary: RunSummary, names: list[str]) -> None:
    """A web set's URLs that never arrived, by img2dataset's status and reason (most frequent first)."""
    for name in names:
        d = summary.datasets[name]
        if d.unavailable:
            console.print(f"{name}: {d.unavailable_rows:,} of {d.rows_read:,} URLs unavailable "
                          f"({d.unavailable_rows / d.rows_read:.1%} link rot)", markup=False, highlight=False)
            for status, reasons in d.unavailable.items():
                text = ", ".join(f"{r}: {n:,}" for r, n in reasons.items())
                console.print(f"  {status}: {text}", markup=False, highlight=False)


def print_notes(console: Console, summary: RunSummary, names: list[str]) -> None:
    """Inconsistencies between a dataset's raw files (excerpts, missing files), by name and count."""
    for name in names:
        for note in summary.datasets[name].notes:
            console.print(f"[cyan]note[/cyan] {name}: {note}", markup=False, highlight=False)


@click.command()
@click.argument("paths", nargs=-1, required=True, metavar="[DATASET] RAW_DIR")
@click.option("--all", "convert_all", is_flag=True,
              help="RAW_DIR is a root holding one folder per dataset (celeba/, fairface/, ...); convert every one found.")
@click.option("--out", required=True, metavar="MANIFEST",
              help="Manifest folder: <dataset>.parquet files, summary.json, ledger.jsonl; a path or a URI "
                   "(s3://bucket/manifest, gs://..., file://...), published with summary.json last.")
@click.option("--on-error", type=click.Choice(["raise", "skip"]), default="raise", show_default=True,
              help="A malformed row stops the run naming file and line (raise), or is counted and written to ledger.jsonl (skip).")
@click.option("--set", "sets", multiple=True, metavar="DATASET.KEY=VALUE",
              help="Override a converter option, e.g. imdbwiki.min_face_score=1.0 (repeatable).")
@click.option("--celeba-partition", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CelebA's list_eval_partition.txt (found under RAW_ROOT/celeba/ with --all).")
@click.option("--celebahq-mapping", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CelebA-HQ-to-CelebA-mapping.txt from CelebAMask-HQ (found under RAW_ROOT/celebahq/ with --all).")
@click.option("--seed", default=0, show_default=True, help="Seed of the hashed split for photos no dataset splits.")
@click.option("--jobs", type=click.IntRange(1), default=None,
              help="Datasets converted at once in worker processes (default: one per core).")
@click.option("--allow-empty", is_flag=True,
              help="Let a dataset that yields no record (every row filtered or skipped) replace a partition of the "
                   "manifest that holds records; without it such a run stops and writes nothing.")
@click.option("--name", default=None, metavar="NAME",
              help="img2dataset: the web set's dataset name in the manifest and its keys (default: web); a lower-case "
                   "word that is not a curated dataset's name.")
@click.option("--licence", default=None, metavar="TERMS",
              help="img2dataset (required): the terms the set may be used under, kept with every record, "
                   "e.g. 'CC-BY-4.0, non-commercial research only'.")
@click.option("--caption-column", default=None, metavar="COL",
              help="img2dataset: the caption: `txt` (what --caption_col saved; the default) or a column saved with "
                   "--save_additional_columns.")
@click.option("--bbox-column", default=None, metavar="COL",
              help="img2dataset: a saved column with one face box per row; the face is cropped from the stored image "
                   "at tokenize. Needs --resize-mode.")
@click.option("--bbox-format", type=click.Choice(webboxes.FORMATS), default=None,
              help="img2dataset: the box is [x0, y0, x1, y1] in 0-1 of the downloaded picture (relative, "
                   "img2dataset's own convention; the default) or in its pixels (absolute).")
@click.option("--resize-mode", type=click.Choice(webboxes.MODES), default=None,
              help="img2dataset: the --resize_mode img2dataset ran with (its default is border); its output does not "
                   "record it, and the box's place in the stored image depends on it.")
@click.option("--split-by", type=click.Choice(img2dataset.SPLIT_BY), default=None,
              help="img2dataset: hash (the default: a seeded hash of the picture's sha256 picks val/test) or column.")
@click.option("--split-column", default=None, metavar="COL",
              help="img2dataset, with --split-by column: a saved column holding train, val (validation) or test.")
def convert(paths, convert_all, out, on_error, sets, celeba_partition, celebahq_mapping, seed, jobs, allow_empty,
            **web):
    """Convert raw dataset downloads into the manifest of face-text records.

    DATASET is one of: celeba, fs2k, affectnet, rafdb, expw, cacd, afad, imdbwiki, fairface,
    ffhqtext, mmcelebahq, celebatexthq, celebadialog; or img2dataset for a web set that
    img2dataset downloaded (docs/web-datasets.md).

    \b
    facecorpus convert DATASET RAW_DIR --out MANIFEST     one dataset
    facecorpus convert --all RAW_ROOT --out MANIFEST      every dataset folder under RAW_ROOT
    facecorpus convert img2dataset DIR --out MANIFEST --name NAME --licence TERMS [--bbox-column COL
        --resize-mode MODE]                               img2dataset's output folder (webdataset,
                                                          files or parquet format), one caption
                                                          record per downloaded sample

    A web set's URLs that img2dataset could not fetch or decode are counted as unavailable, by
    img2dataset's status and error (HTTP Error 404, ...): rows read == records + filtered + errors
    + unavailable.

    Converting into an existing manifest adds or replaces that dataset and re-harmonizes the splits
    of everything in it, so no photo any dataset holds out is trained on. New partitions replace the
    old ones only once all are written; an empty label file is an error naming it.

    Limits: a raw text line over 65,536 characters and a caption over 2,000 characters are malformed
    rows (errors, or ledgered with --on-error skip); messages quote at most 200 characters of a row.
    """
    console = Console(stderr=True)
    dataset, raw_dir = parse_paths(paths, convert_all)
    web_name, web_opts = web_options(dataset, web)
    overrides, converters = parse_sets(sets), {}
    not_converted: dict[str, str] = {}
    if convert_all:
        sources, not_converted = pipeline.discover(raw_dir)
    elif web_name:
        sources, overrides, converters = {web_name: raw_dir}, {web_name: web_opts}, {web_name: dataset}
    else:
        sources = {dataset: raw_dir}
    try:
        with storage.staged(out, last=("summary.json",)) as out_dir:
            summary = pipeline.convert(
                sources, out_dir, on_error=on_error, overrides=overrides, raw_root=raw_dir if convert_all else None,
                celeba_partition=celeba_partition, hq_mapping=celebahq_mapping, seed=seed, not_converted=not_converted,
                allow_empty=allow_empty, console=console, jobs=jobs, converters=converters)
    except (pipeline.ConvertError, ValueError, FileNotFoundError) as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1)
    converted = [n for n in sources if n in summary.datasets]
    console.print(summary_table(summary, converted))
    print_notes(console, summary, converted)
    print_link_rot(console, summary, converted)
    for name, why in summary.not_converted.items():
        used = name in registry.SUPPORT_FOLDERS
        console.print(f"[{'green' if used else 'yellow'}]{'used' if used else 'not converted'}[/] {name}: {escape(why)}")
    s = summary.splits
    moved = sum(m["count"] for m in s.reassigned if m["from"])
    placed = sum(m["count"] for m in s.reassigned if not m["from"])
    console.print(f"splits: {s.records}; records moved off their dataset's own split: {moved:,}; "
                  f"records without one, placed by partition/person/hash: {placed:,}")
    console.print(f"manifest: {out} (summary.json, ledger.jsonl)")

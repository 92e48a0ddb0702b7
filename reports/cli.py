"""`facecorpus report MANIFEST [--shards SHARDS] --out DIR`: report.json, then report.html from it."""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facecorpus import storage
from facecorpus.manifest import ManifestError


def write_with_progress(manifest: Path, shards: Path | None, out: Path, console: Console,
                        raw_root: Path | None = None) -> dict:
    """reports.build.write_report under a progress bar of its steps."""
    from facecorpus.reports import build  # matplotlib and pyarrow only when the command runs

    with Progress(TextColumn("{task.description:<45}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("report", total=build.STEPS)
        done = [0]

        def step(name: str):
            progress.update(task, description=name, completed=done[0])
            done[0] += 1

        report = build.write_report(manifest, shards, out, step, raw_root)
        progress.update(task, description="done", completed=build.STEPS)
    return report


def summary_table(report: dict, out: Path) -> Table:
    table = Table(title=f"facecorpus report -> {out}")
    for col in ("dataset", "records", "Table 1", "difference", "wordpiece p50 / over budget"):
        table.add_column(col, justify="right" if col != "dataset" else "left")
    by_ds = report["lengths"]["by_dataset"]
    for row in report["table1"]:
        if not sum(row["records_by_kind"].values()):
            continue
        lens = [f"{k[:3]} {v['wordpiece']['p50']} / {v['wordpiece']['over_budget_share']:.1%}" for k, v in by_ds.get(row["dataset"], {}).items()]
        diff = "matches" if row["matches_paper"] else f"{row['difference']:+,}"
        table.add_row(row["dataset"], f"{row['records']:,}", row["paper_text"], diff, ", ".join(lens))
    t = report["totals"]
    table.add_row("all", f"{t['records']:,}", f"{sum(r['paper'] for r in report['table1']) // 1000:,}k", "", "")
    return table


@click.command()
@click.argument("manifest", metavar="MANIFEST", callback=storage.fetch_param)
@click.option("--shards", metavar="PATH|URI", callback=storage.fetch_param, default=None,
              help="Shards folder (with index.json) to add samples and bytes per shard and split, and the tokenizers' identity.")
@click.option("--out", "out", required=True, metavar="PATH|URI",
              help="Folder for report.json (the numbers) and report.html (the same numbers with plots; opens offline); "
                   "MANIFEST, --shards, --raw-root and --out may be URIs (s3://, gs://, file://).")
@click.option("--raw-root", metavar="PATH|URI", callback=storage.location_param, default=None,
              help="Where the raw dataset folders are now (RAW_ROOT/celeba, ...), if they moved since `convert`; "
                   "the report says for each dataset whether its folder is found.")
def report(manifest: Path, shards: Path | None, out: str, raw_root: Path | None):
    """Label statistics of MANIFEST, a folder of <dataset>.parquet files written by `facecorpus convert`:
    records per dataset and kind beside the Talk2Face paper's Table 1 (each difference with its reason),
    records and images per split, split reassignments, photos shared between datasets, the distribution
    of every attribute, ages and expressions on common axes, caption and attribute text lengths against
    the 71-id text budget, and filtered rows by reason.

    report.json has stable keys (documented in reports/stats.py, module facecorpus.reports.stats); report.html is rendered
    from report.json alone and needs no network."""
    console = Console()
    try:
        with storage.staged(out, last=("report.html",)) as out_dir:
            result = write_with_progress(manifest, shards, out_dir, console, raw_root)
    except (ManifestError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(summary_table(result, out))
    console.print(f"wrote {out}/report.json and {out}/report.html")

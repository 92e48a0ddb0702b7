"""`facecorpus report MANIFEST [--shards SHARDS] --out DIR`: report.json, then report.html from it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facecorpus.manifest import ManifestError

STEPS = 6  # stats.compute's steps + rendering


def write_report(manifest: Path, shards: Path | None, out: Path, console: Console) -> dict:
    """Compute, write report.json, render report.html from the written JSON; returns the report."""
    from facecorpus.reports import render, stats  # matplotlib and pyarrow only when the command runs

    out.mkdir(parents=True, exist_ok=True)
    with Progress(TextColumn("{task.description:<45}"), BarColumn(), TimeElapsedColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task("report", total=STEPS)

        done = [0]

        def step(name: str):
            progress.update(task, description=name, completed=done[0])
            done[0] += 1

        report = stats.compute(manifest, shards, step=step)
        text = json.dumps(report, indent=1, ensure_ascii=False)
        _atomic_write(out / "report.json", text)
        step("rendering report.html")
        _atomic_write(out / "report.html", render.render(json.loads(text)))
        progress.update(task, description="done", completed=STEPS)
    return report


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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
@click.argument("manifest", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--shards", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Shards folder (with index.json) to add samples and bytes per shard and split, and the tokenizers' identity.")
@click.option("--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.json (the numbers) and report.html (the same numbers with plots; opens offline).")
def report(manifest: Path, shards: Path | None, out: Path):
    """Label statistics of MANIFEST, a folder of <dataset>.parquet files written by `facecorpus convert`:
    records per dataset and kind beside the Talk2Face paper's Table 1 (each difference with its reason),
    records and images per split, split reassignments, photos shared between datasets, the distribution
    of every attribute, ages and expressions on common axes, caption and attribute text lengths against
    the 71-id text budget, and filtered rows by reason.

    report.json has stable keys (documented in reports/stats.py, module facecorpus.reports.stats); report.html is rendered
    from report.json alone and needs no network."""
    console = Console()
    try:
        result = write_report(manifest, shards, out, console)
    except (ManifestError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    console.print(summary_table(result, out))
    console.print(f"wrote {out / 'report.json'} and {out / 'report.html'}")

"""`facecorpus prepare`: URL lists for img2dataset, before there is anything to convert."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from facecorpus.atomic import atomic_write
from facecorpus.converters import laionface


@click.group()
def prepare():
    """Prepare a web set's URL lists for img2dataset (then: docs/web-datasets.md)."""


@prepare.command("laion-face")
@click.argument("ids", type=click.Path(exists=True, dir_okay=False, path_type=Path), metavar="IDS.pth")
@click.argument("meta_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="LAION_META_DIR")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for laion_face_part_NNNNN.parquet (one per part) and laion_face_summary.json.")
@click.option("--removal-list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Rows to drop: a text file of URLs or SAMPLE_IDs, one per line, or a .parquet file's column "
                   "(Re-LAION's removals: LAION-400M was withdrawn in December 2023).")
@click.option("--removal-column", default=None, help="The column of a Parquet removal list (default: URL or SAMPLE_ID).")
@click.option("--parts", default="all", show_default=True,
              help="Which of the 32 parts: all, 20m (LAION-Face 20M: 13 parts), 50m, or numbers like 0,2,5.")
def laion_face(ids, meta_dir, out, removal_list, removal_column, parts):
    """LAION-Face's URL lists from FaRL's IDS.pth (laion_face_ids.pth) and LAION-400M's metadata parts.

    Writes, per part, the metadata rows whose SAMPLE_ID FaRL lists as a face, with every column
    (SAMPLE_ID, URL, TEXT, HEIGHT, WIDTH, LICENSE, NSFW, similarity), less the rows the removal list
    names. IDS.pth is loaded without running pickled code: a file that needs more is refused. Counts
    add up per part: rows == kept + removed + not a face.

    \b
    Then:  img2dataset --url_list OUT --input_format parquet --url_col URL --caption_col TEXT \\
             --save_additional_columns '["SAMPLE_ID","LICENSE","NSFW","similarity"]' ...
    """
    console = Console(stderr=True)
    try:
        counts, summary = run(ids, meta_dir, out, removal_list, removal_column, parts, console)
    except laionface.PrepareError as exc:
        console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(1)
    table = Table(title="prepare laion-face: rows == kept + removed + not a face")
    for col in ("part", "rows", "kept", "removed", "not a face", "ids", "ids without a row"):
        table.add_column(col, justify="right")
    for c in counts:
        table.add_row(f"{c.part:05d}", *(f"{v:,}" for v in (c.rows, c.kept, c.removed, c.not_face, c.ids, c.ids_without_row)))
    console.print(table)
    r = summary["removal_list"]
    if removal_list:
        console.print(f"removal list: {r['matched']:,} of {r['entries']:,} entries named a face row")
    console.print(f"URL lists: {out} ({summary['total']['kept']:,} URLs; laion_face_summary.json)")


def run(ids: Path, meta_dir: Path, out: Path, removal_list: Path | None, removal_column: str | None, spec: str,
        console: Console) -> tuple[list[laionface.PartCounts], dict]:
    """Every chosen part, in order; each part's ids are released once it is written."""
    stored = laionface.load_ids(ids)
    parts = laionface.choose_parts(spec, stored)
    metas = {p: meta_dir / laionface.META.format(p) for p in parts}
    absent = [m.name for m in metas.values() if not m.is_file()]
    if absent:
        raise laionface.PrepareError(f"{meta_dir}: missing metadata part(s) {absent[:3]}"
                                     f"{f' and {len(absent) - 3} more' if len(absent) > 3 else ''} (LAION-400M's "
                                     "laion400m-meta; or choose --parts)")
    removals = laionface.read_removals(removal_list, removal_column)
    out.mkdir(parents=True, exist_ok=True)
    counts, matched = [], set()
    columns = (TextColumn("part {task.fields[part]:>5}"), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
               TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        for p in parts:
            part_ids = laionface.part_ids(stored.pop(p), ids, p)
            task = progress.add_task("", total=laionface.meta_rows(metas[p]), part=f"{p:05d}")
            counts.append(laionface.prepare_part(p, part_ids, metas[p], out, removals[:2], matched,
                                                 lambda n, t=task: progress.advance(t, n)))
            del part_ids
    summary = laionface.as_dict(counts, removals[2], len(matched))
    atomic_write(out / "laion_face_summary.json", json.dumps(summary, indent=2) + "\n")
    return counts, summary

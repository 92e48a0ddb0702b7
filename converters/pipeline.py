"""Run converters, harmonize splits across datasets, write the manifest and its run summary.

Counts add up for every dataset: rows read == records + filtered (by reason) + errors, + unavailable
(a web set's URLs its downloader lost, by status and reason). Errors stop the run with the file and
line unless the user chose `--on-error skip`, which ledgers each one.
Nothing is replaced until every new partition is written: a dataset whose raw files hold no row is an
error naming the file, and one that yields no record replaces a partition holding records only with
`allow_empty`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from facecorpus import manifest, summary
from facecorpus.atomic import atomic_write
from facecorpus.converters import registry, splits
from facecorpus.converters.base import Context, Failure, Filtered, RawFormatError, Unavailable
from facecorpus.excerpt import shorten
from facecorpus.records import DATASETS, Record, is_dataset


class ConvertError(RuntimeError):
    """A malformed row under --on-error raise (the default), or a conversion that would lose records."""


@dataclass
class DatasetRun:
    name: str
    raw: Path
    records: list[Record] = field(default_factory=list)
    filtered: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    unavailable: Counter = field(default_factory=Counter)  # (status, reason) -> rows
    rows_read: int = 0
    notes: list[str] = field(default_factory=list)
    table: pa.Table | None = None  # the records as Arrow, once built (what a worker process sends back)

    def as_table(self) -> pa.Table:
        if self.table is None:
            self.table = manifest.to_table(self.records)
        return self.table

    def summary(self, out: Path) -> summary.DatasetSummary:
        """The counts for summary.json, the raw folder recorded relative to the manifest folder `out`."""
        return summary.DatasetSummary(
            raw_dir=summary.relative_raw_dir(self.raw, out), rows_read=self.rows_read, records=self.as_table().num_rows,
            filtered=dict(sorted(self.filtered.items())), errors=len(self.failures), notes=self.notes,
            unavailable=summary.nest(self.unavailable))


def run_dataset(name: str, raw: Path, ctx: Context, on_error: str, progress: Progress | None = None) -> DatasetRun:
    """Every outcome of one dataset's converter, counted; a malformed row raises unless `on_error` is skip."""
    run = DatasetRun(name, raw)
    task = progress.add_task(name, total=None) if progress else None
    converter = registry.module(ctx.converter or name)
    for outcome in converter.rows(raw, ctx):
        run.rows_read += 1
        if isinstance(outcome, Record):
            if outcome.dataset != name:  # a record under another name would land in that dataset's partition
                raise TypeError(f"{name} converter yielded a record of dataset {outcome.dataset!r}")
            run.records.append(outcome)
        elif isinstance(outcome, Filtered):
            run.filtered[outcome.reason] += 1
        elif isinstance(outcome, Unavailable):
            run.unavailable[outcome.status, outcome.reason] += 1
        elif isinstance(outcome, Failure):
            # Every failure passes here: its message goes to the terminal or the ledger, so it is cut short.
            outcome = Failure(outcome.where, shorten(outcome.problem))
            if on_error == "raise":
                raise ConvertError(f"{name}: {outcome.where.file} line {outcome.where.line}: {outcome.problem} "
                                   "(use --on-error skip to ledger such rows and go on)")
            run.failures.append(outcome)
        else:
            raise TypeError(f"{name} converter yielded {type(outcome).__name__}, not Record/Filtered/Failure/Unavailable")
        if task is not None and run.rows_read % 2000 == 0:
            progress.update(task, completed=run.rows_read)
    if task is not None:
        progress.update(task, completed=run.rows_read, total=run.rows_read)
    if not run.rows_read:  # a converter whose files hold no row at all: never an empty partition
        raise RawFormatError(name, f"the raw files under {raw} hold no rows (an empty download?)", converter.DOWNLOAD)
    run.notes = list(ctx.notes)
    return run


def support_files(raw_root: Path | None, celeba_partition: Path | None, hq_mapping: Path | None):
    """CelebA's partition ({photo_id: split}) and the CelebA-HQ mapping, from options or RAW_ROOT."""
    if raw_root is not None:
        from facecorpus.converters import celeba, celebahq  # noqa: PLC0415 - their formats live there

        if celeba_partition is None:
            found = [raw_root / "celeba" / p for p in celeba.PARTITION_PATHS if (raw_root / "celeba" / p).is_file()]
            celeba_partition = found[0] if found else None
        if hq_mapping is None and (raw_root / "celebahq" / celebahq.MAPPING).is_file():
            hq_mapping = raw_root / "celebahq" / celebahq.MAPPING
    partition = mapping = None
    if celeba_partition:
        from facecorpus.converters.celeba import read_partition  # noqa: PLC0415

        partition = read_partition(celeba_partition)
    if hq_mapping:
        from facecorpus.converters.celebahq import read_mapping  # noqa: PLC0415

        mapping = read_mapping(hq_mapping)
    return partition, mapping


def convert_one(ctx: Context, on_error: str) -> DatasetRun:
    """One dataset, ending with its Arrow table (cheap to send back from a worker process)."""
    run = run_dataset(ctx.dataset, ctx.raw, ctx, on_error)
    run.as_table()
    run.records = []  # the table carries them; pickling 2.3M Record objects back would cost more than the work
    return run


def convert(sources: dict[str, Path], out: Path, *, on_error: str = "raise", overrides: dict | None = None,
            raw_root: Path | None = None, celeba_partition: Path | None = None, hq_mapping: Path | None = None,
            seed: int = 0, not_converted: dict[str, str] | None = None, allow_empty: bool = False,
            console: Console | None = None, jobs: int | None = None,
            converters: dict[str, str] | None = None) -> summary.RunSummary:
    """Convert each dataset in `sources` into the manifest at `out`; return the run summary written there.

    `jobs` > 1 converts datasets in that many worker processes (default: one per core); with one job
    the rows of each dataset get their own progress bar. `not_converted` names the folders of RAW_ROOT
    that are not converted, with why (pipeline.discover); a dataset whose raw files cannot be used joins
    them under --all, and stops a run of one dataset. `converters` names the converter of a web set
    (dataset name -> "img2dataset"); every other dataset has the converter of its own name, and
    `overrides` holds each dataset's options for its converter.
    """
    partition, mapping = support_files(raw_root, celeba_partition, hq_mapping)
    contexts = {}
    for name, raw in sources.items():
        converter = (converters or {}).get(name, name)
        registry.check_source(name, converter)
        options = registry.options(converter, (overrides or {}).get(name, {}))
        contexts[name] = Context(name, raw, options, mapping, converter=converter)
    not_converted = dict(not_converted or {})
    done = run_all(contexts, on_error, console or Console(stderr=True), jobs)
    runs = {}
    for name in sources:  # the sources' order, whatever order the workers finished in
        if isinstance(done[name], RawFormatError):
            if len(sources) == 1 or not raw_root:
                raise done[name]
            not_converted[name] = str(done[name])
        else:
            runs[name] = done[name]
    refuse_emptying(runs, out, allow_empty)
    return write(runs, out, partition, seed, not_converted, on_error)


def run_all(contexts: dict[str, Context], on_error: str, console: Console,
            jobs: int | None) -> dict[str, DatasetRun | RawFormatError]:
    """Each dataset's run, or the RawFormatError that made its raw files unusable."""
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(contexts)))
    columns = (SpinnerColumn(), TextColumn("{task.description:<13}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("rows" if jobs == 1 else "datasets"), TimeElapsedColumn())
    done: dict[str, DatasetRun | RawFormatError] = {}
    with Progress(*columns, console=console, transient=False) as progress:
        if jobs == 1:
            for name, ctx in contexts.items():
                try:
                    done[name] = run_dataset(name, ctx.raw, ctx, on_error, progress)
                except RawFormatError as exc:
                    done[name] = exc
            return done
        task = progress.add_task("convert", total=len(contexts))
        # fork: workers start at once and share the (read-only) mapping; no Ray or CUDA is live here.
        with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork")) as pool:
            futures = {pool.submit(convert_one, ctx, on_error): n for n, ctx in contexts.items()}
            for fut in as_completed(futures):
                try:
                    done[futures[fut]] = fut.result()
                except RawFormatError as exc:
                    done[futures[fut]] = exc
                progress.update(task, advance=1, description=futures[fut])
    return done


def refuse_emptying(runs: dict[str, DatasetRun], out: Path, allow_empty: bool) -> None:
    """A dataset that yields no record may replace a partition holding records only when the user says so."""
    for name, run in runs.items():
        held = manifest.partition_rows(out, name)
        if run.as_table().num_rows == 0 and held and not allow_empty:
            raise ConvertError(
                f"{name}: this conversion has no records ({run.rows_read:,} rows read: {len(run.failures):,} errors, "
                f"filtered {dict(run.filtered) or 0}) and would replace the {held:,} records of "
                f"{out / f'{name}.parquet'}; nothing was written (--allow-empty replaces them)")


def write(runs: dict[str, DatasetRun], out: Path, partition: dict | None, seed: int, not_converted: dict,
          on_error: str) -> summary.RunSummary:
    """Harmonize splits over the new records and any partitions already in `out`; write the partitions
    (all or none), then the ledger, then the summary last."""
    tables = {name: run.as_table() for name, run in runs.items()}
    old = summary.read(out) if summary.exists(out) else None
    if old is not None:
        for f in sorted(out.glob("*.parquet")):
            if is_dataset(f.stem) and f.stem not in tables:
                tables[f.stem] = manifest.read_table(out, [f.stem])
    names = list(tables)
    whole = pa.concat_tables([tables[n] for n in names]) if names else manifest.to_table([])
    split, moves = splits.harmonize(whole.select(["dataset", "photo_id", "subject_id", "source_split"]).to_pandas(),
                                    partition, seed)
    whole = whole.set_column(whole.schema.get_field_index("split"), "split", pa.array(split, pa.string()))
    manifest.check_table(whole, str(out))
    parts, start = {}, 0
    for name in names:
        parts[name], start = whole.slice(start, len(tables[name])), start + len(tables[name])
    manifest.write_partitions(parts, out)
    write_ledger(out, runs)
    datasets = dict(old.datasets if old else {})
    datasets.update({name: run.summary(out) for name, run in runs.items()})
    run_summary = summary.RunSummary(
        datasets=datasets, not_converted=not_converted, on_error=on_error,
        splits=summary.SplitSummary(seed=seed, holdout=dict(splits.HOLDOUT), reassigned=moves,
                                    celeba_partition_photos=len(partition or {}),
                                    records={s: int((split == s).sum()) for s in ("train", "val", "test")}))
    summary.write(out, run_summary)
    return run_summary


def write_ledger(out: Path, runs: dict[str, DatasetRun]) -> None:
    """ledger.jsonl: this run's skipped rows, and the rows of earlier runs for the datasets not converted again."""
    path = out / "ledger.jsonl"
    kept = [line for line in (path.read_text(encoding="utf-8").splitlines() if path.is_file() else [])
            if line.strip() and json.loads(line).get("dataset") not in runs]
    rows = [json.dumps({"dataset": name, "file": f.where.file, "line": f.where.line, "problem": f.problem},
                       ensure_ascii=False) for name, run in runs.items() for f in run.failures]
    atomic_write(path, "".join(f"{line}\n" for line in kept + rows))


def discover(raw_root: Path) -> tuple[dict[str, Path], dict[str, str]]:
    """Dataset folders under RAW_ROOT, and every folder that is not used with the reason."""
    if not raw_root.is_dir():
        raise FileNotFoundError(f"{raw_root} is not a folder")
    found = {name: raw_root / name for name in DATASETS if (raw_root / name).is_dir()}
    skipped = {}
    for entry in sorted(raw_root.iterdir()):
        if entry.is_dir() and entry.name not in found:
            skipped[entry.name] = registry.SUPPORT_FOLDERS.get(entry.name) or (
                "an img2dataset output: convert it with `facecorpus convert img2dataset DIR --name NAME --licence TERMS`"
                if next(entry.glob("*_stats.json"), None) else "not a dataset name facecorpus knows")
    for name in DATASETS:
        if name not in found:
            skipped[name] = f"absent: no folder {raw_root / name}"
    return found, skipped

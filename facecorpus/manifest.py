"""The manifest: records as Parquet, one file per dataset, validated on write and on read.

Layout of a manifest folder:
    <dataset>.parquet   the records of one dataset (schema: facecorpus.records.SCHEMA)
    summary.json        the run summary (facecorpus/summary.py): per dataset its raw folder, rows read,
                        records, filtered by reason, errors; splits; folders not converted
    ledger.jsonl        rows skipped under --on-error skip (file, line, problem)
Record images are relative to their dataset's raw folder: `image_root(manifest, dataset) / record.image`.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facecorpus import summary
from facecorpus.atomic import publishing
from facecorpus.records import KINDS, NOT_NULL, SCHEMA, SPLITS, Record, is_dataset

SUMMARY = summary.FILE


class ManifestError(ValueError):
    """A manifest that breaks the schema; the message names the file and the rows."""


def to_table(records: list[Record]) -> pa.Table:
    """Records -> an Arrow table of SCHEMA (column by column: the corpus has 2.3M records)."""
    cols = {name: [getattr(r, name) for r in records] for name in SCHEMA.names if name != "labels"}
    cols["labels"] = [r.labels_json or json.dumps(r.labels, ensure_ascii=False) for r in records]
    return pa.table(cols, schema=SCHEMA)


def _examples(table: pa.Table, mask) -> str:
    keys = table.filter(mask).column("key").slice(0, 3).to_pylist()
    return f"{int(pc.sum(mask).as_py())} rows, e.g. {keys}"


def check_table(table: pa.Table, where: str) -> None:
    """Vectorised schema checks (fast enough for the 2.3M-record corpus)."""
    if table.schema != SCHEMA:
        diff = [f"{f.name}: {f.type}" for f in table.schema if f not in SCHEMA]
        missing = [n for n in SCHEMA.names if n not in table.schema.names]
        raise ManifestError(f"{where}: schema differs from facecorpus.records.SCHEMA "
                            f"(wrong types: {diff}; missing columns: {missing})")
    for name in NOT_NULL:
        nulls = table.column(name).null_count
        if nulls:
            raise ManifestError(f"{where}: column {name!r} has {nulls} nulls")
    keys = table.column("key")
    for mask, problem in (
        (pc.match_substring(keys, "."), "keys contain '.' (WebDataset cuts sample names at dots)"),
        (pc.invert(pc.is_in(table.column("split"), pa.array(SPLITS))), f"split not in {SPLITS}"),
        (pc.invert(pc.is_in(table.column("kind"), pa.array(KINDS))), f"kind not in {KINDS}"),
    ):
        if pc.any(mask).as_py():
            raise ManifestError(f"{where}: {problem}: {_examples(table, mask)}")
    unknown = [d for d in pc.unique(table.column("dataset")).to_pylist() if not is_dataset(d)]
    if unknown:
        mask = pc.is_in(table.column("dataset"), pa.array(unknown, pa.string()))
        raise ManifestError(f"{where}: unknown dataset {unknown[:3]}: {_examples(table, mask)}")
    bbox = table.column("bbox")
    bad_box = pc.and_(pc.is_valid(bbox), pc.not_equal(pc.list_value_length(bbox), 4))
    if pc.any(bad_box).as_py():
        raise ManifestError(f"{where}: bbox must be 4 ints (x0, y0, x1, y1) or null: {_examples(table, bad_box)}")
    counts = pc.value_counts(keys)
    dup = pc.filter(counts, pc.greater(counts.field("counts"), 1))
    if len(dup):
        raise ManifestError(f"{where}: {len(dup)} duplicate keys, e.g. {dup.field('values')[:3].to_pylist()}")


def write_partition(table: pa.Table, out: Path, dataset: str) -> Path:
    """Write one dataset's records atomically (temporary name, fsync, rename)."""
    return write_partitions({dataset: table}, out)[dataset]


def write_partitions(tables: dict[str, pa.Table], out: Path) -> dict[str, Path]:
    """Write several datasets' records: all are checked and written under temporary names first, and only
    when every one is complete are they renamed into place, so a failure replaces none of them."""
    for dataset, table in tables.items():
        check_table(table, f"{dataset} records")
    out.mkdir(parents=True, exist_ok=True)
    paths = {dataset: out / f"{dataset}.parquet" for dataset in tables}
    with contextlib.ExitStack() as publish:  # each `publishing` renames its file when the stack closes
        for dataset, table in tables.items():
            pq.write_table(table, publish.enter_context(publishing(paths[dataset])), compression="zstd")
    return paths


def partition_rows(out: Path, dataset: str) -> int:
    """Records in `out/<dataset>.parquet` (0 when there is none), from the Parquet footer alone."""
    path = Path(out) / f"{dataset}.parquet"
    return pq.ParquetFile(path).metadata.num_rows if path.is_file() else 0


def _files(manifest: Path, datasets: list[str] | None = None) -> list[Path]:
    files = sorted(Path(manifest).glob("*.parquet"))
    if datasets is not None:
        files = [f for f in files if f.stem in datasets]
    if not files:
        raise ManifestError(f"{manifest}: no <dataset>.parquet files (is this a manifest folder?)")
    return files


def iter_batches(manifest: Path, columns: list[str], rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """`columns` of every partition, `rows` records at a time, in file order: memory bounded by a batch
    however big the manifest (tokenize and shard stream it twice). Each batch is checked for its
    columns' types and nulls and its partition's dataset; the whole-table checks (unique keys) are
    read_table's, run when the manifest is written."""
    want = pa.schema([SCHEMA.field(c) for c in columns])
    for f in _files(manifest):
        if not is_dataset(f.stem):
            raise ManifestError(f"{f}: not a dataset's partition ({f.stem!r} is no dataset name)")
        for batch in pq.ParquetFile(f).iter_batches(batch_size=rows, columns=columns):
            try:
                batch = batch.cast(want)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, KeyError) as exc:
                raise ManifestError(f"{f}: columns {columns} differ from facecorpus.records.SCHEMA: {exc}") from exc
            for name in set(columns) & set(NOT_NULL):
                if batch.column(name).null_count:
                    raise ManifestError(f"{f}: column {name!r} has {batch.column(name).null_count} nulls")
            if "dataset" in columns and pc.any(pc.not_equal(batch.column("dataset"), f.stem)).as_py():
                raise ManifestError(f"{f}: partition holds records of another dataset than {f.stem!r}")
            yield batch


def count_records(manifest: Path) -> int:
    """Records in all partitions, from the Parquet footers alone."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in _files(manifest))


def read_table(manifest: Path, datasets: list[str] | None = None, columns: list[str] | None = None) -> pa.Table:
    """All partitions (or those of `datasets`), checked: schema, nulls, keys unique across partitions."""
    manifest = Path(manifest)
    files = _files(manifest, datasets)
    tables = []
    for f in files:
        t = pq.read_table(f)
        if "licence" not in t.schema.names and "key" in t.schema.names:  # written before records had terms
            t = t.append_column("licence", pa.nulls(t.num_rows, pa.string()))
        if t.schema != SCHEMA:  # parquet may come back with large_string; compare names+types
            try:
                t = t.cast(SCHEMA)
            except (pa.ArrowInvalid, ValueError) as exc:
                raise ManifestError(f"{f}: schema differs from facecorpus.records.SCHEMA: {exc}") from exc
        if not is_dataset(f.stem) or pc.any(pc.not_equal(t.column("dataset"), f.stem)).as_py():
            raise ManifestError(f"{f}: partition holds records of another dataset than {f.stem!r}")
        tables.append(t)
    table = pa.concat_tables(tables)
    check_table(table, str(manifest))
    return table.select(columns) if columns else table


def read_records(manifest: Path, datasets: list[str] | None = None) -> pd.DataFrame:
    return read_table(manifest, datasets).to_pandas()


def image_root(manifest: Path, dataset: str, raw_root: Path | str | None = None) -> Path | str:
    """The raw folder `dataset` was converted from (images are relative to it); with `raw_root`, the folder
    of the same name under it (raw data moved since `convert`)."""
    return summary.raw_dir(manifest, dataset, raw_root)

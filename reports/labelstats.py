"""Distribution of every attribute of every dataset, from the manifest's `labels` JSON column.

Each distinct labels string is parsed once (the 2.3M-record corpus has far fewer distinct label sets
than records, CelebA aside), with pyarrow's multithreaded JSON reader; counts are weighted by how
many records carry that string. Datasets whose values mix types under one key fall back to json.
"""

from __future__ import annotations

import json
from collections import Counter

import pyarrow as pa
import pyarrow.json as pj

TOP = 12  # values shown per attribute; the rest is summed as "other"
AXIS_KEYS = ("age", "expression", "gender", "race")  # kept in full for the comparable views (axes.py)


class LabelsError(ValueError):
    """A `labels` value that is not a JSON object; the message names the dataset and the value."""


def is_axis_key(name: str) -> bool:
    return name in AXIS_KEYS or name.endswith("color")


def distributions(labels: dict[str, tuple[list[str], list[int]]]) -> tuple[dict, dict]:
    """`labels` is {dataset: (distinct labels JSON strings, records carrying each)}.

    Returns ({dataset: {attribute: summary}}, {dataset: {axis attribute: [(value, n), ...]}})."""
    summaries, full = {}, {}
    for dataset, (strings, weights) in labels.items():
        try:
            counts = _value_counts(strings, weights)
        except LabelsError as exc:
            raise LabelsError(f"{dataset}.parquet, column labels: {exc}") from None
        records = sum(weights)
        summaries[dataset] = {name: _summary(vc, records) for name, vc in counts.items()}
        full[dataset] = {name: vc for name, vc in counts.items() if is_axis_key(name)}
    return summaries, full


def _value_counts(strings: list[str], weights: list[int]) -> dict[str, list[tuple]]:
    """{attribute: [(value, records), ...] most common first}; None values are left out."""
    try:
        parsed = _read_json(strings)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _value_counts_python(strings, weights)
    n = pa.array(weights, pa.int64())
    out = {}
    for name in parsed.column_names:
        col = parsed.column(name)
        if not (pa.types.is_boolean(col.type) or pa.types.is_integer(col.type) or pa.types.is_string(col.type)
                or pa.types.is_null(col.type)):
            return _value_counts_python(strings, weights)  # e.g. a nested value: let json say what it is
        agg = pa.table({"v": col, "n": n}).group_by("v").aggregate([("n", "sum")]).sort_by([("n_sum", "descending")])
        out[name] = [(v, c) for v, c in zip(agg.column("v").to_pylist(), agg.column("n_sum").to_pylist()) if v is not None]
    return out


def _read_json(strings: list[str]) -> pa.Table:
    data = "\n".join(strings).encode("utf-8")
    # One block: type inference sees every row, so a key that is int in one block and str in a
    # later one raises here instead of failing half-way.
    opts = pj.ReadOptions(block_size=max(len(data) + 1, 1 << 16), use_threads=True)
    return pj.read_json(pa.BufferReader(data), read_options=opts)


def _value_counts_python(strings: list[str], weights: list[int]) -> dict[str, list[tuple]]:
    counters: dict[str, Counter] = {}
    for s, w in zip(strings, weights):
        try:
            labels = json.loads(s)
        except json.JSONDecodeError as exc:
            raise LabelsError(f"{w} records have labels that are not JSON ({exc}): {s[:200]!r}") from exc
        if not isinstance(labels, dict):
            raise LabelsError(f"{w} records have labels that are not a JSON object: {s[:200]!r}")
        for name, value in labels.items():
            if value is not None:
                # Keep bool and int apart (True == 1 in a Counter).
                counters.setdefault(name, Counter())[(type(value).__name__, value)] += w
    return {name: [(v, n) for (_, v), n in c.most_common()] for name, c in counters.items()}


def _type_of(values: list) -> str:
    kinds = {type(v).__name__ for v in values}
    return kinds.pop() if len(kinds) == 1 else "mixed"


def _summary(vc: list[tuple], records: int) -> dict:
    """Top values plus "other"; `missing` counts labelled records of the dataset without this key."""
    present = sum(n for _, n in vc)
    top = vc if len(vc) <= TOP + 1 else vc[:TOP]
    return {"type": _type_of([v for v, _ in vc]), "records": present, "missing": records - present,
            "distinct": len(vc), "top": [[v, n] for v, n in top], "other": present - sum(n for _, n in top)}

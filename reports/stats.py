"""Label statistics of a manifest (and its shards) as one plain, JSON-ready dict.

Everything is computed with vectorised pyarrow/numpy over the whole manifest: the 2.3M-record
corpus takes seconds, not minutes (benchmarks/report.py). Labels are parsed once per distinct JSON
string, and WordPiece lengths once per distinct word (BERT pre-tokenizes on whitespace first, so a
text's length is the sum of its words' lengths).

report.json keys (stable; `format` changes when one does):
  format            "facecorpus-report/1"
  manifest, shards_dir  the folders read (shards_dir: null without --shards)
  totals            {records, images, photos, datasets}
  records           {dataset: {kind: n}}
  table1            [{dataset, kind, records, records_by_kind, paper, paper_text, difference,
                      full_download, matches_paper, filtered, reasons}] (reports/table1.py): `records` and
                     `difference` are of the kind Table 1 counts for that dataset
  axes              {ages: {bins, datasets: {d: {scale, values, binned, out_of_range}}}, expressions: {order,
                     datasets: {d: {counts, other}}}, gender: {d: [[v, n]]}, race: {d: [[v, n]]},
                     colors: {d: {attribute: [[name, n]]}}} (reports/axes.py)
  splits            {records: {split: n}, images: {split: n}, by_dataset: {dataset: {split: {records, images}}},
                     reassigned: [{dataset, decided_by, from, to, count}], reassigned_by_pair: {"a <- b": n}}
  shared_photos     {photos_in_several: n, pairs: [{datasets: [a, b], photos: n}],
                     combinations: [{datasets: [...], photos: n}]}
  attributes        {dataset: {attribute: {type, records, missing, distinct, top: [[value, n]], other}}}
                    counted over the records that carry labels (attribute records, labelled captions)
  lengths           {budget, words: {kind: dist}, wordpiece: {kind: dist}, by_dataset: {dataset: {kind:
                     {words: dist, wordpiece: dist}}}} with dist = {records, mean, p50, p90, p99, max,
                     over_budget, over_budget_share, hist: [[length, n]]} (words have no budget fields)
  filters           {datasets: {dataset: {rows_read, records, manifest_records, records_match, filtered,
                     errors, notes, raw_dir, raw_dir_found, unavailable: {status: {reason: n}}}},
                     by_reason: {reason: n}, ledger: {entries,
                     by_reason: {reason: n}, by_dataset: {dataset: n}}, summary_found: bool,
                     not_converted: {folder: why}} from the run summary (facecorpus/summary.py); raw_dir is
                     where the dataset's images are looked for (`--raw-root` moves it)
  link_rot          {web set: {urls, arrived, unavailable, unavailable_share, by_status: {status: n},
                     by_reason: [{status, reason, urls}]}}: the URLs img2dataset was given and why those
                     that never arrived did not (empty without web sets)
  shards            null, or {format, seed, samples_per_shard, preprocess, tokenizers: {vqgan, text_vocab},
                     by_split: {split: {shards, samples, bytes}}, by_split_kind: {"split/kind": {...}},
                     shards: [{path, split, kind, count, bytes}], counts}
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facecorpus import manifest as mf
from facecorpus import storage, vocab
from facecorpus import summary as run_summary
from facecorpus.codes import FFHQ_F16
from facecorpus.records import DATASETS, KINDS, SPLITS
from facecorpus.reports import axes, labelstats, table1
from facecorpus.trainer import sequences

FORMAT = "facecorpus-report/1"
# The budget a text is measured against: the release's, beside the 16x16 grid it was trained on
# (trainer/sequences.py owns both numbers; a run on another grid keeps the same text budget).
TEXT_BUDGET = sequences.TEXT_BUDGET
SEQUENCE_LENGTH = sequences.default_seq_len(FFHQ_F16)
COLUMNS = ["dataset", "kind", "split", "image_id", "photo_id", "text", "labels"]


def compute(manifest: Path, shards: Path | None = None, step=lambda name: None, raw_root: Path | None = None) -> dict:
    """The report dict. `step(name)` is called before each stage (for a progress display); `raw_root`
    is where the datasets' raw folders are looked for when they moved since `convert`."""
    manifest = Path(manifest)
    step("reading the manifest")
    cols = _Columns(mf.read_table(manifest).select(COLUMNS))
    summary = run_summary.read(manifest) if run_summary.exists(manifest) else None
    step("counting records, splits and shared photos")
    records = _records(cols)
    report = {
        "format": FORMAT, "manifest": str(manifest), "shards_dir": str(shards) if shards else None,
        "totals": {"records": cols.rows, "images": len(cols.image[0]), "photos": len(cols.photo[0]),
                   "datasets": len(records)},
        "records": records,
        "table1": table1.compare(records, summary),
        "splits": _splits(cols, summary),
        "shared_photos": _shared_photos(cols),
    }
    step("label distributions")
    report["attributes"], full = labelstats.distributions(_labels_by_dataset(cols))
    report["axes"] = axes.build(full)
    step("text lengths (WordPiece)")
    report["lengths"] = _lengths(cols)
    report["filters"] = _filters(manifest, summary, records, raw_root)
    report["link_rot"] = _link_rot(summary)
    step("shards")
    report["shards"] = _shards(Path(shards)) if shards else None
    return report


def _encode(column: pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """(distinct values, index of each row's value): one hash pass, then everything is integer work."""
    enc = pc.dictionary_encode(column)  # one dictionary shared by all chunks
    if enc.num_chunks == 0:
        return pa.array([], column.type), np.zeros(0, np.int64)
    idx = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in enc.chunks]).astype(np.int64)
    return enc.chunk(0).dictionary, idx


def _coded(column: pa.ChunkedArray, names: tuple[str, ...]) -> np.ndarray:
    """Row codes in the fixed order of `names` (datasets, KINDS, SPLITS): report order, not data order."""
    values, idx = _encode(column)
    lookup = np.array([names.index(v) for v in values.to_pylist()], dtype=np.int64)
    return lookup[idx] if len(idx) else idx


class _Columns:
    """The manifest as integer codes: dataset, kind and split in fixed order; image, photo, text and
    labels as indices into their distinct values."""

    def __init__(self, table: pa.Table):
        self.rows = table.num_rows
        # The curated datasets in their fixed order, then any web sets by name.
        web = sorted(set(pc.unique(table.column("dataset")).to_pylist()) - set(DATASETS))
        self.names = DATASETS + tuple(web)
        self.nd = len(self.names)
        self.dataset = _coded(table.column("dataset"), self.names)
        self.kind = _coded(table.column("kind"), KINDS)
        self.split = _coded(table.column("split"), SPLITS)
        self.image = _encode(table.column("image_id"))
        self.photo = _encode(table.column("photo_id"))
        self.text = _encode(table.column("text"))
        self.labels = _encode(table.column("labels"))


NK, NS = len(KINDS), len(SPLITS)


def _unique(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values, counts) by sorting: numpy 2's hash-based np.unique is ~40x slower here."""
    s = np.sort(x)
    first = np.flatnonzero(np.concatenate(([True], s[1:] != s[:-1]))) if len(s) else np.zeros(0, np.int64)
    return s[first], np.diff(np.append(first, len(s)))


def _records(c: _Columns) -> dict:
    counts = np.bincount(c.dataset * NK + c.kind, minlength=c.nd * NK).reshape(c.nd, NK)
    return {d: {k: int(counts[i, j]) for j, k in enumerate(KINDS) if counts[i, j]}
            for i, d in enumerate(c.names) if counts[i].any()}


def _splits(c: _Columns, summary: run_summary.RunSummary | None) -> dict:
    records = np.bincount(c.dataset * NS + c.split, minlength=c.nd * NS).reshape(c.nd, NS)
    # Distinct (image, split) and (image, split, dataset) pairs give images per split.
    img_split, _ = _unique(c.image[1] * NS + c.split)
    images = np.bincount(img_split % NS, minlength=NS)
    trio, _ = _unique((c.image[1] * NS + c.split) * c.nd + c.dataset)
    images_ds = np.bincount((trio % c.nd) * NS + (trio // c.nd) % NS, minlength=c.nd * NS).reshape(c.nd, NS)
    totals = records.sum(axis=0)
    reassigned = [] if summary is None else list(summary.splits.reassigned)
    by_pair: Counter = Counter()
    for r in reassigned:
        by_pair[f"{r['dataset']} <- {r['decided_by']}"] += int(r["count"])
    return {
        "records": {s: int(totals[j]) for j, s in enumerate(SPLITS) if totals[j]},
        "images": {s: int(images[j]) for j, s in enumerate(SPLITS) if totals[j]},
        "by_dataset": {d: {s: {"records": int(records[i, j]), "images": int(images_ds[i, j])}
                           for j, s in enumerate(SPLITS) if records[i, j]}
                       for i, d in enumerate(c.names) if records[i].any()},
        "reassigned": reassigned,
        "reassigned_by_pair": dict(by_pair.most_common()),
    }


def _shared_photos(c: _Columns) -> dict:
    """Photos that several datasets show: each photo gets a bit mask of its datasets."""
    pairs, _ = _unique(c.photo[1] * c.nd + c.dataset)
    masks = np.bincount(pairs // c.nd, weights=np.left_shift(1, pairs % c.nd)).astype(np.int64)
    several = masks[(masks & (masks - 1)) != 0]  # more than one bit set
    combos, pair_counts = [], Counter()
    for mask, n in zip(*_unique(several)):
        names = [d for i, d in enumerate(c.names) if int(mask) >> i & 1]
        combos.append({"datasets": names, "photos": int(n)})
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                pair_counts[(a, b)] += int(n)
    return {
        "photos_in_several": len(several),
        "pairs": [{"datasets": list(k), "photos": n} for k, n in pair_counts.most_common()],
        "combinations": sorted(combos, key=lambda x: -x["photos"]),
    }


def _labels_by_dataset(c: _Columns) -> dict[str, tuple[list[str], list[int]]]:
    """{dataset: (distinct labels JSON strings, records carrying each)}, records without labels left out."""
    values, idx = c.labels
    pairs, counts = _unique(idx * c.nd + c.dataset)
    strings = np.asarray(values.to_pylist(), dtype=object)
    out = {}
    for i, d in enumerate(c.names):
        m = (pairs % c.nd == i) & (strings[pairs // c.nd] != "{}")
        if m.any():
            out[d] = (strings[pairs[m] // c.nd].tolist(), counts[m].tolist())
    return out


def wordpiece_lengths(texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(words, WordPiece ids) per text, tokenizing each distinct word once.

    BERT's pre-tokenizer splits on whitespace before anything else, so a text's ids are the
    concatenation of its words' ids; tests/test_report.py checks this against encode_batch.
    """
    words = pc.utf8_split_whitespace(texts)
    if isinstance(words, pa.ChunkedArray):
        words = words.combine_chunks()
    offsets = words.offsets.to_numpy(zero_copy_only=False).astype(np.int64)
    encoded = words.values.slice(int(offsets[0]), int(offsets[-1] - offsets[0])).dictionary_encode()
    uniq = encoded.dictionary.to_pylist()
    per_word = np.fromiter((len(ids) for ids in vocab.encode_batch(uniq)), dtype=np.int64, count=len(uniq))
    # Sum each text's words as differences of one running total (no per-word owner array).
    running = np.concatenate(([0], np.cumsum(per_word[encoded.indices.to_numpy(zero_copy_only=False)])))
    start = offsets - offsets[0]
    return np.diff(start), running[start[1:]] - running[start[:-1]]


def _dist(values: np.ndarray, weights: np.ndarray, budget: int | None) -> dict:
    """Distribution of `values` (one per distinct text) weighted by how many records carry each."""
    total = int(weights.sum())
    if total == 0:
        return {"records": 0}
    hist = np.bincount(values, weights=weights).astype(np.int64)
    cum = np.cumsum(hist)

    def pct(p: float) -> int:
        return int(np.searchsorted(cum, p * total, side="left"))

    out = {"records": total, "mean": round(float((values * weights).sum() / total), 2),
           "p50": pct(0.5), "p90": pct(0.9), "p99": pct(0.99), "max": int(values.max()),
           "hist": [[int(i), int(n)] for i, n in enumerate(hist) if n]}
    if budget is not None:
        over = int(weights[values > budget].sum())
        out.update(over_budget=over, over_budget_share=round(over / total, 6))
    return out


def _lengths(c: _Columns) -> dict:
    values, idx = c.text
    n_words, n_ids = wordpiece_lengths(values)  # once per distinct text
    group = c.dataset * NK + c.kind
    keys, weights = _unique(idx * (c.nd * NK) + group)
    text, group = keys // (c.nd * NK), keys % (c.nd * NK)
    words, ids, ds, kinds = n_words[text], n_ids[text], group // NK, group % NK
    out = {"budget": TEXT_BUDGET, "sequence_length": SEQUENCE_LENGTH, "words": {}, "wordpiece": {}, "by_dataset": {}}
    for j, kind in enumerate(KINDS):
        m = kinds == j
        if m.any():
            out["words"][kind] = _dist(words[m], weights[m], None)
            out["wordpiece"][kind] = _dist(ids[m], weights[m], TEXT_BUDGET)
    for i, d in enumerate(c.names):
        for j, kind in enumerate(KINDS):
            m = (ds == i) & (kinds == j)
            if m.any():
                out["by_dataset"].setdefault(d, {})[kind] = {
                    "words": _dist(words[m], weights[m], None), "wordpiece": _dist(ids[m], weights[m], TEXT_BUDGET)}
    return out


_NUMBERS = re.compile(r"\d+")


def _ledger(manifest: Path) -> dict:
    """ledger.jsonl entries by reason (their `reason`, else their `problem` with numbers as N)."""
    path = manifest / "ledger.jsonl"
    by_reason, by_dataset, entries = Counter(), Counter(), 0
    if path.exists():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as exc:
                raise mf.ManifestError(f"{path}:{lineno}: not a JSON object: {exc}") from exc
            entries += 1
            reason = entry.get("reason") or _NUMBERS.sub("N", str(entry.get("problem", "unknown")))
            by_reason[reason] += 1
            by_dataset[entry.get("dataset", "unknown")] += 1
    return {"entries": entries, "found": path.exists(), "by_reason": dict(by_reason.most_common()),
            "by_dataset": dict(by_dataset.most_common())}


def _filters(manifest: Path, summary: run_summary.RunSummary | None, records: dict, raw_root: Path | None) -> dict:
    datasets, by_reason = {}, Counter()
    for name, info in (summary.datasets if summary else {}).items():
        ours = sum(records.get(name, {}).values())
        raw = run_summary.raw_dir(manifest, name, raw_root)
        datasets[name] = {
            "rows_read": info.rows_read, "records": info.records, "manifest_records": ours,
            "records_match": info.records == ours, "filtered": dict(info.filtered), "errors": info.errors,
            "notes": list(info.notes), "raw_dir": str(raw), "raw_dir_found": storage.is_dir(raw),
            "unavailable": info.unavailable,
        }
        by_reason.update(info.filtered)
    return {"summary_found": summary is not None, "datasets": datasets,
            "by_reason": dict(by_reason.most_common()), "ledger": _ledger(manifest),
            "not_converted": dict(summary.not_converted) if summary else {}}


def _link_rot(summary: run_summary.RunSummary | None) -> dict:
    """Per web set: how many of its URLs arrived, and why the others did not (img2dataset's status and
    reason, most frequent first); the URLs that arrived but were filtered are the filters' business."""
    out = {}
    for name, info in (summary.datasets if summary else {}).items():
        lost = info.unavailable_rows
        if info.unavailable:
            reasons = Counter({(s, r): n for s, rs in info.unavailable.items() for r, n in rs.items()})
            out[name] = {"urls": info.rows_read, "arrived": info.rows_read - lost, "unavailable": lost,
                         "unavailable_share": round(lost / info.rows_read, 6) if info.rows_read else 0.0,
                         "by_status": {s: sum(rs.values()) for s, rs in info.unavailable.items()},
                         "by_reason": [{"status": s, "reason": r, "urls": n} for (s, r), n in reasons.most_common()]}
    return out


def _shards(shards: Path) -> dict:
    from facecorpus.shards import format as fmt  # the one reader of index.json, with all its checks

    index = fmt.read_index(shards)
    by_split, by_split_kind = {}, {}
    for s in index.shards:
        for bucket, name in ((by_split, s.split), (by_split_kind, f"{s.split}/{s.kind}")):
            b = bucket.setdefault(name, {"shards": 0, "samples": 0, "bytes": 0})
            b["shards"] += 1
            b["samples"] += s.count
            b["bytes"] += s.bytes
    d = index.data
    return {
        "format": d["format"], "seed": d["seed"], "samples_per_shard": d["samples_per_shard"],
        "preprocess": d["preprocess"], "tokenizers": {"vqgan": d["vqgan"], "text_vocab": d["text_vocab"]},
        "by_split": by_split, "by_split_kind": by_split_kind,
        "shards": [{k: getattr(s, k) for k in ("path", "split", "kind", "count", "bytes")} for s in index.shards],
        "counts": d["counts"],
    }

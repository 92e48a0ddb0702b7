"""The run summary, `MANIFEST/summary.json`: what `facecorpus convert` read, kept, filtered and could not use.

`convert` writes it through `write` (converters/pipeline.py); `report` reads it through `read`, and every
stage that opens images finds each dataset's raw folder through `raw_dir`. One schema, checked on
write and on read:

  format         "facecorpus-summary/2"
  datasets       {dataset: {raw_dir, rows_read, records, filtered: {reason: n}, errors, notes: [text],
                  unavailable: {status: {reason: n}}}} with
                 rows_read == records + sum(filtered) + errors + sum(unavailable): `unavailable` counts a
                 web set's URLs that its downloader lost (link rot), by the downloader's status and reason
  splits         {seed, holdout: {split: share}, reassigned: [{dataset, from, to, decided_by, count}],
                  celeba_partition_photos, records: {split: n}}
  not_converted  {folder or dataset: why}: what RAW_ROOT held or lacked that is not a converted dataset
                 (an absent dataset, an unknown folder, a support folder, raw files that could not be used)
  on_error       "raise" or "skip" (skipped rows are in ledger.jsonl)

`raw_dir` is the dataset's raw folder relative to the manifest folder, so a manifest moved together
with its raw data still finds the images; `raw_dir(..., raw_root=R)` looks in `R/<folder name>`
instead, for raw data moved elsewhere. A summary from before `format` was recorded still reads: its
`unusable` block is `not_converted`, and its absolute raw folders are used as they are; one of format
1 (before web sets) has no `unavailable`. The format went to 2 with `unavailable`, so that an older
facecorpus refuses a web set's counts by name instead of finding that they do not add up.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from facecorpus import storage
from facecorpus.atomic import atomic_write
from facecorpus.excerpt import quote

FILE = "summary.json"
FORMAT = "facecorpus-summary/2"
READS = ("facecorpus-summary/1", FORMAT)
_COUNTS = {"raw_dir": str, "rows_read": int, "records": int, "filtered": dict, "errors": int, "notes": list}


class SummaryError(ValueError):
    """A summary.json that is missing or breaks the schema; the message names the file and the key."""


@dataclass(frozen=True)
class DatasetSummary:
    """One dataset's counts: every row read is a record, a filtered row (by reason) or an error."""
    raw_dir: str
    rows_read: int
    records: int
    filtered: dict[str, int]
    errors: int
    notes: list[str]
    unavailable: dict[str, dict[str, int]] = field(default_factory=dict)  # status -> reason -> URLs

    @property
    def unavailable_rows(self) -> int:
        return sum(n for reasons in self.unavailable.values() for n in reasons.values())

    def __post_init__(self):
        lost = self.unavailable_rows
        if self.rows_read != self.records + sum(self.filtered.values()) + self.errors + lost:
            raise SummaryError(f"rows read ({self.rows_read:,}) != records ({self.records:,}) + filtered "
                               f"({sum(self.filtered.values()):,}) + errors ({self.errors:,})"
                               + (f" + unavailable ({lost:,})" if lost else ""))


@dataclass(frozen=True)
class SplitSummary:
    """How split harmonization went: its seed and hashed shares, every reassignment, records per split."""
    seed: int = 0
    holdout: dict[str, float] = field(default_factory=dict)
    reassigned: list[dict] = field(default_factory=list)
    celeba_partition_photos: int = 0
    records: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunSummary:
    datasets: dict[str, DatasetSummary]
    splits: SplitSummary
    not_converted: dict[str, str]
    on_error: str

    def as_dict(self) -> dict:
        return {"format": FORMAT, "datasets": {k: asdict(self.datasets[k]) for k in sorted(self.datasets)},
                "splits": asdict(self.splits), "not_converted": dict(self.not_converted), "on_error": self.on_error}


def write(manifest: Path, summary: RunSummary) -> Path:
    """Write `manifest/summary.json` atomically."""
    return atomic_write(Path(manifest) / FILE, json.dumps(summary.as_dict(), indent=2, ensure_ascii=False) + "\n")


def exists(manifest: Path) -> bool:
    return (Path(manifest) / FILE).is_file()


def read(manifest: Path) -> RunSummary:
    """The checked summary of `manifest` (SummaryError naming the file and key when it breaks the schema)."""
    path = Path(manifest) / FILE
    data = _load(path)
    legacy = "format" not in data
    if not legacy and data["format"] not in READS:
        raise SummaryError(f"{path}: format {quote(data['format'])} is not {FORMAT!r} (written by a newer facecorpus?)")
    datasets = {name: _dataset(path, name, entry) for name, entry in _object(path, data, "datasets").items()}
    splits = _object(path, data, "splits", required=not legacy)
    unknown = sorted(set(splits) - set(SplitSummary.__dataclass_fields__))
    if unknown:
        raise SummaryError(f"{path}: splits has unknown keys {unknown}")
    not_converted = _object(path, data, "unusable" if legacy else "not_converted", required=not legacy)
    return RunSummary(datasets, SplitSummary(**splits), {str(k): str(v) for k, v in not_converted.items()},
                      str(data.get("on_error", "raise")))


def raw_dir(manifest: Path, dataset: str, raw_root: Path | str | None = None) -> Path | str:
    """The folder `dataset` was converted from (record images are relative to it): as recorded, relative to
    the manifest folder, or `raw_root/<its folder name>` when the raw data has moved. A folder in object
    storage is its URI (never copied: tokenize reads its images in place, facecorpus/storage.py)."""
    path = Path(manifest) / FILE
    entry = _object(path, _load(path), "datasets").get(dataset)
    if not isinstance(entry, dict) or not isinstance(entry.get("raw_dir"), str):
        raise SummaryError(f"{path}: no raw_dir for dataset {dataset!r} (was it converted into this manifest?)")
    if raw_root is not None:
        return storage.join(raw_root, PurePosixPath(entry["raw_dir"]).name)
    if storage.is_remote(entry["raw_dir"]):
        return entry["raw_dir"]
    recorded = Path(entry["raw_dir"])
    # A manifest staged from object storage: its relative raw folder is the one beside it in the bucket.
    return recorded if recorded.is_absolute() else storage.unmirrored(Path(manifest) / recorded)


def nest(counts: dict[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    """{(status, reason): n} -> {status: {reason: n}}, most frequent reason first (`unavailable`)."""
    out: dict[str, dict[str, int]] = {}
    for (status, reason), n in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        out.setdefault(status, {})[reason] = n
    return out


def relative_raw_dir(raw: Path, manifest: Path) -> str:
    """How `write` records a raw folder: relative to the manifest folder, in POSIX form, when both are
    local or both in one bucket; otherwise the raw folder's URI (or absolute path)."""
    raw_uri, manifest_uri = storage.uri_of(Path(raw)), storage.uri_of(Path(manifest))
    if raw_uri or manifest_uri:
        if not (raw_uri and manifest_uri and storage.same_bucket(raw_uri, manifest_uri)):
            return raw_uri or Path(raw).resolve().as_posix()
    return Path(os.path.relpath(Path(raw).resolve(), Path(manifest).resolve())).as_posix()


def _load(path: Path) -> dict:
    if not path.is_file():
        raise SummaryError(f"{path} is missing: was this folder written by `facecorpus convert`?")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SummaryError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SummaryError(f"{path}: holds a {type(data).__name__}, expected an object")
    return data


def _object(path: Path, data: dict, key: str, required: bool = True) -> dict:
    value = data.get(key, None if required else {})
    if not isinstance(value, dict):
        raise SummaryError(f"{path}: {key} is {'missing' if value is None else type(value).__name__}, expected an object")
    return value


def _dataset(path: Path, name: str, entry) -> DatasetSummary:
    where = f"{path}: datasets.{name}"
    if not isinstance(entry, dict):
        raise SummaryError(f"{where} is not an object")
    missing = [k for k in _COUNTS if k not in entry]
    wrong = [k for k, kind in _COUNTS.items() if k in entry and (not isinstance(entry[k], kind) or isinstance(entry[k], bool))]
    if missing or wrong:
        raise SummaryError(f"{where}: missing {missing}, wrong type {wrong}")
    if not all(isinstance(n, int) for n in entry["filtered"].values()):
        raise SummaryError(f"{where}.filtered: counts must be integers")
    unavailable = entry.get("unavailable", {})
    if not (isinstance(unavailable, dict) and all(
            isinstance(r, dict) and all(isinstance(n, int) and not isinstance(n, bool) for n in r.values())
            for r in unavailable.values())):
        raise SummaryError(f"{where}.unavailable: expected {{status: {{reason: count}}}}")
    try:
        return DatasetSummary(**{k: entry[k] for k in _COUNTS}, unavailable=unavailable)
    except SummaryError as exc:
        raise SummaryError(f"{where}: {exc}") from None

"""`facecorpus verify`: re-read every shard and check it against index.json.

index.json itself must read (format.read_index: every entry a unique `<split>/<kind>-NNNNNN.tar`
inside the folder, or verify stops naming the entry). Then: every listed tar exists with the listed
bytes and sha256; no unlisted tar lies beside them; each holds exactly `count` samples that decode by
the format (format.decode); no sample key appears twice across shards; the counts add up to
index.json's totals. Every problem is listed, not just the first.
"""

from __future__ import annotations

from pathlib import Path

from facecorpus.records import SPLITS
from facecorpus.shards import format as fmt


def check_shard(index: fmt.ShardIndex, entry: fmt.ShardEntry, keys: set[str]) -> list[str]:
    """The problems of one shard; adds its sample keys to `keys` (a key seen before is a problem)."""
    where = str(index.root / entry.path)
    try:
        samples = fmt.tar_samples(fmt.vouched_bytes(index, entry), where)
    except fmt.FormatError as exc:
        return [str(exc)]
    problems = []
    if len(samples) != entry.count:
        problems.append(f"{where}: {len(samples)} samples, index.json says {entry.count}")
    for key, members in samples:
        try:
            fmt.decode(key, members, index.grid, entry, where)
        except fmt.FormatError as exc:
            problems.append(str(exc))
        if key in keys:
            problems.append(f"{where}: sample {fmt.show(key)} is also in another shard")
        keys.add(key)
    return problems


def _unlisted(index: fmt.ShardIndex) -> list[str]:
    listed = {e.path for e in index.shards}
    return [f"{split}/{tar.name}: not listed in index.json (leftover or truncated)"
            for split in SPLITS for tar in sorted((index.root / split).glob("*.tar*"))
            if f"{split}/{tar.name}" not in listed]


def _count_problems(index: fmt.ShardIndex, total: int) -> list[str]:
    c = index.data["counts"]
    if missing := [k for k in ("records", "samples", "skipped_ledgered_image") if type(c.get(k)) is not int]:
        return [f"{index.file}: counts lacks the integers {missing}"]
    problems = []
    if total != c["samples"]:
        problems.append(f"shards hold {total} samples, counts.samples says {c['samples']}")
    if c["records"] != c["samples"] + c["skipped_ledgered_image"]:
        problems.append(f"counts do not add up: records {c['records']} != samples {c['samples']} + "
                        f"skipped_ledgered_image {c['skipped_ledgered_image']}")
    return problems


def verify(shards: Path, progress=None) -> dict:
    """{shards, samples, bytes, problems: [...]}; `problems` empty means the shards are sound."""
    index = fmt.read_index(Path(shards))
    problems = _unlisted(index)
    task = progress.add_task("verify", total=len(index.shards)) if progress else None
    keys: set[str] = set()
    for entry in index.shards:
        problems += check_shard(index, entry, keys)
        if progress:
            progress.advance(task)
    total = sum(e.count for e in index.shards)
    problems += _count_problems(index, total)
    return {"shards": len(index.shards), "samples": total, "bytes": sum(e.bytes for e in index.shards),
            "problems": problems}

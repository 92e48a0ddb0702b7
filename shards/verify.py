"""`facecorpus verify`: re-read every shard and check it against index.json.

Checks: every listed tar exists with the listed bytes and sha256; no unlisted tar lies beside them;
each holds exactly `count` samples, every sample has json, npy and txt; the npy is a uint16 16x16
array of codes below 1,024; the json parses, names the sample's key, split and kind; the txt is UTF-8;
the counts add up to index.json's totals.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
from facecorpus.shards import index as index_mod
from facecorpus.shards.writer import MEMBER_ORDER, sample_key

from facecorpus.records import SPLITS

N_CODES = 1024


def _check_sample(key: str, members: dict[str, bytes], entry: dict) -> str | None:
    if sorted(members) != sorted(MEMBER_ORDER):
        return f"sample {key}: members {sorted(members)}, expected {list(MEMBER_ORDER)}"
    try:
        codes = np.load(io.BytesIO(members["npy"]), allow_pickle=False)
        meta = json.loads(members["json"])
        members["txt"].decode("utf-8")
    except Exception as exc:  # noqa: BLE001 - any decoding failure is a finding
        return f"sample {key}: does not decode: {type(exc).__name__}: {exc}"
    if codes.dtype != np.uint16 or codes.shape != (16, 16) or int(codes.max()) >= N_CODES:
        return f"sample {key}: npy is {codes.dtype} {codes.shape} max {codes.max()}, expected uint16 (16,16) < {N_CODES}"
    if sample_key(meta.get("key", "")) != key or meta.get("split") != entry["split"] or meta.get("kind") != entry["kind"]:
        return f"sample {key}: json names key {meta.get('key')!r}, split {meta.get('split')!r}, kind {meta.get('kind')!r}"
    return None


def check_shard(root: Path, entry: dict) -> list[str]:
    path = root / entry["path"]
    if not path.is_file():
        return [f"{entry['path']}: missing"]
    data = path.read_bytes()
    problems = []
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        problems.append(f"{entry['path']}: {len(data)} bytes / sha256 differ from index.json")
    samples: dict[str, dict[str, bytes]] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
            for m in tar:
                key, _, ext = m.name.partition(".")
                samples.setdefault(key, {})[ext] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError) as exc:
        return problems + [f"{entry['path']}: not a readable tar: {exc}"]
    if len(samples) != entry["count"]:
        problems.append(f"{entry['path']}: {len(samples)} samples, index.json says {entry['count']}")
    problems += [p for key, members in samples.items() if (p := _check_sample(key, members, entry))]
    return problems


def verify(shards: Path, progress=None) -> dict:
    """{shards, samples, bytes, problems: [...]}; `problems` empty means the shards are sound."""
    root = Path(shards)
    index = index_mod.read(root)
    problems = []
    listed = {e["path"] for e in index["shards"]}
    for split in SPLITS:
        for tar in sorted((root / split).glob("*.tar*")):
            if f"{split}/{tar.name}" not in listed:
                problems.append(f"{split}/{tar.name}: not listed in index.json (leftover or truncated)")
    task = progress.add_task("verify", total=len(index["shards"])) if progress else None
    for entry in index["shards"]:
        problems += check_shard(root, entry)
        if progress:
            progress.advance(task)
    total = sum(e["count"] for e in index["shards"])
    if total != index["counts"]["samples"]:
        problems.append(f"shards hold {total} samples, counts.samples says {index['counts']['samples']}")
    c = index["counts"]
    if c["records"] != c["samples"] + c["skipped_ledgered_image"]:
        problems.append(f"counts do not add up: records {c['records']} != samples {c['samples']} + "
                        f"skipped_ledgered_image {c['skipped_ledgered_image']}")
    return {"shards": len(index["shards"]), "samples": total,
            "bytes": sum(e["bytes"] for e in index["shards"]), "problems": problems}

"""The token cache: every tokenized image once, as Parquet parts that only ever grow.

Layout of a cache folder:
    identity.json           the VQGAN identity and preprocessing policy all codes were made with
    codes/part-*.parquet    image_id, codes (256 x uint16, row-major 16x16), vqgan config/checkpoint sha256
    ledger/part-*.parquet   per-image failures: image_id, path, stage, message, at (see ledger.py)
Each part is written under a temporary name and renamed, so a run killed at any point leaves only
whole parts; the next run encodes only the image_ids no part holds yet.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facecorpus.codes import FFHQ_F16

CODES = 256
IDENTITY = "identity.json"
CODES_SCHEMA = pa.schema([
    ("image_id", pa.string()),
    ("codes", pa.list_(pa.uint16(), CODES)),
    ("vqgan_config_sha256", pa.dictionary(pa.int8(), pa.string())),
    ("vqgan_checkpoint_sha256", pa.dictionary(pa.int8(), pa.string())),
])


class CacheError(ValueError):
    """A cache folder that cannot be used as asked; the message names the folder and the reason."""


def open_cache(cache: Path, identity: dict, policy: dict) -> Path:
    """Create `cache` or check that it was made with the same VQGAN and preprocessing; drop the
    temporary files of a killed run."""
    cache = Path(cache)
    for sub in ("codes", "ledger"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
        for tmp in (cache / sub).glob("*.tmp"):
            tmp.unlink()
    want = {"vqgan": identity, "preprocess": policy}
    path = cache / IDENTITY
    if path.exists():
        have = json.loads(path.read_text())
        # Caches written before identities carried the code grid hold Talk2Face's 1,024 codes on 16x16.
        have["vqgan"] = {**FFHQ_F16.as_dict(), **have.get("vqgan", {})}
        if have != want:
            raise CacheError(f"{cache} holds codes made with {have['vqgan']} and preprocessing "
                             f"{have['preprocess'].get('name')}; this run uses {identity} and "
                             f"{policy.get('name')}. Use another --cache folder.")
    else:
        write_atomic(path, json.dumps(want, indent=2).encode())
    return cache


def read_identity(cache: Path) -> dict:
    path = Path(cache) / IDENTITY
    if not path.exists():
        raise CacheError(f"{cache} is not a token cache ({IDENTITY} missing): run `facecorpus tokenize` first")
    return json.loads(path.read_text())


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def part_name() -> str:
    # Time-ordered, unique per process: parts sort in the order they were written.
    return f"part-{time.time_ns():020d}-{os.getpid()}.parquet"


def write_part(folder: Path, table: pa.Table) -> Path:
    path = Path(folder) / part_name()
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path


def codes_table(image_ids: list[str], codes: np.ndarray, identity: dict) -> pa.Table:
    """Rows for the cache from ids and a (N,256) or (N,16,16) integer array."""
    codes = np.asarray(codes).reshape(len(image_ids), CODES)
    if codes.size and (codes.min() < 0 or codes.max() > np.iinfo(np.uint16).max):
        raise CacheError(f"codes out of uint16 range: {codes.min()}..{codes.max()}")
    flat = pa.array(codes.astype(np.uint16).ravel(), pa.uint16())
    n = len(image_ids)
    return pa.table({
        "image_id": pa.array(image_ids, pa.string()),
        "codes": pa.FixedSizeListArray.from_arrays(flat, CODES),
        "vqgan_config_sha256": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), [identity["config_sha256"]]),
        "vqgan_checkpoint_sha256": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), [identity["checkpoint_sha256"]]),
    }, schema=CODES_SCHEMA)


def _parts(folder: Path) -> list[Path]:
    return sorted(Path(folder).glob("part-*.parquet"))


def read_codes(cache: Path, columns: list[str] | None = None) -> pa.Table:
    """Every cached row (first write wins if an image_id ever appears twice)."""
    parts = _parts(Path(cache) / "codes")
    if not parts:
        return CODES_SCHEMA.empty_table().select(columns or CODES_SCHEMA.names)
    table = pa.concat_tables([pq.read_table(p, columns=columns, schema=CODES_SCHEMA) for p in parts])
    ids = table.column("image_id").to_numpy(zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    return table.take(np.sort(first)) if len(first) != len(ids) else table


def cached_ids(cache: Path) -> set[str]:
    return set(read_codes(cache, ["image_id"]).column("image_id").to_pylist())

"""The token cache: every tokenized image once, as Parquet parts that only ever grow.

Layout of a cache folder:
    identity.json           the VQGAN identity (code grid included) and preprocessing policy all codes
                            were made with
    codes/part-*.parquet    image_id, codes (grid side x side uint16, row-major), vqgan config/checkpoint sha256
    ledger/part-*.parquet   per-image failures: image_id, path, stage, message, at (see ledger.py)
Parts and identity.json are published through facecorpus.atomic, so a run killed at any point leaves
only whole parts; the next run encodes only the image_ids no part holds yet.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from facecorpus import atomic, storage
from facecorpus.codes import CODE_DTYPE, FFHQ_F16, CodeGrid
from facecorpus.excerpt import shorten
from facecorpus.preprocess import policy_problem

IDENTITY = "identity.json"
SUBFOLDERS = ("codes", "ledger")


class CacheError(ValueError):
    """A cache folder that cannot be used as asked; the message names the folder and the reason."""


def codes_schema(grid: CodeGrid) -> pa.Schema:
    return pa.schema([
        ("image_id", pa.string()),
        ("codes", pa.list_(pa.uint16(), grid.count)),
        ("vqgan_config_sha256", pa.dictionary(pa.int8(), pa.string())),
        ("vqgan_checkpoint_sha256", pa.dictionary(pa.int8(), pa.string())),
    ])


def open_cache(cache: Path, identity: dict, policy: dict) -> Path:
    """Create `cache` or check that it was made with the same VQGAN and preprocessing; drop the
    temporary files of a killed run."""
    cache = Path(cache)
    for sub in SUBFOLDERS:
        (cache / sub).mkdir(parents=True, exist_ok=True)
        atomic.sweep(cache / sub)
    path = cache / IDENTITY
    if not path.exists():
        atomic.atomic_write(path, json.dumps({"vqgan": identity, "preprocess": policy}, indent=2))
        return cache
    have = read_identity(cache)
    problem = policy_problem(have["preprocess"], policy)
    if problem:
        raise CacheError(f"{cache} holds codes made with {problem}: tokenize into a new --cache folder "
                         "(and shard from it) to use this version's preprocessing")
    if have["vqgan"] != identity:
        raise CacheError(f"{cache} holds codes made with VQGAN {have['vqgan']}; this run uses {identity}. "
                         "Use another --cache folder.")
    return cache


def read_identity(cache: Path) -> dict:
    """identity.json: {"vqgan": {..., codebook_size, grid, resolution}, "preprocess": {...}}. Caches
    written before identities carried the code grid hold Talk2Face's: 1,024 codes on 16x16 of 256x256."""
    path = Path(cache) / IDENTITY
    if not path.exists():
        raise CacheError(f"{cache} is not a token cache ({IDENTITY} missing): run `facecorpus tokenize` first")
    try:
        have = json.loads(path.read_text(encoding="utf-8"))
        have["vqgan"] = {**FFHQ_F16.as_dict(), **have["vqgan"]}
        have["preprocess"]  # noqa: B018 - a KeyError here is a broken identity
    except (ValueError, KeyError, TypeError) as exc:
        raise CacheError(f"{path}: not a token cache identity ({shorten(f'{type(exc).__name__}: {exc}')})") from None
    return have


def code_grid(cache: Path) -> CodeGrid:
    """The code grid of every image in `cache`."""
    return CodeGrid.from_dict(read_identity(cache)["vqgan"], str(Path(cache) / IDENTITY))


def part_name() -> str:
    # Time-ordered, unique per process: parts sort in the order they were written.
    return f"part-{time.time_ns():020d}-{os.getpid()}.parquet"


def write_part(folder: Path, table: pa.Table) -> Path:
    path = Path(folder) / part_name()
    with atomic.publishing(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    storage.publish(path)   # a cache in object storage gets each part at once: a killed run keeps it
    return path


def parts(folder: Path) -> list[Path]:
    """The published parts of a cache subfolder, oldest first."""
    return sorted(Path(folder).glob("part-*.parquet"))


def codes_table(image_ids: list[str], codes: np.ndarray, identity: dict) -> pa.Table:
    """Rows for the cache from ids and an (N, count) or (N, side, side) integer array on the grid
    that `identity` (the VQGAN's) records."""
    grid = CodeGrid.from_dict({**FFHQ_F16.as_dict(), **identity}, "VQGAN identity")
    codes = np.asarray(codes).reshape(len(image_ids), grid.count)
    if codes.size and (codes.min() < 0 or codes.max() >= grid.codebook_size):
        raise CacheError(f"codes {codes.min()}..{codes.max()} outside the codebook of {grid.codebook_size}")
    flat = pa.array(codes.astype(CODE_DTYPE).ravel(), pa.uint16())
    n = len(image_ids)
    return pa.table({
        "image_id": pa.array(image_ids, pa.string()),
        "codes": pa.FixedSizeListArray.from_arrays(flat, grid.count),
        "vqgan_config_sha256": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), [identity["config_sha256"]]),
        "vqgan_checkpoint_sha256": pa.DictionaryArray.from_arrays(pa.array(np.zeros(n, np.int8)), [identity["checkpoint_sha256"]]),
    }, schema=codes_schema(grid))


def read_codes(cache: Path, columns: list[str] | None = None) -> pa.Table:
    """Every cached row (first write wins if an image_id ever appears twice); `codes` holds
    `code_grid(cache).count` uint16 per row."""
    schema = codes_schema(code_grid(cache))
    found = parts(Path(cache) / "codes")
    if not found:
        return schema.empty_table().select(columns or schema.names)
    table = pa.concat_tables([pq.read_table(p, columns=columns, schema=schema) for p in found])
    ids = table.column("image_id").to_numpy(zero_copy_only=False)
    _, first = np.unique(ids, return_index=True)
    return table.take(np.sort(first)) if len(first) != len(ids) else table


def cached_ids(cache: Path) -> set[str]:
    """Every cached image_id as a set: for tests and small caches (tokenize and shard stream `iter_ids`)."""
    return set(read_codes(cache, ["image_id"]).column("image_id").to_pylist())


def iter_ids(cache: Path) -> Iterator[list[str]]:
    """Each part's image_ids, one part at a time: memory bounded by a part however big the cache."""
    for part in parts(Path(cache) / "codes"):
        yield pq.read_table(part, columns=["image_id"]).column(0).to_pylist()


def cached_among(cache: Path, ids: set[str]) -> set[str]:
    """Which of `ids` (a few, such as the ledger's) the cache holds, one part at a time."""
    found: set[str] = set()
    for part_ids in iter_ids(cache) if ids else ():
        found.update(ids.intersection(part_ids))
    return found

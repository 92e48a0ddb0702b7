"""Ids as 16-byte digests in sorted NumPy arrays: which images a manifest names, which the cache holds,
where an image's codes are, for tens of millions of images at 16 bytes each (a Python set of str
costs about 100 bytes per id, which is what made tokenize and shard grow with the corpus).

A digest is blake2b-128 of the id's UTF-8 bytes: two different ids share one with probability about
n^2 / 2^129 (1e-24 for 50M images), so a digest stands for its id. `order` is the seeded shuffle's
sort key (writer.py): blake2b-64 keyed with the seed, a uniformly random order that any process
recomputes from the key and the seed alone.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

DIGEST = np.dtype("V16")


def of(ids: Iterable[str]) -> np.ndarray:
    """The digests of `ids`, in their order."""
    return np.frombuffer(b"".join(hashlib.blake2b(i.encode(), digest_size=16).digest() for i in ids), DIGEST)


def order(keys: Iterable[str], seed: int) -> np.ndarray:
    """uint64 sort keys of record keys under `seed`: the shuffle's order (ties, never seen, go by key)."""
    salt = seed.to_bytes(16, "little", signed=True)
    return np.frombuffer(b"".join(hashlib.blake2b(k.encode(), digest_size=8, key=salt).digest() for k in keys),
                         ">u8").astype(np.uint64)


def lookup(table: np.ndarray, digests: np.ndarray) -> np.ndarray:
    """Position of each digest in the sorted `table`, or -1 where it is absent."""
    if not len(table):
        return np.full(len(digests), -1, np.int64)
    at = np.minimum(np.searchsorted(table, digests), len(table) - 1)
    return np.where(table[at] == digests, at, -1)

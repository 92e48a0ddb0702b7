"""MATLAB 5 `.mat` metadata (CACD, IMDB-WIKI) read with scipy, and the person ids both datasets share.

scipy turns a MATLAB struct of column (or row) arrays into a 1x1 record array whose fields are object
arrays; a cell of strings arrives as an object array of 1-element string arrays (0 elements for '').
These helpers unwrap both levels once, so converters work on flat numpy arrays and lists.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import numpy as np
import scipy.io

from facecorpus.converters.base import RawFormatError, refuse_html, rel_to
from facecorpus.excerpt import quote


def load_structs(path: Path, raw: Path, variables: tuple[str, ...], download: str) -> dict[str, np.void]:
    """The 1x1 structs named `variables` in the .mat file at `path` (RawFormatError for anything else)."""
    rel = rel_to(path, raw)
    with open(path, "rb") as fh:
        head = fh.read(512)
    refuse_html(head, rel, download)
    if head.startswith(b"MATLAB 7.3"):
        raise RawFormatError(rel, "is a MATLAB 7.3 (HDF5) file; the dataset ships MATLAB 5 files, download the "
                             "original again", download)
    try:
        data = scipy.io.loadmat(path, variable_names=list(variables))
    except Exception as exc:  # scipy raises IndexError, ValueError, zlib.error... on a broken file
        raise RawFormatError(rel, f"is not a readable MATLAB 5 file ({exc}); a truncated download?",
                             download) from None
    out = {}
    for name in variables:
        if name not in data:
            raise RawFormatError(rel, f"has no variable {quote(name)}", download)
        struct = data[name]
        if struct.dtype.names is None or struct.shape != (1, 1):
            raise RawFormatError(rel, f"{quote(name)} is not a 1x1 struct (got {struct.dtype} {struct.shape})", download)
        out[name] = struct[0, 0]
    return out


def columns(struct: np.void, fields: tuple[str, ...], rel: str, download: str) -> dict[str, np.ndarray]:
    """The named fields as flat arrays of one common length (RawFormatError names a missing or short one)."""
    have = struct.dtype.names
    missing = [f for f in fields if f not in have]
    if missing:
        raise RawFormatError(rel, f"struct lacks the field(s) {', '.join(missing)} (it has {', '.join(have)})",
                             download)
    out = {f: np.asarray(struct[f]).ravel() for f in fields}
    sizes = {f: len(v) for f, v in out.items()}
    if len(set(sizes.values())) != 1:
        raise RawFormatError(rel, f"fields have different lengths: {sizes}", download)
    if not next(iter(sizes.values()), 0):
        raise RawFormatError(rel, "holds no entries: a failed or truncated download?", download)
    return out


def strings(cells: np.ndarray) -> list[str | None]:
    """A cell of strings as Python strings: '' for an empty cell, None for a cell that holds no string."""
    out: list[str | None] = []
    for c in cells:
        if isinstance(c, np.ndarray) and c.dtype.kind == "U" and c.size <= 1:
            out.append(str(c[0]) if c.size else "")
        else:
            out.append(None)
    return out


def person_id(name: str) -> str | None:
    """`Robert_Downey_Jr.` and `Robert Downey Jr.` -> `person/robert downey jr`: the same celebrity in CACD
    and IMDB-WIKI shares it. NFC, lower case, words split at anything that is not a letter or digit."""
    words = re.sub(r"[\W_]+", " ", unicodedata.normalize("NFC", name).lower()).split()
    return "person/" + " ".join(words) if words else None

"""Atomic, durable writes: the one way facecorpus publishes a file or a folder.

A reader must never see half a file: a kill at any moment leaves either the old file (or none) or
the whole new one. Every writer goes through here: write under a temporary name beside the target,
flush and fsync it, rename it over the target (atomic on POSIX), then fsync the parent folder so the
rename itself survives a power cut. Temporary names end in `.tmp`, so a rerun can sweep leftovers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

TMP_SUFFIX = ".tmp"


def tmp_path(path: Path) -> Path:
    """The temporary name `path` is written under before it is published."""
    path = Path(path)
    return path.with_name(path.name + TMP_SUFFIX)


def fsync_dir(folder: Path) -> None:
    """Make renames and new entries inside `folder` durable."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    """fsync every file below `folder`, then every folder (a checkpoint folder before its rename)."""
    for root, dirs, files in os.walk(folder):
        for name in files:
            with open(os.path.join(root, name), "rb") as fh:
                os.fsync(fh.fileno())
        fsync_dir(Path(root))


@contextlib.contextmanager
def publishing(path: Path):
    """Yield a temporary path to write `path`'s content to (a file or a folder); on success publish
    it under `path` (replacing what was there), on failure remove it and re-raise."""
    path = Path(path)
    tmp = tmp_path(path)
    _remove(tmp)
    try:
        yield tmp
        if tmp.is_dir():
            fsync_tree(tmp)
            if path.exists():
                _remove(path)  # a folder cannot be renamed over a non-empty one
        else:
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write(path: Path, data: bytes | str) -> Path:
    """Write `data` (str as UTF-8) to `path` atomically and durably; returns `path`."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with publishing(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    return path


def sweep(folder: Path) -> int:
    """Remove the temporary files and folders a killed writer left directly in `folder`; how many."""
    n = 0
    for tmp in Path(folder).glob(f"*{TMP_SUFFIX}"):
        _remove(tmp)
        n += 1
    return n


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()

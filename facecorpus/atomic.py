"""Atomic, durable writes: the one way facecorpus publishes a file or a folder.

A reader must never see half a file: a kill at any moment leaves either the old file (or none) or
the whole new one. Every writer goes through here: write under a temporary name beside the target,
flush and fsync it, rename it over the target (atomic on POSIX), then fsync the parent folder so the
rename itself survives a power cut. Temporary names end in `.tmp`, so a rerun can sweep leftovers.

An object store has no rename, but a single PUT is atomic per object: readers see the whole object
or none. So a folder is published there object by object, each written whole from a local file that
was itself published here first, with the folder's commit object (`index.json`, `summary.json`, a
checkpoint's `checksums.json`) written after every object it vouches for, and objects the new
content no longer holds deleted only after it (`publish_tree`; facecorpus/storage.py stages them).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import os
import shutil
from pathlib import Path

import pyarrow.fs as pafs

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


# ---------------------------------------------------------------- object stores

Snapshot = dict[str, tuple[int, int]]   # file path relative to the folder -> (size, mtime_ns)


@dataclasses.dataclass
class Published:
    """A local folder's remote twin: filesystem, root path in it, and the local files as last published."""
    fs: pafs.FileSystem
    root: str
    snapshot: Snapshot
    first: tuple[str, ...] = ()  # globs of objects the others depend on, written before them
    last: tuple[str, ...] = ()   # globs of the commit objects, written after every other object
    staged: bool = False         # written through (not only read)


def download_tree(fs: pafs.FileSystem, root: str, folder: Path) -> Snapshot:
    """Copy the remote folder `root` into the local `folder` (created); the snapshot of what arrived."""
    folder.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(root, str(folder), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    return snapshot(folder)


def snapshot(folder: Path) -> Snapshot:
    """Every finished file below `folder` (temporary `*.tmp` names left out) with its size and mtime."""
    out: Snapshot = {}
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.endswith(TMP_SUFFIX)]
        for name in files:
            if not name.endswith(TMP_SUFFIX):
                st = os.stat(os.path.join(root, name))
                out[Path(root, name).relative_to(folder).as_posix()] = (st.st_size, st.st_mtime_ns)
    return out


def publish_tree(folder: Path, to: Published) -> int:
    """Write what changed in `folder` since its last snapshot to `to`, each object whole (one PUT or a
    multipart upload that appears only when complete), those matching `to.first` before and `to.last`
    after all others, then
    delete the objects whose files are gone; returns the objects written. A reader that trusts only
    what the commit object lists never sees a half-published folder."""
    now = snapshot(folder)
    changed = sorted(rel for rel, sig in now.items() if to.snapshot.get(rel) != sig)
    matches = lambda rel, globs: any(fnmatch.fnmatch(rel, glob) for glob in globs)  # noqa: E731
    changed.sort(key=lambda rel: 0 if matches(rel, to.first) else 2 if matches(rel, to.last) else 1)
    local = pafs.LocalFileSystem()
    for rel in changed:
        pafs.copy_files(str(folder / rel), f"{to.root}/{rel}", source_filesystem=local, destination_filesystem=to.fs)
    for rel in sorted(set(to.snapshot) - set(now)):
        to.fs.delete_file(f"{to.root}/{rel}")
    to.snapshot = now
    return len(changed)

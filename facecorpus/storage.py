"""Where a command reads and writes: a local folder, or an object-store URI (`s3://`, `gs://`, `file://`).

One abstraction, pyarrow's filesystems (`pyarrow.fs`): pyarrow is already what reads and writes every
Parquet file here and what Ray Data reads with, its wheel carries S3 and GCS clients, and
`FileSystem.from_uri` takes credentials, region and endpoint from the standard environment
(`AWS_ACCESS_KEY_ID`, `AWS_ENDPOINT_URL`, ...; docs/design.md, "Object storage").

Raw images are read in place: `open_object` gives tokenize's read tasks a random-access file of a
tar or image object, whose members they fetch by byte range, on whichever node they run.

Every other remote folder is *staged*: a command works on a local folder, so the code that writes
tars, Parquet parts and checkpoints (and its speed on local disks) stays one code path. `fetched`
copies a remote folder into a scratch mirror before the command reads it; `staged` does the same for
a folder the command writes, and on success publishes what changed through `atomic.publish_tree`
(each object written whole, the folder's commit object last, removed objects deleted after it).
The mirror keeps the remote layout (`SCRATCH/s3/bucket/key...`), so paths one folder records
relative to another (a manifest's `../raw/celeba`) resolve inside the mirror as they do remotely.
A local path or `file://` URI is returned as it is: nothing is copied.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from facecorpus import atomic

SCRATCH_ENV = "FACECORPUS_SCRATCH"   # parent folder of the scratch mirror (default: the system's temp folder)

_scratch: Path | None = None
_staged: dict[Path, atomic.Published] = {}   # mirror folder -> what was published there (for `publish`)


class StorageError(ValueError):
    """A location that cannot be used, named with the reason."""


def is_remote(location: str | Path) -> bool:
    """True for a URI whose scheme is not `file` (`s3://b/k`, `gs://b/k`); False for paths and `file://`."""
    scheme = urlsplit(str(location)).scheme
    return "://" in str(location) and len(scheme) > 1 and scheme != "file"


def local(location: str | Path) -> Path:
    """A local location as a Path (`file:///x` -> `/x`); a remote one is a StorageError."""
    text = str(location)
    if is_remote(text):
        raise StorageError(f"{text}: a remote location where a local one is needed")
    return Path(urlsplit(text).path) if text.startswith("file://") else Path(text)


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it: `bucket/key`) for a remote URI, configured from the environment."""
    parts = urlsplit(uri)
    return _bucket(parts.scheme, parts.netloc), parts.netloc + _key(parts.path)


@functools.lru_cache(maxsize=64)
def _bucket(scheme: str, netloc: str) -> pafs.FileSystem:
    # One filesystem per bucket and process: from_uri may ask the server for the bucket's region.
    # from_uri follows AWS_ENDPOINT_URL (pyarrow 26's bare `S3FileSystem()` does not).
    try:
        return pafs.FileSystem.from_uri(f"{scheme}://{netloc}/")[0]
    except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError, ArrowIOError an OSError
        raise StorageError(f"{scheme}://{netloc}: {exc}") from None


def _key(path: str) -> str:
    # "/a/../b//c" -> "/b/c" (normpath keeps a leading "//", so strip first)
    return posixpath.normpath("/" + path.lstrip("/")).rstrip("/")


def open_input(uri: str):
    """A sequential read stream of one remote object (e.g. webdataset's `gopen_schemes["s3"]`)."""
    fs, path = filesystem(uri)
    return fs.open_input_stream(path)


def mirror(uri: str) -> Path:
    """The scratch folder that stands for `uri` (`s3://b/k` -> SCRATCH/s3/b/k)."""
    parts = urlsplit(uri)
    key = _key(parts.path).lstrip("/")
    if not parts.netloc or ".." in key.split("/"):
        raise StorageError(f"{uri}: expected SCHEME://BUCKET/PATH")
    return _scratch_root() / parts.scheme / parts.netloc / key


def uri_of(path: Path) -> str | None:
    """The URI a scratch-mirror path stands for, or None for any other path."""
    path = Path(os.path.abspath(path))
    if _scratch is None or not path.is_relative_to(_scratch) or len(path.relative_to(_scratch).parts) < 2:
        return None
    scheme, *rest = path.relative_to(_scratch).parts
    return f"{scheme}://" + "/".join(rest)


def fetched(location: str | Path) -> Path:
    """A local path holding `location`'s content: the path itself, or a mirror of the remote folder or
    file (copied once per command; a location that does not exist remotely is a StorageError)."""
    if not is_remote(location):
        return local(location)
    uri = str(location).rstrip("/")
    target = mirror(uri)
    if target not in _staged:
        fs, root = filesystem(uri)
        kind = fs.get_file_info(root).type
        if kind == pafs.FileType.File:   # a single object: a checkpoint file, a release
            target.parent.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(root, str(target), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
            return target
        if kind != pafs.FileType.Directory:
            raise StorageError(f"{uri}: no such folder")
        _staged[target] = atomic.Published(fs, root, atomic.download_tree(fs, root, target))
    return target


def location_param(ctx, param, value):
    """click callback for a folder read in place (raw images): a Path that must exist, or a URI as it is."""
    import click

    if value is None or is_remote(value):
        return value
    path = local(value)
    if not path.is_dir():
        raise click.BadParameter(f"{value}: not a folder", ctx, param)
    return path


def fetch_param(ctx, param, value):
    """click callback for an input that may be a URI: the local path standing for it, which must exist
    (what `click.Path(exists=True)` checked for a path); a bad or missing location is a usage error."""
    import click

    if value is None:
        return None
    try:
        path = fetched(value)
    except StorageError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None
    if not path.exists():
        raise click.BadParameter(f"{value}: does not exist", ctx, param)
    return path


def unmirrored(path: Path) -> Path | str:
    """`path` itself, or the URI it stands for when it lies in the scratch mirror."""
    return uri_of(path) or path


def join(location: str | Path, name: str) -> Path | str:
    """`location/name` for a path (a Path) or a URI (a string)."""
    return f"{str(location).rstrip('/')}/{name}" if is_remote(location) else local(location) / name


def is_dir(location: str | Path) -> bool:
    """Whether the folder exists (an object-store folder: some object lies under it)."""
    if not is_remote(location):
        return local(location).is_dir()
    fs, path = filesystem(str(location))
    return fs.get_file_info(path).type == pafs.FileType.Directory


def inside(uri: str, root: str) -> bool:
    """`uri` names an object below the folder `root` (object stores have no links: the names decide)."""
    a, b = urlsplit(uri), urlsplit(root)
    return a[:2] == b[:2] and _key(a.path).startswith(_key(b.path) + "/")


def open_object(uri: str):
    """A random-access file of one remote object (seek + read: a tar member by its byte range), or
    OSError saying what is missing: no such object, a folder, or zero bytes."""
    fs, path = filesystem(uri)
    info = fs.get_file_info(path)
    if info.type != pafs.FileType.File:
        raise OSError("no such object" if info.type == pafs.FileType.NotFound else "a folder, not an object")
    if info.size == 0:
        raise OSError("zero-byte object")
    return fs.open_input_file(path)


def same_bucket(a: str, b: str) -> bool:
    """Two URIs in one bucket (same scheme and bucket), so one can name the other by a relative path."""
    return urlsplit(a)[:2] == urlsplit(b)[:2]


@contextlib.contextmanager
def staged(location: str | Path, first: tuple[str, ...] = (), last: tuple[str, ...] = ()):
    """Yield the local folder a command writes `location` through. For a remote location that is a
    mirror seeded with the remote content (a rerun resumes, a manifest gains a dataset); when the block
    succeeds, what changed is published: objects matching `first` (globs, e.g. the cache's
    `identity.json`, which says what its parts are) before, those matching `last` (`index.json`) after
    all others. On failure nothing is published: the remote folder is as it was."""
    if not is_remote(location):
        yield local(location)
        return
    uri = str(location).rstrip("/")
    target = mirror(uri)
    if target not in _staged:
        fs, root = filesystem(uri)
        found = fs.get_file_info(root).type == pafs.FileType.Directory
        _staged[target] = atomic.Published(fs, root, atomic.download_tree(fs, root, target) if found else {})
    _staged[target].first, _staged[target].last, _staged[target].staged = first, last, True
    target.mkdir(parents=True, exist_ok=True)
    yield target
    publish(target)


def publish(path: Path) -> int:
    """Publish now the changes of the staged folder holding `path` (a cache part or a checkpoint as soon
    as it is written, so a killed run keeps them); objects written. Outside a staged mirror, 0."""
    path = Path(os.path.abspath(path))
    for folder, published in _staged.items():
        if published.staged and path.is_relative_to(folder):
            return atomic.publish_tree(folder, published)
    return 0


def forget() -> None:
    """Drop every mirror, the scratch folder and the filesystems (the end of a command; the next one
    stages afresh, with the environment as it is then)."""
    global _scratch
    _staged.clear()
    _bucket.cache_clear()
    if _scratch is not None:
        shutil.rmtree(_scratch, ignore_errors=True)
        _scratch = None


def _scratch_root() -> Path:
    global _scratch
    if _scratch is None:
        parent = os.environ.get(SCRATCH_ENV) or None
        _scratch = Path(tempfile.mkdtemp(prefix="facecorpus-stage-", dir=parent))
    return _scratch


atexit.register(forget)

"""The read stage of `tokenize`: an image -> preprocessed uint8 pixels, or the stage and reason it failed.
Runs in Ray read tasks (and in the tests' reference tokenizer); never imports torch. The one seam for
reading a record's image: a plain file, a member of a raw tar or a Parquet cell (facecorpus/imageref.py).

A path is resolved (symlinks followed) before it is checked against its dataset's raw folder, so a
link inside the folder that leads outside it is refused (stage `refused`) unless the user allowed
such links; either way it is counted. Only regular files are opened, and without blocking: a FIFO,
socket, device or folder under an image's name is a `read` failure that says what it is. The same
checks hold for a tar or Parquet file that holds images; its images are read from it in place (a tar
member by its byte range, facecorpus/rawtar.py), never extracted, with one open per read task.
"""

from __future__ import annotations

import io
import os
import socket
import stat
import sys
from typing import BinaryIO, NamedTuple

import numpy as np
import pyarrow.parquet as pq

from facecorpus import imageref, rawtar, storage
from facecorpus.excerpt import shorten
from facecorpus.preprocess import load_image, preprocess_uint8

OK = ""  # `stage` of an image that has not failed
REFUSED = "refused"  # its path resolves outside its dataset's raw folder
_KINDS = ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a folder"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


class Read(NamedTuple):
    pixels: np.ndarray | None  # (size, size, 3) uint8, or None when the image failed
    stage: str                 # OK, or the stage that failed: refused, read, decode, preprocess
    message: str               # why it failed ("" when OK); paths and decoder errors are user data: shortened
    outside: bool              # the path resolves outside its dataset's raw folder


def inside(real: str, root: str) -> bool:
    """`real` (a resolved path) lies in the resolved folder `root`."""
    return os.path.commonpath([real, root]) == root


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


class _Unread(Exception):
    """A container (or file) that cannot be opened: every image in it fails with this stage and message."""

    def __init__(self, stage: str, message: str, outside: bool):
        super().__init__(message)
        self.stage, self.message, self.outside = stage, message, outside


def _open_regular(path: str, root: str, allow_outside: bool) -> tuple[BinaryIO, bool]:
    """`path` opened for reading once it is known to be a regular file inside `root` (or outside it, when
    allowed); also whether it resolves outside. _Unread says why not."""
    if storage.is_remote(path):
        return _open_object(path, root), False
    real = os.path.realpath(path)
    outside = not inside(real, root)
    if outside and not allow_outside:
        raise _Unread(REFUSED, shorten(f"resolves outside its dataset folder {root} (to {real}); "
                                       "--allow-outside-links reads such files"), True)
    try:
        st = os.stat(real)
    except OSError as exc:
        raise _Unread("read", shorten(f"missing or unreadable file: {exc.strerror or exc}"), outside) from None
    if not stat.S_ISREG(st.st_mode):
        raise _Unread("read", f"not a regular file ({_kind(st.st_mode)})", outside)
    if st.st_size == 0:
        raise _Unread("read", "zero-byte file", outside)
    try:
        # O_NONBLOCK: should a FIFO take the file's place after the check, opening it cannot hang.
        fh = os.fdopen(os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0)), "rb")
    except OSError as exc:
        raise _Unread("read", shorten(f"cannot open: {exc.strerror or exc}"), outside) from None
    if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
        fh.close()
        raise _Unread("read", "not a regular file (replaced while being opened)", outside)
    return fh, outside


def _open_object(uri: str, root: str) -> BinaryIO:
    """An object in object storage, read in place by range (no links there: its name must lie under `root`)."""
    if not storage.inside(uri, root):
        raise _Unread(REFUSED, shorten(f"lies outside its dataset folder {root}"), True)
    try:
        return storage.open_object(uri)
    except (OSError, ValueError) as exc:   # pyarrow's ArrowInvalid (a name it cannot use) is a ValueError
        raise _Unread("read", shorten(f"missing or unreadable object: {exc}"), False) from None


def _decode(source: BinaryIO, bbox: str, size: int, outside: bool) -> Read:
    try:
        img = load_image(source)
    except Exception as exc:  # noqa: BLE001 - any decoder failure is this image's, not the run's
        return Read(None, "decode", shorten(f"{type(exc).__name__}: {exc}"), outside)
    try:
        box = [int(v) for v in bbox.split(",")] if bbox else None
        return Read(preprocess_uint8(img, box, size=size), OK, "", outside)
    except Exception as exc:  # noqa: BLE001
        return Read(None, "preprocess", shorten(f"{type(exc).__name__}: {exc}"), outside)


def _parquet_cells(fh: BinaryIO, column: str, rows: list[int]) -> dict[int, bytes | None]:
    """The cells of `column` at `rows`, reading each row group that holds one once."""
    pf = pq.ParquetFile(fh)
    if column not in pf.schema_arrow.names:
        raise KeyError(f"no column {column!r} in the Parquet file")
    starts = np.cumsum([0] + [pf.metadata.row_group(g).num_rows for g in range(pf.num_row_groups)])
    out: dict[int, bytes | None] = {}
    for group in sorted({int(np.searchsorted(starts, r, side="right")) - 1 for r in rows}):
        if 0 <= group < pf.num_row_groups:
            cells = pf.read_row_group(group, columns=[column]).column(0)
            out.update({r: cells[r - int(starts[group])].as_py() for r in rows
                        if starts[group] <= r < starts[group + 1]})
    return out


def _read_from(fh: BinaryIO, refs: list[imageref.ImageRef], boxes: list[str], size: int, outside: bool) -> list[Read]:
    """Each image of one opened file: the file itself, tar members by range (in file order) or Parquet cells."""
    kind = refs[0].kind
    if kind == "file":
        return [_decode(fh, boxes[0], size, outside)]
    try:
        cells = _parquet_cells(fh, refs[0].column, [r.row for r in refs]) if kind == "parquet" else {}
    except Exception as exc:  # noqa: BLE001 - a damaged Parquet file fails its images, not the run
        return [Read(None, "read", shorten(f"{type(exc).__name__}: {exc}"), outside)] * len(refs)
    out: list[Read | None] = [None] * len(refs)
    for i in sorted(range(len(refs)), key=lambda i: refs[i].offset):  # a tar is read front to back
        ref = refs[i]
        try:
            data = rawtar.read_member(fh, ref.member, ref.offset, ref.size) if kind == "tar" else cells.get(ref.row)
        except (rawtar.RawTarError, OSError) as exc:
            out[i] = Read(None, "read", shorten(str(exc)), outside)
            continue
        if not data:
            where = f"member {ref.member}" if kind == "tar" else f"row {ref.row} of column {ref.column!r}"
            out[i] = Read(None, "read", f"{where} holds no bytes", outside)
        else:
            out[i] = _decode(io.BytesIO(data), boxes[i], size, outside)
    return out


def read_group(path: str, refs: list[imageref.ImageRef], root: str, boxes: list[str], size: int,
               allow_outside: bool = False) -> list[Read]:
    """The images at `refs`, all in the one file `path` (several only for a tar or Parquet file), which is
    checked and opened once. `root`: their dataset's raw folder, resolved."""
    try:
        fh, outside = _open_regular(path, root, allow_outside)
    except _Unread as exc:
        return [Read(None, exc.stage, exc.message, exc.outside)] * len(refs)
    with fh:
        return _read_from(fh, refs, boxes, size, outside)


def read_one(path: str, root: str, bbox: str, size: int, allow_outside: bool = False) -> Read:
    """Read, decode and preprocess one image. `path`: a file, or an image inside a tar or Parquet file
    (facecorpus/imageref.py); `root`: its dataset's raw folder, resolved; `bbox`: "x0,y0,x1,y1" or "";
    `size`: the VQGAN's input resolution."""
    ref = imageref.parse(path)
    return read_group(ref.path, [ref], root, [bbox], size, allow_outside)[0]


def read_batch(batch: dict, size: int, allow_outside: bool = False) -> dict:
    """Ray task: read a block of the plan; failures ride along as (stage, message) per image. Images
    inside one tar or Parquet file are read with one open of it."""
    n = len(batch["image_id"])
    pixels = np.zeros((n, size, size, 3), np.uint8)
    stage, message, outside = [OK] * n, [""] * n, np.zeros(n, bool)
    groups: dict[tuple[str, str], list[tuple[int, imageref.ImageRef]]] = {}
    for i, (path, root) in enumerate(zip(batch["path"], batch["root"])):
        ref = imageref.parse(str(path))
        key = (ref.path, str(root)) if ref.kind != "file" else (str(path), i)  # a file is its own group
        groups.setdefault(key, []).append((i, ref))
    for members in groups.values():
        idx, refs = [i for i, _ in members], [r for _, r in members]
        reads = read_group(refs[0].path, refs, str(batch["root"][idx[0]]), [str(batch["bbox"][i]) for i in idx],
                           size, allow_outside)
        for i, read in zip(idx, reads):
            stage[i], message[i], outside[i] = read.stage, read.message, read.outside
            if read.pixels is not None:
                pixels[i] = read.pixels
    return {"image_id": batch["image_id"], "path": batch["path"], "pixels": pixels, "outside": outside,
            "stage": np.array(stage, dtype=object), "message": np.array(message, dtype=object),
            "node": np.full(n, node(), dtype=object)}


def node() -> str:
    """Where this read task runs, for the summary's images per node (did every node of a cluster
    read?): the Ray node's id inside Ray, else the host's name. Never imports Ray."""
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        return ray.get_runtime_context().get_node_id()
    return socket.gethostname()

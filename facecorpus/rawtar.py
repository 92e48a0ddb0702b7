"""Raw input tars (img2dataset's `webdataset` output): their members with the byte range of each one's
data, and a member's data read by that range. Nothing is ever extracted, and a tar is opened once per
pass, not once per member. `write` makes such a tar for the generated web sets of the demo, tests and
benchmarks. The shard tars facecorpus writes have their own owner (shards/format.py).

Only uncompressed tars: a member's data must be stored bytes for a range read to fetch it, and
img2dataset writes plain `.tar` files.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from facecorpus.atomic import publishing

BLOCK = 512  # a tar header's size: a member's own header sits right before its data


class RawTarError(ValueError):
    """A tar that is not an uncompressed tar, ends early, or no longer holds a member where it was."""


class Member(NamedTuple):
    name: str
    offset: int    # first byte of the member's data in the tar
    size: int      # bytes of data
    regular: bool  # a plain file (not a link, folder, device or FIFO entry)


def members(path) -> Iterator[Member]:
    """Every member in file order, from the headers alone (tarfile seeks past the data). A tar that ends
    early raises RawTarError after the members before the damage."""
    try:
        with tarfile.open(path, "r:") as tf:  # "r:": uncompressed only
            for info in tf:
                yield Member(info.name, info.offset_data, info.size, info.isreg())
    except tarfile.TarError as exc:
        raise RawTarError(f"{exc} (a compressed or truncated tar?)") from None


def read_member(fh: BinaryIO, member: str, offset: int, size: int) -> bytes:
    """The data of `member` from the open tar `fh`, by its range. The header just before the data must
    be a regular file's of that size (and, for a name that fits a header, that name): a tar rewritten
    since `convert` recorded the range would otherwise hand over another image's bytes."""
    if offset < BLOCK:
        raise RawTarError(f"member {member}: offset {offset} leaves no room for its header")
    fh.seek(offset - BLOCK)
    data = fh.read(BLOCK + size)
    if len(data) != BLOCK + size:
        raise RawTarError(f"member {member}: the tar ends before its {size:,} bytes at offset {offset:,} "
                          "(truncated, or rewritten since convert?)")
    try:
        info = tarfile.TarInfo.frombuf(data[:BLOCK], "utf-8", "surrogateescape")
    except tarfile.HeaderError as exc:
        raise RawTarError(f"member {member}: no tar header before offset {offset:,} ({exc}); "
                          "the tar was rewritten since convert") from None
    fits = len(member.encode("utf-8", "surrogateescape")) <= 100  # longer names live in an extra header
    if not info.isreg() or info.size != size or (fits and info.name != member):
        raise RawTarError(f"member {member}: the header at offset {offset - BLOCK:,} is for {info.name!r} "
                          f"({info.size:,} bytes); the tar was rewritten since convert")
    return data[BLOCK:]


def write(path: Path, files: Iterable[tuple[str, bytes]]) -> Path:
    """A tar of `files` (name, data) as img2dataset's writer (webdataset's TarWriter) stores them: regular
    members, mode 0444, owner bigdata; with a fixed mtime, so the same files give the same bytes."""
    with publishing(path) as tmp, tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o444, 0
            info.uname = info.gname = "bigdata"
            tf.addfile(info, io.BytesIO(data))
    return path

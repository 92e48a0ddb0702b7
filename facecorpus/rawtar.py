"""Raw input tars (img2dataset's `webdataset` output): their members with the byte range of each one's
data, and a member's data read by that range. Nothing is ever extracted, and a tar is opened once per
pass, not once per member. `write` makes such a tar for the generated web sets of the demo, tests and
benchmarks. The shard tars facecorpus writes have their own owner (shards/format.py).

Only uncompressed tars: a member's data must be stored bytes for a range read to fetch it, and
img2dataset writes plain `.tar` files.
"""

from __future__ import annotations

import io
import os
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, NamedTuple

from facecorpus.atomic import publishing

BLOCK = 512  # a tar header's size: a member's own header sits right before its data
ZEROS = bytes(BLOCK)


class RawTarError(ValueError):
    """A tar that is not an uncompressed tar, ends early, or no longer holds a member where it was."""


class Member(NamedTuple):
    name: str
    offset: int    # first byte of the member's data in the tar
    size: int      # bytes of data
    regular: bool  # a plain file (not a link, folder, device or FIFO entry)


def members(path) -> Iterator[Member]:
    """Every member in file order, from the headers alone (the data is skipped by seeking). A tar that
    ends early or holds a damaged header raises RawTarError after the members before the damage.

    Why not tarfile's iteration: it builds a full TarInfo per member (every field parsed, both
    checksums), about 100 us a member here, so 30 s for the 300,000 members of an img2dataset output
    of 100k samples; this walk reads only what a range read needs (name, size, type; pax `path` and
    `size` records, GNU long names), buffered so that adjacent small members cost no system call, and is
    5-7x faster (measured on a 10,000-sample img2dataset tar).
    tests/test_rawtar.py checks it against tarfile on every header flavour (ustar with a name
    prefix, pax, GNU long names, links, folders)."""
    with open(path, "rb") as fh:  # buffered: the small members' headers (json, txt) arrive in one read
        total, offset, extended = os.fstat(fh.fileno()).st_size, 0, {}
        while offset < total:
            fh.seek(offset)  # within the buffer, no system call
            block = fh.read(BLOCK)
            if block == ZEROS:  # the end-of-archive marker
                return
            if len(block) < BLOCK or not _checksum_ok(block):
                raise RawTarError(f"no valid tar header at byte {offset:,} (a compressed, truncated or damaged tar?)")
            kind, size, data_at = block[156:157], _number(block[124:136], offset), offset + BLOCK
            if kind in (b"x", b"L"):  # pax extended header / GNU long name: they describe the next member
                data = fh.read(size)
                if len(data) < size:
                    break
                extended.update({"path": data.rstrip(b"\0").decode("utf-8", "surrogateescape")} if kind == b"L"
                                else _pax(data, offset))
            else:
                size = int(extended.pop("size", size))
                if kind != b"g":  # a global pax header describes no member
                    name = extended.pop("path", None) or _name(block)
                    name = name.rstrip("/") if kind == b"5" else name  # a folder's trailing slash, as tarfile
                    if data_at + size > total:
                        raise RawTarError(f"member {name}: its {size:,} bytes run past the end of the tar (truncated?)")
                    yield Member(name, data_at, size, kind in (b"0", b"\0", b"7") and not name.endswith("/"))
                extended = {}
            offset = data_at + -(-size // BLOCK) * BLOCK
    if offset > total or extended:  # the last header promised more than the file holds
        raise RawTarError(f"the tar ends inside the entry at byte {offset:,} (truncated?)")


def _checksum_ok(block: bytes) -> bool:
    """The header checksum: the sum of the block's bytes with the checksum field read as spaces
    (unsigned, or signed as some old tars wrote it)."""
    try:
        stored = int(block[148:156].partition(b"\0")[0] or b"0", 8)
    except ValueError:
        return False
    # adler32's low half is 1 + the sum of the bytes modulo 65,521: the byte sum at C speed (a Python
    # sum() of 512 bytes costs 8 us, most of a header's time); the exact sums decide when it disagrees.
    field = sum(block[148:156])
    if stored % 65521 == ((zlib.adler32(block) & 0xFFFF) - 1 - field + 8 * 32) % 65521:
        return True
    rest = block[:148] + block[156:]
    unsigned = sum(rest) + 8 * 32
    return stored in (unsigned, unsigned - 256 * sum(b > 127 for b in rest))


def _number(field: bytes, offset: int) -> int:
    """A header number: octal text, or base-256 (first byte's high bit set) for large values."""
    if field[0] & 0x80:
        return int.from_bytes(field[1:], "big")
    try:
        return int(field.partition(b"\0")[0] or b"0", 8)
    except ValueError:
        raise RawTarError(f"header at byte {offset:,}: size {field!r} is not a number") from None


def _name(block: bytes) -> str:
    name = block[:100].partition(b"\0")[0]
    if block[257:265] == b"ustar\x0000":  # POSIX ustar: a long name's head is in the prefix field
        prefix = block[345:500].partition(b"\0")[0]
        name = prefix + b"/" + name if prefix else name
    return name.decode("utf-8", "surrogateescape")


def _pax(data: bytes, offset: int) -> dict[str, str]:
    """A pax extended header's `LENGTH key=value\\n` records."""
    out, pos = {}, 0
    while pos < len(data):
        space = data.find(b" ", pos)
        try:
            length = int(data[pos:space])
        except ValueError:
            raise RawTarError(f"pax header at byte {offset:,} is malformed") from None
        key, _, value = data[space + 1:pos + length - 1].partition(b"=")
        out[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        pos += length
    return out


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
    fits = member.isascii() and len(member) <= 100  # other names live in an extended header
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

"""Where a record's image is: the one grammar of the manifest's `image` column (docs/design.md, "Record").

    PATH                                          a file under the dataset's raw folder
    PATH#member=NAME&offset=N&size=N              a member of the uncompressed tar PATH: its data is the
                                                  `size` bytes at byte `offset` (a range read fetches it)
    PATH#column=NAME&row=N                        the binary cell at 0-based `row` of a Parquet file's column

NAME is percent-encoded (so it holds no `&`, `#` or `=`). A string is a reference into a container
only when everything after its last `#` has exactly one of these two shapes; any other `image` is a
plain path, so the curated datasets' file names never change meaning. Web sets need the references:
img2dataset keeps its images in tars (`webdataset`) or Parquet cells (`parquet`), and unpacking
millions of them to files is what `tokenize` must not need.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote, unquote

_TAR = re.compile(r"#member=(?P<member>[^&#=]+)&offset=(?P<offset>\d+)&size=(?P<size>\d+)\Z")
_CELL = re.compile(r"#column=(?P<column>[^&#=]+)&row=(?P<row>\d+)\Z")
_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


class ImageRef(NamedTuple):
    path: str                  # the file: the image itself, or the tar / Parquet file that holds it
    member: str | None = None  # tar member name
    offset: int = 0            # tar: first byte of the member's data
    size: int = 0              # tar: bytes of the member's data
    column: str | None = None  # Parquet: the binary column
    row: int = 0               # Parquet: 0-based row in the file

    @property
    def kind(self) -> str:
        return "tar" if self.member is not None else "parquet" if self.column is not None else "file"

    def __str__(self) -> str:
        if self.member is not None:
            return f"{self.path}#member={_quote(self.member)}&offset={self.offset}&size={self.size}"
        if self.column is not None:
            return f"{self.path}#column={_quote(self.column)}&row={self.row}"
        return self.path


def _quote(name: str) -> str:
    # img2dataset's names (000000123.jpg) need no escaping: skip quote()'s cost on millions of them
    return name if _PLAIN.fullmatch(name) else quote(name, safe="")


def parse(image: str) -> ImageRef:
    """The file and, for an image inside a container, where in it."""
    cut = image.rfind("#")
    if cut < 0:
        return ImageRef(image)
    if m := _TAR.match(image, cut):
        return ImageRef(image[:cut], member=unquote(m["member"]), offset=int(m["offset"]), size=int(m["size"]))
    if m := _CELL.match(image, cut):
        return ImageRef(image[:cut], column=unquote(m["column"]), row=int(m["row"]))
    return ImageRef(image)


def tar_member(path: str, member: str, offset: int, size: int) -> str:
    return str(ImageRef(path, member=member, offset=offset, size=size))


def parquet_cell(path: str, column: str, row: int) -> str:
    return str(ImageRef(path, column=column, row=row))

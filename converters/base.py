"""What every converter shares: where a row came from, how a row ends, and reading raw files safely.

A converter module (one per dataset) exposes
    NAME = "<dataset>"; DOWNLOAD = "<the dataset's download page>"
    def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure | Unavailable]
yielding exactly ONE outcome per source row (a row: one line, one JSON entry, one .mat entry, one
caption, one URL of a web set), so `rows read == records + filtered + errors + unavailable` holds by
construction and is checked (only web sets have unavailable rows: URLs their downloader lost).
Structural problems (a missing file, an HTML page saved under a label file's name, a wrong header)
raise RawFormatError at once: no row of such a file can be trusted.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from facecorpus.excerpt import quote, shorten
from facecorpus.records import Record, RecordError, check_image_path
from facecorpus.textproto import ProtocolError

# The longest line a raw text file may hold. Real rows are far shorter (AffectNet's, with 136 landmark
# numbers, are about 1 KB); a longer line is a counted error, read past without being held whole.
MAX_LINE_CHARS = 65_536


class Where(NamedTuple):
    """A place in the raw data: file (relative to the dataset's raw root) and 1-based line or entry.
    (A named tuple: one is built per row, and a frozen dataclass costs 2 us more each.)"""
    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


class BadRow(ValueError):
    """A malformed row; `guard` turns it into a Failure naming the file and line."""


class RawFormatError(ValueError):
    """A raw file that cannot be used at all."""

    def __init__(self, where: Where | str, problem: str | None = None, download: str | None = None):
        # One-argument form: the finished message (what unpickling passes back from a worker process).
        hint = f" (download page: {download})" if download else ""
        super().__init__(str(where) if problem is None else f"{where}: {problem}{hint}")


@dataclass(frozen=True, slots=True)
class Filtered:
    """A row dropped on purpose by a declared, counted filter (e.g. AffectNet code 9 'uncertain')."""
    where: Where
    reason: str


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A row whose image never arrived: a web set's URL that its downloader could not fetch or decode
    (link rot). Counted by the downloader's own `status` and the `reason` its message boils down to
    (`HTTP Error 404`), apart from our filters: the loss happened before facecorpus saw the row."""
    where: Where
    status: str
    reason: str


@dataclass(frozen=True, slots=True)
class Failure:
    """A malformed row: an error by default, a ledger entry under --on-error skip."""
    where: Where
    problem: str

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}"


@dataclass
class Context:
    """What a converter may consult besides its raw folder."""
    dataset: str
    raw: Path
    options: dict = field(default_factory=dict)     # the module's DEFAULTS updated by the user's --set
    hq_to_celeba: dict[str, str] | None = None       # "celebahq/<idx>" -> "celeba/<6-digit id>"
    notes: list[str] = field(default_factory=list)   # inconsistencies between raw files, by name and count
    converter: str = ""                              # the converter module when not the dataset's name (web sets)

    def note(self, text: str) -> None:
        self.notes.append(shorten(text))

    def celeba_photo(self, hq_image_id: str) -> str:
        """The CelebA photo behind a CelebA-HQ image (split harmonization depends on it)."""
        if self.hq_to_celeba is None:
            raise RawFormatError(
                "CelebA-HQ-to-CelebA-mapping.txt",
                f"{self.dataset} needs the CelebA-HQ -> CelebA mapping to keep evaluation photos out of "
                "training; put it at RAW_ROOT/celebahq/ or pass --celebahq-mapping",
                "https://github.com/switchablenorms/CelebAMask-HQ")
        try:
            return self.hq_to_celeba[hq_image_id]
        except KeyError:
            raise BadRow(f"{hq_image_id} is not in the CelebA-HQ mapping (30,000 images, 0..29999)") from None


def guard(where: Where, build: Callable[[], Record | Filtered], line: str | None = None) -> Record | Filtered | Failure:
    """Run one row's parser; a malformed row becomes a Failure that names where it came from. `line`,
    when given, is the row's raw line: an Overlong one fails without being parsed."""
    if isinstance(line, Overlong):
        return Failure(where, line.problem)
    try:
        return build()
    except (BadRow, RecordError, ProtocolError, ValueError, KeyError, IndexError) as exc:
        if isinstance(exc, RawFormatError):
            raise
        return Failure(where, shorten(str(exc)) or type(exc).__name__)


def require(raw: Path, rel: str, download: str) -> Path:
    """`raw/rel`, or a RawFormatError naming the file and the dataset's download page."""
    path = raw / rel
    if not path.is_file():
        raise RawFormatError(rel, f"missing: expected {path}", download)
    return path


def find(raw: Path, candidates: tuple[str, ...], download: str) -> Path:
    """The first of several accepted locations (e.g. CelebA's `Anno/x.txt` or torchvision's flat `x.txt`)."""
    for rel in candidates:
        if (raw / rel).is_file():
            return raw / rel
    raise RawFormatError(" or ".join(candidates), f"missing under {raw}", download)


def is_html(head: bytes) -> bool:
    """Whether a file's first bytes are a web page (what Google Drive serves instead of a large file)."""
    head = head[:512].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html")) or b"<html" in head


def refuse_html(data: bytes, where: Where | str, download: str | None) -> None:
    if is_html(data):
        raise RawFormatError(where, "is an HTML page (a failed Google-Drive download?), not the dataset's file; "
                             "download it again", download)


def read_text(path: Path, raw: Path, download: str | None = None) -> str:
    """A whole file's text (for JSON): BOM stripped, CRLF and LF both accepted, an HTML page refused.
    Line-based files go through `lines`, which never holds more than one bounded line."""
    data = path.read_bytes()
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    refuse_html(data, rel_to(path, raw), download)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise RawFormatError(Where(rel_to(path, raw), line), f"not UTF-8 text ({exc.reason})", download) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


class Overlong(str):
    """Stands in for a line over MAX_LINE_CHARS, which is never held in memory whole: empty, so no
    parser reads it by mistake; `problem` says why (guard turns it into a counted error)."""

    problem: str

    def __new__(cls, length: int) -> Overlong:
        self = super().__new__(cls, "")
        self.problem = f"line of {length:,} characters is over the {MAX_LINE_CHARS:,}-character limit of a raw text line"
        return self


def text_lines(path: Path, rel: str, download: str | None, errors: str = "strict") -> Iterator[tuple[int, str]]:
    """(1-based number, text without the line end) of every line, empty ones included: UTF-8 (`errors`:
    "strict" raises naming the line, "replace" puts U+FFFD), BOM stripped, LF, CRLF or CR (Excel for
    Mac) line ends, an HTML page refused. A line over MAX_LINE_CHARS is read past in chunks and given
    as Overlong, so memory stays bounded whatever the file holds."""
    with open(path, "rb") as fh:
        refuse_html(fh.read(512), rel, download)
        fh.seek(0)
        text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors=errors, newline=None)
        n = 0
        try:
            while line := text.readline(MAX_LINE_CHARS + 1):  # + 1: the longest allowed line and its end
                n += 1
                if line.endswith("\n") or len(line) <= MAX_LINE_CHARS:  # the whole line is in hand
                    body = line.removesuffix("\n")
                    yield n, Overlong(len(body)) if len(body) > MAX_LINE_CHARS else body
                    continue
                length = len(line)
                while line and not line.endswith("\n"):  # read past the rest in 1 MiB steps, counting it
                    line = text.readline(1 << 20)
                    length += len(line)
                yield n, Overlong(length - line.endswith("\n"))
        except UnicodeDecodeError as exc:  # the decoder reads ahead in blocks: find the line in a second pass
            raise RawFormatError(Where(rel, first_undecodable(path, n)), f"not UTF-8 text ({exc.reason})",
                                 download) from None


def first_undecodable(path: Path, after: int) -> int:
    """The 1-based number of the first line after `after` whose bytes are not UTF-8."""
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, start=1):  # decoding failed before any line got long: lines are short
            if n > after:
                try:
                    line.decode("utf-8")
                except UnicodeDecodeError:
                    return n
    return after + 1


def lines(path: Path, raw: Path, download: str | None = None) -> Iterator[tuple[Where, str]]:
    """(where, line) for every non-empty line of a UTF-8 text file; line numbers are 1-based. A line over
    the limit comes as Overlong; a file without a single line is a RawFormatError (an empty download)."""
    rel = rel_to(path, raw)
    empty = True
    for n, line in text_lines(path, rel, download):
        if line.strip() or isinstance(line, Overlong):
            empty = False
            yield Where(rel, n), line
    if empty:
        raise RawFormatError(rel, "is empty: a failed or truncated download?", download)


def table_rows(path: Path, raw: Path, download: str, header_ok: Callable[[str], bool],
               expected: str) -> Iterator[tuple[Where, str]]:
    """`lines` of a file whose first line is a header: the header is checked (a RawFormatError quotes it
    and `expected`), and a header with no row after it is a RawFormatError naming the file."""
    numbered = lines(path, raw, download)
    where, header = next(numbered)
    if isinstance(header, Overlong) or not header_ok(header.strip()):
        raise RawFormatError(where, f"header {quote(header.strip())} is not {expected}", download)
    empty = True
    for where, line in numbered:
        empty = False
        yield where, line
    if empty:
        raise RawFormatError(where.file, "has a header but no rows: a failed or truncated download?", download)


def rel_to(path: Path, raw: Path) -> str:
    try:
        return path.relative_to(raw).as_posix()
    except ValueError:
        return str(path)


def image_path(raw: Path, rel: str) -> str:
    """A row's image path, checked to stay inside the raw root (BadRow otherwise)."""
    try:
        return check_image_path(rel)
    except RecordError as exc:
        raise BadRow(str(exc)) from None

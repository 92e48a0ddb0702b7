"""What every converter shares: where a row came from, how a row ends, and reading raw files safely.

A converter module (one per dataset) exposes
    NAME = "<dataset>"; DOWNLOAD = "<the dataset's download page>"
    def rows(raw: Path, ctx: Context) -> Iterator[Record | Filtered | Failure]
yielding exactly ONE outcome per source row (a row: one line, one JSON entry, one .mat entry, one
caption), so `rows read == records + filtered + errors` holds by construction and is checked.
Structural problems (a missing file, an HTML page saved under a label file's name, a wrong header)
raise RawFormatError at once: no row of such a file can be trusted.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from facecorpus.records import Record, RecordError, check_image_path
from facecorpus.textproto import ProtocolError


@dataclass(frozen=True, slots=True)
class Where:
    """A place in the raw data: file (relative to the dataset's raw root) and 1-based line or entry."""
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

    def note(self, text: str) -> None:
        self.notes.append(text)

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


def guard(where: Where, build: Callable[[], Record | Filtered]) -> Record | Filtered | Failure:
    """Run one row's parser; a malformed row becomes a Failure that names where it came from."""
    try:
        return build()
    except (BadRow, RecordError, ProtocolError, ValueError, KeyError, IndexError) as exc:
        if isinstance(exc, RawFormatError):
            raise
        return Failure(where, str(exc) or type(exc).__name__)


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
    """The file's text: BOM stripped, CRLF and LF both accepted, a downloaded HTML page refused."""
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


def lines(path: Path, raw: Path, download: str | None = None, skip: int = 0) -> Iterator[tuple[Where, str]]:
    """(where, line) for every non-empty line after the first `skip` lines; line numbers are 1-based."""
    rel = rel_to(path, raw)
    for n, line in enumerate(read_text(path, raw, download).split("\n"), start=1):
        if n > skip and line.strip():
            yield Where(rel, n), line


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

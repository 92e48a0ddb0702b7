"""What the three per-image caption sets share: caption files, pickled split lists, notes on a folder.

MM-CelebA-HQ, CelebAText-HQ and FFHQ-Text all ship one `<image stem>.txt` per image with one caption
per line, and MM-CelebA-HQ and FFHQ-Text add AttnGAN-style `filenames.pickle` split lists.

- Caption files are read line by line (bounded, like every raw text file) and decoded leniently: one
  bad byte in one of 30,000 files must not stop the corpus.
  SEA-T2F's loader (CelebAText-HQ) shows that files hold U+FFFD pairs (GBK punctuation mangled into
  UTF-8); every run of U+FFFD becomes a space and other non-ASCII text is NFKC-normalised (full-width
  `，` -> `,`). The caller notes every file that needed either, by count and example names.
- Split pickles are unpickled with a loader that refuses every Python global: a list of file names
  needs none, and a downloaded pickle must not be able to run code.
"""

from __future__ import annotations

import codecs
import io
import pickle
import re
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

from facecorpus.converters.base import (
    Failure,
    Filtered,
    Overlong,
    RawFormatError,
    Where,
    guard,
    refuse_html,
    rel_to,
    text_lines,
)
from facecorpus.excerpt import quote
from facecorpus.records import Record

REPLACEMENT_RUN = re.compile("\ufffd+")
FIX_INVALID = "invalid UTF-8 or U+FFFD (mapped to a space)"
FIX_NON_ASCII = "non-ASCII text (NFKC-normalised)"


def caption_lines(path: Path, rel: str, download: str, fixes: set[str]) -> Iterator[tuple[int, str]]:
    """(1-based line number, text) of every line of a caption file, decoded leniently; the fixes it
    needed (FIX_* constants) are added to `fixes`. A line over the limit comes as Overlong."""
    for n, line in text_lines(path, rel, download, errors="replace"):
        if not line.isascii():
            if "\ufffd" in line:
                line = REPLACEMENT_RUN.sub(" ", line)
                fixes.add(FIX_INVALID)
            if not line.isascii():
                line = unicodedata.normalize("NFKC", line)
                fixes.add(FIX_NON_ASCII)
        yield n, line


def file_outcomes(path: Path, rel: str, download: str, fixed: dict, problem: str | None,
                  build: Callable[[int, str], Record], clean: Callable[[str], tuple[str, str | None]] | None = None,
                  expected: int | None = None, counts: Counter | None = None) -> Iterator[Record | Filtered | Failure]:
    """One outcome per line of one caption file: an empty line is filtered; every line fails when the
    file itself has a `problem` (a bad name, no CelebA photo); `clean(words)` gives the text to keep and
    may name a filter reason; otherwise `build(n, text)` makes the record (n: the 0-based line index).
    Files needing decoding fixes go to `fixed`; a file with other than `expected` captions is counted in
    `counts` ("fewer"/"more")."""
    fixes: set[str] = set()
    records = 0
    for n, line in caption_lines(path, rel, download, fixes):
        where = Where(rel, n)
        if isinstance(line, Overlong):
            yield Failure(where, line.problem)
            continue
        words = " ".join(line.split())
        reason = "empty caption line" if not words else None
        if reason is None and problem:
            yield Failure(where, problem)
            continue
        if reason is None and clean is not None:
            words, reason = clean(words)
        if reason:
            yield Filtered(where, reason)
            continue
        outcome = guard(where, lambda: build(n - 1, words))
        records += isinstance(outcome, Record)
        yield outcome
    if fixes:
        fixed[path.name] = sorted(fixes)
    if expected is not None and records != expected:
        counts["fewer" if records < expected else "more"] += 1


class _Refused(pickle.UnpicklingError):
    pass


class _NamesOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):  # how Python 3 pickles bytes at protocol 2
            return codecs.encode
        raise _Refused(f"refers to the Python object {module}.{name}")


def read_names(path: Path, raw: Path, download: str) -> list[str]:
    """The file stems in a pickled list of file names (`"0"`, `b"0"`, `"images/0.jpg"` -> `"0"`)."""
    rel = rel_to(path, raw)
    data = path.read_bytes()
    refuse_html(data, rel, download)
    try:
        # latin1: Python 2 pickles (AttnGAN's era) store names as byte strings.
        names = _NamesOnly(io.BytesIO(data), encoding="latin1").load()
    except _Refused as exc:
        raise RawFormatError(rel, f"{exc}, not only file names: refused unread (a pickle can run code)",
                             download) from None
    except Exception as exc:  # noqa: BLE001 - a corrupt pickle raises anything from EOFError to struct.error
        raise RawFormatError(rel, f"is not a pickled list of file names ({type(exc).__name__}: {exc}); "
                             "a truncated download?", download) from None
    if not isinstance(names, list | tuple):
        raise RawFormatError(rel, f"holds a {type(names).__name__}, expected a list of file names", download)
    stems = []
    for n, name in enumerate(names, start=1):
        if isinstance(name, bytes):
            name = name.decode("latin1")
        if not isinstance(name, str) or not name.strip():
            raise RawFormatError(Where(rel, n), f"entry {quote(name)} is not a file name", download)
        stems.append(stem_of(name))
    return stems


def stem_of(name: str) -> str:
    """`a/b/123.jpg` -> `123` (the authors' lists carry paths from their own machines)."""
    base = PurePosixPath(name.strip().replace("\\", "/")).name
    return base.rsplit(".", 1)[0] if base.lower().endswith((".jpg", ".jpeg", ".png", ".txt")) else base


def text_files(folder: Path) -> dict[str, Path]:
    """{stem: path} of the `*.txt` files in `folder`, numeric stems in numeric order, then the others."""
    files = {p.stem: p for p in folder.iterdir() if p.suffix == ".txt" and p.is_file()}
    order = sorted(files, key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))
    return {s: files[s] for s in order}


def first_dir(raw: Path, candidates: tuple[str, ...], what: str, download: str) -> Path:
    """The first candidate folder that exists, or a RawFormatError naming them all."""
    for rel in candidates:
        if (raw / rel).is_dir():
            return raw / rel
    raise RawFormatError(" or ".join(f"{c}/" for c in candidates), f"missing under {raw}: no {what} folder", download)


def examples(names, k: int = 3) -> str:
    names = list(names)
    return ", ".join(names[:k]) + (", ..." if len(names) > k else "")


def note_fixes(ctx, folder: str, fixed: dict[str, list[str]]) -> None:
    """One note per kind of fix, naming how many files and a few of them."""
    for fix in (FIX_INVALID, FIX_NON_ASCII):
        files = [name for name, fixes in fixed.items() if fix in fixes]
        if files:
            ctx.note(f"{folder}: {len(files):,} caption files had {fix}: {examples(files)}")

"""The record: one face-text pair, the unit every stage agrees on (docs/design.md, "Record").

All column names, their Arrow types and the rules a record must satisfy live here, so the
converters, the manifest reader and the shard writer cannot drift apart.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field

import pyarrow as pa

from facecorpus import imageref, textproto
from facecorpus.excerpt import quote

DATASETS = (
    "celeba", "fs2k", "affectnet", "rafdb", "expw", "cacd", "afad", "imdbwiki", "fairface",
    "ffhqtext", "mmcelebahq", "celebatexthq", "celebadialog",
)
# A web set (`convert img2dataset --name NAME`) is named by its user: a lower-case word that takes no
# curated dataset's name (its partition would replace that dataset's records) and no id namespace
# the curated sets share (`celebahq/123` images, `person/...` subjects, `sha256/...` photos).
WEB_NAME_RE = re.compile(r"[a-z][a-z0-9]{0,31}")
RESERVED_NAMES = frozenset({"celebahq", "person", "sha256", "img2dataset"})
KINDS = ("attributes", "caption")
# The longest caption a record may hold. Real captions are far shorter (MM-CelebA-HQ's longest line has 212
# characters; Talk2Face's 334-token sequence keeps 71 WordPiece ids of text, about 300); a longer one is
# a malformed row, counted as an error, not text for the corpus (nor a report that needs GBs to read it).
MAX_CAPTION_CHARS = 2_000
SPLITS = ("train", "val", "test")  # ordered from least to most held out

SCHEMA = pa.schema([
    ("key", pa.string()),
    ("dataset", pa.string()),
    ("image", pa.string()),
    ("image_id", pa.string()),
    ("photo_id", pa.string()),
    ("subject_id", pa.string()),
    # Four ints or null. A variable-size list with a length check rather than list<int32>[4]: the
    # fixed-size list with nulls does not read back from Parquet in older pyarrow (seen with the
    # pyarrow of the GPU machines: "Expected all lists to be of size=4").
    ("bbox", pa.list_(pa.int32())),
    ("source_split", pa.string()),
    ("split", pa.string()),
    ("kind", pa.string()),
    ("text", pa.string()),
    ("labels", pa.string()),
    # The terms the record may be used under, where its converter was told them (web sets differ:
    # CC-BY-4.0 but research only, non-commercial...); null for the curated sets (docs/datasets.md).
    ("licence", pa.string()),
])
COLUMNS = tuple(SCHEMA.names)
NOT_NULL = ("key", "dataset", "image", "image_id", "photo_id", "split", "kind", "text", "labels")

# `<dataset>/<local id>/<kind>/<n>`: the local id comes from the dataset's own ids; no dots (WebDataset
# cuts sample names at the first dot), no slashes inside it, no whitespace.
_DATASET_SET = frozenset(DATASETS)
KEY_RE = re.compile(r"(?P<dataset>[a-z0-9]+)/(?P<local>[^/.\s]+)/(?P<kind>attributes|caption)/(?P<n>\d+)")
LOCAL_ID_RE = re.compile(r"[^/.\s]+")


class RecordError(ValueError):
    """A record that breaks the schema; the message names the record's key and the rule."""


@dataclass(slots=True)
class Record:
    key: str
    dataset: str
    image: str
    image_id: str
    photo_id: str
    kind: str
    text: str
    labels: dict = field(default_factory=dict)
    subject_id: str | None = None
    bbox: list[int] | None = None
    source_split: str | None = None
    split: str = "train"  # provisional until split harmonization (converters/splits.py)
    labels_json: str | None = None  # `labels` as JSON when the factory already has it (cached per label set)
    licence: str | None = None
    # A record becomes a manifest row through manifest.to_table, the one place that builds the columns.


_UNSAFE = re.compile(r"[/\\.\s]")


def local_id(raw: str) -> str:
    """A dataset id made safe for keys: path separators and dots become `-`, whitespace `_`."""
    out = raw.strip()
    if out and not _UNSAFE.search(out):  # most ids are already safe (hot path: 2.3M records)
        return out
    out = re.sub(r"\s+", "_", re.sub(r"[/\\.]", "-", out))
    if not LOCAL_ID_RE.fullmatch(out):
        raise RecordError(f"cannot build a key from local id {quote(raw)}")
    return out


def web_name_problem(name: str) -> str | None:
    """Why `name` cannot name a web set (None when it can)."""
    if name in _DATASET_SET or name in RESERVED_NAMES:
        return f"{quote(name)} is taken (the curated datasets and the id namespaces celebahq, person, sha256)"
    if not WEB_NAME_RE.fullmatch(name):
        return f"{quote(name)} is not a lower-case word of letters and digits (at most 32, a letter first)"
    return None


def is_dataset(name: str) -> bool:
    """A curated dataset's name or a valid web set's name."""
    return name in _DATASET_SET or web_name_problem(name) is None


def make_key(dataset: str, local: str, kind: str, n: int = 0) -> str:
    if not is_dataset(dataset) or kind not in KINDS or not isinstance(n, int) or n < 0:
        raise RecordError(f"cannot build a key from dataset {quote(dataset)}, kind {quote(kind)}, n {quote(n)}")
    return f"{dataset}/{local_id(local)}/{kind}/{n}"


def attributes(dataset: str, local: str, image: str, labels: dict, *, image_id: str,
               photo_id: str | None = None, subject_id: str | None = None,
               bbox: list[int] | None = None, source_split: str | None = None, n: int = 0) -> Record:
    """An `attributes` record whose text is `labels` in the key-value protocol."""
    text, labels_json = textproto.text_and_json(dataset, labels)
    rec = Record(key=make_key(dataset, local, "attributes", n), dataset=dataset, image=image,
                 image_id=image_id, photo_id=photo_id or image_id, kind="attributes", text=text,
                 labels=dict(labels), subject_id=subject_id, bbox=bbox, source_split=source_split,
                 labels_json=labels_json)
    check_fields(rec)  # make_key built a valid key; to_text refuses values that would not read back
    return rec


def caption(dataset: str, local: str, image: str, text: str, n: int, *, image_id: str,
            photo_id: str | None = None, subject_id: str | None = None, source_split: str | None = None,
            labels: dict | None = None, bbox: list[int] | None = None, licence: str | None = None) -> Record:
    """The `n`-th caption of one image. Whitespace is collapsed; the text is otherwise kept as written."""
    if len(text) > MAX_CAPTION_CHARS:  # checked before any copy of it is made
        raise RecordError(f"caption of {len(text):,} characters is over the {MAX_CAPTION_CHARS:,}-character limit: "
                          f"{quote(text, 80)}")
    text = " ".join(text.split())
    rec = Record(key=make_key(dataset, local, "caption", n), dataset=dataset, image=image,
                 image_id=image_id, photo_id=photo_id or image_id, kind="caption", text=text,
                 labels=labels or {}, subject_id=subject_id, source_split=source_split, bbox=bbox,
                 licence=licence, labels_json=None if labels else "{}")
    if not text:
        raise RecordError(f"record {quote(rec.key)}: empty caption")
    check_fields(rec)
    return rec


def check_image_path(image: str) -> str:
    """A raw-root-relative POSIX path that cannot escape the root (no absolute path, no `..`); for an
    image inside a tar or Parquet file (facecorpus/imageref.py), the path of that file."""
    if image and ".." not in image and "\\" not in image and not image.startswith(("/", "./")) and "//" not in image:
        return image  # already normal (hot path: 2.3M records)
    ref = imageref.parse(image)
    if ref.kind != "file":
        return str(ref._replace(path=check_image_path(ref.path)))
    norm = posixpath.normpath(image.replace("\\", "/"))
    if not image or norm.startswith("/") or norm == ".." or norm.startswith("../"):
        raise RecordError(f"image path {quote(image)} escapes the dataset's raw root")
    return norm


def check_fields(rec: Record) -> None:
    """The checks a factory-built record still needs (its key and text are valid by construction)."""
    check_image_path(rec.image)
    if "/" not in rec.image_id or "/" not in rec.photo_id:
        raise RecordError(f"record {quote(rec.key)}: image_id and photo_id must be '<namespace>/<id>'")
    if rec.source_split is not None and rec.source_split not in SPLITS:
        raise RecordError(f"record {quote(rec.key)}: source_split {quote(rec.source_split)} not in {SPLITS}")
    b = rec.bbox
    if b is not None and not (len(b) == 4 and b[0] < b[2] and b[1] < b[3]):
        raise RecordError(f"record {quote(rec.key)}: bbox {quote(b)} is not x0 < x1, y0 < y1")


def validate(rec: Record, check_text: bool = True) -> None:
    """Raise RecordError naming the key and the broken rule (check_text: attribute text parses back to labels)."""
    def bad(problem: str):
        raise RecordError(f"record {quote(rec.key)}: {problem}")

    m = KEY_RE.fullmatch(rec.key or "")
    if not m:
        bad("key must be <dataset>/<local id>/<kind>/<n> with no dots or whitespace")
    if not is_dataset(rec.dataset):
        bad(f"unknown dataset {quote(rec.dataset)}")
    if m["dataset"] != rec.dataset or m["kind"] != rec.kind:
        bad("key does not start with the record's dataset or name its kind")
    check_image_path(rec.image)
    for name in ("image_id", "photo_id"):
        if not getattr(rec, name) or "/" not in getattr(rec, name):
            bad(f"{name} must be '<namespace>/<id>'")
    if rec.split not in SPLITS or rec.source_split not in (None, *SPLITS):
        bad(f"split {quote(rec.split)} / source_split {quote(rec.source_split)} not in {SPLITS}")
    if rec.bbox is not None and not (len(rec.bbox) == 4 and rec.bbox[0] < rec.bbox[2] and rec.bbox[1] < rec.bbox[3]):
        bad(f"bbox {quote(rec.bbox)} is not x0 < x1, y0 < y1")
    if not rec.text:
        bad("empty text")
    if check_text and rec.kind == "attributes" and textproto.from_text(rec.text) != (rec.dataset, rec.labels):
        bad(f"text {quote(rec.text)} does not parse back to its labels")

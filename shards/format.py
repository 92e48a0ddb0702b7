"""The shard format, written and read only here: a sample's members, the tar that holds samples,
and `index.json`, which vouches for every tar (docs/design.md, "Shards").

A sample is three tar members named `<sample key>.<ext>`, side by side, in this order:
    json  {dataset, image_id, key, kind, labels, split}: strings only (labels is the manifest's
          JSON text), so every sample of every dataset has one schema for Arrow and HF `datasets`
    npy   the image's codes: uint16, row-major, on the index's code grid (16x16 for FFHQ f16)
    txt   the record text, UTF-8
Readers decode exactly these members, each with a decoder that cannot run code (npy without
pickles, strict UTF-8, JSON); any other member is an error naming shard and key. It never reaches a
suffix-based decoder: webdataset's default `.decode()` unpickles `.pyd` and `torch.load`s `.pth`.
A tar is opened only at a path index.json lists (`<split>/<kind>-NNNNNN.tar`, never a URL such as
webdataset's `pipe:`), inside the shard folder, and only once its size (and by default its sha256)
match the index.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import stat
import tarfile
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from facecorpus.atomic import atomic_write, publishing
from facecorpus.codes import CODE_DTYPE, FFHQ_F16, CodeGrid
from facecorpus.records import KINDS, SPLITS
from facecorpus.vocab import VOCAB_SHA256

FORMAT = "facecorpus-shards/2"
# Formats this version refuses, and why: the message tells the user to re-shard.
OLD_FORMATS = {"facecorpus-shards/1": "its json labels are objects whose fields change type between datasets"}
INDEX = "index.json"
KEYS = ("format", "seed", "samples_per_shard", "preprocess", "vqgan", "text_vocab", "shards", "counts")
ENTRY_KEYS = ("path", "split", "kind", "count", "bytes", "sha256")
MEMBERS = ("json", "npy", "txt")                 # the order inside a sample
META_KEYS = ("dataset", "image_id", "key", "kind", "labels", "split")
QUOTE = 120                                      # characters of user data a message quotes at most
_MEMBER_NAME = re.compile(r"([^/.]+)\.([^/]+)")  # `<key>.<ext>`, as WebDataset splits names
_SHA256 = re.compile(r"[0-9a-f]{64}")


class FormatError(ValueError):
    """Shards or an index.json that break the format; the message names the file and the sample."""


def show(value) -> str:
    """`repr(value)`, cut so that a message never quotes more than QUOTE characters of user data."""
    return brief(repr(value))


def brief(text: str) -> str:
    """`text` (say, a parser's message quoting the data), cut to QUOTE characters."""
    return text if len(text) <= QUOTE else f"{text[:QUOTE]}... ({len(text)} characters)"


# ---------------------------------------------------------------- samples

@dataclass(frozen=True)
class Sample:
    key: str            # the record key, `<dataset>/<local id>/<kind>/<n>`
    dataset: str
    split: str
    kind: str
    image_id: str
    labels: dict        # the record's structured labels
    text: str
    codes: np.ndarray   # the index grid's shape, uint16
    shard: str          # the tar it came from, for messages


def sample_key(record_key: str) -> str:
    """A record's name inside a tar: WebDataset reads `/` as folders, so they become `-`."""
    return record_key.replace("/", "-")


def encode(rec: dict, codes: np.ndarray, grid: CodeGrid) -> tuple[str, dict[str, bytes]]:
    """(sample key, members) for a manifest record (labels as its JSON text) and its image's codes."""
    codes = np.asarray(codes).reshape(grid.shape)
    if problem := grid.problem(codes):
        raise FormatError(f"record {show(rec['key'])}: {problem}")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(codes, dtype="<u2"), allow_pickle=False)
    meta = {k: rec[k] for k in META_KEYS}
    return sample_key(rec["key"]), {"json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode(),
                                    "npy": buf.getvalue(), "txt": rec["text"].encode()}


def decode(key: str, members: dict[str, bytes], grid: CodeGrid, entry: ShardEntry, where: str) -> Sample:
    """One sample from its raw members, checked against the format and its shard's index entry."""
    at = f"{where}: sample {show(key)}"
    if sorted(members) != sorted(MEMBERS):
        raise FormatError(f"{at}: members {show(sorted(members))}; a sample holds exactly {list(MEMBERS)} "
                          "and nothing else is decoded")
    codes = _codes(members["npy"], grid, at)
    try:
        text = members["txt"].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{at}: txt is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    meta = _meta(members["json"], at)
    if sample_key(meta["key"]) != key or (meta["split"], meta["kind"]) != (entry.split, entry.kind):
        raise FormatError(f"{at}: json names key {show(meta['key'])}, split {show(meta['split'])}, kind "
                          f"{show(meta['kind'])}; the shard is {entry.split}/{entry.kind}")
    return Sample(meta["key"], meta["dataset"], meta["split"], meta["kind"], meta["image_id"],
                  _json(meta["labels"], f"{at}: json labels", dict), text, codes, where)


def _codes(data: bytes, grid: CodeGrid, at: str) -> np.ndarray:
    """The npy member's codes. Its header is checked first: read_array would allocate whatever shape
    the header claims before reading a byte of data."""
    npy = np.lib.format
    try:
        f = io.BytesIO(data)
        version = npy.read_magic(f)
        header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(version)
        if header is None:
            raise ValueError(f"npy version {version} is not one numpy.save writes for codes")
        shape, fortran_order, dtype = header(f)
        if shape != grid.shape or dtype != CODE_DTYPE or fortran_order:
            raise ValueError(f"it holds {dtype} {shape}{' in Fortran order' if fortran_order else ''}, "
                             f"expected {np.dtype(CODE_DTYPE).name} {grid.shape}")
        codes = npy.read_array(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:  # noqa: BLE001 - numpy's header parser raises ValueError, SyntaxError, TokenError...
        raise FormatError(f"{at}: npy: {brief(str(exc))}") from None
    if problem := grid.problem(codes):
        raise FormatError(f"{at}: npy: {problem}")
    return codes


def _json(data: bytes | str, at: str, kind: type):
    """JSON (UTF-8 when bytes) whose top level is of type `kind`."""
    try:
        value = json.loads(data.decode("utf-8") if isinstance(data, bytes) else data)
    except (ValueError, RecursionError) as exc:   # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise FormatError(f"{at} is not valid JSON: {brief(str(exc))}") from None
    if not isinstance(value, kind):
        raise FormatError(f"{at} is a JSON {_json_type(value)}, expected a JSON {_json_type(kind())}")
    return value


def _json_type(value) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _meta(data: bytes, at: str) -> dict:
    meta = _json(data, f"{at}: json", dict)
    if sorted(meta) != sorted(META_KEYS) or not all(isinstance(v, str) for v in meta.values()):
        types = {k: type(v).__name__ for k, v in meta.items()}
        raise FormatError(f"{at}: json holds {show(types)}; the format is the strings {list(META_KEYS)}")
    return meta


# ---------------------------------------------------------------- tars

class _Hashing:
    """A write-only file that hashes what passes through it, so a tar's sha256 is known when it is
    written (no second read of the bytes)."""

    def __init__(self, f):
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)

    def tell(self) -> int:
        return self.size


def write_tar(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> tuple[int, str]:
    """Write (key, members) samples to `path` atomically as a reproducible tar; (bytes, sha256).
    Fixed member order, mtime 0, owner 0/0 and mode 0444: the same samples give the same bytes."""
    with publishing(path) as tmp, open(tmp, "wb") as f:
        out = _Hashing(f)
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for key, members in samples:
                for ext in MEMBERS:
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size, info.mtime, info.mode = len(members[ext]), 0, 0o444
                    info.uid = info.gid = 0
                    info.uname = info.gname = ""
                    tar.addfile(info, io.BytesIO(members[ext]))
    return out.size, out.sha.hexdigest()


def tar_samples(data: bytes, where: str) -> list[tuple[str, dict[str, bytes]]]:
    """(key, {ext: bytes}) per sample of an uncompressed tar, in order: only regular files named
    `<key>.<ext>`, each sample's members side by side, no key twice."""
    samples: list[tuple[str, dict[str, bytes]]] = []
    seen: set[str] = set()
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            for m in tar:
                match = _MEMBER_NAME.fullmatch(m.name)
                if not (m.isfile() and match):
                    raise FormatError(f"{where}: member {show(m.name)} is not a file named <key>.<ext>")
                key, ext = match.groups()
                if not samples or samples[-1][0] != key:
                    if key in seen:
                        raise FormatError(f"{where}: sample {show(key)} appears twice")
                    seen.add(key)
                    samples.append((key, {}))
                if ext in samples[-1][1]:
                    raise FormatError(f"{where}: sample {show(key)} has two {show(ext)} members")
                samples[-1][1][ext] = tar.extractfile(m).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise FormatError(f"{where}: not a readable tar: {brief(str(exc))}") from None
    return samples


# ---------------------------------------------------------------- index.json

@dataclass(frozen=True)
class ShardEntry:
    path: str       # `<split>/<kind>-NNNNNN.tar`, relative to the shard folder
    split: str
    kind: str
    count: int
    bytes: int
    sha256: str

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ShardIndex:
    root: Path                      # the shard folder
    data: dict                      # index.json as read, every key of KEYS
    shards: tuple[ShardEntry, ...]
    grid: CodeGrid                  # the shape of every sample's codes

    @property
    def file(self) -> Path:
        return self.root / INDEX

    @property
    def identity(self) -> dict:
        """What made the shards: VQGAN, text vocabulary, preprocessing."""
        return {k: self.data[k] for k in ("vqgan", "text_vocab", "preprocess")}

    def select(self, split: str, kind: str | None = None) -> list[ShardEntry]:
        return [e for e in self.shards if e.split == split and kind in (None, e.kind)]

    def check_vocab(self) -> None:
        """Text ids mean something else under another vocabulary: refuse it before any work."""
        got = self.data["text_vocab"].get("sha256")
        if got != VOCAB_SHA256:
            raise FormatError(f"{self.file}: shards were tokenized with text vocabulary sha256 {show(got)}, but this "
                              f"facecorpus uses {VOCAB_SHA256} (bert-base-uncased); re-shard with this version")

    def check_identity(self, other: dict, whose: str) -> None:
        """Refuse shards whose tokenizers differ from `other`'s ({vqgan, text_vocab}, e.g. what a
        checkpoint recorded): a model trained on one VQGAN's codes reads another's as noise."""
        if diff := identity_mismatch(self.identity, other):
            raise FormatError(f"{self.file}: these shards were made with other tokenizers than {whose} ("
                              + "; ".join(diff) + "): their ids would mean something else; re-shard with the "
                              "training VQGAN and vocabulary")


def identity_mismatch(a: dict, b: dict) -> list[str]:
    """Where two tokenizer identities ({vqgan: {...}, text_vocab: {...}}) disagree. Only what both
    record is compared: a released checkpoint records no VQGAN, an older one no code grid."""
    out = []
    for part, keys in (("vqgan", ("config_sha256", "checkpoint_sha256", "codebook_size", "grid")),
                       ("text_vocab", ("sha256",))):
        x, y = a.get(part) or {}, b.get(part) or {}
        out += [f"{part}.{k} {show(x[k])} vs {show(y[k])}" for k in keys if k in x and k in y and x[k] != y[k]]
    return out


def grid_of(vqgan: dict, where: str) -> CodeGrid:
    """The code grid a VQGAN identity records; one written before grids were recorded is FFHQ f16."""
    return CodeGrid.from_dict(vqgan, where) if "grid" in vqgan else FFHQ_F16


def build_index(seed: int, samples_per_shard: int, preprocess: dict, vqgan: dict, grid: CodeGrid,
                shards: list[ShardEntry], counts: dict) -> dict:
    return {"format": FORMAT, "seed": seed, "samples_per_shard": samples_per_shard, "preprocess": preprocess,
            "vqgan": {"name": vqgan["name"], "config_sha256": vqgan["config_sha256"],
                      "checkpoint_sha256": vqgan["checkpoint_sha256"], **grid.as_dict()},
            "text_vocab": {"name": "bert-base-uncased", "sha256": VOCAB_SHA256},
            "shards": [e.as_dict() for e in shards], "counts": counts}


def write_index(out: Path, index: dict) -> Path:
    return atomic_write(Path(out) / INDEX, json.dumps(index, indent=2, ensure_ascii=False) + "\n")


def read_index(shards: Path) -> ShardIndex:
    """index.json, checked: format, keys, code grid, and every entry (unique, well-typed, a path
    inside the folder). FormatError names the file and the entry."""
    root = Path(shards)
    path = root / INDEX
    if not path.is_file():
        raise FormatError(f"{path} is missing: `facecorpus shard` writes it last, so the shards are incomplete "
                          "or this is not a shard folder")
    if path.stat().st_size == 0:
        raise FormatError(f"{path} is empty: re-run `facecorpus shard`")
    data = _json(path.read_bytes(), str(path), dict)
    if data.get("format") in OLD_FORMATS:
        raise FormatError(f"{path}: format {data['format']} is older than this facecorpus reads ({FORMAT}: "
                          f"{OLD_FORMATS[data['format']]}); re-shard with `facecorpus shard`")
    if data.get("format") != FORMAT:
        raise FormatError(f"{path}: format {show(data.get('format'))}, expected {FORMAT!r}")
    if missing := [k for k in KEYS if k not in data]:
        raise FormatError(f"{path}: missing keys {missing}")
    for key, kind in (("vqgan", dict), ("text_vocab", dict), ("counts", dict), ("shards", list)):
        if not isinstance(data[key], kind):
            raise FormatError(f"{path}: {key} is a JSON {_json_type(data[key])}, expected a JSON {_json_type(kind())}")
    entries = tuple(_entry(path, i, e) for i, e in enumerate(data["shards"]))
    twice = [p for p, n in Counter(e.path for e in entries).items() if n > 1]
    if twice:
        raise FormatError(f"{path}: lists {show(twice[0])} more than once; each shard is listed once")
    return ShardIndex(root, data, entries, grid_of(data["vqgan"], f"{path}: vqgan"))


def _entry(path: Path, i: int, e) -> ShardEntry:
    at = f"{path}: shards[{i}]"
    if not isinstance(e, dict):
        raise FormatError(f"{at} is a JSON {_json_type(e)}, expected an object with {list(ENTRY_KEYS)}")
    if missing := [k for k in ENTRY_KEYS if k not in e]:
        raise FormatError(f"{at} lacks {missing}")
    if e["split"] not in SPLITS or e["kind"] not in KINDS:
        raise FormatError(f"{at}: split {show(e['split'])} / kind {show(e['kind'])} not in {SPLITS} / {KINDS}")
    # The exact layout the writer makes: no absolute path, `..`, link target or URL (webdataset
    # would run `pipe:CMD` as a shell command) can pass.
    if not isinstance(e["path"], str) or not re.fullmatch(rf"{e['split']}/{e['kind']}-\d{{6,}}\.tar", e["path"]):
        raise FormatError(f"{at}: path {show(e['path'])} is not {e['split']}/{e['kind']}-NNNNNN.tar inside the "
                          "shard folder")
    for key, least in (("count", 1), ("bytes", 0)):   # the writer never writes an empty shard
        if type(e[key]) is not int or e[key] < least:
            raise FormatError(f"{at} ({e['path']}): {key} {show(e[key])} is not an integer >= {least}")
    if not isinstance(e["sha256"], str) or not _SHA256.fullmatch(e["sha256"]):
        raise FormatError(f"{at} ({e['path']}): sha256 {show(e['sha256'])} is not 64 hex digits")
    return ShardEntry(**{k: e[k] for k in ENTRY_KEYS})


# ---------------------------------------------------------------- reading shards

def vouched_bytes(index: ShardIndex, entry: ShardEntry, check_sha256: bool = True) -> bytes:
    """The bytes of `entry`'s tar, once they are what index.json vouches for (size always, sha256
    unless turned off); read in one pass and hashed in memory."""
    path = index.root / entry.path
    real = path.resolve()
    if not real.is_relative_to(index.root.resolve()):
        raise FormatError(f"{path}: leads outside the shard folder {index.root} (to {show(str(real))})")
    try:
        st = os.stat(real)
        if not stat.S_ISREG(st.st_mode):   # a FIFO would block the reader forever
            raise FormatError(f"{path}: not a regular file")
        if st.st_size != entry.bytes:
            raise FormatError(f"{path}: {st.st_size} bytes, index.json says {entry.bytes}: the shard was "
                              "changed or truncated after it was written")
        with open(real, "rb") as f:
            data = f.read(entry.bytes + 1)
    except FileNotFoundError:
        raise FormatError(f"{path}: missing (listed in {index.file})") from None
    if len(data) != entry.bytes or (check_sha256 and hashlib.sha256(data).hexdigest() != entry.sha256):
        raise FormatError(f"{path}: sha256 differs from index.json: the shard was changed after it was written")
    return data


def read_shard(index: ShardIndex, entry: ShardEntry, check_sha256: bool = True) -> list[Sample]:
    """Every sample of one shard, decoded by the format and counted against the index."""
    where = str(index.root / entry.path)
    data = vouched_bytes(index, entry, check_sha256)
    samples = [decode(key, members, index.grid, entry, where) for key, members in tar_samples(data, where)]
    if len(samples) != entry.count:
        raise FormatError(f"{where}: {len(samples)} samples, index.json says {entry.count}")
    return samples


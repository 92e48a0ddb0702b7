"""LAION-Face's URL lists for img2dataset, from FaRL's face ids and LAION-400M's metadata (docs/web-datasets.md).

FaRL's `laion_face_ids.pth` holds, for each of LAION-400M's 32 metadata parts, the SAMPLE_IDs of the
pictures with a face: FaRL's own reader does `torch.load(f)[part]` for part 0..31 and tests
`SAMPLE_ID in set(...)`, so it is a list (or a dict keyed 0..31) of 32 collections of integers. The
metadata parts are `part-NNNNN-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet` with
`SAMPLE_ID`, `URL`, `TEXT`, `HEIGHT`, `WIDTH`, `LICENSE`, `NSFW`, `similarity`. Each part becomes
`laion_face_part_NNNNN.parquet` with every column of its face rows, for `img2dataset --input_format parquet`.

Safety: the `.pth` is a pickle; it is loaded with `torch.load(weights_only=True)`, which rebuilds only
lists, tuples, dicts, numbers and tensors and runs no pickled code; a file that needs more is refused
naming what it asked for. LAION-400M was withdrawn in December 2023 (links to illegal material) and
re-released as Re-LAION; `--removal-list` (URLs or SAMPLE_IDs) drops the rows it names, counted.

Memory: the pickle is loaded whole (a pickle cannot be read in pieces); after that one part's ids (an
int64 array) and one row-group batch of its metadata are held at a time, and each finished part's
ids are released.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from facecorpus.atomic import publishing
from facecorpus.excerpt import quote

PARTS = 32
META = "part-{:05d}-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet"
OUT = "laion_face_part_{:05d}.parquet"
SUBSETS = {"20m": (0, 2, 5, 8, 13, 15, 17, 18, 21, 22, 24, 25, 28), "50m": tuple(range(PARTS))}  # FaRL's README
BATCH_ROWS = 65_536
DOWNLOAD = "https://huggingface.co/datasets/FacePerceiver/laion-face (laion_face_ids.pth)"


class PrepareError(ValueError):
    """An input that cannot be used, named with what is wrong."""


@dataclass
class PartCounts:
    part: int
    rows: int = 0             # metadata rows read
    kept: int = 0             # face rows written for img2dataset
    removed: int = 0          # face rows the removal list names
    not_face: int = 0         # rows whose SAMPLE_ID is not in the part's ids
    ids: int = 0              # distinct ids the .pth lists for the part
    ids_without_row: int = 0  # of those, ids no metadata row has (rows == kept + removed + not_face)


def load_ids(path: Path) -> dict[int, object]:
    """part -> its ids as stored (converted one part at a time by `part_ids`)."""
    import torch  # only this command needs it

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        wanted = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        raise PrepareError(
            f"{path}: refused: loading it would call {wanted[1] if wanted else 'pickled code'}; facecorpus loads only "
            "plain lists, tuples, dicts, ints and integer tensors, which need no code (torch.load with "
            "weights_only=True). Where you trust the file, resave it as plain lists: "
            "torch.save([[int(i) for i in part] for part in ids], 'laion_face_ids_plain.pth')") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise PrepareError(f"{path}: not a torch file ({type(exc).__name__}: {str(exc)[:200]})") from None
    if isinstance(obj, (list, tuple)) and len(obj) == PARTS:
        return dict(enumerate(obj))
    if isinstance(obj, dict) and sorted(obj, key=repr) == sorted(range(PARTS), key=repr):
        return dict(obj)
    what = f"a {type(obj).__name__} of {len(obj)}" if hasattr(obj, "__len__") else f"a {type(obj).__name__}"
    raise PrepareError(f"{path}: holds {what}; expected FaRL's 32 parts (a list, or a dict keyed 0..31)")


def part_ids(value, path: Path, part: int) -> np.ndarray:
    """One part's ids as a sorted int64 array; anything but integers is refused, never rounded."""
    if hasattr(value, "numpy") and hasattr(value, "dim"):  # a tensor
        arr = value.numpy() if value.dim() == 1 else None
    elif isinstance(value, (list, tuple, set, frozenset)):
        arr = np.array(sorted(value) if isinstance(value, (set, frozenset)) else value)
        if arr.size == 0:
            arr = arr.astype(np.int64)
    else:
        arr = None
    if arr is None or arr.ndim != 1 or arr.dtype.kind not in "iu":
        kind = f"{type(value).__name__} of {arr.dtype}" if arr is not None else type(value).__name__
        raise PrepareError(f"{path}: part {part} holds a {kind}, not a flat collection of integer SAMPLE_IDs")
    return np.unique(arr.astype(np.int64))


def read_removals(path: Path | None, column: str | None = None) -> tuple[pa.Array, pa.Array, int]:
    """(URLs, SAMPLE_IDs, entries) of a removal list: a text file with one URL or SAMPLE_ID per line
    (blank lines and `#` comments skipped), or a Parquet file's column (URL or SAMPLE_ID by its type).
    No list: nothing to drop."""
    if path is None:
        return pa.array([], pa.string()), pa.array([], pa.int64()), 0
    if path.suffix == ".parquet":
        names = pq.read_schema(path).names
        column = column or next((c for c in ("URL", "url", "SAMPLE_ID", "sample_id") if c in names), None)
        if column not in names:
            raise PrepareError(f"{path}: no column {column!r} (name it with --removal-column); columns: {names}")
        values = pq.read_table(path, columns=[column]).column(0).combine_chunks().drop_null()
        if pa.types.is_integer(values.type):
            return pa.array([], pa.string()), values.cast(pa.int64()), len(values)
        return values.cast(pa.string()), pa.array([], pa.int64()), len(values)
    urls, ids = [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry.isdigit():
                ids.append(int(entry))
            elif entry.startswith(("http://", "https://")):
                urls.append(entry)
            else:
                raise PrepareError(f"{path}:{n}: {quote(entry)} is neither a SAMPLE_ID nor an http(s) URL")
    return pa.array(urls, pa.string()), pa.array(ids, pa.int64()), len(urls) + len(ids)


def choose_parts(spec: str, available: dict) -> list[int]:
    """`all`, `20m`, `50m` or a comma-separated list of part numbers."""
    if spec == "all":
        return sorted(available)
    if spec in SUBSETS:
        return list(SUBSETS[spec])
    try:
        parts = sorted({int(p) for p in spec.split(",")})
    except ValueError:
        raise PrepareError(f"--parts {spec}: expected all, 20m, 50m or part numbers like 0,2,5") from None
    if not set(parts) <= set(available):
        raise PrepareError(f"--parts {spec}: parts are numbered 0..{PARTS - 1}")
    return parts


def prepare_part(part: int, ids: np.ndarray, meta: Path, out: Path, removals: tuple[pa.Array, pa.Array],
                 matched: set, progress=None) -> PartCounts:
    """One metadata part's face rows, minus removals, into `out/laion_face_part_NNNNN.parquet` (published
    atomically), read in row-group batches. `matched` collects the removal entries that named a face row."""
    pf = pq.ParquetFile(meta)
    schema = pf.schema_arrow
    if "SAMPLE_ID" not in schema.names or "URL" not in schema.names:
        raise PrepareError(f"{meta}: no SAMPLE_ID or URL column; its columns: {schema.names}")
    if not pa.types.is_integer(schema.field("SAMPLE_ID").type):
        raise PrepareError(f"{meta}: SAMPLE_ID is {schema.field('SAMPLE_ID').type}, not integers")
    counts, id_set, found = PartCounts(part, ids=len(ids)), pa.array(ids, pa.int64()), []
    urls, rid = removals
    with publishing(out / OUT.format(part)) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in pf.iter_batches(batch_size=BATCH_ROWS):
            sid, url = batch.column("SAMPLE_ID").cast(pa.int64()), batch.column("URL").cast(pa.string())
            face = pc.fill_null(pc.is_in(sid, value_set=id_set), False)
            url_hit = pc.and_(face, pc.fill_null(pc.is_in(url, value_set=urls), False))
            id_hit = pc.and_(face, pc.fill_null(pc.is_in(sid, value_set=rid), False))
            keep = pc.and_(face, pc.invert(pc.or_(url_hit, id_hit)))
            writer.write_batch(batch.filter(keep))
            found.append(sid.filter(face).to_numpy(zero_copy_only=False))
            matched.update(url.filter(url_hit).to_pylist(), sid.filter(id_hit).to_pylist())
            n_face, n_keep = int(pc.sum(face).as_py() or 0), int(pc.sum(keep).as_py() or 0)
            counts.rows += batch.num_rows
            counts.kept += n_keep
            counts.removed += n_face - n_keep
            counts.not_face += batch.num_rows - n_face
            if progress:
                progress(batch.num_rows)
    seen = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    counts.ids_without_row = len(ids) - len(seen)
    assert counts.rows == counts.kept + counts.removed + counts.not_face  # by construction of the three masks
    return counts


def as_dict(counts: list[PartCounts], removal_entries: int, removal_matched: int) -> dict:
    """The run's counts (`OUT/laion_face_summary.json`)."""
    total = {k: sum(getattr(c, k) for c in counts) for k in ("rows", "kept", "removed", "not_face", "ids", "ids_without_row")}
    return {"format": "facecorpus-laion-face/1", "parts": [asdict(c) for c in counts], "total": total,
            "removal_list": {"entries": removal_entries, "matched": removal_matched}}


def meta_rows(meta: Path) -> int:
    """Rows of a metadata part, from its footer (for the progress bar)."""
    return pq.ParquetFile(meta).metadata.num_rows

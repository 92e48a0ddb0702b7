"""Split harmonization: no evaluation photo is ever trained on, no person spans train and test.

Rules (docs/design.md, "Splits"):
1. A photo's split is the most held-out split (test > val > train) that any dataset holding it, or
   CelebA's list_eval_partition.txt, assigns.
2. A person's photos all take the most held-out split of any of that person's photos, so no person
   spans train and test (a photo's person is the subject_id of any record of that photo, so the
   CelebA-HQ caption records inherit CelebA's identities through their shared photo_id).
3. A photo no dataset splits, of a person with no split photo, gets a seeded hash of subject_id
   (photo_id when the person is unknown).
Every record whose split differs from its dataset's own is counted, with who decided.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from facecorpus.records import SPLITS

RANK = {s: i for i, s in enumerate(SPLITS)}
HOLDOUT = {"val": 0.05, "test": 0.05}  # hashed share of photos/persons that no dataset splits


def hash_split(group: str, seed: int) -> str:
    digest = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < HOLDOUT["test"]:
        return "test"
    return "val" if u < HOLDOUT["test"] + HOLDOUT["val"] else "train"


def _factorize(column: pd.Series, extra: list[str] = ()) -> tuple[np.ndarray, np.ndarray]:
    """(integer code per value, -1 for null; the distinct values), through Arrow's hashing (fast on strings)."""
    col = pa.array(column, type=pa.string(), from_pandas=True)
    # pandas 3's Arrow-backed string columns come back chunked (always, when empty): take their chunks.
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    arr = pa.chunked_array([*chunks, pa.array(list(extra), type=pa.string())], type=pa.string())
    enc = pc.dictionary_encode(arr).combine_chunks()
    return enc.indices.fill_null(-1).to_numpy().astype(np.int64), enc.dictionary.to_numpy(zero_copy_only=False)


def _max_at(size: int, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per-group maximum (-1 where a group has no value): out[g] = max(values[index == g])."""
    out = np.full(size, -1, dtype=np.int8)
    np.maximum.at(out, index, values)
    return out


def harmonize(df: pd.DataFrame, partition: dict[str, str] | None = None, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Harmonized split per row of `df` (columns dataset, photo_id, subject_id, source_split),
    and the reassignment counts [{dataset, from, to, decided_by, count}].

    Works on integer codes of photos and persons (pandas' string maps are too slow at 2.3M rows).
    """
    part_ids = list(partition or {})
    codes, photos = _factorize(df["photo_id"], part_ids)  # partition photos get codes too
    photo, part_codes = codes[: len(df)], codes[len(df):]
    subj, subjects = _factorize(df["subject_id"])
    dataset = df["dataset"].to_numpy(dtype=object)
    split_codes, split_names = _factorize(df["source_split"])
    rank = np.append(np.array([RANK[s] for s in split_names], dtype=np.int8), -1)[split_codes]
    by = np.full(len(df), None, dtype=object)

    # 1. the most held-out claim per photo; the first dataset making it is credited
    claimed = rank >= 0
    photo_rank = _max_at(len(photos), photo[claimed], rank[claimed])
    winners = np.flatnonzero(claimed & (rank == photo_rank[photo]))
    first_photo, first_row = np.unique(photo[winners], return_index=True)
    photo_by = np.full(len(photos), None, dtype=object)
    photo_by[first_photo] = dataset[winners[first_row]]
    if part_ids:
        ext = np.array([RANK[v] for v in partition.values()], dtype=np.int8)
        better = ext > photo_rank[part_codes]
        photo_rank[part_codes[better]] = ext[better]
        photo_by[part_codes[better]] = "celeba-partition"
    out = photo_rank[photo].copy()
    by[:] = photo_by[photo]

    # 2. a person's photos all take the person's most held-out split (the person of a photo comes
    #    from any record of it that names one, so HQ caption records inherit CelebA identities)
    named = subj >= 0
    photo_subj = np.full(len(photos), -1, dtype=np.int64)
    photo_subj[photo[named]] = subj[named]
    row_subj = photo_subj[photo]
    has = (photo_rank >= 0) & (photo_subj >= 0)
    person_rank = np.append(_max_at(len(subjects), photo_subj[has], photo_rank[has]), -1)
    person = person_rank[row_subj]  # row_subj -1 (no person) reads the appended -1
    lift = person > out
    out[lift], by[lift] = person[lift], "same-person"

    # 3. everything still unsplit: a seeded hash of the person, else of the photo
    rest = np.flatnonzero(out < 0)
    names = np.append(np.asarray(subjects, dtype=object), None)
    groups = np.where(row_subj[rest] >= 0, names[row_subj[rest]], np.asarray(photos, dtype=object)[photo[rest]])
    inverse, uniq = pd.factorize(groups)
    hashed = np.array([RANK[hash_split(g, seed)] for g in uniq], dtype=np.int8)
    out[rest], by[rest] = hashed[inverse], "hash"
    return np.array(SPLITS, dtype=object)[out], count_moves(dataset, rank, out, by)


def count_moves(dataset: np.ndarray, before: np.ndarray, after: np.ndarray, by: np.ndarray) -> list[dict]:
    """[{dataset, from, to, decided_by, count}] for every row whose split changed (from None: had none)."""
    changed = np.flatnonzero(before != after)
    if not len(changed):
        return []
    keys = pd.DataFrame({"dataset": dataset[changed], "from": before[changed], "to": after[changed],
                         "decided_by": by[changed]}).value_counts().reset_index(name="count")
    moves = [{"dataset": r["dataset"], "from": SPLITS[r["from"]] if r["from"] >= 0 else None, "to": SPLITS[r["to"]],
              "decided_by": r["decided_by"], "count": int(r["count"])} for r in keys.to_dict("records")]
    return sorted(moves, key=lambda m: (m["dataset"], str(m["from"]), m["to"], m["decided_by"]))

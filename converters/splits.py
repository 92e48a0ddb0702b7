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

from facecorpus.records import SPLITS

RANK = {s: i for i, s in enumerate(SPLITS)}
HOLDOUT = {"val": 0.05, "test": 0.05}  # hashed share of photos/persons that no dataset splits


def hash_split(group: str, seed: int) -> str:
    digest = hashlib.sha1(f"{seed}:{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < HOLDOUT["test"]:
        return "test"
    return "val" if u < HOLDOUT["test"] + HOLDOUT["val"] else "train"


def harmonize(df: pd.DataFrame, partition: dict[str, str] | None = None, seed: int = 0) -> tuple[np.ndarray, list[dict]]:
    """Harmonized split per row of `df` (columns dataset, photo_id, subject_id, source_split),
    and the reassignment counts [{dataset, from, to, decided_by, count}]."""
    rank = df["source_split"].map(RANK)
    claims = pd.DataFrame({"photo_id": df["photo_id"], "rank": rank, "by": df["dataset"]}).dropna(subset=["rank"])
    if partition:
        ext = pd.DataFrame({"photo_id": list(partition), "rank": [RANK[s] for s in partition.values()],
                            "by": "celeba-partition"})
        claims = pd.concat([claims, ext[ext["photo_id"].isin(df["photo_id"])]], ignore_index=True)
    # The winning claim per photo: highest rank; the first dataset to make it is credited.
    win = claims.sort_values("rank", ascending=False, kind="stable").drop_duplicates("photo_id")
    photo_rank = win.set_index("photo_id")["rank"]
    photo_by = win.set_index("photo_id")["by"]

    out_rank = df["photo_id"].map(photo_rank)
    by = df["photo_id"].map(photo_by).astype(object)  # object even when no photo has a claim
    # The person behind each photo, from any record of it that names one.
    named = df.loc[df["subject_id"].notna(), ["photo_id", "subject_id"]].drop_duplicates("photo_id")
    subject = df["photo_id"].map(named.set_index("photo_id")["subject_id"])
    subj_rank = pd.DataFrame({"s": subject, "r": out_rank}).dropna().groupby("s")["r"].max()
    person = subject.map(subj_rank)
    raise_ = person.notna() & (out_rank.isna() | (person > out_rank))
    out_rank[raise_] = person[raise_]
    by[raise_] = "same-person"
    rest = out_rank.isna()
    groups = subject.where(subject.notna(), df["photo_id"])[rest]
    hashed = {g: RANK[hash_split(g, seed)] for g in groups.unique()}
    out_rank[rest] = groups.map(hashed)
    by[rest] = "hash"

    split = np.array(SPLITS, dtype=object)[out_rank.astype(int).to_numpy()]
    changed = pd.DataFrame({"dataset": df["dataset"], "from": df["source_split"], "to": split, "decided_by": by})
    changed = changed[changed["from"].fillna("") != changed["to"]]
    counts = changed.fillna({"from": "none"}).value_counts().reset_index(name="count")
    moves = [{k: (None if v == "none" else v) for k, v in row.items()} | {"count": int(row["count"])}
             for row in counts.to_dict("records")]
    return split, sorted(moves, key=lambda m: (m["dataset"], str(m["from"]), m["to"], m["decided_by"]))

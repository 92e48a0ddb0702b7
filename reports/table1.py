"""Talk2Face Table 1 beside our record counts, with the known reason for every difference.

The paper gives each dataset's contribution rounded to thousands ("CelebA 203k"). The full counts
that the real files give, and why some of them cannot match, are in docs/datasets.md ("Talk2Face
Table 1 against the real files").
"""

from __future__ import annotations

from dataclasses import dataclass

from facecorpus.summary import DatasetSummary, RunSummary


@dataclass(frozen=True)
class PaperRow:
    kind: str            # the record kind the dataset contributes
    paper_k: int         # Table 1, in thousands of face-text pairs
    full: int | None     # what the complete raw download gives (None: not countable from the files)
    reason: str          # how Table 1 relates to the files (docs/datasets.md)


PAPER = {
    "celeba": PaperRow("attributes", 203, 202_599, "Table 1 counts the 202,599 CelebA images, one 40-attribute record each (exact)."),
    "fs2k": PaperRow("attributes", 2, 2_104, "Table 1 counts the 2,104 photo-sketch pairs, one record per photo (exact)."),
    "affectnet": PaperRow("attributes", 400, 420_299,
                          "Table 1 is about all manually annotated rows (about 414.8k train + 5.5k validation, "
                          "codes 8-10 included; unverified); keeping only the emotion codes 0-7 gives about 290k."),
    "rafdb": PaperRow("attributes", 29, 15_339,
                      "Table 1 matches the whole RAF-DB image pool (about 29.7k); the basic label file has 15,339 "
                      "images (19,293 with the compound file), so 29k cannot be rebuilt from it."),
    "expw": PaperRow("attributes", 92, None, "Table 1 is all face rows of label.lst (about 91.8k; unverified)."),
    "cacd": PaperRow("attributes", 163, 163_446, "Table 1 is the 163,446 rows of celebrityImageData (exact)."),
    "afad": PaperRow("attributes", 160, 165_501,
                     "Table 1 is AFAD's rounded headline ('more than 160,000'); the listing has 165,501 images "
                     "(164,432 on the project page)."),
    "imdbwiki": PaperRow("attributes", 523, 523_051,
                         "Table 1 is every entry of imdb.mat + wiki.mat (460,723 + 62,328), unfiltered; any "
                         "quality filter (no face, several faces, unknown gender, impossible age) keeps fewer."),
    "fairface": PaperRow("attributes", 101, 97_698,
                         "FairFace released 97,698 labelled images (86,744 train + 10,954 val); Table 1's 101k "
                         "matches neither that nor the paper's 108,501; unexplained."),
    "mmcelebahq": PaperRow("caption", 300, 300_000,
                           "Table 1 is 30,000 images x 10 captions; the captions that say nothing (an empty "
                           "attribute list, 'He has .') are filtered, and dropping in-file duplicates as well "
                           "gives about 295k."),
    "celebatexthq": PaperRow("caption", 150, 150_100, "Table 1 is 15,010 images x 10 captions (consistent)."),
    "celebadialog": PaperRow("caption", 203, 202_599,
                             "Table 1 matches the standard (CelebA) release with one overall caption per image; "
                             "the HQ release gives 29,999."),
    "ffhqtext": PaperRow("caption", 8, 6_840,
                         "FFHQ-Text has 760 images x 9 captions = 6,840 pairs; Table 1's 8k is unexplained."),
}
PAPER_TOTAL_K = sum(row.paper_k for row in PAPER.values())  # 2,334k: the paper's "2.3M face-text pairs"


def matches_paper(records: int, paper_k: int) -> bool:
    """True when our count rounds to the paper's figure (Table 1 is in thousands)."""
    return round(records / 1000) == paper_k


def compare(records: dict[str, dict[str, int]], summary: RunSummary | None) -> list[dict]:
    """One row per dataset: our records of the kind Table 1 counts, the paper's figure, the difference and
    why it differs (`records_by_kind` has every kind; records of another kind are noted, not compared).

    `records` is {dataset: {kind: n}}; `summary` is the run summary (None when the manifest has none).
    """
    rows = []
    for dataset, paper in PAPER.items():
        by_kind = records.get(dataset, {})
        ours = by_kind.get(paper.kind, 0)  # Table 1 counts one kind per dataset
        info = summary.datasets.get(dataset) if summary else None
        filtered = dict(info.filtered) if info else {}
        ok = matches_paper(ours, paper.paper_k)
        others = {k: n for k, n in by_kind.items() if k != paper.kind}
        rows.append({
            "dataset": dataset, "kind": paper.kind, "records": ours, "records_by_kind": dict(by_kind),
            "paper": paper.paper_k * 1000, "paper_text": f"{paper.paper_k}k", "difference": ours - paper.paper_k * 1000,
            "full_download": paper.full, "matches_paper": ok, "filtered": filtered,
            "reasons": ([] if ok else _reasons(ours, paper, info, filtered))
            + [f"also {n:,} {k} records, not part of Table 1's count" for k, n in others.items()],
        })
    return rows


def _reasons(ours: int, paper: PaperRow, info: DatasetSummary | None, filtered: dict) -> list[str]:
    """Why our count is not the paper's: what this manifest did, then what the files allow."""
    if ours == 0:
        return ["not converted in this manifest"]
    reasons = []
    if filtered:
        reasons.append("filtered here: " + ", ".join(f"{k} {v:,}" for k, v in sorted(filtered.items())))
    if info and info.errors:
        reasons.append(f"{info.errors:,} rows failed to convert (see the ledger)")
    if paper.full is not None and ours + sum(filtered.values()) < paper.full:
        reasons.append(f"this manifest was built from part of the download ({ours:,} records; "
                       f"the full download gives {paper.full:,})")
    if paper.full is None and info:
        reasons.append(f"{info.rows_read:,} rows read from the raw files here; "
                       "the full download's exact count is not known (docs/datasets.md)")
    reasons.append(paper.reason)
    return reasons

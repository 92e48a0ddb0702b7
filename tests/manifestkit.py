"""A small manifest whose report numbers are known by construction: written through the real writers
(facecorpus.manifest, facecorpus.summary), shared by the report and browser tests."""

from __future__ import annotations

from pathlib import Path

from facecorpus import summary as run_summary
from facecorpus.manifest import to_table, write_partition
from facecorpus.records import attributes, caption

LONG_CAPTION = " ".join(["the woman has wavy brown hair, arched eyebrows and a slightly open mouth."] * 7)


def _att(dataset, local, labels, split="train", photo=None, subject=None):
    rec = attributes(dataset, local, f"img/{local}.jpg", labels, image_id=f"{dataset}/{local}",
                     photo_id=photo, subject_id=subject)
    rec.split = split
    return rec


def _cap(dataset, local, text, n, split="train", image_id=None, photo=None, labels=None):
    rec = caption(dataset, local, f"img/{local}.jpg", text, n, image_id=image_id or f"{dataset}/{local}",
                  photo_id=photo, labels=labels)
    rec.split = split
    return rec


def build_manifest(root: Path) -> Path:
    """11 attribute records of 6 datasets and 4 caption records of 2; every count test_report.py asserts follows from this."""
    parts = {
        "cacd": [_att("cacd", "a1", {"age": 25}, subject="p1"), _att("cacd", "a2", {"age": 25}, subject="p1"),
                 _att("cacd", "a3", {"age": 61}, "test", subject="p2")],
        "fairface": [_att("fairface", "f1", {"age": "10-19", "gender": "female", "race": "east asian"}, "val"),
                     _att("fairface", "f2", {"age": "more than 70", "gender": "male", "race": "white"})],
        "affectnet": [_att("affectnet", "e1", {"expression": "happy"}), _att("affectnet", "e2", {"expression": "contempt"})],
        "rafdb": [_att("rafdb", "r1", {"expression": "surprise", "gender": "female"}, "test")],
        "fs2k": [_att("fs2k", "s1", {"hair color": "rosy brown", "lip color": "brown", "smile": True})],
        "celeba": [_att("celeba", "000001", {"gender": "male", "bald": True}, "test"),
                   _att("celeba", "000002", {"gender": "female", "bald": False})],
        "celebadialog": [_cap("celebadialog", "000001", "He is in his thirties.", 0, "test",
                              image_id="celeba/000001", photo="celeba/000001", labels={"age": 2})],
        "mmcelebahq": [_cap("mmcelebahq", "5", "She is smiling.", 0, "test", image_id="celebahq/5", photo="celeba/000001"),
                       _cap("mmcelebahq", "5", LONG_CAPTION, 1, "test", image_id="celebahq/5", photo="celeba/000001"),
                       _cap("mmcelebahq", "6", "She is smiling.", 0, image_id="celebahq/6", photo="celeba/000002")],
    }
    manifest = root / "manifest"
    for dataset, recs in parts.items():
        write_partition(to_table(recs), manifest, dataset)
    counts = {"cacd": dict(rows_read=5, records=3, filtered={"no face": 2}),
              "affectnet": dict(rows_read=4, records=2, filtered={"code 10 (non-face)": 1, "code 9 (uncertain)": 1})}
    run_summary.write(manifest, run_summary.RunSummary(
        datasets={d: run_summary.DatasetSummary(raw_dir=f"/raw/{d}", errors=0, notes=["x"] if d == "affectnet" else [],
                                                **c) for d, c in counts.items()},
        splits=run_summary.SplitSummary(reassigned=[
            {"dataset": "mmcelebahq", "from": "train", "to": "test", "decided_by": "celeba-partition", "count": 2},
            {"dataset": "celebadialog", "from": "train", "to": "test", "decided_by": "celeba-partition", "count": 1},
            {"dataset": "cacd", "from": "train", "to": "test", "decided_by": "hash", "count": 1}]),
        not_converted={"mystery": "not a dataset name facecorpus knows"}, on_error="skip"))
    (manifest / "ledger.jsonl").write_text(
        '{"dataset": "cacd", "file": "a.mat", "line": 3, "problem": "age 300 at row 3"}\n'
        '{"dataset": "cacd", "file": "a.mat", "line": 9, "problem": "age 412 at row 9"}\n')
    return manifest

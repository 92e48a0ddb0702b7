"""ExpW converter: the sample tree (several faces per picture), broken label files, the real 5,705-row subset."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import rawfiles
from facecorpus.converters import expw, pipeline, splits
from facecorpus.converters.base import RawFormatError
from rawfiles import edit

NAME = "expw"
LABELS = "label/label.lst"
ROW = "awe_people_262.jpg 0 40 60 180 170 0.8831 2"  # line 5 of the sample


def convert(raw: Path, on_error: str = "raise") -> pipeline.DatasetRun:
    return rawfiles.convert(NAME, raw, on_error)


def test_sample_converts_to_what_it_promises(sample):
    raw, info = sample
    run = convert(raw)
    assert {"none" if r.source_split is None else r.source_split: 6 for r in run.records} == info["splits"]
    assert {r.key: r.text for r in run.records if r.key in info["texts"]} == info["texts"]
    assert {r.key: r.bbox for r in run.records if r.key in info["bboxes"]} == info["bboxes"]
    two = [r for r in run.records if r.image == "image/origin/angry_actor_120.jpg"]
    # Each face is its own image to tokenize (its crop); both share the picture for the split.
    assert [(r.image_id, r.photo_id) for r in two] == [("expw/angry_actor_120-1", "expw/angry_actor_120"),
                                                      ("expw/angry_actor_120-0", "expw/angry_actor_120")]
    assert len({r.image for r in run.records}) == info["images"]
    assert all((raw / r.image).is_file() for r in run.records)


def test_faces_of_one_picture_share_the_hashed_split(sample):
    raw, _ = sample
    recs = convert(raw).records
    # Beside a split dataset, as under `convert --all` (one RAF-DB row).
    df = pd.DataFrame({"dataset": [NAME] * len(recs) + ["rafdb"],
                       "photo_id": [r.photo_id for r in recs] + ["rafdb/train_00001"],
                       "subject_id": None, "source_split": [None] * len(recs) + ["train"]}, dtype=object)
    two = [i for i, r in enumerate(recs) if r.photo_id == "expw/angry_actor_120"]
    assert len(two) == 2
    for seed in range(8):
        split, _ = splits.harmonize(df, None, seed)
        assert split[two[0]] == split[two[1]]


@pytest.mark.parametrize("form", ["crlf", "bom", "bom+crlf", "no final newline"])
def test_line_endings_and_bom_give_the_same_records(sample, form):
    raw, _ = sample
    want = rawfiles.rows(convert(raw))
    text = (raw / LABELS).read_text()
    text = text.rstrip("\n") if form == "no final newline" else text
    data = text.replace("\n", "\r\n") if "crlf" in form else text
    (raw / LABELS).write_bytes((b"\xef\xbb\xbf" if "bom" in form else b"") + data.encode())
    assert rawfiles.rows(convert(raw)) == want


def test_the_ExpW_data_folder_layout_is_accepted(sample, tmp_path):
    raw, _ = sample
    other = tmp_path / "ExpW"
    (other / "data").mkdir(parents=True)
    shutil.move(raw / "label", other / "data/label")
    shutil.move(raw / "image", other / "data/image")
    run = convert(other)
    assert run.records[0].image == "data/image/origin/angry_actor_104.jpg" and len(run.records) == 6


def test_non_ascii_image_names_are_kept(sample):
    raw, _ = sample
    edit(raw / LABELS, lambda t: t.replace(ROW, ROW.replace("awe_people_262", "überrascht_café_7")))
    rec = convert(raw).records[4]
    assert (rec.key, rec.image) == ("expw/überrascht_café_7-0/attributes/0", "image/origin/überrascht_café_7.jpg")


@pytest.mark.parametrize("row, problem", [
    ("awe_people_262.jpg 0 40 60 180 170 0.8831 7", "expression_label 7 is not one of the codes 0-6"),
    ("awe_people_262.jpg 0 40 60 180 170 0.8831 -1", "expression_label -1 is not one of the codes 0-6"),
    ("awe_people_262.jpg 0 40 180 60 170 0.8831 2", "box top=40 left=180 right=60 bottom=170 is empty or negative"),
    ("awe_people_262.jpg 0 40 60 180 170 high 2", "face_box_cofidence 'high' is not a number"),
    ("awe_people_262.jpg 0 40 60.5 180 170 0.8831 2", "face_box_left '60.5' is not an integer"),
    ("../../../etc/passwd 0 40 60 180 170 0.8831 2", "image path 'image/origin/../../../etc/passwd' escapes"),
    ("angry_actor_120.jpg 1 40 60 180 170 0.8831 2", "face 1 of angry_actor_120.jpg is listed twice"),
    ("awe_people_262.jpg 0 40 60 180 170 0.8831", "expected 8 space-separated fields"),
])
def test_bad_rows_name_file_and_line_and_are_counted_under_skip(sample, row, problem):
    raw, _ = sample
    edit(raw / LABELS, lambda t: t.replace(ROW, row))
    with pytest.raises(pipeline.ConvertError, match=re.escape(f"expw: {LABELS} line 5: {problem}")):
        convert(raw)
    run = convert(raw, "skip")
    assert (len(run.records), len(run.failures), run.rows_read) == (5, 1, 6)


def test_truncated_last_line_is_an_error(sample):
    raw, _ = sample
    edit(raw / LABELS, lambda t: t.rstrip("\n")[: -len(" 41.27 4")])
    with pytest.raises(pipeline.ConvertError, match=f"{LABELS} line 6: expected 8 space-separated fields .*got 6"):
        convert(raw)


def test_missing_label_file_names_it_and_the_download_page(sample):
    raw, _ = sample
    (raw / LABELS).unlink()
    with pytest.raises(RawFormatError, match=f"{LABELS} or data/{LABELS}: missing under .*"
                                             f"download page: {re.escape(expw.DOWNLOAD)}"):
        convert(raw)


# --- the real rows (../shared/raw/expw: a balanced 5,705-row subset) -------------------------------------------------

@pytest.mark.shared
def test_real_subset_converts_completely(shared_raw):
    run = convert(shared_raw / NAME)
    assert (run.rows_read, len(run.records), len(run.failures)) == (5_705, 5_705, 0)
    assert Counter(r.labels["expression"] for r in run.records) == {w: 815 for w in expw.EXPRESSION.values()}
    assert len({r.photo_id for r in run.records}) == 5_408 and len({r.image_id for r in run.records}) == 5_705
    assert all(r.source_split is None for r in run.records)
    first = run.records[0]  # angry_actor_104.jpg 0 28 113 226 141 22.9362 0: top 28, left 113, right 226, bottom 141
    assert (first.key, first.bbox, first.text) == ("expw/angry_actor_104-0/attributes/0", [113, 28, 226, 141],
                                                   "expw expression: anger")

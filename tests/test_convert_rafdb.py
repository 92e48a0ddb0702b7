"""RAF-DB basic converter: the sample tree, broken label files, the compound look-alike, the real file."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

import rawfiles
from facecorpus.converters import pipeline, rafdb
from facecorpus.converters.base import RawFormatError
from rawfiles import edit

NAME = "rafdb"
LABELS = "basic/EmoLabel/list_patition_label.txt"


def convert(raw: Path, on_error: str = "raise") -> pipeline.DatasetRun:
    return rawfiles.convert(NAME, raw, on_error)


def test_sample_converts_to_what_it_promises(sample):
    raw, info = sample
    run = convert(raw)
    assert dict(Counter(r.source_split for r in run.records)) == info["splits"] == {"train": 4, "test": 3}
    assert {r.key: r.text for r in run.records if r.key in info["texts"]} == info["texts"]
    rec = run.records[0]
    assert (rec.image, rec.image_id, rec.bbox, rec.subject_id) == (
        "basic/Image/aligned/train_00001_aligned.jpg", "rafdb/train_00001", None, None)
    assert all((raw / r.image).is_file() for r in run.records)


def test_every_code_maps_to_the_shared_expression_words():
    # RAF-DB's 1-based order: 1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral.
    assert rafdb.EXPRESSION == {1: "surprise", 2: "fear", 3: "disgust", 4: "happy", 5: "sad", 6: "anger",
                                7: "neutral"}


@pytest.mark.parametrize("form", ["lf+final", "crlf", "bom", "bom+crlf"])
def test_line_endings_and_bom_give_the_same_records(sample, form):
    raw, _ = sample
    want = rawfiles.rows(convert(raw))
    text = (raw / LABELS).read_text() + ("\n" if form == "lf+final" else "")
    data = text.replace("\n", "\r\n") if "crlf" in form else text
    (raw / LABELS).write_bytes((b"\xef\xbb\xbf" if "bom" in form else b"") + data.encode())
    assert rawfiles.rows(convert(raw)) == want


def test_the_basic_folder_itself_may_be_the_raw_root(sample):
    raw, _ = sample
    run = convert(raw / "basic")
    assert run.records[0].image == "Image/aligned/train_00001_aligned.jpg" and len(run.records) == 7


@pytest.mark.parametrize("row, problem", [
    ("train_00003.jpg 8", "label 8 is not a basic expression code 1-7"),
    ("train_00003.jpg 0", "label 0 is not a basic expression code 1-7"),
    ("train_00003.jpg happy", "expected '<name> <label 1-7>'"),
    ("train_00001.jpg 4", "train_00001.jpg is listed twice"),
    ("train_0003.jpg 4", "'train_0003.jpg' is not train_NNNNN.jpg or test_NNNN.jpg"),
    ("../../train_00003.jpg 4", "'../../train_00003.jpg' is not train_NNNNN.jpg"),
    ("tráin_00003.jpg 4", "'tráin_00003.jpg' is not train_NNNNN.jpg"),
])
def test_bad_rows_name_file_and_line_and_are_counted_under_skip(sample, row, problem):
    raw, _ = sample
    edit(raw / LABELS, lambda t: t.replace("train_00003.jpg 4", row))
    with pytest.raises(pipeline.ConvertError, match=re.escape(f"rafdb: {LABELS} line 2: {problem}")):
        convert(raw)
    run = convert(raw, "skip")
    assert (len(run.records), len(run.failures), run.rows_read) == (6, 1, 7)


def test_truncated_last_line_is_an_error(sample):
    raw, _ = sample
    edit(raw / LABELS, lambda t: t[: -len(".jpg 7")])  # the file has no final newline: `test_3068`
    with pytest.raises(pipeline.ConvertError, match=f"{LABELS} line 7: expected '<name> <label 1-7>', got "
                                                     "'test_3068' \\(a truncated line\\?\\)"):
        convert(raw)


def test_the_compound_file_under_the_same_name_is_refused(sample):
    raw, _ = sample
    edit(raw / LABELS, lambda t: "train_0001.jpg 6\ntrain_0002.jpg 6\ntrain_0003.jpg 10")
    with pytest.raises(RawFormatError, match=f"{LABELS}:1: first row 'train_0001.jpg 6' names a compound-subset"):
        convert(raw)


def test_missing_label_file_names_it_and_the_download_page(sample):
    raw, _ = sample
    shutil.rmtree(raw / "basic/EmoLabel")
    with pytest.raises(RawFormatError, match=f"{LABELS} or EmoLabel/list_patition_label.txt: missing under .*"
                                             f"download page: {re.escape(rafdb.DOWNLOAD)}"):
        convert(raw)


# --- the real label files (../shared/raw/rafdb) ------------------------------------------------------------------

@pytest.mark.shared
def test_real_basic_file_converts_completely(shared_raw):
    run = convert(shared_raw / NAME)
    assert (run.rows_read, len(run.records), len(run.failures)) == (15_339, 15_339, 0)
    per = Counter((r.source_split, r.labels["expression"]) for r in run.records)
    # FORMATS.md 4.2 (counted): train/test per label 1..7
    want = dict(zip(("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"),
                    [(1_290, 329), (281, 74), (717, 160), (4_772, 1_185), (1_982, 478), (705, 162), (2_524, 680)]))
    assert per == {(s, w): n for w, pair in want.items() for s, n in zip(("train", "test"), pair)}


@pytest.mark.shared
def test_real_compound_excerpt_is_refused_as_a_whole(shared_raw, tmp_path):
    raw = tmp_path / NAME / "basic/EmoLabel"
    raw.mkdir(parents=True)
    shutil.copy(shared_raw / NAME / "compound/EmoLabel/list_patition_label.txt", raw)
    with pytest.raises(RawFormatError, match="compound list_patition_label.txt, not the basic one"):
        convert(tmp_path / NAME)

"""FairFace converter: the sample tree, Excel-mangled copies, broken files, and the real label files."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest

import rawfiles
from facecorpus.converters import pipeline
from facecorpus.converters.base import RawFormatError
from rawfiles import edit

NAME = "fairface"
TRAIN, VAL = "fairface_label_train.csv", "fairface_label_val.csv"


def convert(raw: Path, on_error: str = "raise") -> pipeline.DatasetRun:
    return rawfiles.convert(NAME, raw, on_error)


def test_sample_converts_to_what_it_promises(sample):
    raw, info = sample
    run = convert(raw)
    assert dict(Counter(r.source_split for r in run.records)) == info["splits"] == {"train": 5, "test": 4}
    assert {r.key: r.text for r in run.records if r.key in info["texts"]} == info["texts"]
    rec = run.records[-1]
    assert (rec.key, rec.image, rec.image_id, rec.photo_id, rec.bbox, rec.subject_id) == (
        "fairface/val-4/attributes/0", "val/4.jpg", "fairface/val-4", "fairface/val-4", None, None)
    assert rec.labels == {"age": "60-69", "gender": "female", "race": "white"}  # service_test stays out
    assert all((raw / r.image).is_file() for r in run.records)
    assert run.notes == [] and not run.failures


@pytest.mark.parametrize("form", ["crlf", "bom", "bom+crlf", "cr"])
def test_line_endings_and_bom_give_the_same_records(sample, form):
    raw, _ = sample
    want = rawfiles.rows(convert(raw))
    for name in (TRAIN, VAL):
        data = (raw / name).read_bytes()
        data = data.replace(b"\n", b"\r\n") if "crlf" in form else data.replace(b"\n", b"\r") if form == "cr" else data
        (raw / name).write_bytes((b"\xef\xbb\xbf" if "bom" in form else b"") + data)
    assert rawfiles.rows(convert(raw)) == want


def excel_round_trip(text: str, three_nine: str = "9-Mar", ten_nineteen: str = "19-Oct") -> str:
    """What saving the CSV from Excel does (tayo2910/gee, sumanvithaeadala/EthnicityDetection copies)."""
    text = text.replace(",3-9,", f",{three_nine},").replace(",10-19,", f",{ten_nineteen},")
    return re.sub(r",(True|False)\n", lambda m: f",{m[1].upper()}\n", text).replace("\n", "\r\n")


@pytest.mark.parametrize("three_nine, ten_nineteen", [("9-Mar", "19-Oct"), ("03-Sep", "Oct-19")])
def test_excel_mangled_age_bins_are_repaired_and_counted(sample, three_nine, ten_nineteen):
    raw, _ = sample
    want = rawfiles.rows(convert(raw))
    for name in (TRAIN, VAL):
        edit(raw / name, lambda t: excel_round_trip(t, three_nine, ten_nineteen))
    data = (raw / TRAIN).read_bytes()
    assert f",{ten_nineteen},".encode() in data and b",TRUE\r\n" in data
    run = convert(raw)
    assert rawfiles.rows(run) == want
    assert run.notes == [f"{TRAIN}: repaired 1 Excel-mangled age bins ({ten_nineteen} -> 10-19: 1)",
                         f"{VAL}: repaired 1 Excel-mangled age bins ({three_nine} -> 3-9: 1)"]


@pytest.mark.parametrize("row, problem", [
    ("train/2.jpg,Dec-02,Female,Indian,False", "age 'Dec-02' looks like an Excel date but its numbers match no"),
    ("train/2.jpg,43717,Female,Indian,False", "age '43717' is not a FairFace bin"),
    ("train/2.jpg,30-39,Female,Martian,False", "race 'Martian' is not one of White, Black, Latino_Hispanic"),
    ("train/2.jpg,30-39,female,Indian,False", "gender 'female' is not one of Male, Female"),
    ("train/2.jpg,30-39,Female,Indian,Maybe", "service_test 'Maybe' is not True or False"),
    ("../../etc/passwd,30-39,Female,Indian,False", "image path '../../etc/passwd' escapes the dataset's raw root"),
    ("train/2.png,30-39,Female,Indian,False", "file 'train/2.png' is not train/<n>.jpg or val/<n>.jpg"),
    ("train/2.jpg,30-39,Female", "expected 5 comma-separated fields"),
    ("train/1.jpg,30-39,Female,Indian,False", "file 'train/1.jpg' is listed twice"),
    ("val/2.jpg,30-39,Female,Indian,False", "file 'val/2.jpg' is not under train/ like the rest of this label file"),
])
def test_bad_rows_name_file_and_line_and_are_counted_under_skip(sample, row, problem):
    raw, info = sample
    edit(raw / TRAIN, lambda t: t.replace("train/2.jpg,30-39,Female,Indian,False", row))
    with pytest.raises(pipeline.ConvertError, match=re.escape(f"fairface: {TRAIN} line 3: {problem}")):
        convert(raw)
    run = convert(raw, "skip")
    assert (len(run.records), len(run.failures), run.rows_read) == (8, 1, 9)
    assert (run.failures[0].where.file, run.failures[0].where.line) == (TRAIN, 3)


def test_truncated_last_line_is_an_error(sample):
    raw, _ = sample
    edit(raw / VAL, lambda t: t.rstrip("\n").rsplit("\n", 1)[0] + "\nval/4.jpg,60-69,Fem")  # cut, no newline
    assert (raw / VAL).read_text().endswith("val/4.jpg,60-69,Fem")
    with pytest.raises(pipeline.ConvertError, match=f"{VAL} line 5: expected 5 comma-separated fields"):
        convert(raw)


def test_a_non_ascii_path_prefix_from_a_renamed_copy_is_refused_not_guessed(sample):
    raw, _ = sample
    edit(raw / TRAIN, lambda t: t.replace("train/4.jpg", "fairface/train/4.jpg").replace("train/5.jpg", "tráin/5.jpg"))
    run = convert(raw, "skip")  # `fairface/` (Fortunanto's copy) is accepted; anything else is an error
    assert "fairface/train-4/attributes/0" in {r.key for r in run.records}
    assert [f.problem for f in run.failures] == ["file 'tráin/5.jpg' is not train/<n>.jpg or val/<n>.jpg"]


def test_renamed_header_is_accepted_and_a_wrong_header_refused(sample):
    raw, _ = sample
    edit(raw / VAL, lambda t: t.replace("file,", "file_name,", 1))
    assert len(convert(raw).records) == 9
    edit(raw / VAL, lambda t: t.replace("file_name,age,gender,race", "file,gender,age,race", 1))
    with pytest.raises(RawFormatError, match=f"{VAL}:1: header 'file,gender,age,race,service_test' is not"):
        convert(raw)


# --- the real label files (../shared/raw/fairface) ---------------------------------------------------------------

@pytest.mark.shared
def test_real_files_convert_completely(shared_raw):
    run = convert(shared_raw / NAME)
    assert (run.rows_read, len(run.records), sum(run.filtered.values()), len(run.failures)) == (97_698, 97_698, 0, 0)
    splits = Counter(r.source_split for r in run.records)
    assert splits == {"train": 86_744, "test": 10_954}
    train = [r.labels for r in run.records if r.source_split == "train"]
    assert Counter(lab["age"] for lab in train) == {  # FORMATS.md 9.2, counted
        "0-2": 1_792, "3-9": 10_408, "10-19": 9_103, "20-29": 25_598, "30-39": 19_250, "40-49": 10_744,
        "50-59": 6_228, "60-69": 2_779, "more than 70": 842}
    assert Counter(lab["race"] for lab in train)["latino hispanic"] == 13_367
    assert Counter(lab["gender"] for lab in train) == {"male": 45_986, "female": 40_758}


@pytest.mark.shared
def test_real_val_file_survives_an_excel_round_trip(shared_raw, tmp_path):
    raw = tmp_path / NAME
    raw.mkdir()
    for name in (TRAIN, VAL):
        shutil.copy(shared_raw / NAME / name, raw / name)
    # Keep the test small: one train row (an empty or header-only label file is refused), all of val.
    (raw / TRAIN).write_text("file,age,gender,race,service_test\ntrain/1.jpg,20-29,Male,White,True\n")
    want = rawfiles.rows(convert(raw))
    edit(raw / VAL, excel_round_trip)
    run = convert(raw)
    assert rawfiles.rows(run) == want and len(want) == 1 + 10_954
    assert run.notes == [f"{VAL}: repaired 2,537 Excel-mangled age bins (19-Oct -> 10-19: 1,181, 9-Mar -> 3-9: 1,356)"]

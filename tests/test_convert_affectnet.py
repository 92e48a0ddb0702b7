"""AffectNet converter: the sample tree (codes 8-10 filtered), broken CSVs, and the real 2-row excerpt."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

import rawfiles
from facecorpus.converters import affectnet, pipeline
from facecorpus.converters.base import Context, RawFormatError
from facecorpus.converters.samples import affectnet as sample_tree
from rawfiles import HTML

NAME = "affectnet"
TRAIN = "Manually_Annotated_file_lists/training.csv"
VAL = "Manually_Annotated_file_lists/validation.csv"
ROW3 = "12/3b2e1a09ffcd2d1e88a77b1f6a1f0c3d5b2a4e6f7a8b9c0d1e2f3a4b.JPG"  # line 4 of training.csv: code 1


def convert(raw: Path, on_error: str = "raise") -> pipeline.DatasetRun:
    return rawfiles.convert(NAME, raw, on_error)


def edit_row(raw: Path, change) -> None:
    """Apply `change(fields) -> fields` to the training.csv row of ROW3."""
    lines = (raw / TRAIN).read_text().split("\n")
    i = next(i for i, line in enumerate(lines) if line.startswith(ROW3))
    lines[i] = ",".join(change(lines[i].split(",")))
    (raw / TRAIN).write_text("\n".join(lines))


def test_sample_converts_to_what_it_promises(sample):
    raw, info = sample
    run = convert(raw)
    assert dict(Counter(r.source_split for r in run.records)) == info["splits"] == {"train": 4, "test": 2}
    assert dict(run.filtered) == info["filtered"]  # codes 8, 9, 10: declared, counted by reason
    assert {r.key: r.text for r in run.records if r.key in info["texts"]} == info["texts"]
    assert {r.key: r.bbox for r in run.records if r.key in info["bboxes"]} == info["bboxes"]
    rec = run.records[2]
    assert (rec.image, rec.image_id, rec.text) == (
        f"Manually_Annotated_Images/{ROW3}", "affectnet/12-3b2e1a09ffcd2d1e88a77b1f6a1f0c3d5b2a4e6f7a8b9c0d1e2f3a4b",
        "affectnet expression: happy; valence: 0.815; arousal: 0.2")
    assert all((raw / r.image).is_file() for r in run.records) and run.notes == []


def test_codes_map_to_the_shared_expression_words():
    assert list(affectnet.EXPRESSION.values()) == ["neutral", "happy", "sad", "surprise", "fear", "disgust",
                                                   "anger", "contempt"]


@pytest.mark.parametrize("form", ["crlf", "bom", "bom+crlf", "no final newline", "extra empty line"])
def test_line_endings_and_bom_give_the_same_records(sample, form):
    raw, _ = sample
    want = rawfiles.rows(convert(raw))
    for name in (TRAIN, VAL):
        text = (raw / name).read_text()
        text = {"no final newline": text.rstrip("\n"), "extra empty line": text + "\n"}.get(form, text)
        data = text.replace("\n", "\r\n") if "crlf" in form else text
        (raw / name).write_bytes((b"\xef\xbb\xbf" if "bom" in form else b"") + data.encode())
    assert rawfiles.rows(convert(raw)) == want


def test_the_minus_two_sentinel_never_becomes_a_number(sample):
    raw, _ = sample
    edit_row(raw, lambda f: f[:7] + ["-2", "-2"])
    run = convert(raw)
    assert run.records[2].text == "affectnet expression: happy"
    assert run.notes == ["training.csv: 1 expression rows with the -2 valence/arousal sentinel, written without "
                         "valence/arousal ({'happy': 1})"]


def test_integral_valence_is_written_so_it_reads_back_as_text(sample):
    raw, _ = sample
    edit_row(raw, lambda f: f[:7] + ["1", "-1"])
    assert convert(raw).records[2].labels == {"expression": "happy", "valence": "1.000000", "arousal": "-1.000000"}


def test_a_filtered_code_is_filtered_whatever_its_other_fields(sample):
    raw, _ = sample
    edit_row(raw, lambda f: f[:1] + ["0", "0", "0", "0", ""] + ["10", "-2", "-2"])
    run = convert(raw)
    assert run.filtered["non-face (code 10)"] == 3 and len(run.records) == 5 and not run.failures


def test_non_ascii_image_paths_are_kept(sample):
    raw, _ = sample
    edit_row(raw, lambda f: ["12/visage_été.jpg"] + f[1:])
    assert convert(raw).records[2].image == "Manually_Annotated_Images/12/visage_été.jpg"


@pytest.mark.parametrize("change, problem", [
    (lambda f: f[:6] + ["11"] + f[7:], "expression code 11 is not one of 0-10"),
    (lambda f: f[:6] + ["happy"] + f[7:], "expression 'happy' is not an integer"),
    (lambda f: f[:7] + ["1.5"] + f[8:], "valence 1.5 is outside [-1, 1] and not the -2 sentinel"),
    (lambda f: f[:8] + ["n/a"], "arousal 'n/a' is not a number"),
    (lambda f: f[:3] + ["0"] + f[4:], "face box x=16 y=16 w=0 h=210 is empty or negative"),
    (lambda f: f[:5] + [f[5].rsplit(";", 1)[0]] + f[6:], "facial_landmarks has 135 numbers, expected 136"),
    (lambda f: ["../../../etc/passwd"] + f[1:], "image path 'Manually_Annotated_Images/../../../etc/passwd' escapes"),
    (lambda f: ["459/81456263be241927c7a59a2646f88c2700ce4b7cba6094570ec2b10c.jpg"] + f[1:], "is listed twice"),
    (lambda f: f[:6], "expected 9 comma-separated fields, got 6 (a truncated line?)"),
])
def test_bad_rows_name_file_and_line_and_are_counted_under_skip(sample, change, problem):
    raw, _ = sample
    edit_row(raw, change)
    with pytest.raises(pipeline.ConvertError, match=f"affectnet: {TRAIN} line 4: .*{re.escape(problem)}"):
        convert(raw)
    run = convert(raw, "skip")
    assert (len(run.records), len(run.failures), run.rows_read) == (5, 1, 10)


def test_truncated_last_line_is_an_error(sample):
    raw, _ = sample
    (raw / VAL).write_text((raw / VAL).read_text().rstrip("\n")[:-40])  # cut inside the landmarks
    with pytest.raises(pipeline.ConvertError, match=f"{VAL} line 4: expected 9 comma-separated fields, got 6"):
        convert(raw)


@pytest.mark.parametrize("content, line, problem", [
    (HTML, None, "is an HTML page"),
    (b"file,x,y,w,h\n", 1, "header 'file,x,y,w,h' is not 'subDirectory_filePath,"),
    (sample_tree.HEADER.encode() + b"\n1/a.jpg,1,1,2,2,,0,0.1,0.1\n12/\xff\xfe.jpg,1,1,2,2,,0,0.1,0.1\n", 3,
     "not UTF-8 text"),
])
def test_unusable_files_are_refused_as_a_whole(sample, content, line, problem):
    raw, _ = sample
    (raw / VAL).write_bytes(content)
    download = re.escape(affectnet.DOWNLOAD)
    at = f":{line}" if line else ""
    with pytest.raises(RawFormatError, match=f"{VAL}{at}: {problem}.*download page: {download}"):
        list(affectnet.rows(raw, Context(NAME, raw)))


def test_missing_files(sample):
    raw, _ = sample
    (raw / VAL).unlink()
    run = convert(raw)
    assert len(run.records) == 4 and run.notes == ["validation.csv is absent: only training.csv converted"]
    (raw / TRAIN).unlink()
    with pytest.raises(RawFormatError, match=f"training.csv and validation.csv: missing under .*download page: "
                                             f"{re.escape(affectnet.DOWNLOAD)}"):
        convert(raw)


# --- the real 2-row excerpt (../shared/raw/affectnet) ------------------------------------------------------------

@pytest.mark.shared
def test_real_excerpt_converts(shared_raw):
    run = convert(shared_raw / NAME)
    assert (run.rows_read, len(run.records), len(run.failures), dict(run.filtered)) == (2, 2, 0, {})
    assert [(r.text, r.bbox, r.source_split) for r in run.records] == [
        ("affectnet expression: contempt; valence: -0.65331; arousal: 0.65331", [147, 147, 1128, 1128], "train"),
        ("affectnet expression: neutral; valence: -0.176846; arousal: -0.0776398", [99, 99, 765, 765], "train")]
    assert run.records[0].image == ("Manually_Annotated_Images/459/"
                                    "81456263be241927c7a59a2646f88c2700ce4b7cba6094570ec2b10c.jpg")
    assert run.notes == ["validation.csv is absent: only training.csv converted"]

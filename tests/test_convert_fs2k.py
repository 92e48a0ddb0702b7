"""FS2K converter: the sample tree, inverted booleans, colour naming, broken files, the real annotations."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

import rawfiles
from facecorpus.colors import nearest_color
from facecorpus.converters import fs2k, pipeline
from facecorpus.converters.base import RawFormatError

NAME = "fs2k"
TRAIN, TEST = "anno_train.json", "anno_test.json"


def convert(raw: Path, on_error: str = "raise") -> pipeline.DatasetRun:
    return rawfiles.convert(NAME, raw, on_error)


def edit_entry(raw: Path, n: int, **changes) -> None:
    """Change entry `n` (1-based) of anno_train.json, keeping the one-line format."""
    entries = json.loads((raw / TRAIN).read_text())
    entries[n - 1].update(changes)
    (raw / TRAIN).write_text(json.dumps(entries))


def test_sample_converts_to_what_it_promises(sample):
    raw, info = sample
    run = convert(raw)
    assert dict(Counter(r.source_split for r in run.records)) == info["splits"] == {"train": 4, "test": 3}
    assert {r.key: r.text for r in run.records if r.key in info["texts"]} == info["texts"]
    rec = run.records[3]  # the download's one upper-case extension is found on disk
    assert (rec.image, rec.image_id, rec.bbox, rec.subject_id) == (
        "photo/photo3/image0449.JPG", "fs2k/photo3-image0449", None, None)
    assert all((raw / r.image).is_file() for r in run.records) and run.notes == []


def test_inverted_booleans_follow_the_readme(sample):
    raw, _ = sample
    # README: hair 0 = with hair, earring 0 = with earring, smile 0 = with smile, frontal_face 0 = within 30 degrees.
    edit_entry(raw, 1, hair=0, hair_color=1, earring=0, smile=0, frontal_face=0, gender=1)
    edit_entry(raw, 2, hair=1, hair_color=3, earring=1, smile=1, frontal_face=1, gender=0)
    one, two = (convert(raw).records[i].labels for i in (0, 1))
    assert {k: one[k] for k in ("hair", "earring", "smile", "frontal face", "gender")} == {
        "hair": True, "earring": True, "smile": True, "frontal face": True, "gender": "female"}
    assert {k: two[k] for k in ("hair", "hair color", "earring", "smile", "frontal face", "gender")} == {
        "hair": False, "hair color": "no hair", "earring": False, "smile": False, "frontal face": False,
        "gender": "male"}


def test_colour_words_agree_with_nearest_color(sample):
    raw, _ = sample
    entries = json.loads((raw / TRAIN).read_text()) + json.loads((raw / TEST).read_text())
    for e in entries:
        assert fs2k.color(e, "lip_color") == nearest_color(e["lip_color"])
        assert fs2k.color(e, "eye_color") == nearest_color(e["eye_color"])
    assert fs2k.color({"c": [188, 143, 142]}, "c") == "rosy brown"  # the design's example


def test_without_photos_the_extension_is_assumed_and_noted(sample):
    raw, _ = sample
    for path in sorted((raw / "photo").rglob("*.*")):
        path.unlink()
    run = convert(raw, "skip")  # photo/ still exists: every image is missing
    assert len(run.failures) == 7 and run.failures[0].problem.startswith("no image photo/photo1/image0110.{jpg,png")
    for path in sorted((raw / "photo").glob("*")):
        path.rmdir()
    (raw / "photo").rmdir()
    run = convert(raw)
    assert run.records[3].image == "photo/photo3/image0449.jpg"
    assert run.notes == ["no photo/ folder: image paths assume .jpg (the download has photo3/image0449.JPG)"]


@pytest.mark.parametrize("form", ["crlf final newline", "bom", "pretty-printed"])
def test_line_endings_bom_and_layout_give_the_same_records(sample, form):
    raw, _ = sample
    want = rawfiles.rows(convert(raw))
    for name in (TRAIN, TEST):
        text = (raw / name).read_text()
        text = json.dumps(json.loads(text), indent=2).replace("\n", "\r\n") if form == "pretty-printed" else text
        data = text + "\r\n" if form == "crlf final newline" else text
        (raw / name).write_bytes((b"\xef\xbb\xbf" if form == "bom" else b"") + data.encode())
    assert rawfiles.rows(convert(raw)) == want


@pytest.mark.parametrize("changes, problem", [
    ({"hair_color": 5}, "hair_color = 5 is not one of the codes [0, 1, 2, 3, 4]"),
    ({"gender": 2}, "gender = 2 is not one of the codes [0, 1]"),
    ({"smile": True}, "smile = True is not one of the codes [0, 1]"),
    ({"style": 3}, "style = 3 is not one of the codes [0, 1, 2]"),
    ({"hair": 1, "hair_color": 2}, "hair = 1 (0 = with hair) contradicts hair_color = 2 (3 = no hair)"),
    ({"lip_color": [300.0, 1.0, 2.0]}, "lip_color = [300.0, 1.0, 2.0] is not an [R, G, B] list of numbers"),
    ({"eye_color": [float("nan"), 1.0, 2.0]}, "eye_color = [nan, 1.0, 2.0] is not an [R, G, B] list"),
    ({"image_name": "../../etc/passwd"}, "image path '../../etc/passwd' escapes the dataset's raw root"),
    ({"image_name": "photo1/imagé0110"}, "image_name 'photo1/imagé0110' is not photoK/imageNNNN"),
    ({"skin_patch": [1, 2]}, "expected an object with the keys image_name, skin_color"),
])
def test_bad_entries_name_file_and_entry_and_are_counted_under_skip(sample, changes, problem):
    raw, _ = sample
    edit_entry(raw, 2, **changes)
    with pytest.raises(pipeline.ConvertError, match=re.escape(f"fs2k: {TRAIN} line 2: {problem}")):
        convert(raw)
    run = convert(raw, "skip")
    assert (len(run.records), len(run.failures), run.rows_read) == (6, 1, 7)


def test_truncated_file_is_refused_as_a_whole(sample):
    raw, _ = sample
    (raw / TEST).write_text((raw / TEST).read_text()[:-30])  # one line: no entry of a cut array can be trusted
    with pytest.raises(RawFormatError, match=f"{TEST}:1: not valid JSON .*a truncated download"):
        convert(raw)


# --- the real annotation files (../shared/raw/fs2k) --------------------------------------------------------------

@pytest.mark.shared
def test_real_files_convert_completely(shared_raw):
    run = convert(shared_raw / NAME)
    assert (run.rows_read, len(run.records), len(run.failures)) == (2_104, 2_104, 0)
    assert Counter(r.source_split for r in run.records) == {"train": 1_058, "test": 1_046}
    test_hair = Counter(r.labels["hair color"] for r in run.records if r.source_split == "test")
    assert (test_hair["brown"], test_hair["black"]) == (290, 418)  # FORMATS.md 2.3 (README says 291 / 417)
    assert all(r.labels["hair"] == (r.labels["hair color"] != "no hair") for r in run.records)
    assert run.records[0].text == ("fs2k gender: male; hair: true; hair color: red; lip color: sienna; eye color: "
                                   "sienna; earring: false; smile: false; frontal face: false")
    assert len({r.image_id for r in run.records}) == 2_104


@pytest.mark.shared
def test_real_colours_agree_with_nearest_color(shared_raw):
    entries = json.loads((shared_raw / NAME / TEST).read_text())[::10]  # every tenth: nearest_color is slow
    assert all(fs2k.color(e, k) == nearest_color(e[k]) for e in entries for k in ("lip_color", "eye_color"))

"""CelebA-Dialog converter on its documented layout (no real file may be stored): degrees to words,
captions, the HQ mapping, and the error cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import rawfiles
from facecorpus.converters import celebadialog, celebahq, pipeline
from facecorpus.converters.base import RawFormatError
from facecorpus.converters.samples import celebadialog as sample
from facecorpus.converters.samples import celebahq as hq_sample
from facecorpus.records import validate

OFF = "attribute-wise caption (attribute_captions=false)"
EMPTY = "empty or null caption"


@pytest.fixture
def raw(tmp_path) -> Path:
    sample.write(tmp_path / "celebadialog", seed=0)
    hq_sample.write(tmp_path / "celebahq", seed=0)
    return tmp_path / "celebadialog"


def convert(raw: Path, on_error: str = "raise", mapping: bool = True, **sets) -> pipeline.DatasetRun:
    path = raw.parent / "celebahq" / celebahq.MAPPING
    return rawfiles.convert("celebadialog", raw, on_error, celebahq.read_mapping(path) if mapping else None, **sets)


def test_sample_default_overall_captions_only(raw):
    run = convert(raw)
    counts = run.summary(raw.parent / "m")
    assert (counts.raw_dir, counts.rows_read, counts.records, counts.filtered, counts.errors, counts.notes) == (
        "../celebadialog", 86, 20, {OFF: 65, EMPTY: 1}, 0,
        ["request*.json files are editing requests, not captions: not converted",
         "text/captions_hq.json lacks 1 of the CelebA-HQ images 0.jpg..5.jpg: 3.jpg"])
    by_key = {r.key: r for r in run.records}
    first = by_key["celebadialog/000001/attributes/0"]
    assert first.text == ("celebadialog bangs: extremely long; eyeglasses: thick frame eyeglasses; beard: medium; "
                          "smile: slight; age: teenager")
    assert (first.image, first.image_id, first.photo_id, first.subject_id, first.source_split) == \
        ("img_align_celeba/000001.jpg", "celeba/000001", "celeba/000001", None, None)
    cap = by_key["celebadialog/000001/caption/0"]
    assert cap.text == ("This is a teenager. The corners of the mouth turn up a little. "
                        "Extremely long bangs cover the entire forehead.") and cap.kind == "caption"
    hq = by_key["celebadialog/hq-4/caption/0"]
    mapping = celebahq.read_mapping(raw.parent / "celebahq" / celebahq.MAPPING)
    assert (hq.image, hq.image_id, hq.photo_id) == ("image/4.jpg", "celebahq/4", mapping["celebahq/4"])
    assert "celebadialog/000007/caption/0" not in by_key  # its overall caption is ""
    for rec in run.records:
        validate(rec)
        assert (raw / rec.image).is_file()


def test_attribute_captions_option(raw):
    run = convert(raw, attribute_captions="true")
    info = sample.write(raw.parent / "again", seed=0)
    assert len(run.records) == info["attributes"] + info["overall"] + info["attribute_wise"] == 83
    assert dict(run.filtered) == {EMPTY: 3}
    keys = {r.key: r for r in run.records}
    assert "celebadialog/000002/caption/3" not in keys  # No_Beard "" for a woman
    assert "celebadialog/000005/caption/2" not in keys  # Eyeglasses null
    assert keys["celebadialog/hq-5/caption/5"].labels == {"attribute": "age"}


def test_degrees_become_words_with_celeba_opposite_directions(raw):
    info = sample.write(raw.parent / "again", seed=0)
    run = convert(raw)
    attrs = [r for r in run.records if r.kind == "attributes"]
    for rec, row in zip(attrs, info["degrees"].tolist()):
        assert [celebadialog.SCALES[c][1].index(v) for c, v in zip(celebadialog.SCALES, rec.labels.values())] == row
    # No_Beard 0 is no beard and Young 0 a child: the reverse of CelebA's binary No_Beard / Young.
    assert celebadialog.SCALES["No_Beard"][0] == "beard" and celebadialog.SCALES["No_Beard"][1][0] == "none"
    assert celebadialog.SCALES["Young"][0] == "age" and celebadialog.SCALES["Young"][1][0] == "child"
    assert [r.labels["beard"] for r in attrs][:2] == ["medium", "none"]


def test_crlf_bom_and_non_ascii_accepted(raw):
    ann = raw / "combined_annotation.txt"
    ann.write_bytes(b"\xef\xbb\xbf" + ann.read_bytes().replace(b"\n", b"\r\n"))
    caps = json.loads((raw / "captions.json").read_text())
    caps["000001.jpg"]["overall_caption"] = "Une personne âgée, sourire léger."
    (raw / "captions.json").write_text(json.dumps(caps, ensure_ascii=False), encoding="utf-8")
    run = convert(raw)
    assert len(run.records) == 20
    assert {r.key: r.text for r in run.records}["celebadialog/000001/caption/0"] == "Une personne âgée, sourire léger."


def test_column_order_follows_header(raw):
    ann = raw / "combined_annotation.txt"
    rows = [line.split() for line in ann.read_text().splitlines()]
    ann.write_text("\n".join(" ".join([r[0], *reversed(r[1:])]) for r in rows) + "\n")
    assert convert(raw).records[0].labels["bangs"] == "extremely long"


@pytest.mark.parametrize(("rel", "body", "message"), [
    ("combined_annotation.txt", "<!DOCTYPE html><html><body>Sign in</body></html>", "HTML page"),
    ("combined_annotation.txt", "img_name Bangs Eyeglasses Beard Smiling Young\n000001.jpg 0 0 0 0 0\n",
     "combined_annotation.txt:1: expected the header"),
    ("captions.json", '{"000001.jpg": {"overall_caption": "x"},\n', "captions.json:2: not JSON"),
    ("captions.json", '["000001.jpg"]', "expected an object keyed by image name"),
])
def test_refused_files(raw, rel, body, message):
    (raw / rel).write_text(body)
    with pytest.raises(RawFormatError, match=message):
        convert(raw)


@pytest.mark.parametrize(("edit", "problem"), [
    (("combined_annotation.txt", "000003.jpg 3 5 3 3 5", "000003.jpg 3 5 3 6 5"),
     "Smiling is '6', expected a degree 0..5"),
    (("combined_annotation.txt", "000008.jpg 3 0 1 2 2\n", "000008.jpg 3 0"), "expected 6 fields"),   # truncated
    (("combined_annotation.txt", "000003.jpg", "../../etc.jpg"), "is not a CelebA file name"),
    (("combined_annotation.txt", "000003.jpg", "000002.jpg"), "000002.jpg is listed again"),
    (("captions.json", '"000003.jpg"', '"../000003.jpg"'), "is not a CelebA image name"),
    (("captions.json", '"000003.jpg"', '"00000é.jpg"'), "is not a CelebA image name"),
    (("text/captions_hq.json", '"5.jpg"', '"20.jpg"'), "celebahq/20 is not in the CelebA-HQ mapping"),
    (("text/captions_hq.json", '"5.jpg"', '"30000.jpg"'), "is not a CelebA-HQ image name"),
])
def test_bad_rows_raise_or_are_ledgered(raw, edit, problem):
    rel, old, new = edit
    text = (raw / rel).read_text(encoding="utf-8")
    assert old in text
    (raw / rel).write_text(text.replace(old, new, 1), encoding="utf-8")
    with pytest.raises(pipeline.ConvertError, match=rel.replace(".", r"\.")):
        convert(raw)
    run = convert(raw, "skip")
    assert len(run.failures) == 1 and problem in run.failures[0].problem
    # A bad line is one row; a bad JSON entry is one row instead of its six captions: counts still add up.
    assert run.rows_read == (81 if rel.endswith(".json") else 86)


def test_hq_needs_the_mapping(raw):
    with pytest.raises(RawFormatError, match="CelebA-HQ-to-CelebA-mapping.txt"):
        convert(raw, mapping=False)


def test_missing_files_name_them_and_the_download(tmp_path):
    with pytest.raises(RawFormatError, match=f"combined_annotation.txt or captions.json.*{celebadialog.DOWNLOAD}"):
        convert(tmp_path / "celebadialog", mapping=False)


def test_same_file_in_two_folders_is_ambiguous(raw):
    (raw / "a").mkdir()
    (raw / "b").mkdir()
    (raw / "text" / "captions_hq.json").rename(raw / "a" / "captions_hq.json")
    (raw / "b" / "captions_hq.json").write_text("{}")
    with pytest.raises(RawFormatError, match="found in several folders"):
        convert(raw)


def test_label_and_caption_files_disagree_is_noted(raw):
    caps = json.loads((raw / "captions.json").read_text())
    del caps["000008.jpg"]
    caps["000099.jpg"] = caps["000001.jpg"]
    (raw / "captions.json").write_text(json.dumps(caps))
    run = convert(raw)
    assert "1 images of combined_annotation.txt have no entry in captions.json, 1 entries of captions.json " \
           "no row in combined_annotation.txt" in run.notes


def test_repeated_degrees_reuse_text_but_not_ids(raw):
    ann = raw / "combined_annotation.txt"
    ann.write_text(ann.read_text() + "000011.jpg 5 3 3 1 1\n")  # the degrees of 000001.jpg
    attrs = [r for r in convert(raw).records if r.kind == "attributes"]
    first, again = attrs[0], attrs[-1]
    assert (again.key, again.image, again.image_id, again.photo_id) == \
        ("celebadialog/000011/attributes/0", "img_align_celeba/000011.jpg", "celeba/000011", "celeba/000011")
    assert again.text == first.text and again.labels == first.labels and again.labels is not first.labels
    validate(again)

"""CelebA converter: the sample in both layouts, the pitfalls of FORMATS.md 1.4, and the real files."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from facecorpus import textproto
from facecorpus.converters import celeba, pipeline, registry
from facecorpus.converters.base import Context, RawFormatError
from facecorpus.converters.samples import celeba as sample
from facecorpus.records import validate

# The sample's first row: its drawn attributes (hair, glasses, beard, ...) are coherent, the rest random.
ROW1 = ("celeba gender: male; 5 o clock shadow: false; arched eyebrows: true; attractive: true; "
        "bags under eyes: true; bald: false; bangs: false; big lips: false; big nose: false; black hair: false; "
        "blond hair: false; blurry: false; brown hair: true; bushy eyebrows: false; chubby: true; "
        "double chin: false; eyeglasses: false; goatee: false; gray hair: false; heavy makeup: true; "
        "high cheekbones: false; mouth slightly open: true; mustache: false; narrow eyes: false; no beard: true; "
        "oval face: false; pale skin: false; pointy nose: false; receding hairline: false; rosy cheeks: false; "
        "sideburns: false; smiling: false; straight hair: true; wavy hair: false; wearing earrings: false; "
        "wearing hat: false; wearing lipstick: false; wearing necklace: false; wearing necktie: false; young: false")


def convert(raw: Path, on_error: str = "raise") -> pipeline.DatasetRun:
    return pipeline.run_dataset("celeba", raw, Context("celeba", raw, registry.options("celeba", {})), on_error)


@pytest.mark.parametrize("layout", ["flat", "official"])
def test_sample(tmp_path, layout):
    info = sample.write(tmp_path, seed=0, layout=layout)
    run = convert(tmp_path)
    assert len(run.records) == 12 and run.notes == []
    assert Counter(r.source_split for r in run.records) == info["splits"] == {"train": 6, "val": 3, "test": 3}
    first, last = run.records[0], run.records[-1]
    assert first.text == ROW1 and first.key == "celeba/000001/attributes/0"
    assert (first.image_id, first.photo_id, first.subject_id, first.bbox) == \
        ("celeba/000001", "celeba/000001", "celeba-id/2880", None)
    assert first.image == ("Img/" if layout == "official" else "") + "img_align_celeba/000001.jpg"
    assert (last.key, last.subject_id, last.source_split) == ("celeba/000012/attributes/0", "celeba-id/6369", "test")
    for rec, values in zip(run.records, info["values"].tolist()):
        validate(rec)  # the template text is exactly what the protocol writes
        assert textproto.from_text(rec.text) == ("celeba", rec.labels)
        flags = dict(zip(celeba.ATTRIBUTES, (v == 1 for v in values)))
        assert rec.labels["gender"] == ("male" if flags["Male"] else "female")
        assert rec.labels["wearing hat"] is flags["Wearing_Hat"]
        assert rec.labels["5 o clock shadow"] is flags["5_o_Clock_Shadow"]
        assert (tmp_path / rec.image).is_file()


def edit(raw: Path, rel: str, fn) -> None:
    path = raw / rel
    path.write_bytes(fn(path.read_bytes()))


def test_lf_and_bom_accepted(tmp_path):
    sample.write(tmp_path)
    edit(tmp_path, "list_attr_celeba.txt", lambda b: b"\xef\xbb\xbf" + b.replace(b"\r\n", b"\n"))
    edit(tmp_path, "list_eval_partition.txt", lambda b: b.replace(b"\r\n", b"\n"))
    assert convert(tmp_path).records[0].text == ROW1


@pytest.mark.parametrize(("rel", "body", "message"), [
    ("list_attr_celeba.txt", b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>", "HTML page"),
    ("list_attr_celeba.txt", b"image_id 5_o_Clock_Shadow\r\n000001.jpg -1\r\n", "not the image count"),
    ("list_attr_celeba.txt", b"2\r\nAttr_1 Attr_2\r\n000001.jpg -1  1\r\n", "expected CelebA's 40 attribute names"),
    ("list_eval_partition.txt", b"000001.jpg 0\r\n000002.jpg 3\r\n", "list_eval_partition.txt:2: unknown value '3'"),
    ("list_eval_partition.txt", b"000001.jpg 0\r\n000001.jpg 1\r\n",
     "list_eval_partition.txt:2: 000001.jpg is listed twice"),
    ("identity_CelebA.txt", b"path label\r\n000001.jpg 2880\r\n",  # a rewritten copy with a header
     "identity_CelebA.txt:1: expected '<NNNNNN.jpg> <value>'"),
])
def test_refused_files(tmp_path, rel, body, message):
    sample.write(tmp_path)
    (tmp_path / rel).write_bytes(body)
    with pytest.raises(RawFormatError, match=message):
        convert(tmp_path)


@pytest.mark.parametrize("rel", ["list_attr_celeba.txt", "identity_CelebA.txt", "list_eval_partition.txt"])
def test_missing_file_names_file_and_download(tmp_path, rel):
    sample.write(tmp_path)
    (tmp_path / rel).unlink()
    with pytest.raises(RawFormatError, match=f"{rel}.*missing.*{celeba.DOWNLOAD}"):
        convert(tmp_path)


@pytest.mark.parametrize(("change", "problem"), [
    (lambda b: b[:-60], "000012.jpg: expected 40 values, found"),                       # truncated last line
    (lambda b: b.replace(b"000003.jpg -1", b"000003.jpg  0", 1).replace(b"000003.jpg  1", b"000003.jpg  0", 1),
     "000003.jpg: 5_o_Clock_Shadow is '0', expected -1 or 1"),                           # unknown label code
    (lambda b: b.replace(b"000003.jpg", "00000é.jpg".encode(), 1), "is not NNNNNN.jpg"),  # non-ASCII name
    (lambda b: b.replace(b"000003.jpg", b"../../x.jpg", 1), "is not NNNNNN.jpg"),       # escaping the raw root
    (lambda b: b.replace(b"000003.jpg", b"000013.jpg", 1), "000013.jpg is missing from identity_CelebA.txt"),
    (lambda b: b.replace(b"000012.jpg", b"000002.jpg", 1), "000002.jpg is listed again (first on line 4)"),
])
def test_bad_rows_raise_or_are_ledgered(tmp_path, change, problem):
    sample.write(tmp_path)
    edit(tmp_path, "list_attr_celeba.txt", change)
    with pytest.raises(pipeline.ConvertError, match=r"list_attr_celeba.txt line (5|14): ") as err:
        convert(tmp_path)
    assert problem in str(err.value)
    run = convert(tmp_path, "skip")
    assert len(run.records) == 11 and len(run.failures) == 1 and problem in run.failures[0].problem


def test_partition_and_identity_readers(tmp_path):
    sample.write(tmp_path)
    part = celeba.read_partition(tmp_path / "list_eval_partition.txt")
    assert part["celeba/000001"] == "train" and part["celeba/000009"] == "val" and part["celeba/000012"] == "test"
    assert celeba.read_identity(tmp_path / "identity_CelebA.txt")["000007.jpg"] == "4153"


@pytest.mark.shared
def test_real_files(shared_raw):
    raw = shared_raw / "celeba"
    part = celeba.read_partition(raw / "list_eval_partition.txt")
    assert Counter(part.values()) == {"train": 162_770, "val": 19_867, "test": 19_962}
    identity = celeba.read_identity(raw / "identity_CelebA.txt")
    assert len(identity) == 202_599 and len(set(identity.values())) == 10_177
    # Identity-disjoint partition: 8,192 / 985 / 1,000 identities per split (FORMATS.md 1.3).
    per_split = {s: {identity[f"{p[7:]}.jpg"] for p, v in part.items() if v == s} for s in ("train", "val", "test")}
    assert {s: len(ids) for s, ids in per_split.items()} == {"train": 8_192, "val": 985, "test": 1_000}
    run = convert(raw)
    assert len(run.records) == 19_999 and len(run.failures) == 0 and not run.filtered
    assert Counter(r.source_split for r in run.records) == {"train": 19_999}  # the excerpt is 000001..019999
    assert run.notes == [
        "list_attr_celeba.txt announces 202,599 images on line 1 but has 19,999 rows (an excerpt?)",
        "identity_CelebA.txt lists 182,600 images missing from list_attr_celeba.txt",
        "list_eval_partition.txt lists 182,600 images missing from list_attr_celeba.txt",
    ]
    assert run.records[0].labels["gender"] == "female" and run.records[0].subject_id == "celeba-id/2880"

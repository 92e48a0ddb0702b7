"""CACD: the sample .mat converts exactly; broken files and rows fail with the file, entry and problem."""

import re
import unicodedata
from collections import Counter

import numpy as np
import pytest
import scipy.io

from facecorpus.converters import cacd, matfile, pipeline, registry
from facecorpus.converters.base import Context, RawFormatError
from facecorpus.converters.samples import cacd as sample

META = "celebrity2000_meta.mat"


def convert(raw, on_error="raise"):
    return pipeline.run_dataset("cacd", raw, Context("cacd", raw, registry.options("cacd", {})), on_error)


def write_meta(raw, images):
    raw.mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(raw / META, sample.meta(images=images), do_compression=True)


def test_sample_converts_exactly(tmp_path):
    expected = sample.write(tmp_path)
    run = convert(tmp_path)
    assert (run.rows_read, len(run.records), run.filtered, run.failures) == (7, expected["records"], Counter(), [])
    assert {r.source_split for r in run.records} == {None}  # CACD has no split
    texts = {r.key: r.text for r in run.records}
    assert {k: texts[k] for k in expected["texts"]} == expected["texts"]
    assert Counter(r.subject_id for r in run.records) == expected["subjects"]
    first = run.records[0]
    assert (first.image, first.image_id, first.photo_id, first.labels, first.bbox) == (
        "CACD2000/53_Robin_Williams_0001.jpg", "cacd/53_Robin_Williams_0001", "cacd/53_Robin_Williams_0001",
        {"age": 53}, None)
    for r in run.records:  # every record points at an image the sample wrote
        assert (tmp_path / r.image).is_file()


def test_non_ascii_names_kept_as_spelled(tmp_path):
    sample.write(tmp_path)
    rec = next(r for r in convert(tmp_path).records if "Skarsg" in r.key)
    assert rec.image == "CACD2000/53_Stellan_Skarsgård_0001.jpg"
    assert rec.key == "cacd/53_Stellan_Skarsgård_0001/attributes/0"
    assert rec.subject_id == "person/stellan skarsgård"


def test_person_id_is_shared_spelling():
    assert matfile.person_id("Robert_Downey_Jr.") == matfile.person_id("Robert Downey Jr.") == "person/robert downey jr"
    assert matfile.person_id("Sinéad_O'Connor") == "person/sinéad o connor"
    assert matfile.person_id("") is None


BAD_ROWS = [
    ((54, 1, 2004, 1, 1, 1951, "53_Robin_Williams_0009.jpg"), "age 54 disagrees with the file name"),
    ((53, 1, 2005, 1, 1, 1951, "53_Robin_Williams_0009.jpg"), "or year 2005 - birth 1951"),
    ((53, 9, 2004, 1, 1, 1951, "53_Nobody_0001.jpg"), "identity 9 has no named celebrity"),
    ((53, 1, 2004, 1, 1, 1951, "53_Robin_Williams.jpg"), "is not <age>_<First>_<Last>_<NNNN>.jpg"),
    ((53, 1, 2004, 1, 1, 1951, "53_../../Robin_0001.jpg"), "is not <age>_<First>_<Last>_<NNNN>.jpg"),
    ((53, 1, 2004, 1, 1, 1951, ""), "the name cell holds no file name"),
]


@pytest.mark.parametrize(("row", "problem"), BAD_ROWS, ids=["age", "year", "identity", "counter", "escape", "empty"])
def test_bad_row_names_entry_and_problem(tmp_path, row, problem):
    write_meta(tmp_path, [*sample.IMAGES[:2], row, sample.IMAGES[2]])
    with pytest.raises(pipeline.ConvertError, match=f"cacd: {META} line 3: .*{re.escape(problem)}"):
        convert(tmp_path)
    run = convert(tmp_path, "skip")  # under skip the row is ledgered and the others convert
    assert (run.rows_read, len(run.records), len(run.failures)) == (4, 3, 1)
    assert run.failures[0].where.line == 3 and problem in run.failures[0].problem


def test_missing_file_names_it_and_the_download_page(tmp_path):
    with pytest.raises(RawFormatError, match=rf"{META} or celebrity2000.mat: missing .*{cacd.DOWNLOAD}"):
        convert(tmp_path)


def test_full_file_with_features_is_accepted(tmp_path):
    meta = sample.meta()
    meta["celebrityImageData"]["feature"] = np.ones((len(sample.IMAGES), 16), np.uint8)
    scipy.io.savemat(tmp_path / "celebrity2000.mat", meta)
    assert len(convert(tmp_path).records) == len(sample.IMAGES)


@pytest.mark.parametrize(("content", "problem"), [
    (b"<!DOCTYPE html><html><head><title>Google Drive</title></head></html>", "is an HTML page"),
    ("truncated", "is not a readable MATLAB 5 file"),
    ("no-struct", "has no variable 'celebrityData'"),
    ("no-field", "struct lacks the field\\(s\\) age"),
])
def test_unusable_file_is_refused(tmp_path, content, problem):
    sample.write(tmp_path)
    path = tmp_path / META
    if content == "truncated":
        path.write_bytes(path.read_bytes()[:-40])
    elif content == "no-struct":
        scipy.io.savemat(path, {"celebrityImageData": sample.meta()["celebrityImageData"]})
    elif content == "no-field":
        meta = sample.meta()
        del meta["celebrityImageData"]["age"]
        scipy.io.savemat(path, meta)
    else:
        path.write_bytes(content)
    with pytest.raises(RawFormatError, match=f"{META}: {problem}.*{cacd.DOWNLOAD}"):
        convert(tmp_path)


@pytest.mark.shared
@pytest.mark.slow
def test_real_meta_file(shared_raw):
    """FORMATS.md 6.2: 163,446 images of 2,000 celebrities, 2,071 non-ASCII file names, ages 14..62."""
    run = convert(shared_raw / "cacd")
    assert (run.rows_read, len(run.records), sum(run.filtered.values()), len(run.failures)) == (163446, 163446, 0, 0)
    assert len({r.subject_id for r in run.records}) == 2000
    assert sum(not r.image.isascii() for r in run.records) == 2071
    ages = [r.labels["age"] for r in run.records]
    assert (min(ages), max(ages)) == (14, 62)
    assert run.records[0].text == "cacd age: 53" and run.records[0].subject_id == "person/robin williams"


def test_nfd_file_names_on_disk_are_found_and_missing_images_noted(tmp_path):
    sample.write(tmp_path)
    nfc = "54_Stellan_Skarsgård_0003.jpg"
    nfd = unicodedata.normalize("NFD", nfc)
    (tmp_path / "CACD2000" / nfc).rename(tmp_path / "CACD2000" / nfd)  # as a macOS tar stores it
    (tmp_path / "CACD2000" / "62_Robin_Williams_0001.jpg").unlink()
    run = convert(tmp_path)
    rec = next(r for r in run.records if "Skarsgård_0003" in r.key)
    assert rec.image == f"CACD2000/{nfd}" and (tmp_path / rec.image).is_file()
    assert rec.key == f"cacd/{nfc[:-4]}/attributes/0"  # keys stay NFC
    assert run.notes == [f"{META} lists 1 images that are not in CACD2000/ (records kept)"]

"""AFAD: listing or folder walk give the same records; Thumbs.db is noted, never a row; bad lines name the line."""

import re
from collections import Counter

import pytest

import rawfiles
from facecorpus.converters import afad, pipeline
from facecorpus.converters.base import RawFormatError
from facecorpus.converters.samples import afad as sample

LISTING = "AFAD-Full/AFAD-Full.txt"


def convert(raw, on_error="raise"):
    return rawfiles.convert("afad", raw, on_error)


def write_listing(raw, text: str, encoding="ascii", bom=b""):
    (raw / LISTING).write_bytes(bom + text.encode(encoding))


def test_sample_converts_exactly(tmp_path):
    expected = sample.write(tmp_path)
    run = convert(tmp_path)
    assert (run.rows_read, len(run.records), run.filtered, run.failures) == (7, expected["records"], Counter(), [])
    texts = {r.key: r.text for r in run.records}
    assert {k: texts[k] for k in expected["texts"]} == expected["texts"]
    assert {(r.source_split, r.subject_id, r.bbox) for r in run.records} == {(None, None, None)}
    assert run.notes == [f"rows come from the listing {LISTING}", "2 non-image files ignored (not rows): Thumbs.db: 2"]
    for r in run.records:
        assert (tmp_path / r.image).is_file() and r.image_id == "afad/" + r.key.split("/")[1]


def test_id_under_both_genders_gives_two_records(tmp_path):
    sample.write(tmp_path)
    same = [r for r in convert(tmp_path).records if "278878" in r.key]
    assert [(r.image, r.labels["gender"]) for r in same] == [("AFAD-Full/15/111/278878-0.jpg", "male"),
                                                            ("AFAD-Full/15/112/278878-1.jpg", "female")]


def test_folder_walk_without_listing_gives_the_same_records(tmp_path):
    sample.write(tmp_path)
    listed = convert(tmp_path)
    (tmp_path / LISTING).unlink()
    walked = convert(tmp_path)
    assert sorted(map(str, rawfiles.rows(walked))) == sorted(map(str, rawfiles.rows(listed)))
    assert [r.key for r in walked.records][:3] == ["afad/15-111-109008-0/attributes/0",
                                                   "afad/15-111-278878-0/attributes/0",
                                                   "afad/15-112-278878-1/attributes/0"]  # numeric folder order
    assert walked.notes == ["rows come from a walk of AFAD-Full/ (no AFAD-Full/AFAD-Full.txt)",
                            "2 non-image files ignored (not rows): Thumbs.db: 2"]


def test_listing_and_disk_disagreements_are_noted(tmp_path):
    sample.write(tmp_path)
    (tmp_path / "AFAD-Full/72/111/855329-0.jpg").unlink()
    (tmp_path / "AFAD-Full/72/111/999999-0.jpg").write_bytes(b"\xff\xd8")
    run = convert(tmp_path)
    assert len(run.records) == 7  # the listing decides the rows
    assert run.notes[2:] == [f"{LISTING} lists 1 images that are not on disk",
                             f"1 image files on disk are not in {LISTING} (not converted)"]


@pytest.mark.parametrize(("newline", "bom"), [("\n", b""), ("\r\n", b""), ("\n", b"\xef\xbb\xbf")],
                         ids=["LF", "CRLF", "BOM"])
def test_line_endings_and_bom_accepted(tmp_path, newline, bom):
    sample.write(tmp_path)
    write_listing(tmp_path, "".join(f"{line}{newline}" for line in sample.LISTING), bom=bom)
    run = convert(tmp_path)
    assert (len(run.records), run.records[0].key) == (7, "afad/15-111-109008-0/attributes/0")


BAD_LINES = [
    ("./72/112/858972-0.jp", "is not <age>/<111|112>/<id>-<k>.jpg"),   # a truncated last line, no newline
    ("./30/113/100000-0.jpg", "gender folder '113' is neither 111 (male) nor 112 (female)"),
    ("./../15/111/109008-0.jpg", "is not <age>/<111|112>/<id>-<k>.jpg"),  # would escape the raw root
    ("./abc/111/109008-0.jpg", "is not <age>/<111|112>/<id>-<k>.jpg"),
    ("./0/111/109008-9.jpg", "age folder '0' is not an age"),
    ("./15/111/109008-0.jpg", "15/111/109008-0.jpg is listed again (first at AFAD-Full/AFAD-Full.txt:1)"),
]


@pytest.mark.parametrize(("line", "problem"), BAD_LINES,
                         ids=["truncated", "gender", "escape", "age-word", "age-zero", "duplicate"])
def test_bad_line_names_line_and_problem(tmp_path, line, problem):
    sample.write(tmp_path)
    write_listing(tmp_path, "".join(f"{x}\n" for x in sample.LISTING) + line)  # line 10, no final newline
    with pytest.raises(pipeline.ConvertError, match=f"afad: {LISTING} line 10: .*{re.escape(problem)}"):
        convert(tmp_path)
    run = convert(tmp_path, "skip")
    assert (run.rows_read, len(run.records), len(run.failures)) == (8, 7, 1)


def test_html_page_under_the_listing_name_is_refused(tmp_path):
    sample.write(tmp_path)
    write_listing(tmp_path, "<!DOCTYPE html><html><body>Sign in</body></html>\n")
    with pytest.raises(RawFormatError, match=f"{LISTING}: is an HTML page.*{afad.DOWNLOAD}"):
        convert(tmp_path)


@pytest.mark.parametrize("layout", ["empty", "no-images"])
def test_nothing_to_convert_names_the_listing(tmp_path, layout):
    if layout == "no-images":
        (tmp_path / "AFAD-Full/15/111").mkdir(parents=True)
        (tmp_path / "AFAD-Full/15/111/Thumbs.db").write_bytes(b"x")
        problem = "holds no images"
    else:
        problem = "missing, and no AFAD-Full/ image folders"
    with pytest.raises(RawFormatError, match=f"AFAD-Full.*{problem}.*{afad.DOWNLOAD}"):
        convert(tmp_path)


@pytest.mark.shared
@pytest.mark.slow
def test_real_listing(shared_raw):
    """FORMATS.md 7.2: 165,501 .jpg lines (101,519 male, 63,982 female) and 14 Thumbs.db lines; no age 71."""
    run = convert(shared_raw / "afad")
    assert (run.rows_read, len(run.records), sum(run.filtered.values()), len(run.failures)) == (165501, 165501, 0, 0)
    assert Counter(r.labels["gender"] for r in run.records) == {"male": 101519, "female": 63982}
    ages = {r.labels["age"] for r in run.records}
    assert ages == set(range(15, 71)) | {72}
    assert run.notes == [f"rows come from the listing {LISTING}", "14 non-image files ignored (not rows): Thumbs.db: 14"]

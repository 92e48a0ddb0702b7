"""IMDB-WIKI: datenum ages, declared filters counted by reason, boxes only for uncropped photos, broken files refused."""

import math
import re
import shutil
from collections import Counter
from datetime import date

import numpy as np
import pytest
import scipy.io

from facecorpus.converters import imdbwiki, pipeline, registry
from facecorpus.converters.base import Context, RawFormatError
from facecorpus.converters.samples import imdbwiki as sample

WIKI = "wiki_crop/wiki.mat"
NO_FACE = "no face found (face_score -inf)"


def convert(raw, on_error="raise", **options):
    opts = registry.options("imdbwiki", {k: str(v) for k, v in options.items()})
    return pipeline.run_dataset("imdbwiki", raw, Context("imdbwiki", raw, opts), on_error)


def write_wiki(raw, entries):
    (raw / "wiki_crop").mkdir(parents=True, exist_ok=True)
    scipy.io.savemat(raw / WIKI, {"wiki": sample.struct(entries)}, do_compression=True)


def test_sample_converts_exactly(tmp_path):
    expected = sample.write(tmp_path)
    run = convert(tmp_path)
    assert (run.rows_read, len(run.records), dict(run.filtered), run.failures) == (
        14, expected["records"], expected["filtered"], [])
    texts = {r.key: r.text for r in run.records}
    assert {k: texts[k] for k in expected["texts"]} == expected["texts"]
    assert {(r.source_split, r.bbox) for r in run.records} == {(None, None)}  # no split; crops get no box
    by_key = {r.key.split("/")[1]: r for r in run.records}
    assert by_key["wiki-17-10000217_1981-05-05_2009"].subject_id == "person/sami jauhojärvi"
    assert by_key["wiki-13-30065213_1992-03-02_2012"].subject_id is None  # empty name cell
    assert by_key["imdb-45-nm0000245_rm2143392256_1951-7-21_2004"].subject_id == "person/robin williams"  # as CACD
    for r in run.records:
        assert (tmp_path / r.image).is_file()


def test_ages_use_datenum_and_the_mid_year_rule():
    dob = np.array([date(1981, 5, 5).toordinal() + 366, date(1948, 7, 3).toordinal() + 366, 4077, 0], np.int32)
    taken = np.array([2009, 2008, 2010, 1], np.uint16)  # uint16: 1 - 1981 must not wrap to 65535-ish
    assert imdbwiki.ages(dob, taken).tolist() == [28, 59, 2010 - 11, 1 - 1]


def test_yu4u_filter_options_on_the_sample(tmp_path):
    sample.write(tmp_path, parts=("wiki",))
    run = convert(tmp_path, min_face_score=1.0, max_second_face_score=0.0, require_gender=True)
    assert dict(run.filtered) == {NO_FACE: 2, "face_score below min_face_score 1.0": 2,
                                  "second face above max_second_face_score 0.0": 2, "age outside 0..100": 1,
                                  "gender unknown (NaN)": 1}
    assert len(run.records) == 2
    assert run.notes == ["wiki_crop/: bbox left empty (face_location is in the uncropped photo's pixels)",
                         "imdb_crop/imdb.mat absent: the imdb part is not converted"]


def test_unfiltered_keeps_every_entry(tmp_path):
    sample.write(tmp_path)
    run = convert(tmp_path, min_face_score=-math.inf, min_age=-10000, max_age=10000)
    assert (len(run.records), sum(run.filtered.values())) == (14, 0)
    no_face = next(r for r in run.records if "2051570_647" in r.key)  # dob in year 647, face_score -inf
    assert (no_face.text, no_face.subject_id) == ("imdbwiki age: 1363; gender: male", "person/abbas ibn ali")


def test_unknown_option_is_refused():
    with pytest.raises(ValueError, match="unknown option; imdbwiki has"):
        registry.options("imdbwiki", {"min_score": "1"})


def test_full_photo_layout_gets_boxes(tmp_path):
    sample.write(tmp_path, parts=("wiki",))
    shutil.move(tmp_path / "wiki_crop", tmp_path / "wiki")
    run = convert(tmp_path)
    first = run.records[0]
    assert first.image == "wiki/17/10000217_1981-05-05_2009.jpg"
    assert first.bbox == [110, 110, 252, 252]  # 111.29 - 1, 252.67 - 1, rounded
    assert run.notes == ["imdb_crop/imdb.mat absent: the imdb part is not converted"]


BAD_ENTRIES = [
    ((723671, 2009, "17/1_1981-05-05_2009.jpg", 2.0, "X", [1.5, 1.5, 9.5, 9.5], 3.0, math.nan),
     "gender 2.0 is not 1 (male), 0 (female) or NaN (unknown)"),
    ((723671, 2009, "../17/1_1981-05-05_2009.jpg", 1.0, "X", [1.5, 1.5, 9.5, 9.5], 3.0, math.nan),
     "full_path '../17/1_1981-05-05_2009.jpg' is not <NN>/<name>.jpg"),
    ((723671, 2009, "17/10000217_1981-05-05_2009.jpg", 1.0, "X", [1.5, 1.5, 9.5, 9.5], 3.0, math.nan),
     "full_path '17/10000217_1981-05-05_2009.jpg' is listed again (first at entry 1)"),
]


@pytest.mark.parametrize(("entry", "problem"), BAD_ENTRIES, ids=["gender", "escape", "duplicate"])
def test_bad_entry_names_entry_and_problem(tmp_path, entry, problem):
    write_wiki(tmp_path, [*sample.WIKI[:3], entry])
    with pytest.raises(pipeline.ConvertError, match=re.escape(f"imdbwiki: {WIKI} line 4: {problem}")):
        convert(tmp_path)
    run = convert(tmp_path, "skip")
    assert (run.rows_read, len(run.records), len(run.failures)) == (4, 3, 1)


def test_missing_parts_name_both_files_and_the_download_page(tmp_path):
    with pytest.raises(RawFormatError, match=f"wiki_crop/wiki.mat or imdb_crop/imdb.mat: missing: .*"
                                             f"{re.escape(imdbwiki.DOWNLOAD)}"):
        convert(tmp_path)


@pytest.mark.parametrize("broken", ["html", "hdf5", "short-field"])
def test_unusable_mat_is_refused(tmp_path, broken):
    sample.write(tmp_path, parts=("wiki",))
    path = tmp_path / WIKI
    if broken == "html":
        path.write_bytes(b"<html><head><title>404 Not Found</title></head></html>")
        problem = "is an HTML page"
    elif broken == "hdf5":
        path.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64" + bytes(200))
        problem = "is a MATLAB 7.3 \\(HDF5\\) file"
    else:
        struct = sample.struct(sample.WIKI)
        struct["gender"] = struct["gender"][:, :-1]
        scipy.io.savemat(path, {"wiki": struct})
        problem = "fields have different lengths"
    with pytest.raises(RawFormatError, match=f"{WIKI}: {problem}.*{re.escape(imdbwiki.DOWNLOAD)}"):
        convert(tmp_path)


REAL = [  # FORMATS.md 8.3/8.4, counted on the saved wiki.mat (62,328 entries)
    ({}, {"male": 32608, "female": 10783, "unknown": 860}, {NO_FACE: 18016, "age outside 0..100": 61}),
    ({"min_face_score": 1.0, "max_second_face_score": 0.0, "require_gender": True},  # 38,138 = yu4u's wiki.csv
     {"male": 28601, "female": 9537},
     {NO_FACE: 18016, "face_score below min_face_score 1.0": 1319, "second face above max_second_face_score 0.0": 4070,
      "age outside 0..100": 49, "gender unknown (NaN)": 736}),
]


@pytest.mark.shared
@pytest.mark.slow
@pytest.mark.parametrize(("options", "genders", "filtered"), REAL, ids=["defaults", "yu4u"])
def test_real_wiki_mat(shared_raw, options, genders, filtered):
    run = convert(shared_raw / "imdbwiki", **options)
    assert (run.rows_read, dict(run.filtered), len(run.failures)) == (62328, filtered, 0)
    assert Counter(r.labels.get("gender", "unknown") for r in run.records) == genders  # NaN: no gender label
    assert "imdb_crop/imdb.mat absent: the imdb part is not converted" in run.notes
    first = run.records[0]
    assert (first.key, first.text, first.subject_id) == ("imdbwiki/wiki-17-10000217_1981-05-05_2009/attributes/0",
                                                         "imdbwiki age: 28; gender: male", "person/sami jauhojärvi")


def test_crop_archive_wins_over_the_full_one_and_says_so(tmp_path):
    sample.write(tmp_path, parts=("wiki",))
    shutil.copytree(tmp_path / "wiki_crop", tmp_path / "wiki")
    run = convert(tmp_path)
    assert {r.image.split("/")[0] for r in run.records} == {"wiki_crop"}
    assert "wiki/wiki.mat not converted: wiki_crop/ holds the same photos" in run.notes

"""CelebA-HQ-to-CelebA mapping: the sample's layout, the real excerpt, and refused files."""

from __future__ import annotations

from collections import Counter

import pytest

from facecorpus.converters import celeba, celebahq
from facecorpus.converters.base import RawFormatError
from facecorpus.converters.samples import celebahq as sample

HEAD = "idx        orig_idx   orig_file\n"


def test_sample_layout_and_round_trip(tmp_path):
    info = sample.write(tmp_path, seed=0)
    data = (tmp_path / celebahq.MAPPING).read_bytes()
    rows = data.split(b"\n")[:-1]
    # The real file: a 31-character header, then 32-character rows, LF only.
    assert b"\r" not in data and len(rows[0]) == 31 and {len(r) for r in rows[1:]} == {32}
    assert len(rows) == 1 + sample.ROWS == 1 + info["rows"]
    mapping = celebahq.read_mapping(tmp_path / celebahq.MAPPING)
    assert mapping == info["mapping"]
    # CelebA ids 000001..000012, each used once, not in CelebA order.
    assert sorted(mapping.values()) == [f"celeba/{i:06d}" for i in range(1, sample.ROWS + 1)]
    assert list(mapping.values()) != sorted(mapping.values())


def test_sample_n_and_seed(tmp_path):
    a = sample.write(tmp_path / "a", seed=1, n=5)["mapping"]
    b = sample.write(tmp_path / "b", seed=1, n=5)["mapping"]
    assert a == b and list(a) == [f"celebahq/{i}" for i in range(5)]
    assert a != sample.write(tmp_path / "c", seed=2, n=5)["mapping"]


@pytest.mark.shared
def test_real_file(shared_raw):
    path = shared_raw / "celebahq" / celebahq.MAPPING
    mapping = celebahq.read_mapping(path)
    rows = path.read_bytes().count(b"\n") - 1  # the header, then one LF-ended row per CelebA-HQ image
    assert len(mapping) == rows and list(mapping) == [f"celebahq/{i}" for i in range(rows)]
    assert len(set(mapping.values())) == rows  # no CelebA photo behind two CelebA-HQ images
    assert mapping["celebahq/0"] == "celeba/119614" and mapping["celebahq/4"] == "celeba/202041"
    partition = celeba.read_partition(shared_raw / "celeba" / "list_eval_partition.txt")
    # FORMATS.md part 2 section 1.3: the old 483-row excerpt (rows 0..482) is 397 train, 44 val, 42 test.
    assert Counter(partition[mapping[f"celebahq/{i}"]] for i in range(483)) == {"train": 397, "val": 44, "test": 42}
    if rows == celebahq.HQ_IMAGES:
        # The whole file: the split sizes under CelebA's official partition that wtybest/HairCLIP#31 reports.
        assert Counter(partition[p] for p in mapping.values()) == {"train": 24_183, "val": 2_993, "test": 2_824}


@pytest.mark.parametrize("body", [HEAD + "0          9          000010.jpg\n",
                                  HEAD.replace("\n", "\r\n") + "0          9          000010.jpg\r\n",
                                  "\ufeff" + HEAD + "0          9          000010.jpg"])
def test_line_endings_bom_and_unterminated_last_line(tmp_path, body):
    (tmp_path / celebahq.MAPPING).write_bytes(body.encode("utf-8"))
    assert celebahq.read_mapping(tmp_path / celebahq.MAPPING) == {"celebahq/0": "celeba/000010"}


@pytest.mark.parametrize(("body", "message"), [
    ("<!DOCTYPE html><html><title>Google Drive - Quota exceeded</title>", "HTML page"),
    ("0          9          000010.jpg\n", "expected the header"),
    (HEAD, "no rows"),
    (HEAD + "0          9          000011.jpg\n", r"is not orig_idx \+ 1"),
    (HEAD + "0          9\n", "expected 'idx orig_idx orig_file'"),
    (HEAD + "x          9          000010.jpg\n", "expected 'idx orig_idx orig_file'"),
    (HEAD + "30000      9          000010.jpg\n", "out of range"),
    (HEAD + "0          9          000010.jpg\n0          8          000009.jpg\n", "celebahq/0 is mapped twice"),
])
def test_refused(tmp_path, body, message):
    (tmp_path / celebahq.MAPPING).write_text(body)
    with pytest.raises(RawFormatError, match=message) as err:
        celebahq.read_mapping(tmp_path / celebahq.MAPPING)
    assert celebahq.MAPPING in str(err.value)


def test_missing_names_file_and_download(tmp_path):
    with pytest.raises(RawFormatError, match=f"{celebahq.MAPPING}.*missing.*{celebahq.DOWNLOAD}"):
        celebahq.read_mapping(tmp_path / celebahq.MAPPING)


def test_sample_first_rows_stay_on_the_celeba_sample_for_any_n(tmp_path):
    full = sample.write(tmp_path, seed=0, n=30_000)["mapping"]
    assert len(full) == 30_000 and len(set(full.values())) == 30_000
    head = {full[f"celebahq/{i}"] for i in range(sample.ROWS)}
    assert head == {f"celeba/{i:06d}" for i in range(1, sample.ROWS + 1)}
    assert celebahq.read_mapping(tmp_path / celebahq.MAPPING) == full
    assert (tmp_path / celebahq.MAPPING).stat().st_size == 990_032  # the real file's size (FORMATS.md 1.3)

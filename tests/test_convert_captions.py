"""The caption-set converters: MM-CelebA-HQ, CelebAText-HQ, FFHQ-Text (samples, broken files, the real excerpt)."""

from __future__ import annotations

import pickle
import re
import shutil
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import rawfiles
from facecorpus.converters import celeba, celebahq, mmcelebahq, pipeline, registry, splits
from facecorpus.converters.base import Context, RawFormatError
from facecorpus.converters.samples import celebahq as hq_sample
from facecorpus.converters.samples import celebatexthq as cth_sample
from facecorpus.converters.samples import ffhqtext as ffhq_sample
from facecorpus.converters.samples import mmcelebahq as mm_sample

SAMPLES = {"mmcelebahq": mm_sample, "celebatexthq": cth_sample, "ffhqtext": ffhq_sample}
BOM = b"\xef\xbb\xbf"
HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head></html>\n"


def convert(name: str, raw: Path, on_error: str = "raise", mapping: dict | None = None, **options):
    """rawfiles.convert; the HQ sets get a sample mapping covering every index they use."""
    if mapping is None and name != "ffhqtext":
        mapping = {f"celebahq/{i}": f"celeba/{i + 1:06d}" for i in range(30_000)}
    return rawfiles.convert(name, raw, on_error, mapping, **options)


def sample(tmp_path: Path, name: str) -> tuple[Path, dict]:
    raw = tmp_path / name
    return raw, SAMPLES[name].write(raw, seed=0)


def by_split(run) -> dict[str, int]:
    return dict(Counter(r.source_split for r in run.records))


def texts(run) -> dict[str, str]:
    return {r.key: r.text for r in run.records}


# --- the samples convert to exactly what they promise ---------------------------------------------------------

@pytest.mark.parametrize("name", list(SAMPLES))
def test_sample_counts(tmp_path, name):
    raw, info = sample(tmp_path, name)
    run = convert(name, raw)
    assert by_split(run) == info["splits"]
    assert dict(run.filtered) == info["filtered"]
    assert run.rows_read == info["rows"] and len(run.records) == info["records"] and not run.failures
    for rec in run.records:  # every referenced image was written
        assert (raw / rec.image).is_file(), rec.image


def test_mmcelebahq_sample_records(tmp_path):
    raw, info = sample(tmp_path, "mmcelebahq")
    hq = hq_sample.write(tmp_path / "celebahq", n=info["mapping_rows"])["mapping"]
    run = convert("mmcelebahq", raw, mapping=hq)
    got = texts(run)
    # The trailing space is gone, the line index stays the key's n, the 'He has .' line 0 of 24000 is filtered.
    assert got["mmcelebahq/0/caption/0"] == "The woman has wavy hair, and arched eyebrows."
    assert got["mmcelebahq/24000/caption/1"] == "He is young and has black hair."
    assert "mmcelebahq/24000/caption/0" not in got
    # An empty attribute list goes, what the line says besides it stays.
    assert got["mmcelebahq/24000/caption/2"] == "The man wears hat. He has beard."
    assert got["mmcelebahq/24000/caption/3"] == "This attractive man."
    assert got["mmcelebahq/24001/caption/2"] == "She is smiling."
    rec = next(r for r in run.records if r.key == "mmcelebahq/24001/caption/2")
    assert (rec.image, rec.image_id, rec.photo_id, rec.source_split) == (
        "image/images/24001.jpg", "celebahq/24001", hq["celebahq/24001"], "test")
    assert run.notes == [
        "text/celeba-caption/: 4 captions had an empty attribute list ('has .', 'has  and'): the empty clause "
        f"removed from {info['repaired']} (the rest kept), 1 said nothing else (filtered)",
        "text/celeba-caption/: 1 captions repeat an earlier line of their file (kept; the README promises ten "
        "unique captions)"]


@pytest.mark.parametrize(("line", "kept"), [
    ("He is young and has .", "He is young."),
    ("This woman has  and wears lipstick.", "This woman wears lipstick."),
    ("This person has . He is young. He has no beard.", "He is young. He has no beard."),
    ("He wears necktie has .", "He wears necktie."),
    ("This young person has .", "This young person."),
    ("She is wearing lipstick. She has . She is young.", "She is wearing lipstick. She is young."),
    ("The person has .", ""), ("He has . She has .", ""),
])
def test_mmcelebahq_empty_attribute_list_is_removed(line, kept):
    assert mmcelebahq.without_empty_lists(" ".join(line.split())) == kept


def test_celebatexthq_sample_records(tmp_path):
    raw, _ = sample(tmp_path, "celebatexthq")
    run = convert("celebatexthq", raw)
    got = texts(run)
    assert got["celebatexthq/2/caption/0"] == "The man has short hair he wears glasses."  # U+FFFD pair -> space
    assert got["celebatexthq/2/caption/2"] == "A middle-aged man with a beard."  # line 1 was blank
    assert got["celebatexthq/4/caption/1"] == "She has rosy cheeks,and she is smiling."  # full-width comma, NFKC
    rec = next(r for r in run.records if r.key == "celebatexthq/10/caption/1")
    assert (rec.image, rec.image_id, rec.photo_id, rec.source_split) == (
        "CelebAimg/10.jpg", "celebahq/10", "celeba/000011", "test")
    assert "captions/: 1 caption files had invalid UTF-8 or U+FFFD (mapped to a space): 2.txt" in run.notes
    assert "captions/: 1 caption files had non-ASCII text (NFKC-normalised): 4.txt" in run.notes
    assert "captions/: 6 files have fewer than 10 captions (all kept)" in run.notes


def test_ffhqtext_sample_records(tmp_path):
    raw, _ = sample(tmp_path, "ffhqtext")
    run = convert("ffhqtext", raw)
    rec = next(r for r in run.records if r.key == "ffhqtext/02088/caption/1")
    assert (rec.text, rec.image, rec.image_id, rec.photo_id, rec.source_split) == (
        "She has short grey hair.", "Image/02088.png", "ffhq/02088", "ffhq/02088", "test")


# --- bytes of a caption file: line ends, BOM, truncation, HTML ------------------------------------------------

CAPTION_FILE = {"mmcelebahq": "text/celeba-caption/5.txt", "celebatexthq": "captions/1.txt",
                "ffhqtext": "Text/00345.txt"}


@pytest.mark.parametrize("name", list(SAMPLES))
@pytest.mark.parametrize("change", ["crlf", "bom", "no final newline"])
def test_caption_file_variants_give_the_same_records(tmp_path, name, change):
    raw, _ = sample(tmp_path, name)
    before = texts(convert(name, raw))
    path = raw / CAPTION_FILE[name]
    data = path.read_bytes()
    path.write_bytes({"crlf": data.replace(b"\n", b"\r\n"), "bom": BOM + data, "no final newline": data[:-1]}[change])
    assert texts(convert(name, raw)) == before


@pytest.mark.parametrize("name", list(SAMPLES))
def test_html_page_under_a_caption_file_name(tmp_path, name):
    raw, _ = sample(tmp_path, name)
    (raw / CAPTION_FILE[name]).write_bytes(HTML)
    with pytest.raises(RawFormatError, match=rf"{CAPTION_FILE[name]}: is an HTML page.*download page: https://"):
        convert(name, raw)


def test_invalid_utf8_is_replaced_and_noted(tmp_path):
    raw, _ = sample(tmp_path, "ffhqtext")
    (raw / "Text" / "00012.txt").write_bytes(b"She has \xff\xfe brown hair.\nHer eyes are \xe9 big.\n")
    run = convert("ffhqtext", raw)
    assert texts(run)["ffhqtext/00012/caption/0"] == "She has brown hair."
    assert any("1 caption files had invalid UTF-8" in n and "00012.txt" in n for n in run.notes)


# --- missing files name the file and the download page -------------------------------------------------------

@pytest.mark.parametrize(("name", "remove", "message"), [
    ("mmcelebahq", "text", r"text/celeba-caption/ or .*no caption files.*MM-CelebA-HQ-Dataset"),
    ("mmcelebahq", "test/filenames.pickle", r"test/filenames.pickle: missing beside train/filenames.pickle"),
    ("celebatexthq", "data_flist", r"data_flist/train.flist or .*missing.*SEA-T2F"),
    ("celebatexthq", "data_flist/test.flist", r"data_flist/test.flist: missing.*SEA-T2F"),
    ("celebatexthq", "captions", r"captions/: missing .*no caption folder.*SEA-T2F"),
    ("ffhqtext", "Text", r"Text/ or text/: missing .*FFHQ-Text_Dataset"),
    ("ffhqtext", "Train", r"Train/filenames.pickle: missing beside Test/filenames.pickle"),
])
def test_missing_raw_file(tmp_path, name, remove, message):
    raw, _ = sample(tmp_path, name)
    target = raw / remove
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    with pytest.raises(RawFormatError, match=message):
        convert(name, raw)


@pytest.mark.parametrize("name", ["mmcelebahq", "celebatexthq"])
def test_hq_sets_need_the_mapping(tmp_path, name):
    raw, _ = sample(tmp_path, name)
    ctx = Context(name, raw, registry.options(name, {}), None)
    with pytest.raises(RawFormatError, match="CelebA-HQ-to-CelebA-mapping.txt.*--celebahq-mapping"):
        pipeline.run_dataset(name, raw, ctx, "raise")


@pytest.mark.parametrize("name", ["mmcelebahq", "celebatexthq"])
def test_index_outside_the_mapping_fails_the_row(tmp_path, name):
    raw, info = sample(tmp_path, name)
    mapping = {f"celebahq/{i}": f"celeba/{i + 1:06d}" for i in info["hq_indices"][1:]}
    with pytest.raises(pipeline.ConvertError, match=f"celebahq/{info['hq_indices'][0]} is not in the CelebA-HQ map"):
        convert(name, raw, mapping=mapping)
    run = convert(name, raw, "skip", mapping=mapping)
    assert len(run.failures) > 0 and run.rows_read == len(run.records) + sum(run.filtered.values()) + len(run.failures)


# --- split pickles -------------------------------------------------------------------------------------------

class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


@pytest.mark.parametrize("name", ["mmcelebahq", "ffhqtext"])
@pytest.mark.parametrize(("content", "message"), [
    (HTML, "is an HTML page"),
    (pickle.dumps(["0", "5", "7"], protocol=2)[:-3], "is not a pickled list of file names.*truncated"),
    (pickle.dumps([Evil()], protocol=2), "refers to the Python object __builtin__.print, not only file names"),
    (pickle.dumps({"0": 1}, protocol=2), "holds a dict, expected a list of file names"),
    (pickle.dumps(["0", 5], protocol=2), r":2: entry 5 is not a file name"),
], ids=["html", "truncated", "code", "dict", "int entry"])
def test_broken_split_pickle(tmp_path, name, content, message, capsys):
    raw, _ = sample(tmp_path, name)
    (raw / ("train/filenames.pickle" if name == "mmcelebahq" else "Train/filenames.pickle")).write_bytes(content)
    with pytest.raises(RawFormatError, match=message):
        convert(name, raw)
    assert "pwned" not in capsys.readouterr().out


def write_pickle(path: Path, names: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(names, protocol=2))


def test_mmcelebahq_swapped_pickles_keep_the_index_split(tmp_path):
    raw, info = sample(tmp_path, "mmcelebahq")
    # Swapped; the train list as Python 2 writes byte strings (SHORT_BINSTRING), as AttnGAN's era did.
    (raw / "train" / "filenames.pickle").write_bytes(b"\x80\x02]q\x00(U\x0524000q\x01U\x0524001q\x02e.")
    write_pickle(raw / "test" / "filenames.pickle", [b"0", "5", "images/6.jpg"])
    run = convert("mmcelebahq", raw)
    assert by_split(run) == info["splits"]
    assert ("train/filenames.pickle lists 2 of its 2 images in the test index range (e.g. 24000): split taken from "
            "the index (the pickles may be swapped, #6)") in run.notes
    assert "the split pickles list 1 images with no caption file in text/celeba-caption/: 6.txt" in run.notes


def test_mmcelebahq_without_pickles_notes_the_missing_files(tmp_path):
    raw, info = sample(tmp_path, "mmcelebahq")
    for split in ("train", "test"):
        (raw / split / "filenames.pickle").unlink()
    run = convert("mmcelebahq", raw)
    assert by_split(run) == info["splits"]
    assert any(n.startswith("text/celeba-caption/ holds 4 of the 30,000 caption files 0.txt..29999.txt: 29,996 "
                            "missing") for n in run.notes)


def test_mmcelebahq_options(tmp_path):
    raw, _ = sample(tmp_path, "mmcelebahq")
    run = convert("mmcelebahq", raw, keep_duplicates=False, keep_degenerate=True)
    assert dict(run.filtered) == {"duplicate caption in the same file": 1}
    assert texts(run)["mmcelebahq/24000/caption/0"] == "He has ."
    assert texts(run)["mmcelebahq/24000/caption/3"] == "This attractive man has ."
    assert "mmcelebahq/5/caption/2" not in texts(run)


@pytest.mark.parametrize("bad", ["00005", "abc", "30000"])
def test_mmcelebahq_file_name_not_an_index(tmp_path, bad):
    raw, _ = sample(tmp_path, "mmcelebahq")
    (raw / "text" / "celeba-caption" / f"{bad}.txt").write_text("She is young.\n\nShe has bangs.\n")
    with pytest.raises(pipeline.ConvertError, match=f"{bad}.txt line 1: file name {bad}.txt is not an unpadded"):
        convert("mmcelebahq", raw)
    run = convert("mmcelebahq", raw, "skip")
    assert len(run.failures) == 2 and run.filtered["empty caption line"] == 1


# --- CelebAText-HQ lists ------------------------------------------------------------------------------------

@pytest.mark.parametrize("line", ["../../../etc/passwd", "data/CelebAText-HQ/CelebAimg/00003.jpg",
                                  "data/CelebAText-HQ/CelebAimg/caf\u00e9.jpg", "x/y/z/30000.jpg"])
def test_celebatexthq_list_line_that_names_no_hq_image(tmp_path, line):
    raw, info = sample(tmp_path, "celebatexthq")
    flist = raw / "data_flist" / "train.flist"
    flist.write_bytes(flist.read_bytes() + f"{line}\n".encode())
    with pytest.raises(pipeline.ConvertError, match=r"data_flist/train.flist line 5: .* does not name a CelebA-HQ"):
        convert("celebatexthq", raw)
    run = convert("celebatexthq", raw, "skip")
    assert len(run.failures) == 1 and len(run.records) == info["records"]


def test_celebatexthq_lists_disagree_with_captions(tmp_path):
    raw, _ = sample(tmp_path, "celebatexthq")
    flist = raw / "data_flist" / "test.flist"
    flist.write_bytes(flist.read_bytes() + b"a/b/c/1.jpg\na/b/c/11.jpg\n")  # 1 is also train; 11 has no captions
    (raw / "captions" / "3.txt").write_text("An unlisted man.\n")
    run = convert("celebatexthq", raw)
    assert "1 images are in both train.flist and test.flist (taken as test): 1" in run.notes
    assert "the .flist files list 1 images with no caption file in captions/: 11.txt" in run.notes
    assert "1 caption files in captions/ are in neither .flist (converted with no source split): 3.txt" in run.notes
    split = {r.key: r.source_split for r in run.records}
    assert split["celebatexthq/1/caption/0"] == "test" and split["celebatexthq/3/caption/0"] is None


def test_celebatexthq_nested_root(tmp_path):
    cth_sample.write(tmp_path / "raw" / "data" / "CelebAText-HQ")
    run = convert("celebatexthq", tmp_path / "raw")
    assert run.records[0].image == "data/CelebAText-HQ/CelebAimg/1.jpg"
    assert by_split(run) == {"train": 8, "test": 4}


# --- FFHQ-Text's undocumented layout ----------------------------------------------------------------------------

def test_ffhqtext_lower_case_layout_and_pkl_names(tmp_path):
    raw, info = sample(tmp_path, "ffhqtext")
    for old, new in (("Text", "text"), ("Image", "images"), ("Train/filenames.pickle", "train.pkl"),
                     ("Test/filenames.pickle", "test.pkl")):
        (raw / old).rename(raw / new)
    run = convert("ffhqtext", raw)
    assert by_split(run) == info["splits"] and run.records[0].image == "images/00012.png"


def test_ffhqtext_without_pickles(tmp_path):
    raw, info = sample(tmp_path, "ffhqtext")
    for folder in ("Train", "Test"):
        (raw / folder / "filenames.pickle").unlink()
    run = convert("ffhqtext", raw)
    assert by_split(run) == {None: info["records"]}
    assert run.notes[0].startswith("no train/test pickles (Train/filenames.pickle, ...)")


def test_ffhqtext_name_not_ffhq(tmp_path):
    raw, _ = sample(tmp_path, "ffhqtext")
    (raw / "Text" / "face_7.txt").write_text("A woman.\n")
    with pytest.raises(pipeline.ConvertError, match="face_7.txt line 1: file name face_7.txt is not a 5-digit FFHQ"):
        convert("ffhqtext", raw)


# --- the real MM-CelebA-HQ excerpt ---------------------------------------------------------------------------

BARE_EMPTY = re.compile(r"(?:(?:This|The) (?:person|man|woman)|He|She) has \.")


def real_caption_files(raw: Path) -> dict[int, list[str]]:
    """{CelebA-HQ index: the file's lines} of the real excerpt, read here without the converter."""
    files = {int(p.stem): p.read_bytes() for p in (raw / "text" / "celeba-caption").glob("*.txt")}
    # FORMATS.md part 2, 2.2 (measured on all 30,000): ASCII, LF, a final newline, exactly ten lines.
    assert all(d.isascii() and b"\r" not in d and d.endswith(b"\n") and d.count(b"\n") == 10 for d in files.values())
    return {i: d.decode().split("\n")[:-1] for i, d in sorted(files.items())}


@pytest.mark.shared
def test_mmcelebahq_real_excerpt(shared_raw):
    raw = shared_raw / "mmcelebahq"
    files = real_caption_files(raw)
    lines = [line for captions in files.values() for line in captions]
    mapping = celebahq.read_mapping(shared_raw / "celebahq" / celebahq.MAPPING)
    run = convert("mmcelebahq", raw, mapping=mapping)
    assert run.rows_read == len(lines) == 10 * len(files) and not run.failures
    # Lines with an empty attribute list ('has .', 'has  and'); those made only of subject + 'has .'
    # sentences say nothing and are the only ones filtered; every other one is kept, repaired.
    empty = [line for line in lines if "has ." in line or "has  and" in line]
    nothing = [line for line in empty if all(BARE_EMPTY.fullmatch(s) for s in re.split(r"(?<=\.) ", " ".join(line.split())))]
    assert 0 < len(nothing) < len(empty)
    assert dict(run.filtered) == {mmcelebahq.SAYS_NOTHING: len(nothing)}
    assert len(run.records) == len(lines) - len(nothing)
    assert (f"{len(empty):,} captions had an empty attribute list ('has .', 'has  and'): the empty clause removed "
            f"from {len(empty) - len(nothing):,} (the rest kept), {len(nothing):,} said nothing else") in " ".join(run.notes)
    assert not any(re.search(r"\bhas (?:\.|and )", r.text) for r in run.records)
    got = texts(run)
    # 92.txt, all ten lines with an empty list (FORMATS.md 2.2): what six of them say besides it is kept.
    assert [got.get(f"mmcelebahq/92/caption/{n}") for n in range(10)] == [
        "This attractive man.", "He is young. He has beard.", None, None, "He is young.", "This attractive person.",
        "This attractive man.", "This man is attractive.", None, None]
    assert got["mmcelebahq/49/caption/1"] == "The person has big lips, and bags under eyes."
    # The maintainer's split by index: train 0..23999, test 24000..29999.
    per_file = Counter(r.image_id for r in run.records)
    assert by_split(run) == {s: n for s, n in (
        ("train", sum(n for i, n in per_file.items() if int(i.split("/")[1]) < mmcelebahq.TEST_FROM)),
        ("test", sum(n for i, n in per_file.items() if int(i.split("/")[1]) >= mmcelebahq.TEST_FROM))) if n}
    missing = mmcelebahq.HQ_IMAGES - len(files)
    assert any(n.startswith(f"text/celeba-caption/ holds {len(files):,} of the 30,000 caption files 0.txt..29999.txt: "
                            f"{missing:,} missing (an excerpt?)") for n in run.notes)
    # In-file repeats: kept and noted by default, filtered on request, and the counts agree.
    strict = convert("mmcelebahq", raw, mapping=mapping, keep_duplicates=False)
    repeats = strict.filtered["duplicate caption in the same file"]
    assert repeats > 0 and len(strict.records) == len(run.records) - repeats
    assert f"text/celeba-caption/: {repeats:,} captions repeat an earlier line of their file" in " ".join(run.notes)
    # Split harmonization through the mapping and CelebA's partition: 4.jpg is CelebA 202041.jpg, a test photo.
    partition = celeba.read_partition(shared_raw / "celeba" / "list_eval_partition.txt")
    df = pd.DataFrame([{"dataset": r.dataset, "photo_id": r.photo_id, "subject_id": None,
                        "source_split": r.source_split, "image_id": r.image_id} for r in run.records])
    df["split"], _ = splits.harmonize(df, partition)
    per_image = df.drop_duplicates("image_id").set_index("image_id")["split"]
    assert per_image["celebahq/4"] == "test"
    # Every image takes the most held-out of its MM-CelebA-HQ split and its photo's CelebA split.
    order = {"train": 0, "val": 1, "test": 2}
    want = {f"celebahq/{i}": max(("train" if i < mmcelebahq.TEST_FROM else "test", partition[mapping[f"celebahq/{i}"]]),
                                 key=order.get) for i in files if f"celebahq/{i}" in per_image}
    assert per_image.to_dict() == want
    # FORMATS.md 1.4: of images 0..100, 12 are CelebA val and 7 CelebA test photos.
    assert Counter(per_image[f"celebahq/{i}"] for i in range(101)) == {"train": 101 - 12 - 7, "val": 12, "test": 7}


@pytest.mark.parametrize("change", ["crlf", "bom", "no final newline", "html"])
def test_celebatexthq_flist_bytes(tmp_path, change):
    raw, info = sample(tmp_path, "celebatexthq")
    flist = raw / "data_flist" / "test.flist"
    data = flist.read_bytes()
    flist.write_bytes({"crlf": data.replace(b"\n", b"\r\n"), "bom": BOM + data, "no final newline": data[:-1],
                       "html": HTML}[change])
    if change == "html":
        with pytest.raises(RawFormatError, match=r"data_flist/test.flist: is an HTML page.*SEA-T2F"):
            convert("celebatexthq", raw)
    else:
        assert by_split(convert("celebatexthq", raw)) == info["splits"]

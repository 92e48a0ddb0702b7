"""Behaviour every text-file converter shares, over each dataset's own sample tree."""

from __future__ import annotations

import importlib
import io
import re
import tracemalloc

import pytest
from rich.console import Console

from facecorpus.converters import celebahq, pipeline, registry
from facecorpus.converters.base import MAX_LINE_CHARS, RawFormatError
from facecorpus.converters.samples import celebahq as celebahq_sample
from facecorpus.records import MAX_CAPTION_CHARS
from rawfiles import HTML, convert

QUIET = Console(file=io.StringIO())

# (dataset, a label file of its sample tree)
LABEL_FILES = [
    ("fairface", "fairface_label_val.csv"),
    ("rafdb", "basic/EmoLabel/list_patition_label.txt"),
    ("expw", "label/label.lst"),
    ("fs2k", "anno_train.json"),
    ("affectnet", "Manually_Annotated_file_lists/training.csv"),
    ("celeba", "list_attr_celeba.txt"),
]


@pytest.mark.parametrize("name, label_file", LABEL_FILES)
def test_html_page_under_a_label_file_name_is_refused_naming_it_and_the_download_page(tmp_path, name, label_file):
    raw = tmp_path / name
    importlib.import_module(f"facecorpus.converters.samples.{name}").write(raw, seed=0)
    assert convert(name, raw).rows_read > 0
    (raw / label_file).write_bytes(HTML)
    download = registry.module(name).DOWNLOAD
    with pytest.raises(RawFormatError, match=f"{label_file}(:1)?: is an HTML page .*download page: {download}"):
        convert(name, raw)


@pytest.mark.parametrize("name, label_file", [
    ("fairface", "fairface_label_train.csv"), ("fairface", "fairface_label_val.csv"),
    ("fs2k", "anno_train.json"), ("fs2k", "anno_test.json"),
    ("rafdb", "basic/EmoLabel/list_patition_label.txt"), ("expw", "label/label.lst"),
])
def test_a_missing_label_file_is_named_with_the_download_page(tmp_path, name, label_file):
    raw = tmp_path / name
    importlib.import_module(f"facecorpus.converters.samples.{name}").write(raw, seed=0)
    (raw / label_file).unlink()
    download = re.escape(registry.module(name).DOWNLOAD)
    with pytest.raises(RawFormatError, match=f"{re.escape(label_file)}.*missing.*download page: {download}"):
        convert(name, raw)


# --- an empty download is an error naming the file --------------------------------------------------------------

EMPTY, HEADER_ONLY, NO_ENTRIES = "is empty", "has a header but no rows", "holds no entries"


@pytest.mark.parametrize("name, label_file, content, problem", [
    ("expw", "label/label.lst", b"", EMPTY), ("rafdb", "basic/EmoLabel/list_patition_label.txt", b"", EMPTY),
    ("affectnet", "Manually_Annotated_file_lists/training.csv", b"", EMPTY),
    ("affectnet", "Manually_Annotated_file_lists/training.csv",
     b"subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\r\n",
     HEADER_ONLY),
    ("fairface", "fairface_label_val.csv", b"file,age,gender,race,service_test\n", HEADER_ONLY),
    ("afad", "AFAD-Full/AFAD-Full.txt", b"", EMPTY), ("celeba", "identity_CelebA.txt", b"\n\n", EMPTY),
    ("celebadialog", "combined_annotation.txt", b"", EMPTY), ("celebadialog", "captions.json", b"{}", NO_ENTRIES),
    ("celebatexthq", "data_flist/test.flist", b"", EMPTY), ("fs2k", "anno_train.json", b"[]", NO_ENTRIES),
])
def test_an_empty_or_header_only_label_file_is_refused_naming_it(tmp_path, name, label_file, content, problem):
    raw = tmp_path / name
    importlib.import_module(f"facecorpus.converters.samples.{name}").write(raw, seed=0)
    (raw / label_file).write_bytes(content)
    with pytest.raises(RawFormatError, match=f"^{re.escape(label_file)}: {problem}: a failed or truncated download"):
        pipeline.convert({name: raw}, tmp_path / "m", hq_mapping=hq_mapping(tmp_path), console=QUIET)
    assert not (tmp_path / "m").exists()


# --- a huge line or caption: a counted error, quoted short, read in bounded memory ------------------------------

HUGE = 100_000  # characters: over MAX_LINE_CHARS
LINE_FILES = [  # (dataset, a line-based file of its sample tree, the 1-based line replaced)
    ("rafdb", "basic/EmoLabel/list_patition_label.txt", 2), ("expw", "label/label.lst", 2),
    ("affectnet", "Manually_Annotated_file_lists/training.csv", 2), ("fairface", "fairface_label_train.csv", 2),
    ("afad", "AFAD-Full/AFAD-Full.txt", 2), ("celeba", "list_attr_celeba.txt", 4),
    ("celebadialog", "combined_annotation.txt", 2), ("celebatexthq", "data_flist/train.flist", 1),
    ("celebatexthq", "captions/1.txt", 1), ("mmcelebahq", "text/celeba-caption/0.txt", 2),
    ("ffhqtext", "Text/00012.txt", 1),
]


MAPPING = {f"celebahq/{i}": f"celeba/{i + 1:06d}" for i in range(30_000)}  # every index the HQ samples use


def hq_mapping(tmp_path):
    """A sample CelebA-HQ mapping file (it covers the HQ samples' indices)."""
    celebahq_sample.write(tmp_path / "celebahq", seed=0)
    return tmp_path / "celebahq" / celebahq.MAPPING


def replace_line(path, n: int, new: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[n - 1] = new
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize("name, text_file, n", LINE_FILES)
def test_an_overlong_line_is_a_counted_error_quoted_short(tmp_path, name, text_file, n):
    raw = tmp_path / name
    importlib.import_module(f"facecorpus.converters.samples.{name}").write(raw, seed=0)
    mapping = MAPPING
    before = convert(name, raw, "skip", mapping)
    replace_line(raw / text_file, n, b"A" * HUGE)
    with pytest.raises(pipeline.ConvertError) as err:
        convert(name, raw, "raise", mapping)
    limit = f"line of {HUGE:,} characters is over the {MAX_LINE_CHARS:,}-character limit"
    assert f"{text_file} line {n}: {limit}" in str(err.value) and len(str(err.value)) < 300
    run = convert(name, raw, "skip", mapping)
    assert [f.where for f in run.failures if f.problem.startswith(limit)] == [(text_file, n)]
    assert run.rows_read == len(run.records) + sum(run.filtered.values()) + len(run.failures)
    assert len(run.records) < len(before.records) or name == "celebatexthq"  # a list line only names the image


@pytest.mark.parametrize("name, table", [("celeba", "identity_CelebA.txt"), ("celeba", "list_eval_partition.txt")])
def test_an_overlong_line_in_a_lookup_table_stops_the_run_naming_it(tmp_path, name, table):
    raw = tmp_path / name
    importlib.import_module(f"facecorpus.converters.samples.{name}").write(raw, seed=0)
    replace_line(raw / table, 3, b"0" * HUGE)
    with pytest.raises(RawFormatError, match=rf"^{table}:3: line of {HUGE:,} characters is over") as err:
        convert(name, raw)
    assert len(str(err.value)) < 300


def test_a_huge_line_is_read_past_in_bounded_memory(tmp_path):
    raw = tmp_path / "rafdb"
    importlib.import_module("facecorpus.converters.samples.rafdb").write(raw, seed=0)
    replace_line(raw / "basic/EmoLabel/list_patition_label.txt", 2, b"train_00001.jpg " + b"7" * 30_000_000)
    tracemalloc.start()
    try:
        run = convert("rafdb", raw, "skip")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(run.failures) == 1 and len(run.failures[0].problem) < 200
    assert peak < 10_000_000  # the 30 MB line is never held whole


@pytest.mark.parametrize("name, caption_file", [("mmcelebahq", "text/celeba-caption/0.txt"),
                                                ("celebatexthq", "captions/1.txt"), ("ffhqtext", "Text/00012.txt")])
def test_a_caption_over_the_limit_is_a_counted_error(tmp_path, name, caption_file):
    raw = tmp_path / name
    importlib.import_module(f"facecorpus.converters.samples.{name}").write(raw, seed=0)
    mapping = MAPPING
    replace_line(raw / caption_file, 1, b"She has " + b"very " * 1_000 + b"long hair.")
    run = convert(name, raw, "skip", mapping)
    [failure] = run.failures
    assert failure.where == (caption_file, 1)
    assert failure.problem.startswith(f"caption of 5,018 characters is over the {MAX_CAPTION_CHARS:,}-character limit: "
                                      "'She has very very") and len(failure.problem) < 200
    assert all(len(r.text) <= MAX_CAPTION_CHARS for r in run.records)

"""Behaviour every text-file converter shares, over each dataset's own sample tree."""

from __future__ import annotations

import importlib
import re

import pytest

from facecorpus.converters import pipeline, registry
from facecorpus.converters.base import RawFormatError
from rawfiles import HTML

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
    assert pipeline.run_one(name, raw).rows_read > 0
    (raw / label_file).write_bytes(HTML)
    download = registry.module(name).DOWNLOAD
    with pytest.raises(RawFormatError, match=f"{label_file}(:1)?: is an HTML page .*download page: {download}"):
        pipeline.run_one(name, raw)


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
        pipeline.run_one(name, raw)

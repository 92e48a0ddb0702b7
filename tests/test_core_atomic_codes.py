"""The core's atomic writer and the one definition of an image-code grid."""

from __future__ import annotations

import numpy as np
import pytest

from facecorpus import atomic
from facecorpus.codes import FFHQ_F16, CodeGrid


def test_atomic_write_publishes_whole_file_and_leaves_no_tmp(tmp_path):
    path = atomic.atomic_write(tmp_path / "a.json", "one")
    atomic.atomic_write(path, b"two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_publishing_failure_keeps_old_content_and_removes_tmp(tmp_path):
    path = atomic.atomic_write(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError):
        with atomic.publishing(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert path.read_text() == "old"
    assert not atomic.tmp_path(path).exists()


def test_publishing_a_folder_replaces_the_old_one(tmp_path):
    for content in ("first", "second"):
        with atomic.publishing(tmp_path / "step") as tmp:
            tmp.mkdir()
            (tmp / "model.pt").write_text(content)
    assert (tmp_path / "step" / "model.pt").read_text() == "second"
    assert atomic.sweep(tmp_path) == 0


def test_sweep_removes_leftovers(tmp_path):
    (tmp_path / "x.parquet.tmp").write_text("partial")
    (tmp_path / "dir.tmp").mkdir()
    assert atomic.sweep(tmp_path) == 2 and not list(tmp_path.iterdir())


def test_code_grid_round_trip_and_checks():
    assert FFHQ_F16.count == 256 and FFHQ_F16.shape == (16, 16)
    assert CodeGrid.from_dict(FFHQ_F16.as_dict(), "x") == FFHQ_F16
    gptface = CodeGrid(8192, 21, 336)
    assert gptface.problem(np.full((21, 21), 8191, np.uint16)) is None
    assert "outside the codebook" in gptface.problem(np.full((21, 21), 8192, np.uint16))
    assert "expected uint16 (16, 16)" in FFHQ_F16.problem(np.zeros((21, 21), np.uint16))
    with pytest.raises(ValueError, match="index.json: malformed code grid"):
        CodeGrid.from_dict({"codebook_size": 1024, "grid": [16, 8], "resolution": 256}, "index.json")
    with pytest.raises(ValueError, match="positive integer"):
        CodeGrid(0, 16, 256)

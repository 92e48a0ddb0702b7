"""`facecorpus prepare laion-face`: FaRL's face ids and LAION-400M metadata parts (made here in their
layout) -> one URL parquet per part; counts that add up, a removal list, and a .pth that would need
pickled code refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner

from facecorpus.cli import main
from facecorpus.converters import laionface

ROWS = 300  # per metadata part; parts 0 and 2 are written


def write_meta(folder: Path, part: int, rows: int = ROWS) -> Path:
    """A LAION-400M metadata part with its eight columns; SAMPLE_IDs part*1000 + row; row groups of 64."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = np.arange(rows, dtype=np.int64) + part * 1000
    table = pa.table({
        "SAMPLE_ID": ids, "URL": [f"https://example.com/{i}.jpg" for i in ids], "TEXT": [f"photo {i}" for i in ids],
        "HEIGHT": pa.array([256] * rows, pa.int32()), "WIDTH": pa.array([320] * rows, pa.int32()),
        "LICENSE": ["?"] * rows, "NSFW": ["UNLIKELY"] * rows, "similarity": np.linspace(0.3, 0.4, rows)})
    path = folder / laionface.META.format(part)
    pq.write_table(table, path, row_group_size=64)
    return path


def faces(part: int) -> list[int]:
    """The part's face ids: every third row, plus two ids no metadata row has."""
    return [part * 1000 + i for i in range(0, ROWS, 3)] + [part * 1000 + 900, part * 1000 + 901]


@pytest.fixture
def inputs(tmp_path):
    meta = tmp_path / "laion400m-meta"
    for part in (0, 2):
        write_meta(meta, part)
    ids = tmp_path / "laion_face_ids.pth"
    torch.save([faces(p) if p in (0, 2) else [p * 1000] for p in range(32)], ids)
    return ids, meta


def prepare(*args):
    """The command's result, its output with rich's line wrapping undone."""
    res = CliRunner().invoke(main, ["prepare", "laion-face", *map(str, args)])
    res.said = " ".join(res.output.split())
    return res


def test_each_part_keeps_its_face_rows_and_the_counts_add_up(inputs, tmp_path):
    ids, meta = inputs
    removal = tmp_path / "removed.txt"
    removal.write_text("# Re-LAION removals\nhttps://example.com/3.jpg\n2006\n\n2001\nhttps://example.com/nowhere.jpg\n")
    res = prepare(ids, meta, "--out", tmp_path / "urls", "--parts", "0,2", "--removal-list", removal)
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "urls" / "laion_face_summary.json").read_text())
    p0, p2 = summary["parts"]
    assert p0 == {"part": 0, "rows": 300, "kept": 99, "removed": 1, "not_face": 200, "ids": 102, "ids_without_row": 2}
    assert p2 == {"part": 2, "rows": 300, "kept": 99, "removed": 1, "not_face": 200, "ids": 102, "ids_without_row": 2}
    assert summary["removal_list"] == {"entries": 4, "matched": 2}   # 2001 is no face; nowhere.jpg is nowhere
    assert "removal list: 2 of 4 entries named a face row" in res.said
    out = pq.read_table(tmp_path / "urls" / "laion_face_part_00000.parquet")
    assert out.schema == pq.read_schema(meta / laionface.META.format(0))          # every column, for img2dataset
    assert out.column("SAMPLE_ID").to_pylist() == [i for i in faces(0)[:100] if i != 3]
    assert pq.read_table(tmp_path / "urls" / "laion_face_part_00002.parquet").num_rows == 99
    assert 2006 not in pq.read_table(tmp_path / "urls" / "laion_face_part_00002.parquet").column("SAMPLE_ID").to_pylist()


def test_a_parquet_removal_list_and_ids_as_a_dict_of_tensors(inputs, tmp_path):
    _, meta = inputs
    ids = tmp_path / "ids-dict.pth"
    torch.save({p: torch.tensor(faces(p) if p in (0, 2) else [], dtype=torch.int64) for p in range(32)}, ids)
    removal = tmp_path / "removed.parquet"
    pq.write_table(pa.table({"SAMPLE_ID": pa.array([0, 3, 6], pa.int64())}), removal)
    res = prepare(ids, meta, "--out", tmp_path / "urls", "--parts", "0", "--removal-list", removal)
    assert res.exit_code == 0, res.output
    [p0] = json.loads((tmp_path / "urls" / "laion_face_summary.json").read_text())["parts"]
    assert (p0["kept"], p0["removed"]) == (97, 3)


@pytest.mark.parametrize("content, message", [
    ([np.array([1, 2, 3])] * 32, "refused: loading it would call numpy._core.multiarray._reconstruct;"),
    ([[1, 2]] * 31, "holds a list of 31; expected FaRL's 32 parts"),
    ([[1.5, 2.0]] * 32, "part 0 holds a list of float64, not a flat collection of integer SAMPLE_IDs"),
])
def test_a_file_that_needs_more_than_plain_data_is_refused(tmp_path, content, message):
    ids = tmp_path / "ids.pth"
    torch.save(content, ids)
    write_meta(tmp_path / "meta", 0)
    res = prepare(ids, tmp_path / "meta", "--out", tmp_path / "urls", "--parts", "0")
    assert res.exit_code == 1 and message in res.said, res.output
    assert not (tmp_path / "urls" / "laion_face_part_00000.parquet").exists()


def test_code_in_the_pickle_is_never_run(tmp_path, capsys):
    class Payload:
        def __reduce__(self):
            return (print, ("pickled code ran",))

    ids = tmp_path / "evil.pth"
    torch.save([Payload()] * 32, ids)
    with pytest.raises(laionface.PrepareError, match="evil.pth: refused: loading it would call .*print"):
        laionface.load_ids(ids)
    assert "pickled code ran" not in capsys.readouterr().out


def test_missing_metadata_parts_are_named_before_any_work(inputs, tmp_path):
    ids, meta = inputs
    res = prepare(ids, meta, "--out", tmp_path / "urls", "--parts", "20m")
    assert res.exit_code == 1 and "missing metadata part(s)" in res.said
    assert "part-00005-5b54c5d5-bbcf-484d-a2ce-0d6f73df1a36-c000.snappy.parquet" in res.said
    assert not (tmp_path / "urls").exists() or not list((tmp_path / "urls").iterdir())


def test_a_bad_removal_line_is_named(inputs, tmp_path):
    ids, meta = inputs
    removal = tmp_path / "removed.txt"
    removal.write_text("123\nnot a url\n")
    res = prepare(ids, meta, "--out", tmp_path / "urls", "--parts", "0", "--removal-list", removal)
    assert res.exit_code == 1 and "removed.txt:2: 'not a url' is neither a SAMPLE_ID nor an http(s) URL" in res.said


def test_one_part_at_a_time_in_row_group_batches(inputs, tmp_path, monkeypatch):
    """Memory is bounded by a part: its metadata is read in batches, never as one table."""
    ids, meta = inputs
    monkeypatch.setattr(laionface, "BATCH_ROWS", 64)
    monkeypatch.setattr(pq, "read_table", lambda *a, **k: pytest.fail("a metadata part read whole"))
    batches = []
    real = pq.ParquetFile.iter_batches

    def counting(self, *args, **kwargs):
        for b in real(self, *args, **kwargs):
            batches.append(b.num_rows)
            yield b

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    res = prepare(ids, meta, "--out", tmp_path / "urls", "--parts", "0,2")
    assert res.exit_code == 0, res.output
    assert max(batches) == 64 and sum(batches) == 600

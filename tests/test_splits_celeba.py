"""Split harmonization end to end through pipeline.convert, on the CelebA, CelebA-HQ mapping and
CelebA-Dialog samples: CelebA's partition decides every photo it lists, in every dataset."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from facecorpus import manifest
from facecorpus.converters import celeba, pipeline
from facecorpus.converters.samples import celeba as celeba_sample
from facecorpus.converters.samples import celebadialog as dialog_sample
from facecorpus.converters.samples import celebahq as hq_sample


@pytest.fixture
def root(tmp_path) -> Path:
    celeba_sample.write(tmp_path / "raw" / "celeba")
    hq_sample.write(tmp_path / "raw" / "celebahq")
    dialog_sample.write(tmp_path / "raw" / "celebadialog")
    return tmp_path / "raw"


def convert(sources: dict, out: Path, **kw) -> dict:
    return pipeline.convert(sources, out, console=Console(file=io.StringIO()), **kw)


def test_celeba_keeps_its_partition(root, tmp_path):
    out = tmp_path / "m"
    summary = convert({"celeba": root / "celeba"}, out, raw_root=root)
    df = manifest.read_records(out, ["celeba"])
    assert (df["split"] == df["source_split"]).all()
    assert summary.splits.records == {"train": 6, "val": 3, "test": 3}
    assert summary.splits.reassigned == [] and summary.splits.celeba_partition_photos == 12


def test_dialog_follows_the_celeba_partition_through_the_mapping(root, tmp_path):
    out = tmp_path / "m"
    summary = convert({"celebadialog": root / "celebadialog"}, out, raw_root=root)
    partition = celeba.read_partition(root / "celeba" / "list_eval_partition.txt")
    df = manifest.read_records(out, ["celebadialog"])
    assert len(df) == 20 and df["source_split"].isna().all()
    # Standard images are CelebA photos; HQ images reach theirs through the mapping.
    assert (df["split"] == df["photo_id"].map(partition)).all()
    hq = df[df["image_id"].str.startswith("celebahq/")]
    assert len(hq) == 5 and set(hq["photo_id"]) <= set(partition)
    moves = summary.splits.reassigned
    assert {m["decided_by"] for m in moves} == {"celeba-partition"} and sum(m["count"] for m in moves) == 20


def test_held_out_partition_wins_over_a_source_split(root, tmp_path):
    # A partition file that holds out 000001, which the CelebA attribute file's own partition trains on.
    moved = tmp_path / "list_eval_partition.txt"
    text = (root / "celeba" / "list_eval_partition.txt").read_bytes()
    moved.write_bytes(text.replace(b"000001.jpg 0", b"000001.jpg 2"))
    out = tmp_path / "m"
    summary = convert({"celeba": root / "celeba", "celebadialog": root / "celebadialog"}, out, celeba_partition=moved,
                      hq_mapping=root / "celebahq" / "CelebA-HQ-to-CelebA-mapping.txt")
    df = manifest.read_records(out)
    assert set(df.loc[df["photo_id"] == "celeba/000001", "split"]) == {"test"}
    assert {"dataset": "celeba", "from": "train", "to": "test", "decided_by": "celeba-partition", "count": 1} \
        in summary.splits.reassigned
    # Every record of one photo has one split, across both datasets.
    assert (df.groupby("photo_id")["split"].nunique() == 1).all()


def test_adding_a_dataset_later_reharmonizes(root, tmp_path):
    out = tmp_path / "m"
    convert({"celeba": root / "celeba"}, out, raw_root=root)
    summary = convert({"celebadialog": root / "celebadialog"}, out, raw_root=root)
    df = manifest.read_records(out)
    assert set(df["dataset"]) == {"celeba", "celebadialog"} and len(df) == 32
    assert set(summary.datasets) == {"celeba", "celebadialog"}
    assert (df.groupby("photo_id")["split"].nunique() == 1).all()
    assert set(df.loc[df["photo_id"] == "celeba/000010", "split"]) == {"test"}

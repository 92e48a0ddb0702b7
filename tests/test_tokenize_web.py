"""tokenize reads a web set's images where img2dataset left them: tar members by byte range (one open per
tar, nothing extracted) and Parquet cells, with the face box cropped in the one preprocessing path; the
pixels and codes equal those of the same images read as files (tests/data/img2dataset)."""

from __future__ import annotations

import io
import logging
import os
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from facecorpus import manifest
from facecorpus.codes import FFHQ_F16
from facecorpus.converters import pipeline
from facecorpus.preprocess import load_image, preprocess_uint8
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger
from facecorpus.shards.plan import plan
from facecorpus.shards.reading import OK, REFUSED, read_batch, read_one
from facecorpus.shards.tokenization import Options, tokenize
from tokenkit import tokenize_in_process

DATA = Path(__file__).parent / "data" / "img2dataset"
BOXED = {"licence": "CC-BY-4.0", "bbox_column": "face_box", "resize_mode": "border"}
SIZE = FFHQ_F16.resolution


def web_manifest(root: Path, fmt: str, boxes: bool = True) -> Path:
    """root/<fmt>/ (a copy of the fixture's folder) converted into root/manifest-<fmt>."""
    raw = root / fmt
    if not raw.exists():
        shutil.copytree(DATA / fmt, raw)
    out = root / f"manifest-{fmt}{'' if boxes else '-whole'}"
    options = BOXED if boxes else {"licence": "CC-BY-4.0"}
    pipeline.convert({"web": raw}, out, converters={"web": "img2dataset"}, overrides={"web": options}, jobs=1)
    return out


def read_plan(manifest_dir: Path) -> dict[str, tuple[str, str, bool, np.ndarray | None]]:
    """image_id -> (stage, message, outside, pixels) through the read stage, all in one read task."""
    p = plan(manifest_dir)
    batch = {c: p[c].to_numpy() for c in p.columns}
    out = read_batch(batch, SIZE)
    return {i: (s, m, o, px if s == OK else None)
            for i, s, m, o, px in zip(out["image_id"], out["stage"], out["message"], out["outside"], out["pixels"])}


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("web")


def test_tar_members_are_read_in_place_with_one_open_per_tar(root, monkeypatch):
    m = web_manifest(root, "webdataset")
    opened = Counter()
    real_open = os.open

    def counting_open(path, *args, **kwargs):
        opened[Path(path).name] += 1
        return real_open(path, *args, **kwargs)

    def no_extraction(*_args, **_kwargs):
        raise AssertionError("a tar member was extracted")

    monkeypatch.setattr(os, "open", counting_open)
    for name in ("extract", "extractall", "extractfile"):
        monkeypatch.setattr(tarfile.TarFile, name, no_extraction)
    reads = read_plan(m)
    assert len(reads) == 16 and {s for s, *_ in reads.values()} == {OK}
    # 00003.tar holds only 000030, whose face box is missing (filtered): never opened
    assert opened == Counter({"00000.tar": 1, "00001.tar": 1, "00002.tar": 1})


@pytest.mark.parametrize("fmt", ["webdataset", "parquet"])
def test_pixels_from_a_container_equal_those_of_the_same_files_with_the_face_cropped(root, fmt):
    inside, files = read_plan(web_manifest(root, fmt)), read_plan(web_manifest(root, "files"))
    assert inside.keys() == files.keys()
    recs = {r["image_id"]: r for r in manifest.read_table(root / "manifest-files").to_pylist()}
    for image_id, (stage, _, _, pixels) in inside.items():
        assert stage == OK and np.array_equal(pixels, files[image_id][3]), image_id
        rec = recs[image_id]
        want = preprocess_uint8(load_image(root / "files" / rec["image"]), rec["bbox"], size=SIZE)
        assert np.array_equal(pixels, want), image_id          # the face crop is what the encoder gets
    whole = read_plan(web_manifest(root, fmt, boxes=False))
    assert not np.array_equal(whole["web/000000"][3], inside["web/000000"][3])


@pytest.mark.slow
def test_codes_of_tar_members_equal_codes_of_the_same_files(root):
    tokenize_in_process(web_manifest(root, "webdataset"), root / "cache-tar")
    tokenize_in_process(web_manifest(root, "files"), root / "cache-files")
    tar, files = (cache_mod.read_codes(root / c).to_pydict() for c in ("cache-tar", "cache-files"))
    assert len(tar["image_id"]) == 16
    by_id = dict(zip(files["image_id"], files["codes"]))
    assert all(np.array_equal(c, by_id[i]) for i, c in zip(tar["image_id"], tar["codes"]))


def test_a_tar_rewritten_since_convert_fails_its_members_not_the_run(root, tmp_path):
    m = web_manifest(tmp_path, "webdataset")
    path = tmp_path / "webdataset" / "00001.tar"
    with tarfile.open(path) as tar:
        members = [(info, tar.extractfile(info).read()) for info in tar]
    with tarfile.open(path, "w") as tar:           # the same members, another order: other offsets
        for info, data in reversed(members):
            tar.addfile(info, io.BytesIO(data))
    reads = read_plan(m)
    failed = {i: msg for i, (s, msg, _, _) in reads.items() if s != OK}
    assert set(failed) == {"web/000010", "web/000012", "web/000014", "web/000015", "web/000017", "web/000018"}
    assert all("rewritten since convert" in msg for msg in failed.values())
    assert {reads[i][0] for i in failed} == {"read"}


def test_a_tar_linked_from_outside_the_dataset_folder_is_refused(root, tmp_path):
    m = web_manifest(tmp_path, "webdataset", boxes=False)  # 19 records, 000030 the only one in 00003.tar
    elsewhere = tmp_path / "elsewhere.tar"
    shutil.move(tmp_path / "webdataset" / "00003.tar", elsewhere)
    (tmp_path / "webdataset" / "00003.tar").symlink_to(elsewhere)
    reads = read_plan(m)
    assert reads["web/000030"][:1] == (REFUSED,) and reads["web/000030"][2]
    assert sum(s == OK for s, *_ in reads.values()) == 18
    row = plan(m).set_index("image_id").loc["web/000030"]
    assert read_one(row["path"], row["root"], row["bbox"], SIZE, allow_outside=True).stage == OK


@pytest.mark.slow
def test_ray_tokenize_of_a_web_set_equals_the_reference_on_files(root, tmp_path):
    """The whole tokenize on Ray, reading tar members, against the reference tokenizer on the files."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        s = tokenize(web_manifest(root, "webdataset"), tmp_path / "cache", Options(batch_size=8, part_rows=8))
    finally:
        ray.shutdown()
    assert s["accounted"] and s["cached"] == 16 and s["ledgered"] == 0
    tokenize_in_process(web_manifest(root, "files"), tmp_path / "ref")
    got, want = (cache_mod.read_codes(tmp_path / c).to_pydict() for c in ("cache", "ref"))
    want = dict(zip(want["image_id"], want["codes"]))
    assert sorted(got["image_id"]) == sorted(want)
    assert all(np.array_equal(c, want[i]) for i, c in zip(got["image_id"], got["codes"]))
    assert not ledger.read_ledger(tmp_path / "cache", set(got["image_id"]))

"""The readers users reach for read our shards as they are: webdataset.WebDataset and
ray.data.read_webdataset (from s3:// too, on a loopback S3 server) and Hugging Face datasets'
`load_dataset("webdataset", ...)`, which infers one Arrow schema from every sample: the `json`
member must be the same six strings for a web set's records as for the curated sets'."""

from __future__ import annotations

import importlib
import json
import logging
import tarfile
from pathlib import Path

import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner

import s3kit
from facecorpus import manifest, storage
from facecorpus.cli import main
from facecorpus.converters.samples import img2dataset as web_sample
from shardkit import record, write_shards

JSON_FIELDS = ["dataset", "image_id", "key", "kind", "labels", "split"]


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Shards of a web set as `convert img2dataset` made its records, beside curated records whose
    labels differ in type (an age that is a number in one set and a bin in another)."""
    root = tmp_path_factory.mktemp("readers")
    web_sample.write(root / "raw" / "web", seed=0, n=16, per_shard=8)
    o = web_sample.OPTIONS
    res = CliRunner().invoke(main, ["convert", "img2dataset", str(root / "raw" / "web"), "--out", str(root / "manifest"),
                                    "--licence", o["licence"], "--bbox-column", o["bbox_column"],
                                    "--bbox-format", o["bbox_format"], "--resize-mode", o["resize_mode"]])
    assert res.exit_code == 0, res.output
    cols = ["key", "dataset", "split", "kind", "image_id", "text", "labels"]
    web = manifest.read_table(root / "manifest", ["web"], cols).to_pylist()
    assert web and all(isinstance(json.loads(r["labels"]), dict) for r in web)
    curated = [record("cacd", "00001", "attributes", "train", "cacd age: 25", {"age": 25}),
               record("fairface", "00002", "attributes", "train", "fairface age: 10-19", {"age": "10-19"})]
    return write_shards(root / "shards", curated + web, samples_per_shard=8)


def tars(root: Path) -> list[str]:
    index = json.loads((root / "index.json").read_text())
    return [s["path"] for s in index["shards"]]


def members(root: Path) -> dict[str, dict[str, bytes]]:
    """key -> suffix -> bytes, read with tarfile: what every reader must give back."""
    out: dict[str, dict[str, bytes]] = {}
    for rel in tars(root):
        with tarfile.open(root / rel) as tar:
            for m in tar.getmembers():
                key, _, suffix = m.name.partition(".")
                out.setdefault(key, {})[suffix] = tar.extractfile(m).read()
    return out


def test_huggingface_datasets_reads_every_sample_with_one_json_schema(shards, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    ds = datasets.load_dataset("webdataset", data_files={"train": [str(shards / t) for t in tars(shards)]},
                               split="train", cache_dir=str(tmp_path / "hf"))
    want = members(shards)
    assert len(ds) == len(want) and len({r["dataset"] for r in (json.loads(m["json"]) for m in want.values())}) == 3
    schema = ds.features["json"]
    assert sorted(schema) == JSON_FIELDS and all(schema[f] == datasets.Value("string") for f in JSON_FIELDS)
    for row in ds:
        assert row["json"] == json.loads(want[row["__key__"]]["json"])
        assert row["txt"] == want[row["__key__"]]["txt"].decode()
        json.loads(row["json"]["labels"])      # lossless: the manifest's own JSON text


@pytest.fixture(scope="module")
def on_s3(shards):
    """The same shards in a bucket of a loopback S3 server; yields their s3:// folder."""
    with s3kit.s3_server() as _:
        fs, _ = storage.filesystem(f"s3://{s3kit.BUCKET}/")
        pafs.copy_files(str(shards), f"{s3kit.BUCKET}/shards", source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=fs)
        yield f"s3://{s3kit.BUCKET}/shards"


def test_webdataset_reads_the_shards_from_s3(shards, on_s3, monkeypatch):
    import webdataset
    wds_gopen = importlib.import_module("webdataset.gopen")   # the package exports a function of that name

    # webdataset opens URLs through its gopen_schemes table; s3 is not in it (docs/web-datasets.md).
    monkeypatch.setitem(wds_gopen.gopen_schemes, "s3", lambda url, mode, bufsize, **kw: storage.open_input(url))
    urls = [f"{on_s3}/{t}" for t in tars(shards)]
    got = {s["__key__"]: {k: v for k, v in s.items() if not k.startswith("__")}
           for s in webdataset.WebDataset(urls, shardshuffle=False, empty_check=False)}
    assert got == members(shards)


@pytest.mark.slow   # starting Ray takes ~20 s on the shared CI cores
def test_ray_data_reads_the_shards_from_s3(shards, on_s3):
    ray = pytest.importorskip("ray")
    fs, _ = storage.filesystem(on_s3)
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        rows = ray.data.read_webdataset([f"{on_s3}/{t}"[len("s3://"):] for t in tars(shards)], filesystem=fs,
                                        decoder=None).take_all()
    finally:
        ray.shutdown()
    want = members(shards)
    assert sorted(r["__key__"] for r in rows) == sorted(want)
    assert all(r["json"] == want[r["__key__"]]["json"] and r["npy"] == want[r["__key__"]]["npy"] for r in rows)

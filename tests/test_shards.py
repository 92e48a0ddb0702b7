"""`facecorpus shard` and `verify`: exact shard sizes, byte-identical rebuilds, index.json contract,
ledgered records counted, tampering found, and reading back through webdataset with a node splitter."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner
from facecorpus.shards import index as index_mod
from facecorpus.shards.cli import shard as shard_cmd
from facecorpus.shards.cli import verify as verify_cmd
from facecorpus.shards.sample import make_manifest, tokenize_in_process
from facecorpus.shards.verify import verify
from facecorpus.shards.writer import ShardError, shard

from facecorpus.preprocess import POLICY
from facecorpus.vocab import VOCAB_SHA256
from facecorpus.vqgan import load_vqgan

N = 7  # samples per shard


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    manifest = make_manifest(root, 40, seed=2)
    tokenize_in_process(manifest, root / "cache")
    return root, manifest, root / "cache"


@pytest.fixture(scope="module")
def built(corpus, tmp_path_factory):
    _root, manifest, cache = corpus
    out = tmp_path_factory.mktemp("shards")
    counts = shard(manifest, cache, out, samples_per_shard=N, seed=5)
    return out, counts, json.loads((out / "index.json").read_text())


def _tar_bytes(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*.tar"))}


def test_index_contract_and_counts(built):
    _out, _counts, index = built
    assert list(index) == list(index_mod.KEYS)
    assert index["format"] == "facecorpus-shards/1" and index["seed"] == 5 and index["samples_per_shard"] == N
    assert index["preprocess"] == POLICY
    assert index["vqgan"] == load_vqgan("tiny-f16").identity
    assert index["text_vocab"] == {"name": "bert-base-uncased", "sha256": VOCAB_SHA256}
    c = index["counts"]
    # 4 broken images: their records are counted as skipped, never silently missing.
    assert c["records"] == c["samples"] + c["skipped_ledgered_image"] and c["skipped_ledgered_image"] >= 4
    assert c["ledgered_images"] == 4 and c["samples"] == sum(s["count"] for s in index["shards"])
    for entry in index["shards"]:
        assert set(entry) == {"path", "split", "kind", "count", "bytes", "sha256"}
        assert entry["path"].startswith(f"{entry['split']}/{entry['kind']}-")
    groups = {}
    for entry in index["shards"]:
        groups.setdefault((entry["split"], entry["kind"]), []).append(entry["count"])
    for sizes in groups.values():  # exactly N per shard except the last of each (split, kind)
        assert all(s == N for s in sizes[:-1]) and 1 <= sizes[-1] <= N


def test_sample_layout(built):
    out, _, index = built
    entry = index["shards"][0]
    with tarfile.open(out / entry["path"]) as tar:
        members = tar.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.mode == 0o444 for m in members)
        first = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in members[:3]}
        key = members[0].name.split(".")[0]
    codes = np.load(io.BytesIO(first["npy"]))
    assert codes.dtype == np.uint16 and codes.shape == (16, 16)
    meta = json.loads(first["json"])
    assert set(meta) == {"key", "dataset", "split", "kind", "image_id", "labels"}
    assert meta["key"].replace("/", "-") == key and isinstance(meta["labels"], dict)
    assert meta["split"] == entry["split"] and first["txt"].decode()


def test_byte_identical_rebuild_and_seed_matters(corpus, built, tmp_path):
    _root, manifest, cache = corpus
    out, _, _ = built
    shard(manifest, cache, tmp_path / "again", samples_per_shard=N, seed=5)
    assert _tar_bytes(tmp_path / "again") == _tar_bytes(out)
    assert (tmp_path / "again" / "index.json").read_bytes() == (out / "index.json").read_bytes()
    shard(manifest, cache, tmp_path / "other", samples_per_shard=N, seed=6)
    assert _tar_bytes(tmp_path / "other") != _tar_bytes(out)


def test_rerun_into_same_folder_removes_stale_shards(corpus, tmp_path):
    _root, manifest, cache = corpus
    out = tmp_path / "s"
    shard(manifest, cache, out, samples_per_shard=3, seed=0)
    (out / "train" / "attributes-000000.tar.tmp").write_bytes(b"half a tar")
    shard(manifest, cache, out, samples_per_shard=50, seed=0)
    assert verify(out)["problems"] == []
    assert not list(out.rglob("*.tmp"))


def test_verify_passes_then_finds_tampering(built, tmp_path):
    out, _, index = built
    assert verify(out) == {"shards": len(index["shards"]), "samples": index["counts"]["samples"],
                           "bytes": sum(s["bytes"] for s in index["shards"]), "problems": []}
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    victim = bad / index["shards"][0]["path"]
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    (bad / "val" / "attributes-999999.tar").write_bytes(b"")
    problems = verify(bad)["problems"]
    assert any("sha256 differ" in p for p in problems)
    assert any("not listed in index.json" in p for p in problems)
    (bad / "index.json").unlink()
    with pytest.raises(index_mod.IndexError_, match="index.json is missing"):
        verify(bad)


def test_records_whose_image_was_never_tokenized_stop_the_run(corpus, tmp_path):
    _root, manifest, _ = corpus
    from facecorpus.shards.cache import open_cache

    cache = open_cache(tmp_path / "empty", load_vqgan("tiny-f16").identity, POLICY)  # tokenize never ran
    with pytest.raises(ShardError, match="neither in the token cache .* nor in its ledger"):
        shard(manifest, cache, tmp_path / "out")


def test_webdataset_with_node_splitter_reads_exactly_the_indexed_samples(built, monkeypatch):
    webdataset = pytest.importorskip("webdataset")
    out, _, index = built
    urls = [str(out / s["path"]) for s in index["shards"]]
    seen = []
    for rank in range(2):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", str(rank))
        ds = webdataset.WebDataset(urls, shardshuffle=False, nodesplitter=webdataset.split_by_node, empty_check=False)
        seen += [s["__key__"] for s in ds]
    want = []
    for s in index["shards"]:
        with tarfile.open(out / s["path"]) as tar:
            want += sorted({m.name.split(".")[0] for m in tar})
    assert sorted(seen) == sorted(want) and len(seen) == index["counts"]["samples"]


def test_cli_shard_and_verify(corpus, tmp_path):
    _root, manifest, cache = corpus
    out = tmp_path / "cli"
    r = CliRunner().invoke(shard_cmd, [str(manifest), "--cache", str(cache), "--out", str(out), "--samples-per-shard", "10"])
    assert r.exit_code == 0, r.output
    assert CliRunner().invoke(verify_cmd, [str(out)]).exit_code == 0
    (out / "index.json").write_text(json.dumps({**json.loads((out / "index.json").read_text()), "counts": {
        "records": 1, "samples": 1, "skipped_ledgered_image": 0}}))
    r = CliRunner().invoke(verify_cmd, [str(out)])
    assert r.exit_code == 1
    r = CliRunner().invoke(shard_cmd, [str(manifest), "--cache", str(tmp_path), "--out", str(out)])
    assert r.exit_code != 0 and "run `facecorpus tokenize` first" in r.output

"""`facecorpus shard` and `verify`: exact shard sizes, byte-identical rebuilds, index.json contract,
ledgered records counted, tampering found, and reading back through webdataset with a node splitter."""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

from facecorpus.codes import FFHQ_F16, CodeGrid
from facecorpus.preprocess import POLICY
from facecorpus.shards import format as fmt
from facecorpus.shards import writer
from facecorpus.shards.cli import shard as shard_cmd
from facecorpus.shards.cli import verify as verify_cmd
from facecorpus.shards.verify import verify
from facecorpus.shards.writer import ShardError, shard
from facecorpus.vocab import VOCAB_SHA256
from facecorpus.vqgan import load_vqgan
from shardkit import IDENTITY, edit_index, record, rewrite_tar, write_shards
from tokenkit import make_manifest, tokenize_in_process

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
    assert list(index) == list(fmt.KEYS)
    assert index["format"] == "facecorpus-shards/2" and index["seed"] == 5 and index["samples_per_shard"] == N
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
    assert all(isinstance(v, str) for v in meta.values()) and isinstance(json.loads(meta["labels"]), dict)
    assert meta["key"].replace("/", "-") == key
    assert meta["split"] == entry["split"] and first["txt"].decode()


def test_json_members_have_one_schema_across_datasets(tmp_path):
    # Hugging Face `datasets` infers one Arrow schema from the first samples and merges them; labels
    # whose types change between datasets (cacd age 25, fairface age "10-19") made it fail with
    # "ArrowTypeError: Unable to merge: Field json ... age: string vs int64".
    out = write_shards(tmp_path, [
        record("cacd", "c1", "attributes", "train", "cacd age: 25", {"age": 25}),
        record("fairface", "f1", "attributes", "train", "fairface age: 10-19", {"age": "10-19"}),
        record("celeba", "e1", "attributes", "train", "celeba bald: true", {"bald": True}),
        record("celeba", "e1", "caption", "train", "a man"),
    ])
    tables = []
    for rel in sorted(p.relative_to(out).as_posix() for p in out.rglob("*.tar")):
        for _key, members in fmt.tar_samples((out / rel).read_bytes(), rel):
            tables.append(pa.Table.from_pylist([{"json": json.loads(members["json"])}]))
    assert len(tables) == 4 and len({t.schema for t in tables}) == 1
    assert pa.concat_tables(tables, promote_options="default").num_rows == 4   # what `datasets` does


def test_the_code_grid_comes_from_the_index(tmp_path):
    big = CodeGrid(8192, 21, 336)   # a second VQGAN: 8,192 codes on 21x21
    rec = record("cacd", "c1", "attributes", "train", "cacd age: 25", {"age": 25})
    codes = np.full(big.shape, 8191, np.uint16)
    identity = {**IDENTITY, "vqgan": {**IDENTITY["vqgan"], **big.as_dict()}}
    writer.write(tmp_path, [(rec, codes)], identity, big, {"records": 1, "skipped_ledgered_image": 0})
    index = fmt.read_index(tmp_path)
    assert index.grid == big and index.data["vqgan"]["grid"] == [21, 21]
    assert verify(tmp_path)["problems"] == []
    assert fmt.read_shard(index, index.shards[0])[0].codes.tolist() == codes.tolist()
    edit_index(tmp_path, lambda i: i["vqgan"].update(FFHQ_F16.as_dict()))   # the index now says 16x16
    assert verify(tmp_path)["problems"] == [f"{tmp_path / index.shards[0].path}: sample 'cacd-c1-attributes-0': "
                                            "npy: it holds uint16 (21, 21), expected uint16 (16, 16)"]
    with pytest.raises(fmt.FormatError, match="outside the codebook of 1024"):
        writer.write(tmp_path, [(rec, np.full((16, 16), 1024, np.uint16))], IDENTITY, FFHQ_F16, {})


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


GOOD = _npy(np.zeros((16, 16), np.uint16))


@pytest.mark.parametrize("npy, says", [
    (_npy(np.array([{"a": 1}], dtype=object)), "it holds object (1,)"),            # a pickle inside the npy
    (GOOD.replace(b"(16, 16), }", b"(99999999999, 9)}"), "it holds uint16 (99999999999, 9)"),  # never allocated
    (_npy(np.asfortranarray(np.arange(256, dtype=np.uint16).reshape(16, 16))), "it holds uint16 (16, 16) in Fortran order"),
    (_npy(np.zeros((16, 16), np.int64)), "it holds int64 (16, 16)"),
    (GOOD[:-3], "EOF: reading array data, expected 512 bytes got 509"),
    (_npy(np.full((16, 16), 1024, np.uint16)), "code 1024 is outside the codebook of 1024"),
])
def test_codes_are_read_only_as_the_grid_says(npy, says):
    rec = record("cacd", "c1", "attributes", "train", "cacd age: 25", {"age": 25})
    key, members = fmt.encode(rec, np.zeros((16, 16), np.uint16), FFHQ_F16)
    entry = fmt.ShardEntry("train/attributes-000000.tar", "train", "attributes", 1, 0, "0" * 64)
    assert fmt.decode(key, members, FFHQ_F16, entry, "x.tar").labels == {"age": 25}
    with pytest.raises(fmt.FormatError, match=re.escape(f"x.tar: sample 'cacd-c1-attributes-0': npy: {says}")):
        fmt.decode(key, {**members, "npy": npy}, FFHQ_F16, entry, "x.tar")


def test_write_tar_hashes_what_it_writes(tmp_path):
    samples = [fmt.encode(record("cacd", f"c{i}", "attributes", "train", "cacd age: 25", {"age": 25}),
                          np.zeros((16, 16), np.uint16), FFHQ_F16) for i in range(3)]
    size, sha = fmt.write_tar(tmp_path / "a.tar", samples)
    data = (tmp_path / "a.tar").read_bytes()
    assert (size, sha) == (len(data), hashlib.sha256(data).hexdigest()) and not list(tmp_path.glob("*.tmp"))
    assert [k for k, _ in fmt.tar_samples(data, "a.tar")] == [k for k, _ in samples]


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
    with pytest.raises(fmt.FormatError, match="index.json is missing"):
        verify(bad)


def test_verify_lists_every_broken_sample_and_repeated_keys(built, tmp_path):
    import shutil

    out, _, index = built
    bad = shutil.copytree(out, tmp_path / "bad")
    first, second = (e["path"] for e in index["shards"][:2])
    keys = [k for k, _ in fmt.tar_samples((bad / first).read_bytes(), first)]
    rewrite_tar(bad, first, lambda m: {**m, f"{keys[0]}.txt": b"\xff", f"{keys[1]}.json": b"{}"})
    other = fmt.tar_samples((bad / second).read_bytes(), second)[0][0]
    rewrite_tar(bad, second, lambda m: {n.replace(other, keys[2]): v for n, v in m.items()})
    problems = verify(bad)["problems"]
    assert any(f"sample '{keys[0]}': txt is not UTF-8" in p for p in problems)
    assert any(f"sample '{keys[1]}': json holds {{}}" in p for p in problems)
    assert any(f"{bad / second}: sample '{keys[2]}' is also in another shard" in p for p in problems)


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

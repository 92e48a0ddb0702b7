"""`facecorpus tokenize` on local Ray: ledger, resume, injected encoder failures, golden codes, interop."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger
from facecorpus.shards.pipeline import Options, plan, tokenize
from facecorpus.shards.sample import FaultProbe, make_manifest

from facecorpus.preprocess import load_image, preprocess
from facecorpus.vqgan import load_vqgan

N_IMAGES = 100  # + 4 broken files; 1 injected encoder failure = 1%


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_session):
    """First run with 1% injected encoder failures, then a clean rerun; both probes' logs."""
    root = tmp_path_factory.mktemp("tok")
    manifest = make_manifest(root, N_IMAGES, seed=1)
    ids = sorted(plan(manifest)["image_id"])
    inject = {i for i in ids if not any(b in i for b in ("missing", "empty", "truncated", "garbage"))}
    inject = set(sorted(inject)[::100])
    first = FaultProbe(root / "calls1.txt", inject)
    s1 = tokenize(manifest, root / "cache", Options(probe=first, part_rows=64, batch_size=16))
    led1 = ledger.read_ledger(root / "cache", cache_mod.cached_ids(root / "cache"))
    second = FaultProbe(root / "calls2.txt")
    s2 = tokenize(manifest, root / "cache", Options(probe=second, part_rows=64, batch_size=16))
    return {"root": root, "manifest": manifest, "inject": inject, "s1": s1, "s2": s2, "led1": led1, "first": first, "second": second}


def test_failures_are_ledgered_by_stage_and_counts_add_up(run):
    s1 = run["s1"]
    assert len(run["inject"]) == 1
    assert s1["unique_images"] == N_IMAGES + 4 == s1["cached"] + s1["ledgered"]
    assert s1["accounted"] and s1["cached"] == N_IMAGES - 1
    by = {r["image_id"].split("/")[1]: r for r in run["led1"]}
    assert by["missing"]["stage"] == "read" and "missing" in by["missing"]["message"]
    assert by["empty"]["stage"] == "read" and by["empty"]["message"] == "zero-byte file"
    assert by["truncated"]["stage"] == "decode" and by["garbage"]["stage"] == "decode"
    encode_failed = {r["image_id"] for r in run["led1"] if r["stage"] == "encode"}
    assert encode_failed == run["inject"]
    assert all("injected encoder failure" in r["message"] for r in run["led1"] if r["stage"] == "encode")


def test_rerun_retries_only_the_ledgered_images(run):
    s2 = run["s2"]
    # Broken files fail before the encoder; the injected ones are the only encoder calls.
    calls = run["second"].calls()
    assert sorted(calls) == sorted(run["inject"])
    assert s2["cached_before"] == N_IMAGES - 1 and s2["encoded"] == 1
    assert s2["cached"] == N_IMAGES and s2["ledgered"] == 4 and s2["accounted"]
    assert s2["ledgered_encode"] == 0
    # The first run called the encoder for every readable image (and again, alone, for the failing batches).
    assert set(run["first"].calls()) == {i for i in plan(run["manifest"])["image_id"]
                                         if i.split("/")[1].startswith("i")}


def test_golden_pipeline_codes_equal_in_process_encode(run):
    model = load_vqgan("tiny-f16")
    table = cache_mod.read_codes(run["root"] / "cache")
    assert set(table.column("vqgan_checkpoint_sha256").to_pylist()) == {model.identity["checkpoint_sha256"]}
    got = dict(zip(table.column("image_id").to_pylist(), table.column("codes").to_numpy(zero_copy_only=False)))
    images = plan(run["manifest"]).set_index("image_id")
    check = sorted(got)[:: max(1, len(got) // 24)]  # 24 images across datasets, modes and boxes
    x = []
    for image_id in check:
        row = images.loc[image_id]
        box = [int(v) for v in row["bbox"].split(",")] if row["bbox"] else None
        x.append(preprocess(load_image(Path(row["path"])), box))
    want = model.encode(torch.stack(x)).reshape(len(check), -1).numpy()
    assert np.array_equal(np.stack([got[i] for i in check]).astype(np.int64), want)
    assert any(images.loc[i, "bbox"] for i in check)


def test_other_vqgan_on_same_cache_is_refused(run, tmp_path):
    sd = load_vqgan("tiny-f16").state_dict()
    sd["quant_conv.bias"] = sd["quant_conv.bias"] + 1
    ckpt = tmp_path / "other.pt"
    torch.save(sd, ckpt)
    with pytest.raises(cache_mod.CacheError, match="Use another --cache"):
        tokenize(run["manifest"], run["root"] / "cache", Options(ckpt=str(ckpt)))


def test_shards_read_back_through_ray_read_webdataset(run, ray_session, tmp_path):
    from facecorpus.shards.writer import shard

    out = tmp_path / "shards"
    shard(run["manifest"], run["root"] / "cache", out, samples_per_shard=50, seed=3)
    import json

    index = json.loads((out / "index.json").read_text())
    paths = [str(out / s["path"]) for s in index["shards"]]
    rows = ray_session.data.read_webdataset(paths, decoder=None).take_all()
    assert sorted(r["__key__"] for r in rows) == sorted(_index_keys(out, index))
    assert len(rows) == index["counts"]["samples"]


def _index_keys(out: Path, index: dict) -> list[str]:
    import tarfile

    keys = []
    for s in index["shards"]:
        with tarfile.open(out / s["path"]) as tar:
            names = {m.name.split(".")[0] for m in tar}
        assert len(names) == s["count"]
        keys += names
    return keys


def test_cli_help_and_clear_error_without_weights(tmp_path):
    from click.testing import CliRunner
    from facecorpus.shards.cli import tokenize as tokenize_cmd

    r = CliRunner().invoke(tokenize_cmd, ["--help"])
    assert r.exit_code == 0 and "--ray-address" in r.output and "ledger" in r.output
    manifest = make_manifest(tmp_path, 2, broken=False, captions=False)
    r = CliRunner().invoke(tokenize_cmd, [str(manifest), "--vqgan", "ffhq-f16", "--cache", str(tmp_path / "c")])
    assert r.exit_code == 1 and "ships no weights: pass --ckpt" in r.output

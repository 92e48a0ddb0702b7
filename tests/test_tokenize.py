"""`facecorpus tokenize` on local Ray: ledger, resume, injected encoder failures, golden codes, interop."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger
from facecorpus.shards.pipeline import Options, plan, read_rows, tokenize
from facecorpus.shards.sample import FaultProbe, make_manifest, null_vqgan

from facecorpus.preprocess import load_image, preprocess, to_model_input
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
    # The failing batch was retried in halves and said so; a batch that fails is never silent.
    assert 1 <= s1["encode_retried"] <= 16 and run["s2"]["encode_retried"] == 0


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


def test_null_encoder_run_accounts_for_every_image(run, tmp_path):
    """The benchmark's stand-in encoder goes through the same plumbing: every readable image cached
    (as zero codes, under the stand-in's own identity), the broken ones ledgered."""
    s = tokenize(run["manifest"], tmp_path / "null", Options(model=null_vqgan, batch_size=16, part_rows=40))
    assert s["accounted"] and s["encoded"] == s["cached"] == N_IMAGES and s["ledgered"] == 4
    assert s["vqgan"] == "null-encoder"
    codes = cache_mod.read_codes(tmp_path / "null").column("codes").to_numpy(zero_copy_only=False)
    assert len(codes) == N_IMAGES and not np.stack(codes).any()
    assert cache_mod.read_identity(tmp_path / "null")["vqgan"]["checkpoint_sha256"] == "null"


@pytest.mark.parametrize(("n", "batch", "cpus", "rows"), [
    (20000, 256, 16, 256),  # plenty of work: whole encoder batches per read task
    (2000, 256, 16, 16),    # small run: split until every CPU gets several tasks, not under 16
    (4000, 256, 2, 256),
    (100, 16, 2, 16),
    (10, 256, 16, 16),
])
def test_read_rows_gives_every_cpu_work_in_whole_fractions_of_a_batch(n, batch, cpus, rows):
    got = read_rows(n, batch, cpus)
    assert got == rows and batch % got == 0


def test_model_input_is_the_reference_arithmetic_and_leaves_a_read_only_input_alone():
    x = np.random.default_rng(0).integers(0, 256, (3, 256, 256, 3), dtype=np.uint8)
    x.setflags(write=False)  # as Ray hands batches out
    want = torch.from_numpy(x.copy()).movedim(-1, -3).float() / 255.0 * 2 - 1
    got = to_model_input(x)
    assert got.dtype == torch.float32 and got.shape == (3, 3, 256, 256)
    assert torch.equal(got, want) and got.stride() == want.stride()
    assert got.data_ptr() != x.ctypes.data


class _SmallDevice:
    """A probe that fails like a device out of memory for calls of more than `most` images."""

    def __init__(self, most: int):
        self.most, self.sizes = most, []

    def __call__(self, image_ids):
        self.sizes.append(len(image_ids))
        if len(image_ids) > self.most:
            raise RuntimeError("CUDA out of memory. Tried to allocate 12.00 GiB")


def test_out_of_memory_batches_go_through_in_halves_and_later_ones_start_small():
    from facecorpus.shards.pipeline import OK, Encoder

    threads = torch.get_num_threads()  # the Encoder sets them; give the test process its own back
    probe = _SmallDevice(4)
    try:
        enc = Encoder("tiny-f16", None, False, 1, probe, null_vqgan)
    finally:
        torch.set_num_threads(threads)
    n = 16
    batch = {"image_id": np.array([f"d/{i}" for i in range(n)], dtype=object),
             "path": np.array(["p"] * n, dtype=object), "pixels": np.zeros((n, 256, 256, 3), np.uint8),
             "stage": np.array([OK] * n, dtype=object), "message": np.array([""] * n, dtype=object)}
    out = enc(batch)
    assert list(out["stage"]) == [OK] * n and out["retried"].sum() == n
    assert probe.sizes == [16, 8, 4, 4, 8, 4, 4]
    probe.sizes.clear()
    out = enc(batch)  # the next batch is split up front: no failed call, nothing retried
    assert list(out["stage"]) == [OK] * n and out["retried"].sum() == 0 and probe.sizes == [4, 4, 4, 4]

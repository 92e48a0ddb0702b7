"""`facecorpus tokenize` on local Ray: ledger, resume, injected encoder failures, golden codes, interop,
and the read stage's refusals (links out of the dataset folder, FIFOs, pixels with no faithful picture)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from facecorpus import atomic
from facecorpus.codes import FFHQ_F16
from facecorpus.preprocess import POLICY, load_image, preprocess, to_model_input
from facecorpus.shards import cache as cache_mod
from facecorpus.shards import ledger
from facecorpus.shards.encoder import Encoder
from facecorpus.shards.plan import plan
from facecorpus.shards.reading import OK, read_one
from facecorpus.shards.tokenization import Options, read_rows, tokenize
from facecorpus.vqgan import load_vqgan
from tokenkit import (
    NullVQGAN,
    ProbedVQGAN,
    image_digests,
    make_manifest,
    null_vqgan,
    tokenize_in_process,
    write_manifest,
)

N_IMAGES = 100  # + 4 broken files; 1 injected encoder failure = 1%
SIZE = FFHQ_F16.resolution


@pytest.fixture(scope="module")
def ray_session():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def run(tmp_path_factory, ray_session):
    """First run with 1% injected encoder failures, then a clean rerun; what each one's encoder saw."""
    root = tmp_path_factory.mktemp("tok")
    manifest = make_manifest(root, N_IMAGES, seed=1)
    digests = image_digests(manifest)  # image_id -> the pixels the encoder receives, by digest
    assert len(set(digests.values())) == len(digests) == N_IMAGES
    inject = set(sorted(digests)[::100])
    first = ProbedVQGAN(root / "calls1.txt", {digests[i] for i in inject})
    s1 = tokenize(manifest, root / "cache", Options(part_rows=64, batch_size=16), load_model=first)
    led1 = ledger.read_ledger(root / "cache", cache_mod.cached_ids(root / "cache"))
    second = ProbedVQGAN(root / "calls2.txt")
    s2 = tokenize(manifest, root / "cache", Options(part_rows=64, batch_size=16), load_model=second)
    return {"root": root, "manifest": manifest, "inject": inject, "s1": s1, "s2": s2, "led1": led1,
            "first": first, "second": second, "digests": digests}


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
    # Broken files fail before the encoder; the injected one is the only image encoded again.
    by_digest = {d: i for i, d in run["digests"].items()}
    assert [by_digest[d] for d in run["second"].calls()] == sorted(run["inject"])
    assert s2["cached_before"] == N_IMAGES - 1 and s2["encoded"] == 1
    assert s2["cached"] == N_IMAGES and s2["ledgered"] == 4 and s2["accounted"]
    assert s2["ledgered_encode"] == 0
    # The first run called the encoder for every readable image (and again, alone, for the failing batches).
    assert set(run["first"].calls()) == set(run["digests"].values())


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
        x.append(preprocess(load_image(Path(row["path"])), box, size=model.code_grid.resolution))
    want = model.encode(torch.stack(x)).reshape(len(check), -1).numpy()
    assert np.array_equal(np.stack([got[i] for i in check]).astype(np.int64), want)
    assert any(images.loc[i, "bbox"] for i in check)


def test_cache_identity_records_the_code_grid_and_the_codes_follow_it(run):
    identity = cache_mod.read_identity(run["root"] / "cache")
    assert {k: identity["vqgan"][k] for k in ("codebook_size", "grid", "resolution")} == FFHQ_F16.as_dict()
    assert cache_mod.code_grid(run["root"] / "cache") == FFHQ_F16
    table = cache_mod.codes_table(["a"], np.arange(441).reshape(21, 21) % 8192,
                                  {**identity["vqgan"], "codebook_size": 8192, "grid": [21, 21], "resolution": 336})
    assert table.schema.field("codes").type.list_size == 441  # a 21x21 VQGAN's 441 codes, not 256
    with pytest.raises(cache_mod.CacheError, match="outside the codebook of 1024"):
        cache_mod.codes_table(["a"], np.full(256, 1024), identity["vqgan"])


def test_other_vqgan_on_same_cache_is_refused(run, tmp_path):
    sd = load_vqgan("tiny-f16").state_dict()
    sd["quant_conv.bias"] = sd["quant_conv.bias"] + 1
    ckpt = tmp_path / "other.pt"
    torch.save(sd, ckpt)
    with pytest.raises(cache_mod.CacheError, match="Use another --cache"):
        tokenize(run["manifest"], run["root"] / "cache", Options(ckpt=str(ckpt)))


def test_a_cache_of_an_earlier_preprocessing_is_refused_by_name(run, tmp_path):
    identity = cache_mod.read_identity(run["root"] / "cache")
    old = tmp_path / "old"
    old.mkdir()
    earlier = {"name": "facecorpus-preprocess/1", "resize": "to 256x256 ignoring aspect ratio"}
    (old / cache_mod.IDENTITY).write_text(json.dumps({"vqgan": identity["vqgan"], "preprocess": earlier}))
    with pytest.raises(cache_mod.CacheError, match=r"'facecorpus-preprocess/1', an earlier policy .*new --cache"):
        cache_mod.open_cache(old, identity["vqgan"], identity["preprocess"])


def test_shards_read_back_through_ray_read_webdataset(run, ray_session, tmp_path):
    from facecorpus.shards.writer import shard

    out = tmp_path / "shards"
    shard(run["manifest"], run["root"] / "cache", out, samples_per_shard=50, seed=3)
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

    r = CliRunner().invoke(tokenize_cmd, ["--help"], terminal_width=200)
    assert r.exit_code == 0 and "--ray-address" in r.output and "ledger" in r.output
    assert "autocast" not in r.output and "weights in bf16" in r.output  # what the encoder runs in now
    assert "--allow-outside-links" in r.output and "RAY_AUTH_MODE=token" in r.output
    manifest = make_manifest(tmp_path, 2, broken=False, captions=False)
    r = CliRunner().invoke(tokenize_cmd, [str(manifest), "--vqgan", "ffhq-f16", "--cache", str(tmp_path / "c")])
    assert r.exit_code == 1 and "ships no weights: pass --ckpt" in r.output


def test_null_encoder_run_accounts_for_every_image(run, tmp_path, monkeypatch):
    """The benchmark's stand-in encoder goes through the same plumbing: every readable image cached
    (as zero codes, under the stand-in's own identity), the broken ones ledgered. On CPU the plan's
    rows reach Ray in blocks of a batch of rows (what one fused read+encode task takes), not a block
    each: the driver keeps ~2.7 KB per block for the whole run (issue 11)."""
    import ray.data as ray_data

    built, real = [], ray_data.from_items

    def from_items(items, **kw):
        built.append((len(items), kw["override_num_blocks"]))
        return real(items, **kw)

    monkeypatch.setattr(ray_data, "from_items", from_items)
    s = tokenize(run["manifest"], tmp_path / "null", Options(batch_size=4, part_rows=40), load_model=null_vqgan)
    assert s["accounted"] and s["encoded"] == s["cached"] == N_IMAGES and s["ledgered"] == 4
    [(rows, blocks)] = built  # 26 plan blocks of 4 on 2 CPUs: 3 rows a block, at least 4 blocks per CPU
    assert rows == 26 and blocks == 9, built  # main: one block per row
    assert s["vqgan"] == "null-encoder"
    codes = cache_mod.read_codes(tmp_path / "null").column("codes").to_numpy(zero_copy_only=False)
    assert len(codes) == N_IMAGES and not np.stack(codes).any()
    assert cache_mod.read_identity(tmp_path / "null")["vqgan"]["checkpoint_sha256"] == "null"


def test_options_hold_only_what_a_user_chooses_and_test_helpers_left_the_package():
    names = {f.name for f in dataclasses.fields(Options)}
    assert not names & {"probe", "model"}  # main: test and benchmark hooks in the user's options
    assert importlib.util.find_spec("facecorpus.shards.sample") is None  # now tests/tokenkit.py


def test_cache_parts_and_identity_are_published_durably(tmp_path, monkeypatch):
    """Through facecorpus.atomic: each file fsynced, renamed into place, and its folder fsynced."""
    synced = []
    monkeypatch.setattr(atomic, "fsync_dir", lambda folder: synced.append(Path(folder)))
    identity = NullVQGAN().identity
    cache = cache_mod.open_cache(tmp_path / "c", identity, POLICY)
    cache_mod.write_part(cache / "codes", cache_mod.codes_table(["d/a"], np.zeros(256), identity))
    ledger.append(cache, [{"image_id": "d/b", "path": "p", "stage": "read", "message": "zero-byte file"}])
    assert synced == [cache, cache / "codes", cache / "ledger"]  # main: no folder ever fsynced
    (cache / "codes" / "part-1.parquet.tmp").write_bytes(b"half a part")  # a killed writer's leftover
    cache_mod.open_cache(cache, identity, POLICY)
    assert not list(cache.rglob("*.tmp")) and cache_mod.cached_ids(cache) == {"d/a"}


@pytest.fixture
def odd_files(tmp_path) -> Path:
    """A dataset folder holding what a hostile or careless download can: a link out of the folder, a
    link inside it, a FIFO, a folder and a float TIFF under image names, and a 16-bit grey PNG."""
    raw = tmp_path / "raw" / "celeba"
    (raw / "img").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    secret = tmp_path / "elsewhere" / "secret.png"
    Image.new("RGB", (40, 40), (9, 9, 9)).save(secret)
    grey = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    Image.fromarray(grey).save(raw / "img" / "grey16.png")
    os.symlink(secret, raw / "img" / "out.png")
    os.symlink(raw / "img" / "grey16.png", raw / "img" / "in.png")
    os.mkfifo(raw / "img" / "fifo.png")
    (raw / "img" / "folder.png").mkdir()
    Image.fromarray(np.full((8, 8), 200.0, np.float32)).save(raw / "img" / "float.tif")
    names = ("grey16.png", "out.png", "in.png", "fifo.png", "folder.png", "float.tif")
    return write_manifest(tmp_path, "celeba", {n.split(".")[0]: f"img/{n}" for n in names})


@pytest.mark.slow
def test_links_out_of_the_dataset_folder_are_refused_unless_allowed_and_always_counted(odd_files, ray_session,
                                                                                         tmp_path):
    cache = tmp_path / "cache"
    s = tokenize(odd_files, cache, Options(batch_size=4), load_model=null_vqgan)
    by = {r["image_id"]: r for r in ledger.read_ledger(cache, cache_mod.cached_ids(cache))}
    assert s["accounted"] and s["cached"] == 2 and cache_mod.cached_ids(cache) == {"celeba/grey16", "celeba/in"}
    assert s["ledgered_refused"] == 1 and by["celeba/out"]["stage"] == "refused"
    assert "outside its dataset folder" in by["celeba/out"]["message"] and s["read_outside_links"] == 0
    assert by["celeba/fifo"]["stage"] == "read" and by["celeba/fifo"]["message"] == "not a regular file (a FIFO)"
    assert by["celeba/folder"]["message"] == "not a regular file (a folder)" and s["ledgered_read"] == 2
    assert by["celeba/float"]["stage"] == "decode" and "not [0, 1]" in by["celeba/float"]["message"]
    again = tokenize(odd_files, cache, Options(batch_size=4, allow_outside_links=True), load_model=null_vqgan)
    assert again["encoded"] == 1 and again["read_outside_links"] == 1 and again["ledgered_refused"] == 0
    assert again["accounted"] and "celeba/out" in cache_mod.cached_ids(cache)


def test_a_link_out_of_the_dataset_folder_is_refused_and_read_only_when_allowed(odd_files):
    row = next(r for r in plan(odd_files).itertuples(index=False) if r.image_id == "celeba/out")
    refused = read_one(row.path, row.root, "", SIZE)
    assert (refused.stage, refused.outside, refused.pixels) == ("refused", True, None)  # main: read and encoded
    assert "secret.png" in refused.message and "--allow-outside-links" in refused.message
    allowed = read_one(row.path, row.root, "", SIZE, allow_outside=True)
    assert allowed.stage == OK and allowed.outside and allowed.pixels.max() == 9
    inner = next(r for r in plan(odd_files).itertuples(index=False) if r.image_id == "celeba/in")
    assert read_one(inner.path, inner.root, "", SIZE)[1:] == (OK, "", False)  # a link inside the folder is fine


def test_reading_a_fifo_never_blocks_and_16_bit_grey_keeps_its_levels(odd_files):
    rows = {r.image_id: r for r in plan(odd_files).itertuples(index=False)}
    result = []
    reader = threading.Thread(target=lambda: result.append(read_one(rows["celeba/fifo"].path,
                                                                    rows["celeba/fifo"].root, "", SIZE)), daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert result and result[0].stage == "read" and "FIFO" in result[0].message
    grey = read_one(rows["celeba/grey16"].path, rows["celeba/grey16"].root, "", 64)
    want = ((np.arange(64 * 64).reshape(64, 64) * 16 * 255 + 32767) // 65535).astype(np.uint8)
    assert grey.stage == OK and np.array_equal(grey.pixels[..., 1], want)  # main: white where >= 256


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


class _SmallDevice(NullVQGAN):
    """A stand-in that fails like a device out of memory for calls of more than `most` images."""

    def __init__(self, most: int):
        super().__init__()
        self.most, self.sizes = most, []

    def encode(self, x):
        self.sizes.append(len(x))
        if len(x) > self.most:
            raise RuntimeError("CUDA out of memory. Tried to allocate 12.00 GiB")
        return super().encode(x)


def test_out_of_memory_batches_go_through_in_halves_and_later_ones_start_small():
    threads = torch.get_num_threads()  # the Encoder sets them; give the test process its own back
    device = _SmallDevice(4)
    try:
        enc = Encoder("tiny-f16", None, False, 1, load_model=lambda *a, **k: device)
    finally:
        torch.set_num_threads(threads)
    n = 16
    batch = {"image_id": np.array([f"d/{i}" for i in range(n)], dtype=object), "outside": np.zeros(n, bool),
             "path": np.array(["p"] * n, dtype=object), "pixels": np.zeros((n, 256, 256, 3), np.uint8),
             "stage": np.array([OK] * n, dtype=object), "message": np.array([""] * n, dtype=object)}
    out = enc(batch)
    assert list(out["stage"]) == [OK] * n and out["retried"].sum() == n
    assert device.sizes == [16, 8, 4, 4, 8, 4, 4]
    device.sizes.clear()
    out = enc(batch)  # the next batch is split up front: no failed call, nothing retried
    assert list(out["stage"]) == [OK] * n and out["retried"].sum() == 0 and device.sizes == [4, 4, 4, 4]


@pytest.mark.slow  # a Ray pipeline run: 5-30 s
def test_several_batches_in_flight_per_actor_write_the_cache_of_one_batch_at_a_time(ray_session, tmp_path):
    """The encoder actor with three concurrent calls (the GPU layout's default) caches exactly the
    codes of the one-process reference, and counts every image."""
    manifest = make_manifest(tmp_path, 20, seed=4)
    s = tokenize(manifest, tmp_path / "ray", Options(batch_size=8, inflight=3, part_rows=16))
    assert s["accounted"] and (s["encoded"], s["ledgered"], s["encode_retried"]) == (20, 4, 0)
    tokenize_in_process(manifest, tmp_path / "ref", batch_size=8)
    got, want = (cache_mod.read_codes(tmp_path / c).to_pandas().set_index("image_id")["codes"] for c in ("ray", "ref"))
    assert sorted(got.index) == sorted(want.index)
    assert all(np.array_equal(got[i], want[i]) for i in want.index)


@pytest.mark.slow  # spawns read processes: 5-15 s
def test_the_local_engine_caches_the_reference_codes_and_ledger_without_ray(tmp_path):
    """`--engine local` (a machine without Ray, such as a lent GPU): spawned read processes, the
    encoder called from two threads at once; the cache holds the one-process reference's codes and
    the broken files are ledgered by stage."""
    manifest = make_manifest(tmp_path, 20, seed=5)
    s = tokenize(manifest, tmp_path / "local", Options(batch_size=8, inflight=2, part_rows=16, engine="local"))
    assert s["accounted"] and s["engine"] == "local"
    assert (s["encoded"], s["ledgered_read"], s["ledgered_decode"]) == (20, 2, 2)
    tokenize_in_process(manifest, tmp_path / "ref", batch_size=8)
    got, want = (cache_mod.read_codes(tmp_path / c).to_pandas().set_index("image_id")["codes"] for c in ("local", "ref"))
    assert sorted(got.index) == sorted(want.index)
    assert all(np.array_equal(got[i], want[i]) for i in want.index)
    with pytest.raises(ValueError, match="--ray-address joins a Ray cluster and --engine local runs without Ray"):
        tokenize(manifest, tmp_path / "x", Options(engine="local", ray_address="127.0.0.1:6379"))


def test_cli_compile_takes_an_optional_mode_and_the_gpu_options_reach_tokenize(monkeypatch, tmp_path):
    from click.testing import CliRunner

    from facecorpus.shards import tokenization
    from facecorpus.shards.cli import tokenize as tokenize_cmd

    seen = []
    monkeypatch.setattr(tokenization, "tokenize", lambda _m, cache, opts, _p=None: seen.append(opts) or
                        {"accounted": True})
    manifest = make_manifest(tmp_path, 1, broken=False, captions=False)
    cache_mod.open_cache(tmp_path / "c", NullVQGAN().identity, POLICY)  # the summary's ledger table reads it
    base = [str(manifest), "--cache", str(tmp_path / "c")]
    for extra in ([], ["--compile"], ["--compile", "reduce-overhead", "--inflight", "2", "--engine", "local"]):
        r = CliRunner().invoke(tokenize_cmd, base + extra)
        assert r.exit_code == 0, r.output
    assert [(o.compile, o.inflight, o.engine) for o in seen] == [("", None, "ray"), ("default", None, "ray"),
                                                                 ("reduce-overhead", 2, "local")]
    r = CliRunner().invoke(tokenize_cmd, base + ["--compile", "fast"])
    assert r.exit_code == 2 and "'fast' is not one of 'default', 'reduce-overhead', 'max-autotune'" in r.output

"""train-vqgan end to end on a small CelebA sample: checkpoints load_vqgan takes strictly, exact resume
(stopped, and killed from outside under torchrun), codebook health in the log, and clear errors."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from facecorpus import vqgan as vq
from facecorpus.cli import main
from inceptionkit import save_fake_inception
from runs import kill_when_published
from vqgankit import celeba_manifest, lpips_files

BIN = Path(sys.executable).parent
# Cheap steps: 32-pixel crops (2x2 codes), the GAN from step 2, codes re-seeded every 2 steps, no
# held-out figures (they take whole 256-pixel images).
ARGS = ["--preset", "tiny-f16", "--data.crop=32", "--data.micro_batch=2", "--data.num_workers=0",
        "--train.max_steps=4", "--train.log_interval=1", "--train.ckpt_interval=2", "--train.precision=fp32",
        "--train.eval_interval=0", "--loss.disc_start=2", "--train.reseed_interval=2",
        "--train.keep_checkpoints=0"]
STEP_FILES = {"model.pt", "vqgan.json", "discriminator.pt", "optimizer.pt", "trainer.pt", "config.json",
              "checksums.json"}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    return celeba_manifest(tmp_path_factory.mktemp("vqgan-data"))


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Small convolutions: a second intra-op thread only spins on a busy 2-core machine (conftest)."""


def train(manifest: Path, run: Path, *extra: str):
    return CliRunner().invoke(main, ["train-vqgan", str(manifest), "--out", str(run), *ARGS,
                                     "--train.batch_size=4", *extra], catch_exceptions=False)


def log(run: Path) -> list[dict]:
    return [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]


def losses(run: Path) -> dict[int, tuple]:
    keys = ("loss", "l1", "codebook", "g", "d_weight", "disc", "usage", "perplexity", "reseeded")
    return {r["step"]: tuple(r.get(k) for k in keys) for r in log(run) if "loss" in r}


@pytest.mark.slow
def test_a_trained_checkpoint_is_a_vqgan_load_vqgan_takes_strictly(manifest, tmp_path):
    weights = lpips_files(tmp_path)
    res = train(manifest, tmp_path / "run", "--train.max_steps=3", f"--loss.vgg={weights[0]}",
                f"--loss.lpips={weights[1]}", "--train.eval_interval=3", "--train.eval_images=1")
    assert res.exit_code == 0, res.output
    step = tmp_path / "run" / "step-00000003"
    assert {p.name for p in step.iterdir()} == STEP_FILES | {"rng-rank0.pt"}
    model = vq.load_vqgan(step / "vqgan.json", step / "model.pt")
    assert model.code_grid == vq.code_grid(vq.resolve("tiny-f16", None)[0])
    assert model.identity["checkpoint_sha256"] == hashlib.sha256((step / "model.pt").read_bytes()).hexdigest()
    assert (model.identity["codebook_size"], model.identity["grid"], model.identity["resolution"]) == (1024, [16, 16], 256)
    assert model.encode(torch.zeros(1, 3, 256, 256)).shape == (1, 16, 16)
    records = log(tmp_path / "run")
    lines = [r for r in records if "loss" in r]
    assert all(0 < r["usage"] <= 1 and r["perplexity"] >= 1 and r["perceptual"] > 0 for r in lines)
    assert lines[-1]["gan"] is True and "d_weight" in lines[-1] and "g" not in lines[0]
    assert any("val/psnr" in r for r in records) and records[-1]["event"] == "end"
    assert not any(r.get("event") == "note" for r in records)   # LPIPS given: no note about its absence
    assert "--vqgan" in res.output and "vqgan.json" in res.output


@pytest.mark.slow
def test_stopped_and_resumed_run_continues_exactly(manifest, tmp_path):
    straight = train(manifest, tmp_path / "a")
    assert straight.exit_code == 0, straight.output
    first = train(manifest, tmp_path / "b", "--train.stop_at_step=2")
    assert first.exit_code == 0 and not (tmp_path / "b" / "step-00000004").exists()
    again = train(manifest, tmp_path / "b")
    assert again.exit_code == 0 and "resumed from" in again.output
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4] and a == b
    assert a[4][8] >= 0 and a[1][3] is None and a[4][3] is not None   # re-seeding counted; the GAN from step 2
    note = [r for r in log(tmp_path / "a") if r.get("event") == "note"]
    assert note and "no perceptual term" in note[0]["note"]
    sd = [torch.load(tmp_path / r / "step-00000004" / "model.pt", weights_only=True) for r in ("a", "b")]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])


@pytest.mark.slow
def test_kill_from_outside_under_torchrun_and_resume_is_exact(manifest, tmp_path):
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}

    def torchrun(out: Path, wait: bool = True):
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", str(BIN / "facecorpus"),
               "train-vqgan", str(manifest), "--out", str(out), *ARGS, "--train.batch_size=8"]
        if not wait:
            return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
        return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)

    straight = torchrun(tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert kill_when_published(torchrun(tmp_path / "b", wait=False), tmp_path / "b" / "step-00000002"), \
        "the run ended before the kill"
    resumed = torchrun(tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == [1, 2, 3, 4] and a == b
    end = log(tmp_path / "a")[-1]
    assert end["steps_per_rank"] == [4, 4] and end["images_per_rank"] == [16, 16]
    step = tmp_path / "b" / "step-00000004"
    assert {p.name for p in step.iterdir()} == STEP_FILES | {"rng-rank0.pt", "rng-rank1.pt"}


@pytest.mark.parametrize(("args", "message"), [
    (["--data.crop=40"], "data.crop=40: must be a multiple of 16"),
    (["--loss.vgg=x.pth"], "loss.lpips='x.pth': must be given together with loss.vgg and loss.lpips"),
    (["--train.lr=0"], "train.lr=0.0: must be > 0"),
    (["--model.ch=8"], "--model.ch: no such config key (sections: data, loss, train; see `facecorpus train-vqgan --help`)"),
])
def test_a_wrong_setting_is_one_message_before_any_work(manifest, tmp_path, args, message):
    res = CliRunner().invoke(main, ["train-vqgan", str(manifest), "--out", str(tmp_path / "run"), *args])
    assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "run").exists()


def test_resume_keeps_its_preset_and_an_unreadable_image_is_named(manifest, tmp_path):
    assert train(manifest, tmp_path / "run", "--train.max_steps=1").exit_code == 0
    res = CliRunner().invoke(main, ["train-vqgan", str(manifest), "--out", str(tmp_path / "run"), "--preset", "ffhq-f16"])
    assert res.exit_code == 2 and "holds a tiny-f16 run (step-00000001); --preset ffhq-f16 would not resume it" in res.output
    raw = manifest.parent / "raw" / "celeba" / "img_align_celeba"
    broken = sorted(raw.glob("*.jpg"))[0]
    kept = broken.read_bytes()
    try:
        broken.write_bytes(b"\xff\xd8 not a jpeg")
        res = CliRunner().invoke(main, ["train-vqgan", str(manifest), "--out", str(tmp_path / "new"), *ARGS,
                                        "--train.batch_size=4", "--data.micro_batch=4", "--train.max_steps=8"])
    finally:
        broken.write_bytes(kept)
    assert res.exit_code == 1 and f"image celeba/{broken.stem}" in res.output and "decode failed" in res.output


@pytest.mark.slow
def test_reconstruction_evaluation_end_to_end(manifest, tmp_path):
    """evaluate --task reconstruction on a tiny run: every score in eval.json and eval.md, the grid PNG."""
    assert train(manifest, tmp_path / "run", "--train.max_steps=1").exit_code == 0
    vgg, lins, _ = lpips_files(tmp_path)
    inception = save_fake_inception(tmp_path / "inception.pt")
    out = tmp_path / "eval"
    res = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--task", "reconstruction", "--manifest",
                                    str(manifest), "--split", "train", "--lpips-vgg", str(vgg), "--lpips", str(lins),
                                    "--inception", str(inception), "--limit", "2", "--out", str(out)])
    assert res.exit_code == 0, res.output
    r = json.loads((out / "eval.json").read_text())
    assert r["task"] == "reconstruction" and r["images"] == 2 and r["split"] == "train"
    assert 0 < r["psnr"] < 100 and -1 <= r["ssim"] <= 1 and r["lpips"] > 0 and r["rfid"] >= 0
    assert 0 < r["usage"] <= 1 and 1 <= r["perplexity"] <= 1024 and r["codes_used"] == round(r["usage"] * 1024)
    assert r["vqgan"]["checkpoint_sha256"] == hashlib.sha256(
        (tmp_path / "run" / "step-00000001" / "model.pt").read_bytes()).hexdigest()
    md = (out / "eval.md").read_text()
    assert "| PSNR (dB) ↑ | SSIM ↑ | LPIPS ↓ | rFID ↓ |" in md and f"{r['psnr']:.2f}" in md
    from PIL import Image

    assert Image.open(out / "reconstructions.png").size == (256 * 2, 512)
    plain = CliRunner().invoke(main, ["evaluate", str(tmp_path / "run"), "--task", "reconstruction", "--manifest",
                                      str(manifest), "--split", "train", "--limit", "3", "--out", str(tmp_path / "e2")])
    assert plain.exit_code == 0, plain.output
    r = json.loads((tmp_path / "e2" / "eval.json").read_text())
    assert r["lpips"] is None and r["rfid"] is None and "--inception" in r["rfid_note"]

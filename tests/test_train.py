"""The training loop under torchrun: exact resume after a kill, uneven shards, checkpoint contents."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from facecorpus.trainer import checkpoint
from facecorpus.trainer.config import RunConfig
from facecorpus.trainer.train_cli import resolve_config
from shardkit import stream_shards

BIN = Path(sys.executable).parent
# 2 ranks x micro-batch 4 x 2 accumulation steps = 16 per step; dropout on so RNG state matters.
ARGS = ["--preset", "tiny", "--train.batch_size=16", "--data.micro_batch=4", "--data.num_workers=0",
        "--model.dropout=0.1", "--train.max_steps=4", "--train.warmup_steps=2", "--train.log_interval=1",
        "--train.ckpt_interval=2", "--train.precision=fp32", "--data.seq_len=300"]


def torchrun(shards: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", str(BIN / "facecorpus"),
           "train", "--shards", str(shards), "--out", str(out), *ARGS, *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)


def losses(run: Path) -> dict[int, float]:
    lines = [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in lines if "step" in r}


@pytest.mark.slow
def test_kill_and_resume_is_exact_on_uneven_shards(tmp_path):
    # Rank 0 reads caption shards 0 and 2 (6 samples), rank 1 shard 1 (4): both must run 4 steps.
    shards = stream_shards(tmp_path / "shards", {"caption": 10, "attributes": 5}, samples_per_shard=4)
    straight = torchrun(shards, tmp_path / "a")
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = torchrun(shards, tmp_path / "b", "--train.kill_at_step=2")
    assert killed.returncode != 0
    assert [p.name for p in checkpoint.step_dirs(tmp_path / "b")] == ["step-00000000", "step-00000002"]
    resumed = torchrun(shards, tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = losses(tmp_path / "a"), losses(tmp_path / "b")
    assert sorted(a) == sorted(b) == [1, 2, 3, 4]
    assert a == b                                   # identical floats, not merely close
    end = [json.loads(x) for x in (tmp_path / "a" / "train.jsonl").read_text().splitlines()][-1]
    assert end["steps_per_rank"] == [4, 4] and end["sequences_per_rank"] == [32, 32]

    step = tmp_path / "b" / "step-00000004"
    assert {p.name for p in step.iterdir()} == {"model.pt", "optimizer.pt", "trainer.pt", "config.json",
                                                  "rng-rank0.pt", "rng-rank1.pt"}
    assert torch.load(step / "trainer.pt", weights_only=True)["batches_consumed"] == 8
    model, cfg = checkpoint.load_model(tmp_path / "b")
    assert cfg.preset == "tiny" and cfg.model.dropout == 0.1 and not model.training
    assert json.loads((step / "config.json").read_text())["shards_identity"]["text_vocab"]["name"] == "bert-base-uncased"


def test_resume_keeps_the_saved_config(tmp_path):
    cfg = RunConfig.from_preset("tiny")
    run = tmp_path / "run"
    (run / "step-00000005").mkdir(parents=True)
    (run / "step-00000005" / "model.pt").write_bytes(b"")
    (run / "step-00000005" / "config.json").write_text(cfg.to_json())
    got, resuming = resolve_config(run, "S", None, ["--train.max_steps=9"])
    assert resuming and got.train.max_steps == 9 and got.data.shards == "S"
    with pytest.raises(Exception, match="model overrides cannot change a run being resumed"):
        resolve_config(run, "S", None, ["--model.n_layer=3"])


def test_batch_divisibility_checked_up_front():
    from facecorpus.trainer.train import accumulation_steps

    cfg = RunConfig.from_preset("tiny")
    cfg.train.batch_size, cfg.data.micro_batch = 192, 16
    assert accumulation_steps(cfg, 4) == 3
    with pytest.raises(ValueError, match=r"train.batch_size=192 is not a multiple of world size 5 x data.micro_batch=16 = 80"):
        accumulation_steps(cfg, 5)


def test_resume_refuses_shards_from_another_vqgan(tmp_path):
    ckpt = tmp_path / "step-00000002"
    ckpt.mkdir()
    vocab_id = {"name": "bert-base-uncased", "sha256": "x"}
    saved = {**RunConfig.from_preset("tiny").to_dict(), "shards_identity": {"vqgan": {"name": "ffhq"}, "text_vocab": vocab_id}}
    (ckpt / "config.json").write_text(json.dumps(saved))
    checkpoint.check_identity(ckpt, {"vqgan": {"name": "ffhq"}, "text_vocab": vocab_id})
    with pytest.raises(ValueError, match=r"step-00000002: trained on shards with vqgan \{'name': 'ffhq'\}"):
        checkpoint.check_identity(ckpt, {"vqgan": {"name": "tiny"}, "text_vocab": vocab_id})

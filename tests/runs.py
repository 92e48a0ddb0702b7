"""Training runs for the tests: run folders written by the real checkpoint writer, two-rank torchrun runs,
their logged losses, shards with a held-out split, and killing a run from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from facecorpus.codes import FFHQ_F16
from facecorpus.records import KINDS
from facecorpus.trainer import checkpoint
from facecorpus.trainer.config import RunConfig
from shardkit import ATTRIBUTES, CAPTIONS, record, write_shards

TINY_F16 = {"vqgan": {"name": "tiny-f16"}}   # what a run on the demo's shards records of its VQGAN


def save_run(run: Path, model: torch.nn.Module, identity: dict | None = None, step: int = 1,
             preset: str = "tiny") -> Path:
    """`run/step-XXXXXXXX/` holding `model` (a tiny preset of either family on FFHQ f16 codes) as
    training saves it."""
    cfg = RunConfig.from_preset(preset).sized(FFHQ_F16)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return checkpoint.save(Path(run), step, model, optimizer, scheduler, scaler, cfg, 0,
                           TINY_F16 if identity is None else identity)


def kill_when_published(proc: subprocess.Popen, step_dir: Path, timeout: float = 150) -> bool:
    """SIGKILL the process group as soon as `step_dir` is published; False if the run ended first."""
    end = time.monotonic() + timeout
    while proc.poll() is None and not step_dir.is_dir() and time.monotonic() < end:
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


BIN = Path(sys.executable).parent
# 2 ranks x micro-batch 4 x 2 accumulation steps = 16 per step; dropout on so RNG state matters.
ARGS = ["--preset", "tiny", "--train.batch_size=16", "--data.micro_batch=4", "--data.num_workers=0",
        "--model.dropout=0.1", "--train.max_steps=4", "--train.warmup_steps=2", "--train.log_interval=1",
        "--train.ckpt_interval=2", "--train.precision=fp32", "--data.seq_len=300"]


def torchrun(shards: Path, out: Path, *extra: str, wait: bool = True):
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node=2", "--no-python", str(BIN / "facecorpus"),
           "train", "--shards", str(shards), "--out", str(out), *ARGS, *extra]
    if not wait:   # its own session: a kill of the group reaches torchrun and both ranks at once
        return subprocess.Popen(cmd, env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180, check=False)


def losses(run: Path) -> dict[int, tuple[float, float]]:
    lines = [json.loads(x) for x in (run / "train.jsonl").read_text().splitlines()]
    return {r["step"]: (r["loss"], r["grad_norm"]) for r in lines if "loss" in r}


def with_val_split(root: Path) -> Path:
    """Train shards plus a val split of both kinds, through the real writer."""
    records = [record("celeba", f"{split}{n}", kind, split, (CAPTIONS if kind == "caption" else ATTRIBUTES)[n % 3], n=n)
               for split, per_kind in (("train", 8), ("val", 3)) for kind in KINDS for n in range(per_kind)]
    return write_shards(root, records, samples_per_shard=4)

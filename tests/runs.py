"""Training-run folders for the generation and evaluation tests, written by the real checkpoint writer;
killing a training run from outside."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from facecorpus.trainer import checkpoint
from facecorpus.trainer.config import RunConfig

from facecorpus.codes import FFHQ_F16

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

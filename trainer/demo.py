"""Demo stage `train`: a few CPU steps of the tiny model on OUT/shards, stopped, then resumed, into OUT/run."""

from __future__ import annotations

import json
from pathlib import Path

from . import checkpoint
from .config import RunConfig, apply_overrides
from .train import train

# Small enough for a laptop CPU in well under a minute; the schedule is the real one, shortened.
DEMO_OVERRIDES = ["--train.batch_size=8", "--data.micro_batch=4", "--data.num_workers=0", "--train.max_steps=6",
                  "--train.warmup_steps=2", "--train.log_interval=1", "--train.ckpt_interval=3",
                  "--train.precision=fp32", "--train.keep_checkpoints=0", "--train.eval_batches=2"]


def run(out: Path, console, seed: int = 0) -> dict:
    shards, run_dir = Path(out) / "shards", Path(out) / "run"
    cfg = apply_overrides(RunConfig.from_preset("tiny"), [*DEMO_OVERRIDES, f"--train.seed={seed}"])
    cfg.data.shards = str(shards)
    cfg.train.stop_at_step = 3
    console.print(f"training tiny on {shards} for {cfg.train.stop_at_step} of {cfg.train.max_steps} steps, then resuming")
    first = train(cfg, run_dir, console)
    cfg.train.stop_at_step = 0
    second = train(cfg, run_dir, console)   # finds step-00000003 and continues from it exactly
    records = [json.loads(x) for x in (run_dir / "train.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    return {"steps": f"{first['steps']} + resumed to {second['steps']}",
            "checkpoints": len(checkpoint.step_dirs(run_dir)),
            "loss": f"{losses[0]:.3f} -> {losses[-1]:.3f}",
            "log": str(run_dir / "train.jsonl")}

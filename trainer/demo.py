"""Demo stage `train`: the tiny model learns the demo's faces <-> text on OUT/shards, into OUT/run,
with a progress bar; stopped halfway and resumed (exactly) from its checkpoint, as a real run would.

The recipe (why: docs/design.md, "The demo's recipe"): half of each batch asks a face for its
attributes (what OUT/eval scores), a quarter draws faces from attributes (OUT/samples/faces.png), a
quarter captions faces (OUT/samples/captions.md); no caption->face, the demo has a few dozen captions.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from . import checkpoint
from .config import RunConfig, apply_overrides
from .train import train

STEPS = 150   # about 2-3 minutes on an idle 2-core machine (estimated: docs/design.md)
DEMO_OVERRIDES = ["--data.tasks=face2attributes,face2attributes,attributes2face,face2caption",
                  "--train.batch_size=16", "--data.micro_batch=16", "--data.num_workers=0",
                  "--train.lr=3e-3", "--train.warmup_steps=10", "--train.log_interval=25", "--train.ckpt_interval=100000",
                  "--train.precision=fp32", "--train.keep_checkpoints=2", "--train.eval_interval=0"]


def config(shards: Path, seed: int, steps: int = STEPS) -> RunConfig:
    cfg = apply_overrides(RunConfig.from_preset("tiny"), [*DEMO_OVERRIDES, f"--train.max_steps={steps}",
                                                          f"--train.seed={seed}"])
    cfg.data.shards = str(shards)
    return cfg


def run(out: Path, console, seed: int = 0, steps: int = STEPS) -> dict:
    shards, run_dir = Path(out) / "shards", Path(out) / "run"
    cfg = config(shards, seed, steps)
    cfg.train.stop_at_step = steps // 2
    console.print(f"training tiny on {shards} for {steps} steps of {cfg.train.batch_size} ({cfg.data.tasks}), "
                  f"stopping at step {cfg.train.stop_at_step} and resuming")
    columns = (TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=console) as bars:
        task = bars.add_task("train", total=steps)
        first = train(cfg, run_dir, console, on_step=lambda s: bars.update(task, completed=s))
        cfg.train.stop_at_step = 0
        second = train(cfg, run_dir, console, on_step=lambda s: bars.update(task, completed=s))   # resumes exactly
    records = [json.loads(x) for x in (run_dir / "train.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in records if "loss" in r]
    return {"steps": f"{first['steps']} + resumed to {second['steps']}",
            "checkpoints": len(checkpoint.step_dirs(run_dir)),
            "loss": f"{losses[0]:.3f} -> {losses[-1]:.3f}",
            "log": str(run_dir / "train.jsonl")}

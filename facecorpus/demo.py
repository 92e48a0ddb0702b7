"""`facecorpus demo OUT`: the whole job at toy scale, on generated sample data, with no downloads.

Each stage lives beside the code it exercises and writes one folder of OUT (docs/design.md):
raw -> manifest -> report -> cache + shards -> run -> eval -> samples, then GPTFace on the same
shards (run-gptface, and an inpainted face in samples).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

# (title, "module:function"); each function takes (out: Path, console) and returns {what: value}.
STAGES = [
    ("convert", "facecorpus.converters.demo:run"),
    ("report", "facecorpus.reports.demo:run"),
    ("tokenize, shard, verify", "facecorpus.shards.demo:run"),
    ("train, resume", "facecorpus.trainer.demo:run"),
    ("evaluate", "facecorpus.trainer.demo_eval:run"),
    ("samples", "facecorpus.trainer.demo_generate:run"),
    ("gptface: train, inpaint", "facecorpus.trainer.demo_gptface:run"),
]


@click.command()
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Seed for the generated sample data and training.")
@click.option("--train-steps", type=click.IntRange(min=2), default=None,
              help="Optimizer steps of the tiny model's training (default: the demo recipe's, "
                   "facecorpus.trainer.demo.STEPS); fewer for a quick look on a slow machine, more to learn more.")
def demo(out_dir: Path, seed: int, train_steps: int | None):
    """Run every stage on generated sample data into OUT_DIR (raw/, manifest/, report/, cache/,
    shards/, run/, eval/, samples/, run-gptface/). Uses local Ray and the bundled tiny VQGAN; trains
    the tiny model for a few CPU minutes, scores it on held-out faces (eval/results.md) and draws
    faces from attribute prompts (samples/faces.png)."""
    console = Console()
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = Table(title=f"facecorpus demo -> {out_dir}")
    for col in ("stage", "seconds", "result"):
        summary.add_column(col)
    options = {"facecorpus.trainer.demo:run": {"steps": train_steps} if train_steps else {}}
    for title, target in STAGES:
        module, _, attr = target.partition(":")
        console.rule(f"[bold]{title}")
        t0 = time.perf_counter()
        result = getattr(importlib.import_module(module), attr)(out_dir, console, seed=seed, **options.get(target, {}))
        summary.add_row(title, f"{time.perf_counter() - t0:.1f}", ", ".join(f"{k}: {v}" for k, v in result.items()))
    console.print(summary)

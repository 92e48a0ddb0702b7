"""`facecorpus train`: the click front end of trainer/train.py."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from facecorpus import storage

from .checkpoint import CheckpointError, resolve_config
from .config import PRESETS, ConfigError, describe


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": ["-h", "--help"]})
@click.option("--shards", required=True, metavar="PATH|URI", callback=storage.fetch_param, help="Shard folder with index.json (a path or URI).")
@click.option("--out", required=True, metavar="PATH|URI",
              help="Run folder: step-XXXXXXXX/ checkpoints and train.jsonl. Resumes when it holds a checkpoint. "
                   "A URI (s3://, gs://) gets each checkpoint as it is written, its checksums.json last.")
@click.option("--preset", type=click.Choice(list(PRESETS)), default=None,
              help="Model family and shape: talk2face-base, tiny (Talk2Face's prefix-LM), gptface-base, gptface-tiny "
                   "(GPTFace's encoder, MILM + ITM, with the paper's recipe). Default tiny; a resumed run keeps its own.")
@click.pass_context
def train(ctx: click.Context, shards: Path, out: str, preset: str | None):
    """Train a model on SHARDS into OUT, alone or under
    `torchrun --nproc_per_node N --no-python facecorpus train ...` (NCCL on GPUs, gloo on CPU):
    Talk2Face's prefix-LM on its four balanced tasks, or GPTFace's bidirectional encoder on masked
    image/language modelling + image-text matching (captions by default, --data.gptface_records).
    Both read the same shards; the code grid, vocabulary and sequence length come from their index.

    Any config key can be overridden as --section.key=value (or --key=value when unique), keeping its
    type, e.g. --train.max_steps=1000 --train.lr=1e-4 --data.micro_batch=48 --train.compile=true, or
    --masking.image_every=5000 for GPTFace. The global batch (train.batch_size) must be a multiple of
    processes x data.micro_batch; the rest is gradient accumulation.
    """
    if storage.is_remote(out) and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # Each process would stage its own copy of the run; a checkpoint's per-rank files must meet in one folder.
        raise click.UsageError("--out in object storage trains in one process; under torchrun give a local or "
                               "shared run folder")
    try:
        with storage.staged(out, last=("*/checksums.json",)) as run_dir:
            _train(ctx, shards, run_dir, out, preset)
    except storage.StorageError as e:
        raise click.UsageError(str(e)) from None


def _train(ctx: click.Context, shards: Path, out: Path, shown: str, preset: str | None) -> None:
    try:
        cfg, resuming = resolve_config(out, str(shards), preset, list(ctx.args))
    except (ConfigError, CheckpointError) as e:
        raise click.UsageError(str(e)) from None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")   # DataLoader workers fork after tokenizing
    from facecorpus.shards.format import FormatError

    from .train import train as run_training

    console = Console()
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = run_training(cfg, out, console if rank == 0 else None)
    except (ConfigError, CheckpointError, FormatError) as e:   # found once the shards are read: format, grid, identity
        raise click.ClickException(str(e)) from None
    if rank == 0:
        print_summary(console, f"train -> {shown}" + (" (resumed)" if resuming else ""), result)


train.help = inspect.cleandoc(train.help or "") + "\n\n\b\nKeys, defaults and valid values:\n" + "\n".join(describe())


def print_summary(console, title: str, result: dict) -> None:
    """A training command's closing summary: one row per item of its result."""
    table = Table(title=title)
    table.add_column("item")
    table.add_column("value")
    for k, v in result.items():
        table.add_row(k, str(v))
    console.print(table)

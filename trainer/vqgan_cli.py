"""`facecorpus train-vqgan`: the click front end of trainer/vqgan_train.py."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import click
from rich.console import Console

from .checkpoint import CheckpointError
from .settings import ConfigError
from .train_cli import print_summary
from .vqgan_config import PRESETS, describe


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": ["-h", "--help"]})
@click.argument("manifest", type=click.Path(exists=True, file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Run folder: step-XXXXXXXX/ checkpoints and train.jsonl. Resumes when it holds a checkpoint.")
@click.option("--preset", type=click.Choice(PRESETS), default=None,
              help="VQGAN architecture and its training recipe (default tiny-f16; a resumed run keeps its own).")
@click.pass_context
def train_vqgan(ctx: click.Context, manifest: str, out: Path, preset: str | None):
    """Train a VQGAN (taming's Encoder, Decoder and VectorQuantizer2) on the unique images of MANIFEST's
    train split, read and cropped as `tokenize` reads them, alone or under
    `torchrun --nproc_per_node N --no-python facecorpus train-vqgan ...` (NCCL on GPUs, gloo on CPU).

    Losses as taming trains them: L1, LPIPS when --loss.vgg and --loss.lpips name its weight files,
    VectorQuantizer2's codebook and commitment terms, and a patch-GAN from --loss.disc_start on with
    taming's adaptive weight (docs/vqgan.md). Each checkpoint's model.pt and vqgan.json are the VQGAN:
    `facecorpus tokenize MANIFEST --vqgan RUN/step-N/vqgan.json --ckpt RUN/step-N/model.pt`.

    Any config key can be overridden as --section.key=value (or --key=value when unique), keeping its
    type, e.g. --train.max_steps=2000 --data.micro_batch=8 --loss.disc_start=5000.
    """
    from .vqgan_train import resolve_config
    from .vqgan_train import train_vqgan as run_training

    try:
        cfg, resuming = resolve_config(out, manifest, preset, list(ctx.args))
    except (ConfigError, CheckpointError) as e:
        raise click.UsageError(str(e)) from None
    from .lpips import LPIPSError
    from .vqgan_data import ImageError

    console = Console()
    rank = int(os.environ.get("RANK", "0"))
    try:
        result = run_training(cfg, out, console if rank == 0 else None)
    except (ConfigError, CheckpointError, LPIPSError, ImageError, ValueError) as e:
        raise click.ClickException(str(e)) from None
    if rank == 0:
        title = f"train-vqgan -> {out}" + (" (resumed)" if resuming else "")
        print_summary(console, title, {k: v for k, v in result.items() if k != "vqgan"})
        console.print(f"tokenize with it: facecorpus tokenize {manifest} {result['vqgan']}", soft_wrap=True)


train_vqgan.help = (inspect.cleandoc(train_vqgan.help or "") + "\n\n\b\nKeys, defaults and valid values:\n"
                    + "\n".join(describe()))
